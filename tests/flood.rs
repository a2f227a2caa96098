//! Hostile input on the in-memory wire (unprivileged, deterministic): a SYN
//! flood from spoofed addresses against a listener. A scripted peer sends
//! the flood and plays the legitimate client.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use smoltcp::wire::{TcpControl, TcpSeqNumber};
use zcstack::{Clock, Stack};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_tests::rawtcp::{RawPeer, Segment};

const PEER: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const STACK: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const BACKLOG: usize = 4;

struct Bed {
    stack: Stack<WireEnd>,
    peer: RawPeer,
    sim: Arc<AtomicI64>,
    listener: zcstack::TcpListener,
    pool: zcstack_driver::Pool,
}

fn bed() -> Bed {
    bed_with(true)
}

fn bed_with(cookies: bool) -> Bed {
    let pa = PoolConfig::new().frames(512).build().unwrap();
    let pb = PoolConfig::new().frames(512).build().unwrap();
    let (ea, eb) = wire::pair(pa, pb.clone(), WireConfig::default());
    let sim = Arc::new(AtomicI64::new(0));
    let mut stack = Stack::builder(eb)
        .ip(STACK, 24)
        .seed(2)
        .clock(Clock::Manual(sim.clone()))
        .tcp_buffers(16384, 16384)
        .syn_cookies(cookies)
        .build()
        .unwrap();
    let mut peer = RawPeer::new(ea, PEER, STACK, stack.mac(), (40000, 80));
    let listener = stack.tcp_listen(80, BACKLOG).unwrap();
    // Like a real host, the client resolves the stack's address first.
    peer.announce();
    Bed {
        stack,
        peer,
        sim,
        listener,
        pool: pb,
    }
}

impl Bed {
    /// Polls for `ms` simulated milliseconds; returns what the peer got.
    fn run(&mut self, ms: u32) -> Vec<Segment> {
        let mut segs = Vec::new();
        for _ in 0..ms {
            self.stack.poll();
            segs.extend(self.peer.receive());
            self.sim.fetch_add(1000, Ordering::Relaxed);
        }
        segs
    }

    /// `n` SYNs from addresses in the stack's subnet that nobody owns (the
    /// stack's SYN-ACKs, and its ARP requests for them, go unanswered).
    fn flood(&mut self, n: u32, first: u32) {
        for i in first..first + n {
            let src = Ipv4Addr::new(10, 200, 0, 100 + (i % 100) as u8);
            let port = 1024 + (i % 60000) as u16;
            self.peer.send_as(
                (src, port),
                TcpControl::Syn,
                TcpSeqNumber(i as i32 * 7919),
                None,
                65535,
                &[],
            );
            if i % 32 == 31 {
                self.run(1);
            }
        }
        self.run(2);
    }

    /// A handshake from the peer's own address and port; returns the
    /// stack's ISN once the connection is accepted, or panics.
    fn connect(&mut self, port: u16) -> TcpSeqNumber {
        self.peer.port = port;
        let isn = TcpSeqNumber(1_000_000);
        self.peer.send(TcpControl::Syn, isn, None, 65535, &[]);
        let segs = self.run(5);
        let synack = segs
            .iter()
            .find(|s| s.control == TcpControl::Syn && s.ack == Some(isn + 1))
            .unwrap_or_else(|| panic!("a SYN-ACK: {segs:?}"));
        let rcv_nxt = synack.seq + 1;
        self.peer.send(
            TcpControl::Psh,
            isn + 1,
            Some(rcv_nxt),
            65535,
            b"GET / HTTP/1.0\r\n\r\n",
        );
        self.run(5);
        rcv_nxt
    }
}

/// 200 spoofed SYNs fill the 4-socket backlog with half-open connections;
/// a real client still connects at once (SYN cookie), exchanges data both
/// ways, and the half-open connections give their sockets back after their
/// SYN-ACK retries.
#[test]
fn a_syn_flood_does_not_lock_the_listener() {
    let mut bed = bed();
    bed.flood(200, 0);
    let s = bed.stack.stats().listen;
    assert_eq!(s.syns, 200);
    assert_eq!(
        s.cookies_sent,
        200 - BACKLOG as u64,
        "every SYN past the backlog got a cookie: {s}"
    );

    let rcv_nxt = bed.connect(40001);
    let conn = bed
        .stack
        .tcp_accept(bed.listener)
        .expect("the client's connection is accepted during the flood");
    let mut buf = [0u8; 64];
    let n = bed.stack.tcp_read(conn, &mut buf).unwrap();
    assert_eq!(&buf[..n], b"GET / HTTP/1.0\r\n\r\n");
    bed.stack
        .tcp_write(conn, b"HTTP/1.0 200 OK\r\n\r\n")
        .unwrap();
    let segs = bed.run(5);
    let reply: Vec<u8> = segs.iter().flat_map(|s| s.payload.clone()).collect();
    assert_eq!(reply, b"HTTP/1.0 200 OK\r\n\r\n");
    assert_eq!(segs[0].seq, rcv_nxt, "the reply follows the cookie ISN");
    let s = bed.stack.stats().listen;
    assert_eq!(s.cookies_accepted, 1, "{s}");
    assert_eq!(
        s.half_open_evicted, 1,
        "a spoofed half-open socket made room: {s}"
    );

    // The rest of the half-open connections give up: 1 + 2 + 4 + 8 s of
    // SYN-ACK retransmissions (and ARP requests nobody answers).
    bed.run(20_000);
    let s = bed.stack.stats().listen;
    assert_eq!(s.half_open_expired, BACKLOG as u64 - 1, "{s}");
    // With the backlog free again, a client is served without a cookie.
    let sent = s.cookies_sent;
    bed.connect(40002);
    assert!(bed.stack.tcp_accept(bed.listener).is_some());
    assert_eq!(bed.stack.stats().listen.cookies_sent, sent);

    let _ = bed.stack.tcp_abort(conn);
    bed.run(10);
    let Bed { stack, pool, .. } = bed;
    drop(stack);
    assert_eq!(pool.stats().free, pool.capacity(), "pool full again");
}

/// A forged or stale cookie (an ACK for no connection) is answered with
/// RST, creates nothing, and is counted.
#[test]
fn a_forged_cookie_creates_no_connection() {
    let mut bed = bed();
    bed.flood(10, 0);
    bed.peer.port = 40005;
    bed.peer.send(
        TcpControl::None,
        TcpSeqNumber(5001),
        Some(TcpSeqNumber(123_456)),
        65535,
        &[],
    );
    let segs = bed.run(5);
    assert!(
        segs.iter().any(|s| s.control == TcpControl::Rst),
        "RST for a bad cookie: {segs:?}"
    );
    assert!(bed.stack.tcp_accept(bed.listener).is_none());
    assert_eq!(bed.stack.stats().listen.cookies_rejected, 1);
    assert_eq!(bed.stack.stats().listen.cookies_accepted, 0);
}

/// Sustained: 30 000 spoofed SYNs over 30 simulated seconds; a client
/// connecting every second gets in each time, within a few milliseconds.
#[test]
fn clients_get_in_throughout_a_sustained_flood() {
    let mut bed = bed();
    let mut accepted = 0;
    for second in 0..30u32 {
        bed.flood(1000, second * 1000);
        bed.connect(41000 + second as u16);
        if let Some(c) = bed.stack.tcp_accept(bed.listener) {
            accepted += 1;
            let _ = bed.stack.tcp_abort(c);
        }
        bed.run(900);
    }
    assert_eq!(accepted, 30, "{}", bed.stack.stats().listen);
}

/// The control: without cookies the same flood locks the listener (a client
/// gets RST) until the half-open connections expire, 15 s later.
#[test]
fn without_cookies_a_flood_locks_the_listener_until_half_open_expire() {
    let mut bed = bed_with(false);
    bed.flood(200, 0);
    bed.peer.port = 40010;
    bed.peer
        .send(TcpControl::Syn, TcpSeqNumber(9), None, 65535, &[]);
    let segs = bed.run(5);
    assert!(
        segs.iter().any(|s| s.control == TcpControl::Rst),
        "refused while the backlog is full: {segs:?}"
    );
    assert_eq!(bed.stack.stats().listen.cookies_sent, 0);
    bed.run(16_000);
    assert_eq!(bed.stack.stats().listen.half_open_expired, BACKLOG as u64);
    bed.connect(40011);
    assert!(bed.stack.tcp_accept(bed.listener).is_some());
}
