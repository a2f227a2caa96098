use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, Ipv4Repr, UdpPacket, UdpRepr};
use zcstack_driver::wire::{self, WireConfig, WireEnd};
use zcstack_driver::{Pool, PoolConfig};

use super::*;
use crate::stack::Stack;

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const MAC_A: [u8; 6] = [2, 0x5a, 10, 200, 0, 1];

fn frame_with(pool: &Pool, payload: &[u8], dst: SocketAddrV4) -> Frame {
    let mut f = pool.alloc().unwrap();
    f.set_len(payload.len());
    f.data_mut().copy_from_slice(payload);
    write_headers(&mut f, MAC_A, A, 4000, dst, 7);
    f.data_mut()[0..6].copy_from_slice(&[2, 0x5a, 10, 200, 0, 2]);
    f
}

/// The headers written in front of a payload parse, with both checksums
/// verified, by smoltcp's own wire code, for every payload length from
/// 0 to 40 (odd ones too) and the largest at MTU 1500.
#[test]
fn headers_verify_with_smoltcp() {
    let pool = PoolConfig::new().frames(8).build().unwrap();
    let dst = SocketAddrV4::new(B, 5201);
    let caps = ChecksumCapabilities::default();
    for len in (0..=40).chain([1471, 1472]) {
        let payload: Vec<u8> = (0..len).map(|i| (i * 7 + len) as u8).collect();
        let f = frame_with(&pool, &payload, dst);
        let eth = EthernetFrame::new_checked(f.data()).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum(), "IPv4 checksum, payload {len}");
        let ipr = Ipv4Repr::parse(&ip, &caps).unwrap();
        assert_eq!((ipr.src_addr, ipr.dst_addr), (A, B));
        let udp = UdpPacket::new_checked(ip.payload()).unwrap();
        assert!(
            udp.verify_checksum(&IpAddress::Ipv4(A), &IpAddress::Ipv4(B)),
            "UDP checksum, payload {len}"
        );
        let r = UdpRepr::parse(&udp, &IpAddress::Ipv4(A), &IpAddress::Ipv4(B), &caps).unwrap();
        assert_eq!((r.src_port, r.dst_port), (4000, 5201));
        assert_eq!(udp.payload(), &payload[..]);
        // And our own receive check agrees.
        let h = classify(f.data(), B.octets(), [2, 0x5a, 10, 200, 0, 2]).unwrap();
        assert_eq!(h.payload_len, len);
        assert!(zcstack_driver::offload::checksums_ok(f.data()));
    }
}

/// Steering takes good datagrams for bound ports, in arrival order, with
/// the payload in place; wrong checksums and full queues are dropped and
/// counted; everything else stays for smoltcp. Truncated frames never panic.
#[test]
fn steering_sorts_counts_and_never_panics() {
    let pool = PoolConfig::new().frames(64).build().unwrap();
    let mac_b = [2, 0x5a, 10, 200, 0, 2];
    let mut d = Dgram::default();
    d.slots.push(Slot {
        port: 5201,
        open: true,
        cap: 3,
        queue: VecDeque::new(),
    });
    d.ports.push((5201, 0));
    let to = |port| SocketAddrV4::new(B, port);
    // Newest first, as the port keeps them.
    let mut rx = vec![
        frame_with(&pool, b"three", to(5201)),
        frame_with(&pool, b"other port", to(5202)),
        frame_with(&pool, b"two", to(5201)),
        frame_with(&pool, b"one", to(5201)),
    ];
    let mut bad = frame_with(&pool, b"bad", to(5201));
    let n = bad.len();
    bad.data_mut()[n - 1] ^= 1;
    rx.insert(0, bad);
    rx.insert(0, frame_with(&pool, b"four: queue full", to(5201)));
    let taken = d.steer(&mut rx, B, mac_b, false, 1472);
    assert_eq!(taken, 5);
    assert_eq!(rx.len(), 1, "the other port's datagram stays for smoltcp");
    let got: Vec<Vec<u8>> = d.slots[0]
        .queue
        .iter()
        .map(|r| r.payload().to_vec())
        .collect();
    assert_eq!(
        got,
        vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
    );
    for r in &d.slots[0].queue {
        assert!(pool.contains(r.payload()), "payload outside the pool");
        assert_eq!(r.source(), SocketAddrV4::new(A, 4000));
    }
    let s = d.stats();
    assert_eq!((s.rx_datagrams, s.rx_bytes), (3, 11));
    assert_eq!((s.rx_malformed, s.rx_queue_full), (1, 1));
    drop(rx);
    // A trusting driver's datagrams are not checked.
    d.slots[0].queue.clear();
    let mut bad = frame_with(&pool, b"bad", to(5201));
    bad.data_mut()[44] ^= 1;
    let mut rx = vec![bad];
    assert_eq!(d.steer(&mut rx, B, mac_b, true, 1472), 1);
    // Every truncation of a good frame is either steered whole or left.
    let good = frame_with(&pool, b"0123456789", to(5201));
    for cut in 0..good.len() {
        let mut f = pool.alloc().unwrap();
        f.set_len(cut);
        f.data_mut().copy_from_slice(&good.data()[..cut]);
        let _ = classify(f.data(), B.octets(), mac_b);
        let mut rx = vec![f];
        d.slots[0].queue.clear();
        d.steer(&mut rx, B, mac_b, false, 1472);
    }
    drop((good, d));
    assert_eq!(pool.stats().in_use, 0, "every frame back in the pool");
}

fn stacks(pool: &Pool) -> (Stack<WireEnd>, Stack<WireEnd>) {
    let (a, b) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
    let sa = Stack::builder(a).ip(A, 24).build().unwrap();
    let sb = Stack::builder(b).ip(B, 24).build().unwrap();
    (sa, sb)
}

fn poll_both(a: &mut Stack<WireEnd>, b: &mut Stack<WireEnd>) {
    for _ in 0..4 {
        a.poll();
        b.poll();
    }
}

/// Two stacks on the in-memory wire: the first datagram waits for ARP and
/// then leaves; the payload the sender wrote and the payload the receiver
/// reads both lie in the pool mapping; an echo by `into_reply` comes back
/// with the same bytes; no byte went through a socket buffer; the pool is
/// full again at the end.
#[test]
fn echo_over_the_wire_in_place() {
    let pool = PoolConfig::new().frames(256).build().unwrap();
    let (mut a, mut b) = stacks(&pool);
    let sa = a.dgram_bind(4000).unwrap();
    let sb = b.dgram_bind(7).unwrap();
    let to_b = SocketAddrV4::new(B, 7);
    let mut d = a.dgram_alloc().unwrap();
    assert_eq!(d.capacity(), 1472);
    d.room_mut()[..5].copy_from_slice(b"hello");
    d.set_len(5);
    let at = d.payload().as_ptr() as usize;
    assert!(pool.contains(d.payload()), "tx payload outside the pool");
    a.dgram_send(sa, d, to_b).unwrap();
    assert_eq!(a.dgram_stats().tx_waiting, 1, "waits for ARP");
    poll_both(&mut a, &mut b);
    assert_eq!(a.dgram_stats().tx_waiting, 0);
    let r = b.dgram_recv(sb).unwrap();
    assert_eq!(r.payload(), b"hello");
    assert_eq!(r.source(), SocketAddrV4::new(A, 4000));
    assert!(pool.contains(r.payload()), "rx payload outside the pool");
    assert_eq!(
        r.payload().as_ptr() as usize,
        at,
        "the receiver reads the bytes where the sender wrote them"
    );
    let mut reply = r.into_reply();
    reply.payload_mut().make_ascii_uppercase();
    b.dgram_send(sb, reply, SocketAddrV4::new(A, 4000)).unwrap();
    poll_both(&mut a, &mut b);
    let back = a.dgram_recv(sa).unwrap();
    assert_eq!(back.payload(), b"HELLO");
    assert_eq!(back.source(), to_b);
    assert_eq!(back.payload().as_ptr() as usize, at, "still the same bytes");
    drop(back);
    for s in [a.stats(), b.stats()] {
        assert_eq!(s.app_read_bytes + s.app_write_bytes, 0, "no socket copies");
        assert_eq!(s.rx_malformed, 0);
        assert_eq!(s.dgram.rx_malformed + s.dgram.rx_queue_full, 0);
    }
    assert_eq!(a.stats().dgram.tx_bytes, 5);
    assert_eq!(b.stats().dgram.rx_bytes, 5);
    assert!(matches!(
        a.dgram_recv(sa).map_err(|e| e.kind()),
        Err(io::ErrorKind::WouldBlock)
    ));
    drop((a, b));
    assert_eq!(pool.stats().in_use, 0, "pool full again");
}

/// Errors a user meets: a bound port (both APIs), no route, too many
/// datagrams waiting for a neighbor that never answers (and their drop
/// after the wait, counted), a closed handle.
#[test]
fn errors_say_what_to_do() {
    let pool = PoolConfig::new().frames(512).build().unwrap();
    let (mut a, _b) = stacks(&pool);
    let s = a.dgram_bind(4000).unwrap();
    assert_eq!(
        a.dgram_bind(4000).unwrap_err().to_string(),
        "UDP port 4000 is already bound"
    );
    assert_eq!(
        a.udp_bind(4000).unwrap_err().to_string(),
        "UDP port 4000 is already bound"
    );
    a.udp_bind(4001).unwrap();
    assert_eq!(
        a.dgram_bind(4001).unwrap_err().to_string(),
        "UDP port 4001 is already bound"
    );
    let d = a.dgram_alloc().unwrap();
    let e = a
        .dgram_send(s, d, SocketAddrV4::new(Ipv4Addr::new(192, 0, 2, 1), 9))
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "no route to 192.0.2.1: it is outside 10.200.0.1/24 and the stack has no gateway"
    );
    // The other end is never polled: ARP is never answered.
    let silent = SocketAddrV4::new(B, 9);
    for _ in 0..PENDING_MAX {
        let d = a.dgram_alloc().unwrap();
        a.dgram_send(s, d, silent).unwrap();
    }
    let d = a.dgram_alloc().unwrap();
    let e = a.dgram_send(s, d, silent).unwrap_err();
    assert_eq!(e.error.kind(), io::ErrorKind::WouldBlock);
    assert_eq!(
        e.to_string(),
        "64 datagrams already wait for ARP to find 10.200.0.2: poll and send again"
    );
    let mut batch = vec![(e.datagram, silent)];
    assert_eq!(a.dgram_send_burst(s, &mut batch).unwrap(), 0);
    assert_eq!(batch.len(), 1, "the datagram stays with the caller");
    drop(batch);
    let in_use = pool.stats().in_use;
    assert!(in_use >= PENDING_MAX);
    // The wait ends: dropped and counted, frames back.
    let deadline = std::time::Instant::now() + PENDING_FOR + Duration::from_secs(2);
    while a.dgram_stats().tx_waiting > 0 && std::time::Instant::now() < deadline {
        a.poll();
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = a.dgram_stats();
    assert_eq!((st.tx_waiting, st.tx_unresolved), (0, PENDING_MAX as u64));
    a.dgram_close(s);
    let d = a.dgram_alloc().unwrap();
    assert_eq!(
        a.dgram_send(s, d, silent).unwrap_err().to_string(),
        "connection handle is closed"
    );
    assert!(a.dgram_recv(s).is_err());
    a.dgram_bind(4000).unwrap();
}
