//! Opening steps that talk to the kernel: querying the interface,
//! registering the pool as the UMEM, attaching (or joining) the redirect
//! program and binding, with each refusal turned into the [`XdpError`] that
//! tells the user what to do.
//!
//! Registering a UMEM is an `unsafe fn`: the kernel writes into the memory
//! for as long as the socket lives, which the caller must guarantee.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::time::Duration;

use super::geometry::{Geometry, XDP_HEADROOM};
use super::socket::XskSocket;
use super::{AttachMode, TX_META_LEN, ValidXdpConfig, XdpError, bpf, netlink, socket};
use crate::ETH_HLEN;
use crate::sys::{self, IfReq, IfReqIoctl};

/// What opening needs to know of the interface.
pub(super) struct Interface {
    /// Its IP MTU.
    pub mtu: usize,
    /// Its MAC address.
    pub mac: [u8; 6],
}

impl Interface {
    /// Reads `iface`'s MTU and MAC through `ctl` (an ioctl socket), and
    /// brings the link up if it is down.
    pub fn query(ctl: &OwnedFd, iface: &str) -> Result<Interface, XdpError> {
        let io_err = |step, source| io_error(iface, step, source);
        let mut req = IfReq::new(iface).map_err(|e| io_err("interface name", e))?;
        sys::ifreq_ioctl(ctl, IfReqIoctl::GetMtu, &mut req).map_err(|e| io_err("SIOCGIFMTU", e))?;
        let mtu = sys::ifreq_int(&req) as usize;
        let mut req = IfReq::new(iface).map_err(|e| io_err("interface name", e))?;
        sys::ifreq_ioctl(ctl, IfReqIoctl::GetHwAddr, &mut req)
            .map_err(|e| io_err("SIOCGIFHWADDR", e))?;
        let mac = sys::ifreq_hwaddr(&req);
        let mut req = IfReq::new(iface).map_err(|e| io_err("interface name", e))?;
        sys::ifreq_ioctl(ctl, IfReqIoctl::GetFlags, &mut req)
            .map_err(|e| io_err("SIOCGIFFLAGS", e))?;
        let flags = sys::ifreq_flags(&req);
        if flags & libc::IFF_UP as libc::c_short == 0 {
            req.data.flags = flags | libc::IFF_UP as libc::c_short;
            sys::ifreq_ioctl(ctl, IfReqIoctl::SetFlags, &mut req)
                .map_err(|e| refused(iface, "bringing the link up", e))?;
        }
        Ok(Interface { mtu, mac })
    }
}

/// Loads and attaches the redirect program, or joins the one another
/// zcstack process attached to `ifindex`.
pub(super) fn attach_program(
    cfg: &ValidXdpConfig,
    ifindex: u32,
    mtu: usize,
    multi_buffer: bool,
) -> Result<(bpf::Program, OwnedFd, AttachMode), XdpError> {
    let iface = cfg.iface().to_string();
    let perm = |step, source| refused(&iface, step, source);
    // Two processes starting at once may both find no program: the loser's
    // attach fails with EBUSY and it joins on the second round.
    for round in 0..2 {
        match netlink::attached_program(ifindex)
            .map_err(|e| perm("asking which XDP program is attached (rtnetlink)", e))?
        {
            Some((id, mode)) => {
                let joined =
                    bpf::join(id).map_err(|e| perm("joining the attached XDP program", e))?;
                let Some(j) = joined else {
                    return Err(XdpError::Attach {
                        iface: iface.clone(),
                        mode: cfg.mode(),
                        hint: format!(
                            " (another XDP program, id {id}, is attached to {iface}: remove it \
                             with `ip link set dev {iface} xdp off` if it is not in use)"
                        ),
                        source: io::Error::from_raw_os_error(libc::EBUSY),
                    });
                };
                let mode = match mode {
                    netlink::XDP_ATTACHED_DRV => AttachMode::Native,
                    netlink::XDP_ATTACHED_SKB => AttachMode::Generic,
                    _ => cfg.mode(),
                };
                return Ok((j.program, j.link, mode));
            }
            None => match load_and_attach(cfg, ifindex, mtu, multi_buffer) {
                Err(XdpError::Attach { source, .. })
                    if round == 0 && source.raw_os_error() == Some(libc::EBUSY) => {}
                r => return r,
            },
        }
    }
    unreachable!("the second round returns")
}

/// Loads the redirect program and attaches it (native first, then generic).
fn load_and_attach(
    cfg: &ValidXdpConfig,
    ifindex: u32,
    mtu: usize,
    multi_buffer: bool,
) -> Result<(bpf::Program, OwnedFd, AttachMode), XdpError> {
    let iface = cfg.iface().to_string();
    let perm = |step, source| refused(&iface, step, source);
    // build() keeps the queue below 65536, so this cannot overflow.
    let prog = bpf::load(cfg.queue().max(63) + 1, multi_buffer)
        .map_err(|e| perm("loading the XDP program (bpf)", e))?;
    let tries: &[AttachMode] = match cfg.mode() {
        AttachMode::Auto => &[AttachMode::Native, AttachMode::Generic],
        AttachMode::Native => &[AttachMode::Native],
        AttachMode::Generic => &[AttachMode::Generic],
    };
    let mut attached = None;
    let mut last_err = None;
    for &mode in tries {
        let flags = match mode {
            AttachMode::Generic => bpf::XDP_FLAGS_SKB_MODE,
            _ => bpf::XDP_FLAGS_DRV_MODE,
        };
        match bpf::attach(prog.prog.as_fd(), ifindex, flags) {
            Ok(link) => {
                attached = Some((link, mode));
                break;
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM) | Some(libc::EACCES)) => {
                return Err(perm("attaching the XDP program", e));
            }
            Err(e) => last_err = Some((mode, e)),
        }
    }
    let (link, attach) = match attached {
        Some(a) => a,
        None => {
            let (mode, source) = last_err.expect("at least one attach attempt");
            let hint = match source.raw_os_error() {
                Some(libc::EBUSY) | Some(libc::EEXIST) => format!(
                    " (another XDP program is attached to {iface}: remove it with \
                     `ip link set dev {iface} xdp off` if it is not in use)"
                ),
                Some(libc::EOPNOTSUPP) => {
                    " (the driver has no native XDP: use --xdp-mode generic)".to_string()
                }
                _ if mtu > 1500 => {
                    return Err(XdpError::MtuTooLarge {
                        iface,
                        mtu,
                        why: format!(
                            "for XDP in {mode} mode here ({source}): use --xdp-mode {} \
                             or lower the MTU (`ip link set dev {} mtu 1500`)",
                            if mode == AttachMode::Generic {
                                "native"
                            } else {
                                "generic"
                            },
                            cfg.iface()
                        ),
                    });
                }
                _ => String::new(),
            };
            return Err(XdpError::Attach {
                iface,
                mode,
                hint,
                source,
            });
        }
    };
    Ok((prog, link, attach))
}

/// A failed `step`, with the kernel's error.
pub(super) fn io_error(iface: &str, step: &'static str, source: io::Error) -> XdpError {
    XdpError::Io {
        iface: iface.to_string(),
        step,
        source,
    }
}

/// A failed `step`: missing privileges if the kernel said EPERM or EACCES.
pub(super) fn refused(iface: &str, step: &'static str, source: io::Error) -> XdpError {
    let iface = iface.to_string();
    match source.raw_os_error() {
        Some(libc::EPERM) | Some(libc::EACCES) => XdpError::Permission {
            iface,
            step,
            source,
        },
        _ => XdpError::Io {
            iface,
            step,
            source,
        },
    }
}

/// How the kernel took the UMEM.
#[derive(Clone, Copy, Debug)]
pub(super) struct UmemLayout {
    /// Sent packets may carry TX metadata (`XDP_TX_METADATA`).
    pub tx_metadata: bool,
    /// Chunks are unaligned: descriptors may start anywhere.
    pub unaligned: bool,
}

/// Registers the pool's `region` as the socket's UMEM in `geo`'s chunks;
/// with `tx_metadata`, room for TX metadata in front of sent packets (and,
/// for multi-buffer packets, unaligned chunks), or without it if the kernel
/// is too old for that.
///
/// # Safety
///
/// As for [`register_umem`]: `region` stays mapped, and is not handed to
/// anything else, for as long as the socket `fd` lives.
pub(super) unsafe fn register_pool(
    fd: BorrowedFd<'_>,
    iface: &str,
    region: std::ops::Range<usize>,
    geo: &Geometry,
    tx_metadata: bool,
) -> Result<UmemLayout, XdpError> {
    // Multi-buffer packets with TX metadata need unaligned chunks: with
    // tx_metadata_len set, the kernel checks that *every* TX descriptor
    // has that many bytes in front of it inside its own chunk
    // (xp_aligned_validate_desc, net/xdp/xsk_queue.h), so in aligned mode
    // a continuation descriptor starting on a chunk boundary is invalid
    // and the packet is dropped. Unaligned descriptors may start anywhere
    // and only need `len + tx_metadata_len <= chunk`.
    let unaligned = tx_metadata && geo.multi_buffer;
    if tx_metadata {
        // SAFETY: our caller's promise (above).
        match unsafe { register_umem(fd, iface, region.clone(), geo.chunk, TX_META_LEN, unaligned) }
        {
            Ok(()) => {
                return Ok(UmemLayout {
                    tx_metadata,
                    unaligned,
                });
            }
            // An older kernel refuses the metadata: go without.
            Err(XdpError::Umem { source, .. }) if source.raw_os_error() == Some(libc::EINVAL) => {}
            Err(e) => return Err(e),
        }
    }
    // SAFETY: as above.
    unsafe { register_umem(fd, iface, region, geo.chunk, 0, false) }?;
    Ok(UmemLayout {
        tx_metadata: false,
        unaligned: false,
    })
}

/// Binds `sock` to `cfg`'s queue: zero-copy first where `cfg` asks (copy
/// mode where the device can't), waiting out the `EBUSY` of a socket a
/// process just closed. Returns whether the socket runs zero-copy.
pub(super) fn bind(
    sock: &XskSocket,
    ifindex: u32,
    cfg: &ValidXdpConfig,
    geo: &Geometry,
) -> Result<bool, XdpError> {
    let (iface, queue) = (cfg.iface(), cfg.queue());
    let mut flags = libc::XDP_USE_NEED_WAKEUP;
    if geo.multi_buffer {
        flags |= libc::XDP_USE_SG;
    }
    let bind_err = |source: io::Error| {
        let hint = match source.raw_os_error() {
            Some(libc::EINVAL) => {
                format!(" (does {iface} have a queue {queue}? `ethtool -l {iface}` lists them)")
            }
            Some(libc::EBUSY) => " (another AF_XDP socket is bound to that queue)".to_string(),
            Some(libc::EOPNOTSUPP) if geo.multi_buffer => format!(
                " (the device cannot do multi-buffer AF_XDP: lower the MTU of {iface} to {})",
                geo.chunk - XDP_HEADROOM - ETH_HLEN
            ),
            _ => String::new(),
        };
        XdpError::Bind {
            iface: iface.to_string(),
            queue,
            hint,
            source,
        }
    };
    // A socket of a process that just exited is released a moment
    // later (the kernel defers it): EBUSY for up to a second is that.
    let bind = |flags: u16| {
        let mut tries = 0;
        loop {
            match sock.bind(ifindex, queue, flags) {
                Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 40 => {
                    tries += 1;
                    std::thread::sleep(Duration::from_millis(25));
                }
                r => return r,
            }
        }
    };
    let zero_copy = if cfg.zero_copy() {
        match bind(flags | libc::XDP_ZEROCOPY) {
            Ok(()) => true,
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::EOPNOTSUPP) | Some(libc::EINVAL)
                ) =>
            {
                bind(flags | libc::XDP_COPY).map_err(bind_err)?;
                false
            }
            Err(e) => return Err(bind_err(e)),
        }
    } else {
        bind(flags | libc::XDP_COPY).map_err(bind_err)?;
        false
    };
    Ok(zero_copy && sock.zero_copy().unwrap_or(false))
}

/// Registers `region` as the socket's UMEM, saying why if the kernel refuses.
///
/// # Safety
///
/// As for [`socket::register_umem`]: `region` is memory this process
/// mapped, and it stays mapped, and is not handed to anything else, for as
/// long as the socket `fd` lives.
pub(super) unsafe fn register_umem(
    fd: BorrowedFd<'_>,
    iface: &str,
    region: std::ops::Range<usize>,
    chunk: usize,
    tx_metadata_len: usize,
    unaligned: bool,
) -> Result<(), XdpError> {
    // SAFETY: the region's lifetime is our caller's promise (above), the
    // very one `socket::register_umem` asks for.
    unsafe {
        socket::register_umem(
            fd,
            region.start,
            region.len(),
            chunk as u32,
            tx_metadata_len as u32,
            unaligned,
        )
    }
    .map_err(|source| {
        let why = match source.raw_os_error() {
            Some(libc::ENOBUFS) | Some(libc::ENOMEM) | Some(libc::EPERM) => format!(
                "it exceeds the locked-memory limit (ulimit -l is {} KiB): run as root \
                 (CAP_IPC_LOCK) or raise RLIMIT_MEMLOCK",
                memlock_kib()
            ),
            Some(libc::EFAULT) => "the memory is file-backed: a UMEM must be anonymous, \
                 memfd, tmpfs or hugetlbfs memory"
                .to_string(),
            _ => format!("{chunk}-byte chunks over {} bytes", region.len()),
        };
        XdpError::Umem {
            iface: iface.to_string(),
            bytes: region.len(),
            why,
            source,
        }
    })
}

fn memlock_kib() -> String {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    match sys::getrlimit_memlock(&mut lim) {
        Ok(()) if lim.rlim_cur == libc::RLIM_INFINITY => "unlimited".to_string(),
        Ok(()) => (lim.rlim_cur / 1024).to_string(),
        Err(_) => "unknown".to_string(),
    }
}
