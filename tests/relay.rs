//! zc-impair between real namespaces (root): kernel TCP through the relay
//! with loss, delay, jitter, reordering, duplication and corruption in both
//! directions. The bytes arrive intact (SHA-256 at both ends), the relay's
//! counters match what it was asked to do, and nothing is left behind.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use zcstack_tests::netns::{bin, sh, within_ns};
use zcstack_tests::{random_bytes, require_root, sha256_hex};

const NET: u8 = 60;

/// A loss bed made by `scripts/lossbed.sh`, torn down on drop (also when
/// the test fails).
struct LossBed {
    tag: String,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/lossbed.sh")
}

fn lossbed(args: &[&str]) -> std::process::Output {
    let bin_dir = bin("zc-impair").parent().expect("bin dir").to_path_buf();
    let out = Command::new("bash")
        .arg(script())
        .args(args)
        .env("ZC_BIN_DIR", bin_dir)
        .output()
        .expect("bash");
    assert!(
        out.status.success(),
        "lossbed.sh {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

impl LossBed {
    fn up(impair: &[&str]) -> LossBed {
        let tag = format!("r{}", std::process::id());
        let net = NET.to_string();
        let mut args = vec!["up", &tag, "--net", &net, "--"];
        args.extend_from_slice(impair);
        lossbed(&args);
        LossBed { tag }
    }
    fn ns(&self, which: char) -> String {
        format!("zcl{which}{}", self.tag)
    }
    /// Stops the relay and returns its counters (`--stats-json`).
    fn stop_relay(&self) -> Value {
        lossbed(&["stop-relay", &self.tag]);
        let path = format!("/tmp/zclossbed-{}/impair.json", self.tag);
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_json::from_str(&text).expect("relay JSON")
    }
}

impl Drop for LossBed {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script())
            .args(["down", &self.tag])
            .output();
    }
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("no counter {key} in {v}"))
}

/// `got` is within four standard deviations (plus 2) of `trials` × `p`.
fn assert_rate(what: &str, got: u64, trials: u64, p: f64) {
    let mean = trials as f64 * p;
    let sd = (trials as f64 * p * (1.0 - p)).sqrt();
    assert!(
        (got as f64 - mean).abs() <= 4.0 * sd + 2.0,
        "{what}: {got} of {trials}, expected about {mean:.0} (p = {p})"
    );
}

#[test]
#[ignore = "needs root"]
fn kernel_tcp_through_zc_impair_keeps_every_byte_and_the_counts_match() {
    require_root!();
    let bed = LossBed::up(&[
        "--loss",
        "1%",
        "--delay",
        "2ms",
        "--jitter",
        "1ms",
        "--reorder",
        "10%:2ms",
        "--dup",
        "1%",
        "--corrupt",
        "0.5%",
        "--seed",
        "11",
    ]);
    let server_addr: SocketAddr = format!("10.200.{NET}.3:7000").parse().unwrap();
    let upload = random_bytes(16 << 20, 1);
    let download = random_bytes(4 << 20, 2);
    let (want_up, want_down) = (sha256_hex(&upload), sha256_hex(&download));

    // Server (kernel TCP, server namespace): reads the upload to its end,
    // then sends the download; returns the upload's hash.
    let (ready_tx, ready) = mpsc::channel();
    let server_ns = bed.ns('s');
    let server = std::thread::spawn(move || {
        within_ns(&server_ns, move || {
            let l = TcpListener::bind(server_addr).expect("bind");
            ready_tx.send(()).unwrap();
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
            let mut got = Vec::with_capacity(16 << 20);
            s.read_to_end(&mut got).expect("server read");
            s.write_all(&download).expect("server write");
            s.shutdown(Shutdown::Write).unwrap();
            sha256_hex(&got)
        })
    });
    ready
        .recv_timeout(Duration::from_secs(10))
        .expect("server ready");
    let got_down = within_ns(&bed.ns('c'), move || {
        let mut s = TcpStream::connect_timeout(&server_addr, Duration::from_secs(10))
            .expect("connect through the relay");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&upload).expect("client write");
        s.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).expect("client read");
        sha256_hex(&got)
    });
    let got_up = server.join().expect("server thread");
    assert_eq!(got_up, want_up, "upload intact at the server");
    assert_eq!(got_down, want_down, "download intact at the client");

    // Let the last frames through, then read the relay's counters.
    std::thread::sleep(Duration::from_millis(100));
    let stats = bed.stop_relay();
    for (dir, rx_side, tx_side) in [
        ("a2b", "a_driver", "b_driver"),
        ("b2a", "b_driver", "a_driver"),
    ] {
        let d = &stats[dir];
        let offered = n(d, "offered");
        assert_eq!(
            offered,
            n(&stats[rx_side], "rx_packets"),
            "{dir}: every frame received was offered"
        );
        assert!(offered > 2000, "{dir}: {offered} frames");
        let dropped = n(d, "dropped_random");
        let duplicated = n(d, "duplicated");
        assert_eq!(
            n(d, "dropped_burst") + n(d, "dropped_queue") + n(d, "dropped_limit"),
            0,
            "{dir}: no other drops asked for: {d}"
        );
        assert_eq!(
            offered + duplicated,
            n(d, "forwarded") + dropped + n(d, "held"),
            "{dir}: every frame forwarded, dropped or held: {d}"
        );
        assert_eq!(
            n(d, "forwarded"),
            n(d, "copied_frames"),
            "{dir}: every due frame copied"
        );
        assert_eq!(
            n(d, "copied_frames"),
            n(&stats[tx_side], "tx_packets"),
            "{dir}: and sent"
        );
        // What it was asked to do, within four standard deviations.
        let admitted = offered - dropped + duplicated;
        assert_rate(&format!("{dir} loss"), dropped, offered, 0.01);
        assert_rate(
            &format!("{dir} duplicates"),
            duplicated,
            offered - dropped,
            0.01,
        );
        assert_rate(
            &format!("{dir} reordered"),
            n(d, "reordered"),
            admitted,
            0.10,
        );
        // Only IP frames are corrupted (ARP has no checksum): nearly all here.
        assert_rate(
            &format!("{dir} corrupted"),
            n(d, "corrupted"),
            admitted,
            0.005,
        );
        for side in [rx_side, tx_side] {
            let s = &stats[side];
            assert_eq!(
                n(s, "kernel_rx_ring_full") + n(s, "kernel_rx_dropped") + n(s, "tx_errors"),
                0,
                "{side}: the relay itself lost nothing: {s}"
            );
        }
    }

    let tag = bed.tag.clone();
    drop(bed);
    let left = sh(&["ip", "netns", "list"]);
    let left = String::from_utf8_lossy(&left.stdout);
    assert!(!left.contains(&tag), "namespaces left behind: {left}");
    assert!(
        !PathBuf::from(format!("/tmp/zclossbed-{tag}")).exists(),
        "relay log directory left behind"
    );
}
