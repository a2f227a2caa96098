//! # zcstack-driver: the buffer pool and the poll-mode drivers
//!
//! A received packet's path through this crate:
//!
//! ```text
//!  AF_XDP RX ring / TAP fd / wire ──rx_burst──► Frame (owned handle into the Pool)
//!                                          │  (handed to the stack by value)
//!  AF_XDP TX ring / TAP fd / wire ◄─tx_burst──  Frame filled by the stack
//! ```
//!
//! Modules:
//! - [`pool`]: the fbufs-like pool: one memfd mapping cut into fixed frames,
//!   a lock-free free list with per-thread caches, [`Frame`] handles that go
//!   back to the pool on `Drop`, and [`PoolStats`].
//! - [`Driver`] (this file): the burst interface every device implements
//!   (receive and send bursts, send by reference, [`Capabilities`] read
//!   once, counters, an idle wait), and [`Layer`], the base of a wrapper
//!   that changes part of what a driver does and forwards the rest.
//! - [`tap`]: a Linux TAP device, read and written straight from pool frames;
//!   optionally with `IFF_VNET_HDR` offloads (64 KiB TCP segments, partial
//!   checksums), whose header lives in [`vnet`] (shared with [`packet`]).
//! - [`offload`]: the checksum work drivers do for the stack (Internet
//!   sums, verifying received checksums, asking a device to finish a TCP
//!   checksum), used by TAP and the packet socket through [`vnet`] and by
//!   AF_XDP's TX metadata; [`header`]: the small typed Ethernet, IPv4, TCP
//!   and UDP header views they (and the stack's datagram path) read frames
//!   with, and [`ETH_HLEN`].
//! - [`wire`]: an in-memory pair of endpoints, the unprivileged device used
//!   by deterministic tests; faults come from wrapping an end in
//!   [`impair::Impaired`].
//! - [`xdp`]: AF_XDP: the pool is the UMEM, so ring descriptors are pool
//!   frames; a six-instruction redirect program loaded with raw `bpf(2)`.
//!   [`xdp::XdpGso`] adds TCP segmentation offload on transmit through
//!   [`packet`].
//! - [`packet`]: an `AF_PACKET` socket that sends frames with virtio-net
//!   headers ([`vnet`]) in `sendmmsg` batches: 64 KiB TCP segments on any
//!   Ethernet interface, segmented by the kernel or the NIC.
//! - [`pcap`]: a wrapper that records every frame a driver moves to a pcap file.
//! - [`ifname`]: what the kernel takes as an interface name, checked before
//!   TAP or AF_XDP makes a syscall with one.
//! - [`impair`]: a seeded path model (loss, bursty loss, delay, jitter,
//!   reordering, duplication, corruption, a rate-limited bottleneck) driven
//!   by the caller's clock, and [`impair::Impaired`], a wrapper that puts
//!   it on any driver (the in-memory wire in deterministic tests; the
//!   `zc-impair` relay uses the model between two AF_XDP sockets).
//! - `sys`: the few raw syscalls. The crate denies `unsafe_code` and allows
//!   it by name only in `sys`, `pool`, `packet` and `xdp`'s ring, socket,
//!   setup, bpf and netlink modules (and `Xdp::open`'s call into setup). Its [`tcp_info`] (a kernel TCP
//!   socket's `TCP_INFO`) is public for tools that measure the kernel's stack
//!   beside zcstack (`zc-perf --kernel`).
#![deny(unsafe_code)]
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod header;
pub mod ifname;
pub mod impair;
pub mod offload;
#[allow(unsafe_code)]
pub mod packet;
pub mod pcap;
#[allow(unsafe_code)]
pub mod pool;
#[allow(unsafe_code)]
mod sys;
pub mod tap;
pub mod vnet;
pub mod wire;
pub mod xdp;

pub use header::ETH_HLEN;
pub use ifname::{BadInterfaceName, check_interface_name};
pub use pool::{Frame, Pool, PoolConfig, PoolError, PoolStats};
/// Payload slices handed to [`Driver::tx_gather`], and the counted
/// references a device keeps them alive with (smoltcp patches 20 and 26).
pub use smoltcp::socket::tcp::{GatherSlice, TxRef, TxSource};
pub use sys::{MMSG_MAX, TcpInfo, recv_datagrams, send_datagrams, tcp_info};

use std::io;
use std::time::Duration;

/// Counters a driver keeps about its device.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriverStats {
    /// Frames received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Frames transmitted.
    pub tx_packets: u64,
    /// Bytes transmitted.
    pub tx_bytes: u64,
    /// Received frames dropped because the pool was empty.
    pub rx_dropped_no_frame: u64,
    /// Frames the device refused or lost on transmit.
    pub tx_errors: u64,
    /// Received bytes the driver copied in user space (AF_XDP reassembling a
    /// multi-buffer packet); 0 for drivers that never copy.
    pub rx_copied_bytes: u64,
    /// Received frames the driver dropped as malformed or too large (or, for
    /// a TAP with a virtio header, with a bad checksum).
    pub rx_errors: u64,
    /// TX syscalls (AF_XDP `sendto` kicks, packet-socket `sendmmsg` calls):
    /// one per burst, not per packet.
    pub tx_kicks: u64,
    /// The kernel's own counters for the device, where it keeps them.
    pub kernel: KernelStats,
}

/// The kernel's counters for an AF_XDP socket (`XDP_STATISTICS`); all zero
/// for devices that have none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct KernelStats {
    /// Packets the kernel dropped for reasons other than a full ring.
    pub rx_dropped: u64,
    /// Packets dropped because the RX ring was full (the app was too slow).
    pub rx_ring_full: u64,
    /// Times the kernel found the fill ring empty (no buffer to receive into).
    pub fill_ring_empty: u64,
    /// Invalid RX descriptors.
    pub rx_invalid_descs: u64,
    /// Invalid TX descriptors.
    pub tx_invalid_descs: u64,
    /// Times the kernel found the TX ring empty when woken.
    pub tx_ring_empty: u64,
}

/// Work a device does for the stack on transmit ([`Capabilities::offloads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// The device computes TCP checksums of sent frames: the stack leaves
    /// them zero. A device that sets this must also vouch for received
    /// checksums ([`Capabilities::rx_checksums_trusted`]).
    pub tx_tcp_checksum: bool,
    /// The device cuts TCP segments up to this many bytes of Ethernet frame
    /// into segments of [`Frame::gso_size`] payload bytes (TSO); `None`: the
    /// stack sends MTU-sized frames only.
    pub tcp_segmentation: Option<usize>,
    /// The device sends a frame's payload from borrowed memory
    /// ([`Driver::tx_gather`]): a TCP payload then goes by reference, with
    /// no CPU copy in user space (a kernel-backed device copies it once,
    /// during the call).
    pub tx_gather: bool,
}

/// What a device is and does for the stack: read once, when the stack
/// takes the driver ([`Driver::capabilities`]), like smoltcp's
/// `DeviceCapabilities`.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Capabilities {
    /// The pool received frames come from; the stack allocates transmit
    /// frames here.
    pub pool: Pool,
    /// A second pool, of frames large enough for TCP segments of
    /// [`Offloads::tcp_segmentation`] bytes, for a device whose
    /// [`pool`](Self::pool) frames are smaller (AF_XDP with TSO through a
    /// packet socket): the stack takes a frame longer than a `pool` frame
    /// holds from here. Usually none.
    pub gso_pool: Option<Pool>,
    /// The device's IP MTU (Ethernet payload bytes).
    pub mtu: usize,
    /// The device's own MAC address, if it has one the stack should use (a
    /// real interface filters on it); `None` lets the stack pick.
    pub mac: Option<[u8; 6]>,
    /// Whether every received frame was built by this machine's own kernel
    /// (a veth peer), which may leave TCP/UDP checksums partial when its
    /// checksum offload is on. The stack then skips verifying checksums on
    /// receive, as the kernel itself does for such frames. A driver that
    /// checks the checksums the kernel did not vouch for itself (TAP with
    /// `IFF_VNET_HDR`) says true as well.
    pub rx_checksums_trusted: bool,
    /// What the device does for the stack on transmit.
    pub offloads: Offloads,
    /// A short description for logs, e.g. `tap zctap0`.
    pub description: String,
}

impl Capabilities {
    /// A device that sends and receives frames of `pool` up to `mtu` bytes
    /// of IP packet, with no MAC of its own, untrusted checksums and no
    /// offloads; set the other fields on the result.
    pub fn new(pool: Pool, mtu: usize, description: impl Into<String>) -> Capabilities {
        Capabilities {
            pool,
            gso_pool: None,
            mtu,
            mac: None,
            rx_checksums_trusted: false,
            offloads: Offloads::default(),
            description: description.into(),
        }
    }
}

/// A poll-mode device that moves bursts of pool frames.
///
/// Neither burst call blocks. Frames are moved, never copied, between the
/// caller and the driver (a kernel-backed driver may copy inside the
/// kernel; say so in its doc).
///
/// A debug aid or adapter built around another driver (pcap capture, fault
/// injection) implements [`Layer`] instead, and overrides only what it
/// changes.
pub trait Driver {
    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize>;
    /// Sends frames from the front of `frames`, removing the ones sent;
    /// frames the device could not take now stay in `frames`, in order.
    /// Returns how many were sent.
    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize>;
    /// Takes one packet: `frame`'s bytes (its headers) followed by the
    /// bytes of `payload`, after every frame and packet taken before it.
    ///
    /// The slices are borrowed for this call only. A device that sends
    /// before it returns (TAP: one `writev`) needs nothing more; one that
    /// sends later (a batch at the end of the poll, a TX descriptor that
    /// completes later) keeps a slice's bytes alive with
    /// [`GatherSlice::to_ref`] — one atomic increment — and drops that
    /// [`TxRef`] when the kernel is done with the bytes; a slice without a
    /// reference (bytes of a socket's ring) it must send or copy now.
    ///
    /// `Ok(())`: taken (sent or queued, or refused and counted in
    /// [`DriverStats::tx_errors`], as `tx_burst` does). `Err(frame)`:
    /// not taken (the device cannot gather this, or cannot take a packet
    /// now): the caller copies the payload into the frame and sends it with
    /// `tx_burst`. Only called if [`Offloads::tx_gather`]; the default
    /// takes nothing.
    fn tx_gather(&mut self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        let _ = payload;
        Err(frame)
    }
    /// Whether the device holds packets ([`tx_gather`](Driver::tx_gather)
    /// queued them) that a `tx_burst` call, even with no frames, would
    /// send. Default false.
    fn tx_backlog(&self) -> bool {
        false
    }
    /// What the device is and does; the stack reads it once, when it takes
    /// the driver, so it must not change afterwards.
    fn capabilities(&self) -> Capabilities;
    /// Counters.
    fn stats(&self) -> DriverStats;
    /// Blocks until the device may have input or `timeout` passes; the
    /// stack calls it when idle. The default sleeps.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        std::thread::sleep(timeout);
        Ok(())
    }
}

/// A driver built around another one that changes part of what it does
/// (smoltcp's `phy::Tracer` and `FaultInjector` are such wrappers):
/// implement this instead of [`Driver`] and override only the calls the
/// layer changes; every other call goes to [`inner`](Layer::inner_mut)
/// unchanged. Every `Layer` is a [`Driver`].
///
/// The calls take `this` rather than `self`, so they are not methods: on a
/// layer, `x.rx_burst(..)` always means [`Driver::rx_burst`], whichever
/// traits are in scope.
///
/// A layer that changes what is sent in [`tx_burst`](Layer::tx_burst)
/// must also see packets sent by reference: override
/// [`tx_gather`](Layer::tx_gather), or turn [`Offloads::tx_gather`] off in
/// [`capabilities`](Layer::capabilities) (the stack then sends everything
/// through `tx_burst`).
pub trait Layer {
    /// The wrapped driver.
    type Inner: Driver + ?Sized;
    /// The wrapped driver.
    fn inner(&self) -> &Self::Inner;
    /// The wrapped driver, mutably.
    fn inner_mut(&mut self) -> &mut Self::Inner;
    /// [`Driver::rx_burst`]; forwards by default.
    fn rx_burst(this: &mut Self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        this.inner_mut().rx_burst(out, max)
    }
    /// [`Driver::tx_burst`]; forwards by default.
    fn tx_burst(this: &mut Self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        this.inner_mut().tx_burst(frames)
    }
    /// [`Driver::tx_gather`]; forwards by default.
    fn tx_gather(this: &mut Self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        this.inner_mut().tx_gather(frame, payload)
    }
    /// [`Driver::tx_backlog`]; forwards by default.
    fn tx_backlog(this: &Self) -> bool {
        this.inner().tx_backlog()
    }
    /// [`Driver::capabilities`]; forwards by default.
    fn capabilities(this: &Self) -> Capabilities {
        this.inner().capabilities()
    }
    /// [`Driver::stats`]; forwards by default.
    fn stats(this: &Self) -> DriverStats {
        this.inner().stats()
    }
    /// [`Driver::wait`]; forwards by default.
    fn wait(this: &mut Self, timeout: Duration) -> io::Result<()> {
        this.inner_mut().wait(timeout)
    }
}

impl<L: Layer> Driver for L {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        <L as Layer>::rx_burst(self, out, max)
    }
    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        <L as Layer>::tx_burst(self, frames)
    }
    fn tx_gather(&mut self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        <L as Layer>::tx_gather(self, frame, payload)
    }
    fn tx_backlog(&self) -> bool {
        <L as Layer>::tx_backlog(self)
    }
    fn capabilities(&self) -> Capabilities {
        <L as Layer>::capabilities(self)
    }
    fn stats(&self) -> DriverStats {
        <L as Layer>::stats(self)
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        <L as Layer>::wait(self, timeout)
    }
}

/// A boxed driver (`Box<dyn Driver>`, chosen at run time) forwards every call.
impl<D: Driver + ?Sized> Layer for Box<D> {
    type Inner = D;
    fn inner(&self) -> &D {
        self
    }
    fn inner_mut(&mut self) -> &mut D {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{self, WireConfig, WireEnd};

    /// A layer that changes one call: it counts the frames it receives.
    struct Counting<D> {
        inner: D,
        received: usize,
    }

    impl<D: Driver> Layer for Counting<D> {
        type Inner = D;
        fn inner(&self) -> &D {
            &self.inner
        }
        fn inner_mut(&mut self) -> &mut D {
            &mut self.inner
        }
        fn rx_burst(this: &mut Self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
            let n = this.inner.rx_burst(out, max)?;
            this.received += n;
            Ok(n)
        }
    }

    /// A device that takes packets by reference and sends them later, and
    /// remembers how long it was asked to wait.
    struct Deferring {
        end: WireEnd,
        queued: Vec<Frame>,
        waited: std::rc::Rc<std::cell::Cell<Option<Duration>>>,
    }

    impl Driver for Deferring {
        fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
            self.end.rx_burst(out, max)
        }
        fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
            let mut all: Vec<Frame> = self.queued.drain(..).chain(frames.drain(..)).collect();
            let n = self.end.tx_burst(&mut all)?;
            frames.extend(all);
            Ok(n)
        }
        fn tx_gather(&mut self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
            let Some(mut f) = self.end.pool().alloc() else {
                return Err(frame);
            };
            let mut len = 0;
            for part in std::iter::once(frame.data()).chain(payload.iter().map(|p| p.bytes())) {
                f.room_mut()[len..len + part.len()].copy_from_slice(part);
                len += part.len();
            }
            f.set_len(len);
            self.queued.push(f);
            Ok(())
        }
        fn tx_backlog(&self) -> bool {
            !self.queued.is_empty()
        }
        fn capabilities(&self) -> Capabilities {
            let mut caps = Capabilities::new(self.end.pool().clone(), 1500, "deferring");
            caps.mac = Some([2, 0, 0, 0, 0, 1]);
            caps.offloads.tx_gather = true;
            caps
        }
        fn stats(&self) -> DriverStats {
            self.end.stats()
        }
        fn wait(&mut self, timeout: Duration) -> io::Result<()> {
            self.waited.set(Some(timeout));
            Ok(())
        }
    }

    fn frame(pool: &Pool, bytes: &[u8]) -> Frame {
        let mut f = pool.alloc().expect("a free frame");
        f.set_len(bytes.len());
        f.data_mut().copy_from_slice(bytes);
        f
    }

    /// A layer that overrides receiving only still sends, describes itself,
    /// counts and waits exactly as the driver inside it.
    #[test]
    fn a_layer_forwards_what_it_does_not_change() {
        let pool = PoolConfig::new().frames(16).build().unwrap();
        let (a, mut b) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        let mut layer = Counting {
            inner: a,
            received: 0,
        };
        assert_eq!(layer.capabilities().description, "in-memory wire");
        assert_eq!(layer.capabilities().mtu, WireConfig::default().mtu);
        let mut out = vec![frame(&pool, b"to b")];
        assert_eq!(layer.tx_burst(&mut out).unwrap(), 1);
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 8).unwrap(), 1);
        assert_eq!(got[0].data(), b"to b");
        let mut back = vec![frame(&pool, b"to a"), frame(&pool, b"again")];
        b.tx_burst(&mut back).unwrap();
        got.clear();
        assert_eq!(layer.rx_burst(&mut got, 8).unwrap(), 2);
        assert_eq!(layer.received, 2);
        assert_eq!(layer.stats(), layer.inner.stats());
        assert_eq!(layer.stats().tx_packets, 1);
        assert_eq!(layer.stats().rx_packets, 2);
        drop(got);
        assert_eq!(pool.stats().free, 16, "every frame back in the pool");
    }

    /// Send by reference and the idle wait reach the device through a
    /// layer and a box: the packet taken by reference leaves with the next
    /// burst, whole.
    #[test]
    fn gathering_and_waiting_pass_through_a_boxed_layer() {
        let pool = PoolConfig::new().frames(16).build().unwrap();
        let (a, mut b) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        let waited = std::rc::Rc::default();
        let deferring = Deferring {
            end: a,
            queued: Vec::new(),
            waited: std::rc::Rc::clone(&waited),
        };
        let mut d: Box<dyn Driver> = Box::new(Counting {
            inner: deferring,
            received: 0,
        });
        let caps = d.capabilities();
        assert!(caps.offloads.tx_gather);
        assert_eq!(caps.mac, Some([2, 0, 0, 0, 0, 1]));
        assert!(!d.tx_backlog());
        let payload = b" and its payload";
        let taken = d.tx_gather(frame(&pool, b"headers"), &[GatherSlice::borrowed(payload)]);
        assert!(taken.is_ok(), "the device took the packet");
        assert!(d.tx_backlog(), "queued until the next burst");
        assert_eq!(d.tx_burst(&mut Vec::new()).unwrap(), 1);
        assert!(!d.tx_backlog());
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 8).unwrap(), 1);
        assert_eq!(got[0].data(), b"headers and its payload");
        d.wait(Duration::from_millis(7)).unwrap();
        assert_eq!(
            waited.get(),
            Some(Duration::from_millis(7)),
            "the device's own wait"
        );
        drop(got);
        drop(d);
        assert_eq!(pool.stats().free, 16);
    }
}
