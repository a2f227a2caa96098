//! Connection memory: idle rings give their pages back, and a memory budget.
//!
//! A TCP socket's receive and send rings are heap buffers the socket owns,
//! mapped on demand (module `file::map`): a page costs memory once written
//! and keeps costing until given back. The stack tracks, per socket, which ring pages may hold
//! memory — the whole receive ring once the connection is in use, and the
//! send ring up to the furthest byte written since the last give-back (a
//! send ring that drains restarts at offset 0, so the written part is
//! always a prefix) — and gives both back with one `madvise(MADV_DONTNEED)`
//! each once the connection has been idle for a whole sweep period
//! ([`SWEEP_EVERY`], so 0.25 to 0.5 s of silence): no byte unsent,
//! unacknowledged, unread or out of order (smoltcp's
//! `Socket::buffers_idle`, ZCSTACK PATCH 16), and no application read or
//! write since the previous sweep. A busy connection never pays a syscall
//! or a page fault for this; an idle one costs its socket structures only
//! (see `docs/memory.md` for the figures).
//!
//! The budget ([`StackBuilder::max_memory`](crate::StackBuilder::max_memory))
//! counts the buffer pool, every socket's structures, and the ring pages
//! above. A new connection is admitted only while its rings fit whole in
//! what is left (so an admitted connection can always fill them): otherwise
//! the listeners stop listening and SYN cookies are off — a SYN gets RST,
//! the client sees "connection refused" at once — and `tcp_connect` fails, until
//! connections close or go idle. Connections that exist are never cut
//! short; their send rings grow only into memory the budget has left (a
//! write that would touch a new page beyond it waits, like a full ring),
//! except that each may always use [`TX_FLOOR`] (charged from the start),
//! so connections waiting for memory cannot all wait on each other.
//!
//! Here: the accounting (`Memory`, with each TCP socket's ring state
//! under the TCP table's slot numbers) and [`MemoryStats`]. Where it acts
//! on the listeners, the interface's SYN cookies and the sockets (the
//! sweep, admitting handshakes) is `stack/mem_calls.rs`.

use smoltcp::time::{Duration, Instant};

use crate::file::{PAGE, SocketStore};
use crate::tcp::TcpTable;

/// How often idle connections are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);

/// Send ring bytes every connection in use is charged at least, and may
/// always use whatever the budget: a connection that finds the budget
/// spent still moves its data, this much per ring cycle, so connections
/// waiting for memory can never all wait on each other.
pub const TX_FLOOR: usize = 64 * 1024;

/// The most heap one TCP socket's loss recovery may hold (its SACK
/// scoreboard and reassembly table; ZCSTACK PATCH 31): charged with the
/// receive ring while a connection is in use, since both grow during loss
/// and reordering and are given back by the same idle sweep.
pub const RECOVERY_HEAP: usize = smoltcp::socket::tcp::Socket::RECOVERY_HEAP_MAX;

/// What one socket's rings may hold (see the module doc).
#[derive(Debug, Default)]
struct RingMem {
    /// The rings may hold pages (charged: the receive ring plus `tx_touched`).
    held: bool,
    /// The application read or wrote since the last sweep.
    active: bool,
    /// Send ring bytes written since the last give-back (a prefix of the ring).
    tx_touched: usize,
}

/// Memory counters (see [`StackStats::memory`](crate::StackStats)).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// The budget in bytes (`None`: no budget).
    pub budget: Option<usize>,
    /// Bytes the stack accounts for now: the buffer pool, socket
    /// structures, and ring pages that may be resident.
    pub in_use: usize,
    /// Of `in_use`, what connections in use hold beside their structures:
    /// ring pages (the receive ring, the written part of the send ring, at
    /// least [`TX_FLOOR`]) and the most their loss recovery may take on the
    /// heap (smoltcp's SACK scoreboard and reassembly table,
    /// [`RECOVERY_HEAP`] each).
    pub rings: usize,
    /// Times an idle connection gave its ring memory back.
    pub idle_releases: u64,
    /// Connection attempts refused for lack of memory: SYNs that arrived
    /// while the listeners were withdrawn, handshakes reset because the
    /// budget ran out as they started, and failed `tcp_connect` calls.
    pub refused: u64,
    /// New connections are being refused right now.
    pub at_limit: bool,
    /// What the stack counts per TCP socket besides its rings (smoltcp's
    /// socket with its reassembly table, the stack's slot).
    pub socket_bytes: usize,
}

/// The stack's memory accounting, with what each TCP socket's rings may
/// hold, by slot (the TCP table's numbers). `sockets` arguments are the
/// number of TCP sockets the stack has made.
pub(crate) struct Memory {
    budget: Option<usize>,
    /// The buffer pool's bytes.
    fixed: usize,
    /// Structures per TCP socket (smoltcp's socket with its reassembly
    /// table, the stack's per-slot state, ring bookkeeping).
    per_socket: usize,
    /// Page-rounded receive ring, and send ring, of one socket.
    rx_ring: usize,
    tx_ring: usize,
    /// [`TX_FLOOR`], or the whole send ring if smaller.
    tx_floor: usize,
    /// Charged ring bytes (sum over sockets).
    rings: usize,
    /// Per TCP slot.
    slots: Vec<RingMem>,
    /// Slots whose rings are held, for the sweep.
    held: Vec<u32>,
    last_sweep: Instant,
    idle_releases: u64,
    refused: u64,
    /// Listeners are withdrawn for lack of memory; `syns` is the SYN count
    /// when they were.
    withdrawn: Option<u64>,
}

/// What the listeners should do about the budget (from [`Memory::check_listeners`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Listeners {
    /// A new connection no longer fits: stop listening, and no SYN cookies.
    Withdraw,
    /// It fits again: listen again.
    Restore,
    /// Nothing changes.
    Keep,
}

impl Memory {
    /// Bytes kept per TCP slot.
    pub const SLOT_BYTES: usize = std::mem::size_of::<RingMem>();

    pub fn new(
        budget: Option<usize>,
        fixed: usize,
        per_socket: usize,
        rx: usize,
        tx: usize,
    ) -> Memory {
        Memory {
            budget,
            fixed,
            per_socket,
            rx_ring: rx.next_multiple_of(PAGE),
            tx_ring: tx,
            tx_floor: TX_FLOOR.min(tx),
            rings: 0,
            slots: Vec::new(),
            held: Vec::new(),
            last_sweep: Instant::ZERO,
            idle_releases: 0,
            refused: 0,
            withdrawn: None,
        }
    }

    /// A new TCP slot (numbered as the TCP table's).
    pub fn add_slot(&mut self) {
        self.slots.push(RingMem::default());
    }

    /// What one more connection may need at most (its structures, both
    /// rings and its loss recovery's heap).
    pub fn one_connection(&self) -> usize {
        self.per_socket + self.held_fixed() + self.tx_ring
    }

    /// What a connection in use is charged besides its send ring: the
    /// receive ring and [`RECOVERY_HEAP`].
    fn held_fixed(&self) -> usize {
        self.rx_ring + RECOVERY_HEAP
    }

    /// Both rings of one connection, page-rounded.
    pub fn ring_pair(&self) -> usize {
        self.rx_ring + self.tx_ring
    }

    /// Structures per TCP socket.
    pub fn per_socket(&self) -> usize {
        self.per_socket
    }

    /// The budget, if there is one.
    pub fn budget(&self) -> Option<usize> {
        self.budget
    }

    /// What a held send ring is charged with `touched` bytes written.
    fn tx_charge(&self, touched: usize) -> usize {
        touched.next_multiple_of(PAGE).max(self.tx_floor)
    }

    /// Bytes accounted for now (see [`MemoryStats::in_use`]).
    pub fn in_use(&self, sockets: usize) -> usize {
        self.fixed + sockets * self.per_socket + self.rings
    }

    /// Whether a new connection fits the budget with both its rings full.
    pub fn admits(&self, sockets: usize) -> bool {
        self.budget
            .is_none_or(|b| self.in_use(sockets) + self.held_fixed() + self.tx_ring <= b)
    }

    /// The application (or a file transfer) moved bytes on `slot`: it is
    /// active, and its rings hold pages from now on.
    pub fn note_io(&mut self, slot: u32) {
        let m = &mut self.slots[slot as usize];
        m.active = true;
        if !m.held {
            m.held = true;
            self.rings += self.held_fixed() + self.tx_charge(0);
            self.held.push(slot);
        }
    }

    /// `slot`'s send ring was written up to `end` (a wrap: the whole ring).
    pub fn note_tx(&mut self, slot: u32, end: usize) {
        self.note_io(slot);
        let cap = self.tx_ring;
        let m = &mut self.slots[slot as usize];
        let old = m.tx_touched;
        m.tx_touched = m.tx_touched.max(end.min(cap));
        let new = m.tx_touched;
        self.rings += self.tx_charge(new) - self.tx_charge(old);
    }

    /// Where in `slot`'s send ring a write may end without taking memory
    /// the budget does not have: pages already written are free to reuse,
    /// new ones only while the budget lasts.
    pub fn tx_limit(&self, slot: u32, sockets: usize) -> usize {
        let cap = self.tx_ring;
        let Some(b) = self.budget else {
            return cap;
        };
        let mine = self.tx_charge(self.slots[slot as usize].tx_touched);
        let spare = b.saturating_sub(self.in_use(sockets)) / PAGE * PAGE;
        (mine + spare).min(cap)
    }

    /// Every [`SWEEP_EVERY`]: gives back the rings of connections idle
    /// since the last sweep (`busy`: the slot has file transfers or
    /// references). One `madvise` per ring given back; nothing for busy
    /// or already idle connections. Returns whether it swept (the
    /// listeners are then checked against the budget).
    pub fn sweep(
        &mut self,
        now: Instant,
        sockets: &mut SocketStore,
        tcp: &TcpTable,
        busy: impl Fn(u32) -> bool,
    ) -> bool {
        if now - self.last_sweep < SWEEP_EVERY {
            return false;
        }
        self.last_sweep = now;
        let mut i = 0;
        while i < self.held.len() {
            let slot = self.held[i];
            let m = &mut self.slots[slot as usize];
            if std::mem::take(&mut m.active) || busy(slot) {
                i += 1;
                continue;
            }
            let touched = m.tx_touched;
            if sockets.discard_idle(tcp.handle(slot), touched) {
                let charge = self.held_fixed() + self.tx_charge(touched);
                self.rings -= charge;
                self.slots[slot as usize] = Default::default();
                self.idle_releases += 1;
                self.held.swap_remove(i);
            } else {
                i += 1;
            }
        }
        true
    }

    /// Whether the listeners should be withdrawn (a new connection no
    /// longer fits the budget: a SYN then gets RST, "connection refused")
    /// or brought back (it fits again), given the SYNs counted so far.
    pub fn check_listeners(&mut self, syns: u64, admits: bool) -> Listeners {
        match (self.withdrawn, admits) {
            (None, false) => {
                self.withdrawn = Some(syns);
                Listeners::Withdraw
            }
            (Some(seen), true) => {
                self.refused += syns - seen;
                self.withdrawn = None;
                Listeners::Restore
            }
            (Some(seen), false) => {
                self.refused += syns - seen;
                self.withdrawn = Some(syns);
                Listeners::Keep
            }
            (None, true) => Listeners::Keep,
        }
    }

    /// Whether a budget is set.
    pub fn has_budget(&self) -> bool {
        self.budget.is_some()
    }

    /// A connection attempt refused for lack of memory.
    pub fn count_refused(&mut self) {
        self.refused += 1;
    }

    /// Counters, given the TCP socket count and the SYNs counted so far.
    pub fn stats(&self, sockets: usize, syns: u64) -> MemoryStats {
        MemoryStats {
            budget: self.budget,
            in_use: self.in_use(sockets),
            rings: self.rings,
            idle_releases: self.idle_releases,
            refused: self.refused + self.withdrawn.map_or(0, |seen| syns - seen),
            at_limit: self.withdrawn.is_some(),
            socket_bytes: self.per_socket,
        }
    }

    /// Whether new connections are being refused for lack of memory.
    pub fn at_limit(&self) -> bool {
        self.withdrawn.is_some()
    }
}

impl std::fmt::Display for MemoryStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        const MIB: f64 = (1 << 20) as f64;
        write!(
            f,
            "memory {:.1} MiB (rings {:.1} MiB",
            self.in_use as f64 / MIB,
            self.rings as f64 / MIB
        )?;
        if let Some(b) = self.budget {
            write!(f, ", budget {:.1} MiB", b as f64 / MIB)?;
        }
        write!(f, "), idle releases {}", self.idle_releases)?;
        if self.budget.is_some() || self.refused > 0 {
            write!(f, ", refused {}", self.refused)?;
        }
        if self.at_limit {
            f.write_str(" (at the limit)")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::net::{Ipv4Addr, SocketAddrV4};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};

    use zcstack_driver::PoolConfig;
    use zcstack_driver::wire::{self, WireConfig, WireEnd};

    use crate::{Clock, Stack, TcpConn, TcpState};

    const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
    const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
    const RX: usize = 16 << 10;
    const TX: usize = 256 << 10;

    struct Pair {
        a: Stack<WireEnd>,
        b: Stack<WireEnd>,
        us: Arc<AtomicI64>,
    }

    fn pair(budget_b: Option<usize>) -> Pair {
        let pool = || PoolConfig::new().frames(512).build().unwrap();
        let (ea, eb) = wire::pair(pool(), pool(), WireConfig::default());
        let us = Arc::new(AtomicI64::new(0));
        let build = |e, ip, seed, budget| {
            Stack::builder(e)
                .ip(ip, 24)
                .seed(seed)
                .tcp_buffers(RX, TX)
                .max_memory(budget)
                .clock(Clock::Manual(us.clone()))
                .build()
                .unwrap()
        };
        Pair {
            a: build(ea, A, 1, None),
            b: build(eb, B, 2, budget_b),
            us,
        }
    }

    impl Pair {
        /// Polls both stacks `n` times, 100 µs of manual time apart.
        fn run(&mut self, n: usize) {
            for _ in 0..n {
                self.a.poll();
                self.b.poll();
                self.us.fetch_add(100, Ordering::Relaxed);
            }
        }

        /// Connects A to B's listener on port 80; returns (client, server).
        fn connect(&mut self, l: crate::TcpListener) -> (TcpConn, TcpConn) {
            let c = self.a.tcp_connect(SocketAddrV4::new(B, 80)).unwrap();
            for _ in 0..100 {
                self.run(1);
                if let Some(s) = self.b.tcp_accept(l)
                    && self.a.tcp_state(c) == TcpState::Established
                {
                    return (c, s);
                }
            }
            panic!("no connection");
        }

        /// Sends `data` from B's `s` to A's `c`, returns what A read.
        fn b_to_a(&mut self, s: TcpConn, c: TcpConn, data: &[u8]) -> Vec<u8> {
            let (mut sent, mut got) = (0, Vec::new());
            let mut buf = vec![0; 64 << 10];
            for _ in 0..100_000 {
                if sent < data.len()
                    && let Ok(n) = self.b.tcp_write(s, &data[sent..])
                {
                    sent += n;
                }
                self.run(1);
                while let Ok(n) = self.a.tcp_read(c, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                if got.len() == data.len() && self.b.tcp_unacked(s) == 0 {
                    break;
                }
            }
            got
        }
    }

    /// A connection holds ring pages while it moves bytes and gives them
    /// back after a sweep period of idleness; it works the same afterwards.
    #[test]
    fn an_idle_connection_gives_its_rings_back_and_still_works() {
        let mut p = pair(None);
        let l = p.b.tcp_listen(80, 2).unwrap();
        let (c, s) = p.connect(l);
        let data: Vec<u8> = (0..600_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        assert_eq!(p.b_to_a(s, c, &data), data);
        let m = p.b.memory_stats();
        assert_eq!(
            m.rings,
            super::PAGE * 4 + TX + super::RECOVERY_HEAP,
            "receive ring, the whole send ring (wrapped), loss recovery's bound"
        );
        assert_eq!(m.idle_releases, 0);
        // Two sweep periods without traffic.
        p.run(6000);
        let m = p.b.memory_stats();
        assert_eq!(m.rings, 0, "{m:?}");
        assert!(m.idle_releases >= 1);
        assert_eq!(p.b_to_a(s, c, &data[..70_000]), &data[..70_000]);
        let m = p.b.memory_stats();
        assert_eq!(
            m.rings,
            super::PAGE * 4 + 70_000usize.next_multiple_of(super::PAGE) + super::RECOVERY_HEAP,
            "only the written prefix of the send ring"
        );
    }

    /// Bytes that arrived on a connection that then closed (in LAST-ACK:
    /// the peer's FIN, our FIN, its ACK) stay readable: the idle sweep
    /// does not give a CLOSED socket's receive ring back while the
    /// application has not read it (found by the `stack_frames` fuzz
    /// target: the reader got zeros).
    #[test]
    fn unread_bytes_of_a_closed_connection_survive_the_idle_sweep() {
        let mut p = pair(None);
        let l = p.b.tcp_listen(80, 2).unwrap();
        let (c, s) = p.connect(l);
        let data: Vec<u8> = (0..5000u32).map(|i| (i * 13 + 1) as u8).collect();
        assert_eq!(p.a.tcp_write(c, &data).unwrap(), data.len());
        p.a.tcp_shutdown(c).unwrap();
        p.run(200);
        // B has not read; it closes its side and the peer acknowledges.
        p.b.tcp_shutdown(s).unwrap();
        p.run(200);
        assert_eq!(p.b.tcp_state(s), TcpState::Closed);
        // Two sweep periods.
        p.run(6000);
        let mut got = vec![0; 8192];
        let n = p.b.tcp_read(s, &mut got).unwrap();
        assert_eq!(&got[..n], &data[..], "the unread bytes, unchanged");
        assert_eq!(p.b.tcp_read(s, &mut got).unwrap(), 0, "then end of stream");
        // Read: now the sweep gives the rings back.
        let before = p.b.memory_stats().idle_releases;
        p.run(6000);
        assert!(p.b.memory_stats().idle_releases > before);
    }

    /// A connection that keeps moving bytes is never given back mid-way.
    #[test]
    fn a_busy_connection_keeps_its_rings() {
        let mut p = pair(None);
        let l = p.b.tcp_listen(80, 2).unwrap();
        let (c, s) = p.connect(l);
        let data = vec![0x5a; 20_000];
        for _ in 0..20 {
            assert_eq!(p.b_to_a(s, c, &data), data);
            p.run(1000); // 100 ms of quiet between requests
        }
        assert_eq!(p.b.memory_stats().idle_releases, 0);
    }

    /// At the budget, `tcp_connect` refuses with a message that says what
    /// to do, and the listener refuses (RST) until memory comes back.
    #[test]
    fn the_budget_refuses_connections_and_says_why() {
        let pool_bytes = 512 * 2048;
        let one = RX + super::RECOVERY_HEAP + TX;
        let sock = pair(None).b.memory_stats().socket_bytes;
        // Room for the pool, four sockets, two connections' rings and a
        // bit: a third connection does not fit beside a busy first one.
        let budget = pool_bytes + 2 * one + 4 * sock + RX / 4;
        let mut p = pair(Some(budget));
        let l = p.b.tcp_listen(80, 1).unwrap();
        let (c1, s1) = p.connect(l);
        let big = vec![1u8; 2 * TX];
        // s1 fills its send ring while A does not read.
        let mut sent = 0;
        for _ in 0..2000 {
            if let Ok(n) = p.b.tcp_write(s1, &big[sent..]) {
                sent += n;
            }
            p.run(1);
        }
        assert!(sent >= TX, "sent {sent}");
        let (_c2, _s2) = p.connect(l);
        p.run(10);
        // A third connection would not fit: B refuses.
        let m = p.b.memory_stats();
        assert!(m.at_limit && p.b.memory_at_limit(), "{m:?}");
        let c3 = p.a.tcp_connect(SocketAddrV4::new(B, 80)).unwrap();
        p.run(100);
        assert_eq!(p.a.tcp_state(c3), TcpState::Closed, "refused (RST)");
        assert!(p.b.memory_stats().refused >= 1);
        let e = p.b.tcp_connect(SocketAddrV4::new(A, 9)).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::OutOfMemory);
        assert!(
            e.to_string()
                .starts_with("cannot connect to 10.200.0.1:9: the memory budget of ")
                && e.to_string()
                    .ends_with("close connections or raise the budget"),
            "{e}"
        );
        // A reads everything: s1 drains, idles, gives its ring back; new
        // connections are admitted again.
        let mut buf = vec![0; 64 << 10];
        let mut got = 0;
        for _ in 0..20_000 {
            while let Ok(n) = p.a.tcp_read(c1, &mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            p.run(1);
            if got == sent && !p.b.memory_at_limit() {
                break;
            }
        }
        assert_eq!(got, sent);
        assert!(!p.b.memory_at_limit(), "{:?}", p.b.memory_stats());
        let (_c4, _s4) = p.connect(l);
    }

    /// Two connections share a budget with room for one full send ring:
    /// the one that finds it spent still moves its data (in bursts of
    /// `TX_FLOOR`), and both deliver every byte.
    #[test]
    fn connections_short_of_memory_still_finish() {
        let sock = sock();
        let rec = super::RECOVERY_HEAP;
        let budget =
            pool_bytes() + (RX + rec + TX) + (RX + rec + super::TX_FLOOR) + 4 * sock + RX / 4;
        let mut p = pair(Some(budget));
        let l = p.b.tcp_listen(80, 1).unwrap();
        let (c1, s1) = p.connect(l);
        let (c2, s2) = p.connect(l);
        let data: Vec<u8> = (0..3 * TX as u32).map(|i| (i % 253) as u8).collect();
        let (mut sent, mut got) = ([0usize; 2], [Vec::new(), Vec::new()]);
        let mut buf = vec![0; 64 << 10];
        for _ in 0..200_000 {
            for (k, s) in [s1, s2].into_iter().enumerate() {
                if sent[k] < data.len()
                    && let Ok(n) = p.b.tcp_write(s, &data[sent[k]..])
                {
                    sent[k] += n;
                }
            }
            p.run(1);
            for (k, c) in [c1, c2].into_iter().enumerate() {
                while let Ok(n) = p.a.tcp_read(c, &mut buf) {
                    if n == 0 {
                        break;
                    }
                    got[k].extend_from_slice(&buf[..n]);
                }
            }
            let m = p.b.memory_stats();
            assert!(m.in_use <= budget, "{m:?} over {budget}");
            if got.iter().all(|g| g.len() == data.len()) {
                break;
            }
        }
        assert!(
            got[0] == data && got[1] == data,
            "{} and {} of {} bytes",
            got[0].len(),
            got[1].len(),
            data.len()
        );
    }

    /// Under a budget, a connection whose write is refused for lack of
    /// memory while its ring has room is told `Writable` when memory is
    /// back (its ring drained), not on every poll while a write would fail.
    #[test]
    fn writable_waits_for_memory_not_only_for_ring_room() {
        use crate::Event;
        let rec = super::RECOVERY_HEAP;
        let budget =
            pool_bytes() + (RX + rec + TX) + (RX + rec + super::TX_FLOOR) + 4 * sock() + RX / 4;
        let mut p = pair(Some(budget));
        let mut events = Vec::new();
        p.b.events(&mut events);
        let l = p.b.tcp_listen(80, 1).unwrap();
        let (_c1, s1) = p.connect(l);
        let (c2, s2) = p.connect(l);
        // s1 takes the budget's one full ring; A reads neither connection.
        let data = vec![7u8; 2 * TX];
        let mut sent1 = 0;
        for _ in 0..2000 {
            if let Ok(n) = p.b.tcp_write(s1, &data[sent1..]) {
                sent1 += n;
            }
            p.run(1);
        }
        assert!(sent1 >= TX, "s1 filled its ring (and A's window): {sent1}");
        // s2 writes, as an application on events would, until refused.
        let mut sent2 = 0;
        while let Ok(n) = p.b.tcp_write(s2, &data[sent2..]) {
            sent2 += n;
        }
        assert!(
            sent2 < TX / 2,
            "the budget, not the ring, stopped s2 at {sent2}"
        );
        let mut told = 0;
        for _ in 0..200 {
            p.run(1);
            p.b.events(&mut events);
            if events.contains(&Event::Writable(s2)) {
                told += 1;
                assert!(p.b.tcp_write(s2, &data[sent2..]).is_err(), "no room yet");
            }
        }
        assert_eq!(told, 0, "Writable while a write could not take a byte");
        // A reads c2: s2's ring drains, and it is told it can write again.
        let mut buf = vec![0; 64 << 10];
        let mut got = 0;
        let mut told = false;
        for _ in 0..20_000 {
            p.run(1);
            while let Ok(n) = p.a.tcp_read(c2, &mut buf) {
                if n == 0 {
                    break;
                }
                got += n;
            }
            p.b.events(&mut events);
            if events.contains(&Event::Writable(s2)) {
                told = true;
                break;
            }
        }
        assert!(told, "never told; A read {got} of {sent2}");
        assert!(p.b.tcp_write(s2, &data[sent2..]).unwrap() > 0);
    }

    fn pool_bytes() -> usize {
        512 * 2048
    }

    fn sock() -> usize {
        pair(None).b.memory_stats().socket_bytes
    }

    #[test]
    fn a_budget_below_one_connection_is_a_config_error() {
        let pool = PoolConfig::new().frames(512).build().unwrap();
        let (e, _f) = wire::pair(pool.clone(), pool, WireConfig::default());
        let err = Stack::builder(e)
            .ip(A, 24)
            .tcp_buffers(RX, TX)
            .max_memory(Some(1 << 20))
            .build()
            .err()
            .expect("refused");
        assert_eq!(
            err.to_string(),
            format!(
                "a memory budget of 1024 KiB is below what the stack needs for one connection: {} KiB (1024 KiB of buffer pool, 272 KiB of TCP rings, {} bytes of socket structures, {} bytes of loss-recovery state at most): raise it or use smaller rings or pool",
                (pool_bytes() + RX + TX + sock() + super::RECOVERY_HEAP) / 1024,
                sock(),
                super::RECOVERY_HEAP
            )
        );
    }
}
