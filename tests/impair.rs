//! The impairment model on the in-memory wire (unprivileged, deterministic):
//! `Impaired` wrapped around wire ends, on a manual clock shared with the
//! stacks — the set-up for loss-recovery tests.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use zcstack::{Clock, Stack, TcpState};
use zcstack_driver::impair::{ImpairClock, ImpairConfig, Impaired};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Driver, Frame, Pool, PoolConfig};
use zcstack_tests::{random_bytes, sha256_hex};

fn frame(pool: &Pool, seq: u32) -> Frame {
    let mut f = pool.alloc().unwrap();
    f.room_mut()[..64].fill(0);
    f.room_mut()[14..18].copy_from_slice(&seq.to_be_bytes());
    f.set_len(64);
    f
}

fn seq(f: &Frame) -> u32 {
    u32::from_be_bytes(f.data()[14..18].try_into().unwrap())
}

/// A sends 1000 frames at t = 0 through 10% loss and 2 ms of delay; B
/// sees none of them before 2 ms and exactly the survivors at 2 ms. The
/// survivors are the ones the same configuration, fed the same frames,
/// lets through: the seed decides, not the run.
#[test]
fn impaired_wire_delays_exactly_and_drops_by_the_seed() {
    let lossy = ImpairConfig::new().loss(0.1).delay_us(2000).seed(42);
    let run = || {
        let pool = PoolConfig::new().frames(2048).build().unwrap();
        let (ea, eb) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        let now = Arc::new(AtomicI64::new(0));
        let clock = ImpairClock::Manual(now.clone());
        let mut a = Impaired::new(ea, clock.clone(), lossy.clone(), ImpairConfig::new()).unwrap();
        let mut b = Impaired::new(eb, clock, ImpairConfig::new(), ImpairConfig::new()).unwrap();
        let mut burst: Vec<Frame> = (0..1000).map(|i| frame(&pool, i)).collect();
        assert_eq!(a.tx_burst(&mut burst).unwrap(), 1000, "all taken at once");
        assert_eq!(a.next_due(), Some(2000));
        let mut got = Vec::new();
        now.store(1999, Ordering::Relaxed);
        a.rx_burst(&mut got, 64).unwrap(); // A releases what is due (nothing yet)
        b.rx_burst(&mut got, 64).unwrap();
        assert!(got.is_empty(), "nothing arrives before the delay");
        now.store(2000, Ordering::Relaxed);
        a.rx_burst(&mut got, 64).unwrap();
        while b.rx_burst(&mut got, 64).unwrap() > 0 {}
        let seqs: Vec<u32> = got.iter().map(seq).collect();
        let s = a.tx_stats();
        assert_eq!(s.offered, 1000);
        assert_eq!(seqs.len() as u64, 1000 - s.dropped_random);
        assert!((70..=130).contains(&s.dropped_random), "10% of 1000: {s:?}");
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "in order");
        drop((got, a, b));
        assert_eq!(pool.stats().free, 2048, "every frame back in the pool");
        seqs
    };
    let first = run();
    assert_eq!(first, run(), "the same seed loses the same frames");

    // The bare model with the same configuration loses the same frames.
    let pool = PoolConfig::new().frames(2048).build().unwrap();
    let mut m = lossy.clone().build().unwrap();
    for i in 0..1000 {
        m.push(0, frame(&pool, i));
    }
    let mut out = Vec::new();
    m.pop_due(2000, &mut out);
    assert_eq!(out.iter().map(seq).collect::<Vec<_>>(), first);
}

/// Two stacks over an impaired wire on a manual clock: how a loss-recovery
/// test is built. Time jumps to whichever comes first, a stack's timer or a
/// held frame's due time, so a 1 s retransmission timeout costs nothing.
#[test]
fn two_stacks_move_bytes_through_loss_delay_reordering_and_duplicates() {
    const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
    let pa = PoolConfig::new().frames(4096).build().unwrap();
    let pb = PoolConfig::new().frames(4096).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let now = Arc::new(AtomicI64::new(0));
    // Each direction: 1% loss, 2 ms ± 0.5 ms, 10% reordered by 1 ms, 1% duplicated.
    let path = |seed| {
        ImpairConfig::new()
            .loss(0.01)
            .delay_us(2000)
            .jitter_us(500)
            .reorder(0.1, 1000)
            .duplicate(0.01)
            .seed(seed)
    };
    let impaired = |end: WireEnd, seed| {
        Impaired::new(
            end,
            ImpairClock::Manual(now.clone()),
            path(seed),
            ImpairConfig::new(),
        )
        .unwrap()
    };
    let stack = |end, ip, seed| {
        Stack::builder(end)
            .ip(ip, 24)
            .seed(seed)
            .clock(Clock::Manual(now.clone()))
            .build()
            .unwrap()
    };
    let mut a = stack(impaired(ea, 1), A, 1);
    let mut b = stack(impaired(eb, 2), B, 2);

    let data = random_bytes(1 << 20, 77);
    let listener = b.tcp_listen(5001, 1).unwrap();
    let client = a.tcp_connect(SocketAddrV4::new(B, 5001)).unwrap();
    let (mut server, mut sent, mut closed) = (None, 0, false);
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        assert!(
            Instant::now() < deadline,
            "stalled: sent {sent}, got {}",
            got.len()
        );
        let mut progress = false;
        if server.is_none() {
            server = b.tcp_accept(listener);
        }
        if sent < data.len() && a.tcp_state(client) == TcpState::Established {
            match a.tcp_write(client, &data[sent..]) {
                Ok(n) => (sent, progress) = (sent + n, true),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("write: {e}"),
            }
        }
        if sent == data.len() && !closed {
            a.tcp_close(client).unwrap();
            closed = true;
        }
        if let Some(s) = server {
            match b.tcp_read(s, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("read: {e}"),
            }
        }
        let busy = a.poll() | b.poll() | progress;
        // Busy: 20 µs per round. Idle: jump to the next timer or due frame.
        let t = now.load(Ordering::Relaxed);
        let step = if busy {
            20
        } else {
            let timers = [a.poll_delay(), b.poll_delay()]
                .into_iter()
                .flatten()
                .map(|d| d.as_micros() as i64);
            let frames = [a.driver().next_due(), b.driver().next_due()]
                .into_iter()
                .flatten()
                .map(|due| due - t);
            timers.chain(frames).min().unwrap_or(1000).max(20)
        };
        now.fetch_add(step, Ordering::Relaxed);
    }
    assert_eq!(
        sha256_hex(&got),
        sha256_hex(&data),
        "bytes equal at both ends"
    );
    let (ta, tb) = (a.driver().tx_stats(), b.driver().tx_stats());
    for s in [ta, tb] {
        assert!(
            s.dropped_random > 0 && s.reordered > 0 && s.duplicated > 0,
            "{s:?}"
        );
    }
    drop((a, b));
    assert_eq!(pa.stats().free, pa.capacity(), "pool a full again");
    assert_eq!(pb.stats().free, pb.capacity(), "pool b full again");
}
