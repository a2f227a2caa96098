//! Readiness events (`Stack::events`) between two stacks on the in-memory
//! wire, on a manual clock: each kind is reported when it happens, once,
//! and only for the connection it happened to; idle connections report
//! nothing.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use zcstack::{Clock, Event, Stack, TcpConn, TcpListener, TcpState};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Pool, PoolConfig};
use zcstack_tests::{random_bytes, sha256_hex};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const PORT: u16 = 7000;

struct Bed {
    a: Stack<WireEnd>,
    b: Stack<WireEnd>,
    pa: Pool,
    pb: Pool,
    us: Arc<AtomicI64>,
    /// Events each side reported, in order, since the last `take`.
    ea: Vec<Event>,
    eb: Vec<Event>,
    /// Reused for `Stack::events`.
    scratch: Vec<Event>,
    /// Whether `a` is polled (a peer that went away is not).
    a_alive: bool,
}

fn bed() -> Bed {
    let pa = PoolConfig::new().frames(1024).build().unwrap();
    let pb = PoolConfig::new().frames(1024).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let us = Arc::new(AtomicI64::new(0));
    let build = |end, ip, seed| {
        Stack::builder(end)
            .ip(ip, 24)
            .seed(seed)
            .tcp_buffers(64 * 1024, 64 * 1024)
            .clock(Clock::Manual(us.clone()))
            .build()
            .unwrap()
    };
    let (mut a, mut b) = (build(ea, A, 1), build(eb, B, 2));
    // Events are collected from the first call on.
    a.events(&mut Vec::new());
    b.events(&mut Vec::new());
    Bed {
        a,
        b,
        pa,
        pb,
        us: us.clone(),
        ea: Vec::new(),
        eb: Vec::new(),
        scratch: Vec::new(),
        a_alive: true,
    }
}

impl Bed {
    /// One round: both stacks poll, their events are kept; the clock
    /// advances 100 µs, or to the next timer when both are idle.
    fn step(&mut self) {
        let mut busy = self.b.poll();
        self.b.events(&mut self.scratch);
        self.eb.extend_from_slice(&self.scratch);
        if self.a_alive {
            busy |= self.a.poll();
            self.a.events(&mut self.scratch);
            self.ea.extend_from_slice(&self.scratch);
        }
        let step = if busy {
            Duration::from_micros(100)
        } else {
            let mut next = self.b.poll_delay();
            if self.a_alive {
                next = next.into_iter().chain(self.a.poll_delay()).min();
            }
            next.unwrap_or(Duration::from_millis(1))
                .max(Duration::from_micros(100))
        };
        self.us
            .fetch_add(step.as_micros() as i64, Ordering::Relaxed);
    }

    /// Steps until the wire is quiet and no timer is due within 5 ms
    /// (at most 2000 rounds).
    fn settle(&mut self) {
        let mut quiet = 0;
        for _ in 0..2000 {
            let busy = self.b.poll() | (self.a_alive && self.a.poll());
            self.b.events(&mut self.scratch);
            self.eb.extend_from_slice(&self.scratch);
            self.a.events(&mut self.scratch);
            self.ea.extend_from_slice(&self.scratch);
            self.us.fetch_add(100, Ordering::Relaxed);
            quiet = if busy { 0 } else { quiet + 1 };
            if quiet >= 50 {
                return;
            }
        }
    }

    /// Steps until `done`, at most 100 000 rounds.
    fn step_until(&mut self, what: &str, mut done: impl FnMut(&mut Bed) -> bool) {
        for _ in 0..100_000 {
            if done(self) {
                return;
            }
            self.step();
        }
        panic!("{what}: not within 100 000 rounds");
    }

    fn take_b(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.eb)
    }

    fn take_a(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.ea)
    }

    /// A connection from a to b's listener, accepted on the `Accept` event.
    /// (Forgets the events so far.)
    fn connect(&mut self, l: TcpListener) -> (TcpConn, TcpConn) {
        self.take_a();
        self.take_b();
        let client = self.a.tcp_connect(SocketAddrV4::new(B, PORT)).unwrap();
        self.step_until("Accept", |bed| bed.eb.contains(&Event::Accept(l)));
        self.step_until("Writable on connect", |bed| {
            bed.ea.contains(&Event::Writable(client))
        });
        let server = self
            .b
            .tcp_accept(l)
            .expect("Accept, then nothing to accept");
        assert_eq!(self.b.tcp_accept(l), None);
        (client, server)
    }

    fn assert_pools_full(&self) {
        assert_eq!(self.pa.stats().in_use, 0, "a's pool");
        assert_eq!(self.pb.stats().in_use, 0, "b's pool");
    }
}

/// A stack whose application never asks for events keeps none.
#[test]
fn no_events_are_kept_until_asked_for() {
    let pa = PoolConfig::new().frames(256).build().unwrap();
    let pb = PoolConfig::new().frames(256).build().unwrap();
    let (ea, eb) = wire::pair(pa, pb, WireConfig::default());
    let mut a = Stack::builder(ea).ip(A, 24).build().unwrap();
    let mut b = Stack::builder(eb).ip(B, 24).build().unwrap();
    let l = b.tcp_listen(PORT, 4).unwrap();
    let c = a.tcp_connect(SocketAddrV4::new(B, PORT)).unwrap();
    let mut server = None;
    for _ in 0..10_000 {
        a.poll();
        b.poll();
        server = server.or_else(|| b.tcp_accept(l));
        if server.is_some() && a.tcp_state(c) == TcpState::Established {
            break;
        }
    }
    let server = server.expect("accepted");
    a.tcp_write(c, b"unasked").unwrap();
    for _ in 0..1000 {
        a.poll();
        b.poll();
    }
    assert_eq!(b.tcp_readable(server), 7);
    let mut ev = vec![Event::Accept(l)];
    b.events(&mut ev);
    assert_eq!(ev, vec![], "events before the first call were kept");
    // From now on they are.
    a.tcp_write(c, b"asked").unwrap();
    for _ in 0..1000 {
        a.poll();
        b.poll();
    }
    b.events(&mut ev);
    assert_eq!(ev, vec![Event::Readable(server)]);
}

/// The events of one side for `c` only.
fn of(events: &[Event], c: TcpConn) -> Vec<Event> {
    events
        .iter()
        .copied()
        .filter(|e| match *e {
            Event::Readable(x) | Event::Writable(x) | Event::Closed(x) | Event::TimedOut(x) => {
                x == c
            }
            Event::Accept(_) => false,
        })
        .collect()
}

/// Accepted, readable (data, then end of stream), writable (after a full
/// ring drains) and closed, each reported for the connection it happened
/// to; ten idle connections beside it report nothing.
#[test]
fn accept_readable_writable_closed_are_reported_for_their_connection_only() {
    let mut bed = bed();
    let l = bed.b.tcp_listen(PORT, 16).unwrap();
    let (client, server) = bed.connect(l);
    let idle: Vec<(TcpConn, TcpConn)> = (0..10).map(|_| bed.connect(l)).collect();
    bed.settle();
    bed.take_a();
    bed.take_b();
    // Nothing happens: nothing is reported, however often they poll, and
    // reading the idle connections finds nothing.
    for _ in 0..200 {
        bed.step();
        for &(_, s) in &idle {
            let err = bed.b.tcp_read(s, &mut [0; 16]).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::WouldBlock);
        }
    }
    assert_eq!(bed.take_b(), vec![]);
    assert_eq!(bed.take_a(), vec![]);

    // Readable: a writes, b is told once, reads it all.
    let data = random_bytes(40_000, 7);
    assert_eq!(bed.a.tcp_write(client, &data).unwrap(), data.len());
    bed.step_until("Readable", |bed| !bed.eb.is_empty());
    bed.settle();
    let ev = bed.take_b();
    assert_eq!(
        ev,
        vec![Event::Readable(server)],
        "one event for 40 000 bytes"
    );
    let mut got = vec![0u8; 64 * 1024];
    let mut n = 0;
    loop {
        match bed.b.tcp_read(server, &mut got[n..]) {
            Ok(k) => n += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(sha256_hex(&got[..n]), sha256_hex(&data));
    // More bytes after the read: told again.
    bed.a.tcp_write(client, b"more").unwrap();
    bed.step_until("second Readable", |bed| {
        bed.eb.contains(&Event::Readable(server))
    });
    assert_eq!(bed.b.tcp_read(server, &mut got).unwrap(), 4);

    // Writable: b fills its send ring (a does not read), is told once a
    // reads and the ACKs make room.
    let big = random_bytes(200_000, 8);
    let mut sent = 0;
    loop {
        // Until a's window is closed and b's ring stays full.
        let before = sent;
        while let Ok(k) = bed.b.tcp_write(server, &big[sent..]) {
            sent += k;
        }
        bed.settle();
        if sent == before {
            break;
        }
    }
    assert!(sent < big.len(), "the ring never filled");
    bed.take_b();
    for _ in 0..20 {
        bed.settle();
    }
    assert_eq!(of(&bed.take_b(), server), vec![], "not writable while full");
    assert!(of(&bed.take_a(), client).contains(&Event::Readable(client)));
    let mut recv = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    bed.step_until("Writable", |bed| {
        while let Ok(k) = bed.a.tcp_read(client, &mut buf) {
            recv.extend_from_slice(&buf[..k]);
        }
        bed.eb.contains(&Event::Writable(server))
    });
    assert_eq!(
        of(&bed.take_b(), server),
        vec![Event::Writable(server)],
        "Writable once"
    );
    assert!(bed.b.tcp_send_room(server) > 0);
    assert_eq!(&recv[..], &big[..recv.len()]);

    // End of stream, then closed: a finishes (FIN), b is told Readable
    // (reads Ok(0)), b finishes too, b is told Closed once the FINs are
    // exchanged.
    bed.a.tcp_shutdown(client).unwrap();
    bed.step_until("Readable at FIN", |bed| {
        bed.eb.contains(&Event::Readable(server))
    });
    while bed.b.tcp_readable(server) == 0 && bed.b.tcp_state(server) != TcpState::CloseWait {
        bed.step();
    }
    bed.b.tcp_shutdown(server).unwrap();
    bed.step_until("Closed", |bed| {
        while let Ok(k) = bed.a.tcp_read(client, &mut buf) {
            if k == 0 {
                break;
            }
            recv.extend_from_slice(&buf[..k]);
        }
        bed.eb.contains(&Event::Closed(server))
    });
    bed.settle();
    assert_eq!(recv.len(), sent);
    assert_eq!(sha256_hex(&recv), sha256_hex(&big[..sent]));
    let ev = of(&bed.take_b(), server);
    assert_eq!(
        ev.iter().filter(|e| matches!(e, Event::Closed(_))).count(),
        1,
        "{ev:?}"
    );
    assert!(
        !ev.iter().any(|e| matches!(e, Event::TimedOut(_))),
        "{ev:?}"
    );
    assert_eq!(bed.b.tcp_read(server, &mut buf).unwrap(), 0);
    // The idle connections saw none of it.
    let (ea, eb) = (bed.take_a(), bed.take_b());
    for &(c, s) in &idle {
        assert_eq!(of(&ea, c), vec![]);
        assert_eq!(of(&eb, s), vec![]);
    }
    bed.a.tcp_close(client).unwrap();
    bed.b.tcp_close(server).unwrap();
    for (c, s) in idle {
        bed.a.tcp_close(c).unwrap();
        bed.b.tcp_close(s).unwrap();
    }
    for _ in 0..20 {
        bed.settle();
    }
    bed.assert_pools_full();
}

/// A reset arrives as Closed, with the bytes before it still readable.
#[test]
fn a_reset_is_reported_closed() {
    let mut bed = bed();
    let l = bed.b.tcp_listen(PORT, 4).unwrap();
    let (client, server) = bed.connect(l);
    bed.a.tcp_write(client, b"last words").unwrap();
    bed.step_until("Readable", |bed| bed.eb.contains(&Event::Readable(server)));
    bed.a.tcp_abort(client).unwrap();
    bed.step_until("Closed", |bed| bed.eb.contains(&Event::Closed(server)));
    let mut buf = [0u8; 64];
    assert_eq!(bed.b.tcp_read(server, &mut buf).unwrap(), 10);
    assert_eq!(&buf[..10], b"last words");
    assert_eq!(
        bed.b.tcp_read(server, &mut buf).unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    bed.b.tcp_close(server).unwrap();
}

/// A peer that goes away while the stack has bytes for it: with a timeout
/// set, the connection is given up and reported TimedOut (not Closed);
/// its neighbour without a timeout is not.
#[test]
fn a_silent_peer_is_reported_timed_out() {
    let mut bed = bed();
    let l = bed.b.tcp_listen(PORT, 4).unwrap();
    let (_c1, server) = bed.connect(l);
    let (_c2, other) = bed.connect(l);
    bed.settle();
    bed.take_b();
    bed.b
        .tcp_set_timeout(server, Some(Duration::from_secs(3)))
        .unwrap();
    bed.a_alive = false;
    bed.b.tcp_write(server, b"anyone there?").unwrap();
    bed.b.tcp_write(other, b"and you?").unwrap();
    bed.step_until("TimedOut", |bed| bed.eb.contains(&Event::TimedOut(server)));
    let t = bed.us.load(Ordering::Relaxed);
    assert!((3_000_000..3_500_000).contains(&t), "timed out at {t} µs");
    let ev = bed.take_b();
    assert_eq!(of(&ev, server), vec![Event::TimedOut(server)], "{ev:?}");
    assert_eq!(of(&ev, other), vec![]);
    assert_eq!(bed.b.tcp_state(server), TcpState::Closed);
    assert_eq!(bed.b.tcp_state(other), TcpState::Established);
    assert_eq!(
        bed.b.tcp_read(server, &mut [0; 8]).unwrap_err().kind(),
        ErrorKind::ConnectionReset
    );
    // The slot's next connection starts without the timeout.
    bed.b.tcp_close(server).unwrap();
    bed.b.tcp_abort(other).unwrap();
}

/// `tcp_want_writable` on a connection that can write is answered on the
/// next poll; a write that blocks asks by itself.
#[test]
fn want_writable_is_answered_once() {
    let mut bed = bed();
    let l = bed.b.tcp_listen(PORT, 4).unwrap();
    let (_client, server) = bed.connect(l);
    bed.settle();
    bed.take_b();
    bed.b.tcp_want_writable(server).unwrap();
    bed.b.tcp_want_writable(server).unwrap();
    bed.settle();
    assert_eq!(bed.take_b(), vec![Event::Writable(server)]);
    bed.settle();
    assert_eq!(bed.take_b(), vec![]);
    let stale = server;
    bed.b.tcp_close(server).unwrap();
    assert_eq!(
        bed.b.tcp_want_writable(stale).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
}
