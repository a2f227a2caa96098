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
//! - [`Driver`] (this file): the burst interface every device implements.
//! - [`tap`]: a Linux TAP device, read and written straight from pool frames;
//!   optionally with `IFF_VNET_HDR` offloads (64 KiB TCP segments, partial
//!   checksums), whose header lives in [`vnet`] (shared with [`packet`]).
//! - [`wire`]: an in-memory pair of endpoints with seeded fault injection —
//!   the unprivileged device used by deterministic tests.
//! - [`xdp`]: AF_XDP: the pool is the UMEM, so ring descriptors are pool
//!   frames; a six-instruction redirect program loaded with raw `bpf(2)`.
//!   [`xdp::XdpGso`] adds TCP segmentation offload on transmit through
//!   [`packet`].
//! - [`packet`]: an `AF_PACKET` socket that sends frames with virtio-net
//!   headers ([`vnet`]) in `sendmmsg` batches: 64 KiB TCP segments on any
//!   Ethernet interface, segmented by the kernel or the NIC.
//! - [`pcap`]: a wrapper that records every frame a driver moves to a pcap file.
//! - [`impair`]: a seeded path model (loss, bursty loss, delay, jitter,
//!   reordering, duplication, corruption, a rate-limited bottleneck) driven
//!   by the caller's clock, and [`impair::Impaired`], a wrapper that puts
//!   it on any driver (the in-memory wire in deterministic tests; the
//!   `zc-impair` relay uses the model between two AF_XDP sockets).
//! - `sys`: the few raw syscalls; with `pool`, `packet` and `xdp`'s ring,
//!   socket and bpf modules, the only code with `unsafe`. Its [`tcp_info`] (a kernel TCP
//!   socket's `TCP_INFO`) is public for tools that measure the kernel's stack
//!   beside zcstack (`zc-perf --kernel`).
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod impair;
pub mod packet;
pub mod pcap;
pub mod pool;
mod sys;
pub mod tap;
pub mod vnet;
pub mod wire;
pub mod xdp;

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

/// Work a device does for the stack on transmit ([`Driver::offloads`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Offloads {
    /// The device computes TCP checksums of sent frames: the stack leaves
    /// them zero. A device that sets this must also vouch for received
    /// checksums ([`Driver::rx_checksums_trusted`]).
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

/// A poll-mode device that moves bursts of pool frames.
///
/// Neither call blocks. Frames are moved, never copied, between the caller and
/// the driver (a kernel-backed driver may copy inside the kernel; say so in
/// its doc).
pub trait Driver {
    /// Appends up to `max` received frames to `out`; returns how many.
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize>;
    /// Sends frames from the front of `frames`, removing the ones sent;
    /// frames the device could not take now stay in `frames`, in order.
    /// Returns how many were sent.
    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize>;
    /// The pool received frames come from; the stack allocates tx frames here.
    fn pool(&self) -> &Pool;
    /// A second pool, of frames large enough for TCP segments of
    /// [`Offloads::tcp_segmentation`] bytes, for a device whose [`pool`]
    /// frames are smaller (AF_XDP with TSO through a packet socket): the
    /// stack takes a frame longer than a `pool` frame holds from here.
    /// Default none.
    ///
    /// [`pool`]: Driver::pool
    fn gso_pool(&self) -> Option<&Pool> {
        None
    }
    /// The device's IP MTU (Ethernet payload bytes).
    fn mtu(&self) -> usize;
    /// Counters.
    fn stats(&self) -> DriverStats;
    /// A short description for logs, e.g. `tap zctap0`.
    fn describe(&self) -> String;
    /// The device's own MAC address, if it has one the stack should use
    /// (a real interface filters on it); `None` lets the stack pick.
    fn mac(&self) -> Option<[u8; 6]> {
        None
    }
    /// Whether every received frame was built by this machine's own kernel
    /// (a veth peer), which may leave TCP/UDP checksums partial when its
    /// checksum offload is on. The stack then skips verifying checksums on
    /// receive, as the kernel itself does for such frames. A driver that
    /// checks the checksums the kernel did not vouch for itself (TAP with
    /// `IFF_VNET_HDR`) says true as well. Default false.
    fn rx_checksums_trusted(&self) -> bool {
        false
    }
    /// What the device does for the stack on transmit; default nothing.
    fn offloads(&self) -> Offloads {
        Offloads::default()
    }
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
    /// Blocks until the device may have input or `timeout` passes; the
    /// stack calls it when idle. The default sleeps.
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        std::thread::sleep(timeout);
        Ok(())
    }
}

impl<D: Driver + ?Sized> Driver for Box<D> {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        (**self).rx_burst(out, max)
    }
    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        (**self).tx_burst(frames)
    }
    fn pool(&self) -> &Pool {
        (**self).pool()
    }
    fn gso_pool(&self) -> Option<&Pool> {
        (**self).gso_pool()
    }
    fn mtu(&self) -> usize {
        (**self).mtu()
    }
    fn stats(&self) -> DriverStats {
        (**self).stats()
    }
    fn describe(&self) -> String {
        (**self).describe()
    }
    fn mac(&self) -> Option<[u8; 6]> {
        (**self).mac()
    }
    fn rx_checksums_trusted(&self) -> bool {
        (**self).rx_checksums_trusted()
    }
    fn offloads(&self) -> Offloads {
        (**self).offloads()
    }
    fn tx_gather(&mut self, frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        (**self).tx_gather(frame, payload)
    }
    fn tx_backlog(&self) -> bool {
        (**self).tx_backlog()
    }
    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        (**self).wait(timeout)
    }
}
