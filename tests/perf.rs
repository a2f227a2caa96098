//! zc-perf between zcstack and the kernel's stack, both ways, on a TAP device
//! in its own namespace (root only; CI runs these). Each side counts and
//! checks what it got: bytes equal on both sides, the seeded data pattern
//! intact, UDP datagrams counted at both ends.

use std::process::Output;

use serde_json::Value;
use zcstack_tests::netns::{App, TapBed, bin};
use zcstack_tests::require_root;

const MIB64: u64 = 64 << 20;

/// Runs `zc-perf ARGS` inside `bed` to completion; returns its one JSON report.
fn perf(bed: &TapBed, args: &[&str]) -> Value {
    let out: Output = bed
        .command(bin("zc-perf").to_str().expect("utf-8 path"))
        .args(args)
        .output()
        .expect("run zc-perf");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "zc-perf {args:?} failed: {stderr}{stdout}"
    );
    assert_eq!(
        stdout.trim().lines().count(),
        1,
        "one JSON object on stdout: {stdout}"
    );
    serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
}

/// Starts a zc-perf server in `bed` (`--json`); checks its banner.
fn server(bed: &TapBed, args: &[&str]) -> App {
    let mut all = vec!["server", "--json"];
    all.extend_from_slice(args);
    let app = App::start(bed, "zc-perf", &all);
    let banner: Value = serde_json::from_str(&app.banner).expect("JSON banner");
    assert!(banner["listening"].is_string(), "banner: {}", app.banner);
    app
}

/// The server's JSON lines until it stopped: its reports and, for zcstack,
/// its closing pool figures (checked: the pool is full again).
fn stop_server(app: App) -> Vec<Value> {
    let (code, out) = app.stop();
    assert_eq!(code, Some(0), "zc-perf server exit code; output: {out}");
    let lines: Vec<Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    // With --queues, each queue's line comes first; the total has the pool.
    if let Some(stopped) = lines.iter().find(|v| v.get("pool_in_use").is_some()) {
        assert_eq!(stopped["pool_in_use"], 0, "pool full again: {stopped}");
    }
    lines
        .into_iter()
        .filter(|v| v.get("role").is_some())
        .collect()
}

/// A report's checks common to both directions: the receiver got every byte
/// the sender sent, in pattern, and the figures are filled in.
fn assert_transfer(sender: &Value, receiver: &Value, bytes: u64) {
    assert_eq!(sender["role"], "sender", "{sender}");
    assert_eq!(receiver["role"], "receiver", "{receiver}");
    assert_eq!(sender["bytes"], bytes, "sender's count: {sender}");
    assert_eq!(receiver["bytes"], bytes, "receiver's count: {receiver}");
    assert_eq!(
        sender["peer_count"], bytes,
        "the receiver's count, as the sender heard it"
    );
    assert_eq!(receiver["pattern_ok"], true, "data checked: {receiver}");
    assert_eq!(sender["pattern_ok"], true);
    for r in [sender, receiver] {
        assert!(r["gbit_per_s"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["packets"].as_u64().unwrap() > 1000, "{r}");
        assert!(r["cpu_seconds_per_gb"].as_f64().unwrap() > 0.0, "{r}");
        assert!(r["retrans_bytes"].is_u64(), "{r}");
    }
}

#[test]
#[ignore = "needs root"]
fn kernel_client_and_zcstack_server_64_mib_each_way() {
    require_root!();
    let bed = TapBed::new("perfa", 31);
    let ip = format!("{}/24", bed.stack_ip());
    let srv = server(&bed, &["--tap", &bed.tap, "--ip", &ip]);
    let target = bed.stack_ip();
    let common = [
        "client", "--kernel", "--server", &target, "--bytes", "64M", "--json",
    ];
    let up = perf(&bed, &common);
    let mut rev_args = common.to_vec();
    rev_args.extend(["--reverse", "--seed", "9"]);
    let down = perf(&bed, &rev_args);
    // Bounded by time alone: whatever was sent in half a second arrives.
    let timed = [
        "client",
        "--kernel",
        "--server",
        &target,
        "--seconds",
        "0.5",
        "--json",
    ];
    let timed = perf(&bed, &timed);
    let reports = stop_server(srv);
    assert_eq!(reports.len(), 3, "one server report per test: {reports:?}");
    assert_eq!(timed["ended_by"], "time", "{timed}");
    let timed_bytes = timed["bytes"].as_u64().unwrap();
    assert!(timed_bytes > 0);
    assert_transfer(&timed, &reports[2], timed_bytes);
    assert_eq!(up["stack"], "kernel");
    assert_eq!(reports[0]["stack"], "zcstack");
    assert!(up["retrans_segments"].is_u64(), "TCP_INFO read: {up}");
    assert_transfer(&up, &reports[0], MIB64);
    assert_transfer(&reports[1], &down, MIB64);
    eprintln!(
        "kernel -> zcstack {:.2} Gbit/s, zcstack -> kernel {:.2} Gbit/s",
        up["gbit_per_s"].as_f64().unwrap(),
        down["gbit_per_s"].as_f64().unwrap()
    );
}

#[test]
#[ignore = "needs root"]
fn zcstack_client_and_kernel_server_64_mib_each_way() {
    require_root!();
    let bed = TapBed::new("perfb", 32);
    let srv = server(&bed, &["--kernel"]);
    let ip = format!("{}/24", bed.stack_ip());
    let kernel_ip = "10.200.32.1";
    let dev = ["--tap", &bed.tap, "--ip", &ip];
    let mut up_args = vec!["client", "--server", kernel_ip, "--bytes", "64M", "--json"];
    up_args.extend(dev);
    let up = perf(&bed, &up_args);
    let mut down_args = up_args.clone();
    down_args.extend(["--reverse", "--seed", "3"]);
    let down = perf(&bed, &down_args);
    let reports = stop_server(srv);
    assert_eq!(reports.len(), 2, "one server report per test: {reports:?}");
    assert_eq!(up["stack"], "zcstack");
    assert_eq!(reports[0]["stack"], "kernel");
    // zcstack counts its retransmissions and reports what loss recovery
    // did. A clean TAP loses nothing: no timeout, no fast recovery. A
    // receiver whose reader is starved (CI runs tests side by side on two
    // cores) may delay its ACKs past the probe timeout; such a tail loss
    // probe is the only retransmission allowed, and the receiver must
    // report every one as a duplicate (D-SACK), which proves nothing was
    // lost.
    assert_eq!(up["tcp_rto_expiries"], 0, "{up}");
    assert_eq!(up["tcp_fast_recoveries"], 0, "{up}");
    let resent = up["retrans_segments"].as_u64().unwrap();
    assert!(
        resent <= up["tcp_tail_loss_probes"].as_u64().unwrap(),
        "{up}"
    );
    assert_eq!(up["tcp_dsacks"].as_u64().unwrap(), resent, "{up}");
    assert!(
        reports[0]["tcp_rto_expiries"].is_null(),
        "the kernel has no such counter"
    );
    assert_transfer(&up, &reports[0], MIB64);
    assert_transfer(&reports[1], &down, MIB64);
}

#[test]
#[ignore = "needs root"]
fn udp_datagrams_counted_at_both_ends() {
    require_root!();
    // zcstack receives 64-byte datagrams; zcstack sends 64 and 1472 bytes.
    for (net, zc_server, size) in [(33u8, true, 64u64), (34, false, 64), (39, false, 1472)] {
        let tag = match net {
            33 => "perfu",
            34 => "perfv",
            _ => "perfw",
        };
        let bed = TapBed::new(tag, net);
        let ip = format!("{}/24", bed.stack_ip());
        let dev = ["--tap", bed.tap.as_str(), "--ip", ip.as_str()];
        let kernel_ip = format!("10.200.{net}.1");
        let (srv, client_dev, target) = if zc_server {
            (
                server(&bed, &[&["--udp"][..], &dev].concat()),
                vec!["--kernel"],
                bed.stack_ip(),
            )
        } else {
            (
                server(&bed, &["--udp", "--kernel"]),
                dev.to_vec(),
                kernel_ip,
            )
        };
        let size_arg = size.to_string();
        let mut args = vec!["client", "--udp", "--server", &target, "--count", "20000"];
        args.extend(["--size", &size_arg]);
        args.extend(["--seconds", "5", "--json"]);
        args.extend(client_dev);
        let c = perf(&bed, &args);
        let reports = stop_server(srv);
        assert_eq!(reports.len(), 1, "{reports:?}");
        let s = &reports[0];
        let sent = c["datagrams"].as_u64().unwrap();
        let got = s["datagrams"].as_u64().unwrap();
        eprintln!("udp, zcstack server {zc_server}: sent {sent}, received {got}");
        assert_eq!(sent, 20000, "{c}");
        assert!(got > 0 && got <= sent, "received {got} of {sent}");
        assert_eq!(s["peer_count"], sent, "the server heard how many were sent");
        assert_eq!(c["peer_count"], got, "the client heard how many arrived");
        assert_eq!(s["pattern_ok"], true, "{s}");
        assert_eq!(s["bytes"], got * size, "{size}-byte datagrams");
        if !zc_server {
            // Datagrams by frame handle: written in place, nothing copied.
            assert_eq!(c["copies_per_byte"], 0.0, "{c}");
        }
    }
}

/// The stock-smoltcp baseline bench.sh measures: --smoltcp-defaults on the
/// zcstack server still moves every byte intact both ways, and the zcstack
/// reports carry copies per payload byte (1 when receiving in place, 1 when
/// sending: the app's write into the ring; the TAP takes the ring's bytes by
/// reference) and the bytes sent by reference.
#[test]
#[ignore = "needs root"]
fn smoltcp_defaults_baseline_moves_data_and_counts_copies() {
    require_root!();
    let bed = TapBed::new("perfs", 35);
    let ip = format!("{}/24", bed.stack_ip());
    let srv = server(
        &bed,
        &["--tap", &bed.tap, "--ip", &ip, "--smoltcp-defaults"],
    );
    let target = bed.stack_ip();
    let common = [
        "client", "--kernel", "--server", &target, "--bytes", "16M", "--json",
    ];
    // zcstack sending first: a sending server reports only after the
    // client's trailer reaches it, which may be after the client exits; so
    // the last test is one the server receives (its report comes before
    // the client hears the trailer, and so before stop_server).
    let mut rev_args = common.to_vec();
    rev_args.push("--reverse");
    let down = perf(&bed, &rev_args);
    let up = perf(&bed, &common);
    let reports = stop_server(srv);
    assert_eq!(reports.len(), 2, "{reports:?}");
    assert_transfer(&reports[0], &down, 16 << 20);
    assert_transfer(&up, &reports[1], 16 << 20);
    // Sending: app → ring is the one copy; TAP takes the ring's bytes by
    // reference (one writev per segment), retransmissions included.
    let tx = reports[0]["copies_per_byte"].as_f64().unwrap();
    assert!(
        (1.0..1.01).contains(&tx),
        "sender copies {tx}: {}",
        reports[0]
    );
    let by_ref = reports[0]["bytes_by_reference"].as_u64().unwrap();
    assert!(
        by_ref >= 16 << 20,
        "sent by reference {by_ref}: {}",
        reports[0]
    );
    assert_eq!(reports[1]["copies_per_byte"], 1.0, "{}", reports[1]);
    assert!(up["copies_per_byte"].is_null(), "kernel: not known: {up}");
}

/// `--queues 2` on a multi-queue TAP: two stacks, one per TAP queue, each
/// on its own thread. The kernel spreads flows over the queues by hash; a
/// UDP test and then a TCP test each reach one of them (with ARP learnt by
/// whichever queue the kernel's ARP frames reached), arrive whole, and
/// both queues' pools are full at exit.
#[test]
#[ignore = "needs root"]
fn multi_queue_tap_serves_udp_and_tcp() {
    require_root!();
    let bed = TapBed::new("perfq", 40);
    for cmd in [
        "ip tuntap add dev zcmq0 mode tap multi_queue",
        "ip addr add 10.200.41.1/24 dev zcmq0",
        "ip link set zcmq0 up",
    ] {
        let st = bed.command("sh").args(["-c", cmd]).status().expect("sh");
        assert!(st.success(), "{cmd}");
    }
    let dev = ["--tap", "zcmq0", "--ip", "10.200.41.2/24", "--queues", "2"];
    for udp in [true, false] {
        let mut args = dev.to_vec();
        if udp {
            args.push("--udp");
        }
        let srv = server(&bed, &args);
        assert!(srv.banner.contains("2 queues"), "{}", srv.banner);
        let mut c = vec!["client", "--kernel", "--server", "10.200.41.2", "--json"];
        if udp {
            c.extend(["--udp", "--count", "5000", "--seconds", "5"]);
        } else {
            c.extend(["--bytes", "16M"]);
        }
        let sent = perf(&bed, &c);
        let reports = stop_server(srv);
        assert_eq!(reports.len(), 1, "{reports:?}");
        let r = &reports[0];
        assert_eq!(r["pattern_ok"], true, "{r}");
        if udp {
            assert!(r["queue"].is_u64(), "the report names its queue: {r}");
            assert_eq!(sent["peer_count"], r["datagrams"], "{sent} {r}");
        } else {
            assert_transfer(&sent, r, 16 << 20);
        }
    }
}
