//! `--queues N`: one share-nothing stack per device queue, each on its own
//! thread pinned to its own core.
//!
//! Each queue gets its own driver (an AF_XDP socket bound to queue `q`,
//! with its own UMEM — its own pool — and its own fill, RX, TX and
//! completion rings; or one queue of a multi-queue TAP), its own [`Stack`]
//! (sockets, ARP cache, counters) and its pool's thread cache. Nothing is
//! shared on the packet path. The device decides which queue a flow lands
//! on (a veth: the RX queue numbered like the TX queue the sender picked;
//! a NIC: RSS), and a flow's packets all arrive on one queue, so each
//! stack sees whole flows.
//!
//! One thing is shared: ARP. Every stack has the same address and MAC, but
//! an ARP reply reaches only the queue the device steered it to, and a
//! stack that asked on another queue would never learn it. [`ArpShare`]
//! wraps each queue's driver and hands a copy of every ARP frame one queue
//! receives to the others (a handful of frames a minute; a copy each, off
//! the data path).

use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use zcstack::{Stack, StackStats};
use zcstack_driver::{Driver, Frame, Layer, Pool};

use crate::AppDriver;

/// ARP frames waiting for each queue, with a count read without the lock.
struct Inbox {
    waiting: AtomicUsize,
    frames: Mutex<Vec<Vec<u8>>>,
}

/// The ARP frames of `n` queues' drivers, shared (see the module doc).
#[derive(Clone)]
pub struct ArpHub {
    inboxes: Arc<Vec<Inbox>>,
}

impl ArpHub {
    /// A hub for `n` queues.
    pub fn new(n: usize) -> ArpHub {
        ArpHub {
            inboxes: Arc::new(
                (0..n)
                    .map(|_| Inbox {
                        waiting: AtomicUsize::new(0),
                        frames: Mutex::new(Vec::new()),
                    })
                    .collect(),
            ),
        }
    }
}

/// A queue's driver that shares the ARP frames it receives with the other
/// queues' and receives theirs.
pub struct ArpShare {
    inner: AppDriver,
    /// The inner driver's pool: other queues' ARP frames are copied into it.
    pool: Pool,
    queue: usize,
    hub: ArpHub,
}

impl ArpShare {
    /// Wraps queue `queue`'s driver.
    pub fn new(inner: AppDriver, queue: usize, hub: ArpHub) -> ArpShare {
        let pool = inner.capabilities().pool;
        ArpShare {
            inner,
            pool,
            queue,
            hub,
        }
    }
}

const ETHERTYPE_ARP: [u8; 2] = [0x08, 0x06];

/// Only receiving changes; everything else goes to the queue's driver.
impl Layer for ArpShare {
    type Inner = dyn Driver + Send;
    fn inner(&self) -> &Self::Inner {
        &*self.inner
    }
    fn inner_mut(&mut self) -> &mut Self::Inner {
        &mut *self.inner
    }

    fn rx_burst(this: &mut Self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let before = out.len();
        let n = this.inner.rx_burst(out, max)?;
        // Two bytes per frame: the ethertype.
        for f in &out[before..] {
            let d = f.data();
            if d.len() >= 42 && d[12..14] == ETHERTYPE_ARP {
                for (q, inbox) in this.hub.inboxes.iter().enumerate() {
                    if q != this.queue
                        && let Ok(mut v) = inbox.frames.lock()
                        && v.len() < 64
                    {
                        v.push(d.to_vec());
                        inbox.waiting.fetch_add(1, Ordering::Release);
                    }
                }
            }
        }
        let mine = &this.hub.inboxes[this.queue];
        let mut got = n;
        if got < max && mine.waiting.load(Ordering::Acquire) > 0 {
            let Ok(mut v) = mine.frames.lock() else {
                return Ok(got);
            };
            while got < max {
                let Some(bytes) = v.pop() else { break };
                mine.waiting.fetch_sub(1, Ordering::Release);
                if let Some(mut f) = this.pool.alloc()
                    && bytes.len() <= f.capacity()
                {
                    f.set_len(bytes.len());
                    f.data_mut().copy_from_slice(&bytes);
                    out.push(f);
                    got += 1;
                }
            }
        }
        Ok(got)
    }
}

/// Pins the calling thread to `cpu` (modulo the CPUs this process may use).
/// Returns the CPU it pinned to, or `None` if the kernel refused.
pub fn pin_thread(index: usize) -> Option<usize> {
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;
    let allowed = sched_getaffinity(Pid::from_raw(0)).ok()?;
    let cpus: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| allowed.is_set(c).unwrap_or(false))
        .collect();
    let cpu = *cpus.get(index % cpus.len().max(1))?;
    let mut set = CpuSet::new();
    set.set(cpu).ok()?;
    sched_setaffinity(Pid::from_raw(0), &set).ok()?;
    Some(cpu)
}

/// Runs `work(queue, stack)` for every stack on a thread of its own, pinned
/// to its own core (queue `q` to the `q`-th CPU this process may use), and
/// returns each one's result in queue order. Each stack is polled only by
/// its thread.
pub fn run_queues<T, F>(stacks: Vec<Stack<AppDriver>>, work: F) -> Vec<anyhow::Result<T>>
where
    T: Send,
    F: Fn(usize, Stack<AppDriver>) -> anyhow::Result<T> + Sync,
{
    let work = &work;
    std::thread::scope(|s| {
        let handles: Vec<_> = stacks
            .into_iter()
            .enumerate()
            .map(|(q, stack)| {
                std::thread::Builder::new()
                    .name(format!("queue {q}"))
                    .spawn_scoped(s, move || {
                        pin_thread(q);
                        work(q, stack)
                    })
                    .expect("spawning a queue thread")
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(q, h)| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("queue {q}: its thread panicked")))
            })
            .collect()
    })
}

/// The sum of several queues' counters where a sum means something
/// (packets, bytes, drops, datagrams, pool frames); the rest are queue 0's.
pub fn total(stats: &[StackStats]) -> StackStats {
    let mut t = stats.first().copied().unwrap_or_default();
    for s in stats.iter().skip(1) {
        let (d, e) = (&mut t.driver, &s.driver);
        d.rx_packets += e.rx_packets;
        d.rx_bytes += e.rx_bytes;
        d.tx_packets += e.tx_packets;
        d.tx_bytes += e.tx_bytes;
        d.rx_dropped_no_frame += e.rx_dropped_no_frame;
        d.tx_errors += e.tx_errors;
        d.rx_errors += e.rx_errors;
        d.rx_copied_bytes += e.rx_copied_bytes;
        d.tx_kicks += e.tx_kicks;
        d.kernel.rx_dropped += e.kernel.rx_dropped;
        d.kernel.rx_ring_full += e.kernel.rx_ring_full;
        d.kernel.fill_ring_empty += e.kernel.fill_ring_empty;
        t.pool.capacity += s.pool.capacity;
        t.pool.free += s.pool.free;
        t.pool.in_use += s.pool.in_use;
        t.pool.in_kernel += s.pool.in_kernel;
        t.pool.high_water += s.pool.high_water;
        t.pool.alloc_failures += s.pool.alloc_failures;
        t.tcp_rx_payload += s.tcp_rx_payload;
        t.tcp_tx_payload += s.tcp_tx_payload;
        t.app_read_bytes += s.app_read_bytes;
        t.app_write_bytes += s.app_write_bytes;
        t.tx_dropped_no_frame += s.tx_dropped_no_frame;
        t.tx_errors += s.tx_errors;
        t.rx_errors += s.rx_errors;
        t.rx_malformed += s.rx_malformed;
        t.polls += s.polls;
        t.tcp_open += s.tcp_open;
        let (g, h) = (&mut t.dgram, &s.dgram);
        g.tx_datagrams += h.tx_datagrams;
        g.tx_bytes += h.tx_bytes;
        g.rx_datagrams += h.rx_datagrams;
        g.rx_bytes += h.rx_bytes;
        g.rx_queue_full += h.rx_queue_full;
        g.rx_malformed += h.rx_malformed;
        g.tx_unresolved += h.tx_unresolved;
        g.tx_waiting += h.tx_waiting;
    }
    t
}

/// Live per-queue figures for `--stats` with `--queues`: every queue's
/// ticker posts its counters here when it prints its own line, and queue
/// 0's also prints the total over all queues.
#[derive(Clone)]
pub struct QueueBoard {
    latest: Arc<Mutex<Vec<StackStats>>>,
}

impl QueueBoard {
    /// A board for `n` queues.
    pub fn new(n: usize) -> QueueBoard {
        QueueBoard {
            latest: Arc::new(Mutex::new(vec![StackStats::default(); n])),
        }
    }
    /// Posts queue `q`'s counters; returns the total over every queue.
    pub fn post(&self, q: usize, s: StackStats) -> StackStats {
        match self.latest.lock() {
            Ok(mut v) => {
                v[q] = s;
                total(&v)
            }
            Err(_) => s,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use zcstack_driver::PoolConfig;
    use zcstack_driver::wire::{self, WireConfig};

    /// An ARP frame one queue receives reaches the other queues once (a
    /// copy in their own pool), after their own frames; other frames are
    /// not shared; nothing leaks.
    #[test]
    fn arp_frames_reach_every_queue() {
        let pool = PoolConfig::new().frames(64).build().unwrap();
        let (a0, mut peer0) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        let (a1, _peer1) = wire::pair(pool.clone(), pool.clone(), WireConfig::default());
        let hub = ArpHub::new(2);
        let mut q0 = ArpShare::new(Box::new(a0), 0, hub.clone());
        let mut q1 = ArpShare::new(Box::new(a1), 1, hub);
        let frame = |ethertype: [u8; 2], fill: u8| {
            let mut f = pool.alloc().unwrap();
            f.set_len(60);
            f.data_mut().fill(fill);
            f.data_mut()[12..14].copy_from_slice(&ethertype);
            f
        };
        let mut v = vec![frame(ETHERTYPE_ARP, 1), frame([0x08, 0x00], 2)];
        peer0.tx_burst(&mut v).unwrap();
        let mut got = Vec::new();
        assert_eq!(q0.rx_burst(&mut got, 32).unwrap(), 2);
        got.clear();
        assert_eq!(q1.rx_burst(&mut got, 32).unwrap(), 1, "the ARP copy");
        assert_eq!(got[0].data()[0], 1);
        assert_eq!(&got[0].data()[12..14], &ETHERTYPE_ARP);
        got.clear();
        assert_eq!(q1.rx_burst(&mut got, 32).unwrap(), 0, "once");
        assert_eq!(q0.rx_burst(&mut got, 32).unwrap(), 0, "not back to itself");
        drop((q0, q1, peer0));
        assert_eq!(pool.stats().in_use, 0);
    }

    #[test]
    fn totals_add_up() {
        let mut a = StackStats::default();
        a.driver.rx_packets = 3;
        a.dgram.rx_datagrams = 2;
        a.pool.capacity = 10;
        let mut b = a;
        b.driver.rx_packets = 4;
        let t = total(&[a, b]);
        assert_eq!(t.driver.rx_packets, 7);
        assert_eq!(t.dgram.rx_datagrams, 4);
        assert_eq!(t.pool.capacity, 20);
    }
}
