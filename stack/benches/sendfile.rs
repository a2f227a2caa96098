//! Copy vs send by reference for `tcp_send_file`, over the in-memory wire (not a test:
//! it prints a table). Both stacks run on this thread, so the CPU time is
//! sender plus receiver; the receiver reads in place and discards.
//!
//! ```sh
//! cargo bench -p zcstack --bench sendfile            # full: six cases, 3 rounds
//! cargo bench -p zcstack --bench sendfile -- --quick # 1/8 of the bytes, 1 round
//! ZC_BENCH_ONLY=0,1 ZC_BENCH_ROUNDS=5 cargo bench -p zcstack --bench sendfile
//! ```
//!
//! Every send ring is written once before the timed part (a server's rings
//! are recycled and warm; a fresh ring's first-touch page faults would be
//! charged to copy mode only). CPU seconds are the process's user + system
//! time (getrusage) for sender and receiver together, per GB delivered.
//!
//! Copy and reference runs alternate within each round, so both see the same
//! background load; the table shows medians over the rounds.

use std::io::ErrorKind;
use std::io::Write;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use zcstack::{MappedFile, SendMode, Stack, TcpConn, TcpState};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);

#[derive(Clone)]
struct Case {
    name: String,
    conns: usize,
    tx_ring: usize,
    rx_ring: usize,
    per_conn: u64,
    mtu: usize,
}

struct Outcome {
    secs: f64,
    cpu: f64,
    bytes: u64,
    referenced: u64,
    copies: f64,
}

fn cpu_now() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn run(case: &Case, mode: SendMode, file: &Arc<MappedFile>) -> Outcome {
    let frame = if case.mtu > 1500 { 16384 } else { 2048 };
    let frames = (1u32 << 27) / frame; // 128 MiB per pool
    let pa = PoolConfig::new()
        .frames(frames)
        .frame_size(frame)
        .build()
        .unwrap();
    let pb = PoolConfig::new()
        .frames(frames)
        .frame_size(frame)
        .build()
        .unwrap();
    let wc = WireConfig {
        mtu: case.mtu,
        queue_len: 4096,
    };
    let (ea, eb) = wire::pair(pa, pb, wc);
    let mut a = Stack::builder(ea)
        .ip(A, 24)
        .seed(1)
        .tcp_buffers(64 * 1024, case.tx_ring)
        .send_mode(mode)
        .build()
        .unwrap();
    let mut b = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .tcp_buffers(case.rx_ring, 64 * 1024)
        .build()
        .unwrap();
    let listener = b.tcp_listen(80, case.conns).unwrap();
    let mut clients: Vec<(TcpConn, bool)> = (0..case.conns)
        .map(|_| (a.tcp_connect(SocketAddrV4::new(B, 80)).unwrap(), false))
        .collect();
    let mut servers = Vec::new();
    // Connect everything first; time only the transfers.
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.len() < case.conns
        || clients
            .iter()
            .any(|(c, _)| a.tcp_state(*c) != TcpState::Established)
    {
        assert!(Instant::now() < deadline, "connections not set up");
        a.poll();
        b.poll();
        while let Some(s) = b.tcp_accept(listener) {
            servers.push(s);
        }
    }
    // Warm every send ring once (steady state: a server's rings are
    // recycled, not freshly mapped), and let it drain.
    let zeros = vec![0u8; case.tx_ring];
    let mut warm = vec![0usize; case.conns];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert!(Instant::now() < deadline, "warm-up stalled");
        let mut done = true;
        for (i, (c, _)) in clients.iter().enumerate() {
            if warm[i] < zeros.len() {
                done = false;
                if let Ok(n) = a.tcp_write(*c, &zeros[warm[i]..]) {
                    warm[i] += n;
                }
            } else if a.tcp_unacked(*c) > 0 {
                done = false;
            }
        }
        for &s in &servers {
            while let Ok(Some(_)) = b.tcp_read_with(s, |d| (d.len(), ())) {}
        }
        if done {
            break;
        }
        a.poll();
        b.poll();
    }
    let st0 = a.stats();
    let start = Instant::now();
    let cpu0 = cpu_now();
    let flen = file.len();
    for (c, queued) in &mut clients {
        let mut left = case.per_conn;
        while left > 0 {
            let n = left.min(flen);
            a.tcp_send_file(*c, file, 0, n).unwrap();
            left -= n;
        }
        a.tcp_close(*c).unwrap();
        *queued = true;
    }
    let mut open = servers.clone();
    let mut bytes = 0u64;
    let limit = Instant::now() + Duration::from_secs(600);
    while !open.is_empty() {
        assert!(Instant::now() < limit, "benchmark transfer stalled");
        a.poll();
        b.poll();
        open.retain(|&s| {
            loop {
                match b.tcp_read_with(s, |d| (d.len(), d.len())) {
                    Ok(Some(n)) => bytes += n as u64,
                    Ok(None) => {
                        b.tcp_close(s).unwrap();
                        return false;
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                    Err(e) => panic!("read: {e}"),
                }
            }
        });
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu = cpu_now() - cpu0;
    let st = a.stats();
    assert_eq!(
        bytes,
        case.per_conn * case.conns as u64,
        "every byte arrived"
    );
    Outcome {
        secs,
        cpu,
        bytes,
        referenced: st.file_bytes_referenced - st0.file_bytes_referenced,
        copies: {
            // Copies per byte of the timed part only (the warm-up's writes are not in it).
            let handed = st.file_bytes() - st0.file_bytes();
            let into = st.file_bytes_copied + st.file_bytes_pread
                - st0.file_bytes_copied
                - st0.file_bytes_pread;
            (into + st.tcp_tx_payload - st0.tcp_tx_payload) as f64 / handed as f64
        },
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rounds: usize = std::env::var("ZC_BENCH_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(if quick { 1 } else { 3 });
    let gib: u64 = 1 << 30;
    let mib: u64 = 1 << 20;
    let scale = if quick { 8 } else { 1 };
    let case = |conns: usize, tx_ring: usize, per_conn: u64, mtu: usize| Case {
        name: format!(
            "{conns} conn x {} MiB, {} KiB rings, MTU {mtu}",
            (per_conn / scale) >> 20,
            tx_ring >> 10
        ),
        conns,
        tx_ring,
        rx_ring: 1 << 20,
        per_conn: per_conn / scale,
        mtu,
    };
    let mut cases = vec![
        case(1, 1 << 20, gib, 1500),
        case(256, 4 << 20, 16 * mib, 1500),
        case(256, 256 << 10, 8 * mib, 1500),
        case(16, 1 << 20, 64 * mib, 1500),
        case(1, 1 << 20, gib, 9000),
        case(64, 4 << 20, 16 * mib, 9000),
    ];
    if let Ok(extra) = std::env::var("ZC_BENCH_CASES") {
        // e.g. "1,4194304,1048576,1073741824,9000" (conns,tx,rx,bytes,mtu)
        for spec in extra.split(';') {
            let v: Vec<usize> = spec.split(',').map(|x| x.parse().unwrap()).collect();
            cases.push(Case {
                name: format!(
                    "{} conn x {} MiB, {} KiB rings, MTU {}",
                    v[0],
                    v[3] >> 20,
                    v[1] >> 10,
                    v[4]
                ),
                conns: v[0],
                tx_ring: v[1],
                rx_ring: v[2],
                per_conn: v[3] as u64,
                mtu: v[4],
            });
        }
    }
    if let Ok(only) = std::env::var("ZC_BENCH_ONLY") {
        let keep: Vec<usize> = only.split(',').map(|x| x.parse().unwrap()).collect();
        cases = cases
            .into_iter()
            .enumerate()
            .filter(|(i, _)| keep.contains(i))
            .map(|(_, c)| c)
            .collect();
    }
    // 1 GiB of random bytes on tmpfs (/dev/shm), or a sparse file in the
    // temp directory where there is no /dev/shm, or ZC_BENCH_FILE. Either
    // way the pages come from the page cache, like any served file's.
    let given = std::env::var_os("ZC_BENCH_FILE").map(PathBuf::from);
    let shm = Path::new("/dev/shm");
    let path: PathBuf = given.clone().unwrap_or_else(|| {
        let dir = if shm.is_dir() {
            shm.to_path_buf()
        } else {
            std::env::temp_dir()
        };
        dir.join(format!("zc-bench-sendfile-{}", std::process::id()))
    });
    let _remove = (given.is_none()).then(|| Remove(path.clone()));
    if given.is_none() {
        let mut f = std::fs::File::create(&path).unwrap();
        if path.starts_with(shm) {
            let mut rng = fastrand::Rng::with_seed(5);
            let mut buf = vec![0u8; 1 << 20];
            for _ in 0..(gib >> 20) {
                rng.fill(&mut buf);
                f.write_all(&buf).unwrap();
            }
        } else {
            f.set_len(gib).unwrap();
        }
    }
    // Warm the page cache so no mode pays for reading the file in.
    {
        use std::io::Read;
        let mut f = std::fs::File::open(&path).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).unwrap() > 0 {}
    }
    let file = MappedFile::open(&path).unwrap();
    println!("file: {} ({} MiB)", path.display(), file.len() >> 20);
    assert!(file.is_leased(), "bench file leased (reference needs it)");
    let date = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    println!("copy vs reference, in-memory wire, {rounds} round(s), medians; {date}");
    println!(
        "| case | mode | MB/s | CPU s per GB | referenced | tx copies/byte | reference/copy MB/s |"
    );
    println!("|---|---|---|---|---|---|---|");
    for case in &cases {
        let mut res: [Vec<Outcome>; 2] = [Vec::new(), Vec::new()];
        for r in 0..rounds {
            // Alternate the order so neither mode always runs first.
            let order = if r % 2 == 0 { [0, 1] } else { [1, 0] };
            for i in order {
                let mode = [SendMode::Copy, SendMode::Reference][i];
                res[i].push(run(case, mode, &file));
            }
        }
        let mbs: Vec<f64> = res
            .iter()
            .map(|v| median(v.iter().map(|o| o.bytes as f64 / o.secs / 1e6).collect()))
            .collect();
        for (i, v) in res.iter().enumerate() {
            let cpu = median(v.iter().map(|o| o.cpu / (o.bytes as f64 / 1e9)).collect());
            let rem = v[0].referenced as f64 / v[0].bytes as f64 * 100.0;
            let ratio = if i == 1 {
                format!("{:.2}", mbs[1] / mbs[0])
            } else {
                String::new()
            };
            println!(
                "| {} | {} | {:.0} | {:.2} | {:.0}% | {:.2} | {} |",
                case.name,
                ["copy", "reference"][i],
                mbs[i],
                cpu,
                rem,
                v[0].copies,
                ratio
            );
        }
    }
    drop(file);
}

/// Deletes the benchmark's file, also when a run panics.
struct Remove(PathBuf);

impl Drop for Remove {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
