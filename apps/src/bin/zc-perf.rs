//! zc-perf: TCP bulk transfer and UDP packet-rate tests, on zcstack or (with
//! `--kernel`) on the kernel's stack, so either end can be either.
//!
//! ```text
//! zc-perf server --tap zctap0 --ip 10.200.1.2/24 [--port 5201] [--once] [--json] [--udp]
//! zc-perf client --server 10.200.1.2 --kernel [--bytes 64M | --seconds 5] [--reverse]
//! zc-perf client --server 10.200.1.2 --kernel --udp [--size 64] [--count N]
//! ```
//! The protocol (a 24-byte header from the client, a seeded data pattern the
//! receiver checks byte for byte, a 16-byte report back) is in
//! `zcstack_apps::perf`. Each side prints one report per test: payload
//! Gbit/s, packets/s, retransmissions and CPU seconds per GB.
#![deny(unsafe_code)]

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use zcstack::{DgramSock, RxDatagram, Stack, StackStats, TcpConn, TcpState, TxDatagram};
use zcstack_apps::perf::{
    DEFAULT_PORT, HEADER_LEN, Header, MAX_CHUNK, Pattern, Report, TRAILER_LEN, Trailer,
    UDP_HEAD_LEN, UdpHead, UdpKind, cpu_time, parse_bytes,
};
use zcstack_apps::queues;
use zcstack_apps::{AppDriver, DeviceArgs, StatsTicker, run, stop_flag, usage_exit};

const APP: &str = "zc-perf";
/// A server never sends for longer than this, whatever the client asks.
const SERVER_SEND_CAP: Duration = Duration::from_secs(300);
/// Datagrams a UDP sender hands over per call (zcstack and kernel alike).
const UDP_BATCH: usize = 32;
/// TCP ring size with --smoltcp-defaults (what smoltcp's examples use).
const STOCK_RING: usize = 64 * 1024;

#[derive(Parser, Debug)]
#[command(
    name = "zc-perf",
    version,
    about = "TCP/UDP throughput tests on zcstack or the kernel stack",
    // No arguments: say a subcommand is missing (clap would print the help).
    arg_required_else_help = false,
    after_help = concat!(
        "Example, as root in a zcstack checkout with target/release on PATH, in the namespace\nzcdemo (TAP zcdemo0, kernel side 10.200.1.1/24) that\n`bash scripts/tapbed.sh up zcdemo zcdemo0 10.200.1.1/24` makes:\n",
        "  ip netns exec zcdemo zc-perf server --tap zcdemo0 --ip 10.200.1.2/24 & sleep 1\n",
        "  ip netns exec zcdemo zc-perf client --kernel --server 10.200.1.2 --bytes 64M\n",
        "  ip netns exec zcdemo zc-perf client --kernel --server 10.200.1.2 --bytes 64M --reverse\n\n",
        "Retransmissions: with --kernel, TCP_INFO's tcpi_total_retrans (segments) and \
tcpi_bytes_retrans; on zcstack, the stack's loss-recovery counters (segments and bytes \
retransmitted, timeouts, fast recoveries, tail loss probes, undone recoveries)."
    )
)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Subcommand, Debug)]
enum Mode {
    /// Wait for clients and run the tests they ask for.
    #[command(
        override_usage = "zc-perf server (--kernel | (--tap NAME | --xdp IFACE) --ip ADDR/PREFIX) [--udp] [OPTIONS]"
    )]
    Server(ServerArgs),
    /// Run one test against a server.
    #[command(
        override_usage = "zc-perf client --server ADDR (--kernel | (--tap NAME | --xdp IFACE) --ip ADDR/PREFIX) [--udp] [OPTIONS]"
    )]
    Client(ClientArgs),
}

#[derive(Args, Debug)]
struct Common {
    /// Use the kernel's TCP/IP stack (std::net sockets) instead of zcstack;
    /// then no device flags (--tap, --ip, …).
    #[arg(long)]
    kernel: bool,
    /// The device flags (added to the command in `parse`: required only without --kernel).
    #[arg(skip)]
    dev: Option<DeviceArgs>,
    /// TCP or UDP port of the server.
    #[arg(long, default_value_t = DEFAULT_PORT, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// UDP packet-rate test instead of TCP bulk transfer (a server serves
    /// one or the other: give the server --udp too).
    #[arg(long)]
    udp: bool,
    /// Print each report as one JSON object (one per line) instead of text.
    #[arg(long)]
    json: bool,
    /// zcstack: run as stock smoltcp would, as a baseline: smoltcp's socket
    /// defaults (Nagle, 10 ms delayed ACK, no congestion control), 64 KiB
    /// TCP rings, one frame per driver call.
    #[arg(long)]
    smoltcp_defaults: bool,
}

#[derive(Args, Debug)]
struct ServerArgs {
    #[command(flatten)]
    common: Common,
    /// Exit after the first test.
    #[arg(long)]
    once: bool,
    /// zcstack TCP: connections that may wait while a test runs. Each is a
    /// listening socket in smoltcp's socket set, which every poll walks
    /// (16 cost 4% more instructions per byte sent than 2).
    #[arg(long, value_name = "N", default_value_t = 2,
        value_parser = clap::value_parser!(u16).range(1..=1024))]
    backlog: u16,
}

#[derive(Args, Debug)]
struct ClientArgs {
    #[command(flatten)]
    common: Common,
    /// The server's IPv4 address.
    #[arg(long, value_name = "ADDR")]
    server: Ipv4Addr,
    /// Stop after this many payload bytes (K, M, G suffixes: powers of 1024).
    #[arg(long, value_name = "N", value_parser = parse_bytes)]
    bytes: Option<u64>,
    /// Stop after this many seconds (default 10, or 60 as a cap with --bytes or --count).
    #[arg(long, value_name = "S", value_parser = parse_seconds)]
    seconds: Option<f64>,
    /// TCP: the server sends and the client receives.
    #[arg(long)]
    reverse: bool,
    /// UDP datagram size in bytes (payload, 16 to 1472).
    #[arg(long, value_name = "BYTES", default_value_t = 64,
        value_parser = clap::value_parser!(u16).range(UDP_HEAD_LEN as i64..=1472))]
    size: u16,
    /// UDP: stop after this many datagrams.
    #[arg(long, value_name = "N")]
    count: Option<u64>,
    /// Seed of the data pattern.
    #[arg(long, default_value_t = 1)]
    seed: u32,
}

/// `--seconds`: more than 0, at most an hour.
fn parse_seconds(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 3600.0 => Ok(secs),
        _ => Err(format!(
            "{s:?} is not a number of seconds from 0 (exclusive) to 3600"
        )),
    }
}

impl ClientArgs {
    fn limit(&self) -> Duration {
        let bounded = self.bytes.is_some() || self.count.is_some();
        Duration::from_secs_f64(self.seconds.unwrap_or(if bounded { 60.0 } else { 10.0 }))
    }
}

/// Which stack a side runs on, ready to use.
enum Net {
    Kernel,
    Zc(Box<(Stack<AppDriver>, StatsTicker)>),
    /// `--queues N` (servers): the stacks are built by `server_queues`.
    Queues(DeviceArgs),
}

fn open(common: &Common) -> anyhow::Result<Net> {
    match &common.dev {
        None => Ok(Net::Kernel),
        Some(dev) if dev.queues > 1 => Ok(Net::Queues(dev.clone())),
        Some(dev) => Ok(Net::Zc(Box::new((
            dev.build_stack()?,
            StatsTicker::new(dev.stats),
        )))),
    }
}

/// Parses the command line: [`DeviceArgs`] join both subcommands, required
/// only without `--kernel` and refused with it.
fn parse() -> Cli {
    use clap::parser::ValueSource;
    use clap::{CommandFactory, FromArgMatches};
    let with_dev = |c: clap::Command| {
        // augment_args would put DeviceArgs' doc in place of the subcommand's.
        let about = c.get_about().cloned().unwrap_or_default();
        DeviceArgs::augment_args(c)
            .about(about)
            .mut_group("device", |g| g.required(false))
            .mut_arg("ip", |a| a.required(false))
    };
    let m = Cli::command()
        .mut_subcommand("server", with_dev)
        .mut_subcommand("client", with_dev)
        .try_get_matches()
        .unwrap_or_else(|e| usage_exit(APP, e));
    let mut cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| usage_exit(APP, e));
    let Some((_, sm)) = m.subcommand() else {
        usage_exit(
            APP,
            clap::Error::new(clap::error::ErrorKind::MissingSubcommand),
        )
    };
    if let Mode::Client(a) = &cli.mode
        && a.common.udp
        && a.reverse
    {
        eprintln!(
            "{APP}: --reverse is for TCP: a UDP test always sends from the client (try --help)"
        );
        std::process::exit(2);
    }
    let server = matches!(cli.mode, Mode::Server(_));
    let once = matches!(&cli.mode, Mode::Server(a) if a.once);
    let common = match &mut cli.mode {
        Mode::Server(a) => &mut a.common,
        Mode::Client(a) => &mut a.common,
    };
    let given = |id: &str| sm.value_source(id) == Some(ValueSource::CommandLine);
    let usage = |msg: &str| -> ! {
        eprintln!("{APP}: {msg} (try --help)");
        std::process::exit(2)
    };
    if common.kernel && common.smoltcp_defaults {
        usage("--smoltcp-defaults is for the zcstack side: drop it with --kernel");
    }
    // Flags that would do nothing in this kind of test are refused.
    let (udp, kernel) = (common.udp, common.kernel);
    if server && given("backlog") && (kernel || udp) {
        usage("--backlog is for a zcstack TCP server: drop it with --kernel or --udp");
    }
    if !server && !udp && (given("size") || given("count")) {
        usage("--size and --count are for UDP tests: add --udp, or drop them");
    }
    if !server && udp && given("bytes") {
        usage("--bytes is for TCP tests: a UDP test stops after --count datagrams or --seconds");
    }
    if common.kernel {
        let dev = DeviceArgs::augment_args(clap::Command::new("dev"));
        if let Some(a) = dev.get_arguments().find(|a| given(a.get_id().as_str())) {
            usage(&format!(
                "--kernel uses the kernel's stack: drop --{}",
                a.get_long().unwrap_or("the device flags")
            ));
        }
    } else if !(given("tap") || given("xdp")) || !given("ip") {
        usage(
            "the zcstack side needs --tap NAME or --xdp IFACE, and --ip ADDR/PREFIX \
             (or --kernel for the kernel's stack)",
        );
    } else {
        let mut dev = DeviceArgs::from_arg_matches(sm).unwrap_or_else(|e| usage_exit(APP, e));
        if dev.queues > 1 {
            if !server {
                usage(
                    "--queues is for the server: a client test is one flow, which one queue carries",
                );
            }
            if once {
                usage(
                    "--once stops after one test, --queues runs one per queue: drop --once and stop the server with Ctrl-C",
                );
            }
            if let Some(why) = dev.queue_conflict() {
                usage(&why);
            }
        }
        if common.smoltcp_defaults {
            dev.tcp_buffers = Some((STOCK_RING, STOCK_RING));
            dev.burst = Some(1);
        }
        common.dev = Some(dev);
    }
    cli
}

fn main() -> ExitCode {
    let cli = parse();
    run(APP, || {
        let stop = stop_flag()?;
        match cli.mode {
            Mode::Server(a) => {
                let net = open(&a.common)?;
                server(net, &a, &stop)
            }
            Mode::Client(a) => {
                let net = open(&a.common)?;
                if let Some(dev) = &a.common.dev {
                    dev.print_notes(APP);
                }
                client(net, &a, &stop)
            }
        }
    })
}

/// The figures every test measures, captured at its start.
struct Meter {
    start: Instant,
    cpu: Duration,
    zc: Option<StackStats>,
}

impl Meter {
    fn start(stack: Option<&Stack<AppDriver>>) -> Meter {
        Meter {
            start: Instant::now(),
            cpu: cpu_time(),
            zc: stack.map(|s| s.stats()),
        }
    }

    /// Fills time, CPU and (zcstack) packets and retransmitted bytes.
    fn finish(&self, r: &mut Report, stack: Option<&Stack<AppDriver>>) {
        r.seconds = self.start.elapsed().as_secs_f64();
        r.cpu_seconds = (cpu_time().saturating_sub(self.cpu)).as_secs_f64();
        if let (Some(a), Some(s)) = (&self.zc, stack) {
            let b = s.stats();
            r.stack = "zcstack";
            r.packets = (b.driver.rx_packets - a.driver.rx_packets)
                + (b.driver.tx_packets - a.driver.tx_packets);
            if r.proto == "tcp" {
                let emitted = b.tcp_tx_payload - a.tcp_tx_payload;
                let written = b.app_write_bytes - a.app_write_bytes;
                let (t, u) = (&b.tcp, &a.tcp);
                r.retrans_segments = Some(t.retransmits - u.retransmits);
                r.retrans_bytes = Some(t.retransmitted_bytes - u.retransmitted_bytes);
                r.tcp = Some(zcstack_apps::perf::TcpRecovery {
                    tcp_rto_expiries: t.rto_expiries - u.rto_expiries,
                    tcp_fast_recoveries: t.fast_recoveries - u.fast_recoveries,
                    tcp_tail_loss_probes: t.tail_loss_probes - u.tail_loss_probes,
                    tcp_undos: t.undos - u.undos,
                    tcp_dsacks: t.dsacks - u.dsacks,
                    tcp_reorderings: t.reorderings - u.reorderings,
                });
                // The same sums as StackStats::{tx,rx}_copies_per_byte, over the test only.
                if r.role == "sender" {
                    r.bytes_by_reference = Some(b.tcp_tx_payload_ref - a.tcp_tx_payload_ref);
                }
                r.copies_per_byte = if r.role == "sender" {
                    (written > 0).then(|| (written + emitted) as f64 / written as f64)
                } else {
                    let got = b.tcp_rx_payload - a.tcp_rx_payload;
                    let copied = (b.app_read_bytes - a.app_read_bytes)
                        + (b.driver.rx_copied_bytes - a.driver.rx_copied_bytes);
                    (got > 0).then(|| (got + copied) as f64 / got as f64)
                };
            } else if r.role == "sender" {
                // UDP by frame handle: bytes copied into socket buffers
                // (none on this path) per payload byte sent.
                let sent = b.dgram.tx_bytes - a.dgram.tx_bytes;
                let copied = b.app_write_bytes - a.app_write_bytes;
                r.copies_per_byte = (sent > 0).then(|| copied as f64 / sent as f64);
            }
        } else {
            r.stack = "kernel";
        }
        r.finish();
    }
}

fn banner(json: bool, what: String) {
    if json {
        println!("{}", serde_json::json!({ "listening": what }));
    } else {
        println!("{APP}: listening on {what}");
    }
}

fn server(net: Net, a: &ServerArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let c = &a.common;
    let proto = if c.udp { "UDP" } else { "TCP" };
    match net {
        Net::Kernel => {
            // Bound before the banner: "listening" means it is.
            let what = format!("0.0.0.0:{} ({proto}, kernel stack)", c.port);
            if c.udp {
                let s = kernel::udp_bind(c.port)?;
                banner(c.json, what);
                kernel::udp_server(s, a.once, c.json, stop)
            } else {
                let l = kernel::tcp_bind(c.port)?;
                banner(c.json, what);
                kernel::tcp_server(l, a.once, c.json, stop)
            }
        }
        Net::Queues(dev) => server_queues(&dev, a, stop),
        Net::Zc(zc) => {
            let (mut stack, mut ticker) = *zc;
            let (ip, _) = stack.ip();
            let via = stack.driver().capabilities().description;
            banner(
                c.json,
                format!("{ip}:{} ({proto}, zcstack via {via})", c.port),
            );
            if let Some(dev) = &c.dev {
                dev.print_notes(APP);
            }
            let r = if c.udp {
                zc::udp_server(&mut stack, &mut ticker, c.port, a.once, None, c.json, stop)
            } else {
                zc::tcp_server(&mut stack, &mut ticker, a, stop)
            };
            final_stats(stack, c.json, true);
            r
        }
    }
}

/// `--queues N`: one stack per queue, each on its own pinned thread
/// serving the tests whose flows the device steers to its queue; per-queue
/// and total counters at the end (and each second with `--stats`).
fn server_queues(dev: &DeviceArgs, a: &ServerArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let c = &a.common;
    let proto = if c.udp { "UDP" } else { "TCP" };
    let stacks = dev.build_stacks()?;
    let n = stacks.len();
    let (ip, _) = stacks[0].ip();
    banner(
        c.json,
        format!(
            "{ip}:{} ({proto}, zcstack via {}; {})",
            c.port,
            queues::via(&stacks),
            queues::steering(dev)
        ),
    );
    dev.print_notes(APP);
    let results = queues::serve(dev.stats, stop, stacks, |q, stack, ticker| {
        if c.udp {
            zc::udp_server(stack, ticker, c.port, false, Some(q), c.json, stop)
        } else {
            zc::tcp_server(stack, ticker, a, stop)
        }
    });
    let (done, err) = queues::split(APP, results);
    let mut all = Vec::with_capacity(n);
    for (q, (), s) in done {
        let line = format!("{APP}: queue {q} stopped; {s}");
        if c.json {
            println!("{}", serde_json::json!({ "queue": q, "stopped": line }));
        } else {
            println!("{line}");
        }
        all.push(s);
    }
    let t = queues::total(&all);
    let line = format!("{APP}: stopped; total over {n} queues: {t}");
    if c.json {
        println!(
            "{}",
            serde_json::json!({
                "stopped": line,
                "queues": n,
                "pool_in_use": t.pool.in_use,
                "pool_capacity": t.pool.capacity,
            })
        );
    } else {
        println!("{line}");
    }
    err.map_or(Ok(()), Err)
}

fn client(net: Net, a: &ClientArgs, stop: &AtomicBool) -> anyhow::Result<()> {
    let c = &a.common;
    let limit = a.limit();
    let peer = SocketAddrV4::new(a.server, c.port);
    let header = Header {
        reverse: a.reverse,
        bytes: a.bytes.unwrap_or(u64::MAX),
        millis: limit.as_millis() as u32,
        seed: a.seed,
    };
    let report = match net {
        Net::Queues(_) => unreachable!("parse refuses --queues for clients"),
        Net::Kernel if c.udp => kernel::udp_client(peer, a, limit, stop)?,
        Net::Kernel => kernel::tcp_client(peer, &header, stop)?,
        Net::Zc(zc) => {
            let (mut stack, mut ticker) = *zc;
            let r = if c.udp {
                zc::udp_client(&mut stack, &mut ticker, peer, a, limit, stop)
            } else {
                zc::tcp_client(
                    &mut stack,
                    &mut ticker,
                    peer,
                    &header,
                    c.smoltcp_defaults,
                    stop,
                )
            };
            final_stats(stack, c.json, false);
            r?
        }
    };
    report.print(APP, c.json);
    if report.pattern_ok == Some(false) {
        bail!("the received data did not match the pattern");
    }
    Ok(())
}

/// zc-echo's closing line, with the pool's state. With --json the server
/// prints it as a JSON object and the client to stderr (its stdout holds
/// exactly one JSON object, the report).
fn final_stats(stack: Stack<AppDriver>, json: bool, server: bool) {
    // Counted after the driver closed, so frames it lent the kernel are back.
    let s = zcstack_apps::shutdown(stack);
    let line = format!("{APP}: stopped; {s}");
    match (json, server) {
        (false, _) => println!("{line}"),
        (true, true) => println!(
            "{}",
            serde_json::json!({
                "stopped": line,
                // Both pools (the GSO pool's frames too, with --tx-gso).
                "pool_in_use": s.pool.in_use + s.gso_pool.map_or(0, |g| g.in_use),
                "pool_capacity": s.pool.capacity,
            })
        ),
        (true, false) => eprintln!("{line}"),
    }
}

/// Sends `pattern` bytes until `h.bytes` are sent, `limit` passes or `stop`;
/// `write` returns bytes taken (0 = would block: `wait` is called).
fn send_loop(
    h: &Header,
    limit: Duration,
    stop: &AtomicBool,
    mut write: impl FnMut(&[u8]) -> anyhow::Result<usize>,
    mut wait: impl FnMut(),
) -> anyhow::Result<(u64, &'static str)> {
    let pattern = Pattern::new(h.seed);
    let deadline = Instant::now() + limit.min(Duration::from_millis(h.millis.into()));
    let mut sent = 0u64;
    loop {
        if sent == h.bytes {
            return Ok((sent, "bytes"));
        }
        if Instant::now() >= deadline {
            return Ok((sent, "time"));
        }
        if stop.load(Ordering::Relaxed) {
            return Ok((sent, "interrupt"));
        }
        let n = (h.bytes - sent).min(MAX_CHUNK as u64) as usize;
        match write(pattern.at(sent, n))? {
            0 => wait(),
            n => sent += n as u64,
        }
    }
}

#[path = "zc-perf/kernel.rs"]
mod kernel;

/// Concurrent UDP tests a server keeps apart (several clients whose flows
/// one queue carries); the oldest finished one makes room.
const UDP_RUNS: usize = 8;

/// The UDP receiver's bookkeeping (server side): one [`UdpRun`] per client
/// test in progress or recently finished.
#[derive(Default)]
struct UdpRx {
    /// The queue this server's stack runs on (with `--queues`).
    queue: Option<usize>,
    runs: Vec<UdpRun>,
    /// The last run this receiver saw (most datagrams belong to it).
    last: usize,
    reported: Option<Instant>,
}

/// One client's test.
struct UdpRun {
    id: (SocketAddr, u32),
    got: u64,
    bytes: u64,
    ok: bool,
    meter: Meter,
    reported: bool,
    /// The run's pattern, made once per run (not per datagram).
    pattern: Pattern,
}

impl UdpRx {
    /// The run `id`, created on its first datagram.
    fn run(&mut self, id: (SocketAddr, u32), create: bool) -> Option<&mut UdpRun> {
        if self.runs.get(self.last).is_some_and(|r| r.id == id) {
            return self.runs.get_mut(self.last);
        }
        if let Some(i) = self.runs.iter().position(|r| r.id == id) {
            self.last = i;
            return self.runs.get_mut(i);
        }
        if !create {
            return None;
        }
        if self.runs.len() >= UDP_RUNS {
            // Forget the oldest finished run, else the oldest.
            let i = self.runs.iter().position(|r| r.reported).unwrap_or(0);
            self.runs.remove(i);
        }
        self.runs.push(UdpRun {
            id,
            got: 0,
            bytes: 0,
            ok: true,
            meter: Meter::start(None),
            reported: false,
            pattern: Pattern::new(id.1),
        });
        self.last = self.runs.len() - 1;
        self.runs.last_mut()
    }

    /// Handles one datagram; returns the reply to send, if any.
    fn on_datagram(
        &mut self,
        d: &[u8],
        from: SocketAddr,
        stack: &'static str,
        json: bool,
    ) -> Option<[u8; UDP_HEAD_LEN]> {
        let head = UdpHead::read(d)?;
        let id = (from, head.run);
        let queue = self.queue;
        let result = |number| {
            let mut reply = [0u8; UDP_HEAD_LEN];
            UdpHead {
                kind: UdpKind::Result,
                run: head.run,
                number,
            }
            .write(&mut reply);
            Some(reply)
        };
        match head.kind {
            UdpKind::Data => {
                let r = self.run(id, true)?;
                if !r.reported {
                    r.got += 1;
                    r.bytes += d.len() as u64;
                    r.ok &= r.pattern.matches(0, &d[UDP_HEAD_LEN..]);
                }
                None
            }
            UdpKind::End => {
                // An End for a run that sent nothing we saw: 0.
                let Some(r) = self.run(id, false) else {
                    return result(0);
                };
                let got = r.got;
                if !r.reported {
                    r.reported = true;
                    let mut rep = Report {
                        side: "server",
                        role: "receiver",
                        proto: "udp",
                        peer: from.to_string(),
                        bytes: r.bytes,
                        datagrams: Some(r.got),
                        peer_count: Some(head.number),
                        pattern_ok: Some(r.ok),
                        packets: r.got,
                        ended_by: "peer",
                        queue,
                        ..Report::default()
                    };
                    r.meter.finish(&mut rep, None);
                    rep.stack = stack;
                    rep.print(APP, json);
                    self.reported = Some(Instant::now());
                }
                result(got)
            }
            UdpKind::Result => None,
        }
    }

    /// A run was reported at least `linger` ago (its client has had time to
    /// get the answer) and no other is in progress.
    fn done_for(&self, linger: Duration) -> bool {
        self.reported.is_some_and(|t| t.elapsed() >= linger) && self.runs.iter().all(|r| r.reported)
    }
}

/// The UDP sender's datagrams and counts (client side).
struct UdpTx {
    run: u32,
    buf: Vec<u8>,
    count: u64,
    deadline: Instant,
    sent: u64,
    meter: Meter,
    ended_by: &'static str,
}

impl UdpTx {
    fn new(a: &ClientArgs, limit: Duration) -> UdpTx {
        // The run id doubles as the pattern seed.
        let run = a.seed ^ std::process::id().rotate_left(16);
        let mut buf = vec![0u8; a.size as usize];
        buf[UDP_HEAD_LEN..]
            .copy_from_slice(Pattern::new(run).at(0, a.size as usize - UDP_HEAD_LEN));
        UdpTx {
            run,
            buf,
            count: a.count.unwrap_or(u64::MAX),
            deadline: Instant::now() + limit,
            sent: 0,
            meter: Meter::start(None),
            ended_by: "count",
        }
    }

    /// How many datagrams the next batch of at most `max` may send; 0 when
    /// the test is over. Reads the clock and the stop flag once per batch.
    fn batch(&mut self, max: usize, stop: &AtomicBool) -> usize {
        if self.sent >= self.count {
            return 0;
        }
        if Instant::now() >= self.deadline {
            self.ended_by = "time";
            return 0;
        }
        if stop.load(Ordering::Relaxed) {
            self.ended_by = "interrupt";
            return 0;
        }
        (self.count - self.sent).min(max as u64) as usize
    }

    /// The datagram size.
    fn size(&self) -> usize {
        self.buf.len()
    }

    /// Writes datagram number `number` into `buf` (`size()` bytes): the
    /// pattern too unless `pattern_in_place` (a reused buffer has it).
    fn write(&self, number: u64, buf: &mut [u8], pattern_in_place: bool) {
        if !pattern_in_place {
            buf.copy_from_slice(&self.buf);
        }
        UdpHead {
            kind: UdpKind::Data,
            run: self.run,
            number,
        }
        .write(buf);
    }

    fn end(&self) -> [u8; UDP_HEAD_LEN] {
        let mut b = [0u8; UDP_HEAD_LEN];
        UdpHead {
            kind: UdpKind::End,
            run: self.run,
            number: self.sent,
        }
        .write(&mut b);
        b
    }

    /// The server's count, if `d` is its answer for this run.
    fn result(&self, d: &[u8]) -> Option<u64> {
        let h = UdpHead::read(d)?;
        (h.kind == UdpKind::Result && h.run == self.run).then_some(h.number)
    }

    fn report(&self, peer: SocketAddrV4, got: u64, stack: Option<&Stack<AppDriver>>) -> Report {
        let mut r = Report {
            side: "client",
            role: "sender",
            proto: "udp",
            peer: peer.to_string(),
            bytes: self.sent * self.buf.len() as u64,
            datagrams: Some(self.sent),
            peer_count: Some(got),
            packets: self.sent,
            ended_by: self.ended_by,
            ..Report::default()
        };
        self.meter.finish(&mut r, stack);
        // Packets/s of a UDP test are the datagrams sent, not every frame.
        r.packets = self.sent;
        r.finish();
        r
    }
}

#[path = "zc-perf/zc.rs"]
mod zc;
