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

#![deny(unsafe_code)]

use std::io;
use std::os::fd::OwnedFd;

use crate::sys::{self, IfReq, IfReqIoctl};
use crate::{Driver, DriverStats, Frame, Pool};

/// Why a TAP device could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum TapError {
    /// `/dev/net/tun` is missing.
    #[error("cannot open /dev/net/tun ({0}): load the tun module with `modprobe tun`")]
    NoTunDevice(#[source] io::Error),
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
        "cannot attach to {name}: {source} (is it a TAP device not in use by another process?)"
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
    /// Any other failure, with the step that failed.
    #[error("TAP {name}: {what}: {source}")]
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

/// Ethernet header length, added to the IP MTU to size a frame.
const ETH_HLEN: usize = 14;

/// A TAP device opened for poll-mode use.
pub struct Tap {
    fd: OwnedFd,
    name: String,
    pool: Pool,
    mtu: usize,
    stats: DriverStats,
}

impl Tap {
    /// Creates the TAP device `name` in the current network namespace, or
    /// attaches to it if it exists, and brings it up.
    pub fn open(name: &str, pool: Pool) -> Result<Tap, TapError> {
        let io_err = |what, source| TapError::Io {
            name: name.to_string(),
            what,
            source,
        };
        let mut req = IfReq::new(name).map_err(|e| io_err("bad name", e))?;
        let fd = sys::open_rw_nonblock("/dev/net/tun").map_err(TapError::NoTunDevice)?;
        req.data.flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
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
            stats: DriverStats::default(),
        })
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl Driver for Tap {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let mut got = 0;
        while got < max {
            let Some(mut frame) = self.pool.alloc() else {
                // Pool empty: drain one packet so the device keeps moving, and count it.
                let mut scratch = [0u8; 64];
                match sys::read(&self.fd, &mut scratch)? {
                    Some(_) => self.stats.rx_dropped_no_frame += 1,
                    None => break,
                }
                continue;
            };
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
        for frame in frames.iter() {
            match sys::write(&self.fd, frame.data()) {
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

    fn pool(&self) -> &Pool {
        &self.pool
    }
    fn mtu(&self) -> usize {
        self.mtu
    }
    fn stats(&self) -> DriverStats {
        self.stats
    }
    fn describe(&self) -> String {
        format!("tap {}", self.name)
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        sys::wait_readable(&self.fd, timeout)
    }
}
