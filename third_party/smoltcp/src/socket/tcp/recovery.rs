//! ZCSTACK PATCH 9 (see ZCSTACK-PATCHES.md): loss recovery for the TCP sender.
//!
//! Upstream smoltcp recovers from loss in two ways: three duplicate ACKs
//! resend the first unacknowledged segment, and a retransmission timeout
//! (at least 1 s) resends everything from SND.UNA (go-back-N). SACK blocks
//! from the peer are ignored, reordering looks like loss, and every spurious
//! retransmission cuts the congestion window. Through a path with 1% loss
//! and some reordering that made transfers 30–40 times slower than Linux's.
//!
//! This module keeps a [`Scoreboard`] of what is in flight and recovers the
//! way current stacks do:
//!
//! - **SACK** (RFC 2018, RFC 6675): the peer's SACK blocks mark bytes
//!   delivered; only bytes declared lost are retransmitted, and the "pipe"
//!   (bytes actually in the network) rather than SND.NXT − SND.UNA is
//!   held against the congestion window.
//! - **RACK** (RFC 8985 section 6): a segment is lost when a segment sent
//!   after it was delivered and it has had one RTT plus a reordering window
//!   to arrive. The window starts at a quarter of the minimum RTT once
//!   reordering has been seen, grows with D-SACKs (RFC 2883) reporting
//!   spurious retransmissions, and is 0 while there is no sign of
//!   reordering (then three segments SACKed above a hole mark it lost at
//!   once, like RFC 6675's DupThresh). A timer finishes the job for
//!   segments not yet due.
//! - **TLP** (RFC 8985 section 7): two RTTs after the last transmission a
//!   probe (new data, or the last segment again) makes the peer's SACKs
//!   reveal a lost tail, instead of waiting for the retransmission timeout.
//! - **PRR** (RFC 6937): during fast recovery the sending rate comes down
//!   to the new slow-start threshold smoothly, one segment per delivered
//!   segment, instead of stalling and then bursting.
//! - **Undo** (RFC 2883/3708 D-SACK, RFC 3522/4015 Eifel with timestamps):
//!   when every retransmission of an episode turns out to have been
//!   needless (reordering, not loss), the congestion window is restored.
//! - Retransmission timeout: bytes sent longer than an RTT ago are
//!   declared lost (RFC 8985 6.3), the window restarts from one segment,
//!   and the scoreboard resends only what the peer lacks.
//! - Peers without SACK keep duplicate-ACK recovery (RFC 5681) with
//!   NewReno's partial-ACK rule (RFC 6582), on the same scoreboard.
//!
//! Counters for all of it are in [`RecoveryStats`].

use super::congestion::{AnyController, RateSample};
use super::scoreboard::{Delivery, Scoreboard, TxSnap, sent_after, seq_len};
use super::{Socket, State, Timer};
use crate::iface::Context;
use crate::socket::PollAt;
use crate::time::{Duration, Instant};
use crate::wire::{TcpRepr, TcpSeqNumber};

/// RFC 8985: the worst-case delayed-ACK time of the peer, added to the
/// probe timeout when a single segment is in flight.
const WC_DEL_ACK: Duration = Duration::from_millis(200);
/// Added to the probe timeout otherwise (Linux: `TCP_TIMEOUT_MIN`), so
/// scheduling noise on a microsecond path does not look like a lost tail.
const PTO_MIN_EXTRA: Duration = Duration::from_millis(2);
/// RFC 8985 6.2 step 4: recoveries after which a grown reordering window
/// shrinks back.
const REO_WND_PERSIST: u8 = 16;
/// RFC 6675 DupThresh, in segments.
const DUP_THRESH: usize = 3;

/// Loss-recovery counters of one TCP socket. They count over the socket's
/// whole life, across connections if the socket is reused.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecoveryStats {
    /// Segments sent that carried retransmitted bytes (with segmentation
    /// offload, one per offloaded segment).
    pub retransmits: u64,
    /// Bytes retransmitted.
    pub retransmitted_bytes: u64,
    /// Retransmission timer expiries.
    pub rto_expiries: u64,
    /// Fast-recovery episodes (losses found by SACK, RACK or duplicate ACKs).
    pub fast_recoveries: u64,
    /// Tail loss probes sent.
    pub tail_loss_probes: u64,
    /// Probes that repaired a lost tail.
    pub tlp_repairs: u64,
    /// Recovery episodes found spurious and undone (congestion window restored).
    pub undos: u64,
    /// D-SACK blocks received (the peer got some bytes twice).
    pub dsacks: u64,
    /// ACKs that showed the path reorders segments.
    pub reorderings: u64,
    /// Segments dropped by PAWS (RFC 7323 5.3): an old timestamp.
    pub paws_rejects: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum EpisodeKind {
    /// Fast recovery (RFC 6675) with PRR.
    Fast,
    /// After a retransmission timeout: slow start from one segment.
    Timeout,
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Episode {
    kind: EpisodeKind,
    /// SND.NXT when the episode began (RFC 6675 RecoveryPoint).
    recovery_point: TcpSeqNumber,
    /// SND.UNA when the episode began: D-SACKs for bytes from here on count
    /// against `undo_retrans`.
    undo_marker: TcpSeqNumber,
    /// The congestion controller as it was before the episode (for undo).
    before: AnyController,
    /// Bytes retransmitted in the episode not yet reported as needless.
    undo_retrans: isize,
    /// When the episode's first retransmission left (Eifel detection).
    first_retrans: Option<Instant>,
    /// Whether the first ACK after a timeout was checked (Eifel).
    eifel_checked: bool,
    // RFC 6937 PRR.
    prr_delivered: usize,
    prr_out: usize,
    recover_fs: usize,
    ssthresh: Option<usize>,
    /// `pipe + sndcnt` as of the last ACK: what may be in flight.
    prr_cwnd: usize,
    /// Without SACK: bytes duplicate ACKs stood for (RFC 6937).
    dup_credit: usize,
}

#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Rack {
    /// Transmit time and end of the most recently sent delivered segment.
    latest: Option<(Instant, TcpSeqNumber)>,
    /// RTT of that segment.
    rtt: Duration,
    min_rtt: Option<Duration>,
    /// Highest sequence delivered (cumulatively or selectively).
    fack: Option<TcpSeqNumber>,
    reordering_seen: bool,
    reo_wnd_mult: u8,
    reo_wnd_persist: u8,
    dsack_round: Option<TcpSeqNumber>,
    /// When segments not yet due may be declared lost.
    timer: Option<Instant>,
}

#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct Tlp {
    /// When to send a probe.
    pto: Option<Instant>,
    /// ZCSTACK PATCH 25: the time `pto` was armed at (the transmission it
    /// follows), for [`Socket::transmitted_late`].
    armed_at: Option<Instant>,
    /// The timer fired: the next dispatch sends a probe.
    pending: bool,
    /// SND.NXT after the outstanding probe was sent.
    end_seq: Option<TcpSeqNumber>,
    is_retrans: bool,
}

/// The loss-recovery state of a socket.
#[derive(Debug, Clone, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct Recovery {
    pub(super) board: Scoreboard,
    rack: Rack,
    tlp: Tlp,
    episode: Option<Episode>,
    /// A fast recovery that ended without being undone, while D-SACKs for
    /// its retransmissions may still arrive (they often come after the ACK
    /// that ends the episode): if they account for every retransmitted
    /// byte, it is undone late (Linux's `tcp_try_undo_dsack` does the same).
    late_undo: Option<LateUndo>,
    /// A retransmission timeout fired: the first lost bytes go next, whatever
    /// the window says (RFC 6298 5.4; Linux resends the head from the timer).
    rto_head: bool,
    pub(super) stats: RecoveryStats,
    /// ZCSTACK PATCH 19: delivery-rate state.
    rate: RateState,
    /// ZCSTACK PATCH 19: with pacing, when the next segment may leave.
    pace_next: Option<Instant>,
    /// ZCSTACK PATCH 19: when last polled, only pacing held data back (the
    /// windows had room).
    pace_waiting: bool,
}

/// ZCSTACK PATCH 19: the connection's delivery-rate state
/// (draft-cheng-iccrg-delivery-rate-estimation 3.1).
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct RateState {
    /// Bytes delivered (cumulatively or selectively acknowledged).
    delivered: u64,
    /// When `delivered` last grew.
    delivered_time: Instant,
    /// Send time of the segment whose delivery last produced a sample.
    first_sent_time: Instant,
    /// Nonzero: sends are application-limited until `delivered` passes this.
    app_limited_until: u64,
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct LateUndo {
    undo_marker: TcpSeqNumber,
    recovery_point: TcpSeqNumber,
    undo_retrans: isize,
    before: AnyController,
}

impl Default for RateState {
    fn default() -> Self {
        RateState {
            delivered: 0,
            delivered_time: Instant::ZERO,
            first_sent_time: Instant::ZERO,
            app_limited_until: 0,
        }
    }
}

impl Recovery {
    /// Forgets the connection (the counters stay).
    pub(super) fn reset(&mut self) {
        let stats = self.stats;
        *self = Recovery::default();
        self.stats = stats;
    }
}

/// What the next segment carries, as decided by loss recovery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Send {
    /// Retransmit `len` sequence numbers from `seq`.
    Retransmit { seq: TcpSeqNumber, len: usize },
    /// A tail loss probe of new data: at most one segment, not held to the
    /// congestion window.
    ProbeNew,
}

impl<'a> Socket<'a> {
    /// The sending MSS: the smaller of ours and the peer's, less options.
    pub(super) fn send_mss(&self, cx: &Context) -> usize {
        let ip_header_len = match self.tuple.map(|t| t.local.addr) {
            #[cfg(feature = "proto-ipv4")]
            Some(crate::wire::IpAddress::Ipv4(_)) => crate::wire::IPV4_HEADER_LEN,
            #[cfg(feature = "proto-ipv6")]
            Some(crate::wire::IpAddress::Ipv6(_)) => crate::wire::IPV6_HEADER_LEN,
            None => return self.remote_mss,
        };
        let options_len = if self.ts_active { 12 } else { 0 };
        let local_mss = cx.ip_mtu() - ip_header_len - crate::wire::TCP_HEADER_LEN;
        local_mss
            .min(self.remote_mss)
            .saturating_sub(options_len)
            .max(1)
    }

    /// Counters of the loss recovery (ZCSTACK PATCH 9).
    pub fn recovery_stats(&self) -> RecoveryStats {
        self.recovery.stats
    }

    /// The congestion window in bytes (`usize::MAX` without congestion
    /// control), and the bytes in flight it is held against.
    pub fn congestion_window(&self) -> (usize, usize) {
        let cwnd = match &self.recovery.episode {
            Some(ep) if ep.kind == EpisodeKind::Fast && ep.ssthresh.is_some() => ep.prr_cwnd,
            _ => self.congestion_controller.inner().window(),
        };
        (cwnd, self.pipe())
    }

    /// The smoothed round-trip time, if one was measured.
    pub fn smoothed_rtt(&self) -> Option<Duration> {
        self.rtte.srtt()
    }

    /// Bytes sent and believed to be in the network (RFC 6675 "pipe"):
    /// not acknowledged, not SACKed, not declared lost.
    pub(super) fn pipe(&self) -> usize {
        let b = &self.recovery.board;
        self.flight_size()
            .saturating_sub(b.sacked_bytes())
            .saturating_sub(b.lost_bytes())
    }

    /// How many more bytes the congestion window (or PRR in recovery)
    /// lets into the network now.
    pub(super) fn send_allowance(&self) -> usize {
        let cwnd = match &self.recovery.episode {
            Some(ep) if ep.kind == EpisodeKind::Fast && ep.ssthresh.is_some() => ep.prr_cwnd,
            _ => self.congestion_controller.inner().window(),
        };
        cwnd.saturating_sub(self.pipe())
    }

    /// How much of `available` sendable bytes the congestion window admits
    /// now. When it cannot admit them all, only whole segments of `mss`
    /// (as packet-counting stacks do: a partial segment at the end of every
    /// window-limited burst wastes a packet and, being below the receiver's
    /// MSS, does not count towards its ACK-every-second-segment rule); one
    /// segment when nothing is in flight, so a tiny window cannot stall.
    pub(super) fn cwnd_admits(&self, available: usize, mss: usize) -> usize {
        let allowance = self.send_allowance();
        if allowance >= available {
            return available;
        }
        let whole = allowance - allowance % mss.max(1);
        if whole == 0 && self.pipe() == 0 && allowance > 0 {
            mss.min(available)
        } else {
            whole
        }
    }

    /// The TSecr of `repr`, as the latest instant on our clock the echoed
    /// TSval could stand for; `None` without clock timestamps.
    fn echoed_instant(&self, cx: &Context, repr: &TcpRepr) -> Option<(Instant, Instant)> {
        let ts = repr.timestamp?;
        if !self.ts_active || !self.ts_clock || self.tsval_generator.is_some() {
            return None;
        }
        let now_tsval = self.tsval(cx)?;
        let age = now_tsval.wrapping_sub(ts.tsecr) as i32;
        if age < 0 || ts.tsecr == 0 {
            return None;
        }
        let sent_ms = cx.now().total_millis() - age as i64;
        // The echoed segment left during millisecond `sent_ms`.
        Some((
            Instant::from_millis(sent_ms),
            Instant::from_micros(sent_ms * 1000 + 999),
        ))
    }

    fn in_data_state(&self) -> bool {
        matches!(
            self.state,
            State::Established
                | State::FinWait1
                | State::FinWait2
                | State::CloseWait
                | State::Closing
                | State::LastAck
                | State::TimeWait
        )
    }

    /// Processes the ACK field (and SACK blocks) of an accepted segment:
    /// RTT, scoreboard, RACK, recovery episodes, congestion control, TLP;
    /// moves SND.UNA (`local_seq_no`) to `ack`.
    pub(super) fn recovery_on_ack(
        &mut self,
        cx: &mut Context,
        repr: &TcpRepr,
        ack: TcpSeqNumber,
        ack_len: usize,
        is_window_update: bool,
    ) {
        let now = cx.now();
        let prior_una = self.local_seq_no;
        let snd_nxt = self.remote_last_seq;
        let prior_flight = self.flight_size();
        let prior_pipe = self.pipe();
        let advanced = ack > prior_una;
        let mss = self.send_mss(cx);
        let mut newly_lost = 0;

        // RFC 5681 duplicate ACK.
        let dup = matches!(self.local_rx_last_ack, Some(last)
            if repr.payload.is_empty() && last == ack && ack < snd_nxt && !is_window_update);
        if dup {
            self.local_rx_dup_acks = self.local_rx_dup_acks.saturating_add(1);
            net_debug!(
                "received duplicate ACK for seq {} (duplicate nr {})",
                ack,
                self.local_rx_dup_acks
            );
        } else {
            self.local_rx_dup_acks = 0;
            self.local_rx_last_ack = Some(ack);
        }

        let echoed = self.echoed_instant(cx, repr);
        let (blocks, dsack) = self.sack_blocks_of(repr, ack, snd_nxt);

        let mut d = Delivery::new(now, self.recovery.rack.fack, self.recovery.rack.min_rtt);
        self.recovery.board.ack(ack, &mut d);
        for (l, r) in blocks.iter().flatten() {
            self.recovery.board.sack(*l, *r, &mut d);
        }
        // ZCSTACK PATCH 19: the delivery-rate state moves with every
        // delivered byte.
        let rate = &mut self.recovery.rate;
        if d.bytes > 0 {
            rate.delivered += d.bytes as u64;
            rate.delivered_time = now;
        }
        if rate.app_limited_until != 0 && rate.delivered > rate.app_limited_until {
            rate.app_limited_until = 0;
        }

        // SND.UNA moves. A retransmission may have been overtaken by the
        // original: never let SND.NXT fall behind SND.UNA.
        self.local_seq_no = ack;
        if self.remote_last_seq < self.local_seq_no {
            self.remote_last_seq = self.local_seq_no;
        }
        // ZCSTACK PATCH 18: a probe that became due but could not leave
        // (the device refused it, the neighbour was being resolved) is moot
        // once nothing is in flight.
        if self.flight_size() == 0 {
            self.recovery.tlp.pending = false;
        }

        // RTT: from the scoreboard when delivered bytes were never
        // retransmitted (microseconds, every ACK), else from the echoed
        // timestamp (RFC 7323 4), else Karn's one sample per flight.
        let expected = (prior_flight / (2 * mss)).max(1) as u32;
        if let Some(xmit) = d.clean {
            self.rtte.sample_us(now - xmit, expected);
        } else if advanced && let Some((earliest, _)) = echoed {
            self.rtte.sample_us(now - earliest, expected);
        } else {
            self.rtte.on_ack(now, ack);
        }

        self.rack_on_ack(&d, ack, snd_nxt, dsack);

        // Peers without SACK: three duplicate ACKs (RFC 5681), then every
        // partial ACK (RFC 6582), mark the next segment lost.
        if !self.remote_has_sack {
            let in_fast = self
                .recovery
                .episode
                .as_ref()
                .is_some_and(|ep| ep.kind == EpisodeKind::Fast);
            let partial = in_fast
                && advanced
                && self
                    .recovery
                    .episode
                    .as_ref()
                    .is_some_and(|ep| ack < ep.recovery_point);
            let third_dup = dup
                && usize::from(self.local_rx_dup_acks) == DUP_THRESH
                && self.recovery.episode.is_none();
            if third_dup || partial {
                newly_lost += self.recovery.board.mark_lost(ack, ack + mss);
            }
        }
        newly_lost += self.rack_detect_loss(now, mss);

        let eifel = |ep: &Episode| {
            ep.first_retrans
                .is_some_and(|t| echoed.is_some_and(|(_, e)| e < t))
        };
        let (spurious, done) = match &mut self.recovery.episode {
            None => (false, false),
            Some(ep) => {
                // Eifel (RFC 3522): the first new ACK after a timeout echoes
                // a transmission older than the retransmission: the
                // original arrived, the timeout was spurious.
                let mut spurious = false;
                if ep.kind == EpisodeKind::Timeout && advanced && !ep.eifel_checked {
                    ep.eifel_checked = true;
                    spurious = eifel(ep);
                }
                // The episode ends when everything sent before it is
                // acknowledged. A fast recovery whose retransmissions were
                // all reported needless by D-SACK (RFC 3708), or whose ACK
                // echoes the originals (Eifel), or that retransmitted
                // nothing, is undone.
                let done = advanced && ack >= ep.recovery_point;
                spurious |=
                    done && ep.kind == EpisodeKind::Fast && (ep.undo_retrans <= 0 || eifel(ep));
                (spurious, done)
            }
        };
        if spurious {
            self.undo_episode();
        } else if done && let Some(ep) = self.recovery.episode.take() {
            self.congestion_controller.inner_mut().on_recovery_end(now);
            if ep.kind == EpisodeKind::Fast {
                // Leave fast recovery: the controller sets cwnd to ssthresh.
                let flight = self.flight_size();
                self.congestion_controller
                    .inner_mut()
                    .on_ack(now, ack_len.max(1), flight, &self.rtte);
                self.recovery.late_undo = Some(LateUndo {
                    undo_marker: ep.undo_marker,
                    recovery_point: ep.recovery_point,
                    undo_retrans: ep.undo_retrans,
                    before: ep.before,
                });
            }
        }
        // D-SACKs that arrived after the episode ended.
        if self.recovery.episode.is_none()
            && self
                .recovery
                .late_undo
                .as_ref()
                .is_some_and(|l| l.undo_retrans <= 0)
            && let Some(late) = self.recovery.late_undo.take()
        {
            net_debug!("late undo: every retransmission was reported needless");
            if late.before.inner().window() > self.congestion_controller.inner().window() {
                self.congestion_controller.undo(late.before);
            }
            self.recovery.stats.undos += 1;
        }
        if spurious || done {
            let rack = &mut self.recovery.rack;
            rack.reo_wnd_persist = rack.reo_wnd_persist.saturating_sub(1);
            if rack.reo_wnd_persist == 0 {
                rack.reo_wnd_mult = 1;
            }
        }

        if self.recovery.episode.is_none() && self.recovery.board.lost_bytes() > 0 {
            self.enter_fast_recovery(now, prior_flight, snd_nxt, prior_una, mss);
        }

        let pipe = self.pipe();
        match &mut self.recovery.episode {
            Some(ep) if ep.kind == EpisodeKind::Fast => {
                // RFC 6937 PRR, on every ACK of the episode. Without SACK, a
                // duplicate ACK stands for one segment delivered, which the
                // next cumulative ACK then does not count again.
                let delivered = if self.remote_has_sack {
                    d.bytes
                } else if dup {
                    ep.dup_credit += mss;
                    mss
                } else {
                    let credited = ep.dup_credit.min(d.bytes);
                    ep.dup_credit -= credited;
                    d.bytes - credited
                };
                ep.prr_delivered += delivered;
                let mut sndcnt = match ep.ssthresh {
                    Some(ssthresh) if pipe > ssthresh => ((ep.prr_delivered as u64
                        * ssthresh as u64)
                        .div_ceil(ep.recover_fs.max(1) as u64)
                        as usize)
                        .saturating_sub(ep.prr_out),
                    Some(ssthresh) => {
                        let limit =
                            ep.prr_delivered.saturating_sub(ep.prr_out).max(delivered) + mss;
                        (ssthresh - pipe).min(limit)
                    }
                    None => usize::MAX / 2,
                };
                if ep.prr_out == 0 {
                    // The first retransmission leaves at once.
                    sndcnt = sndcnt.max(mss);
                }
                ep.prr_cwnd = pipe.saturating_add(sndcnt);
            }
            _ if !dup => {
                let flight = self.flight_size();
                self.congestion_controller
                    .inner_mut()
                    .on_ack(now, ack_len, flight, &self.rtte);
            }
            _ => {}
        }

        if (d.bytes > 0 || newly_lost > 0) && self.congestion_controller.inner().uses_rate_samples()
        {
            self.rate_sample(now, &d, newly_lost, prior_pipe);
        }

        self.tlp_on_ack(cx, ack, advanced, dsack);
    }

    /// ZCSTACK PATCH 19: the delivery-rate sample of an ACK
    /// (draft-cheng-iccrg-delivery-rate-estimation 3.3), handed to the
    /// congestion controller.
    fn rate_sample(&mut self, now: Instant, d: &Delivery, lost: usize, prior_in_flight: usize) {
        let min_rtt = self.recovery.rack.min_rtt;
        let rate = &mut self.recovery.rate;
        let mut rs = RateSample {
            delivered_total: rate.delivered,
            acked: d.bytes,
            lost,
            prior_in_flight,
            ..RateSample::default()
        };
        if let Some((xmit, _, tx)) = d.rate {
            rs.prior_delivered = tx.delivered;
            rs.delivered = rate.delivered.saturating_sub(tx.delivered);
            rs.app_limited = tx.app_limited;
            rate.first_sent_time = xmit;
            // The longer of the send and the ACK spans: ACKs can come
            // compressed, sends can come in a burst.
            let send_us = xmit.total_micros() - tx.first_sent_time.total_micros();
            let ack_us = now.total_micros() - tx.delivered_time.total_micros();
            let us = send_us.max(ack_us);
            // A span shorter than the minimum RTT is ACK compression, not
            // the path's rate.
            if rs.delivered > 0
                && us > 0
                && min_rtt.is_none_or(|m| us >= m.total_micros() as i64)
            {
                rs.interval = Some(Duration::from_micros(us as u64));
            }
        }
        rs.rtt = d.latest.map(|(sent, _)| now - sent);
        rs.in_flight = self.pipe();
        self.congestion_controller
            .inner_mut()
            .on_rate_sample(now, &rs, &self.rtte);
    }

    /// ZCSTACK PATCH 19: marks the sends from now on application-limited
    /// when the application gave less than a segment to send and neither
    /// the window nor loss recovery holds anything back (Linux's
    /// `tcp_rate_check_app_limited`): their rate samples then say the path
    /// can do at least that much, not that it can do no more.
    pub(super) fn recovery_check_app_limited(&mut self, cx: &Context) {
        if !self.in_data_state() || !self.congestion_controller.inner().uses_rate_samples() {
            return;
        }
        let unsent = self.tx_buffer.len().saturating_sub(self.flight_size());
        let pipe = self.pipe();
        if unsent < self.send_mss(cx)
            && pipe < self.congestion_controller.inner().window()
            && self.recovery.board.lost_bytes() == 0
        {
            let rate = &mut self.recovery.rate;
            rate.app_limited_until = (rate.delivered + pipe as u64).max(1);
        }
    }

    /// ZCSTACK PATCH 19: whether pacing holds segments back at `now`.
    pub(super) fn pacing_blocks(&self, now: Instant) -> bool {
        self.recovery.pace_next.is_some_and(|t| t > now)
    }

    /// ZCSTACK PATCH 19: when pacing lets the next segment go, if it is
    /// holding one back.
    fn pacing_poll_at(&self, now: Instant) -> PollAt {
        match self.recovery.pace_next {
            Some(t)
                if t > now
                    && (self.tx_buffer.len() > self.flight_size()
                        || self.recovery.board.lost_bytes() > 0) =>
            {
                PollAt::Time(t)
            }
            _ => PollAt::Ingress,
        }
    }

    /// The SACK blocks of `repr` that carry news, and its D-SACK block: the
    /// first block is a D-SACK (RFC 2883 4) if it lies below the ACK or
    /// inside the second block.
    #[allow(clippy::type_complexity)]
    fn sack_blocks_of(
        &self,
        repr: &TcpRepr,
        ack: TcpSeqNumber,
        snd_nxt: TcpSeqNumber,
    ) -> (
        [Option<(TcpSeqNumber, TcpSeqNumber)>; 3],
        Option<(TcpSeqNumber, TcpSeqNumber)>,
    ) {
        let mut blocks = [None; 3];
        let mut dsack = None;
        if !self.remote_has_sack {
            return (blocks, dsack);
        }
        let seq = |(l, r): (u32, u32)| (TcpSeqNumber(l as i32), TcpSeqNumber(r as i32));
        for (i, b) in repr.sack_ranges.iter().enumerate() {
            let Some((l, r)) = b.map(seq) else { continue };
            if r <= l {
                continue;
            }
            if i == 0 {
                let inside_next = repr.sack_ranges[1]
                    .map(seq)
                    .is_some_and(|(l2, r2)| l2 <= l && r <= r2);
                if r <= ack || inside_next {
                    dsack = Some((l, r));
                    continue;
                }
            }
            // Only blocks inside (SND.UNA, SND.NXT] carry information.
            if l >= ack && r <= snd_nxt {
                blocks[i] = Some((l, r));
            }
        }
        (blocks, dsack)
    }

    /// RFC 8985 6.2 steps 2–4: the most recently sent delivered segment,
    /// reordering, and the D-SACK-driven reordering window.
    fn rack_on_ack(
        &mut self,
        d: &Delivery,
        ack: TcpSeqNumber,
        snd_nxt: TcpSeqNumber,
        dsack: Option<(TcpSeqNumber, TcpSeqNumber)>,
    ) {
        let rack = &mut self.recovery.rack;
        if let Some((xmit, end)) = d.latest {
            let rtt = d.now() - xmit;
            rack.rtt = rtt;
            rack.min_rtt = Some(rack.min_rtt.map_or(rtt, |m| m.min(rtt)));
            if rack.latest.is_none_or(|(x, e)| sent_after(xmit, end, x, e)) {
                rack.latest = Some((xmit, end));
            }
        }
        if let Some(h) = d.highest
            && rack.fack.is_none_or(|f| h > f)
        {
            rack.fack = Some(h);
        }
        if d.reordered {
            rack.reordering_seen = true;
            self.recovery.stats.reorderings += 1;
        }
        if rack.dsack_round.is_some_and(|round| ack >= round) {
            rack.dsack_round = None;
        }
        if let Some((l, r)) = dsack {
            self.recovery.stats.dsacks += 1;
            // A duplicate delivery means a needless retransmission: the path
            // reorders (or duplicates) more than the window allowed for.
            rack.reordering_seen = true;
            if rack.dsack_round.is_none() {
                rack.dsack_round = Some(snd_nxt);
                rack.reo_wnd_mult = rack.reo_wnd_mult.saturating_add(1);
                rack.reo_wnd_persist = REO_WND_PERSIST;
            }
            if let Some(ep) = &mut self.recovery.episode
                && l >= ep.undo_marker
            {
                ep.undo_retrans -= seq_len(r, l) as isize;
            } else if let Some(late) = &mut self.recovery.late_undo
                && l >= late.undo_marker
                && r <= late.recovery_point
            {
                late.undo_retrans -= seq_len(r, l) as isize;
            }
        }
    }

    /// What a loss response scales down: the bytes outstanding (RFC 5681's
    /// FlightSize), but never more than the congestion window. With SACK,
    /// bytes the peer holds beyond a hole leave the pipe, so the sender
    /// keeps sending and FlightSize grows past the window — on a path that
    /// reorders, to several windows. Scaling that down gave an ssthresh
    /// above the window: a loss raised it. Linux scales the window.
    fn loss_basis(&self, flight: usize) -> usize {
        flight.min(self.congestion_controller.inner().window())
    }

    fn enter_fast_recovery(
        &mut self,
        now: Instant,
        flight: usize,
        snd_nxt: TcpSeqNumber,
        una: TcpSeqNumber,
        mss: usize,
    ) {
        let before = self.congestion_controller.clone();
        let basis = self.loss_basis(flight);
        self.congestion_controller.inner_mut().on_loss(now, basis);
        let ssthresh = self.congestion_controller.inner().ssthresh();
        net_debug!("entering fast recovery (flight {})", flight);
        self.recovery.episode = Some(Episode {
            kind: EpisodeKind::Fast,
            recovery_point: snd_nxt,
            undo_marker: una,
            before,
            undo_retrans: 0,
            first_retrans: None,
            eifel_checked: false,
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: flight,
            ssthresh,
            // Until an ACK updates it: the first retransmission may leave
            // (without congestion control, everything may).
            prr_cwnd: match ssthresh {
                Some(_) => self.pipe() + mss,
                None => usize::MAX / 2,
            },
            dup_credit: 0,
        });
        self.recovery.stats.fast_recoveries += 1;
        self.recovery.late_undo = None;
        self.recovery.tlp.pto = None;
        self.recovery.tlp.pending = false;
    }

    /// The episode's retransmissions were needless: restore the congestion
    /// controller and forget loss marks on bytes not yet resent.
    fn undo_episode(&mut self) {
        if let Some(ep) = self.recovery.episode.take() {
            net_debug!("undoing recovery: retransmissions were spurious");
            self.congestion_controller.undo(ep.before);
            self.recovery.board.unmark_lost();
            self.recovery.stats.undos += 1;
        }
    }

    /// RFC 8985 6.2 step 4.
    fn rack_reo_wnd(&self, mss: usize) -> Duration {
        let rack = &self.recovery.rack;
        if !rack.reordering_seen
            && (self.recovery.episode.is_some()
                || self.recovery.board.sacked_bytes() >= DUP_THRESH * mss)
        {
            return Duration::ZERO;
        }
        let Some(min_rtt) = rack.min_rtt else {
            return Duration::ZERO;
        };
        let wnd =
            Duration::from_micros(min_rtt.total_micros() * u64::from(rack.reo_wnd_mult.max(1)) / 4);
        match self.rtte.srtt() {
            Some(srtt) => wnd.min(srtt),
            None => wnd,
        }
    }

    /// RFC 8985 6.2 step 5; arms the reordering timer for what is not yet due.
    fn rack_detect_loss(&mut self, now: Instant, mss: usize) -> usize {
        let Some((xmit, end)) = self.recovery.rack.latest else {
            return 0;
        };
        let rtt_reo = self.recovery.rack.rtt + self.rack_reo_wnd(mss);
        let (lost, wait) = self.recovery.board.rack_detect(xmit, end, rtt_reo, now);
        self.recovery.rack.timer = wait.map(|w| now + w);
        lost
    }

    /// Timers of loss recovery, run at the start of `dispatch`.
    pub(super) fn recovery_on_timers(&mut self, cx: &mut Context) {
        let now = cx.now();
        if self.recovery.rack.timer.is_some_and(|t| t <= now) {
            self.recovery.rack.timer = None;
            let mss = self.send_mss(cx);
            if self.rack_detect_loss(now, mss) > 0 && self.recovery.episode.is_none() {
                let (flight, nxt, una) =
                    (self.flight_size(), self.remote_last_seq, self.local_seq_no);
                self.enter_fast_recovery(now, flight, nxt, una, mss);
            } else {
                // Nothing lost after all: a tail may still need a probe.
                self.tlp_arm(cx);
            }
        }
        if self.recovery.tlp.pto.is_some_and(|t| t <= now) {
            self.recovery.tlp.pto = None;
            if self.recovery.episode.is_none() && self.flight_size() > 0 {
                self.recovery.tlp.pending = true;
                // The probe goes instead of a timeout due now (RFC 8985 7.3:
                // the retransmission timer runs again after it).
                let rto = self.rtte.retransmission_timeout();
                self.timer.set_for_retransmit(now, rto);
            }
        }
    }

    /// A retransmission timeout with data in flight (RFC 6298 5.4–5.7,
    /// RFC 8985 6.3): declares lost what had time to arrive, restarts from
    /// one segment. Returns false if the scoreboard has nothing (the caller
    /// then rewinds as before).
    pub(super) fn recovery_on_rto(&mut self, cx: &mut Context) -> bool {
        if !self.in_data_state() || self.recovery.board.is_empty() {
            return false;
        }
        let now = cx.now();
        let mss = self.send_mss(cx);
        let flight = self.flight_size();
        let una = self.local_seq_no;
        let before = match self.recovery.episode.take() {
            // A timeout during recovery: undo restores what preceded it.
            Some(ep) => ep.before,
            None => self.congestion_controller.clone(),
        };
        self.congestion_controller.inner_mut().on_rto(now, flight);
        self.rtte.on_rto();
        // The first outstanding segment is lost; the rest if they had an RTT
        // plus the reordering window to arrive.
        if let Some(first) = self
            .recovery
            .board
            .ranges()
            .iter()
            .find(|r| !r.has(super::scoreboard::SACKED))
            .map(|r| r.start)
        {
            self.recovery.board.mark_lost(first, first + mss);
        }
        let rtt_reo = match self.recovery.rack.latest {
            Some(_) => self.recovery.rack.rtt + self.rack_reo_wnd(mss),
            None => Duration::ZERO,
        };
        self.recovery.board.rto_detect(rtt_reo, now);
        self.recovery.rto_head = true;
        self.recovery.episode = Some(Episode {
            kind: EpisodeKind::Timeout,
            recovery_point: self.remote_last_seq,
            undo_marker: una,
            before,
            undo_retrans: 0,
            first_retrans: None,
            eifel_checked: false,
            prr_delivered: 0,
            prr_out: 0,
            recover_fs: flight,
            ssthresh: None,
            prr_cwnd: 0,
            dup_credit: 0,
        });
        self.recovery.rack.timer = None;
        self.recovery.tlp = Tlp::default();
        self.recovery.stats.rto_expiries += 1;
        true
    }

    /// What loss recovery wants sent next, if anything: lost bytes the
    /// window allows (at most `max` of them), or a probe.
    pub(super) fn recovery_next_send(&self, cx: &Context, max: usize) -> Option<Send> {
        if !self.in_data_state() {
            return None;
        }
        if self.recovery.tlp.pending {
            let sent = self.flight_size();
            let win_right = self.local_seq_no + self.remote_win_len;
            if self.tx_buffer.len() > sent && win_right > self.remote_last_seq {
                return Some(Send::ProbeNew);
            }
            // Probe with the last segment again.
            let mss = self.send_mss(cx);
            let len = self.flight_size().min(mss);
            if len > 0 {
                return Some(Send::Retransmit {
                    seq: self.remote_last_seq - len,
                    len,
                });
            }
            return None;
        }
        if self.recovery.board.lost_bytes() == 0 {
            return None;
        }
        let mss = self.send_mss(cx);
        if self.recovery.rto_head {
            let (seq, len) = self.recovery.board.first_lost(mss.min(max).max(1))?;
            return Some(Send::Retransmit { seq, len });
        }
        let allowance = self.send_allowance();
        if allowance == 0 {
            return None;
        }
        let cap = max.min(allowance.div_ceil(mss).saturating_mul(mss)).max(1);
        // Lost bytes were inside the peer's window when first sent: they are
        // resent even if the window shrank since (as fast retransmit was).
        let (seq, len) = self.recovery.board.first_lost(cap)?;
        Some(Send::Retransmit { seq, len })
    }

    /// Whether the next segment is a tail loss probe.
    pub(super) fn recovery_probe_pending(&self) -> bool {
        self.recovery.tlp.pending
    }

    /// Whether loss recovery has something to send now.
    pub(super) fn recovery_wants_to_send(&self, cx: &Context) -> bool {
        self.recovery_next_send(cx, usize::MAX).is_some()
    }

    /// Records a segment that left: `[seq, seq + len)` in sequence space,
    /// `prior_nxt` SND.NXT before it. `probe`: it was a tail loss probe.
    pub(super) fn recovery_on_transmit(
        &mut self,
        cx: &mut Context,
        prior_nxt: TcpSeqNumber,
        seq: TcpSeqNumber,
        len: usize,
        probe: bool,
    ) {
        if !self.in_data_state() || len == 0 {
            return;
        }
        let now = cx.now();
        let end = seq + len;
        // ZCSTACK PATCH 19: the delivery state this send starts from; with
        // nothing in flight, the rate's clocks start now.
        let host_late = self.pacing_missed(now, len).then(|| self.pipe());
        let rate = &mut self.recovery.rate;
        if seq_len(prior_nxt, self.local_seq_no) == 0 {
            rate.first_sent_time = now;
            rate.delivered_time = now;
        }
        if let Some(pipe) = host_late {
            // This host, not the path, held the segment back: the rate it
            // yields says nothing about the path (as an application-limited
            // one would not).
            rate.app_limited_until = (rate.delivered + pipe as u64).max(1);
        }
        let tx = TxSnap {
            delivered: rate.delivered,
            delivered_time: rate.delivered_time,
            first_sent_time: rate.first_sent_time,
            app_limited: rate.app_limited_until != 0,
        };
        self.pace(now, len);
        let grain = self
            .recovery
            .rack
            .min_rtt
            .map_or(Duration::from_micros(100), |m| {
                Duration::from_micros((m.total_micros() / 16).clamp(10, 1000))
            });
        let resent_end = end.min(prior_nxt);
        let resent = seq_len(resent_end, seq);
        if resent > 0 {
            self.recovery.rto_head = false;
            self.recovery.board.retransmitted(seq, resent_end, now, tx);
            self.rtte.on_retransmit();
            let stats = &mut self.recovery.stats;
            stats.retransmits += 1;
            stats.retransmitted_bytes += resent as u64;
            if let Some(ep) = &mut self.recovery.episode {
                ep.undo_retrans += resent as isize;
                ep.first_retrans.get_or_insert(now);
            }
        }
        let new_start = seq.max(prior_nxt);
        let new = seq_len(end, new_start);
        if new > 0 {
            self.recovery.board.sent(new_start, end, now, grain, tx);
        }
        if let Some(ep) = &mut self.recovery.episode
            && ep.kind == EpisodeKind::Fast
        {
            ep.prr_out += len;
        }
        if probe {
            self.recovery.tlp.pending = false;
            self.recovery.tlp.end_seq = Some(prior_nxt.max(end));
            self.recovery.tlp.is_retrans = resent > 0;
            self.recovery.stats.tail_loss_probes += 1;
            // RFC 8985 7.3: after a probe, the retransmission timer runs.
            let rto = self.rtte.retransmission_timeout();
            self.timer.set_for_retransmit(now, rto);
        } else if new > 0 {
            self.tlp_arm(cx);
        }
    }

    /// ZCSTACK PATCH 19: with a pacing rate, `len` bytes sent hold the
    /// next segment back by `len / rate` on an ideal schedule. A poll loop
    /// does not wake exactly on time (it may yield its CPU, or sleep):
    /// sends that come late may catch up, back to back, on up to 1 ms (or
    /// two gaps, if longer) of the schedule they missed: about one send
    /// quantum, which BBR's window allows for. The average rate holds
    /// without unbounded bursts. (Linux paces with a high-resolution
    /// timer and forgives up to half a gap per late send.)
    fn pace(&mut self, now: Instant, len: usize) {
        let Some((gap, slack)) = self.pacing_gap(len) else {
            self.recovery.pace_next = None;
            return;
        };
        let floor = now - slack;
        let start = self.recovery.pace_next.map_or(now, |p| p.max(floor));
        self.recovery.pace_next = Some(start + gap);
        // Whether the next segment will wait for pacing alone.
        self.recovery_note_paced();
    }

    /// With pacing: the gap `len` bytes take at the pacing rate, and how
    /// much of a missed schedule a late send may catch up on.
    fn pacing_gap(&self, len: usize) -> Option<(Duration, Duration)> {
        let rate = self.congestion_controller.inner().pacing_rate()?;
        let gap = (len as u128 * 1_000_000 / rate.max(1) as u128).min(1_000_000) as u64;
        Some((
            Duration::from_micros(gap),
            Duration::from_micros((2 * gap).max(1000)),
        ))
    }

    /// Whether a send of `len` bytes at `now` comes later than pacing
    /// allowed by more than it may catch up on: the poll loop was away
    /// (descheduled, busy elsewhere) and the connection sent less than its
    /// rate for a while.
    fn pacing_missed(&self, now: Instant, len: usize) -> bool {
        if !self.recovery.pace_waiting {
            return false;
        }
        match (self.recovery.pace_next, self.pacing_gap(len)) {
            (Some(next), Some((_, slack))) => next + slack < now,
            _ => false,
        }
    }

    /// ZCSTACK PATCH 19: after a paced send, notes whether only pacing
    /// holds the next segment back (there is something to send and the
    /// windows have room), so a send that then comes late is known to have
    /// been held back by this host.
    fn recovery_note_paced(&mut self) {
        let unsent = self.tx_buffer.len() > self.flight_size();
        let lost = self.recovery.board.lost_bytes() > 0;
        self.recovery.pace_waiting = (unsent || lost) && self.send_allowance() > 0;
    }

    /// ZCSTACK PATCH 25: the probe armed by a transmission at `at` waits
    /// `by` longer. Returns whether it did.
    pub(super) fn tlp_defer(&mut self, at: Instant, by: Duration) -> bool {
        let tlp = &mut self.recovery.tlp;
        match (tlp.pto, tlp.armed_at) {
            (Some(pto), Some(armed)) if armed == at => {
                tlp.pto = Some(pto + by);
                tlp.armed_at = Some(at + by);
                true
            }
            _ => false,
        }
    }

    /// RFC 8985 7.2: schedules a probe two RTTs out, unless recovery is
    /// under way, a probe is outstanding, or the retransmission timer would
    /// fire first.
    fn tlp_arm(&mut self, cx: &Context) {
        let now = cx.now();
        let r = &self.recovery;
        let flight = self.flight_size();
        if !self.remote_has_sack
            || r.episode.is_some()
            || r.tlp.end_seq.is_some()
            || r.rack.timer.is_some()
            || r.board.sacked_bytes() > 0
            || flight == 0
        {
            self.recovery.tlp.pto = None;
            return;
        }
        let Some(srtt) = self.rtte.srtt() else {
            self.recovery.tlp.pto = None;
            return;
        };
        let extra = if flight <= self.send_mss(cx) {
            WC_DEL_ACK
        } else {
            PTO_MIN_EXTRA
        };
        // RFC 8985 7.2: never later than the retransmission timer; a probe
        // due then goes instead of the timeout (which would collapse the
        // congestion window).
        let pto = now + srtt + srtt + extra;
        self.recovery.tlp.armed_at = Some(now);
        self.recovery.tlp.pto = Some(match self.timer {
            Timer::Retransmit { expires_at } => pto.min(expires_at),
            _ => pto,
        });
    }

    /// RFC 8985 7.4: was the outstanding probe's retransmission needed?
    fn tlp_on_ack(
        &mut self,
        cx: &mut Context,
        ack: TcpSeqNumber,
        advanced: bool,
        dsack: Option<(TcpSeqNumber, TcpSeqNumber)>,
    ) {
        if let Some(end) = self.recovery.tlp.end_seq {
            let tlp = &mut self.recovery.tlp;
            if !tlp.is_retrans {
                if ack >= end {
                    tlp.end_seq = None;
                }
            } else if dsack.is_some_and(|(l, r)| l < end && r >= end) {
                // Original and probe both arrived: no loss.
                tlp.end_seq = None;
            } else if ack > end {
                // The probe repaired a lost tail: respond to the loss.
                tlp.end_seq = None;
                self.recovery.stats.tlp_repairs += 1;
                if self.recovery.episode.is_none() {
                    let now = cx.now();
                    let flight = self.flight_size();
                    let basis = self.loss_basis(flight);
                    let cc = self.congestion_controller.inner_mut();
                    cc.on_loss(now, basis);
                    cc.on_ack(now, 1, flight, &self.rtte);
                }
            }
        }
        if advanced {
            self.tlp_arm(cx);
        }
    }

    /// When loss recovery's timers next need a poll.
    pub(super) fn recovery_poll_at(&self, now: Instant) -> PollAt {
        let r = &self.recovery;
        // ZCSTACK PATCH 18: only while the probe can still go (what
        // `recovery_next_send` asks); a stale one would have the socket
        // polled "now" for ever with nothing to send.
        if r.tlp.pending && self.in_data_state() && self.flight_size() > 0 {
            return PollAt::Now;
        }
        let timers = match (r.rack.timer, r.tlp.pto) {
            (Some(a), Some(b)) => PollAt::Time(a.min(b)),
            (Some(t), None) | (None, Some(t)) => PollAt::Time(t),
            (None, None) => PollAt::Ingress,
        };
        timers.min(self.pacing_poll_at(now))
    }
}
