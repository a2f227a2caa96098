//! The apps on a TAP with `IFF_VNET_HDR` offloads (`--tap-offload`): 64 KiB
//! TCP segments and partial checksums both ways, kernel TCP clients on the
//! other side (root only; CI runs these). Nets 10.200.51–59.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use zcstack_tests::netns::{App, TapBed, bin};
use zcstack_tests::{
    assert_concurrent_echoes, echo_through, random_bytes, require_root, sha256_hex,
};

fn start_echo(bed: &TapBed, extra: &[&str]) -> App {
    let ip = format!("{}/24", bed.stack_ip());
    let mut args = vec![
        "--tap",
        &bed.tap,
        "--tap-offload",
        "--ip",
        &ip,
        "--port",
        "7",
    ];
    args.extend_from_slice(extra);
    let app = App::start(bed, "zc-echo", &args);
    assert!(
        app.banner.contains("listening on") && app.banner.contains("TSO"),
        "banner: {}",
        app.banner
    );
    app
}

fn assert_echo(bed: &TapBed, len: usize, seed: u64) {
    let addr: SocketAddr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    let data = random_bytes(len, seed);
    let want = sha256_hex(&data);
    let t = Instant::now();
    let got = bed.within(move || echo_through(addr, data));
    eprintln!("{len} bytes echoed in {:?}", t.elapsed());
    assert_eq!(got.len(), len);
    assert_eq!(sha256_hex(&got), want);
}

/// The counters of zc-echo's closing line: `rx P pkts B B, tx P pkts B B,
/// drops rx D tx D`.
struct Closing {
    rx_pkts: u64,
    rx_bytes: u64,
    tx_pkts: u64,
    tx_bytes: u64,
    rx_drops: u64,
}

fn closing(out: &str) -> Closing {
    let line = out
        .lines()
        .find(|l| l.contains("stopped;"))
        .unwrap_or_else(|| panic!("no closing line: {out}"));
    let words: Vec<&str> = line.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let after = |key: &str, skip: usize| -> u64 {
        let i = words
            .iter()
            .position(|w| *w == key)
            .unwrap_or_else(|| panic!("{key} in {line}"));
        words[i + skip]
            .parse()
            .unwrap_or_else(|_| panic!("{key} in {line}"))
    };
    let tx_at = words.iter().position(|w| *w == "tx").expect("tx");
    Closing {
        rx_pkts: after("rx", 1),
        rx_bytes: after("rx", 3),
        tx_pkts: words[tx_at + 1].parse().expect("tx pkts"),
        tx_bytes: words[tx_at + 3].parse().expect("tx bytes"),
        rx_drops: after("drops", 2),
    }
}

/// Stops the app (zc-echo or zc-httpd): clean exit, pool full again;
/// returns the closing counters.
fn stop_clean(app: App) -> Closing {
    let (code, out) = app.stop();
    assert_eq!(code, Some(0), "exit code; output: {out}");
    assert!(out.contains("pool 0/"), "pool not full at exit: {out}");
    closing(&out)
}

#[test]
#[ignore = "needs root"]
fn offload_64_mib_echo_moves_large_segments() {
    require_root!();
    let bed = TapBed::new("tso", 51);
    let app = start_echo(&bed, &[]);
    assert!(
        bed.ping(&bed.stack_ip(), 2),
        "ping of the stack went unanswered"
    );
    assert_echo(&bed, 64 << 20, 51);
    let c = stop_clean(app);
    // An MTU-1500 TAP moves at most 1514 bytes per frame; with TSO both
    // directions move far larger segments on average.
    let (rx_avg, tx_avg) = (c.rx_bytes / c.rx_pkts, c.tx_bytes / c.tx_pkts);
    eprintln!("average frame: rx {rx_avg} B, tx {tx_avg} B");
    assert!(
        rx_avg > 4000,
        "rx frames average {rx_avg} bytes: no TSO from the kernel"
    );
    assert!(
        tx_avg > 4000,
        "tx frames average {tx_avg} bytes: no TSO to the kernel"
    );
}

#[test]
#[ignore = "needs root"]
fn offload_fifty_concurrent_clients() {
    require_root!();
    let bed = TapBed::new("tsoc", 52);
    let app = start_echo(&bed, &[]);
    let addr: SocketAddr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    bed.within(move || assert_concurrent_echoes(addr, 50, 1 << 20, 500, |_| Duration::ZERO));
    stop_clean(app);
}

/// Frames the kernel writes to a vnet-header TAP without a checksum flag
/// (here: injected with AF_PACKET) are checked by the driver, since the
/// stack checks no checksums in this mode: bad ones are dropped and counted.
#[test]
#[ignore = "needs root"]
fn offload_garbage_frames_are_counted_not_fatal() {
    require_root!();
    let bed = TapBed::new("tsof", 53);
    let app = start_echo(&bed, &[]);
    let tap_tx = || -> u64 {
        let path = format!("/sys/class/net/{}/statistics/tx_packets", bed.tap);
        let out = bed.command("cat").arg(&path).output().expect("cat");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect(&path)
    };
    let before = tap_tx();
    let sent = bed.fuzz_frames(20000, 53);
    assert!(sent > 15_000, "the kernel accepted only {sent} frames");
    // What the TAP passed on to the driver (its queue drops the rest when
    // the fuzzer outruns the stack).
    let delivered = tap_tx() - before;
    assert!(bed.ping(&bed.stack_ip(), 2), "stack stopped answering ping");
    assert_echo(&bed, 4 << 20, 53);
    let c = stop_clean(app);
    // A fifth of the frames are TCP segments with random bytes in place of
    // a checksum: the driver refuses (nearly) all of them.
    eprintln!(
        "{sent} garbage frames sent, {delivered} delivered, {} dropped",
        c.rx_drops
    );
    assert!(
        c.rx_drops >= delivered / 6,
        "only {} of {delivered} garbage frames were dropped",
        c.rx_drops
    );
}

#[test]
#[ignore = "needs root"]
fn offload_zero_window_with_slow_readers_completes() {
    require_root!();
    let bed = TapBed::new("tsoz", 54);
    let app = start_echo(&bed, &["--read-ahead", "1"]);
    let addr: SocketAddr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    bed.within(move || {
        assert_concurrent_echoes(addr, 8, 2 << 20, 600, |i| {
            Duration::from_millis(300 + 100 * i)
        })
    });
    stop_clean(app);
}

/// zc-perf on an offload TAP against a kernel client, 64 MiB each way: both
/// ends count every byte and check the data pattern.
#[test]
#[ignore = "needs root"]
fn offload_zc_perf_64_mib_each_way() {
    require_root!();
    let bed = TapBed::new("tsop", 55);
    let ip = format!("{}/24", bed.stack_ip());
    let srv = App::start(
        &bed,
        "zc-perf",
        &[
            "server",
            "--json",
            "--tap",
            &bed.tap,
            "--tap-offload",
            "--ip",
            &ip,
        ],
    );
    let target = bed.stack_ip();
    let run = |extra: &[&str]| -> Value {
        let mut args = vec![
            "client", "--kernel", "--server", &target, "--bytes", "64M", "--json",
        ];
        args.extend_from_slice(extra);
        let out = bed
            .command(bin("zc-perf").to_str().expect("utf-8 path"))
            .args(&args)
            .output()
            .expect("run zc-perf");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "zc-perf {args:?}: {}{stdout}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("not JSON ({e}): {stdout}"))
    };
    let up = run(&[]);
    let down = run(&["--reverse"]);
    for (r, role) in [(&up, "sender"), (&down, "receiver")] {
        assert_eq!(r["role"], role, "{r}");
        assert_eq!(r["bytes"], 64u64 << 20, "{r}");
        assert_eq!(r["pattern_ok"], true, "{r}");
    }
    assert_eq!(up["peer_count"], 64u64 << 20, "{up}");
    eprintln!(
        "kernel -> zcstack {} Gbit/s, zcstack -> kernel {} Gbit/s",
        up["gbit_per_s"], down["gbit_per_s"]
    );
    let (code, out) = srv.stop();
    assert_eq!(code, Some(0), "zc-perf server: {out}");
    let stopped = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .find(|v| v.get("stopped").is_some())
        .unwrap_or_else(|| panic!("no closing report: {out}"));
    assert_eq!(stopped["pool_in_use"], 0, "pool full again: {stopped}");
}

/// `IFF_MULTI_QUEUE`: two queues of one TAP open side by side (each a `Tap`
/// of its own, both with offloads); a single-queue open of that device, and
/// a multi-queue open of a single-queue device, fail with the "busy" message.
#[test]
#[ignore = "needs root"]
fn multi_queue_tap_opens_one_tap_per_queue() {
    use zcstack_driver::tap::{Tap, TapOptions};
    use zcstack_driver::{Driver, PoolConfig};
    require_root!();
    let bed = TapBed::new("tsomq", 56);
    let single = bed.tap.clone();
    bed.within(move || {
        let pool = PoolConfig::new()
            .frames(64)
            .frame_size(64 << 10)
            .build()
            .unwrap();
        let mq = TapOptions {
            multi_queue: true,
            ..TapOptions::offloads()
        };
        let q0 = Tap::open_with("zcmq0", pool.clone(), mq).expect("queue 0");
        let q1 = Tap::open_with("zcmq0", pool.clone(), mq).expect("queue 1");
        assert!(q0.options().vnet_hdr && q1.options().offloads);
        assert_eq!(
            q0.capabilities().offloads.tcp_segmentation,
            Some(pool.frame_capacity())
        );
        let err = Tap::open_with("zcmq0", pool.clone(), TapOptions::offloads())
            .err()
            .expect("a single-queue open of a multi-queue TAP fails")
            .to_string();
        assert!(err.starts_with("cannot attach to zcmq0"), "{err}");
        let err = Tap::open_with(&single, pool.clone(), mq)
            .err()
            .expect("a multi-queue open of a single-queue TAP fails")
            .to_string();
        assert!(err.contains("not a TAP device free to attach to"), "{err}");
        // Offloads need room for the virtio header in front of each frame.
        let bare = PoolConfig::new().frames(8).headroom(0).build().unwrap();
        let err = Tap::open_with("zcmq1", bare, TapOptions::offloads())
            .err()
            .expect("no headroom")
            .to_string();
        assert!(err.contains("needs 10 bytes of pool headroom"), "{err}");
    });
}

/// zc-httpd on an offload TAP in copy mode (file bytes copied into the TCP
/// ring, sent from there by reference) as 64 KiB segments: curl gets the
/// same 64 MiB, the pool is full at exit.
#[test]
#[ignore = "needs root"]
fn offload_httpd_serves_64_mib_by_copy() {
    require_root!();
    let bed = TapBed::new("tsoh", 57);
    let dir = std::env::temp_dir().join(format!("zc-tso-httpd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("root")).unwrap();
    struct Cleanup(std::path::PathBuf);
    impl Drop for Cleanup {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _cleanup = Cleanup(dir.clone());
    let data = random_bytes(64 << 20, 57);
    let want = sha256_hex(&data);
    std::fs::write(dir.join("root/big.bin"), &data).unwrap();
    drop(data);
    let ip = format!("{}/24", bed.stack_ip());
    let root = dir.join("root");
    let args = [
        "--tap",
        &bed.tap,
        "--tap-offload",
        "--ip",
        &ip,
        "--root",
        root.to_str().unwrap(),
        "--send-mode",
        "copy",
    ];
    let app = App::start(&bed, "zc-httpd", &args);
    assert!(app.banner.contains("serving"), "banner: {}", app.banner);
    let out = dir.join("got.bin");
    let res = bed
        .command("curl")
        .args(["-sS", "--max-time", "60", "-o", out.to_str().unwrap()])
        .args(["-w", "%{http_code}"])
        .arg(format!("http://{}/big.bin", bed.stack_ip()))
        .output()
        .expect("curl");
    assert!(
        res.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&res.stdout), "200");
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), want);
    let c = stop_clean(app);
    assert!(
        c.tx_bytes / c.tx_pkts > 4000,
        "tx frames average {} bytes: no TSO",
        c.tx_bytes / c.tx_pkts
    );
}

/// A persistent TAP keeps the offloads its last user set: a plain app after
/// an offload app must turn them off again, or the kernel hands it 64 KiB
/// TSO segments it cannot take and no connection completes.
#[test]
#[ignore = "needs root"]
fn plain_after_offload_on_the_same_tap_still_works() {
    require_root!();
    let bed = TapBed::new("tsopl", 58);
    let app = start_echo(&bed, &[]);
    assert_echo(&bed, 4 << 20, 58);
    stop_clean(app);
    let ip = format!("{}/24", bed.stack_ip());
    let app = App::start(
        &bed,
        "zc-echo",
        &["--tap", &bed.tap, "--ip", &ip, "--port", "7"],
    );
    assert!(!app.banner.contains("TSO"), "banner: {}", app.banner);
    assert_echo(&bed, 4 << 20, 59);
    stop_clean(app);
}
