//! A file server loop: every connection gets one file, sent with
//! `Stack::tcp_send_file` (the socket sends the file's pages by reference,
//! never through an application buffer).
//!
//! ```text
//! cargo run --release -p zcstack --example file_server -- TAP ADDR/PREFIX FILE [PORT]
//! ```
//! Needs CAP_NET_ADMIN (root) for the TAP. It answers whatever request
//! arrives with the file as an HTTP/1.0 response and closes, so
//! `curl -o copy http://ADDR:PORT/` fetches it (port 8080 by default).
//! zc-httpd is the full server built on the same calls.

use std::io::ErrorKind;
use std::path::Path;

use zcstack::{MappedFile, SendMode, Stack, TcpConn};
use zcstack_driver::{PoolConfig, tap::Tap};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [tap, cidr, file, rest @ ..] = args.as_slice() else {
        return Err("usage: file_server TAP ADDR/PREFIX FILE [PORT]".into());
    };
    let (ip, prefix) = cidr
        .split_once('/')
        .ok_or("ADDR/PREFIX, e.g. 10.200.1.2/24")?;
    let port: u16 = rest.first().map_or(Ok(8080), |p| p.parse())?;
    // Mapped once, shared by every connection; a read lease keeps a
    // truncation by another process from faulting the sender.
    let file = MappedFile::open(Path::new(file))?;
    let head = format!(
        "HTTP/1.0 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
        file.len()
    );

    let pool = PoolConfig::new().frames(8192).build()?;
    let mut stack = Stack::builder(Tap::open(tap, pool)?)
        .ip(ip.parse()?, prefix.parse()?)
        .send_mode(SendMode::Auto)
        .build()?;
    let listener = stack.tcp_listen(port, 64)?;
    println!(
        "file_server: {} bytes on http://{ip}:{port}/ via {tap}",
        file.len()
    );

    // Connections that have not sent their request yet.
    let mut waiting: Vec<TcpConn> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        stack.poll_wait();
        while let Some(c) = stack.tcp_accept(listener) {
            waiting.push(c);
        }
        waiting.retain(|&c| {
            match stack.tcp_read(c, &mut buf) {
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                // The request (its content does not matter here): answer it.
                Ok(n) if n > 0 => {
                    let sent = stack.tcp_write(c, head.as_bytes());
                    if sent.is_ok_and(|n| n == head.len()) {
                        // Queued behind the head; poll moves it into the ring.
                        let _ = stack.tcp_send_file(c, &file, 0, file.len());
                    }
                }
                _ => {}
            }
            // Sends what is queued (the whole file), then FIN.
            let _ = stack.tcp_close(c);
            false
        });
    }
}
