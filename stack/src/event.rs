//! Readiness events: which connections and listeners a poll changed, so an
//! application with many connections touches only those.
//!
//! After every [`Stack::poll`](crate::Stack::poll) the stack looks at the TCP sockets smoltcp
//! says a segment or a timer changed (smoltcp patch 24,
//! `Interface::take_changed`) and at the connections that asked to be told
//! when they can write, and appends an [`Event`] for each that became
//! ready. [`Stack::events`](crate::Stack::events) hands them over:
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
//! [`Stack::tcp_accept`](crate::Stack::tcp_accept) returned a connection are not reported again: read
//! a connection once when you accept it. An event for a handle that was
//! closed since is stale: calls on it fail with `NotConnected`.
//!
//! The read and query calls ([`Stack::tcp_read`](crate::Stack::tcp_read) and [`Stack::tcp_read_with`](crate::Stack::tcp_read_with)
//! with nothing to read, [`Stack::tcp_state`](crate::Stack::tcp_state), [`Stack::tcp_readable`](crate::Stack::tcp_readable),
//! [`Stack::tcp_send_room`](crate::Stack::tcp_send_room), ...) take smoltcp's sockets by shared reference:
//! a socket taken mutably is visited by every egress pass until it has
//! nothing to send (smoltcp patch 2), so a loop that only looks at idle
//! connections does not wake them.
//!
//! Here: [`Event`] and the stack's event state (what was reported of each
//! connection, under the TCP table's slot numbers; the connections waiting
//! for `Writable`). The calls (`Stack::events`, `Stack::tcp_want_writable`)
//! and the step of each poll that collects events are in `stack/event_calls.rs`.

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

use crate::file::transfer::{FileSender, ring_queue};
use crate::mem::Memory;
use crate::tcp::{TcpConn, TcpListener, TcpState, TcpTable};

/// What became of a connection or listener, from [`Stack::events`](crate::Stack::events).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Event {
    /// A connection finished its handshake on this listener:
    /// [`Stack::tcp_accept`](crate::Stack::tcp_accept) returns it (one event per connection; an
    /// application that accepts all it can on the first may find none on
    /// the next).
    Accept(TcpListener),
    /// Bytes arrived, or the peer finished sending: a read returns bytes,
    /// or `Ok(0)` (end of stream), instead of `WouldBlock`. Reported again
    /// when more arrive after the application read.
    Readable(TcpConn),
    /// The connection can take bytes again: reported once after a write
    /// returned `WouldBlock` or filled the send ring, or after
    /// [`Stack::tcp_want_writable`](crate::Stack::tcp_want_writable), once the ring has room and queued file
    /// transfers are in it (or the connection can no longer send: the
    /// write then says why); after [`Stack::tcp_connect`](crate::Stack::tcp_connect), once
    /// established.
    Writable(TcpConn),
    /// The connection is over: the peer reset it, or both sides finished
    /// (FIN both ways). Reads return what is left, then end of stream or
    /// `ConnectionReset`; close the handle to free it.
    Closed(TcpConn),
    /// The connection was given up because the peer stopped answering
    /// within the timeout ([`Stack::tcp_set_timeout`](crate::Stack::tcp_set_timeout), unanswered
    /// keep-alives). Reads return what is left, then `ConnectionReset`.
    TimedOut(TcpConn),
}

/// What the stack remembers per connection to report each change once.
#[derive(Clone, Copy, Debug, Default)]
struct SlotEvents {
    /// `Readable` was reported and the application has not read since.
    rx_told: bool,
    /// The end of the stream was reported.
    eof_told: bool,
    /// `Closed` or `TimedOut` was reported.
    closed_told: bool,
    /// In the list of connections waiting for `Writable`.
    want_write: bool,
}

/// The stack's event state, with what was reported of each TCP slot
/// (numbered as the TCP table's).
pub(crate) struct Events {
    /// Per TCP slot.
    slots: Vec<SlotEvents>,
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
    fn fresh(self) -> SlotEvents {
        SlotEvents {
            want_write: self.want_write,
            ..SlotEvents::default()
        }
    }
}

impl Events {
    /// Bytes kept per TCP slot (and its entry in the handle map).
    pub const SLOT_BYTES: usize = std::mem::size_of::<SlotEvents>() + std::mem::size_of::<u32>();

    pub fn new() -> Events {
        Events {
            slots: Vec::new(),
            out: Vec::new(),
            changed: Vec::new(),
            slot_of: Vec::new(),
            writers: Vec::new(),
            on: false,
        }
    }

    /// A new TCP slot `slot` (numbered as the TCP table's), using socket `h`.
    pub fn add_slot(&mut self, h: SocketHandle, slot: u32) {
        debug_assert_eq!(slot as usize, self.slots.len());
        self.slots.push(SlotEvents::default());
        let i = h.index();
        if self.slot_of.len() <= i {
            self.slot_of.resize(i + 1, NONE);
        }
        self.slot_of[i] = slot;
    }

    /// Moves the events since the last call into `out` (see `Stack::events`);
    /// from the first call on, events are collected.
    pub fn take(&mut self, out: &mut Vec<Event>) {
        out.clear();
        std::mem::swap(&mut self.out, out);
        self.on = true;
    }

    /// Whether the application asks for events.
    pub fn on(&self) -> bool {
        self.on
    }

    /// `slot` was handed to the application: nothing reported yet.
    pub fn opened(&mut self, slot: u32) {
        let ev = &mut self.slots[slot as usize];
        *ev = ev.fresh();
    }

    /// `slot` asks for one `Writable` once it can take bytes.
    pub fn want_write(&mut self, slot: u32) {
        let ev = &mut self.slots[slot as usize];
        if self.on && !ev.want_write {
            ev.want_write = true;
            self.writers.push(slot);
        }
    }

    /// A read call: the next arrival is reported again.
    pub fn note_read(&mut self, slot: u32) {
        self.slots[slot as usize].rx_told = false;
    }

    /// The scratch list for the sockets smoltcp says changed; give it
    /// back, filled, to [`collect`](Self::collect).
    pub fn changed_buf(&mut self) -> Vec<SocketHandle> {
        std::mem::take(&mut self.changed)
    }

    /// After a poll: events for the sockets smoltcp changed (`changed`)
    /// and for the writers that can write now.
    pub fn collect(
        &mut self,
        mut changed: Vec<SocketHandle>,
        tcp: &TcpTable,
        sockets: &SocketSet<'static>,
        files: &FileSender,
        mem: &Memory,
    ) {
        for h in changed.drain(..) {
            let slot = self.slot_of.get(h.index()).copied().unwrap_or(NONE);
            if slot != NONE {
                self.slot_changed(slot, tcp, sockets);
            }
        }
        self.changed = changed;
        if !self.writers.is_empty() {
            self.check_writers(tcp, sockets, files, mem);
        }
    }

    fn slot_changed(&mut self, slot: u32, tcp: &TcpTable, sockets: &SocketSet<'static>) {
        let sock = tcp.socket(sockets, slot);
        let state = sock.state();
        if let Some(l) = tcp.listener_waiting(slot) {
            if !matches!(
                state,
                TcpState::Listen | TcpState::SynReceived | TcpState::Closed
            ) {
                self.out.push(Event::Accept(l));
            }
            return;
        }
        let Some(conn) = tcp.open_conn(slot) else {
            return;
        };
        let ev = &mut self.slots[slot as usize];
        let over = matches!(state, TcpState::Closed | TcpState::TimeWait);
        if sock.recv_queue() > 0 {
            if !ev.rx_told {
                ev.rx_told = true;
                self.out.push(Event::Readable(conn));
            }
        } else if !ev.eof_told && rx_ended(sock) {
            ev.eof_told = true;
            ev.rx_told = true;
            // A connection that is over says so below, and no more.
            if !over {
                self.out.push(Event::Readable(conn));
            }
        }
        if !ev.closed_told && over {
            ev.closed_told = true;
            self.out.push(if sock.closed_by_timeout() {
                Event::TimedOut(conn)
            } else {
                Event::Closed(conn)
            });
        }
    }

    /// Reports the writers that can write now (or never will) and drops
    /// them and stale ones from the list.
    fn check_writers(
        &mut self,
        tcp: &TcpTable,
        sockets: &SocketSet<'static>,
        files: &FileSender,
        mem: &Memory,
    ) {
        let mut writers = std::mem::take(&mut self.writers);
        let cap = tcp.tx_buffer();
        writers.retain(|&slot| {
            let limit = mem.tx_limit(slot, tcp.len());
            let ev = &mut self.slots[slot as usize];
            let Some(conn) = tcp.open_conn(slot) else {
                ev.want_write = false;
                return false;
            };
            let sock = tcp.socket(sockets, slot);
            let queued = ring_queue(sock);
            let ready = if matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived) {
                false
            } else if !sock.may_send() || files.close_after(slot) {
                true
            } else {
                // Room in the ring, and below a memory budget room for the
                // next byte: the write position (0 in a ring that drained,
                // else where the last write ended) lies below what the
                // budget lets this ring reach. Otherwise a write would
                // find no room, and the event would come back every poll.
                let at = if queued == 0 {
                    0
                } else {
                    files.tx_end(slot) % cap
                };
                files.pending(slot) == 0 && sock.send_capacity() > queued && at < limit
            };
            if ready {
                ev.want_write = false;
                self.out.push(Event::Writable(conn));
            }
            !ready
        });
        self.writers = writers;
    }
}

/// Whether a socket that has nothing buffered will give nothing more: the
/// peer finished, or the connection ended.
fn rx_ended(sock: &tcp::Socket) -> bool {
    !sock.may_recv() && !matches!(sock.state(), TcpState::SynSent | TcpState::SynReceived)
}
