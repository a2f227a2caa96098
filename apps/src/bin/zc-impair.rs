//! zc-impair: an impairing relay. It forwards Ethernet frames both ways
//! between two interfaces (two veth ends in a middle namespace) over AF_XDP
//! and, per direction and seeded, loses, delays, reorders, duplicates,
//! corrupts and rate-limits them — netem's job, which this kernel lacks.
//!
//! ```text
//! zc-impair --a zcia0 --b zcib0 --loss 1% --delay 5ms --jitter 2ms --reorder 20%:3ms
//! zc-impair --a zcia0 --b zcib0 --rate 100mbit --queue 256KiB --b2a-loss 0.1% --seed 7
//! ```
//! Each interface has its own AF_XDP socket and pool (its UMEM), so a frame
//! crosses from one pool into the other by one copy, made when it leaves
//! the impairment (a dropped frame is never copied); the copies are counted.
//! Frames are sent exactly as received (no checksum offload asked), so a
//! corrupted frame reaches the receiver with a wrong checksum.
//!
//! The loop reads the clock once per iteration, moves a burst each way,
//! spins briefly when idle, then sleeps in `poll(2)` on both sockets until
//! input or the next held frame is due (timer slack 1 µs).
#![deny(unsafe_code)]

use std::num::NonZeroU64;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches, Parser};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use serde_json::json;
use zcstack_apps::{impair, run, stop_flag, usage_exit};
use zcstack_driver::impair::{ImpairConfig, ImpairStats, Impairment};
use zcstack_driver::xdp::{self, AttachMode, Xdp, XdpConfig};
use zcstack_driver::{Driver, DriverStats, Frame, PoolConfig};

const APP: &str = "zc-impair";
/// Frames received per interface per iteration.
const BURST: usize = 64;
/// Frames waiting for a full TX ring, per interface, at most; more stay
/// in the impairment (delayed, like a full NIC queue).
const TX_QUEUE: usize = 1024;
/// AF_XDP ring entries.
const RING: u32 = 2048;
/// Idle iterations spent spinning before sleeping.
const SPIN: u32 = 256;
/// A held frame due sooner than this is waited for by yielding, not sleeping.
const MIN_SLEEP_US: i64 = 30;
/// Longest sleep (the Ctrl-C flag is checked after it).
const MAX_SLEEP_US: i64 = 100_000;

#[derive(Parser, Debug)]
#[command(
    name = "zc-impair",
    version,
    about = "Impairing L2 relay between two interfaces over AF_XDP (loss, delay, reordering, \
             duplication, corruption, rate limit), per direction and seeded",
    after_help = "Directions: A to B is what arrives on --a and leaves on --b. Each impairment \
flag applies to both directions; --a2b-NAME and --b2a-NAME (e.g. --b2a-loss 0) set one \
direction only and win over the common flag. Run it in its own namespace between two veth ends \
whose kernel peers have tso/gso/gro and tx checksum offload off (scripts/lossbed.sh does this). \
Ctrl-C prints the counters per direction."
)]
struct Cli {
    /// Interface A (frames arriving here go to B).
    #[arg(long, value_name = "IFACE", value_parser = zcstack_apps::parse_iface)]
    a: String,
    /// Interface B (frames arriving here go to A).
    #[arg(long, value_name = "IFACE", value_parser = zcstack_apps::parse_iface)]
    b: String,
    /// Seed of A to B's random choices; B to A uses SEED + 1 (override
    /// with --a2b-seed / --b2a-seed).
    #[arg(long, value_name = "N", default_value_t = 1)]
    seed: u64,
    /// Where the XDP programs run: native, generic or auto.
    #[arg(long, value_name = "MODE", default_value_t = AttachMode::Auto)]
    xdp_mode: AttachMode,
    /// Print one line of figures per second.
    #[arg(long)]
    stats: bool,
    /// At exit, write every counter as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    stats_json: Option<PathBuf>,
}

fn main() -> ExitCode {
    let m = impair::add_flags(Cli::command())
        .try_get_matches()
        .unwrap_or_else(|e| usage_exit(APP, e));
    let cli = Cli::from_arg_matches(&m).unwrap_or_else(|e| usage_exit(APP, e));
    let usage = |msg: String| -> ! {
        eprintln!("{APP}: {msg} (try --help)");
        std::process::exit(2);
    };
    let (a2b, b2a) = impair::configs(&m, cli.seed).unwrap_or_else(|e| usage(e));
    if cli.a == cli.b {
        usage(format!(
            "--a and --b are both {}: give two interfaces",
            cli.a
        ));
    }
    run(APP, || relay(&cli, a2b, b2a))
}

/// One interface: its socket and the frames waiting for its TX ring.
struct Side {
    xdp: Xdp,
    tx: Vec<Frame>,
    rx: Vec<Frame>,
}

/// One direction: the impairment and what forwarding cost.
struct Dir {
    name: &'static str,
    imp: Impairment,
    due: Vec<Frame>,
    /// Frames (and bytes) copied from the receiving pool into the sending one.
    copied_frames: u64,
    copied_bytes: u64,
    /// Due frames dropped: the sending pool was empty.
    no_frame: u64,
    /// Due frames dropped: larger than the sending interface's frames.
    too_big: u64,
}

impl Dir {
    fn new(name: &'static str, cfg: ImpairConfig) -> anyhow::Result<Dir> {
        Ok(Dir {
            name,
            imp: cfg.build()?,
            due: Vec::with_capacity(TX_QUEUE),
            copied_frames: 0,
            copied_bytes: 0,
            no_frame: 0,
            too_big: 0,
        })
    }

    /// Receives a burst on `from`, impairs it, and sends what is due on `to`.
    /// Returns whether anything moved.
    fn forward(&mut self, from: &mut Side, to: &mut Side, now: i64) -> anyhow::Result<bool> {
        let got = from
            .xdp
            .rx_burst(&mut from.rx, BURST)
            .with_context(|| format!("receiving on {}", from.xdp.iface()))?;
        for f in from.rx.drain(..) {
            self.imp.push(now, f);
        }
        let room = TX_QUEUE.saturating_sub(to.tx.len());
        let due = self.imp.pop_due_max(now, &mut self.due, room);
        if due > 0 {
            let pool = to.xdp.pool().clone();
            let cap = pool.frame_capacity();
            for f in self.due.drain(..) {
                let n = f.len();
                if n > cap {
                    self.too_big += 1;
                    continue;
                }
                let Some(mut out) = pool.alloc() else {
                    self.no_frame += 1;
                    continue;
                };
                out.room_mut()[..n].copy_from_slice(f.data());
                out.set_len(n);
                self.copied_frames += 1;
                self.copied_bytes += n as u64;
                to.tx.push(out);
            }
        }
        let pending = to.tx.len();
        if pending > 0 {
            to.xdp
                .tx_burst(&mut to.tx)
                .with_context(|| format!("sending on {}", to.xdp.iface()))?;
        }
        Ok(got > 0 || pending > 0)
    }

    fn line(&self) -> String {
        let s = self.imp.stats();
        format!(
            "{}: offered {} frames {} bytes, forwarded {} {} bytes, dropped random {} burst {} \
             queue {} limit {}, duplicated {}, corrupted {}, reordered {}, max queue {} bytes, \
             copied {} frames {} bytes, no frame {}, too big {}",
            self.name,
            s.offered,
            s.offered_bytes,
            s.forwarded,
            s.forwarded_bytes,
            s.dropped_random,
            s.dropped_burst,
            s.dropped_queue,
            s.dropped_limit,
            s.duplicated,
            s.corrupted,
            s.reordered,
            s.max_queue_bytes,
            self.copied_frames,
            self.copied_bytes,
            self.no_frame,
            self.too_big
        )
    }

    fn json(&self) -> serde_json::Value {
        let s: ImpairStats = self.imp.stats();
        json!({
            "config": self.imp.config().to_string(),
            "offered": s.offered,
            "offered_bytes": s.offered_bytes,
            "forwarded": s.forwarded,
            "forwarded_bytes": s.forwarded_bytes,
            "dropped_random": s.dropped_random,
            "dropped_burst": s.dropped_burst,
            "dropped_queue": s.dropped_queue,
            "dropped_limit": s.dropped_limit,
            "duplicated": s.duplicated,
            "duplicate_no_frame": s.duplicate_no_frame,
            "corrupted": s.corrupted,
            "reordered": s.reordered,
            "max_queue_bytes": s.max_queue_bytes,
            "held": self.imp.held(),
            "copied_frames": self.copied_frames,
            "copied_bytes": self.copied_bytes,
            "dropped_no_frame": self.no_frame,
            "dropped_too_big": self.too_big,
        })
    }
}

/// Opens AF_XDP on `iface` with a pool for `held` frames held in the
/// impairment besides the rings, sending frames exactly as given.
fn open(iface: &str, mode: AttachMode, held: usize) -> anyhow::Result<Side> {
    let mtu = xdp::interface_mtu(iface)?;
    let frames = held + 4 * RING as usize + TX_QUEUE;
    let pool = PoolConfig::new()
        .frames(frames as u32)
        // Frames for the MTU, also in generic mode: its 64 KiB GRO packets
        // need GRO on, and a relay's interfaces have it off (lossbed.sh).
        .frame_size(xdp::frame_size_for_mtu(mtu))
        .build()
        .with_context(|| format!("creating the buffer pool for {iface}"))?;
    let cfg = XdpConfig::new(iface)
        .mode(mode)
        .ring_size(RING)
        .tx_checksum(false)
        .build()?;
    Ok(Side {
        xdp: Xdp::open(&cfg, pool)?,
        tx: Vec::with_capacity(TX_QUEUE),
        rx: Vec::with_capacity(BURST),
    })
}

fn driver_json(d: &DriverStats) -> serde_json::Value {
    let k = &d.kernel;
    json!({
        "rx_packets": d.rx_packets, "rx_bytes": d.rx_bytes,
        "tx_packets": d.tx_packets, "tx_bytes": d.tx_bytes,
        "rx_dropped_no_frame": d.rx_dropped_no_frame, "rx_errors": d.rx_errors,
        "tx_errors": d.tx_errors, "tx_kicks": d.tx_kicks,
        "kernel_rx_dropped": k.rx_dropped, "kernel_rx_ring_full": k.rx_ring_full,
        "kernel_fill_ring_empty": k.fill_ring_empty,
        "kernel_invalid_descs": k.rx_invalid_descs + k.tx_invalid_descs,
    })
}

fn relay(cli: &Cli, a2b: ImpairConfig, b2a: ImpairConfig) -> anyhow::Result<()> {
    let stop = stop_flag()?;
    let mut a = open(&cli.a, cli.xdp_mode, a2b.frame_limit())?;
    let mut b = open(&cli.b, cli.xdp_mode, b2a.frame_limit())?;
    let mut ab = Dir::new("a2b", a2b)?;
    let mut ba = Dir::new("b2a", b2a)?;
    // Sleeps end when asked, not 50 µs later: held frames are due to the µs.
    let _ = rustix::thread::set_current_timer_slack(NonZeroU64::new(1000));
    eprintln!(
        "{APP}: relaying A {} <-> B {}\n{APP}:   a2b: {}\n{APP}:   b2a: {}",
        a.xdp.capabilities().description,
        b.xdp.capabilities().description,
        ab.imp.config(),
        ba.imp.config()
    );
    let epoch = Instant::now();
    let (mut idle, mut iters) = (0u32, 0u64);
    let mut last_tick = (Instant::now(), 0u64, 0u64);
    while !stop.load(Ordering::Relaxed) {
        let now = epoch.elapsed().as_micros() as i64;
        let busy = ab.forward(&mut a, &mut b, now)? | ba.forward(&mut b, &mut a, now)?;
        iters += 1;
        if cli.stats
            && iters.is_multiple_of(1024)
            && last_tick.0.elapsed() >= Duration::from_secs(1)
        {
            let (fa, fb) = (ab.imp.stats().forwarded, ba.imp.stats().forwarded);
            let secs = last_tick.0.elapsed().as_secs_f64();
            eprintln!(
                "{APP}: a2b {:.1}k frames/s, b2a {:.1}k frames/s, held {} + {}",
                (fa - last_tick.1) as f64 / secs / 1e3,
                (fb - last_tick.2) as f64 / secs / 1e3,
                ab.imp.held(),
                ba.imp.held()
            );
            last_tick = (Instant::now(), fa, fb);
        }
        if busy {
            idle = 0;
            continue;
        }
        idle = idle.saturating_add(1);
        if idle < SPIN {
            std::hint::spin_loop();
            continue;
        }
        let next = [ab.imp.next_due(), ba.imp.next_due()]
            .into_iter()
            .flatten()
            .min();
        let wait = next.map_or(MAX_SLEEP_US, |d| (d - now).clamp(0, MAX_SLEEP_US));
        if wait < MIN_SLEEP_US {
            std::thread::yield_now();
            continue;
        }
        let mut fds = [
            PollFd::from_borrowed_fd(a.xdp.as_fd(), PollFlags::IN),
            PollFd::from_borrowed_fd(b.xdp.as_fd(), PollFlags::IN),
        ];
        let t = Timespec {
            tv_sec: wait / 1_000_000,
            tv_nsec: (wait % 1_000_000) * 1000,
        };
        match poll(&mut fds, Some(&t)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(e).context("waiting on the sockets"),
        }
    }
    let secs = epoch.elapsed().as_secs_f64();
    eprintln!("{APP}: {}", ab.line());
    eprintln!("{APP}: {}", ba.line());
    for (name, side) in [("A", &a), ("B", &b)] {
        let s = side.xdp.stats();
        let k = s.kernel;
        eprintln!(
            "{APP}: {name} {}: rx {} frames, tx {} frames, kernel drops: rx ring full {}, \
             fill ring empty {}, other {}; tx errors {}",
            side.xdp.iface(),
            s.rx_packets,
            s.tx_packets,
            k.rx_ring_full,
            k.fill_ring_empty,
            k.rx_dropped,
            s.tx_errors
        );
    }
    if let Some(path) = &cli.stats_json {
        let v = json!({
            "seconds": secs,
            "a": cli.a, "b": cli.b,
            "a2b": ab.json(), "b2a": ba.json(),
            "a_driver": driver_json(&a.xdp.stats()),
            "b_driver": driver_json(&b.xdp.stats()),
        });
        std::fs::write(path, format!("{v}\n"))
            .with_context(|| format!("writing --stats-json {}", path.display()))?;
    }
    Ok(())
}
