//! A UDP echo server on a TAP device.
//!
//! ```text
//! cargo run --release -p zcstack --example udp_echo -- TAP ADDR/PREFIX [PORT]
//! ```
//! Needs CAP_NET_ADMIN (root) for the TAP. Every datagram to PORT (7 by
//! default) goes back to its sender unchanged.

use std::io::ErrorKind;

use zcstack::Stack;
use zcstack_driver::{PoolConfig, tap::Tap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tap, cidr, rest @ ..] = args.as_slice() else {
        return Err("usage: udp_echo TAP ADDR/PREFIX [PORT]".into());
    };
    let (ip, prefix) = cidr
        .split_once('/')
        .ok_or("ADDR/PREFIX, e.g. 10.200.1.2/24")?;
    let port: u16 = rest.first().map_or(Ok(7), |p| p.parse())?;

    let pool = PoolConfig::new().frames(4096).build()?;
    let mut stack = Stack::builder(Tap::open(tap, pool)?)
        .ip(ip.parse()?, prefix.parse()?)
        .build()?;
    let sock = stack.udp_bind(port)?;
    println!("udp_echo: echoing on {ip}:{port} via {tap}");

    // The largest datagram a 64 KiB IPv4 packet can carry fits.
    let mut buf = vec![0u8; 65535];
    loop {
        stack.poll_wait();
        loop {
            match stack.udp_recv_from(sock, &mut buf) {
                Ok((n, from)) => {
                    // A full send ring drops the echo, as a busy UDP server would.
                    let _ = stack.udp_send_to(sock, &buf[..n], from);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e.into()),
            }
        }
    }
}
