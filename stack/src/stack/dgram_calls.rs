//! The datagram calls of [`Stack`]: UDP by frame handle, no payload copy
//! (module [`dgram`](crate::dgram)).

use std::io;
use std::net::SocketAddrV4;

use zcstack_driver::Driver;

use super::Stack;
use crate::dgram::{
    self, DEFAULT_QUEUE, DgramSendError, DgramSock, DgramStats, RxDatagram, TxDatagram,
};

impl<D: Driver> Stack<D> {
    /// Binds `port` for datagrams by frame handle, with a receive queue of
    /// [`DEFAULT_QUEUE`] datagrams (at most a quarter of the pool).
    pub fn dgram_bind(&mut self, port: u16) -> io::Result<DgramSock> {
        let cap = DEFAULT_QUEUE
            .min(self.engine.caps().pool.capacity() / 4)
            .max(1);
        self.dgram_bind_with_queue(port, cap)
    }

    /// [`dgram_bind`](Self::dgram_bind) with a queue of `queue` datagrams:
    /// each holds a pool frame until the application drops it; more are
    /// dropped and counted ([`DgramStats::rx_queue_full`]).
    pub fn dgram_bind_with_queue(&mut self, port: u16, queue: usize) -> io::Result<DgramSock> {
        let headroom = self.engine.caps().pool.headroom();
        let taken = self.udp.port_bound(&self.sockets, port);
        self.dgram.bind(port, queue, headroom, taken)
    }

    /// Closes a datagram port: its queued datagrams go back to the pool,
    /// and the handle is invalid afterwards.
    pub fn dgram_close(&mut self, s: DgramSock) {
        self.dgram.close(s);
    }

    /// Largest payload of one datagram on this device: MTU − 28.
    pub fn dgram_max_payload(&self) -> usize {
        dgram::max_payload(&self.engine)
    }

    /// Takes a frame from the pool for one datagram, its payload empty;
    /// `None` when the pool is empty (counted in the pool's allocation
    /// failures).
    pub fn dgram_alloc(&mut self) -> Option<TxDatagram> {
        dgram::alloc(&self.engine)
    }

    /// Appends up to `n` datagrams from the pool to `out`; returns how many.
    pub fn dgram_alloc_burst(&mut self, n: usize, out: &mut Vec<TxDatagram>) -> usize {
        out.reserve(n);
        for i in 0..n {
            match self.dgram_alloc() {
                Some(d) => out.push(d),
                None => return i,
            }
        }
        n
    }

    /// Sends `datagram` from the bound port `s` to `dst`: writes its
    /// headers into the headroom and queues the frame for the driver
    /// (pushed in bursts; [`poll`](Self::poll) pushes the rest). A
    /// datagram for a neighbor whose address ARP has not found yet waits
    /// for it (see the module doc).
    pub fn dgram_send(
        &mut self,
        s: DgramSock,
        datagram: TxDatagram,
        dst: SocketAddrV4,
    ) -> Result<(), DgramSendError> {
        self.dgram.send(&mut self.engine, s, datagram, dst)
    }

    /// Sends datagrams from the front of `batch`, removing those sent (or
    /// left waiting for ARP); the rest stay in `batch`, in order, when the
    /// device is backed up. Returns how many were taken; an error other
    /// than `WouldBlock` is returned only if nothing was taken.
    pub fn dgram_send_burst(
        &mut self,
        s: DgramSock,
        batch: &mut Vec<(TxDatagram, SocketAddrV4)>,
    ) -> io::Result<usize> {
        self.dgram.send_burst(&mut self.engine, s, batch)
    }

    /// The next datagram queued on `s`; `WouldBlock` when there is none.
    pub fn dgram_recv(&mut self, s: DgramSock) -> io::Result<RxDatagram> {
        self.dgram.recv(s)
    }

    /// Moves up to `max` queued datagrams of `s` to `out`; returns how many
    /// (0 when none is queued).
    pub fn dgram_recv_burst(
        &mut self,
        s: DgramSock,
        out: &mut Vec<RxDatagram>,
        max: usize,
    ) -> io::Result<usize> {
        self.dgram.recv_burst(s, out, max)
    }

    /// The datagram path's counters.
    pub fn dgram_stats(&self) -> DgramStats {
        self.dgram.stats()
    }
}
