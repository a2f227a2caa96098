//! The impairment itself: frames in with the time, frames out when due.
//!
//! Memory is reserved when it is built: two FIFOs of `limit` entries (the
//! delay line and the reordered frames), never grown; a frame is held by
//! handle, never copied, except a duplicate (a fresh frame from the same
//! pool). The bottleneck is a fluid FIFO: the time its link is busy until is
//! the whole queue's state, so the backlog at any moment is
//! `(busy_until - now) × rate`, with no per-frame bookkeeping.

use std::collections::VecDeque;

use super::{ETH_HLEN, ImpairConfig, ImpairError, ImpairStats};
use crate::Frame;

/// A frame waiting for its time.
struct Held {
    due: i64,
    frame: Frame,
}

/// One direction of an impaired path (see the [module doc](super)).
///
/// Time is whatever the caller says, in microseconds, and must not run
/// backwards by much (frames are due relative to the `now` they came in with).
pub struct Impairment {
    cfg: ImpairConfig,
    rng: fastrand::Rng,
    /// The Gilbert–Elliott chain is in its bad state.
    bad: bool,
    /// Frames not reordered, in due order (see `last_due`).
    line: VecDeque<Held>,
    /// Reordered frames, also in due order.
    late: VecDeque<Held>,
    /// Due time of the newest frame on `line`: jitter never lets a frame
    /// leave before the one ahead of it.
    last_due: i64,
    /// Due time of the newest frame on `late`.
    last_late: i64,
    /// When the bottleneck's link has sent everything queued, in ns.
    busy_until_ns: i64,
    stats: ImpairStats,
}

impl Impairment {
    /// Checks `cfg` and reserves room for its frame limit.
    pub fn new(cfg: ImpairConfig) -> Result<Impairment, ImpairError> {
        cfg.validate()?;
        let late = if cfg.reorder > 0.0 { cfg.limit } else { 0 };
        Ok(Impairment {
            rng: fastrand::Rng::with_seed(cfg.seed),
            bad: false,
            line: VecDeque::with_capacity(cfg.limit),
            late: VecDeque::with_capacity(late),
            last_due: i64::MIN,
            last_late: i64::MIN,
            busy_until_ns: i64::MIN,
            stats: ImpairStats::default(),
            cfg,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &ImpairConfig {
        &self.cfg
    }

    /// Counters so far.
    pub fn stats(&self) -> ImpairStats {
        self.stats
    }

    /// Frames held now (queued at the bottleneck or on their way).
    pub fn held(&self) -> usize {
        self.line.len() + self.late.len()
    }

    /// Takes `frame`, offered at `now_us`: drops it, or holds it (and
    /// perhaps a copy) until it is due.
    pub fn push(&mut self, now_us: i64, frame: Frame) {
        self.stats.offered += 1;
        self.stats.offered_bytes += frame.len() as u64;
        if self.lost() {
            return;
        }
        let dup = if self.cfg.duplicate > 0.0 && self.rng.f64() < self.cfg.duplicate {
            let copy = frame.pool().alloc().map(|mut d| {
                let n = frame.len();
                d.room_mut()[..n].copy_from_slice(frame.data());
                d.set_len(n);
                d
            });
            if copy.is_none() {
                self.stats.duplicate_no_frame += 1;
            }
            copy
        } else {
            None
        };
        self.admit(now_us, frame);
        if let Some(d) = dup {
            self.stats.duplicated += 1;
            self.admit(now_us, d);
        }
    }

    /// Moves every frame due at `now_us` to `out`, earliest first; returns how many.
    pub fn pop_due(&mut self, now_us: i64, out: &mut Vec<Frame>) -> usize {
        self.pop_due_max(now_us, out, usize::MAX)
    }

    /// [`pop_due`](Self::pop_due), at most `max` frames (the rest stay due).
    pub fn pop_due_max(&mut self, now_us: i64, out: &mut Vec<Frame>, max: usize) -> usize {
        let mut n = 0;
        while n < max {
            let from_line = match (self.line.front(), self.late.front()) {
                (Some(a), Some(b)) => a.due <= b.due,
                (Some(_), None) => true,
                (None, Some(_)) => false,
                (None, None) => break,
            };
            let q = if from_line {
                &mut self.line
            } else {
                &mut self.late
            };
            if q.front().is_none_or(|h| h.due > now_us) {
                break;
            }
            let Some(h) = q.pop_front() else { break };
            self.stats.forwarded += 1;
            self.stats.forwarded_bytes += h.frame.len() as u64;
            out.push(h.frame);
            n += 1;
        }
        n
    }

    /// When the next frame is due, if any is held (it may be in the past).
    pub fn next_due(&self) -> Option<i64> {
        let a = self.line.front().map(|h| h.due);
        let b = self.late.front().map(|h| h.due);
        match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Drops every held frame (they count as neither forwarded nor dropped).
    pub fn clear(&mut self) {
        self.line.clear();
        self.late.clear();
    }

    /// The loss models: Gilbert–Elliott first (its chain moves on every
    /// frame), then random loss. Counts the loss.
    fn lost(&mut self) -> bool {
        if let Some(ge) = self.cfg.ge {
            let turn = if self.bad { ge.r } else { ge.p };
            if self.rng.f64() < turn {
                self.bad = !self.bad;
            }
            let p = if self.bad { ge.loss_bad } else { ge.loss_good };
            if p > 0.0 && self.rng.f64() < p {
                self.stats.dropped_burst += 1;
                return true;
            }
        }
        if self.cfg.loss > 0.0 && self.rng.f64() < self.cfg.loss {
            self.stats.dropped_random += 1;
            return true;
        }
        false
    }

    /// Corruption, the bottleneck, delay and reordering for one frame.
    fn admit(&mut self, now_us: i64, mut frame: Frame) {
        if self.held() >= self.cfg.limit {
            self.stats.dropped_limit += 1;
            return;
        }
        let len = frame.len();
        if self.cfg.corrupt > 0.0 && carries_ip(&frame) && self.rng.f64() < self.cfg.corrupt {
            let i = self.rng.usize(ETH_HLEN..len);
            frame.data_mut()[i] ^= 1 << self.rng.u8(..8);
            self.stats.corrupted += 1;
        }
        let mut depart = now_us;
        if let Some(rate) = self.cfg.rate_bps {
            let now_ns = now_us.saturating_mul(1000);
            let start = self.busy_until_ns.max(now_ns);
            // Bytes still to send ahead of this frame: busy time × rate.
            let backlog = ((start - now_ns) as u128 * u128::from(rate) / 8_000_000_000) as u64;
            let after = backlog + len as u64;
            if after > self.cfg.queue() {
                self.stats.dropped_queue += 1;
                return;
            }
            self.stats.max_queue_bytes = self.stats.max_queue_bytes.max(after);
            let send_ns = (len as u128 * 8_000_000_000).div_ceil(u128::from(rate));
            self.busy_until_ns = start.saturating_add(send_ns.min(i64::MAX as u128) as i64);
            // Released in whole microseconds, never before the last bit left.
            depart = self.busy_until_ns.div_euclid(1000)
                + i64::from(self.busy_until_ns.rem_euclid(1000) != 0);
        }
        let delay = self.cfg.delay_us as i64;
        let mut due = depart + delay;
        if self.cfg.jitter_us > 0 {
            let j = self.cfg.jitter_us as i64;
            due = (due + self.rng.i64(-j..=j)).max(depart);
        }
        let due = due.max(self.last_due);
        if self.cfg.reorder > 0.0 && self.rng.f64() < self.cfg.reorder {
            let late = (due + self.cfg.reorder_us as i64).max(self.last_late);
            self.last_late = late;
            self.stats.reordered += 1;
            self.late.push_back(Held { due: late, frame });
        } else {
            self.last_due = due;
            self.line.push_back(Held { due, frame });
        }
    }
}

/// Whether `frame` is IPv4 or IPv6 over Ethernet: a bit flipped behind its
/// Ethernet header is covered by a checksum (ARP's is not, and a corrupted
/// ARP reply would poison a cache instead of testing a checksum).
fn carries_ip(frame: &Frame) -> bool {
    let d = frame.data();
    d.len() > ETH_HLEN && matches!([d[12], d[13]], [0x08, 0x00] | [0x86, 0xdd])
}

impl std::fmt::Debug for Impairment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Impairment")
            .field("config", &self.cfg)
            .field("held", &self.held())
            .field("stats", &self.stats)
            .finish()
    }
}
