//! Send by reference over AF_XDP (issue 12): bytes an application wrote in
//! place into pool frames (`Stack::tcp_send_frame`) leave as a header
//! descriptor plus payload descriptors pointing at those frames — no copy
//! in user space — where the socket is bound with multi-buffer packets
//! (MTU 9000 and 65535 here); at MTU 1500 (no multi-buffer) they are copied
//! once into the frame. A kernel TCP client checks every byte by SHA-256.
//! And the rule that makes it safe: a frame is not reused before the peer
//! acknowledged it *and* every TX descriptor pointing at it completed,
//! checked with a retransmission still in flight when its bytes are
//! acknowledged, and the bytes on the wire captured at the peer. Root only;
//! CI runs these. Nets 10.200.91–94.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4, TcpStream};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nix::sys::socket::{self as nsock, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType};
use zcstack::Stack;
use zcstack_driver::xdp::{Xdp, XdpConfig, frame_size_for_mtu};
use zcstack_driver::{Driver, GatherSlice, PoolConfig, TxRef, TxSource};
use zcstack_tests::netns::{VETH_SERVER, VethBed, VethOpts, spawn_in_ns};
use zcstack_tests::{random_bytes, require_root, sha256_hex};

fn bed(tag: &str, net: u8, mtu: u32) -> VethBed {
    VethBed::new(
        tag,
        net,
        VethOpts {
            mtu,
            ..VethOpts::default()
        },
    )
}

/// What the server saw: copies per byte, bytes sent by reference, bytes
/// handed over in frames, pool frames still out after the stack was dropped.
struct Served {
    copies_per_byte: f64,
    by_reference: u64,
    frame_bytes: u64,
    frames_out: usize,
    multi_buffer: bool,
}

/// Serves `len` bytes of `data` on port 5001 of an AF_XDP stack at `mtu`,
/// `per_frame` bytes in each pool frame the application fills in place and
/// hands over with `tcp_send_frame`; a kernel client reads them all.
fn serve_frames(tag: &str, net: u8, mtu: u32, len: usize, per_frame: usize) {
    let bed = bed(tag, net, mtu);
    let data = Arc::new(random_bytes(len, u64::from(net)));
    let want = sha256_hex(&data);
    let ip: Ipv4Addr = bed.stack_ip().parse().unwrap();
    let server = {
        let data = data.clone();
        spawn_in_ns(&bed.server, move || {
            // Beyond what the fill ring takes: frames for the application.
            let pool = PoolConfig::new()
                .frames(if mtu > 9000 { 1024 } else { 4096 })
                .frame_size(frame_size_for_mtu(mtu as usize))
                .build()
                .expect("pool");
            let xdp = Xdp::open(
                &XdpConfig::new(VETH_SERVER).build().expect("config"),
                pool.clone(),
            )
            .expect("AF_XDP");
            let multi_buffer = xdp.setup().multi_buffer;
            let mut st = Stack::builder(xdp).ip(ip, 24).build().expect("stack");
            let l = st.tcp_listen(5001, 1).expect("listen");
            let t = Instant::now();
            let c = loop {
                st.poll();
                if let Some(c) = st.tcp_accept(l) {
                    break c;
                }
                assert!(t.elapsed() < Duration::from_secs(10), "no client");
            };
            let mut at = 0;
            while at < data.len() {
                assert!(t.elapsed() < Duration::from_secs(60), "sending stalled");
                let Some(mut f) = pool.alloc() else {
                    st.poll();
                    continue;
                };
                let n = per_frame.min(data.len() - at).min(f.capacity());
                f.set_len(n);
                f.data_mut().copy_from_slice(&data[at..at + n]);
                match st.tcp_send_frame(c, f) {
                    Ok(()) => at += n,
                    Err((e, _frame)) => {
                        assert_eq!(e.kind(), std::io::ErrorKind::WouldBlock, "{e}");
                        st.poll();
                    }
                }
            }
            st.tcp_close(c).expect("close");
            while st.tcp_unacked(c) > 0 {
                assert!(t.elapsed() < Duration::from_secs(60), "not acknowledged");
                st.poll();
            }
            for _ in 0..1000 {
                st.poll();
            }
            let s = st.stats();
            drop(st);
            Served {
                copies_per_byte: s.tx_copies_per_byte(),
                by_reference: s.tcp_tx_payload_ref,
                frame_bytes: s.app_frame_bytes,
                frames_out: pool.stats().in_use,
                multi_buffer,
            }
        })
    };
    let addr = SocketAddrV4::new(ip, 5001);
    let got = bed.within_client(move || {
        let t = Instant::now();
        let mut s = loop {
            match TcpStream::connect_timeout(&addr.into(), Duration::from_secs(1)) {
                Ok(s) => break s,
                Err(e) => {
                    assert!(t.elapsed() < Duration::from_secs(10), "connect: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        };
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("read");
        got
    });
    let served = server
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e));
    assert_eq!(got.len(), len);
    assert_eq!(sha256_hex(&got), want, "bytes differ at MTU {mtu}");
    assert_eq!(served.frame_bytes, len as u64);
    assert_eq!(served.frames_out, 0, "pool not full after the stack went");
    eprintln!(
        "MTU {mtu}: multi-buffer {}, {:.3} copies per byte, {} bytes by reference",
        served.multi_buffer, served.copies_per_byte, served.by_reference
    );
    if served.multi_buffer {
        assert!(
            served.copies_per_byte <= 0.01,
            "MTU {mtu}: {} copies per byte",
            served.copies_per_byte
        );
        assert!(served.by_reference >= len as u64);
    } else {
        // No multi-buffer packets: headers and payload must share one
        // descriptor, so the payload is copied once into the frame.
        assert!(
            (0.99..=1.05).contains(&served.copies_per_byte),
            "MTU {mtu}: {} copies per byte",
            served.copies_per_byte
        );
    }
}

#[test]
#[ignore = "needs root"]
fn app_frames_go_by_reference_at_mtu_9000() {
    require_root!();
    serve_frames("xr9", 91, 9000, 64 << 20, 12000);
}

#[test]
#[ignore = "needs root"]
fn app_frames_go_by_reference_at_mtu_65535() {
    require_root!();
    serve_frames("xr64", 92, 65535, 64 << 20, 100_000);
}

#[test]
#[ignore = "needs root"]
fn app_frames_are_copied_once_at_mtu_1500() {
    require_root!();
    serve_frames("xr15", 93, 1500, 16 << 20, 1000);
}

/// Ethernet type of the test frames (IEEE local experimental).
const ETHERTYPE: [u8; 2] = [0x88, 0xb5];

/// Receives frames of [`ETHERTYPE`] in the client namespace until `want`
/// arrived or 5 s passed.
fn capture(want: usize, ready: mpsc::Sender<()>) -> Vec<Vec<u8>> {
    let fd = nsock::socket(
        AddressFamily::Packet,
        SockType::Raw,
        SockFlag::empty(),
        SockProtocol::EthAll,
    )
    .expect("packet socket");
    nsock::setsockopt(
        &fd,
        nsock::sockopt::ReceiveTimeout,
        &nix::sys::time::TimeVal::new(0, 100_000),
    )
    .unwrap();
    ready.send(()).unwrap();
    let (mut got, t) = (Vec::new(), Instant::now());
    let mut buf = vec![0u8; 1 << 17];
    while got.len() < want && t.elapsed() < Duration::from_secs(5) {
        use std::os::fd::AsRawFd;
        if let Ok(n) = nsock::recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty())
            && n >= 14
            && buf[12..14] == ETHERTYPE
        {
            got.push(buf[..n].to_vec());
        }
    }
    got
}

/// A segment and its retransmission are both on the TX ring, pointing at
/// the same application frame, when the peer acknowledges its bytes (the
/// socket drops its reference): the frame stays out of the pool — a burst
/// that takes every free frame and scribbles on it cannot get it — until
/// both descriptors complete, and both copies reach the wire intact.
#[test]
#[ignore = "needs root"]
fn a_frame_in_flight_is_not_reused_before_its_descriptors_complete() {
    require_root!();
    let bed = bed("xrr", 94, 9000);
    let (tx, rx) = mpsc::channel();
    let cap = spawn_in_ns(&bed.client, move || capture(2, tx));
    rx.recv_timeout(Duration::from_secs(5))
        .expect("capture ready");
    let payload = random_bytes(5000, 94);
    let sent = payload.clone();
    bed.within_server(move || {
        let pool = PoolConfig::new()
            .frames(4096)
            .frame_size(frame_size_for_mtu(9000))
            .build()
            .expect("pool");
        let mut xdp = Xdp::open(
            &XdpConfig::new(VETH_SERVER).build().expect("config"),
            pool.clone(),
        )
        .expect("AF_XDP");
        let caps = xdp.capabilities();
        assert!(caps.offloads.tx_gather, "multi-buffer at MTU 9000");
        let mac = caps.mac.unwrap();
        let mut app = pool.alloc().unwrap();
        app.set_len(payload.len());
        app.data_mut().copy_from_slice(&payload);
        let app_index = app.index();
        let src: Arc<dyn TxSource> = Arc::new(app);
        let socket_ref = TxRef::new(src.clone(), 0, payload.len()).unwrap();
        for _ in 0..2 {
            let mut h = pool.alloc().unwrap();
            h.set_len(14);
            let d = h.data_mut();
            d[..6].fill(0xff);
            d[6..12].copy_from_slice(&mac);
            d[12..14].copy_from_slice(&ETHERTYPE);
            let slice = GatherSlice::of_ref(&socket_ref, 0, payload.len()).unwrap();
            assert!(xdp.tx_gather(h, &[slice]).is_ok(), "taken");
        }
        // Acknowledged: the socket lets go while both are in flight.
        drop(socket_ref);
        assert_eq!(
            Arc::strong_count(&src),
            3,
            "one reference per descriptor chain"
        );
        let mut all = Vec::new();
        pool.alloc_burst(pool.capacity(), &mut all);
        assert!(
            all.iter().all(|f| f.index() != app_index),
            "a frame in flight was handed out again"
        );
        for f in &mut all {
            f.set_len(f.capacity().min(payload.len()));
            f.data_mut().fill(0xee);
        }
        drop(all);
        // Send (the kick), then wait for the completions.
        let t = Instant::now();
        while Arc::strong_count(&src) > 1 {
            xdp.tx_burst(&mut Vec::new()).expect("kick");
            assert!(t.elapsed() < Duration::from_secs(5), "no completion");
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(src);
        drop(xdp);
        assert_eq!(pool.stats().in_use, 0, "everything back in the pool");
    });
    let got = cap.join().unwrap();
    assert_eq!(got.len(), 2, "both transmissions reached the peer");
    for f in got {
        assert_eq!(f.len(), 14 + sent.len());
        assert!(
            f[14..] == sent[..],
            "bytes on the wire differ from the frame's"
        );
    }
}
