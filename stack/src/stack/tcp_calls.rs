//! The TCP calls of [`Stack`]: each checks its handle in the TCP table
//! (module [`tcp`](crate::tcp)) and asks the socket, the file sender, the
//! memory accounting and the events for their part.

use std::io;
use std::net::SocketAddrV4;
use std::sync::Arc;
use std::time::Duration;

use smoltcp::socket::tcp::{self, TxRef, TxSource};
use smoltcp::wire::IpAddress;
use zcstack_driver::{Driver, Frame};

use super::{Stack, slot_added};
use crate::file::transfer::ring_queue;
use crate::tcp::{TcpConn, TcpListener, TcpState, cannot_send, end_of_stream, stale};

impl<D: Driver> Stack<D> {
    /// Listens on `port` with room for `backlog` connections that are being
    /// set up or waiting for [`accept`](Self::tcp_accept).
    pub fn tcp_listen(&mut self, port: u16, backlog: usize) -> io::Result<TcpListener> {
        let listener = self.tcp.listen(port, backlog)?;
        self.refill_listeners();
        Ok(listener)
    }

    /// Tops every listener up to its backlog with listening sockets (not
    /// while the memory budget has withdrawn them).
    pub(super) fn refill_listeners(&mut self) {
        if self.mem.at_limit() {
            return;
        }
        let mut added = slot_added(&mut self.files, &mut self.mem, &mut self.events);
        self.tcp.refill_listeners(&mut self.sockets, &mut added);
    }

    /// Takes the oldest established connection from `listener`'s queue, if any.
    pub fn tcp_accept(&mut self, listener: TcpListener) -> Option<TcpConn> {
        let conn = self.tcp.accept(listener, &self.sockets)?;
        self.events.opened(conn.slot());
        self.refill_listeners();
        Some(conn)
    }

    /// Stops listening: aborts the listening sockets and the connections not yet accepted.
    pub fn tcp_unlisten(&mut self, listener: TcpListener) {
        self.tcp.unlisten(listener, &mut self.sockets);
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
        if !self.mem.admits(self.tcp.len()) {
            self.mem.count_refused();
            return Err(io::Error::new(
                io::ErrorKind::OutOfMemory,
                format!(
                    "cannot connect to {remote}: the memory budget of {} bytes is reached ({} in use): close connections or raise the budget",
                    self.mem.budget().unwrap_or(0),
                    self.mem.in_use(self.tcp.len())
                ),
            ));
        }
        let mut added = slot_added(&mut self.files, &mut self.mem, &mut self.events);
        let conn = self
            .tcp
            .connect(&mut self.sockets, self.engine.context(), remote, &mut added);
        drop(added);
        let conn = conn?;
        let slot = conn.slot();
        self.events.opened(slot);
        // `Writable` once established.
        self.events.want_write(slot);
        self.mem.note_io(slot);
        Ok(conn)
    }

    /// Refuses app writes while file bytes are queued (they go first).
    fn files_first(&self, c: TcpConn) -> io::Result<()> {
        let slot = self.tcp.open_slot(c)?;
        if self.files.close_after(slot) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "connection is shut down for sending",
            ));
        }
        if self.files.pending(slot) > 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        Ok(())
    }

    /// The connection's congestion window and the bytes it holds in flight
    /// against it (in fast recovery, the window proportional rate reduction
    /// allows), or `None` for a closed handle.
    pub fn tcp_congestion_window(&self, c: TcpConn) -> Option<(usize, usize)> {
        self.tcp
            .sock(&self.sockets, c)
            .ok()
            .map(|s| s.congestion_window())
    }

    /// The connection's TCP state (`Closed` for a stale handle).
    pub fn tcp_state(&self, c: TcpConn) -> TcpState {
        self.tcp
            .sock(&self.sockets, c)
            .map(|s| s.state())
            .unwrap_or(TcpState::Closed)
    }

    /// The peer's address, once connected.
    pub fn tcp_peer(&self, c: TcpConn) -> Option<SocketAddrV4> {
        let ep = self.tcp.sock(&self.sockets, c).ok()?.remote_endpoint()?;
        match ep.addr {
            IpAddress::Ipv4(ip) => Some(SocketAddrV4::new(ip, ep.port)),
        }
    }

    /// Copies received bytes into `buf` (copy counted). `Ok(0)` at end of
    /// stream; `WouldBlock` when nothing is buffered yet; `ConnectionReset`
    /// once the bytes of a connection reset or timed out are all read.
    pub fn tcp_read(&mut self, c: TcpConn, buf: &mut [u8]) -> io::Result<usize> {
        self.read_ready(c)?;
        let sock = self.tcp.sock_mut(&mut self.sockets, c)?;
        if sock.can_recv() {
            let n = sock.recv_slice(buf).map_err(|_| stale())?;
            self.app.read += n as u64;
            self.mem.note_io(c.slot());
            return Ok(n);
        }
        end_of_stream(sock).map(|()| 0)
    }

    /// `WouldBlock` if `c` has nothing to read and more may come, found
    /// with a shared reference: taking the socket mutably would have
    /// smoltcp visit it on every egress pass until it has nothing to send
    /// (patch 2), so idle connections polled for input would be woken.
    fn read_ready(&mut self, c: TcpConn) -> io::Result<()> {
        let sock = self.tcp.sock(&self.sockets, c)?;
        let idle = !sock.can_recv()
            && (sock.may_recv()
                || matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived));
        self.events.note_read(c.slot());
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
        let sock = self.tcp.sock_mut(&mut self.sockets, c)?;
        if sock.can_recv() {
            let r = sock.recv(|data| {
                let (n, r) = f(data);
                (n.min(data.len()), r)
            });
            self.mem.note_io(c.slot());
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
            Ok(n) if *n < data.len() => self.events.want_write(c.slot()),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.events.want_write(c.slot()),
            _ => {}
        }
        r
    }

    fn write_copy(&mut self, c: TcpConn, data: &[u8]) -> io::Result<usize> {
        self.files_first(c)?;
        let slot = c.slot();
        let limit = self.mem.tx_limit(slot, self.tcp.len());
        let base = self.files.ring_base(&self.sockets, slot);
        let cap = self.tcp.tx_buffer();
        let sock = self.tcp.socket_mut(&mut self.sockets, slot);
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
            self.files.set_tx_end(slot, at);
        }
        self.app.write += n as u64;
        let end = if at0 + n > cap { cap } else { at0 + n };
        self.mem.note_tx(slot, end);
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
                self.events.want_write(c.slot());
            }
            return Err(e);
        }
        let slot = c.slot();
        let limit = self.mem.tx_limit(slot, self.tcp.len());
        let base = self.files.ring_base(&self.sockets, slot);
        let sock = self.tcp.socket_mut(&mut self.sockets, slot);
        if !sock.may_send() {
            return Err(cannot_send(sock));
        }
        let mut wrote = 0;
        let mut full = false;
        let mut end = self.files.tx_end(slot);
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
            self.events.want_write(slot);
        }
        self.files.set_tx_end(slot, end);
        self.app.write += wrote as u64;
        if wrote > 0 {
            self.mem.note_tx(slot, end);
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
        let cap = self.tcp.tx_buffer();
        let sock = self.tcp.socket_mut(&mut self.sockets, c.slot());
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
                self.app.frame += n as u64;
                Ok(())
            }
            Err(_) => unreachable!("may_send was checked"),
        }
    }

    /// Bytes that can be written now without blocking.
    pub fn tcp_send_room(&self, c: TcpConn) -> usize {
        self.tcp
            .sock(&self.sockets, c)
            .map(|s| s.send_capacity() - ring_queue(s))
            .unwrap_or(0)
    }

    /// Bytes written but not yet acknowledged by the peer.
    pub fn tcp_unacked(&self, c: TcpConn) -> usize {
        self.tcp
            .sock(&self.sockets, c)
            .map(|s| s.send_queue())
            .unwrap_or(0)
    }

    /// Bytes received and not yet read.
    pub fn tcp_readable(&self, c: TcpConn) -> usize {
        self.tcp
            .sock(&self.sockets, c)
            .map(|s| s.recv_queue())
            .unwrap_or(0)
    }

    /// Sends FIN after the queued data (file transfers included); the
    /// connection can still read.
    pub fn tcp_shutdown(&mut self, c: TcpConn) -> io::Result<()> {
        let slot = self.tcp.open_slot(c)?;
        if !self.files.defer_close(slot) {
            self.tcp.socket_mut(&mut self.sockets, slot).close();
        }
        Ok(())
    }

    /// Closes the connection: queued data (file transfers included) is
    /// still sent, then FIN; the handle is invalid afterwards and the socket
    /// is recycled once CLOSED.
    pub fn tcp_close(&mut self, c: TcpConn) -> io::Result<()> {
        self.tcp_shutdown(c)?;
        self.tcp.retire(c);
        Ok(())
    }

    /// Resets the connection (RST), drops queued file transfers and
    /// invalidates the handle.
    pub fn tcp_abort(&mut self, c: TcpConn) -> io::Result<()> {
        self.tcp.sock_mut(&mut self.sockets, c)?.abort();
        self.files.drop_queue(c.slot());
        self.tcp.retire(c);
        Ok(())
    }

    /// The local address a connection uses.
    pub fn tcp_local(&self, c: TcpConn) -> Option<SocketAddrV4> {
        let ep = self.tcp.sock(&self.sockets, c).ok()?.local_endpoint()?;
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
        self.tcp
            .sock_mut(&mut self.sockets, c)?
            .set_timeout(timeout.map(Into::into));
        Ok(())
    }

    /// Sends a keep-alive probe after `interval` without traffic (default
    /// `None`: none). With [`tcp_set_timeout`](Self::tcp_set_timeout), a
    /// peer that stops answering the probes times out.
    pub fn tcp_set_keepalive(&mut self, c: TcpConn, interval: Option<Duration>) -> io::Result<()> {
        self.tcp
            .sock_mut(&mut self.sockets, c)?
            .set_keep_alive(interval.map(Into::into));
        Ok(())
    }

    /// Puts smoltcp's own socket defaults back on `c`: Nagle on, 10 ms
    /// delayed ACK, no congestion control (the stack turns the first two
    /// off and uses Cubic). For baseline measurements of stock smoltcp.
    pub fn tcp_use_smoltcp_defaults(&mut self, c: TcpConn) -> io::Result<()> {
        let sock = self.tcp.sock_mut(&mut self.sockets, c)?;
        sock.set_nagle_enabled(true);
        sock.set_ack_delay(Some(smoltcp::time::Duration::from_millis(10)));
        sock.set_congestion_control(tcp::CongestionControl::None);
        Ok(())
    }
}
