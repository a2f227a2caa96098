//! zc-echo: a TCP echo server on zcstack.
//!
//! ```text
//! zc-echo --tap zctap0 --ip 10.200.1.2/24 --port 7 [--read-ahead BYTES] [--stats] [--pcap FILE]
//! ```
//! Every byte a client sends comes back on the same connection; when the
//! client finishes sending (FIN), the rest is echoed and the connection closed.
#![deny(unsafe_code)]

use std::io::ErrorKind;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::Instant;

use clap::Parser;
use zcstack::{Stack, TcpConn};
use zcstack_apps::conns::{ConnLoop, Service, Step};
use zcstack_apps::{AppDriver, DeviceArgs, StatsTicker, parse_args, run, stop_flag};

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
    run(APP, || {
        let stop = stop_flag()?;
        let mut stack = cli.dev.build_stack()?;
        let listener = stack.tcp_listen(cli.port, cli.backlog as usize)?;
        let (ip, _) = stack.ip();
        let caps = stack.driver().capabilities();
        println!(
            "{APP}: listening on {ip}:{} via {} (MTU {})",
            cli.port, caps.description, caps.mtu
        );
        cli.dev.print_notes(APP);
        let mut echo = Echo {
            read_ahead: cli.read_ahead as usize,
        };
        let mut conns = ConnLoop::new(&mut stack, listener, usize::MAX);
        let mut ticker = StatsTicker::new(cli.dev.stats);
        while !stop.load(Ordering::Relaxed) {
            conns.turn(&mut stack, &mut echo);
            ticker.tick(APP, &stack);
        }
        let s = zcstack_apps::shutdown(stack);
        println!(
            "{APP}: stopped; {s}; copies per byte rx {:.2} tx {:.2}",
            s.rx_copies_per_byte(),
            s.tx_copies_per_byte()
        );
        Ok(())
    })
}
