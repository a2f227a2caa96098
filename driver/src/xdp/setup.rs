//! Opening steps that talk to the kernel: attaching (or joining) the
//! redirect program and registering the pool as the UMEM, with each refusal
//! turned into the [`XdpError`] that tells the user what to do.
//!
//! Registering a UMEM is an `unsafe fn`: the kernel writes into the memory
//! for as long as the socket lives, which the caller must guarantee.

use std::io;
use std::os::fd::{AsFd, OwnedFd};

use super::{AttachMode, ValidXdpConfig, XdpError, bpf, netlink, socket};
use crate::sys;

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

/// Registers `region` as the socket's UMEM, saying why if the kernel refuses.
///
/// # Safety
///
/// As for [`socket::register_umem`]: `region` is memory this process
/// mapped, and it stays mapped, and is not handed to anything else, for as
/// long as the socket `fd` lives.
pub(super) unsafe fn register_umem(
    fd: std::os::fd::BorrowedFd<'_>,
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
