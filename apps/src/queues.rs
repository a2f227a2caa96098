//! `--queues N`: one share-nothing stack per device queue, each on its own
//! thread pinned to its own core. Every server (zc-echo, zc-httpd, `zc-perf
//! server`) builds its stacks with `DeviceArgs::build_stacks` and runs its
//! loop on each with [`serve`]; [`via`] and [`steering`] make the banner,
//! [`total`] and [`Board`] the figures over every queue.
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
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use zcstack::{Stack, StackStats};
use zcstack_driver::{Driver, DriverStats, Frame, KernelStats, Layer, Pool, PoolStats};

use crate::{AppDriver, DeviceArgs, StatsTicker};

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

/// The sum of several queues' counters: every count, byte figure, pool
/// and memory figure is added up (so the total's pool is full when every
/// queue's is); `at_limit` is whether any queue is at its budget, and the
/// budget is the sum of the queues' shares.
///
/// Every field is named below (no `..`), so a counter added to the stack
/// does not go missing from the totals unnoticed: this stops compiling.
pub fn total<'a>(stats: impl IntoIterator<Item = &'a StackStats>) -> StackStats {
    let mut t = StackStats::default();
    for s in stats {
        add(&mut t, s);
    }
    t
}

fn add(t: &mut StackStats, s: &StackStats) {
    let StackStats {
        driver,
        pool,
        gso_pool,
        tcp_rx_payload,
        tcp_tx_payload,
        tcp_tx_payload_ref,
        app_read_bytes,
        app_write_bytes,
        app_frame_bytes,
        tx_dropped_no_frame,
        tx_dropped_too_big,
        rx_errors,
        rx_malformed,
        tx_errors,
        tx_pushed_back,
        polls,
        late_tx_polls,
        idle_sleeps,
        tcp_sockets,
        tcp_open,
        file_bytes_referenced,
        file_bytes_copied,
        file_bytes_pread,
        lease_breaks,
        file_transfers_aborted,
        tcp,
        listen,
        memory,
        dgram,
    } = s;
    add_driver(&mut t.driver, driver);
    add_pool(&mut t.pool, pool);
    if let Some(g) = gso_pool {
        add_pool(t.gso_pool.get_or_insert_with(Default::default), g);
    }
    t.tcp_rx_payload += tcp_rx_payload;
    t.tcp_tx_payload += tcp_tx_payload;
    t.tcp_tx_payload_ref += tcp_tx_payload_ref;
    t.app_read_bytes += app_read_bytes;
    t.app_write_bytes += app_write_bytes;
    t.app_frame_bytes += app_frame_bytes;
    t.tx_dropped_no_frame += tx_dropped_no_frame;
    t.tx_dropped_too_big += tx_dropped_too_big;
    t.rx_errors += rx_errors;
    t.rx_malformed += rx_malformed;
    t.tx_errors += tx_errors;
    t.tx_pushed_back += tx_pushed_back;
    t.polls += polls;
    t.late_tx_polls += late_tx_polls;
    t.idle_sleeps += idle_sleeps;
    t.tcp_sockets += tcp_sockets;
    t.tcp_open += tcp_open;
    t.file_bytes_referenced += file_bytes_referenced;
    t.file_bytes_copied += file_bytes_copied;
    t.file_bytes_pread += file_bytes_pread;
    t.lease_breaks += lease_breaks;
    t.file_transfers_aborted += file_transfers_aborted;
    let zcstack::TcpRecoveryStats {
        retransmits,
        retransmitted_bytes,
        rto_expiries,
        fast_recoveries,
        tail_loss_probes,
        tlp_repairs,
        undos,
        dsacks,
        reorderings,
        paws_rejects,
    } = tcp;
    let r = &mut t.tcp;
    r.retransmits += retransmits;
    r.retransmitted_bytes += retransmitted_bytes;
    r.rto_expiries += rto_expiries;
    r.fast_recoveries += fast_recoveries;
    r.tail_loss_probes += tail_loss_probes;
    r.tlp_repairs += tlp_repairs;
    r.undos += undos;
    r.dsacks += dsacks;
    r.reorderings += reorderings;
    r.paws_rejects += paws_rejects;
    let zcstack::ListenStats {
        syns,
        cookies_sent,
        cookies_accepted,
        cookies_rejected,
        cookies_dropped,
        half_open_evicted,
        half_open_expired,
    } = listen;
    let l = &mut t.listen;
    l.syns += syns;
    l.cookies_sent += cookies_sent;
    l.cookies_accepted += cookies_accepted;
    l.cookies_rejected += cookies_rejected;
    l.cookies_dropped += cookies_dropped;
    l.half_open_evicted += half_open_evicted;
    l.half_open_expired += half_open_expired;
    let zcstack::MemoryStats {
        budget,
        in_use,
        rings,
        idle_releases,
        refused,
        at_limit,
        socket_bytes,
    } = memory;
    let m = &mut t.memory;
    if let Some(b) = budget {
        *m.budget.get_or_insert(0) += b;
    }
    m.in_use += in_use;
    m.rings += rings;
    m.idle_releases += idle_releases;
    m.refused += refused;
    m.at_limit |= at_limit;
    // The same for every stack: a size, not a count.
    m.socket_bytes = *socket_bytes;
    let zcstack::DgramStats {
        tx_datagrams,
        tx_bytes,
        rx_datagrams,
        rx_bytes,
        rx_queue_full,
        rx_malformed,
        tx_unresolved,
        tx_waiting,
    } = dgram;
    let g = &mut t.dgram;
    g.tx_datagrams += tx_datagrams;
    g.tx_bytes += tx_bytes;
    g.rx_datagrams += rx_datagrams;
    g.rx_bytes += rx_bytes;
    g.rx_queue_full += rx_queue_full;
    g.rx_malformed += rx_malformed;
    g.tx_unresolved += tx_unresolved;
    g.tx_waiting += tx_waiting;
}

fn add_driver(t: &mut DriverStats, s: &DriverStats) {
    let DriverStats {
        rx_packets,
        rx_bytes,
        tx_packets,
        tx_bytes,
        rx_dropped_no_frame,
        tx_errors,
        rx_copied_bytes,
        rx_errors,
        tx_kicks,
        kernel,
    } = s;
    t.rx_packets += rx_packets;
    t.rx_bytes += rx_bytes;
    t.tx_packets += tx_packets;
    t.tx_bytes += tx_bytes;
    t.rx_dropped_no_frame += rx_dropped_no_frame;
    t.tx_errors += tx_errors;
    t.rx_copied_bytes += rx_copied_bytes;
    t.rx_errors += rx_errors;
    t.tx_kicks += tx_kicks;
    let KernelStats {
        rx_dropped,
        rx_ring_full,
        fill_ring_empty,
        rx_invalid_descs,
        tx_invalid_descs,
        tx_ring_empty,
    } = kernel;
    let k = &mut t.kernel;
    k.rx_dropped += rx_dropped;
    k.rx_ring_full += rx_ring_full;
    k.fill_ring_empty += fill_ring_empty;
    k.rx_invalid_descs += rx_invalid_descs;
    k.tx_invalid_descs += tx_invalid_descs;
    k.tx_ring_empty += tx_ring_empty;
}

fn add_pool(t: &mut PoolStats, s: &PoolStats) {
    let PoolStats {
        capacity,
        free,
        in_use,
        in_kernel,
        high_water,
        alloc_failures,
    } = s;
    t.capacity += capacity;
    t.free += free;
    t.in_use += in_use;
    t.in_kernel += in_kernel;
    // Each pool's own high-water mark, added: an upper bound of the
    // frames in use at once over every pool.
    t.high_water += high_water;
    t.alloc_failures += alloc_failures;
}

/// The latest figures of each of `n` queues, posted by the queues' own
/// threads (`--stats` lines, `--stats-json`); whoever reports reads them
/// all at once. Locked once per queue per second, never on the packet path.
pub struct Board<T> {
    latest: Arc<Mutex<Vec<T>>>,
}

impl<T> Clone for Board<T> {
    fn clone(&self) -> Self {
        Board {
            latest: self.latest.clone(),
        }
    }
}

impl<T: Clone + Default> Board<T> {
    /// A board for `n` queues, each at `T::default()` until it posts.
    pub fn new(n: usize) -> Board<T> {
        Board {
            latest: Arc::new(Mutex::new(vec![T::default(); n])),
        }
    }
    /// Posts queue `q`'s figures, then hands every queue's latest to `f`.
    pub fn post<R>(&self, q: usize, v: T, f: impl FnOnce(&[T]) -> R) -> R {
        // A poisoned lock means a queue thread panicked while posting: its
        // figures are still a plain value, so use them.
        let mut all = self.latest.lock().unwrap_or_else(|e| e.into_inner());
        all[q] = v;
        f(&all)
    }
}

/// Live `--stats` figures with `--queues`: every queue's ticker posts its
/// counters here when it prints its own line, and queue 0's also prints
/// the total over all queues (once every queue has posted).
pub type QueueBoard = Board<Option<StackStats>>;

/// The total over every queue's posted counters; `None` until each queue
/// has posted (a total of some queues would pass for all of them).
pub fn posted_total(all: &[Option<StackStats>]) -> Option<StackStats> {
    all.iter()
        .all(Option::is_some)
        .then(|| total(all.iter().flatten()))
}

/// Serves every stack of [`DeviceArgs::build_stacks`]: one stack runs on
/// the calling thread; several run each on a thread of its own pinned to
/// its own core ([`run_queues`]). Each queue's `work` runs until it
/// returns; an error in one queue sets `stop`, so the others end too.
/// `work` gets the queue's number, its stack and its `--stats` ticker
/// (whose lines name the queue when there are several). Returns, in queue
/// order, what each `work` returned with the queue's final counters (after
/// [`shutdown`](crate::shutdown): its pool counted with every frame back).
pub fn serve<T, F>(
    stats: bool,
    stop: &AtomicBool,
    stacks: Vec<Stack<AppDriver>>,
    work: F,
) -> Vec<anyhow::Result<(T, StackStats)>>
where
    T: Send,
    F: Fn(usize, &mut Stack<AppDriver>, &mut StatsTicker) -> anyhow::Result<T> + Sync,
{
    let n = stacks.len();
    let board = QueueBoard::new(n);
    let one = |q: usize, mut stack: Stack<AppDriver>| {
        let mut ticker = if n == 1 {
            StatsTicker::new(stats)
        } else {
            StatsTicker::for_queue(stats, q, board.clone())
        };
        let r = work(q, &mut stack, &mut ticker);
        if r.is_err() {
            stop.store(true, Ordering::Relaxed);
        }
        let s = crate::shutdown(stack);
        r.map(|t| (t, s))
    };
    if n == 1 {
        stacks.into_iter().map(|s| one(0, s)).collect()
    } else {
        run_queues(stacks, one)
    }
}

/// Sorts [`serve`]'s results: each queue's (number, value, final counters)
/// and the first error. With several queues every error names its queue
/// and all but the first are printed here (`app: queue q: …`); the first
/// is returned for the app to end with.
pub fn split<T>(
    app: &str,
    results: Vec<anyhow::Result<(T, StackStats)>>,
) -> (Vec<(usize, T, StackStats)>, Option<anyhow::Error>) {
    let n = results.len();
    let mut ok = Vec::with_capacity(n);
    let mut first = None;
    for (q, r) in results.into_iter().enumerate() {
        match r {
            Ok((t, s)) => ok.push((q, t, s)),
            Err(e) => {
                let e = if n > 1 {
                    e.context(format!("queue {q}"))
                } else {
                    e
                };
                if first.is_none() {
                    first = Some(e);
                } else {
                    eprintln!("{app}: {e:#}");
                }
            }
        }
    }
    (ok, first)
}

/// How flows reach the queues of `dev`'s device, for the banner.
pub fn steering(dev: &DeviceArgs) -> String {
    match (&dev.tap, &dev.xdp) {
        (Some(_), _) => "the kernel puts each flow on a TAP queue by its flow hash, \
             and keeps it on the queue that answers it"
            .into(),
        (None, Some(iface))
            if Path::new("/sys/class/net")
                .join(iface)
                .join("device")
                .exists() =>
        {
            format!(
                "{iface}'s RSS hash puts each flow on a queue (ethtool -X/-N {iface} changes it)"
            )
        }
        (None, Some(_)) => "a veth delivers each packet on the RX queue numbered like the \
             sender's TX queue (the sender's XPS map by CPU, else its flow hash)"
            .into(),
        (None, None) => String::new(),
    }
}

/// The device part of a server's banner: the one queue's description, or
/// how many queues and each one's.
pub fn via(stacks: &[Stack<AppDriver>]) -> String {
    match stacks {
        [one] => one.driver().capabilities().description,
        _ => {
            let each: Vec<String> = stacks
                .iter()
                .map(|s| s.driver().capabilities().description)
                .collect();
            format!(
                "{} queues, a stack and a core each ({})",
                stacks.len(),
                each.join("; ")
            )
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

    /// The counters zc-httpd's `--stats-json` reads from the totals are
    /// sums too (they were queue 0's before), and the memory budget is
    /// the queues' shares added up.
    #[test]
    fn totals_cover_recovery_listen_memory_and_files() {
        let mut a = StackStats::default();
        a.tcp.retransmits = 2;
        a.listen.syns = 5;
        a.memory.budget = Some(100);
        a.memory.in_use = 40;
        a.file_bytes_referenced = 7;
        a.gso_pool = Some(PoolStats {
            capacity: 128,
            ..PoolStats::default()
        });
        let mut b = a;
        b.memory.at_limit = true;
        let t = total(&[a, b]);
        assert_eq!(t.tcp.retransmits, 4);
        assert_eq!(t.listen.syns, 10);
        assert_eq!(t.memory.budget, Some(200));
        assert_eq!(t.memory.in_use, 80);
        assert!(t.memory.at_limit);
        assert_eq!(t.file_bytes_referenced, 14);
        assert_eq!(t.gso_pool.map(|g| g.capacity), Some(256));
        assert_eq!(total(&[]), StackStats::default());
    }

    /// No total until every queue has posted; then the sum of the latest.
    #[test]
    fn a_total_waits_for_every_queue() {
        let board = QueueBoard::new(2);
        let mut s = StackStats::default();
        s.driver.rx_packets = 3;
        assert_eq!(board.post(0, Some(s), posted_total), None);
        s.driver.rx_packets = 4;
        let t = board.post(1, Some(s), posted_total).expect("both posted");
        assert_eq!(t.driver.rx_packets, 7);
        s.driver.rx_packets = 10;
        let t = board.post(0, Some(s), posted_total).expect("both posted");
        assert_eq!(
            t.driver.rx_packets, 14,
            "queue 0's latest replaced its first"
        );
    }
}
