//! [`Impaired`]: a [`Driver`] wrapper that puts an [`Impairment`] on each
//! direction of any driver — the in-memory wire above all, so two stacks
//! can talk over a lossy, delayed, reordering path in a deterministic test.
//!
//! Frames the stack sends go into the transmit impairment and reach the
//! inner driver when due; frames the inner driver receives go into the
//! receive impairment and reach the stack when due. Due frames are released
//! on every `rx_burst` and `tx_burst` (a stack that has nothing to send
//! still polls for input, and that moves delayed output too), and
//! [`Driver::wait`] sleeps no longer than until the next one is due.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{Duration, Instant};

use super::{ImpairConfig, ImpairError, ImpairStats, Impairment};
use crate::{Capabilities, Driver, DriverStats, Frame, Layer};

/// Frames the transmit side releases to the inner driver per call at most;
/// more wait in the impairment (like a full NIC queue).
const TX_READY_MAX: usize = 1024;

/// Where an [`Impaired`] driver reads the time.
#[derive(Clone, Debug)]
pub enum ImpairClock {
    /// The monotonic clock, in microseconds since this instant.
    Monotonic(Instant),
    /// A clock the caller advances, in microseconds: pass the same `Arc` as
    /// the stack's `zcstack::Clock::Manual` so both see one time.
    Manual(Arc<AtomicI64>),
}

impl ImpairClock {
    /// The monotonic clock, starting now.
    pub fn monotonic() -> ImpairClock {
        ImpairClock::Monotonic(Instant::now())
    }

    /// The time now, in microseconds.
    pub fn now_us(&self) -> i64 {
        match self {
            ImpairClock::Monotonic(epoch) => epoch.elapsed().as_micros() as i64,
            ImpairClock::Manual(us) => us.load(Ordering::Relaxed),
        }
    }
}

/// A driver whose transmit and receive paths are impaired (see the module doc).
pub struct Impaired<D> {
    inner: D,
    tx: Impairment,
    rx: Impairment,
    clock: ImpairClock,
    /// Due transmit frames the inner driver has not taken yet.
    tx_ready: Vec<Frame>,
    /// Frames just received from the inner driver.
    scratch: Vec<Frame>,
    /// Due frames lost because the inner driver failed to send them.
    tx_errors: u64,
}

impl<D: Driver> Impaired<D> {
    /// Wraps `inner`: frames it sends pass `tx`, frames it receives pass
    /// `rx` ([`ImpairConfig::new`] for a direction left alone).
    pub fn new(
        inner: D,
        clock: ImpairClock,
        tx: ImpairConfig,
        rx: ImpairConfig,
    ) -> Result<Impaired<D>, ImpairError> {
        Ok(Impaired {
            inner,
            tx: tx.build()?,
            rx: rx.build()?,
            clock,
            tx_ready: Vec::with_capacity(TX_READY_MAX),
            scratch: Vec::with_capacity(256),
            tx_errors: 0,
        })
    }

    /// What the transmit impairment did.
    pub fn tx_stats(&self) -> ImpairStats {
        self.tx.stats()
    }
    /// What the receive impairment did.
    pub fn rx_stats(&self) -> ImpairStats {
        self.rx.stats()
    }
    /// Frames held in either direction (including due transmit frames the
    /// inner driver has not taken yet).
    pub fn held(&self) -> usize {
        self.tx.held() + self.rx.held() + self.tx_ready.len()
    }
    /// When the next held frame is due (microseconds on this driver's clock).
    pub fn next_due(&self) -> Option<i64> {
        match (self.tx.next_due(), self.rx.next_due()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Hands due transmit frames to the inner driver.
    fn release_tx(&mut self, now: i64) {
        let room = TX_READY_MAX.saturating_sub(self.tx_ready.len());
        self.tx.pop_due_max(now, &mut self.tx_ready, room);
        if self.tx_ready.is_empty() {
            return;
        }
        if self.inner.tx_burst(&mut self.tx_ready).is_err() {
            // Like a NIC error: those frames are lost, and counted.
            self.tx_errors += self.tx_ready.len() as u64;
            self.tx_ready.clear();
        }
    }
}

impl<D: Driver> Layer for Impaired<D> {
    type Inner = D;
    fn inner(&self) -> &D {
        &self.inner
    }
    fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    fn rx_burst(this: &mut Self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let now = this.clock.now_us();
        this.release_tx(now);
        this.inner.rx_burst(&mut this.scratch, max)?;
        for f in this.scratch.drain(..) {
            this.rx.push(now, f);
        }
        Ok(this.rx.pop_due_max(now, out, max))
    }

    fn tx_burst(this: &mut Self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        let now = this.clock.now_us();
        let n = frames.len();
        for f in frames.drain(..) {
            this.tx.push(now, f);
        }
        this.release_tx(now);
        Ok(n)
    }

    fn capabilities(this: &Self) -> Capabilities {
        let mut caps = this.inner.capabilities();
        caps.description.push_str(" (impaired)");
        // Frames pass through this wrapper whole: no payload slices.
        caps.offloads.tx_gather = false;
        caps
    }

    fn stats(this: &Self) -> DriverStats {
        let mut s = this.inner.stats();
        s.tx_errors += this.tx_errors;
        s
    }

    fn wait(this: &mut Self, timeout: Duration) -> io::Result<()> {
        let timeout = match this.next_due() {
            Some(due) => {
                let until = due - this.clock.now_us();
                if until <= 0 {
                    return Ok(());
                }
                timeout.min(Duration::from_micros(until as u64))
            }
            None => timeout,
        };
        this.inner.wait(timeout)
    }
}
