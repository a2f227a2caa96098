//! AF_XDP receive with TCP segmentation offload on transmit: [`XdpGso`]
//! sends TCP segments of up to 64 KiB through an `AF_PACKET` socket with
//! virtio-net headers ([`crate::packet`]) on the same interface, while the
//! AF_XDP socket keeps receiving.
//!
//! ```text
//!  interface ──XDP redirect──► AF_XDP RX ring ──► UMEM frame ──► stack
//!  stack ──64 KiB segment (gso pool frame)──► AF_PACKET sendmmsg ──► kernel GSO/TSO ──► interface
//!  stack ──ACK, small segment (UMEM frame)──► AF_PACKET, or the AF_XDP TX ring ([`SmallTx`])
//! ```
//!
//! * Two pools. Received frames and small sent ones are UMEM frames (the
//!   AF_XDP pool, sized for the MTU). A segment larger than a UMEM frame
//!   comes from a second pool of 64 KiB frames ([`Driver::gso_pool`]): the
//!   packet socket can send from any memory, and a UMEM chunk can't exceed
//!   a page on this kernel. Frames go back to their pool as soon as
//!   `sendmmsg` returns (the kernel copied them into its skb).
//! * Checksums. The stack leaves every TCP checksum to the device; the
//!   virtio header asks the kernel for it (`NEEDS_CSUM`), and a small
//!   segment on the AF_XDP ring gets the same through TX metadata. Where
//!   the AF_XDP driver cannot offload checksums, everything goes through
//!   the packet socket. Received frames the kernel does not vouch for (a
//!   NIC, not a veth) have their checksums checked here, since the stack
//!   then checks none.
//! * Order. Frames leave in the stack's order: a run of frames for one path
//!   is sent before the next run starts.
//! * Send by reference ([`Driver::tx_gather`]). A TCP segment whose payload
//!   the stack sends by reference (file pages, app memory) is queued as its
//!   headers in a pool frame plus a [`TxRef`] per payload slice — one
//!   atomic increment each, no allocation — and leaves in the next
//!   `sendmmsg` as one iovec list [virtio header, headers, payload slices]:
//!   the kernel copies the payload into its skb during the call, nothing in
//!   user space touches it, and the references are dropped when the call
//!   returns. Payload bytes of a socket's ring, which the socket may reuse
//!   once acknowledged, cannot be kept: such a segment leaves at once, after
//!   the queued ones, in a `sendmsg` of its own.

use std::io::{self, IoSlice};
use std::time::Duration;

use super::Xdp;
use crate::packet::{self, PacketError, PacketTx, PacketTxOptions, TxPacket};
use crate::vnet::VnetHdr;
use crate::{
    Capabilities, Driver, DriverStats, ETH_HLEN, Frame, GatherSlice, Offloads, Pool, PoolConfig,
    PoolError, TxRef, offload, vnet,
};

/// Payload slices a gathered segment may have (the stack hands one today).
const MAX_SLICES: usize = 7;

/// Largest Ethernet frame a TSO segment can be: a 64 KiB IPv4 packet.
const MAX_TSO_FRAME: usize = ETH_HLEN + 65535;
/// Size of a GSO pool frame: a power of two that holds (nearly) a 64 KiB segment.
pub const GSO_FRAME_SIZE: u32 = 64 << 10;

/// Which path carries frames no larger than the MTU (ACKs, requests, the
/// last piece of a transfer).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SmallTx {
    /// The packet socket carries everything; AF_XDP only receives.
    #[default]
    Packet,
    /// The AF_XDP TX ring carries UMEM frames up to the MTU (when it can
    /// offload their checksum); the packet socket the larger segments.
    Xdp,
}

impl std::str::FromStr for SmallTx {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "packet" => Ok(SmallTx::Packet),
            "xdp" => Ok(SmallTx::Xdp),
            _ => Err(format!("{s:?} is not a path: use packet or xdp")),
        }
    }
}

/// How to add GSO transmit to an AF_XDP driver.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GsoOptions {
    /// Frames of [`GSO_FRAME_SIZE`] bytes in the GSO pool (they are held only
    /// between the stack's write and the next `sendmmsg`).
    pub frames: u32,
    /// The packet socket's options.
    pub packet: PacketTxOptions,
    /// The path of small frames.
    pub small: SmallTx,
}

impl Default for GsoOptions {
    fn default() -> Self {
        GsoOptions {
            frames: 256,
            packet: PacketTxOptions::default(),
            small: SmallTx::default(),
        }
    }
}

/// Why GSO transmit could not be added.
#[derive(Debug, thiserror::Error)]
pub enum GsoError {
    /// The packet socket.
    #[error(transparent)]
    Packet(#[from] PacketError),
    /// The GSO pool.
    #[error("creating the pool of 64 KiB frames for TCP segmentation offload")]
    Pool(#[source] PoolError),
}

/// An AF_XDP driver whose large TCP segments leave through an `AF_PACKET`
/// socket with virtio-net headers (see the module doc).
///
/// Field order is drop order: the AF_XDP driver (and its in-flight frames)
/// first, then the packet socket, then the GSO pool.
pub struct XdpGso {
    xdp: Xdp,
    tx: PacketTx,
    gso_pool: Pool,
    /// Frames on their way to the AF_XDP TX ring (kept to reuse its memory).
    run: Vec<Frame>,
    /// Largest Ethernet frame that needs no segmentation.
    wire_mtu: usize,
    /// Small frames go on the AF_XDP ring.
    small_via_xdp: bool,
    /// Received checksums are checked here (the AF_XDP driver can't vouch).
    verify_rx: bool,
    /// Packet-socket counters, added to the AF_XDP driver's.
    pkt: DriverStats,
    /// Gathered segments waiting for the next `sendmmsg`, oldest first:
    /// their headers and how many of `held` are their payload.
    gathered: Vec<Gathered>,
    /// The payload references of `gathered`, in order: the bytes stay alive
    /// (and unchanged) until the kernel has copied them.
    held: Vec<TxRef>,
}

/// A segment queued by [`XdpGso::tx_gather`].
struct Gathered {
    hdr: VnetHdr,
    /// Ethernet, IP and TCP headers.
    frame: Frame,
    /// Its payload: the next `slices` references in `held`.
    slices: usize,
}

impl XdpGso {
    /// Opens the packet socket on `xdp`'s interface and the GSO pool.
    pub fn new(xdp: Xdp, opts: GsoOptions) -> Result<XdpGso, GsoError> {
        let tx = PacketTx::open(xdp.iface(), opts.packet)?;
        let gso_pool = PoolConfig::new()
            .frames(opts.frames)
            .frame_size(GSO_FRAME_SIZE)
            .build()
            .map_err(GsoError::Pool)?;
        let caps = xdp.capabilities();
        let wire_mtu = caps.mtu + ETH_HLEN;
        // Small frames on the AF_XDP ring only where their checksum can be
        // offloaded there: the stack computes no TCP checksum at all.
        let small_via_xdp = opts.small == SmallTx::Xdp && caps.offloads.tx_tcp_checksum;
        let verify_rx = !caps.rx_checksums_trusted;
        Ok(XdpGso {
            xdp,
            tx,
            gso_pool,
            run: Vec::with_capacity(64),
            wire_mtu,
            small_via_xdp,
            verify_rx,
            pkt: DriverStats::default(),
            gathered: Vec::with_capacity(packet::BATCH),
            held: Vec::with_capacity(packet::BATCH * 2),
        })
    }

    /// Sends the gathered segments, oldest first; returns whether all went
    /// (the rest wait for the next call: the socket's buffer is full).
    fn send_gathered(&mut self) -> io::Result<bool> {
        while !self.gathered.is_empty() {
            let n = self.gathered.len().min(packet::BATCH);
            let mut parts = [[IoSlice::new(&[]); MAX_SLICES + 1]; packet::BATCH];
            let mut counts = [0usize; packet::BATCH];
            let mut at = 0;
            for (i, g) in self.gathered[..n].iter().enumerate() {
                parts[i][0] = IoSlice::new(g.frame.data());
                for (k, r) in self.held[at..at + g.slices].iter().enumerate() {
                    parts[i][1 + k] = IoSlice::new(r.bytes());
                }
                counts[i] = 1 + g.slices;
                at += g.slices;
            }
            let packets: [TxPacket<'_>; packet::BATCH] = std::array::from_fn(|i| TxPacket {
                hdr: self.gathered.get(i).map_or(VnetHdr::default(), |g| g.hdr),
                parts: &parts[i][..counts[i]],
            });
            let s = self.tx.send(&packets[..n])?;
            self.pkt.tx_packets += (s.taken - s.errors) as u64;
            self.pkt.tx_bytes += s.bytes;
            self.pkt.tx_errors += s.errors as u64;
            self.pkt.tx_kicks += s.calls;
            // The kernel copied them: headers back to the pool, references
            // released.
            let refs: usize = self.gathered[..s.taken].iter().map(|g| g.slices).sum();
            self.gathered.drain(..s.taken);
            self.held.drain(..refs);
            if s.taken < n {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// The AF_XDP driver underneath.
    pub fn xdp(&self) -> &Xdp {
        &self.xdp
    }

    /// Which path carries small frames.
    pub fn small_tx(&self) -> SmallTx {
        if self.small_via_xdp {
            SmallTx::Xdp
        } else {
            SmallTx::Packet
        }
    }

    /// Largest TCP segment (Ethernet frame bytes) the stack may hand over.
    pub fn max_segment(&self) -> usize {
        self.gso_pool.frame_capacity().min(MAX_TSO_FRAME)
    }

    /// Whether `frame` goes on the AF_XDP TX ring.
    fn via_xdp(&self, frame: &Frame) -> bool {
        self.small_via_xdp && frame.len() <= self.wire_mtu && self.xdp.pool().owns(frame)
    }
}

impl Driver for XdpGso {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let start = out.len();
        let n = self.xdp.rx_burst(out, max)?;
        if !self.verify_rx || n == 0 {
            return Ok(n);
        }
        let before = out.len();
        let mut kept = start;
        for i in start..out.len() {
            if offload::checksums_ok(out[i].data()) {
                out.swap(kept, i);
                kept += 1;
            }
        }
        out.truncate(kept);
        self.pkt.rx_errors += (before - kept) as u64;
        Ok(kept - start)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        // Gathered segments are older than any frame offered now.
        if !self.send_gathered()? {
            return Ok(0);
        }
        let mut done = 0;
        while !frames.is_empty() {
            let xdp = self.via_xdp(&frames[0]);
            let run = frames
                .iter()
                .position(|f| self.via_xdp(f) != xdp)
                .unwrap_or(frames.len());
            if xdp {
                self.run.extend(frames.drain(..run));
                let r = self.xdp.tx_burst(&mut self.run);
                if r.is_err() {
                    // The caller counts the burst lost; these go with it.
                    self.run.clear();
                }
                let sent = r?;
                done += sent;
                if !self.run.is_empty() {
                    // The TX ring is full: the rest wait, in order.
                    frames.splice(..0, self.run.drain(..));
                    break;
                }
            } else {
                let s = self.tx.send_frames(&mut frames[..run])?;
                self.pkt.tx_packets += (s.taken - s.errors) as u64;
                self.pkt.tx_bytes += s.bytes;
                self.pkt.tx_errors += s.errors as u64;
                self.pkt.tx_kicks += s.calls;
                frames.drain(..s.taken);
                done += s.taken;
                if s.taken < run {
                    break;
                }
            }
        }
        Ok(done)
    }

    fn capabilities(&self) -> Capabilities {
        let mut caps = self.xdp.capabilities();
        caps.description = format!(
            "{}, TSO through AF_PACKET ({} B segments{})",
            caps.description,
            self.max_segment(),
            if self.small_via_xdp {
                "; small frames on the AF_XDP ring"
            } else {
                ""
            }
        );
        caps.gso_pool = Some(self.gso_pool.clone());
        // A veth's frames come from this kernel; others are checked in rx_burst.
        caps.rx_checksums_trusted = true;
        caps.offloads = Offloads {
            tx_tcp_checksum: true,
            tcp_segmentation: Some(self.max_segment()),
            // Payload slices by reference leave in the packet socket's
            // iovecs (see the module doc).
            tx_gather: true,
        };
        caps
    }

    fn stats(&self) -> DriverStats {
        let mut s = self.xdp.stats();
        s.tx_packets += self.pkt.tx_packets;
        s.tx_bytes += self.pkt.tx_bytes;
        s.tx_errors += self.pkt.tx_errors;
        s.tx_kicks += self.pkt.tx_kicks;
        s.rx_errors += self.pkt.rx_errors;
        s
    }

    fn tx_gather(&mut self, mut frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        if payload.len() > MAX_SLICES
            || (self.gathered.len() >= packet::BATCH && !self.send_gathered().unwrap_or(false))
        {
            // Too many slices, or the socket is full: the caller copies.
            return Err(frame);
        }
        let payload_len = payload.iter().map(|p| p.len()).sum();
        if payload.iter().any(|p| p.to_ref().is_none()) {
            // Bytes of a socket's ring, which may be reused once they are
            // acknowledged: they leave now, after the queued segments, in
            // one `sendmsg` (the kernel copies them during the call).
            if !self.send_gathered().unwrap_or(false) {
                return Err(frame);
            }
            let gso_size = frame.gso_size();
            let hdr = vnet::tx_header_split(frame.data_mut(), payload_len, gso_size);
            let mut parts = [IoSlice::new(&[]); MAX_SLICES + 1];
            parts[0] = IoSlice::new(frame.data());
            for (k, p) in payload.iter().enumerate() {
                parts[1 + k] = IoSlice::new(p.bytes());
            }
            let one = TxPacket {
                hdr,
                parts: &parts[..1 + payload.len()],
            };
            return match self.tx.send(&[one]) {
                Ok(s) if s.taken == 1 => {
                    self.pkt.tx_packets += (1 - s.errors) as u64;
                    self.pkt.tx_bytes += s.bytes;
                    self.pkt.tx_errors += s.errors as u64;
                    self.pkt.tx_kicks += s.calls;
                    Ok(())
                }
                _ => Err(frame),
            };
        }
        let gso_size = frame.gso_size();
        let hdr = vnet::tx_header_split(frame.data_mut(), payload_len, gso_size);
        let before = self.held.len();
        self.held
            .extend(payload.iter().filter_map(GatherSlice::to_ref));
        let slices = self.held.len() - before;
        self.gathered.push(Gathered { hdr, frame, slices });
        Ok(())
    }

    fn tx_backlog(&self) -> bool {
        !self.gathered.is_empty()
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        self.xdp.wait(timeout)
    }
}
