//! The connection loop the servers share: poll, take the stack's readiness
//! events, accept, and step only the connections an event names.
//!
//! A [`Service`] says what one connection does (`open`, `step`); a
//! [`ConnLoop`] owns the connections, indexed by [`TcpConn::index`], and
//! runs the loop. A connection's `step` moves what it can and returns when
//! it would block: on reading (a `Readable` event wakes it), on writing (a
//! write that blocked asks for `Writable`), or on a file transfer still
//! being queued (call [`Stack::tcp_want_writable`] first). Its own timers
//! are the application's: [`ConnLoop::retain`] visits every connection,
//! for a scan every few hundred milliseconds.

use std::time::Instant;

use zcstack::{Event, Stack, TcpConn, TcpListener};

use crate::AppDriver;

/// What a connection's step says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Keep the connection; `true` if bytes moved.
    Keep(bool),
    /// Close it (FIN after what it has queued) and forget it.
    Done,
}

/// What a server does with its connections.
pub trait Service {
    /// The server's state for one connection.
    type Conn;
    /// A connection was accepted; its first step follows at once (bytes
    /// may have arrived before it was accepted).
    fn open(&mut self, stack: &mut Stack<AppDriver>, conn: TcpConn, now: Instant) -> Self::Conn;
    /// Moves what it can for the connection: read until `WouldBlock`,
    /// write until `WouldBlock` (or until the server has nothing more).
    fn step(
        &mut self,
        stack: &mut Stack<AppDriver>,
        conn: TcpConn,
        c: &mut Self::Conn,
        now: Instant,
    ) -> Step;
}

/// The connections of one listener, stepped on the stack's events.
pub struct ConnLoop<C> {
    listener: TcpListener,
    max_conns: usize,
    /// By `TcpConn::index`.
    table: Vec<Option<(TcpConn, C)>>,
    open: usize,
    /// Reused for `Stack::events`.
    events: Vec<Event>,
    /// An `Accept` was left unserved at `max_conns`: accept once a
    /// connection closes.
    backlogged: bool,
    /// Connections accepted since the start.
    pub accepted: u64,
    /// Most connections open at once.
    pub peak: usize,
}

impl<C> ConnLoop<C> {
    /// The loop for `listener`, serving at most `max_conns` connections at
    /// once (more wait in the listen backlog). Create it before the first
    /// poll after `tcp_listen`: it turns the stack's events on.
    pub fn new(
        stack: &mut Stack<AppDriver>,
        listener: TcpListener,
        max_conns: usize,
    ) -> ConnLoop<C> {
        let mut events = Vec::new();
        stack.events(&mut events);
        ConnLoop {
            listener,
            max_conns,
            table: Vec::new(),
            open: 0,
            events,
            backlogged: false,
            accepted: 0,
            peak: 0,
        }
    }

    /// Connections open now.
    pub fn len(&self) -> usize {
        self.open
    }

    /// Whether no connection is open.
    pub fn is_empty(&self) -> bool {
        self.open == 0
    }

    /// One turn: poll the stack (backing off when idle), then accept and
    /// step what the events name. Returns whether anything happened.
    pub fn turn<S: Service<Conn = C>>(
        &mut self,
        stack: &mut Stack<AppDriver>,
        svc: &mut S,
    ) -> bool {
        let mut busy = stack.poll_wait();
        let now = stack.poll_time();
        stack.events(&mut self.events);
        let mut moved = false;
        for i in 0..self.events.len() {
            match self.events[i] {
                Event::Accept(l) if l == self.listener => {
                    moved |= self.accept(stack, svc, now);
                }
                Event::Accept(_) => {}
                Event::Readable(c) | Event::Writable(c) | Event::Closed(c) | Event::TimedOut(c) => {
                    moved |= self.step(stack, svc, c, now);
                }
            }
        }
        if self.backlogged && self.open < self.max_conns {
            moved |= self.accept(stack, svc, now);
        }
        if moved {
            stack.note_activity();
        }
        busy |= moved || !self.events.is_empty();
        busy
    }

    /// Accepts while there is room, stepping each new connection once.
    fn accept<S: Service<Conn = C>>(
        &mut self,
        stack: &mut Stack<AppDriver>,
        svc: &mut S,
        now: Instant,
    ) -> bool {
        let mut moved = false;
        self.backlogged = false;
        while self.open < self.max_conns {
            let Some(conn) = stack.tcp_accept(self.listener) else {
                return moved;
            };
            self.accepted += 1;
            let state = svc.open(stack, conn, now);
            let i = conn.index();
            if self.table.len() <= i {
                self.table.resize_with(i + 1, || None);
            }
            self.table[i] = Some((conn, state));
            self.open += 1;
            self.peak = self.peak.max(self.open);
            moved |= self.step(stack, svc, conn, now);
        }
        self.backlogged = true;
        moved
    }

    /// Steps `conn` if it is one of ours (an event for a closed handle is
    /// stale); closes and forgets it when its step says so.
    fn step<S: Service<Conn = C>>(
        &mut self,
        stack: &mut Stack<AppDriver>,
        svc: &mut S,
        conn: TcpConn,
        now: Instant,
    ) -> bool {
        let Some(Some((c, state))) = self.table.get_mut(conn.index()) else {
            return false;
        };
        if *c != conn {
            return false;
        }
        match svc.step(stack, conn, state, now) {
            Step::Keep(moved) => moved,
            Step::Done => {
                self.remove(stack, conn);
                true
            }
        }
    }

    fn remove(&mut self, stack: &mut Stack<AppDriver>, conn: TcpConn) {
        self.table[conn.index()] = None;
        self.open -= 1;
        // Closed already, or reset by the peer: nothing left to do.
        let _ = stack.tcp_close(conn);
    }

    /// Visits every connection; those `keep` returns false for are closed
    /// and forgotten (after `keep` closed or aborted them itself, if it
    /// wanted to).
    pub fn retain(
        &mut self,
        stack: &mut Stack<AppDriver>,
        mut keep: impl FnMut(&mut Stack<AppDriver>, TcpConn, &mut C) -> bool,
    ) {
        for i in 0..self.table.len() {
            let Some((conn, state)) = &mut self.table[i] else {
                continue;
            };
            let conn = *conn;
            if !keep(stack, conn, state) {
                self.remove(stack, conn);
            }
        }
    }
}
