//! ZCSTACK PATCH 8 (see ZCSTACK-PATCHES.md): the SACK blocks a receiver
//! reports.
//!
//! Upstream smoltcp reports at most one block: the one holding the segment
//! that triggered the ACK, or else the lowest. A sender then learns about
//! one hole per ACK, and after a burst of losses it cannot tell which
//! segments arrived. This module reports what RFC 2018 asks (section 4):
//!
//! - the first block holds the most recently received segment;
//! - the following blocks repeat the most recently reported other blocks,
//!   so each block is reported in several ACKs and survives ACK loss;
//! - remaining room goes to other blocks, lowest first;
//! - a duplicate segment is reported first as a D-SACK block (RFC 2883),
//!   which lets the sender see needless retransmissions and undo their
//!   congestion response (see the `recovery` module).
//!
//! Three blocks fit beside the timestamp option (the `TcpRepr` limit).

use super::Socket;
use crate::wire::TcpSeqNumber;

/// Blocks in one ACK.
const BLOCKS: usize = 3;

/// What the receiver remembers to build SACK blocks.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct SackState {
    /// Sequence numbers of the most recently received out-of-order
    /// segments, most recent first; each stands for the block holding it.
    recent: [Option<TcpSeqNumber>; BLOCKS],
    /// A duplicate segment to report in the next ACK (D-SACK).
    dsack: Option<(TcpSeqNumber, TcpSeqNumber)>,
}

impl<'a> Socket<'a> {
    /// RCV.NXT: the assembler's offsets count from here.
    fn rcv_nxt(&self) -> TcpSeqNumber {
        self.remote_seq_no + self.rx_buffer.len()
    }

    /// The out-of-order block (absolute sequence numbers) holding `seq`.
    fn sack_block_of(&self, seq: TcpSeqNumber) -> Option<(TcpSeqNumber, TcpSeqNumber)> {
        let base = self.rcv_nxt();
        self.assembler
            .iter_data()
            .map(|(l, r)| (base + l, base + r))
            .find(|&(l, r)| l <= seq && seq < r)
    }

    /// Notes that out-of-order data starting at `seq` arrived.
    pub(super) fn sack_note_segment(&mut self, seq: TcpSeqNumber) {
        let block = self.sack_block_of(seq);
        let mut recent = [Some(seq), None, None];
        let mut n = 1;
        for s in self.sack.recent.into_iter().flatten() {
            if n == BLOCKS {
                break;
            }
            // One entry per block.
            let b = self.sack_block_of(s);
            if b.is_some()
                && b != block
                && !recent[..n]
                    .iter()
                    .flatten()
                    .any(|&r| self.sack_block_of(r) == b)
            {
                recent[n] = Some(s);
                n += 1;
            }
        }
        self.sack.recent = recent;
    }

    /// Notes that `[start, end)` arrived a second time (D-SACK).
    pub(super) fn sack_note_duplicate(&mut self, start: TcpSeqNumber, end: TcpSeqNumber) {
        if self.remote_has_sack && start < end {
            self.sack.dsack = Some((start, end));
        }
    }

    /// Whether an ACK sent now should carry SACK blocks.
    pub(super) fn sack_pending(&self) -> bool {
        self.remote_has_sack && (self.sack.dsack.is_some() || !self.assembler.is_empty())
    }

    /// The SACK blocks for an ACK sent now (consumes a pending D-SACK).
    pub(super) fn sack_blocks(&mut self) -> [Option<(u32, u32)>; BLOCKS] {
        let mut out: [Option<(TcpSeqNumber, TcpSeqNumber)>; BLOCKS] = [None; BLOCKS];
        if !self.remote_has_sack {
            return [None; BLOCKS];
        }
        let mut n = 0;
        let mut push = |out: &mut [Option<(TcpSeqNumber, TcpSeqNumber)>; BLOCKS], b| {
            if n < BLOCKS && !out[..n].contains(&Some(b)) {
                out[n] = Some(b);
                n += 1;
            }
        };
        if let Some(d) = self.sack.dsack.take() {
            push(&mut out, d);
            // RFC 2883 4: a D-SACK above the cumulative ACK is followed by
            // the block that contains it, so the sender can tell it apart.
            if let Some(b) = self.sack_block_of(d.0) {
                push(&mut out, b);
            }
        }
        for seq in self.sack.recent.into_iter().flatten() {
            if let Some(b) = self.sack_block_of(seq) {
                push(&mut out, b);
            }
        }
        let base = self.rcv_nxt();
        for (l, r) in self.assembler.iter_data() {
            push(&mut out, (base + l, base + r));
        }
        out.map(|b| b.map(|(l, r)| (l.0 as u32, r.0 as u32)))
    }
}
