//! The harness of tests/sendfile.rs: two stacks over the in-memory wire,
//! connections that send a header and file ranges, a receiver that hashes
//! what arrives.

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use zcstack::{Clock, MappedFile, SendMode, Stack, TcpConn, TcpState};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Pool, PoolConfig};

pub const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
pub const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

static SERIAL: Mutex<()> = Mutex::new(());

pub fn serial() -> MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// A file in the temp directory, deleted on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, data: &[u8]) -> TempFile {
        let p = std::env::temp_dir().join(format!("zc-sendfile-{}-{name}", std::process::id()));
        let mut f = std::fs::File::create(&p).unwrap();
        f.write_all(data).unwrap();
        TempFile(p)
    }
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn hex(d: &[u8]) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

pub struct Bed {
    pub a: Stack<WireEnd>,
    pub b: Stack<WireEnd>,
    pub pa: Pool,
    pub pb: Pool,
    pub sim: Option<Arc<AtomicI64>>,
    /// Bytes each receiving connection reads per round (throttles the sender).
    pub read_cap: usize,
    /// Queue the files only once every connection is established.
    pub start_together: bool,
}

pub struct BedCfg {
    pub mode: SendMode,
    pub tx_ring: usize,
    pub rx_ring: usize,
    pub frames: u32,
    pub simulated: bool,
}

impl Default for BedCfg {
    fn default() -> Self {
        BedCfg {
            mode: SendMode::Copy,
            tx_ring: 256 * 1024,
            rx_ring: 256 * 1024,
            frames: 4096,
            simulated: false,
        }
    }
}

pub fn bed(cfg: BedCfg) -> Bed {
    let pa = PoolConfig::new().frames(cfg.frames).build().unwrap();
    let pb = PoolConfig::new().frames(cfg.frames).build().unwrap();
    let (ea, eb) = wire::pair(pa.clone(), pb.clone(), WireConfig::default());
    let sim = cfg.simulated.then(|| Arc::new(AtomicI64::new(0)));
    let clock = sim.clone().map(Clock::Manual).unwrap_or_default();
    let a = Stack::builder(ea)
        .ip(A, 24)
        .seed(1)
        .clock(clock.clone())
        .tcp_buffers(cfg.rx_ring, cfg.tx_ring)
        .send_mode(cfg.mode)
        .build()
        .unwrap();
    let b = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .clock(clock)
        .tcp_buffers(cfg.rx_ring, cfg.tx_ring)
        .build()
        .unwrap();
    Bed {
        a,
        b,
        pa,
        pb,
        sim,
        read_cap: usize::MAX,
        start_together: false,
    }
}

/// What one receiving connection got.
#[derive(Default)]
pub struct Got {
    pub bytes: u64,
    pub sha: Sha256,
    /// Saw end of stream (FIN) or a reset.
    pub ended: bool,
    pub reset: bool,
}

/// One sending connection's script: optional header, then file ranges, then close.
pub struct Send {
    pub header: Vec<u8>,
    pub ranges: Vec<(Arc<MappedFile>, u64, u64)>,
}

impl Bed {
    pub fn step(&mut self, progress: bool) {
        let busy = self.a.poll() | self.b.poll() | progress;
        if let Some(us) = &self.sim {
            let step = if busy {
                Duration::from_micros(20)
            } else {
                [self.a.poll_delay(), self.b.poll_delay()]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(Duration::from_millis(1))
                    .max(Duration::from_micros(20))
            };
            us.fetch_add(step.as_micros() as i64, Ordering::Relaxed);
        }
    }

    /// Runs every script on its own connection a → b; `each_round` runs once
    /// per round (truncators, map counting). Returns what b received per
    /// connection, in script order.
    pub fn run(
        &mut self,
        sends: &[Send],
        limit: Duration,
        mut each_round: impl FnMut(&mut Bed, u64),
    ) -> Vec<Got> {
        let backlog = if self.start_together {
            sends.len()
        } else {
            sends.len().min(256)
        };
        let listener = self.b.tcp_listen(5001, backlog).unwrap();
        let mut clients: Vec<(TcpConn, usize, bool)> = Vec::new(); // conn, header written, queued
        let mut by_port = std::collections::HashMap::new();
        let mut assigned = 0;
        let mut servers: Vec<Option<TcpConn>> = vec![None; sends.len()];
        let mut got: Vec<Got> = (0..sends.len()).map(|_| Got::default()).collect();
        let mut accepted = Vec::new();
        let deadline = Instant::now() + limit;
        let mut round = 0u64;
        let mut next = 0;
        loop {
            assert!(
                Instant::now() < deadline,
                "transfer stalled: {} of {} connections ended",
                got.iter().filter(|g| g.ended).count(),
                sends.len()
            );
            // Open connections in waves the listener's backlog can take.
            while next < sends.len() && (self.start_together || clients.len() - assigned < 256) {
                let c = self.a.tcp_connect(SocketAddrV4::new(B, 5001)).unwrap();
                by_port.insert(self.a.tcp_local(c).unwrap().port(), clients.len());
                clients.push((c, 0, false));
                next += 1;
            }
            let mut progress = false;
            while let Some(s) = self.b.tcp_accept(listener) {
                accepted.push(s);
                progress = true;
            }
            let hold = self.start_together
                && (next < sends.len()
                    || clients
                        .iter()
                        .any(|(c, _, q)| !q && self.a.tcp_state(*c) != TcpState::Established));
            for (i, (c, hdr, queued)) in clients.iter_mut().enumerate() {
                if hold || *queued || self.a.tcp_state(*c) != TcpState::Established {
                    continue;
                }
                let s = &sends[i];
                if *hdr < s.header.len() {
                    match self.a.tcp_write(*c, &s.header[*hdr..]) {
                        Ok(n) => *hdr += n,
                        Err(e) if e.kind() == ErrorKind::WouldBlock => continue,
                        Err(e) => panic!("header write: {e}"),
                    }
                    if *hdr < s.header.len() {
                        continue;
                    }
                }
                for (f, off, len) in &s.ranges {
                    self.a.tcp_send_file(*c, f, *off, *len).unwrap();
                }
                self.a.tcp_close(*c).unwrap();
                *queued = true;
                progress = true;
            }
            // Server side: map accepted connections to scripts by the client's port.
            for s in accepted.drain(..) {
                let peer = self.b.tcp_peer(s).unwrap();
                servers[by_port[&peer.port()]] = Some(s);
                assigned += 1;
            }
            for (i, s) in servers.iter_mut().enumerate() {
                let Some(conn) = *s else { continue };
                let g = &mut got[i];
                let mut budget = self.read_cap;
                while budget > 0 {
                    match self.b.tcp_read_with(conn, |d| {
                        let d = &d[..d.len().min(budget)];
                        g.sha.update(d);
                        (d.len(), d.len())
                    }) {
                        Ok(Some(n)) => {
                            g.bytes += n as u64;
                            budget -= n;
                            progress = true;
                        }
                        Ok(None) => {
                            g.ended = true;
                            break;
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(e) if e.kind() == ErrorKind::NotConnected => break,
                        Err(e) => panic!("read: {e}"),
                    }
                }
                if !g.ended && self.b.tcp_state(conn) == TcpState::Closed {
                    g.ended = true;
                    g.reset = true;
                }
                if g.ended {
                    self.b.tcp_close(conn).unwrap();
                    *s = None;
                }
            }
            each_round(self, round);
            round += 1;
            if next == sends.len() && got.iter().all(|g| g.ended) {
                break;
            }
            self.step(progress);
        }
        self.b.tcp_unlisten(listener);
        for _ in 0..5000 {
            self.step(false);
        }
        got
    }

    pub fn assert_pools_full(self) {
        let Bed { a, b, pa, pb, .. } = self;
        drop((a, b));
        assert_eq!(pa.stats().free, pa.capacity(), "pool a is full again");
        assert_eq!(pb.stats().free, pb.capacity(), "pool b is full again");
    }
}

/// One connection a → b on `port`, established and accepted.
pub fn connect_pair(bed: &mut Bed, port: u16) -> (TcpConn, TcpConn) {
    let listener = bed.b.tcp_listen(port, 4).unwrap();
    let c = bed.a.tcp_connect(SocketAddrV4::new(B, port)).unwrap();
    let mut s = None;
    for _ in 0..1000 {
        bed.step(false);
        s = s.or_else(|| bed.b.tcp_accept(listener));
        if s.is_some() && bed.a.tcp_state(c) == TcpState::Established {
            break;
        }
    }
    bed.b.tcp_unlisten(listener);
    (c, s.expect("connection accepted"))
}

pub fn sha_of(parts: &[&[u8]]) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p);
    }
    hex(&h.finalize())
}
