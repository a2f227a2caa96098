//! AF_XDP as a poll-mode driver, with the buffer pool as the UMEM.
//!
//! The pool's whole memfd mapping is registered as the socket's UMEM, so a
//! ring descriptor *is* a pool frame: its address is the frame's offset in
//! the pool. Frames given to the kernel (on the fill ring for receiving, on
//! the TX ring for sending) move into an in-flight table, keyed by frame
//! index, until the RX or completion ring hands them back; on drop, the
//! socket is closed first and then every parked frame returns to the pool.
//!
//! ```text
//!  pool ──alloc──► fill ring ──kernel writes a packet──► RX ring ──► Frame ──► stack
//!  stack ──Frame──► TX ring ──kernel sends it──► completion ring ──► pool
//! ```
//!
//! Set-up, in order (kernel doc `Documentation/networking/af_xdp.rst`):
//! socket, `XDP_UMEM_REG`, ring sizes and mmap, load the redirect program
//! (`bpf`), attach it with a bpf_link (native mode first, generic as the
//! fallback), bind to the queue (zero-copy first, copy mode where the device
//! can't), put the socket in the XSKMAP, fill the fill ring.
//!
//! **Chunks and jumbo frames.** This kernel refuses UMEM chunks larger than
//! a page (`XDP_UMEM_REG` → EINVAL for 8 KiB..128 KiB chunks, hugepages or
//! not), so the UMEM chunk is `min(frame size, 4096)`. A packet larger than
//! a chunk travels as several descriptors (`XDP_USE_SG`, with a program
//! loaded `BPF_F_XDP_HAS_FRAGS`). Sending, a large pool frame is cut into
//! descriptors at chunk boundaries, so the stack's one contiguous frame goes
//! out without a copy. Receiving, only the first chunk of each pool frame is
//! put on the fill ring; a multi-buffer packet's later fragments land in
//! other frames and are copied behind the first one, so smoltcp sees one
//! contiguous frame. That copy is counted in [`DriverStats::rx_copied_bytes`];
//! the fragment frames go straight back on the fill ring, not to the pool.
//! On a veth (unaligned chunks, see below) the driver instead posts several
//! fill slots per pool frame, spaced so a packet lands contiguously, and
//! copies only packets that straddle frames (`slots.rs`).
//!
//! **TX checksum offload.** On a veth, TCP segments carry TX metadata
//! (`XDP_TX_METADATA` on the first descriptor, `csum_start` counted from the
//! Ethernet header). With multi-buffer packets the UMEM is registered with
//! unaligned chunks: the kernel wants `tx_metadata_len` bytes in front of
//! *every* TX descriptor inside its chunk, which a continuation descriptor
//! on a chunk boundary cannot have; unaligned, descriptors are cut every
//! `chunk - tx_metadata_len` bytes instead.
//!
//! **Wake-ups.** With `XDP_USE_NEED_WAKEUP` the kernel says when it needs a
//! syscall. In copy mode TX always does: one `sendto` per burst (the kernel
//! sends up to 32 descriptors per call and says `EAGAIN` when more remain).
//!
//! **Files.** `mod.rs` the driver (open, bursts, in-flight table);
//! `config.rs` what the app asks for, checked, and the errors it can get;
//! `geometry.rs` frame and chunk sizes (pure arithmetic); `setup.rs` the
//! opening steps that talk to the kernel (interface query, UMEM
//! registration, program attach, bind); `socket.rs` and `ring.rs` the
//! socket and its four rings (typed: we produce into fill and TX, consume
//! from RX and completion); `slots.rs` multi-buffer receive in place
//! (`slots/sim.rs` plays the kernel's side of it for tests and, with the
//! `fuzzing` feature, the fuzz harness, without a socket); `bpf.rs` the
//! redirect program; `netlink.rs` which program is attached; `gso.rs`
//! [`XdpGso`], this driver with TSO on transmit through `AF_PACKET`.

#[allow(unsafe_code)]
mod bpf;
mod config;
mod geometry;
mod gso;
#[allow(unsafe_code)]
mod netlink;
#[allow(unsafe_code)]
mod ring;
#[allow(unsafe_code)]
mod setup;
mod slots;
#[allow(unsafe_code)]
mod socket;

pub use config::{AttachMode, ValidXdpConfig, XdpConfig, XdpError};
use geometry::{Geometry, XDP_HEADROOM};
pub use geometry::{frame_size_for, frame_size_for_mtu};
pub use gso::{GSO_FRAME_SIZE, GsoError, GsoOptions, SmallTx, XdpGso};
use setup::{Interface, attach_program, bind, io_error, refused, register_pool};
/// The slotted receive path with a model of the kernel's side, for fuzzing.
#[cfg(feature = "fuzzing")]
pub use slots::sim::{Received, SlotBed};

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use crate::sys::{self, IfReq, IfReqIoctl};
use crate::{
    Capabilities, Driver, DriverStats, Frame, GatherSlice, KernelStats, Offloads, Pool, TxRef,
    offload,
};
use socket::XskSocket;

/// Most descriptors one packet may use (`MAX_SKB_FRAGS` + 1).
const MAX_DESCS: usize = 18;
/// `struct xsk_tx_metadata` (linux/if_xdp.h): `flags` (u64), then the
/// request `csum_start` (u16) and `csum_offset` (u16), then `launch_time` (u64).
const TX_META_LEN: usize = 24;
/// `XDP_TXMD_FLAGS_CHECKSUM`: the kernel (or NIC) finishes the checksum.
const TXMD_FLAGS_CHECKSUM: u64 = 1 << 1;
/// Refill the fill ring when at least this many slots are free.
const FILL_BATCH: u32 = 32;

/// The IP MTU of interface `iface` in this network namespace.
pub fn interface_mtu(iface: &str) -> Result<usize, XdpError> {
    let io_err = |step, source| io_error(iface, step, source);
    crate::ifname::check_interface_name(iface)?;
    if sys::if_nametoindex(iface).is_none() {
        return Err(XdpError::NoInterface(iface.to_string()));
    }
    let sock = sys::ioctl_socket().map_err(|e| io_err("socket", e))?;
    let mut req = IfReq::new(iface).map_err(|e| io_err("interface name", e))?;
    sys::ifreq_ioctl(&sock, IfReqIoctl::GetMtu, &mut req).map_err(|e| io_err("SIOCGIFMTU", e))?;
    Ok(sys::ifreq_int(&req) as usize)
}

/// How the running socket was set up, for the one line apps print.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct XdpSetup {
    /// Where the program runs.
    pub attach: AttachMode,
    /// Whether the socket is bound in zero-copy mode (else copy mode).
    pub zero_copy: bool,
    /// Whether packets may span several descriptors (`XDP_USE_SG`).
    pub multi_buffer: bool,
}

/// An AF_XDP socket on one queue of one interface.
///
/// Field order is drop order and matters: the socket (and its rings) goes
/// first, so the kernel lets go of the UMEM before the in-flight frames
/// return to the pool; the link goes next, detaching the program.
pub struct Xdp {
    sock: XskSocket,
    _link: OwnedFd,
    prog: bpf::Program,
    /// Frames lent to the kernel, by frame index.
    inflight: Vec<Option<Frame>>,
    /// TX descriptors outstanding per in-flight frame (a jumbo frame uses several).
    tx_descs: Vec<u8>,
    /// Payload descriptors of gathered segments ([`Driver::tx_gather`]) in
    /// the kernel, in the order written: each one's address, and the last
    /// of a slice's descriptors holds the slice's reference. The bytes (a
    /// pool frame the socket sends by reference) stay alive until both the
    /// peer acknowledged them (the socket's reference) and every
    /// descriptor completed (these).
    tx_held: VecDeque<(u64, Option<TxRef>)>,
    /// Descriptors were written without a kick: the next `tx_burst` kicks.
    tx_kick: bool,
    /// A multi-buffer packet being reassembled.
    partial: Option<Frame>,
    partial_bad: bool,
    scratch: Vec<Frame>,
    /// Fragment frames whose bytes were copied behind a head: they go
    /// straight back on the fill ring (`refill` takes them before the pool),
    /// so a jumbo packet costs no pool round trip per 4 KiB fragment.
    recycled: Vec<Frame>,
    /// Multi-buffer receive in place (unaligned chunks), if on.
    slot_rx: Option<slots::SlotRx>,
    pool: Pool,
    iface: String,
    queue: u32,
    mac: [u8; 6],
    mtu: usize,
    setup: XdpSetup,
    frame_shift: u32,
    chunk: usize,
    /// The UMEM is registered with unaligned chunks (see `open`): TX
    /// descriptors are cut every `tx_desc_max` bytes instead of at chunk
    /// boundaries.
    unaligned: bool,
    tx_desc_max: usize,
    need_wakeup: bool,
    /// The interface is a veth: every frame comes from this machine's kernel.
    veth: bool,
    /// Sent TCP segments ask the kernel to finish their checksum (TX metadata).
    tx_csum: bool,
    stats: DriverStats,
}

impl Xdp {
    /// Opens an AF_XDP socket on `cfg`'s interface and queue with `pool` as
    /// its UMEM. The pool's frames must hold the interface's MTU (see
    /// [`frame_size_for_mtu`]); in generic mode, frames of
    /// [`frame_size_for`] also take the 64 KiB GRO/GSO packets it sees.
    ///
    /// The steps, in the kernel doc's order: query the interface, size
    /// frames and chunks, create the socket and register the pool as its
    /// UMEM, map the rings, attach (or join) the program, bind, put the
    /// socket in the XSKMAP, fill the fill ring.
    pub fn open(cfg: &ValidXdpConfig, pool: Pool) -> Result<Xdp, XdpError> {
        let iface = cfg.iface();
        let ifindex =
            sys::if_nametoindex(iface).ok_or_else(|| XdpError::NoInterface(iface.to_string()))?;
        // The ioctl socket the interface is queried through (closed on return).
        let ctl = sys::ioctl_socket().map_err(|e| io_error(iface, "socket", e))?;
        let dev = Interface::query(&ctl, iface)?;
        let geo = Geometry::new(
            iface,
            dev.mtu,
            cfg.mode(),
            pool.frame_size(),
            pool.headroom(),
        )?;

        let fd = socket::socket().map_err(|e| refused(iface, "creating the AF_XDP socket", e))?;
        // On a veth, sent TCP segments carry TX metadata asking for checksum
        // offload (kernel >= 6.8): in copy mode the kernel marks the skb
        // CHECKSUM_PARTIAL, which a local receiver trusts, so nobody computes
        // the checksum. Elsewhere (or on an older kernel) smoltcp computes it.
        let veth = sys::ethtool_driver(iface).is_ok_and(|d| d == "veth");
        let tx_metadata = veth && cfg.tx_checksum() && pool.headroom() >= TX_META_LEN;
        // SAFETY: `region` is the pool's mapping, which stays mapped,
        // unchanged, while any handle to the pool lives; the `Xdp` built
        // below owns the socket and `pool` and drops the socket first
        // (field order), so the memory outlives the socket.
        #[allow(unsafe_code)]
        let umem = unsafe { register_pool(fd.as_fd(), iface, pool.region(), &geo, tx_metadata) }?;
        let sock = XskSocket::with_rings(fd, cfg.ring_size())
            .map_err(|e| io_error(iface, "mapping the rings", e))?;

        // The program: ours, or the one another zcstack process attached to
        // this interface (one program per interface; each process puts its
        // socket at its own queue's index of the shared XSKMAP).
        let (prog, link, attach) = attach_program(cfg, ifindex, dev.mtu, geo.multi_buffer)?;
        let zero_copy = bind(&sock, ifindex, cfg, &geo)?;
        bpf::map_insert(prog.map.as_fd(), cfg.queue(), sock.raw_fd())
            .map_err(|e| io_error(iface, "adding the socket to the XSKMAP", e))?;

        let frames = pool.capacity();
        let mut xdp = Xdp {
            sock,
            _link: link,
            prog,
            inflight: (0..frames).map(|_| None).collect(),
            tx_descs: vec![0; frames],
            tx_held: VecDeque::with_capacity(cfg.ring_size() as usize),
            tx_kick: false,
            partial: None,
            partial_bad: false,
            scratch: Vec::with_capacity(cfg.ring_size() as usize),
            recycled: Vec::with_capacity(2 * cfg.ring_size() as usize),
            slot_rx: if umem.unaligned {
                slots::SlotRx::new(frames, geo.frame_size, geo.chunk, geo.wire)
            } else {
                None
            },
            frame_shift: geo.frame_size.trailing_zeros(),
            chunk: geo.chunk,
            unaligned: umem.unaligned,
            tx_desc_max: geo.tx_desc_max(umem.unaligned),
            pool,
            iface: iface.to_string(),
            queue: cfg.queue(),
            mac: dev.mac,
            mtu: dev.mtu,
            setup: XdpSetup {
                attach,
                zero_copy,
                multi_buffer: geo.multi_buffer,
            },
            need_wakeup: true,
            veth,
            tx_csum: umem.tx_metadata,
            stats: DriverStats::default(),
        };
        xdp.refill();
        Ok(xdp)
    }

    /// How the socket runs: attach mode, zero-copy or copy, multi-buffer.
    pub fn setup(&self) -> XdpSetup {
        self.setup
    }

    /// The interface's name.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// Lends frames to the kernel on the fill ring: recycled fragment frames
    /// first, then free pool frames.
    fn refill(&mut self) {
        let free = self.sock.fill.free() as usize;
        if free < FILL_BATCH as usize {
            return;
        }
        if let Some(sr) = self.slot_rx.as_mut() {
            let mut cx = slots::Ctx {
                inflight: &mut self.inflight,
                recycled: &mut self.recycled,
                pool: &self.pool,
                stats: &mut self.stats,
                shift: self.frame_shift,
            };
            let fill = &mut self.sock.fill;
            let lent = sr.refill(free as u32, &mut cx, |addr| fill.write(addr));
            if lent > 0 {
                self.sock.fill.submit();
                self.pool.kernel_lent(lent as isize);
            }
            return;
        }
        let reuse = self.recycled.len().min(free);
        let from = self.recycled.len() - reuse;
        let mut lent = 0;
        for frame in self.recycled.drain(from..) {
            let idx = frame.index() as usize;
            self.sock.fill.write((idx << self.frame_shift) as u64);
            self.inflight[idx] = Some(frame);
            lent += 1;
        }
        if free > reuse {
            let got = self.pool.alloc_burst(free - reuse, &mut self.scratch);
            if got == 0 && lent == 0 {
                self.stats.rx_dropped_no_frame += 1;
                return;
            }
            for frame in self.scratch.drain(..) {
                let idx = frame.index() as usize;
                self.sock.fill.write((idx << self.frame_shift) as u64);
                self.inflight[idx] = Some(frame);
            }
            lent += got;
        }
        self.sock.fill.submit();
        self.pool.kernel_lent(lent as isize);
    }

    /// Takes back the frame that holds UMEM address `addr`.
    fn reclaim(inflight: &mut [Option<Frame>], shift: u32, addr: u64) -> Option<Frame> {
        inflight.get_mut((addr >> shift) as usize)?.take()
    }

    /// Returns sent frames whose completions arrived to the pool, and
    /// releases the payload references of completed gathered descriptors.
    fn complete(&mut self) {
        let (inflight, descs, shift) = (&mut self.inflight, &mut self.tx_descs, self.frame_shift);
        let held = &mut self.tx_held;
        let mut back = 0isize;
        self.sock.comp.consume(u32::MAX, |addr| {
            let idx = (addr >> shift) as usize;
            match descs.get_mut(idx) {
                Some(d) if *d > 0 => {
                    *d -= 1;
                    if *d == 0 && Self::reclaim(inflight, shift, addr).is_some() {
                        back += 1;
                    }
                }
                _ => {
                    // A payload descriptor: completions come in order, so
                    // it is the oldest one with this address.
                    if let Some(i) = held.iter().position(|(a, _)| *a == addr) {
                        held.remove(i);
                    }
                }
            }
        });
        if back > 0 {
            self.pool.kernel_lent(-back);
        }
    }

    /// For a TCP segment (whose checksum smoltcp left at zero): writes the
    /// pseudo-header sum into the checksum field and, in the headroom just
    /// before the data, TX metadata asking the kernel to finish it. Returns
    /// whether it did (non-TCP frames carry smoltcp's own checksums).
    fn request_checksum(frame: &mut Frame, payload_len: usize) -> bool {
        let off = frame.offset();
        if off < TX_META_LEN {
            return false;
        }
        let Some(c) = offload::request_tcp_checksum(frame.data_mut(), payload_len) else {
            return false;
        };
        let len = frame.len();
        frame.set_offset(off - TX_META_LEN);
        frame.set_len(len + TX_META_LEN);
        let m = &mut frame.data_mut()[..TX_META_LEN];
        m[..8].copy_from_slice(&TXMD_FLAGS_CHECKSUM.to_ne_bytes());
        m[8..10].copy_from_slice(&c.start.to_ne_bytes());
        m[10..12].copy_from_slice(&c.offset.to_ne_bytes());
        m[12..].fill(0);
        frame.set_offset(off);
        frame.set_len(len);
        true
    }

    /// Wakes the kernel's transmit until it has taken every descriptor
    /// submitted. Copy mode sends only inside the wake-up (`sendto`), at most
    /// 32 descriptors per call: descriptors it did not take would wait in
    /// the ring until the next segment is sent, which on a request/response
    /// connection can be tens of milliseconds (measured: 64 KiB responses at
    /// MTU 65535 left late enough to draw a needless tail loss probe for
    /// 8-18% of them). Whatever is still left is woken again by the next
    /// burst, receive or transmit: every poll makes one.
    fn kick(&mut self) -> io::Result<()> {
        let tries = self.sock.tx.unconsumed() as usize / 16 + 2;
        for _ in 0..tries {
            if self.sock.tx.unconsumed() == 0 || (self.need_wakeup && !self.sock.tx.needs_wakeup())
            {
                break;
            }
            self.stats.tx_kicks += 1;
            if !self.sock.kick_tx()? {
                // Taken, or the kernel is out of buffers (or the ring is
                // drained asynchronously, in zero-copy mode): the next
                // burst looks again.
                break;
            }
        }
        Ok(())
    }

    /// Descriptors for `len` bytes at UMEM address `at`: cut at chunk
    /// boundaries, or every `tx_desc_max` bytes with unaligned chunks.
    fn cut(&self, at: u64, len: usize, mut each: impl FnMut(u64, u64)) {
        let (chunk, cut) = (self.chunk as u64, self.tx_desc_max as u64);
        let end = at + len as u64;
        let mut at = at;
        while at < end {
            let stop = if self.unaligned {
                (at + cut).min(end)
            } else {
                ((at / chunk + 1) * chunk).min(end)
            };
            each(at, stop);
            at = stop;
        }
    }

    /// The pool (the UMEM) this socket receives into and sends from.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the socket does for the stack on transmit.
    fn offloads(&self) -> Offloads {
        Offloads {
            tx_tcp_checksum: self.tx_csum,
            tcp_segmentation: None,
            // Headers and payload as separate descriptors need multi-buffer
            // packets; with TX metadata also unaligned chunks (see `open`).
            tx_gather: self.setup.multi_buffer && (self.unaligned || !self.tx_csum),
        }
    }

    /// Every frame the kernel still holds (fill, RX, TX and completion rings).
    pub fn frames_in_kernel(&self) -> usize {
        self.inflight.iter().filter(|f| f.is_some()).count()
    }
}

/// The socket's descriptor, to wait on several sockets at once with
/// `poll(2)` (it is readable when the RX ring has entries).
impl AsFd for Xdp {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        self.sock.fd()
    }
}

impl Driver for Xdp {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        self.refill();
        // Descriptors an earlier burst left in the TX ring go now.
        self.kick()?;
        let start = out.len();
        if let Some(sr) = self.slot_rx.as_mut() {
            let mut cx = slots::Ctx {
                inflight: &mut self.inflight,
                recycled: &mut self.recycled,
                pool: &self.pool,
                stats: &mut self.stats,
                shift: self.frame_shift,
            };
            self.sock.rx.consume(max as u32, |desc| {
                let addr = (desc.addr & libc::XSK_UNALIGNED_BUF_ADDR_MASK)
                    + (desc.addr >> libc::XSK_UNALIGNED_BUF_OFFSET_SHIFT);
                let more = desc.options & libc::XDP_PKT_CONTD != 0;
                sr.on_desc(addr, desc.len, more, &mut cx, out);
            });
            if self.need_wakeup && self.sock.fill.needs_wakeup() {
                self.sock.kick_rx()?;
            }
            return Ok(out.len() - start);
        }
        let Xdp {
            sock,
            inflight,
            partial,
            partial_bad,
            stats,
            frame_shift,
            pool,
            recycled,
            ..
        } = self;
        let shift = *frame_shift;
        let mask = (1u64 << shift) - 1;
        let mut taken = 0isize;
        sock.rx.consume(max as u32, |mut desc| {
            // Unaligned chunks: the data offset is in the top 16 bits (zero
            // when aligned, so this is the plain address then).
            desc.addr = (desc.addr & libc::XSK_UNALIGNED_BUF_ADDR_MASK)
                + (desc.addr >> libc::XSK_UNALIGNED_BUF_OFFSET_SHIFT);
            let Some(mut frame) = Self::reclaim(inflight, shift, desc.addr) else {
                stats.rx_errors += 1;
                return;
            };
            taken += 1;
            let more = desc.options & libc::XDP_PKT_CONTD != 0;
            let len = desc.len as usize;
            match partial {
                None => {
                    frame.set_offset((desc.addr & mask) as usize);
                    if len > frame.capacity() {
                        stats.rx_errors += 1;
                        *partial_bad = more;
                        recycled.push(frame);
                        return;
                    }
                    frame.set_len(len);
                    if more {
                        *partial = Some(frame);
                        *partial_bad = false;
                    } else {
                        stats.rx_packets += 1;
                        stats.rx_bytes += len as u64;
                        out.push(frame);
                    }
                }
                Some(head) => {
                    // A later fragment: copy it behind the head (counted).
                    let at = head.len();
                    let fits = at + len <= head.capacity();
                    if fits && !*partial_bad {
                        let off = (desc.addr & mask) as usize;
                        frame.set_offset(off);
                        frame.set_len(len);
                        head.room_mut()[at..at + len].copy_from_slice(frame.data());
                        head.set_len(at + len);
                        stats.rx_copied_bytes += len as u64;
                    } else {
                        *partial_bad = true;
                    }
                    recycled.push(frame);
                    if !more {
                        let head = partial.take().expect("partial present");
                        if *partial_bad {
                            stats.rx_errors += 1;
                        } else {
                            stats.rx_packets += 1;
                            stats.rx_bytes += head.len() as u64;
                            out.push(head);
                        }
                        *partial_bad = false;
                    }
                }
            }
        });
        if taken > 0 {
            pool.kernel_lent(-taken);
        }
        if self.need_wakeup && self.sock.fill.needs_wakeup() {
            self.sock.kick_rx()?;
        }
        Ok(out.len() - start)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        self.complete();
        let mut free = self.sock.tx.free() as usize;
        let mut sent = 0;
        let mut lent = 0isize;
        let (chunk, cut) = (self.chunk as u64, self.tx_desc_max as u64);
        let unaligned = self.unaligned;
        for frame in frames.iter_mut() {
            let meta = self.tx_csum && Self::request_checksum(frame, 0);
            let base = ((frame.index() as u64) << self.frame_shift) + frame.offset() as u64;
            let end = base + frame.len() as u64;
            let descs = if unaligned {
                (end - base).div_ceil(cut).max(1)
            } else {
                (end - 1) / chunk - base / chunk + 1
            };
            if descs as usize > free {
                break;
            }
            if descs as usize > MAX_DESCS || frame.is_empty() {
                // Cannot happen for frames the stack built within the MTU; count it.
                self.stats.tx_errors += 1;
                sent += 1;
                continue;
            }
            let mut at = base;
            while at < end {
                let stop = if unaligned {
                    (at + cut).min(end)
                } else {
                    ((at / chunk + 1) * chunk).min(end)
                };
                let mut options = if stop < end { libc::XDP_PKT_CONTD } else { 0 };
                if meta && at == base {
                    options |= libc::XDP_TX_METADATA;
                }
                self.sock.tx.write(libc::xdp_desc {
                    addr: at,
                    len: (stop - at) as u32,
                    options,
                });
                at = stop;
            }
            free -= descs as usize;
            self.tx_descs[frame.index() as usize] = descs as u8;
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += frame.len() as u64;
            sent += 1;
        }
        if sent == 0 {
            if std::mem::take(&mut self.tx_kick) {
                self.kick()?;
            }
            return Ok(0);
        }
        for frame in frames.drain(..sent) {
            let idx = frame.index() as usize;
            if self.tx_descs[idx] > 0 {
                self.inflight[idx] = Some(frame);
                lent += 1;
            }
        }
        self.pool.kernel_lent(lent);
        self.sock.tx.submit();
        self.tx_kick = false;
        self.kick()?;
        Ok(sent)
    }

    fn capabilities(&self) -> Capabilities {
        let description = format!(
            "af_xdp {} queue {} ({} mode, {}{}{})",
            self.iface,
            self.queue,
            self.setup.attach,
            if self.setup.zero_copy {
                "zero-copy"
            } else {
                "copy mode"
            },
            if self.setup.multi_buffer {
                ", multi-buffer"
            } else {
                ""
            },
            if self.tx_csum {
                ", TX checksum offload"
            } else {
                ""
            }
        );
        let mut caps = Capabilities::new(self.pool.clone(), self.mtu, description);
        caps.mac = Some(self.mac);
        caps.rx_checksums_trusted = self.veth;
        caps.offloads = self.offloads();
        caps
    }

    fn stats(&self) -> DriverStats {
        let mut s = self.stats;
        if let Ok(k) = self.sock.statistics() {
            s.kernel = KernelStats {
                rx_dropped: k.rx_dropped,
                rx_ring_full: k.rx_ring_full,
                fill_ring_empty: k.rx_fill_ring_empty_descs,
                rx_invalid_descs: k.rx_invalid_descs,
                tx_invalid_descs: k.tx_invalid_descs,
                tx_ring_empty: k.tx_ring_empty_descs,
            };
        }
        s
    }

    /// A segment whose payload lies in this UMEM (pool frames the
    /// application filled and the socket sends by reference) goes as a
    /// header descriptor and payload descriptors pointing at those bytes:
    /// no copy in user space. The payload's references are held until its
    /// descriptors complete (see `tx_held`). Anything else (file pages,
    /// ring bytes: the kernel cannot read memory outside the UMEM) is
    /// refused, and the stack copies it into the frame, once.
    fn tx_gather(&mut self, mut frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        const MAX_SLICES: usize = 8;
        if !self.offloads().tx_gather
            || payload.len() > MAX_SLICES
            || frame.is_empty()
            || payload
                .iter()
                .any(|p| p.is_empty() || !self.pool.contains(p.bytes()))
        {
            return Err(frame);
        }
        let mut refs: [Option<TxRef>; MAX_SLICES] = Default::default();
        for (r, p) in refs.iter_mut().zip(payload) {
            *r = p.to_ref();
            if r.is_none() {
                return Err(frame);
            }
        }
        self.complete();
        let base = self.pool.region().start;
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        // Every descriptor, headers first, and which slice each belongs to
        // (`MAX_SLICES` for the headers).
        let mut cuts = [(0u64, 0u64, MAX_SLICES); MAX_DESCS];
        let mut n = 0;
        let mut fits = true;
        let head = ((frame.index() as u64) << self.frame_shift) + frame.offset() as u64;
        let mut add = |at: u64, len: usize, slice: usize| {
            self.cut(at, len, |a, b| {
                if n < MAX_DESCS {
                    cuts[n] = (a, b, slice);
                    n += 1;
                } else {
                    fits = false;
                }
            })
        };
        add(head, frame.len(), MAX_SLICES);
        for (i, p) in payload.iter().enumerate() {
            add((p.bytes().as_ptr() as usize - base) as u64, p.len(), i);
        }
        if !fits || n > self.sock.tx.free() as usize {
            return Err(frame);
        }
        let meta = self.tx_csum && Self::request_checksum(&mut frame, payload_len);
        let mut head_descs = 0u8;
        for (k, &(at, stop, slice)) in cuts[..n].iter().enumerate() {
            let mut options = if k + 1 < n { libc::XDP_PKT_CONTD } else { 0 };
            if meta && k == 0 {
                options |= libc::XDP_TX_METADATA;
            }
            self.sock.tx.write(libc::xdp_desc {
                addr: at,
                len: (stop - at) as u32,
                options,
            });
            if slice == MAX_SLICES {
                head_descs += 1;
            } else {
                // The last descriptor of a slice holds its reference.
                let last = cuts.get(k + 1).is_none_or(|c| c.2 != slice) || k + 1 == n;
                let hold = if last { refs[slice].take() } else { None };
                self.tx_held.push_back((at, hold));
            }
        }
        let idx = frame.index() as usize;
        self.tx_descs[idx] = head_descs;
        self.inflight[idx] = Some(frame);
        self.pool.kernel_lent(1);
        self.stats.tx_packets += 1;
        self.stats.tx_bytes += cuts[..n].iter().map(|(a, b, _)| b - a).sum::<u64>();
        self.sock.tx.submit();
        self.tx_kick = true;
        Ok(())
    }

    fn tx_backlog(&self) -> bool {
        self.tx_kick
    }

    fn wait(&mut self, timeout: Duration) -> io::Result<()> {
        if self.sock.rx.has_entries() {
            return Ok(());
        }
        // Completions also free TX room the stack may be waiting for.
        self.complete();
        self.sock.wait_rx(timeout)
    }
}

impl Drop for Xdp {
    fn drop(&mut self) {
        // Let other processes' traffic on this queue go back to the kernel
        // at once; the map goes away with the program anyway.
        let _ = bpf::map_remove(self.prog.map.as_fd(), self.queue);
        let parked = self.frames_in_kernel() as isize;
        self.pool.kernel_lent(-parked);
        // Fields drop next, in order: socket, link, program, then the
        // in-flight frames back to the pool.
    }
}

#[cfg(test)]
mod tests {
    use super::setup::register_umem;
    use super::*;

    /// `interface_mtu` refuses a name no interface can have before asking
    /// the kernel, as `XdpConfig::build` does: "eth0:1" would otherwise
    /// reach `if_nametoindex`, which ignores the alias part.
    #[test]
    fn interface_mtu_refuses_an_impossible_name_with_the_reason() {
        let err = interface_mtu("eth0:1").expect_err("accepted");
        assert_eq!(
            err.to_string(),
            "\"eth0:1\" is not an interface name: it contains ':', and the kernel refuses '/', \
             ':', NUL and whitespace in one (check `ip link`)"
        );
    }

    /// A `MAP_SHARED` mapping of a file on a disk filesystem cannot be a
    /// UMEM (the kernel cannot pin its pages): the error says so.
    #[test]
    fn file_backed_umem_is_refused_with_the_reason() {
        let fd = match socket::socket() {
            Ok(fd) => fd,
            Err(e) => {
                eprintln!("skipped: no AF_XDP socket ({e}); needs root, CI runs it as root");
                return;
            }
        };
        let dir = std::env::var_os("CARGO_TARGET_TMPDIR")
            .map(std::path::PathBuf::from)
            .unwrap_or_else(|| std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")));
        let path = dir.join(format!("zc-umem-file-{}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .expect("temp file");
        file.set_len(1 << 20).expect("set_len");
        // SAFETY: the file is ours, nobody truncates it while mapped.
        #[allow(unsafe_code)]
        let map = unsafe { memmap2::MmapMut::map_mut(&file) }.expect("mmap");
        let start = map.as_ptr() as usize;
        // SAFETY: `map` is unmapped only after the socket is closed below.
        #[allow(unsafe_code)]
        let err = unsafe {
            register_umem(
                fd.as_fd(),
                "zctest0",
                start..start + map.len(),
                4096,
                0,
                false,
            )
        };
        drop(fd);
        drop(map);
        let _ = std::fs::remove_file(&path);
        let msg = err
            .expect_err("a file-backed UMEM was accepted")
            .to_string();
        assert!(msg.contains("the memory is file-backed"), "{msg}");
    }
}
