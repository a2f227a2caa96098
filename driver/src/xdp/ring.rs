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
//! Fill and TX rings: we produce, the kernel consumes. RX and completion
//! rings: the kernel produces, we consume.

use std::io;
use std::mem::size_of;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::ptr::{self, NonNull};
use std::sync::atomic::{AtomicU32, Ordering};

/// One mapped ring of entries of type `T` (`u64` addresses for fill and
/// completion, `libc::xdp_desc` for RX and TX).
pub struct Ring<T> {
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

// SAFETY: the ring's memory is owned by this value (unmapped on drop) and
// only accessed through `&mut self`; moving it to another thread is fine.
unsafe impl<T: Send> Send for Ring<T> {}

impl<T: Copy> Ring<T> {
    /// Maps the ring of `size` entries at page offset `pgoff` of socket `fd`,
    /// laid out as the kernel's `xdp_ring_offset` says.
    pub fn map(
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
        let producer = at(off.producer).cast::<AtomicU32>();
        let consumer = at(off.consumer).cast::<AtomicU32>();
        let mut ring = Ring {
            producer,
            consumer,
            flags: at(off.flags).cast(),
            entries: at(off.desc).cast(),
            mask: size - 1,
            local: 0,
            cached: 0,
            // SAFETY: mmap succeeded, so `p` is not null.
            map: unsafe { NonNull::new_unchecked(p) },
            map_len,
        };
        // SAFETY: both indices point at initialised u32s inside the mapping.
        unsafe {
            ring.local = ring.producer.as_ref().load(Ordering::Relaxed);
            ring.cached = ring.consumer.as_ref().load(Ordering::Relaxed);
        }
        Ok(ring)
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

    /// Whether the kernel asks to be woken (`XDP_RING_NEED_WAKEUP`).
    pub fn needs_wakeup(&self) -> bool {
        // SAFETY: as for `prod`.
        let flags = unsafe { self.flags.as_ref() };
        flags.load(Ordering::Relaxed) & libc::XDP_RING_NEED_WAKEUP != 0
    }

    fn slot(&self, idx: u32) -> *mut T {
        // SAFETY: `idx & mask` < size, and the mapping holds `size` entries.
        unsafe { self.entries.as_ptr().add((idx & self.mask) as usize) }
    }

    // ------------------------------------------------------ producer side

    /// Free slots we may fill now (fill and TX rings).
    pub fn free(&mut self) -> u32 {
        self.cached = self.cons().load(Ordering::Acquire);
        self.size() - self.local.wrapping_sub(self.cached)
    }

    /// Entries submitted that the kernel has not taken yet (TX ring).
    pub fn unconsumed(&self) -> u32 {
        self.local.wrapping_sub(self.cons().load(Ordering::Acquire))
    }

    /// Writes `item` into the next slot; call [`Ring::free`] first and don't
    /// write more than it said. Invisible to the kernel until [`Ring::submit`].
    pub fn write(&mut self, item: T) {
        debug_assert!(self.local.wrapping_sub(self.cached) < self.size());
        // SAFETY: the slot is ours: it lies between the kernel's consumer
        // index and the size of the ring ahead of it (checked by `free`).
        unsafe { self.slot(self.local).write(item) };
        self.local = self.local.wrapping_add(1);
    }

    /// Publishes everything written since the last submit.
    pub fn submit(&mut self) {
        self.prod().store(self.local, Ordering::Release);
    }

    // ------------------------------------------------------ consumer side

    /// Reads up to `max` entries the kernel produced, in order, into `f`,
    /// then returns their slots to the kernel. Returns how many it read.
    pub fn consume(&mut self, max: u32, mut f: impl FnMut(T)) -> u32 {
        let mut avail = self.cached.wrapping_sub(self.local);
        if avail < max {
            self.cached = self.prod().load(Ordering::Acquire);
            avail = self.cached.wrapping_sub(self.local);
        }
        let n = avail.min(max);
        for i in 0..n {
            // SAFETY: entries between our consumer index and the producer
            // index the kernel published are initialised and not written
            // again until we release them below.
            f(unsafe { self.slot(self.local.wrapping_add(i)).read() });
        }
        self.local = self.local.wrapping_add(n);
        if n > 0 {
            self.cons().store(self.local, Ordering::Release);
        }
        n
    }

    /// Consumer side: whether entries are waiting.
    pub fn has_entries(&mut self) -> bool {
        self.cached = self.prod().load(Ordering::Acquire);
        self.cached != self.local
    }
}

impl<T> Ring<T> {
    /// Reinterprets the producer side's `local` as the consumer's: RX and
    /// completion rings start from the kernel's consumer index.
    pub fn into_consumer(mut self) -> Ring<T> {
        // SAFETY: both indices point at initialised u32s inside the mapping.
        unsafe {
            self.local = self.consumer.as_ref().load(Ordering::Relaxed);
            self.cached = self.producer.as_ref().load(Ordering::Relaxed);
        }
        self
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
