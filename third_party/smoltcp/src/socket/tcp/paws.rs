//! ZCSTACK PATCH 13 (see ZCSTACK-PATCHES.md): PAWS lets a reordered
//! duplicate ACK through, as Linux does (`tcp_disordered_ack`).
//!
//! A receiver that only acknowledges sends every ACK at the same sequence
//! number, so each one moves TS.Recent on (RFC 7323 4.3). When the path
//! reorders, an ACK sent earlier arrives after a later one with an older
//! TSval, and PAWS (5.3 R1) drops it — with the SACK blocks it carries,
//! which loss detection needs on exactly such a path. RFC 7323 5.3 leaves
//! room for this: a pure duplicate ACK cannot be an old data segment
//! replayed from a previous incarnation, so dropping it protects nothing.
//!
//! Let through, like Linux: a segment without data, SYN or FIN, at RCV.NXT,
//! acknowledging exactly SND.UNA, that does not open the peer's window, and
//! whose TSval is within one retransmission timeout of TS.Recent (counted at
//! 1200 Hz, the fastest timestamp clock RFC 7323's range allows for Linux's
//! peers; a faster clock only narrows the window). Everything else older
//! than TS.Recent is still dropped.

use super::Socket;
use crate::wire::{TcpControl, TcpRepr};

impl<'a> Socket<'a> {
    /// Whether `repr`, whose TSval `tsval` is older than TS.Recent, is a
    /// pure duplicate ACK that a reordering path delivered late.
    pub(super) fn paws_disordered_ack(&self, repr: &TcpRepr, tsval: u32) -> bool {
        let rcv_nxt = self.remote_seq_no + self.rx_buffer.len();
        let scale = self.remote_win_scale.unwrap_or(0);
        let window = (repr.window_len as usize) << scale;
        let rto_ms = self.rtte.retransmission_timeout().total_millis();
        let replay = u32::try_from(rto_ms.saturating_mul(6) / 5).unwrap_or(u32::MAX);
        repr.payload.is_empty()
            && matches!(repr.control, TcpControl::None | TcpControl::Psh)
            && repr.seq_number == rcv_nxt
            && repr.ack_number == Some(self.local_seq_no)
            && window != 0
            && window <= self.remote_win_len
            && self.last_remote_tsval.wrapping_sub(tsval) <= replay
    }
}
