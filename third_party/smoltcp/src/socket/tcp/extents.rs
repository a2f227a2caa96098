//! ZCSTACK PATCH 20: a send buffer of extents, for sending by reference.
//!
//! A TCP socket's send buffer is a sequence of bytes: what the application
//! wrote and the peer has not acknowledged yet. Upstream keeps all of them
//! in the socket's ring, so bytes that already live somewhere else (a
//! mapped file, a buffer the application owns) are copied in first, and
//! copied again into every frame that carries them.
//!
//! [`TxBuffer`] keeps that sequence as *extents*, oldest first: runs of
//! bytes in the ring, and [`TxRef`]s — counted references to bytes owned
//! elsewhere, behind the [`TxSource`] trait (as DPDK's external buffers,
//! `rte_pktmbuf_attach_extbuf`). A segment's payload is a slice of one
//! extent ([`TxBuffer::get_allocated`] stops at an extent's end as the ring
//! stops at its wrap), read again for every retransmission; an extent is
//! dropped — its reference released — only when the peer has acknowledged
//! all of it ([`TxBuffer::dequeue_allocated`]).
//!
//! While no reference is queued every call is the ring's own: sockets that
//! never send by reference pay one branch.
//!
//! Sequence numbers: the buffer never holds more than 2^30 bytes, so it
//! stays within the half of the sequence space TCP can compare.

use alloc::collections::VecDeque;
use alloc::sync::Arc;
use core::fmt;

use super::{SendError, Socket, SocketBuffer};

/// Most bytes a send buffer holds, ring and references together.
pub const MAX_SEND_BUFFER: usize = 1 << 30;

/// Bytes owned outside the socket that it may send by reference.
///
/// `bytes` must return the same bytes (same address, length and contents)
/// for as long as any [`TxRef`] to the source exists: the socket reads them
/// again for every (re)transmission until the peer acknowledges them, and a
/// device may send them straight from there.
pub trait TxSource: Send + Sync {
    /// The source's bytes.
    fn bytes(&self) -> &[u8];
}

impl TxSource for alloc::vec::Vec<u8> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

impl TxSource for alloc::boxed::Box<[u8]> {
    fn bytes(&self) -> &[u8] {
        self
    }
}

/// A counted reference to a range of a [`TxSource`].
///
/// The count is an [`Arc`]'s (atomic): the socket holds one per queued
/// extent, and whoever else holds a clone (a driver whose transmission is
/// still in flight, the application) keeps the bytes alive too. Cloning
/// costs one atomic increment; nothing is counted per packet.
#[derive(Clone)]
pub struct TxRef {
    src: Arc<dyn TxSource>,
    start: usize,
    len: usize,
}

impl TxRef {
    /// A reference to `src.bytes()[start..start + len]`; `None` if that
    /// range is not within the source.
    pub fn new(src: Arc<dyn TxSource>, start: usize, len: usize) -> Option<TxRef> {
        let end = start.checked_add(len)?;
        if end > src.bytes().len() {
            return None;
        }
        Some(TxRef { src, start, len })
    }

    /// The referenced bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.src.bytes()[self.start..self.start + self.len]
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether it refers to no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The source.
    pub fn source(&self) -> &Arc<dyn TxSource> {
        &self.src
    }

    /// The range's start within the source.
    pub fn start(&self) -> usize {
        self.start
    }

    /// ZCSTACK PATCH 26: a reference to `len` bytes from `skip` into this
    /// one, sharing its source (one atomic increment, no allocation); `None`
    /// if that range is not within this reference.
    pub fn slice(&self, skip: usize, len: usize) -> Option<TxRef> {
        if skip.checked_add(len)? > self.len {
            return None;
        }
        Some(TxRef {
            src: self.src.clone(),
            start: self.start + skip,
            len,
        })
    }

    /// `other` continues this reference in the same source.
    fn continued_by(&self, other: &TxRef) -> bool {
        Arc::ptr_eq(&self.src, &other.src) && self.start + self.len == other.start
    }
}

impl fmt::Debug for TxRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxRef")
            .field("start", &self.start)
            .field("len", &self.len)
            .finish()
    }
}

/// ZCSTACK PATCH 26: one slice of a TCP payload handed to a device by
/// [`TxToken::consume_gather`](crate::phy::TxToken::consume_gather).
///
/// The bytes are borrowed for that call only. A slice of bytes sent by
/// reference also names its [`TxRef`]: a device that sends later than the
/// call returns (a TX descriptor that completes later, a batch sent after
/// the poll) keeps the bytes alive with [`to_ref`](Self::to_ref) — one
/// atomic increment, no allocation — and drops that reference when its
/// transmission is done. Bytes of the socket's ring have no reference: the
/// device sends or copies them before it returns (the ring reuses them
/// once they are acknowledged, which may happen before a deferred send).
#[derive(Clone, Copy, Debug)]
pub struct GatherSlice<'a> {
    bytes: &'a [u8],
    source: Option<(&'a TxRef, usize)>,
}

impl<'a> GatherSlice<'a> {
    /// Borrowed bytes with no reference (e.g. of a socket's ring).
    pub fn borrowed(bytes: &'a [u8]) -> GatherSlice<'a> {
        GatherSlice {
            bytes,
            source: None,
        }
    }

    /// `len` bytes from `skip` into `r`; `None` if that range is not
    /// within `r`.
    pub fn of_ref(r: &'a TxRef, skip: usize, len: usize) -> Option<GatherSlice<'a>> {
        if skip.checked_add(len)? > r.len() {
            return None;
        }
        Some(GatherSlice {
            bytes: &r.bytes()[skip..skip + len],
            source: Some((r, skip)),
        })
    }

    /// The bytes.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether it holds no bytes.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// A reference to exactly these bytes that may outlive the call, if
    /// they are sent by reference; `None` for borrowed bytes, which must
    /// be sent or copied before the call returns.
    pub fn to_ref(&self) -> Option<TxRef> {
        let (r, skip) = self.source?;
        r.slice(skip, self.bytes.len())
    }
}

/// ZCSTACK PATCH 30: how many slices of the send buffer one segment may
/// span (a response head written into the ring and the file it refers
/// to are two).
pub(crate) const PARTS: usize = 4;

/// ZCSTACK PATCH 30: a segment's payload as up to [`PARTS`] slices of
/// consecutive extents of the send buffer, in order.
#[derive(Clone, Copy, Debug)]
pub struct PayloadParts<'a> {
    parts: [GatherSlice<'a>; PARTS],
    len: usize,
}

impl Default for PayloadParts<'_> {
    fn default() -> Self {
        PayloadParts {
            parts: [GatherSlice::borrowed(&[]); PARTS],
            len: 0,
        }
    }
}

impl<'a> PayloadParts<'a> {
    /// One slice.
    pub(crate) fn one(s: GatherSlice<'a>) -> Self {
        let mut p = Self::default();
        p.parts[0] = s;
        p.len = 1;
        p
    }

    /// The slices, in order.
    pub(crate) fn as_slice(&self) -> &[GatherSlice<'a>] {
        &self.parts[..self.len]
    }

    /// Their length in bytes.
    pub(crate) fn total_len(&self) -> usize {
        self.as_slice().iter().map(|s| s.len()).sum()
    }
}

/// A send buffer: the socket's ring, and references in sequence with it.
///
/// The sequence is `[ring bytes][reference]...[ring bytes][reference][ring
/// bytes]`: each queued reference records how many ring bytes come before
/// it (after the previous reference), and whatever else the ring holds
/// follows the last one. So bytes written into the ring need no
/// bookkeeping, and neither does anything while no reference is queued.
#[derive(Debug)]
pub struct TxBuffer<'a> {
    ring: SocketBuffer<'a>,
    /// Queued references, oldest first, each with the ring bytes before it.
    refs: VecDeque<(usize, TxRef)>,
    /// Ring bytes before the last reference (the sum over `refs`).
    ring_before_refs: usize,
    /// Bytes by reference queued.
    ref_len: usize,
}

impl<'a> From<SocketBuffer<'a>> for TxBuffer<'a> {
    fn from(ring: SocketBuffer<'a>) -> Self {
        TxBuffer {
            ring,
            refs: VecDeque::new(),
            ring_before_refs: 0,
            ref_len: 0,
        }
    }
}

impl<'a> TxBuffer<'a> {
    /// Bytes queued: unsent and unacknowledged, in the ring and by reference.
    pub fn len(&self) -> usize {
        self.ring.len() + self.ref_len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The ring is full (references may still be queued).
    pub fn is_full(&self) -> bool {
        self.ring.is_full()
    }

    /// The ring's capacity.
    pub fn capacity(&self) -> usize {
        self.ring.capacity()
    }

    /// Bytes by reference queued.
    pub fn ref_len(&self) -> usize {
        self.ref_len
    }

    pub fn clear(&mut self) {
        self.ring.clear();
        self.refs.clear();
        self.ring_before_refs = 0;
        self.ref_len = 0;
    }

    /// The ring's `enqueue_many_with`; the bytes follow everything queued.
    pub fn enqueue_many_with<'b, R, F>(&'b mut self, f: F) -> (usize, R)
    where
        F: FnOnce(&'b mut [u8]) -> (usize, R),
    {
        let room = MAX_SEND_BUFFER.saturating_sub(self.len());
        self.ring.enqueue_many_with(|free| {
            let cap = free.len().min(room);
            f(&mut free[..cap])
        })
    }

    /// The ring's `enqueue_slice`; the bytes follow everything queued.
    pub fn enqueue_slice(&mut self, data: &[u8]) -> usize {
        let room = MAX_SEND_BUFFER.saturating_sub(self.len());
        self.ring.enqueue_slice(&data[..data.len().min(room)])
    }

    /// Queues `r` after everything queued; returns the bytes taken (all of
    /// them, unless the buffer would exceed [`MAX_SEND_BUFFER`]: then a
    /// prefix). A reference that continues the last one merges with it.
    pub fn enqueue_ref(&mut self, mut r: TxRef) -> usize {
        r.len = r.len.min(MAX_SEND_BUFFER.saturating_sub(self.len()));
        let n = r.len;
        if n == 0 {
            return 0;
        }
        let ring_before = self.ring.len() - self.ring_before_refs;
        match self.refs.back_mut() {
            Some((_, last)) if ring_before == 0 && last.continued_by(&r) => last.len += n,
            _ => {
                self.refs.push_back((ring_before, r));
                self.ring_before_refs += ring_before;
            }
        }
        self.ref_len += n;
        n
    }

    /// Up to `size` contiguous bytes at `offset` from the oldest byte: a
    /// slice of one extent (of the ring up to its wrap, or of one
    /// reference). Empty at or past the end.
    pub fn get_allocated(&self, offset: usize, size: usize) -> &[u8] {
        let (mut at, mut ring_at) = (0, 0);
        for (ring_before, r) in &self.refs {
            if offset < at + ring_before {
                let skip = offset - at;
                return self
                    .ring
                    .get_allocated(ring_at + skip, size.min(ring_before - skip));
            }
            at += ring_before;
            ring_at += ring_before;
            if offset < at + r.len {
                let skip = offset - at;
                return &r.bytes()[skip..skip + size.min(r.len - skip)];
            }
            at += r.len;
        }
        match offset.checked_sub(at) {
            Some(skip) => self.ring.get_allocated(ring_at + skip, size),
            None => &[],
        }
    }

    /// ZCSTACK PATCH 30: up to `size` bytes from `offset` (from the oldest
    /// byte) as up to [`PARTS`] slices: one per extent (ring bytes up to
    /// the ring's end or the next reference; a reference), each naming its
    /// reference. The first is [`get_allocated`](Self::get_allocated)`(offset, size)`.
    pub(crate) fn payload_parts(&self, offset: usize, size: usize) -> PayloadParts<'_> {
        let mut p = PayloadParts::default();
        let (mut at, mut left) = (offset, size);
        while left > 0 && p.len < PARTS {
            let bytes = self.get_allocated(at, left);
            if bytes.is_empty() {
                break;
            }
            p.parts[p.len] = self
                .ref_at(at)
                .and_then(|(r, skip)| GatherSlice::of_ref(r, skip, bytes.len()))
                .unwrap_or(GatherSlice::borrowed(bytes));
            p.len += 1;
            at += bytes.len();
            left -= bytes.len();
        }
        p
    }

    /// ZCSTACK PATCH 26: the reference holding the byte at `offset` from
    /// the oldest, and how far into it that byte is; `None` for a byte of
    /// the ring (or past the end).
    pub fn ref_at(&self, offset: usize) -> Option<(&TxRef, usize)> {
        let mut at = 0;
        for (ring_before, r) in &self.refs {
            at += ring_before;
            if offset < at {
                return None;
            }
            if offset < at + r.len {
                return Some((r, offset - at));
            }
            at += r.len;
        }
        None
    }

    /// Drops the oldest `count` bytes (acknowledged); a reference is
    /// released once all of its bytes are.
    pub fn dequeue_allocated(&mut self, count: usize) {
        assert!(count <= self.len());
        let mut left = count;
        while left > 0 {
            let Some((ring_before, r)) = self.refs.front_mut() else {
                break;
            };
            let take = left.min(*ring_before);
            self.ring.dequeue_allocated(take);
            *ring_before -= take;
            self.ring_before_refs -= take;
            left -= take;
            let take = left.min(r.len);
            r.start += take;
            r.len -= take;
            self.ref_len -= take;
            left -= take;
            if *ring_before == 0 && r.len == 0 {
                self.refs.pop_front();
            }
        }
        self.ring.dequeue_allocated(left);
    }

    /// The queued references, oldest first, to replace (e.g. by a copy of
    /// their bytes when the memory they refer to must be given back before
    /// the peer acknowledges them). A replacement must hold the same bytes
    /// and have the same length.
    pub fn refs_mut(&mut self) -> impl Iterator<Item = &mut TxRef> {
        self.refs.iter_mut().map(|(_, r)| r)
    }

    /// ZCSTACK PATCH 27: the ring's whole storage (see
    /// [`Socket::idle_buffer_storage`]).
    pub(crate) fn ring_storage_mut(&mut self) -> &mut [u8] {
        self.ring.storage_mut()
    }

    /// The ring's `dequeue_many`, for upstream's tests of the ring alone.
    #[cfg(test)]
    pub(crate) fn dequeue_many(&mut self, size: usize) -> &mut [u8] {
        assert!(self.refs.is_empty());
        self.ring.dequeue_many(size)
    }
}

impl<'a> Socket<'a> {
    /// Queues `r` to be sent after everything queued, by reference: its
    /// bytes are read from its source for every (re)transmission, and the
    /// reference is released once the peer has acknowledged all of them.
    /// Returns the bytes taken (a prefix only if the send buffer would
    /// exceed [`MAX_SEND_BUFFER`]). The ring's capacity does not limit
    /// references: the caller bounds how much it queues ([`send_ref_queue`]).
    ///
    /// A device that takes payload slices
    /// ([`DeviceCapabilities::tx_gather`](crate::phy::DeviceCapabilities))
    /// sends them without a copy; any other gets them copied into its frame,
    /// as ring bytes are.
    ///
    /// [`send_ref_queue`]: #method.send_ref_queue
    pub fn send_ref(&mut self, r: TxRef) -> Result<usize, SendError> {
        self.send_impl(|tx| {
            let n = tx.enqueue_ref(r);
            (n, n)
        })
    }

    /// Bytes queued by reference (included in [`send_queue`](#method.send_queue)).
    pub fn send_ref_queue(&self) -> usize {
        self.tx_buffer.ref_len()
    }

    /// A CLOSED socket's send buffer, ring bytes and references, is
    /// dropped (upstream keeps it until the socket is used again, though a
    /// CLOSED socket never sends it): the references are released now.
    /// Returns whether anything was dropped; does nothing in other states.
    pub fn release_send_buffer_if_closed(&mut self) -> bool {
        if self.state != super::State::Closed || self.tx_buffer.is_empty() {
            return false;
        }
        self.tx_buffer.clear();
        true
    }

    /// The references queued, oldest first (see [`TxBuffer::refs_mut`]): to
    /// replace one by another holding the same bytes, e.g. a copy, when the
    /// memory it refers to must be given back early.
    pub fn send_refs_mut(&mut self) -> impl Iterator<Item = &mut TxRef> {
        self.tx_buffer.refs_mut()
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use alloc::vec;
    use alloc::vec::Vec;

    fn src(bytes: &[u8]) -> Arc<dyn TxSource> {
        Arc::new(bytes.to_vec())
    }

    /// Every byte at every offset, reading slice by slice as dispatch does.
    fn contents(b: &TxBuffer) -> Vec<u8> {
        let mut out = Vec::new();
        while out.len() < b.len() {
            let s = b.get_allocated(out.len(), usize::MAX);
            assert!(!s.is_empty());
            out.extend_from_slice(s);
        }
        out
    }

    #[test]
    fn ring_only_is_the_ring() {
        let mut b = TxBuffer::from(SocketBuffer::new(vec![0; 8]));
        assert_eq!(b.enqueue_slice(b"abcdef"), 6);
        b.dequeue_allocated(4);
        assert_eq!(b.enqueue_slice(b"ghijkl"), 6);
        assert_eq!(b.get_allocated(0, 10), b"efgh", "stops at the wrap");
        assert_eq!(contents(&b), b"efghijkl");
        assert!(b.is_full());
        assert!(b.refs.is_empty());
    }

    #[test]
    fn ring_and_references_in_order() {
        let file = src(b"0123456789");
        let mut b = TxBuffer::from(SocketBuffer::new(vec![0; 16]));
        assert_eq!(b.enqueue_slice(b"HEAD:"), 5);
        assert_eq!(b.enqueue_ref(TxRef::new(file.clone(), 2, 3).unwrap()), 3);
        assert_eq!(b.enqueue_ref(TxRef::new(file.clone(), 5, 4).unwrap()), 4);
        assert_eq!(b.refs.len(), 1, "a continuing reference merges");
        assert_eq!(b.enqueue_slice(b"|tail"), 5);
        assert_eq!(b.len(), 17);
        assert_eq!(b.ref_len(), 7);
        assert_eq!(contents(&b), b"HEAD:2345678|tail");
        // A slice never crosses an extent; offsets inside one work.
        assert_eq!(b.get_allocated(3, 100), b"D:");
        assert_eq!(b.get_allocated(6, 2), b"34");
        assert_eq!(b.get_allocated(13, 100), b"tail");
        assert_eq!(b.get_allocated(17, 1), b"");
        // Acknowledge part of the header, then across into the reference.
        b.dequeue_allocated(4);
        assert_eq!(contents(&b), b":2345678|tail");
        b.dequeue_allocated(4);
        assert_eq!(contents(&b), b"5678|tail");
        assert_eq!(Arc::strong_count(&file), 2, "still referenced");
        b.dequeue_allocated(4);
        assert_eq!(Arc::strong_count(&file), 1, "released when acknowledged");
        assert!(b.refs.is_empty(), "back to the ring alone");
        assert_eq!(contents(&b), b"|tail");
        b.dequeue_allocated(5);
        assert!(b.is_empty());
    }

    #[test]
    fn references_beyond_their_source_are_refused() {
        let file = src(b"abc");
        assert!(TxRef::new(file.clone(), 1, 3).is_none());
        assert!(TxRef::new(file.clone(), usize::MAX, 2).is_none());
        assert_eq!(TxRef::new(file, 3, 0).unwrap().bytes(), b"");
    }

    #[test]
    fn replaced_references_keep_their_place() {
        let file = src(b"xyz");
        let mut b = TxBuffer::from(SocketBuffer::new(vec![0; 4]));
        b.enqueue_ref(TxRef::new(file.clone(), 0, 3).unwrap());
        b.enqueue_slice(b"!");
        for r in b.refs_mut() {
            let copy: Arc<dyn TxSource> = Arc::new(r.bytes().to_vec());
            *r = TxRef::new(copy, 0, r.len()).unwrap();
        }
        assert_eq!(Arc::strong_count(&file), 1);
        assert_eq!(contents(&b), b"xyz!");
    }

    #[test]
    fn zcstack_patch23_slices_name_their_reference() {
        let file = src(b"0123456789");
        let mut b = TxBuffer::from(SocketBuffer::new(vec![0; 16]));
        b.enqueue_slice(b"ab");
        b.enqueue_ref(TxRef::new(file.clone(), 2, 6).unwrap());
        b.enqueue_slice(b"cd");
        assert!(b.ref_at(0).is_none() && b.ref_at(1).is_none(), "ring bytes");
        let (r, skip) = b.ref_at(5).unwrap();
        assert_eq!((r.bytes(), skip), (&b"234567"[..], 3));
        assert!(b.ref_at(8).is_none() && b.ref_at(10).is_none(), "ring, past the end");
        // A slice of that reference, kept past the buffer's release of it.
        let s = GatherSlice::of_ref(r, skip, 2).unwrap();
        assert_eq!(s.bytes(), b"56");
        let kept = s.to_ref().unwrap();
        assert!(GatherSlice::of_ref(r, 5, 2).is_none(), "beyond the reference");
        assert!(GatherSlice::borrowed(b"xy").to_ref().is_none());
        assert_eq!(Arc::strong_count(&file), 3);
        b.dequeue_allocated(10);
        assert!(b.is_empty());
        assert_eq!(Arc::strong_count(&file), 2, "the kept one only");
        assert_eq!(kept.bytes(), b"56");
        assert_eq!((kept.start(), kept.len()), (5, 2));
        assert!(kept.slice(1, 2).is_none());
        assert_eq!(kept.slice(1, 1).unwrap().bytes(), b"6");
        drop(kept);
        assert_eq!(Arc::strong_count(&file), 1);
    }

    #[test]
    fn clear_releases_everything() {
        let file = src(b"abc");
        let mut b = TxBuffer::from(SocketBuffer::new(vec![0; 4]));
        b.enqueue_ref(TxRef::new(file.clone(), 0, 3).unwrap());
        b.clear();
        assert_eq!(Arc::strong_count(&file), 1);
        assert!(b.is_empty());
        assert_eq!(b.enqueue_slice(b"ab"), 2);
        assert_eq!(contents(&b), b"ab");
    }
}
