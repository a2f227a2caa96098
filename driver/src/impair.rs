//! Path impairments, like netem's, in user space: loss (random and bursty),
//! delay with jitter, reordering, duplication, corruption and a rate-limited
//! bottleneck with a bounded queue — seeded, so a run replays exactly.
//!
//! This kernel has no netem, so faults on a real path come from a relay in
//! a middle namespace (`zc-impair`), and deterministic tests put the same
//! model on the in-memory wire. Both use [`Impairment`], which never reads a
//! clock: the caller passes the time in microseconds, so a test can drive it
//! with a manual clock and a relay reads its clock once per loop iteration.
//!
//! ```text
//!  push(now, frame) ─► loss (Gilbert–Elliott, then random) ─► duplicate ─► corrupt
//!        ─► bottleneck: tail drop if the queue is full, else depart after
//!           the frames ahead of it at `rate`
//!        ─► delay ± jitter (never earlier than the frame before it)
//!        ─► reorder: some frames wait an extra delay and are overtaken
//!  pop_due(now, out) ◄─ frames whose time has come, in order of that time
//! ```
//!
//! Modules: this file the configuration ([`ImpairConfig`], validated by
//! `build()`) and the counters ([`ImpairStats`]); `model.rs` the
//! [`Impairment`] itself; `wrapper.rs` [`Impaired`], a [`Driver`](crate::Driver)
//! wrapper that applies one impairment to frames it sends and another to
//! frames it receives (for the in-memory wire, on a manual or real clock).

mod model;
mod wrapper;

pub use model::Impairment;
pub use wrapper::{ImpairClock, Impaired};

// Bytes of Ethernet header a corruption leaves alone (it flips a bit the
// IP or TCP/UDP checksum covers, so the receiver must notice).
use crate::header::ETH_HLEN;

/// Why an impairment could not be built; the message names the value to change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid impairment: {0}")]
pub struct ImpairError(pub String);

/// The Gilbert–Elliott two-state loss model (bursty loss).
///
/// Before each frame the chain may change state: good → bad with
/// probability `p`, bad → good with probability `r`. The frame is then lost
/// with the loss probability of the state it is in. With `loss_bad` 1 and
/// `loss_good` 0 (Gilbert's model) losses come in bursts of mean length
/// `1 / r`, and the long-run loss rate is `p / (p + r)`. The parameters are
/// netem's `loss gemodel p r 1-h 1-k`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GilbertElliott {
    /// Probability of moving from the good to the bad state, per frame.
    pub p: f64,
    /// Probability of moving from the bad to the good state, per frame.
    pub r: f64,
    /// Loss probability in the bad state (netem's `1-h`; Gilbert: 1).
    pub loss_bad: f64,
    /// Loss probability in the good state (netem's `1-k`; Gilbert: 0).
    pub loss_good: f64,
}

impl GilbertElliott {
    /// The long-run fraction of frames lost.
    pub fn loss_rate(&self) -> f64 {
        if self.p + self.r == 0.0 {
            return self.loss_good;
        }
        let bad = self.p / (self.p + self.r);
        bad * self.loss_bad + (1.0 - bad) * self.loss_good
    }
}

/// One direction's impairments. [`ImpairConfig::new`] impairs nothing;
/// set what you want, then [`build`](ImpairConfig::build) checks it.
#[derive(Clone, Debug, PartialEq)]
pub struct ImpairConfig {
    pub(crate) loss: f64,
    pub(crate) ge: Option<GilbertElliott>,
    pub(crate) delay_us: u64,
    pub(crate) jitter_us: u64,
    pub(crate) reorder: f64,
    pub(crate) reorder_us: u64,
    pub(crate) duplicate: f64,
    pub(crate) corrupt: f64,
    pub(crate) rate_bps: Option<u64>,
    pub(crate) queue_bytes: Option<u64>,
    pub(crate) limit: usize,
    pub(crate) seed: u64,
}

/// Bottleneck queue when a rate is set and no queue size is given.
pub const DEFAULT_QUEUE_BYTES: u64 = 256 * 1024;
/// Frames an impairment holds at most (in the bottleneck and delay line
/// together) unless told otherwise; more are dropped and counted.
pub const DEFAULT_LIMIT: usize = 16384;
/// The smallest bottleneck queue: one full-size Ethernet frame.
const MIN_QUEUE_BYTES: u64 = 1514;
/// Delays above this (an hour) are a mistake in units, not a path.
const MAX_DELAY_US: u64 = 3_600_000_000;

impl Default for ImpairConfig {
    fn default() -> Self {
        ImpairConfig {
            loss: 0.0,
            ge: None,
            delay_us: 0,
            jitter_us: 0,
            reorder: 0.0,
            reorder_us: 0,
            duplicate: 0.0,
            corrupt: 0.0,
            rate_bps: None,
            queue_bytes: None,
            limit: DEFAULT_LIMIT,
            seed: 1,
        }
    }
}

impl ImpairConfig {
    /// No impairment: every frame passes at once, in order. Seed 1.
    pub fn new() -> Self {
        Self::default()
    }
    /// Probability that a frame is lost, independently of the others.
    pub fn loss(mut self, p: f64) -> Self {
        self.loss = p;
        self
    }
    /// Bursty loss by the Gilbert–Elliott model (applied before `loss`).
    pub fn gilbert_elliott(mut self, ge: GilbertElliott) -> Self {
        self.ge = Some(ge);
        self
    }
    /// Fixed one-way delay, in microseconds.
    pub fn delay_us(mut self, us: u64) -> Self {
        self.delay_us = us;
        self
    }
    /// Uniform jitter: each frame's delay is `delay ± jitter` (at least 0).
    /// Jitter alone never reorders: a frame leaves no earlier than the one
    /// before it (netem's behaviour with a rate set), so when frames come
    /// closer together than the jitter, their delays bunch towards
    /// `delay + jitter`; they never leave the `delay ± jitter` bounds.
    pub fn jitter_us(mut self, us: u64) -> Self {
        self.jitter_us = us;
        self
    }
    /// Reordering: with probability `p` a frame waits `extra_us` more than
    /// its delay, so the frames after it overtake it.
    pub fn reorder(mut self, p: f64, extra_us: u64) -> Self {
        self.reorder = p;
        self.reorder_us = extra_us;
        self
    }
    /// Probability that a frame is delivered twice (the copy comes from the
    /// frame's pool and goes through the same bottleneck and delay).
    pub fn duplicate(mut self, p: f64) -> Self {
        self.duplicate = p;
        self
    }
    /// Probability that one bit of an IPv4 or IPv6 frame, past its Ethernet
    /// header, is flipped (the receiver's IP or TCP/UDP checksum must catch
    /// it). Other frames (ARP) have no checksum and are left alone.
    pub fn corrupt(mut self, p: f64) -> Self {
        self.corrupt = p;
        self
    }
    /// A bottleneck of `bits_per_s` (Ethernet frame bytes, no preamble or
    /// gap), FIFO, in front of the delay.
    pub fn rate_bps(mut self, bits_per_s: u64) -> Self {
        self.rate_bps = Some(bits_per_s);
        self
    }
    /// The bottleneck's queue, in bytes (default [`DEFAULT_QUEUE_BYTES`]);
    /// a frame that does not fit behind the bytes still waiting is dropped
    /// (tail drop). Needs a rate.
    pub fn queue_bytes(mut self, bytes: u64) -> Self {
        self.queue_bytes = Some(bytes);
        self
    }
    /// Most frames held at once (bottleneck and delay line together;
    /// default [`DEFAULT_LIMIT`]). Memory for them is reserved up front;
    /// frames beyond it are dropped and counted. Size the frames' pool for it.
    pub fn limit(mut self, frames: usize) -> Self {
        self.limit = frames;
        self
    }
    /// Seed of the generator behind every random choice.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The bottleneck rate, if any.
    pub fn rate(&self) -> Option<u64> {
        self.rate_bps
    }
    /// The bottleneck queue in bytes (when a rate is set).
    pub fn queue(&self) -> u64 {
        self.queue_bytes.unwrap_or(DEFAULT_QUEUE_BYTES)
    }
    /// The frame limit.
    pub fn frame_limit(&self) -> usize {
        self.limit
    }
    /// Whether this configuration changes anything about the frames.
    pub fn is_noop(&self) -> bool {
        let mut plain = ImpairConfig::new().seed(self.seed).limit(self.limit);
        plain.queue_bytes = self.queue_bytes;
        *self == plain
    }

    /// Checks every value; the error names the one to change.
    pub fn validate(&self) -> Result<(), ImpairError> {
        let prob = |what: &str, p: f64| {
            if (0.0..=1.0).contains(&p) {
                Ok(())
            } else {
                Err(ImpairError(format!(
                    "{what} probability {p} must be from 0 to 1"
                )))
            }
        };
        prob("loss", self.loss)?;
        prob("reorder", self.reorder)?;
        prob("duplicate", self.duplicate)?;
        prob("corrupt", self.corrupt)?;
        if let Some(ge) = &self.ge {
            prob("Gilbert-Elliott p (good to bad)", ge.p)?;
            prob("Gilbert-Elliott r (bad to good)", ge.r)?;
            prob("Gilbert-Elliott loss in the bad state", ge.loss_bad)?;
            prob("Gilbert-Elliott loss in the good state", ge.loss_good)?;
            if ge.p > 0.0 && ge.r == 0.0 {
                return Err(ImpairError(
                    "Gilbert-Elliott r (bad to good) is 0: the bad state would never end".into(),
                ));
            }
        }
        for (what, us) in [
            ("delay", self.delay_us),
            ("jitter", self.jitter_us),
            ("reorder delay", self.reorder_us),
        ] {
            if us > MAX_DELAY_US {
                return Err(ImpairError(format!(
                    "{what} of {us} µs is more than an hour"
                )));
            }
        }
        if self.reorder > 0.0 && self.reorder_us == 0 {
            return Err(ImpairError(
                "reordering needs an extra delay for the frames held back (e.g. 20%:3ms)".into(),
            ));
        }
        match (self.rate_bps, self.queue_bytes) {
            (Some(0), _) => return Err(ImpairError("rate must be more than 0 bit/s".into())),
            (None, Some(_)) => {
                return Err(ImpairError(
                    "a bottleneck queue needs a rate (e.g. --rate 100mbit)".into(),
                ));
            }
            (Some(_), Some(q)) if q < MIN_QUEUE_BYTES => {
                return Err(ImpairError(format!(
                    "bottleneck queue of {q} bytes must hold one {MIN_QUEUE_BYTES}-byte frame"
                )));
            }
            _ => {}
        }
        if self.limit == 0 || self.limit > 1 << 22 {
            return Err(ImpairError(format!(
                "frame limit {} must be from 1 to {}",
                self.limit,
                1 << 22
            )));
        }
        Ok(())
    }

    /// Checks the configuration and creates the impairment.
    pub fn build(self) -> Result<Impairment, ImpairError> {
        Impairment::new(self)
    }
}

impl std::fmt::Display for ImpairConfig {
    /// One line, e.g. `loss 1%, delay 5ms ± 2ms, reorder 20% +3ms, seed 7`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pct = |p: f64| format!("{}%", (p * 1e6).round() / 1e4);
        let ms = |us: u64| format!("{}ms", us as f64 / 1000.0);
        let mut parts = Vec::new();
        if let Some(ge) = &self.ge {
            parts.push(format!(
                "gilbert-elliott p {} r {} loss bad {} good {}",
                pct(ge.p),
                pct(ge.r),
                pct(ge.loss_bad),
                pct(ge.loss_good)
            ));
        }
        if self.loss > 0.0 {
            parts.push(format!("loss {}", pct(self.loss)));
        }
        if self.delay_us > 0 || self.jitter_us > 0 {
            let mut d = format!("delay {}", ms(self.delay_us));
            if self.jitter_us > 0 {
                d += &format!(" ± {}", ms(self.jitter_us));
            }
            parts.push(d);
        }
        if self.reorder > 0.0 {
            parts.push(format!(
                "reorder {} +{}",
                pct(self.reorder),
                ms(self.reorder_us)
            ));
        }
        if self.duplicate > 0.0 {
            parts.push(format!("duplicate {}", pct(self.duplicate)));
        }
        if self.corrupt > 0.0 {
            parts.push(format!("corrupt {}", pct(self.corrupt)));
        }
        if let Some(r) = self.rate_bps {
            parts.push(format!(
                "rate {} Mbit/s queue {} KiB",
                r as f64 / 1e6,
                self.queue() as f64 / 1024.0
            ));
        }
        if parts.is_empty() {
            parts.push("none".into());
        }
        write!(f, "{}, seed {}", parts.join(", "), self.seed)
    }
}

/// What an impairment did, cumulative.
///
/// Every frame offered (plus every duplicate made) is, at any time, exactly
/// one of: forwarded, dropped (by one cause), or held.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ImpairStats {
    /// Frames pushed in.
    pub offered: u64,
    /// Bytes pushed in.
    pub offered_bytes: u64,
    /// Frames handed out by `pop_due` (duplicates included).
    pub forwarded: u64,
    /// Bytes handed out.
    pub forwarded_bytes: u64,
    /// Frames lost to the random loss probability.
    pub dropped_random: u64,
    /// Frames lost to the Gilbert–Elliott model.
    pub dropped_burst: u64,
    /// Frames dropped because the bottleneck queue was full (tail drop).
    pub dropped_queue: u64,
    /// Frames dropped because the impairment already held its frame limit.
    pub dropped_limit: u64,
    /// Extra copies made.
    pub duplicated: u64,
    /// Copies not made because the pool was empty.
    pub duplicate_no_frame: u64,
    /// Frames with one bit flipped.
    pub corrupted: u64,
    /// Frames given the extra reordering delay.
    pub reordered: u64,
    /// Largest bottleneck backlog seen, in bytes (the frame just queued included).
    pub max_queue_bytes: u64,
}

impl ImpairStats {
    /// Frames dropped, all causes.
    pub fn dropped(&self) -> u64 {
        self.dropped_random + self.dropped_burst + self.dropped_queue + self.dropped_limit
    }
}

#[cfg(test)]
mod tests;
