//! ZCSTACK PATCH 9 (see ZCSTACK-PATCHES.md): the sender's scoreboard.
//!
//! Every sequence number the socket has sent and that is not yet
//! cumulatively acknowledged, `[SND.UNA, SND.NXT)`, lies in exactly one
//! [`Range`] of the scoreboard: ranges are sorted and contiguous. A range
//! carries what the sender knows about its bytes: selectively acknowledged
//! (RFC 2018), declared lost and waiting for a retransmission, retransmitted
//! and in flight again, and when it was (re)transmitted last — the time RACK
//! (RFC 8985) compares to decide that a segment is lost.
//!
//! The scoreboard holds at most [`RANGES`] ranges: with `alloc` a vector
//! that grows on demand (an idle connection holds none) up to 256, else a
//! fixed array of 64. Consecutive transmissions within a short time share a
//! range (one range per burst, not per segment), SACKed neighbours and
//! lost-but-not-retransmitted neighbours are merged at once, and when the
//! scoreboard is full the two neighbours with the closest transmit times are
//! merged, keeping the *later* time for RACK's ordering (it then declares
//! their loss a little later than it could, never earlier) and marking the
//! range [`COARSE`]: an RTT measured from such a range starts at its
//! *earliest* transmission, so it can be too long, never too short. When no
//! two neighbours share a state, a SACK mark is dropped (at worst bytes the
//! peer holds are resent), and failing that, neighbours in flight, resent
//! or lost merge into one range in flight (RACK declares it lost later if it
//! was). Sent bytes are never forgotten, and a retransmission always leaves
//! its bytes marked resent, so the sender moves on.

use crate::time::{Duration, Instant};
use crate::wire::TcpSeqNumber;

/// How many ranges a scoreboard holds at most. With `alloc`, the ranges
/// live on the heap and grow on demand (an idle connection holds none, a
/// clean transfer a few, a 4 MiB window through 1% loss and 20% reordering
/// needs about 190); without it, a fixed array.
#[cfg(feature = "alloc")]
pub(super) const RANGES: usize = 256;
#[cfg(not(feature = "alloc"))]
pub(super) const RANGES: usize = 64;

/// ZCSTACK PATCH 31: the most heap the ranges take, in bytes (0 without
/// `alloc`: the array is part of the socket): the vector grows one range
/// at a time, so its capacity is at most the power of two at or above
/// [`RANGES`] (`a_full_scoreboard_stays_within_heap_max` checks it).
#[cfg(feature = "alloc")]
pub(super) const HEAP_MAX: usize =
    crate::storage::vec_capacity_max(RANGES) * core::mem::size_of::<Range>();
#[cfg(not(feature = "alloc"))]
pub(super) const HEAP_MAX: usize = 0;

/// The peer holds these bytes (a SACK block covered them).
pub(super) const SACKED: u8 = 1 << 0;
/// Declared lost; waiting to be retransmitted.
pub(super) const LOST: u8 = 1 << 1;
/// Retransmitted, and not declared lost since.
pub(super) const RETRANS: u8 = 1 << 2;
/// Retransmitted at least once: an RTT sample from these bytes is
/// ambiguous (Karn), and their delivery says nothing about reordering.
pub(super) const EVER_RETRANS: u8 = 1 << 3;

/// Merged from transmissions at different times: its bytes were sent
/// between `first` and `xmit`, and an RTT measured from `xmit` could be far
/// too short. RTT samples and RACK's ordering use `first` (too long, never
/// too short: loss detection then waits a little longer).
pub(super) const COARSE: u8 = 1 << 4;

/// Flags two ranges must share to merge.
const IDENTITY: u8 = SACKED | LOST | RETRANS;

/// `a - b` in sequence space, signed.
#[inline]
pub(super) fn seq_diff(a: TcpSeqNumber, b: TcpSeqNumber) -> i32 {
    a.0.wrapping_sub(b.0)
}

/// Bytes from `b` up to `a`, or 0 if `a` is not after `b`.
#[inline]
pub(super) fn seq_len(a: TcpSeqNumber, b: TcpSeqNumber) -> usize {
    seq_diff(a, b).max(0) as usize
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct Range {
    pub start: TcpSeqNumber,
    pub end: TcpSeqNumber,
    /// When the range's bytes were first sent in this transmission.
    pub first: Instant,
    /// When the range's bytes were last sent (RACK's `xmit_ts`).
    pub xmit: Instant,
    pub flags: u8,
    /// ZCSTACK PATCH 19: the delivery-rate state when they were last sent.
    pub tx: TxSnap,
}

/// ZCSTACK PATCH 19: the connection's delivery state when a segment left
/// (draft-cheng-iccrg-delivery-rate-estimation 3.2): its ACK then gives the
/// bytes delivered, and the time it took, between that send and the ACK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct TxSnap {
    /// Bytes delivered by then (`C.delivered`).
    pub delivered: u64,
    /// When the last of them was delivered (`C.delivered_time`).
    pub delivered_time: Instant,
    /// When the segment delivered last had been sent (`C.first_sent_time`).
    pub first_sent_time: Instant,
    /// The application had nothing more to send.
    pub app_limited: bool,
}

impl TxSnap {
    pub const ZERO: TxSnap = TxSnap {
        delivered: 0,
        delivered_time: Instant::ZERO,
        first_sent_time: Instant::ZERO,
        app_limited: false,
    };
}

impl Range {
    const EMPTY: Range = Range {
        start: TcpSeqNumber(0),
        end: TcpSeqNumber(0),
        first: Instant::ZERO,
        xmit: Instant::ZERO,
        flags: 0,
        tx: TxSnap::ZERO,
    };

    #[inline]
    pub fn len(&self) -> usize {
        seq_len(self.end, self.start)
    }

    #[inline]
    pub fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    /// Whether `self` and `next` (its right neighbour) merge without losing
    /// anything RACK or the sender needs.
    fn merges_losslessly(&self, next: &Range) -> bool {
        if self.flags & IDENTITY != next.flags & IDENTITY {
            return false;
        }
        // Delivered bytes, and lost bytes waiting for a retransmission, no
        // longer need their transmit time.
        self.has(SACKED) || (self.has(LOST) && !self.has(RETRANS)) || self.xmit == next.xmit
    }
}

/// What an ACK newly delivered: bytes, the most recently sent delivered
/// range (RACK), an RTT sample, and whether delivery was out of order.
#[derive(Debug, Clone, Copy)]
pub(super) struct Delivery {
    /// Bytes newly cumulatively or selectively acknowledged (not counting
    /// bytes that had been SACKed before).
    pub bytes: usize,
    /// Of those, bytes newly SACKed.
    pub sacked: usize,
    /// `(xmit, end)` of the most recently sent range delivered by this ACK
    /// whose delivery is not ambiguous (RFC 8985 6.2 step 2).
    pub latest: Option<(Instant, TcpSeqNumber)>,
    /// Whether a range that was never retransmitted was delivered below the
    /// highest sequence delivered before (RFC 8985 6.2 step 3).
    pub reordered: bool,
    /// The highest sequence this ACK delivered.
    pub highest: Option<TcpSeqNumber>,
    /// The latest transmit time of delivered bytes never retransmitted: an
    /// RTT sample without Karn's ambiguity.
    pub clean: Option<Instant>,
    /// ZCSTACK PATCH 19: `(xmit, end, tx)` of the most recently sent range
    /// this ACK delivered, retransmissions included: its send started the
    /// rate sample.
    pub rate: Option<(Instant, TcpSeqNumber, TxSnap)>,
    /// The highest sequence delivered before this ACK (RACK.fack).
    fack: Option<TcpSeqNumber>,
    now: Instant,
    min_rtt: Option<Duration>,
}

impl Delivery {
    pub fn new(now: Instant, fack: Option<TcpSeqNumber>, min_rtt: Option<Duration>) -> Delivery {
        Delivery {
            bytes: 0,
            sacked: 0,
            latest: None,
            reordered: false,
            highest: None,
            clean: None,
            rate: None,
            fack,
            now,
            min_rtt,
        }
    }

    /// The time of the ACK.
    pub fn now(&self) -> Instant {
        self.now
    }

    /// Accounts for the bytes of range `r` (as it was before this ACK) up
    /// to `end` being delivered.
    fn deliver(&mut self, r: &Range, end: TcpSeqNumber, by_sack: bool) {
        let bytes = seq_len(end, r.start);
        self.bytes += bytes;
        if by_sack {
            self.sacked += bytes;
        }
        if self.highest.is_none_or(|h| end > h) {
            self.highest = Some(end);
        }
        if self
            .rate
            .is_none_or(|(xmit, e, _)| sent_after(r.xmit, end, xmit, e))
        {
            self.rate = Some((r.xmit, end, r.tx));
        }
        let retransmitted = r.has(EVER_RETRANS);
        if !retransmitted && self.fack.is_some_and(|fack| end < fack) {
            self.reordered = true;
        }
        // When these bytes were sent, as late as is certain.
        let sent = if r.has(COARSE) { r.first } else { r.xmit };
        if !retransmitted && self.clean.is_none_or(|c| sent > c) {
            self.clean = Some(sent);
        }
        if retransmitted {
            // RFC 8985 6.2 step 2: the ACK may be for the original
            // transmission. A delivery faster than any RTT seen must be. (The
            // RFC's other test, TSecr older than the retransmission, fails
            // for SACKs: a receiver echoes TS.Recent, which out-of-order
            // segments do not update (RFC 7323 4.3), so a SACK of the
            // retransmission itself echoes an older value. Linux checks the
            // RTT only, as here.)
            let rtt = self.now.total_micros() - r.xmit.total_micros();
            if self
                .min_rtt
                .is_some_and(|min| rtt < min.total_micros() as i64)
            {
                return;
            }
        }
        if self
            .latest
            .is_none_or(|(xmit, e)| sent_after(sent, end, xmit, e))
        {
            self.latest = Some((sent, end));
        }
    }
}

/// RFC 8985 `RACK_sent_after`: whether `(t1, seq1)` was sent after `(t2, seq2)`.
#[inline]
pub(super) fn sent_after(t1: Instant, seq1: TcpSeqNumber, t2: Instant, seq2: TcpSeqNumber) -> bool {
    t1 > t2 || (t1 == t2 && seq1 > seq2)
}

/// The ranges' storage: a vector grown on demand with `alloc`, else a
/// fixed array. Both hold at most [`RANGES`].
#[cfg(feature = "alloc")]
#[derive(Clone, Default)]
struct Store(alloc::vec::Vec<Range>);

#[cfg(feature = "alloc")]
impl Store {
    fn as_slice(&self) -> &[Range] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [Range] {
        &mut self.0
    }
    fn insert(&mut self, i: usize, r: Range) {
        self.0.insert(i, r)
    }
    fn remove(&mut self, i: usize) {
        self.0.remove(i);
    }
    fn remove_front(&mut self, n: usize) {
        self.0.drain(..n);
    }
    fn truncate(&mut self, n: usize) {
        self.0.truncate(n)
    }
    /// Empties the store and gives its memory back.
    fn release(&mut self) {
        self.0 = alloc::vec::Vec::new();
    }
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.0.capacity() * core::mem::size_of::<Range>()
    }
}

#[cfg(not(feature = "alloc"))]
#[derive(Clone)]
struct Store {
    items: [Range; RANGES],
    len: usize,
}

#[cfg(not(feature = "alloc"))]
impl Default for Store {
    fn default() -> Self {
        Store {
            items: [Range::EMPTY; RANGES],
            len: 0,
        }
    }
}

#[cfg(not(feature = "alloc"))]
impl Store {
    fn as_slice(&self) -> &[Range] {
        &self.items[..self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [Range] {
        &mut self.items[..self.len]
    }
    fn insert(&mut self, i: usize, r: Range) {
        self.items.copy_within(i..self.len, i + 1);
        self.items[i] = r;
        self.len += 1;
    }
    fn remove(&mut self, i: usize) {
        self.items.copy_within(i + 1..self.len, i);
        self.len -= 1;
    }
    fn remove_front(&mut self, n: usize) {
        self.items.copy_within(n..self.len, 0);
        self.len -= n;
    }
    fn truncate(&mut self, n: usize) {
        self.len = self.len.min(n);
    }
    fn release(&mut self) {
        self.len = 0;
    }
}

#[derive(Clone, Default)]
pub(super) struct Scoreboard {
    store: Store,
    /// Bytes in SACKed ranges.
    sacked: usize,
    /// Bytes in ranges declared lost and not retransmitted since.
    lost: usize,
}

impl core::fmt::Debug for Scoreboard {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Scoreboard")
            .field("ranges", &self.ranges())
            .field("sacked", &self.sacked)
            .field("lost", &self.lost)
            .finish()
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Scoreboard {
    fn format(&self, f: defmt::Formatter) {
        defmt::write!(
            f,
            "Scoreboard {{ ranges: {}, sacked: {}, lost: {} }}",
            self.ranges().len(),
            self.sacked,
            self.lost
        )
    }
}

impl Scoreboard {
    /// Forgets every range (the connection starts afresh or closes) and
    /// gives the memory back.
    pub fn clear(&mut self) {
        self.store.release();
        self.sacked = 0;
        self.lost = 0;
    }

    pub fn is_empty(&self) -> bool {
        self.ranges().is_empty()
    }

    /// ZCSTACK PATCH 16: gives the ranges' memory back when there are none
    /// (the vector keeps its capacity otherwise, up to [`RANGES`] ranges,
    /// after loss recovery on a connection that then idles).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.store.release();
        }
    }

    pub fn ranges(&self) -> &[Range] {
        self.store.as_slice()
    }

    fn len(&self) -> usize {
        self.store.as_slice().len()
    }

    fn ranges_mut(&mut self) -> &mut [Range] {
        self.store.as_mut_slice()
    }

    pub fn start(&self) -> Option<TcpSeqNumber> {
        self.ranges().first().map(|r| r.start)
    }

    pub fn end(&self) -> Option<TcpSeqNumber> {
        self.ranges().last().map(|r| r.end)
    }

    /// Bytes the peer holds above SND.UNA.
    pub fn sacked_bytes(&self) -> usize {
        self.sacked
    }

    /// Bytes declared lost that wait for a retransmission.
    pub fn lost_bytes(&self) -> usize {
        self.lost
    }

    /// Bytes the scoreboard covers.
    pub fn total_bytes(&self) -> usize {
        match (self.start(), self.end()) {
            (Some(s), Some(e)) => seq_len(e, s),
            _ => 0,
        }
    }

    fn recount(&mut self) {
        let (mut sacked, mut lost) = (0, 0);
        for r in self.ranges() {
            if r.has(SACKED) {
                sacked += r.len();
            } else if r.has(LOST) {
                lost += r.len();
            }
        }
        self.sacked = sacked;
        self.lost = lost;
    }

    /// Merges neighbours that lose nothing by merging.
    fn coalesce(&mut self) {
        let len = self.len();
        if len < 2 {
            return;
        }
        let ranges = self.ranges_mut();
        let mut w = 0;
        for i in 1..len {
            let next = ranges[i];
            let cur = &mut ranges[w];
            if cur.merges_losslessly(&next) {
                if cur.xmit != next.xmit {
                    cur.flags |= COARSE;
                }
                cur.end = next.end;
                cur.flags |= next.flags;
                cur.xmit = cur.xmit.max(next.xmit);
                cur.first = cur.first.min(next.first);
            } else {
                w += 1;
                ranges[w] = next;
            }
        }
        self.store.truncate(w + 1);
    }

    /// Makes room for `slots` more ranges; false only if the scoreboard
    /// cannot shrink that far.
    fn make_room(&mut self, slots: usize) -> bool {
        while self.len() + slots > RANGES {
            if !self.shrink() {
                return false;
            }
        }
        true
    }

    /// Frees at least one slot; false if the scoreboard cannot shrink.
    fn shrink(&mut self) -> bool {
        let before = self.len();
        self.coalesce();
        if self.len() < before {
            return true;
        }
        // Merge the same-state neighbours sent closest together, keeping the
        // later transmit time (RACK then errs towards waiting).
        let mut best: Option<(usize, i64)> = None;
        let ranges = self.ranges();
        for i in 0..ranges.len().saturating_sub(1) {
            let (a, b) = (&ranges[i], &ranges[i + 1]);
            if a.flags & IDENTITY != b.flags & IDENTITY {
                continue;
            }
            let gap = (b.xmit.total_micros() - a.xmit.total_micros()).abs();
            if best.is_none_or(|(_, g)| gap < g) {
                best = Some((i, gap));
            }
        }
        let i = match best {
            Some((i, _)) => i,
            None => {
                // Every neighbour differs: more holes than half the ranges.
                // Forget the smallest SACKed range (it may be retransmitted
                // needlessly, never lost).
                let Some(i) = (0..ranges.len())
                    .filter(|&i| ranges[i].has(SACKED))
                    .min_by_key(|&i| ranges[i].len())
                else {
                    return self.merge_in_flight();
                };
                let r = &mut self.ranges_mut()[i];
                r.flags &= !SACKED;
                r.flags |= LOST;
                self.coalesce();
                self.recount();
                return self.len() < before || self.shrink();
            }
        };
        let next = self.ranges()[i + 1];
        let cur = &mut self.ranges_mut()[i];
        if cur.xmit != next.xmit {
            cur.flags |= COARSE;
        }
        cur.end = next.end;
        cur.flags |= next.flags;
        cur.xmit = cur.xmit.max(next.xmit);
        cur.first = cur.first.min(next.first);
        self.store.remove(i + 1);
        true
    }

    /// The last resort when no two neighbours share a state and nothing is
    /// SACKed (ranges alternate between in flight, resent and lost): merges
    /// the two neighbours sent closest together into one range in flight,
    /// sent at the later time. Lost bytes among them are then resent only
    /// once RACK or the retransmission timer declares them lost again: the
    /// sender waits a little longer, it never resends bytes still in flight
    /// and never forgets bytes it sent.
    fn merge_in_flight(&mut self) -> bool {
        let ranges = self.ranges();
        let Some(i) = (0..ranges.len().saturating_sub(1)).min_by_key(|&i| {
            (ranges[i + 1].xmit.total_micros() - ranges[i].xmit.total_micros()).abs()
        }) else {
            return false;
        };
        let next = self.ranges()[i + 1];
        let cur = &mut self.ranges_mut()[i];
        if cur.xmit != next.xmit {
            cur.flags |= COARSE;
        }
        cur.end = next.end;
        cur.flags = (cur.flags | next.flags) & !LOST;
        cur.xmit = cur.xmit.max(next.xmit);
        cur.first = cur.first.min(next.first);
        self.store.remove(i + 1);
        self.recount();
        true
    }

    fn find(&self, seq: TcpSeqNumber) -> Option<usize> {
        self.ranges()
            .iter()
            .position(|r| r.start <= seq && seq < r.end)
    }

    /// Makes `start` and `end` range boundaries, as far as there is room.
    ///
    /// Room for both is made first: making room merges neighbours, and
    /// could otherwise undo the first boundary while making the second.
    fn split2(&mut self, start: TcpSeqNumber, end: TcpSeqNumber) {
        self.make_room(2);
        self.split(start);
        self.split(end);
    }

    /// Makes `seq` a range boundary if a slot is free; false if it cannot.
    fn split(&mut self, seq: TcpSeqNumber) -> bool {
        let Some(i) = self.find(seq) else {
            return true;
        };
        let r = self.ranges()[i];
        if r.start == seq {
            return true;
        }
        if self.len() == RANGES {
            return false;
        }
        self.store.insert(i + 1, Range { start: seq, ..r });
        self.ranges_mut()[i].end = seq;
        true
    }

    /// Records the first transmission of `[start, end)` at `now`; ranges
    /// sent less than `grain` apart share a range.
    pub fn sent(
        &mut self,
        start: TcpSeqNumber,
        end: TcpSeqNumber,
        now: Instant,
        grain: Duration,
        tx: TxSnap,
    ) {
        if end <= start {
            return;
        }
        match self.end() {
            None => {}
            Some(e) if e == start => {}
            Some(e) if start < e => {
                // Already on the board (cannot happen for new data; be safe):
                // treat the known part as a retransmission.
                self.retransmitted(start, end.min(e), now, tx);
                if end > e {
                    self.sent(e, end, now, grain, tx);
                }
                return;
            }
            Some(_) => {
                // A gap (bytes sent outside the scoreboard, e.g. a probe that
                // was then acknowledged): start afresh.
                self.clear();
            }
        }
        if let Some(last) = self.ranges_mut().last_mut()
            && last.flags == 0
            && now.total_micros() - last.first.total_micros() <= grain.total_micros() as i64
        {
            last.end = end;
            last.xmit = now;
            return;
        }
        if !self.make_room(1) {
            // Cannot happen (two ranges can always merge); never forget
            // bytes in flight all the same.
            if let Some(last) = self.ranges_mut().last_mut() {
                last.end = end;
                last.xmit = now;
                last.flags |= COARSE;
            }
            return;
        }
        let len = self.len();
        self.store.insert(
            len,
            Range {
                start,
                end,
                first: now,
                xmit: now,
                flags: 0,
                tx,
            },
        );
    }

    /// Records a retransmission of `[start, end)` at `now`.
    pub fn retransmitted(
        &mut self,
        start: TcpSeqNumber,
        end: TcpSeqNumber,
        now: Instant,
        tx: TxSnap,
    ) {
        let (Some(s), Some(e)) = (self.start(), self.end()) else {
            return;
        };
        let (start, end) = (start.max(s), end.min(e));
        if end <= start {
            return;
        }
        self.split2(start, end);
        // Every range the retransmission touches counts as resent, also one
        // that could not be split at its edges: the sender must never pick
        // the same lost bytes again (it would resend them in a loop), and
        // RACK declares bytes that were not really resent lost again later.
        for r in self.ranges_mut() {
            if r.start < end && start < r.end && !r.has(SACKED) {
                r.flags = (r.flags & !(LOST | COARSE)) | RETRANS | EVER_RETRANS;
                r.xmit = now;
                r.first = now;
                r.tx = tx;
            }
        }
        self.coalesce();
        self.recount();
    }

    /// A cumulative ACK up to `una`: forgets the bytes below it.
    pub fn ack(&mut self, una: TcpSeqNumber, d: &mut Delivery) {
        let mut drop = 0;
        for i in 0..self.len() {
            let r = self.ranges()[i];
            if r.end <= una {
                if !r.has(SACKED) {
                    d.deliver(&r, r.end, false);
                }
                drop += 1;
            } else {
                if r.start < una {
                    if !r.has(SACKED) {
                        d.deliver(&r, una, false);
                    }
                    self.ranges_mut()[i].start = una;
                }
                break;
            }
        }
        if drop > 0 {
            self.store.remove_front(drop);
            self.recount();
        } else if !self.is_empty() {
            self.recount();
        }
    }

    /// A SACK block `[left, right)`: marks its bytes delivered.
    pub fn sack(&mut self, left: TcpSeqNumber, right: TcpSeqNumber, d: &mut Delivery) {
        let (Some(s), Some(e)) = (self.start(), self.end()) else {
            return;
        };
        let (left, right) = (left.max(s), right.min(e));
        if right <= left {
            return;
        }
        // Without room to split, only whole ranges inside the block are marked.
        self.split2(left, right);
        let mut any = false;
        for i in 0..self.len() {
            let r = self.ranges()[i];
            if r.start >= left && r.end <= right && !r.has(SACKED) {
                d.deliver(&r, r.end, true);
                self.ranges_mut()[i].flags = SACKED | (r.flags & (EVER_RETRANS | COARSE));
                any = true;
            }
        }
        if any {
            self.coalesce();
            self.recount();
        }
    }

    /// RACK loss detection (RFC 8985 6.2 step 5): every range in flight that
    /// was sent before the most recently delivered one (`(xmit, end)`) and
    /// has had `rtt + reo_wnd` to arrive is declared lost. Returns the bytes
    /// newly declared lost and, if some ranges may yet be declared lost, how
    /// long until the first of them.
    pub fn rack_detect(
        &mut self,
        xmit: Instant,
        end: TcpSeqNumber,
        rtt_reo: Duration,
        now: Instant,
    ) -> (usize, Option<Duration>) {
        let mut lost = 0;
        let mut wait: Option<i64> = None;
        for r in self.ranges_mut() {
            if r.has(SACKED) || r.has(LOST) || !sent_after(xmit, end, r.xmit, r.end) {
                continue;
            }
            let remaining =
                r.xmit.total_micros() + rtt_reo.total_micros() as i64 - now.total_micros();
            if remaining <= 0 {
                r.flags = (r.flags & !RETRANS) | LOST;
                lost += r.len();
            } else {
                wait = Some(wait.map_or(remaining, |w| w.min(remaining)));
            }
        }
        if lost > 0 {
            self.coalesce();
            self.recount();
        }
        (lost, wait.map(|w| Duration::from_micros(w as u64)))
    }

    /// At a retransmission timeout (RFC 8985 6.3): every range in flight
    /// whose bytes all had `rtt_reo` to arrive is declared lost. A coarse
    /// range counts from its first transmission: it may hold bytes sent long
    /// before its latest ones, and a timeout is no time to wait for them.
    pub fn rto_detect(&mut self, rtt_reo: Duration, now: Instant) {
        let mut any = false;
        for r in self.ranges_mut() {
            let sent = if r.has(COARSE) { r.first } else { r.xmit };
            if !r.has(SACKED)
                && !r.has(LOST)
                && sent.total_micros() + rtt_reo.total_micros() as i64 <= now.total_micros()
            {
                r.flags = (r.flags & !RETRANS) | LOST;
                any = true;
            }
        }
        if any {
            self.coalesce();
            self.recount();
        }
    }

    /// Declares `[start, end)` lost unless SACKed (dupack-based recovery
    /// for peers without SACK, and tail probes). Returns the bytes newly lost.
    pub fn mark_lost(&mut self, start: TcpSeqNumber, end: TcpSeqNumber) -> usize {
        let before = self.lost;
        let (Some(s), Some(e)) = (self.start(), self.end()) else {
            return 0;
        };
        let (start, end) = (start.max(s), end.min(e));
        if end <= start {
            return 0;
        }
        self.split2(start, end);
        for r in self.ranges_mut() {
            if r.start >= start && r.end <= end && !r.has(SACKED) && !r.has(LOST) {
                r.flags = (r.flags & !RETRANS) | LOST;
            }
        }
        self.coalesce();
        self.recount();
        self.lost.saturating_sub(before)
    }

    /// Forgets loss marks on bytes not yet retransmitted (an undo).
    pub fn unmark_lost(&mut self) {
        for r in self.ranges_mut() {
            if r.has(LOST) {
                r.flags &= !LOST;
            }
        }
        self.coalesce();
        self.recount();
    }

    /// The first bytes declared lost: `(start, len)`, at most `max` bytes of
    /// contiguous lost ranges.
    pub fn first_lost(&self, max: usize) -> Option<(TcpSeqNumber, usize)> {
        let i = self.ranges().iter().position(|r| r.has(LOST))?;
        let start = self.ranges()[i].start;
        let mut end = self.ranges()[i].end;
        for r in &self.ranges()[i + 1..] {
            if !r.has(LOST) || seq_len(end, start) >= max {
                break;
            }
            end = r.end;
        }
        Some((start, seq_len(end, start).min(max)))
    }
}

#[cfg(test)]
mod test {
    use super::*;

    fn seq(n: i32) -> TcpSeqNumber {
        TcpSeqNumber(n)
    }
    fn ms(n: i64) -> Instant {
        Instant::from_millis(n)
    }
    const GRAIN: Duration = Duration::from_micros(100);

    fn delivery(now: i64) -> Delivery {
        Delivery::new(ms(now), None, None)
    }

    fn check_contiguous(b: &Scoreboard) {
        for w in b.ranges().windows(2) {
            assert_eq!(w[0].end, w[1].start, "{:?}", b.ranges());
            assert!(w[0].start < w[0].end);
        }
    }

    /// ZCSTACK PATCH 16: the ranges' memory goes back only when all are
    /// acknowledged.
    #[cfg(feature = "alloc")]
    #[test]
    fn release_if_empty_gives_the_memory_back_only_when_empty() {
        let mut b = Scoreboard::default();
        for i in 0..40 {
            b.sent(seq(i * 100), seq(i * 100 + 100), ms(i as i64), GRAIN, TxSnap::ZERO);
        }
        assert_eq!(b.ranges().len(), 40);
        b.release_if_empty();
        assert_eq!(b.ranges().len(), 40, "ranges in flight are kept");
        b.ack(seq(4000), &mut delivery(100));
        assert!(b.is_empty());
        assert!(b.store.0.capacity() >= 40, "acknowledging keeps the capacity");
        b.release_if_empty();
        assert_eq!(b.store.0.capacity(), 0);
    }

    #[test]
    fn sends_in_one_grain_share_a_range() {
        let mut b = Scoreboard::default();
        b.sent(seq(0), seq(100), ms(0), GRAIN, TxSnap::ZERO);
        b.sent(seq(100), seq(200), ms(0), GRAIN, TxSnap::ZERO);
        assert_eq!(b.ranges().len(), 1);
        b.sent(seq(200), seq(300), ms(1), GRAIN, TxSnap::ZERO);
        assert_eq!(b.ranges().len(), 2);
        assert_eq!(b.total_bytes(), 300);
        check_contiguous(&b);
    }

    #[test]
    fn sack_splits_and_counts() {
        let mut b = Scoreboard::default();
        for i in 0..10 {
            b.sent(seq(i * 100), seq(i * 100 + 100), ms(i as i64), GRAIN, TxSnap::ZERO);
        }
        let mut d = delivery(20);
        b.sack(seq(150), seq(450), &mut d);
        assert_eq!(d.bytes, 300);
        assert_eq!(d.sacked, 300);
        assert_eq!(b.sacked_bytes(), 300);
        // The latest-sent delivered range is the one holding 400..450, sent at 4 ms.
        assert_eq!(d.latest, Some((ms(4), seq(450))));
        check_contiguous(&b);
        // The same block again delivers nothing.
        let mut d = delivery(21);
        b.sack(seq(150), seq(450), &mut d);
        assert_eq!(d.bytes, 0);
        // A cumulative ACK over SACKed bytes delivers only the others.
        let mut d = delivery(22);
        b.ack(seq(500), &mut d);
        assert_eq!(d.bytes, 200);
        assert_eq!(b.start(), Some(seq(500)));
        assert_eq!(b.sacked_bytes(), 0);
        check_contiguous(&b);
    }

    #[test]
    fn rack_declares_earlier_sent_ranges_lost_after_rtt_and_window() {
        let mut b = Scoreboard::default();
        for i in 0..4 {
            b.sent(seq(i * 100), seq(i * 100 + 100), ms(i as i64), GRAIN, TxSnap::ZERO);
        }
        let mut d = delivery(13);
        b.sack(seq(300), seq(400), &mut d);
        let (xmit, end) = d.latest.unwrap();
        // RTT 10 ms, window 2 ms: range 0 (sent at 0) is due at 12 → lost;
        // 1 at 13 → lost; 2 at 14 → not yet.
        let (lost, wait) = b.rack_detect(xmit, end, Duration::from_millis(12), ms(13));
        assert_eq!(lost, 200);
        assert_eq!(wait, Some(Duration::from_millis(1)));
        assert_eq!(b.first_lost(1000), Some((seq(0), 200)));
        assert_eq!(b.first_lost(150), Some((seq(0), 150)));
        // Retransmitting clears the mark and restarts the range's clock.
        b.retransmitted(seq(0), seq(200), ms(14), TxSnap::ZERO);
        assert_eq!(b.lost_bytes(), 0);
        assert!(b.ranges()[0].has(EVER_RETRANS));
        check_contiguous(&b);
    }

    #[test]
    fn reordering_is_seen_when_older_data_arrives_below_fack() {
        let mut b = Scoreboard::default();
        for i in 0..4 {
            b.sent(seq(i * 100), seq(i * 100 + 100), ms(i as i64), GRAIN, TxSnap::ZERO);
        }
        let mut d = Delivery::new(ms(10), Some(seq(400)), None);
        b.ack(seq(100), &mut d);
        assert!(d.reordered);
    }

    #[test]
    fn a_retransmission_delivered_faster_than_any_rtt_is_ambiguous() {
        let mut b = Scoreboard::default();
        b.sent(seq(0), seq(100), ms(0), GRAIN, TxSnap::ZERO);
        b.retransmitted(seq(0), seq(100), ms(20), TxSnap::ZERO);
        // Delivered 5 ms after the retransmission, with a 10 ms minimum RTT:
        // the ACK was for the original.
        let mut d = Delivery::new(ms(25), None, Some(Duration::from_millis(10)));
        b.ack(seq(100), &mut d);
        assert_eq!(d.bytes, 100);
        assert_eq!(d.latest, None);
        assert_eq!(d.clean, None, "no RTT sample from retransmitted bytes");
    }

    #[test]
    fn a_full_scoreboard_merges_the_closest_neighbours() {
        let mut b = Scoreboard::default();
        // RANGES + 8 transmissions, each a different time; two close ones.
        for i in 0..(RANGES as i32 + 8) {
            let t = Instant::from_micros(i as i64 * 1000 + if i == 5 { -990 } else { 0 });
            b.sent(seq(i * 10), seq(i * 10 + 10), t, GRAIN, TxSnap::ZERO);
        }
        assert_eq!(b.ranges().len(), RANGES);
        assert_eq!(b.total_bytes(), (RANGES + 8) * 10);
        check_contiguous(&b);
        // Every range still covers transmissions within a few ms, never the
        // earlier time: merged ranges keep the later transmit time.
        for r in b.ranges() {
            assert!(r.xmit >= r.first);
        }
    }

    /// ZCSTACK PATCH 31: however many ranges were asked for, the heap
    /// they hold stays within `HEAP_MAX`.
    #[cfg(feature = "alloc")]
    #[test]
    fn a_full_scoreboard_stays_within_heap_max() {
        let mut b = Scoreboard::default();
        for i in 0..(3 * RANGES as i32) {
            b.sent(seq(i * 10), seq(i * 10 + 10), ms(i as i64), GRAIN, TxSnap::ZERO);
            assert!(b.store.heap_bytes() <= HEAP_MAX, "after {} sends", i + 1);
        }
        assert_eq!(b.ranges().len(), RANGES);
        assert_eq!(b.store.heap_bytes(), HEAP_MAX, "RANGES is a power of two: reached, not passed");
    }

    #[test]
    fn many_holes_never_break_the_board() {
        let mut b = Scoreboard::default();
        for i in 0..400 {
            b.sent(
                seq(i * 10),
                seq(i * 10 + 10),
                Instant::from_micros(i as i64 * 1000),
                GRAIN,
                TxSnap::ZERO,
            );
        }
        let mut d = delivery(1000);
        for i in 0..200 {
            b.sack(seq(i * 20 + 10), seq(i * 20 + 20), &mut d);
        }
        assert!(b.ranges().len() <= RANGES);
        check_contiguous(&b);
        assert_eq!(b.total_bytes(), 4000);
        let mut d = delivery(1001);
        b.ack(seq(4000), &mut d);
        assert!(b.is_empty());
    }

    /// Bytes sent 20 ms before their neighbours, merged with them on a full
    /// board, then SACKed 11 ms after they left: the RTT sample is their
    /// 11 ms (from `first`), not the 0 ms a merged range's `xmit` would give
    /// (it once drove RACK's minimum RTT to under a millisecond and every
    /// reordered segment was resent).
    #[test]
    fn merged_ranges_never_give_too_short_rtts() {
        let mut b = Scoreboard::default();
        // Two transmissions 20 ms apart, then RANGES more that force merges.
        b.sent(seq(0), seq(10), ms(0), GRAIN, TxSnap::ZERO);
        b.sent(seq(10), seq(20), ms(20), GRAIN, TxSnap::ZERO);
        for i in 2..(RANGES as i32 + 2) {
            b.sent(
                seq(i * 10),
                seq(i * 10 + 10),
                ms(20 + i as i64 * 100),
                GRAIN,
                TxSnap::ZERO,
            );
        }
        assert_eq!(b.ranges().len(), RANGES);
        assert_eq!(b.ranges()[0].end, seq(20), "the two closest sends merged");
        let mut d = delivery(11);
        b.sack(seq(0), seq(10), &mut d);
        let (sent, _) = d.latest.unwrap();
        assert_eq!(d.now() - sent, Duration::from_millis(11));
        assert_eq!(d.clean, Some(ms(0)));
    }

    /// At a timeout, a coarse range counts from its first transmission: its
    /// early bytes had time to arrive even if its latest ones did not (once
    /// a 1.4 MB coarse range sent 8 ms earlier kept the window shut after a
    /// timeout, and the connection stalled).
    #[test]
    fn a_timeout_declares_coarse_ranges_lost_from_their_first_transmission() {
        let mut b = Scoreboard::default();
        let range = |start, end, first, xmit, flags| Range {
            start: seq(start),
            end: seq(end),
            first: ms(first),
            xmit: ms(xmit),
            flags,
            tx: TxSnap::ZERO,
        };
        // Merged: bytes sent from 0 to 992 ms; a plain range sent at 995 ms.
        b.store.insert(0, range(0, 1000, 0, 992, COARSE));
        b.store.insert(1, range(1000, 1010, 995, 995, 0));
        b.rto_detect(Duration::from_millis(60), ms(1000));
        assert!(b.ranges()[0].has(LOST), "{:?}", b.ranges()[0]);
        assert!(!b.ranges()[1].has(LOST));
        assert_eq!(b.lost_bytes(), 1000);
    }

    /// Random sends, SACKs, losses and acknowledgements on a board that is
    /// often full: it stays contiguous, and resending the first lost bytes
    /// always moves the sender on.
    #[test]
    fn random_histories_keep_the_board_sound() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move |n: u32| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % n as u64) as i32
        };
        for _ in 0..100 {
            let mut b = Scoreboard::default();
            let (mut una, mut nxt, mut t) = (0i32, 0i32, 0i64);
            for _ in 0..2000 {
                t += 1 + rnd(300) as i64;
                match rnd(10) {
                    0..=3 => {
                        let len = 10 * (1 + rnd(4));
                        b.sent(seq(nxt), seq(nxt + len), Instant::from_micros(t), GRAIN, TxSnap::ZERO);
                        nxt += len;
                    }
                    4..=5 if nxt > una => {
                        let l = una + 10 * rnd(((nxt - una) / 10 + 1) as u32);
                        let r = (l + 10 * (1 + rnd(3))).min(nxt);
                        b.sack(seq(l), seq(r), &mut delivery(t));
                    }
                    6 if nxt > una => {
                        let l = una + 10 * rnd(((nxt - una) / 10 + 1) as u32);
                        b.mark_lost(seq(l), seq((l + 10 * (1 + rnd(8))).min(nxt)));
                    }
                    7 => {
                        let now = Instant::from_micros(t);
                        b.rack_detect(now, seq(nxt), Duration::from_micros(1), now);
                    }
                    8 if nxt > una && rnd(4) == 0 => {
                        una += 10 * rnd(((nxt - una) / 10 + 1) as u32);
                        b.ack(seq(una), &mut delivery(t));
                    }
                    _ => {
                        let mut steps = 0;
                        while let Some((start, len)) = b.first_lost(10 * (1 + rnd(3)) as usize) {
                            b.retransmitted(start, start + len, Instant::from_micros(t), TxSnap::ZERO);
                            steps += 1;
                            assert!(
                                steps <= 4 * RANGES + (nxt - una) as usize,
                                "resends without end"
                            );
                            let again = b.first_lost(usize::MAX);
                            assert!(again.is_none_or(|(s, _)| s != start || len == 0));
                        }
                    }
                }
                check_contiguous(&b);
                for r in b.ranges() {
                    assert!(
                        r.has(COARSE) || r.has(SACKED) || r.xmit - r.first <= GRAIN,
                        "{r:?} spans more than a grain"
                    );
                }
                assert!(b.ranges().len() <= RANGES);
                if !b.is_empty() {
                    assert_eq!(b.total_bytes(), (nxt - una) as usize);
                }
            }
        }
    }

    #[test]
    fn sequence_wraps() {
        let mut b = Scoreboard::default();
        let s = TcpSeqNumber(i32::MAX - 50);
        b.sent(s, s + 100, ms(0), GRAIN, TxSnap::ZERO);
        b.sent(s + 100, s + 200, ms(5), GRAIN, TxSnap::ZERO);
        let mut d = delivery(10);
        b.sack(s + 100, s + 200, &mut d);
        assert_eq!(d.bytes, 100);
        assert_eq!(b.mark_lost(s, s + 100), 100);
        assert_eq!(b.first_lost(1000), Some((s, 100)));
        let mut d = delivery(11);
        b.ack(s + 200, &mut d);
        assert!(b.is_empty());
    }
}
