//! The fuzz harnesses: one `run(&[u8])` per target, called both by the
//! coverage-guided targets in `fuzz/` (cargo-fuzz, nightly) and by the
//! corpus replay in `tests/fuzz_replay.rs` (stable, part of
//! `scripts/test.sh`). A broken promise panics; the message says which.
//!
//! - [`stack`]: raw and forged frames into two stacks with live TCP
//!   connections (the in-memory wire, a manual clock).
//! - [`vnet`]: the virtio-net header a TAP puts in front of received frames,
//!   and the checksums the driver checks and asks for.
//! - [`slots`]: AF_XDP multi-buffer receive in place, against a model of
//!   the kernel's fill and RX rings.
//! - [`http`]: zc-httpd's request head, path, range and conditional parsing,
//!   and the reply it decides.

pub mod frames;
pub mod http;
pub mod slots;
pub mod stack;
pub mod vnet;

/// A harness: runs one input, panics if a promise is broken.
pub type Harness = fn(&[u8]);

/// The targets, by the name of their folder under `fuzz/corpus/`.
pub const TARGETS: [(&str, Harness); 4] = [
    ("stack_frames", stack::run),
    ("vnet_rx", vnet::run),
    ("xdp_slots", slots::run),
    ("http_request", http::run),
];

/// Puts a pool kept across runs in one state whatever ran before (which
/// frame index the next allocation gets depends on the order frames came
/// back): takes every frame, then gives them back in index order. Panics if
/// a frame is missing, i.e. the last run leaked one.
pub(crate) fn pristine(pool: &zcstack_driver::Pool) {
    let mut all: Vec<Option<zcstack_driver::Frame>> = (0..pool.capacity()).map(|_| None).collect();
    let mut n = 0;
    while let Some(f) = pool.alloc() {
        let i = f.index() as usize;
        all[i] = Some(f);
        n += 1;
    }
    assert_eq!(n, pool.capacity(), "pool full at start");
    drop(all);
}
