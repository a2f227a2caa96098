//! Helpers shared by zcstack's integration tests.
//!
//! - [`echo_through`] and friends: kernel TCP clients that check an echo
//!   server's bytes (used against the apps and the stack on a TAP bed).
//! - [`httpd`]: zc-httpd in a test bed, started and stopped with its counters.
//! - [`netns`]: creates and always deletes network namespaces, veth pairs and
//!   TAP devices (names start with `zc`, addresses in 10.200.0.0/16), and runs
//!   closures inside a namespace on their own thread.
//! - [`rawtcp`]: a scripted TCP peer on the in-memory wire, for behaviour of
//!   other TCPs that two zcstack stacks do not show each other.
//! - [`fuzz`]: the fuzz harnesses, shared by the targets in `fuzz/` and the
//!   corpus replay (`fuzz_replay.rs`).

pub mod fuzz;
pub mod httpd;
pub mod netns;
pub mod rawtcp;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

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

/// Sends `data` to `addr` and reads the echo back (both directions at once).
pub fn echo_through(addr: SocketAddr, data: Vec<u8>) -> Vec<u8> {
    echo_through_slowly(addr, data, Duration::ZERO)
}

/// Like [`echo_through`], but the client reads nothing for `read_delay`
/// while it keeps sending, so its own and then the server's window close.
pub fn echo_through_slowly(addr: SocketAddr, data: Vec<u8>, read_delay: Duration) -> Vec<u8> {
    let mut s = if read_delay.is_zero() {
        TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
    } else {
        small_buffer_connect(addr)
    };
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let len = data.len();
    let writer = std::thread::spawn(move || {
        w.write_all(&data).expect("write");
        w.shutdown(Shutdown::Write).expect("shutdown");
    });
    std::thread::sleep(read_delay);
    let mut got = Vec::with_capacity(len);
    s.read_to_end(&mut got).expect("read echo");
    writer.join().unwrap();
    got
}

/// Connects with 16 KiB socket buffers (set before the handshake, so the
/// window scale matches), so the client's receive window closes quickly.
fn small_buffer_connect(addr: SocketAddr) -> TcpStream {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, SockaddrIn, connect, setsockopt, socket, sockopt,
    };
    let fd = socket(
        AddressFamily::Inet,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .expect("socket");
    setsockopt(&fd, sockopt::RcvBuf, &16384).expect("SO_RCVBUF");
    setsockopt(&fd, sockopt::SndBuf, &16384).expect("SO_SNDBUF");
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only")
    };
    connect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(v4)).expect("connect");
    TcpStream::from(fd)
}

/// `clients` kernel clients at once each echo `len` seeded random bytes
/// (seeds `seed`, `seed + 1`, …) through `addr`; client `i` reads nothing for
/// `read_delay(i)` first. Asserts every client got its own bytes back. Call
/// it from a thread inside the clients' namespace.
pub fn assert_concurrent_echoes(
    addr: SocketAddr,
    clients: u64,
    len: usize,
    seed: u64,
    read_delay: fn(u64) -> Duration,
) {
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            std::thread::spawn(move || {
                let data = random_bytes(len, seed + i);
                let want = sha256_hex(&data);
                (
                    want,
                    sha256_hex(&echo_through_slowly(addr, data, read_delay(i))),
                )
            })
        })
        .collect();
    for (i, t) in threads.into_iter().enumerate() {
        let (want, got) = t.join().expect("client panicked (stalled?)");
        assert_eq!(want, got, "client {i} got different bytes back");
    }
}

/// A fresh directory `zc-test-TAG-PID` under the system temp dir with a
/// `root/` inside (what a server serves), removed on drop.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let p = std::env::temp_dir().join(format!("zc-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(p.join("root")).unwrap();
        TempDir(p)
    }

    /// The `root/` directory inside.
    pub fn root(&self) -> std::path::PathBuf {
        self.0.join("root")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A number from the flat JSON object the apps write (`--stats-json`).
pub fn json_num(json: &str, key: &str) -> f64 {
    let pat = format!("\"{key}\":");
    let at = json
        .find(&pat)
        .unwrap_or_else(|| panic!("{key} missing in {json}"))
        + pat.len();
    let rest = &json[at..];
    let end = rest.find([',', '}']).unwrap();
    rest[..end].trim().parse().unwrap()
}

#[cfg(test)]
mod tests {
    /// Every test that calls `require_root!()` is marked `#[ignore = "needs
    /// root"]` (so a run without root lists it as ignored, not passed), and
    /// every test so marked calls it.
    #[test]
    fn privileged_tests_are_marked_ignored() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut checked = 0;
        for entry in std::fs::read_dir(dir).expect("tests/") {
            let path = entry.expect("entry").path();
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let src = std::fs::read_to_string(&path).expect("read");
            // Each piece starts at a #[test] and runs to the next one.
            for piece in src.split("#[test]\n").skip(1) {
                let name = piece
                    .split("fn ")
                    .nth(1)
                    .and_then(|s| s.split('(').next())
                    .unwrap_or("?");
                let head = piece.split("fn ").next().unwrap_or("");
                let marked = head.contains("#[ignore = \"needs root\"]");
                // The test function itself: up to the first line that closes it.
                let body = piece.split("\n}\n").next().unwrap_or("");
                let needs = body.contains("require_root!();");
                assert_eq!(
                    marked,
                    needs,
                    "{}: {name}: a test that calls require_root!() must be marked \
                     #[ignore = \"needs root\"], and only such a test",
                    path.display()
                );
                checked += usize::from(marked);
            }
        }
        assert!(checked >= 39, "found only {checked} privileged tests");
    }
}
