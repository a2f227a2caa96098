//! Network namespaces, TAP devices, veth pairs and app processes for
//! privileged tests.
//!
//! Every name starts with `zc` and every address is in 10.200.0.0/16. A
//! [`TapBed`] deletes its namespace (and with it the TAP device) when dropped,
//! also when the test panics; so does a [`VethBed`] (built by
//! `scripts/netns.sh`) with its two namespaces; an [`App`] is interrupted,
//! then killed, when dropped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use nix::sched::{CloneFlags, setns};

/// Whether this process may create namespaces, TAP devices and veth pairs.
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// First line of every privileged test, which is also marked
/// `#[ignore = "needs root"]`: a run without root reports it as ignored, and
/// `scripts/test.sh` runs it as root with `--include-ignored`. Run without
/// root anyway, it fails saying why instead of passing untested.
#[macro_export]
macro_rules! require_root {
    () => {
        assert!(
            $crate::netns::privileged(),
            "needs root (network namespaces, TAP, veth): run it as root; \
             scripts/test.sh does, with --include-ignored"
        );
    };
}

/// Runs `cmd`, panicking with its stderr if it fails.
pub fn sh(cmd: &[&str]) -> Output {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Where an app runs: something that can start a program inside a namespace.
pub trait Namespace {
    /// A command that runs `program` inside the namespace.
    fn command(&self, program: &str) -> Command;
}

/// Runs `f` on a thread that has joined namespace `ns` (sockets it opens
/// live there); returns its result.
pub fn within_ns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    spawn_in_ns(ns, f)
        .join()
        .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Like [`within_ns`], without waiting: `f` runs on a thread that has
/// joined namespace `ns`; join the handle for its result.
pub fn spawn_in_ns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        setns(&fd, CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
}

/// Starts `tools/fuzz_frames.py` with `python3`, a command in a bed's
/// namespace: `count` seeded garbage frames (random, truncated, lying
/// lengths, garbage TCP headers to `port`, garbage ARP) to `mac` and `ip`
/// out of `iface`. [`frames_sent`] waits for it.
pub fn spawn_fuzz_frames(
    mut python3: Command,
    iface: &str,
    mac: &str,
    ip: &str,
    port: u16,
    count: u32,
    seed: u64,
) -> Child {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tools/fuzz_frames.py");
    python3
        .args([script, iface, mac, ip])
        .args([count.to_string(), seed.to_string(), port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3")
}

/// Waits for a frame sender (`tools/fuzz_frames.py`, `tools/syn_flood.py`)
/// started with its output piped; returns how many frames the kernel
/// accepted (what it printed). Panics with its stderr if it failed.
pub fn frames_sent(child: Child) -> u32 {
    let out = child.wait_with_output().expect("frame sender");
    assert!(
        out.status.success(),
        "frame sender failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("a frame count")
}

fn ns_command(ns: &str, program: &str) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]);
    c
}

fn ping_from(ns: &str, addr: &str, count: u32) -> bool {
    let out = ns_command(ns, "ping")
        .args(["-c", &count.to_string(), "-W", "2", "-i", "0.2", addr])
        .output()
        .expect("ping");
    out.status.success()
}

/// A namespace holding a persistent TAP device whose kernel side has an address.
///
/// Subnet `10.200.N.0/24`: the kernel side is `.1`, the stack should use `.2`.
pub struct TapBed {
    /// Namespace name.
    pub ns: String,
    /// TAP device name (inside the namespace).
    pub tap: String,
    /// Third octet of the subnet.
    pub net: u8,
}

impl TapBed {
    /// Creates namespace `zc<tag><pid>` with TAP `zctap0` on 10.200.`net`.0/24.
    pub fn new(tag: &str, net: u8) -> TapBed {
        let ns = format!("zc{tag}{}", std::process::id());
        // Leftover from a crashed run of this same test process id: remove it.
        let _ = Command::new("ip")
            .args(["netns", "del", &ns])
            .stderr(Stdio::null())
            .status();
        sh(&["ip", "netns", "add", &ns]);
        let bed = TapBed {
            ns,
            tap: "zctap0".into(),
            net,
        };
        bed.ip(&["link", "set", "lo", "up"]);
        bed.ip(&["tuntap", "add", "dev", &bed.tap, "mode", "tap"]);
        bed.ip(&[
            "addr",
            "add",
            &format!("10.200.{net}.1/24"),
            "dev",
            &bed.tap,
        ]);
        bed.ip(&["link", "set", &bed.tap, "up"]);
        bed
    }

    /// `ip ARGS` inside the namespace.
    pub fn ip(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["ip", "netns", "exec", &self.ns, "ip"];
        cmd.extend_from_slice(args);
        sh(&cmd)
    }

    /// The stack's address in this bed.
    pub fn stack_ip(&self) -> String {
        format!("10.200.{}.2", self.net)
    }

    /// The stack's default MAC on this bed's TAP (02:5a, then its address).
    pub fn stack_mac(&self) -> String {
        format!("02:5a:0a:c8:{:02x}:02", self.net)
    }

    /// A command that runs `program` inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        ns_command(&self.ns, program)
    }

    /// Writes `count` seeded garbage frames (`tools/fuzz_frames.py`) to the
    /// stack's default MAC and address from the kernel side of the TAP;
    /// returns how many the kernel accepted.
    pub fn fuzz_frames(&self, count: u32, seed: u64) -> u32 {
        let child = spawn_fuzz_frames(
            self.command("python3"),
            &self.tap,
            &self.stack_mac(),
            &self.stack_ip(),
            7,
            count,
            seed,
        );
        frames_sent(child)
    }

    /// Runs `f` on a thread that has joined this namespace (sockets it opens
    /// live there); returns its result.
    pub fn within<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within_ns(&self.ns, f)
    }

    /// `ping -c N` of `addr` from the kernel side; whether all were answered.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        ping_from(&self.ns, addr, count)
    }
}

impl Namespace for TapBed {
    fn command(&self, program: &str) -> Command {
        ns_command(&self.ns, program)
    }
}

/// Options of a [`VethBed`] (`scripts/netns.sh up … --mtu --offloads --queues`).
#[derive(Clone, Copy, Debug)]
pub struct VethOpts {
    /// MTU of both ends.
    pub mtu: u32,
    /// Kernel offloads (TSO, GSO, GRO, checksums) on both ends.
    pub offloads: bool,
    /// RX/TX queues per end.
    pub queues: u32,
    /// Give the server end a kernel address too, 10.200.N.3/24 (`--server-cidr`):
    /// kernel servers and an AF_XDP stack (at .2) share the bed, as in bench.sh.
    pub server_kernel_addr: bool,
}

impl Default for VethOpts {
    fn default() -> Self {
        VethOpts {
            mtu: 1500,
            offloads: true,
            queues: 1,
            server_kernel_addr: false,
        }
    }
}

/// A server namespace and a client namespace joined by a veth pair, made by
/// `scripts/netns.sh`. The server end `zcsv0` has no kernel address (the
/// stack owns it, over AF_XDP); the client end `zccv0` is 10.200.N.1/24.
pub struct VethBed {
    /// Server namespace (the stack's).
    pub server: String,
    /// Client namespace (kernel peers).
    pub client: String,
    /// Third octet of the subnet.
    pub net: u8,
}

/// The server end of every [`VethBed`].
pub const VETH_SERVER: &str = "zcsv0";
/// The client end of every [`VethBed`].
pub const VETH_CLIENT: &str = "zccv0";

fn netns_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scripts/netns.sh")
}

impl VethBed {
    /// Creates `zc<tag>s<pid>` and `zc<tag>c<pid>` joined by a veth pair on 10.200.`net`.0/24.
    pub fn new(tag: &str, net: u8, opts: VethOpts) -> VethBed {
        let pid = std::process::id();
        let bed = VethBed {
            server: format!("zc{tag}s{pid}"),
            client: format!("zc{tag}c{pid}"),
            net,
        };
        // Leftovers of a crashed run of this same process id: remove them.
        for ns in [&bed.server, &bed.client] {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
        let script = netns_script();
        let (mtu, queues) = (opts.mtu.to_string(), opts.queues.to_string());
        let client_cidr = format!("10.200.{net}.1/24");
        let server_cidr = format!("10.200.{net}.3/24");
        let mut cmd = vec![
            "bash",
            script.to_str().expect("utf-8 path"),
            "up",
            &bed.server,
            &bed.client,
            &client_cidr,
            "--mtu",
            &mtu,
            "--offloads",
            if opts.offloads { "on" } else { "off" },
            "--queues",
            &queues,
        ];
        if opts.server_kernel_addr {
            cmd.extend(["--server-cidr", &server_cidr]);
        }
        sh(&cmd);
        bed
    }

    /// The stack's address in this bed (`.2`; a second stack uses `.3`).
    pub fn stack_ip(&self) -> String {
        format!("10.200.{}.2", self.net)
    }

    /// A command that runs `program` in the client namespace.
    pub fn client_command(&self, program: &str) -> Command {
        ns_command(&self.client, program)
    }

    /// Runs `f` on a thread in the client namespace.
    pub fn within_client<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within_ns(&self.client, f)
    }

    /// Runs `f` on a thread in the server namespace.
    pub fn within_server<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within_ns(&self.server, f)
    }

    /// `ping -c N` of `addr` from the client namespace; whether all were answered.
    pub fn ping(&self, addr: &str, count: u32) -> bool {
        ping_from(&self.client, addr, count)
    }

    /// The client namespace's `TcpInCsumErrors` (`/proc/net/snmp`):
    /// segments its kernel dropped for a bad TCP checksum.
    pub fn client_tcp_in_csum_errors(&self) -> u64 {
        let out = self
            .client_command("cat")
            .arg("/proc/net/snmp")
            .output()
            .expect("cat /proc/net/snmp");
        let text = String::from_utf8_lossy(&out.stdout);
        let mut tcp = text.lines().filter(|l| l.starts_with("Tcp:"));
        let (names, values) = (
            tcp.next().expect("Tcp header"),
            tcp.next().expect("Tcp values"),
        );
        let at = names
            .split_whitespace()
            .position(|n| n == "InCsumErrors")
            .expect("InCsumErrors column");
        values
            .split_whitespace()
            .nth(at)
            .expect("value")
            .parse()
            .expect("number")
    }

    /// `ip ARGS` in the server namespace.
    pub fn server_ip(&self, args: &[&str]) -> Output {
        let mut cmd = vec!["ip", "netns", "exec", &self.server, "ip"];
        cmd.extend_from_slice(args);
        sh(&cmd)
    }
}

impl Namespace for VethBed {
    /// Apps run in the server namespace.
    fn command(&self, program: &str) -> Command {
        ns_command(&self.server, program)
    }
}

impl Drop for VethBed {
    fn drop(&mut self) {
        for ns in [&self.client, &self.server] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

impl Drop for TapBed {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
    }
}

/// Path of one of the workspace's binaries (built by `scripts/test.sh`).
pub fn bin(name: &str) -> PathBuf {
    // scripts/test.sh says where it built them; otherwise they sit beside
    // the test executable's deps/ folder (target/<profile>/).
    let dir = match std::env::var_os("ZC_BIN_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            let exe = std::env::current_exe().expect("current_exe");
            exe.parent()
                .and_then(|p| p.parent())
                .expect("target dir")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the apps first (`cargo build --release --workspace --bins`, as scripts/test.sh does)",
        path.display()
    );
    path
}

/// An app process started inside a namespace.
pub struct App {
    child: Child,
    /// Lines the app printed on stdout after its first line.
    pub lines: mpsc::Receiver<String>,
    /// Its first stdout line (printed once it is ready).
    pub banner: String,
    /// Everything it printed on stderr so far (read on a thread, so a
    /// chatty app never blocks on a full pipe).
    stderr: Arc<Mutex<String>>,
}

impl App {
    /// Starts `name ARGS` inside `bed`'s namespace and waits (≤ 10 s) for its first line.
    pub fn start(bed: &impl Namespace, name: &str, args: &[&str]) -> App {
        Self::spawn(
            bed.command(bin(name).to_str().expect("utf-8 path")),
            name,
            args,
        )
    }

    /// Like [`App::start`], pinned to CPU `cpu` (`taskset -c`).
    pub fn start_pinned(bed: &impl Namespace, cpu: usize, name: &str, args: &[&str]) -> App {
        let mut cmd = bed.command("taskset");
        cmd.args(["-c", &cpu.to_string()])
            .arg(bin(name).to_str().expect("utf-8 path"));
        Self::spawn(cmd, name, args)
    }

    fn spawn(mut cmd: Command, name: &str, args: &[&str]) -> App {
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn app");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = Arc::new(Mutex::new(String::new()));
        let mut err_pipe = child.stderr.take().expect("stderr");
        let err_buf = stderr.clone();
        std::thread::spawn(move || {
            let mut chunk = [0u8; 4096];
            while let Ok(n) = err_pipe.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                let text = String::from_utf8_lossy(&chunk[..n]).into_owned();
                err_buf.lock().expect("stderr buffer").push_str(&text);
            }
        });
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(banner) => App {
                child,
                lines: rx,
                banner,
                stderr,
            },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                // The reader thread drains the rest once the pipe closes.
                std::thread::sleep(Duration::from_millis(100));
                let err = stderr.lock().expect("stderr buffer").clone();
                panic!("{name} did not start: {err}");
            }
        }
    }

    /// Sends SIGINT and waits (≤ 5 s); returns the exit code and what it printed after.
    pub fn stop(mut self) -> (Option<i32>, String) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let deadline = Instant::now() + Duration::from_secs(5);
        let code = loop {
            if let Ok(Some(st)) = self.child.try_wait() {
                break st.code();
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let mut out: Vec<String> = Vec::new();
        while let Ok(l) = self.lines.recv_timeout(Duration::from_millis(200)) {
            out.push(l);
        }
        (code, out.join("\n"))
    }
}

impl App {
    /// What the app has printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// The app's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether the app is still running (it has not exited or died).
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the app with SIGKILL (no clean-up runs in it) and reaps it.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for App {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
