//! Shared pieces of the zcstack apps (`zc-echo`, `zc-perf`, `zc-httpd`, and
//! the ones to come): the device flags every app accepts, opening the driver
//! and building the stack from them, one-line errors, Ctrl-C, and the
//! `--stats` ticker. [`perf`] holds zc-perf's wire protocol and report;
//! [`http`] is zc-httpd's HTTP/1.1 logic (pure code, unit-tested);
//! [`impair`] zc-impair's impairment flags and their units; [`conns`] the
//! event-driven connection loop zc-echo and zc-httpd share; [`queues`]
//! `--queues N` (a stack per queue and core) for the servers;
//! [`stats_json`] their `--stats-json` files.
#![deny(unsafe_code)]

pub mod conns;
pub mod impair;
pub mod perf;
pub mod queues;
pub mod stats_json;

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{ArgGroup, Args, Parser};
use zcstack::{Congestion, SendMode, Stack, StackStats};
use zcstack_driver::pcap::Pcap;
use zcstack_driver::tap::{Tap, TapOptions};
use zcstack_driver::xdp::{self, AttachMode, GsoOptions, SmallTx, Xdp, XdpConfig, XdpGso};
use zcstack_driver::{Driver, PoolConfig};

pub mod http;

/// The driver type the apps run on (TAP or AF_XDP, optionally wrapped for
/// pcap capture); `Send`, so a stack can be built on one thread and polled
/// on another (`--queues`).
pub type AppDriver = Box<dyn Driver + Send>;

/// Device and address flags shared by every app.
#[derive(Args, Debug, Clone)]
#[command(group(ArgGroup::new("device").args(["tap", "xdp"]).required(true)))]
pub struct DeviceArgs {
    /// Create, or attach to, the TAP device NAME in the current network
    /// namespace (one the app creates disappears when it exits; see
    /// scripts/tapbed.sh for one that stays and has a kernel-side address).
    #[arg(long, value_name = "NAME", value_parser = parse_iface)]
    pub tap: Option<String>,
    /// With --tap: IFF_VNET_HDR offloads: 64 KiB TCP segments and partial
    /// checksums both ways (the kernel segments and checksums; pool frames
    /// become 64 KiB, as many as fit the same memory, at least 512).
    #[arg(long, requires = "tap", conflicts_with = "xdp")]
    pub tap_offload: bool,
    /// Run on interface IFACE with AF_XDP (the kernel keeps no address on it).
    #[arg(long, value_name = "IFACE", value_parser = parse_iface)]
    pub xdp: Option<String>,
    /// With --xdp: the device queue to bind to (default 0).
    #[arg(long, value_name = "N", requires = "xdp", conflicts_with = "tap")]
    pub queue: Option<u32>,
    /// Run one stack per device queue, each on a thread of its own pinned
    /// to its own core: AF_XDP sockets on queues --queue .. --queue+N-1, or
    /// N queues of a multi-queue TAP. Each queue has its own pool of
    /// --pool-frames frames; the device decides which queue a flow reaches.
    /// (Servers: zc-echo, zc-httpd, zc-perf server.)
    #[arg(long, value_name = "N", default_value_t = 1,
        value_parser = clap::value_parser!(u32).range(1..=64))]
    pub queues: u32,
    /// With --xdp: where the XDP program runs: native, generic, or auto
    /// (native, then generic) (default auto). Generic mode sees GRO/GSO
    /// packets up to 64 KiB, so it gets 64 KiB frames.
    #[arg(long, value_name = "MODE", requires = "xdp", conflicts_with = "tap")]
    pub xdp_mode: Option<AttachMode>,
    /// With --xdp: TCP segmentation offload on transmit. TCP segments of up
    /// to 64 KiB leave through an AF_PACKET socket with virtio-net headers
    /// on the same interface (the kernel or the NIC cuts them to the MSS
    /// only where it must); AF_XDP keeps receiving. Adds a pool of 64 KiB
    /// frames (8 MiB).
    #[arg(long, requires = "xdp", conflicts_with = "tap")]
    pub tx_gso: bool,
    /// With --tx-gso: the path of frames no larger than the MTU (ACKs,
    /// requests): packet (the AF_PACKET socket, like the large ones) or
    /// xdp (the AF_XDP TX ring) (default packet).
    #[arg(long, value_name = "PATH", requires = "tx_gso")]
    pub tx_gso_small: Option<SmallTx>,
    /// The stack's IPv4 address and prefix length.
    #[arg(long, value_name = "ADDR/PREFIX", value_parser = parse_cidr)]
    pub ip: (Ipv4Addr, u8),
    /// Default gateway (inside the stack's subnet).
    #[arg(long, value_name = "ADDR")]
    pub gateway: Option<Ipv4Addr>,
    /// The stack's MAC address (default 02:5a: followed by the IPv4 address).
    #[arg(long, value_name = "MAC", value_parser = parse_mac)]
    pub mac: Option<[u8; 6]>,
    /// TCP congestion control: cubic, or bbr (BBR v1 with pacing; random
    /// loss does not cut its rate).
    #[arg(long, value_name = "ALGO", default_value_t = Congestion::Cubic)]
    pub cc: Congestion,
    /// Print one line of live figures per second.
    #[arg(long)]
    pub stats: bool,
    /// Write every frame the stack sends and receives to this pcap file.
    #[arg(long, value_name = "FILE")]
    pub pcap: Option<PathBuf>,
    /// Frames in the buffer pool (2 KiB each; with AF_XDP at a jumbo MTU or
    /// in generic mode the frames are larger and fewer, for the same memory).
    #[arg(long, value_name = "N", default_value_t = 8192,
        value_parser = clap::value_parser!(u32).range(64..=1 << 24))]
    pub pool_frames: u32,
    /// Not a flag here: how file bytes get into TCP send rings, for an app
    /// that sends files (zc-httpd has `--send-mode`); default auto.
    #[arg(skip)]
    pub send_mode: Option<SendMode>,
    /// Not a flag: an app's own TCP (receive, send) ring sizes, if it sets them.
    #[arg(skip)]
    pub tcp_buffers: Option<(usize, usize)>,
    /// Not a flag: frames per driver call, if the app sets it (default 32).
    #[arg(skip)]
    pub burst: Option<usize>,
    /// Not a flag: the stack's memory budget in bytes, if the app sets one.
    #[arg(skip)]
    pub max_memory: Option<usize>,
}

/// Parses a size in bytes with an optional K, M or G suffix (KiB, MiB, GiB):
/// `512M`, `2G`, `65536`.
pub fn parse_size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let (num, mult) = match t.char_indices().last() {
        Some((i, 'K' | 'k')) => (&t[..i], 1 << 10),
        Some((i, 'M' | 'm')) => (&t[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&t[..i], 1 << 30),
        _ => (t, 1),
    };
    num.parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .filter(|&n| n > 0)
        .ok_or_else(|| {
            format!("{s:?} is not a size: give bytes or a number with K, M or G, e.g. 512M")
        })
}

/// Parses `10.200.0.2/24`.
pub fn parse_cidr(s: &str) -> Result<(Ipv4Addr, u8), String> {
    let (a, p) = s
        .split_once('/')
        .ok_or("expected ADDR/PREFIX, e.g. 10.200.0.2/24")?;
    let addr: Ipv4Addr = a
        .parse()
        .map_err(|_| format!("{a:?} is not an IPv4 address"))?;
    let prefix: u8 = p
        .parse()
        .map_err(|_| format!("{p:?} is not a prefix length"))?;
    if prefix > 32 {
        return Err(format!("prefix length /{prefix} is more than 32"));
    }
    Ok((addr, prefix))
}

/// An interface name the kernel would take (`--tap`, `--xdp`): a bad one
/// is a usage error with the reason, before any syscall.
pub fn parse_iface(s: &str) -> Result<String, String> {
    zcstack_driver::check_interface_name(s)
        .map(|()| s.to_string())
        .map_err(|e| format!("not an interface name: {}", e.why))
}

/// Parses `02:00:00:00:00:01`.
pub fn parse_mac(s: &str) -> Result<[u8; 6], String> {
    let err = || format!("{s:?} is not a MAC address like 02:00:00:00:00:01");
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in &mut mac {
        let p = parts.next().ok_or_else(err)?;
        if p.len() != 2 {
            return Err(err());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
    }
    if parts.next().is_some() {
        return Err(err());
    }
    Ok(mac)
}

/// Parses the command line; on a usage error prints one line and exits with 2.
pub fn parse_args<T: Parser>(app: &str) -> T {
    T::try_parse().unwrap_or_else(|e| usage_exit(app, e))
}

/// Prints a usage error as one line (`app: msg (try --help)`) and exits with 2.
pub fn usage_error(app: &str, msg: &str) -> ! {
    eprintln!("{app}: {msg} (try --help)");
    std::process::exit(2);
}

/// Prints a clap error as one line and exits with 2 (help and version: print, exit 0).
pub fn usage_exit(app: &str, e: clap::Error) -> ! {
    use clap::error::ErrorKind;
    if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
        let _ = e.print();
        std::process::exit(0);
    }
    let text = e.render().to_string();
    // The first line, plus the indented list clap puts under it (e.g. which
    // required arguments are missing), joined into one line.
    let mut lines = text.lines();
    let first = lines.next().unwrap_or("invalid arguments");
    let mut line = first.strip_prefix("error: ").unwrap_or(first).to_string();
    for more in lines.take_while(|l| l.starts_with("  ")) {
        line.push(' ');
        line.push_str(more.trim());
    }
    eprintln!("{app}: {line} (try --help)");
    std::process::exit(2);
}

/// Runs `main`, printing an error as one line (`app: what: why`) with exit code 1.
pub fn run(app: &str, main: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match main() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{app}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

impl DeviceArgs {
    /// Opens the device and builds the stack on one queue (`--queue`);
    /// [`build_stacks`](Self::build_stacks) opens `--queues`.
    pub fn build_stack(&self) -> anyhow::Result<Stack<AppDriver>> {
        if self.queues > 1 {
            anyhow::bail!(
                "--queues {}: this runs one stack on one queue; drop --queues",
                self.queues
            );
        }
        let driver = self.open_queue(self.queue.unwrap_or(0), false)?;
        self.stack_on(driver)
    }

    /// Why `--queues` cannot work with the other flags, if it cannot: a
    /// usage error (exit 2) for the apps to print before opening anything.
    pub fn queue_conflict(&self) -> Option<String> {
        if self.queues == 1 {
            return None;
        }
        if self.pcap.is_some() {
            return Some(format!(
                "--pcap records one queue, --queues {} opens {}: drop --pcap or --queues",
                self.queues, self.queues
            ));
        }
        None
    }

    /// `--queues N`: opens N queues of the device and builds a stack on
    /// each, all with the same address and MAC ([`queues`] says how they
    /// share nothing but ARP). One queue: the stack of
    /// [`build_stack`](Self::build_stack). Serve them with
    /// [`queues::serve`].
    pub fn build_stacks(&self) -> anyhow::Result<Vec<Stack<AppDriver>>> {
        if self.queues == 1 {
            return Ok(vec![self.build_stack()?]);
        }
        if let Some(why) = self.queue_conflict() {
            anyhow::bail!(why);
        }
        let first = self.queue.unwrap_or(0);
        if let Some(iface) = &self.xdp {
            check_rx_queues(iface, first, self.queues)?;
        }
        if let Some(tap) = &self.tap {
            check_multi_queue_tap(tap, self.queues)?;
        }
        let hub = queues::ArpHub::new(self.queues as usize);
        (0..self.queues)
            .map(|q| {
                let driver = self.open_queue(first + q, true)?;
                let shared: AppDriver =
                    Box::new(queues::ArpShare::new(driver, q as usize, hub.clone()));
                self.stack_on(shared)
            })
            .collect()
    }

    /// Opens the device's queue `queue` (a TAP: one queue of a multi-queue
    /// TAP when `multi`), with a pool of its own.
    fn open_queue(&self, queue: u32, multi: bool) -> anyhow::Result<AppDriver> {
        let device: AppDriver = match (&self.tap, &self.xdp) {
            (Some(name), _) if self.tap_offload => {
                const FRAME: u32 = 64 << 10;
                let frames = (u64::from(self.pool_frames) * 2048 / u64::from(FRAME)).max(512);
                let pool = PoolConfig::new()
                    .frames(frames as u32)
                    .frame_size(FRAME)
                    .build()
                    .context("creating the buffer pool")?;
                let opts = TapOptions {
                    multi_queue: multi,
                    ..TapOptions::offloads()
                };
                Box::new(Tap::open_with(name, pool, opts)?)
            }
            (Some(name), _) => {
                let pool = PoolConfig::new()
                    .frames(self.pool_frames)
                    .build()
                    .context("creating the buffer pool")?;
                let opts = TapOptions {
                    multi_queue: multi,
                    ..TapOptions::default()
                };
                Box::new(Tap::open_with(name, pool, opts)?)
            }
            (None, Some(iface)) if self.tx_gso => {
                let opts = GsoOptions {
                    frames: GSO_FRAMES,
                    small: self.tx_gso_small.unwrap_or_default(),
                    ..GsoOptions::default()
                };
                Box::new(XdpGso::new(self.open_xdp(iface, queue)?, opts)?)
            }
            (None, Some(iface)) => Box::new(self.open_xdp(iface, queue)?),
            (None, None) => anyhow::bail!("give a device: --tap NAME or --xdp IFACE"),
        };
        Ok(match &self.pcap {
            Some(path) => Box::new(Pcap::create(device, path)?),
            None => device,
        })
    }

    /// Builds a stack with the address flags over `driver`.
    fn stack_on(&self, driver: AppDriver) -> anyhow::Result<Stack<AppDriver>> {
        let mut stack = Stack::builder(driver)
            .ip(self.ip.0, self.ip.1)
            .gateway(self.gateway)
            .mac(self.mac)
            .send_mode(self.send_mode.unwrap_or(SendMode::Auto))
            .congestion(self.cc);
        if let Some((rx, tx)) = self.tcp_buffers {
            stack = stack.tcp_buffers(rx, tx);
        }
        if let Some(burst) = self.burst {
            stack = stack.burst(burst);
        }
        Ok(stack.max_memory(self.max_memory).build()?)
    }
}

/// 64 KiB frames in the `--tx-gso` pool: a frame is held only from the
/// stack's write to the next `sendmmsg`, so a few bursts' worth (8 MiB).
const GSO_FRAMES: u32 = 128;

impl DeviceArgs {
    /// AF_XDP on `iface`: pool frames sized for its MTU (in generic mode for
    /// the 64 KiB GRO/GSO packets the generic hook sees), rings sized for
    /// the pool.
    fn open_xdp(&self, iface: &str, queue: u32) -> anyhow::Result<Xdp> {
        let mtu = xdp::interface_mtu(iface)?;
        let frame_size = xdp::frame_size_for(mtu, self.xdp_mode.unwrap_or_default());
        let bytes = self.pool_frames as u64 * 2048;
        let frames = (bytes / frame_size as u64).max(1024) as u32;
        // The fill ring may park a quarter of the pool in the kernel: the
        // largest power of two up to that, from 64 to 2048 entries.
        let quarter = (frames / 4).clamp(64, 2048);
        let ring = 1 << (31 - quarter.leading_zeros());
        let pool = PoolConfig::new()
            .frames(frames)
            .frame_size(frame_size)
            .build()
            .context("creating the buffer pool")?;
        let cfg = XdpConfig::new(iface)
            .queue(queue)
            .mode(self.xdp_mode.unwrap_or_default())
            .ring_size(ring)
            .build()?;
        Ok(Xdp::open(&cfg, pool)?)
    }
}

impl DeviceArgs {
    /// What the user should know about the device beyond the banner, one
    /// line each: a TAP whose kernel side has no address in the stack's
    /// subnet (nothing in the namespace can reach the stack then), an
    /// AF_XDP interface the kernel also has addresses on, or the loopback.
    pub fn notes(&self) -> Vec<String> {
        let (ip, prefix) = self.ip;
        let mut notes = Vec::new();
        if let Some(tap) = &self.tap {
            let addrs = kernel_ipv4_addrs(tap);
            if addrs.is_empty() {
                let host = u32::from(ip) & !mask(prefix);
                let peer =
                    Ipv4Addr::from((u32::from(ip) & mask(prefix)) | if host == 1 { 2 } else { 1 });
                notes.push(format!(
                    "note: the kernel side of TAP {tap} has no IPv4 address, so nothing in this \
                     namespace can reach {ip} yet: give it one in the stack's subnet \
                     (ip addr add {peer}/{prefix} dev {tap}); `scripts/tapbed.sh up` makes a TAP \
                     that has one and stays when the app exits"
                ));
            } else if !addrs.iter().any(|&(a, _)| same_subnet(a, ip, prefix)) {
                notes.push(format!(
                    "note: the kernel side of TAP {tap} has {}, none in the stack's subnet \
                     {}/{prefix}: the kernel reaches {ip} only through a route",
                    list(&addrs),
                    Ipv4Addr::from(u32::from(ip) & mask(prefix))
                ));
            }
        }
        let cpus = nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0))
            .map(|set| {
                (0..nix::sched::CpuSet::count())
                    .filter(|&c| set.is_set(c).unwrap_or(false))
                    .count()
            })
            .unwrap_or(0);
        if cpus > 0 && self.queues as usize > cpus {
            notes.push(format!(
                "note: --queues {} on {cpus} CPUs: queue threads share cores (queue q runs on \
                 CPU q mod {cpus}), so they take turns instead of running side by side",
                self.queues
            ));
        }
        if let Some(iface) = &self.xdp {
            if iface == "lo" {
                notes.push(
                    "warning: AF_XDP on the loopback takes the namespace's own traffic away \
                     from the kernel while the app runs: use a veth or NIC the kernel keeps \
                     no address on"
                        .into(),
                );
            } else {
                let addrs = kernel_ipv4_addrs(iface);
                if !addrs.is_empty() {
                    let q = self.queue.unwrap_or(0);
                    notes.push(format!(
                        "warning: {iface} also has the kernel's address {}: while the app runs, \
                         frames arriving on {} go to the stack, so the kernel's address \
                         stops answering there (give AF_XDP an interface the kernel keeps no \
                         address on)",
                        list(&addrs),
                        if self.queues > 1 {
                            format!("queues {q}..{}", q + self.queues - 1)
                        } else {
                            format!("queue {q}")
                        }
                    ));
                }
            }
        }
        notes
    }

    /// Prints [`notes`](Self::notes) to stderr, each as one `app: …` line.
    pub fn print_notes(&self, app: &str) {
        for n in self.notes() {
            eprintln!("{app}: {n}");
        }
    }
}

/// The sysfs directory of interface `name` in this network namespace, if
/// sysfs shows it. Sysfs shows the namespace it was mounted in (`ip netns
/// exec` mounts the right one; `nsenter` does not): trust it only if its
/// device has the index this namespace gives the name.
fn sysfs_iface(name: &str) -> Option<PathBuf> {
    let sys = Path::new("/sys/class/net").join(name);
    let index = std::fs::read_to_string(sys.join("ifindex"))
        .ok()?
        .trim()
        .parse::<u32>()
        .ok()?;
    (nix::net::if_::if_nametoindex(name).ok() == Some(index)).then_some(sys)
}

/// `--queues` on a TAP that exists: it must have been made multi-queue
/// (one the app creates is); says how to make one if not.
fn check_multi_queue_tap(tap: &str, n: u32) -> anyhow::Result<()> {
    const IFF_MULTI_QUEUE: u32 = 0x100;
    let Some(flags) = sysfs_iface(tap)
        .and_then(|sys| std::fs::read_to_string(sys.join("tun_flags")).ok())
        .and_then(|f| u32::from_str_radix(f.trim().trim_start_matches("0x"), 16).ok())
    else {
        // Not there (the app creates it), or not a TAP: opening it says so.
        return Ok(());
    };
    if flags & IFF_MULTI_QUEUE == 0 {
        anyhow::bail!(
            "--queues {n}: TAP {tap} exists with one queue: delete it (the app then creates \
             a multi-queue one), or make it with `ip tuntap add dev {tap} mode tap multi_queue` \
             (`scripts/tapbed.sh up NS {tap} CIDR multi_queue`)"
        );
    }
    Ok(())
}

/// Whether `iface` has RX queues `first` .. `first + n - 1`; says how to
/// give it more if not.
fn check_rx_queues(iface: &str, first: u32, n: u32) -> anyhow::Result<()> {
    let Some(Ok(entries)) = sysfs_iface(iface).map(|sys| std::fs::read_dir(sys.join("queues")))
    else {
        // No sysfs here (or no such interface): opening the socket says why.
        return Ok(());
    };
    let have = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("rx-"))
        .count() as u32;
    if first + n > have {
        anyhow::bail!(
            "--queues {n}{} needs RX queues {first}..{} of {iface}, which has {have}: \
             give it more (a NIC: `ethtool -L {iface} combined {}`; a veth: create it with \
             `numrxqueues {} numtxqueues {}`) or lower --queues",
            if first > 0 {
                format!(" from --queue {first}")
            } else {
                String::new()
            },
            first + n - 1,
            first + n,
            first + n,
            first + n
        );
    }
    Ok(())
}

fn mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn same_subnet(a: Ipv4Addr, b: Ipv4Addr, prefix: u8) -> bool {
    (u32::from(a) ^ u32::from(b)) & mask(prefix) == 0
}

fn list(addrs: &[(Ipv4Addr, u8)]) -> String {
    let v: Vec<String> = addrs.iter().map(|(a, p)| format!("{a}/{p}")).collect();
    v.join(", ")
}

/// The IPv4 addresses (with prefix lengths) the kernel has on interface
/// `name` in this network namespace; empty if none or if they cannot be read.
pub fn kernel_ipv4_addrs(name: &str) -> Vec<(Ipv4Addr, u8)> {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return Vec::new();
    };
    addrs
        .filter(|a| a.interface_name == name)
        .filter_map(|a| {
            let ip = a.address?.as_sockaddr_in()?.ip();
            let prefix = a
                .netmask
                .and_then(|m| m.as_sockaddr_in().map(|m| u32::from(m.ip()).count_ones()))
                .unwrap_or(32);
            Some((ip, prefix as u8))
        })
        .collect()
}

/// Stops the stack and returns its final counters, with the pool counted
/// after the driver let go of every frame (frames an AF_XDP driver lent the
/// kernel come back when it closes), so `pool.in_use` is what really leaked.
pub fn shutdown<D: Driver>(stack: Stack<D>) -> StackStats {
    let mut s = stack.stats();
    let caps = stack.driver().capabilities();
    let (pool, gso_pool) = (caps.pool, caps.gso_pool);
    drop(stack);
    s.pool = pool.stats();
    s.gso_pool = gso_pool.map(|p| p.stats());
    s
}

/// Set when the user pressed Ctrl-C (or sent SIGTERM).
pub fn stop_flag() -> anyhow::Result<Arc<AtomicBool>> {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    ctrlc::set_handler(move || s.store(true, Ordering::Relaxed))
        .context("installing the Ctrl-C handler")?;
    Ok(stop)
}

/// Prints one line of live figures per second when enabled (`--stats`), on
/// a steady one-second clock: each line's rates are over the second since
/// the line before, whether the stack was busy, bursty or idle. Uses the
/// time of the stack's last poll, so it reads no clock of its own.
pub struct StatsTicker {
    on: bool,
    /// With `--queues`: this ticker's queue and where the queues post
    /// their counters; queue 0 prints the total too.
    queue: Option<(usize, queues::QueueBoard)>,
    prev_total: StackStats,
    /// When the next line is due; `None` before the first call.
    next: Option<Instant>,
    last: Instant,
    prev: StackStats,
}

impl StatsTicker {
    /// A ticker that prints only if `on`.
    pub fn new(on: bool) -> StatsTicker {
        StatsTicker {
            on,
            queue: None,
            prev_total: StackStats::default(),
            next: None,
            last: Instant::now(),
            prev: StackStats::default(),
        }
    }

    /// A ticker for queue `q` of several: its lines say which queue, and
    /// queue 0's ticker adds a line with the total over every queue.
    pub fn for_queue(on: bool, q: usize, board: queues::QueueBoard) -> StatsTicker {
        StatsTicker {
            queue: Some((q, board)),
            ..StatsTicker::new(on)
        }
    }

    /// Call once per loop iteration, after polling.
    pub fn tick<D: Driver>(&mut self, app: &str, stack: &Stack<D>) {
        if !self.on {
            return;
        }
        let now = stack.poll_time();
        let Some(next) = self.next else {
            self.next = Some(now + Duration::from_secs(1));
            self.last = now;
            self.prev = stack.stats();
            return;
        };
        if now < next {
            return;
        }
        let s = stack.stats();
        let secs = now.duration_since(self.last).as_secs_f64();
        match &self.queue {
            None => eprintln!("{app}: {}", rate_line(&self.prev, &s, secs)),
            Some((q, board)) => {
                eprintln!("{app}: queue {q}: {}", rate_line(&self.prev, &s, secs));
                let t = board.post(*q, Some(s), queues::posted_total);
                if *q == 0
                    && let Some(t) = t
                {
                    eprintln!("{app}: total: {}", rate_line(&self.prev_total, &t, secs));
                    self.prev_total = t;
                }
            }
        }
        self.prev = s;
        self.last = now;
        // Keep to the one-second grid; a loop held up longer starts afresh.
        let due = next + Duration::from_secs(1);
        self.next = Some(if due > now {
            due
        } else {
            now + Duration::from_secs(1)
        });
    }
}

/// `rx 1.23 Gbit/s 100k pkt/s, tx …, drops N, pool used/capacity, conns N`.
pub fn rate_line(prev: &StackStats, now: &StackStats, secs: f64) -> String {
    let (a, b) = (&prev.driver, &now.driver);
    let gbps = |bytes: u64| bytes as f64 * 8.0 / secs / 1e9;
    let kpps = |p: u64| p as f64 / secs / 1e3;
    let drops = |s: &StackStats| s.rx_drops() + s.tx_drops();
    format!(
        "rx {:.3} Gbit/s {:.1}k pkt/s, tx {:.3} Gbit/s {:.1}k pkt/s, drops {}, pool {}/{}, conns {}",
        gbps(b.rx_bytes - a.rx_bytes),
        kpps(b.rx_packets - a.rx_packets),
        gbps(b.tx_bytes - a.tx_bytes),
        kpps(b.tx_packets - a.tx_packets),
        drops(now) - drops(prev),
        now.pool.in_use,
        now.pool.capacity,
        now.tcp_open
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("65536"), Ok(65536));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("4K"), Ok(4096));
        assert_eq!(
            parse_size("lots").unwrap_err(),
            "\"lots\" is not a size: give bytes or a number with K, M or G, e.g. 512M"
        );
        assert!(parse_size("0").is_err());
        assert!(parse_size("M").is_err());
    }

    #[test]
    fn cidr_and_mac_parsing() {
        assert_eq!(
            parse_cidr("10.200.0.2/24"),
            Ok((Ipv4Addr::new(10, 200, 0, 2), 24))
        );
        assert!(
            parse_cidr("10.200.0.300/24")
                .unwrap_err()
                .contains("not an IPv4 address")
        );
        assert!(
            parse_cidr("10.200.0.2")
                .unwrap_err()
                .contains("ADDR/PREFIX")
        );
        assert!(
            parse_cidr("10.200.0.2/33")
                .unwrap_err()
                .contains("more than 32")
        );
        assert_eq!(parse_mac("02:00:00:00:00:0a"), Ok([2, 0, 0, 0, 0, 10]));
        assert!(parse_mac("02:00:00:00:00").is_err());
        assert!(parse_mac("02:00:00:00:00:00:01").is_err());
        assert!(parse_mac("zz:00:00:00:00:00").is_err());
    }

    #[test]
    fn subnets() {
        assert_eq!(mask(24), 0xffff_ff00);
        assert_eq!(mask(0), 0);
        assert_eq!(mask(32), u32::MAX);
        let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        assert!(same_subnet(ip("10.200.1.1"), ip("10.200.1.2"), 24));
        assert!(!same_subnet(ip("10.200.2.1"), ip("10.200.1.2"), 24));
        assert!(same_subnet(ip("10.200.2.1"), ip("10.200.1.2"), 16));
        assert_eq!(
            list(&[(ip("10.200.1.1"), 24), (ip("10.1.0.1"), 8)]),
            "10.200.1.1/24, 10.1.0.1/8"
        );
    }
}
