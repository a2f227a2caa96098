//! `--queues 2` on zc-echo and zc-httpd (root only; CI runs these): one
//! stack per queue, each on its own pinned thread, on a two-queue TAP
//! (`IFF_MULTI_QUEUE`) and over AF_XDP on a two-queue veth. Enough kernel
//! clients at once that both queues carry connections; each test checks
//! that every queue's own counter in `--stats-json` moved, that every byte
//! came back or arrived equal by SHA-256, and that every queue's pool was
//! full at exit. Each test has its own namespaces and /24 (10.200.90–94).
//!
//! Steering: the kernel puts each flow on a TAP queue by a hash of the
//! flow; a veth delivers on the RX queue numbered like the TX queue the
//! sender picked, here by the hash the client's kernel gave the socket
//! (no XPS map, so the sending CPU does not matter, and no new hash after
//! a retransmission timeout: `net.core.txrehash=0`). Either way a flow
//! stays on one queue, and sixteen connections or more land on both
//! (all on one queue: 2 in 65 536 or less).

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;
use zcstack_tests::netns::{App, Namespace, TapBed, VETH_SERVER, VethBed, VethOpts, spawn_in_ns};
use zcstack_tests::{TempDir, random_bytes, require_root, sha256_hex};

/// Concurrent clients per test.
const CLIENTS: u64 = 16;

/// A two-queue TAP `zcmq0` (kernel side 10.200.`net`.1/24) in a bed of its
/// own, in place of the bed's single-queue TAP.
fn mq_tap_bed(tag: &str, net: u8) -> TapBed {
    let bed = TapBed::new(tag, net);
    bed.ip(&["link", "del", &bed.tap]);
    bed.ip(&[
        "tuntap",
        "add",
        "dev",
        "zcmq0",
        "mode",
        "tap",
        "multi_queue",
    ]);
    bed.ip(&["addr", "add", &format!("10.200.{net}.1/24"), "dev", "zcmq0"]);
    bed.ip(&["link", "set", "zcmq0", "up"]);
    bed
}

/// A veth with two queues per end, whose client end picks a flow's TX
/// queue by the socket's hash and keeps it (see the module doc).
fn mq_veth_bed(tag: &str, net: u8) -> VethBed {
    let bed = VethBed::new(
        tag,
        net,
        VethOpts {
            queues: 2,
            ..VethOpts::default()
        },
    );
    let st = bed
        .client_command("sysctl")
        .args(["-q", "-w", "net.core.txrehash=0"])
        .status()
        .expect("sysctl");
    assert!(st.success(), "sysctl net.core.txrehash=0");
    bed
}

/// Starts `app` in `bed` with `--queues 2`, `--stats-json` into `dir`, and
/// `args`; checks the banner says two queues and how flows are steered.
fn start(bed: &impl Namespace, app: &str, dir: &TempDir, args: &[&str], steering: &str) -> App {
    let json = dir.0.join("stats.json");
    let mut all = args.to_vec();
    all.extend(["--queues", "2", "--stats-json", json.to_str().unwrap()]);
    let srv = App::start(bed, app, &all);
    assert!(
        srv.banner
            .contains("via 2 queues, a stack and a core each ("),
        "banner: {}",
        srv.banner
    );
    assert!(srv.banner.contains(steering), "banner: {}", srv.banner);
    srv
}

/// Stops the app; checks it exited cleanly, printed each queue's closing
/// line and the total, each with its pool full; returns the final
/// `--stats-json`, checked: two queues, each with its pool full.
fn stop(srv: App, app: &str, dir: &TempDir) -> Value {
    let (code, out) = srv.stop();
    assert_eq!(code, Some(0), "{app} exit code; output: {out}");
    for q in 0..2 {
        let line = out
            .lines()
            .find(|l| l.starts_with(&format!("{app}: queue {q} stopped; ")))
            .unwrap_or_else(|| panic!("queue {q}'s closing line: {out}"));
        assert!(line.contains(" pool 0/"), "queue {q}'s pool: {line}");
    }
    let total = out
        .lines()
        .find(|l| l.starts_with(&format!("{app}: stopped; total over 2 queues: ")))
        .unwrap_or_else(|| panic!("closing line with the total: {out}"));
    assert!(total.contains(" pool 0/"), "pool: {total}");
    let text = std::fs::read_to_string(dir.0.join("stats.json")).expect("stats json");
    let json: Value = serde_json::from_str(&text).expect("stats json parses");
    assert_eq!(json["queues"], 2, "{json}");
    assert_eq!(json["pool_in_use"], 0, "{json}");
    let per: &Vec<Value> = json["per_queue"].as_array().expect("per_queue");
    assert_eq!(per.len(), 2, "{json}");
    for (q, p) in per.iter().enumerate() {
        assert_eq!(p["queue"], q, "{p}");
        assert_eq!(p["pool_in_use"], 0, "queue {q}: {p}");
    }
    let cap = |v: &Value| v["pool_capacity"].as_u64().unwrap();
    assert_eq!(cap(&json), cap(&per[0]) + cap(&per[1]), "{json}");
    json
}

/// Every queue's `key` is above 0, and they add up to the total `key`.
fn both_queues_carried(json: &Value, key: &str) {
    let per = json["per_queue"].as_array().unwrap();
    let each: Vec<u64> = per.iter().map(|p| p[key].as_u64().unwrap()).collect();
    assert!(
        each.iter().all(|&n| n > 0),
        "every queue's {key} above 0: {each:?}; {json}"
    );
    assert_eq!(
        json[key].as_u64().unwrap(),
        each.iter().sum::<u64>(),
        "{json}"
    );
}

/// `CLIENTS` clients at once each echo 256 KiB of their own seeded bytes
/// through `addr`, writing and reading at once; returns how many bytes
/// they sent in all. Asserts each got its own bytes back (SHA-256).
fn echo_clients(ns: &str, addr: SocketAddr) -> u64 {
    const LEN: usize = 256 << 10;
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            spawn_in_ns(ns, move || {
                let data = random_bytes(LEN, 900 + i);
                let want = sha256_hex(&data);
                let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
                    .unwrap_or_else(|e| panic!("client {i}: connect: {e}"));
                s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
                let mut w = s.try_clone().unwrap();
                let writer = std::thread::spawn(move || {
                    w.write_all(&data).expect("write");
                    w.shutdown(Shutdown::Write).expect("shutdown");
                });
                let mut got = Vec::with_capacity(LEN);
                s.read_to_end(&mut got).expect("read the echo");
                writer.join().unwrap();
                assert_eq!(sha256_hex(&got), want, "client {i}: other bytes came back");
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
    CLIENTS * LEN as u64
}

/// zc-echo `--queues 2` in `bed`'s server namespace; clients in `client_ns`.
fn echo_on_two_queues(
    tag: &str,
    bed: &impl Namespace,
    dev: &[&str],
    ip: &str,
    client_ns: &str,
    steering: &str,
) {
    let dir = TempDir::new(tag);
    let cidr = format!("{ip}/24");
    let mut args = dev.to_vec();
    args.extend(["--ip", &cidr]);
    let srv = start(bed, "zc-echo", &dir, &args, steering);
    let addr: SocketAddr = format!("{ip}:7").parse().unwrap();
    let sent = echo_clients(client_ns, addr);
    let json = stop(srv, "zc-echo", &dir);
    assert_eq!(json["connections"], CLIENTS, "{json}");
    both_queues_carried(&json, "connections");
    both_queues_carried(&json, "bytes_echoed");
    assert_eq!(json["bytes_echoed"], sent, "every byte echoed once: {json}");
}

#[test]
#[ignore = "needs root"]
fn echo_on_a_two_queue_tap() {
    require_root!();
    let bed = mq_tap_bed("qecho", 90);
    let ns = bed.ns.clone();
    echo_on_two_queues(
        "qecho",
        &bed,
        &["--tap", "zcmq0"],
        &bed.stack_ip(),
        &ns,
        "TAP queue by its flow hash",
    );
}

#[test]
#[ignore = "needs root"]
fn echo_on_two_xdp_queues_of_a_veth() {
    require_root!();
    let bed = mq_veth_bed("qxe", 91);
    let ns = bed.client.clone();
    echo_on_two_queues(
        "qxe",
        &bed,
        &["--xdp", VETH_SERVER],
        &bed.stack_ip(),
        &ns,
        "a veth delivers each packet on the RX queue numbered like the sender's TX queue",
    );
}

/// Files the HTTP tests serve: (name, bytes), sizes from 4 KiB to 1 MiB
/// and one not a multiple of a page.
fn files(dir: &TempDir) -> Vec<(String, Vec<u8>)> {
    [4 << 10, 64 << 10, 300_001, 1 << 20]
        .into_iter()
        .enumerate()
        .map(|(i, len)| {
            let name = format!("f{i}.bin");
            let data = random_bytes(len, 920 + i as u64);
            std::fs::write(dir.root().join(&name), &data).unwrap();
            (name, data)
        })
        .collect()
}

/// `GET /name` on a connection of its own (`Connection: close`); returns
/// the status and the body (its length checked against Content-Length).
fn get(addr: SocketAddr, name: &str) -> (u16, Vec<u8>) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("GET /{name}: connect: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    write!(
        s,
        "GET /{name} HTTP/1.1\r\nHost: zc\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).expect("read the response");
    let at = all
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a response head");
    let head = String::from_utf8_lossy(&all[..at]).to_string();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let body = all[at + 4..].to_vec();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("Content-Length");
    assert_eq!(body.len(), len, "GET /{name}: body length; head: {head}");
    (status, body)
}

/// zc-httpd `--queues 2` in `bed`'s server namespace: `CLIENTS` clients at
/// once each fetch every file on connections of their own; each body's
/// SHA-256 is the file's.
fn httpd_on_two_queues(
    tag: &str,
    bed: &impl Namespace,
    dev: &[&str],
    ip: &str,
    client_ns: &str,
    steering: &str,
) {
    let dir = TempDir::new(tag);
    let files = files(&dir);
    let cidr = format!("{ip}/24");
    let root = dir.root();
    let mut args = dev.to_vec();
    args.extend(["--ip", &cidr, "--root", root.to_str().unwrap()]);
    let srv = start(bed, "zc-httpd", &dir, &args, steering);
    let addr: SocketAddr = format!("{ip}:80").parse().unwrap();
    let want: Vec<(String, String)> = files
        .iter()
        .map(|(n, d)| (n.clone(), sha256_hex(d)))
        .collect();
    let threads: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let want = want.clone();
            spawn_in_ns(client_ns, move || {
                for (name, sha) in &want {
                    let (status, body) = get(addr, name);
                    assert_eq!(status, 200, "client {i}: GET /{name}");
                    assert_eq!(
                        &sha256_hex(&body),
                        sha,
                        "client {i}: GET /{name}: other bytes"
                    );
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
    }
    let json = stop(srv, "zc-httpd", &dir);
    let fetches = CLIENTS * files.len() as u64;
    assert_eq!(json["requests"], fetches, "{json}");
    assert_eq!(json["status_2xx"], fetches, "{json}");
    assert_eq!(json["connections"], fetches, "{json}");
    let bytes: u64 = files.iter().map(|(_, d)| d.len() as u64).sum();
    assert_eq!(json["body_bytes"], CLIENTS * bytes, "{json}");
    both_queues_carried(&json, "requests");
    both_queues_carried(&json, "body_bytes");
}

#[test]
#[ignore = "needs root"]
fn httpd_on_a_two_queue_tap() {
    require_root!();
    let bed = mq_tap_bed("qhttp", 92);
    let ns = bed.ns.clone();
    httpd_on_two_queues(
        "qhttp",
        &bed,
        &["--tap", "zcmq0"],
        &bed.stack_ip(),
        &ns,
        "TAP queue by its flow hash",
    );
}

#[test]
#[ignore = "needs root"]
fn httpd_on_two_xdp_queues_of_a_veth() {
    require_root!();
    let bed = mq_veth_bed("qxh", 93);
    let ns = bed.client.clone();
    httpd_on_two_queues(
        "qxh",
        &bed,
        &["--xdp", VETH_SERVER],
        &bed.stack_ip(),
        &ns,
        "a veth delivers each packet on the RX queue numbered like the sender's TX queue",
    );
}

/// `--queues 2` on a TAP that exists with one queue: a setup error that
/// says how to make it multi-queue, before anything is opened.
#[test]
#[ignore = "needs root"]
fn a_single_queue_tap_is_refused() {
    require_root!();
    let bed = TapBed::new("qsingle", 94);
    let out = bed
        .command(zcstack_tests::netns::bin("zc-echo").to_str().unwrap())
        .args(["--tap", &bed.tap, "--ip", "10.200.94.2/24", "--queues", "2"])
        .output()
        .expect("zc-echo");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(
        err.trim_end(),
        "zc-echo: --queues 2: TAP zctap0 exists with one queue: delete it (the app then \
         creates a multi-queue one), or make it with `ip tuntap add dev zctap0 mode tap \
         multi_queue` (`scripts/tapbed.sh up NS zctap0 CIDR multi_queue`)"
    );
}
