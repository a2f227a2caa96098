//! zc-echo on a TAP device inside its own namespace, with kernel TCP clients
//! on the other side (root only; CI runs these).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use zcstack_tests::netns::{App, TapBed};
use zcstack_tests::{
    assert_concurrent_echoes, echo_through, random_bytes, require_root, sha256_hex,
};

/// Echoes `len` seeded random bytes through the stack in `bed` from a kernel
/// client and asserts they come back identical.
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

fn start_echo(bed: &TapBed) -> App {
    start_echo_with(bed, &[])
}

fn start_echo_with(bed: &TapBed, extra: &[&str]) -> App {
    let ip = format!("{}/24", bed.stack_ip());
    let mut args = vec!["--tap", &bed.tap, "--ip", &ip, "--port", "7"];
    args.extend_from_slice(extra);
    let app = App::start(bed, "zc-echo", &args);
    assert!(
        app.banner.contains("listening on"),
        "banner: {}",
        app.banner
    );
    app
}

/// Stops the app and checks it exited cleanly with its pool full again.
fn stop_clean(app: App) -> String {
    let (code, out) = app.stop();
    assert_eq!(code, Some(0), "zc-echo exit code; output: {out}");
    assert!(out.contains("pool 0/"), "pool not full at exit: {out}");
    out
}

#[test]
#[ignore = "needs root"]
fn sixteen_mib_echo_and_ping() {
    require_root!();
    let bed = TapBed::new("echo", 11);
    let app = start_echo(&bed);
    assert!(
        bed.ping(&bed.stack_ip(), 3),
        "ping of the stack went unanswered"
    );
    assert_echo(&bed, 16 << 20, 11);
    stop_clean(app);
}

#[test]
#[ignore = "needs root"]
fn fifty_concurrent_clients() {
    require_root!();
    let bed = TapBed::new("conc", 12);
    let app = start_echo(&bed);
    let addr: SocketAddr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    bed.within(move || assert_concurrent_echoes(addr, 50, 1 << 20, 100, |_| Duration::ZERO));
    stop_clean(app);
}

#[test]
#[ignore = "needs root"]
fn garbage_frames_do_not_crash_the_stack() {
    require_root!();
    let bed = TapBed::new("fuzz", 13);
    let app = start_echo(&bed);
    let sent = bed.fuzz_frames(20000, 7);
    assert!(sent > 15_000, "the kernel accepted only {sent} frames");
    // Still answering: ping, and a clean echo.
    assert!(bed.ping(&bed.stack_ip(), 2), "stack stopped answering ping");
    assert_echo(&bed, 1 << 20, 13);
    stop_clean(app);
}

/// Kernel clients that stop reading for a while against a server that reads
/// only what it can echo at once (no read-ahead): both receive windows close
/// and the kernel probes the stack's zero window. smoltcp 0.14 dropped the
/// kernel's later ACKs whole when their sequence number lay beyond its zero
/// (or, through window-scale rounding, shrunk) window, so neither side saw
/// its data acknowledged and the transfer never finished. Fixed in
/// third_party/smoltcp (ZCSTACK-PATCHES.md, RFC 9293 3.10.7.4).
#[test]
#[ignore = "needs root"]
fn zero_window_with_slow_readers_completes() {
    require_root!();
    let bed = TapBed::new("zwin", 15);
    let app = start_echo_with(&bed, &["--read-ahead", "1"]);
    let addr: SocketAddr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    let t = Instant::now();
    bed.within(move || {
        assert_concurrent_echoes(addr, 8, 2 << 20, 200, |i| {
            Duration::from_millis(300 + 100 * i)
        })
    });
    eprintln!("8 slow readers echoed 2 MiB each in {:?}", t.elapsed());
    stop_clean(app);
}
