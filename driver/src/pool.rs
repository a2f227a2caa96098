//! The fbufs-like buffer pool: one pre-mapped region cut into fixed frames.
//!
//! * One mapping for the life of the pool: a `memfd` (optionally on 2 MiB
//!   hugepages) mapped `MAP_SHARED | MAP_POPULATE`, so the same memory can later
//!   be registered as an AF_XDP UMEM or shared with another process.
//! * Frames move between the driver, the stack and the application as owned
//!   [`Frame`] handles. A handle is the only way to reach a frame's bytes and it
//!   gives the frame back to the pool when dropped, so a frame can never be
//!   used twice or leaked by an early return.
//! * The free list is a lock-free bounded queue of frame *indices*
//!   (crossbeam's `ArrayQueue`), fronted by a small per-thread cache so the
//!   common alloc/free touches no shared cache line. Caches refill and spill in
//!   batches of [`CACHE_BATCH`].
//! * Exhaustion is not an error path that can stall anything: `alloc` returns
//!   `None` and counts the failure; the caller drops the packet.
//!
//! Invariant (what makes the `unsafe` below sound): every frame index is at any
//! time in exactly one place — the shared free queue, one thread's cache, or
//! one live `Frame`. Only the `Frame` holding an index touches that frame's
//! bytes.

use std::cell::RefCell;
use std::fmt;
use std::io;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};

use crossbeam_queue::ArrayQueue;

#[cfg(not(miri))]
use backing::Backing;
#[cfg(miri)]
use heap::Backing;

/// Frames a thread cache takes from (or gives back to) the shared queue at once.
pub const CACHE_BATCH: usize = 32;
/// A thread cache holding more than this spills [`CACHE_BATCH`] frames back.
const CACHE_MAX: usize = 2 * CACHE_BATCH;

/// Why a pool could not be created.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// The configuration is inconsistent; the message says which value to change.
    #[error("invalid pool configuration: {0}")]
    Config(String),
    /// Hugepages were asked for but the kernel has none reserved.
    #[error(
        "no hugepages available for a {bytes}-byte pool: reserve some with \
         `echo N > /proc/sys/vm/nr_hugepages` (2 MiB each) or build the pool without hugepages"
    )]
    NoHugepages {
        /// Size of the region that could not be mapped.
        bytes: usize,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Creating or mapping the shared memory failed.
    #[error("cannot create or map the {bytes}-byte buffer pool")]
    Map {
        /// Size of the region that could not be mapped.
        bytes: usize,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}

/// Validated pool configuration; build one with [`PoolConfig::new`] and the setters.
#[derive(Clone, Debug)]
pub struct PoolConfig {
    frames: u32,
    frame_size: u32,
    headroom: u32,
    hugepages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            frames: 4096,
            frame_size: 2048,
            headroom: 128,
            hugepages: false,
        }
    }
}

impl PoolConfig {
    /// 4096 frames of 2 KiB with 128 bytes of headroom, no hugepages.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of frames.
    pub fn frames(mut self, n: u32) -> Self {
        self.frames = n;
        self
    }
    /// Size of each frame in bytes: a power of two from 2048 to 131072 (a
    /// frame holds one whole Ethernet frame, so MTU 65535 needs 128 KiB).
    pub fn frame_size(mut self, bytes: u32) -> Self {
        self.frame_size = bytes;
        self
    }
    /// Bytes kept free in front of received data, for headers pushed later.
    pub fn headroom(mut self, bytes: u32) -> Self {
        self.headroom = bytes;
        self
    }
    /// Back the pool with 2 MiB hugepages (they must be reserved beforehand).
    pub fn hugepages(mut self, on: bool) -> Self {
        self.hugepages = on;
        self
    }

    fn validate(&self) -> Result<(), PoolError> {
        if !self.frame_size.is_power_of_two() || !(2048..=131072).contains(&self.frame_size) {
            return Err(PoolError::Config(format!(
                "frame size {} must be a power of two from 2048 to 131072",
                self.frame_size
            )));
        }
        if self.headroom >= self.frame_size / 2 {
            return Err(PoolError::Config(format!(
                "headroom {} must be less than half the frame size {}",
                self.headroom, self.frame_size
            )));
        }
        if self.frames == 0 || self.frames > (1 << 24) {
            return Err(PoolError::Config(format!(
                "frame count {} must be between 1 and {}",
                self.frames,
                1 << 24
            )));
        }
        Ok(())
    }

    /// Creates the pool: maps and pre-faults the whole region.
    pub fn build(self) -> Result<Pool, PoolError> {
        self.validate()?;
        Pool::new(self)
    }
}

/// A snapshot of a pool's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Frames in the pool.
    pub capacity: usize,
    /// Frames free (in the shared queue or a thread cache).
    pub free: usize,
    /// Frames held by someone: `capacity - free`.
    pub in_use: usize,
    /// Of `in_use`, frames lent to the kernel (AF_XDP rings) and not yet back.
    pub in_kernel: usize,
    /// Highest `in_use` seen, sampled whenever a thread cache refills (so it
    /// may read high by up to one cache's worth of frames per thread).
    pub high_water: usize,
    /// `alloc` calls that found the pool empty.
    pub alloc_failures: u64,
}

impl fmt::Display for PoolStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "pool {}/{} in use (high {}, in kernel {}, alloc failures {})",
            self.in_use, self.capacity, self.high_water, self.in_kernel, self.alloc_failures
        )
    }
}

/// State shared by every handle of one pool.
struct Shared {
    /// Distinguishes pools in the thread caches (a dead pool's address may be reused).
    id: u64,
    /// The memory (the memfd mapping).
    map: Backing,
    base: *mut u8,
    frame_size: u32,
    frame_shift: u32,
    headroom: u32,
    frames: u32,
    free: ArrayQueue<u32>,
    /// One counter per thread cache of this pool: how many frames it holds.
    /// Written with plain relaxed stores by its owning thread only.
    cache_counts: Mutex<Vec<Arc<AtomicU32>>>,
    in_kernel: AtomicUsize,
    high_water: AtomicUsize,
    alloc_failures: AtomicU64,
}

// SAFETY: `base` points into `map`, which lives as long as `Shared`; all
// access to frame bytes goes through `Frame`, which holds the only index to
// its frame (see the module invariant), so sharing `Shared` across threads
// hands no two threads the same bytes.
unsafe impl Send for Shared {}
// SAFETY: as above; every other field is `Sync` on its own.
unsafe impl Sync for Shared {}

static NEXT_POOL_ID: AtomicU64 = AtomicU64::new(1);

/// A handle to a buffer pool. Cloning is cheap; the mapping lives until the
/// last handle and the last [`Frame`] are gone.
#[derive(Clone)]
pub struct Pool {
    shared: Arc<Shared>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pool")
            .field("frames", &self.shared.frames)
            .field("frame_size", &self.shared.frame_size)
            .field("headroom", &self.shared.headroom)
            .finish()
    }
}

impl Pool {
    fn new(cfg: PoolConfig) -> Result<Pool, PoolError> {
        let mut bytes = cfg.frames as usize * cfg.frame_size as usize;
        if cfg.hugepages {
            bytes = bytes.next_multiple_of(2 << 20);
        }
        let mut map = Backing::new(bytes, cfg.hugepages)?;
        let free = ArrayQueue::new(cfg.frames as usize);
        for i in 0..cfg.frames {
            free.push(i).expect("queue sized for every frame");
        }
        let base = map.as_mut_ptr();
        Ok(Pool {
            shared: Arc::new(Shared {
                id: NEXT_POOL_ID.fetch_add(1, Ordering::Relaxed),
                base,
                map,
                frame_size: cfg.frame_size,
                frame_shift: cfg.frame_size.trailing_zeros(),
                headroom: cfg.headroom,
                frames: cfg.frames,
                free,
                cache_counts: Mutex::new(Vec::new()),
                in_kernel: AtomicUsize::new(0),
                high_water: AtomicUsize::new(0),
                alloc_failures: AtomicU64::new(0),
            }),
        })
    }

    /// Takes one frame, with its data empty and starting after the headroom.
    /// `None` (counted in [`PoolStats::alloc_failures`]) when the pool is empty.
    #[inline]
    pub fn alloc(&self) -> Option<Frame> {
        let idx = with_cache(&self.shared, |c| c.pop(&self.shared))
            .unwrap_or_else(|| self.shared.free.pop());
        match idx {
            Some(idx) => Some(Frame::new(self.shared.clone(), idx)),
            None => {
                self.shared.alloc_failures.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Appends up to `n` frames to `out`; returns how many it got. Fewer than
    /// `n` means the pool ran dry (counted once as an allocation failure).
    pub fn alloc_burst(&self, n: usize, out: &mut Vec<Frame>) -> usize {
        out.reserve(n);
        let got = with_cache(&self.shared, |c| {
            let mut got = 0;
            while got < n {
                match c.pop(&self.shared) {
                    Some(idx) => out.push(Frame::new(self.shared.clone(), idx)),
                    None => break,
                }
                got += 1;
            }
            got
        });
        let mut got = got.unwrap_or(0);
        while got < n {
            match self.shared.free.pop() {
                Some(idx) => out.push(Frame::new(self.shared.clone(), idx)),
                None => break,
            }
            got += 1;
        }
        if got < n {
            self.shared.alloc_failures.fetch_add(1, Ordering::Relaxed);
        }
        got
    }

    /// Gives back every frame in `frames` (of any pool), leaving it empty.
    pub fn free_burst(frames: &mut Vec<Frame>) {
        frames.clear();
    }

    /// Current counters.
    pub fn stats(&self) -> PoolStats {
        let s = &self.shared;
        let cached: usize = s
            .cache_counts
            .lock()
            .map(|v| v.iter().map(|c| c.load(Ordering::Relaxed) as usize).sum())
            .unwrap_or(0);
        let free = (s.free.len() + cached).min(s.frames as usize);
        let in_use = s.frames as usize - free;
        PoolStats {
            capacity: s.frames as usize,
            free,
            in_use,
            in_kernel: s.in_kernel.load(Ordering::Relaxed),
            high_water: s.high_water.load(Ordering::Relaxed).max(in_use),
            alloc_failures: s.alloc_failures.load(Ordering::Relaxed),
        }
    }

    /// Number of frames.
    pub fn capacity(&self) -> usize {
        self.shared.frames as usize
    }
    /// Bytes per frame.
    pub fn frame_size(&self) -> usize {
        self.shared.frame_size as usize
    }
    /// Headroom a fresh frame keeps in front of its data.
    pub fn headroom(&self) -> usize {
        self.shared.headroom as usize
    }
    /// Largest data length a fresh frame can hold.
    pub fn frame_capacity(&self) -> usize {
        (self.shared.frame_size - self.shared.headroom) as usize
    }
    /// The whole mapping as an address range (for UMEM registration, and for
    /// tests that prove a slice lies inside the pool).
    pub fn region(&self) -> std::ops::Range<usize> {
        let start = self.shared.base as usize;
        start..start + self.shared.map.len()
    }
    /// Whether `bytes` lies entirely inside this pool's mapping.
    pub fn contains(&self, bytes: &[u8]) -> bool {
        let r = self.region();
        let start = bytes.as_ptr() as usize;
        r.contains(&start) && start + bytes.len() <= r.end
    }
    /// The memfd backing the pool (to register it as a UMEM or share it).
    #[cfg(not(miri))]
    pub fn memfd(&self) -> &std::fs::File {
        self.shared.map.file()
    }
    /// Records that `delta` frames were lent to (positive) or returned by
    /// (negative) the kernel, for [`PoolStats::in_kernel`].
    pub(crate) fn kernel_lent(&self, delta: isize) {
        if delta >= 0 {
            self.shared
                .in_kernel
                .fetch_add(delta as usize, Ordering::Relaxed);
        } else {
            self.shared
                .in_kernel
                .fetch_sub(delta.unsigned_abs(), Ordering::Relaxed);
        }
    }
    /// Whether `frame` belongs to this pool.
    pub fn owns(&self, frame: &Frame) -> bool {
        Arc::ptr_eq(&self.shared, &frame.shared)
    }
}

/// An owned frame of a [`Pool`]: the only handle to its bytes. Dropping it
/// returns the frame to the pool.
///
/// The frame's buffer is `frame_size` bytes; its *data* is the window
/// `[offset, offset + len)` of that buffer. A fresh frame starts its data after
/// the pool's headroom with length 0.
pub struct Frame {
    shared: Arc<Shared>,
    idx: u32,
    off: u32,
    len: u32,
    /// Segment payload size asked of a TSO device; 0: send as it is.
    gso_size: u16,
}

/// A frame the application filled can be sent by reference (smoltcp's
/// `TxRef`): its data, which nobody can change while it is shared.
impl smoltcp::socket::tcp::TxSource for Frame {
    fn bytes(&self) -> &[u8] {
        self.data()
    }
}

impl Frame {
    #[inline]
    fn new(shared: Arc<Shared>, idx: u32) -> Frame {
        let off = shared.headroom;
        Frame {
            shared,
            idx,
            off,
            len: 0,
            gso_size: 0,
        }
    }

    #[inline]
    fn buf_ptr(&self) -> *mut u8 {
        // SAFETY: idx < frames, so the offset stays inside the mapping.
        unsafe {
            self.shared
                .base
                .add((self.idx as usize) << self.shared.frame_shift)
        }
    }

    /// The frame's index in its pool (what rings carry).
    pub fn index(&self) -> u32 {
        self.idx
    }
    /// Offset of the data from the start of the frame's buffer.
    pub fn offset(&self) -> usize {
        self.off as usize
    }
    /// Length of the data.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether the data is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
    /// Bytes available from the data's start to the end of the buffer.
    pub fn capacity(&self) -> usize {
        (self.shared.frame_size - self.off) as usize
    }
    /// Sets the data length; panics if it exceeds [`Frame::capacity`] (a bug in
    /// the caller, never something network input can cause).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.capacity(),
            "frame length {len} exceeds capacity {}",
            self.capacity()
        );
        self.len = len as u32;
    }
    /// Moves the data start to `off` bytes into the buffer, keeping `len` if it still fits.
    pub fn set_offset(&mut self, off: usize) {
        assert!(
            off < self.shared.frame_size as usize,
            "frame offset {off} out of range"
        );
        self.off = off as u32;
        self.len = self.len.min(self.shared.frame_size - self.off);
    }
    /// Resets to a fresh frame's layout: data after the headroom, empty.
    pub fn reset(&mut self) {
        self.off = self.shared.headroom;
        self.len = 0;
        self.gso_size = 0;
    }
    /// Asks a device that segments TCP ([`crate::Offloads::tcp_segmentation`])
    /// to cut this frame's segment into ones of `bytes` payload bytes (the
    /// MSS); 0, the default, sends the frame as it is.
    pub fn set_gso_size(&mut self, bytes: u16) {
        self.gso_size = bytes;
    }
    /// The segment size asked by [`Frame::set_gso_size`]; 0 if none.
    pub fn gso_size(&self) -> u16 {
        self.gso_size
    }
    /// The data.
    #[inline]
    pub fn data(&self) -> &[u8] {
        // SAFETY: [off, off+len) lies inside this frame's buffer (set_len and
        // set_offset keep it so) and this Frame is the only handle to it.
        unsafe { std::slice::from_raw_parts(self.buf_ptr().add(self.off as usize), self.len()) }
    }
    /// The data, writable.
    #[inline]
    pub fn data_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `data`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(self.off as usize), self.len()) }
    }
    /// Everything from the data's start to the end of the buffer, writable
    /// (fill it, then [`Frame::set_len`]).
    #[inline]
    pub fn room_mut(&mut self) -> &mut [u8] {
        let cap = self.capacity();
        // SAFETY: [off, frame_size) lies inside this frame's buffer; `&mut self`
        // makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.buf_ptr().add(self.off as usize), cap) }
    }
    /// The pool this frame came from.
    pub fn pool(&self) -> Pool {
        Pool {
            shared: self.shared.clone(),
        }
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Frame")
            .field("index", &self.idx)
            .field("offset", &self.off)
            .field("len", &self.len)
            .finish()
    }
}

impl Drop for Frame {
    #[inline]
    fn drop(&mut self) {
        let idx = self.idx;
        if with_cache(&self.shared, |c| c.push(&self.shared, idx)).is_none() {
            // No thread cache (thread exiting): straight to the shared queue,
            // which has room for every frame.
            let _ = self.shared.free.push(idx);
        }
    }
}

// --------------------------------------------------------------- thread cache

/// One thread's cache of free frames for one pool.
struct Cache {
    id: u64,
    pool: Weak<Shared>,
    frames: Vec<u32>,
    count: Arc<AtomicU32>,
}

impl Cache {
    #[inline]
    fn pop(&mut self, shared: &Shared) -> Option<u32> {
        if self.frames.is_empty() {
            while self.frames.len() < CACHE_BATCH {
                match shared.free.pop() {
                    Some(i) => self.frames.push(i),
                    None => break,
                }
            }
            // Sample the high-water mark at refill time: cheap and within one
            // cache's worth of the truth.
            let in_use = shared.frames as usize - shared.free.len();
            shared.high_water.fetch_max(in_use, Ordering::Relaxed);
        }
        let idx = self.frames.pop();
        self.count
            .store(self.frames.len() as u32, Ordering::Relaxed);
        idx
    }

    #[inline]
    fn push(&mut self, shared: &Shared, idx: u32) {
        self.frames.push(idx);
        if self.frames.len() > CACHE_MAX {
            let keep = self.frames.len() - CACHE_BATCH;
            for i in self.frames.drain(keep..) {
                let _ = shared.free.push(i);
            }
        }
        self.count
            .store(self.frames.len() as u32, Ordering::Relaxed);
    }

    /// Returns every cached frame to its pool (if the pool still exists).
    fn flush(&mut self) {
        if let Some(shared) = self.pool.upgrade() {
            for i in self.frames.drain(..) {
                let _ = shared.free.push(i);
            }
            self.count.store(0, Ordering::Relaxed);
            if let Ok(mut v) = shared.cache_counts.lock() {
                v.retain(|c| !Arc::ptr_eq(c, &self.count));
            }
        }
        self.frames.clear();
    }
}

/// The caches of the current thread, one per pool it has used recently.
struct Caches(Vec<Cache>);

/// A thread keeps caches for at most this many pools; the oldest is flushed.
const MAX_CACHED_POOLS: usize = 4;

impl Drop for Caches {
    fn drop(&mut self) {
        for c in &mut self.0 {
            c.flush();
        }
    }
}

thread_local! {
    static CACHES: RefCell<Caches> = const { RefCell::new(Caches(Vec::new())) };
}

/// Runs `f` on this thread's cache for `shared`, creating it if needed.
/// `None` if the thread's caches are gone (thread exit) or already borrowed.
#[inline]
fn with_cache<R>(shared: &Arc<Shared>, f: impl FnOnce(&mut Cache) -> R) -> Option<R> {
    CACHES
        .try_with(|caches| {
            let mut caches = caches.try_borrow_mut().ok()?;
            let list = &mut caches.0;
            let pos = match list.iter().position(|c| c.id == shared.id) {
                Some(p) => p,
                None => {
                    if list.len() >= MAX_CACHED_POOLS {
                        let mut old = list.remove(0);
                        old.flush();
                    }
                    let count = Arc::new(AtomicU32::new(0));
                    if let Ok(mut v) = shared.cache_counts.lock() {
                        v.push(count.clone());
                    }
                    list.push(Cache {
                        id: shared.id,
                        pool: Arc::downgrade(shared),
                        frames: Vec::with_capacity(CACHE_MAX + 1),
                        count,
                    });
                    list.len() - 1
                }
            };
            Some(f(&mut list[pos]))
        })
        .ok()
        .flatten()
}

/// Flushes this thread's cache for `pool` back to the shared queue, e.g.
/// before a worker thread parks for a long time.
pub fn flush_thread_cache(pool: &Pool) {
    let _ = CACHES.try_with(|caches| {
        if let Ok(mut caches) = caches.try_borrow_mut() {
            caches.0.retain_mut(|c| {
                if c.id == pool.shared.id {
                    c.flush();
                    false
                } else {
                    true
                }
            });
        }
    });
}

#[cfg(test)]
mod tests;

/// The pool's memory: a memfd mapped shared and populated.
#[cfg(not(miri))]
mod backing {
    use memmap2::{MmapMut, MmapOptions};

    use super::PoolError;
    use crate::sys;

    pub(super) struct Backing {
        map: MmapMut,
        /// The memfd behind `map`, kept for UMEM registration and sharing.
        file: std::fs::File,
    }

    impl Backing {
        pub fn new(bytes: usize, hugepages: bool) -> Result<Backing, PoolError> {
            let map_err = |source| PoolError::Map { bytes, source };
            let file = sys::memfd_create("zcstack-pool", hugepages).map_err(map_err)?;
            file.set_len(bytes as u64).map_err(|source| {
                if hugepages {
                    PoolError::NoHugepages { bytes, source }
                } else {
                    PoolError::Map { bytes, source }
                }
            })?;
            // SAFETY: the memfd is private to this pool (nobody else has the fd yet,
            // and we never truncate it), so the mapping cannot be invalidated under us.
            // hugetlb mappings reserve their pages here, so a short reservation
            // fails now with ENOMEM instead of a SIGBUS later.
            let map = unsafe { MmapOptions::new().len(bytes).populate().map_mut(&file) };
            let map = map.map_err(|source| {
                if hugepages && source.raw_os_error() == Some(libc::ENOMEM) {
                    PoolError::NoHugepages { bytes, source }
                } else {
                    PoolError::Map { bytes, source }
                }
            })?;
            Ok(Backing { map, file })
        }
        pub fn as_mut_ptr(&mut self) -> *mut u8 {
            self.map.as_mut_ptr()
        }
        pub fn len(&self) -> usize {
            self.map.len()
        }
        pub fn file(&self) -> &std::fs::File {
            &self.file
        }
    }
}

/// Under Miri, which has neither `memfd_create` nor `mmap`: the same bytes
/// from the global allocator (zeroed, page-aligned), so the pool's logic
/// — frame handles, the free list, thread caches — runs under its checks.
#[cfg(miri)]
mod heap {
    use std::alloc::{Layout, alloc_zeroed, dealloc};
    use std::ptr::NonNull;

    use super::PoolError;

    pub(super) struct Backing {
        ptr: NonNull<u8>,
        layout: Layout,
    }

    impl Backing {
        pub fn new(bytes: usize, _hugepages: bool) -> Result<Backing, PoolError> {
            let layout = Layout::from_size_align(bytes.max(1), 4096)
                .map_err(|e| PoolError::Config(e.to_string()))?;
            // SAFETY: the layout has a non-zero size.
            let p = unsafe { alloc_zeroed(layout) };
            let ptr = NonNull::new(p).ok_or_else(|| PoolError::Map {
                bytes,
                source: std::io::ErrorKind::OutOfMemory.into(),
            })?;
            Ok(Backing { ptr, layout })
        }
        pub fn as_mut_ptr(&mut self) -> *mut u8 {
            self.ptr.as_ptr()
        }
        pub fn len(&self) -> usize {
            self.layout.size()
        }
    }

    impl Drop for Backing {
        fn drop(&mut self) {
            // SAFETY: allocated in `new` with this layout, freed once.
            unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
        }
    }
}
