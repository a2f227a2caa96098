//! ZCSTACK PATCH 19 (see ZCSTACK-PATCHES.md): BBR (version 1) congestion
//! control, after draft-cardwell-iccrg-bbr-congestion-control-00 and Linux's
//! `net/ipv4/tcp_bbr.c`.
//!
//! BBR does not read loss as congestion. It models the path by two numbers
//! measured on every ACK: the bottleneck bandwidth (`btl_bw`, the windowed
//! maximum of the delivery rate over 10 round trips) and the round-trip
//! propagation time (`rt_prop`, the minimum RTT over 10 s). It sends at a
//! pacing rate of about `btl_bw` and keeps about one bandwidth-delay product
//! (BDP) in flight:
//!
//! - *Startup* doubles the rate each round (gain 2/ln 2) until the
//!   bandwidth stops growing by 25% for three rounds;
//! - *Drain* then empties the queue Startup built;
//! - *ProbeBW* cycles the pacing gain through 5/4, 3/4 and six rounds of 1,
//!   probing for more bandwidth and draining what the probe queued;
//! - *ProbeRTT*, when `rt_prop` has not been refreshed for 10 s, holds four
//!   segments in flight for 200 ms and a round, to see the path's RTT again.
//!
//! On a loss recovery it holds the packets in flight for one round (packet
//! conservation) and restores its window when the recovery ends; a
//! retransmission timeout cuts the window to one segment, as Linux does.
//!
//! The delivery rate comes from the socket (the scoreboard records, per
//! transmission, how much had been delivered by then:
//! draft-cheng-iccrg-delivery-rate-estimation) as a [`RateSample`]; the
//! socket paces its segments by [`Controller::pacing_rate`].

use crate::socket::tcp::RttEstimator;
use crate::time::{Duration, Instant};

use super::{Controller, RateSample};

/// 2/ln(2), in 1/1000: Startup's pacing and window gain.
const HIGH_GAIN: u64 = 2885;
/// 1/HIGH_GAIN, in 1/1000: Drain's pacing gain.
const DRAIN_GAIN: u64 = 347;
/// ProbeBW's window gain, in 1/1000.
const CWND_GAIN: u64 = 2000;
/// ProbeBW's pacing gains, in 1/1000, one phase per `rt_prop`.
const CYCLE: [u64; 8] = [1250, 750, 1000, 1000, 1000, 1000, 1000, 1000];
/// Rounds the bandwidth filter spans.
const BW_ROUNDS: u64 = 10;
/// How long an `rt_prop` sample stays valid.
const RT_PROP_WINDOW: Duration = Duration::from_secs(10);
/// How long ProbeRTT holds the window down (at least a round too).
const PROBE_RTT_TIME: Duration = Duration::from_millis(200);
/// Startup ends when the bandwidth grew less than this (in 1/1000) ...
const FULL_BW_GROWTH: u64 = 1250;
/// ... for this many rounds.
const FULL_BW_ROUNDS: u8 = 3;
/// Pacing runs 1% below the estimate, so queues drain (Linux's
/// `bbr_pacing_margin_percent`).
const PACING_MARGIN: u64 = 990;
/// The window never goes below this many segments.
const MIN_CWND_SEGMENTS: usize = 4;
/// The RTT assumed before the first sample, to set the first pacing rate.
const INITIAL_RTT: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
enum Mode {
    Startup,
    Drain,
    ProbeBw,
    ProbeRtt,
}

/// A windowed maximum (Kathleen Nichols' algorithm, as Linux's
/// `lib/minmax.c`): the best, second-best and third-best samples of the last
/// `window` rounds, so an old maximum ages out without keeping every sample.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
struct MaxFilter {
    /// `(round, value)`, best first.
    s: [(u64, u64); 3],
}

impl MaxFilter {
    fn get(&self) -> u64 {
        self.s[0].1
    }

    fn reset(&mut self, round: u64, value: u64) -> u64 {
        self.s = [(round, value); 3];
        value
    }

    fn update(&mut self, window: u64, round: u64, value: u64) -> u64 {
        if value >= self.s[0].1 || round.saturating_sub(self.s[2].0) > window {
            return self.reset(round, value);
        }
        if value >= self.s[1].1 {
            self.s[1] = (round, value);
            self.s[2] = (round, value);
        } else if value >= self.s[2].1 {
            self.s[2] = (round, value);
        }
        // Age the samples: the best one that left the window gives way.
        let dt = round.saturating_sub(self.s[0].0);
        if dt > window {
            self.s[0] = self.s[1];
            self.s[1] = self.s[2];
            self.s[2] = (round, value);
            if round.saturating_sub(self.s[0].0) > window {
                self.s[0] = self.s[1];
                self.s[1] = self.s[2];
                self.s[2] = (round, value);
            }
        } else if self.s[1].0 == self.s[0].0 && dt > window / 4 {
            self.s[2] = (round, value);
            self.s[1] = (round, value);
        } else if self.s[2].0 == self.s[1].0 && dt > window / 2 {
            self.s[2] = (round, value);
        }
        self.s[0].1
    }
}

#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bbr {
    mss: usize,
    cwnd: usize,
    /// Bytes per second; 0 until the first RTT is known.
    pacing_rate: u64,
    mode: Mode,
    /// Bottleneck bandwidth, bytes per second.
    btl_bw: MaxFilter,
    rt_prop: Option<Duration>,
    rt_prop_stamp: Instant,
    round_count: u64,
    next_round_delivered: u64,
    round_start: bool,
    filled_pipe: bool,
    full_bw: u64,
    full_bw_count: u8,
    cycle_index: usize,
    cycle_stamp: Instant,
    pacing_gain: u64,
    cwnd_gain: u64,
    probe_rtt_done: Option<Instant>,
    probe_rtt_round_done: bool,
    /// The window before a recovery, ProbeRTT or a timeout, restored after.
    prior_cwnd: usize,
    in_recovery: bool,
    /// Packet conservation until this round ends (first round of a recovery).
    conservation: bool,
    /// Bytes delivered in total (the socket's count, from the last sample).
    delivered: u64,
    /// Seeds the ProbeBW phase choice.
    rand: u32,
}

impl Bbr {
    pub fn new() -> Self {
        Bbr {
            mss: 1024,
            cwnd: 10 * 1024,
            pacing_rate: 0,
            mode: Mode::Startup,
            btl_bw: MaxFilter::default(),
            rt_prop: None,
            rt_prop_stamp: Instant::ZERO,
            round_count: 0,
            next_round_delivered: 0,
            round_start: false,
            filled_pipe: false,
            full_bw: 0,
            full_bw_count: 0,
            cycle_index: 0,
            cycle_stamp: Instant::ZERO,
            pacing_gain: HIGH_GAIN,
            cwnd_gain: HIGH_GAIN,
            probe_rtt_done: None,
            probe_rtt_round_done: false,
            prior_cwnd: 0,
            in_recovery: false,
            conservation: false,
            delivered: 0,
            rand: 0x9e37_79b9,
        }
    }

    fn min_cwnd(&self) -> usize {
        MIN_CWND_SEGMENTS * self.mss
    }

    /// `gain` (1/1000) times the bandwidth-delay product, in bytes; `None`
    /// before the first bandwidth and RTT samples.
    fn bdp(&self, gain: u64) -> Option<usize> {
        let bw = self.btl_bw.get();
        let rt_prop = self.rt_prop?;
        if bw == 0 {
            return None;
        }
        let bytes = (bw as u128 * rt_prop.total_micros() as u128 / 1_000_000) as u64;
        Some((bytes.saturating_mul(gain) / 1000) as usize)
    }

    /// Bytes the socket sends as one burst at the current pacing rate (about
    /// 1 ms worth, two segments at least, 64 KiB at most): the window
    /// allows for three of them in flight beyond the BDP, as Linux's
    /// `bbr_quantization_budget` does for TSO.
    fn send_quantum(&self) -> usize {
        let ms = (self.pacing_rate / 1000) as usize;
        ms.clamp(2 * self.mss, 65536.max(2 * self.mss))
    }

    /// The window BBR aims for: `cwnd_gain` BDPs plus three send quanta.
    fn target_cwnd(&self, gain: u64) -> Option<usize> {
        let bdp = self.bdp(gain)?;
        Some((bdp + 3 * self.send_quantum()).max(self.min_cwnd()))
    }

    fn set_pacing_rate(&mut self, gain: u64) {
        let bw = self.btl_bw.get();
        if bw == 0 {
            return;
        }
        let rate = (bw as u128 * gain as u128 * PACING_MARGIN as u128 / 1_000_000) as u64;
        if self.filled_pipe || rate > self.pacing_rate {
            self.pacing_rate = rate;
        }
    }

    /// Before the first bandwidth sample: Startup's gain over the initial
    /// window per RTT (Linux's `bbr_init_pacing_rate_from_rtt`).
    fn init_pacing_rate(&mut self, rtt: &RttEstimator) {
        let srtt = rtt.srtt().unwrap_or(INITIAL_RTT).max(Duration::from_micros(1));
        let bw = self.cwnd as u128 * 1_000_000 / srtt.total_micros() as u128;
        self.pacing_rate =
            (bw * HIGH_GAIN as u128 * PACING_MARGIN as u128 / 1_000_000).min(u64::MAX as u128)
                as u64;
    }

    fn next_rand(&mut self) -> u32 {
        // xorshift32: only picks ProbeBW's first phase.
        let mut x = self.rand;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.rand = x;
        x
    }

    fn enter_probe_bw(&mut self, now: Instant) {
        self.mode = Mode::ProbeBw;
        self.cwnd_gain = CWND_GAIN;
        // Any phase but the draining one (Linux: a random start spreads
        // flows' probes apart).
        let r = self.next_rand() as usize % (CYCLE.len() - 1);
        self.cycle_index = if r >= 1 { r + 1 } else { r };
        self.cycle_stamp = now;
        self.pacing_gain = CYCLE[self.cycle_index];
    }

    fn update_round(&mut self, rs: &RateSample) {
        self.round_start = false;
        if rs.delivered > 0 && rs.prior_delivered >= self.next_round_delivered {
            self.next_round_delivered = rs.delivered_total;
            self.round_count += 1;
            self.round_start = true;
            self.conservation = false;
        }
    }

    fn update_bw(&mut self, rs: &RateSample) {
        let Some(interval) = rs.interval else {
            return;
        };
        let us = interval.total_micros();
        if us == 0 || rs.delivered == 0 {
            return;
        }
        let bw = (rs.delivered as u128 * 1_000_000 / us as u128).min(u64::MAX as u128) as u64;
        // An application-limited sample says the path can do at least this
        // much: it only counts if it beats what is known.
        if !rs.app_limited || bw >= self.btl_bw.get() {
            self.btl_bw.update(BW_ROUNDS, self.round_count, bw);
        }
    }

    fn check_full_pipe(&mut self, rs: &RateSample) {
        if self.filled_pipe || !self.round_start || rs.app_limited {
            return;
        }
        let bw = self.btl_bw.get();
        if bw.saturating_mul(1000) >= self.full_bw.saturating_mul(FULL_BW_GROWTH) {
            self.full_bw = bw;
            self.full_bw_count = 0;
            return;
        }
        self.full_bw_count += 1;
        if self.full_bw_count >= FULL_BW_ROUNDS {
            self.filled_pipe = true;
        }
    }

    fn update_cycle_phase(&mut self, now: Instant, rs: &RateSample) {
        if self.mode != Mode::ProbeBw {
            return;
        }
        let Some(rt_prop) = self.rt_prop else { return };
        let full_length = now - self.cycle_stamp > rt_prop;
        let next = match self.pacing_gain {
            1000 => full_length,
            g if g > 1000 => {
                full_length
                    && (rs.lost > 0
                        || self
                            .bdp(g)
                            .is_some_and(|target| rs.prior_in_flight >= target))
            }
            _ => {
                full_length
                    || self
                        .bdp(1000)
                        .is_some_and(|bdp| rs.prior_in_flight <= bdp)
            }
        };
        if next {
            self.cycle_index = (self.cycle_index + 1) % CYCLE.len();
            self.cycle_stamp = now;
            self.pacing_gain = CYCLE[self.cycle_index];
        }
    }

    fn check_drain(&mut self, now: Instant, in_flight: usize) {
        if self.mode == Mode::Startup && self.filled_pipe {
            self.mode = Mode::Drain;
            self.pacing_gain = DRAIN_GAIN;
            self.cwnd_gain = HIGH_GAIN;
        }
        if self.mode == Mode::Drain && self.bdp(1000).is_some_and(|bdp| in_flight <= bdp) {
            self.enter_probe_bw(now);
        }
    }

    fn update_rt_prop(&mut self, now: Instant, rs: &RateSample, in_flight: usize) {
        let expired = now > self.rt_prop_stamp + RT_PROP_WINDOW;
        if let Some(rtt) = rs.rtt
            && (self.rt_prop.is_none_or(|p| rtt <= p) || expired)
        {
            self.rt_prop = Some(rtt);
            self.rt_prop_stamp = now;
        }
        if expired && self.mode != Mode::ProbeRtt && self.rt_prop.is_some() {
            self.mode = Mode::ProbeRtt;
            self.pacing_gain = 1000;
            self.cwnd_gain = 1000;
            self.save_cwnd();
            self.probe_rtt_done = None;
        }
        if self.mode == Mode::ProbeRtt {
            match self.probe_rtt_done {
                None if in_flight <= self.min_cwnd() => {
                    self.probe_rtt_done = Some(now + PROBE_RTT_TIME);
                    self.probe_rtt_round_done = false;
                    self.next_round_delivered = self.delivered;
                }
                None => {}
                Some(done) => {
                    if self.round_start {
                        self.probe_rtt_round_done = true;
                    }
                    if self.probe_rtt_round_done && now >= done {
                        self.rt_prop_stamp = now;
                        self.cwnd = self.cwnd.max(self.prior_cwnd);
                        if self.filled_pipe {
                            self.enter_probe_bw(now);
                        } else {
                            self.mode = Mode::Startup;
                            self.pacing_gain = HIGH_GAIN;
                            self.cwnd_gain = HIGH_GAIN;
                        }
                    }
                }
            }
        }
    }

    fn save_cwnd(&mut self) {
        self.prior_cwnd = if self.in_recovery || self.mode == Mode::ProbeRtt {
            self.prior_cwnd.max(self.cwnd)
        } else {
            self.cwnd
        };
    }

    fn set_cwnd(&mut self, rs: &RateSample) {
        let acked = rs.acked;
        if rs.lost > 0 {
            self.cwnd = self.cwnd.saturating_sub(rs.lost).max(self.mss);
        }
        if self.conservation {
            self.cwnd = self.cwnd.max(rs.in_flight + acked);
        } else if let Some(target) = self.target_cwnd(self.cwnd_gain) {
            if self.filled_pipe {
                self.cwnd = (self.cwnd + acked).min(target);
            } else if self.cwnd < target || rs.delivered_total < 10 * self.mss as u64 {
                self.cwnd += acked;
            }
        } else {
            // No model yet: grow as slow start does.
            self.cwnd += acked;
        }
        self.cwnd = self.cwnd.max(self.min_cwnd());
        if self.mode == Mode::ProbeRtt {
            self.cwnd = self.cwnd.min(self.min_cwnd());
        }
    }
}

impl Bbr {
    /// A loss response was needless (reordering, not loss): the recovery
    /// ends, the window comes back, and Startup's full-pipe detection starts
    /// over (Linux's `bbr_undo_cwnd`): the rounds it held back measured the
    /// recovery, not the path.
    pub(crate) fn undo(&mut self, window_before: usize) {
        self.in_recovery = false;
        self.conservation = false;
        self.cwnd = self.cwnd.max(self.prior_cwnd).max(window_before);
        self.full_bw = 0;
        self.full_bw_count = 0;
    }
}

impl Default for Bbr {
    fn default() -> Self {
        Self::new()
    }
}

impl Controller for Bbr {
    fn window(&self) -> usize {
        self.cwnd
    }

    fn on_rate_sample(&mut self, now: Instant, rs: &RateSample, rtt: &RttEstimator) {
        self.delivered = rs.delivered_total;
        self.update_round(rs);
        self.update_bw(rs);
        self.update_cycle_phase(now, rs);
        self.check_full_pipe(rs);
        self.check_drain(now, rs.in_flight);
        self.update_rt_prop(now, rs, rs.in_flight);
        if self.btl_bw.get() == 0 {
            self.init_pacing_rate(rtt);
        } else {
            self.set_pacing_rate(self.pacing_gain);
        }
        self.set_cwnd(rs);
    }

    fn on_loss(&mut self, _now: Instant, in_flight: usize) {
        if self.in_recovery {
            return;
        }
        self.save_cwnd();
        self.in_recovery = true;
        // One round of packet conservation, starting now, from what the
        // socket passes: the bytes outstanding, at most the window.
        self.conservation = true;
        self.next_round_delivered = self.delivered;
        self.cwnd = in_flight.max(self.mss);
    }

    fn on_recovery_end(&mut self, _now: Instant) {
        if self.in_recovery {
            self.in_recovery = false;
            self.conservation = false;
            self.cwnd = self.cwnd.max(self.prior_cwnd);
        }
    }

    fn on_rto(&mut self, _now: Instant, _in_flight: usize) {
        if !self.in_recovery {
            self.save_cwnd();
        }
        self.in_recovery = true;
        self.conservation = false;
        self.cwnd = self.mss;
    }

    fn set_mss(&mut self, mss: usize) {
        if self.delivered == 0 && self.round_count == 0 {
            // Before any data: the initial window follows the MSS
            // (RFC 6928, as the other controllers).
            self.cwnd = super::initial_window(mss);
        }
        self.mss = mss.max(1);
    }

    fn uses_rate_samples(&self) -> bool {
        true
    }

    fn pacing_rate(&self) -> Option<u64> {
        (self.pacing_rate > 0).then_some(self.pacing_rate)
    }

    fn send_quantum(&self) -> Option<usize> {
        (self.pacing_rate > 0).then(|| self.send_quantum())
    }
}

#[cfg(test)]
mod test {
    use super::*;

    const MSS: usize = 1000;

    fn sample(
        delivered_total: u64,
        prior_delivered: u64,
        interval_us: i64,
        rtt_us: i64,
        in_flight: usize,
    ) -> RateSample {
        RateSample {
            delivered_total,
            prior_delivered,
            delivered: delivered_total - prior_delivered,
            interval: Some(Duration::from_micros(interval_us as u64)),
            rtt: Some(Duration::from_micros(rtt_us as u64)),
            app_limited: false,
            acked: MSS,
            lost: 0,
            in_flight,
            prior_in_flight: in_flight + MSS,
        }
    }

    #[test]
    fn max_filter_keeps_the_best_of_the_window() {
        let mut f = MaxFilter::default();
        f.reset(0, 10);
        assert_eq!(f.update(10, 1, 5), 10);
        assert_eq!(f.update(10, 5, 7), 10);
        // Round 12: the 10 of round 0 aged out; 7 (round 5) is the best.
        assert_eq!(f.update(10, 12, 3), 7);
        assert_eq!(f.update(10, 13, 20), 20);
    }

    /// A path of 1 MB/s and 10 ms: Startup finds the bandwidth, Drain and
    /// ProbeBW follow, and the window settles near two BDPs.
    #[test]
    fn finds_bandwidth_and_leaves_startup() {
        let mut bbr = Bbr::new();
        bbr.set_mss(MSS);
        let rtt = RttEstimator::default();
        let mut now = Instant::from_millis(0);
        let mut delivered = 0u64;
        // Each round delivers the window (capped by the path: 10 kB per
        // 10 ms round), measured over 10 ms.
        for _ in 0..20 {
            let per_round = (bbr.window() as u64).min(10_000);
            let prior = delivered;
            delivered += per_round;
            now += Duration::from_millis(10);
            let rs = sample(delivered, prior, 10_000, 10_000, per_round as usize);
            bbr.on_rate_sample(now, &rs, &rtt);
        }
        assert!(bbr.filled_pipe, "Startup did not end");
        assert_ne!(bbr.mode, Mode::Startup);
        assert_eq!(bbr.btl_bw.get(), 1_000_000);
        // 1 MB/s, within the margin and the gains.
        let rate = bbr.pacing_rate().unwrap();
        assert!((300_000..=2_000_000).contains(&rate), "pacing rate {rate}");
        // BDP 10 kB: the window is two BDPs plus three quanta, at most.
        assert!(bbr.window() <= 2 * 10_000 + 3 * 2 * MSS, "window {}", bbr.window());
    }

    #[test]
    fn recovery_conserves_then_restores_the_window() {
        let mut bbr = Bbr::new();
        bbr.set_mss(MSS);
        bbr.cwnd = 40 * MSS;
        bbr.on_loss(Instant::from_millis(5), 30 * MSS);
        assert_eq!(bbr.window(), 30 * MSS);
        // A second loss in the same recovery changes nothing.
        bbr.on_loss(Instant::from_millis(6), 10 * MSS);
        assert_eq!(bbr.window(), 30 * MSS);
        bbr.on_recovery_end(Instant::from_millis(20));
        assert_eq!(bbr.window(), 40 * MSS);
    }

    #[test]
    fn timeout_cuts_to_one_segment_and_recovers() {
        let mut bbr = Bbr::new();
        bbr.set_mss(MSS);
        bbr.cwnd = 40 * MSS;
        bbr.on_rto(Instant::from_millis(5), 40 * MSS);
        assert_eq!(bbr.window(), MSS);
        bbr.on_recovery_end(Instant::from_millis(500));
        assert_eq!(bbr.window(), 40 * MSS);
    }

    #[test]
    fn probe_rtt_after_ten_seconds_without_a_lower_rtt() {
        let mut bbr = Bbr::new();
        bbr.set_mss(MSS);
        let rtt = RttEstimator::default();
        let mut now = Instant::from_millis(0);
        let mut delivered = 0u64;
        let mut modes = std::vec::Vec::new();
        for i in 0..1200 {
            let prior = delivered;
            delivered += 10_000;
            now += Duration::from_millis(10);
            // The RTT only rises after the first round: rt_prop is never
            // refreshed and expires after 10 s.
            let rtt_us = if i == 0 { 10_000 } else { 12_000 };
            let in_flight = if bbr.mode == Mode::ProbeRtt { 4 * MSS } else { 20_000 };
            let rs = sample(delivered, prior, 10_000, rtt_us, in_flight);
            bbr.on_rate_sample(now, &rs, &rtt);
            if modes.last() != Some(&bbr.mode) {
                modes.push(bbr.mode);
            }
            if bbr.mode == Mode::ProbeRtt {
                assert!(bbr.window() <= 4 * MSS);
            }
        }
        assert!(modes.contains(&Mode::ProbeRtt), "modes {modes:?}");
        assert_eq!(*modes.last().unwrap(), Mode::ProbeBw, "modes {modes:?}");
    }
}
