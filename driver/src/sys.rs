//! The few raw syscalls the drivers need, each wrapped in a safe function.
//!
//! Everything here is a thin, checked wrapper: it turns `-1`/`errno` into an
//! [`io::Error`] and never hands out a pointer the caller could misuse.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Turns a libc return value into an `io::Result`, reading `errno` on `-1`.
/// Plain old data the kernel may fill: `getsockopt` results and bpf(2)
/// info structs are read into a zeroed `T` of this kind.
///
/// # Safety
///
/// Every bit pattern of `size_of::<Self>()` bytes, all-zero included, is a
/// valid `Self`: integers and arrays of integers only (no `bool`, enum,
/// reference or pointer the program follows), with no padding.
pub(crate) unsafe trait Pod: Copy {}

// SAFETY: integers, arrays of integers and C structs of `u32`/`u64` fields
// with no padding (their sizes are asserted where they are used).
unsafe impl Pod for u32 {}
// SAFETY: as above.
unsafe impl Pod for libc::xdp_mmap_offsets {}
// SAFETY: as above.
unsafe impl Pod for libc::xdp_options {}
// SAFETY: as above.
unsafe impl Pod for libc::xdp_statistics {}

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `memfd_create(2)`: an anonymous file for the pool, optionally on 2 MiB hugepages.
pub fn memfd_create(name: &str, hugetlb: bool) -> io::Result<File> {
    let cname = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut flags = libc::MFD_CLOEXEC;
    if hugetlb {
        flags |= libc::MFD_HUGETLB | libc::MFD_HUGE_2MB;
    }
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let fd = check(unsafe { libc::memfd_create(cname.as_ptr(), flags) })?;
    // SAFETY: `fd` was just returned by memfd_create and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// `read(2)` into `buf`; `Ok(None)` when the descriptor would block.
pub fn read(fd: &impl AsRawFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    would_block(n)
}

/// `write(2)` of `buf`; `Ok(None)` when the descriptor would block.
pub fn write(fd: &impl AsRawFd, buf: &[u8]) -> io::Result<Option<usize>> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the whole call.
    let n = unsafe { libc::write(fd.as_raw_fd(), buf.as_ptr().cast(), buf.len()) };
    would_block(n)
}

/// `writev(2)`: one packet from several buffers (TUN/TAP takes each call
/// as one frame). `Ok(None)` if it would block.
pub fn writev(fd: &impl AsRawFd, bufs: &[io::IoSlice<'_>]) -> io::Result<Option<usize>> {
    let n = libc::c_int::try_from(bufs.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "too many buffers"))?;
    // SAFETY: `IoSlice` is ABI-compatible with `struct iovec` on Unix (std
    // documents it), and every buffer is valid for reads of its length for
    // the whole call.
    let r = unsafe { libc::writev(fd.as_raw_fd(), bufs.as_ptr().cast::<libc::iovec>(), n) };
    would_block(r)
}

fn would_block(n: isize) -> io::Result<Option<usize>> {
    if n >= 0 {
        return Ok(Some(n as usize));
    }
    let e = io::Error::last_os_error();
    match e.kind() {
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
        _ => Err(e),
    }
}

/// `struct ifreq` as the TUN/TAP and interface ioctls use it (name + a union
/// whose members we use are a short flag word or an int).
#[repr(C)]
pub struct IfReq {
    pub name: [u8; libc::IFNAMSIZ],
    pub data: IfReqData,
}

/// The part of `ifreq`'s union that we use.
#[repr(C)]
#[derive(Clone, Copy)]
pub union IfReqData {
    pub flags: libc::c_short,
    pub int: libc::c_int,
    pub hwaddr: libc::sockaddr,
    pub data: *mut libc::c_void,
    _pad: [u8; 24],
}

const _: () = assert!(std::mem::size_of::<IfReq>() == 40);

impl IfReq {
    /// An `ifreq` naming `name`; fails if the name does not fit `IFNAMSIZ - 1`.
    pub fn new(name: &str) -> io::Result<IfReq> {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "interface name {name:?} must be 1 to {} bytes",
                    libc::IFNAMSIZ - 1
                ),
            ));
        }
        let mut req = IfReq {
            name: [0; libc::IFNAMSIZ],
            data: IfReqData { _pad: [0; 24] },
        };
        req.name[..name.len()].copy_from_slice(name.as_bytes());
        Ok(req)
    }
}

/// Which `ioctl(2)` requests [`ifreq_ioctl`] may issue: each of these reads or
/// writes exactly one `struct ifreq`.
#[derive(Clone, Copy, Debug)]
pub enum IfReqIoctl {
    TunSetIff,
    GetFlags,
    SetFlags,
    GetMtu,
    GetHwAddr,
}

/// `struct ethtool_drvinfo` (linux/ethtool.h), for `ETHTOOL_GDRVINFO`.
#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    n_priv_flags: u32,
    n_stats: u32,
    testinfo_len: u32,
    eedump_len: u32,
    regdump_len: u32,
}
const _: () = assert!(std::mem::size_of::<EthtoolDrvinfo>() == 196);
const ETHTOOL_GDRVINFO: u32 = 3;

/// The kernel driver behind interface `name` (`ethtool -i`), e.g. `veth`.
pub fn ethtool_driver(name: &str) -> io::Result<String> {
    let sock = ioctl_socket()?;
    let mut info = EthtoolDrvinfo {
        cmd: ETHTOOL_GDRVINFO,
        driver: [0; 32],
        version: [0; 32],
        fw_version: [0; 32],
        bus_info: [0; 32],
        erom_version: [0; 32],
        reserved2: [0; 12],
        n_priv_flags: 0,
        n_stats: 0,
        testinfo_len: 0,
        eedump_len: 0,
        regdump_len: 0,
    };
    let mut req = IfReq::new(name)?;
    req.data.data = (&mut info as *mut EthtoolDrvinfo).cast();
    // SAFETY: SIOCETHTOOL with ETHTOOL_GDRVINFO reads the ifreq and writes one
    // `ethtool_drvinfo` through `ifr_data`, which points at `info`, alive and
    // exclusively borrowed for the call.
    check(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCETHTOOL as libc::Ioctl, &mut req) })?;
    let end = info.driver.iter().position(|&b| b == 0).unwrap_or(32);
    Ok(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

impl IfReqIoctl {
    fn request(self) -> libc::Ioctl {
        match self {
            IfReqIoctl::TunSetIff => libc::TUNSETIFF as libc::Ioctl,
            IfReqIoctl::GetFlags => libc::SIOCGIFFLAGS as libc::Ioctl,
            IfReqIoctl::SetFlags => libc::SIOCSIFFLAGS as libc::Ioctl,
            IfReqIoctl::GetMtu => libc::SIOCGIFMTU as libc::Ioctl,
            IfReqIoctl::GetHwAddr => libc::SIOCGIFHWADDR as libc::Ioctl,
        }
    }
}

/// Issues one of the `ifreq` ioctls on `fd`.
pub fn ifreq_ioctl(fd: &impl AsRawFd, op: IfReqIoctl, req: &mut IfReq) -> io::Result<()> {
    // SAFETY: every request in `IfReqIoctl` reads/writes one `struct ifreq`, and
    // `req` is a valid, exclusively borrowed `ifreq` for the duration of the call.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), op.request(), req as *mut IfReq) })?;
    Ok(())
}

/// `ioctl(TUNSETOFFLOAD)` on a TAP descriptor: which offloads (`TUN_F_*`)
/// the reader accepts from the kernel (`Documentation/networking/tuntap.rst`).
pub fn tun_set_offload(fd: &impl AsRawFd, flags: libc::c_uint) -> io::Result<()> {
    // SAFETY: TUNSETOFFLOAD takes its argument by value and reads no memory.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::TUNSETOFFLOAD,
            libc::c_ulong::from(flags),
        )
    })?;
    Ok(())
}

/// A datagram socket used only as a handle for interface ioctls.
pub fn ioctl_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers.
    let fd =
        check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` is freshly created and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `open(2)` of a device node, read-write, non-blocking, close-on-exec.
pub fn open_rw_nonblock(path: &str) -> io::Result<OwnedFd> {
    let cpath = CString::new(path).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: `cpath` is a valid NUL-terminated string that outlives the call.
    let fd = check(unsafe {
        libc::open(
            cpath.as_ptr(),
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
    })?;
    // SAFETY: `fd` is freshly opened and owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The flag word of an `ifreq` the kernel filled.
pub fn ifreq_flags(req: &IfReq) -> libc::c_short {
    // SAFETY: every bit pattern is a valid c_short, and the union is fully initialised.
    unsafe { req.data.flags }
}

/// The int member of an `ifreq` the kernel filled (MTU, index).
pub fn ifreq_int(req: &IfReq) -> libc::c_int {
    // SAFETY: every bit pattern is a valid c_int, and the union is fully initialised.
    unsafe { req.data.int }
}

/// The hardware address an interface's `ifreq` carries after `SIOCGIFHWADDR`.
pub fn ifreq_hwaddr(req: &IfReq) -> [u8; 6] {
    // SAFETY: the union is fully initialised and every bit pattern is a valid sockaddr.
    let sa = unsafe { req.data.hwaddr };
    std::array::from_fn(|i| sa.sa_data[i] as u8)
}

/// The hardware type (`ARPHRD_*`) an interface's `ifreq` carries after
/// `SIOCGIFHWADDR`.
pub fn ifreq_hwaddr_family(req: &IfReq) -> u16 {
    // SAFETY: the union is fully initialised and every bit pattern is a valid sockaddr.
    unsafe { req.data.hwaddr }.sa_family
}

/// `if_nametoindex(3)`: the interface's index in the current network
/// namespace, `None` if there is no such interface.
pub fn if_nametoindex(name: &str) -> Option<u32> {
    let cname = CString::new(name).ok()?;
    // SAFETY: `cname` is a valid NUL-terminated string that outlives the call.
    let idx = unsafe { libc::if_nametoindex(cname.as_ptr()) };
    (idx != 0).then_some(idx)
}

/// `getrlimit(RLIMIT_MEMLOCK)`.
pub fn getrlimit_memlock(lim: &mut libc::rlimit) -> io::Result<()> {
    // SAFETY: `lim` is a valid, exclusively borrowed rlimit for the call.
    check(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, lim) }).map(drop)
}

/// `poll(2)` for readability of `fd`, at most `timeout` (rounded up to 1 ms).
pub fn wait_readable(fd: &impl AsRawFd, timeout: Duration) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as libc::c_int;
    // SAFETY: `pfd` is one valid pollfd, exclusively borrowed for the call.
    match check(unsafe { libc::poll(&mut pfd, 1, ms) }) {
        Err(e) if e.kind() != io::ErrorKind::Interrupted => Err(e),
        _ => Ok(()),
    }
}

/// The start of Linux's `struct tcp_info` (`linux/tcp.h`), through
/// `tcpi_bytes_retrans` (Linux 4.19+; an older kernel fills less and the
/// rest stays zero). Only the counters tools report are public.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpInfo {
    head: [u8; 8],
    times_and_metrics: [u32; 23],
    /// Segments retransmitted over the connection's life (`tcpi_total_retrans`).
    pub total_retrans: u32,
    rates: [u64; 2],
    /// Bytes the peer acknowledged (`tcpi_bytes_acked`).
    pub bytes_acked: u64,
    /// Bytes received in order (`tcpi_bytes_received`).
    pub bytes_received: u64,
    /// Segments sent, retransmissions and pure ACKs included (`tcpi_segs_out`).
    pub segs_out: u32,
    /// Segments received (`tcpi_segs_in`).
    pub segs_in: u32,
    more: [u32; 4],
    delivery: [u64; 4],
    delivered: [u32; 2],
    /// Payload bytes sent, retransmissions included (`tcpi_bytes_sent`).
    pub bytes_sent: u64,
    /// Payload bytes retransmitted (`tcpi_bytes_retrans`).
    pub bytes_retrans: u64,
}
const _: () = assert!(std::mem::size_of::<TcpInfo>() == 216);
const _: () = assert!(std::mem::offset_of!(TcpInfo, total_retrans) == 100);
const _: () = assert!(std::mem::offset_of!(TcpInfo, segs_out) == 136);

/// `getsockopt(fd, IPPROTO_TCP, TCP_INFO)` (tcp(7)) of a kernel TCP socket.
pub fn tcp_info(fd: &impl AsRawFd) -> io::Result<TcpInfo> {
    let mut info = TcpInfo::default();
    let mut len = std::mem::size_of::<TcpInfo>() as libc::socklen_t;
    // SAFETY: `info` is a plain-data struct valid for writes of `len` bytes,
    // and `len` is a valid socklen_t the kernel may lower; both outlive the call.
    check(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&raw mut info).cast(),
            &mut len,
        )
    })?;
    Ok(info)
}

/// Most datagrams one [`send_datagrams`] or [`recv_datagrams`] call moves.
pub const MMSG_MAX: usize = 64;

/// `sendmmsg(2)`: sends each of `bufs` (at most [`MMSG_MAX`]) as one
/// datagram on the connected kernel UDP socket `fd`, in one system call;
/// returns how many the kernel took. For tools that measure the kernel's
/// UDP beside zcstack with the same batching (`zc-perf --kernel --udp`).
pub fn send_datagrams(fd: &impl AsRawFd, bufs: &[&[u8]]) -> io::Result<usize> {
    let n = bufs.len().min(MMSG_MAX);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MMSG_MAX];
    // SAFETY: mmsghdr is plain data; all-zero is a valid empty header.
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec {
            iov_base: bufs[i].as_ptr() as *mut libc::c_void,
            iov_len: bufs[i].len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
    }
    // SAFETY: the first `n` headers point at `n` iovecs that point at the
    // caller's buffers, which the kernel only reads; all outlive the call.
    let sent = check(unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), n as u32, 0) })?;
    Ok(sent as usize)
}

/// `recvmmsg(2)` with `MSG_WAITFORONE`: receives up to `bufs.len()` (at
/// most [`MMSG_MAX`]) datagrams on the kernel UDP socket `fd` in one system
/// call, waiting (up to the socket's receive timeout) only for the first;
/// each one's length and sender go to `out`. Returns how many.
pub fn recv_datagrams(
    fd: &impl AsRawFd,
    bufs: &mut [Vec<u8>],
    out: &mut [(usize, std::net::SocketAddrV4)],
) -> io::Result<usize> {
    let n = bufs.len().min(out.len()).min(MMSG_MAX);
    let mut iov = [libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }; MMSG_MAX];
    // SAFETY: sockaddr_in and mmsghdr are plain data; all-zero is valid.
    let mut addrs: [libc::sockaddr_in; MMSG_MAX] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut msgs: [libc::mmsghdr; MMSG_MAX] = unsafe { std::mem::zeroed() };
    for i in 0..n {
        iov[i] = libc::iovec {
            iov_base: bufs[i].as_mut_ptr().cast(),
            iov_len: bufs[i].len(),
        };
        msgs[i].msg_hdr.msg_iov = &raw mut iov[i];
        msgs[i].msg_hdr.msg_iovlen = 1;
        msgs[i].msg_hdr.msg_name = (&raw mut addrs[i]).cast();
        msgs[i].msg_hdr.msg_namelen = std::mem::size_of::<libc::sockaddr_in>() as u32;
    }
    // SAFETY: the first `n` headers point at iovecs over the caller's
    // buffers (writable, of the lengths given) and at sockaddr_in slots;
    // all outlive the call; a null timeout waits as the socket says.
    let got = check(unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            msgs.as_mut_ptr(),
            n as u32,
            libc::MSG_WAITFORONE,
            std::ptr::null_mut(),
        )
    })? as usize;
    for i in 0..got {
        let a = &addrs[i];
        out[i] = (
            msgs[i].msg_len as usize,
            std::net::SocketAddrV4::new(
                std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
                u16::from_be(a.sin_port),
            ),
        );
    }
    Ok(got)
}
