//! TCP: listeners with a backlog, accept, connect, read, write, shutdown, close.
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
use std::sync::Arc;
use std::time::Duration;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp::{self, TxRef, TxSource};
use smoltcp::wire::IpAddress;
use zcstack_driver::{Driver, Frame};

use crate::event::SlotEvents;
use crate::file::transfer::SlotFiles;
use crate::mem::RingMem;
use crate::stack::{Stack, stale};

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
pub(crate) struct TcpSlot {
    pub handle: SocketHandle,
    /// Bumped every time the slot changes hands, so stale [`TcpConn`]s fail.
    generation: u32,
    role: Role,
    /// Queued file transfers and the files mapped in the send ring.
    pub files: SlotFiles,
    /// What the rings may hold (module `mem`).
    pub mem: RingMem,
    /// What was reported of this connection (module `event`).
    pub ev: SlotEvents,
}

impl TcpSlot {
    pub fn new(handle: SocketHandle, files: SlotFiles) -> TcpSlot {
        TcpSlot {
            handle,
            generation: 0,
            role: Role::Free,
            files,
            mem: RingMem::default(),
            ev: SlotEvents::default(),
        }
    }
    pub fn release(&mut self) {
        self.role = Role::Free;
        self.generation = self.generation.wrapping_add(1);
    }
    pub fn is_open(&self) -> bool {
        self.role == Role::Open
    }
    /// Hands the slot to the application: a new handle, nothing reported yet.
    fn open(&mut self, slot: u32) -> TcpConn {
        self.role = Role::Open;
        self.generation = self.generation.wrapping_add(1);
        self.ev = self.ev.fresh();
        TcpConn {
            slot,
            generation: self.generation,
        }
    }
    /// The application's handle, if the slot is an open connection.
    pub fn open_conn(&self, slot: u32) -> Option<TcpConn> {
        (self.role == Role::Open).then_some(TcpConn {
            slot,
            generation: self.generation,
        })
    }
    /// The listener this socket listens or waits to be accepted for.
    pub fn listener_waiting(&self) -> Option<u32> {
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

/// A listening port, returned by [`Stack::tcp_listen`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TcpListener(u32);

impl TcpListener {
    pub(crate) fn from_id(id: u32) -> TcpListener {
        TcpListener(id)
    }
}

impl TcpConn {
    /// A small number that identifies the connection among the open ones
    /// (the stack's socket slot): at most the number of sockets the stack
    /// has made, reused after a close. An application can keep its
    /// per-connection state in a `Vec` indexed by it and check the stored
    /// handle for equality to tell a reused slot.
    pub fn index(self) -> usize {
        self.slot as usize
    }
}

/// A listening port's sockets.
pub(crate) struct Listener {
    port: u16,
    backlog: usize,
    listening: Vec<u32>,
    /// Sockets past LISTEN (SYN-RECEIVED or later), oldest first.
    pending: VecDeque<u32>,
}

impl Listener {
    /// How many listening sockets are missing.
    pub fn shortfall(&self) -> usize {
        self.backlog
            .saturating_sub(self.listening.len() + self.pending.len())
    }

    /// Moves sockets that left LISTEN to the accept queue (and back, if a
    /// handshake was reset and smoltcp returned the socket to LISTEN); the
    /// ones that just left LISTEN are also pushed to `started`.
    pub fn maintain(
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
fn end_of_stream(sock: &mut tcp::Socket) -> io::Result<()> {
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
fn cannot_send(sock: &tcp::Socket) -> io::Error {
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

impl<D: Driver> Stack<D> {
    /// Listens on `port` with room for `backlog` connections that are being
    /// set up or waiting for [`accept`](Self::tcp_accept).
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> io::Result<TcpListener> {
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
        self.refill_listeners();
        Ok(TcpListener(id as u32))
    }

    /// Tops every listener up to its backlog with listening sockets (not
    /// while the memory budget has withdrawn them).
    pub(crate) fn refill_listeners(&mut self) {
        if self.mem.withdrawn.is_some() {
            return;
        }
        for id in 0..self.listeners.len() {
            while let Some(l) = &self.listeners[id] {
                let (need, port) = (l.shortfall(), l.port);
                if need == 0 {
                    break;
                }
                let Ok(slot) = self.take_socket() else {
                    // No memory for another ring: listen with fewer sockets.
                    break;
                };
                let handle = self.handle(slot);
                let sock = self.sockets.get_mut::<tcp::Socket>(handle);
                if sock.listen(port).is_err() {
                    // Cannot happen for a CLOSED socket and a non-zero port; keep
                    // the socket free rather than loop.
                    self.tcp_free.push(slot);
                    break;
                }
                self.tcp[slot as usize].role = Role::Listening(id as u32);
                if let Some(l) = &mut self.listeners[id] {
                    l.listening.push(slot);
                }
            }
        }
    }

    /// Closes every listening socket (they go back to the free list): SYNs
    /// then get RST until [`refill_listeners`](Self::refill_listeners).
    /// Handshakes under way and the accept queue are kept.
    pub(crate) fn withdraw_listeners(&mut self) {
        for l in self.listeners.iter_mut().flatten() {
            for slot in l.listening.drain(..) {
                let s = &mut self.tcp[slot as usize];
                self.sockets.get_mut::<tcp::Socket>(s.handle).abort();
                s.release();
                self.tcp_free.push(slot);
            }
        }
    }

    /// Takes the oldest established connection from `listener`'s queue, if any.
    pub fn tcp_accept(&mut self, listener: TcpListener) -> Option<TcpConn> {
        let l = self.listeners.get_mut(listener.0 as usize)?.as_mut()?;
        let pos = l.pending.iter().position(|&slot| {
            let st = self
                .sockets
                .get::<tcp::Socket>(self.tcp[slot as usize].handle)
                .state();
            !matches!(
                st,
                tcp::State::SynReceived | tcp::State::Listen | tcp::State::Closed
            )
        })?;
        let slot = l.pending.remove(pos)?;
        let conn = self.tcp[slot as usize].open(slot);
        self.refill_listeners();
        Some(conn)
    }

    /// Stops listening: aborts the listening sockets and the connections not yet accepted.
    pub fn tcp_unlisten(&mut self, listener: TcpListener) {
        let Some(l) = self
            .listeners
            .get_mut(listener.0 as usize)
            .and_then(Option::take)
        else {
            return;
        };
        for slot in l.listening.into_iter().chain(l.pending) {
            let s = &mut self.tcp[slot as usize];
            self.sockets.get_mut::<tcp::Socket>(s.handle).abort();
            s.role = Role::Closing;
            self.closing.push(slot);
        }
        self.dirty = true;
    }

    /// Starts connecting to `remote`; poll until [`tcp_state`](Self::tcp_state)
    /// is `Established` (or `Closed`: refused or timed out).
    pub fn tcp_connect(&mut self, remote: SocketAddrV4) -> io::Result<TcpConn> {
        if remote.port() == 0 || remote.ip().is_unspecified() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot connect to {remote}"),
            ));
        }
        if !self.mem_admits() {
            self.mem.refused += 1;
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot connect to {remote}: the memory budget of {} bytes is reached ({} in use): close connections or raise the budget",
                    self.mem.budget.unwrap_or(0),
                    self.mem_in_use()
                ),
            ));
        }
        let slot = self.take_socket()?;
        let local = self.next_ephemeral;
        self.next_ephemeral = ephemeral_range(self.next_ephemeral.wrapping_add(1));
        let handle = self.handle(slot);
        let sock = self.sockets.get_mut::<tcp::Socket>(handle);
        let remote_ep = (IpAddress::Ipv4(*remote.ip()), remote.port());
        if let Err(e) = sock.connect(self.iface.context(), remote_ep, local) {
            self.tcp_free.push(slot);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot connect to {remote}: {e}"),
            ));
        }
        let conn = self.tcp[slot as usize].open(slot);
        // `Writable` once established.
        self.want_write(slot);
        self.mem_note_io(slot);
        Ok(conn)
    }

    /// The slot of an open connection handle.
    pub(crate) fn open_slot(&self, c: TcpConn) -> io::Result<u32> {
        match self.tcp.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => Ok(c.slot),
            _ => Err(stale()),
        }
    }

    /// Refuses app writes while file bytes are queued (they go first).
    fn files_first(&self, c: TcpConn) -> io::Result<()> {
        let slot = self.open_slot(c)?;
        let f = &self.tcp[slot as usize].files;
        if f.close_after {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection is shut down for sending",
            ));
        }
        if f.pending() > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }

    fn sock(&self, c: TcpConn) -> io::Result<&tcp::Socket<'static>> {
        match self.tcp.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => {
                Ok(self.sockets.get(s.handle))
            }
            _ => Err(stale()),
        }
    }

    fn sock_mut(&mut self, c: TcpConn) -> io::Result<&mut tcp::Socket<'static>> {
        match self.tcp.get(c.slot as usize) {
            Some(s) if s.generation == c.generation && s.role == Role::Open => {
                Ok(self.sockets.get_mut(s.handle))
            }
            _ => Err(stale()),
        }
    }

    /// The connection's congestion window and the bytes it holds in flight
    /// against it (in fast recovery, the window proportional rate reduction
    /// allows), or `None` for a closed handle.
    pub fn tcp_congestion_window(&self, c: TcpConn) -> Option<(usize, usize)> {
        self.sock(c).ok().map(|s| s.congestion_window())
    }

    /// The connection's TCP state (`Closed` for a stale handle).
    pub fn tcp_state(&self, c: TcpConn) -> TcpState {
        self.sock(c).map(|s| s.state()).unwrap_or(TcpState::Closed)
    }

    /// The peer's address, once connected.
    pub fn tcp_peer(&self, c: TcpConn) -> Option<SocketAddrV4> {
        let ep = self.sock(c).ok()?.remote_endpoint()?;
        match ep.addr {
            IpAddress::Ipv4(ip) => Some(SocketAddrV4::new(ip, ep.port)),
        }
    }

    /// Copies received bytes into `buf` (copy counted). `Ok(0)` at end of
    /// stream; `WouldBlock` when nothing is buffered yet; `ConnectionReset`
    /// once the bytes of a connection reset or timed out are all read.
    pub fn tcp_read(&mut self, c: TcpConn, buf: &mut [u8]) -> io::Result<usize> {
        self.read_ready(c)?;
        let sock = self.sock_mut(c)?;
        if sock.can_recv() {
            let n = sock.recv_slice(buf).map_err(|_| stale())?;
            self.app_read_bytes += n as u64;
            self.mem_note_io(c.slot);
            return Ok(n);
        }
        end_of_stream(sock).map(|()| 0)
    }

    /// `WouldBlock` if `c` has nothing to read and more may come, found
    /// with a shared reference: taking the socket mutably would have
    /// smoltcp visit it on every egress pass until it has nothing to send
    /// (patch 2), so idle connections polled for input would be woken.
    fn read_ready(&mut self, c: TcpConn) -> io::Result<()> {
        let sock = self.sock(c)?;
        let idle = !sock.can_recv()
            && (sock.may_recv()
                || matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived));
        self.note_read(c.slot);
        if idle {
            Err(io::ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    }

    /// Reads in place: `f` sees the received bytes in the socket's ring (the
    /// longest contiguous run) and returns how many it consumed. No copy by
    /// the stack. `WouldBlock` when nothing is buffered; `Ok(None)` at end of
    /// stream; `ConnectionReset` as for [`Stack::tcp_read`].
    pub fn tcp_read_with<R>(
        &mut self,
        c: TcpConn,
        f: impl FnOnce(&[u8]) -> (usize, R),
    ) -> io::Result<Option<R>> {
        self.read_ready(c)?;
        let sock = self.sock_mut(c)?;
        if sock.can_recv() {
            let r = sock.recv(|data| {
                let (n, r) = f(data);
                (n.min(data.len()), r)
            });
            self.mem_note_io(c.slot);
            return r.map(Some).map_err(|_| stale());
        }
        end_of_stream(sock).map(|()| None)
    }

    /// Copies as much of `data` as fits into the send ring (copy counted).
    /// `WouldBlock` when the ring is full; `BrokenPipe` after a shutdown or reset.
    pub fn tcp_write(&mut self, c: TcpConn, data: &[u8]) -> io::Result<usize> {
        let r = self.write_copy(c, data);
        // A write that blocked or filled the ring asks for `Writable`.
        match &r {
            Ok(n) if *n < data.len() => self.want_write(c.slot),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.want_write(c.slot),
            _ => {}
        }
        r
    }

    fn write_copy(&mut self, c: TcpConn, data: &[u8]) -> io::Result<usize> {
        self.files_first(c)?;
        let limit = self.mem_tx_limit(c.slot);
        let s = &mut self.tcp[c.slot as usize];
        let base = self.sockets.ring_base(s.files.ring);
        let cap = self.tcp_tx_buffer;
        let sock = self.sockets.get_mut::<tcp::Socket>(s.handle);
        if !sock.may_send() {
            return Err(cannot_send(sock));
        }
        // The write position (a zero-byte enqueue shows it; an empty ring
        // restarts at 0). Below a memory limit the write may not reach
        // pages beyond it.
        let at0 = sock
            .send(|free| (0, free.as_ptr() as usize - base))
            .map_err(|_| stale())?;
        let want = data.len();
        let data = if limit < cap {
            &data[..data.len().min(limit.saturating_sub(at0))]
        } else {
            data
        };
        let n = sock.send_slice(data).map_err(|_| stale())?;
        if n == 0 {
            return if want == 0 {
                Ok(0)
            } else {
                Err(io::ErrorKind::WouldBlock.into())
            };
        }
        // Where the ring's bytes end now.
        if let Ok(at) = sock.send(|free| (0, free.as_ptr() as usize - base)) {
            s.files.tx_end = at;
        }
        self.app_write_bytes += n as u64;
        let end = if at0 + n > cap { cap } else { at0 + n };
        self.mem_note_tx(c.slot, end);
        Ok(n)
    }

    /// Writes in place: `f` gets the free part of the send ring (the longest
    /// contiguous run) and returns how many bytes it filled. The caller's
    /// copy into the ring is counted as `app_write_bytes`.
    pub fn tcp_write_with<R>(
        &mut self,
        c: TcpConn,
        f: impl FnOnce(&mut [u8]) -> (usize, R),
    ) -> io::Result<R> {
        if let Err(e) = self.files_first(c) {
            if e.kind() == io::ErrorKind::WouldBlock {
                self.want_write(c.slot);
            }
            return Err(e);
        }
        let limit = self.mem_tx_limit(c.slot);
        let s = &mut self.tcp[c.slot as usize];
        let base = self.sockets.ring_base(s.files.ring);
        let sock = self.sockets.get_mut::<tcp::Socket>(s.handle);
        if !sock.may_send() {
            return Err(cannot_send(sock));
        }
        let mut wrote = 0;
        let mut full = false;
        let mut end = s.files.tx_end;
        let r = sock
            .send(|free| {
                let at = free.as_ptr() as usize - base;
                // Below a memory limit: only the pages it leaves room for.
                let room = limit.saturating_sub(at).min(free.len());
                let free = &mut free[..room];
                let (n, r) = f(free);
                wrote = n.min(free.len());
                full = wrote == free.len();
                end = at + wrote;
                (wrote, r)
            })
            .map_err(|_| stale())?;
        if full {
            // The ring (or the room the memory budget leaves) is full.
            self.want_write(c.slot);
        }
        let s = &mut self.tcp[c.slot as usize];
        s.files.tx_end = end;
        self.app_write_bytes += wrote as u64;
        if wrote > 0 {
            self.mem_note_tx(c.slot, end);
        }
        Ok(r)
    }

    /// Sends a pool frame's data by reference: the application wrote it in
    /// place (take frames from the driver's pool, `stack.driver().pool()`, and fill
    /// [`Frame::data_mut`]), and the socket queues a reference to it, after
    /// everything queued, instead of copying it. A device that can send
    /// from pool memory (AF_XDP with multi-buffer packets) sends it with no
    /// copy; others copy it once into their frames (TAP's kernel copy, or
    /// smoltcp's emit). The frame goes back to the pool once the peer has
    /// acknowledged all of it and no transmission of it is in flight.
    ///
    /// At most a send buffer's worth is queued by reference per
    /// connection: beyond it, or before queued file transfers finished,
    /// the frame comes back with `WouldBlock`.
    pub fn tcp_send_frame(&mut self, c: TcpConn, frame: Frame) -> Result<(), (io::Error, Frame)> {
        if let Err(e) = self.files_first(c) {
            return Err((e, frame));
        }
        let cap = self.tcp_tx_buffer;
        let s = &self.tcp[c.slot as usize];
        let sock = self.sockets.get_mut::<tcp::Socket>(s.handle);
        if !sock.may_send() {
            return Err((cannot_send(sock), frame));
        }
        if sock.send_ref_queue() >= cap {
            return Err((io::ErrorKind::WouldBlock.into(), frame));
        }
        let len = frame.len();
        if len == 0 {
            return Ok(());
        }
        let src: Arc<dyn TxSource> = Arc::new(frame);
        let r = TxRef::new(src, 0, len).expect("a frame's whole data");
        match sock.send_ref(r) {
            Ok(n) => {
                self.app_frame_bytes += n as u64;
                Ok(())
            }
            Err(_) => unreachable!("may_send was checked"),
        }
    }

    /// Bytes that can be written now without blocking.
    pub fn tcp_send_room(&self, c: TcpConn) -> usize {
        self.sock(c)
            .map(|s| s.send_capacity() - crate::file::transfer::ring_queue(s))
            .unwrap_or(0)
    }

    /// Bytes written but not yet acknowledged by the peer.
    pub fn tcp_unacked(&self, c: TcpConn) -> usize {
        self.sock(c).map(|s| s.send_queue()).unwrap_or(0)
    }

    /// Bytes received and not yet read.
    pub fn tcp_readable(&self, c: TcpConn) -> usize {
        self.sock(c).map(|s| s.recv_queue()).unwrap_or(0)
    }

    /// Sends FIN after the queued data (file transfers included); the
    /// connection can still read.
    pub fn tcp_shutdown(&mut self, c: TcpConn) -> io::Result<()> {
        let slot = self.open_slot(c)?;
        let s = &mut self.tcp[slot as usize];
        if s.files.pending() > 0 {
            s.files.close_after = true;
        } else {
            self.sockets.get_mut::<tcp::Socket>(s.handle).close();
        }
        Ok(())
    }

    /// Closes the connection: queued data (file transfers included) is
    /// still sent, then FIN; the handle is invalid afterwards and the socket
    /// is recycled once CLOSED.
    pub fn tcp_close(&mut self, c: TcpConn) -> io::Result<()> {
        self.tcp_shutdown(c)?;
        self.retire(c);
        Ok(())
    }

    /// Resets the connection (RST), drops queued file transfers and
    /// invalidates the handle.
    pub fn tcp_abort(&mut self, c: TcpConn) -> io::Result<()> {
        self.sock_mut(c)?.abort();
        self.tcp[c.slot as usize].files.drop_queue();
        self.retire(c);
        Ok(())
    }

    fn retire(&mut self, c: TcpConn) {
        let s = &mut self.tcp[c.slot as usize];
        s.role = Role::Closing;
        s.generation = s.generation.wrapping_add(1);
        self.closing.push(c.slot);
        self.dirty = true;
    }

    /// The local address a connection uses.
    pub fn tcp_local(&self, c: TcpConn) -> Option<SocketAddrV4> {
        let ep = self.sock(c).ok()?.local_endpoint()?;
        match ep.addr {
            IpAddress::Ipv4(ip) => Some(SocketAddrV4::new(ip, ep.port)),
        }
    }

    /// Gives up the connection when the peer has not answered for
    /// `timeout` while this side has something to send or expects an
    /// answer (smoltcp's user timeout; default `None`: retransmit for
    /// ever, backing off up to the maximum RTO). The connection then
    /// closes and [`Event::TimedOut`](crate::Event::TimedOut) reports it.
    pub fn tcp_set_timeout(&mut self, c: TcpConn, timeout: Option<Duration>) -> io::Result<()> {
        self.sock_mut(c)?.set_timeout(timeout.map(Into::into));
        Ok(())
    }

    /// Sends a keep-alive probe after `interval` without traffic (default
    /// `None`: none). With [`tcp_set_timeout`](Self::tcp_set_timeout), a
    /// peer that stops answering the probes times out.
    pub fn tcp_set_keepalive(&mut self, c: TcpConn, interval: Option<Duration>) -> io::Result<()> {
        self.sock_mut(c)?.set_keep_alive(interval.map(Into::into));
        Ok(())
    }

    /// Puts smoltcp's own socket defaults back on `c`: Nagle on, 10 ms
    /// delayed ACK, no congestion control (the stack turns the first two
    /// off and uses Cubic). For baseline measurements of stock smoltcp.
    pub fn tcp_use_smoltcp_defaults(&mut self, c: TcpConn) -> io::Result<()> {
        let sock = self.sock_mut(c)?;
        sock.set_nagle_enabled(true);
        sock.set_ack_delay(Some(smoltcp::time::Duration::from_millis(10)));
        sock.set_congestion_control(tcp::CongestionControl::None);
        Ok(())
    }
}
