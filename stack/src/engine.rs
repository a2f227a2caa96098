//! The poll engine: smoltcp's `Interface` over the device adapter
//! ([`Port`], module `device`), the clock, and the idle back-off.
//!
//! It knows nothing of connections: [`Stack::poll`](crate::Stack::poll)
//! calls it in order (take frames from the driver, read the clock, run
//! smoltcp over the socket set it is handed, push frames to the driver),
//! and the tables (TCP, UDP, datagrams, files, memory, events) do their
//! work around those calls. What the interface knows that they need (the
//! TCP context for a connect, a neighbor's MAC address, the listen
//! counters, which sockets changed) they ask through methods here.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::ListenStats as IfaceListenStats;
use smoltcp::iface::{
    Config, Context, Interface, NeighborLookup, PollResult, RouteTableFull, SocketHandle, SocketSet,
};
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};
use zcstack_driver::{Capabilities, Driver};

use crate::device::{Port, PortCounters};

/// Where the stack reads the time.
#[derive(Clone, Debug, Default)]
pub enum Clock {
    /// The monotonic system clock (read once per poll).
    #[default]
    Real,
    /// A clock the caller advances, in microseconds: simulations and
    /// deterministic tests jump over idle time (e.g. smoltcp's 1 s minimum
    /// retransmission timeout) instead of waiting it out.
    Manual(Arc<AtomicI64>),
}

/// Busy-poll this many idle iterations before yielding the CPU.
pub(crate) const SPIN_POLLS: u32 = 200;
/// While yielding idle, a timer due sooner than this is spun for instead.
const NEAR_TIMER: Duration = Duration::from_millis(1);
/// Yield this many idle iterations before sleeping.
const YIELD_POLLS: u32 = 2000;
/// Longest an idle stack sleeps before polling again.
const MAX_IDLE_SLEEP: Duration = Duration::from_millis(5);
/// A poll whose TCP data left the device this much later than the poll's
/// clock reading tells smoltcp (patch 25), so the tail loss probes it armed
/// do not fire before the peer could answer.
const LATE_TX: Duration = Duration::from_millis(1);

/// smoltcp's interface over the device adapter, and the poll loop's clock
/// and counters.
pub(crate) struct Engine<D: Driver> {
    iface: Interface,
    port: Port<D>,
    epoch: StdInstant,
    clock: Clock,
    cidr: Ipv4Cidr,
    mac: EthernetAddress,
    /// The SYN cookie key (`None`: cookies off), kept while the memory
    /// budget turns cookies off.
    syn_cookie_key: Option<u128>,
    /// Frames smoltcp may take in one poll.
    rx_budget: usize,
    polls: u64,
    /// Polls whose TCP data left at least `LATE_TX` after their clock reading.
    late_tx_polls: u64,
    /// The time the last poll used.
    last_now: Instant,
    idle: u32,
    idle_sleeps: u64,
}

impl<D: Driver> Engine<D> {
    /// The interface at `cidr` with `mac` over `driver` (whose capabilities,
    /// read once, come with it), moving `burst` frames per driver call;
    /// `seed` for initial sequence numbers and ephemeral ports.
    pub fn new(
        (driver, caps): (D, Capabilities),
        burst: usize,
        mac: EthernetAddress,
        cidr: Ipv4Cidr,
        seed: u64,
        clock: Clock,
        syn_cookie_key: Option<u128>,
    ) -> Engine<D> {
        let mut port = Port::new(driver, caps, burst);
        let epoch = StdInstant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut port, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (≥ 1): the first push cannot fail.
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        });
        iface.set_syn_cookies(syn_cookie_key);
        Engine {
            iface,
            port,
            epoch,
            clock,
            cidr,
            mac,
            syn_cookie_key,
            rx_budget: burst * 8,
            polls: 0,
            late_tx_polls: 0,
            last_now: Instant::ZERO,
            idle: 0,
            idle_sleeps: 0,
        }
    }

    /// Routes everything off the subnet to `gw`.
    pub fn set_gateway(&mut self, gw: Ipv4Addr) -> Result<(), RouteTableFull> {
        self.iface
            .routes_mut()
            .add_default_ipv4_route(gw)
            .map(|_| ())
    }

    /// The address and prefix.
    pub fn ip(&self) -> (Ipv4Addr, u8) {
        (self.cidr.address(), self.cidr.prefix_len())
    }
    /// The MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac.0
    }
    pub fn driver(&self) -> &D {
        self.port.driver()
    }
    /// The driver's capabilities, as read when the stack was built.
    pub fn caps(&self) -> &Capabilities {
        self.port.driver_caps()
    }
    pub fn driver_mut(&mut self) -> &mut D {
        self.port.driver_mut()
    }
    pub fn into_driver(self) -> D {
        self.port.into_driver()
    }

    pub fn now(&self) -> Instant {
        match &self.clock {
            Clock::Real => Instant::from_micros(self.epoch.elapsed().as_micros() as i64),
            Clock::Manual(us) => Instant::from_micros(us.load(Ordering::Relaxed)),
        }
    }

    /// The time the last poll used.
    pub fn last_now(&self) -> Instant {
        self.last_now
    }

    /// The time the last poll used, as `std::time::Instant`.
    pub fn poll_time(&self) -> StdInstant {
        self.epoch + Duration::from_micros(self.last_now.total_micros().max(0) as u64)
    }

    /// How long until smoltcp next needs a poll for its timers (`None`: no timer).
    pub fn poll_delay(&mut self, sockets: &SocketSet<'_>) -> Option<Duration> {
        let now = self.now();
        self.iface
            .poll_delay(now, sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    /// Takes this poll's received frames from the driver; returns how many
    /// smoltcp may take (see `Port::prefetch_rx`).
    pub fn prefetch_rx(&mut self) -> usize {
        self.port.prefetch_rx(self.rx_budget)
    }

    /// The device adapter: frames received and queued for sending (the
    /// datagram path steers and sends its own).
    pub fn port_mut(&mut self) -> &mut Port<D> {
        &mut self.port
    }

    /// The device adapter.
    pub fn port(&self) -> &Port<D> {
        &self.port
    }

    /// Reads the clock for this poll, after its frames were taken from the
    /// driver: the frames are stamped with it, and RTT samples (RACK's
    /// reordering window, BBR's model) come from those stamps. A time
    /// kept from an earlier idle poll, or read before a late `rx_burst`,
    /// made ACKs look milliseconds early whenever the thread had been
    /// descheduled in between (5.2 ms, then 3.3 ms, measured on a 10.1 ms
    /// path on a loaded machine).
    pub fn start_poll(&mut self) -> Instant {
        let now = self.now();
        self.last_now = now;
        now
    }

    /// TCP payload bytes sent so far, copied or by reference.
    pub fn tcp_sent(&self) -> u64 {
        let tx = &self.port.counters().tx;
        tx.tcp_payload + tx.tcp_payload_ref
    }

    /// smoltcp's ingress and egress over `sockets`; returns whether a
    /// socket's state changed.
    pub fn process(&mut self, now: Instant, sockets: &mut SocketSet<'_>) -> bool {
        self.iface.poll(now, &mut self.port, sockets) == PollResult::SocketStateChanged
    }

    /// Pushes the frames smoltcp filled to the driver; returns how many it took.
    pub fn flush_tx(&mut self) -> usize {
        self.port.flush_tx()
    }

    /// After a poll that sent TCP data (`sent_before` is [`tcp_sent`](Self::tcp_sent)
    /// before it): the thread may have lost its CPU between the clock reading
    /// and the device taking the frames (a time slice on a busy machine): the
    /// segments left late, and the probe timers they armed must count from
    /// when they did. Measured: without this, 8-18% of 64 KiB responses on a
    /// loaded machine drew a needless probe. One clock read per poll that
    /// sent data.
    pub fn check_late_tx(&mut self, now: Instant, sent_before: u64, sockets: &mut SocketSet<'_>) {
        if self.tcp_sent() != sent_before {
            let late = self.now() - now;
            if late > smoltcp::time::Duration::from_micros(LATE_TX.as_micros() as u64) {
                self.late_tx_polls += 1;
                self.iface.transmitted_late(sockets, now, late);
            }
        }
    }

    /// Counts a poll; returns how many there were.
    pub fn count_poll(&mut self) -> u64 {
        self.polls += 1;
        self.polls
    }

    pub fn polls(&self) -> u64 {
        self.polls
    }

    /// Whether frames are waiting to be sent.
    pub fn tx_pending(&self) -> bool {
        self.port.tx_pending()
    }

    /// After a [`poll`](crate::Stack::poll) that did nothing: spin a
    /// little, then yield, then sleep until smoltcp's next timer or the
    /// device has input (at most 5 ms). A busy poll resets the back-off.
    pub fn back_off(&mut self, busy: bool, sockets: &SocketSet<'_>) {
        if busy {
            self.idle = 0;
            return;
        }
        self.idle = self.idle.saturating_add(1);
        if self.idle < SPIN_POLLS {
            std::hint::spin_loop();
        } else if self.idle < YIELD_POLLS {
            // A timer due within a millisecond (a paced segment, mostly) is
            // waited for here: a yield on a busy machine can give the CPU
            // away for a whole time slice, and a paced sender that comes
            // late sends less than its rate.
            if self.poll_delay(sockets).is_some_and(|d| d < NEAR_TIMER) {
                std::hint::spin_loop();
                self.idle = self.idle.min(YIELD_POLLS - 1);
            } else {
                std::thread::yield_now();
            }
        } else {
            let delay = self
                .poll_delay(sockets)
                .unwrap_or(MAX_IDLE_SLEEP)
                .min(MAX_IDLE_SLEEP);
            if !delay.is_zero() {
                self.idle_sleeps += 1;
                // An error here only means we poll again sooner.
                let _ = self.port.driver_mut().wait(delay);
            }
        }
    }

    /// The application did work: the next idle poll does not sleep.
    pub fn note_activity(&mut self) {
        self.idle = 0;
    }

    /// Idle polls in a row so far.
    #[cfg(test)]
    pub fn idle_polls(&self) -> u32 {
        self.idle
    }

    /// What a TCP socket needs of the interface to connect.
    pub fn context(&mut self) -> &mut Context {
        self.iface.context()
    }

    /// The Ethernet address of `ip`'s next hop (smoltcp's neighbor cache,
    /// patch 23), asking with ARP on a miss.
    pub fn neighbor_for(&mut self, now: Instant, ip: Ipv4Addr) -> NeighborLookup {
        self.iface.neighbor_for(now, &mut self.port, ip)
    }

    /// Moves the handles of the sockets a segment or timer changed (patch 24) into `out`.
    pub fn take_changed(&mut self, sockets: &mut SocketSet<'_>, out: &mut Vec<SocketHandle>) {
        self.iface.take_changed(sockets, out);
    }

    /// The listening ports' counters (SYNs, cookies, half-open connections).
    pub fn listen_stats(&self) -> IfaceListenStats {
        self.iface.listen_stats()
    }

    /// Stops answering SYNs with cookies (the memory budget is spent).
    pub fn cookies_off(&mut self) {
        self.iface.set_syn_cookies(None);
    }

    /// Answers SYNs with cookies again, if the stack was built with them.
    pub fn cookies_on(&mut self) {
        self.iface.set_syn_cookies(self.syn_cookie_key);
    }

    /// Received frames smoltcp dropped as malformed (patch 17).
    pub fn rx_malformed(&self) -> u64 {
        self.iface.rx_malformed()
    }

    /// The device adapter's counters.
    pub fn counters(&self) -> &PortCounters {
        self.port.counters()
    }

    pub fn late_tx_polls(&self) -> u64 {
        self.late_tx_polls
    }

    pub fn idle_sleeps(&self) -> u64 {
        self.idle_sleeps
    }
}
