//! Loss recovery on the in-memory wire (unprivileged, deterministic): two
//! stacks joined by an impaired wire (`zcstack_driver::impair`) on a manual
//! clock, 5 ms each way. Each test moves bytes through one kind of damage
//! and asserts on what loss recovery did (`StackStats::tcp`): no timeouts
//! where the losses have data behind them, one retransmission per loss,
//! reordering not taken for loss, a lost tail found by a probe. Bytes are
//! compared by hash at both ends, and both pools are full afterwards.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use zcstack::{Clock, Congestion, Stack, TcpRecoveryStats, TcpState};
use zcstack_driver::header::Ipv4;
use zcstack_driver::impair::{ImpairClock, ImpairConfig, ImpairStats, Impaired};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Capabilities, Driver, Frame, Layer, Pool, PoolConfig};
use zcstack_tests::{random_bytes, sha256_hex};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
/// One-way delay.
const DELAY_US: u64 = 5_000;

/// A wire end behind the impairment, with a test's own frame filter.
type End = Filter<Impaired<WireEnd>>;

/// Drops the frames a test picks (`drop_tcp`), after the impairment: the
/// random models cannot aim at one segment; a lost tail needs exactly that.
struct Filter<D> {
    inner: D,
    /// Data segments sent since the test armed the filter, and which of
    /// them (1-based) to drop.
    data_frames: u64,
    drop: Vec<u64>,
    dropped: u64,
}

impl<D: Driver> Filter<D> {
    fn new(inner: D) -> Self {
        Filter {
            inner,
            data_frames: 0,
            drop: Vec::new(),
            dropped: 0,
        }
    }

    /// The TCP payload length of an Ethernet/IPv4/TCP frame.
    fn payload_len(frame: &Frame) -> Option<usize> {
        let ip = Ipv4::of_frame(frame.data())?;
        let tcp = ip.tcp()?;
        ip.bytes()
            .len()
            .checked_sub(ip.header_len() + tcp.header_len())
    }
}

/// Only sending changes; everything else goes to the wrapped driver.
impl<D: Driver> Layer for Filter<D> {
    type Inner = D;
    fn inner(&self) -> &D {
        &self.inner
    }
    fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }
    fn tx_burst(this: &mut Self, frames: &mut Vec<Frame>) -> std::io::Result<usize> {
        if !this.drop.is_empty() {
            let (drop, count) = (&this.drop, &mut this.data_frames);
            let before = frames.len();
            frames.retain(|f| {
                if Self::payload_len(f).is_none_or(|n| n == 0) {
                    return true;
                }
                *count += 1;
                !drop.contains(count)
            });
            this.dropped += (before - frames.len()) as u64;
        }
        this.inner.tx_burst(frames)
    }
    fn capabilities(this: &Self) -> Capabilities {
        // Every data segment must pass `tx_burst` to be counted.
        let mut caps = this.inner.capabilities();
        caps.offloads.tx_gather = false;
        caps
    }
}

struct Bed {
    a: Stack<End>,
    b: Stack<End>,
    pa: Pool,
    pb: Pool,
    now: Arc<AtomicI64>,
    listener: Option<zcstack::TcpListener>,
}

/// What one transfer did.
struct Outcome {
    /// Simulated milliseconds from connect to the receiver's end of stream.
    ms: i64,
    /// The sender's loss recovery.
    sender: TcpRecoveryStats,
    /// What the impairment did to the sender's frames (data) and the
    /// receiver's (ACKs).
    data_path: ImpairStats,
    ack_path: ImpairStats,
}

/// `data`: the impairment on a's frames (a sends the data), `acks`: on b's.
/// Both get the 5 ms delay.
fn bed(data: ImpairConfig, acks: ImpairConfig) -> Bed {
    bed_cc(data, acks, Congestion::Cubic)
}

/// [`bed`] with congestion control `cc` on both stacks.
fn bed_cc(data: ImpairConfig, acks: ImpairConfig, cc: Congestion) -> Bed {
    let pa = PoolConfig::new().frames(4096).build().unwrap();
    let pb = PoolConfig::new().frames(4096).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let now = Arc::new(AtomicI64::new(0));
    let end = |e, cfg: ImpairConfig| {
        let cfg = cfg.delay_us(DELAY_US);
        Filter::new(
            Impaired::new(
                e,
                ImpairClock::Manual(now.clone()),
                cfg,
                ImpairConfig::new(),
            )
            .unwrap(),
        )
    };
    let stack = |e, ip, seed| {
        Stack::builder(e)
            .ip(ip, 24)
            .seed(seed)
            .clock(Clock::Manual(now.clone()))
            .congestion(cc)
            .build()
            .unwrap()
    };
    Bed {
        a: stack(end(ea, data), A, 1),
        b: stack(end(eb, acks), B, 2),
        pa,
        pb,
        now,
        listener: None,
    }
}

impl Bed {
    /// Sends `data` from a to b over a new connection; checks the bytes.
    fn transfer(&mut self, data: &[u8]) -> Outcome {
        let (a, b) = (&mut self.a, &mut self.b);
        let listener = *self
            .listener
            .get_or_insert_with(|| b.tcp_listen(5001, 1).unwrap());
        let start = self.now.load(Ordering::Relaxed);
        let before = a.stats().tcp;
        let client = a.tcp_connect(SocketAddrV4::new(B, 5001)).unwrap();
        let (mut server, mut sent, mut closed) = (None, 0, false);
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 65536];
        loop {
            let t = self.now.load(Ordering::Relaxed);
            assert!(
                t - start < 300_000_000,
                "stalled for 300 simulated s: sent {sent}, got {}",
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
                    Ok(0) => {
                        b.tcp_close(s).unwrap();
                        break;
                    }
                    Ok(n) => {
                        got.extend_from_slice(&buf[..n]);
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("read: {e}"),
                }
            }
            step(a, b, &self.now, progress);
        }
        let ms = (self.now.load(Ordering::Relaxed) - start) / 1000;
        // Let the FIN exchange finish.
        for _ in 0..2000 {
            step(a, b, &self.now, false);
        }
        assert_eq!(got.len(), data.len());
        assert_eq!(
            sha256_hex(&got),
            sha256_hex(data),
            "bytes equal at both ends"
        );
        let after = a.stats().tcp;
        Outcome {
            ms,
            sender: diff(&after, &before),
            data_path: a.driver().inner.tx_stats(),
            ack_path: b.driver().inner.tx_stats(),
        }
    }

    fn assert_pools_full(self) {
        let Bed { a, b, pa, pb, .. } = self;
        drop((a, b));
        assert_eq!(pa.stats().free, pa.capacity(), "pool a full again");
        assert_eq!(pb.stats().free, pb.capacity(), "pool b full again");
    }
}

/// Polls both stacks; busy: 20 µs pass, idle: time jumps to the next timer
/// or held frame.
fn step(a: &mut Stack<End>, b: &mut Stack<End>, now: &AtomicI64, progress: bool) {
    // Frames an impairment released onto the wire in this step wait there
    // for the other stack's next poll: that is work, not idle time.
    let released = |a: &Stack<End>, b: &Stack<End>| {
        a.driver().inner.tx_stats().forwarded + b.driver().inner.tx_stats().forwarded
    };
    let before = released(a, b);
    let busy = a.poll() | b.poll() | progress | (released(a, b) != before);
    let t = now.load(Ordering::Relaxed);
    let dt = if busy {
        20
    } else {
        let timers = [a.poll_delay(), b.poll_delay()]
            .into_iter()
            .flatten()
            .map(|d| d.as_micros() as i64);
        let frames = [a.driver().inner.next_due(), b.driver().inner.next_due()]
            .into_iter()
            .flatten()
            .map(|due| due - t);
        timers.chain(frames).min().unwrap_or(1000).max(20)
    };
    now.fetch_add(dt, Ordering::Relaxed);
}

fn diff(a: &TcpRecoveryStats, b: &TcpRecoveryStats) -> TcpRecoveryStats {
    TcpRecoveryStats {
        retransmits: a.retransmits - b.retransmits,
        retransmitted_bytes: a.retransmitted_bytes - b.retransmitted_bytes,
        rto_expiries: a.rto_expiries - b.rto_expiries,
        fast_recoveries: a.fast_recoveries - b.fast_recoveries,
        tail_loss_probes: a.tail_loss_probes - b.tail_loss_probes,
        tlp_repairs: a.tlp_repairs - b.tlp_repairs,
        undos: a.undos - b.undos,
        dsacks: a.dsacks - b.dsacks,
        reorderings: a.reorderings - b.reorderings,
        paws_rejects: a.paws_rejects - b.paws_rejects,
    }
}

const MIB4: usize = 4 << 20;

#[test]
fn a_clean_path_retransmits_nothing() {
    let mut bed = bed(ImpairConfig::new(), ImpairConfig::new());
    let o = bed.transfer(&random_bytes(MIB4, 1));
    assert_eq!(o.sender, TcpRecoveryStats::default(), "{}", o.sender);
    eprintln!("clean: {} ms", o.ms);
    bed.assert_pools_full();
}

/// 1% random loss of data segments, ACKs intact: every loss has data behind
/// it, so SACK and RACK find each one; no timeout fires, and each lost
/// segment is sent again about once.
#[test]
fn one_percent_loss_costs_one_retransmission_per_loss_and_no_timeout() {
    let mut bed = bed(ImpairConfig::new().loss(0.01).seed(11), ImpairConfig::new());
    let o = bed.transfer(&random_bytes(MIB4, 2));
    eprintln!("1% loss: {} ms, {}, {:?}", o.ms, o.sender, o.data_path);
    let lost = o.data_path.dropped_random;
    assert!(lost > 10, "losses were injected: {:?}", o.data_path);
    assert_eq!(o.sender.rto_expiries, 0, "{}", o.sender);
    assert!(o.sender.fast_recoveries > 0, "{}", o.sender);
    // Retransmissions are the lost segments, plus those whose
    // retransmission was lost too (1% of them).
    assert!(
        o.sender.retransmits >= lost && o.sender.retransmits <= lost + lost / 4 + 2,
        "{} retransmits for {lost} losses",
        o.sender.retransmits
    );
    bed.assert_pools_full();
}

/// 20% of data segments reordered (held 3 ms, more than the spacing of a
/// whole window): RACK learns the reordering, its window grows with the
/// D-SACKs of the few early spurious retransmissions, and every recovery
/// they caused is undone — the congestion window is not cut.
#[test]
fn reordering_is_not_taken_for_loss() {
    let mut bed = bed(
        ImpairConfig::new().reorder(0.2, 3_000).seed(12),
        ImpairConfig::new(),
    );
    let o = bed.transfer(&random_bytes(MIB4, 3));
    eprintln!(
        "20% reordering: {} ms, {}, {:?}",
        o.ms, o.sender, o.data_path
    );
    assert!(o.data_path.reordered > 100, "{:?}", o.data_path);
    assert!(o.sender.reorderings > 0, "{}", o.sender);
    assert_eq!(o.sender.rto_expiries, 0, "{}", o.sender);
    assert_eq!(
        o.sender.undos, o.sender.fast_recoveries,
        "every recovery reordering caused is undone: {}",
        o.sender
    );
    assert!(
        o.sender.retransmits <= 10,
        "few spurious retransmissions: {}",
        o.sender
    );
    bed.assert_pools_full();
}

/// A lost tail: the last two data segments of a response are lost, so
/// nothing behind them makes the receiver send SACKs. Two RTTs after the
/// last ACK the tail loss probe resends the last segment; its SACK shows the
/// other hole, which RACK resends at once. No timeout (200 ms at least)
/// fires: the response completes in about five RTTs, not two plus 200 ms.
#[test]
fn a_lost_tail_is_found_by_a_probe() {
    let mut bed = bed(ImpairConfig::new(), ImpairConfig::new());
    // 20 KiB: 14 full segments (1448 bytes with timestamps) and one of 208;
    // the filter drops the first transmissions of the 14th and 15th.
    bed.a.driver_mut().drop = vec![14, 15];
    let o = bed.transfer(&random_bytes(20 << 10, 6));
    eprintln!("lost tail: {} ms, {}", o.ms, o.sender);
    assert_eq!(bed.a.driver().dropped, 2, "the tail was dropped");
    assert_eq!(o.sender.tail_loss_probes, 1, "{}", o.sender);
    assert_eq!(o.sender.rto_expiries, 0, "{}", o.sender);
    // The probe (the last MSS of sequence space: some of the 14th
    // segment, the 15th, the FIN) and the rest of the 14th.
    assert!(o.sender.retransmitted_bytes <= 2 * 1448, "{}", o.sender);
    assert!(o.ms < 100, "{} ms: probe, not timeout", o.ms);
    bed.assert_pools_full();
}

/// Everything at once, both ways: 1% loss, 20% reordering by 3 ms, 1%
/// duplicates, 0.1% corrupted (checksums catch them). The bytes arrive
/// whole; recovery needs at most a couple of timeouts.
#[test]
fn loss_reordering_duplicates_and_corruption_both_ways() {
    let path = |seed| {
        ImpairConfig::new()
            .loss(0.01)
            .reorder(0.2, 3_000)
            .duplicate(0.01)
            .corrupt(0.001)
            .seed(seed)
    };
    let mut bed = bed(path(14), path(15));
    let o = bed.transfer(&random_bytes(MIB4, 4));
    eprintln!(
        "mixed: {} ms, {}, data {:?}, acks {:?}",
        o.ms, o.sender, o.data_path, o.ack_path
    );
    assert!(o.data_path.duplicated > 0 && o.data_path.corrupted > 0);
    assert!(o.sender.rto_expiries <= 2, "{}", o.sender);
    bed.assert_pools_full();
}

/// 1% loss with and without 20% reordering: a loss costs the same window
/// cut either way. Bytes the receiver holds beyond a hole leave the pipe,
/// so on a reordering path the sender keeps sending and the bytes
/// outstanding grow to several windows; a cut scaled from those raised the
/// window instead of lowering it, and the transfer ran 6× faster than the
/// same losses allow without reordering (1.8 s against 10.3 s here).
#[test]
fn reordering_does_not_shield_losses_from_the_window_cut() {
    let run = |data: ImpairConfig| {
        let mut bed = bed(data, ImpairConfig::new());
        let o = bed.transfer(&random_bytes(16 << 20, 5));
        bed.assert_pools_full();
        o
    };
    let plain = run(ImpairConfig::new().loss(0.01).seed(21));
    let mixed = run(ImpairConfig::new().loss(0.01).reorder(0.2, 3_000).seed(21));
    eprintln!("1%: {} ms, {}", plain.ms, plain.sender);
    eprintln!("1% + 20% reordering: {} ms, {}", mixed.ms, mixed.sender);
    assert!(mixed.data_path.reordered > 1000, "{:?}", mixed.data_path);
    let lost = |o: &Outcome| o.data_path.dropped_random as f64;
    assert!((lost(&mixed) - lost(&plain)).abs() < 0.2 * lost(&plain));
    // Window cuts that stood (recoveries not undone), per loss, and the
    // simulated time the transfer took: within 30% of the plain path's.
    let cuts = |o: &Outcome| (o.sender.fast_recoveries - o.sender.undos) as f64 / lost(o);
    assert!(
        cuts(&mixed) >= 0.7 * cuts(&plain),
        "window cuts per loss: {:.2} with reordering, {:.2} without",
        cuts(&mixed),
        cuts(&plain)
    );
    assert!(
        mixed.ms as f64 >= 0.7 * plain.ms as f64,
        "{} ms with reordering, {} ms without",
        mixed.ms,
        plain.ms
    );
}

/// BBR does not read random loss as congestion: through 1% loss (and 20%
/// reordering) at a 100 Mbit/s bottleneck with a BDP of queue, it keeps
/// most of the bottleneck busy, where Cubic halves its window per loss.
#[test]
fn bbr_keeps_the_bottleneck_busy_through_random_loss() {
    let path = |seed| {
        ImpairConfig::new()
            .loss(0.01)
            .reorder(0.2, 3_000)
            .rate_bps(100_000_000)
            .queue_bytes(125_000)
            .seed(seed)
    };
    let run = |cc| {
        let mut bed = bed_cc(path(31), ImpairConfig::new().loss(0.01).seed(32), cc);
        let o = bed.transfer(&random_bytes(16 << 20, 7));
        bed.assert_pools_full();
        o
    };
    let bbr = run(Congestion::Bbr);
    let cubic = run(Congestion::Cubic);
    let mbit = |o: &Outcome| (16u64 << 20) as f64 * 8.0 / (o.ms as f64 * 1000.0);
    eprintln!(
        "bbr: {} ms ({:.0} Mbit/s), {}",
        bbr.ms,
        mbit(&bbr),
        bbr.sender
    );
    eprintln!(
        "cubic: {} ms ({:.0} Mbit/s), {}",
        cubic.ms,
        mbit(&cubic),
        cubic.sender
    );
    assert!(bbr.data_path.dropped_random > 50, "{:?}", bbr.data_path);
    // Measured: BBR 68 Mbit/s (the 256 KiB rings hold it back), Cubic 15.
    assert!(
        mbit(&bbr) > 50.0,
        "BBR moved {:.0} Mbit/s of 100",
        mbit(&bbr)
    );
    assert!(
        bbr.ms * 3 < cubic.ms,
        "BBR {} ms, Cubic {} ms",
        bbr.ms,
        cubic.ms
    );
    assert_eq!(bbr.sender.rto_expiries, 0, "{}", bbr.sender);
}
