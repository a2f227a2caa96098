//! The datagram API (UDP by frame handle) between two stacks on the
//! in-memory wire: a million datagrams echoed in place, none lost, every
//! byte and checksum checked, no payload byte copied.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use zcstack::{RxDatagram, Stack, TxDatagram};
use zcstack_driver::PoolConfig;
use zcstack_driver::wire::{self, WireConfig};

const A: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 1);
const B: Ipv4Addr = Ipv4Addr::new(10, 200, 0, 2);
const TOTAL: u64 = 1_000_000;
/// Datagrams the client keeps in flight.
const WINDOW: u64 = 512;
const BURST: usize = 64;

/// Payload of datagram `seq`: its number, then 10 to 56 bytes derived from it.
fn fill(seq: u64, buf: &mut [u8]) -> usize {
    let len = 18 + (seq % 47) as usize;
    buf[..8].copy_from_slice(&seq.to_le_bytes());
    for (i, b) in buf[8..len].iter_mut().enumerate() {
        *b = (seq as u8).wrapping_mul(31).wrapping_add(i as u8);
    }
    len
}

fn check(seq: u64, payload: &[u8]) -> bool {
    let mut want = [0u8; 64];
    let len = fill(seq, &mut want);
    payload == &want[..len]
}

/// A UDP echo over the datagram API returns 1 000 000 datagrams of 18 to
/// 64 bytes, in order, each with its own bytes (the receiver verifies the
/// IPv4 and UDP checksums of every one: the wire does not vouch for them,
/// and a wrong one would be dropped and counted, so no loss means no bad
/// checksum). Each payload lies in the pool mapping when the client writes
/// it, when the server reads it and echoes it in place, and when the
/// client reads it back; the socket-copy counters stay 0 and the pool is
/// full at the end.
#[test]
fn a_million_datagrams_echo_with_no_loss_and_no_copy() {
    let pool = PoolConfig::new().frames(4096).build().unwrap();
    let (ea, eb) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
    let mut a = Stack::builder(ea).ip(A, 24).build().unwrap();
    let mut b = Stack::builder(eb).ip(B, 24).build().unwrap();
    let sa = a.dgram_bind(40000).unwrap();
    let sb = b.dgram_bind(7).unwrap();
    let (to_b, to_a) = (SocketAddrV4::new(B, 7), SocketAddrV4::new(A, 40000));
    let deadline = Instant::now() + Duration::from_secs(300);
    let (mut sent, mut got, mut outside) = (0u64, 0u64, 0u64);
    let mut tx: Vec<(TxDatagram, SocketAddrV4)> = Vec::with_capacity(BURST);
    let mut rx: Vec<RxDatagram> = Vec::with_capacity(BURST);
    let mut fresh: Vec<TxDatagram> = Vec::with_capacity(BURST);
    while got < TOTAL {
        assert!(
            Instant::now() < deadline,
            "timed out: sent {sent}, echoed back {got}"
        );
        // Client: top the window up, in bursts.
        let room = (WINDOW - (sent - got)).min(TOTAL - sent).min(BURST as u64) as usize;
        if tx.is_empty() && room > 0 {
            a.dgram_alloc_burst(room, &mut fresh);
            for mut d in fresh.drain(..) {
                let n = fill(sent, d.room_mut());
                d.set_len(n);
                outside += u64::from(!pool.contains(d.payload()));
                tx.push((d, to_b));
                sent += 1;
            }
        }
        a.dgram_send_burst(sa, &mut tx).unwrap();
        // Server: echo what arrived, in place.
        b.dgram_recv_burst(sb, &mut rx, BURST).unwrap();
        let mut echo: Vec<(TxDatagram, SocketAddrV4)> = Vec::with_capacity(rx.len());
        for r in rx.drain(..) {
            outside += u64::from(!pool.contains(r.payload()));
            assert_eq!(r.source(), to_a);
            echo.push((r.into_reply(), to_a));
        }
        while !echo.is_empty() {
            b.dgram_send_burst(sb, &mut echo).unwrap();
            if !echo.is_empty() {
                a.poll();
                b.poll();
            }
        }
        // Client: every datagram back, in order, with its bytes.
        a.dgram_recv_burst(sa, &mut rx, BURST).unwrap();
        for r in rx.drain(..) {
            outside += u64::from(!pool.contains(r.payload()));
            assert!(check(got, r.payload()), "datagram {got} came back wrong");
            got += 1;
        }
        a.poll();
        b.poll();
    }
    assert_eq!(outside, 0, "payloads outside the pool mapping");
    for (who, s) in [("client", a.stats()), ("server", b.stats())] {
        let d = s.dgram;
        assert_eq!(
            (d.tx_datagrams, d.rx_datagrams),
            (TOTAL, TOTAL),
            "{who}: {d}"
        );
        assert_eq!(
            d.rx_malformed + d.rx_queue_full + d.tx_unresolved,
            0,
            "{who}: {d}"
        );
        assert_eq!(s.rx_malformed, 0, "{who}");
        assert_eq!(
            s.app_read_bytes + s.app_write_bytes,
            0,
            "{who}: socket copies"
        );
        assert_eq!(s.tcp_rx_payload + s.tcp_tx_payload, 0, "{who}");
    }
    assert_eq!(a.stats().dgram.tx_bytes, b.stats().dgram.rx_bytes);
    assert_eq!(a.stats().dgram.rx_bytes, a.stats().dgram.tx_bytes);
    drop((a, b, tx, rx, fresh));
    assert_eq!(pool.stats().in_use, 0, "pool full again");
}
