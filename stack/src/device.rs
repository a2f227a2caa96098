//! The smoltcp [`Device`] adapter: pool frames in, pool frames out, no bounce buffer.
//!
//! * `receive` hands smoltcp a received [`Frame`] by value inside the
//!   [`FrameRx`] token; `consume` shows smoltcp `frame.data()` in place and the
//!   frame goes back to the pool when the token is done.
//! * `transmit` returns a [`FrameTx`] token; `consume(len, f)` takes a frame from
//!   the pool and lets smoltcp write the packet straight into it, then queues it
//!   for the driver's next `tx_burst`. A token dropped unused holds no frame, so
//!   nothing can leak. When the pool is empty, smoltcp writes into a scratch
//!   buffer that is discarded, and the drop is counted.
//! * Frames are pulled from the driver in bursts; pending tx frames are pushed
//!   to it in bursts.
//!
//! * A device that segments TCP ([`Capabilities::offloads`]: TAP with `IFF_VNET_HDR`,
//!   AF_XDP with TSO through a packet socket) gets smoltcp's
//!   `segmentation-offload`: a TCP socket then emits segments of up to the
//!   device's limit (64 KiB) with a zero checksum, and the segment size
//!   smoltcp asks for (its MSS) travels to the driver in [`Frame::gso_size`].
//!   A segment longer than the driver's pool frames is written into a frame
//!   of its [`Capabilities::gso_pool`].
//!
//! * A device that takes payload slices ([`Capabilities::offloads`]
//!   `tx_gather`: TAP, AF_XDP multi-buffer) gets
//!   smoltcp's `socket-tcp-extents` gather path: `consume_gather` puts only
//!   the headers into a pool frame and the driver sends them with the
//!   payload slices (of a socket ring, or of a file mapping the socket
//!   references) at once, after the frames queued before; those payload
//!   bytes are counted as sent by reference, not copied.
//!
//! The tokens also count TCP payload bytes (by reading the IPv4 and TCP header
//! lengths of each frame), because those are the bytes smoltcp copies between
//! its socket rings and frames: the one CPU copy per direction that the copy
//! budget allows (docs/architecture.md).

use std::num::NonZeroUsize;

use smoltcp::phy::{self, Checksum, Device, DeviceCapabilities, Medium, PacketMeta};
use smoltcp::time::Instant;
use zcstack_driver::header::Ipv4;
use zcstack_driver::{Capabilities, Driver, Frame, GatherSlice, Pool};

/// Ethernet header bytes (smoltcp's Ethernet MTU includes them).
pub(crate) use zcstack_driver::ETH_HLEN;

/// Counters the adapter keeps (plain integers: one thread owns the stack).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PortCounters {
    /// TCP payload bytes received (smoltcp copies them frame → socket ring).
    pub tcp_rx_payload: u64,
    pub tx: TxCounters,
    pub rx_errors: u64,
}

/// Counters the tx token updates.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct TxCounters {
    /// TCP payload bytes copied into frames (smoltcp's emit, socket ring or
    /// file → frame; or this adapter's copy when a gathering device could
    /// not take a packet now).
    pub tcp_payload: u64,
    /// TCP payload bytes the device sent from smoltcp's slices (ring or
    /// referenced memory): no CPU copy in user space.
    pub tcp_payload_ref: u64,
    /// Frames lost to driver transmit errors.
    pub errors: u64,
    /// Times the driver took fewer frames than offered.
    pub pushed_back: u64,
    /// Packets dropped because the pool was empty.
    pub dropped_no_frame: u64,
    /// Packets dropped because they did not fit a frame.
    pub dropped_too_big: u64,
}

/// A driver wrapped for smoltcp.
pub(crate) struct Port<D: Driver> {
    driver: D,
    /// The driver's [`Driver::capabilities`], read once.
    caps: Capabilities,
    /// Received frames not yet given to smoltcp, newest first (we pop from the end).
    rx: Vec<Frame>,
    /// Frames smoltcp filled, waiting for `tx_burst`.
    tx: Vec<Frame>,
    /// Where smoltcp writes when the pool is empty (that packet is dropped).
    scratch: Vec<u8>,
    /// Frames one `rx_burst` / `tx_burst` moves.
    burst: usize,
    /// Frames smoltcp may take from this port in one `Stack::poll`.
    rx_budget: usize,
    counters: PortCounters,
    /// Ethernet frame bytes: the IP MTU and the Ethernet header.
    mtu: usize,
}

impl<D: Driver> Port<D> {
    /// Wraps `driver`, whose [`Driver::capabilities`] are `caps`.
    pub fn new(driver: D, caps: Capabilities, burst: usize) -> Port<D> {
        let mtu = caps.mtu + ETH_HLEN;
        Port {
            driver,
            caps,
            rx: Vec::with_capacity(burst * 8),
            tx: Vec::with_capacity(burst * 2),
            scratch: vec![0; mtu],
            burst,
            rx_budget: 0,
            counters: PortCounters::default(),
            mtu,
        }
    }

    /// The driver's capabilities, as read when the stack took it.
    pub fn driver_caps(&self) -> &Capabilities {
        &self.caps
    }

    /// The driver underneath.
    pub fn driver(&self) -> &D {
        &self.driver
    }

    /// The driver underneath, mutably.
    pub fn driver_mut(&mut self) -> &mut D {
        &mut self.driver
    }

    /// Gives the driver back; frames still queued go back to the pool.
    pub fn into_driver(self) -> D {
        self.driver
    }

    /// The adapter's counters.
    pub fn counters(&self) -> &PortCounters {
        &self.counters
    }

    /// Received frames smoltcp may still take in this poll.
    pub fn rx_budget(&self) -> usize {
        self.rx_budget
    }

    /// After the datagram path took its frames out of
    /// [`rx_frames`](Self::rx_frames): smoltcp gets the rest.
    pub fn rx_budget_to_held(&mut self) {
        self.rx_budget = self.rx.len();
    }

    /// Pushes pending tx frames to the driver; returns how many it took.
    pub fn flush_tx(&mut self) -> usize {
        flush(&mut self.driver, &mut self.tx, &mut self.counters.tx)
    }

    /// Whether frames are waiting to be sent.
    pub fn tx_pending(&self) -> bool {
        !self.tx.is_empty() || self.driver.tx_backlog()
    }

    /// Whether one more frame may be queued for sending now (pushing a
    /// full burst to the driver first if one is waiting).
    pub fn tx_room(&mut self) -> bool {
        if self.tx.len() >= self.burst {
            self.flush_tx();
        }
        self.tx.len() < self.burst
    }

    /// Queues a frame built outside smoltcp (the datagram path) behind
    /// smoltcp's; a full burst goes to the driver at once. Call after
    /// [`tx_room`](Self::tx_room) said yes.
    pub fn queue_tx(&mut self, frame: Frame) {
        self.tx.push(frame);
        if self.tx.len() >= self.burst {
            self.flush_tx();
        }
    }

    /// The received frames not yet given to smoltcp (the datagram path
    /// takes its own out of them).
    pub fn rx_frames(&mut self) -> &mut Vec<Frame> {
        &mut self.rx
    }

    /// The driver's [`Capabilities::rx_checksums_trusted`].
    pub fn rx_trusted(&self) -> bool {
        self.caps.rx_checksums_trusted
    }

    /// Takes up to `budget` received frames from the driver, in bursts, for
    /// the next `Stack::poll`, which reads the clock after this: frames are
    /// stamped no earlier than they arrived (a clock read before a late
    /// `rx_burst` made ACKs look early, and RTTs short, whenever the thread
    /// was descheduled in between). Frames left from the last poll go first.
    /// Returns how many frames smoltcp may take in this poll.
    pub fn prefetch_rx(&mut self, budget: usize) -> usize {
        // Frames held here are out of the pool until smoltcp has read them:
        // at most an eighth of a small pool (a 512-frame TSO pool must keep
        // frames for sending), and at least one burst.
        let budget = budget.min((self.caps.pool.capacity() / 8).max(self.burst));
        if self.rx.is_empty() {
            while self.rx.len() < budget {
                let before = self.rx.len();
                let want = self.burst.min(budget - before);
                match self.driver.rx_burst(&mut self.rx, want) {
                    Ok(n) if n == want => {}
                    Ok(_) => break,
                    Err(_) => {
                        self.counters.rx_errors += 1;
                        break;
                    }
                }
            }
            self.rx.reverse();
        }
        self.rx_budget = self.rx.len();
        self.rx_budget
    }
}

/// Pushes `tx` to the driver; returns how many frames it took.
fn flush<D: Driver>(driver: &mut D, tx: &mut Vec<Frame>, c: &mut TxCounters) -> usize {
    if tx.is_empty() && !driver.tx_backlog() {
        return 0;
    }
    match driver.tx_burst(tx) {
        Ok(n) => {
            if !tx.is_empty() {
                c.pushed_back += 1;
            }
            n
        }
        Err(_) => {
            // The device failed: those frames are lost (like a NIC error); count them.
            c.errors += tx.len() as u64;
            tx.clear();
            0
        }
    }
}

/// Payload length of a TCP/IPv4 segment in an Ethernet frame, 0 for anything else.
/// Reads four header fields; never panics on short or malformed frames.
#[inline]
fn tcp_payload_len(frame: &[u8]) -> usize {
    let Some(ip) = Ipv4::of_frame(frame) else {
        return 0;
    };
    let Some(tcp) = ip.tcp() else {
        return 0;
    };
    ip.total_len()
        .saturating_sub(ip.header_len() + tcp.header_len())
}

impl<D: Driver> Device for Port<D> {
    type RxToken<'a>
        = FrameRx<'a>
    where
        Self: 'a;
    type TxToken<'a>
        = FrameTx<'a, D>
    where
        Self: 'a;

    fn receive(&mut self, _now: Instant) -> Option<(FrameRx<'_>, FrameTx<'_, D>)> {
        if self.rx_budget == 0 {
            return None;
        }
        let frame = self.rx.pop()?;
        self.rx_budget -= 1;
        let rx = FrameRx {
            frame,
            rx_payload: &mut self.counters.tcp_rx_payload,
        };
        let tx = FrameTx {
            driver: &mut self.driver,
            pool: &self.caps.pool,
            gso_pool: self.caps.gso_pool.as_ref(),
            tx: &mut self.tx,
            scratch: &mut self.scratch,
            counters: &mut self.counters.tx,
            gso_size: 0,
        };
        Some((rx, tx))
    }

    fn transmit(&mut self, _now: Instant) -> Option<FrameTx<'_, D>> {
        if self.tx.len() >= self.burst {
            self.flush_tx();
            if self.tx.len() >= self.burst {
                // The device is backed up: let smoltcp retry on a later poll.
                return None;
            }
        }
        Some(FrameTx {
            driver: &mut self.driver,
            pool: &self.caps.pool,
            gso_pool: self.caps.gso_pool.as_ref(),
            tx: &mut self.tx,
            scratch: &mut self.scratch,
            counters: &mut self.counters.tx,
            gso_size: 0,
        })
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = self.mtu;
        caps.max_burst_size = None;
        let (trusted, offloads) = (self.caps.rx_checksums_trusted, self.caps.offloads);
        if trusted {
            // Frames from this machine's kernel (veth) may carry partial
            // checksums (offloaded); verify none on receive, compute all on send.
            caps.checksum.ipv4 = Checksum::Tx;
            caps.checksum.tcp = Checksum::Tx;
            caps.checksum.udp = Checksum::Tx;
            caps.checksum.icmpv4 = Checksum::Tx;
        }
        if offloads.tx_tcp_checksum && trusted {
            // The device finishes TCP checksums (smoltcp leaves them zero).
            caps.checksum.tcp = Checksum::None;
            // smoltcp asserts that segmentation comes with checksum offload.
            caps.segmentation.tcpv4 = offloads.tcp_segmentation.and_then(NonZeroUsize::new);
        }
        // TCP payloads go to the driver as slices (smoltcp patch 20).
        caps.tx_gather = offloads.tx_gather;
        caps
    }
}

/// A received frame on its way into smoltcp.
pub(crate) struct FrameRx<'a> {
    frame: Frame,
    rx_payload: &'a mut u64,
}

impl phy::RxToken for FrameRx<'_> {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        let data = self.frame.data();
        *self.rx_payload += tcp_payload_len(data) as u64;
        f(data)
        // `self.frame` drops here: back to the pool.
    }
}

/// Permission to send one frame; the frame is taken from the pool only in `consume`.
pub(crate) struct FrameTx<'a, D: Driver> {
    /// For `consume_gather`, which sends at once.
    driver: &'a mut D,
    pool: &'a Pool,
    /// Where frames longer than a `pool` frame come from, if anywhere.
    gso_pool: Option<&'a Pool>,
    tx: &'a mut Vec<Frame>,
    scratch: &'a mut Vec<u8>,
    counters: &'a mut TxCounters,
    /// The segment size smoltcp asked the device to cut this packet into.
    gso_size: u16,
}

impl<D: Driver> phy::TxToken for FrameTx<'_, D> {
    fn set_meta(&mut self, meta: PacketMeta) {
        self.gso_size = meta.segmentation_offload_size.map_or(0, |s| s.get());
    }

    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let pool = match self.gso_pool {
            Some(big) if len > self.pool.frame_capacity() => big,
            _ => self.pool,
        };
        match pool.alloc() {
            Some(mut frame) if len <= frame.capacity() => {
                frame.set_len(len);
                frame.set_gso_size(self.gso_size);
                let r = f(frame.data_mut());
                self.counters.tcp_payload += tcp_payload_len(frame.data()) as u64;
                self.tx.push(frame);
                r
            }
            other => {
                if other.is_some() {
                    self.counters.dropped_too_big += 1;
                } else {
                    self.counters.dropped_no_frame += 1;
                }
                if self.scratch.len() < len {
                    self.scratch.resize(len, 0);
                }
                f(&mut self.scratch[..len])
            }
        }
    }

    /// A TCP segment whose payload smoltcp hands over as slices (of a
    /// socket ring, or of memory it sends by reference): the headers go
    /// into a pool frame, and the driver sends frame and slices at once
    /// (TAP: one `writev`), after the frames queued before it so the order
    /// on the wire stays smoltcp's. If the driver cannot take it now, the
    /// payload is copied into the frame, which is queued as usual.
    fn consume_gather<R, F>(self, header_len: usize, payload: &[GatherSlice<'_>], f: F) -> R
    where
        F: FnOnce(&mut [u8]) -> R,
    {
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let len = header_len + payload_len;
        // Room for the whole packet, for the copy fallback, unless a longer
        // frame can be had then (the GSO pool).
        let room = if self.gso_pool.is_some() {
            header_len
        } else {
            len
        };
        let mut frame = match self.pool.alloc() {
            Some(frame) if room <= frame.capacity() => frame,
            other => {
                if other.is_some() {
                    self.counters.dropped_too_big += 1;
                } else {
                    self.counters.dropped_no_frame += 1;
                }
                if self.scratch.len() < header_len {
                    self.scratch.resize(header_len, 0);
                }
                return f(&mut self.scratch[..header_len]);
            }
        };
        frame.set_len(header_len);
        frame.set_gso_size(self.gso_size);
        let r = f(frame.data_mut());
        flush(self.driver, self.tx, self.counters);
        if self.tx.is_empty() {
            match self.driver.tx_gather(frame, payload) {
                Ok(()) => {
                    // Sent, or queued holding references to the payload.
                    self.counters.tcp_payload_ref += payload_len as u64;
                    return r;
                }
                Err(f) => frame = f,
            }
        }
        if len > frame.capacity() {
            // Copied after all, into a frame long enough (the GSO pool's).
            let Some(mut big) = self
                .gso_pool
                .and_then(Pool::alloc)
                .filter(|b| len <= b.capacity())
            else {
                self.counters.dropped_no_frame += 1;
                return r;
            };
            big.set_len(header_len);
            big.set_gso_size(self.gso_size);
            big.data_mut().copy_from_slice(frame.data());
            frame = big;
        }
        frame.set_len(len);
        let mut at = header_len;
        let data = frame.data_mut();
        for p in payload {
            data[at..at + p.len()].copy_from_slice(p.bytes());
            at += p.len();
        }
        self.counters.tcp_payload += payload_len as u64;
        self.tx.push(frame);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use smoltcp::phy::{RxToken, TxToken};
    use zcstack_driver::wire::{self, WireConfig};
    use zcstack_driver::{Driver, Offloads, PoolConfig};

    /// `driver` as the stack takes it, with bursts of 32.
    fn port<D: Driver>(driver: D) -> Port<D> {
        let caps = driver.capabilities();
        Port::new(driver, caps, 32)
    }

    fn ports() -> (Port<wire::WireEnd>, Port<wire::WireEnd>, Pool) {
        let pool = PoolConfig::new().frames(64).build().unwrap();
        let (a, b) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        (port(a), port(b), pool)
    }

    /// The zero-copy claim: the bytes smoltcp reads on receive and writes on
    /// transmit are the pool frames themselves, not a bounce buffer.
    #[test]
    fn smoltcp_sees_pool_memory_both_ways() {
        let (mut a, mut b, pool) = ports();
        let tok = a.transmit(Instant::ZERO).unwrap();
        let written_at = tok.consume(60, |buf| {
            assert!(pool.contains(buf), "tx buffer outside the pool mapping");
            buf.fill(0xab);
            buf.as_ptr() as usize
        });
        assert_eq!(a.flush_tx(), 1);
        b.prefetch_rx(16);
        let (rx, _tx) = b.receive(Instant::ZERO).unwrap();
        let read_at = rx.consume(|buf| {
            assert!(pool.contains(buf), "rx buffer outside the pool mapping");
            assert!(buf.iter().all(|&x| x == 0xab));
            buf.as_ptr() as usize
        });
        assert_eq!(
            written_at, read_at,
            "the receiver read the very frame the sender wrote"
        );
        assert_eq!(pool.stats().free, 64, "both frames went back to the pool");
    }

    #[test]
    fn unused_tokens_keep_no_frames() {
        let (mut a, mut b, pool) = ports();
        for _ in 0..10 {
            let _unused = a.transmit(Instant::ZERO).unwrap();
        }
        let mut f = pool.alloc().unwrap();
        f.set_len(60);
        a.driver.tx_burst(&mut vec![f]).unwrap();
        b.prefetch_rx(16);
        let (rx, tx) = b.receive(Instant::ZERO).unwrap();
        let _ = tx;
        drop(rx);
        assert_eq!(pool.stats().free, 64);
    }

    #[test]
    fn empty_pool_drops_and_counts() {
        let (mut a, _b, pool) = ports();
        let mut hog = Vec::new();
        pool.alloc_burst(64, &mut hog);
        let tok = a.transmit(Instant::ZERO).unwrap();
        let n = tok.consume(100, |buf| buf.len());
        assert_eq!(n, 100);
        assert_eq!(a.counters.tx.dropped_no_frame, 1);
        assert!(!a.tx_pending());
    }

    #[test]
    fn tcp_payload_length_parses_and_never_panics() {
        // Ethernet + IPv4 (ihl 5, total 52) + TCP (doff 8 = 32 bytes): 0 payload; then 100.
        let mut f = vec![0u8; 14 + 20 + 32 + 100];
        f[12] = 0x08;
        f[14] = 0x45;
        f[14 + 9] = 6;
        f[14 + 20 + 12] = 8 << 4;
        f[16..18].copy_from_slice(&(20u16 + 32 + 100).to_be_bytes());
        assert_eq!(tcp_payload_len(&f), 100);
        for cut in 0..f.len() {
            let _ = tcp_payload_len(&f[..cut]);
        }
        f[14 + 9] = 17;
        assert_eq!(tcp_payload_len(&f), 0);
    }

    /// A wire end that claims TSO and TCP checksum offload, as a
    /// vnet-header TAP does; with a GSO pool, as AF_XDP with TSO through a
    /// packet socket does.
    struct Tso(wire::WireEnd, Option<Pool>);

    impl Driver for Tso {
        fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> std::io::Result<usize> {
            self.0.rx_burst(out, max)
        }
        fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> std::io::Result<usize> {
            self.0.tx_burst(frames)
        }
        fn capabilities(&self) -> Capabilities {
            let mut caps = Capabilities::new(self.0.pool().clone(), 1500, "tso");
            caps.gso_pool = self.1.clone();
            caps.rx_checksums_trusted = true;
            caps.offloads = Offloads {
                tx_tcp_checksum: true,
                tcp_segmentation: Some(65000),
                tx_gather: false,
            };
            caps
        }
        fn stats(&self) -> zcstack_driver::DriverStats {
            self.0.stats()
        }
    }

    /// The device's offloads reach smoltcp's capabilities, and the segment
    /// size smoltcp asks for reaches the frame the driver gets.
    #[test]
    fn offloads_become_capabilities_and_gso_size_reaches_the_frame() {
        let (a, _b, pool) = ports();
        assert!(a.capabilities().segmentation.tcpv4.is_none());
        assert!(
            a.capabilities().checksum.tcp.tx(),
            "plain devices: smoltcp checksums"
        );
        let big = PoolConfig::new()
            .frames(8)
            .frame_size(64 << 10)
            .build()
            .unwrap();
        let (wa, _wb) = wire::pair(big.clone(), big.clone(), WireConfig::default());
        let mut t = port(Tso(wa, None));
        let caps = t.capabilities();
        assert_eq!(caps.segmentation.tcpv4.map(|n| n.get()), Some(65000));
        assert!(!caps.checksum.tcp.tx() && !caps.checksum.tcp.rx());
        assert_eq!(
            caps.max_transmission_unit, 1514,
            "the MSS still comes from the MTU"
        );
        let mut tok = t.transmit(Instant::ZERO).unwrap();
        let mut meta = PacketMeta::default();
        meta.segmentation_offload_size = std::num::NonZeroU16::new(1448);
        tok.set_meta(meta);
        tok.consume(30000, |buf| buf.fill(0));
        assert_eq!(t.tx.len(), 1);
        assert_eq!(t.tx[0].gso_size(), 1448);
        assert_eq!(t.tx[0].len(), 30000);
        // A token without meta asks for no segmentation.
        t.transmit(Instant::ZERO).unwrap().consume(60, |_| ());
        assert_eq!(t.tx[1].gso_size(), 0);
        drop(t);
        assert_eq!(big.stats().free, 8);
        assert_eq!(pool.stats().free, 64);
    }

    /// With a GSO pool, a segment longer than a pool frame is written into
    /// a GSO frame, smaller packets into pool frames; both pools fill again.
    #[test]
    fn long_segments_come_from_the_gso_pool() {
        let small = PoolConfig::new().frames(16).build().unwrap();
        let big = PoolConfig::new()
            .frames(4)
            .frame_size(64 << 10)
            .build()
            .unwrap();
        let (wa, _wb) = wire::pair(small.clone(), small.clone(), WireConfig::default());
        let mut t = port(Tso(wa, Some(big.clone())));
        t.transmit(Instant::ZERO)
            .unwrap()
            .consume(60000, |buf| assert!(big.contains(buf), "not a GSO frame"));
        t.transmit(Instant::ZERO)
            .unwrap()
            .consume(1514, |buf| assert!(small.contains(buf), "not a pool frame"));
        assert_eq!(big.stats().in_use, 1);
        assert_eq!(small.stats().in_use, 1);
        // Larger than even a GSO frame: dropped and counted.
        t.transmit(Instant::ZERO).unwrap().consume(70000, |_| ());
        assert_eq!(t.counters.tx.dropped_too_big, 1);
        drop(t);
        assert_eq!(big.stats().free, 4);
        assert_eq!(small.stats().free, 16);
    }

    /// A wire end that takes payload slices as TAP does: it sends the
    /// packet at once (assembling it in a frame stands in for the kernel's
    /// copy), or declines when `accept` is false.
    struct Gatherer {
        end: wire::WireEnd,
        accept: bool,
        gathered: usize,
        /// Queue gathered packets with references to their payload, and
        /// send them at the next `tx_burst` (as `XdpGso` does).
        defer: Option<Vec<(Frame, Vec<zcstack_driver::TxRef>)>>,
    }

    impl Gatherer {
        fn send(&mut self, frame: &Frame, payload: &[&[u8]]) {
            let mut f = self.end.pool().alloc().unwrap();
            let mut bytes = frame.data().to_vec();
            for p in payload {
                bytes.extend_from_slice(p);
            }
            f.set_len(bytes.len());
            f.data_mut().copy_from_slice(&bytes);
            self.end.tx_burst(&mut vec![f]).unwrap();
        }
    }

    impl Driver for Gatherer {
        fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> std::io::Result<usize> {
            self.end.rx_burst(out, max)
        }
        fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> std::io::Result<usize> {
            if let Some(q) = self.defer.take() {
                for (f, refs) in &q {
                    let slices: Vec<&[u8]> = refs.iter().map(|r| r.bytes()).collect();
                    self.send(f, &slices);
                }
                self.defer = Some(Vec::new());
            }
            self.end.tx_burst(frames)
        }
        fn tx_backlog(&self) -> bool {
            self.defer.as_ref().is_some_and(|q| !q.is_empty())
        }
        fn capabilities(&self) -> Capabilities {
            let mut caps = Capabilities::new(self.end.pool().clone(), 1500, "gatherer");
            caps.offloads.tx_gather = true;
            caps
        }
        fn stats(&self) -> zcstack_driver::DriverStats {
            self.end.stats()
        }
        fn tx_gather(&mut self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
            if !self.accept {
                return Err(frame);
            }
            self.gathered += 1;
            if let Some(q) = self.defer.as_mut() {
                let Some(refs) = payload.iter().map(|p| p.to_ref()).collect() else {
                    return Err(frame);
                };
                q.push((frame, refs));
                return Ok(());
            }
            let slices: Vec<&[u8]> = payload.iter().map(|p| p.bytes()).collect();
            self.send(&frame, &slices);
            Ok(())
        }
    }

    /// Gathered packets leave at once, after the frames queued before them
    /// (the order smoltcp made them in); their payload is counted as sent
    /// by reference. A driver that declines gets the payload copied into
    /// the frame, queued as usual, counted as a copy.
    #[test]
    fn gathered_packets_keep_their_order_and_are_counted() {
        let (a, mut b, pool) = ports();
        let mut g = port(Gatherer {
            end: a.driver,
            accept: true,
            gathered: 0,
            defer: None,
        });
        assert!(g.capabilities().tx_gather);
        g.transmit(Instant::ZERO)
            .unwrap()
            .consume(60, |buf| buf.fill(1));
        let payload: &[u8] = &[7; 1000];
        g.transmit(Instant::ZERO).unwrap().consume_gather(
            54,
            &[
                GatherSlice::borrowed(payload),
                GatherSlice::borrowed(&payload[..3]),
            ],
            |h| h.fill(2),
        );
        assert_eq!(g.driver.gathered, 1);
        assert_eq!(g.counters.tx.tcp_payload_ref, 1003);
        assert_eq!(g.counters.tx.tcp_payload, 0);
        assert!(!g.tx_pending(), "the queued frame went first");
        g.driver.accept = false;
        g.transmit(Instant::ZERO).unwrap().consume_gather(
            54,
            &[GatherSlice::borrowed(payload)],
            |h| h.fill(3),
        );
        assert_eq!(g.counters.tx.tcp_payload, 1000, "declined: copied");
        assert_eq!(g.flush_tx(), 1);
        b.prefetch_rx(16);
        let mut firsts = Vec::new();
        while let Some((rx, _)) = b.receive(Instant::ZERO) {
            firsts.push(rx.consume(|d| (d[0], d.len(), d[d.len() - 1])));
        }
        assert_eq!(firsts, vec![(1, 60, 1), (2, 1057, 7), (3, 1054, 7)]);
        drop(g);
        assert_eq!(pool.stats().free, 64, "header frames went back to the pool");
    }

    /// A driver that sends after the call keeps the payload by reference
    /// (one `TxRef` per slice); the port sees its backlog as pending and
    /// flushes it before later frames. Borrowed slices (ring bytes) it
    /// cannot keep: those are copied into the frame.
    #[test]
    fn deferred_gathers_hold_their_payload_until_sent() {
        use zcstack_driver::{TxRef, TxSource};
        let (a, mut b, pool) = ports();
        let mut g = port(Gatherer {
            end: a.driver,
            accept: true,
            gathered: 0,
            defer: Some(Vec::new()),
        });
        let src: std::sync::Arc<dyn TxSource> = std::sync::Arc::new(vec![9u8; 2000]);
        let r = TxRef::new(src.clone(), 100, 1000).unwrap();
        g.transmit(Instant::ZERO).unwrap().consume_gather(
            54,
            &[GatherSlice::of_ref(&r, 0, 1000).unwrap()],
            |h| h.fill(4),
        );
        drop(r);
        assert_eq!(g.counters.tx.tcp_payload_ref, 1000);
        assert_eq!(std::sync::Arc::strong_count(&src), 2, "held by the driver");
        assert!(g.tx_pending(), "the driver's backlog is pending");
        g.transmit(Instant::ZERO)
            .unwrap()
            .consume(60, |buf| buf.fill(5));
        g.transmit(Instant::ZERO).unwrap().consume_gather(
            54,
            &[GatherSlice::borrowed(&[6; 10])],
            |h| h.fill(6),
        );
        assert_eq!(g.counters.tx.tcp_payload, 10, "ring bytes: copied");
        g.flush_tx();
        assert!(!g.tx_pending());
        assert_eq!(std::sync::Arc::strong_count(&src), 1, "released once sent");
        b.prefetch_rx(16);
        let mut firsts = Vec::new();
        while let Some((rx, _)) = b.receive(Instant::ZERO) {
            firsts.push(rx.consume(|d| (d[0], d.len(), d[d.len() - 1])));
        }
        assert_eq!(firsts, vec![(4, 1054, 9), (5, 60, 5), (6, 64, 6)]);
        drop(g);
        assert_eq!(pool.stats().free, 64);
    }
}
