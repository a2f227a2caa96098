//! Transmit through an `AF_PACKET` socket with virtio-net headers: TCP
//! segments of up to 64 KiB on any Ethernet interface, which the kernel (or
//! the NIC's TSO) cuts into MSS-sized segments only where it must.
//!
//! AF_XDP has no segmentation offload: on a veth in copy mode each 1.5 KiB
//! segment becomes its own kernel skb. A packet socket opened with
//! `PACKET_VNET_HDR` (`packet(7)`, `net/packet/af_packet.c`
//! `packet_snd`) takes a `virtio_net_hdr` ([`crate::vnet`]) in front of every
//! frame, exactly as a TAP with `IFF_VNET_HDR` does: `NEEDS_CSUM` with the
//! pseudo-header sum in the checksum field, `GSO_TCPV4` with `gso_size` for a
//! segment longer than the MSS. The kernel builds one skb per 64 KiB segment
//! and segments it in software (`validate_xmit_skb`) or hands it to a
//! device that segments (veth passes it on whole to its peer).
//!
//! * The socket is bound to the interface with protocol 0: it receives
//!   nothing (no copy of every packet, unlike `ETH_P_ALL`); receiving stays
//!   with AF_XDP or whoever else.
//! * The packet goes through the interface's queueing discipline, which on
//!   a veth is `noqueue` (straight to the driver). `PACKET_QDISC_BYPASS`
//!   is an option, off by default: with it the kernel drops every segment
//!   it would have to cut in software (an interface with TSO off).
//! * Sends are batched with `sendmmsg(2)`, up to [`BATCH`] packets per
//!   call. Each packet is an iovec list: the 10-byte header from this
//!   socket's own array, then the packet's bytes as one or more slices
//!   ([`TxPacket`]). Today a packet is one pool frame; the shape lets a
//!   segment leave as [header + its headers in a frame, payload slices of
//!   file pages or app memory] with no user-space copy (the kernel copies
//!   once, during the call, into the skb).
//! * Why not a `TPACKET` TX ring: the ring wants every byte *in* the ring, so
//!   the stack's frames (or file pages) would be copied into it first, and
//!   payload slices by reference are impossible. `sendmmsg` copies each byte
//!   once, in the kernel, which the ring does too on a veth (it attaches the
//!   ring pages to the skb and the veth peer's receive copies them).
//!   Measured: docs/tx-gso.md.
//! * Nothing is retained after the call: the kernel has copied the bytes, so
//!   a frame goes back to the pool as soon as `send` returns.
//!
//! Needs `CAP_NET_RAW` for the socket (root has it).

#![deny(unsafe_op_in_unsafe_fn)]

use std::io::{self, IoSlice};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::Frame;
use crate::sys::{self, IfReq, IfReqIoctl};
use crate::vnet::{self, VNET_HDR_LEN, VnetHdr};

/// Packets one `sendmmsg(2)` call sends at most.
pub const BATCH: usize = 64;
/// iovecs one call may use in all (header + parts of every packet).
const MAX_IOV: usize = 4 * BATCH;
/// Socket send buffer asked for: room for a burst of 64 KiB segments on a
/// device that holds skbs until its TX completes (a veth frees them at once).
const SNDBUF: libc::c_int = 8 << 20;

/// Why the AF_PACKET transmit socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum PacketError {
    /// No interface of that name.
    #[error("no interface {0} in this network namespace (`ip link` lists them)")]
    NoInterface(String),
    /// The caller lacks `CAP_NET_RAW`.
    #[error(
        "TCP segmentation offload through AF_PACKET on {iface} needs CAP_NET_RAW: run as \
         root, or `setcap cap_net_raw,cap_net_admin+ep` on the binary, or run without --tx-gso"
    )]
    Permission {
        /// Interface.
        iface: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel has no packet sockets.
    #[error(
        "this kernel has no AF_PACKET sockets (CONFIG_PACKET): load them with \
         `modprobe af_packet`, or run without --tx-gso"
    )]
    NoPacketSockets(#[source] io::Error),
    /// The kernel refused the virtio-net header option.
    #[error(
        "the kernel refused PACKET_VNET_HDR on {iface}, so it cannot take 64 KiB TCP \
         segments from user space (it needs Linux 3.x or later with AF_PACKET): run \
         without --tx-gso"
    )]
    NoVnetHdr {
        /// Interface.
        iface: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The interface does not carry Ethernet frames.
    #[error(
        "{iface} is not an Ethernet interface (hardware type {hw_type}): TCP segments with \
         virtio-net headers need Ethernet framing; run without --tx-gso"
    )]
    NotEthernet {
        /// Interface.
        iface: String,
        /// `ARPHRD_*` of the interface.
        hw_type: u16,
    },
    /// Any other failure, with the step that failed.
    #[error("AF_PACKET transmit on {iface}: {step}")]
    Io {
        /// Interface.
        iface: String,
        /// The step that failed.
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// How to open a [`PacketTx`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PacketTxOptions {
    /// `PACKET_QDISC_BYPASS`: skip the interface's queueing discipline (as
    /// AF_XDP does). Default off: with it the kernel *drops* every packet it
    /// would have to segment or linearize in software (`__dev_direct_xmit`
    /// gives up when `validate_xmit_skb` returns a different skb), i.e. every
    /// 64 KiB segment on an interface whose TSO is off. Only for devices
    /// known to take every segment as it is.
    pub qdisc_bypass: bool,
}

/// One packet for [`PacketTx::send`]: its virtio-net header and its bytes
/// (an Ethernet frame) as slices that are sent one after the other.
#[derive(Clone, Copy, Debug)]
pub struct TxPacket<'a> {
    /// The header the kernel reads first.
    pub hdr: VnetHdr,
    /// The frame's bytes, in order (one slice, or headers then payload slices).
    pub parts: &'a [IoSlice<'a>],
}

/// What one [`PacketTx::send`] call did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sent {
    /// Packets taken off the front of the caller's list: sent, or refused and
    /// dropped (those are in `errors`). The rest could not go now (the
    /// socket's buffer is full) and should be offered again.
    pub taken: usize,
    /// Of `taken`, packets the kernel refused (malformed header, too large,
    /// link down): dropped.
    pub errors: usize,
    /// Frame bytes sent (headers excluded).
    pub bytes: u64,
    /// `sendmmsg` calls made.
    pub calls: u64,
}

/// An `AF_PACKET` socket that sends frames with virtio-net headers on one
/// interface and receives nothing.
pub struct PacketTx {
    fd: OwnedFd,
    iface: String,
    opts: PacketTxOptions,
}

impl PacketTx {
    /// Opens the socket on `iface` (in the current network namespace) and
    /// binds it there.
    pub fn open(iface: &str, opts: PacketTxOptions) -> Result<PacketTx, PacketError> {
        let io_err = |step, source| PacketError::Io {
            iface: iface.to_string(),
            step,
            source,
        };
        let ifindex =
            sys::if_nametoindex(iface).ok_or_else(|| PacketError::NoInterface(iface.into()))?;
        let ctl = sys::ioctl_socket().map_err(|e| io_err("socket", e))?;
        let mut req = IfReq::new(iface).map_err(|e| io_err("interface name", e))?;
        sys::ifreq_ioctl(&ctl, IfReqIoctl::GetHwAddr, &mut req)
            .map_err(|e| io_err("SIOCGIFHWADDR", e))?;
        let hw_type = sys::ifreq_hwaddr_family(&req);
        if hw_type != libc::ARPHRD_ETHER {
            return Err(PacketError::NotEthernet {
                iface: iface.into(),
                hw_type,
            });
        }
        // Protocol 0: bound to the device for sending, never hooked into
        // receive (packet(7): "protocol 0 … no packets are received").
        // SAFETY: plain socket(2) call with constant arguments.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
                0,
            )
        };
        if raw < 0 {
            let e = io::Error::last_os_error();
            return Err(match e.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => PacketError::Permission {
                    iface: iface.into(),
                    source: e,
                },
                Some(libc::EAFNOSUPPORT) => PacketError::NoPacketSockets(e),
                _ => io_err("creating the AF_PACKET socket", e),
            });
        }
        // SAFETY: `raw` was just returned by socket(2) and is owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        set_int(&fd, libc::SOL_PACKET, libc::PACKET_VNET_HDR, 1).map_err(|source| {
            PacketError::NoVnetHdr {
                iface: iface.into(),
                source,
            }
        })?;
        if opts.qdisc_bypass {
            set_int(&fd, libc::SOL_PACKET, libc::PACKET_QDISC_BYPASS, 1)
                .map_err(|e| io_err("PACKET_QDISC_BYPASS", e))?;
        }
        // Without CAP_NET_ADMIN the kernel caps SO_SNDBUF at wmem_max; the
        // send then only returns EAGAIN sooner.
        if set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, SNDBUF).is_err() {
            let _ = set_int(&fd, libc::SOL_SOCKET, libc::SO_SNDBUF, SNDBUF);
        }
        // SAFETY: sockaddr_ll is plain old data; all-zero is a valid value.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = 0;
        sll.sll_ifindex = ifindex as i32;
        // SAFETY: `sll` is a valid sockaddr_ll and the length passed is its size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(io_err(
                "binding to the interface",
                io::Error::last_os_error(),
            ));
        }
        Ok(PacketTx {
            fd,
            iface: iface.into(),
            opts,
        })
    }

    /// The interface the socket sends on.
    pub fn iface(&self) -> &str {
        &self.iface
    }

    /// The options it was opened with.
    pub fn options(&self) -> PacketTxOptions {
        self.opts
    }

    /// Sends packets from the front of `packets` with as few `sendmmsg(2)`
    /// calls as the batch limits allow; never blocks. Packets the kernel
    /// refuses are dropped and counted; when the socket's buffer is full the
    /// call stops and [`Sent::taken`] says how far it got. A packet with more
    /// than 255 parts is refused.
    pub fn send(&mut self, packets: &[TxPacket<'_>]) -> io::Result<Sent> {
        let mut out = Sent::default();
        let mut hdrs = [[0u8; VNET_HDR_LEN]; BATCH];
        // SAFETY: iovec and mmsghdr are plain old data; all-zero is valid
        // (null pointers with zero lengths, which the kernel never reads).
        let mut iov: [libc::iovec; MAX_IOV] = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        let mut msgs: [libc::mmsghdr; BATCH] = unsafe { std::mem::zeroed() };
        while out.taken < packets.len() {
            // Fill one batch.
            let (mut n, mut used) = (0, 0);
            for p in &packets[out.taken..] {
                let need = 1 + p.parts.len();
                if n == BATCH || used + need > MAX_IOV {
                    break;
                }
                hdrs[n] = p.hdr.to_bytes();
                iov[used] = libc::iovec {
                    iov_base: hdrs[n].as_mut_ptr().cast(),
                    iov_len: VNET_HDR_LEN,
                };
                for (k, part) in p.parts.iter().enumerate() {
                    iov[used + 1 + k] = libc::iovec {
                        iov_base: part.as_ptr().cast_mut().cast(),
                        iov_len: part.len(),
                    };
                }
                let h = &mut msgs[n].msg_hdr;
                h.msg_iov = iov[used..].as_mut_ptr();
                h.msg_iovlen = need;
                msgs[n].msg_len = 0;
                used += need;
                n += 1;
            }
            if n == 0 {
                // A packet with more parts than one call can carry.
                out.taken += 1;
                out.errors += 1;
                continue;
            }
            out.calls += 1;
            // SAFETY: `msgs[..n]` point at `iov[..used]`, which point at
            // `hdrs` and at the callers' slices; all live, unmoved, for the
            // whole call. The kernel only reads through them (send).
            let r = unsafe {
                libc::sendmmsg(
                    self.fd.as_raw_fd(),
                    msgs.as_mut_ptr(),
                    n as libc::c_uint,
                    libc::MSG_DONTWAIT,
                )
            };
            if r == 0 {
                break;
            }
            if r > 0 {
                let r = r as usize;
                for p in &packets[out.taken..out.taken + r] {
                    out.bytes += p.parts.iter().map(|s| s.len() as u64).sum::<u64>();
                }
                out.taken += r;
                continue;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The socket's buffer is full (or a signal): offer the rest later.
                Some(libc::EAGAIN) | Some(libc::EINTR) => break,
                // The socket itself is broken: the caller must know.
                Some(libc::EBADF) | Some(libc::ENOTSOCK) | Some(libc::EFAULT) => return Err(e),
                // The first packet was refused (EINVAL: a header the kernel
                // does not accept; EMSGSIZE: too large; ENETDOWN, ENXIO:
                // the link is down or gone) or dropped on the way (ENOBUFS:
                // a full device queue, or a segment the bypassed qdisc path
                // would not cut): drop it, as a NIC would, and go on; TCP
                // sends it again. Retrying it could stall for ever.
                _ => {
                    out.taken += 1;
                    out.errors += 1;
                }
            }
        }
        Ok(out)
    }

    /// Sends pool frames the stack built, from the front of `frames`: each
    /// gets the header [`vnet::tx_header`] makes for it (partial TCP checksum,
    /// segmentation to [`Frame::gso_size`]). Returns what [`send`](Self::send)
    /// did; the caller drops `taken` frames from the front (they go back to
    /// the pool: the kernel has copied them).
    pub fn send_frames(&mut self, frames: &mut [Frame]) -> io::Result<Sent> {
        let mut total = Sent::default();
        let mut from = 0;
        while from < frames.len() {
            let end = (from + BATCH).min(frames.len());
            let chunk = &mut frames[from..end];
            let mut hdrs = [VnetHdr::default(); BATCH];
            for (h, f) in hdrs.iter_mut().zip(chunk.iter_mut()) {
                let gso = f.gso_size();
                *h = vnet::tx_header(f.data_mut(), gso);
            }
            let slices: [[IoSlice<'_>; 1]; BATCH] =
                std::array::from_fn(|i| [IoSlice::new(chunk.get(i).map_or(&[][..], |f| f.data()))]);
            let packets: [TxPacket<'_>; BATCH] = std::array::from_fn(|i| TxPacket {
                hdr: hdrs[i],
                parts: &slices[i],
            });
            let s = self.send(&packets[..chunk.len()])?;
            total.taken += s.taken;
            total.errors += s.errors;
            total.bytes += s.bytes;
            total.calls += s.calls;
            from += s.taken;
            if s.taken < chunk.len() {
                break;
            }
        }
        Ok(total)
    }
}

/// `setsockopt(2)` of an int option.
fn set_int(fd: &OwnedFd, level: libc::c_int, name: libc::c_int, v: libc::c_int) -> io::Result<()> {
    // SAFETY: `v` is a c_int that lives across the call; its size is passed.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Refusals say what to do, before any packet socket is created (these
    /// need no privilege: the interface is looked up first).
    #[test]
    fn interfaces_that_cannot_take_gso_are_refused_with_the_reason() {
        let err = PacketTx::open("zcnosuch0", PacketTxOptions::default())
            .err()
            .expect("no such interface")
            .to_string();
        assert_eq!(
            err,
            "no interface zcnosuch0 in this network namespace (`ip link` lists them)"
        );
        // The loopback carries no Ethernet header (ARPHRD_LOOPBACK, 772).
        let err = PacketTx::open("lo", PacketTxOptions::default())
            .err()
            .expect("the loopback is refused")
            .to_string();
        assert!(
            err.starts_with("lo is not an Ethernet interface (hardware type 772)"),
            "{err}"
        );
    }
}
