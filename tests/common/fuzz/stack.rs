//! Raw frames into two stacks with live TCP connections.
//!
//! Two stacks, A (10.200.0.1, the clients) and B (10.200.0.2, a listener on
//! port 80), run on a manual clock. They do not share one wire: each has
//! its own, and the harness relays between them, so it sees every segment
//! and learns each connection's sequence numbers, windows, window scale and
//! timestamps. Setup connects one to three connections and starts a stream
//! of checkable bytes each way on each, through small windows, so data is in
//! flight both ways when the fuzzer's operations begin.
//!
//! The input (through `arbitrary`) is a setup and a list of operations:
//! forged TCP segments on a live connection's 4-tuple whose numbers are
//! chosen relative to what the relay learned (in window, at its edges,
//! beyond; SACK blocks, timestamps, any flag), mutated copies of a real
//! segment, raw frames, clock jumps, loss, reordering and duplication of
//! real frames, and application actions (stop reading, write, shut down,
//! abort). Then the harness stops interfering and lets the stacks run.
//!
//! What it asserts is what a user would notice: nothing panics; every
//! connection the fuzzer did not touch (no injected frame carried its port)
//! delivers every byte of both streams intact, and the end of stream where
//! the writer shut down; both stacks keep polling, and neither spins (asks
//! to be polled again at once, poll after poll, with nothing to do); and
//! after the stacks are dropped, every pool frame is back.

use std::cell::RefCell;
use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use zcstack::{Clock, SendMode, Stack, TcpConn, TcpListener, TcpState};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Driver, Frame, Pool, PoolConfig};

use super::frames::{self, ACK, Endpoint, SYN, TcpFields};

const IP_A: [u8; 4] = [10, 200, 0, 1];
const IP_B: [u8; 4] = [10, 200, 0, 2];
const PORT: u16 = 80;
/// Most operations taken from one input.
const MAX_OPS: usize = 64;
/// Frames in each pool (A's, B's, the harness's).
const POOL_FRAMES: u32 = 256;
/// Simulated time the stacks get to finish after the operations.
const SETTLE: Duration = Duration::from_secs(900);
/// Rounds the settling phase may take.
const SETTLE_ROUNDS: usize = 20_000;
/// Idle polls in a row after which a stack that keeps asking to be polled
/// at once is spinning (each is 1.1 ms of simulated time).
const SPIN_LIMIT: usize = 1000;

thread_local! {
    /// Pools are kept across runs (creating one maps memory); every run
    /// checks that they are full when it ends.
    static POOLS: RefCell<Option<[Pool; 3]>> = const { RefCell::new(None) };
}

fn pools() -> [Pool; 3] {
    POOLS.with(|p| {
        p.borrow_mut()
            .get_or_insert_with(|| {
                std::array::from_fn(|_| {
                    PoolConfig::new()
                        .frames(POOL_FRAMES)
                        .build()
                        .expect("a pool")
                })
            })
            .clone()
    })
}

/// How the stacks and connections start.
#[derive(Arbitrary, Debug)]
struct Setup {
    /// 1 + this % 3 connections.
    conns: u8,
    /// Receive ring size choice.
    rx: u8,
    /// Send ring size choice.
    tx: u8,
    /// Bytes each stream carries to begin with (times 16).
    initial: [u8; 2],
    /// Seeds of the two stacks (initial sequence numbers, ports).
    seed: u8,
}

/// A sequence number relative to something the relay learned.
#[derive(Arbitrary, Debug, Clone, Copy)]
enum Base {
    /// The forged sender's next sequence number (highest seen).
    SrcNxt,
    /// The last ACK the forged sender sent.
    SrcAck,
    /// The receiver's next sequence number.
    DstNxt,
    /// The last ACK the receiver sent (its RCV.NXT).
    DstAck,
    /// The receiver's right window edge (its last ACK + scaled window).
    DstEdge,
    /// The forged sender's initial sequence number.
    SrcIsn,
    /// Zero.
    Zero,
}

#[derive(Arbitrary, Debug, Clone, Copy)]
struct Rel {
    base: Base,
    delta: i16,
    /// Scale the delta by 2^16: far outside any window.
    far: bool,
}

#[derive(Arbitrary, Debug)]
enum TcpOpt {
    Nop,
    End,
    Mss(u16),
    WindowScale(u8),
    SackPermitted,
    /// Up to four blocks: (left edge, length).
    Sack(Vec<(Rel, u16)>),
    /// TSval relative to the sender's last, TSecr relative to the receiver's last.
    Timestamp(i16, i16),
    /// Any kind and length byte, then `fill` bytes.
    Raw(u8, u8, u8),
}

#[derive(Arbitrary, Debug)]
enum Payload {
    None,
    /// `len` bytes of `fill`.
    Fill(u16, u8),
    /// The bytes the real stream carries at the segment's sequence number.
    Stream(u16),
}

/// A forged segment on connection `conn`'s 4-tuple.
#[derive(Arbitrary, Debug)]
struct Forge {
    conn: u8,
    to_b: bool,
    /// Use this source port instead (a new 4-tuple to the same socket).
    other_port: Option<u16>,
    seq: Rel,
    ack: Rel,
    flags: u8,
    window: u16,
    urgent: u16,
    options: Vec<TcpOpt>,
    payload: Payload,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Forge(Forge),
    /// A copy of the last real frame of `conn` in one direction with bytes
    /// changed: (offset, value, xor instead of set).
    Mutate {
        conn: u8,
        from_b: bool,
        patches: Vec<(u16, u8, bool)>,
    },
    /// Any bytes as a frame; with `ipv4`, behind an Ethernet header for the
    /// stack.
    Raw {
        to_b: bool,
        ipv4: bool,
        bytes: Vec<u8>,
    },
    /// Advance the clock by this many milliseconds.
    Advance(u16),
    /// Advance the clock to the next timer either stack has.
    NextTimer,
    /// Poll and relay this many rounds (each 100 µs).
    Rounds(u8),
    /// Drop the next `n` real frames toward B (or A).
    Drop {
        to_b: bool,
        n: u8,
    },
    /// Hold the next real frame and send it after the one that follows.
    Reorder {
        to_b: bool,
    },
    /// Deliver the next real frame twice.
    Duplicate {
        to_b: bool,
    },
    /// Stop (or restart) reading a stream.
    Pause {
        conn: u8,
        to_b: bool,
        paused: bool,
    },
    /// Write more bytes on a stream (this % 8192).
    Write {
        conn: u8,
        to_b: bool,
        bytes: u16,
    },
    /// Shut a stream down after its bytes.
    Shutdown {
        conn: u8,
        to_b: bool,
    },
    /// Reset the connection from one end.
    Abort {
        conn: u8,
        at_b: bool,
    },
}

/// What the relay learned about one direction of a connection.
#[derive(Clone, Default)]
struct Seen {
    isn: u32,
    nxt: u32,
    ack: u32,
    /// The highest ACK seen (sequence-number order).
    max_ack: Option<u32>,
    window: u16,
    wscale: Option<u8>,
    tsval: u32,
    /// SEG.SEQ and sequence length of the latest segment, and when (µs).
    last_seq: u32,
    last_len: u32,
    last_at: i64,
    template: Vec<u8>,
}

/// One direction's bytes: written by one end, read and checked by the other.
#[derive(Clone, Debug, Default)]
struct Stream {
    /// Bytes the writer will write.
    target: u64,
    written: u64,
    read: u64,
    /// The writer shuts the stream down once `written == target`.
    shut: bool,
    shut_done: bool,
    eof: bool,
    paused: bool,
    /// First offset at which the reader saw a wrong byte.
    corrupt_at: Option<u64>,
    /// The last error either end got on this stream.
    error: Option<String>,
}

impl Stream {
    fn done(&self) -> bool {
        self.read == self.target && (!self.shut || self.eof)
    }
}

struct Conn {
    a: TcpConn,
    b: Option<TcpConn>,
    /// A's (client) port: unique to this connection.
    port: u16,
    /// Index 0: A → B, 1: B → A.
    streams: [Stream; 2],
    seen: [Seen; 2],
    attacked: bool,
    aborted: bool,
}

/// Stream bytes repeat with this period (a prime: an offset shifted by
/// anything but a multiple of it reads differently).
const PERIOD: usize = 65_521;

/// The bytes of every stream, one table per (connection, direction): reads
/// and writes copy and compare whole slices (libc's `memcpy`/`bcmp`), so the
/// harness's own per-byte work does not dilute the fuzzer's coverage
/// tracing of the stack.
fn table(conn: usize, dir: usize) -> &'static [u8] {
    static TABLES: std::sync::OnceLock<Vec<Vec<u8>>> = std::sync::OnceLock::new();
    &TABLES.get_or_init(|| {
        (0..6u64)
            .map(|t| {
                let mut x = 0x9e37_79b9_7f4a_7c15u64 ^ t;
                (0..PERIOD)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 32) as u8
                    })
                    .collect()
            })
            .collect()
    })[conn * 2 + dir]
}

/// Fills `out` with the bytes of stream `dir` of connection `conn` from `off` on.
fn fill_pattern(conn: usize, dir: usize, off: u64, out: &mut [u8]) {
    let t = table(conn, dir);
    let mut at = (off % PERIOD as u64) as usize;
    let mut done = 0;
    while done < out.len() {
        let n = (out.len() - done).min(PERIOD - at);
        out[done..done + n].copy_from_slice(&t[at..at + n]);
        done += n;
        at = 0;
    }
}

fn mac(ip: [u8; 4]) -> [u8; 6] {
    [0x02, 0x5a, ip[0], ip[1], ip[2], ip[3]]
}

/// Wrapping "a is after b" in sequence space.
fn after(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) > 0
}

struct Bed {
    a: Stack<WireEnd>,
    b: Stack<WireEnd>,
    /// The relay's ends: `ra` faces A, `rb` faces B.
    ra: WireEnd,
    rb: WireEnd,
    listener: TcpListener,
    clock: Arc<AtomicI64>,
    conns: Vec<Conn>,
    /// Connections B accepted that the harness did not open (forged handshakes).
    extra: Vec<TcpConn>,
    /// Per direction (0: toward B, 1: toward A): real frames to drop, to
    /// duplicate, whether to hold the next one, the held one.
    drop_next: [u32; 2],
    dup_next: [u32; 2],
    hold_next: [bool; 2],
    held: [Option<Frame>; 2],
    harness_pool: Pool,
    buf: Vec<u8>,
    /// The bytes a read should have returned.
    want: Vec<u8>,
    trace: bool,
}

impl Bed {
    fn new(setup: &Setup, pools: &[Pool; 3], trace: bool) -> Bed {
        let cfg = WireConfig::default();
        let (ea, ra) = wire::pair(pools[0].clone(), pools[2].clone(), cfg.clone());
        let (eb, rb) = wire::pair(pools[1].clone(), pools[2].clone(), cfg);
        let clock = Arc::new(AtomicI64::new(0));
        let rx = [1024, 4096, 16384, 131_072][usize::from(setup.rx % 4)];
        let tx = [4096, 16384][usize::from(setup.tx % 2)];
        let build = |end, ip: [u8; 4], seed| {
            Stack::builder(end)
                .ip(Ipv4Addr::from(ip), 24)
                .seed(seed)
                .clock(Clock::Manual(clock.clone()))
                .tcp_buffers(rx, tx)
                .send_mode(SendMode::Copy)
                .build()
                .expect("stack")
        };
        let seed = u64::from(setup.seed);
        let a = build(ea, IP_A, 2 * seed + 1);
        let mut b = build(eb, IP_B, 2 * seed + 2);
        let listener = b.tcp_listen(PORT, 4).expect("listen");
        let mut bed = Bed {
            a,
            b,
            ra,
            rb,
            listener,
            clock,
            conns: Vec::new(),
            extra: Vec::new(),
            drop_next: [0; 2],
            dup_next: [0; 2],
            hold_next: [false; 2],
            held: [None, None],
            harness_pool: pools[2].clone(),
            buf: vec![0; 4096],
            want: vec![0; 4096],
            trace,
        };
        let n = 1 + usize::from(setup.conns % 3);
        for i in 0..n {
            let c = bed
                .a
                .tcp_connect(SocketAddrV4::new(Ipv4Addr::from(IP_B), PORT))
                .expect("connect");
            let port = bed.a.tcp_local(c).expect("bound").port();
            let initial = 16 * u64::from(setup.initial[i % 2]);
            let stream = Stream {
                target: initial,
                ..Stream::default()
            };
            bed.conns.push(Conn {
                a: c,
                b: None,
                port,
                streams: [stream.clone(), stream],
                seen: Default::default(),
                attacked: false,
                aborted: false,
            });
        }
        // Handshakes (ARP first): a few rounds of simulated time.
        for _ in 0..200 {
            let busy = bed.round();
            if bed.conns.iter().all(|c| c.b.is_some())
                && bed
                    .conns
                    .iter()
                    .all(|c| bed.a.tcp_state(c.a) == TcpState::Established)
            {
                break;
            }
            if !busy {
                bed.next_timer();
            }
        }
        assert!(
            bed.conns.iter().all(|c| c.b.is_some()),
            "setup: connections not established"
        );
        bed
    }

    fn now_us(&self) -> i64 {
        self.clock.load(Ordering::Relaxed)
    }

    fn advance(&self, us: i64) {
        self.clock.fetch_add(us, Ordering::Relaxed);
    }

    /// Jumps to the earlier of the two stacks' next timers (1 ms to 10 s).
    fn next_timer(&mut self) {
        let next = [self.a.poll_delay(), self.b.poll_delay()]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(Duration::from_secs(1))
            .clamp(Duration::from_millis(1), Duration::from_secs(10));
        self.advance(next.as_micros() as i64);
    }

    /// One round: both stacks poll, the relay moves frames, the
    /// applications write and read; 100 µs pass. Returns whether anything moved.
    fn round(&mut self) -> bool {
        let mut busy = self.a.poll();
        busy |= self.b.poll();
        busy |= self.relay(0);
        busy |= self.relay(1);
        busy |= self.apps();
        self.advance(100);
        busy
    }

    /// Moves the frames one stack sent to the other (dir 0: A → B),
    /// learning from them and applying the loss, reordering and
    /// duplication asked for.
    fn relay(&mut self, dir: usize) -> bool {
        let mut got = Vec::new();
        let from = if dir == 0 { &mut self.ra } else { &mut self.rb };
        let _ = from.rx_burst(&mut got, usize::MAX);
        if got.is_empty() {
            return false;
        }
        let mut out = Vec::with_capacity(got.len() + 2);
        for f in got {
            self.observe(dir, f.data());
            if self.drop_next[dir] > 0 {
                self.drop_next[dir] -= 1;
                continue;
            }
            if self.dup_next[dir] > 0
                && let Some(mut d) = self.harness_pool.alloc()
            {
                self.dup_next[dir] -= 1;
                let n = f.len().min(d.capacity());
                d.room_mut()[..n].copy_from_slice(&f.data()[..n]);
                d.set_len(n);
                out.push(d);
            }
            if self.hold_next[dir] && self.held[dir].is_none() {
                self.hold_next[dir] = false;
                self.held[dir] = Some(f);
                continue;
            }
            out.push(f);
            if let Some(h) = self.held[dir].take() {
                out.push(h);
            }
        }
        self.send(dir, out);
        true
    }

    /// Puts frames on the wire toward B (dir 0) or A; what does not fit is dropped.
    fn send(&mut self, dir: usize, mut frames: Vec<Frame>) {
        let to = if dir == 0 { &mut self.rb } else { &mut self.ra };
        let _ = to.tx_burst(&mut frames);
    }

    /// Learns a connection's numbers from a real segment.
    fn observe(&mut self, dir: usize, frame: &[u8]) {
        let Some(seg) = frames::parse_tcp(frame) else {
            return;
        };
        let now = self.now_us();
        let port = if dir == 0 { seg.ports.0 } else { seg.ports.1 };
        if self.trace {
            eprintln!(
                "  t={} {} {:?}",
                self.clock.load(Ordering::Relaxed),
                ["A→B", "B→A"][dir],
                seg
            );
        }
        let Some(c) = self.conns.iter_mut().find(|c| c.port == port) else {
            return;
        };
        let s = &mut c.seen[dir];
        if seg.flags & SYN != 0 {
            s.isn = seg.seq;
            s.nxt = seg.seq;
            s.wscale = seg.wscale;
        }
        let end = seg.seq.wrapping_add(seg.seq_len());
        if after(end, s.nxt) {
            s.nxt = end;
        }
        if seg.flags & ACK != 0 {
            s.ack = seg.ack;
            s.window = seg.window;
            if s.max_ack.is_none_or(|m| after(seg.ack, m)) {
                s.max_ack = Some(seg.ack);
            }
        }
        if let Some(ts) = seg.tsval {
            s.tsval = ts;
        }
        s.last_seq = seg.seq;
        s.last_len = seg.seq_len();
        s.last_at = now;
        s.template.clear();
        s.template.extend_from_slice(frame);
    }

    /// The applications: accept, write what each stream still has to
    /// write, read and check what arrived. Returns whether anything moved.
    fn apps(&mut self) -> bool {
        let mut busy = false;
        while let Some(c) = self.b.tcp_accept(self.listener) {
            let port = self.b.tcp_peer(c).map(|p| p.port());
            match self.conns.iter_mut().find(|k| Some(k.port) == port) {
                Some(k) if k.b.is_none() => k.b = Some(c),
                _ => self.extra.push(c),
            }
            busy = true;
        }
        // Connections nobody asked for: read and drop what they send, close.
        let extra = std::mem::take(&mut self.extra);
        for c in extra {
            match self.b.tcp_read(c, &mut self.buf) {
                Ok(n) if n > 0 => {
                    self.extra.push(c);
                    busy = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => self.extra.push(c),
                _ => {
                    let _ = self.b.tcp_close(c);
                }
            }
        }
        for i in 0..self.conns.len() {
            if self.conns[i].aborted {
                continue;
            }
            for dir in 0..2 {
                busy |= self.write(i, dir);
                busy |= self.read(i, dir);
            }
        }
        busy
    }

    fn write(&mut self, i: usize, dir: usize) -> bool {
        let conn = if dir == 0 {
            Some(self.conns[i].a)
        } else {
            self.conns[i].b
        };
        let Some(conn) = conn else { return false };
        let st = &self.conns[i].streams[dir];
        if st.error.is_some() || st.shut_done {
            return false;
        }
        let (written, target, shut) = (st.written, st.target, st.shut);
        let stack = if dir == 0 { &mut self.a } else { &mut self.b };
        if written == target {
            if !shut {
                return false;
            }
            let r = stack.tcp_shutdown(conn);
            let s = &mut self.conns[i].streams[dir];
            s.shut_done = true;
            if let Err(e) = r {
                s.error = Some(format!("shutdown: {e}"));
            }
            return true;
        }
        // Generate only what the send ring takes now.
        let room = stack.tcp_send_room(conn);
        let n = ((target - written) as usize).min(self.buf.len()).min(room);
        if n == 0 {
            return false;
        }
        fill_pattern(i, dir, written, &mut self.buf[..n]);
        match stack.tcp_write(conn, &self.buf[..n]) {
            Ok(w) => {
                self.conns[i].streams[dir].written += w as u64;
                w > 0
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => {
                self.conns[i].streams[dir].error = Some(format!("write: {e}"));
                false
            }
        }
    }

    fn read(&mut self, i: usize, dir: usize) -> bool {
        // Stream `dir` is read at the other end.
        let conn = if dir == 0 {
            self.conns[i].b
        } else {
            Some(self.conns[i].a)
        };
        let Some(conn) = conn else { return false };
        let st = &self.conns[i].streams[dir];
        if st.paused || st.eof || st.error.is_some() {
            return false;
        }
        let stack = if dir == 0 { &mut self.b } else { &mut self.a };
        match stack.tcp_read(conn, &mut self.buf) {
            Ok(0) => {
                self.conns[i].streams[dir].eof = true;
                true
            }
            Ok(n) => {
                let s = &mut self.conns[i].streams[dir];
                if s.corrupt_at.is_none() {
                    let want = &mut self.want[..n];
                    fill_pattern(i, dir, s.read, want);
                    if *want != self.buf[..n] {
                        let k = want.iter().zip(&self.buf).position(|(a, b)| a != b);
                        s.corrupt_at = k.map(|k| s.read + k as u64);
                    }
                }
                s.read += n as u64;
                true
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => false,
            Err(e) => {
                self.conns[i].streams[dir].error = Some(format!("read: {e}"));
                false
            }
        }
    }

    /// Marks the connections whose port an injected frame carries.
    fn classify(&mut self, frame: &[u8]) {
        if let Some((s, d)) = frames::tcp_ports(frame) {
            for c in &mut self.conns {
                if c.port == s || c.port == d {
                    c.attacked = true;
                }
            }
        }
    }

    /// Injects `bytes` as a frame toward B (dir 0) or A.
    fn inject(&mut self, dir: usize, bytes: &[u8]) {
        self.classify(bytes);
        let Some(mut f) = self.harness_pool.alloc() else {
            return;
        };
        let n = bytes.len().min(f.capacity());
        f.room_mut()[..n].copy_from_slice(&bytes[..n]);
        f.set_len(n);
        if self.trace {
            eprintln!(
                "  inject dir {dir}: {n} bytes {:?}",
                frames::parse_tcp(f.data())
            );
        }
        self.send(dir, vec![f]);
    }

    fn rel(&self, c: usize, dir: usize, r: Rel) -> u32 {
        let (src, dst) = (&self.conns[c].seen[dir], &self.conns[c].seen[1 - dir]);
        let base = match r.base {
            Base::SrcNxt => src.nxt,
            Base::SrcAck => src.ack,
            Base::DstNxt => dst.nxt,
            Base::DstAck => dst.ack,
            Base::DstEdge => {
                // Window scaling is on only if both SYNs offered it (RFC 7323 2.2).
                let shift = match (dst.wscale, src.wscale) {
                    (Some(s), Some(_)) => s.min(14),
                    _ => 0,
                };
                dst.ack.wrapping_add(u32::from(dst.window) << shift)
            }
            Base::SrcIsn => src.isn,
            Base::Zero => 0,
        };
        let d = i32::from(r.delta);
        base.wrapping_add_signed(if r.far { d.wrapping_shl(16) } else { d })
    }

    fn forge(&mut self, f: &Forge) {
        let c = usize::from(f.conn) % self.conns.len();
        let dir = usize::from(!f.to_b);
        self.conns[c].attacked = true;
        let (ip_src, ip_dst) = if dir == 0 { (IP_A, IP_B) } else { (IP_B, IP_A) };
        let port = self.conns[c].port;
        let (mut p_src, p_dst) = if dir == 0 { (port, PORT) } else { (PORT, port) };
        if let Some(p) = f.other_port {
            p_src = p;
        }
        let src = Endpoint {
            mac: mac(ip_src),
            ip: ip_src,
            port: p_src,
        };
        let dst = Endpoint {
            mac: mac(ip_dst),
            ip: ip_dst,
            port: p_dst,
        };
        let seq = self.rel(c, dir, f.seq);
        let ack = self.rel(c, dir, f.ack);
        let mut opts = Vec::with_capacity(40);
        for o in f.options.iter().take(8) {
            match o {
                TcpOpt::Nop => opts.push(1),
                TcpOpt::End => opts.push(0),
                TcpOpt::Mss(m) => {
                    opts.extend_from_slice(&[2, 4]);
                    opts.extend_from_slice(&m.to_be_bytes());
                }
                TcpOpt::WindowScale(s) => opts.extend_from_slice(&[3, 3, *s]),
                TcpOpt::SackPermitted => opts.extend_from_slice(&[4, 2]),
                TcpOpt::Sack(blocks) => {
                    let n = blocks.len().min(4);
                    opts.extend_from_slice(&[5, (2 + 8 * n) as u8]);
                    for &(left, len) in &blocks[..n] {
                        let l = self.rel(c, dir, left);
                        opts.extend_from_slice(&l.to_be_bytes());
                        opts.extend_from_slice(&l.wrapping_add(u32::from(len)).to_be_bytes());
                    }
                }
                TcpOpt::Timestamp(v, e) => {
                    let (src, dst) = (&self.conns[c].seen[dir], &self.conns[c].seen[1 - dir]);
                    opts.extend_from_slice(&[8, 10]);
                    let tsval = src.tsval.wrapping_add_signed(i32::from(*v));
                    let tsecr = dst.tsval.wrapping_add_signed(i32::from(*e));
                    opts.extend_from_slice(&tsval.to_be_bytes());
                    opts.extend_from_slice(&tsecr.to_be_bytes());
                }
                TcpOpt::Raw(kind, len, fill) => {
                    opts.extend_from_slice(&[*kind, *len]);
                    let body = usize::from(len.saturating_sub(2)).min(38);
                    opts.extend(std::iter::repeat_n(*fill, body));
                }
            }
        }
        let payload: Vec<u8> = match f.payload {
            Payload::None => Vec::new(),
            Payload::Fill(len, b) => vec![b; usize::from(len % 1461)],
            Payload::Stream(len) => {
                let isn = self.conns[c].seen[dir].isn;
                let off = u64::from(seq.wrapping_sub(isn).wrapping_sub(1));
                let mut p = vec![0; usize::from(len % 1461)];
                fill_pattern(c, dir, off, &mut p);
                p
            }
        };
        let mut buf = [0u8; 1600];
        let n = frames::build_tcp(
            &mut buf,
            &src,
            &dst,
            &TcpFields {
                seq,
                ack,
                flags: f.flags,
                window: f.window,
                urgent: f.urgent,
                options: &opts,
                payload: &payload,
            },
        );
        self.inject(dir, &buf[..n]);
    }

    fn apply(&mut self, op: &Op) {
        if self.trace {
            eprintln!("t={} µs {op:?}", self.now_us());
        }
        let conn = |c: &u8, n: usize| usize::from(*c) % n;
        let n = self.conns.len();
        match op {
            Op::Forge(f) => self.forge(f),
            Op::Mutate {
                conn: c,
                from_b,
                patches,
            } => {
                let c = conn(c, n);
                let dir = usize::from(*from_b);
                let mut f = self.conns[c].seen[dir].template.clone();
                if f.is_empty() {
                    return;
                }
                self.conns[c].attacked = true;
                for &(at, v, xor) in patches.iter().take(16) {
                    let at = usize::from(at) % f.len();
                    f[at] = if xor { f[at] ^ v } else { v };
                }
                frames::fix_checksums(&mut f);
                self.inject(dir, &f);
            }
            Op::Raw { to_b, ipv4, bytes } => {
                let dir = usize::from(!*to_b);
                let mut f = Vec::with_capacity(bytes.len() + 14);
                if *ipv4 {
                    let (src, dst) = if dir == 0 { (IP_A, IP_B) } else { (IP_B, IP_A) };
                    f.extend_from_slice(&mac(dst));
                    f.extend_from_slice(&mac(src));
                    f.extend_from_slice(&[0x08, 0x00]);
                }
                f.extend_from_slice(bytes);
                frames::fix_checksums(&mut f);
                self.inject(dir, &f);
            }
            Op::Advance(ms) => self.advance(i64::from(*ms) * 1000),
            Op::NextTimer => self.next_timer(),
            Op::Rounds(k) => {
                for _ in 0..*k % 32 {
                    self.round();
                }
            }
            Op::Drop { to_b, n } => self.drop_next[usize::from(!*to_b)] += u32::from(*n % 16),
            Op::Reorder { to_b } => self.hold_next[usize::from(!*to_b)] = true,
            Op::Duplicate { to_b } => self.dup_next[usize::from(!*to_b)] += 1,
            Op::Pause {
                conn: c,
                to_b,
                paused,
            } => {
                let s = &mut self.conns[conn(c, n)].streams[usize::from(!*to_b)];
                s.paused = *paused;
            }
            Op::Write {
                conn: c,
                to_b,
                bytes,
            } => {
                let s = &mut self.conns[conn(c, n)].streams[usize::from(!*to_b)];
                if !s.shut {
                    s.target += u64::from(*bytes % 8192);
                }
            }
            Op::Shutdown { conn: c, to_b } => {
                self.conns[conn(c, n)].streams[usize::from(!*to_b)].shut = true;
            }
            Op::Abort { conn: c, at_b } => {
                let k = &mut self.conns[conn(c, n)];
                if !k.aborted {
                    k.aborted = true;
                    let _ = if *at_b {
                        k.b.map(|b| self.b.tcp_abort(b))
                    } else {
                        Some(self.a.tcp_abort(k.a))
                    };
                }
            }
        }
        self.round();
    }

    /// Whether a connection must still deliver: nobody attacked or aborted it.
    fn checked(c: &Conn) -> bool {
        !c.attacked && !c.aborted
    }

    /// Stops interfering and lets the stacks finish every stream.
    fn settle(&mut self) {
        self.drop_next = [0; 2];
        self.dup_next = [0; 2];
        self.hold_next = [false; 2];
        for dir in 0..2 {
            if let Some(h) = self.held[dir].take() {
                self.send(dir, vec![h]);
            }
        }
        for c in &mut self.conns {
            for s in &mut c.streams {
                s.paused = false;
            }
        }
        let deadline = self.now_us() + SETTLE.as_micros() as i64;
        // Rounds in a row in which a stack did nothing yet asked to be
        // polled again at once.
        let mut spins = [0usize; 2];
        for _ in 0..SETTLE_ROUNDS {
            let busy = self.round();
            let done = self
                .conns
                .iter()
                .filter(|c| Self::checked(c))
                .all(|c| c.streams.iter().all(|s| s.done() || s.error.is_some()));
            if done || self.now_us() > deadline {
                break;
            }
            if !busy {
                for (n, d) in spins
                    .iter_mut()
                    .zip([self.a.poll_delay(), self.b.poll_delay()])
                {
                    *n = if d == Some(Duration::ZERO) { *n + 1 } else { 0 };
                }
                assert!(
                    spins.iter().all(|&n| n < SPIN_LIMIT),
                    "a stack spins: stack {} did nothing in {SPIN_LIMIT} polls in a row, each time asking to be polled again at once (an idle application would burn a core)",
                    if spins[0] >= SPIN_LIMIT { "A" } else { "B" }
                );
                self.next_timer();
            }
        }
    }

    /// The user-visible promises for connections nobody attacked.
    fn check(&self) {
        for (i, c) in self.conns.iter().enumerate() {
            if !Self::checked(c) {
                continue;
            }
            for (dir, s) in c.streams.iter().enumerate() {
                let what = format!(
                    "connection {i} (port {}), stream {} (not attacked): {s:?}, A {}, B {:?}",
                    c.port,
                    ["A→B", "B→A"][dir],
                    self.a.tcp_state(c.a),
                    c.b.map(|b| self.b.tcp_state(b)),
                );
                assert_eq!(s.error, None, "{what}");
                assert_eq!(s.corrupt_at, None, "bytes changed: {what}");
                assert!(s.done(), "stream not delivered: {what}");
            }
        }
    }
}

/// Runs one input. Panics (the fuzzer's finding) if a promise is broken.
/// `ZC_FUZZ_TRACE` set prints every operation and segment.
pub fn run(data: &[u8]) {
    run_with(data, std::env::var_os("ZC_FUZZ_TRACE").is_some());
}

/// [`run`], printing every operation and segment if `trace`.
pub fn run_with(data: &[u8], trace: bool) {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else {
        return;
    };
    let pools = pools();
    // Which frame a buffer is does not change what the stacks do, so
    // unlike the slot harness this one needs no `pristine` reset.
    for p in &pools {
        assert_eq!(p.stats().free, p.capacity(), "pool full at start");
    }
    let mut bed = Bed::new(&setup, &pools, trace);
    if trace {
        eprintln!("{setup:?}");
    }
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        bed.apply(&op);
    }
    bed.settle();
    bed.check();
    // Both stacks still poll after all of it.
    bed.a.poll();
    bed.b.poll();
    drop(bed);
    for (p, name) in pools.iter().zip(["A", "B", "harness"]) {
        let st = p.stats();
        assert_eq!(st.free, st.capacity, "pool {name} is not full: {st}");
    }
}

#[cfg(test)]
mod tests {
    /// Without operations, every stream is delivered and checked: the
    /// harness's own promises hold on a clean run (and `check` can fail:
    /// a stream with bytes changed is reported).
    #[test]
    fn a_clean_run_delivers_every_stream() {
        super::run(&[2, 1, 1, 30, 40, 7]);
        let r = std::panic::catch_unwind(|| {
            let mut u = arbitrary::Unstructured::new(&[0, 0, 0, 1, 1, 0]);
            let setup: super::Setup = arbitrary::Arbitrary::arbitrary(&mut u).unwrap();
            let mut bed = super::Bed::new(&setup, &super::pools(), false);
            bed.settle();
            bed.conns[0].streams[0].corrupt_at = Some(3);
            bed.check();
        });
        assert!(r.is_err(), "a corrupted stream must fail the check");
    }
}
