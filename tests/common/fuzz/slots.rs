//! AF_XDP multi-buffer receive in place (`driver/src/xdp/slots.rs`) against
//! the driver crate's model of the kernel ([`SlotBed`]): refills, packets of
//! any length, packets the kernel drops after taking buffers (so it reuses
//! them out of order), the stack holding or returning frames, and — in a
//! hostile run — descriptors no kernel would write.
//!
//! Promises checked: nothing panics; with a well-behaved kernel every packet
//! is delivered with exactly its bytes, or dropped only when no frame was
//! free to copy it into; no frame reaches the stack while the kernel still
//! holds one of its slots; refill posts whenever the ring has room for a
//! packet and a frame is free; the pool's "in kernel" count is the frames
//! lent; and once everything is dropped, every frame is back in the pool
//! and none counted in the kernel, hostile descriptors or not.

use std::cell::RefCell;
use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use zcstack_driver::xdp::{Received, SlotBed};
use zcstack_driver::{Frame, Pool, PoolConfig};

/// Most operations taken from one input.
const MAX_OPS: usize = 256;
/// Descriptors a packet may have (`MAX_SKB_FRAGS` + 1).
const MAX_DESCS: usize = 18;
/// The driver refills when this many fill entries are free.
const FILL_BATCH: usize = 32;

#[derive(Arbitrary, Debug)]
struct Geometry {
    /// Frame size: 8 KiB << (this % 5).
    frame: u8,
    /// Chunk size: 4096, or 2048 if odd.
    small_chunk: bool,
    /// Largest packet, as a fraction of what the frame's slots can take.
    wire: u16,
    /// Fill ring: 32 << (this % 4) entries.
    ring: u8,
    /// Frames in the pool: 8 << (this % 4).
    frames: u8,
}

#[derive(Arbitrary, Debug)]
enum Op {
    /// The driver refills; `any` even below its usual batch threshold.
    Refill { any: bool },
    /// The kernel receives a packet of `len % wire + 1` bytes.
    Packet { len: u16, seed: u8 },
    /// The kernel takes `n` buffers for a packet, then drops it.
    KernelDrop { n: u8 },
    /// The stack returns its received frames but the last `keep`.
    Release { keep: u8 },
    /// A descriptor no kernel would write: frame, slot, offset inside the
    /// slot, length, continuation flag.
    Hostile {
        frame: u8,
        slot: u8,
        off: u16,
        len: u16,
        more: bool,
    },
}

thread_local! {
    static POOLS: RefCell<HashMap<(usize, u32), Pool>> = RefCell::new(HashMap::new());
}

fn pool(frame_size: usize, frames: u32) -> Pool {
    POOLS.with(|p| {
        p.borrow_mut()
            .entry((frame_size, frames))
            .or_insert_with(|| {
                PoolConfig::new()
                    .frames(frames)
                    .frame_size(frame_size as u32)
                    .build()
                    .expect("a pool")
            })
            .clone()
    })
}

/// Packet bytes: a slice of one fixed pattern, starting at `seed`.
fn bytes(len: usize, seed: u8) -> &'static [u8] {
    static PATTERN: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    let p = PATTERN.get_or_init(|| {
        (0..MAX_DESCS * 4096 + 256)
            .map(|i| (i as u8).wrapping_mul(29) ^ (i >> 8) as u8)
            .collect()
    });
    &p[usize::from(seed)..usize::from(seed) + len]
}

/// Runs one input.
pub fn run(data: &[u8]) {
    let mut u = Unstructured::new(data);
    let Ok(g) = Geometry::arbitrary(&mut u) else {
        return;
    };
    let frame_size = 8192usize << (g.frame % 5);
    let chunk = if g.small_chunk { 2048 } else { 4096 }.min(frame_size);
    let stride = chunk - 256;
    // Packets up to what MAX_DESCS buffers or the frame's slots hold.
    let fit = (((frame_size - chunk) / stride) + 1).min(MAX_DESCS) * stride;
    let wire = 60 + usize::from(g.wire) % (fit - 59);
    let ring = 32usize << (g.ring % 4);
    let frames = 8u32 << (g.frames % 4);
    let pool = pool(frame_size, frames);
    super::pristine(&pool);
    let Some(mut bed) = SlotBed::new(pool.clone(), ring, chunk, wire) else {
        return;
    };
    let trace = std::env::var_os("ZC_FUZZ_TRACE").is_some();
    if trace {
        eprintln!(
            "{g:?}: frame {frame_size} chunk {chunk} wire {wire} ring {ring} frames {frames}"
        );
    }
    let mut held: Vec<Frame> = Vec::new();
    let mut hostile = false;
    let mut sent = 0u64;
    let mut out = Vec::new();
    for _ in 0..MAX_OPS {
        if u.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut u) else {
            break;
        };
        if trace {
            eprintln!(
                "{op:?}: kernel holds slots of {:?}",
                bed.frames_with_kernel_slots()
            );
        }
        match op {
            Op::Refill { any } => {
                let free = bed.ring_free();
                if any || free >= FILL_BATCH {
                    let spare = pool.stats().free + bed.frames_recycled();
                    let lent = bed.refill(free as u32);
                    if !hostile && free >= bed.slots_per_frame() && spare > 0 {
                        assert!(lent > 0, "refill posted nothing: {free} entries free");
                    }
                }
            }
            Op::Packet { len, seed } => {
                let data = bytes(usize::from(len) % wire + 1, seed);
                let spare = pool.stats().free + bed.frames_recycled();
                let before = bed.stats();
                out.clear();
                let r = bed.receive(data, &mut out);
                if !hostile {
                    assert!(
                        matches!(r, Received::Passed | Received::NoBuffers),
                        "{r:?}: the driver took back a frame the kernel holds a slot of"
                    );
                }
                if r != Received::NoBuffers {
                    sent += 1;
                    let after = bed.stats();
                    if !hostile {
                        match out.as_slice() {
                            [f] => assert!(f.data() == data, "packet bytes differ"),
                            [] => assert!(
                                spare == 0 && after.rx_errors == before.rx_errors + 1,
                                "a packet lost with {spare} frames to spare: {after:?}"
                            ),
                            _ => panic!("one packet, {} frames", out.len()),
                        }
                    }
                    held.append(&mut out);
                }
            }
            Op::KernelDrop { n } => bed.take_and_drop(usize::from(n) % MAX_DESCS + 1),
            Op::Release { keep } => {
                let keep = usize::from(keep).min(held.len());
                held.drain(..held.len() - keep);
            }
            Op::Hostile {
                frame,
                slot,
                off,
                len,
                more,
            } => {
                hostile = true;
                let addr = (u64::from(frame) % (u64::from(frames) + 2)) * frame_size as u64
                    + u64::from(slot % 20) * stride as u64
                    + u64::from(off % 512);
                out.clear();
                bed.raw_descriptor(addr, u32::from(len), more, &mut out);
                held.append(&mut out);
            }
        }
        assert_eq!(
            pool.stats().in_kernel,
            bed.frames_lent(),
            "the pool's in-kernel count"
        );
        if !hostile {
            let s = bed.stats();
            assert_eq!(
                s.rx_packets + s.rx_errors,
                sent,
                "every packet counted once"
            );
            let kernel = bed.frames_with_kernel_slots();
            for f in &held {
                assert!(
                    kernel.binary_search(&f.index()).is_err(),
                    "frame {} is with the stack while the kernel holds a slot of it",
                    f.index()
                );
            }
        }
    }
    drop(held);
    drop(bed);
    let st = pool.stats();
    assert_eq!(st.free, st.capacity, "pool not full: {st}");
    assert_eq!(st.in_kernel, 0, "frames still counted in the kernel: {st}");
}
