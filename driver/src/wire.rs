//! An in-memory wire: two connected endpoints that pass pool frames by handle.
//!
//! The unprivileged device: tests join two stacks with it, and it measures the
//! stack alone (no kernel in the path). Frames cross the wire by moving the
//! [`Frame`] handle — no copy — so a frame sent by one end is received by the
//! other end still belonging to the sender's pool.
//!
//! The wire itself is perfect. Faults come from a wrapper, as smoltcp's
//! `FaultInjector` wraps a device: [`Impaired`](crate::impair::Impaired)
//! around either end loses, delays, reorders, duplicates and corrupts frames
//! from a seeded generator, so a failing run replays exactly. With no delay
//! and a manual clock that never moves, it needs no time at all.
//!
//! Each direction is a bounded queue; when the peer's queue is full,
//! `tx_burst` leaves the rest with the caller like a full NIC ring would.

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};

use crate::{Capabilities, Driver, DriverStats, Frame, Pool};

/// The wire's shape (for faults, wrap an end in [`Impaired`](crate::impair::Impaired)).
#[derive(Clone, Debug)]
pub struct WireConfig {
    /// IP MTU both ends report.
    pub mtu: usize,
    /// Frames each direction's queue holds before `tx_burst` pushes back.
    pub queue_len: usize,
}

impl Default for WireConfig {
    fn default() -> Self {
        WireConfig {
            mtu: 1500,
            queue_len: 1024,
        }
    }
}

type Queue = Arc<Mutex<VecDeque<Frame>>>;

/// One end of an in-memory wire. Both ends may live on different threads.
pub struct WireEnd {
    pool: Pool,
    rx: Queue,
    tx: Queue,
    cfg: WireConfig,
    stats: DriverStats,
}

/// Creates a connected pair of endpoints; `a` allocates from `pool_a`, `b` from `pool_b`.
pub fn pair(pool_a: Pool, pool_b: Pool, cfg: WireConfig) -> (WireEnd, WireEnd) {
    let ab: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(cfg.queue_len)));
    let ba: Queue = Arc::new(Mutex::new(VecDeque::with_capacity(cfg.queue_len)));
    let end = |pool, rx, tx| WireEnd {
        pool,
        rx,
        tx,
        cfg: cfg.clone(),
        stats: DriverStats::default(),
    };
    let a = end(pool_a, ba.clone(), ab.clone());
    let b = end(pool_b, ab, ba);
    (a, b)
}

impl WireEnd {
    /// The pool this end receives into (the pool given to [`pair`] for it).
    pub fn pool(&self) -> &Pool {
        &self.pool
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
        for frame in frames.drain(..n) {
            self.stats.tx_packets += 1;
            self.stats.tx_bytes += frame.len() as u64;
            q.push_back(frame);
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
    fn faults_come_from_the_impaired_wrapper_seeded_and_without_time() {
        use crate::impair::{ImpairClock, ImpairConfig, Impaired};
        use std::sync::Arc;
        use std::sync::atomic::AtomicI64;
        let run = |seed| {
            let pool = PoolConfig::new().frames(512).build().unwrap();
            let (a, mut b) = pair(pool.clone(), pool.clone(), WireConfig::default());
            let faults = ImpairConfig::new()
                .loss(0.1)
                .duplicate(0.05)
                .corrupt(0.05)
                .seed(seed);
            // A clock nobody advances: with no delay every frame is due at once.
            let clock = ImpairClock::Manual(Arc::new(AtomicI64::new(0)));
            let mut a = Impaired::new(a, clock, faults, ImpairConfig::new()).unwrap();
            let mut order = Vec::new();
            for i in 0..200u32 {
                let mut f = pool.alloc().unwrap();
                f.room_mut()[..64].fill(0);
                f.room_mut()[..4].copy_from_slice(&i.to_be_bytes());
                // IPv4's EtherType: only frames a checksum covers are corrupted.
                f.room_mut()[12..14].copy_from_slice(&[0x08, 0x00]);
                f.set_len(64);
                a.tx_burst(&mut vec![f]).unwrap();
                let mut got = Vec::new();
                b.rx_burst(&mut got, 16).unwrap();
                order.extend(got.iter().map(|f| f.data().to_vec()));
            }
            (order, a.tx_stats())
        };
        let (o1, s1) = run(7);
        let (o2, s2) = run(7);
        assert_eq!(o1, o2, "same seed, same delivery");
        assert_eq!(s1, s2);
        assert!(
            s1.dropped_random > 0 && s1.duplicated > 0 && s1.corrupted > 0,
            "{s1:?}"
        );
        assert_eq!(o1.len() as u64, 200 - s1.dropped_random + s1.duplicated);
        let (o3, _) = run(8);
        assert_ne!(o1, o3, "another seed, another run");
    }
}
