//! The XDP redirect program, assembled here and loaded with raw `bpf(2)`:
//! no clang, libbpf or libxdp at build or run time.
//!
//! The program is libxdp's default AF_XDP program in six instructions:
//!
//! ```c
//! return bpf_redirect_map(&xsks_map, ctx->rx_queue_index, XDP_PASS);
//! ```
//!
//! Packets on a queue with a socket in the XSKMAP go to that socket; others
//! go on to the kernel. It is attached with a bpf_link (`BPF_LINK_CREATE`),
//! which the kernel detaches when the last descriptor of the link is closed,
//! so a killed process leaves no program behind.
//!
//! Struct layouts follow `include/uapi/linux/bpf.h` (the anonymous members of
//! `union bpf_attr` used by each command).

use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::sys::Pod;

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_MAP_GET_FD_BY_ID: libc::c_long = 14;
const BPF_OBJ_GET_INFO_BY_FD: libc::c_long = 15;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_LINK_GET_FD_BY_ID: libc::c_long = 30;
const BPF_LINK_GET_NEXT_ID: libc::c_long = 31;
const BPF_LINK_TYPE_XDP: u32 = 6;
/// The name our program is loaded under, so another process can recognise it.
pub const PROG_NAME: &str = "zc_redirect";

const BPF_MAP_TYPE_XSKMAP: u32 = 17;
const BPF_PROG_TYPE_XDP: u32 = 6;
/// `enum bpf_attach_type`: BPF_XDP.
const BPF_XDP: u32 = 37;
/// The program accepts multi-buffer (fragmented) packets.
pub const BPF_F_XDP_HAS_FRAGS: u32 = 1 << 5;
const BPF_FUNC_REDIRECT_MAP: i32 = 51;
const BPF_PSEUDO_MAP_FD: u8 = 1;
const XDP_PASS: i32 = 2;

/// `XDP_FLAGS_SKB_MODE`: generic XDP, after the kernel built an skb.
pub const XDP_FLAGS_SKB_MODE: u32 = 1 << 1;
/// `XDP_FLAGS_DRV_MODE`: native XDP, in the driver.
pub const XDP_FLAGS_DRV_MODE: u32 = 1 << 2;

/// `struct bpf_insn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Insn {
    code: u8,
    /// dst_reg in the low nibble, src_reg in the high one.
    regs: u8,
    off: i16,
    imm: i32,
}
const _: () = assert!(size_of::<Insn>() == 8);

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

fn redirect_program(map_fd: i32) -> [Insn; 6] {
    [
        // r2 = *(u32 *)(r1 + 16): xdp_md.rx_queue_index
        insn(0x61, 2, 1, 16, 0),
        // r1 = map (ld_imm64 with a map fd the verifier resolves), two slots
        insn(0x18, 1, BPF_PSEUDO_MAP_FD, 0, map_fd),
        insn(0x00, 0, 0, 0, 0),
        // r3 = XDP_PASS: the action when the queue has no socket
        insn(0xb7, 3, 0, 0, XDP_PASS),
        // r0 = bpf_redirect_map(r1, r2, r3)
        insn(0x85, 0, 0, 0, BPF_FUNC_REDIRECT_MAP),
        // return r0
        insn(0x95, 0, 0, 0, 0),
    ]
}

/// `bpf(cmd, attr, size_of::<T>())`.
///
/// # Safety
///
/// `T` is the prefix of `union bpf_attr` that `cmd` reads (a `repr(C)`
/// struct laid out as the kernel's, its size asserted), and every address
/// in `attr` points at memory valid for what `cmd` does with it during the
/// call (instructions it reads, an info struct it writes).
unsafe fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<OwnedFdOrZero> {
    // SAFETY: `attr` is a valid, exclusively borrowed `union bpf_attr`
    // prefix for `cmd` (the caller's promise), and we pass its exact size;
    // the kernel zero-extends.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            (attr as *mut T).cast::<libc::c_void>(),
            size_of::<T>(),
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(OwnedFdOrZero(r as i32))
}

/// A bpf(2) result: a new descriptor for the create/load commands, 0 for the others.
struct OwnedFdOrZero(i32);

impl OwnedFdOrZero {
    fn fd(self) -> OwnedFd {
        // SAFETY: the create/load commands return a fresh descriptor that
        // nobody else owns.
        unsafe { OwnedFd::from_raw_fd(self.0) }
    }
}

#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    inner_map_fd: u32,
    numa_node: u32,
    map_name: [u8; 16],
}
// Layout of `union bpf_attr`'s members, as in include/uapi/linux/bpf.h.
const _: () = assert!(size_of::<MapCreate>() == 44 && offset_of!(MapCreate, map_name) == 28);

#[repr(C)]
#[derive(Default)]
struct ProgLoad {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}
const _: () = assert!(size_of::<ProgLoad>() == 72);
const _: () = assert!(offset_of!(ProgLoad, log_buf) == 32 && offset_of!(ProgLoad, prog_name) == 48);
const _: () = assert!(offset_of!(ProgLoad, expected_attach_type) == 68);

#[repr(C)]
#[derive(Default)]
struct LinkCreate {
    prog_fd: u32,
    target_ifindex: u32,
    attach_type: u32,
    flags: u32,
    _rest: [u64; 4],
}
const _: () = assert!(size_of::<LinkCreate>() == 48 && offset_of!(LinkCreate, flags) == 12);

#[repr(C)]
#[derive(Default)]
struct MapElem {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}
const _: () = assert!(size_of::<MapElem>() == 32 && offset_of!(MapElem, key) == 8);

/// The loaded program and its XSKMAP.
pub struct Program {
    pub prog: OwnedFd,
    pub map: OwnedFd,
}

/// Creates an XSKMAP with `entries` slots (one per queue index) and loads
/// the redirect program over it; `frags` marks it multi-buffer capable.
/// On failure the error carries the verifier's log.
pub fn load(entries: u32, frags: bool) -> io::Result<Program> {
    let mut m = MapCreate {
        map_type: BPF_MAP_TYPE_XSKMAP,
        key_size: 4,
        value_size: 4,
        max_entries: entries,
        ..Default::default()
    };
    m.map_name[..8].copy_from_slice(b"zc_xsks\0");
    // SAFETY: `MapCreate` is this command's attr and holds no addresses.
    let map = unsafe { sys_bpf(BPF_MAP_CREATE, &mut m) }?.fd();

    let insns = redirect_program(map.as_raw_fd());
    let license = c"GPL";
    let mut p = ProgLoad {
        prog_type: BPF_PROG_TYPE_XDP,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        prog_flags: if frags { BPF_F_XDP_HAS_FRAGS } else { 0 },
        expected_attach_type: BPF_XDP,
        ..Default::default()
    };
    p.prog_name[..PROG_NAME.len()].copy_from_slice(PROG_NAME.as_bytes());
    // SAFETY: `ProgLoad` is this command's attr; `insns` and `license`
    // outlive the call.
    match unsafe { sys_bpf(BPF_PROG_LOAD, &mut p) } {
        Ok(fd) => Ok(Program { prog: fd.fd(), map }),
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => Err(e),
        Err(e) => {
            // Load again with the verifier log on, to say why.
            let mut log = vec![0u8; 16 * 1024];
            p.log_level = 1;
            p.log_size = log.len() as u32;
            p.log_buf = log.as_mut_ptr() as u64;
            // SAFETY: as above, and `log` is `log_size` writable bytes that
            // outlive the call.
            let _ = unsafe { sys_bpf(BPF_PROG_LOAD, &mut p) };
            let end = log.iter().position(|&b| b == 0).unwrap_or(0);
            let text = String::from_utf8_lossy(&log[..end]);
            let last = text.lines().last().unwrap_or("").trim().to_string();
            Err(io::Error::new(e.kind(), format!("{e}; verifier: {last}")))
        }
    }
}

/// Attaches `prog` to interface `ifindex` with `XDP_FLAGS_*` through a
/// bpf_link; the program detaches when the returned descriptor (and every
/// duplicate of it) is closed.
pub fn attach(prog: BorrowedFd<'_>, ifindex: u32, xdp_flags: u32) -> io::Result<OwnedFd> {
    let mut l = LinkCreate {
        prog_fd: prog.as_raw_fd() as u32,
        target_ifindex: ifindex,
        attach_type: BPF_XDP,
        flags: xdp_flags,
        ..Default::default()
    };
    // SAFETY: `LinkCreate` is this command's attr and holds no addresses.
    Ok(unsafe { sys_bpf(BPF_LINK_CREATE, &mut l) }?.fd())
}

/// Puts socket `xsk_fd` at index `queue` of the XSKMAP.
pub fn map_insert(map: BorrowedFd<'_>, queue: u32, xsk_fd: i32) -> io::Result<()> {
    let key = queue;
    let value = xsk_fd as u32;
    let mut a = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        value: &value as *const u32 as u64,
        ..Default::default()
    };
    // SAFETY: `MapElem` is this command's attr; `key` and `value` point at
    // `u32`s that outlive the call (the map's key and value size).
    unsafe { sys_bpf(BPF_MAP_UPDATE_ELEM, &mut a) }.map(drop)
}

/// `union bpf_attr` for the `*_GET_FD_BY_ID` and `*_GET_NEXT_ID` commands.
#[repr(C)]
#[derive(Default)]
struct ById {
    id: u32,
    next_id: u32,
    open_flags: u32,
}
const _: () = assert!(size_of::<ById>() == 12 && offset_of!(ById, open_flags) == 8);

/// `union bpf_attr` for `BPF_OBJ_GET_INFO_BY_FD`.
#[repr(C)]
#[derive(Default)]
struct InfoByFd {
    bpf_fd: u32,
    info_len: u32,
    info: u64,
}
const _: () = assert!(size_of::<InfoByFd>() == 16 && offset_of!(InfoByFd, info) == 8);

/// The head of `struct bpf_prog_info`, up to its name (the kernel fills
/// only as much as we ask for).
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct ProgInfo {
    prog_type: u32,
    id: u32,
    tag: [u8; 8],
    jited_prog_len: u32,
    xlated_prog_len: u32,
    jited_prog_insns: u64,
    xlated_prog_insns: u64,
    load_time: u64,
    created_by_uid: u32,
    nr_map_ids: u32,
    map_ids: u64,
    name: [u8; 16],
}
const _: () = assert!(size_of::<ProgInfo>() == 80);
const _: () = assert!(offset_of!(ProgInfo, map_ids) == 56 && offset_of!(ProgInfo, name) == 64);
// SAFETY: `u32`, `u64` and byte-array fields only, no padding (size asserted).
unsafe impl Pod for ProgInfo {}

/// The head of `struct bpf_link_info` with its `xdp` member.
#[repr(C)]
#[derive(Clone, Copy, Default)]
struct LinkInfo {
    link_type: u32,
    id: u32,
    prog_id: u32,
    _pad: u32,
    ifindex: u32,
    _rest: [u32; 7],
}
const _: () = assert!(size_of::<LinkInfo>() == 48);
const _: () = assert!(offset_of!(LinkInfo, prog_id) == 8 && offset_of!(LinkInfo, ifindex) == 16);
// SAFETY: `u32` fields only, no padding (size asserted).
unsafe impl Pod for LinkInfo {}

/// `BPF_OBJ_GET_INFO_BY_FD` into `info` (the kernel fills as much of it as
/// it knows and says how much).
///
/// # Safety
///
/// `T` is the head of the info struct of the kind of object `fd` is, laid
/// out as the kernel's, and every address in `info` (`ProgInfo::map_ids`)
/// points at memory valid for what the kernel writes there (`nr_map_ids`
/// `u32`s) during the call.
unsafe fn info<T: Pod>(fd: BorrowedFd<'_>, info: &mut T) -> io::Result<()> {
    let mut a = InfoByFd {
        bpf_fd: fd.as_raw_fd() as u32,
        info_len: size_of::<T>() as u32,
        info: info as *mut T as u64,
    };
    // SAFETY: `InfoByFd` is this command's attr; `info` points at
    // `info_len` writable bytes, exclusively borrowed for the call, and
    // `T: Pod` holds whatever bytes the kernel writes; addresses inside it
    // are the caller's promise.
    unsafe { sys_bpf(BPF_OBJ_GET_INFO_BY_FD, &mut a) }.map(drop)
}

/// Another process's program, joined: our socket goes into its XSKMAP, and
/// our descriptor of its link keeps it attached for as long as we live.
pub struct Joined {
    pub program: Program,
    pub link: OwnedFd,
}

/// Joins program `prog_id` (attached to an interface by another process)
/// if it is zcstack's redirect program; `Ok(None)` if it is someone else's.
pub fn join(prog_id: u32) -> io::Result<Option<Joined>> {
    let mut a = ById {
        id: prog_id,
        ..Default::default()
    };
    // SAFETY: `ById` is this command's attr and holds no addresses.
    let prog = unsafe { sys_bpf(BPF_PROG_GET_FD_BY_ID, &mut a) }?.fd();
    let mut map_id = 0u32;
    let mut p = ProgInfo {
        nr_map_ids: 1,
        map_ids: &mut map_id as *mut u32 as u64,
        ..Default::default()
    };
    // SAFETY: `prog` is a program and `ProgInfo` its info; `map_ids`
    // points at `nr_map_ids` (1) writable `u32`, `map_id`, for the call.
    unsafe { info(prog.as_fd(), &mut p) }?;
    let end = p.name.iter().position(|&b| b == 0).unwrap_or(16);
    if &p.name[..end] != PROG_NAME.as_bytes() || p.nr_map_ids != 1 {
        return Ok(None);
    }
    let mut a = ById {
        id: map_id,
        ..Default::default()
    };
    // SAFETY: `ById` is this command's attr and holds no addresses.
    let map = unsafe { sys_bpf(BPF_MAP_GET_FD_BY_ID, &mut a) }?.fd();
    // The link that attaches it: walk the links (a program has one link).
    let mut next = ById::default();
    loop {
        // SAFETY: `ById` is this command's attr and holds no addresses.
        match unsafe { sys_bpf(BPF_LINK_GET_NEXT_ID, &mut next) } {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                return Err(io::Error::new(
                    io::ErrorKind::NotFound,
                    "the XDP program is attached without a bpf_link",
                ));
            }
            Err(e) => return Err(e),
        }
        let mut a = ById {
            id: next.next_id,
            ..Default::default()
        };
        next.id = next.next_id;
        // SAFETY: `ById` is this command's attr and holds no addresses.
        let Ok(link) = unsafe { sys_bpf(BPF_LINK_GET_FD_BY_ID, &mut a) }.map(OwnedFdOrZero::fd)
        else {
            continue; // gone meanwhile
        };
        let mut l = LinkInfo::default();
        // SAFETY: `link` is a link and `LinkInfo` its info, which holds no
        // addresses.
        if unsafe { info(link.as_fd(), &mut l) }.is_ok()
            && l.link_type == BPF_LINK_TYPE_XDP
            && l.prog_id == prog_id
        {
            return Ok(Some(Joined {
                program: Program { prog, map },
                link,
            }));
        }
    }
}

/// Removes index `queue` from the XSKMAP (packets there go to the kernel again).
pub fn map_remove(map: BorrowedFd<'_>, queue: u32) -> io::Result<()> {
    let key = queue;
    let mut a = MapElem {
        map_fd: map.as_raw_fd() as u32,
        key: &key as *const u32 as u64,
        ..Default::default()
    };
    // SAFETY: `MapElem` is this command's attr; `key` points at a `u32`
    // that outlives the call.
    unsafe { sys_bpf(BPF_MAP_DELETE_ELEM, &mut a) }.map(drop)
}
