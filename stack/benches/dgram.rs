//! What a datagram costs the stack, alone: one stack sends, another
//! receives, over the in-memory wire, both on this thread (not a test: it
//! prints a table). The per-packet and per-byte CPU costs it prints are
//! what the README's estimate of cores per 10 and 100 Gbit/s starts from.
//!
//! ```sh
//! cargo bench -p zcstack --bench dgram             # 2 M datagrams per case, 3 rounds
//! cargo bench -p zcstack --bench dgram -- --quick  # 1/10 of them, 1 round
//! ```
//!
//! Two APIs, 64- and 1472-byte payloads: the datagram API (the sender
//! writes an 8-byte sequence number into each pool frame, the stack writes
//! the headers and the UDP checksum, the receiver reads the payload in
//! place), and smoltcp's UDP sockets (`udp_send_to` / `udp_recv_from`: the
//! payload is copied in and out of socket buffers). CPU time is the
//! process's user + system time (getrusage) for sender and receiver
//! together, per datagram; cases alternate within each round so they see
//! the same background load, and the table shows medians over the rounds.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use nix::sys::resource::{UsageWho, getrusage};
use zcstack::{RxDatagram, Stack, TxDatagram};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig, WireEnd};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const BURST: usize = 32;

fn cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_SELF).expect("getrusage");
    let t =
        |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
    t(u.user_time()) + t(u.system_time())
}

fn pair() -> (Stack<WireEnd>, Stack<WireEnd>) {
    let pool = PoolConfig::new().frames(8192).build().unwrap();
    let cfg = WireConfig {
        queue_len: 4096,
        ..WireConfig::default()
    };
    let (ea, eb) = wire::pair(pool.clone(), pool, cfg);
    let a = Stack::builder(ea).ip(A, 24).build().unwrap();
    let b = Stack::builder(eb).ip(B, 24).build().unwrap();
    (a, b)
}

/// Sends `n` datagrams of `size` bytes with the datagram API; returns CPU
/// nanoseconds per datagram (send + receive).
fn by_frame(n: u64, size: usize) -> f64 {
    let (mut a, mut b) = pair();
    let sa = a.dgram_bind(40000).unwrap();
    let sb = b.dgram_bind(9).unwrap();
    let to = SocketAddrV4::new(B, 9);
    // ARP first, outside the measurement.
    let d = a.dgram_alloc().unwrap();
    a.dgram_send(sa, d, to).unwrap();
    while b.dgram_recv(sb).is_err() {
        a.poll();
        b.poll();
    }
    let (mut tx, mut fresh, mut rx): (Vec<(TxDatagram, _)>, Vec<TxDatagram>, Vec<RxDatagram>) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut sent, mut got) = (0u64, 0u64);
    let t0 = cpu();
    while got < n {
        if tx.is_empty() && sent < n && sent - got < 1024 {
            a.dgram_alloc_burst(BURST.min((n - sent) as usize), &mut fresh);
            for mut d in fresh.drain(..) {
                d.room_mut()[..8].copy_from_slice(&sent.to_le_bytes());
                d.set_len(size);
                tx.push((d, to));
                sent += 1;
            }
        }
        a.dgram_send_burst(sa, &mut tx).unwrap();
        a.poll();
        b.poll();
        b.dgram_recv_burst(sb, &mut rx, 1024).unwrap();
        for d in rx.drain(..) {
            assert_eq!(d.payload().len(), size);
            got += 1;
        }
    }
    (cpu() - t0).as_nanos() as f64 / n as f64
}

/// The same through smoltcp's UDP sockets (a copy in, a copy out, and
/// smoltcp's copies between socket buffers and frames).
fn by_socket(n: u64, size: usize) -> f64 {
    let (mut a, mut b) = pair();
    let sa = a.udp_bind(40000).unwrap();
    let sb = b.udp_bind(9).unwrap();
    let to = SocketAddrV4::new(B, 9);
    let mut buf = vec![0u8; 2048];
    a.udp_send_to(sa, &buf[..size], to).unwrap();
    while b.udp_recv_from(sb, &mut buf).is_err() {
        a.poll();
        b.poll();
    }
    let (mut sent, mut got) = (0u64, 0u64);
    let payload = vec![7u8; size];
    let t0 = cpu();
    while got < n {
        let mut k = 0;
        while k < BURST && sent < n && sent - got < 200 {
            match a.udp_send_to(sa, &payload, to) {
                Ok(()) => {
                    sent += 1;
                    k += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => panic!("{e}"),
            }
        }
        a.poll();
        b.poll();
        while let Ok((len, _)) = b.udp_recv_from(sb, &mut buf) {
            assert_eq!(len, size);
            got += 1;
        }
    }
    (cpu() - t0).as_nanos() as f64 / n as f64
}

/// One measured case: API name, payload size, the function that runs it.
type Case = (&'static str, usize, fn(u64, usize) -> f64);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (n, rounds) = if quick { (200_000, 1) } else { (2_000_000, 3) };
    let cases: [Case; 4] = [
        ("datagram API", 64, by_frame),
        ("datagram API", 1472, by_frame),
        ("UDP sockets", 64, by_socket),
        ("UDP sockets", 1472, by_socket),
    ];
    let mut results = vec![Vec::new(); cases.len()];
    for _ in 0..rounds {
        for (i, (_, size, f)) in cases.iter().enumerate() {
            results[i].push(f(n, *size));
        }
    }
    let ns: Vec<f64> = results.into_iter().map(median).collect();
    println!("| API | payload | CPU ns per datagram (send + receive) | Mpkt/s per core |");
    println!("|---|---:|---:|---:|");
    for ((name, size, _), ns) in cases.iter().zip(&ns) {
        println!("| {name} | {size} B | {ns:.0} | {:.2} |", 1e3 / ns);
    }
    for (k, name) in [(0, "datagram API"), (2, "UDP sockets")] {
        let per_byte = (ns[k + 1] - ns[k]) / (1472.0 - 64.0);
        let per_packet = ns[k] - 64.0 * per_byte;
        println!(
            "{name}: {per_packet:.0} ns per datagram + {per_byte:.3} ns per payload byte \
             ({n} datagrams per case, median of {rounds})"
        );
    }
}
