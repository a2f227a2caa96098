//! Helpers shared by zcstack's integration tests.
//!
//! - [`pump`]: drives two in-process stacks joined by the in-memory wire.
//! - [`netns`]: creates and always deletes network namespaces, veth pairs and
//!   TAP devices (names start with `zc`, addresses in 10.200.0.0/16), and runs
//!   closures inside a namespace on their own thread.
//! - [`rawtcp`]: a scripted TCP peer on the in-memory wire, for behaviour of
//!   other TCPs that two zcstack stacks do not show each other.

pub mod netns;
pub mod rawtcp;

use sha2::{Digest, Sha256};

/// SHA-256 of `data`, as hex.
pub fn sha256_hex(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` bytes from a seeded generator.
pub fn random_bytes(n: usize, seed: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut v = vec![0u8; n];
    rng.fill(&mut v);
    v
}
