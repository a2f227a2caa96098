//! zc-httpd: an HTTP/1.1 static-file server on zcstack.
//!
//! ```text
//! zc-httpd --tap zctap0 --ip 10.200.1.2/24 --root DIR [--port 80] [--send-mode copy|reference|auto]
//! ```
//! GET and HEAD of the files under `--root`: keep-alive and pipelining,
//! single byte ranges, `ETag`/`Last-Modified` with 304, a directory's
//! `index.html`. What to answer is decided in `zcstack_apps::http`; this file
//! steps one connection when the stack reports an event for it (the loop
//! itself is `zcstack_apps::conns`). Response heads are written with
//! `tcp_write`; bodies are queued with `tcp_send_file`, which queues
//! references to the file's pages in the socket (or copies them into the
//! send ring in copy mode).
//!
//! With `--queues N` each queue's stack serves the connections the device
//! steers to it, on its own thread, with its own [`Server`]: its own file
//! cache (a file served on two queues is opened and mapped by each), its
//! own counters; `--stats-json` sums them and lists each queue's.
#![deny(unsafe_code)]

use std::collections::HashMap;
use std::io::ErrorKind;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use clap::Parser;
use zcstack::{MappedFile, SendMode, Stack, StackStats, TcpConn, TcpListener};
use zcstack_apps::conns::{ConnLoop, Service, Step};
use zcstack_apps::http::Status;
use zcstack_apps::http::path::Root;
use zcstack_apps::http::request::{self, MAX_HEAD};
use zcstack_apps::http::serve::{self, Body, Reply};
use zcstack_apps::stats_json::{AppCounters, StatsJson};
use zcstack_apps::{
    AppDriver, DeviceArgs, StatsTicker, parse_args, queues, run, stop_flag, usage_error,
};

const APP: &str = "zc-httpd";

#[derive(Parser, Debug)]
#[command(
    name = "zc-httpd",
    version,
    about = "HTTP/1.1 static-file server on the zcstack kernel-bypass stack",
    after_help = concat!(
        "Example, as root in a zcstack checkout with target/release on PATH, in the namespace\nzcdemo (TAP zcdemo0, kernel side 10.200.1.1/24) that\n`bash scripts/tapbed.sh up zcdemo zcdemo0 10.200.1.1/24` makes:\n",
        "  ip netns exec zcdemo zc-httpd --tap zcdemo0 --tap-offload --ip 10.200.1.2/24 --root . & sleep 1\n",
        "  ip netns exec zcdemo curl -fsS -o /dev/null -w '%{http_code} %{size_download} bytes\\n' http://10.200.1.2/README.md"
    )
)]
struct Cli {
    #[command(flatten)]
    dev: DeviceArgs,
    /// Directory whose files are served.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// TCP port to listen on.
    #[arg(long, default_value_t = 80, value_parser = clap::value_parser!(u16).range(1..))]
    port: u16,
    /// How file bytes are sent: reference (queue references to the file's
    /// pages; a TAP, and AF_XDP with --tx-gso, send them with no CPU copy,
    /// other devices copy each segment once into the frame), copy (into the
    /// send ring first), or auto (reference).
    #[arg(long, value_name = "MODE", default_value_t = SendMode::Auto)]
    send_mode: SendMode,
    /// Most connections served at once (by each queue, with --queues); more
    /// wait in the listen backlog.
    #[arg(long, value_name = "N", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    max_conns: u32,
    /// Connections that may be in setup or waiting to be accepted at once
    /// (each a listening socket with its buffers; idle ones cost a poll
    /// nothing; each queue has its own, with --queues). Beyond it, SYN
    /// cookies answer.
    #[arg(long, value_name = "N", default_value_t = 128,
          value_parser = clap::value_parser!(u32).range(1..=65536))]
    backlog: u32,
    /// Close a connection after this many seconds without progress.
    #[arg(long, value_name = "SECS", default_value_t = 30)]
    idle_timeout: u64,
    /// Answer 408 if a request head takes longer than this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 10)]
    header_timeout: u64,
    /// Send ring of each TCP connection, in KiB (rounded up to whole 4 KiB
    /// pages; it bounds the bytes in flight: 4 MiB keeps 1 Gbit/s over a
    /// 10 ms path full through loss recovery).
    #[arg(long, value_name = "KIB", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    send_buffer_kib: u32,
    /// Receive ring of each TCP connection, in KiB (requests are small).
    #[arg(long, value_name = "KIB", default_value_t = 16,
          value_parser = clap::value_parser!(u32).range(1..=1 << 20))]
    recv_buffer_kib: u32,
    /// Memory budget for the stack (buffer pool, TCP sockets, the ring
    /// pages they hold and their loss-recovery state), e.g. 512M or 2G. At the limit new connections are
    /// refused (clients see "connection refused") until connections close
    /// or go idle; connections being served are not cut short. With
    /// --queues N each queue's stack gets an Nth of it.
    #[arg(long, value_name = "SIZE", value_parser = zcstack_apps::parse_size)]
    max_memory: Option<usize>,
    /// Write the counters to this file as one JSON object: every second
    /// while running (replaced whole, so a reader never sees half of it),
    /// and the final ones on exit. With --queues, the totals, then each
    /// queue's under "per_queue".
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

/// Files kept open (mapped) between requests, by device and inode.
const FILE_CACHE: usize = 256;
/// How often timeouts are checked.
const SCAN_EVERY: Duration = Duration::from_millis(200);
/// A connection's first head buffer: most request heads fit, and a buffer
/// this small freed when the connection idles leaves no holes in the heap
/// that pin memory (800 freed `MAX_HEAD` buffers kept ~5 MB resident).
const HEAD_START: usize = 1024;

/// The response being written on a connection.
enum Out {
    /// Bytes to write (a whole short response, or a finished head), then
    /// perhaps a file range.
    Write {
        bytes: Vec<u8>,
        done: usize,
        body: Option<(Arc<MappedFile>, u64, u64)>,
    },
}

struct Conn {
    conn: TcpConn,
    /// The request head being received: as large as the head needs (from
    /// [`HEAD_START`], doubling up to `MAX_HEAD`) while the connection is in
    /// use, empty (no memory) once it has idled with nothing buffered (a
    /// keep-alive connection waiting for its next request).
    buf: Vec<u8>,
    filled: usize,
    /// Bytes arrived since the last parse found the head incomplete.
    unparsed: bool,
    out: Option<Out>,
    /// Close (FIN) once everything queued is in the ring.
    closing: bool,
    /// The peer sent FIN.
    peer_done: bool,
    /// Last time bytes moved either way.
    progress: Instant,
    /// (file bytes pending, bytes unacknowledged) at the last scan.
    mark: (u64, usize),
    /// When the first byte of the request head being received arrived.
    head_since: Option<Instant>,
}

/// What one queue's server counted.
#[derive(Clone, Copy, Default)]
struct Counters {
    requests: u64,
    by_class: [u64; 6],
    body_bytes: u64,
    accepted: u64,
    /// Most connections open at once (with several queues, the total is
    /// the sum of each queue's peak).
    peak_conns: usize,
    /// Connections open now (at the end: when the server stopped).
    open: usize,
    timeouts: u64,
    /// Of `timeouts`, request heads not complete within `--header-timeout`
    /// (answered 408 and closed: slowloris clients end here).
    header_timeouts: u64,
}

/// One queue's server: the connections' shared state.
struct Server<'a> {
    root: &'a Root,
    files: HashMap<(u64, u64), Arc<MappedFile>>,
    n: Counters,
    date: (u64, String),
    /// Where an idle connection's first request bytes are read before it
    /// gets a head buffer of its own.
    scratch: Vec<u8>,
}

/// What the timeout scan decided for a connection.
enum Verdict {
    Keep,
    /// A response (408) was queued: step the connection to send it.
    Serve,
    Drop,
}

fn same_file(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.ino() == b.ino()
        && a.dev() == b.dev()
        && a.len() == b.len()
        && a.mtime() == b.mtime()
        && a.mtime_nsec() == b.mtime_nsec()
}

impl Server<'_> {
    /// The current HTTP-date, formatted once per second.
    fn date(&mut self) -> &str {
        let now = SystemTime::now();
        let secs = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        if secs != self.date.0 {
            self.date = (secs, httpdate::fmt_http_date(now));
        }
        &self.date.1
    }

    /// The mapped file for a body, from the cache if it is unchanged and
    /// still leased (after a lease break the stack would `pread` it; a fresh
    /// open takes a new lease if it can).
    fn open(&mut self, body: &mut Body) -> std::io::Result<Arc<MappedFile>> {
        let key = (body.meta.dev(), body.meta.ino());
        if let Some(f) = self.files.get(&key)
            && f.is_leased()
            && same_file(f.metadata(), &body.meta)
        {
            return Ok(f.clone());
        }
        let file = body.file.take().ok_or_else(|| {
            std::io::Error::other(format!("{} was already taken", body.path.display()))
        })?;
        let f = MappedFile::from_file(file, &body.path)?;
        if f.len() < body.start + body.len {
            return Err(std::io::Error::new(
                ErrorKind::UnexpectedEof,
                format!("{} shrank while being opened", body.path.display()),
            ));
        }
        if self.files.len() >= FILE_CACHE {
            self.files.clear();
        }
        self.files.insert(key, f.clone());
        Ok(f)
    }

    /// Turns a decided reply into what the connection writes.
    fn out(&mut self, reply: Reply) -> Out {
        let (status, out) = match reply {
            Reply::Bytes { status, bytes, .. } => (
                status,
                Out::Write {
                    bytes,
                    done: 0,
                    body: None,
                },
            ),
            Reply::File {
                status,
                head,
                mut body,
                ..
            } => match self.open(&mut body) {
                Ok(file) => (
                    status,
                    Out::Write {
                        bytes: head.finish(),
                        done: 0,
                        body: Some((file, body.start, body.len)),
                    },
                ),
                Err(e) => {
                    eprintln!("{APP}: {e}");
                    let date = self.date().to_string();
                    let bytes = serve::status_only(Status::InternalError, &date).into_bytes();
                    (
                        Status::InternalError,
                        Out::Write {
                            bytes,
                            done: 0,
                            body: None,
                        },
                    )
                }
            },
        };
        self.n.requests += 1;
        self.n.by_class[(status.code() / 100).min(5) as usize] += 1;
        out
    }

    /// Writes the response in progress: its head, then queues its body.
    /// `Ok(true)` when it is all written or queued (or there was none),
    /// `Ok(false)` when the ring has no room yet, `Err` if the connection broke.
    fn flush(
        &mut self,
        stack: &mut Stack<AppDriver>,
        c: &mut Conn,
        now: Instant,
        moved: &mut bool,
    ) -> Result<bool, ()> {
        let Some(out) = c.out.take() else {
            return Ok(true);
        };
        if stack.tcp_send_file_pending(c.conn) > 0 {
            // The previous body is not in the ring yet: writes would block.
            // Step again once it is.
            c.out = Some(out);
            stack.tcp_want_writable(c.conn).map_err(|_| ())?;
            return Ok(false);
        }
        let Out::Write {
            bytes,
            mut done,
            body,
        } = out;
        while done < bytes.len() {
            match stack.tcp_write(c.conn, &bytes[done..]) {
                Ok(n) => {
                    done += n;
                    *moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    c.out = Some(Out::Write { bytes, done, body });
                    return Ok(false);
                }
                Err(_) => return Err(()),
            }
        }
        if let Some((file, off, len)) = body {
            stack
                .tcp_send_file(c.conn, &file, off, len)
                .map_err(|_| ())?;
            self.n.body_bytes += len;
        }
        c.progress = now;
        Ok(true)
    }

    /// Moves what it can for one connection; `Keep(true)` if bytes moved.
    /// Requests are answered one after the other; while a response waits
    /// for ring space, request bytes are still read ahead into the head
    /// buffer, so the receive window stays open.
    fn serve(&mut self, stack: &mut Stack<AppDriver>, c: &mut Conn, now: Instant) -> Step {
        let mut moved = false;
        loop {
            // 1. The response in progress.
            let Ok(flushed) = self.flush(stack, c, now, &mut moved) else {
                return Step::Done;
            };
            if flushed {
                if c.closing {
                    if stack.tcp_send_file_pending(c.conn) > 0 {
                        // Close once the body is in the ring.
                        if stack.tcp_want_writable(c.conn).is_err() {
                            return Step::Done;
                        }
                        return Step::Keep(moved);
                    }
                    let _ = stack.tcp_close(c.conn);
                    return Step::Done;
                }
                // 2. The next request, if a whole head is here (parse again
                // only after new bytes came).
                let parsed = if c.unparsed {
                    request::parse(&c.buf[..c.filled])
                } else {
                    Ok(None)
                };
                match parsed {
                    Ok(Some((req, n))) => {
                        c.buf.copy_within(n..c.filled, 0);
                        c.filled -= n;
                        c.head_since = (c.filled > 0).then_some(now);
                        let date = self.date().to_string();
                        let reply = serve::respond(&req, self.root, &date);
                        c.closing = !reply.keep_alive();
                        c.out = Some(self.out(reply));
                        continue;
                    }
                    Ok(None) => c.unparsed = false,
                    Err(refusal) => {
                        let date = self.date().to_string();
                        c.out = Some(self.out(serve::refused(refusal, &date)));
                        c.closing = true;
                        c.filled = 0;
                        continue;
                    }
                }
                if c.peer_done {
                    // FIN with no (complete) request left: nothing more to answer.
                    c.closing = true;
                    continue;
                }
            } else if c.closing || c.peer_done {
                return Step::Keep(moved);
            }
            // 3. Read more request bytes (a full buffer is either refused with
            // 431 above or waits; an empty read would look like end of stream).
            if c.filled == c.buf.len() && !c.buf.is_empty() {
                if c.buf.len() == MAX_HEAD {
                    return Step::Keep(moved);
                }
                c.buf.resize((2 * c.buf.len()).min(MAX_HEAD), 0);
            }
            let read = if c.buf.is_empty() {
                stack.tcp_read(c.conn, &mut self.scratch).inspect(|&n| {
                    if n > 0 {
                        c.buf = vec![0; n.next_power_of_two().clamp(HEAD_START, MAX_HEAD)];
                        c.buf[..n].copy_from_slice(&self.scratch[..n]);
                    }
                })
            } else {
                stack.tcp_read(c.conn, &mut c.buf[c.filled..])
            };
            match read {
                Ok(0) => c.peer_done = true,
                Ok(n) => {
                    if c.filled == 0 {
                        c.head_since = Some(now);
                    }
                    c.filled += n;
                    c.unparsed = true;
                    c.progress = now;
                    moved = true;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return Step::Keep(moved),
                Err(_) => return Step::Done,
            }
            if !flushed {
                return Step::Keep(moved);
            }
        }
    }

    /// Header-read and idle timeouts.
    fn check_timeouts(
        &mut self,
        stack: &mut Stack<AppDriver>,
        c: &mut Conn,
        now: Instant,
        cli: &Cli,
    ) -> Verdict {
        let mark = (
            stack.tcp_send_file_pending(c.conn),
            stack.tcp_unacked(c.conn),
        );
        if mark != c.mark {
            c.mark = mark;
            c.progress = now;
        }
        if c.filled == 0 && c.out.is_none() && now - c.progress >= SCAN_EVERY {
            // Idle between requests: give the head buffer back.
            c.buf = Vec::new();
        }
        if let Some(since) = c.head_since
            && c.out.is_none()
            && !c.closing
            && now - since > Duration::from_secs(cli.header_timeout)
        {
            self.n.timeouts += 1;
            self.n.header_timeouts += 1;
            let date = self.date().to_string();
            c.out = Some(self.out(serve::status_only(Status::RequestTimeout, &date)));
            c.closing = true;
            c.filled = 0;
            c.head_since = None;
            c.progress = now;
            return Verdict::Serve;
        }
        if now - c.progress > Duration::from_secs(cli.idle_timeout) {
            self.n.timeouts += 1;
            if mark == (0, 0) && c.out.is_none() {
                let _ = stack.tcp_close(c.conn);
            } else {
                // The peer stopped reading: give up on the rest.
                let _ = stack.tcp_abort(c.conn);
            }
            return Verdict::Drop;
        }
        Verdict::Keep
    }
}

impl Service for Server<'_> {
    type Conn = Conn;

    fn open(&mut self, _: &mut Stack<AppDriver>, conn: TcpConn, now: Instant) -> Conn {
        Conn {
            conn,
            buf: Vec::new(),
            filled: 0,
            unparsed: false,
            out: None,
            closing: false,
            peer_done: false,
            progress: now,
            mark: (0, 0),
            head_since: None,
        }
    }

    fn step(
        &mut self,
        stack: &mut Stack<AppDriver>,
        _: TcpConn,
        c: &mut Conn,
        now: Instant,
    ) -> Step {
        self.serve(stack, c, now)
    }
}

fn summary(n: &Counters, s: &StackStats) -> String {
    let c = &n.by_class;
    format!(
        "requests {} (2xx {} 3xx {} 4xx {} 5xx {}), body bytes queued {}, connections {} (peak {}, open {}, timed out {}, of them 408 {}); {s}; copies per byte tx {:.3} (file bytes referenced {} copied {} pread {}; bytes sent by reference {})",
        n.requests,
        c[2],
        c[3],
        c[4],
        c[5],
        n.body_bytes,
        n.accepted,
        n.peak_conns,
        n.open,
        n.timeouts,
        n.header_timeouts,
        s.tx_copies_per_byte(),
        s.file_bytes_referenced,
        s.file_bytes_copied,
        s.file_bytes_pread,
        s.tcp_tx_payload_ref,
    )
}

impl AppCounters for Counters {
    fn add(&mut self, o: &Self) {
        self.requests += o.requests;
        for (a, b) in self.by_class.iter_mut().zip(o.by_class) {
            *a += b;
        }
        self.body_bytes += o.body_bytes;
        self.accepted += o.accepted;
        self.peak_conns += o.peak_conns;
        self.open += o.open;
        self.timeouts += o.timeouts;
        self.header_timeouts += o.header_timeouts;
    }
    fn fields(&self, s: &StackStats) -> String {
        stats_fields(self, s)
    }
}

fn stats_fields(n: &Counters, s: &StackStats) -> String {
    format!(
        concat!(
            "\"requests\":{},\"status_2xx\":{},\"status_3xx\":{},\"status_4xx\":{},\"status_5xx\":{},",
            "\"body_bytes\":{},\"connections\":{},\"peak_connections\":{},\"timeouts\":{},",
            "\"header_timeouts\":{},\"rx_packets\":{},\"rx_malformed\":{},",
            "\"app_write_bytes\":{},\"tcp_tx_payload\":{},\"tcp_tx_payload_ref\":{},",
            "\"file_bytes_referenced\":{},",
            "\"file_bytes_copied\":{},\"file_bytes_pread\":{},\"tx_copies_per_byte\":{:.6},",
            "\"lease_breaks\":{},\"file_transfers_aborted\":{},",
            "\"pool_in_use\":{},\"pool_capacity\":{},\"rx_drops\":{},\"tx_drops\":{},",
            "\"tcp_retransmits\":{},\"tcp_retransmitted_bytes\":{},\"tcp_rto_expiries\":{},",
            "\"tcp_fast_recoveries\":{},\"tcp_tail_loss_probes\":{},\"tcp_tlp_repairs\":{},",
            "\"late_tx_polls\":{},",
            "\"tcp_undos\":{},\"tcp_dsacks\":{},\"tcp_reorderings\":{},\"tcp_paws_rejects\":{},",
            "\"listen_syns\":{},\"listen_cookies_sent\":{},\"listen_cookies_accepted\":{},",
            "\"listen_cookies_rejected\":{},\"listen_half_open_evicted\":{},\"listen_half_open_expired\":{},",
            "\"memory_in_use\":{},\"memory_idle_releases\":{},\"memory_refused\":{},\"memory_socket_bytes\":{}"
        ),
        n.requests,
        n.by_class[2],
        n.by_class[3],
        n.by_class[4],
        n.by_class[5],
        n.body_bytes,
        n.accepted,
        n.peak_conns,
        n.timeouts,
        n.header_timeouts,
        s.driver.rx_packets,
        s.rx_malformed,
        s.app_write_bytes,
        s.tcp_tx_payload,
        s.tcp_tx_payload_ref,
        s.file_bytes_referenced,
        s.file_bytes_copied,
        s.file_bytes_pread,
        s.tx_copies_per_byte(),
        s.lease_breaks,
        s.file_transfers_aborted,
        // Both pools (the GSO pool's frames too, with --tx-gso).
        s.pool.in_use + s.gso_pool.map_or(0, |g| g.in_use),
        s.pool.capacity,
        s.rx_drops(),
        s.tx_drops(),
        s.tcp.retransmits,
        s.tcp.retransmitted_bytes,
        s.tcp.rto_expiries,
        s.tcp.fast_recoveries,
        s.tcp.tail_loss_probes,
        s.tcp.tlp_repairs,
        s.late_tx_polls,
        s.tcp.undos,
        s.tcp.dsacks,
        s.tcp.reorderings,
        s.tcp.paws_rejects,
        s.listen.syns,
        s.listen.cookies_sent,
        s.listen.cookies_accepted,
        s.listen.cookies_rejected,
        s.listen.half_open_evicted,
        s.listen.half_open_expired,
        s.memory.in_use,
        s.memory.idle_releases,
        s.memory.refused,
        s.memory.socket_bytes,
    )
}

fn check_root(root: &Path) -> anyhow::Result<Root> {
    let canon = root.canonicalize().with_context(|| {
        format!(
            "document root {}: cannot open it (give an existing directory with --root)",
            root.display()
        )
    })?;
    if !canon.is_dir() {
        anyhow::bail!(
            "document root {} is not a directory (give a directory with --root)",
            root.display()
        );
    }
    Root::open(&canon).with_context(|| {
        format!(
            "document root {}: cannot open it beneath itself (openat2 needs Linux 5.6 or later)",
            root.display()
        )
    })
}

fn main() -> ExitCode {
    let cli: Cli = parse_args(APP);
    if let Some(why) = cli.dev.queue_conflict() {
        usage_error(APP, &why);
    }
    run(APP, || {
        let root = check_root(&cli.root)?;
        let stop = stop_flag()?;
        let rx = cli.recv_buffer_kib as usize * 1024;
        let tx = cli.send_buffer_kib as usize * 1024;
        let n = cli.dev.queues as usize;
        let mut dev = cli.dev.clone();
        dev.tcp_buffers = Some((rx, tx));
        dev.send_mode = Some(cli.send_mode);
        // The budget is the process's: each queue's stack gets its share.
        dev.max_memory = cli.max_memory.map(|m| m / n);
        let mut stacks = dev.build_stacks()?;
        let listeners = stacks
            .iter_mut()
            .map(|s| s.tcp_listen(cli.port, cli.backlog as usize))
            .collect::<Result<Vec<_>, _>>()?;
        let (ip, _) = stacks[0].ip();
        println!(
            "{APP}: serving {} on http://{ip}:{}/ via {} (MTU {}){}",
            root.path().display(),
            cli.port,
            queues::via(&stacks),
            stacks[0].driver().capabilities().mtu,
            if n > 1 {
                format!("; {}", queues::steering(&dev))
            } else {
                String::new()
            }
        );
        dev.print_notes(APP);
        let json = StatsJson::<Counters>::new(cli.stats_json.clone(), n);
        let results = queues::serve(dev.stats, &stop, stacks, |q, stack, ticker| {
            let srv = Server {
                root: &root,
                files: HashMap::new(),
                n: Counters::default(),
                date: (0, String::new()),
                scratch: vec![0; MAX_HEAD],
            };
            let label = if n > 1 {
                format!("queue {q}: ")
            } else {
                String::new()
            };
            let mut json = json.ticker(q);
            Ok(serve_queue(
                &cli,
                srv,
                stack,
                listeners[q],
                ticker,
                &stop,
                &label,
                |stack, c| json.tick(APP, stack, || *c),
            ))
        });
        let (done, err) = queues::split(APP, results);
        if n > 1 {
            for (q, c, s) in &done {
                println!("{APP}: queue {q} stopped; {}", summary(c, s));
            }
        }
        let all: Vec<(Counters, StackStats)> = done.into_iter().map(|(_, c, s)| (c, s)).collect();
        if let Some(e) = err {
            return Err(e);
        }
        let mut t = Counters::default();
        for (c, _) in &all {
            t.add(c);
        }
        let stacks: Vec<StackStats> = all.iter().map(|(_, s)| *s).collect();
        // Counted after each driver let go of every frame (AF_XDP lends some to the kernel).
        println!(
            "{APP}: stopped; {}{}",
            if n > 1 {
                format!("total over {n} queues: ")
            } else {
                String::new()
            },
            summary(&t, &queues::total(&stacks))
        );
        json.write_final(&all)
    })
}

/// One queue's serving loop, until `stop`: steps connections on the
/// stack's events, scans for timeouts, says when the memory budget is
/// reached and left (lines prefixed with `label`), and calls `report`
/// after each turn with the counters so far. Returns the counters.
#[allow(clippy::too_many_arguments)]
fn serve_queue(
    cli: &Cli,
    mut srv: Server<'_>,
    stack: &mut Stack<AppDriver>,
    listener: TcpListener,
    ticker: &mut StatsTicker,
    stop: &std::sync::atomic::AtomicBool,
    label: &str,
    mut report: impl FnMut(&Stack<AppDriver>, &Counters),
) -> Counters {
    let mut conns = ConnLoop::new(stack, listener, cli.max_conns as usize);
    let mut last_scan = Instant::now();
    let mut at_limit = false;
    while !stop.load(Ordering::Relaxed) {
        conns.turn(stack, &mut srv);
        let now = stack.poll_time();
        srv.n.accepted = conns.accepted;
        srv.n.peak_conns = conns.peak;
        srv.n.open = conns.len();
        if now - last_scan >= SCAN_EVERY {
            last_scan = now;
            conns.retain(stack, |stack, _, c| {
                match srv.check_timeouts(stack, c, now, cli) {
                    Verdict::Keep => true,
                    Verdict::Serve => matches!(srv.serve(stack, c, now), Step::Keep(_)),
                    Verdict::Drop => false,
                }
            });
        }
        if stack.memory_at_limit() != at_limit {
            at_limit = !at_limit;
            let m = stack.memory_stats();
            if at_limit {
                println!(
                    "{APP}: {label}memory budget reached ({} of {} MiB in use, {} connections): refusing new connections until some close or go idle (raise --max-memory, or lower --send-buffer-kib)",
                    m.in_use >> 20,
                    m.budget.unwrap_or(0) >> 20,
                    conns.len()
                );
            } else {
                println!(
                    "{APP}: {label}memory below the budget again ({} MiB in use): accepting connections ({} refused so far)",
                    m.in_use >> 20,
                    m.refused
                );
            }
        }
        ticker.tick(APP, stack);
        report(stack, &srv.n);
    }
    srv.n.open = conns.len();
    srv.n
}
