//! Readiness events: which connections and listeners a poll changed, so an
//! application with many connections touches only those.
//!
//! After every [`Stack::poll`] the stack looks at the TCP sockets smoltcp
//! says a segment or a timer changed (smoltcp patch 24,
//! `Interface::take_changed`) and at the connections that asked to be told
//! when they can write, and appends an [`Event`] for each that became
//! ready. [`Stack::events`] hands them over:
//!
//! ```no_run
//! # use zcstack::{Event, Stack};
//! # fn demo(stack: &mut Stack<zcstack_driver::wire::WireEnd>) -> std::io::Result<()> {
//! let listener = stack.tcp_listen(7, 16)?;
//! let mut events = Vec::new(); // reused: no allocation per event
//! stack.events(&mut events); // events are collected from the first call on
//! loop {
//!     stack.poll_wait();
//!     stack.events(&mut events);
//!     for ev in &events {
//!         match *ev {
//!             Event::Accept(l) => while let Some(c) = stack.tcp_accept(l) { /* read, write */ }
//!             Event::Readable(c) | Event::Writable(c) => { /* read, write */ }
//!             Event::Closed(c) | Event::TimedOut(c) => { stack.tcp_close(c)?; }
//!         }
//!     }
//! }
//! # }
//! ```
//!
//! Events are edge-triggered, as with `EPOLLET`: a connection is reported
//! when something arrives, not for as long as bytes wait. After `Readable`,
//! read until `WouldBlock` (or read again later on your own account); after
//! `Writable`, write until `WouldBlock`. Bytes that arrived before
//! [`Stack::tcp_accept`] returned a connection are not reported again: read
//! a connection once when you accept it. An event for a handle that was
//! closed since is stale: calls on it fail with `NotConnected`.
//!
//! The read and query calls ([`Stack::tcp_read`] and [`Stack::tcp_read_with`]
//! with nothing to read, [`Stack::tcp_state`], [`Stack::tcp_readable`],
//! [`Stack::tcp_send_room`], ...) take smoltcp's sockets by shared reference:
//! a socket taken mutably is visited by every egress pass until it has
//! nothing to send (smoltcp patch 2), so a loop that only looks at idle
//! connections does not wake them.

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp;
use zcstack_driver::Driver;

use crate::stack::Stack;
use crate::tcp::{TcpConn, TcpListener, TcpState};

/// What became of a connection or listener, from [`Stack::events`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A connection finished its handshake on this listener:
    /// [`Stack::tcp_accept`] returns it (one event per connection; an
    /// application that accepts all it can on the first may find none on
    /// the next).
    Accept(TcpListener),
    /// Bytes arrived, or the peer finished sending: a read returns bytes,
    /// or `Ok(0)` (end of stream), instead of `WouldBlock`. Reported again
    /// when more arrive after the application read.
    Readable(TcpConn),
    /// The connection can take bytes again: reported once after a write
    /// returned `WouldBlock` or filled the send ring, or after
    /// [`Stack::tcp_want_writable`], once the ring has room and queued file
    /// transfers are in it (or the connection can no longer send: the
    /// write then says why); after [`Stack::tcp_connect`], once
    /// established.
    Writable(TcpConn),
    /// The connection is over: the peer reset it, or both sides finished
    /// (FIN both ways). Reads return what is left, then end of stream or
    /// `ConnectionReset`; close the handle to free it.
    Closed(TcpConn),
    /// The connection was given up because the peer stopped answering
    /// within the timeout ([`Stack::tcp_set_timeout`], unanswered
    /// keep-alives). Reads return what is left, then `ConnectionReset`.
    TimedOut(TcpConn),
}

/// What the stack remembers per connection to report each change once.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct SlotEvents {
    /// `Readable` was reported and the application has not read since.
    rx_told: bool,
    /// The end of the stream was reported.
    eof_told: bool,
    /// `Closed` or `TimedOut` was reported.
    closed_told: bool,
    /// In the list of connections waiting for `Writable`.
    want_write: bool,
}

/// The stack's event state.
pub(crate) struct Events {
    /// Events not yet handed to the application.
    out: Vec<Event>,
    /// Scratch: sockets smoltcp says changed.
    changed: Vec<SocketHandle>,
    /// TCP slot of each socket handle (`NONE`: not a TCP socket).
    slot_of: Vec<u32>,
    /// Slots waiting for `Writable`.
    writers: Vec<u32>,
    /// The application asked for events once: collect them from now on
    /// (until then nothing is kept, so an application that never asks
    /// does not accumulate them).
    on: bool,
}

const NONE: u32 = u32::MAX;

impl SlotEvents {
    /// For a new connection in this slot: nothing reported yet. A pending
    /// `Writable` request stays flagged, as the slot is still in the list
    /// (the entry then serves the new connection, or is dropped as stale).
    pub fn fresh(self) -> SlotEvents {
        SlotEvents {
            want_write: self.want_write,
            ..SlotEvents::default()
        }
    }
}

impl Events {
    pub fn new() -> Events {
        Events {
            out: Vec::new(),
            changed: Vec::new(),
            slot_of: Vec::new(),
            writers: Vec::new(),
            on: false,
        }
    }

    /// Records that TCP slot `slot` uses socket `h`.
    pub fn map(&mut self, h: SocketHandle, slot: u32) {
        let i = h.index();
        if self.slot_of.len() <= i {
            self.slot_of.resize(i + 1, NONE);
        }
        self.slot_of[i] = slot;
    }
}

/// Whether a socket that has nothing buffered will give nothing more: the
/// peer finished, or the connection ended.
fn rx_ended(sock: &tcp::Socket) -> bool {
    !sock.may_recv() && !matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived)
}

impl<D: Driver> Stack<D> {
    /// Moves the events of the polls since the last call into `out`,
    /// replacing what it held. Pass the same `Vec` every time: the stack
    /// keeps the one it gets back for the next events, so after the first
    /// few calls no event costs an allocation. See module [`event`](crate::event).
    ///
    /// The stack collects events from the first call on (an application
    /// that never asks keeps none): call it once before polling; what the
    /// polls before the first call did is not reported.
    pub fn events(&mut self, out: &mut Vec<Event>) {
        out.clear();
        std::mem::swap(&mut self.events.out, out);
        self.events.on = true;
    }

    /// Asks for one [`Event::Writable`] once `c` can take bytes: its send
    /// ring has room and every queued file transfer is in the ring (e.g.
    /// before writing the next response behind a
    /// [`tcp_send_file`](Stack::tcp_send_file)). Reported at once (on the
    /// next poll) if that is already so.
    pub fn tcp_want_writable(&mut self, c: TcpConn) -> std::io::Result<()> {
        let slot = self.open_slot(c)?;
        self.want_write(slot);
        Ok(())
    }

    pub(crate) fn want_write(&mut self, slot: u32) {
        let ev = &mut self.tcp[slot as usize].ev;
        if self.events.on && !ev.want_write {
            ev.want_write = true;
            self.events.writers.push(slot);
        }
    }

    /// A read call: the next arrival is reported again.
    pub(crate) fn note_read(&mut self, slot: u32) {
        self.tcp[slot as usize].ev.rx_told = false;
    }

    /// After a poll: events for the sockets smoltcp changed and for the
    /// writers that can write now.
    pub(crate) fn collect_events(&mut self) {
        if !self.events.on {
            // smoltcp's list holds each socket once: it stays bounded.
            return;
        }
        let mut changed = std::mem::take(&mut self.events.changed);
        self.iface.take_changed(&mut self.sockets, &mut changed);
        for h in changed.drain(..) {
            let slot = self.events.slot_of.get(h.index()).copied().unwrap_or(NONE);
            if slot != NONE {
                self.slot_changed(slot);
            }
        }
        self.events.changed = changed;
        if !self.events.writers.is_empty() {
            self.check_writers();
        }
    }

    fn slot_changed(&mut self, slot: u32) {
        let s = &mut self.tcp[slot as usize];
        let sock = self.sockets.get::<tcp::Socket>(s.handle);
        let state = sock.state();
        if let Some(l) = s.listener_waiting() {
            if !matches!(
                state,
                TcpState::Listen | TcpState::SynReceived | TcpState::Closed
            ) {
                self.events.out.push(Event::Accept(TcpListener::from_id(l)));
            }
            return;
        }
        let Some(conn) = s.open_conn(slot) else {
            return;
        };
        let ev = &mut s.ev;
        let over = matches!(state, TcpState::Closed | TcpState::TimeWait);
        if sock.recv_queue() > 0 {
            if !ev.rx_told {
                ev.rx_told = true;
                self.events.out.push(Event::Readable(conn));
            }
        } else if !ev.eof_told && rx_ended(sock) {
            ev.eof_told = true;
            ev.rx_told = true;
            // A connection that is over says so below, and no more.
            if !over {
                self.events.out.push(Event::Readable(conn));
            }
        }
        if !ev.closed_told && over {
            ev.closed_told = true;
            self.events.out.push(if sock.closed_by_timeout() {
                Event::TimedOut(conn)
            } else {
                Event::Closed(conn)
            });
        }
    }

    /// Reports the writers that can write now (or never will) and drops
    /// them and stale ones from the list.
    fn check_writers(&mut self) {
        let mut writers = std::mem::take(&mut self.events.writers);
        let cap = self.tcp_tx_buffer;
        writers.retain(|&slot| {
            let limit = self.mem_tx_limit(slot);
            let s = &mut self.tcp[slot as usize];
            let Some(conn) = s.open_conn(slot) else {
                s.ev.want_write = false;
                return false;
            };
            let sock = self.sockets.get::<tcp::Socket>(s.handle);
            let queued = crate::file::transfer::ring_queue(sock);
            let ready = if matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived) {
                false
            } else if !sock.may_send() || s.files.close_after {
                true
            } else {
                // Room in the ring, and below a memory budget room for the
                // next byte: the write position (0 in a ring that drained,
                // else where the last write ended) lies below what the
                // budget lets this ring reach. Otherwise a write would
                // find no room, and the event would come back every poll.
                let at = if queued == 0 { 0 } else { s.files.tx_end % cap };
                s.files.pending() == 0 && sock.send_capacity() > queued && at < limit
            };
            if ready {
                s.ev.want_write = false;
                self.events.out.push(Event::Writable(conn));
            }
            !ready
        });
        self.events.writers = writers;
    }
}
