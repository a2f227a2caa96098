//! ZCSTACK PATCH 20 tests: TCP payloads sent by reference (see
//! `third_party/smoltcp/ZCSTACK-PATCHES.md`).

use std::collections::VecDeque;
use std::sync::Arc;
use std::vec::Vec;

use crate::iface::{Config, Interface, SocketSet};
use crate::phy::{self, Device, DeviceCapabilities, Medium};
use crate::socket::tcp::{self, GatherSlice, TxRef, TxSource};
use crate::time::{Duration, Instant};
use crate::wire::{HardwareAddress, IpAddress, IpCidr};

/// A loopback that may take payloads as slices. It records, per data
/// segment it gathers, where the payload was read from; it can drop the
/// first `drop` gathered segments (lost on the wire).
struct Loop {
    queue: VecDeque<Vec<u8>>,
    gather: bool,
    /// Payload slices it was given: (address, length).
    gathered: Vec<(usize, usize)>,
    drop: usize,
    /// ZCSTACK PATCH 26: keep a reference to every payload slice sent by
    /// reference, as a device whose TX completes later does, until
    /// `complete` (here: long after the peer acknowledged them).
    keep: bool,
    in_flight: Vec<TxRef>,
    /// Slices handed over without a reference (ring bytes).
    borrowed: usize,
    /// ZCSTACK PATCH 30: each gathered segment's slices' lengths.
    segments: Vec<Vec<usize>>,
}

struct Rx(Vec<u8>);

struct Tx<'a>(&'a mut Loop);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        self.0.queue.push_back(buf);
        r
    }

    fn consume_gather<R, F>(self, header_len: usize, payload: &[GatherSlice<'_>], f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        assert!(self.0.gather, "gathered by a device that did not ask");
        let mut buf = vec![0; header_len];
        let r = f(&mut buf);
        self.0.segments.push(payload.iter().map(|p| p.len()).collect());
        for p in payload {
            self.0.gathered.push((p.bytes().as_ptr() as usize, p.len()));
            buf.extend_from_slice(p.bytes());
            match p.to_ref() {
                Some(r) => {
                    assert_eq!(r.bytes(), p.bytes(), "the reference holds these bytes");
                    if self.0.keep {
                        self.0.in_flight.push(r);
                    }
                }
                None => self.0.borrowed += 1,
            }
        }
        if self.0.drop > 0 {
            self.0.drop -= 1;
        } else {
            self.0.queue.push_back(buf);
        }
        r
    }
}

impl Device for Loop {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 1500;
        caps.medium = Medium::Ip;
        // Checksums computed on send and verified on receive: a wrong sum
        // over the slices would drop every segment.
        caps.tx_gather = self.gather;
        caps
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let buf = self.queue.pop_front()?;
        Some((Rx(buf), Tx(self)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(self))
    }
}

fn socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    s
}

struct Run {
    received: Vec<u8>,
    gathered: Vec<(usize, usize)>,
    src_refs_after: usize,
    /// References the device still held at the end.
    in_flight: Vec<TxRef>,
    borrowed: usize,
    segments: Vec<Vec<usize>>,
}

/// A header written into the ring, 20000 bytes of a source by reference
/// (odd offset, odd length: the checksum over slices must handle both),
/// and a trailer in the ring; received by a second socket on the loopback.
fn run(gather: bool, drop: usize) -> (Run, Arc<Vec<u8>>) {
    run_keeping(gather, drop, false)
}

fn run_keeping(gather: bool, drop: usize, keep: bool) -> (Run, Arc<Vec<u8>>) {
    let body: Vec<u8> = (0..30001u32).map(|i| (i * 7 % 253) as u8).collect();
    let src = Arc::new(body);
    let mut dev = Loop {
        queue: VecDeque::new(),
        gather,
        gathered: Vec::new(),
        drop: 0,
        keep,
        in_flight: Vec::new(),
        borrowed: 0,
        segments: Vec::new(),
    };
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
    let mut sockets = SocketSet::new(vec![]);
    let mut server = socket();
    server.listen(80).unwrap();
    let server = sockets.add(server);
    let mut client = socket();
    client
        .connect(iface.context(), (IpAddress::v4(127, 0, 0, 1), 80), 4000)
        .unwrap();
    let client = sockets.add(client);
    let mut now = Instant::ZERO;
    for _ in 0..5 {
        iface.poll(now, &mut dev, &mut sockets);
        now += Duration::from_millis(1);
    }
    dev.drop = drop;
    {
        let c = sockets.get_mut::<tcp::Socket>(client);
        assert_eq!(c.state(), tcp::State::Established);
        assert_eq!(c.send_slice(b"HEADER\r\n").unwrap(), 8);
        let r = TxRef::new(src.clone() as Arc<dyn TxSource>, 1, 20001).unwrap();
        assert_eq!(c.send_ref(r).unwrap(), 20001);
        assert_eq!(c.send_slice(b"TRAILER").unwrap(), 7);
        assert_eq!(c.send_queue(), 8 + 20001 + 7);
        assert_eq!(c.send_ref_queue(), 20001);
    }
    let mut received = Vec::new();
    for _ in 0..3000 {
        iface.poll(now, &mut dev, &mut sockets);
        let s = sockets.get_mut::<tcp::Socket>(server);
        while s.can_recv() {
            s.recv(|b| {
                received.extend_from_slice(b);
                (b.len(), ())
            })
            .unwrap();
        }
        if sockets.get::<tcp::Socket>(client).send_queue() == 0 {
            break;
        }
        now += Duration::from_millis(1);
    }
    let run = Run {
        received,
        gathered: dev.gathered,
        src_refs_after: Arc::strong_count(&src),
        in_flight: dev.in_flight,
        borrowed: dev.borrowed,
        segments: dev.segments,
    };
    (run, src)
}

fn expected(src: &[u8]) -> Vec<u8> {
    let mut want = b"HEADER\r\n".to_vec();
    want.extend_from_slice(&src[1..20002]);
    want.extend_from_slice(b"TRAILER");
    want
}

/// Payload bytes of gathered segments that were read from `src`, and
/// whether they cover all of the referenced range `src[1..20002]`.
fn from_src(run: &Run, src: &[u8]) -> (usize, bool) {
    let base = src.as_ptr() as usize;
    let mut seen = vec![false; src.len()];
    let mut n = 0;
    for &(at, len) in &run.gathered {
        if at >= base && at + len <= base + src.len() {
            seen[at - base..at - base + len].fill(true);
            n += len;
        }
    }
    (n, seen[1..20002].iter().all(|&x| x))
}

#[test]
fn zcstack_payload_goes_by_reference_to_a_gathering_device() {
    let (run, src) = run(true, 0);
    assert_eq!(run.received, expected(&src), "bytes equal, in order");
    let (n, all) = from_src(&run, &src);
    assert!(
        all && n >= 20001,
        "every referenced byte left from its source"
    );
    let total: usize = run.gathered.iter().map(|g| g.1).sum();
    assert_eq!(total - n, 8 + 7, "ring bytes go as slices too");
    assert_eq!(
        run.src_refs_after, 1,
        "the reference is released once acknowledged"
    );
}

#[test]
fn zcstack_a_lost_segment_is_resent_from_its_extent() {
    // The first two segments (the header, then the first of the source's)
    // are lost; the retransmission reads the source again.
    let (run, src) = run(true, 2);
    assert_eq!(run.received, expected(&src));
    let (n, all) = from_src(&run, &src);
    assert!(
        all && n > 20001,
        "lost source bytes left again, from the source: {n}"
    );
    assert_eq!(run.src_refs_after, 1);
}

#[test]
fn zcstack_other_devices_get_a_copy() {
    let (run, src) = run(false, 0);
    assert_eq!(run.received, expected(&src));
    assert!(run.gathered.is_empty());
    assert_eq!(run.src_refs_after, 1);
}

/// ZCSTACK PATCH 26: a device that completes its transmissions later keeps
/// the referenced bytes alive past the peer's acknowledgement, with one
/// reference per segment and none for ring bytes.
#[test]
fn zcstack_a_device_keeps_referenced_bytes_until_its_tx_completes() {
    let (run, src) = run_keeping(true, 0, true);
    assert_eq!(run.received, expected(&src));
    assert_eq!(
        run.borrowed, 2,
        "the header and trailer: ring bytes, no reference"
    );
    // One reference per gathered segment of the source (a tail loss probe
    // may have sent one twice): together exactly the referenced range.
    let mut covered = vec![false; src.len()];
    for r in &run.in_flight {
        assert!(Arc::ptr_eq(r.source(), &(src.clone() as Arc<dyn TxSource>)));
        covered[r.start()..r.start() + r.len()].fill(true);
    }
    assert!(covered[1..20002].iter().all(|&c| c));
    assert!(!covered[0] && !covered[20002..].iter().any(|&c| c));
    assert_eq!(
        run.src_refs_after,
        1 + run.in_flight.len(),
        "acknowledged by the peer, released by the socket, still held by the device"
    );
    for r in &run.in_flight {
        assert_eq!(r.bytes(), &src[r.start()..r.start() + r.len()]);
    }
    drop(run.in_flight);
    assert_eq!(Arc::strong_count(&src), 1, "released when the TX completes");
}

/// ZCSTACK PATCH 30: a segment spans the extents it reaches — the header
/// in the ring and the start of the reference go in one segment, the end
/// of the reference and the trailer in another — so the 20 016 bytes take
/// as many segments as one extent of that length would (14 of 1460), not
/// one more per extent boundary, and arrive intact (checksums verified).
#[test]
fn zcstack_patch30_a_segment_spans_the_extents_it_reaches() {
    let (run, src) = run(true, 0);
    assert_eq!(run.received, expected(&src));
    let mss = 1500 - 40;
    assert_eq!(run.segments.len(), (8 + 20001 + 7usize).div_ceil(mss));
    assert_eq!(run.segments[0], [8, mss - 8], "header, then the reference");
    let last = run.segments.last().unwrap();
    assert_eq!(last.len(), 2, "the reference's end, then the trailer");
    assert_eq!(last[1], 7);
    assert!(run.segments.iter().all(|s| s.iter().sum::<usize>() <= mss));
}
