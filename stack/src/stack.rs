//! The stack: a smoltcp `Interface` over a `Port` (the device adapter), its sockets, and the poll loop.

use std::io;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant as StdInstant};

use smoltcp::iface::{Config, Interface, PollResult, SocketHandle};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpCidr, Ipv4Cidr};
use zcstack_driver::Driver;

use crate::device::Port;
use crate::dgram::Dgram;
use crate::event::Events;
use crate::file::transfer::{FileCounters, SlotFiles};
use crate::file::{PAGE, SendMode, SocketStore};
use crate::mem::Memory;
use crate::stats::{StackStats, TcpRecoveryStats};
use crate::tcp::{Congestion, Listener, TcpSlot};
use crate::udp::UdpSlot;

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

/// Why a stack could not be built.
#[derive(Debug, thiserror::Error)]
pub enum StackError {
    /// The configuration is incomplete or inconsistent; the message says what to change.
    #[error("{0}")]
    Config(String),
}

/// Busy-poll this many idle iterations before yielding the CPU.
const SPIN_POLLS: u32 = 200;
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
/// Run socket bookkeeping at least this often (in polls) even if smoltcp
/// reported no state change (timers move sockets to CLOSED too).
const MAINTAIN_EVERY: u64 = 64;

/// Builder for a [`Stack`]; `build()` validates everything.
#[must_use]
pub struct StackBuilder<D: Driver> {
    driver: D,
    ip: Option<(Ipv4Addr, u8)>,
    gateway: Option<Ipv4Addr>,
    mac: Option<[u8; 6]>,
    tcp_rx_buffer: usize,
    tcp_tx_buffer: usize,
    burst: usize,
    seed: Option<u64>,
    clock: Clock,
    send_mode: SendMode,
    rto_min: Duration,
    rto_max: Duration,
    timestamps: bool,
    syn_cookies: bool,
    synack_retries: u8,
    max_memory: Option<usize>,
    congestion: Congestion,
}

/// Linux's minimum retransmission timeout (`TCP_RTO_MIN`); RFC 6298's 1 s
/// costs a whole second per timeout on paths with millisecond RTTs.
pub const DEFAULT_RTO_MIN: Duration = Duration::from_millis(200);
/// RFC 6298 (2.5): an upper bound of at least 60 s.
pub const DEFAULT_RTO_MAX: Duration = Duration::from_secs(60);

impl<D: Driver> StackBuilder<D> {
    /// Bounds of TCP's retransmission timeout (default 200 ms to 60 s).
    /// Within them the timeout follows the measured RTT (RFC 6298).
    pub fn rto_bounds(mut self, min: Duration, max: Duration) -> Self {
        self.rto_min = min;
        self.rto_max = max;
        self
    }
    /// SYN cookies (RFC 4987, default on): a SYN for a listener whose
    /// sockets are all busy — a SYN flood fills them with half-open
    /// connections — is answered without a socket, and the connection is
    /// created when the client's ACK returns a valid cookie. The key comes
    /// from the operating system's random source.
    pub fn syn_cookies(mut self, on: bool) -> Self {
        self.syn_cookies = on;
        self
    }
    /// SYN-ACK retransmissions before a half-open connection (a SYN nobody
    /// completes, e.g. from a spoofed address) gives its socket back to the
    /// listener (default 3: 1 + 2 + 4 + 8 = 15 s; Linux's default is 5).
    pub fn synack_retries(mut self, n: u8) -> Self {
        self.synack_retries = n;
        self
    }
    /// TCP congestion control for every connection (default Cubic).
    pub fn congestion(mut self, cc: Congestion) -> Self {
        self.congestion = cc;
        self
    }
    /// TCP timestamps (RFC 7323): offered on every connection and used when
    /// the peer agrees (default on). They give RTT samples for retransmitted
    /// segments, tell spurious retransmissions (Eifel), and protect against
    /// old duplicates (PAWS), for 12 bytes of header per segment.
    pub fn timestamps(mut self, on: bool) -> Self {
        self.timestamps = on;
        self
    }
    /// How [`Stack::tcp_send_file`] gets file bytes into the sockets
    /// (default [`SendMode::Auto`]: by reference).
    pub fn send_mode(mut self, m: SendMode) -> Self {
        self.send_mode = m;
        self
    }
    /// The stack's IPv4 address and prefix length (required).
    pub fn ip(mut self, addr: Ipv4Addr, prefix: u8) -> Self {
        self.ip = Some((addr, prefix));
        self
    }
    /// Default gateway (must be inside the stack's subnet).
    pub fn gateway(mut self, gw: Option<Ipv4Addr>) -> Self {
        self.gateway = gw;
        self
    }
    /// MAC address; default `02:5a:` followed by the IPv4 address.
    pub fn mac(mut self, mac: Option<[u8; 6]>) -> Self {
        self.mac = mac;
        self
    }
    /// Receive and send ring sizes of each TCP socket (default 256 KiB
    /// each; the send ring is rounded up to whole 4 KiB pages).
    ///
    /// The send ring bounds the bytes in flight: 256 KiB fill at most
    /// 200 Mbit/s over a 10 ms path, and loss recovery keeps SACKed bytes in
    /// the ring until the hole is filled. A server of large files on real
    /// paths wants 4 MiB (zc-httpd's default, Linux's largest automatic
    /// send buffer); ring memory is mapped lazily, so a connection only
    /// holds the pages its traffic touched, and gives them back once idle
    /// (module [`mem`](crate::mem)). The receive ring is the window a
    /// peer may send in one burst, and a burst lands in driver frames before
    /// the stack copies it out: raise it together with the pool (a 4 MiB
    /// window let a kernel peer's burst of 64 KiB GSO packets empty a
    /// generic-mode AF_XDP fill ring).
    pub fn tcp_buffers(mut self, rx: usize, tx: usize) -> Self {
        self.tcp_rx_buffer = rx;
        self.tcp_tx_buffer = tx;
        self
    }
    /// A memory budget in bytes for the buffer pool, the TCP sockets and
    /// the ring pages they hold (default: none). A new connection is
    /// admitted only while both its rings fit whole in what is left;
    /// otherwise listeners stop listening (SYNs get RST, so clients see
    /// "connection refused" at once), [`Stack::tcp_connect`] fails with
    /// `OutOfMemory`, and [`MemoryStats::refused`](crate::MemoryStats)
    /// counts them, until connections close or go idle (an idle connection
    /// gives its ring pages back). Existing connections are never cut
    /// short; their send rings grow only into memory the budget has left.
    pub fn max_memory(mut self, bytes: Option<usize>) -> Self {
        self.max_memory = bytes;
        self
    }
    /// Frames moved per driver call (default 32).
    pub fn burst(mut self, frames: usize) -> Self {
        self.burst = frames;
        self
    }
    /// Seed for initial sequence numbers and ephemeral ports (default: from the clock).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// Where the stack reads the time (default: the system clock).
    pub fn clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    /// Validates the configuration and creates the stack.
    pub fn build(self) -> Result<Stack<D>, StackError> {
        let (addr, prefix) = self.ip.ok_or_else(|| {
            StackError::Config("the stack needs an IPv4 address (e.g. 10.200.0.2/24)".into())
        })?;
        if prefix > 32 {
            return Err(StackError::Config(format!(
                "prefix length /{prefix} is more than 32"
            )));
        }
        if addr.is_unspecified() || addr.is_multicast() || addr.is_broadcast() {
            return Err(StackError::Config(format!(
                "{addr} cannot be a host address"
            )));
        }
        let cidr = Ipv4Cidr::new(addr, prefix);
        if let Some(gw) = self.gateway
            && !cidr.contains_addr(&gw)
        {
            return Err(StackError::Config(format!(
                "gateway {gw} is not inside {cidr}"
            )));
        }
        let o = addr.octets();
        // What the device is and does, read once.
        let caps = self.driver.capabilities();
        // The device's own MAC if it has one (a real NIC filters on it).
        let mac = self
            .mac
            .or(caps.mac)
            .unwrap_or([0x02, 0x5a, o[0], o[1], o[2], o[3]]);
        let mac = EthernetAddress(mac);
        if !mac.is_unicast() {
            return Err(StackError::Config(format!(
                "MAC {mac} is not a unicast address"
            )));
        }
        if self.burst == 0 || self.burst > 1024 {
            return Err(StackError::Config(format!(
                "burst {} must be 1 to 1024",
                self.burst
            )));
        }
        if self.rto_min.is_zero() || self.rto_max < self.rto_min {
            return Err(StackError::Config(format!(
                "retransmission timeout bounds {:?}..{:?}: the minimum must be above 0 and at most the maximum",
                self.rto_min, self.rto_max
            )));
        }
        for (what, n) in [
            ("receive", self.tcp_rx_buffer),
            ("send", self.tcp_tx_buffer),
        ] {
            if !(1024..=(1 << 30)).contains(&n) {
                return Err(StackError::Config(format!(
                    "TCP {what} buffer of {n} bytes must be 1 KiB to 1 GiB"
                )));
            }
        }
        let send_mode = self.send_mode;
        let tx_ring = self.tcp_tx_buffer.next_multiple_of(PAGE);
        let pool = &caps.pool;
        let pool_bytes = pool.capacity() * pool.frame_size()
            + caps
                .gso_pool
                .as_ref()
                .map_or(0, |p| p.capacity() * p.frame_size());
        let mem = Memory::new(self.max_memory, pool_bytes, self.tcp_rx_buffer, tx_ring);
        if let Some(b) = self.max_memory {
            let need = pool_bytes + mem.one_connection();
            if b < need {
                return Err(StackError::Config(format!(
                    "a memory budget of {} KiB is below what the stack needs for one connection: {} KiB ({} KiB of buffer pool, {} KiB of TCP rings, {} bytes of socket structures): raise it or use smaller rings or pool",
                    b / 1024,
                    need / 1024,
                    pool_bytes / 1024,
                    (mem.rx_ring + mem.tx_ring) / 1024,
                    mem.per_socket
                )));
            }
        }
        let seed = self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        let mut port = Port::new(self.driver, caps, self.burst);
        let epoch = StdInstant::now();
        let mut config = Config::new(HardwareAddress::Ethernet(mac));
        config.random_seed = seed;
        let mut iface = Interface::new(config, &mut port, Instant::ZERO);
        iface.update_ip_addrs(|addrs| {
            // Capacity is IFACE_MAX_ADDR_COUNT (≥ 1): the first push cannot fail.
            let _ = addrs.push(IpCidr::Ipv4(cidr));
        });
        let syn_cookie_key = self.syn_cookies.then(random_u128);
        iface.set_syn_cookies(syn_cookie_key);
        if let Some(gw) = self.gateway {
            iface
                .routes_mut()
                .add_default_ipv4_route(gw)
                .map_err(|_| StackError::Config("route table full".into()))?;
        }
        Ok(Stack {
            iface,
            sockets: SocketStore::new(),
            port,
            epoch,
            clock: self.clock,
            cidr,
            mac,
            tcp_rx_buffer: self.tcp_rx_buffer,
            tcp_tx_buffer: self.tcp_tx_buffer.next_multiple_of(PAGE),
            send_mode,
            file_slots: Vec::new(),
            file_counters: FileCounters::default(),
            lease_seen: crate::file::lease_signals(),
            rx_budget: self.burst * 8,
            tcp: Vec::new(),
            tcp_free: Vec::new(),
            closing: Vec::new(),
            listeners: Vec::new(),
            udp: Vec::new(),
            next_ephemeral: 49152 + (seed % 16384) as u16,
            polls: 0,
            late_tx_polls: 0,
            last_now: Instant::ZERO,
            dgram: Dgram::default(),
            idle: 0,
            idle_sleeps: 0,
            dirty: false,
            app_read_bytes: 0,
            app_write_bytes: 0,
            app_frame_bytes: 0,
            rto_min: smoltcp::time::Duration::from_micros(self.rto_min.as_micros() as u64),
            rto_max: smoltcp::time::Duration::from_micros(self.rto_max.as_micros() as u64),
            timestamps: self.timestamps,
            synack_retries: self.synack_retries,
            congestion: self.congestion,
            mem,
            started: Vec::new(),
            syn_cookie_key,
            events: Events::new(),
        })
    }
}

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
    pub(crate) iface: Interface,
    /// The sockets (they own their rings; see `file::map`).
    pub(crate) sockets: SocketStore,
    pub(crate) port: Port<D>,
    epoch: StdInstant,
    clock: Clock,
    cidr: Ipv4Cidr,
    mac: EthernetAddress,
    pub(crate) tcp_rx_buffer: usize,
    pub(crate) tcp_tx_buffer: usize,
    /// As built.
    pub(crate) send_mode: SendMode,
    /// Slots with queued file transfers or file references.
    pub(crate) file_slots: Vec<u32>,
    pub(crate) file_counters: FileCounters,
    /// Lease-break signal count last handled.
    lease_seen: u64,
    rx_budget: usize,
    /// Every TCP socket the stack created, by slot number.
    pub(crate) tcp: Vec<TcpSlot>,
    /// Slots whose socket is CLOSED and can be reused.
    pub(crate) tcp_free: Vec<u32>,
    /// Slots the application closed, waiting for the socket to reach CLOSED.
    pub(crate) closing: Vec<u32>,
    pub(crate) listeners: Vec<Option<Listener>>,
    pub(crate) udp: Vec<UdpSlot>,
    pub(crate) next_ephemeral: u16,
    pub(crate) polls: u64,
    /// Polls whose TCP data left at least `LATE_TX` after their clock reading.
    late_tx_polls: u64,
    /// The time the last poll used.
    pub(crate) last_now: Instant,
    /// Datagrams by frame handle (module `dgram`).
    pub(crate) dgram: Dgram,
    idle: u32,
    idle_sleeps: u64,
    /// Sockets changed hands outside `poll`: run bookkeeping on the next poll.
    pub(crate) dirty: bool,
    pub(crate) app_read_bytes: u64,
    pub(crate) app_write_bytes: u64,
    /// Bytes the application handed over in pool frames (`tcp_send_frame`).
    pub(crate) app_frame_bytes: u64,
    /// TCP settings every socket gets.
    rto_min: smoltcp::time::Duration,
    rto_max: smoltcp::time::Duration,
    timestamps: bool,
    synack_retries: u8,
    congestion: Congestion,
    /// Ring memory accounting and the budget (module `mem`).
    pub(crate) mem: Memory,
    /// Scratch: sockets that left LISTEN in this `maintain`.
    started: Vec<u32>,
    /// The SYN cookie key (`None`: cookies off), kept while the memory
    /// budget turns cookies off.
    pub(crate) syn_cookie_key: Option<u128>,
    /// Readiness events and what they need (module `event`).
    pub(crate) events: Events,
}

/// 128 bits from the operating system's random source (std's `RandomState`
/// keys its hashers from it).
fn random_u128() -> u128 {
    use std::hash::BuildHasher;
    let a = std::hash::RandomState::new().hash_one(std::process::id());
    let b = std::hash::RandomState::new().hash_one(a);
    (u128::from(a) << 64) | u128::from(b)
}

impl<D: Driver> Stack<D> {
    /// Starts building a stack over `driver`.
    pub fn builder(driver: D) -> StackBuilder<D> {
        StackBuilder {
            driver,
            ip: None,
            gateway: None,
            mac: None,
            tcp_rx_buffer: 256 * 1024,
            tcp_tx_buffer: 256 * 1024,
            burst: 32,
            seed: None,
            clock: Clock::Real,
            send_mode: SendMode::Auto,
            rto_min: DEFAULT_RTO_MIN,
            rto_max: DEFAULT_RTO_MAX,
            timestamps: true,
            syn_cookies: true,
            synack_retries: 3,
            max_memory: None,
            congestion: Congestion::Cubic,
        }
    }

    /// The stack's address and prefix.
    pub fn ip(&self) -> (Ipv4Addr, u8) {
        (self.cidr.address(), self.cidr.prefix_len())
    }
    /// The stack's MAC address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac.0
    }
    /// The driver underneath.
    pub fn driver(&self) -> &D {
        &self.port.driver
    }
    /// The driver underneath, mutably (for driver-specific controls).
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.port.driver
    }

    pub(crate) fn now(&self) -> Instant {
        match &self.clock {
            Clock::Real => Instant::from_micros(self.epoch.elapsed().as_micros() as i64),
            Clock::Manual(us) => Instant::from_micros(us.load(Ordering::Relaxed)),
        }
    }

    /// How long until smoltcp next needs a poll for its timers (`None`: no timer).
    pub fn poll_delay(&mut self) -> Option<Duration> {
        let now = self.now();
        self.iface
            .poll_delay(now, &self.sockets)
            .map(|d| Duration::from_micros(d.total_micros()))
    }

    /// One run-to-completion iteration: receive a bounded batch of frames,
    /// let smoltcp process them and emit what the sockets have to send, then
    /// hand the frames to the driver. Returns whether anything happened.
    pub fn poll(&mut self) -> bool {
        let signals = crate::file::lease_signals();
        if signals != self.lease_seen {
            self.lease_seen = signals;
            self.handle_lease_breaks();
        }
        let filled = !self.file_slots.is_empty() && self.pump_files();
        let fetched = self.port.prefetch_rx(self.rx_budget);
        // Datagrams for ports bound with `dgram_bind` go to their queues
        // before smoltcp sees them.
        if self.dgram.active() {
            self.dgram_steer();
        }
        // Every poll reads the clock, after taking its frames from the
        // driver: the frames are stamped with it, and RTT samples (RACK's
        // reordering window, BBR's model) come from those stamps. A time
        // kept from an earlier idle poll, or read before a late `rx_burst`,
        // made ACKs look milliseconds early whenever the thread had been
        // descheduled in between (5.2 ms, then 3.3 ms, measured on a 10.1 ms
        // path on a loaded machine).
        let now = self.now();
        self.last_now = now;
        let tx = &self.port.counters.tx;
        let payload_before = tx.tcp_payload + tx.tcp_payload_ref;
        let res = self.iface.poll(now, &mut self.port, &mut self.sockets);
        // ARP replies this poll processed may let waiting datagrams go.
        if self.dgram.has_pending() {
            self.dgram_flush_pending(now);
        }
        let sent = self.port.flush_tx();
        let tx = &self.port.counters.tx;
        if tx.tcp_payload + tx.tcp_payload_ref != payload_before {
            // The thread may have lost its CPU between the clock reading
            // and the device taking the frames (a time slice on a busy
            // machine): the segments left late, and the probe timers they
            // armed must count from when they did. Measured: without this,
            // 8-18% of 64 KiB responses on a loaded machine drew a needless
            // probe. One clock read per poll that sent data.
            let late = self.now() - now;
            if late > smoltcp::time::Duration::from_micros(LATE_TX.as_micros() as u64) {
                self.late_tx_polls += 1;
                self.iface.transmitted_late(&mut self.sockets, now, late);
            }
        }
        let received = fetched - self.port.rx_budget;
        self.polls += 1;
        let changed = res == PollResult::SocketStateChanged;
        if changed || self.dirty || self.polls.is_multiple_of(MAINTAIN_EVERY) {
            self.dirty = false;
            self.maintain();
        }
        // After `maintain`: an `Accept` finds its connection in the queue.
        self.collect_events();
        self.mem_sweep(now);
        // Datagrams waiting for ARP do not count: the reply is a device
        // input, which ends an idle sleep.
        received > 0 || sent > 0 || changed || filled || self.port.tx_pending()
    }

    /// [`poll`](Self::poll), then back off if the stack has been idle: spin a
    /// little, then yield, then sleep until smoltcp's next timer or the device
    /// has input (at most 5 ms). Returns whether anything happened.
    pub fn poll_wait(&mut self) -> bool {
        let busy = self.poll();
        if busy {
            self.idle = 0;
            return true;
        }
        self.idle = self.idle.saturating_add(1);
        if self.idle < SPIN_POLLS {
            std::hint::spin_loop();
        } else if self.idle < YIELD_POLLS {
            // A timer due within a millisecond (a paced segment, mostly) is
            // waited for here: a yield on a busy machine can give the CPU
            // away for a whole time slice, and a paced sender that comes
            // late sends less than its rate.
            if self.poll_delay().is_some_and(|d| d < NEAR_TIMER) {
                std::hint::spin_loop();
                self.idle = self.idle.min(YIELD_POLLS - 1);
            } else {
                std::thread::yield_now();
            }
        } else {
            let delay = self
                .poll_delay()
                .unwrap_or(MAX_IDLE_SLEEP)
                .min(MAX_IDLE_SLEEP);
            if !delay.is_zero() {
                self.idle_sleeps += 1;
                // An error here only means we poll again sooner.
                let _ = self.port.driver.wait(delay);
            }
        }
        false
    }

    /// The time the last poll used (as `std::time::Instant`; with a manual
    /// clock, the stack's start plus the manual time): an application can
    /// use it for its own timeouts instead of reading the clock again.
    pub fn poll_time(&self) -> StdInstant {
        self.epoch + Duration::from_micros(self.last_now.total_micros().max(0) as u64)
    }

    /// Tells the back-off that the application did work (so the next idle
    /// poll does not sleep).
    pub fn note_activity(&mut self) {
        self.idle = 0;
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
        let sockets = &mut self.sockets;
        let tcp = &mut self.tcp;
        let mut started = std::mem::take(&mut self.started);
        for listener in self.listeners.iter_mut().flatten() {
            listener.maintain(tcp, sockets, &mut self.tcp_free, &mut started);
        }
        // New handshakes: each is admitted (its receive ring charged) while
        // the budget has room for its rings, else reset.
        for slot in started.drain(..) {
            if self.mem_admits() {
                self.mem_note_io(slot);
            } else {
                self.mem_refuse(slot);
            }
        }
        self.started = started;
        let sockets = &mut self.sockets;
        let tcp = &mut self.tcp;
        let free = &mut self.tcp_free;
        self.closing.retain(|&slot| {
            let s = &mut tcp[slot as usize];
            let sock = sockets.get_mut::<tcp::Socket>(s.handle);
            if sock.state() == tcp::State::Closed {
                // References it still holds are released (their files' leases too).
                sock.release_send_buffer_if_closed();
                s.files.drop_queue();
                s.release();
                free.push(slot);
                false
            } else {
                true
            }
        });
        self.mem_check_listeners();
        let need = self
            .listeners
            .iter()
            .flatten()
            .map(|l| l.shortfall())
            .sum::<usize>();
        if need > 0 {
            self.refill_listeners();
        }
    }

    /// Gets a CLOSED socket: a recycled one, or a new one with fresh buffers.
    pub(crate) fn take_socket(&mut self) -> io::Result<u32> {
        if let Some(slot) = self.tcp_free.pop() {
            // What the last connection set on it goes back to the defaults.
            self.configure(self.tcp[slot as usize].handle);
            return Ok(slot);
        }
        let (handle, ring) = self
            .sockets
            .add_tcp(self.tcp_rx_buffer, self.tcp_tx_buffer)?;
        self.configure(handle);
        self.tcp.push(TcpSlot::new(handle, SlotFiles::new(ring)));
        let slot = (self.tcp.len() - 1) as u32;
        self.events.map(handle, slot);
        Ok(slot)
    }

    /// The settings every connection starts with.
    fn configure(&mut self, h: SocketHandle) {
        let sock = self.sockets.get_mut::<tcp::Socket>(h);
        sock.set_congestion_control(self.congestion.smoltcp());
        sock.set_nagle_enabled(false);
        sock.set_ack_delay(None);
        sock.set_rto_bounds(self.rto_min, self.rto_max);
        sock.set_timestamp_clock(self.timestamps);
        sock.set_synack_retries(Some(self.synack_retries));
        sock.set_timeout(None);
        sock.set_keep_alive(None);
    }

    pub(crate) fn handle(&self, slot: u32) -> SocketHandle {
        self.tcp[slot as usize].handle
    }

    /// Current counters.
    pub fn stats(&self) -> StackStats {
        let c = &self.port.counters;
        StackStats {
            driver: self.port.driver.stats(),
            pool: self.port.pool().stats(),
            gso_pool: self.port.driver_caps().gso_pool.as_ref().map(|p| p.stats()),
            tcp_rx_payload: c.tcp_rx_payload,
            tcp_tx_payload: c.tx.tcp_payload,
            app_read_bytes: self.app_read_bytes,
            app_write_bytes: self.app_write_bytes,
            app_frame_bytes: self.app_frame_bytes,
            tx_dropped_no_frame: c.tx.dropped_no_frame,
            tx_dropped_too_big: c.tx.dropped_too_big,
            rx_errors: c.rx_errors,
            rx_malformed: self.iface.rx_malformed(),
            tx_errors: c.tx.errors,
            tx_pushed_back: c.tx.pushed_back,
            polls: self.polls,
            late_tx_polls: self.late_tx_polls,
            idle_sleeps: self.idle_sleeps,
            tcp_sockets: self.tcp.len(),
            tcp_open: self.tcp.iter().filter(|s| s.is_open()).count(),
            file_bytes_referenced: self.file_counters.referenced,
            tcp_tx_payload_ref: c.tx.tcp_payload_ref,
            file_bytes_copied: self.file_counters.copied,
            file_bytes_pread: self.file_counters.pread,
            lease_breaks: self.file_counters.lease_breaks,
            file_transfers_aborted: self.file_counters.aborted,
            tcp: self.tcp_recovery_stats(),
            listen: self.iface.listen_stats().into(),
            memory: self.memory_stats(),
            dgram: self.dgram.stats(),
        }
    }

    /// Loss-recovery counters summed over every TCP socket the stack has
    /// had (sockets are recycled, never dropped, so nothing is lost).
    fn tcp_recovery_stats(&self) -> TcpRecoveryStats {
        let mut t = TcpRecoveryStats::default();
        for slot in &self.tcp {
            let r = self
                .sockets
                .get::<tcp::Socket>(slot.handle)
                .recovery_stats();
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
        self.send_mode
    }

    /// Drops every socket (without sending FIN or RST) and returns the
    /// driver. Frames still queued in the stack go back to the pool.
    pub fn into_driver(self) -> D {
        self.port.driver
    }
}

/// Maps a closed-handle error to what the user sees.
pub(crate) fn stale() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection handle is closed")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicI64, Ordering};
    use std::time::Duration;

    use zcstack_driver::PoolConfig;
    use zcstack_driver::wire::{self, WireConfig, WireEnd};

    use super::{Clock, SPIN_POLLS, Stack};

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
        assert!(
            s.idle > 0 && s.idle < SPIN_POLLS,
            "not spinning idle: {}",
            s.idle
        );
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
