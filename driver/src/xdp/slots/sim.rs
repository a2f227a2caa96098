//! Slotted receive without a socket: [`SlotBed`] plays the kernel's side of
//! the fill and RX rings against the driver's own [`SlotRx`] code, so the
//! unit tests and the fuzz harness (`zcstack-tests`' `fuzz::slots`, through
//! this crate's `fuzzing` feature) drive exactly what `Xdp::rx_burst` runs.
//!
//! The kernel model follows copy-mode multi-buffer receive (`__xsk_rcv` in
//! net/xdp/xsk.c, `xp_alloc` in net/xdp/xsk_buff_pool.c): each buffer of a
//! packet is a fill ring address, taken first from the buffer pool's free
//! list (buffers taken earlier for a packet that was then dropped, reused
//! last in first out), then from the fill ring in order; the data goes at
//! `addr + XDP_PACKET_HEADROOM`, at most `chunk - XDP_PACKET_HEADROOM`
//! bytes per buffer; every descriptor but a packet's last has
//! `XDP_PKT_CONTD`.

use std::collections::VecDeque;

use super::{Ctx, SlotRx};
use crate::xdp::{MAX_DESCS, XDP_HEADROOM};
use crate::{DriverStats, Frame, Pool};

/// What became of a packet the kernel received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Received {
    /// Its descriptors went to the driver.
    Passed,
    /// The kernel had too few buffers and dropped it; the buffers it took
    /// stay on its free list.
    NoBuffers,
    /// Its descriptors went to the driver, but a buffer the kernel held
    /// belongs to a frame no longer in the driver's in-flight table (the
    /// data was not written).
    FrameTakenBack(u32),
}

/// The driver's slotted receive state and a model of the kernel's side.
pub struct SlotBed {
    pool: Pool,
    inflight: Vec<Option<Frame>>,
    recycled: Vec<Frame>,
    stats: DriverStats,
    sr: SlotRx,
    /// Fill ring entries, oldest first, as the kernel takes them.
    fill: VecDeque<u64>,
    /// Fill ring capacity (the driver never posts more than the free entries).
    ring: usize,
    /// Buffers the kernel took from the fill ring and holds unused (LIFO).
    free_list: Vec<u64>,
    stride: usize,
    shift: u32,
}

impl SlotBed {
    /// Slotted receive over `pool`'s frames with `chunk`-byte UMEM chunks,
    /// packets of up to `wire` bytes and a fill ring of `ring` entries;
    /// `None` where the driver would not use slots for this geometry.
    pub fn new(pool: Pool, ring: usize, chunk: usize, wire: usize) -> Option<SlotBed> {
        let frame_size = pool.frame_size();
        if !(XDP_HEADROOM < chunk && chunk <= frame_size) || wire == 0 {
            return None;
        }
        let sr = SlotRx::new(pool.capacity(), frame_size, chunk, wire)?;
        Some(SlotBed {
            inflight: (0..pool.capacity()).map(|_| None).collect(),
            recycled: Vec::new(),
            stats: DriverStats::default(),
            sr,
            fill: VecDeque::with_capacity(ring),
            ring,
            free_list: Vec::new(),
            stride: chunk - XDP_HEADROOM,
            shift: frame_size.trailing_zeros(),
            pool,
        })
    }

    fn cx(&mut self) -> (Ctx<'_>, &mut SlotRx) {
        (
            Ctx {
                inflight: &mut self.inflight,
                recycled: &mut self.recycled,
                pool: &self.pool,
                stats: &mut self.stats,
                shift: self.shift,
            },
            &mut self.sr,
        )
    }

    /// Bytes of packet data one buffer holds.
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Slots of a frame that holds the largest packet.
    pub fn slots_per_frame(&self) -> usize {
        self.sr.per_frame as usize
    }

    /// Free fill ring entries.
    pub fn ring_free(&self) -> usize {
        self.ring - self.fill.len()
    }

    /// The driver's refill with `free` entries offered (at most the ring's
    /// free entries are used); returns the frames lent.
    pub fn refill(&mut self, free: u32) -> usize {
        let free = free.min(self.ring_free() as u32);
        let mut posted = Vec::new();
        let (mut cx, sr) = self.cx();
        let lent = sr.refill(free, &mut cx, |a| posted.push(a));
        assert!(
            posted.len() <= free as usize,
            "refill posted {} entries into {free} free",
            posted.len()
        );
        self.fill.extend(posted);
        self.pool.kernel_lent(lent as isize);
        lent
    }

    /// The kernel receives `data` (at most `MAX_DESCS` buffers) and
    /// hands the descriptors to the driver's receive path.
    pub fn receive(&mut self, data: &[u8], out: &mut Vec<Frame>) -> Received {
        let need = data.len().div_ceil(self.stride).max(1);
        assert!(need <= MAX_DESCS, "a packet of {} bytes", data.len());
        let mut bufs = Vec::with_capacity(need);
        while bufs.len() < need {
            match self.free_list.pop().or_else(|| self.fill.pop_front()) {
                Some(a) => bufs.push(a),
                None => break,
            }
        }
        if bufs.len() < need {
            self.free_list.extend(bufs.into_iter().rev());
            return Received::NoBuffers;
        }
        let pieces: Vec<&[u8]> = if data.is_empty() {
            vec![data]
        } else {
            data.chunks(self.stride).collect()
        };
        let mut result = Received::Passed;
        for (i, (piece, addr)) in pieces.iter().zip(bufs).enumerate() {
            let (idx, off) = self.locate(addr);
            match self.inflight[idx].as_mut() {
                Some(f) => {
                    f.set_offset(0);
                    let at = off + XDP_HEADROOM;
                    f.room_mut()[at..at + piece.len()].copy_from_slice(piece);
                }
                // Only after descriptors no kernel writes: the bytes would
                // land in memory the driver already gave away.
                None => result = Received::FrameTakenBack(idx as u32),
            }
            let more = i + 1 < pieces.len();
            let (mut cx, sr) = self.cx();
            sr.on_desc(
                addr + XDP_HEADROOM as u64,
                piece.len() as u32,
                more,
                &mut cx,
                out,
            );
        }
        result
    }

    /// The kernel takes `n` buffers for a packet and then drops it (RX ring
    /// full): they go to its free list, to be used first next time.
    pub fn take_and_drop(&mut self, n: usize) {
        for _ in 0..n {
            match self.fill.pop_front() {
                Some(a) => self.free_list.push(a),
                None => break,
            }
        }
    }

    /// A descriptor the kernel would never write (any address, length and
    /// flag), straight into the driver's receive path.
    pub fn raw_descriptor(&mut self, addr: u64, len: u32, more: bool, out: &mut Vec<Frame>) {
        let (mut cx, sr) = self.cx();
        sr.on_desc(addr, len, more, &mut cx, out);
    }

    fn locate(&self, addr: u64) -> (usize, usize) {
        let a = addr as usize;
        (a >> self.shift, a & ((1 << self.shift) - 1))
    }

    /// Frames with a slot the kernel still holds (fill ring or free list).
    /// In index order. Marks frames in a table rather than sorting the
    /// slots: the fuzz harness asks after every operation.
    pub fn frames_with_kernel_slots(&self) -> Vec<u32> {
        let mut held = vec![false; self.inflight.len()];
        for &a in self.fill.iter().chain(&self.free_list) {
            let i = self.locate(a).0;
            if i >= held.len() {
                held.resize(i + 1, false);
            }
            held[i] = true;
        }
        (0u32..)
            .zip(held)
            .filter_map(|(i, h)| h.then_some(i))
            .collect()
    }

    /// Frames the driver has lent the kernel (its in-flight table).
    pub fn frames_lent(&self) -> usize {
        self.inflight.iter().filter(|f| f.is_some()).count()
    }

    /// Spare frames the driver keeps for refills.
    pub fn frames_recycled(&self) -> usize {
        self.recycled.len()
    }

    /// The driver's counters.
    pub fn stats(&self) -> DriverStats {
        self.stats
    }

    /// The pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }
}

impl Drop for SlotBed {
    /// As `Xdp`'s drop: frames lent to the kernel come back with the socket.
    fn drop(&mut self) {
        self.pool.kernel_lent(-(self.frames_lent() as isize));
    }
}

#[cfg(test)]
impl SlotBed {
    /// The driver's state, for unit tests.
    pub(super) fn slot_rx(&self) -> &SlotRx {
        &self.sr
    }
}
