//! The AF_XDP socket: UMEM registration, ring set-up, bind, statistics and
//! the wake-up syscalls. Every call here is a thin checked wrapper.

use std::io;
use std::mem::{size_of, zeroed};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::time::Duration;

use super::ring::{CompletionRing, Consumer, FillRing, Producer, RxRing, TxRing};
use crate::sys::Pod;

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

const _: () = assert!(size_of::<libc::xdp_desc>() == 16);
const _: () = assert!(size_of::<libc::xdp_umem_reg>() == 32);
const _: () = assert!(size_of::<libc::sockaddr_xdp>() == 16);
const _: () = assert!(size_of::<libc::xdp_statistics>() == 48);
const _: () = assert!(size_of::<libc::xdp_mmap_offsets>() == 128);

/// An AF_XDP socket with its four rings mapped.
///
/// Field order is drop order: the rings are unmapped before the socket is
/// closed, and closing the socket releases the UMEM registration.
pub struct XskSocket {
    pub fill: FillRing,
    pub comp: CompletionRing,
    pub rx: RxRing,
    pub tx: TxRing,
    fd: OwnedFd,
}

/// A new, unbound AF_XDP socket.
pub fn socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd = check(unsafe { libc::socket(libc::AF_XDP, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: freshly created, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `setsockopt(fd, SOL_XDP, opt, val)`.
///
/// # Safety
///
/// `T` is the type option `opt` takes (a C struct without padding, or an
/// integer), and memory that `val` hands the kernel (`XDP_UMEM_REG`'s
/// region) stays mapped, and is not reused, for as long as the socket
/// lives.
unsafe fn setsockopt<T>(fd: BorrowedFd<'_>, opt: libc::c_int, val: &T) -> io::Result<()> {
    // SAFETY: `val` is a valid `T` for the whole call and we pass its exact
    // size; what it hands the kernel is the caller's promise.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (val as *const T).cast(),
            size_of::<T>() as libc::socklen_t,
        )
    })
    .map(drop)
}

/// getsockopt of a plain-old-data `T` (every bit pattern valid).
fn getsockopt<T: Pod>(fd: BorrowedFd<'_>, opt: libc::c_int) -> io::Result<T> {
    // SAFETY: `T: Pod`: all-zero is a valid `T`.
    let mut val: T = unsafe { zeroed() };
    let mut len = size_of::<T>() as libc::socklen_t;
    // SAFETY: `val` is writable for `len` bytes; the kernel writes at most that.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_XDP,
            opt,
            (&mut val as *mut T).cast(),
            &mut len,
        )
    })?;
    Ok(val)
}

/// `XDP_UMEM_REG`: registers `len` bytes at `addr` as the socket's UMEM,
/// cut into `chunk`-byte chunks, with `tx_metadata_len` bytes of TX
/// metadata (`struct xsk_tx_metadata`) in front of each sent packet that
/// asks for it. `unaligned` (`XDP_UMEM_UNALIGNED_CHUNK_FLAG`): descriptors
/// may start anywhere, not only at chunk boundaries; RX descriptors then
/// carry the data offset in their top 16 bits. The kernel pins those pages.
///
/// # Safety
///
/// The `len` bytes at `addr` are memory this process mapped, and they stay
/// mapped, as that memory, and are not handed to anything else (unmapped,
/// remapped, or given to another owner) for as long as the socket `fd`
/// lives: from now on the kernel writes received packets into any chunk of
/// them posted on the fill ring, and reads any chunk posted on the TX ring.
pub unsafe fn register_umem(
    fd: BorrowedFd<'_>,
    addr: usize,
    len: usize,
    chunk: u32,
    tx_metadata_len: u32,
    unaligned: bool,
) -> io::Result<()> {
    // The kernel honours tx_metadata_len only with its flag (since 6.11).
    let mut flags = 0;
    if tx_metadata_len > 0 {
        flags |= libc::XDP_UMEM_TX_METADATA_LEN;
    }
    if unaligned {
        flags |= libc::XDP_UMEM_UNALIGNED_CHUNK_FLAG;
    }
    let reg = libc::xdp_umem_reg {
        addr: addr as u64,
        len: len as u64,
        chunk_size: chunk,
        headroom: 0,
        flags,
        tx_metadata_len,
    };
    // SAFETY: `xdp_umem_reg` is what XDP_UMEM_REG takes; the region stays
    // mapped and ours while the socket lives (our caller's promise, above).
    unsafe { setsockopt(fd, libc::XDP_UMEM_REG, &reg) }
}

impl XskSocket {
    /// Sizes the four rings (`size` entries each, a power of two) and maps them.
    pub fn with_rings(fd: OwnedFd, size: u32) -> io::Result<XskSocket> {
        let b = fd.as_fd();
        for ring in [
            libc::XDP_UMEM_FILL_RING,
            libc::XDP_UMEM_COMPLETION_RING,
            libc::XDP_RX_RING,
            libc::XDP_TX_RING,
        ] {
            // SAFETY: the ring options take a `u32` entry count and hand the
            // kernel no memory.
            unsafe { setsockopt(b, ring, &size) }?;
        }
        let off: libc::xdp_mmap_offsets = getsockopt(b, libc::XDP_MMAP_OFFSETS)?;
        Ok(XskSocket {
            fill: Producer::map(b, &off.fr, size, libc::XDP_UMEM_PGOFF_FILL_RING)?,
            comp: Consumer::map(b, &off.cr, size, libc::XDP_UMEM_PGOFF_COMPLETION_RING)?,
            rx: Consumer::map(b, &off.rx, size, libc::XDP_PGOFF_RX_RING as u64)?,
            tx: Producer::map(b, &off.tx, size, libc::XDP_PGOFF_TX_RING as u64)?,
            fd,
        })
    }

    /// Binds to queue `queue` of interface `ifindex` with `XDP_*` bind flags.
    pub fn bind(&self, ifindex: u32, queue: u32, flags: u16) -> io::Result<()> {
        let sa = libc::sockaddr_xdp {
            sxdp_family: libc::AF_XDP as u16,
            sxdp_flags: flags,
            sxdp_ifindex: ifindex,
            sxdp_queue_id: queue,
            sxdp_shared_umem_fd: 0,
        };
        // SAFETY: `sa` is a valid sockaddr_xdp and we pass its exact size.
        check(unsafe {
            libc::bind(
                self.fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_xdp).cast(),
                size_of::<libc::sockaddr_xdp>() as libc::socklen_t,
            )
        })
        .map(drop)
    }

    /// Whether the bound socket runs in zero-copy mode (`XDP_OPTIONS`).
    pub fn zero_copy(&self) -> io::Result<bool> {
        let o: libc::xdp_options = getsockopt(self.fd.as_fd(), libc::XDP_OPTIONS)?;
        Ok(o.flags & libc::XDP_OPTIONS_ZEROCOPY != 0)
    }

    /// The kernel's drop and ring counters for this socket.
    pub fn statistics(&self) -> io::Result<libc::xdp_statistics> {
        getsockopt(self.fd.as_fd(), libc::XDP_STATISTICS)
    }

    /// Tells the kernel to process the TX ring (`sendto` with no data).
    /// `Ok(true)` when the kernel stopped early with work left (call again).
    pub fn kick_tx(&self) -> io::Result<bool> {
        // SAFETY: a zero-length sendto with null buffer and address is the
        // documented AF_XDP TX wake-up.
        let r = unsafe {
            libc::sendto(
                self.fd.as_raw_fd(),
                ptr::null(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null(),
                0,
            )
        };
        if r >= 0 {
            return Ok(false);
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) | Some(libc::EBUSY) => Ok(true),
            Some(libc::ENOBUFS) | Some(libc::ENETDOWN) => Ok(false),
            _ => Err(e),
        }
    }

    /// Wakes the kernel's RX processing when the fill ring asks for it.
    pub fn kick_rx(&self) -> io::Result<()> {
        // SAFETY: a zero-length recvfrom with null buffer and address is the
        // documented AF_XDP RX wake-up.
        let r = unsafe {
            libc::recvfrom(
                self.fd.as_raw_fd(),
                ptr::null_mut(),
                0,
                libc::MSG_DONTWAIT,
                ptr::null_mut(),
                ptr::null_mut(),
            )
        };
        if r < 0 {
            let e = io::Error::last_os_error();
            if !matches!(
                e.raw_os_error(),
                Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::ENOBUFS)
            ) {
                return Err(e);
            }
        }
        Ok(())
    }

    /// Waits until the RX ring has entries or `timeout` passes.
    pub fn wait_rx(&self, timeout: Duration) -> io::Result<()> {
        crate::sys::wait_readable(&self.fd, timeout)
    }

    /// The socket's descriptor (for the XSKMAP).
    pub fn raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }

    /// The socket's descriptor, borrowed (to `poll` it).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}
