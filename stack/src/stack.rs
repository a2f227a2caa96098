//! The stack: [`Stack`], which puts the parts together, and its poll loop.
//!
//! A `Stack` owns one of each part and moves nothing between them by
//! itself; each call an application makes (the methods of `Stack`, grouped
//! by part in the child modules below) asks the parts in turn:
//!
//! - the socket set, `sockets` (`SocketStore`, module `file::map`): every
//!   smoltcp socket and the rings TCP sockets borrow;
//! - the poll engine, `engine` (module `engine`): smoltcp's interface over
//!   the device adapter (module `device`), the clock, the idle back-off;
//! - the TCP table, `tcp` (module [`tcp`](crate::tcp)): sockets by slot,
//!   generations, listeners;
//! - the UDP table, `udp` (module [`udp`](crate::udp)), and the datagram
//!   path, `dgram` (module [`dgram`](crate::dgram));
//! - the file sender, `files` (module `file::transfer`): each TCP socket's
//!   send side and its queued file transfers;
//! - the memory accounting, `mem` (module [`mem`](crate::mem));
//! - readiness events, `events` (module [`event`](crate::event)).
//!
//! The per-connection state of the file sender, the memory accounting and
//! the events is kept under the TCP table's slot numbers; a new TCP socket
//! gets an entry in each (`slot_added`).
//!
//! Child modules: `builder` ([`StackBuilder`]), `tcp_calls`, `udp_calls`,
//! `dgram_calls`, `file_calls`, `event_calls`, `mem_calls` (the calls of
//! each part).

mod builder;
mod dgram_calls;
mod event_calls;
mod file_calls;
mod mem_calls;
mod tcp_calls;
mod udp_calls;

use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::Socket as TcpSocket;
use zcstack_driver::Driver;

pub use self::builder::{DEFAULT_RTO_MAX, DEFAULT_RTO_MIN, StackBuilder};
pub use crate::engine::Clock;

use crate::dgram::Dgram;
use crate::engine::Engine;
use crate::event::Events;
use crate::file::SendMode;
use crate::file::SocketStore;
use crate::file::transfer::FileSender;
use crate::mem::Memory;
use crate::stats::{StackStats, TcpRecoveryStats};
use crate::tcp::TcpTable;
use crate::udp::UdpTable;

/// Why a stack could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The configuration is incomplete or inconsistent; the message says what to change.
    #[error("{0}")]
    Config(String),
}

/// Run socket bookkeeping at least this often (in polls) even if smoltcp
/// reported no state change (timers move sockets to CLOSED too).
const MAINTAIN_EVERY: u64 = 64;

/// A TCP/IP stack over one driver. One thread owns and polls it.
///
/// The stack does nothing unless polled: call [`Stack::poll`] (or
/// [`Stack::poll_wait`], which also backs off when idle) in a loop and do the
/// application's work between polls, on the connections
/// [`Stack::events`] names.
///
/// Threads: one thread owns a `Stack` and makes every call on it (each
/// takes `&mut self`; nothing inside locks). It is never `Sync`, and `Send`
/// when its driver is. To use several cores, run several stacks, each over
/// its own driver (an AF_XDP socket per NIC queue, or several TAPs).
pub struct Stack<D: Driver> {
    /// The sockets (they own their rings; see `file::map`). Declared
    /// before the engine, so they are dropped before the driver.
    sockets: SocketStore,
    /// smoltcp's interface over the driver, the clock, the back-off.
    engine: Engine<D>,
    /// Every TCP socket, by slot; listeners.
    tcp: TcpTable,
    udp: UdpTable,
    /// Datagrams by frame handle.
    dgram: Dgram,
    /// The send side of each TCP socket, and file transfers.
    files: FileSender,
    /// Ring memory accounting and the budget.
    mem: Memory,
    /// Readiness events and what they need.
    events: Events,
    app: AppBytes,
}

/// Bytes the application copied in and out of socket buffers, or handed
/// over in pool frames.
#[derive(Default)]
struct AppBytes {
    read: u64,
    write: u64,
    /// Handed over in pool frames (`tcp_send_frame`).
    frame: u64,
}

/// For a new TCP slot: the entries of the parts that keep per-slot state
/// (the TCP table calls it with the slot, its socket and its rings' index).
fn slot_added<'a>(
    files: &'a mut FileSender,
    mem: &'a mut Memory,
    events: &'a mut Events,
) -> impl FnMut(u32, SocketHandle, usize) + 'a {
    move |slot, handle, ring| {
        files.add_slot(ring);
        mem.add_slot();
        events.add_slot(handle, slot);
    }
}

impl<D: Driver> Stack<D> {
    /// The stack's address and prefix.
    pub fn ip(&self) -> (std::net::Ipv4Addr, u8) {
        self.engine.ip()
    }
    /// The stack's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.engine.mac()
    }
    /// The driver underneath.
    pub fn driver(&self) -> &D {
        self.engine.driver()
    }
    /// The driver underneath, mutably (for driver-specific controls).
    pub fn driver_mut(&mut self) -> &mut D {
        self.engine.driver_mut()
    }

    /// How long until smoltcp next needs a poll for its timers (`None`: no timer).
    pub fn poll_delay(&mut self) -> Option<Duration> {
        self.engine.poll_delay(&self.sockets)
    }

    /// One run-to-completion iteration: receive a bounded batch of frames,
    /// let smoltcp process them and emit what the sockets have to send, then
    /// hand the frames to the driver. Returns whether anything happened.
    pub fn poll(&mut self) -> bool {
        if self.files.lease_signalled() {
            self.files.handle_lease_breaks(&mut self.sockets, &self.tcp);
        }
        let filled =
            self.files.has_work() && self.files.pump(&mut self.sockets, &self.tcp, &mut self.mem);
        let fetched = self.engine.prefetch_rx();
        // Datagrams for ports bound with `dgram_bind` go to their queues
        // before smoltcp sees them.
        if self.dgram.active() {
            self.dgram.steer_rx(&mut self.engine);
        }
        // Every poll reads the clock, after taking its frames from the
        // driver (see `Engine::start_poll`).
        let now = self.engine.start_poll();
        let sent_before = self.engine.tcp_sent();
        let changed = self.engine.process(now, &mut self.sockets);
        // ARP replies this poll processed may let waiting datagrams go.
        if self.dgram.has_pending() {
            self.dgram.flush_pending(&mut self.engine, now);
        }
        let sent = self.engine.flush_tx();
        self.engine
            .check_late_tx(now, sent_before, &mut self.sockets);
        let received = fetched - self.engine.port().rx_budget();
        let polls = self.engine.count_poll();
        let dirty = self.tcp.take_dirty();
        if changed || dirty || polls.is_multiple_of(MAINTAIN_EVERY) {
            self.maintain();
        }
        // After `maintain`: an `Accept` finds its connection in the queue.
        self.collect_events();
        self.mem_sweep(now);
        // Datagrams waiting for ARP do not count: the reply is a device
        // input, which ends an idle sleep.
        received > 0 || sent > 0 || changed || filled || self.engine.tx_pending()
    }

    /// [`poll`](Self::poll), then back off if the stack has been idle: spin a
    /// little, then yield, then sleep until smoltcp's next timer or the device
    /// has input (at most 5 ms). Returns whether anything happened.
    pub fn poll_wait(&mut self) -> bool {
        let busy = self.poll();
        self.engine.back_off(busy, &self.sockets);
        busy
    }

    /// The time the last poll used (as `std::time::Instant`; with a manual
    /// clock, the stack's start plus the manual time): an application can
    /// use it for its own timeouts instead of reading the clock again.
    pub fn poll_time(&self) -> StdInstant {
        self.engine.poll_time()
    }

    /// Tells the back-off that the application did work (so the next idle
    /// poll does not sleep).
    pub fn note_activity(&mut self) {
        self.engine.note_activity();
    }

    /// Polls until `done(self)` is true or `timeout` passes; returns whether `done` held.
    pub fn poll_until(
        &mut self,
        timeout: Duration,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> bool {
        let deadline = StdInstant::now() + timeout;
        loop {
            if done(self) {
                return true;
            }
            if StdInstant::now() >= deadline {
                return false;
            }
            self.poll_wait();
        }
    }

    /// Socket bookkeeping: listeners hand off connected sockets and refill,
    /// closed sockets are recycled.
    fn maintain(&mut self) {
        let mut started = self.tcp.maintain_listeners(&mut self.sockets);
        // New handshakes: each is admitted (its receive ring charged) while
        // the budget has room for its rings, else reset.
        for slot in started.drain(..) {
            if self.mem.admits(self.tcp.len()) {
                self.mem.note_io(slot);
            } else {
                self.mem_refuse(slot);
            }
        }
        self.tcp.done_started(started);
        let files = &mut self.files;
        self.tcp.recycle_closed(&mut self.sockets, |slot| {
            files.drop_queue(slot);
        });
        self.mem_check_listeners();
        if self.tcp.listener_shortfall() > 0 {
            self.refill_listeners();
        }
    }

    /// Current counters.
    pub fn stats(&self) -> StackStats {
        let c = self.engine.counters();
        let driver = self.engine.driver();
        let caps = self.engine.caps();
        let files = self.files.counters();
        StackStats {
            driver: driver.stats(),
            pool: caps.pool.stats(),
            gso_pool: caps.gso_pool.as_ref().map(|p| p.stats()),
            tcp_rx_payload: c.tcp_rx_payload,
            tcp_tx_payload: c.tx.tcp_payload,
            app_read_bytes: self.app.read,
            app_write_bytes: self.app.write,
            app_frame_bytes: self.app.frame,
            tx_dropped_no_frame: c.tx.dropped_no_frame,
            tx_dropped_too_big: c.tx.dropped_too_big,
            rx_errors: c.rx_errors,
            rx_malformed: self.engine.rx_malformed(),
            tx_errors: c.tx.errors,
            tx_pushed_back: c.tx.pushed_back,
            polls: self.engine.polls(),
            late_tx_polls: self.engine.late_tx_polls(),
            idle_sleeps: self.engine.idle_sleeps(),
            tcp_sockets: self.tcp.len(),
            tcp_open: self.tcp.open_count(),
            file_bytes_referenced: files.referenced,
            tcp_tx_payload_ref: c.tx.tcp_payload_ref,
            file_bytes_copied: files.copied,
            file_bytes_pread: files.pread,
            lease_breaks: files.lease_breaks,
            file_transfers_aborted: files.aborted,
            tcp: self.tcp_recovery_stats(),
            listen: self.engine.listen_stats().into(),
            memory: self.memory_stats(),
            dgram: self.dgram.stats(),
        }
    }

    /// Loss-recovery counters summed over every TCP socket the stack has
    /// had (sockets are recycled, never dropped, so nothing is lost).
    fn tcp_recovery_stats(&self) -> TcpRecoveryStats {
        let mut t = TcpRecoveryStats::default();
        for handle in self.tcp.handles() {
            let r = self.sockets.get::<TcpSocket>(handle).recovery_stats();
            t.retransmits += r.retransmits;
            t.retransmitted_bytes += r.retransmitted_bytes;
            t.rto_expiries += r.rto_expiries;
            t.fast_recoveries += r.fast_recoveries;
            t.tail_loss_probes += r.tail_loss_probes;
            t.tlp_repairs += r.tlp_repairs;
            t.undos += r.undos;
            t.dsacks += r.dsacks;
            t.reorderings += r.reorderings;
            t.paws_rejects += r.paws_rejects;
        }
        t
    }

    /// The send mode this stack was built with (`Auto` decides per poll).
    pub fn send_mode(&self) -> SendMode {
        self.files.mode()
    }

    /// Drops every socket (without sending FIN or RST) and returns the
    /// driver. Frames still queued in the stack go back to the pool.
    pub fn into_driver(self) -> D {
        self.engine.into_driver()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use zcstack_driver::PoolConfig;
    use zcstack_driver::wire::{self, WireConfig, WireEnd};

    use super::{Clock, Stack};
    use crate::engine::SPIN_POLLS;

    fn stack(clock: Clock) -> Stack<WireEnd> {
        let pool = || PoolConfig::new().frames(64).build().unwrap();
        let (a, _b) = wire::pair(pool(), pool(), WireConfig::default());
        Stack::builder(a)
            .ip("10.200.0.1".parse().unwrap(), 24)
            .clock(clock)
            .build()
            .unwrap()
    }

    /// A manual clock is read on every poll, spinning or not, and
    /// `poll_time` follows it.
    #[test]
    fn manual_clock_is_read_on_every_poll() {
        let us = Arc::new(AtomicI64::new(0));
        let mut s = stack(Clock::Manual(us.clone()));
        s.poll_wait();
        let t0 = s.poll_time();
        for i in 1..SPIN_POLLS as i64 / 2 {
            us.store(i * 1000, Ordering::Relaxed);
            s.poll_wait();
            assert_eq!(s.poll_time() - t0, Duration::from_millis(i as u64));
        }
    }

    /// Every poll reads the real clock, spinning idle or not: frames are
    /// stamped with it, and a stale time makes ACKs look early.
    #[test]
    fn idle_spin_reads_the_clock_on_every_poll() {
        let mut s = stack(Clock::Real);
        for _ in 0..SPIN_POLLS / 2 {
            s.poll_wait();
        }
        let idle = s.engine.idle_polls();
        assert!(idle > 0 && idle < SPIN_POLLS, "not spinning idle: {idle}");
        let t0 = s.poll_time();
        std::thread::sleep(Duration::from_millis(2));
        s.poll_wait();
        assert!(
            s.poll_time() - t0 >= Duration::from_millis(2),
            "a spinning poll kept an old time"
        );
    }
    /// A stack can be built on one thread and moved to the one that polls it.
    #[test]
    fn stack_is_send() {
        fn send<T: Send>() {}
        send::<super::Stack<zcstack_driver::wire::WireEnd>>();
        send::<std::sync::Arc<crate::MappedFile>>();
    }
}
