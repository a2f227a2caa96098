//! Two stacks joined by the in-memory wire (unprivileged, deterministic
//! faults: each end is wrapped in `Impaired`, which passes every frame at
//! once unless a test asks for faults).
//!
//! The lossy runs use a manual clock that jumps over idle time: smoltcp's
//! minimum retransmission timeout is 1 s, and a real clock would spend most of
//! the test waiting on it. The wire and the stacks are the same code either way.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use smoltcp::wire::{TcpControl, TcpSeqNumber};
use zcstack::{Clock, Stack, TcpState};
use zcstack_driver::impair::{ImpairClock, ImpairConfig, Impaired};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Driver, Frame, Layer, Pool, PoolConfig};
use zcstack_tests::rawtcp::{RawPeer, Segment};
use zcstack_tests::{random_bytes, sha256_hex};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

struct Bed {
    a: Stack<Impaired<WireEnd>>,
    b: Stack<Impaired<WireEnd>>,
    pa: Pool,
    pb: Pool,
    /// Simulated microseconds, if the stacks run on a manual clock.
    sim: Option<Arc<AtomicI64>>,
}

/// Two stacks on a wire; each end's transmit side passes `faults` (with
/// its own seed), on the stacks' clock.
fn bed(faults: ImpairConfig, simulated: bool) -> Bed {
    let pa = PoolConfig::new().frames(4096).build().unwrap();
    let pb = PoolConfig::new().frames(4096).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let sim = simulated.then(|| Arc::new(AtomicI64::new(0)));
    let clock = sim.clone().map(Clock::Manual).unwrap_or_default();
    let wire_clock = match &sim {
        Some(us) => ImpairClock::Manual(us.clone()),
        None => ImpairClock::monotonic(),
    };
    let impaired = |end, seed| {
        let tx = faults.clone().seed(seed);
        Impaired::new(end, wire_clock.clone(), tx, ImpairConfig::new()).unwrap()
    };
    let (ea, eb) = (impaired(ea, 7), impaired(eb, 8));
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
    /// round and jumps to the next timer or held frame when both are idle.
    fn step(&mut self, app_progress: bool) {
        let busy = self.a.poll() | self.b.poll() | app_progress;
        if let Some(us) = &self.sim {
            let step = if busy {
                Duration::from_micros(20)
            } else {
                let now = us.load(Ordering::Relaxed);
                let due = [self.a.driver().next_due(), self.b.driver().next_due()]
                    .into_iter()
                    .flatten()
                    .map(|t| Duration::from_micros((t - now).max(0) as u64));
                let next = [self.a.poll_delay(), self.b.poll_delay()]
                    .into_iter()
                    .flatten()
                    .chain(due)
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
    let mut bed = bed(ImpairConfig::new(), false);
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
    // Both directions: 2% lost, 2% held back 500 µs and overtaken.
    let mut bed = bed(ImpairConfig::new().loss(0.02).reorder(0.02, 500), true);
    let data = random_bytes(64 << 20, 43);
    let got = bed.transfer(&data, Duration::from_secs(300));
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    let faults = bed.a.driver().tx_stats();
    assert!(
        faults.dropped_random > 100 && faults.reordered > 100,
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
    let mut bed = bed(ImpairConfig::new(), false);
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
    let mut bed = bed(ImpairConfig::new(), false);
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

/// A slow reader closes its receive window while both directions are busy:
/// client a sends 4 MiB to an echo server on b that reads only what it can
/// write back at once (no read-ahead), and a reads nothing back for the first
/// 5 simulated seconds. Both windows close, both stacks probe, and the echo
/// must finish once a drains. (smoltcp's own probes don't move its SND.NXT,
/// so this passes with or without the zero-window patch;
/// `ack_beyond_a_zero_window_is_taken` below is the case that needs it.)
#[test]
fn zero_window_with_a_slow_reader_recovers() {
    let mut bed = bed(ImpairConfig::new(), true);
    let sim = bed.sim.clone().expect("manual clock");
    let data = random_bytes(4 << 20, 44);
    let listener = bed.b.tcp_listen(7, 4).unwrap();
    let client = bed.a.tcp_connect(SocketAddrV4::new(B, 7)).unwrap();
    let mut server = None;
    let (mut sent, mut echoed) = (0, 0);
    let mut got = Vec::with_capacity(data.len());
    let mut buf = vec![0u8; 65536];
    let (mut shut, mut server_eof) = (false, false);
    // Reading starts after 5 simulated seconds: long enough for both windows
    // to close and for both sides to send zero-window probes.
    let read_from_us = 5_000_000;
    let limit_us = 120_000_000;
    let wall = Instant::now() + Duration::from_secs(60);
    while got.len() < data.len() {
        let now_us = sim.load(Ordering::Relaxed);
        assert!(
            now_us < limit_us && Instant::now() < wall,
            "stalled at {} simulated s: a sent {sent}, b echoed {echoed}, a got {} of {}",
            now_us / 1_000_000,
            got.len(),
            data.len()
        );
        let mut progress = false;
        if server.is_none() {
            server = bed.b.tcp_accept(listener);
        }
        if bed.a.tcp_state(client) == TcpState::Established {
            if sent < data.len() {
                if let Ok(n) = bed.a.tcp_write(client, &data[sent..]) {
                    sent += n;
                    progress = true;
                }
            } else if !shut {
                bed.a.tcp_shutdown(client).unwrap();
                shut = true;
            }
        }
        if let Some(s) = server {
            // Echo without read-ahead: read only what fits in the send ring.
            let room = bed.b.tcp_send_room(s).min(buf.len());
            if room > 0 && !server_eof {
                match bed.b.tcp_read(s, &mut buf[..room]) {
                    Ok(0) => {
                        server_eof = true;
                        bed.b.tcp_shutdown(s).unwrap();
                    }
                    Ok(n) => {
                        assert_eq!(bed.b.tcp_write(s, &buf[..n]).unwrap(), n);
                        echoed += n;
                        progress = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => panic!("server read: {e}"),
                }
            }
        }
        if now_us >= read_from_us {
            match bed.a.tcp_read(client, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => panic!("client read: {e}"),
            }
        }
        bed.step(progress);
    }
    eprintln!(
        "echoed {} bytes in {:.1} simulated s",
        got.len(),
        sim.load(Ordering::Relaxed) as f64 / 1e6
    );
    assert_eq!(got.len(), data.len());
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    bed.a.tcp_close(client).unwrap();
    if let Some(s) = server {
        bed.b.tcp_close(s).unwrap();
    }
    for _ in 0..5000 {
        bed.step(false);
    }
    bed.assert_pools_full();
}

/// Polls the stack for `ms` simulated milliseconds, 1 ms a step; returns the
/// segments the scripted peer received meanwhile.
fn run_peer(
    stack: &mut Stack<WireEnd>,
    peer: &mut RawPeer,
    sim: &AtomicI64,
    ms: u32,
) -> Vec<Segment> {
    let mut segs = Vec::new();
    for _ in 0..ms {
        stack.poll();
        segs.extend(peer.receive());
        sim.fetch_add(1000, Ordering::Relaxed);
    }
    segs
}

/// The case two stacks don't produce by themselves: a peer whose window probe
/// carries one new byte and counts it as sent (SND.NXT moves past the stack's
/// zero window), then acknowledges the stack's data with a pure ACK whose
/// SEG.SEQ is that SND.NXT. A Linux peer lands in the same place when the
/// stack's window-scaled right edge moves left after Linux sent up to it.
/// RFC 9293 3.10.7.4: with a zero window, valid ACKs are still accepted.
/// Unpatched smoltcp 0.14 dropped the segment whole ("zero-length segment not
/// inside zero-length window") and retransmitted acknowledged data forever.
#[test]
fn ack_beyond_a_zero_window_is_taken() {
    let pa = PoolConfig::new().frames(256).build().unwrap();
    let pb = PoolConfig::new().frames(256).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let sim = Arc::new(AtomicI64::new(0));
    let mut stack = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .clock(Clock::Manual(sim.clone()))
        .tcp_buffers(4096, 4096)
        .build()
        .unwrap();
    let mut peer = RawPeer::new(ea, A, B, stack.mac(), (40000, 7));
    let listener = stack.tcp_listen(7, 1).unwrap();

    // Handshake (no window scaling: every window below is in bytes).
    let mut snd_nxt = TcpSeqNumber(1000);
    peer.send(TcpControl::Syn, snd_nxt, None, 65535, &[]);
    let segs = run_peer(&mut stack, &mut peer, &sim, 10);
    let synack = segs
        .iter()
        .find(|s| s.control == TcpControl::Syn)
        .expect("SYN-ACK");
    snd_nxt += 1;
    let mut rcv_nxt = synack.seq + 1;
    peer.send(TcpControl::None, snd_nxt, Some(rcv_nxt), 65535, &[]);
    run_peer(&mut stack, &mut peer, &sim, 10);
    let conn = stack.tcp_accept(listener).expect("accepted");

    // The peer fills the 4096-byte window; the stack's app reads nothing.
    let data = random_bytes(4097, 45);
    for chunk in data[..4096].chunks(1460) {
        peer.send(TcpControl::Psh, snd_nxt, Some(rcv_nxt), 65535, chunk);
        snd_nxt += chunk.len();
    }
    let segs = run_peer(&mut stack, &mut peer, &sim, 50);
    let last = segs.last().expect("an ACK");
    assert_eq!((last.ack, last.window), (Some(snd_nxt), 0), "window closed");

    // Window probe with one new byte, which the peer counts as sent.
    peer.send(
        TcpControl::Psh,
        snd_nxt,
        Some(rcv_nxt),
        65535,
        &data[4096..],
    );
    snd_nxt += 1;
    let segs = run_peer(&mut stack, &mut peer, &sim, 50);
    assert!(
        segs.iter()
            .any(|s| s.ack == Some(snd_nxt - 1) && s.window == 0),
        "probe refused with an ACK: {segs:?}"
    );

    // The stack sends 1000 bytes; the peer acknowledges them from SEG.SEQ =
    // its SND.NXT, one past the stack's zero window.
    let reply = random_bytes(1000, 46);
    assert_eq!(stack.tcp_write(conn, &reply).unwrap(), 1000);
    let segs = run_peer(&mut stack, &mut peer, &sim, 50);
    let sent: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(sent, reply);
    rcv_nxt += 1000;
    peer.send(TcpControl::None, snd_nxt, Some(rcv_nxt), 65535, &[]);
    // 3 simulated seconds: well past smoltcp's 1 s minimum RTO.
    let segs = run_peer(&mut stack, &mut peer, &sim, 3000);
    let resent = segs.iter().filter(|s| !s.payload.is_empty()).count();
    assert_eq!(
        stack.tcp_unacked(conn),
        0,
        "the stack took the ACK beyond its zero window ({resent} retransmissions)"
    );
    assert_eq!(resent, 0, "acknowledged data was retransmitted");

    // The slow reader drains: the window opens, and the probe byte, sent
    // again, is taken.
    let mut got = vec![0u8; 4096];
    assert_eq!(stack.tcp_read(conn, &mut got).unwrap(), 4096);
    let segs = run_peer(&mut stack, &mut peer, &sim, 50);
    assert!(
        segs.iter().any(|s| s.window > 0),
        "window update after the read: {segs:?}"
    );
    peer.send(
        TcpControl::Psh,
        snd_nxt - 1,
        Some(rcv_nxt),
        65535,
        &data[4096..],
    );
    run_peer(&mut stack, &mut peer, &sim, 50);
    let mut last_byte = [0u8; 8];
    assert_eq!(stack.tcp_read(conn, &mut last_byte).unwrap(), 1);
    got.push(last_byte[0]);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));

    stack.tcp_abort(conn).unwrap();
    run_peer(&mut stack, &mut peer, &sim, 10);
    drop((stack, peer));
    assert_eq!(pa.stats().free, pa.capacity(), "peer's pool is full again");
    assert_eq!(pb.stats().free, pb.capacity(), "stack's pool is full again");
}

impl Bed {
    /// A connection from a to b's port 7, accepted: (client on a, server on b).
    fn connected(&mut self) -> (zcstack::TcpConn, zcstack::TcpConn) {
        let listener = self.b.tcp_listen(7, 1).unwrap();
        let client = self.a.tcp_connect(SocketAddrV4::new(B, 7)).unwrap();
        for _ in 0..1000 {
            self.step(false);
            if let Some(s) = self.b.tcp_accept(listener) {
                return (client, s);
            }
        }
        panic!("not accepted");
    }

    /// Steps until `done` holds (at most 10 000 rounds).
    fn step_until(&mut self, what: &str, mut done: impl FnMut(&mut Bed) -> bool) {
        for _ in 0..10_000 {
            if done(self) {
                return;
            }
            self.step(false);
        }
        panic!("never happened: {what}");
    }
}

/// A reader that shut down its own side first and then stopped reading: its
/// socket passes TIME-WAIT (10 s) with the peer's bytes unread. They must
/// still be there afterwards, followed by a clean end of stream — before
/// smoltcp patch 22 the end of TIME-WAIT emptied the receive buffer and
/// the reader met the end of stream 2 KiB early.
#[test]
fn unread_bytes_outlive_time_wait() {
    let mut bed = bed(ImpairConfig::new(), true);
    let (client, server) = bed.connected();
    bed.b.tcp_shutdown(server).unwrap();
    let data = random_bytes(2000, 47);
    assert_eq!(bed.a.tcp_write(client, &data).unwrap(), data.len());
    bed.a.tcp_close(client).unwrap();
    bed.step_until("b in TIME-WAIT", |bed| {
        bed.b.tcp_state(server) == TcpState::TimeWait
    });
    let sim = bed.sim.clone().unwrap();
    let start = sim.load(Ordering::Relaxed);
    bed.step_until("TIME-WAIT over", |bed| {
        bed.b.tcp_state(server) == TcpState::Closed
    });
    let waited = Duration::from_micros((sim.load(Ordering::Relaxed) - start) as u64);
    assert!(
        waited >= Duration::from_secs(9),
        "TIME-WAIT lasted {waited:?}"
    );
    let mut got = vec![0u8; 4096];
    let n = bed.b.tcp_read(server, &mut got).unwrap();
    assert_eq!(sha256_hex(&got[..n]), sha256_hex(&data), "all {n} bytes");
    assert_eq!(
        bed.b.tcp_read(server, &mut got).unwrap(),
        0,
        "end of stream"
    );
    bed.b.tcp_close(server).unwrap();
    for _ in 0..100 {
        bed.step(false);
    }
    bed.assert_pools_full();
}

/// A connection the peer resets mid-stream gives the bytes that arrived,
/// then `ConnectionReset`: never `Ok(0)`, which would pass a truncated
/// transfer off as complete.
#[test]
fn a_reset_stream_does_not_read_as_finished() {
    let mut bed = bed(ImpairConfig::new(), true);
    let (client, server) = bed.connected();
    let data = random_bytes(3000, 48);
    assert_eq!(bed.a.tcp_write(client, &data).unwrap(), data.len());
    bed.step_until("bytes arrived", |bed| bed.b.tcp_readable(server) == 3000);
    bed.a.tcp_abort(client).unwrap();
    bed.step_until("reset arrived", |bed| {
        bed.b.tcp_state(server) == TcpState::Closed
    });
    let mut got = vec![0u8; 4096];
    assert_eq!(bed.b.tcp_read(server, &mut got).unwrap(), 3000);
    let err = bed.b.tcp_read(server, &mut got).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    assert_eq!(
        err.to_string(),
        "connection reset or timed out before the peer finished sending"
    );
    let err = bed.b.tcp_read_with(server, |d| (d.len(), ())).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ConnectionReset);
    bed.b.tcp_close(server).unwrap();
    for _ in 0..100 {
        bed.step(false);
    }
    bed.assert_pools_full();
}

/// A wire end whose sends take `stall` of (manual) time when armed, as if
/// the thread lost its CPU inside the device's transmit call.
struct Stalling {
    end: WireEnd,
    clock: Arc<AtomicI64>,
    armed: bool,
    stall: Duration,
}

/// Only sending changes; everything else goes to the wire end.
impl Layer for Stalling {
    type Inner = WireEnd;
    fn inner(&self) -> &WireEnd {
        &self.end
    }
    fn inner_mut(&mut self) -> &mut WireEnd {
        &mut self.end
    }
    fn tx_burst(this: &mut Self, frames: &mut Vec<Frame>) -> std::io::Result<usize> {
        if this.armed && frames.iter().any(|f| f.len() > 1000) {
            this.armed = false;
            this.clock
                .fetch_add(this.stall.as_micros() as i64, Ordering::Relaxed);
        }
        this.end.tx_burst(frames)
    }
}

/// A sender whose segments leave 20 ms after its poll read the clock (its
/// thread was descheduled inside the device's send) polls again before
/// the peer has had a chance to answer. Its tail loss probe, due twice the
/// SRTT plus 2 ms after the poll's clock reading, must not fire then: the stack
/// tells smoltcp the segments left late (patch 25), so the probe counts
/// from when they did. Measured on a loaded machine before: 8–18% of
/// 64 KiB responses drew such a probe, all needless.
#[test]
fn segments_that_left_late_draw_no_probe() {
    let pa = PoolConfig::new().frames(1024).build().unwrap();
    let pb = PoolConfig::new().frames(1024).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let sim = Arc::new(AtomicI64::new(0));
    let clock = Clock::Manual(sim.clone());
    let stalling = Stalling {
        end: ea,
        clock: sim.clone(),
        armed: false,
        stall: Duration::from_millis(20),
    };
    let mut a = Stack::builder(stalling)
        .ip(A, 24)
        .seed(1)
        .clock(clock.clone())
        .build()
        .unwrap();
    let mut b = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .clock(clock)
        .build()
        .unwrap();
    let listener = b.tcp_listen(7, 1).unwrap();
    let client = a.tcp_connect(SocketAddrV4::new(B, 7)).unwrap();
    let step = |a: &mut Stack<Stalling>, b: &mut Stack<WireEnd>| {
        a.poll();
        b.poll();
        sim.fetch_add(50, Ordering::Relaxed);
    };
    let mut server = None;
    for _ in 0..1000 {
        step(&mut a, &mut b);
        server = server.or_else(|| b.tcp_accept(listener));
        if server.is_some() && a.tcp_state(client) == TcpState::Established {
            break;
        }
    }
    let server = server.expect("accepted");
    let data = random_bytes(64_000, 49);
    let mut got = Vec::new();
    let mut buf = vec![0u8; 65536];
    let mut sent = 0;
    // Warm up: RTT samples of about 100 µs.
    for round in 0..40 {
        if round == 20 {
            a.driver_mut().armed = true;
        }
        if sent < data.len() {
            sent += a
                .tcp_write(client, &data[sent..(sent + 3000).min(data.len())])
                .unwrap_or(0);
        }
        // The stalled poll, then another before the peer runs.
        a.poll();
        a.poll();
        b.poll();
        while let Ok(n) = b.tcp_read(server, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
        step(&mut a, &mut b);
    }
    for _ in 0..2000 {
        if got.len() == data.len() {
            break;
        }
        if sent < data.len() {
            sent += a.tcp_write(client, &data[sent..]).unwrap_or(0);
        }
        step(&mut a, &mut b);
        while let Ok(n) = b.tcp_read(server, &mut buf) {
            if n == 0 {
                break;
            }
            got.extend_from_slice(&buf[..n]);
        }
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&data), "all bytes arrived");
    let st = a.stats();
    assert_eq!(st.late_tx_polls, 1, "the stalled poll was noticed");
    assert_eq!(st.tcp.tail_loss_probes, 0, "no needless probe");
    assert_eq!(st.tcp.retransmits, 0);
}
