//! Receiving multi-buffer packets in place: one pool frame, several fill
//! ring slots laid out so a packet lands contiguously.
//!
//! With unaligned UMEM chunks the kernel takes a fill address as it is and
//! writes a buffer's data at `addr + XDP_PACKET_HEADROOM`, at most
//! `chunk - XDP_PACKET_HEADROOM` bytes of it (copy mode: `__xsk_rcv` in
//! net/xdp/xsk.c, `xp_init_xskb_addr` in xsk_buff_pool.h). Posting a frame's
//! slots `stride = chunk - XDP_PACKET_HEADROOM` apart therefore makes the
//! data of consecutive slots adjacent: a packet whose descriptors are a
//! frame's consecutive slots is one contiguous run inside that frame, and
//! the frame goes to the stack as it is, without the reassembly copy.
//!
//! Ownership: a frame can go to the stack (or back to the pool) only when
//! the kernel holds none of its slots; `out[idx]` counts them. A packet
//! whose descriptors are not one contiguous run of one otherwise returned
//! frame is copied (counted in `rx_copied_bytes`): into the frame it
//! starts in when that frame is done and has room, else into a spare one.
//!
//! Alignment: the fill ring is FIFO, so a packet shorter than its frame's
//! slots shifts where later packets start. Refill keeps frame starts at
//! packet starts by predicting the slots of the packets to come: the last
//! [`HIST`] packet sizes, read as a repeating pattern (a bulk sender writing
//! 64 KiB at a time sends full segments with a short one every 64 KiB), or
//! else "every packet uses a whole frame". It walks the predicted packet
//! starts from the last packet end it saw, posts a shorter frame up to the
//! next predicted start, then one frame per predicted packet. A wrong guess
//! only costs copies, never correctness.

use super::{MAX_DESCS, XDP_HEADROOM};
use crate::{DriverStats, Frame, Pool};

#[cfg(any(test, feature = "fuzzing"))]
pub mod sim;

/// Packets whose sizes the refill predictor looks at.
const HIST: usize = 32;
/// Longest repeating size pattern it recognises (e.g. 2 at MTU 65535: a
/// full segment, then a short one, as a sender writing 64 KiB at a time
/// produces; 8 at MTU 9000).
const MAX_PERIOD: usize = 16;

/// Per-driver state of slotted receive.
pub(super) struct SlotRx {
    /// Bytes between a frame's slots (and the most data one slot holds).
    stride: u64,
    /// Slots of a full frame: enough for the largest packet.
    per_frame: u64,
    /// Slots of each frame the kernel still holds (fill or RX ring).
    out: Vec<u8>,
    /// Fill-stream number of each posted frame's first slot.
    seq0: Vec<u64>,
    /// Fill-stream number refill posts next.
    post_seq: u64,
    /// Fill-stream number at which the next packet is expected to start.
    next_start: u64,
    /// Sizes (in slots) of the last [`HIST`] packets, a ring; `hist_n` counts all.
    hist: [u8; HIST],
    hist_n: usize,
    /// The pattern [`SlotRx::period`] found last (refreshed every [`HIST`] packets).
    period: usize,
    /// The packet being received: (frame index, offset in it, length) per descriptor.
    pkt: [(u32, u32, u32); MAX_DESCS],
    pkt_n: usize,
    pkt_bad: bool,
    /// Fill-stream number of the packet's last slot so far.
    pkt_last: u64,
}

/// What the receive path needs from the driver, borrowed for one burst.
pub(super) struct Ctx<'a> {
    pub inflight: &'a mut [Option<Frame>],
    pub recycled: &'a mut Vec<Frame>,
    pub pool: &'a Pool,
    pub stats: &'a mut DriverStats,
    pub shift: u32,
}

impl SlotRx {
    /// Slotted receive for `frames` frames of `frame_size` bytes, `chunk`-byte
    /// UMEM chunks and packets of up to `wire` bytes; `None` if a frame cannot
    /// hold the slots of the largest packet.
    pub fn new(frames: usize, frame_size: usize, chunk: usize, wire: usize) -> Option<SlotRx> {
        let stride = chunk - XDP_HEADROOM;
        let per_frame = wire.div_ceil(stride);
        // The kernel checks `addr + chunk` lies in the UMEM for every slot,
        // and writes up to `addr + chunk`: the last slot must end in the frame.
        if per_frame > MAX_DESCS || (per_frame - 1) * stride + chunk > frame_size {
            return None;
        }
        Some(SlotRx {
            stride: stride as u64,
            per_frame: per_frame as u64,
            out: vec![0; frames],
            seq0: vec![0; frames],
            post_seq: 0,
            next_start: 0,
            hist: [0; HIST],
            hist_n: 0,
            period: 0,
            pkt: [(0, 0, 0); MAX_DESCS],
            pkt_n: 0,
            pkt_bad: false,
            pkt_last: 0,
        })
    }

    /// Fills `fill` with frames (recycled ones first, then the pool's), each
    /// with as many slots as the packet predicted to start there will use,
    /// so packets keep starting at frame starts. Returns the frames lent.
    pub fn refill(&mut self, free: u32, cx: &mut Ctx<'_>, mut post: impl FnMut(u64)) -> usize {
        let mut free = u64::from(free);
        let period = self.period;
        // Walk the predicted packet starts from the last packet end seen
        // to where posting continues: whole pattern cycles at once, then at
        // most one cycle's packets.
        let cycle_len = period.max(1);
        let cycle: u64 = (0..cycle_len).map(|i| self.predict(period, i)).sum();
        let gap = self.post_seq.saturating_sub(self.next_start);
        let (mut pos, mut k) = (self.next_start + gap / cycle * cycle, 0);
        while pos < self.post_seq {
            pos += self.predict(period, k);
            k += 1;
        }
        let mut lent = 0;
        loop {
            // Up to the next predicted start (a packet predicted to start
            // before what is posted will straddle), else one packet's slots.
            let size = if pos > self.post_seq {
                pos - self.post_seq
            } else {
                self.predict(period, k)
            };
            if free < size {
                break;
            }
            let Some(frame) = cx.recycled.pop().or_else(|| cx.pool.alloc()) else {
                cx.stats.rx_dropped_no_frame += 1;
                break;
            };
            if pos == self.post_seq {
                pos += size;
                k += 1;
            }
            let idx = frame.index() as usize;
            let base = (idx as u64) << cx.shift;
            for s in 0..size {
                post(base + s * self.stride);
            }
            self.out[idx] = size as u8;
            self.seq0[idx] = self.post_seq;
            cx.inflight[idx] = Some(frame);
            self.post_seq += size;
            free -= size;
            lent += 1;
        }
        lent
    }

    /// The repeating pattern that best explains the recent packet sizes:
    /// 0 for "every packet uses a whole frame's slots" (bulk transfer), else
    /// its period. Ties go to the simpler explanation.
    fn period(&self) -> usize {
        if self.hist_n < HIST {
            return 0;
        }
        let size = |i: usize| self.hist[i % HIST] as u64;
        let mut best = (
            self.hist
                .iter()
                .filter(|&&h| h as u64 != self.per_frame)
                .count(),
            0,
        );
        for p in 1..=MAX_PERIOD {
            let misses = (p..HIST)
                .filter(|&i| size(self.hist_n + i) != size(self.hist_n + i - p))
                .count();
            if misses < best.0 {
                best = (misses, p);
            }
        }
        best.1
    }

    /// Predicted slots of the `k`-th packet after the last one seen.
    fn predict(&self, period: usize, k: usize) -> u64 {
        if period == 0 {
            return self.per_frame;
        }
        // The pattern continues: the packet `period` places earlier in it.
        let back = period - k % period;
        u64::from(self.hist[(self.hist_n + HIST - back) % HIST]).max(1)
    }

    /// Takes one RX descriptor (`addr` with the unaligned offset already
    /// added); a packet's last one hands it to `rx` or drops it, counted.
    pub fn on_desc(
        &mut self,
        addr: u64,
        len: u32,
        more: bool,
        cx: &mut Ctx<'_>,
        rx: &mut Vec<Frame>,
    ) {
        let idx = (addr >> cx.shift) as usize;
        let off = addr & ((1u64 << cx.shift) - 1);
        let ours = self.out.get(idx).is_some_and(|&o| o > 0)
            && cx.inflight[idx].is_some()
            && off >= XDP_HEADROOM as u64
            && (off - XDP_HEADROOM as u64).is_multiple_of(self.stride);
        if !ours {
            // Not a slot we posted (never seen): the packet is lost.
            self.pkt_bad = true;
        } else if self.pkt_n == MAX_DESCS {
            // More fragments than a packet can have: give the slot back now.
            self.pkt_bad = true;
            self.release(idx, cx);
        } else {
            self.pkt[self.pkt_n] = (idx as u32, off as u32, len);
            self.pkt_n += 1;
            self.pkt_last = self.seq0[idx] + (off - XDP_HEADROOM as u64) / self.stride;
        }
        if !more {
            self.finish(cx, rx);
        }
    }

    /// One slot of frame `idx` is back; a frame with none left out is done
    /// (back to the recycled list). Returns whether it was.
    fn release(&mut self, idx: usize, cx: &mut Ctx<'_>) -> bool {
        let o = &mut self.out[idx];
        *o = o.saturating_sub(1);
        if *o == 0
            && let Some(f) = cx.inflight[idx].take()
        {
            cx.recycled.push(f);
            cx.pool.kernel_lent(-1);
            return true;
        }
        false
    }

    /// The packet's last descriptor arrived: deliver it in place, or copy it.
    fn finish(&mut self, cx: &mut Ctx<'_>, rx: &mut Vec<Frame>) {
        let (pkt, n, bad) = (self.pkt, self.pkt_n, self.pkt_bad);
        self.pkt_n = 0;
        self.pkt_bad = false;
        if n == 0 {
            cx.stats.rx_errors += 1;
            return;
        }
        self.next_start = self.pkt_last + 1;
        self.hist[self.hist_n % HIST] = n.min(self.per_frame as usize) as u8;
        self.hist_n += 1;
        if self.hist_n.is_multiple_of(HIST) {
            self.period = self.period();
        }
        let descs = &pkt[..n];
        let total: usize = descs.iter().map(|d| d.2 as usize).sum();
        let (idx0, off0, _) = descs[0];
        let idx0 = idx0 as usize;
        // How many leading descriptors are one contiguous run in frame idx0.
        let mut run = 1;
        while run < n
            && descs[run].0 as usize == idx0
            && descs[run].1 == descs[run - 1].1 + descs[run - 1].2
        {
            run += 1;
        }
        let frame_size = 1usize << cx.shift;
        // In place: the run lies in the head frame and the kernel holds no
        // other slot of it; what follows the run is copied behind it.
        let in_place =
            !bad && self.out[idx0] as usize == run && off0 as usize + total <= frame_size;
        let mut head = None;
        let mut at = 0;
        if in_place {
            if let Some(mut f) = cx.inflight[idx0].take() {
                f.set_offset(off0 as usize);
                f.set_len(total);
                head = Some(f);
                cx.pool.kernel_lent(-1);
            }
            self.out[idx0] = 0;
            at = descs[..run].iter().map(|d| d.2 as usize).sum();
        } else if !bad && XDP_HEADROOM + total <= frame_size {
            head = cx.recycled.pop().or_else(|| cx.pool.alloc()).map(|mut f| {
                f.set_offset(XDP_HEADROOM);
                f.set_len(total);
                f
            });
            if head.is_none() {
                cx.stats.rx_dropped_no_frame += 1;
            }
        }
        let first_copied = if in_place { run } else { 0 };
        if let Some(dst) = head.as_mut() {
            let copied = total - at;
            for &(idx, off, len) in &descs[first_copied..] {
                let (off, len) = (off as usize, len as usize);
                match cx.inflight[idx as usize].as_mut() {
                    Some(src) if off + len <= frame_size => {
                        src.set_offset(off);
                        src.set_len(len);
                        dst.data_mut()[at..at + len].copy_from_slice(src.data());
                        at += len;
                    }
                    _ => break,
                }
            }
            if at == total {
                cx.stats.rx_copied_bytes += copied as u64;
            } else {
                head = None;
            }
        }
        // Every other slot of the packet is back.
        for &(idx, _, _) in &descs[first_copied..] {
            self.release(idx as usize, cx);
        }
        match head {
            Some(f) => {
                cx.stats.rx_packets += 1;
                cx.stats.rx_bytes += total as u64;
                rx.push(f);
            }
            None => cx.stats.rx_errors += 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::sim::{Received, SlotBed};
    use super::*;
    use crate::PoolConfig;

    const FRAME: usize = 16384;
    const CHUNK: usize = 4096;
    const STRIDE: usize = CHUNK - XDP_HEADROOM;
    /// MTU 9000: three slots per frame.
    const WIRE: usize = 9014;

    fn bed() -> SlotBed {
        let pool = PoolConfig::new()
            .frames(64)
            .frame_size(FRAME as u32)
            .build()
            .unwrap();
        SlotBed::new(pool, 64, CHUNK, WIRE).unwrap()
    }

    fn bytes(len: usize, seed: u8) -> Vec<u8> {
        (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect()
    }

    #[test]
    fn a_whole_frame_packet_is_delivered_in_place_and_a_straddler_copies_its_tail() {
        let mut b = bed();
        b.refill(9);
        assert_eq!(b.ring_free(), 64 - 9, "three frames of three slots");
        let mut out = Vec::new();
        let p1 = bytes(WIRE, 1);
        assert_eq!(b.receive(&p1, &mut out), Received::Passed);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].data(), &p1[..]);
        assert_eq!(
            out[0].offset(),
            XDP_HEADROOM,
            "in place, from the first slot"
        );
        assert_eq!(b.stats().rx_copied_bytes, 0);
        // A short packet in the next frame's first slot: that frame is not
        // done (two slots still out), so it is copied.
        let p2 = bytes(100, 2);
        assert_eq!(b.receive(&p2, &mut out), Received::Passed);
        assert_eq!(out[1].data(), &p2[..]);
        assert_eq!(b.stats().rx_copied_bytes, 100);
        // A full packet in that frame's last two slots and the next frame's
        // first: in place in its first frame, the last fragment copied.
        let p3 = bytes(WIRE, 3);
        assert_eq!(b.receive(&p3, &mut out), Received::Passed);
        assert_eq!(out[2].data(), &p3[..]);
        assert_eq!(out[2].offset(), STRIDE + XDP_HEADROOM);
        assert_eq!(b.stats().rx_copied_bytes, 100 + (WIRE - 2 * STRIDE) as u64);
        assert_eq!((b.stats().rx_packets, b.stats().rx_errors), (3, 0));
        // Frames: one posted frame still has two slots out, in the kernel.
        assert_eq!(b.pool().stats().in_kernel, 1);
        drop(out);
        let pool = b.pool().clone();
        drop(b);
        let st = pool.stats();
        assert_eq!(st.free, st.capacity, "{st}");
        assert_eq!(st.in_kernel, 0, "{st}");
    }

    #[test]
    fn refill_follows_a_repeating_size_pattern() {
        let mut b = bed();
        // Full, full, short: the pattern a 64 KiB-writing sender makes.
        b.refill(64);
        let mut out = Vec::new();
        let mut round_trip = |b: &mut SlotBed, round: u8| {
            for (len, seed) in [(WIRE, round), (WIRE, round + 1), (500, round + 2)] {
                assert_eq!(b.receive(&bytes(len, seed), &mut out), Received::Passed);
                assert_eq!(out.len(), 1);
                assert_eq!(out[0].data(), &bytes(len, seed)[..]);
                out.clear();
                let free = b.ring_free() as u32;
                if free >= 32 {
                    b.refill(free);
                }
            }
        };
        for round in 0..20u8 {
            round_trip(&mut b, round);
        }
        assert_eq!(b.slot_rx().period, 3);
        // Once the pattern is learned (and what was posted before it is
        // used up), nothing more is copied.
        let before = b.stats().rx_copied_bytes;
        for round in 0..10u8 {
            round_trip(&mut b, round);
        }
        assert_eq!(b.stats().rx_copied_bytes, before, "copies after learning");
        assert_eq!(b.stats().rx_errors, 0);
    }
}
