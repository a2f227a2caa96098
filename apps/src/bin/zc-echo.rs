//! zc-echo: a TCP echo server on zcstack.
//!
//! ```text
//! zc-echo --tap zctap0 --ip 10.200.1.2/24 --port 7 [--read-ahead BYTES] [--queues N]
//!         [--stats] [--stats-json FILE] [--pcap FILE]
//! ```
//! Every byte a client sends comes back on the same connection; when the
//! client finishes sending (FIN), the rest is echoed and the connection closed.
//! With `--queues N`, each queue's stack echoes the connections the device
//! steers to it, on its own thread (`zcstack_apps::queues`).
#![deny(unsafe_code)]

use std::io::ErrorKind;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::Parser;
use zcstack::{Stack, StackStats, TcpConn};
use zcstack_apps::conns::{ConnLoop, Service, Step};
use zcstack_apps::stats_json::{AppCounters, StatsJson};
use zcstack_apps::{AppDriver, DeviceArgs, parse_args, queues, run, stop_flag, usage_error};

const APP: &str = "zc-echo";

#[derive(Parser, Debug)]
#[command(
    name = "zc-echo",
    version,
    about = "TCP echo server on the zcstack kernel-bypass stack",
    after_help = concat!(
        "Example, as root in a zcstack checkout with target/release on PATH, in the namespace\nzcdemo (TAP zcdemo0, kernel side 10.200.1.1/24) that\n`bash scripts/tapbed.sh up zcdemo zcdemo0 10.200.1.1/24` makes:\n",
        "  ip netns exec zcdemo zc-echo --tap zcdemo0 --ip 10.200.1.2/24 & sleep 1\n",
        "  ip netns exec zcdemo bash -c 'exec 3<>/dev/tcp/10.200.1.2/7; echo hello >&3; head -n1 <&3'"
    )
)]
struct Cli {
    #[command(flatten)]
    dev: DeviceArgs,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 7, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// Connections that may be in setup or waiting to be accepted at once.
    #[arg(long, value_name = "N", default_value_t = 128,
        value_parser = clap::value_parser!(u32).range(1..=65536))]
    backlog: u32,
    /// Bytes held per connection between reading and echoing (the server
    /// reads on while its send ring is full, up to this much; 1 makes a
    /// client that stops reading close the server's receive window at once).
    #[arg(
        long,
        value_name = "BYTES",
        default_value_t = 64 * 1024,
        value_parser = clap::value_parser!(u32).range(1..=1 << 30)
    )]
    read_ahead: u32,
    /// Write the counters to this file as one JSON object: every second
    /// while running (replaced whole) and the final ones on exit. With
    /// --queues, the totals, then each queue's under "per_queue".
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

/// What one queue's echo server counted.
#[derive(Clone, Copy, Default)]
struct Counters {
    /// Connections accepted.
    accepted: u64,
    /// Most connections open at once (with several queues, the total is the
    /// sum of each queue's peak).
    peak: usize,
    /// Connections open at the end.
    open: usize,
}

impl AppCounters for Counters {
    fn add(&mut self, o: &Self) {
        self.accepted += o.accepted;
        self.peak += o.peak;
        self.open += o.open;
    }
    fn fields(&self, s: &StackStats) -> String {
        format!(
            concat!(
                "\"connections\":{},\"peak_connections\":{},\"open_connections\":{},",
                "\"bytes_echoed\":{},\"rx_packets\":{},\"tx_packets\":{},\"rx_drops\":{},",
                "\"tx_drops\":{},\"tcp_retransmits\":{},\"pool_in_use\":{},\"pool_capacity\":{}"
            ),
            self.accepted,
            self.peak,
            self.open,
            s.app_write_bytes,
            s.driver.rx_packets,
            s.driver.tx_packets,
            s.rx_drops(),
            s.tx_drops(),
            s.tcp.retransmits,
            s.pool.in_use + s.gso_pool.map_or(0, |g| g.in_use),
            s.pool.capacity,
        )
    }
}

struct Conn {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
    eof: bool,
}

struct Echo {
    read_ahead: usize,
}

impl Service for Echo {
    type Conn = Conn;

    fn open(&mut self, _: &mut Stack<AppDriver>, _: TcpConn, _: Instant) -> Conn {
        Conn {
            buf: vec![0; self.read_ahead].into(),
            start: 0,
            end: 0,
            eof: false,
        }
    }

    /// Echoes what it can: writes what is held, reads more while there is
    /// room; returns when reading or writing would block.
    fn step(
        &mut self,
        stack: &mut Stack<AppDriver>,
        conn: TcpConn,
        c: &mut Conn,
        _: Instant,
    ) -> Step {
        let cap = c.buf.len();
        let mut moved = false;
        loop {
            let mut blocked = false;
            while c.start < c.end {
                match stack.tcp_write(conn, &c.buf[c.start..c.end]) {
                    Ok(n) => {
                        c.start += n;
                        moved = true;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        blocked = true;
                        break;
                    }
                    Err(_) => return Step::Done,
                }
            }
            if c.start == c.end {
                c.start = 0;
                c.end = 0;
                if c.eof {
                    return Step::Done;
                }
            } else if c.start > cap / 2 {
                c.buf.copy_within(c.start..c.end, 0);
                c.end -= c.start;
                c.start = 0;
            }
            if c.eof || c.end == cap {
                return Step::Keep(moved);
            }
            match stack.tcp_read(conn, &mut c.buf[c.end..]) {
                Ok(0) => c.eof = true,
                Ok(n) => {
                    c.end += n;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep(moved),
                Err(_) => return Step::Done,
            }
            if blocked {
                return Step::Keep(moved);
            }
        }
    }
}

fn main() -> ExitCode {
    let cli: Cli = parse_args(APP);
    if let Some(why) = cli.dev.queue_conflict() {
        usage_error(APP, &why);
    }
    run(APP, || {
        let stop = stop_flag()?;
        let mut stacks = cli.dev.build_stacks()?;
        let listeners = stacks
            .iter_mut()
            .map(|s| s.tcp_listen(cli.port, cli.backlog as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let n = stacks.len();
        let (ip, _) = stacks[0].ip();
        println!(
            "{APP}: listening on {ip}:{} via {} (MTU {}){}",
            cli.port,
            queues::via(&stacks),
            stacks[0].driver().capabilities().mtu,
            if n > 1 {
                format!("; {}", queues::steering(&cli.dev))
            } else {
                String::new()
            }
        );
        cli.dev.print_notes(APP);
        let json = StatsJson::<Counters>::new(cli.stats_json.clone(), n);
        let results = queues::serve(cli.dev.stats, &stop, stacks, |q, stack, ticker| {
            let mut echo = Echo {
                read_ahead: cli.read_ahead as usize,
            };
            let mut conns = ConnLoop::new(stack, listeners[q], usize::MAX);
            let mut json = json.ticker(q);
            let counters = |c: &ConnLoop<Conn>| Counters {
                accepted: c.accepted,
                peak: c.peak,
                open: c.len(),
            };
            while !stop.load(Ordering::Relaxed) {
                conns.turn(stack, &mut echo);
                ticker.tick(APP, stack);
                json.tick(APP, stack, || counters(&conns));
            }
            Ok(counters(&conns))
        });
        let (done, err) = queues::split(APP, results);
        let copies = |s: &StackStats| {
            format!(
                "copies per byte rx {:.2} tx {:.2}",
                s.rx_copies_per_byte(),
                s.tx_copies_per_byte()
            )
        };
        if n > 1 {
            for (q, c, s) in &done {
                println!(
                    "{APP}: queue {q} stopped; connections {}; {s}; {}",
                    c.accepted,
                    copies(s)
                );
            }
        }
        let all: Vec<(Counters, StackStats)> = done.into_iter().map(|(_, c, s)| (c, s)).collect();
        if let Some(e) = err {
            return Err(e);
        }
        let stacks: Vec<StackStats> = all.iter().map(|(_, s)| *s).collect();
        let t = queues::total(&stacks);
        let accepted: u64 = all.iter().map(|(c, _)| c.accepted).sum();
        println!(
            "{APP}: stopped; {}connections {accepted}; {t}; {}",
            if n > 1 {
                format!("total over {n} queues: ")
            } else {
                String::new()
            },
            copies(&t)
        );
        json.write_final(&all)
    })
}
