//! The four AF_XDP rings: single-producer/single-consumer queues shared
//! with the kernel through a mapping of the socket (kernel doc:
//! `Documentation/networking/af_xdp.rst`, "Rings").
//!
//! Each ring is a power-of-two array of entries plus a producer and a
//! consumer index that only ever grow (they wrap at `u32`). The side that
//! produces publishes entries with a release store of the producer index; the
//! other side reads them after an acquire load and gives the slots back with
//! a release store of the consumer index. We keep a cached copy of the
//! other side's index so a burst costs one atomic load, not one per entry.
//!
//! Fill and TX rings: we produce, the kernel consumes ([`Producer`]). RX and
//! completion rings: the kernel produces, we consume ([`Consumer`]). Each
//! side has only its own operations, so writing into the RX ring or
//! consuming from the fill ring does not compile.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// The fill ring: we lend the kernel UMEM chunks to receive into.
pub type FillRing = Producer<u64>;
/// The TX ring: we give the kernel descriptors of frames to send.
pub type TxRing = Producer<libc::xdp_desc>;
/// The RX ring: the kernel gives us descriptors of received packets.
pub type RxRing = Consumer<libc::xdp_desc>;
/// The completion ring: the kernel gives back the addresses it sent.
pub type CompletionRing = Consumer<u64>;

/// One mapped ring of entries of type `T` (`u64` addresses for fill and
/// completion, `libc::xdp_desc` for RX and TX): the mapping and both
/// indices, with no operations of its own; [`Producer`] and [`Consumer`]
/// give it the side we are on.
struct Ring<T> {
    producer: NonNull<AtomicU32>,
    consumer: NonNull<AtomicU32>,
    flags: NonNull<AtomicU32>,
    entries: NonNull<T>,
    mask: u32,
    /// Our copy of the index we own (producer for fill/TX, consumer for RX/completion).
    local: u32,
    /// Last seen value of the index the kernel owns.
    cached: u32,
    map: NonNull<libc::c_void>,
    map_len: usize,
}

/// A ring we produce into and the kernel consumes: fill and TX.
pub struct Producer<T>(Ring<T>);

/// A ring the kernel produces into and we consume: RX and completion.
pub struct Consumer<T>(Ring<T>);

// SAFETY: the ring's memory is owned by this value (unmapped on drop) and
// only accessed through `&mut self`; moving it to another thread is fine.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of socket `fd`,
    /// laid out as the kernel's `xdp_ring_offset` says. Both indices start
    /// at zero; the side's constructor reads the kernel's.
    fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Ring<T>> {
        debug_assert!(size.is_power_of_two());
        let map_len = off.desc as usize + size as usize * size_of::<T>();
        // SAFETY: a fresh shared mapping of the socket's ring; no existing
        // memory is touched. The kernel sized the object for `size` entries.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                fd.as_raw_fd(),
                pgoff as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = p.cast::<u8>();
        // SAFETY: the kernel's offsets point inside the `map_len` bytes just mapped.
        let at = |o: u64| unsafe { NonNull::new_unchecked(base.add(o as usize)) };
        Ok(Ring {
            producer: at(off.producer).cast(),
            consumer: at(off.consumer).cast(),
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
            local: 0,
            cached: 0,
            // SAFETY: mmap succeeded, so `p` is not null.
            map: unsafe { NonNull::new_unchecked(p) },
            map_len,
        })
    }

    fn size(&self) -> u32 {
        self.mask + 1
    }

    fn prod(&self) -> &AtomicU32 {
        // SAFETY: points into our live mapping, aligned by the kernel.
        unsafe { self.producer.as_ref() }
    }

    fn cons(&self) -> &AtomicU32 {
        // SAFETY: as for `prod`.
        unsafe { self.consumer.as_ref() }
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` < size, and the mapping holds `size` entries.
        unsafe { self.entries.as_ptr().add((idx & self.mask) as usize) }
    }
}

impl<T: Copy> Producer<T> {
    /// Maps a fill or TX ring (see `Ring::map`): we continue from the
    /// kernel's producer index, and its consumer index is what we know.
    pub fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Producer<T>> {
        let mut ring = Ring::map(fd, off, size, pgoff)?;
        ring.local = ring.prod().load(Ordering::Relaxed);
        ring.cached = ring.cons().load(Ordering::Relaxed);
        Ok(Producer(ring))
    }

    /// Whether the kernel asks to be woken (`XDP_RING_NEED_WAKEUP`; the
    /// kernel sets it on the fill and TX rings only).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: points into our live mapping, aligned by the kernel.
        let flags = unsafe { self.0.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    /// Free slots we may fill now.
    pub fn free(&mut self) -> u32 {
        let r = &mut self.0;
        r.cached = r.cons().load(Ordering::Acquire);
        r.size() - r.local.wrapping_sub(r.cached)
    }

    /// Entries submitted that the kernel has not taken yet.
    pub fn unconsumed(&self) -> u32 {
        let r = &self.0;
        r.local.wrapping_sub(r.cons().load(Ordering::Acquire))
    }

    /// Writes `item` into the next slot; call [`Producer::free`] first and
    /// don't write more than it said. Invisible to the kernel until
    /// [`Producer::submit`].
    pub fn write(&mut self, item: T) {
        let r = &mut self.0;
        debug_assert!(r.local.wrapping_sub(r.cached) < r.size());
        // SAFETY: the slot is ours: it lies between the kernel's consumer
        // index and the size of the ring ahead of it (checked by `free`).
        unsafe { r.slot(r.local).write(item) };
        r.local = r.local.wrapping_add(1);
    }

    /// Publishes everything written since the last submit.
    pub fn submit(&mut self) {
        let r = &mut self.0;
        r.prod().store(r.local, Ordering::Release);
    }
}

impl<T: Copy> Consumer<T> {
    /// Maps an RX or completion ring (see `Ring::map`): we continue from
    /// the kernel's consumer index, and its producer index is what we know.
    pub fn map(
        fd: BorrowedFd<'_>,
        off: &libc::xdp_ring_offset,
        size: u32,
        pgoff: u64,
    ) -> io::Result<Consumer<T>> {
        let mut ring = Ring::map(fd, off, size, pgoff)?;
        ring.local = ring.cons().load(Ordering::Relaxed);
        ring.cached = ring.prod().load(Ordering::Relaxed);
        Ok(Consumer(ring))
    }

    /// Reads up to `max` entries the kernel produced, in order, into `f`,
    /// then returns their slots to the kernel. Returns how many it read.
    pub fn consume(&mut self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let r = &mut self.0;
        let mut avail = r.cached.wrapping_sub(r.local);
        if avail < max {
            r.cached = r.prod().load(Ordering::Acquire);
            avail = r.cached.wrapping_sub(r.local);
        }
        let n = avail.min(max);
        for i in 0..n {
            // SAFETY: entries between our consumer index and the producer
            // index the kernel published are initialised and not written
            // again until we release them below.
            f(unsafe { r.slot(r.local.wrapping_add(i)).read() });
        }
        r.local = r.local.wrapping_add(n);
        if n > 0 {
            r.cons().store(r.local, Ordering::Release);
        }
        n
    }

    /// Whether entries are waiting.
    pub fn has_entries(&mut self) -> bool {
        let r = &mut self.0;
        r.cached = r.prod().load(Ordering::Acquire);
        r.cached != r.local
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // SAFETY: `map` is our own mapping of `map_len` bytes; nothing refers
        // to it after this (the ring is being dropped).
        if unsafe { libc::munmap(self.map.as_ptr(), self.map_len) } != 0 {
            eprintln!(
                "zcstack: munmap of an AF_XDP ring failed: {}",
                io::Error::last_os_error()
            );
        }
    }
}
