//! An in-memory wire: two connected endpoints that pass pool frames by handle.
//!
//! The unprivileged device: tests join two stacks with it, and it measures the
//! stack alone (no kernel in the path). Frames cross the wire by moving the
//! [`Frame`] handle — no copy — so a frame sent by one end is received by the
//! other end still belonging to the sender's pool.
//!
//! Faults are injected on transmit from a seeded generator, so a failing run
//! replays exactly: loss, reordering (a frame is held back and overtaken by
//! the next one), duplication (a test-only copy into a fresh frame) and
//! corruption (one flipped bit).
//!
//! Each direction is a bounded queue; when the peer's queue is full,
//! `tx_burst` leaves the rest with the caller like a full NIC ring would.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use crate::{Capabilities, Driver, DriverStats, Frame, Pool};

/// Fault rates (each a probability per transmitted frame) and the wire's shape.
#[derive(Clone, Debug)]
pub struct WireConfig {
    /// IP MTU both ends report.
    pub mtu: usize,
    /// Frames each direction's queue holds before `tx_burst` pushes back.
    pub queue_len: usize,
    /// Probability a frame is dropped.
    pub loss: f64,
    /// Probability a frame is held back and sent after the next one.
    pub reorder: f64,
    /// Probability a frame is delivered twice.
    pub duplicate: f64,
    /// Probability one bit of a frame is flipped.
    pub corrupt: f64,
    /// Seed of the fault generator (each end derives its own from it).
    pub seed: u64,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            mtu: 1500,
            queue_len: 1024,
            loss: 0.0,
            reorder: 0.0,
            duplicate: 0.0,
            corrupt: 0.0,
            seed: 1,
        }
    }
}

/// What the fault injector did on one end's transmit side.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Frames dropped.
    pub lost: u64,
    /// Frames held back and delivered after a later one.
    pub reordered: u64,
    /// Extra copies delivered.
    pub duplicated: u64,
    /// Frames with a flipped bit.
    pub corrupted: u64,
}

type Queue = Arc<Mutex<VecDeque<Frame>>>;

/// One end of an in-memory wire. Both ends may live on different threads.
pub struct WireEnd {
    pool: Pool,
    rx: Queue,
    tx: Queue,
    cfg: WireConfig,
    rng: fastrand::Rng,
    held: Option<Frame>,
    stats: DriverStats,
    faults: FaultStats,
}

/// Creates a connected pair of endpoints; `a` allocates from `pool_a`, `b` from `pool_b`.
pub fn pair(pool_a: Pool, pool_b: Pool, cfg: WireConfig) -> (WireEnd, WireEnd) {
    let ab: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(cfg.queue_len)));
    let ba: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(cfg.queue_len)));
    let end = |pool, rx, tx, seed| WireEnd {
        pool,
        rx,
        tx,
        rng: fastrand::Rng::with_seed(seed),
        cfg: cfg.clone(),
        held: None,
        stats: DriverStats::default(),
        faults: FaultStats::default(),
    };
    let a = end(pool_a, ba.clone(), ab.clone(), cfg.seed);
    let b = end(pool_b, ab, ba, cfg.seed ^ 0x9e37_79b9_7f4a_7c15);
    (a, b)
}

impl WireEnd {
    /// The pool this end receives into (the pool given to [`pair`] for it).
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// What the fault injector did to frames this end sent.
    pub fn faults(&self) -> FaultStats {
        self.faults
    }

    /// Applies the configured faults to one frame about to be queued.
    fn inject(&mut self, mut frame: Frame, q: &mut VecDeque<Frame>) {
        let c = &self.cfg;
        if c.loss > 0.0 && self.rng.f64() < c.loss {
            self.faults.lost += 1;
            return;
        }
        if c.corrupt > 0.0 && self.rng.f64() < c.corrupt && !frame.is_empty() {
            let i = self.rng.usize(..frame.len());
            frame.data_mut()[i] ^= 1 << self.rng.u8(..8);
            self.faults.corrupted += 1;
        }
        if c.duplicate > 0.0
            && self.rng.f64() < c.duplicate
            && let Some(mut dup) = self.pool.alloc()
        {
            let n = frame.len();
            dup.room_mut()[..n].copy_from_slice(frame.data());
            dup.set_len(n);
            q.push_back(dup);
            self.faults.duplicated += 1;
        }
        if c.reorder > 0.0 && self.held.is_none() && self.rng.f64() < c.reorder {
            self.held = Some(frame);
            self.faults.reordered += 1;
            return;
        }
        q.push_back(frame);
        if let Some(h) = self.held.take() {
            q.push_back(h);
        }
    }
}

impl Driver for WireEnd {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let mut q = self
            .rx
            .lock()
            .map_err(|_| io::Error::other("wire peer panicked"))?;
        let n = max.min(q.len());
        for frame in q.drain(..n) {
            self.stats.rx_packets += 1;
            self.stats.rx_bytes += frame.len() as u64;
            out.push(frame);
        }
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        let tx = self.tx.clone();
        let mut q = tx
            .lock()
            .map_err(|_| io::Error::other("wire peer panicked"))?;
        let room = self.cfg.queue_len.saturating_sub(q.len());
        let n = room.min(frames.len());
        if n == 0 {
            // Nothing overtook the held frame: let it go now rather than never.
            if room > 0
                && let Some(h) = self.held.take()
            {
                q.push_back(h);
            }
            return Ok(0);
        }
        for frame in frames.drain(..n) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += frame.len() as u64;
            self.inject(frame, &mut q);
        }
        Ok(n)
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::new(self.pool.clone(), self.cfg.mtu, "in-memory wire")
    }
    fn stats(&self) -> DriverStats {
        self.stats
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PoolConfig;

    fn frame(pool: &Pool, byte: u8) -> Frame {
        let mut f = pool.alloc().unwrap();
        f.room_mut()[..60].fill(byte);
        f.set_len(60);
        f
    }

    #[test]
    fn frames_cross_by_handle_in_order() {
        let pool = PoolConfig::new().frames(64).build().unwrap();
        let (mut a, mut b) = pair(pool.clone(), pool.clone(), WireConfig::default());
        let mut burst: Vec<Frame> = (0..10).map(|i| frame(&pool, i)).collect();
        let sent_ptrs: Vec<_> = burst.iter().map(|f| f.data().as_ptr()).collect();
        assert_eq!(a.tx_burst(&mut burst).unwrap(), 10);
        assert!(burst.is_empty());
        let mut got = Vec::new();
        assert_eq!(b.rx_burst(&mut got, 64).unwrap(), 10);
        let got_ptrs: Vec<_> = got.iter().map(|f| f.data().as_ptr()).collect();
        assert_eq!(sent_ptrs, got_ptrs, "same frames, same order, no copy");
        assert_eq!(got[3].data()[0], 3);
        drop(got);
        assert_eq!(pool.stats().free, 64);
    }

    #[test]
    fn full_queue_pushes_back() {
        let pool = PoolConfig::new().frames(64).build().unwrap();
        let cfg = WireConfig {
            queue_len: 4,
            ..Default::default()
        };
        let (mut a, _b) = pair(pool.clone(), pool.clone(), cfg);
        let mut burst: Vec<Frame> = (0..6).map(|i| frame(&pool, i)).collect();
        assert_eq!(a.tx_burst(&mut burst).unwrap(), 4);
        assert_eq!(burst.len(), 2);
        assert_eq!(burst[0].data()[0], 4, "unsent frames stay in order");
    }

    #[test]
    fn faults_are_seeded_and_counted() {
        let run = |seed| {
            let pool = PoolConfig::new().frames(512).build().unwrap();
            let cfg = WireConfig {
                loss: 0.1,
                reorder: 0.1,
                duplicate: 0.05,
                corrupt: 0.05,
                seed,
                ..Default::default()
            };
            let (mut a, mut b) = pair(pool.clone(), pool.clone(), cfg);
            let mut order = Vec::new();
            for i in 0..200u32 {
                let mut f = pool.alloc().unwrap();
                f.room_mut()[..4].copy_from_slice(&i.to_be_bytes());
                f.set_len(4);
                a.tx_burst(&mut vec![f]).unwrap();
                let mut got = Vec::new();
                b.rx_burst(&mut got, 16).unwrap();
                order.extend(got.iter().map(|f| f.data().to_vec()));
            }
            a.tx_burst(&mut Vec::new()).unwrap();
            let mut got = Vec::new();
            b.rx_burst(&mut got, 16).unwrap();
            order.extend(got.iter().map(|f| f.data().to_vec()));
            (order, a.faults())
        };
        let (o1, f1) = run(7);
        let (o2, f2) = run(7);
        assert_eq!(o1, o2, "same seed, same delivery");
        assert_eq!(f1, f2);
        assert!(
            f1.lost > 0 && f1.reordered > 0 && f1.duplicated > 0 && f1.corrupted > 0,
            "{f1:?}"
        );
        assert_eq!(o1.len() as u64, 200 - f1.lost + f1.duplicated);
        let (o3, _) = run(8);
        assert_ne!(o1, o3, "another seed, another run");
    }
}
