//! Two stacks joined by the in-memory wire (unprivileged, deterministic faults).
//!
//! The lossy runs use a manual clock that jumps over idle time: smoltcp's
//! minimum retransmission timeout is 1 s, and a real clock would spend most of
//! the test waiting on it. The wire and the stacks are the same code either way.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use zcstack::{Clock, Stack, TcpState};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Pool, PoolConfig};
use zcstack_tests::{random_bytes, sha256_hex};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

struct Bed {
    a: Stack<WireEnd>,
    b: Stack<WireEnd>,
    pa: Pool,
    pb: Pool,
    /// Simulated microseconds, if the stacks run on a manual clock.
    sim: Option<Arc<AtomicI64>>,
}

fn bed(cfg: WireConfig, simulated: bool) -> Bed {
    let pa = PoolConfig::new().frames(4096).build().unwrap();
    let pb = PoolConfig::new().frames(4096).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), cfg);
    let sim = simulated.then(|| Arc::new(AtomicI64::new(0)));
    let clock = sim.clone().map(Clock::Manual).unwrap_or_default();
    let a = Stack::builder(ea)
        .ip(A, 24)
        .seed(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let b = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .clock(clock)
        .build()
        .unwrap();
    Bed { a, b, pa, pb, sim }
}

impl Bed {
    /// Polls both stacks; on a manual clock, time advances 20 µs per busy
    /// round and jumps to the next timer when both are idle.
    fn step(&mut self, app_progress: bool) {
        let busy = self.a.poll() | self.b.poll() | app_progress;
        if let Some(us) = &self.sim {
            let step = if busy {
                Duration::from_micros(20)
            } else {
                let next = [self.a.poll_delay(), self.b.poll_delay()]
                    .into_iter()
                    .flatten()
                    .min();
                next.unwrap_or(Duration::from_millis(1))
                    .max(Duration::from_micros(20))
            };
            us.fetch_add(step.as_micros() as i64, Ordering::Relaxed);
        }
    }

    /// Sends `data` from a to b over one TCP connection; returns what b received.
    fn transfer(&mut self, data: &[u8], limit: Duration) -> Vec<u8> {
        let listener = self.b.tcp_listen(5001, 4).unwrap();
        let client = self.a.tcp_connect(SocketAddrV4::new(B, 5001)).unwrap();
        let deadline = Instant::now() + limit;
        let mut server = None;
        let mut sent = 0;
        let mut got = Vec::with_capacity(data.len());
        let mut buf = vec![0u8; 65536];
        let mut closed = false;
        loop {
            assert!(
                Instant::now() < deadline,
                "transfer stalled: sent {sent}, got {}",
                got.len()
            );
            let mut progress = false;
            if server.is_none() {
                server = self.b.tcp_accept(listener);
            }
            if sent < data.len() && self.a.tcp_state(client) == TcpState::Established {
                match self.a.tcp_write(client, &data[sent..]) {
                    Ok(n) => {
                        sent += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("write: {e}"),
                }
            }
            if sent == data.len() && !closed {
                self.a.tcp_close(client).unwrap();
                closed = true;
            }
            if let Some(s) = server {
                match self.b.tcp_read(s, &mut buf) {
                    Ok(0) => {
                        self.b.tcp_close(s).unwrap();
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
            self.step(progress);
        }
        // Let the FIN exchange finish so every socket and frame is released.
        for _ in 0..5000 {
            self.step(false);
        }
        got
    }

    fn assert_pools_full(self) {
        let Bed { a, b, pa, pb, .. } = self;
        drop((a, b));
        assert_eq!(pa.stats().free, pa.capacity(), "pool a is full again");
        assert_eq!(pb.stats().free, pb.capacity(), "pool b is full again");
    }
}

#[test]
fn sixty_four_mib_clean_wire() {
    let mut bed = bed(WireConfig::default(), false);
    let data = random_bytes(64 << 20, 42);
    let got = bed.transfer(&data, Duration::from_secs(120));
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let (sa, sb) = (bed.a.stats(), bed.b.stats());
    assert_eq!(
        sb.tcp_rx_payload,
        data.len() as u64,
        "no retransmissions on a clean wire"
    );
    assert!(sa.tcp_tx_payload >= data.len() as u64);
    assert_eq!(sa.app_write_bytes, data.len() as u64);
    bed.assert_pools_full();
}

#[test]
fn sixty_four_mib_with_loss_and_reordering() {
    let cfg = WireConfig {
        loss: 0.02,
        reorder: 0.02,
        seed: 7,
        ..Default::default()
    };
    let mut bed = bed(cfg, true);
    let data = random_bytes(64 << 20, 43);
    let got = bed.transfer(&data, Duration::from_secs(300));
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let faults = bed.a.driver().faults();
    assert!(
        faults.lost > 100 && faults.reordered > 100,
        "faults were injected: {faults:?}"
    );
    assert!(
        bed.a.stats().tcp_tx_payload > data.len() as u64,
        "losses forced retransmissions"
    );
    bed.assert_pools_full();
}

#[test]
fn udp_datagrams_arrive_whole_with_their_sender() {
    let mut bed = bed(WireConfig::default(), false);
    let sa = bed.a.udp_bind(4000).unwrap();
    let sb = bed.b.udp_bind(5000).unwrap();
    let err = bed.b.udp_bind(5000).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    let dst = SocketAddrV4::new(B, 5000);
    let mut got = Vec::new();
    let mut buf = [0u8; 2048];
    for i in 0..100u32 {
        let payload = random_bytes(1 + (i as usize * 13) % 1400, u64::from(i));
        // The first datagram waits in smoltcp while ARP resolves b's address.
        while let Err(e) = bed.a.udp_send_to(sa, &payload, dst) {
            assert_eq!(e.kind(), ErrorKind::WouldBlock, "{e}");
            bed.step(false);
        }
        bed.step(false);
        while let Ok((n, from)) = bed.b.udp_recv_from(sb, &mut buf) {
            assert_eq!(from, SocketAddrV4::new(A, 4000));
            got.push(buf[..n].to_vec());
        }
    }
    for _ in 0..100 {
        bed.step(false);
        while let Ok((n, _)) = bed.b.udp_recv_from(sb, &mut buf) {
            got.push(buf[..n].to_vec());
        }
    }
    assert_eq!(got.len(), 100, "every datagram arrived once");
    for (i, d) in got.iter().enumerate() {
        assert_eq!(
            *d,
            random_bytes(1 + (i * 13) % 1400, i as u64),
            "datagram {i}"
        );
    }
    // A buffer too small for the next datagram is refused and the datagram kept.
    bed.a.udp_send_to(sa, &[7u8; 600], dst).unwrap();
    for _ in 0..10 {
        bed.step(false);
    }
    let err = bed.b.udp_recv_from(sb, &mut buf[..100]).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidInput, "{err}");
    assert_eq!(bed.b.udp_recv_from(sb, &mut buf).unwrap().0, 600);
    bed.assert_pools_full();
}

#[test]
fn simultaneous_connects_are_all_accepted() {
    let mut bed = bed(WireConfig::default(), false);
    let listener = bed.b.tcp_listen(80, 64).unwrap();
    let conns: Vec<_> = (0..40)
        .map(|_| bed.a.tcp_connect(SocketAddrV4::new(B, 80)).unwrap())
        .collect();
    let mut accepted = Vec::new();
    for _ in 0..5000 {
        bed.step(false);
        while let Some(c) = bed.b.tcp_accept(listener) {
            accepted.push(c);
        }
        if accepted.len() == conns.len() {
            break;
        }
    }
    assert_eq!(
        accepted.len(),
        40,
        "every connect was accepted, none refused"
    );
    assert!(
        conns
            .iter()
            .all(|&c| bed.a.tcp_state(c) == TcpState::Established)
    );
    for c in accepted {
        bed.b.tcp_close(c).unwrap();
    }
    for c in conns {
        bed.a.tcp_close(c).unwrap();
    }
    for _ in 0..5000 {
        bed.step(false);
    }
    assert_eq!(bed.b.stats().tcp_open, 0);
    bed.assert_pools_full();
}
