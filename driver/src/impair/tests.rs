//! The impairment model against a manual clock: every figure is
//! deterministic for its seed, and the rates are checked over enough
//! frames that a wrong model misses its tolerance by far.

use super::*;
use crate::{Frame, Pool, PoolConfig};

fn pool(frames: u32) -> Pool {
    PoolConfig::new().frames(frames).build().unwrap()
}

/// A `len`-byte frame: a zero Ethernet header, then `seq`, then zeros.
fn frame(pool: &Pool, seq: u32, len: usize) -> Frame {
    let mut f = pool.alloc().expect("pool has room");
    let room = f.room_mut();
    room[..len].fill(0);
    room[ETH_HLEN..ETH_HLEN + 4].copy_from_slice(&seq.to_be_bytes());
    f.set_len(len);
    f
}

fn seq(f: &Frame) -> u32 {
    u32::from_be_bytes(f.data()[ETH_HLEN..ETH_HLEN + 4].try_into().unwrap())
}

/// Pushes `n` 64-byte frames, one every `gap_us`, popping each at its due
/// time; returns (sequence number, push time,
/// release time) of every frame released, in release order.
fn run(m: &mut Impairment, pool: &Pool, n: u32, gap_us: i64) -> Vec<(u32, i64, i64)> {
    let mut got = Vec::new();
    let mut out = Vec::new();
    let mut take = |m: &mut Impairment, now: i64, got: &mut Vec<(u32, i64, i64)>| {
        m.pop_due(now, &mut out);
        for f in out.drain(..) {
            let s = seq(&f);
            got.push((s, i64::from(s) * gap_us, now));
        }
    };
    for i in 0..n {
        let now = i64::from(i) * gap_us;
        // Release each frame at its own due time, not later.
        while let Some(due) = m.next_due().filter(|&d| d <= now) {
            take(m, due, &mut got);
        }
        m.push(now, frame(pool, i, 64));
    }
    while let Some(due) = m.next_due() {
        take(m, due, &mut got);
    }
    got
}

fn assert_conserved(s: &ImpairStats, held: usize) {
    assert_eq!(
        s.offered + s.duplicated,
        s.forwarded + s.dropped() + held as u64,
        "every frame forwarded, dropped or held: {s:?}"
    );
}

#[test]
fn no_impairment_passes_every_frame_at_once_in_order() {
    let p = pool(64);
    let mut m = ImpairConfig::new().build().unwrap();
    assert!(m.config().is_noop());
    for i in 0..10 {
        m.push(100, frame(&p, i, 64));
    }
    assert_eq!(m.next_due(), Some(100));
    let mut out = Vec::new();
    assert_eq!(m.pop_due(99, &mut out), 0, "nothing before its time");
    assert_eq!(m.pop_due(100, &mut out), 10);
    assert_eq!(
        out.iter().map(seq).collect::<Vec<_>>(),
        (0..10).collect::<Vec<_>>()
    );
    assert_eq!(m.next_due(), None);
    let s = m.stats();
    assert_eq!((s.offered, s.forwarded, s.dropped()), (10, 10, 0));
    assert_eq!(s.forwarded_bytes, 640);
    drop(out);
    assert_eq!(p.stats().free, 64, "frames go back to the pool");
}

#[test]
fn random_loss_rate_and_seeded_replay() {
    let p = pool(256);
    let n = 100_000u32;
    let delivered = |seed| {
        let mut m = ImpairConfig::new().loss(0.01).seed(seed).build().unwrap();
        let got: Vec<u32> = run(&mut m, &p, n, 1).iter().map(|g| g.0).collect();
        (got, m.stats())
    };
    let (a, s) = delivered(7);
    // 1 % of 100 000 is 1000; the standard deviation is 31.
    assert!((850..=1150).contains(&s.dropped_random), "{s:?}");
    assert_eq!(s.dropped(), s.dropped_random);
    assert_eq!(a.len() as u64, u64::from(n) - s.dropped_random);
    assert_conserved(&s, 0);
    let (b, _) = delivered(7);
    assert_eq!(a, b, "same seed, same frames lost");
    let (c, _) = delivered(8);
    assert_ne!(a, c, "another seed, other frames lost");
}

#[test]
fn gilbert_elliott_loses_in_bursts_of_mean_one_over_r() {
    let p = pool(256);
    let ge = GilbertElliott {
        p: 0.01,
        r: 0.25,
        loss_bad: 1.0,
        loss_good: 0.0,
    };
    let n = 200_000u32;
    let mut m = ImpairConfig::new()
        .gilbert_elliott(ge)
        .seed(3)
        .build()
        .unwrap();
    let got: Vec<u32> = run(&mut m, &p, n, 1).iter().map(|g| g.0).collect();
    let s = m.stats();
    assert_eq!(s.dropped(), s.dropped_burst);
    // Bursts: runs of consecutive lost sequence numbers.
    let mut bursts = 0u64;
    let mut next = 0u32;
    for &g in &got {
        if g > next {
            bursts += 1;
        }
        next = g + 1;
    }
    if next < n {
        bursts += 1;
    }
    let mean = s.dropped_burst as f64 / bursts as f64;
    assert!((3.6..=4.4).contains(&mean), "mean burst {mean}, {s:?}");
    let rate = s.dropped_burst as f64 / f64::from(n);
    let want = ge.loss_rate();
    assert!(
        (want - rate).abs() < 0.1 * want,
        "loss {rate}, model {want}"
    );
}

#[test]
fn delay_and_jitter_stay_in_bounds_and_never_reorder() {
    let p = pool(512);
    // Frames 0.1 ms apart (dense: the order rule decides most delays) and
    // 5 ms apart (sparse: each frame draws its own).
    for gap in [100, 5000] {
        let mut m = ImpairConfig::new()
            .delay_us(5000)
            .jitter_us(2000)
            .seed(11)
            .build()
            .unwrap();
        let got = run(&mut m, &p, 5000, gap);
        assert_eq!(got.len(), 5000);
        let delays: Vec<i64> = got.iter().map(|&(_, t0, t1)| t1 - t0).collect();
        let (lo, hi) = (*delays.iter().min().unwrap(), *delays.iter().max().unwrap());
        assert!(
            lo >= 3000 && hi <= 7000,
            "gap {gap}: delays {lo}..{hi} outside 5 ms ± 2 ms"
        );
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "gap {gap}: jitter alone reorders nothing"
        );
        assert_eq!(m.stats().reordered, 0);
        if gap == 5000 {
            let mean = delays.iter().sum::<i64>() as f64 / delays.len() as f64;
            assert!(lo < 3100 && hi > 6900, "jitter spans its range: {lo}..{hi}");
            assert!(
                (mean - 5000.0).abs() < 100.0,
                "uniform around the delay: {mean}"
            );
        }
    }
}

#[test]
fn reordering_holds_back_the_asked_fraction() {
    let p = pool(512);
    let mut m = ImpairConfig::new()
        .delay_us(1000)
        .reorder(0.2, 3000)
        .seed(5)
        .build()
        .unwrap();
    let n = 20_000;
    let got = run(&mut m, &p, n, 100);
    assert_eq!(got.len(), n as usize);
    let s = m.stats();
    let frac = s.reordered as f64 / f64::from(n);
    assert!((0.19..=0.21).contains(&frac), "reordered {frac}");
    // A frame held back 3 ms is overtaken by the next one, 0.1 ms behind it.
    let mut highest = None;
    let mut overtaken = 0;
    for &(sq, t0, t1) in &got {
        if highest.is_some_and(|h| sq < h) {
            overtaken += 1;
            assert_eq!(t1 - t0, 4000, "a reordered frame waits delay + extra");
        } else {
            assert_eq!(t1 - t0, 1000, "the others wait the delay");
        }
        highest = highest.max(Some(sq));
    }
    assert_eq!(overtaken, s.reordered);
}

#[test]
fn rate_limit_departures_are_exact() {
    let p = pool(64);
    // 8 Mbit/s: one byte per microsecond.
    let mut m = ImpairConfig::new()
        .rate_bps(8_000_000)
        .queue_bytes(64 * 1024)
        .delay_us(500)
        .build()
        .unwrap();
    for i in 0..10 {
        m.push(0, frame(&p, i, 1000));
    }
    let mut out = Vec::new();
    for i in 0..10 {
        let due = 1000 * (i64::from(i) + 1) + 500;
        assert_eq!(m.next_due(), Some(due), "frame {i}");
        assert_eq!(m.pop_due(due - 1, &mut out), 0);
        assert_eq!(m.pop_due(due, &mut out), 1);
        assert_eq!(seq(&out[i as usize]), i);
    }
    // An idle link sends at once: the next frame leaves one transmission later.
    m.push(20_000, frame(&p, 10, 125));
    assert_eq!(m.next_due(), Some(20_000 + 125 + 500));
    // 1 Gbit/s: a 1514-byte frame takes 12.112 µs; released on the next whole µs.
    let p = pool(2048);
    let mut g = ImpairConfig::new()
        .rate_bps(1_000_000_000)
        .queue_bytes(2 << 20)
        .build()
        .unwrap();
    for i in 0..1001 {
        g.push(0, frame(&p, i, 1514));
    }
    assert_eq!(g.next_due(), Some(13));
    assert_eq!(g.pop_due_max(i64::MAX, &mut out, 1000), 1000);
    // 1001 frames of 12 112 ns end at 12 124 112 ns.
    assert_eq!(g.next_due(), Some(12_125));
}

#[test]
fn a_full_bottleneck_queue_drops_at_the_tail() {
    let p = pool(64);
    let mut m = ImpairConfig::new()
        .rate_bps(8_000_000)
        .queue_bytes(10_000)
        .build()
        .unwrap();
    for i in 0..20 {
        m.push(0, frame(&p, i, 1000));
    }
    let s = m.stats();
    assert_eq!((s.dropped_queue, s.max_queue_bytes), (10, 10_000), "{s:?}");
    assert_eq!(m.held(), 10);
    // 5 ms later five frames have left: five fit again, the sixth does not.
    for i in 20..26 {
        m.push(5000, frame(&p, i, 1000));
    }
    assert_eq!(m.stats().dropped_queue, 11);
    let mut out = Vec::new();
    m.pop_due(i64::MAX, &mut out);
    let order: Vec<u32> = out.iter().map(seq).collect();
    assert_eq!(
        order,
        [(0..10).collect::<Vec<_>>(), (20..25).collect()].concat()
    );
    assert_conserved(&m.stats(), m.held());
}

#[test]
fn duplicates_and_corruption_are_counted_and_real() {
    let p = pool(512);
    let mut m = ImpairConfig::new()
        .duplicate(0.05)
        .corrupt(0.05)
        .seed(9)
        .build()
        .unwrap();
    let n = 20_000u32;
    let mut out = Vec::new();
    let mut flipped = 0u64;
    let mut seen = vec![0u64; n as usize];
    for i in 0..n {
        // The sequence number in the Ethernet header, which corruption
        // leaves alone; zeros behind it, so a flipped bit shows.
        let mut f = p.alloc().unwrap();
        f.room_mut()[..100].fill(0);
        f.room_mut()[..4].copy_from_slice(&i.to_be_bytes());
        f.room_mut()[12..14].copy_from_slice(&[0x08, 0x00]); // IPv4
        f.set_len(100);
        m.push(i64::from(i), f);
        m.pop_due(i64::from(i), &mut out);
        for f in out.drain(..) {
            let d = f.data();
            let s = u32::from_be_bytes(d[..4].try_into().unwrap());
            match d[ETH_HLEN..].iter().map(|b| b.count_ones()).sum::<u32>() {
                0 => {}
                1 => flipped += 1,
                bits => panic!("frame {s} has {bits} bits flipped"),
            }
            seen[s as usize] += 1;
        }
    }
    let s = m.stats();
    assert!((800..=1200).contains(&s.duplicated), "{s:?}");
    assert!((800..=1200).contains(&s.corrupted), "{s:?}");
    assert_eq!(
        flipped, s.corrupted,
        "every corrupted frame has one bit flipped"
    );
    assert!(seen.iter().all(|&c| c >= 1), "nothing lost");
    let copies: u64 = seen.iter().map(|c| c - 1).sum();
    assert_eq!(copies, s.duplicated, "every duplicate delivered once more");
    assert_eq!(s.forwarded, u64::from(n) + s.duplicated);
    assert_conserved(&s, 0);
    drop(out);
    assert_eq!(p.stats().free, 512, "copies go back to the pool too");
}

#[test]
fn corruption_leaves_frames_without_a_checksum_alone() {
    let p = pool(64);
    let mut m = ImpairConfig::new().corrupt(1.0).build().unwrap();
    let mut arp = p.alloc().unwrap();
    arp.room_mut()[..60].fill(0);
    arp.room_mut()[12..14].copy_from_slice(&[0x08, 0x06]);
    arp.set_len(60);
    m.push(0, arp);
    let mut ip = frame(&p, 1, 60);
    ip.data_mut()[12..14].copy_from_slice(&[0x08, 0x00]);
    m.push(0, ip);
    let mut out = Vec::new();
    m.pop_due(0, &mut out);
    assert!(out[0].data()[14..].iter().all(|&b| b == 0), "ARP untouched");
    assert_eq!(m.stats().corrupted, 1, "the IPv4 frame corrupted");
}

#[test]
fn next_due_is_the_earliest_of_both_lines() {
    let p = pool(64);
    let mut m = ImpairConfig::new()
        .delay_us(1000)
        .reorder(0.5, 10_000)
        .seed(1)
        .build()
        .unwrap();
    assert_eq!(m.next_due(), None);
    for i in 0..8 {
        m.push(i64::from(i) * 10, frame(&p, i, 64));
    }
    let mut out = Vec::new();
    while let Some(due) = m.next_due() {
        assert_eq!(m.pop_due(due - 1, &mut out), 0, "nothing before next_due");
        assert!(m.pop_due(due, &mut out) >= 1, "something at next_due");
    }
    assert_eq!(out.len(), 8);
    assert!(m.stats().reordered > 0 && m.stats().reordered < 8);
}

#[test]
fn the_frame_limit_drops_and_counts() {
    let p = pool(64);
    let mut m = ImpairConfig::new().delay_us(10).limit(4).build().unwrap();
    for i in 0..6 {
        m.push(0, frame(&p, i, 64));
    }
    assert_eq!((m.held(), m.stats().dropped_limit), (4, 2));
    assert_conserved(&m.stats(), m.held());
}

#[test]
fn bad_configurations_say_what_to_change() {
    let err = |c: ImpairConfig| c.build().unwrap_err().to_string();
    assert!(
        err(ImpairConfig::new().loss(1.5)).contains("loss probability 1.5 must be from 0 to 1")
    );
    assert!(err(ImpairConfig::new().reorder(0.2, 0)).contains("needs an extra delay"));
    assert!(err(ImpairConfig::new().queue_bytes(1 << 20)).contains("needs a rate"));
    assert!(err(ImpairConfig::new().rate_bps(0)).contains("more than 0"));
    assert!(
        err(ImpairConfig::new().rate_bps(1_000_000).queue_bytes(100))
            .contains("must hold one 1514-byte frame")
    );
    let ge = GilbertElliott {
        p: 0.1,
        r: 0.0,
        loss_bad: 1.0,
        loss_good: 0.0,
    };
    assert!(err(ImpairConfig::new().gilbert_elliott(ge)).contains("never end"));
    assert!(err(ImpairConfig::new().limit(0)).contains("frame limit"));
    assert!(err(ImpairConfig::new().loss(f64::NAN)).contains("must be from 0 to 1"));
}

#[test]
fn configs_print_as_one_line() {
    let c = ImpairConfig::new()
        .loss(0.01)
        .delay_us(5000)
        .jitter_us(2000)
        .reorder(0.2, 3000)
        .rate_bps(100_000_000)
        .seed(7);
    assert_eq!(
        c.to_string(),
        "loss 1%, delay 5ms ± 2ms, reorder 20% +3ms, rate 100 Mbit/s queue 256 KiB, seed 7"
    );
    assert_eq!(ImpairConfig::new().to_string(), "none, seed 1");
}
