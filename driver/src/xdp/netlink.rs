//! One rtnetlink query: which XDP program is attached to an interface, and
//! in which mode (`RTM_GETLINK`, attribute `IFLA_XDP`; `man 7 rtnetlink`).
//! A second process serving another queue of the same interface uses it to
//! join the program the first one attached.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

const IFLA_XDP: u16 = 43;
const IFLA_XDP_ATTACHED: u16 = 2;
const IFLA_XDP_PROG_ID: u16 = 4;
const NLA_TYPE_MASK: u16 = 0x3fff;

/// `XDP_ATTACHED_*` values.
pub const XDP_ATTACHED_DRV: u8 = 1;
/// Generic (skb) mode.
pub const XDP_ATTACHED_SKB: u8 = 2;

/// `struct ifinfomsg`.
#[repr(C)]
struct IfInfoMsg {
    family: u8,
    pad: u8,
    dev_type: u16,
    index: i32,
    flags: u32,
    change: u32,
}

#[repr(C)]
struct Request {
    hdr: libc::nlmsghdr,
    ifi: IfInfoMsg,
}
const _: () = assert!(size_of::<IfInfoMsg>() == 16);
const _: () = assert!(size_of::<Request>() == 32);

/// The attached program's id and `XDP_ATTACHED_*` mode, `None` if there is none.
pub fn attached_program(ifindex: u32) -> io::Result<Option<(u32, u8)>> {
    // SAFETY: socket(2) takes no pointers.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            libc::NETLINK_ROUTE,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: freshly created, owned by nobody else.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        hdr: libc::nlmsghdr {
            nlmsg_len: size_of::<Request>() as u32,
            nlmsg_type: libc::RTM_GETLINK,
            nlmsg_flags: libc::NLM_F_REQUEST as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        ifi: IfInfoMsg {
            family: libc::AF_UNSPEC as u8,
            pad: 0,
            dev_type: 0,
            index: ifindex as i32,
            flags: 0,
            change: 0,
        },
    };
    // SAFETY: `req` is a valid request of exactly the length we pass.
    let n = unsafe {
        libc::send(
            sock.as_raw_fd(),
            (&req as *const Request).cast(),
            size_of::<Request>(),
            0,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut buf = vec![0u8; 32 * 1024];
    // SAFETY: `buf` is writable for its whole length.
    let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    parse_reply(&buf[..n as usize])
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Iterates `(type, payload)` over netlink attributes.
fn attrs(mut b: &[u8]) -> impl Iterator<Item = (u16, &[u8])> {
    std::iter::from_fn(move || {
        let len = u16_at(b, 0)? as usize;
        let ty = u16_at(b, 2)? & NLA_TYPE_MASK;
        if len < 4 || len > b.len() {
            return None;
        }
        let payload = &b[4..len];
        b = &b[len.next_multiple_of(4).min(b.len())..];
        Some((ty, payload))
    })
}

fn parse_reply(b: &[u8]) -> io::Result<Option<(u32, u8)>> {
    let hdr = size_of::<libc::nlmsghdr>();
    let msg_type = u16_at(b, 4).ok_or_else(short)?;
    if msg_type == libc::NLMSG_ERROR as u16 {
        let err = u32_at(b, hdr).ok_or_else(short)? as i32;
        return Err(io::Error::from_raw_os_error(-err));
    }
    let start = hdr + size_of::<IfInfoMsg>();
    let end = (u32_at(b, 0).ok_or_else(short)? as usize).min(b.len());
    let Some(body) = b.get(start..end) else {
        return Err(short());
    };
    for (ty, xdp) in attrs(body) {
        if ty != IFLA_XDP {
            continue;
        }
        let (mut id, mut mode) = (None, 0u8);
        for (t, v) in attrs(xdp) {
            match t {
                IFLA_XDP_PROG_ID => id = u32_at(v, 0),
                IFLA_XDP_ATTACHED => mode = v.first().copied().unwrap_or(0),
                _ => {}
            }
        }
        return Ok(id.filter(|&i| i != 0).map(|i| (i, mode)));
    }
    Ok(None)
}

fn short() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "short rtnetlink reply")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_program_id_in_a_reply() {
        // nlmsghdr(16) + ifinfomsg(16) + IFLA_IFNAME + IFLA_XDP{ATTACHED=1, PROG_ID=97}
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend_from_slice(&libc::RTM_NEWLINK.to_ne_bytes());
        m.extend_from_slice(&[0; 10]);
        m.extend_from_slice(&[0; 16]);
        m.extend_from_slice(&10u16.to_ne_bytes());
        m.extend_from_slice(&3u16.to_ne_bytes());
        m.extend_from_slice(b"zcsv0\0\0\0");
        m.extend_from_slice(&20u16.to_ne_bytes());
        m.extend_from_slice(&(IFLA_XDP | 0x8000).to_ne_bytes());
        m.extend_from_slice(&5u16.to_ne_bytes());
        m.extend_from_slice(&IFLA_XDP_ATTACHED.to_ne_bytes());
        m.extend_from_slice(&[1, 0, 0, 0]);
        m.extend_from_slice(&8u16.to_ne_bytes());
        m.extend_from_slice(&IFLA_XDP_PROG_ID.to_ne_bytes());
        m.extend_from_slice(&97u32.to_ne_bytes());
        let len = m.len() as u32;
        m[..4].copy_from_slice(&len.to_ne_bytes());
        assert_eq!(parse_reply(&m).unwrap(), Some((97, XDP_ATTACHED_DRV)));
        // Truncated or lying lengths are errors or "none", never a panic.
        for cut in 0..m.len() {
            let _ = parse_reply(&m[..cut]);
        }
        let mut bad = m.clone();
        bad[32] = 0xff;
        let _ = parse_reply(&bad);
    }
}
