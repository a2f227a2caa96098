//! ZCSTACK PATCH 12 (see ZCSTACK-PATCHES.md): RFC 5961, blind in-window
//! attacks, and data that arrives with an old ACK.
//!
//! Upstream smoltcp closed a connection on any RST whose sequence number
//! fell inside the receive window, so an off-path attacker guessing a
//! sequence number had a `window / 2^32` chance per packet; it dropped an
//! in-window SYN in a synchronized state without a word; and it dropped a
//! whole segment whose ACK was older than SND.UNA, data included — which a
//! path that reorders segments produces whenever the peer sends data while
//! acknowledging ours. Now:
//!
//! - RST (3.2): reset only if SEG.SEQ is exactly RCV.NXT; another in-window
//!   RST gets a challenge ACK (the real peer answers it with a RST carrying
//!   the exact number), an out-of-window one nothing.
//! - SYN in a synchronized state (4.2): a challenge ACK, whatever its
//!   sequence number; the segment is dropped.
//! - ACK (5.2): SEG.ACK below SND.UNA − MAX.SND.WND (the largest window the
//!   peer ever offered) is a blind injection: dropped with a challenge ACK.
//!   An older ACK within that range is a duplicate: the ACK is ignored and
//!   the segment's data and FIN are processed (RFC 9293 3.10.7.4).
//!
//! Challenge ACKs share the socket's rate limit (one per second; RFC 5961 7).

use super::{Socket, State};
use crate::iface::Context;
use crate::wire::{IpRepr, TcpControl, TcpRepr};

/// What RFC 5961's checks make of a segment.
pub(super) enum Verdict {
    /// Process it as it is.
    Pass,
    /// Process it with its ACK field replaced by SND.UNA (an old duplicate).
    IgnoreAck,
    /// Drop it; reply with this (a challenge ACK) if anything.
    Drop(Option<(IpRepr, TcpRepr<'static>)>),
}

impl<'a> Socket<'a> {
    pub(super) fn rfc5961_check(
        &mut self,
        cx: &mut Context,
        ip_repr: &IpRepr,
        repr: &TcpRepr,
    ) -> Verdict {
        let synchronized = matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait
        );
        if !synchronized && self.state != State::SynReceived {
            return Verdict::Pass;
        }
        let rcv_nxt = self.remote_seq_no + self.rx_buffer.len();
        match repr.control {
            TcpControl::Rst => {
                if repr.seq_number == rcv_nxt {
                    return Verdict::Pass;
                }
                let wnd = self
                    .remote_last_ack
                    .map(|ack| {
                        let right =
                            ack + ((self.remote_last_win as usize) << self.remote_win_shift);
                        if right > rcv_nxt { right - rcv_nxt } else { 0 }
                    })
                    .unwrap_or(0);
                if repr.seq_number > rcv_nxt && repr.seq_number < rcv_nxt + wnd {
                    net_debug!("RST in window but not at RCV.NXT: challenge ACK");
                    return Verdict::Drop(self.challenge_ack_reply(cx, ip_repr, repr));
                }
                Verdict::Drop(None)
            }
            TcpControl::Syn if synchronized => {
                net_debug!("SYN in a synchronized state: challenge ACK");
                Verdict::Drop(self.challenge_ack_reply(cx, ip_repr, repr))
            }
            _ => {
                let Some(ack) = repr.ack_number else {
                    return Verdict::Pass;
                };
                if !synchronized || ack >= self.local_seq_no {
                    return Verdict::Pass;
                }
                let max_wnd = self.max_remote_win.max(self.remote_win_len).max(1);
                // ZCSTACK PATCH 21: how far ACK lies below SND.UNA, as an
                // unsigned distance. `SND.UNA - ack` panicked for an ACK
                // exactly 2^31 away, which is "before" SND.UNA in sequence
                // order while the signed difference overflows.
                let behind = self.local_seq_no.0.wrapping_sub(ack.0) as u32 as usize;
                if behind > max_wnd {
                    net_debug!("ACK older than SND.UNA - MAX.SND.WND: challenge ACK");
                    return Verdict::Drop(self.challenge_ack_reply(cx, ip_repr, repr));
                }
                if repr.payload.is_empty() && repr.control != TcpControl::Fin {
                    // A duplicate ACK with nothing else: ignored, as before.
                    Verdict::Pass
                } else {
                    Verdict::IgnoreAck
                }
            }
        }
    }
}
