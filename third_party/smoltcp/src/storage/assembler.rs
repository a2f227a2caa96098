use core::fmt;

use crate::config::ASSEMBLER_MAX_SEGMENT_COUNT;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TooManyHolesError;

impl fmt::Display for TooManyHolesError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "too many holes")
    }
}

impl core::error::Error for TooManyHolesError {}

/// A contiguous chunk of absent data, followed by a contiguous chunk of present data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Contig {
    hole_size: usize,
    data_size: usize,
}

impl fmt::Display for Contig {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.has_hole() {
            write!(f, "({})", self.hole_size)?;
        }
        if self.has_hole() && self.has_data() {
            write!(f, " ")?;
        }
        if self.has_data() {
            write!(f, "{}", self.data_size)?;
        }
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Contig {
    fn format(&self, fmt: defmt::Formatter) {
        if self.has_hole() {
            defmt::write!(fmt, "({})", self.hole_size);
        }
        if self.has_hole() && self.has_data() {
            defmt::write!(fmt, " ");
        }
        if self.has_data() {
            defmt::write!(fmt, "{}", self.data_size);
        }
    }
}

impl Contig {
    const fn empty() -> Contig {
        Contig {
            hole_size: 0,
            data_size: 0,
        }
    }

    fn hole_and_data(hole_size: usize, data_size: usize) -> Contig {
        Contig {
            hole_size,
            data_size,
        }
    }

    fn has_hole(&self) -> bool {
        self.hole_size != 0
    }

    fn has_data(&self) -> bool {
        self.data_size != 0
    }

    fn total_size(&self) -> usize {
        self.hole_size + self.data_size
    }

    fn shrink_hole_by(&mut self, size: usize) {
        self.hole_size -= size;
    }

    fn shrink_hole_to(&mut self, size: usize) {
        debug_assert!(self.hole_size >= size);

        let total_size = self.total_size();
        self.hole_size = size;
        self.data_size = total_size - size;
    }
}

/// A buffer (re)assembler.
///
/// Up to [`ASSEMBLER_MAX_SEGMENT_COUNT`] holes can be tracked in the buffer.
/// ZCSTACK PATCH 28: with `alloc`, the contigs live on the heap and grow on
/// demand (an assembler that never saw a hole holds no memory, one that
/// did keeps its capacity until [`release_if_empty`](Self::release_if_empty));
/// without it, a fixed array. Either way only contigs with data are stored,
/// so every operation costs what is in the assembler, not its capacity.
#[derive(Debug, PartialEq, Eq, Clone)]
pub struct Assembler {
    contigs: Store,
}

impl fmt::Display for Assembler {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "[ ")?;
        for contig in self.contigs.as_slice() {
            write!(f, "{contig} ")?;
        }
        write!(f, "]")?;
        Ok(())
    }
}

#[cfg(feature = "defmt")]
impl defmt::Format for Assembler {
    fn format(&self, fmt: defmt::Formatter) {
        defmt::write!(fmt, "[ ");
        for contig in self.contigs.as_slice() {
            defmt::write!(fmt, "{} ", contig);
        }
        defmt::write!(fmt, "]");
    }
}

/// ZCSTACK PATCH 28: the contigs' storage, at most
/// [`ASSEMBLER_MAX_SEGMENT_COUNT`] of them: a vector grown on demand with
/// `alloc`, else a fixed array.
#[cfg(feature = "alloc")]
#[derive(Debug, PartialEq, Eq, Clone)]
struct Store(alloc::vec::Vec<Contig>);

#[cfg(feature = "alloc")]
impl Store {
    const fn new() -> Store {
        Store(alloc::vec::Vec::new())
    }
    fn as_slice(&self) -> &[Contig] {
        &self.0
    }
    fn as_mut_slice(&mut self) -> &mut [Contig] {
        &mut self.0
    }
    fn insert(&mut self, at: usize, contig: Contig) -> Result<(), TooManyHolesError> {
        if self.0.len() == ASSEMBLER_MAX_SEGMENT_COUNT {
            return Err(TooManyHolesError);
        }
        self.0.insert(at, contig);
        Ok(())
    }
    fn remove(&mut self, from: usize, to: usize) {
        self.0.drain(from..to);
    }
    fn clear(&mut self) {
        self.0.clear()
    }
    fn release(&mut self) {
        self.0 = alloc::vec::Vec::new();
    }
    #[cfg(test)]
    fn heap_bytes(&self) -> usize {
        self.0.capacity() * core::mem::size_of::<Contig>()
    }
}

#[cfg(not(feature = "alloc"))]
#[derive(Debug, Clone)]
struct Store {
    items: [Contig; ASSEMBLER_MAX_SEGMENT_COUNT],
    len: usize,
}

#[cfg(not(feature = "alloc"))]
impl PartialEq for Store {
    fn eq(&self, other: &Store) -> bool {
        self.as_slice() == other.as_slice()
    }
}

#[cfg(not(feature = "alloc"))]
impl Eq for Store {}

#[cfg(not(feature = "alloc"))]
impl Store {
    const fn new() -> Store {
        const EMPTY: Contig = Contig::empty();
        Store {
            items: [EMPTY; ASSEMBLER_MAX_SEGMENT_COUNT],
            len: 0,
        }
    }
    fn as_slice(&self) -> &[Contig] {
        &self.items[..self.len]
    }
    fn as_mut_slice(&mut self) -> &mut [Contig] {
        &mut self.items[..self.len]
    }
    fn insert(&mut self, at: usize, contig: Contig) -> Result<(), TooManyHolesError> {
        if self.len == ASSEMBLER_MAX_SEGMENT_COUNT {
            return Err(TooManyHolesError);
        }
        self.items.copy_within(at..self.len, at + 1);
        self.items[at] = contig;
        self.len += 1;
        Ok(())
    }
    fn remove(&mut self, from: usize, to: usize) {
        self.items.copy_within(to..self.len, from);
        self.len -= to - from;
    }
    fn clear(&mut self) {
        self.len = 0;
    }
    fn release(&mut self) {
        self.len = 0;
    }
}

// Invariant on Assembler::contigs: every stored contig has data, and every
// one but the first has a hole before it.

impl Assembler {
    /// ZCSTACK PATCH 31: the most heap an assembler's contigs take, in
    /// bytes (0 without `alloc`: the array is part of the assembler). The
    /// vector grows one element at a time, so its capacity is at most the
    /// power of two at or above [`ASSEMBLER_MAX_SEGMENT_COUNT`] (at least 4:
    /// the standard library's growth by doubling from 4).
    #[cfg(feature = "alloc")]
    pub const HEAP_MAX: usize =
        crate::storage::vec_capacity_max(ASSEMBLER_MAX_SEGMENT_COUNT) * core::mem::size_of::<Contig>();
    /// ZCSTACK PATCH 31: no heap without `alloc`.
    #[cfg(not(feature = "alloc"))]
    pub const HEAP_MAX: usize = 0;

    /// Create a new buffer assembler.
    pub const fn new() -> Assembler {
        Assembler {
            contigs: Store::new(),
        }
    }

    pub fn clear(&mut self) {
        self.contigs.clear();
    }

    /// ZCSTACK PATCH 28: gives the contigs' memory back if the assembler
    /// holds no data (with `alloc`; it keeps its capacity otherwise, so a
    /// connection recovering from loss does not allocate per hole).
    pub fn release_if_empty(&mut self) {
        if self.is_empty() {
            self.contigs.release();
        }
    }

    /// How many contigs the storage holds room for (tests of patch 28).
    #[cfg(all(test, feature = "alloc"))]
    pub(crate) fn capacity(&self) -> usize {
        self.contigs.0.capacity()
    }

    fn front(&self) -> Contig {
        self.contigs
            .as_slice()
            .first()
            .copied()
            .unwrap_or(Contig::empty())
    }

    /// Return length of the front contiguous range without removing it from the assembler
    pub fn peek_front(&self) -> usize {
        let front = self.front();
        if front.has_hole() { 0 } else { front.data_size }
    }

    /// Return whether the assembler contains no data.
    pub fn is_empty(&self) -> bool {
        self.contigs.as_slice().is_empty()
    }

    /// Add a new contiguous range to the assembler,
    /// or return `Err(TooManyHolesError)` if too many discontinuities are already recorded.
    pub fn add(&mut self, mut offset: usize, size: usize) -> Result<(), TooManyHolesError> {
        if size == 0 {
            return Ok(());
        }

        // Find index of the contig containing the start of the range.
        let mut i = 0;
        loop {
            let Some(contig) = self.contigs.as_slice().get(i) else {
                // The new range is after all the previous ranges. Add it
                // (if there is room for one more).
                return self
                    .contigs
                    .insert(i, Contig::hole_and_data(offset, size));
            };
            if offset <= contig.total_size() {
                break;
            }
            offset -= contig.total_size();
            i += 1;
        }

        let hole_size = self.contigs.as_slice()[i].hole_size;
        if offset < hole_size {
            // Range starts within the hole.

            if offset + size < hole_size {
                // Range also ends within the hole: a contig of its own
                // before contigs[i], whose hole shrinks.
                self.contigs
                    .insert(i, Contig::hole_and_data(offset, size))?;
                self.contigs.as_mut_slice()[i + 1].shrink_hole_by(offset + size);
                return Ok(());
            }

            // The range being added covers both a part of the hole and a part of the data
            // in this contig, shrink the hole in this contig.
            self.contigs.as_mut_slice()[i].shrink_hole_to(offset);
        }

        // coalesce contigs to the right.
        let contigs = self.contigs.as_mut_slice();
        let mut j = i + 1;
        while j < contigs.len() && offset + size >= contigs[i].total_size() + contigs[j].hole_size
        {
            contigs[i].data_size += contigs[j].total_size();
            j += 1;
        }
        self.contigs.remove(i + 1, j);

        let contigs = self.contigs.as_mut_slice();
        if offset + size > contigs[i].total_size() {
            // The added range still extends beyond the current contig. Increase data size.
            let left = offset + size - contigs[i].total_size();
            contigs[i].data_size += left;

            // Decrease hole size of the next, if any.
            if let Some(next) = contigs.get_mut(i + 1) {
                next.hole_size -= left;
            }
        }

        Ok(())
    }

    /// Remove a contiguous range from the front of the assembler.
    /// If no such range, return 0.
    pub fn remove_front(&mut self) -> usize {
        let front = self.front();
        if front.has_hole() || !front.has_data() {
            0
        } else {
            self.contigs.remove(0, 1);
            debug_assert!(front.data_size > 0);
            front.data_size
        }
    }

    /// Add a segment, then remove_front.
    ///
    /// This is equivalent to calling `add` then `remove_front` individually,
    /// except it's guaranteed to not fail when offset = 0.
    /// This is required for TCP: we must never drop the next expected segment, or
    /// the protocol might get stuck.
    pub fn add_then_remove_front(
        &mut self,
        offset: usize,
        size: usize,
    ) -> Result<usize, TooManyHolesError> {
        if offset == 0 {
            // In order with nothing out of order: nothing to record (and
            // nothing to allocate).
            if self.is_empty() {
                return Ok(size);
            }
            // This is the only case where a segment at offset=0 would cause the
            // total amount of contigs to rise (and therefore can potentially cause
            // a TooManyHolesError). Handle it in a way that is guaranteed to succeed.
            if size < self.front().hole_size {
                self.contigs.as_mut_slice()[0].hole_size -= size;
                return Ok(size);
            }
        }

        self.add(offset, size)?;
        Ok(self.remove_front())
    }

    /// Iterate over all of the contiguous data ranges.
    ///
    /// Returns `(offset, size)` tuples for each contiguous data range, where
    /// offset is relative to the start of the assembler.
    ///
    ///    Data        Hole        Data
    /// |--- 100 ---|--- 200 ---|--- 100 ---|
    ///
    /// Would return the ranges: ``(0, 100), (300, 400)``
    pub fn iter_data(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        let mut offset = 0;
        self.contigs.as_slice().iter().map(move |contig| {
            offset += contig.hole_size;
            let left = offset;
            offset += contig.data_size;
            (left, offset)
        })
    }
}

#[cfg(test)]
mod test {
    use super::*;
    use std::vec::Vec;

    /// ZCSTACK PATCH 31: every other byte out of order, until the table
    /// is full: the contigs' heap stays within `HEAP_MAX`, and reaches it.
    #[cfg(feature = "alloc")]
    #[test]
    fn a_full_table_stays_within_heap_max() {
        let mut assr = Assembler::new();
        for i in 0..2 * ASSEMBLER_MAX_SEGMENT_COUNT {
            let _ = assr.add(1 + 2 * i, 1);
            assert!(assr.contigs.heap_bytes() <= Assembler::HEAP_MAX, "after {} adds", i + 1);
        }
        assert_eq!(assr.add(1 + 4 * ASSEMBLER_MAX_SEGMENT_COUNT, 1), Err(TooManyHolesError));
        assert_eq!(assr.contigs.as_slice().len(), ASSEMBLER_MAX_SEGMENT_COUNT);
    }

    impl From<Vec<(usize, usize)>> for Assembler {
        fn from(vec: Vec<(usize, usize)>) -> Assembler {
            // As in the fixed array this used to be: contigs without data
            // (at the end) are unused slots.
            let mut assr = Assembler::new();
            let with_data = vec.iter().filter(|&&(_, data_size)| data_size != 0);
            for (i, &(hole_size, data_size)) in with_data.enumerate() {
                let contig = Contig {
                    hole_size,
                    data_size,
                };
                assr.contigs.insert(i, contig).unwrap();
            }
            assr
        }
    }

    macro_rules! contigs {
        [$( $x:expr ),*] => ({
            Assembler::from(vec![$( $x ),*])
        })
    }

    #[test]
    fn test_new() {
        let assr = Assembler::new();
        assert_eq!(assr, contigs![]);
    }

    #[test]
    fn test_empty_add_full() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(0, 16), Ok(()));
        assert_eq!(assr, contigs![(0, 16)]);
    }

    #[test]
    fn test_empty_add_front() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(0, 4), Ok(()));
        assert_eq!(assr, contigs![(0, 4)]);
    }

    #[test]
    fn test_empty_add_back() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(12, 4), Ok(()));
        assert_eq!(assr, contigs![(12, 4)]);
    }

    #[test]
    fn test_empty_add_mid() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(4, 8), Ok(()));
        assert_eq!(assr, contigs![(4, 8)]);
    }

    #[test]
    fn test_partial_add_front() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(0, 4), Ok(()));
        assert_eq!(assr, contigs![(0, 12)]);
    }

    #[test]
    fn test_partial_add_back() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(12, 4), Ok(()));
        assert_eq!(assr, contigs![(4, 12)]);
    }

    #[test]
    fn test_partial_add_front_overlap() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(0, 8), Ok(()));
        assert_eq!(assr, contigs![(0, 12)]);
    }

    #[test]
    fn test_partial_add_front_overlap_split() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(2, 6), Ok(()));
        assert_eq!(assr, contigs![(2, 10)]);
    }

    #[test]
    fn test_partial_add_back_overlap() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(8, 8), Ok(()));
        assert_eq!(assr, contigs![(4, 12)]);
    }

    #[test]
    fn test_partial_add_back_overlap_split() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(10, 4), Ok(()));
        assert_eq!(assr, contigs![(4, 10)]);
    }

    #[test]
    fn test_partial_add_both_overlap() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(0, 16), Ok(()));
        assert_eq!(assr, contigs![(0, 16)]);
    }

    #[test]
    fn test_partial_add_both_overlap_split() {
        let mut assr = contigs![(4, 8)];
        assert_eq!(assr.add(2, 12), Ok(()));
        assert_eq!(assr, contigs![(2, 12)]);
    }

    #[test]
    fn test_rejected_add_keeps_state() {
        let mut assr = Assembler::new();
        for c in 1..=ASSEMBLER_MAX_SEGMENT_COUNT {
            assert_eq!(assr.add(c * 10, 3), Ok(()));
        }
        // Maximum of allowed holes is reached
        let assr_before = assr.clone();
        assert_eq!(assr.add(1, 3), Err(TooManyHolesError));
        assert_eq!(assr_before, assr);
    }

    #[test]
    fn test_empty_remove_front() {
        let mut assr = contigs![];
        assert_eq!(assr.remove_front(), 0);
    }

    #[test]
    fn test_trailing_hole_remove_front() {
        let mut assr = contigs![(0, 4)];
        assert_eq!(assr.remove_front(), 4);
        assert_eq!(assr, contigs![]);
    }

    #[test]
    fn test_trailing_data_remove_front() {
        let mut assr = contigs![(0, 4), (4, 4)];
        assert_eq!(assr.remove_front(), 4);
        assert_eq!(assr, contigs![(4, 4)]);
    }

    #[test]
    fn test_boundary_case_remove_front() {
        let mut vec = vec![(1, 1); ASSEMBLER_MAX_SEGMENT_COUNT];
        vec[0] = (0, 2);
        let mut assr = Assembler::from(vec);
        assert_eq!(assr.remove_front(), 2);
        let mut vec = vec![(1, 1); ASSEMBLER_MAX_SEGMENT_COUNT];
        vec[ASSEMBLER_MAX_SEGMENT_COUNT - 1] = (0, 0);
        let exp_assr = Assembler::from(vec);
        assert_eq!(assr, exp_assr);
    }

    #[test]
    fn test_shrink_next_hole() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(100, 10), Ok(()));
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add(40, 30), Ok(()));
        assert_eq!(assr, contigs![(40, 30), (30, 10)]);
    }

    #[test]
    fn test_join_two() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(10, 10), Ok(()));
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add(15, 40), Ok(()));
        assert_eq!(assr, contigs![(10, 50)]);
    }

    #[test]
    fn test_join_two_reversed() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add(10, 10), Ok(()));
        assert_eq!(assr.add(15, 40), Ok(()));
        assert_eq!(assr, contigs![(10, 50)]);
    }

    #[test]
    fn test_join_two_overlong() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add(10, 10), Ok(()));
        assert_eq!(assr.add(15, 60), Ok(()));
        assert_eq!(assr, contigs![(10, 65)]);
    }

    #[test]
    fn test_iter_empty() {
        let assr = Assembler::new();
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![]);
    }

    #[test]
    fn test_iter_full() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(0, 16), Ok(()));
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(0, 16)]);
    }

    #[test]
    fn test_iter_one_front() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(0, 4), Ok(()));
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(0, 4)]);
    }

    #[test]
    fn test_iter_one_back() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(12, 4), Ok(()));
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(12, 16)]);
    }

    #[test]
    fn test_iter_one_mid() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(4, 8), Ok(()));
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(4, 12)]);
    }

    #[test]
    fn test_iter_one_trailing_gap() {
        let assr = contigs![(4, 8)];
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(4, 12)]);
    }

    #[test]
    fn test_iter_two_split() {
        let assr = contigs![(2, 6), (4, 1)];
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(2, 8), (12, 13)]);
    }

    #[test]
    fn test_iter_three_split() {
        let assr = contigs![(2, 6), (2, 1), (2, 2)];
        let segments: Vec<_> = assr.iter_data().collect();
        assert_eq!(segments, vec![(2, 8), (10, 11), (13, 15)]);
    }

    #[test]
    fn test_issue_694() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(0, 1), Ok(()));
        assert_eq!(assr.add(2, 1), Ok(()));
        assert_eq!(assr.add(1, 1), Ok(()));
    }

    #[test]
    fn test_add_then_remove_front() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add_then_remove_front(10, 10), Ok(0));
        assert_eq!(assr, contigs![(10, 10), (30, 10)]);
    }

    #[test]
    fn test_add_then_remove_front_at_front() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add_then_remove_front(0, 10), Ok(10));
        assert_eq!(assr, contigs![(40, 10)]);
    }

    #[test]
    fn test_add_then_remove_front_at_front_touch() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(50, 10), Ok(()));
        assert_eq!(assr.add_then_remove_front(0, 50), Ok(60));
        assert_eq!(assr, contigs![]);
    }

    #[test]
    fn test_add_then_remove_front_at_front_full() {
        let mut assr = Assembler::new();
        for c in 1..=ASSEMBLER_MAX_SEGMENT_COUNT {
            assert_eq!(assr.add(c * 10, 3), Ok(()));
        }
        // Maximum of allowed holes is reached
        let assr_before = assr.clone();
        assert_eq!(assr.add_then_remove_front(1, 3), Err(TooManyHolesError));
        assert_eq!(assr_before, assr);
    }

    #[test]
    fn test_add_then_remove_front_at_front_full_offset_0() {
        let mut assr = Assembler::new();
        for c in 1..=ASSEMBLER_MAX_SEGMENT_COUNT {
            assert_eq!(assr.add(c * 10, 3), Ok(()));
        }
        assert_eq!(assr.add_then_remove_front(0, 3), Ok(3));
    }

    /// ZCSTACK PATCH 28: segments in order with nothing out of order
    /// leave nothing behind (and, with `alloc`, allocate nothing).
    #[test]
    fn in_order_segments_leave_nothing_behind() {
        let mut assr = Assembler::new();
        for _ in 0..3 {
            assert_eq!(assr.add_then_remove_front(0, 1448), Ok(1448));
        }
        assert_eq!(assr, contigs![]);
        #[cfg(feature = "alloc")]
        assert_eq!(assr.capacity(), 0);
    }

    /// ZCSTACK PATCH 28: the contigs keep their memory while any is held
    /// and after the holes are filled, and give it back on
    /// `release_if_empty` once nothing is held.
    #[test]
    fn release_if_empty_gives_the_memory_back_only_when_empty() {
        let mut assr = Assembler::new();
        assert_eq!(assr.add(10, 5), Ok(()));
        assert_eq!(assr.add(20, 5), Ok(()));
        assr.release_if_empty();
        assert_eq!(assr, contigs![(10, 5), (5, 5)], "held ranges stay");
        assert_eq!(assr.add_then_remove_front(0, 10), Ok(15));
        assert_eq!(assr.add_then_remove_front(0, 5), Ok(10));
        assert!(assr.is_empty());
        #[cfg(feature = "alloc")]
        assert!(assr.capacity() > 0, "kept for the next hole");
        assr.release_if_empty();
        #[cfg(feature = "alloc")]
        assert_eq!(assr.capacity(), 0);
        // It works as before afterwards.
        assert_eq!(assr.add(4, 4), Ok(()));
        assert_eq!(assr, contigs![(4, 4)]);
    }

    /// ZCSTACK PATCH 28: the limit holds with storage grown on demand.
    #[test]
    fn the_limit_holds_when_grown_on_demand() {
        let mut assr = Assembler::new();
        for c in 0..ASSEMBLER_MAX_SEGMENT_COUNT {
            assert_eq!(assr.add(c * 10 + 5, 1), Ok(()));
        }
        let before = assr.clone();
        assert_eq!(assr.add(ASSEMBLER_MAX_SEGMENT_COUNT * 10 + 5, 1), Err(TooManyHolesError));
        assert_eq!(assr.add(1, 1), Err(TooManyHolesError));
        assert_eq!(assr, before);
        // Filling a hole merges two contigs, which makes room again.
        assert_eq!(assr.add(6, 9), Ok(()));
        assert_eq!(assr.add(ASSEMBLER_MAX_SEGMENT_COUNT * 10 + 5, 1), Ok(()));
    }

    // Test against an obviously-correct but inefficient bitmap impl.
    #[test]
    fn test_random() {
        use rand::Rng;

        const MAX_INDEX: usize = 256;

        for max_size in [2, 5, 10, 100] {
            for _ in 0..300 {
                //println!("===");
                let mut assr = Assembler::new();
                let mut map = [false; MAX_INDEX];

                for _ in 0..60 {
                    let offset = rand::thread_rng().gen_range(0..MAX_INDEX - max_size - 1);
                    let size = rand::thread_rng().gen_range(1..=max_size);

                    //println!("add {}..{} {}", offset, offset + size, size);
                    // Real impl
                    let res = assr.add(offset, size);

                    // Bitmap impl
                    let mut map2 = map;
                    map2[offset..][..size].fill(true);

                    let mut contigs = vec![];
                    let mut hole: usize = 0;
                    let mut data: usize = 0;
                    for b in map2 {
                        if b {
                            data += 1;
                        } else {
                            if data != 0 {
                                contigs.push((hole, data));
                                hole = 0;
                                data = 0;
                            }
                            hole += 1;
                        }
                    }

                    // Compare.
                    let wanted_res = if contigs.len() > ASSEMBLER_MAX_SEGMENT_COUNT {
                        Err(TooManyHolesError)
                    } else {
                        Ok(())
                    };
                    assert_eq!(res, wanted_res);
                    if res.is_ok() {
                        map = map2;
                        assert_eq!(assr, Assembler::from(contigs));
                    }
                }
            }
        }
    }
}
