//! CPU per request/response over the in-memory wire (not a test: it prints
//! a line). Client stack A keeps `CONNS` keep-alive connections to server
//! stack B; each client writes a 40-byte request, the server answers with
//! a 64 KiB file (`tcp_send_file`), the client reads it in place and asks
//! again. Both stacks run on this thread, so the CPU time is client plus
//! server, kernel-free: a measure of the stack's own cost per response
//! that a loaded machine does not disturb much (it is CPU time, from
//! getrusage, not wall time). It builds against older trees too, for
//! A/B comparisons of the stack's per-request cost.
//!
//! ```sh
//! cargo bench -p zcstack --bench requests                  # MTU 65535, 20 000 responses, 3 rounds
//! ZC_BENCH_MTU=1500 ZC_BENCH_MODE=copy cargo bench -p zcstack --bench requests
//! ```

use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{UsageWho, getrusage};
use zcstack::{MappedFile, SendMode, Stack, TcpState};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const CONNS: usize = 16;
const BODY: u64 = 64 * 1024;
const REQUEST: &[u8] = b"GET /f HTTP/1.1\r\nHost: b\r\n\r\n..........";

fn cpu_now() -> f64 {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t = |tv: nix::sys::time::TimeVal| tv.tv_sec() as f64 + tv.tv_usec() as f64 / 1e6;
    t(u.user_time()) + t(u.system_time())
}

fn env<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One round: `responses` responses; returns (CPU µs per response, wall s).
fn round(mtu: usize, mode: SendMode, file: &Arc<MappedFile>, responses: u64) -> (f64, f64) {
    let frame = if mtu > 1500 { 131072 } else { 2048 };
    let frames = (1u32 << 27) / frame; // 128 MiB per pool
    let pool = || {
        PoolConfig::new()
            .frames(frames)
            .frame_size(frame)
            .build()
            .unwrap()
    };
    let wc = WireConfig {
        mtu,
        queue_len: 4096,
    };
    let (ea, eb) = wire::pair(pool(), pool(), wc);
    let mut a = Stack::builder(ea).ip(A, 24).seed(1).build().unwrap();
    let mut b = Stack::builder(eb)
        .ip(B, 24)
        .seed(2)
        .send_mode(mode)
        .build()
        .unwrap();
    let listener = b.tcp_listen(80, CONNS).unwrap();
    let clients: Vec<_> = (0..CONNS)
        .map(|_| a.tcp_connect(SocketAddrV4::new(B, 80)).unwrap())
        .collect();
    let mut servers = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while servers.len() < CONNS
        || clients
            .iter()
            .any(|c| a.tcp_state(*c) != TcpState::Established)
    {
        assert!(Instant::now() < deadline, "connections not set up");
        a.poll();
        b.poll();
        while let Some(s) = b.tcp_accept(listener) {
            servers.push(s);
        }
    }
    // Per connection: bytes of the current response still to read (0: send
    // a request), and request bytes the server has yet to read.
    let mut want = [0u64; CONNS];
    let mut asked = [0usize; CONNS];
    let (mut started, mut done) = (0u64, 0u64);
    let (cpu0, t0) = (cpu_now(), Instant::now());
    let deadline = t0 + Duration::from_secs(300);
    while done < responses {
        assert!(Instant::now() < deadline, "stalled at {done} responses");
        for (i, &c) in clients.iter().enumerate() {
            if want[i] == 0 && started < responses {
                if a.tcp_write(c, REQUEST).is_ok_and(|n| n == REQUEST.len()) {
                    want[i] = BODY;
                    started += 1;
                }
            } else if want[i] > 0 {
                while let Ok(Some(n)) = a.tcp_read_with(c, |d| (d.len(), d.len())) {
                    want[i] -= n as u64;
                    if want[i] == 0 {
                        done += 1;
                        break;
                    }
                }
            }
        }
        for (i, &s) in servers.iter().enumerate() {
            while let Ok(Some(n)) = b.tcp_read_with(s, |d| (d.len(), d.len())) {
                asked[i] += n;
            }
            while asked[i] >= REQUEST.len() {
                asked[i] -= REQUEST.len();
                b.tcp_send_file(s, file, 0, BODY).unwrap();
            }
        }
        a.poll();
        b.poll();
    }
    let cpu = cpu_now() - cpu0;
    let wall = t0.elapsed().as_secs_f64();
    (cpu * 1e6 / responses as f64, wall)
}

fn main() {
    let mtu: usize = env("ZC_BENCH_MTU", 65535);
    let responses: u64 = env("ZC_BENCH_RESPONSES", 20_000);
    let rounds: usize = env("ZC_BENCH_ROUNDS", 3);
    let mode = match std::env::var("ZC_BENCH_MODE").as_deref() {
        Ok("copy") => SendMode::Copy,
        _ => SendMode::Auto,
    };
    let path = std::env::temp_dir().join(format!("zc-bench-requests-{}", std::process::id()));
    std::fs::write(&path, vec![7u8; BODY as usize]).unwrap();
    let file = MappedFile::open(&path).unwrap();
    let mut cpu = Vec::new();
    for r in 0..rounds {
        let (us, wall) = round(mtu, mode, &file, responses);
        println!(
            "round {}: {:.1} µs CPU per response ({} responses in {:.2} s)",
            r + 1,
            us,
            responses,
            wall
        );
        cpu.push(us);
    }
    std::fs::remove_file(&path).ok();
    cpu.sort_by(f64::total_cmp);
    println!(
        "requests: MTU {mtu}, mode {mode:?}, {CONNS} connections, 64 KiB responses: median {:.1} µs CPU per response (client + server stacks)",
        cpu[cpu.len() / 2]
    );
}
