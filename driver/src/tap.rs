//! A Linux TAP device as a poll-mode driver.
//!
//! Opens `/dev/net/tun` with `IFF_TAP | IFF_NO_PI` (see the kernel's
//! `Documentation/networking/tuntap.rst`), non-blocking. Each received frame is
//! `read(2)` straight into a pool frame and each sent frame is `write(2)`n
//! straight from one: no user-space copy. The kernel copies once each way
//! between its skb and our frame, and TAP has no batched read or write, so
//! this driver makes one syscall per packet; AF_XDP is the batched driver.
//!
//! Creating a TAP (or attaching to one) needs `CAP_NET_ADMIN` in the current
//! network namespace; the device appears in whatever namespace the calling
//! thread is in.
//!
//! With [`TapOptions`] `vnet_hdr`, every frame carries a 10-byte
//! `virtio_net_hdr` ([`crate::vnet`]). It lives in the pool frame's headroom:
//! `read(2)` fills header and frame in one go and the frame's data offset
//! moves past the header; on send the header is written into the headroom in
//! front of the stack's frame and one `write(2)` sends both. No copy either
//! way. With `offloads` on top (`TUNSETOFFLOAD` `TUN_F_CSUM | TUN_F_TSO4`),
//! the kernel hands us TCP segments of up to 64 KiB with partial checksums
//! and takes the same from us: it finishes the checksum and cuts the segment
//! into MSS-sized ones ([`Frame::gso_size`]), so one syscall moves up to
//! 64 KiB instead of 1.5 KiB. Such frames need pool frames of 64 KiB.
//!
//! Send by reference ([`Driver::tx_gather`], plain or with the virtio
//! header): a TCP segment whose payload the stack hands over as slices —
//! of a socket's send ring or of a mapped file — goes out with one
//! `writev(2)` of [virtio header, the headers in a pool frame, the payload
//! slices]. The kernel copies the payload into its skb during the call
//! (as `sendfile` does), so no CPU copy is made in user space and the
//! slices are free again when the call returns.

use std::io;
use std::os::fd::OwnedFd;

use crate::ifname::{BadInterfaceName, check_interface_name};
use crate::sys::{self, IfReq, IfReqIoctl};
use crate::vnet::{self, VNET_HDR_LEN, VnetHdr};
use crate::{Capabilities, Driver, DriverStats, ETH_HLEN, Frame, GatherSlice, Offloads, Pool};

/// How to open a TAP device; the default is plain `IFF_TAP | IFF_NO_PI`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TapOptions {
    /// `IFF_VNET_HDR`: a `virtio_net_hdr` in front of every frame. The
    /// driver then checks the checksums of received frames the kernel did not
    /// vouch for, so the stack checks none.
    pub vnet_hdr: bool,
    /// TSO and partial checksums both ways (implies `vnet_hdr`); needs pool
    /// frames large enough for a 64 KiB segment.
    pub offloads: bool,
    /// `IFF_MULTI_QUEUE`: open one queue of a multi-queue TAP (each queue is
    /// its own `Tap`; a persistent device must have been made multi-queue).
    pub multi_queue: bool,
}

impl TapOptions {
    /// TSO and partial checksums with the virtio header: the fast TAP mode.
    pub fn offloads() -> TapOptions {
        TapOptions {
            vnet_hdr: true,
            offloads: true,
            multi_queue: false,
        }
    }
}

/// Why a TAP device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// A name no interface can have.
    #[error(transparent)]
    InterfaceName(#[from] BadInterfaceName),
    /// `/dev/net/tun` is missing: no TUN/TAP driver, or no device node.
    #[error(
        "there is no /dev/net/tun: load the TUN/TAP driver (`modprobe tun`) or, if it is \
         built in, create the node (`mkdir -p /dev/net && mknod /dev/net/tun c 10 200`)"
    )]
    NoTunDevice(#[source] io::Error),
    /// `/dev/net/tun` exists but this process may not open it.
    #[error(
        "opening /dev/net/tun for TAP device {name} was refused: TAP devices need root, or \
         CAP_NET_ADMIN and read-write access to /dev/net/tun"
    )]
    TunAccess {
        /// Device name.
        name: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The caller lacks `CAP_NET_ADMIN`.
    #[error(
        "creating or attaching TAP device {name} needs CAP_NET_ADMIN: run as root, or \
         `setcap cap_net_admin+ep` on the binary"
    )]
    Permission {
        /// Device name.
        name: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The name is taken by a device that is not a free TAP.
    #[error(
        "cannot attach to {name}: it exists but is not a TAP device free to attach to \
         (another process holds it, or it is another kind of interface, or its \
         multi-queue setting differs)"
    )]
    Busy {
        /// Device name.
        name: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The device's MTU does not fit in a pool frame.
    #[error(
        "TAP {name} has MTU {mtu}, but a pool frame holds only {room} bytes of frame: \
         lower the MTU to {max} or use a larger pool frame size"
    )]
    MtuTooLarge {
        /// Device name.
        name: String,
        /// The device's MTU.
        mtu: usize,
        /// Frame bytes a pool frame can hold.
        room: usize,
        /// Largest MTU that fits.
        max: usize,
    },
    /// The pool leaves no headroom for the virtio header.
    #[error(
        "TAP {name} with IFF_VNET_HDR needs {need} bytes of pool headroom in front of \
         each frame, the pool has {have}: build the pool with more headroom"
    )]
    NoHeadroom {
        /// Device name.
        name: String,
        /// Headroom needed.
        need: usize,
        /// The pool's headroom.
        have: usize,
    },
    /// Any other failure, with the step that failed.
    #[error("TAP {name}: {what}")]
    Io {
        /// Device name.
        name: String,
        /// The step that failed.
        what: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// A TAP device opened for poll-mode use.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    pool: Pool,
    mtu: usize,
    opts: TapOptions,
    /// Opening created the device (vs attached to an existing one).
    created: bool,
    stats: DriverStats,
}

/// Largest Ethernet frame a TSO segment can be: a 64 KiB IPv4 packet.
const MAX_TSO_FRAME: usize = ETH_HLEN + 65535;

impl Tap {
    /// Creates the TAP device `name` in the current network namespace, or
    /// attaches to it if it exists, and brings it up.
    pub fn open(name: &str, pool: Pool) -> Result<Tap, TapError> {
        Tap::open_with(name, pool, TapOptions::default())
    }

    /// Like [`Tap::open`], with `IFF_VNET_HDR`, offloads or multi-queue.
    pub fn open_with(name: &str, pool: Pool, mut opts: TapOptions) -> Result<Tap, TapError> {
        check_interface_name(name)?;
        opts.vnet_hdr |= opts.offloads;
        if opts.vnet_hdr && pool.headroom() < VNET_HDR_LEN {
            return Err(TapError::NoHeadroom {
                name: name.to_string(),
                need: VNET_HDR_LEN,
                have: pool.headroom(),
            });
        }
        let io_err = |what, source| TapError::Io {
            name: name.to_string(),
            what,
            source,
        };
        let mut req = IfReq::new(name).map_err(|e| io_err("bad name", e))?;
        let fd = sys::open_rw_nonblock("/dev/net/tun").map_err(|source| {
            match source.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => TapError::TunAccess {
                    name: name.to_string(),
                    source,
                },
                Some(libc::ENOENT) | Some(libc::ENODEV) | Some(libc::ENXIO) => {
                    TapError::NoTunDevice(source)
                }
                _ => io_err("opening /dev/net/tun", source),
            }
        })?;
        // Whether TUNSETIFF attaches to an existing device or creates one.
        let existed = sys::if_nametoindex(name).is_some();
        let mut flags = libc::IFF_TAP | libc::IFF_NO_PI;
        if opts.vnet_hdr {
            flags |= libc::IFF_VNET_HDR;
        }
        if opts.multi_queue {
            flags |= libc::IFF_MULTI_QUEUE;
        }
        req.data.flags = flags as libc::c_short;
        sys::ifreq_ioctl(&fd, IfReqIoctl::TunSetIff, &mut req).map_err(|source| {
            match source.raw_os_error() {
                Some(libc::EPERM) | Some(libc::EACCES) => TapError::Permission {
                    name: name.to_string(),
                    source,
                },
                Some(libc::EBUSY) | Some(libc::EINVAL) => TapError::Busy {
                    name: name.to_string(),
                    source,
                },
                _ => io_err("TUNSETIFF", source),
            }
        })?;
        // Always set the offloads: a persistent TAP keeps the last user's,
        // and a plain reader handed 64 KiB TSO segments would drop them all.
        let offloads = if opts.offloads {
            libc::TUN_F_CSUM | libc::TUN_F_TSO4
        } else {
            0
        };
        sys::tun_set_offload(&fd, offloads).map_err(|e| {
            io_err(
                "the kernel refused TSO and checksum offloads (TUNSETOFFLOAD); \
                     open the TAP without offloads",
                e,
            )
        })?;
        let sock = sys::ioctl_socket().map_err(|e| io_err("socket", e))?;
        let mut req = IfReq::new(name).map_err(|e| io_err("bad name", e))?;
        sys::ifreq_ioctl(&sock, IfReqIoctl::GetFlags, &mut req)
            .map_err(|e| io_err("SIOCGIFFLAGS", e))?;
        let flags = sys::ifreq_flags(&req);
        if flags & libc::IFF_UP as libc::c_short == 0 {
            req.data.flags = flags | libc::IFF_UP as libc::c_short;
            sys::ifreq_ioctl(&sock, IfReqIoctl::SetFlags, &mut req).map_err(
                |source| match source.raw_os_error() {
                    Some(libc::EPERM) => TapError::Permission {
                        name: name.to_string(),
                        source,
                    },
                    _ => io_err("bringing the link up", source),
                },
            )?;
        }
        let mut req = IfReq::new(name).map_err(|e| io_err("bad name", e))?;
        sys::ifreq_ioctl(&sock, IfReqIoctl::GetMtu, &mut req)
            .map_err(|e| io_err("SIOCGIFMTU", e))?;
        let mtu = sys::ifreq_int(&req) as usize;
        let room = pool.frame_capacity();
        if mtu + ETH_HLEN > room {
            return Err(TapError::MtuTooLarge {
                name: name.to_string(),
                mtu,
                room,
                max: room - ETH_HLEN,
            });
        }
        Ok(Tap {
            fd,
            name: name.to_string(),
            pool,
            mtu,
            opts,
            created: !existed,
            stats: DriverStats::default(),
        })
    }

    /// Whether opening created the device (it then disappears when the
    /// `Tap` closes) rather than attaching to an existing one.
    pub fn created(&self) -> bool {
        self.created
    }

    /// The options the device was opened with (`vnet_hdr` set if `offloads` is).
    pub fn options(&self) -> TapOptions {
        self.opts
    }

    /// Reads one frame with its virtio header into `frame` (header in the
    /// headroom); `Ok(false)` when nothing is waiting. A frame that is
    /// malformed, fails its checksum or does not fit is counted in
    /// `rx_errors` and left empty.
    fn read_vnet(&mut self, frame: &mut Frame) -> io::Result<bool> {
        let start = frame.offset();
        frame.set_offset(start - VNET_HDR_LEN);
        let n = match sys::read(&self.fd, frame.room_mut()) {
            Ok(Some(n)) => n,
            Ok(None) => return Ok(false),
            // The kernel could not fit the packet into the frame (EFAULT, EINVAL).
            Err(e) if matches!(e.raw_os_error(), Some(libc::EFAULT) | Some(libc::EINVAL)) => {
                self.stats.rx_errors += 1;
                return Ok(true);
            }
            Err(e) => return Err(e),
        };
        let room = frame.capacity();
        frame.set_len(n);
        let mut hb = [0u8; VNET_HDR_LEN];
        let ok = n >= VNET_HDR_LEN && n < room && {
            hb.copy_from_slice(&frame.data()[..VNET_HDR_LEN]);
            frame.set_offset(start);
            frame.set_len(n - VNET_HDR_LEN);
            vnet::parse_rx(&VnetHdr::read(&hb), frame.data()).is_ok()
        };
        if !ok {
            frame.reset();
            self.stats.rx_errors += 1;
        }
        Ok(true)
    }

    /// Writes `frame` with a virtio header in its headroom; restores the
    /// frame's layout afterwards (so an unsent frame can be retried).
    fn write_vnet(&self, frame: &mut Frame) -> io::Result<Option<usize>> {
        let (off, len) = (frame.offset(), frame.len());
        if off < VNET_HDR_LEN {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "no headroom for the virtio header",
            ));
        }
        let hdr = if self.opts.offloads {
            let gso_size = frame.gso_size();
            vnet::tx_header(frame.data_mut(), gso_size)
        } else {
            VnetHdr::default()
        };
        frame.set_offset(off - VNET_HDR_LEN);
        frame.set_len(len + VNET_HDR_LEN);
        frame.data_mut()[..VNET_HDR_LEN].copy_from_slice(&hdr.to_bytes());
        let r = sys::write(&self.fd, frame.data());
        frame.set_offset(off);
        frame.set_len(len);
        // Count frame bytes, as on receive.
        r.map(|n| n.map(|n| n.saturating_sub(VNET_HDR_LEN)))
    }

    /// Writes `frame` (headers) and `payload` as one packet with one
    /// `writev(2)`: [virtio header, headers, payload slices]. The kernel
    /// copies the payload into its skb during the call; nothing in user
    /// space touches it.
    fn write_gather(
        &self,
        frame: &mut Frame,
        payload: &[GatherSlice<'_>],
    ) -> io::Result<Option<usize>> {
        const MAX_SLICES: usize = 14;
        if payload.len() > MAX_SLICES {
            return Ok(None);
        }
        let payload_len: usize = payload.iter().map(|p| p.len()).sum();
        let hdr = if self.opts.offloads {
            let gso_size = frame.gso_size();
            vnet::tx_header_split(frame.data_mut(), payload_len, gso_size)
        } else {
            VnetHdr::default()
        };
        let hdr = hdr.to_bytes();
        let mut bufs = [io::IoSlice::new(&[]); MAX_SLICES + 2];
        let mut n = 0;
        if self.opts.vnet_hdr {
            bufs[n] = io::IoSlice::new(&hdr);
            n += 1;
        }
        bufs[n] = io::IoSlice::new(frame.data());
        n += 1;
        for p in payload {
            bufs[n] = io::IoSlice::new(p.bytes());
            n += 1;
        }
        let r = sys::writev(&self.fd, &bufs[..n])?;
        let extra = if self.opts.vnet_hdr { VNET_HDR_LEN } else { 0 };
        Ok(r.map(|n| n.saturating_sub(extra)))
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Driver for Tap {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let mut got = 0;
        // Refused frames count as reads too, so a flood of them cannot keep
        // this call reading for longer than a burst's worth.
        let mut reads = 0;
        while got < max && reads < 2 * max {
            reads += 1;
            let Some(mut frame) = self.pool.alloc() else {
                // Pool empty: drain one packet so the device keeps moving, and count it.
                let mut scratch = [0u8; 64];
                match sys::read(&self.fd, &mut scratch)? {
                    Some(_) => self.stats.rx_dropped_no_frame += 1,
                    None => break,
                }
                continue;
            };
            if self.opts.vnet_hdr {
                if !self.read_vnet(&mut frame)? {
                    break;
                }
                if !frame.is_empty() {
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += frame.len() as u64;
                    out.push(frame);
                    got += 1;
                }
                continue;
            }
            match sys::read(&self.fd, frame.room_mut())? {
                Some(n) => {
                    frame.set_len(n);
                    self.stats.rx_packets += 1;
                    self.stats.rx_bytes += n as u64;
                    out.push(frame);
                    got += 1;
                }
                None => break,
            }
        }
        Ok(got)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        let mut done = 0;
        for frame in frames.iter_mut() {
            let r = if self.opts.vnet_hdr {
                self.write_vnet(frame)
            } else {
                sys::write(&self.fd, frame.data())
            };
            match r {
                Ok(Some(n)) => {
                    self.stats.tx_packets += 1;
                    self.stats.tx_bytes += n as u64;
                }
                Ok(None) => break,
                // The link is down or the frame was refused: drop it, count it.
                Err(_) => self.stats.tx_errors += 1,
            }
            done += 1;
        }
        frames.drain(..done);
        Ok(done)
    }

    fn capabilities(&self) -> Capabilities {
        let how = if self.created { "created" } else { "attached" };
        let mut caps = Capabilities::new(self.pool.clone(), self.mtu, "");
        // Frames with a virtio header: the kernel vouched for them or the
        // driver checked them (vnet::parse_rx).
        caps.rx_checksums_trusted = self.opts.vnet_hdr;
        if self.opts.offloads {
            caps.description = format!("tap {} ({how}; TSO, partial checksums)", self.name);
            caps.offloads = Offloads {
                tx_tcp_checksum: true,
                tcp_segmentation: Some(self.pool.frame_capacity().min(MAX_TSO_FRAME)),
                tx_gather: true,
            };
        } else {
            caps.description = format!("tap {} ({how})", self.name);
            caps.offloads.tx_gather = true;
        }
        caps
    }
    fn stats(&self) -> DriverStats {
        self.stats
    }
    fn tx_gather(&mut self, mut frame: Frame, payload: &[GatherSlice<'_>]) -> Result<(), Frame> {
        // Sent (or refused) during the call: the slices need no reference,
        // and `frame` (the headers) goes back to the pool on return.
        match self.write_gather(&mut frame, payload) {
            Ok(Some(n)) => {
                self.stats.tx_packets += 1;
                self.stats.tx_bytes += n as u64;
                Ok(())
            }
            Ok(None) => Err(frame),
            // The link is down or the packet was refused: dropped, counted.
            Err(_) => {
                self.stats.tx_errors += 1;
                Ok(())
            }
        }
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        sys::wait_readable(&self.fd, timeout)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolConfig;

    /// A name the kernel would refuse never reaches it: before, `zc:0`
    /// came back from TUNSETIFF as EINVAL, read as "exists but is not a TAP".
    #[test]
    fn a_name_the_kernel_refuses_is_refused_before_any_syscall() {
        let pool = PoolConfig::new().frames(8).build().unwrap();
        let err = Tap::open("zc:0", pool).err().expect("refused");
        assert!(matches!(err, TapError::InterfaceName(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "\"zc:0\" is not an interface name: it contains ':', and the kernel refuses '/', ':', \
             NUL and whitespace in one (check `ip link`)"
        );
    }
}
