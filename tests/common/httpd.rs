//! zc-httpd in a test bed: the server on TAP or AF_XDP inside its own
//! namespace, clients on the kernel side ([`HttpBed`]), started with its
//! counters in a JSON file ([`start`]) and stopped with its pool checked
//! full ([`stop`]). Used by `tests/httpd.rs` and `tests/hostile.rs`.

use std::net::SocketAddr;
use std::process::Command;

use crate::TempDir;
use crate::netns::{App, Namespace, TapBed, VETH_CLIENT, VETH_SERVER, VethBed};

/// Where zc-httpd runs and where its clients run.
pub trait HttpBed: Namespace {
    /// The device flags for the server (`--tap NAME` or `--xdp IFACE`).
    fn device(&self) -> [&str; 2];
    /// The server's address.
    fn stack_ip(&self) -> String;
    /// A command in the clients' namespace.
    fn client(&self, program: &str) -> Command;
    /// The clients' namespace.
    fn client_ns(&self) -> &str;
    /// The interface on the clients' side that reaches the server (raw
    /// frames sent out of it arrive at the stack).
    fn client_iface(&self) -> &str;
    /// The server's MAC address (`aa:bb:...`).
    fn stack_mac(&self) -> String;
}

impl HttpBed for TapBed {
    fn device(&self) -> [&str; 2] {
        ["--tap", &self.tap]
    }
    fn stack_ip(&self) -> String {
        TapBed::stack_ip(self)
    }
    fn client(&self, program: &str) -> Command {
        self.command(program)
    }
    fn client_ns(&self) -> &str {
        &self.ns
    }
    fn client_iface(&self) -> &str {
        &self.tap
    }
    fn stack_mac(&self) -> String {
        TapBed::stack_mac(self)
    }
}

impl HttpBed for VethBed {
    fn device(&self) -> [&str; 2] {
        ["--xdp", VETH_SERVER]
    }
    fn stack_ip(&self) -> String {
        VethBed::stack_ip(self)
    }
    fn client(&self, program: &str) -> Command {
        self.client_command(program)
    }
    fn client_ns(&self) -> &str {
        &self.client
    }
    fn client_iface(&self) -> &str {
        VETH_CLIENT
    }
    /// On AF_XDP the stack takes the server end's own MAC.
    fn stack_mac(&self) -> String {
        let out = self.server_ip(&["-br", "link", "show", VETH_SERVER]);
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .nth(2)
            .expect("the server end's MAC")
            .to_string()
    }
}

/// Starts zc-httpd in `bed` serving `dir`'s root on port 80, with extra flags.
pub fn start(bed: &impl HttpBed, dir: &TempDir, extra: &[&str]) -> App {
    let ip = format!("{}/24", bed.stack_ip());
    let root = dir.root();
    let json = dir.0.join("stats.json");
    let [dev, name] = bed.device();
    let mut args = vec![
        dev,
        name,
        "--ip",
        &ip,
        "--root",
        root.to_str().unwrap(),
        "--stats-json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let app = App::start(bed, "zc-httpd", &args);
    assert!(app.banner.contains("serving"), "banner: {}", app.banner);
    app
}

/// Stops the server (SIGINT), checks it exited cleanly with its pool full,
/// and returns its final counters (the `--stats-json` file).
pub fn stop(app: App, dir: &TempDir) -> String {
    let (code, out) = app.stop();
    assert_eq!(code, Some(0), "zc-httpd exit code; output: {out}");
    assert!(
        out.contains("zc-httpd: stopped; requests"),
        "summary line: {out}"
    );
    assert!(out.contains("pool 0/"), "pool not full at exit: {out}");
    std::fs::read_to_string(dir.0.join("stats.json")).expect("stats json")
}

/// The server's address and port 80.
pub fn addr(bed: &impl HttpBed) -> SocketAddr {
    format!("{}:80", bed.stack_ip()).parse().unwrap()
}
