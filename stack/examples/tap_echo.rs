//! A TCP echo server on a TAP device: the smallest real zcstack program.
//!
//! ```text
//! cargo run --release -p zcstack --example tap_echo -- TAP ADDR/PREFIX [PORT]
//! ```
//! Needs CAP_NET_ADMIN (root) to open the TAP. Give the kernel side of the
//! TAP an address in the same subnet (`scripts/tapbed.sh up` does), then any
//! kernel client in that namespace can talk to it; docs/embedding.md shows a
//! whole session. Every connection gets back what it sends: `tcp_read`
//! copies out of the receive ring, `tcp_write` into the send ring, and only
//! as much as the send ring has room for, so nothing waits in between.

use std::io::ErrorKind;

use zcstack::{Stack, TcpConn};
use zcstack_driver::{PoolConfig, tap::Tap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tap, cidr, rest @ ..] = args.as_slice() else {
        return Err("usage: tap_echo TAP ADDR/PREFIX [PORT]".into());
    };
    let (ip, prefix) = cidr
        .split_once('/')
        .ok_or("ADDR/PREFIX, e.g. 10.200.1.2/24")?;
    let port: u16 = rest.first().map_or(Ok(7), |p| p.parse())?;

    let pool = PoolConfig::new().frames(4096).build()?;
    let mut stack = Stack::builder(Tap::open(tap, pool)?)
        .ip(ip.parse()?, prefix.parse()?)
        .build()?;
    let listener = stack.tcp_listen(port, 16)?;
    println!("tap_echo: echoing on {ip}:{port} via {tap}");

    let mut conns: Vec<TcpConn> = Vec::new();
    loop {
        stack.poll_wait();
        while let Some(c) = stack.tcp_accept(listener) {
            conns.push(c);
        }
        conns.retain(|&c| echo(&mut stack, c));
    }
}

/// Echoes what fits into the send ring; false once the connection is done.
fn echo<D: zcstack::Driver>(stack: &mut Stack<D>, c: TcpConn) -> bool {
    let mut buf = [0u8; 16 * 1024];
    let room = stack.tcp_send_room(c).min(buf.len());
    if room == 0 {
        return true;
    }
    let keep = match stack.tcp_read(c, &mut buf[..room]) {
        Ok(0) => false, // end of stream: the peer sent FIN
        // `room` bytes were free in the send ring, so the write takes them all.
        Ok(n) => stack.tcp_write(c, &buf[..n]).is_ok(),
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    };
    if !keep {
        // Sends what is still queued, then FIN; a reset connection is just freed.
        let _ = stack.tcp_close(c);
    }
    keep
}
