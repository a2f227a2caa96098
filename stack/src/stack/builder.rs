//! [`StackBuilder`]: every setting of a [`Stack`], validated by `build()`,
//! which puts the stack's parts together.

use std::net::Ipv4Addr;
use std::time::Duration;

use smoltcp::wire::{EthernetAddress, Ipv4Cidr};
use zcstack_driver::Driver;

use super::{AppBytes, Stack, StackError};
use crate::dgram::Dgram;
use crate::engine::{Clock, Engine};
use crate::event::Events;
use crate::file::transfer::FileSender;
use crate::file::{PAGE, SendMode, SocketStore};
use crate::mem::Memory;
use crate::tcp::{Congestion, TcpConfig, TcpTable};
use crate::udp::UdpTable;

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
        // What the driver can do, read once (the stack keeps it).
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
        let mem = Memory::new(
            self.max_memory,
            pool_bytes,
            PER_SOCKET,
            self.tcp_rx_buffer,
            tx_ring,
        );
        if let Some(b) = self.max_memory {
            let need = pool_bytes + mem.one_connection();
            if b < need {
                return Err(StackError::Config(format!(
                    "a memory budget of {} KiB is below what the stack needs for one connection: {} KiB ({} KiB of buffer pool, {} KiB of TCP rings, {} bytes of socket structures, {} bytes of loss-recovery state at most): raise it or use smaller rings or pool",
                    b / 1024,
                    need / 1024,
                    pool_bytes / 1024,
                    mem.ring_pair() / 1024,
                    mem.per_socket(),
                    crate::mem::RECOVERY_HEAP
                )));
            }
        }
        let seed = self.seed.unwrap_or_else(|| {
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            t.as_nanos() as u64 ^ u64::from(std::process::id()).rotate_left(32)
        });
        let syn_cookie_key = self.syn_cookies.then(random_u128);
        let mut engine = Engine::new(
            (self.driver, caps),
            self.burst,
            mac,
            cidr,
            seed,
            self.clock,
            syn_cookie_key,
        );
        if let Some(gw) = self.gateway {
            engine
                .set_gateway(gw)
                .map_err(|_| StackError::Config("route table full".into()))?;
        }
        let tcp = TcpTable::new(
            TcpConfig {
                rx_buffer: self.tcp_rx_buffer,
                tx_buffer: tx_ring,
                rto_min: smoltcp::time::Duration::from_micros(self.rto_min.as_micros() as u64),
                rto_max: smoltcp::time::Duration::from_micros(self.rto_max.as_micros() as u64),
                timestamps: self.timestamps,
                synack_retries: self.synack_retries,
                congestion: self.congestion,
            },
            seed,
        );
        Ok(Stack {
            sockets: SocketStore::new(),
            engine,
            tcp,
            udp: UdpTable::default(),
            dgram: Dgram::default(),
            files: FileSender::new(send_mode),
            mem,
            events: Events::new(),
            app: AppBytes::default(),
        })
    }
}

/// What the stack counts per TCP socket besides its rings: smoltcp's
/// socket, and each part's per-slot state.
const PER_SOCKET: usize = std::mem::size_of::<smoltcp::iface::SocketStorage<'static>>()
    + TcpTable::SLOT_BYTES
    + FileSender::SLOT_BYTES
    + Memory::SLOT_BYTES
    + Events::SLOT_BYTES
    + std::mem::size_of::<usize>();

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
}
