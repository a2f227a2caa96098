//! The memory calls of [`Stack`], and the steps of the poll loop where the
//! memory accounting (module [`mem`](crate::mem)) acts on the TCP table and
//! the interface: admitting or refusing handshakes, withdrawing and
//! restoring the listeners, the idle sweep.

use smoltcp::time::Instant;
use zcstack_driver::Driver;

use super::Stack;
use crate::mem::{Listeners, MemoryStats};

impl<D: Driver> Stack<D> {
    /// Every sweep period: gives back the rings of connections idle since
    /// the last sweep, and withdraws or restores listeners as the budget
    /// allows.
    pub(super) fn mem_sweep(&mut self, now: Instant) {
        let files = &self.files;
        if self
            .mem
            .sweep(now, &mut self.sockets, &self.tcp, |slot| files.busy(slot))
        {
            self.mem_check_listeners();
        }
    }

    /// Withdraws the listeners when a new connection no longer fits the
    /// budget (a SYN then gets RST: "connection refused"), and brings them
    /// back when it fits again.
    pub(super) fn mem_check_listeners(&mut self) {
        if !self.mem.has_budget() {
            return;
        }
        let syns = self.engine.listen_stats().syns;
        let admits = self.mem.admits(self.tcp.len());
        match self.mem.check_listeners(syns, admits) {
            Listeners::Withdraw => {
                self.tcp.withdraw_listeners(&mut self.sockets);
                // A SYN cookie would let a client in without a socket.
                self.engine.cookies_off();
            }
            Listeners::Restore => {
                self.engine.cookies_on();
                self.refill_listeners();
            }
            Listeners::Keep => {}
        }
    }

    /// A socket of a listener started a handshake while the budget has no
    /// room for it: reset it (the client sees its connection reset).
    pub(super) fn mem_refuse(&mut self, slot: u32) {
        self.tcp.abort(&mut self.sockets, slot);
        self.mem.count_refused();
    }

    /// Memory counters.
    pub fn memory_stats(&self) -> MemoryStats {
        self.mem
            .stats(self.tcp.len(), self.engine.listen_stats().syns)
    }

    /// Whether new connections are being refused for lack of memory (see
    /// [`StackBuilder::max_memory`](crate::StackBuilder::max_memory)).
    pub fn memory_at_limit(&self) -> bool {
        self.mem.at_limit()
    }
}
