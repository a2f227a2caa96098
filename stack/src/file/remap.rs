//! The stack's only `unsafe` code: page-aligned send rings, read-only file
//! mappings, remapping file pages into a ring, and read leases.
//!
//! # The ring invariant
//!
//! smoltcp's sockets live in a `SocketSet<'static>`, so a socket's send ring
//! must be a `&'static mut [u8]`. [`SocketStore`] owns both the set and the
//! [`Region`]s (anonymous mappings) those slices point into, and declares the
//! set *before* the regions: Rust drops fields in declaration order, so every
//! socket is gone before its ring is unmapped. The stack never moves the set
//! out of the store (no `mem::swap`/`replace` on it) and never removes a TCP
//! socket (they are recycled), so a ring outlives every use of its slice.
//!
//! Receive rings are [`Region`]s too, owned the same way.
//!
//! The kernel changes bytes behind those slices in three ways, all only on
//! the polling thread and never while smoltcp runs: `mmap(MAP_FIXED)` of file
//! pages over *free* ring space (inside smoltcp's `send` closure, through the
//! `&mut` slice smoltcp handed out — like `read(2)` into a buffer),
//! anonymous memory mapped back over a ring whose in-flight bytes were saved
//! and are written back unchanged ([`Region::detach`]), and
//! `madvise(MADV_DONTNEED)` over both rings of a socket whose buffers hold no
//! byte it will read again ([`SocketStore::discard_idle`]): the pages go back
//! to the kernel and read as zeros, which nobody can tell from the garbage
//! that was there.
//!
//! # The file invariant
//!
//! A [`FileMap`] (and any ring page mapped from the file) may only be read
//! while the process holds a read lease on the file: a truncation by another
//! process first breaks the lease (signal [`lease_signal`]) and then waits
//! until the lease is released, so the pages stay readable until the stack
//! has moved every in-flight byte to anonymous memory and dropped the map.
//! Without the lease, a read of a page beyond the new end of file is SIGBUS.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::tcp;

/// Page size the remap code assumes (checked against the kernel's once).
pub(crate) const PAGE: usize = 4096;

/// `F_SETSIG` from linux/fcntl.h (the libc crate exports it only for some targets).
const F_SETSIG: libc::c_int = 10;

fn last_err(what: &str) -> io::Error {
    let e = io::Error::last_os_error();
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Whether the kernel's page size is [`PAGE`] (remap needs it; copy does not).
pub(crate) fn page_size_ok() -> bool {
    // SAFETY: sysconf only reads a configuration value.
    unsafe { libc::sysconf(libc::_SC_PAGESIZE) == PAGE as libc::c_long }
}

/// A private anonymous mapping, page-aligned, unmapped on drop.
pub(crate) struct Region {
    base: NonNull<u8>,
    len: usize,
}

// SAFETY: a Region is plain memory owned by one value; nothing in it is tied
// to the creating thread.
unsafe impl Send for Region {}

impl Region {
    /// Maps `len` bytes (a non-zero multiple of [`PAGE`]) of zeroed memory.
    pub fn new(len: usize) -> io::Result<Region> {
        assert!(len > 0 && len.is_multiple_of(PAGE), "ring of {len} bytes");
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
                "mapping a {len}-byte TCP send ring (raise vm.max_map_count or lower the connection count)"
            )));
        }
        let base =
            NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap gave NULL"))?;
        Ok(Region { base, len })
    }

    /// Address of the first byte.
    pub fn base(&self) -> usize {
        self.base.as_ptr() as usize
    }

    /// Bytes mapped.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Maps the file's pages `[file_off, file_off + dst.len())` over `dst`
    /// (private copy-on-write, readable and writable). `dst` must lie inside
    /// this region and be whole pages, no page may lie wholly beyond the end
    /// of the file (the last may be partial: its tail reads as zeros), and
    /// the file must stay leased while the pages are mapped (module doc). On error the old contents
    /// may be gone: the caller copies the bytes instead.
    pub fn map_file(&self, dst: &mut [u8], file: &File, file_off: u64) -> io::Result<()> {
        let p = dst.as_mut_ptr() as usize;
        assert!(
            p >= self.base() && p + dst.len() <= self.base() + self.len,
            "remap target outside the ring"
        );
        assert!(p.is_multiple_of(PAGE) && dst.len().is_multiple_of(PAGE));
        assert!(file_off.is_multiple_of(PAGE as u64));
        // SAFETY: `dst` is an exclusive borrow of whole pages inside this
        // region, so no other Rust value lives in them; MAP_FIXED replaces
        // exactly those pages with a private mapping of the file, which is a
        // write of new bytes through `dst` as far as the program can tell.
        // The caller keeps the file leased while the pages are mapped.
        let r = unsafe {
            libc::mmap(
                dst.as_mut_ptr().cast(),
                dst.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_FIXED,
                file.as_raw_fd(),
                file_off as libc::off_t,
            )
        };
        if r == libc::MAP_FAILED {
            let e = last_err("remapping file pages into a send ring");
            // Whatever is there now is not file data we can trust: put zero
            // pages back so the copy fallback writes into plain memory.
            let _ = self.anon(p - self.base(), dst.len());
            return Err(e);
        }
        // Fill the page tables now, in one call, instead of one fault per
        // 64 KiB (fault-around) when smoltcp first reads the pages: measured
        // 10-15% faster for one connection at MTU 9000, neutral elsewhere.
        // Best effort: kernels before 5.14 say EINVAL and fault as before.
        // SAFETY: `r` is the range just mapped; MADV_POPULATE_READ only
        // reads it in (no COW break), and every page lies within the file.
        let _ = unsafe { libc::madvise(r, dst.len(), libc::MADV_POPULATE_READ) };
        Ok(())
    }

    /// Maps fresh anonymous memory over `[off, off + len)`, dropping any file
    /// pages there (one VMA again, no reference to any file).
    fn anon(&self, off: usize, len: usize) -> io::Result<()> {
        assert!(off.is_multiple_of(PAGE) && len.is_multiple_of(PAGE) && off + len <= self.len);
        // SAFETY: the range lies inside this region (asserted); callers only
        // reset bytes that hold no data anyone reads (free ring space) or
        // whose contents they restore right after (`detach`).
        let r = unsafe {
            libc::mmap(
                self.base.as_ptr().add(off).cast(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(last_err("mapping anonymous memory over a send ring"));
        }
        Ok(())
    }

    /// Gives the pages of `[0, len)` (rounded up to whole pages) back to the
    /// kernel; they read as zeros afterwards and cost nothing until written.
    fn discard(&self, len: usize) -> io::Result<()> {
        let len = len.next_multiple_of(PAGE).min(self.len);
        if len == 0 {
            return Ok(());
        }
        // SAFETY: the range lies inside this region. The only caller,
        // `SocketStore::discard_idle`, checked that the socket using the
        // region reads none of these bytes before writing them again (module
        // doc); MADV_DONTNEED on private anonymous memory (or private file
        // pages of a ring) only replaces contents, never unmaps.
        let r = unsafe { libc::madvise(self.base.as_ptr().cast(), len, libc::MADV_DONTNEED) };
        if r != 0 {
            return Err(last_err("giving an idle ring's memory back (madvise)"));
        }
        Ok(())
    }

    /// Replaces the whole region by anonymous memory, keeping the bytes of
    /// `keep` (ring offset, length) ranges: the in-flight part of a ring
    /// survives, every file page is gone. Used when the ring is idle (no
    /// ranges) and when a file's lease breaks.
    pub fn detach(&self, keep: &[(usize, usize)]) -> io::Result<()> {
        let total: usize = keep.iter().map(|r| r.1).sum();
        let mut saved = Vec::with_capacity(total);
        for &(off, len) in keep {
            assert!(off + len <= self.len);
            // SAFETY: inside the region; the bytes are initialised (mapped
            // memory always is) and readable: file pages in the ring belong
            // to files whose lease we still hold.
            let src = unsafe { std::slice::from_raw_parts(self.base.as_ptr().add(off), len) };
            saved.extend_from_slice(src);
        }
        self.anon(0, self.len)?;
        let mut at = 0;
        for &(off, len) in keep {
            // SAFETY: inside the region (checked above), now anonymous and
            // writable; `saved` does not overlap it.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    saved.as_ptr().add(at),
                    self.base.as_ptr().add(off),
                    len,
                )
            };
            at += len;
        }
        Ok(())
    }
}

impl Drop for Region {
    fn drop(&mut self) {
        // SAFETY: we mapped exactly this range and nothing uses it any more
        // (see the ring invariant in the module doc).
        if unsafe { libc::munmap(self.base.as_ptr().cast(), self.len) } != 0 {
            eprintln!(
                "zcstack: munmap of a send ring failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}

/// The stack's sockets and the rings they borrow. See the module doc for
/// why the field order matters.
pub(crate) struct SocketStore {
    /// Must be declared (and so dropped) before `rings` and `rx_rings`.
    set: SocketSet<'static>,
    /// TCP send rings, by socket handle order of creation. Never shrinks.
    rings: Vec<Region>,
    /// TCP receive rings, same index as `rings`.
    rx_rings: Vec<Region>,
}

impl SocketStore {
    pub fn new() -> SocketStore {
        SocketStore {
            set: SocketSet::new(Vec::new()),
            rings: Vec::new(),
            rx_rings: Vec::new(),
        }
    }

    /// Adds a TCP socket with an `rx`-byte receive ring and a send ring of
    /// `tx` bytes (a multiple of [`PAGE`]), each in its own mapping (pages
    /// cost memory only once written). Returns the handle and the rings'
    /// index for [`ring`](Self::ring).
    pub fn add_tcp(&mut self, rx: usize, tx: usize) -> io::Result<(SocketHandle, usize)> {
        let region = Region::new(tx)?;
        let rx_region = Region::new(rx.next_multiple_of(PAGE))?;
        // SAFETY: each slice lies inside its region (`rx` bytes of a mapping
        // of at least `rx`), which `self.rings` / `self.rx_rings` keep
        // mapped until after `self.set` (and with it the socket) is dropped;
        // neither region is used through any other `&mut`.
        let (ring, rx_ring): (&'static mut [u8], &'static mut [u8]) = unsafe {
            (
                std::slice::from_raw_parts_mut(region.base.as_ptr(), region.len),
                std::slice::from_raw_parts_mut(rx_region.base.as_ptr(), rx),
            )
        };
        let sock = tcp::Socket::new(
            tcp::SocketBuffer::new(rx_ring),
            tcp::SocketBuffer::new(ring),
        );
        self.rings.push(region);
        self.rx_rings.push(rx_region);
        Ok((self.set.add(sock), self.rings.len() - 1))
    }

    /// Gives the memory of a TCP socket's rings (and of its SACK
    /// scoreboard, see smoltcp's `release_idle_memory`) back: the
    /// whole receive ring and the first `tx_touched` bytes of the send ring
    /// (the part written since the last discard; the rest holds no page).
    /// Only if no byte in them will be read again: the socket's buffers are
    /// idle (nothing unsent, unacknowledged, unread or out of order), or it
    /// is CLOSED with nothing left to read (unsent bytes of a closed
    /// connection are never sent, and smoltcp clears both buffers before it
    /// uses the socket again). A connection closed in LAST-ACK keeps bytes
    /// it received and the application has not read yet: those stay.
    /// Returns whether the memory was given back.
    pub fn discard_idle(&mut self, h: SocketHandle, ring: usize, tx_touched: usize) -> bool {
        let sock = self.set.get::<tcp::Socket>(h);
        let closed_and_read = sock.state() == tcp::State::Closed && sock.recv_queue() == 0;
        if !(sock.buffers_idle() || closed_and_read) {
            return false;
        }
        // The SACK scoreboard's heap memory too (kept after loss recovery).
        self.set.get_mut::<tcp::Socket>(h).release_idle_memory();
        // Both calls only fail for a range outside the process's mappings,
        // which these are not; if one did, the pages simply stay.
        let rx = self.rx_rings[ring].discard(self.rx_rings[ring].len);
        let tx = self.rings[ring].discard(tx_touched);
        rx.is_ok() && tx.is_ok()
    }

    /// Send ring `i`.
    pub fn ring(&self, i: usize) -> &Region {
        &self.rings[i]
    }

    /// The socket set and the rings, borrowed apart.
    pub fn parts(&mut self) -> (&mut SocketSet<'static>, &[Region]) {
        (&mut self.set, &self.rings)
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
        let p = std::env::temp_dir().join(format!("zcstack-remap-{}-{name}", std::process::id()));
        let mut f = File::create(&p).unwrap();
        f.write_all(data).unwrap();
        p
    }

    #[test]
    fn file_pages_appear_in_the_ring_and_detach_keeps_bytes() {
        assert!(page_size_ok());
        let data: Vec<u8> = (0..4 * PAGE).map(|i| (i * 7 % 251) as u8).collect();
        let path = temp_file("map", &data);
        let file = File::open(&path).unwrap();
        let ring = Region::new(8 * PAGE).unwrap();
        // SAFETY (test): we own the region and nothing else uses it.
        let s = unsafe { std::slice::from_raw_parts_mut(ring.base.as_ptr(), ring.len) };
        s[..PAGE].fill(9);
        ring.map_file(&mut s[2 * PAGE..5 * PAGE], &file, PAGE as u64)
            .unwrap();
        assert_eq!(&s[2 * PAGE..5 * PAGE], &data[PAGE..4 * PAGE]);
        assert_eq!(s[0], 9);
        ring.detach(&[(3 * PAGE + 5, 100)]).unwrap();
        assert_eq!(
            &s[3 * PAGE + 5..3 * PAGE + 105],
            &data[2 * PAGE + 5..2 * PAGE + 105]
        );
        assert_eq!(
            s[0], 0,
            "outside the kept range the ring is fresh zero pages"
        );
        assert_eq!(s[2 * PAGE], 0);
        std::fs::remove_file(path).unwrap();
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
