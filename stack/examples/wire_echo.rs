//! Embedding zcstack: two stacks in one process, joined by the in-memory wire.
//!
//! A client stack sends 8 MiB to an echo server on the other stack and checks
//! every byte came back; then both print their counters. No privileges needed:
//! `cargo run --release -p zcstack --example wire_echo`.

use std::io::ErrorKind;
use std::net::{Ipv4Addr, SocketAddrV4};

use zcstack::{Stack, TcpState};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let pool_a = PoolConfig::new().frames(4096).build()?;
    let pool_b = PoolConfig::new().frames(4096).build()?;
    let (end_a, end_b) = wire::pair(pool_a.clone(), pool_b.clone(), WireConfig::default());
    let server_ip = Ipv4Addr::new(10, 200, 0, 2);
    let mut client = Stack::builder(end_a)
        .ip(Ipv4Addr::new(10, 200, 0, 1), 24)
        .build()?;
    let mut server = Stack::builder(end_b).ip(server_ip, 24).build()?;

    let listener = server.tcp_listen(7, 8)?;
    let conn = client.tcp_connect(SocketAddrV4::new(server_ip, 7))?;
    let data: Vec<u8> = (0..8u32 << 20).map(|i| (i * 7 + i / 4096) as u8).collect();
    let (mut sent, mut back) = (0, Vec::with_capacity(data.len()));
    let mut echo = None;
    let mut buf = vec![0u8; 64 * 1024];
    let start = std::time::Instant::now();
    while back.len() < data.len() {
        client.poll();
        server.poll();
        if echo.is_none() {
            echo = server.tcp_accept(listener);
        }
        // Server: echo whatever arrived, as far as the send ring has room.
        if let Some(s) = echo {
            let room = server.tcp_send_room(s).min(buf.len());
            if room > 0 {
                match server.tcp_read(s, &mut buf[..room]) {
                    Ok(n) => assert_eq!(server.tcp_write(s, &buf[..n])?, n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
        // Client: send the next piece, collect the echo.
        if client.tcp_state(conn) == TcpState::Established && sent < data.len() {
            match client.tcp_write(conn, &data[sent..]) {
                Ok(n) => sent += n,
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => return Err(e.into()),
            }
        }
        match client.tcp_read(conn, &mut buf) {
            Ok(n) => back.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    let secs = start.elapsed().as_secs_f64();
    assert!(back == data, "echo differs");
    println!(
        "8 MiB echoed intact in {:.3} s ({:.2} Gbit/s each way)",
        secs,
        8.0 * 8.0 * 1.048576 / 1e3 / secs
    );
    println!("client: {}", client.stats());
    println!("server: {}", server.stats());
    Ok(())
}
