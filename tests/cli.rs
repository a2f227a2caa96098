//! What a user sees when the command line or the environment is wrong.

use std::process::Command;

use zcstack_tests::netns::{TapBed, bin};
use zcstack_tests::require_root;

fn run(args: &[&str]) -> (Option<i32>, String) {
    run_bin("zc-echo", args)
}

fn run_bin(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(bin(name))
        .args(args)
        .output()
        .expect("run zc-echo");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn assert_one_line(stderr: &str) {
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "expected one line, got: {stderr:?}"
    );
}

#[test]
fn unknown_flag_is_one_line_and_exit_2() {
    let (code, err) = run(&["--tap", "zcx", "--ip", "10.200.0.2/24", "--bogus"]);
    assert_eq!(code, Some(2));
    assert_one_line(&err);
    assert!(
        err.starts_with("zc-echo: ") && err.contains("--bogus"),
        "{err}"
    );
}

#[test]
fn malformed_address_is_one_line_and_exit_2() {
    for bad in ["10.200.0.300/24", "10.200.0.2", "10.200.0.2/40", "banana"] {
        let (code, err) = run(&["--tap", "zcx", "--ip", bad]);
        assert_eq!(code, Some(2), "--ip {bad}");
        assert_one_line(&err);
        assert!(err.contains("--ip"), "{err}");
    }
    let (code, err) = run(&["--tap", "zcx", "--ip", "10.200.0.2/24", "--mac", "02:00"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("MAC address"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn missing_capability_is_named() {
    require_root!();
    let bed = TapBed::new("cap", 14);
    // Root, but with CAP_NET_ADMIN dropped from the bounding set.
    let out = bed
        .command("setpriv")
        .args(["--bounding-set", "-net_admin", "--inh-caps", "-net_admin"])
        .arg(bin("zc-echo"))
        .args(["--tap", "zcnocap0", "--ip", "10.200.14.2/24"])
        .output()
        .expect("setpriv");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_one_line(&err);
    assert!(err.contains("needs CAP_NET_ADMIN"), "{err}");
}

#[test]
fn zc_perf_wants_device_flags_only_without_kernel() {
    let (code, err) = run_bin("zc-perf", &["client", "--server", "10.200.0.1"]);
    assert_eq!(code, Some(2), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("needs --tap NAME or --xdp IFACE, and --ip ADDR/PREFIX (or --kernel"),
        "{err}"
    );
    let (code, err) = run_bin(
        "zc-perf",
        &[
            "server",
            "--kernel",
            "--tap",
            "zcx",
            "--ip",
            "10.200.0.2/24",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("--kernel uses the kernel's stack: drop --tap"),
        "{err}"
    );
    let (code, err) = run_bin(
        "zc-perf",
        &[
            "client",
            "--kernel",
            "--server",
            "10.200.0.1",
            "--bytes",
            "lots",
        ],
    );
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("not a byte count like"), "{err}");
    let (code, err) = run_bin("zc-perf", &["server", "--kernel", "--smoltcp-defaults"]);
    assert_eq!(code, Some(2), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("--smoltcp-defaults is for the zcstack side: drop it with --kernel"),
        "{err}"
    );
}
