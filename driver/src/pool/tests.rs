use super::*;
use std::collections::HashSet;

fn small(frames: u32) -> Pool {
    PoolConfig::new().frames(frames).build().unwrap()
}

#[test]
fn fresh_frame_layout() {
    let pool = PoolConfig::new()
        .frames(8)
        .frame_size(4096)
        .headroom(256)
        .build()
        .unwrap();
    let mut f = pool.alloc().unwrap();
    assert_eq!(f.offset(), 256);
    assert_eq!(f.len(), 0);
    assert_eq!(f.capacity(), 4096 - 256);
    f.room_mut()[..3].copy_from_slice(b"abc");
    f.set_len(3);
    assert_eq!(f.data(), b"abc");
    assert!(pool.contains(f.data()));
    assert!(pool.owns(&f));
    f.reset();
    assert!(f.is_empty());
}

#[test]
fn every_frame_is_distinct_and_exhaustion_is_counted() {
    let pool = small(64);
    let mut held = Vec::new();
    assert_eq!(pool.alloc_burst(64, &mut held), 64);
    let idx: HashSet<u32> = held.iter().map(|f| f.index()).collect();
    assert_eq!(idx.len(), 64, "no frame handed out twice");
    assert!(pool.alloc().is_none());
    assert_eq!(pool.alloc_burst(4, &mut held), 0);
    let s = pool.stats();
    assert_eq!((s.free, s.in_use, s.alloc_failures), (0, 64, 2));
    Pool::free_burst(&mut held);
    let s = pool.stats();
    assert_eq!((s.free, s.in_use), (64, 0));
    assert_eq!(s.high_water, 64);
}

#[test]
fn frames_do_not_overlap() {
    let pool = small(16);
    let mut held = Vec::new();
    pool.alloc_burst(16, &mut held);
    for (i, f) in held.iter_mut().enumerate() {
        let room = f.room_mut();
        room.fill(i as u8);
        let n = room.len();
        f.set_len(n);
    }
    for (i, f) in held.iter().enumerate() {
        // A slice comparison (one memcmp: quick under Miri too).
        assert!(
            f.data() == vec![i as u8; f.len()].as_slice(),
            "frame {i} was overwritten"
        );
    }
}

#[test]
fn bad_config_is_rejected_with_a_reason() {
    let e = PoolConfig::new().frame_size(3000).build().unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");
    let e = PoolConfig::new().headroom(2048).build().unwrap_err();
    assert!(e.to_string().contains("headroom"), "{e}");
    let e = PoolConfig::new().frames(0).build().unwrap_err();
    assert!(e.to_string().contains("frame count"), "{e}");
}

#[test]
fn frames_outlive_their_pool_handle() {
    let pool = small(4);
    let mut f = pool.alloc().unwrap();
    drop(pool);
    f.room_mut()[0] = 7;
    f.set_len(1);
    assert_eq!(f.data(), [7]);
}

#[test]
fn frames_freed_on_another_thread_come_back() {
    // More than a thread cache holds (`CACHE_MAX`), fewer under Miri.
    let (n, take) = if cfg!(miri) { (96, 80) } else { (256, 200) };
    let pool = small(n);
    let mut held = Vec::new();
    pool.alloc_burst(take as usize, &mut held);
    std::thread::spawn(move || drop(held)).join().unwrap();
    // The other thread's cache was flushed when it exited.
    assert_eq!(pool.stats().free, n as usize);
    let mut again = Vec::new();
    assert_eq!(pool.alloc_burst(n as usize, &mut again), n as usize);
}

#[test]
#[cfg_attr(miri, ignore = "thousands of thread switches: too slow under Miri")]
fn stress_many_threads_ends_full() {
    let pool = small(1024);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let pool = pool.clone();
            std::thread::spawn(move || {
                let mut rng = fastrand::Rng::with_seed(t);
                let mut held: Vec<Frame> = Vec::new();
                let mut out_to_peer = Vec::new();
                for _ in 0..20_000 {
                    match rng.u8(..4) {
                        0 => {
                            pool.alloc_burst(rng.usize(1..48), &mut held);
                        }
                        1 => {
                            let n = rng.usize(..=held.len());
                            held.truncate(n);
                        }
                        2 => {
                            if let Some(mut f) = pool.alloc() {
                                f.room_mut()[0] = t as u8;
                                f.set_len(1);
                                out_to_peer.push(f);
                            }
                        }
                        _ => {
                            for f in &out_to_peer {
                                assert_eq!(f.data(), [t as u8]);
                            }
                            out_to_peer.clear();
                        }
                    }
                }
                (held, out_to_peer)
            })
        })
        .collect();
    let leftovers: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    drop(leftovers);
    let s = pool.stats();
    assert_eq!((s.free, s.in_use, s.capacity), (1024, 0, 1024), "{s}");
    assert!(s.high_water <= 1024);
}

#[test]
#[cfg_attr(miri, ignore = "hugepages are a kernel matter")]
fn hugepages_either_work_or_say_how_to_reserve_them() {
    match PoolConfig::new().frames(1024).hugepages(true).build() {
        Ok(pool) => assert_eq!(pool.stats().capacity, 1024),
        Err(e) => assert!(e.to_string().contains("nr_hugepages"), "{e}"),
    }
}
