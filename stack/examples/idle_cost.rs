//! What idle connections cost a busy one, measured on the stack alone: two
//! stacks joined by the in-memory wire, N idle connections between them,
//! then 64 MiB over one more connection; prints MB/s and microseconds per
//! poll (of both stacks). No privileges needed:
//!
//! ```text
//! cargo run --release -p zcstack --example idle_cost -- 0 2000 10000
//! ```
//! Run the counts alternately and more than once on a shared machine: only
//! ratios within one run mean anything.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Instant;

use zcstack::{Event, Stack, TcpState};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig};

const TOTAL: usize = 64 << 20;

fn run(idle: usize) -> Result<(f64, f64), Box<dyn std::error::Error>> {
    let pa = PoolConfig::new().frames(8192).build()?;
    let pb = PoolConfig::new().frames(8192).build()?;
    let (ea, eb) = wire::pair(pa, pb, WireConfig::default());
    let sip = Ipv4Addr::new(10, 200, 0, 2);
    let mut c = Stack::builder(ea)
        .ip(Ipv4Addr::new(10, 200, 0, 1), 24)
        .tcp_buffers(16 * 1024, 64 * 1024)
        .build()?;
    let mut s = Stack::builder(eb)
        .ip(sip, 24)
        .tcp_buffers(16 * 1024, 64 * 1024)
        .build()?;
    let l = s.tcp_listen(80, 64)?;
    let mut events: Vec<Event> = Vec::new();
    s.events(&mut events);
    let accept = |c: &mut Stack<_>, s: &mut Stack<_>| -> Result<_, Box<dyn std::error::Error>> {
        let k = c.tcp_connect(SocketAddrV4::new(sip, 80))?;
        for _ in 0..100_000 {
            c.poll();
            s.poll();
            if let Some(x) = s.tcp_accept(l) {
                return Ok((k, x));
            }
        }
        Err("a connection was not accepted".into())
    };
    let mut held = Vec::with_capacity(idle);
    for _ in 0..idle {
        held.push(accept(&mut c, &mut s)?);
    }
    let (conn, srv) = accept(&mut c, &mut s)?;
    while c.tcp_state(conn) != TcpState::Established {
        c.poll();
        s.poll();
    }
    let data = vec![7u8; 1 << 20];
    let mut buf = vec![0u8; 1 << 16];
    let (mut sent, mut got, mut polls) = (0, 0, 0u64);
    let t = Instant::now();
    while got < TOTAL {
        c.poll();
        s.poll();
        s.events(&mut events);
        polls += 1;
        if sent < TOTAL {
            match s.tcp_write(srv, &data[..(TOTAL - sent).min(data.len())]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        loop {
            match c.tcp_read(conn, &mut buf) {
                Ok(0) => return Err("the stream ended early".into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
    let secs = t.elapsed().as_secs_f64();
    Ok((TOTAL as f64 / secs / 1e6, secs * 1e6 / polls as f64))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let counts: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("give counts of idle connections: {e}"))?;
    for n in if counts.is_empty() {
        vec![0, 2000]
    } else {
        counts
    } {
        let (mbs, us) = run(n)?;
        println!("{n:>6} idle connections: {mbs:7.0} MB/s, {us:6.2} µs per poll");
    }
    Ok(())
}
