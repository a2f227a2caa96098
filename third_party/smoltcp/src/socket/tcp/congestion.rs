use crate::time::{Duration, Instant};

use super::RttEstimator;

pub(super) mod no_control;

#[cfg(feature = "socket-tcp-cubic")]
pub(super) mod cubic;

#[cfg(feature = "socket-tcp-reno")]
pub(super) mod reno;

#[cfg(feature = "socket-tcp-bbr")]
pub(super) mod bbr;

/// ZCSTACK PATCH 19: what one ACK says about the path's delivery rate
/// (draft-cheng-iccrg-delivery-rate-estimation), for model-based congestion
/// control. Bytes throughout.
#[derive(Debug, Clone, Copy, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) struct RateSample {
    /// Bytes delivered over the connection's life, this ACK included.
    pub delivered_total: u64,
    /// `delivered_total` when the most recently sent segment this ACK
    /// delivered was sent.
    pub prior_delivered: u64,
    /// Bytes delivered over `interval`.
    pub delivered: u64,
    /// How long `delivered` took: the longer of its send and ACK spans;
    /// `None` when this ACK gives no valid rate (nothing new delivered, or a
    /// span shorter than the minimum RTT, which ACK compression shortens).
    pub interval: Option<Duration>,
    /// RTT of the most recently sent segment this ACK delivered (never
    /// from a retransmission).
    pub rtt: Option<Duration>,
    /// The application had nothing to send when that segment left: the
    /// rate may be below what the path can do.
    pub app_limited: bool,
    /// Bytes this ACK newly delivered (cumulatively or selectively).
    pub acked: usize,
    /// Bytes this ACK newly declared lost.
    pub lost: usize,
    /// Bytes in flight after this ACK (RFC 6675 pipe).
    pub in_flight: usize,
    /// Bytes in flight before this ACK.
    pub prior_in_flight: usize,
}

#[allow(unused_variables)]
pub(super) trait Controller {
    /// Returns the number of bytes that can be sent.
    fn window(&self) -> usize;

    /// Set the remote window size.
    fn set_remote_window(&mut self, remote_window: usize) {}

    fn on_ack(&mut self, now: Instant, len: usize, in_flight: usize, rtt: &RttEstimator) {}

    /// Fired on each duplicate ack received, after `on_loss` has been called.
    fn on_dup_ack(&mut self, now: Instant, len: usize, in_flight: usize) {}

    /// Fired on a retransmission timeout.
    fn on_rto(&mut self, now: Instant, in_flight: usize) {}

    /// Fired after an inferred loss via three duplicate acks.
    fn on_loss(&mut self, now: Instant, in_flight: usize) {}

    fn pre_transmit(&mut self, now: Instant) {}

    fn post_transmit(&mut self, now: Instant, len: usize) {}

    /// Set the maximum segment size.
    fn set_mss(&mut self, mss: usize) {}

    /// The slow-start threshold, for proportional rate reduction during
    /// fast recovery (ZCSTACK PATCH 9); `None` for no congestion control.
    fn ssthresh(&self) -> Option<usize> {
        None
    }

    /// ZCSTACK PATCH 19: whether the controller wants [`on_rate_sample`]
    /// (the socket then builds a sample per ACK and tracks
    /// application-limited sends; others skip that work).
    ///
    /// [`on_rate_sample`]: Controller::on_rate_sample
    fn uses_rate_samples(&self) -> bool {
        false
    }

    /// ZCSTACK PATCH 19: a delivery-rate sample, on every ACK that
    /// delivered data.
    fn on_rate_sample(&mut self, now: Instant, rs: &RateSample, rtt: &RttEstimator) {}

    /// ZCSTACK PATCH 19: a loss recovery (fast, or after a timeout) ended.
    fn on_recovery_end(&mut self, now: Instant) {}

    /// ZCSTACK PATCH 19: the rate, in bytes per second, at which the socket
    /// paces its segments; `None`: no pacing.
    fn pacing_rate(&self) -> Option<u64> {
        None
    }

    /// ZCSTACK PATCH 19: with pacing, the largest segment (bytes, before
    /// segmentation offload splits it) the socket sends at once.
    fn send_quantum(&self) -> Option<usize> {
        None
    }
}

// ZCSTACK PATCH 9: `Clone`, so a recovery episode can be undone.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(super) enum AnyController {
    None(no_control::NoControl),

    #[cfg(feature = "socket-tcp-reno")]
    Reno(reno::Reno),

    #[cfg(feature = "socket-tcp-cubic")]
    Cubic(cubic::Cubic),

    #[cfg(feature = "socket-tcp-bbr")]
    Bbr(bbr::Bbr),
}

/// RFC 6928: the initial congestion window, `min(10 * MSS, max(2 * MSS,
/// 14600))` bytes (ZCSTACK PATCH 10).
pub(super) fn initial_window(mss: usize) -> usize {
    (10 * mss).min((2 * mss).max(14600))
}

impl AnyController {
    /// A controller of the same kind with fresh state, for a new connection
    /// on a reused socket (ZCSTACK PATCH 10: the window of the previous
    /// connection says nothing about the next one's path).
    pub fn renewed(&self) -> Self {
        match self {
            AnyController::None(_) => AnyController::None(no_control::NoControl),

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(_) => AnyController::Reno(reno::Reno::new()),

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(_) => AnyController::Cubic(cubic::Cubic::new()),

            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(_) => AnyController::Bbr(bbr::Bbr::new()),
        }
    }

    /// Create a new congestion controller.
    /// `AnyController::new()` selects the best congestion controller based on the features.
    ///
    /// - If `socket-tcp-cubic` feature is enabled, it will use `Cubic`.
    /// - If `socket-tcp-reno` feature is enabled, it will use `Reno`.
    /// - If both `socket-tcp-cubic` and `socket-tcp-reno` features are enabled, it will use `Cubic`.
    ///    - `Cubic` is more efficient regarding throughput.
    ///    - `Reno` is more conservative and is suitable for low-power devices.
    /// - If no congestion controller is available, it will use `NoControl`.
    ///
    /// Users can also select a congestion controller manually by [`super::Socket::set_congestion_control()`]
    /// method at run-time.
    #[allow(unreachable_code)]
    #[inline]
    pub fn new() -> Self {
        #[cfg(feature = "socket-tcp-cubic")]
        {
            return AnyController::Cubic(cubic::Cubic::new());
        }

        #[cfg(feature = "socket-tcp-reno")]
        {
            return AnyController::Reno(reno::Reno::new());
        }

        AnyController::None(no_control::NoControl)
    }

    /// A loss response turned out needless (ZCSTACK PATCH 9): back to
    /// `before`, the controller as it was when the response began. BBR
    /// keeps the path model it measured since and only gives the window
    /// back (ZCSTACK PATCH 19, as Linux's `bbr_undo_cwnd`).
    pub fn undo(&mut self, before: AnyController) {
        match self {
            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(b) => b.undo(before.inner().window()),
            _ => *self = before,
        }
    }

    #[inline]
    pub fn inner_mut(&mut self) -> &mut dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(b) => b,
        }
    }

    #[inline]
    pub fn inner(&self) -> &dyn Controller {
        match self {
            AnyController::None(n) => n,

            #[cfg(feature = "socket-tcp-reno")]
            AnyController::Reno(r) => r,

            #[cfg(feature = "socket-tcp-cubic")]
            AnyController::Cubic(c) => c,

            #[cfg(feature = "socket-tcp-bbr")]
            AnyController::Bbr(b) => b,
        }
    }
}
