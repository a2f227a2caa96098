//! The TCP table: every TCP socket the stack made, by slot, with its
//! generation and role; listeners with their backlog and accept queue; the
//! free list and the sockets closing. The calls an application makes
//! (`Stack::tcp_*`, in `stack/tcp.rs`) check handles and move sockets
//! between roles here; the other per-connection state lives with its owner,
//! under the same slot number: file transfers and the send ring's write end
//! (`file::transfer`), ring memory (`mem`), what was reported (`event`).
//!
//! smoltcp has no listen backlog: one socket serves one connection, and a SYN
//! that finds no LISTEN socket is answered with RST. A `Listener` therefore
//! keeps up to `backlog` sockets listening on its port; after every poll the
//! ones that left LISTEN move to the accept queue and fresh (recycled)
//! sockets take their place, so simultaneous connects are all accepted. A
//! closed connection's socket is reused once it reaches CLOSED, with its
//! buffers, so a busy server stops allocating.
//!
//! Reads and writes follow non-blocking socket conventions: `Ok(0)` from
//! `read` is end of stream, [`io::ErrorKind::WouldBlock`] means poll and retry.
//! Only a stream the peer finished with its FIN ends in `Ok(0)`: one that was
//! reset or timed out first gives its remaining bytes, then
//! [`io::ErrorKind::ConnectionReset`], so a short transfer never looks whole.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddrV4;

use smoltcp::iface::{Context, SocketHandle, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::IpAddress;

use crate::file::SocketStore;

pub use smoltcp::socket::tcp::State as TcpState;

/// TCP congestion control, chosen per stack ([`StackBuilder::congestion`](crate::StackBuilder::congestion)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Congestion {
    /// Cubic (RFC 9438) with SACK-based loss recovery: loss is congestion.
    #[default]
    Cubic,
    /// BBR version 1 with pacing: the window and rate follow the measured
    /// bottleneck bandwidth and RTT, and random loss does not cut them
    /// (Linux's `bbr`). For lossy paths and to keep queues short.
    Bbr,
}

impl Congestion {
    pub(crate) fn smoltcp(self) -> tcp::CongestionControl {
        match self {
            Congestion::Cubic => tcp::CongestionControl::Cubic,
            Congestion::Bbr => tcp::CongestionControl::Bbr,
        }
    }
}

impl std::fmt::Display for Congestion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Congestion::Cubic => "cubic",
            Congestion::Bbr => "bbr",
        })
    }
}

impl std::str::FromStr for Congestion {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "cubic" => Ok(Congestion::Cubic),
            "bbr" => Ok(Congestion::Bbr),
            _ => Err(format!(
                "{s:?} is not a congestion control: give cubic or bbr"
            )),
        }
    }
}

/// Who holds a TCP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// CLOSED, in the free list.
    Free,
    /// Listening for listener `n`.
    Listening(u32),
    /// Left LISTEN, waiting in listener `n`'s accept queue.
    Pending(u32),
    /// Handed to the application.
    Open,
    /// Closed by the application, finishing its FIN exchange.
    Closing,
}

/// The stack's record of one smoltcp TCP socket.
struct TcpSlot {
    handle: SocketHandle,
    /// Bumped every time the slot changes hands, so stale [`TcpConn`]s fail.
    generation: u32,
    role: Role,
}

impl TcpSlot {
    fn new(handle: SocketHandle) -> TcpSlot {
        TcpSlot {
            handle,
            generation: 0,
            role: Role::Free,
        }
    }
    fn release(&mut self) {
        self.role = Role::Free;
        self.generation = self.generation.wrapping_add(1);
    }
    fn is_open(&self) -> bool {
        self.role == Role::Open
    }
    /// Hands the slot to the application: a new handle.
    fn open(&mut self, slot: u32) -> TcpConn {
        self.role = Role::Open;
        self.generation = self.generation.wrapping_add(1);
        TcpConn {
            slot,
            generation: self.generation,
        }
    }
    /// The application's handle, if the slot is an open connection.
    fn open_conn(&self, slot: u32) -> Option<TcpConn> {
        (self.role == Role::Open).then_some(TcpConn {
            slot,
            generation: self.generation,
        })
    }
    /// The listener this socket listens or waits to be accepted for.
    fn listener_waiting(&self) -> Option<u32> {
        match self.role {
            Role::Listening(l) | Role::Pending(l) => Some(l),
            _ => None,
        }
    }
}

/// A TCP connection owned by the application. Copyable; after `close` or
/// `abort` every copy is stale and calls on it fail with `NotConnected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpConn {
    slot: u32,
    generation: u32,
}

/// A listening port, returned by [`Stack::tcp_listen`](crate::Stack::tcp_listen).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpListener(u32);

impl TcpConn {
    /// A small number that identifies the connection among the open ones
    /// (the stack's socket slot): at most the number of sockets the stack
    /// has made, reused after a close. An application can keep its
    /// per-connection state in a `Vec` indexed by it and check the stored
    /// handle for equality to tell a reused slot.
    pub fn index(self) -> usize {
        self.slot as usize
    }

    /// The slot number, under which every part of the stack keeps what it
    /// knows of this connection.
    pub(crate) fn slot(self) -> u32 {
        self.slot
    }
}

/// A listening port's sockets.
struct Listener {
    port: u16,
    backlog: usize,
    listening: Vec<u32>,
    /// Sockets past LISTEN (SYN-RECEIVED or later), oldest first.
    pending: VecDeque<u32>,
}

impl Listener {
    /// How many listening sockets are missing.
    fn shortfall(&self) -> usize {
        self.backlog
            .saturating_sub(self.listening.len() + self.pending.len())
    }

    /// Moves sockets that left LISTEN to the accept queue (and back, if a
    /// handshake was reset and smoltcp returned the socket to LISTEN); the
    /// ones that just left LISTEN are also pushed to `started`.
    fn maintain(
        &mut self,
        tcp: &mut [TcpSlot],
        sockets: &mut SocketSet<'static>,
        free: &mut Vec<u32>,
        started: &mut Vec<u32>,
    ) {
        let pending = &mut self.pending;
        self.listening.retain(|&slot| {
            let s = &mut tcp[slot as usize];
            if sockets.get::<tcp::Socket>(s.handle).state() == tcp::State::Listen {
                true
            } else {
                if let Role::Listening(l) = s.role {
                    s.role = Role::Pending(l);
                }
                pending.push_back(slot);
                started.push(slot);
                false
            }
        });
        let listening = &mut self.listening;
        self.pending.retain(|&slot| {
            let s = &mut tcp[slot as usize];
            match sockets.get::<tcp::Socket>(s.handle).state() {
                tcp::State::Listen => {
                    if let Role::Pending(l) = s.role {
                        s.role = Role::Listening(l);
                    }
                    listening.push(slot);
                    false
                }
                tcp::State::Closed => {
                    // Reset before anyone accepted it: recycle quietly.
                    s.release();
                    free.push(slot);
                    false
                }
                _ => true,
            }
        });
    }
}

/// For a socket with nothing buffered: `WouldBlock` while more may arrive
/// (also during the handshake), `Ok` at the end of a stream the peer
/// finished with its FIN, `ConnectionReset` when it ended without one
/// (reset by the peer, timed out or aborted: the bytes read may be short).
pub(crate) fn end_of_stream(sock: &mut tcp::Socket) -> io::Result<()> {
    if sock.may_recv() || matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived) {
        return Err(io::ErrorKind::WouldBlock.into());
    }
    // An empty read tells a finished stream from a broken one.
    match sock.recv_slice(&mut []) {
        Err(tcp::RecvError::Finished) => Ok(()),
        _ => Err(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "connection reset or timed out before the peer finished sending",
        )),
    }
}

/// Why a socket that may not send refuses: still handshaking (`WouldBlock`)
/// or shut down / reset (`BrokenPipe`).
pub(crate) fn cannot_send(sock: &tcp::Socket) -> io::Error {
    match sock.state() {
        TcpState::SynSent | TcpState::SynReceived => io::ErrorKind::WouldBlock.into(),
        st => io::Error::new(
            io::ErrorKind::BrokenPipe,
            format!("connection cannot send in state {st}"),
        ),
    }
}

fn ephemeral_range(p: u16) -> u16 {
    if p < 49152 { 49152 } else { p }
}

/// A closed handle's error (TCP, UDP or datagram): what the user sees.
pub(crate) fn stale() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection handle is closed")
}

/// The settings every TCP socket gets, and its ring sizes.
pub(crate) struct TcpConfig {
    pub rx_buffer: usize,
    /// Whole pages.
    pub tx_buffer: usize,
    pub rto_min: smoltcp::time::Duration,
    pub rto_max: smoltcp::time::Duration,
    pub timestamps: bool,
    pub synack_retries: u8,
    pub congestion: Congestion,
}

/// Every TCP socket the stack made, and who holds each (see the module doc).
///
/// A call that may create a socket takes `new_slot`, called with the slot,
/// its socket handle and its rings' index in the [`SocketStore`], so the
/// parts that keep per-slot state add theirs.
pub(crate) struct TcpTable {
    /// Every TCP socket the stack created, by slot number.
    slots: Vec<TcpSlot>,
    /// Slots whose socket is CLOSED and can be reused.
    free: Vec<u32>,
    /// Slots the application closed, waiting for the socket to reach CLOSED.
    closing: Vec<u32>,
    listeners: Vec<Option<Listener>>,
    /// Scratch: sockets that left LISTEN in this `maintain`.
    started: Vec<u32>,
    next_ephemeral: u16,
    /// Sockets changed hands outside `poll`: run bookkeeping on the next poll.
    dirty: bool,
    cfg: TcpConfig,
}

impl TcpTable {
    /// Bytes the table keeps per socket.
    pub const SLOT_BYTES: usize = std::mem::size_of::<TcpSlot>();

    pub fn new(cfg: TcpConfig, seed: u64) -> TcpTable {
        TcpTable {
            slots: Vec::new(),
            free: Vec::new(),
            closing: Vec::new(),
            listeners: Vec::new(),
            started: Vec::new(),
            next_ephemeral: 49152 + (seed % 16384) as u16,
            dirty: false,
            cfg,
        }
    }

    /// TCP sockets made so far (open, listening or recyclable).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Connections the application holds.
    pub fn open_count(&self) -> usize {
        self.slots.iter().filter(|s| s.is_open()).count()
    }

    /// Every socket's handle.
    pub fn handles(&self) -> impl Iterator<Item = SocketHandle> + '_ {
        self.slots.iter().map(|s| s.handle)
    }

    pub fn handle(&self, slot: u32) -> SocketHandle {
        self.slots[slot as usize].handle
    }

    /// The send ring's size (whole pages).
    pub fn tx_buffer(&self) -> usize {
        self.cfg.tx_buffer
    }

    /// `slot`'s socket, whoever holds it.
    pub fn socket<'s>(
        &self,
        sockets: &'s SocketSet<'static>,
        slot: u32,
    ) -> &'s tcp::Socket<'static> {
        sockets.get(self.handle(slot))
    }

    /// `slot`'s socket, mutably (smoltcp then visits it on the next egress
    /// pass, patch 2: read paths use [`socket`](Self::socket)).
    pub fn socket_mut<'s>(
        &self,
        sockets: &'s mut SocketSet<'static>,
        slot: u32,
    ) -> &'s mut tcp::Socket<'static> {
        sockets.get_mut(self.handle(slot))
    }

    /// The slot of an open connection handle.
    pub fn open_slot(&self, c: TcpConn) -> io::Result<u32> {
        match self.slots.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => Ok(c.slot),
            _ => Err(stale()),
        }
    }

    /// An open connection's socket.
    pub fn sock<'s>(
        &self,
        sockets: &'s SocketSet<'static>,
        c: TcpConn,
    ) -> io::Result<&'s tcp::Socket<'static>> {
        match self.slots.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => {
                Ok(sockets.get(s.handle))
            }
            _ => Err(stale()),
        }
    }

    /// An open connection's socket, mutably.
    pub fn sock_mut<'s>(
        &self,
        sockets: &'s mut SocketSet<'static>,
        c: TcpConn,
    ) -> io::Result<&'s mut tcp::Socket<'static>> {
        match self.slots.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => {
                Ok(sockets.get_mut(s.handle))
            }
            _ => Err(stale()),
        }
    }

    /// The application's handle, if `slot` is an open connection.
    pub fn open_conn(&self, slot: u32) -> Option<TcpConn> {
        self.slots[slot as usize].open_conn(slot)
    }

    /// The listener `slot`'s socket listens or waits to be accepted for.
    pub fn listener_waiting(&self, slot: u32) -> Option<TcpListener> {
        self.slots[slot as usize]
            .listener_waiting()
            .map(TcpListener)
    }

    /// Whether bookkeeping is due because sockets changed hands outside a
    /// poll; clears the flag.
    pub fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }

    /// Asks for bookkeeping on the next poll.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Gets a CLOSED socket: a recycled one, or a new one with fresh buffers.
    pub fn take_socket(
        &mut self,
        sockets: &mut SocketStore,
        new_slot: &mut impl FnMut(u32, SocketHandle, usize),
    ) -> io::Result<u32> {
        if let Some(slot) = self.free.pop() {
            // What the last connection set on it goes back to the defaults.
            self.configure(sockets, self.slots[slot as usize].handle);
            return Ok(slot);
        }
        let (handle, ring) = sockets.add_tcp(self.cfg.rx_buffer, self.cfg.tx_buffer)?;
        self.configure(sockets, handle);
        self.slots.push(TcpSlot::new(handle));
        let slot = (self.slots.len() - 1) as u32;
        new_slot(slot, handle, ring);
        Ok(slot)
    }

    /// The settings every connection starts with.
    fn configure(&self, sockets: &mut SocketSet<'static>, h: SocketHandle) {
        let cfg = &self.cfg;
        let sock = sockets.get_mut::<tcp::Socket>(h);
        sock.set_congestion_control(cfg.congestion.smoltcp());
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_rto_bounds(cfg.rto_min, cfg.rto_max);
        sock.set_timestamp_clock(cfg.timestamps);
        sock.set_synack_retries(Some(cfg.synack_retries));
        sock.set_timeout(None);
        sock.set_keep_alive(None);
    }

    /// A new listener on `port`, without sockets yet (see
    /// [`refill_listeners`](Self::refill_listeners)).
    pub fn listen(&mut self, port: u16, backlog: usize) -> io::Result<TcpListener> {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot listen on port 0",
            ));
        }
        if backlog == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "backlog must be at least 1",
            ));
        }
        if self.listeners.iter().flatten().any(|l| l.port == port) {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("TCP port {port} already has a listener"),
            ));
        }
        let id = match self.listeners.iter().position(Option::is_none) {
            Some(i) => i,
            None => {
                self.listeners.push(None);
                self.listeners.len() - 1
            }
        };
        self.listeners[id] = Some(Listener {
            port,
            backlog,
            listening: Vec::new(),
            pending: VecDeque::new(),
        });
        Ok(TcpListener(id as u32))
    }

    /// Tops every listener up to its backlog with listening sockets.
    pub fn refill_listeners(
        &mut self,
        sockets: &mut SocketStore,
        new_slot: &mut impl FnMut(u32, SocketHandle, usize),
    ) {
        for id in 0..self.listeners.len() {
            while let Some(l) = &self.listeners[id] {
                let (need, port) = (l.shortfall(), l.port);
                if need == 0 {
                    break;
                }
                let Ok(slot) = self.take_socket(sockets, new_slot) else {
                    // No memory for another ring: listen with fewer sockets.
                    break;
                };
                let handle = self.handle(slot);
                let sock = sockets.get_mut::<tcp::Socket>(handle);
                if sock.listen(port).is_err() {
                    // Cannot happen for a CLOSED socket and a non-zero port; keep
                    // the socket free rather than loop.
                    self.free.push(slot);
                    break;
                }
                self.slots[slot as usize].role = Role::Listening(id as u32);
                if let Some(l) = &mut self.listeners[id] {
                    l.listening.push(slot);
                }
            }
        }
    }

    /// How many listening sockets are missing, over all listeners.
    pub fn listener_shortfall(&self) -> usize {
        self.listeners
            .iter()
            .flatten()
            .map(|l| l.shortfall())
            .sum::<usize>()
    }

    /// Closes every listening socket (they go back to the free list): SYNs
    /// then get RST until [`refill_listeners`](Self::refill_listeners).
    /// Handshakes under way and the accept queue are kept.
    pub fn withdraw_listeners(&mut self, sockets: &mut SocketSet<'static>) {
        for l in self.listeners.iter_mut().flatten() {
            for slot in l.listening.drain(..) {
                let s = &mut self.slots[slot as usize];
                sockets.get_mut::<tcp::Socket>(s.handle).abort();
                s.release();
                self.free.push(slot);
            }
        }
    }

    /// Takes the oldest established connection from `listener`'s queue, if any.
    pub fn accept(
        &mut self,
        listener: TcpListener,
        sockets: &SocketSet<'static>,
    ) -> Option<TcpConn> {
        let l = self.listeners.get_mut(listener.0 as usize)?.as_mut()?;
        let pos = l.pending.iter().position(|&slot| {
            let st = sockets
                .get::<tcp::Socket>(self.slots[slot as usize].handle)
                .state();
            !matches!(
                st,
                tcp::State::SynReceived | tcp::State::Listen | tcp::State::Closed
            )
        })?;
        let slot = l.pending.remove(pos)?;
        Some(self.slots[slot as usize].open(slot))
    }

    /// Stops listening: aborts the listening sockets and the connections not yet accepted.
    pub fn unlisten(&mut self, listener: TcpListener, sockets: &mut SocketSet<'static>) {
        let Some(l) = self
            .listeners
            .get_mut(listener.0 as usize)
            .and_then(Option::take)
        else {
            return;
        };
        for slot in l.listening.into_iter().chain(l.pending) {
            let s = &mut self.slots[slot as usize];
            sockets.get_mut::<tcp::Socket>(s.handle).abort();
            s.role = Role::Closing;
            self.closing.push(slot);
        }
        self.dirty = true;
    }

    /// Starts connecting a fresh socket to `remote` from the next ephemeral port.
    pub fn connect(
        &mut self,
        sockets: &mut SocketStore,
        cx: &mut Context,
        remote: SocketAddrV4,
        new_slot: &mut impl FnMut(u32, SocketHandle, usize),
    ) -> io::Result<TcpConn> {
        let slot = self.take_socket(sockets, new_slot)?;
        let local = self.next_ephemeral;
        self.next_ephemeral = ephemeral_range(self.next_ephemeral.wrapping_add(1));
        let handle = self.handle(slot);
        let sock = sockets.get_mut::<tcp::Socket>(handle);
        let remote_ep = (IpAddress::Ipv4(*remote.ip()), remote.port());
        if let Err(e) = sock.connect(cx, remote_ep, local) {
            self.free.push(slot);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot connect to {remote}: {e}"),
            ));
        }
        Ok(self.slots[slot as usize].open(slot))
    }

    /// The application let go of `c` (close or abort): its socket is
    /// recycled once CLOSED.
    pub fn retire(&mut self, c: TcpConn) {
        let s = &mut self.slots[c.slot as usize];
        s.role = Role::Closing;
        s.generation = s.generation.wrapping_add(1);
        self.closing.push(c.slot);
        self.dirty = true;
    }

    /// Resets `slot`'s connection (RST).
    pub fn abort(&self, sockets: &mut SocketSet<'static>, slot: u32) {
        self.socket_mut(sockets, slot).abort();
    }

    /// Listener bookkeeping: sockets that left LISTEN join the accept
    /// queues, and come back in the list returned (new handshakes); give
    /// the list back with [`done_started`](Self::done_started).
    pub fn maintain_listeners(&mut self, sockets: &mut SocketSet<'static>) -> Vec<u32> {
        let mut started = std::mem::take(&mut self.started);
        for listener in self.listeners.iter_mut().flatten() {
            listener.maintain(&mut self.slots, sockets, &mut self.free, &mut started);
        }
        started
    }

    /// Keeps the (drained) list of new handshakes for the next `maintain`.
    pub fn done_started(&mut self, started: Vec<u32>) {
        self.started = started;
    }

    /// Recycles the closed connections whose socket reached CLOSED; calls
    /// `released` with each slot first (its queued transfers go).
    pub fn recycle_closed(
        &mut self,
        sockets: &mut SocketSet<'static>,
        mut released: impl FnMut(u32),
    ) {
        let tcp = &mut self.slots;
        let free = &mut self.free;
        self.closing.retain(|&slot| {
            let s = &mut tcp[slot as usize];
            let sock = sockets.get_mut::<tcp::Socket>(s.handle);
            if sock.state() == tcp::State::Closed {
                // References it still holds are released (their files' leases too).
                sock.release_send_buffer_if_closed();
                released(slot);
                s.release();
                free.push(slot);
                false
            } else {
                true
            }
        });
    }
}
