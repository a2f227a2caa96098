//! What a user sees when the command line or the environment is wrong, and
//! what the apps tell them about the device they run on: one line per
//! error, the right cause and advice, the OS error once; usage errors exit
//! with 2, setup errors with 1.

use std::net::TcpListener;
use std::process::Command;
use std::time::{Duration, Instant};

use zcstack_tests::netns::{App, TapBed, VETH_SERVER, VethBed, VethOpts, bin};
use zcstack_tests::{echo_through, random_bytes, require_root, sha256_hex};

fn run(args: &[&str]) -> (Option<i32>, String) {
    run_bin("zc-echo", args)
}

/// Runs an app that is expected to stop at once with an error. As root it
/// runs in a network namespace of its own (`unshare --net`), so a flag
/// that wrongly got through could not create a TAP device anywhere that
/// matters; and `timeout` ends it if it started serving.
fn run_bin(name: &str, args: &[&str]) -> (Option<i32>, String) {
    let mut cmd = Command::new("timeout");
    cmd.arg("10");
    if zcstack_tests::netns::privileged() {
        cmd.args(["unshare", "--net"]);
    }
    let out = cmd.arg(bin(name)).args(args).output().expect("run the app");
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
    assert!(
        stderr.matches("os error").count() <= 1,
        "the OS error is repeated: {stderr:?}"
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
fn interface_names_the_kernel_refuses_are_usage_errors() {
    for (flag, bad, why) in [
        ("--tap", "zc:0", "it contains ':'"),
        ("--xdp", "zc/0", "it contains '/'"),
        (
            "--tap",
            "zcaveryverylong0",
            "it is 16 bytes long, the kernel takes at most 15",
        ),
        ("--xdp", "", "it is empty"),
    ] {
        let (code, err) = run(&[flag, bad, "--ip", "10.200.0.2/24"]);
        assert_eq!(code, Some(2), "{flag} {bad:?}: {err}");
        assert_one_line(&err);
        assert!(
            err.starts_with("zc-echo: ")
                && err.contains(flag)
                && err.contains(&format!("not an interface name: {why}")),
            "{err}"
        );
    }
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
    assert!(!err.contains("modprobe"), "{err}");
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

#[test]
fn missing_device_names_both_device_flags() {
    for (app, args) in [
        ("zc-echo", &["--ip", "10.200.0.2/24"][..]),
        ("zc-httpd", &["--ip", "10.200.0.2/24", "--root", "/"]),
    ] {
        let (code, err) = run_bin(app, args);
        assert_eq!(code, Some(2), "{app}: {err}");
        assert_one_line(&err);
        assert!(
            err.contains("--tap <NAME>") && err.contains("--xdp <IFACE>"),
            "{app}: {err}"
        );
    }
}

#[test]
fn out_of_range_values_are_usage_errors() {
    let dev = ["--tap", "zcx", "--ip", "10.200.0.2/24"];
    let cases: &[(&str, &[&str], &str)] = &[
        ("zc-echo", &["--port", "0"], "--port"),
        ("zc-echo", &["--port", "70000"], "--port"),
        ("zc-echo", &["--backlog", "0"], "--backlog"),
        ("zc-echo", &["--pool-frames", "0"], "--pool-frames"),
        ("zc-httpd", &["--root", "/", "--port", "0"], "--port"),
        (
            "zc-httpd",
            &["--root", "/", "--max-conns", "0"],
            "--max-conns",
        ),
    ];
    for (app, extra, flag) in cases {
        let (code, err) = run_bin(app, &[&dev[..], extra].concat());
        assert_eq!(code, Some(2), "{app} {extra:?}: {err}");
        assert_one_line(&err);
        assert!(err.contains(flag), "{app} {extra:?}: {err}");
    }
    for args in [
        &["server", "--kernel", "--port", "0"][..],
        &[
            "client",
            "--kernel",
            "--server",
            "10.200.0.1",
            "--port",
            "0",
        ],
        &[
            "client",
            "--kernel",
            "--server",
            "10.200.0.1",
            "--seconds",
            "0",
        ],
    ] {
        let (code, err) = run_bin("zc-perf", args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_one_line(&err);
    }
}

/// `--send-mode` acts only in zc-httpd (the one app that sends files), so
/// only zc-httpd offers it.
#[test]
fn send_mode_is_offered_only_where_it_acts() {
    let (code, err) = run(&[
        "--tap",
        "zcx",
        "--ip",
        "10.200.0.2/24",
        "--send-mode",
        "copy",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("unexpected argument '--send-mode'"), "{err}");
    let (code, err) = run_bin("zc-perf", &["server", "--kernel", "--send-mode", "copy"]);
    assert_eq!(code, Some(2), "{err}");
    let help = Command::new(bin("zc-httpd"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&help.stdout).contains("--send-mode <MODE>"));
    let help = Command::new(bin("zc-echo")).arg("--help").output().unwrap();
    assert!(!String::from_utf8_lossy(&help.stdout).contains("--send-mode"));
}

/// zc-perf refuses flags that would do nothing in the test asked for.
#[test]
fn zc_perf_refuses_flags_that_would_do_nothing() {
    for (args, want) in [
        (
            &["server", "--kernel", "--backlog", "4"][..],
            "--backlog is for a zcstack TCP server",
        ),
        (
            &[
                "server",
                "--tap",
                "zcx",
                "--ip",
                "10.200.0.2/24",
                "--udp",
                "--backlog",
                "4",
            ],
            "--backlog is for a zcstack TCP server",
        ),
        (
            &[
                "client",
                "--kernel",
                "--server",
                "10.200.0.1",
                "--count",
                "10",
            ],
            "--size and --count are for UDP tests",
        ),
        (
            &[
                "client",
                "--kernel",
                "--server",
                "10.200.0.1",
                "--udp",
                "--bytes",
                "1M",
            ],
            "--bytes is for TCP tests",
        ),
    ] {
        let (code, err) = run_bin("zc-perf", args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_one_line(&err);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

#[test]
fn zc_perf_usage_names_every_device_and_a_missing_subcommand() {
    let (code, err) = run_bin("zc-perf", &[]);
    assert_eq!(code, Some(2), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("requires a subcommand") && err.contains("server, client"),
        "{err}"
    );
    for sub in ["server", "client"] {
        let help = Command::new(bin("zc-perf"))
            .args([sub, "--help"])
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&help.stdout);
        let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
        assert!(
            usage.contains("--kernel")
                && usage.contains("--tap NAME")
                && usage.contains("--xdp IFACE"),
            "{sub}: {usage}"
        );
    }
}

/// A kernel server that cannot bind says why and never claims to listen.
#[test]
fn zc_perf_kernel_server_does_not_claim_to_listen_before_binding() {
    // Holds the port on loopback: binding it on every address then fails.
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port().to_string();
    // Not in a namespace of its own: it must meet the port held here. It
    // opens no device, and `timeout` ends it if it wrongly starts serving.
    let out = Command::new("timeout")
        .arg("10")
        .arg(bin("zc-perf"))
        .args(["server", "--kernel", "--port", &port])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        out.stdout.is_empty(),
        "printed {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert_one_line(&err);
    assert!(
        err.contains(&format!(
            "binding TCP port {port}: is another server running?"
        )),
        "{err}"
    );
}

/// Without root, opening a TAP fails for lack of permission: the message
/// says so (not "load the tun module") and gives the OS error once.
#[test]
#[ignore = "needs root"]
fn tap_permission_error_names_the_cause() {
    require_root!();
    let bed = TapBed::new("perm", 15);
    // A copy the unprivileged user can execute wherever the tree lives.
    let dir = std::env::temp_dir().join(format!("zc-perm-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let exe = dir.join("zc-echo");
    std::fs::copy(bin("zc-echo"), &exe).unwrap();
    let out = bed
        .command("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(&exe)
        .args(["--tap", "zcperm0", "--ip", "10.200.15.2/24"])
        .output()
        .expect("setpriv");
    let _ = std::fs::remove_dir_all(&dir);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("CAP_NET_ADMIN") && (err.contains("was refused") || err.contains("needs")),
        "{err}"
    );
    assert!(!err.contains("modprobe"), "{err}");
}

/// No /dev/net/tun at all: the message says how to get one.
#[test]
#[ignore = "needs root"]
fn missing_tun_device_says_how_to_get_one() {
    require_root!();
    let bed = TapBed::new("notun", 16);
    // A private mount namespace where /dev/net is empty.
    let script = format!(
        "mount -t tmpfs zcnotun /dev/net && exec {} --tap zcnotun0 --ip 10.200.16.2/24",
        bin("zc-echo").display()
    );
    let out = bed
        .command("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("there is no /dev/net/tun") && err.contains("modprobe tun"),
        "{err}"
    );
}

/// The banner says whether the TAP was attached or created; a created one
/// (no kernel-side address) comes with the command that gives it one.
#[test]
#[ignore = "needs root"]
fn banner_says_whether_the_tap_was_created_or_attached() {
    require_root!();
    let bed = TapBed::new("ban", 17);
    let ip = format!("{}/24", bed.stack_ip());
    let app = App::start(&bed, "zc-echo", &["--tap", &bed.tap, "--ip", &ip]);
    assert!(
        app.banner.contains("via tap zctap0 (attached)"),
        "{}",
        app.banner
    );
    let (code, _) = app.stop();
    assert_eq!(code, Some(0));

    let app = App::start(&bed, "zc-echo", &["--tap", "zcnew0", "--ip", &ip]);
    assert!(
        app.banner.contains("via tap zcnew0 (created)"),
        "{}",
        app.banner
    );
    std::thread::sleep(Duration::from_millis(100));
    let err = app.stderr();
    assert!(
        err.contains("the kernel side of TAP zcnew0 has no IPv4 address")
            && err.contains("ip addr add 10.200.17.1/24 dev zcnew0"),
        "{err}"
    );
    let (code, _) = app.stop();
    assert_eq!(code, Some(0));
}

/// AF_XDP on an interface the kernel has an address on, or on the
/// loopback, works but warns.
#[test]
#[ignore = "needs root"]
fn xdp_on_an_interface_with_kernel_addresses_warns() {
    require_root!();
    let bed = VethBed::new(
        "warn",
        18,
        VethOpts {
            server_kernel_addr: true,
            ..VethOpts::default()
        },
    );
    let ip = format!("{}/24", bed.stack_ip());
    for iface in [VETH_SERVER, "lo"] {
        let app = App::start(&bed, "zc-echo", &["--xdp", iface, "--ip", &ip]);
        assert!(app.banner.contains("af_xdp"), "{}", app.banner);
        std::thread::sleep(Duration::from_millis(100));
        let err = app.stderr();
        let want = if iface == "lo" {
            "warning: AF_XDP on the loopback".to_string()
        } else {
            format!("warning: {iface} also has the kernel's address 10.200.18.3/24")
        };
        assert!(err.contains(&want), "{iface}: {err}");
        let (code, _) = app.stop();
        assert_eq!(code, Some(0), "{iface}");
    }
}

/// `--stats` prints a line every second, idle or not, and each line's
/// rates cover its own second: summed, they give the bytes that went by.
#[test]
#[ignore = "needs root"]
fn stats_tick_every_second_with_rates_over_that_second() {
    require_root!();
    let bed = TapBed::new("stat", 19);
    let ip = format!("{}/24", bed.stack_ip());
    let app = App::start(
        &bed,
        "zc-echo",
        &["--tap", &bed.tap, "--ip", &ip, "--stats"],
    );
    std::thread::sleep(Duration::from_millis(2300));
    let idle_lines = app
        .stderr()
        .lines()
        .filter(|l| l.contains(" Gbit/s"))
        .count();
    assert!(
        (2..=3).contains(&idle_lines),
        "{idle_lines} lines in 2.3 s idle"
    );
    // A burst: 32 MiB echoed (in and out), then enough quiet for the
    // second it ended in to be printed.
    let data = random_bytes(32 << 20, 19);
    let want = sha256_hex(&data);
    let addr = format!("{}:7", bed.stack_ip()).parse().unwrap();
    let got = bed.within(move || sha256_hex(&echo_through(addr, data)));
    assert_eq!(got, want);
    std::thread::sleep(Duration::from_millis(1500));
    let err = app.stderr();
    let (code, _) = app.stop();
    assert_eq!(code, Some(0));
    // "zc-echo: rx 0.123 Gbit/s 10.0k pkt/s, tx …": the rx rates.
    let rx_gbit: f64 = err
        .lines()
        .filter_map(|l| l.strip_prefix("zc-echo: rx "))
        .filter_map(|l| l.split(' ').next()?.parse::<f64>().ok())
        .sum();
    let payload_gbit = (32u64 << 20) as f64 * 8.0 / 1e9;
    // Frames carry headers too (a few %); a window of 5 s would give a fifth.
    assert!(
        rx_gbit > 0.95 * payload_gbit && rx_gbit < 1.3 * payload_gbit,
        "rx rates sum to {rx_gbit:.3} Gbit for {payload_gbit:.3} Gbit of payload:\n{err}"
    );
}

/// Ctrl-C stops an app promptly, with --stats and a connection open.
#[test]
#[ignore = "needs root"]
fn ctrl_c_stops_promptly() {
    require_root!();
    let bed = TapBed::new("intr", 20);
    let ip = format!("{}/24", bed.stack_ip());
    for (app, extra) in [
        ("zc-echo", &[][..]),
        ("zc-httpd", &["--root", "/"][..]),
        ("zc-perf", &[][..]),
    ] {
        let mut args = vec!["--tap", &bed.tap, "--ip", &ip, "--stats"];
        args.extend_from_slice(extra);
        if app == "zc-perf" {
            args.insert(0, "server");
        }
        let a = App::start(&bed, app, &args);
        let port = if app == "zc-httpd" {
            80
        } else if app == "zc-perf" {
            5201
        } else {
            7
        };
        let addr: std::net::SocketAddr = format!("{}:{port}", bed.stack_ip()).parse().unwrap();
        // An idle connection stays open while the app is interrupted.
        let conn = bed.within(move || {
            std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect")
        });
        std::thread::sleep(Duration::from_millis(300));
        let t = Instant::now();
        let (code, _) = a.stop();
        let took = t.elapsed();
        drop(conn);
        assert_eq!(code, Some(0), "{app}");
        assert!(took < Duration::from_secs(1), "{app} took {took:?} to stop");
    }
}

/// The documented UDP client line against a server started without
/// --udp: the error says to give the server --udp.
#[test]
#[ignore = "needs root"]
fn udp_client_against_a_tcp_server_says_to_add_udp() {
    require_root!();
    let bed = TapBed::new("udpr", 21);
    let ip = format!("{}/24", bed.stack_ip());
    let app = App::start(&bed, "zc-perf", &["server", "--tap", &bed.tap, "--ip", &ip]);
    let out = bed
        .command(bin("zc-perf").to_str().unwrap())
        .args(["client", "--kernel", "--server", &bed.stack_ip(), "--udp"])
        .args(["--size", "64", "--count", "1000"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("refused the UDP datagrams") && err.contains("with --udp"),
        "{err}"
    );
    let (code, _) = app.stop();
    assert_eq!(code, Some(0));
}

/// `--tx-gso` is for AF_XDP (a TAP has its own offloads, `--tap-offload`),
/// and `--tx-gso-small` only means something with it.
#[test]
fn tx_gso_flags_are_refused_where_they_would_do_nothing() {
    for (args, want) in [
        (
            &["--tap", "zcx", "--tx-gso"][..],
            "'--tap <NAME>' cannot be used with '--tx-gso'",
        ),
        (&["--xdp", "zcx", "--tx-gso-small", "xdp"][..], "--tx-gso"),
        (
            &["--xdp", "zcx", "--tx-gso", "--tx-gso-small", "ring"][..],
            "use packet or xdp",
        ),
    ] {
        let (code, err) = run(&[args, &["--ip", "10.200.0.2/24"][..]].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_one_line(&err);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}

/// `--queues`: the servers run one stack per queue; zc-perf's client, and
/// `--pcap` (one file, one queue), say what to do instead.
#[test]
fn queues_are_refused_where_they_do_not_apply() {
    let dev = ["--tap", "zcx", "--ip", "10.200.0.2/24", "--queues", "2"];
    let (code, err) = run_bin(
        "zc-perf",
        &[&["client", "--server", "10.200.0.1", "--udp"][..], &dev].concat(),
    );
    assert_eq!(code, Some(2), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains("--queues is for the server: a client test is one flow"),
        "{err}"
    );
    let (code, err) = run_bin("zc-perf", &[&["server", "--once"][..], &dev].concat());
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("drop --once and stop the server with Ctrl-C"),
        "{err}"
    );
    let pcap = [&dev[..], &["--pcap", "/tmp/zc-never.pcap"]].concat();
    for (app, pre) in [
        ("zc-echo", &[][..]),
        ("zc-httpd", &["--root", "."][..]),
        ("zc-perf", &["server"][..]),
    ] {
        let (code, err) = run_bin(app, &[pre, &pcap].concat());
        assert_eq!(code, Some(2), "{app}: {err}");
        assert_one_line(&err);
        assert!(
            err.contains(&format!(
                "{app}: --pcap records one queue, --queues 2 opens 2: drop --pcap or --queues (try --help)"
            )),
            "{app}: {err}"
        );
    }
    assert!(!std::path::Path::new("/tmp/zc-never.pcap").exists());
}

/// `--queues N` on an interface with fewer queues: a setup error that
/// names the queues it has and how to get more, before anything is opened
/// (the loopback has one queue).
#[test]
fn queues_beyond_the_device_are_refused() {
    let (code, err) = run(&["--xdp", "lo", "--ip", "10.200.0.2/24", "--queues", "2"]);
    assert_eq!(code, Some(1), "{err}");
    assert_one_line(&err);
    assert!(
        err.contains(
            "zc-echo: --queues 2 needs RX queues 0..1 of lo, which has 1: give it more \
             (a NIC: `ethtool -L lo combined 2`; a veth: create it with `numrxqueues 2 \
             numtxqueues 2`) or lower --queues"
        ),
        "{err}"
    );
}

/// Flags of one device are refused with the other, naming both: before,
/// `--xdp IFACE --tap-offload` was taken and the offload silently ignored.
#[test]
fn flags_of_the_other_device_are_refused() {
    for (args, want) in [
        (
            &["--xdp", "zcx", "--tap-offload"][..],
            "'--xdp <IFACE>' cannot be used with '--tap-offload'",
        ),
        (
            &["--tap", "zct", "--queue", "1"][..],
            "'--tap <NAME>' cannot be used with '--queue <N>'",
        ),
        (
            &["--tap", "zct", "--xdp-mode", "native"][..],
            "'--tap <NAME>' cannot be used with '--xdp-mode <MODE>'",
        ),
    ] {
        let (code, err) = run(&[args, &["--ip", "10.200.0.2/24"][..]].concat());
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert_one_line(&err);
        assert!(err.contains(want), "{args:?}: {err}");
    }
}
