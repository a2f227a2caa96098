//! The stack's only `unsafe` code: read-only file mappings, read leases,
//! and giving an idle socket's ring pages back to the kernel.
//!
//! # Rings
//!
//! smoltcp's sockets live in a `SocketSet<'static>`, so a socket's rings
//! are `&'static mut [u8]` slices of [`Region`]s (private anonymous
//! mappings in whole [`BLOCK`]s, block-aligned; a page costs memory only
//! once written).
//! [`SocketStore`] owns the set and the regions and declares the set
//! *before* the regions: Rust drops fields in declaration order, so every
//! socket is gone before its rings are unmapped. The stack never moves the
//! set out of the store and never removes a TCP socket (they are
//! recycled), so a ring outlives every use of its slice.
//!
//! That is why the whole socket set lives here, in the unsafe module: the
//! set holds `'static` borrows of the ring mappings, and only a type that
//! owns both can promise the drop order. Everything else in the stack
//! reaches the sockets through [`SocketStore`]'s `Deref` to the set.
//!
//! The store keeps a region only to unmap it: nothing reads or writes a
//! ring's bytes except through the slice smoltcp owns. Even giving an idle
//! socket's pages back (`madvise(MADV_DONTNEED)`, [`discard_ring`]) goes
//! through the `&mut` slices smoltcp hands out while the socket's buffers
//! are idle (`Socket::idle_buffer_storage`, ZCSTACK PATCH 27): the socket
//! writes every byte of them before reading it again, and the call is, as
//! far as the program can tell, a write of zeros through that `&mut`.
//!
//! # The file invariant
//!
//! A [`FileMap`] may only be read while the process holds a read lease on
//! the file: a truncation by another process first breaks the lease
//! (signal [`lease_signal`]) and then waits until the lease is released,
//! so the pages stay readable until the stack has copied every byte it
//! still sends by reference and dropped the map. Without the lease, a read
//! of a page beyond the new end of file is SIGBUS.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

/// The page size (what `madvise` works in; a kernel with larger pages
/// refuses the unaligned calls, and the ring pages simply stay).
pub(crate) const PAGE: usize = 4096;

/// `F_SETSIG` from linux/fcntl.h (the libc crate exports it only for some targets).
const F_SETSIG: libc::c_int = 10;

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Rings are mapped in whole blocks of this size, each ring starting on a
/// block boundary: the span one page table maps (x86-64, and the other
/// 64-bit targets with 4 KiB pages). Giving a whole block back lets a
/// kernel that frees empty page tables (`CONFIG_PT_RECLAIM`, Linux 6.14
/// and later) free that table too: 4 KiB an idle connection would
/// otherwise keep per ring it once touched. It costs address space only
/// (a 256 KiB ring reserves 2 MiB).
pub(crate) const BLOCK: usize = 2 << 20;

/// Gives the first `len` bytes of `ring`, rounded up to whole blocks, back
/// to the kernel: they read as zeros afterwards and cost no memory (nor a
/// page table, where the kernel frees empty ones) until written. `ring` is
/// the slice [`Region::slice`] made, so it starts its region, and the
/// region's blocks past the ring's end are padding nothing refers to. The
/// caller holds `ring` exclusively and no longer needs its contents.
pub(crate) fn discard_ring(ring: &mut [u8], len: usize) -> io::Result<()> {
    if len == 0 {
        return Ok(());
    }
    assert_eq!(
        ring.as_ptr() as usize % BLOCK,
        0,
        "a ring starts its region"
    );
    let len = len.min(ring.len()).next_multiple_of(BLOCK);
    // SAFETY: the `len` bytes from `ring`'s start lie inside its region,
    // which is mapped in whole blocks: those inside `ring` are exclusively
    // borrowed here, the rest are the region's padding, which no reference
    // covers. MADV_DONTNEED replaces private anonymous pages by zeros and
    // never unmaps them, which to this program is a write of zeros.
    let r = unsafe { libc::madvise(ring.as_mut_ptr().cast(), len, libc::MADV_DONTNEED) };
    if r != 0 {
        return Err(last_err("giving an idle ring's memory back (madvise)"));
    }
    Ok(())
}

/// Maps `len` bytes of zeroed private anonymous memory where the kernel
/// likes.
fn map_anonymous(len: usize) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh anonymous mapping at an address the kernel picks
    // aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(last_err(&format!(
            "mapping a {len}-byte TCP ring (raise vm.max_map_count or lower the connection count)"
        )));
    }
    Ok(p)
}

/// A private anonymous mapping of whole [`BLOCK`]s, block-aligned,
/// unmapped on drop. Its bytes are reached only through the one slice
/// [`SocketStore::add_tcp`] makes.
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is plain memory owned by one value; nothing in it is tied
// to the creating thread.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes (rounded up to whole blocks) of zeroed memory,
    /// starting on a block boundary.
    fn new(len: usize) -> io::Result<Region> {
        let len = len.max(1).next_multiple_of(BLOCK);
        // Mapped top-down next to the previous ring, a ring of whole blocks
        // is usually aligned already, and the kernel merges it with its
        // neighbours into one mapping (so 10 000 connections stay far
        // below vm.max_map_count). Otherwise: one block more, so that a
        // block boundary lies in the first block, and the parts before it
        // and after the region are unmapped at once.
        let mut p = map_anonymous(len)?;
        if !(p as usize).is_multiple_of(BLOCK) {
            // SAFETY: the mapping just made, which nothing refers to.
            unsafe { libc::munmap(p, len) };
            p = map_anonymous(len + BLOCK)?;
            let start = (p as usize).next_multiple_of(BLOCK);
            let head = start - p as usize;
            for (at, n) in [(p as usize, head), (start + len, BLOCK - head)] {
                if n > 0 {
                    // SAFETY: a part of the mapping just made, outside the
                    // `len` bytes from `start` the region keeps; nothing
                    // refers to it. A failure only leaves address space
                    // mapped.
                    unsafe { libc::munmap(at as *mut libc::c_void, n) };
                }
            }
            p = start as *mut libc::c_void;
        }
        // Pages of 4 KiB, as the memory accounting counts them: with
        // transparent huge pages set to `always`, the first byte written
        // into an aligned block would otherwise take 2 MiB. A failure (a
        // kernel without THP) changes nothing.
        // SAFETY: advice on the region just mapped; it changes no byte.
        unsafe { libc::madvise(p, len, libc::MADV_NOHUGEPAGE) };
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Region { base, len })
    }

    /// The whole region as a slice that lives as long as the caller keeps
    /// the region mapped.
    ///
    /// # Safety
    ///
    /// At most once per region, and the region must outlive every use of
    /// the slice (see the module doc).
    unsafe fn slice(&self, len: usize) -> &'static mut [u8] {
        assert!(len <= self.len);
        // SAFETY: `len` bytes inside this mapping, readable and writable;
        // the caller makes this the only slice and keeps the region alive.
        unsafe { std::slice::from_raw_parts_mut(self.base.as_ptr(), len) }
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nothing uses it any more
        // (the sockets holding its slice were dropped first, module doc).
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            eprintln!(
                "zcstack: munmap of a TCP ring failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The stack's sockets and the rings they borrow. See the module doc for
/// why the field order matters.
pub(crate) struct SocketStore {
    /// Must be declared (and so dropped) before `rings`.
    set: SocketSet<'static>,
    /// Each TCP socket's receive and send ring, by order of creation.
    /// Never shrinks; only unmapped when the store goes.
    rings: Vec<(Region, Region)>,
}

impl SocketStore {
    pub fn new() -> SocketStore {
        SocketStore {
            set: SocketSet::new(Vec::new()),
            rings: Vec::new(),
        }
    }

    /// Adds a TCP socket with an `rx`-byte receive ring and a `tx`-byte
    /// send ring, each in a mapping of its own (pages cost memory only
    /// once written). Returns the handle and the rings' index for
    /// [`ring_base`](Self::ring_base).
    pub fn add_tcp(&mut self, rx: usize, tx: usize) -> io::Result<(SocketHandle, usize)> {
        let rx_region = Region::new(rx)?;
        let tx_region = Region::new(tx)?;
        // SAFETY: one slice per region, made here only; `self.rings` keeps
        // both mapped until after `self.set`, and with it the socket, is
        // dropped (field order), and nothing else touches their bytes.
        let (rx_ring, tx_ring) = unsafe { (rx_region.slice(rx), tx_region.slice(tx)) };
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(rx_ring),
            tcp::SocketBuffer::new(tx_ring),
        );
        self.rings.push((rx_region, tx_region));
        Ok((self.set.add(sock), self.rings.len() - 1))
    }

    /// Gives the memory of a TCP socket's rings (and of its SACK
    /// scoreboard and reassembly contigs, see smoltcp's
    /// `release_idle_memory`) back: the whole
    /// receive ring and the first `tx_touched` bytes of the send ring (the
    /// part written since the last discard; the rest holds no page), both
    /// in whole blocks ([`discard_ring`]). Only
    /// if no byte in them will be read again: the socket's buffers are idle
    /// (nothing unsent, unacknowledged, unread or out of order), or it is
    /// CLOSED with nothing left to read (its unsent bytes are dropped: a
    /// closed connection never sends them). A connection closed in LAST-ACK
    /// keeps bytes it received and the application has not read yet: those
    /// stay. Returns whether the memory was given back.
    pub fn discard_idle(&mut self, h: SocketHandle, tx_touched: usize) -> bool {
        let sock = self.set.get_mut::<tcp::Socket>(h);
        if sock.state() == tcp::State::Closed && sock.recv_queue() == 0 {
            sock.release_send_buffer_if_closed();
        }
        // The SACK scoreboard's and the reassembly contigs' heap memory too
        // (kept after loss recovery and out-of-order data).
        sock.release_idle_memory();
        let Some((rx, tx)) = sock.idle_buffer_storage() else {
            return false;
        };
        // Both calls only fail for a range outside the process's mappings,
        // which these are not; if one did, the pages simply stay.
        let rx_len = rx.len();
        let rx = discard_ring(rx, rx_len);
        let tx = discard_ring(tx, tx_touched);
        rx.is_ok() && tx.is_ok()
    }

    /// Where send ring `i` starts (an address, for the memory accounting's
    /// offsets; never dereferenced).
    pub fn ring_base(&self, i: usize) -> usize {
        self.rings[i].1.base.as_ptr() as usize
    }
}

impl std::ops::Deref for SocketStore {
    type Target = SocketSet<'static>;
    fn deref(&self) -> &Self::Target {
        &self.set
    }
}

impl std::ops::DerefMut for SocketStore {
    /// Never `mem::swap`/`replace` through this (see the module doc).
    fn deref_mut(&mut self) -> &mut Self::Target {
        &mut self.set
    }
}

/// A whole regular file mapped read-only and shared. Only created while the
/// file is leased, and dropped before the lease is released.
pub(crate) struct FileMap {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: read-only shared memory; reading it from any thread is fine.
unsafe impl Send for FileMap {}
// SAFETY: as above, it is never written.
unsafe impl Sync for FileMap {}

impl FileMap {
    /// Maps `len` (> 0) bytes of `file` read-only.
    pub fn new(file: &File, len: usize) -> io::Result<FileMap> {
        assert!(len > 0);
        // SAFETY: a fresh read-only shared mapping at an address the kernel
        // picks aliases nothing Rust owns.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err("mapping the file"));
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(FileMap { base, len })
    }

    /// The file's bytes. Readable because the owner holds the lease (see the
    /// module doc).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: the mapping covers `len` bytes and lives as long as `self`;
        // the file cannot shrink while the lease is held.
        unsafe { std::slice::from_raw_parts(self.base.as_ptr(), self.len) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range; `bytes()` borrows end with `self`.
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            eprintln!(
                "zcstack: munmap of a file mapping failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// Lease-break signals received by this process (any file, any stack).
static LEASE_SIGNALS: AtomicU64 = AtomicU64::new(0);
static INSTALL: Once = Once::new();
static INSTALL_ERR: AtomicU64 = AtomicU64::new(0);

/// The realtime signal the kernel sends when one of our leases breaks.
pub fn lease_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// How many lease-break signals arrived so far; a poll loop compares it
/// with the value it saw last (one atomic load per poll).
pub(crate) fn lease_signals() -> u64 {
    LEASE_SIGNALS.load(Ordering::Acquire)
}

extern "C" fn on_lease_signal(_sig: libc::c_int) {
    // Async-signal-safe: one atomic add, nothing else.
    LEASE_SIGNALS.fetch_add(1, Ordering::AcqRel);
}

/// Installs the lease-break handler once per process, also for SIGIO (the
/// kernel falls back to SIGIO when the realtime queue overflows; its default
/// action would kill the process).
fn install_handler() -> io::Result<()> {
    INSTALL.call_once(|| {
        for sig in [lease_signal(), libc::SIGIO] {
            // SAFETY: zeroed sigaction is a valid "no flags, empty mask" value.
            let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
            sa.sa_sigaction = on_lease_signal as extern "C" fn(libc::c_int) as usize;
            sa.sa_flags = libc::SA_RESTART;
            // SAFETY: `sa` is initialised and the handler only does an atomic add.
            let r = unsafe {
                libc::sigemptyset(&mut sa.sa_mask);
                libc::sigaction(sig, &sa, std::ptr::null_mut())
            };
            if r != 0 {
                INSTALL_ERR.store(
                    io::Error::last_os_error().raw_os_error().unwrap_or(1) as u64,
                    Ordering::Relaxed,
                );
            }
        }
    });
    match INSTALL_ERR.load(Ordering::Relaxed) {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e as i32)),
    }
}

/// Takes a read lease on `file` (opened read-only) that signals
/// [`lease_signal`] when another process wants to write or truncate it.
/// EAGAIN: someone has it open for writing; EACCES: not the owner and no CAP_LEASE.
pub(crate) fn take_lease(file: &File) -> io::Result<()> {
    install_handler()?;
    let fd = file.as_raw_fd();
    // SAFETY: plain fcntl on an fd we own.
    if unsafe { libc::fcntl(fd, F_SETSIG, lease_signal()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Whether the lease on `file` is being broken (F_GETLEASE reports the type
/// the lease is being downgraded to, F_UNLCK for a read lease).
pub(crate) fn lease_breaking(file: &File) -> bool {
    // SAFETY: plain fcntl on an fd we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLEASE) != libc::F_RDLCK }
}

/// Gives the lease up, letting the writer or truncator go on.
pub(crate) fn release_lease(file: &File) {
    // SAFETY: plain fcntl on an fd we own.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLEASE, libc::F_UNLCK) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn temp_file(name: &str, data: &[u8]) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("zcstack-map-{}-{name}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(data).unwrap();
        p
    }

    /// A ring starts on a block boundary, and giving back its first bytes
    /// gives back the whole block: every byte of the ring in it reads as
    /// zero, bytes in the next block stay.
    #[test]
    fn discard_gives_back_whole_blocks_from_the_ring_start() {
        let len = BLOCK + 3 * PAGE;
        let region = Region::new(len).unwrap();
        assert_eq!(region.base.as_ptr() as usize % BLOCK, 0);
        assert_eq!(region.len, 2 * BLOCK);
        // SAFETY: the one slice of this region, dropped before it.
        let ring = unsafe { region.slice(len) };
        ring.fill(7);
        discard_ring(ring, 100).unwrap();
        assert!(ring[..BLOCK].iter().all(|&b| b == 0), "the first block");
        assert!(
            ring[BLOCK..].iter().all(|&b| b == 7),
            "the next block stays"
        );
        discard_ring(ring, 0).unwrap();
        assert_eq!(ring[BLOCK], 7, "nothing touched, nothing given back");
        discard_ring(ring, len).unwrap();
        assert!(ring.iter().all(|&b| b == 0), "the whole ring");
    }

    #[test]
    fn lease_is_refused_while_the_file_is_open_for_writing() {
        let path = temp_file("lease", b"hello");
        let w = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        let r = File::open(&path).unwrap();
        let e = take_lease(&r).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EAGAIN));
        drop(w);
        let r = File::open(&path).unwrap();
        take_lease(&r).unwrap();
        assert!(!lease_breaking(&r));
        release_lease(&r);
        std::fs::remove_file(path).unwrap();
    }
}
