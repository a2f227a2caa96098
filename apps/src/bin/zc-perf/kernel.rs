//! zc-perf's tests on std::net sockets (the kernel's stack), blocking I/O;
//! retransmissions and segment counts come from TCP_INFO.

use super::*;
use zcstack_driver::{MMSG_MAX, recv_datagrams, send_datagrams, tcp_info};

/// The server's listening socket on every address of the namespace.
pub fn tcp_bind(port: u16) -> anyhow::Result<TcpListener> {
    let l = TcpListener::bind(("0.0.0.0", port))
        .with_context(|| format!("binding TCP port {port}: is another server running?"))?;
    l.set_nonblocking(true)?;
    Ok(l)
}

pub fn tcp_server(l: TcpListener, once: bool, json: bool, stop: &AtomicBool) -> anyhow::Result<()> {
    while !stop.load(Ordering::Relaxed) {
        match l.accept() {
            Ok((s, peer)) => {
                s.set_nonblocking(false)?;
                match serve(s, peer, stop) {
                    Ok(r) => r.print(APP, json),
                    Err(e) => eprintln!("{APP}: test from {peer} failed: {e:#}"),
                }
                if once {
                    break;
                }
            }
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Interrupted) => {
                std::thread::sleep(Duration::from_millis(10))
            }
            Err(e) => return Err(e).context("accepting a connection"),
        }
    }
    Ok(())
}

fn serve(mut s: TcpStream, peer: SocketAddr, stop: &AtomicBool) -> anyhow::Result<Report> {
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut hb = [0u8; HEADER_LEN];
    s.read_exact(&mut hb).context("reading the test header")?;
    let h = Header::decode(&hb).map_err(|e| anyhow!(e))?;
    let mut r = if h.reverse {
        send(&mut s, &h, SERVER_SEND_CAP, stop)?
    } else {
        receive(&mut s, &h)?
    };
    r.side = "server";
    r.peer = peer.to_string();
    Ok(r)
}

pub fn tcp_client(peer: SocketAddrV4, h: &Header, stop: &AtomicBool) -> anyhow::Result<Report> {
    let mut s = TcpStream::connect_timeout(&peer.into(), Duration::from_secs(5))
        .with_context(|| format!("connecting to {peer}: is a zc-perf server running there?"))?;
    s.write_all(&h.encode())?;
    let mut r = if h.reverse {
        s.set_read_timeout(Some(h.receive_limit()))?;
        receive(&mut s, h)?
    } else {
        send(&mut s, h, Duration::MAX, stop)?
    };
    r.side = "client";
    r.peer = peer.to_string();
    Ok(r)
}

fn send(s: &mut TcpStream, h: &Header, cap: Duration, stop: &AtomicBool) -> anyhow::Result<Report> {
    let info0 = tcp_info(s)?;
    let meter = Meter::start(None);
    let mut w = s.try_clone()?;
    let (sent, ended_by) = send_loop(
        h,
        cap,
        stop,
        |d| w.write(d).context("sending (the receiver went away?)"),
        || {},
    )?;
    s.shutdown(Shutdown::Write)?;
    s.set_read_timeout(Some(Duration::from_secs(30)))?;
    let mut tb = [0u8; TRAILER_LEN];
    s.read_exact(&mut tb)
        .context("reading the receiver's report")?;
    let t = Trailer::decode(&tb).map_err(|e| anyhow!(e))?;
    let info = tcp_info(s)?;
    let mut r = Report {
        role: "sender",
        proto: "tcp",
        bytes: sent,
        peer_count: Some(t.bytes),
        pattern_ok: Some(t.pattern_ok),
        packets: u64::from(info.segs_in - info0.segs_in)
            + u64::from(info.segs_out - info0.segs_out),
        retrans_segments: Some(u64::from(info.total_retrans - info0.total_retrans)),
        retrans_bytes: Some(info.bytes_retrans - info0.bytes_retrans),
        ended_by,
        ..Report::default()
    };
    meter.finish(&mut r, None);
    Ok(r)
}

fn receive(s: &mut TcpStream, h: &Header) -> anyhow::Result<Report> {
    let info0 = tcp_info(s)?;
    let meter = Meter::start(None);
    let pattern = Pattern::new(h.seed);
    let deadline = Instant::now() + h.receive_limit();
    let mut buf = vec![0u8; 256 * 1024];
    let (mut got, mut ok) = (0u64, true);
    loop {
        let n = s.read(&mut buf).context("receiving")?;
        if n == 0 {
            break;
        }
        ok &= pattern.matches(got, &buf[..n]);
        got += n as u64;
        if Instant::now() > deadline {
            bail!("the sender went on past its own time limit");
        }
    }
    s.write_all(
        &Trailer {
            bytes: got,
            pattern_ok: ok,
        }
        .encode(),
    )?;
    let info = tcp_info(s)?;
    let mut r = Report {
        role: "receiver",
        proto: "tcp",
        bytes: got,
        pattern_ok: Some(ok),
        packets: u64::from(info.segs_in - info0.segs_in)
            + u64::from(info.segs_out - info0.segs_out),
        retrans_segments: Some(u64::from(info.total_retrans - info0.total_retrans)),
        retrans_bytes: Some(info.bytes_retrans - info0.bytes_retrans),
        ended_by: "peer",
        ..Report::default()
    };
    meter.finish(&mut r, None);
    Ok(r)
}

/// The server's UDP socket on every address of the namespace.
pub fn udp_bind(port: u16) -> anyhow::Result<UdpSocket> {
    let s = UdpSocket::bind(("0.0.0.0", port))
        .with_context(|| format!("binding UDP port {port}: is another server running?"))?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    Ok(s)
}

/// Receives with `recvmmsg` (up to 64 datagrams a call), as a tuned
/// kernel UDP server does.
pub fn udp_server(s: UdpSocket, once: bool, json: bool, stop: &AtomicBool) -> anyhow::Result<()> {
    let mut rx = UdpRx::default();
    let mut bufs = vec![vec![0u8; 2048]; MMSG_MAX];
    let mut got = [(0usize, SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)); MMSG_MAX];
    while !stop.load(Ordering::Relaxed) {
        let n = match recv_datagrams(&s, &mut bufs, &mut got) {
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                if rx.done_for(Duration::from_millis(300)) && once {
                    break;
                }
                continue;
            }
            Err(e) => return Err(e).context("receiving"),
        };
        for (buf, &(len, from)) in bufs.iter().zip(&got[..n]) {
            if let Some(reply) = rx.on_datagram(&buf[..len], from.into(), "kernel", json) {
                s.send_to(&reply, from)?;
            }
        }
    }
    Ok(())
}

pub fn udp_client(
    peer: SocketAddrV4,
    a: &ClientArgs,
    limit: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let s = UdpSocket::bind(("0.0.0.0", 0))?;
    s.connect(peer)?;
    s.set_read_timeout(Some(Duration::from_millis(100)))?;
    // An ICMP port unreachable comes back as ECONNREFUSED on a later call.
    let refused = || {
        anyhow!(
            "{peer} refused the UDP datagrams (port unreachable): start the zc-perf server \
             there with --udp (a server serves either TCP or UDP)"
        )
    };
    let mut tx = UdpTx::new(a, limit);
    // `sendmmsg` batches of 32, as the zcstack client sends.
    let mut bufs = vec![vec![0u8; tx.size()]; UDP_BATCH];
    for b in &mut bufs {
        tx.write(0, b, false);
    }
    loop {
        let n = tx.batch(UDP_BATCH, stop);
        if n == 0 {
            break;
        }
        for (i, b) in bufs[..n].iter_mut().enumerate() {
            tx.write(tx.sent + i as u64, b, true);
        }
        let slices: [&[u8]; UDP_BATCH] = std::array::from_fn(|i| &bufs[i][..]);
        match send_datagrams(&s, &slices[..n]) {
            Ok(k) => tx.sent += k as u64,
            // The device queue is full (ENOBUFS): that datagram is lost here.
            Err(e) if e.raw_os_error() == Some(nix::errno::Errno::ENOBUFS as i32) => tx.sent += 1,
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
            Err(e) => return Err(e).context("sending"),
        }
    }
    let mut buf = [0u8; 64];
    for _ in 0..20 {
        match s.send(&tx.end()) {
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
            r => {
                r.context("sending the end of the test")?;
            }
        }
        match s.recv(&mut buf) {
            Ok(n) => {
                if let Some(got) = tx.result(&buf[..n]) {
                    return Ok(tx.report(peer, got, None));
                }
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => return Err(refused()),
            Err(_) => {}
        }
    }
    bail!(
        "no answer from the server at {peer} after the test: is a zc-perf --udp server running there?"
    )
}
