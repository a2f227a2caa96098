//! zc-httpd on a TAP device inside its own namespace, with curl and kernel
//! TCP clients on the other side (root only; CI runs these). Each test has
//! its own namespace and /24 (10.200.21–29) and its own document root. The
//! big-file fetches also run over AF_XDP on a veth pair (10.200.61–63).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use zcstack_tests::httpd::{HttpBed, addr, start, stop};
use zcstack_tests::netns::{TapBed, VethBed, VethOpts};
use zcstack_tests::{TempDir, json_num, random_bytes, require_root, sha256_hex};

/// The bytes a file outside the root holds; no response may contain them.
const SECRET: &[u8] = b"SECRET-OUTSIDE-THE-ROOT";

/// One parsed response.
#[derive(Debug)]
struct Resp {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Resp {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads one response (with a body unless it answers HEAD or is a 304);
/// `None` if the connection closed before a status line.
fn read_resp(r: &mut impl BufRead, head_request: bool) -> Option<Resp> {
    let mut line = String::new();
    if r.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let status: u16 = line.split_whitespace().nth(1)?.parse().ok()?;
    let mut headers = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).expect("header line");
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        let (n, v) = l.split_once(':').expect("header has a colon");
        headers.push((n.to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if !head_request && status != 304 {
        let len: usize = resp
            .header("Content-Length")
            .expect("Content-Length")
            .parse()
            .unwrap();
        resp.body = vec![0; len];
        r.read_exact(&mut resp.body).expect("body");
    }
    Some(resp)
}

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(20))).unwrap();
    s
}

/// Sends `raw` on a fresh connection and reads one response.
fn exchange(addr: SocketAddr, raw: &[u8]) -> Resp {
    let mut s = connect(addr);
    s.write_all(raw).expect("send request");
    let head = raw.starts_with(b"HEAD ");
    read_resp(&mut BufReader::new(s), head).expect("a response")
}

/// Fetches a 256 MiB random file with curl in send mode `mode`, over TAP or
/// (`xdp`) AF_XDP on a veth pair; returns the server's counters.
fn big_fetch(tag: &str, net: u8, mode: &str, xdp: bool) -> String {
    if xdp {
        let bed = VethBed::new(tag, net, VethOpts::default());
        big_fetch_on(&bed, tag, mode, &[])
    } else {
        big_fetch_on(&TapBed::new(tag, net), tag, mode, &[])
    }
}

fn big_fetch_on(bed: &impl HttpBed, tag: &str, mode: &str, extra: &[&str]) -> String {
    let dir = TempDir::new(tag);
    let data = random_bytes(256 << 20, tag.len() as u64);
    let want = sha256_hex(&data);
    std::fs::write(dir.root().join("big.bin"), &data).unwrap();
    drop(data);
    let app = start(bed, &dir, &[&["--send-mode", mode], extra].concat());
    let out = dir.0.join("got.bin");
    let url = format!("http://{}/big.bin", bed.stack_ip());
    let t = Instant::now();
    let res = bed
        .client("curl")
        .args(["-sS", "--max-time", "60", "-o", out.to_str().unwrap()])
        .args(["-w", "%{http_code} %{size_download}", &url])
        .output()
        .expect("curl");
    let took = t.elapsed();
    let stdout = String::from_utf8_lossy(&res.stdout).to_string();
    assert!(
        res.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    assert_eq!(stdout, format!("200 {}", 256 << 20));
    let got = std::fs::read(&out).unwrap();
    assert_eq!(got.len(), 256 << 20);
    assert_eq!(sha256_hex(&got), want, "{mode}: bytes differ");
    eprintln!(
        "{mode}: 256 MiB in {took:?} ({:.0} MB/s)",
        (256 << 20) as f64 / took.as_secs_f64() / 1e6
    );
    let json = stop(app, &dir);
    eprintln!("{mode}: server counters {json}");
    assert_eq!(json_num(&json, "requests"), 1.0, "{json}");
    assert_eq!(json_num(&json, "body_bytes"), (256u64 << 20) as f64);
    json
}

fn copy_mode_copies_twice(json: &str) {
    let cpb = json_num(json, "tx_copies_per_byte");
    assert!(
        (1.95..=2.05).contains(&cpb),
        "copy mode copies twice: {json}"
    );
    assert_eq!(json_num(json, "file_bytes_referenced"), 0.0, "{json}");
}

/// By reference on a device that takes no payload slices outside its own
/// memory (AF_XDP): smoltcp copies each segment once, from the file
/// mapping into the frame.
fn by_reference_copies_once(json: &str) {
    let cpb = json_num(json, "tx_copies_per_byte");
    assert!(
        (0.99..=1.05).contains(&cpb),
        "by reference: {cpb} copies per byte: {json}"
    );
    assert_eq!(
        json_num(json, "file_bytes_referenced"),
        (256u64 << 20) as f64,
        "{json}"
    );
    assert_eq!(json_num(json, "file_bytes_copied"), 0.0, "{json}");
}

/// Over TAP the send ring's bytes leave by reference (one `writev` per
/// segment), so only the copy into the ring is left.
fn copy_mode_over_tap_copies_once(json: &str) {
    let cpb = json_num(json, "tx_copies_per_byte");
    assert!((0.99..=1.05).contains(&cpb), "copy mode over TAP: {json}");
    assert!(
        json_num(json, "tcp_tx_payload_ref") >= (256u64 << 20) as f64,
        "{json}"
    );
    assert_eq!(json_num(json, "file_bytes_referenced"), 0.0, "{json}");
}

/// File bytes queued by reference and sent by reference: no CPU copy.
fn sent_by_reference(json: &str) {
    let cpb = json_num(json, "tx_copies_per_byte");
    assert!(cpb <= 0.01, "{cpb} copies per byte: {json}");
    assert_eq!(
        json_num(json, "file_bytes_referenced"),
        (256u64 << 20) as f64,
        "{json}"
    );
    assert!(
        json_num(json, "tcp_tx_payload_ref") >= (256u64 << 20) as f64,
        "{json}"
    );
    assert_eq!(json_num(json, "file_bytes_copied"), 0.0, "{json}");
}

#[test]
#[ignore = "needs root"]
fn big_file_copy_mode() {
    require_root!();
    copy_mode_over_tap_copies_once(&big_fetch("hcopy", 21, "copy", false));
}

/// Send by reference over a TAP with TSO (the default send mode picks it):
/// the 256 MiB arrive SHA-equal, no CPU copy of a file byte.
#[test]
#[ignore = "needs root"]
fn big_file_by_reference_tap_offload() {
    require_root!();
    let bed = TapBed::new("hrefo", 66);
    sent_by_reference(&big_fetch_on(&bed, "hrefo", "auto", &["--tap-offload"]));
}

/// Copy mode over a TAP with TSO: each file byte is copied once, into the
/// send ring, and the ring's bytes leave by reference.
#[test]
#[ignore = "needs root"]
fn big_file_copy_mode_tap_offload() {
    require_root!();
    let bed = TapBed::new("hcopyo", 70);
    copy_mode_over_tap_copies_once(&big_fetch_on(&bed, "hcopyo", "copy", &["--tap-offload"]));
}

#[test]
#[ignore = "needs root"]
fn big_file_by_reference_tap_plain() {
    require_root!();
    let bed = TapBed::new("hrefp", 67);
    sent_by_reference(&big_fetch_on(&bed, "hrefp", "reference", &[]));
}

#[test]
#[ignore = "needs root"]
fn big_file_auto_mode() {
    require_root!();
    // Auto is by reference: no CPU copy over a TAP.
    sent_by_reference(&big_fetch("hauto", 23, "auto", false));
}

#[test]
#[ignore = "needs root"]
fn big_file_copy_mode_af_xdp() {
    require_root!();
    copy_mode_copies_twice(&big_fetch("hxcopy", 61, "copy", true));
}

#[test]
#[ignore = "needs root"]
fn big_file_reference_mode_copies_once_af_xdp() {
    require_root!();
    by_reference_copies_once(&big_fetch("hxref", 62, "reference", true));
}

#[test]
#[ignore = "needs root"]
fn big_file_auto_mode_af_xdp() {
    require_root!();
    by_reference_copies_once(&big_fetch("hxauto", 63, "auto", true));
}

/// AF_XDP with multi-buffer jumbo frames: file bytes by reference are
/// copied once into the frames (the kernel reads only the UMEM); in copy
/// mode twice (into the ring, then into the frames).
#[test]
#[ignore = "needs root"]
fn big_file_af_xdp_mtu_9000_and_65535() {
    require_root!();
    for (tag, net, mtu, mode) in [
        ("hx9k", 68, 9000, "auto"),
        ("hx64k", 69, 65535, "auto"),
        ("hx9kc", 73, 9000, "copy"),
        ("hx64kc", 74, 65535, "copy"),
    ] {
        let bed = VethBed::new(
            tag,
            net,
            VethOpts {
                mtu,
                ..VethOpts::default()
            },
        );
        let json = big_fetch_on(&bed, tag, mode, &[]);
        match mode {
            "copy" => copy_mode_copies_twice(&json),
            _ => by_reference_copies_once(&json),
        }
    }
}

/// Files `f0.bin` … `f{n-1}.bin` of different sizes; returns their bytes.
fn small_files(root: &Path, n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let data = random_bytes(1 + i * 37_813 % 300_000, 1000 + i as u64);
            std::fs::write(root.join(format!("f{i}.bin")), &data).unwrap();
            data
        })
        .collect()
}

#[test]
#[ignore = "needs root"]
fn ranges_pipelining_and_not_modified() {
    require_root!();
    let dir = TempDir::new("hrange");
    let mut files = small_files(&dir.root(), 3);
    // f1 over 64 KiB: its body goes as references to several extents.
    files[1] = random_bytes(300_123, 24);
    std::fs::write(dir.root().join("f1.bin"), &files[1]).unwrap();
    let bed = TapBed::new("hrange", 24);
    // By reference: heads in the ring, bodies at odd file offsets.
    let app = start(&bed, &dir, &["--send-mode", "reference"]);
    let a = addr(&bed);
    let f1 = files[1].clone();
    let len = f1.len();
    let checks = bed.within(move || {
        let get = |extra: &str| {
            exchange(
                a,
                format!("GET /f1.bin HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
            )
        };
        // Single ranges: a-b, a-, -n, and b past the end (clamped).
        for (spec, start, end) in [
            ("100-4195", 100, 4195),
            ("5000-", 5000, len - 1),
            ("-777", len - 777, len - 1),
            ("7-99999999", 7, len - 1),
        ] {
            let r = get(&format!("Range: bytes={spec}\r\n"));
            assert_eq!(r.status, 206, "{spec}");
            assert_eq!(
                r.header("Content-Range"),
                Some(format!("bytes {start}-{end}/{len}").as_str())
            );
            assert!(r.body == f1[start..=end], "{spec}: bytes differ from the file slice");
        }
        let r = get(&format!("Range: bytes={len}-\r\n"));
        assert_eq!(r.status, 416);
        assert_eq!(r.header("Content-Range"), Some(format!("bytes */{len}").as_str()));
        // 304 for the ETag and for a Last-Modified date; 200 for another tag.
        let full = get("");
        assert_eq!(full.status, 200);
        assert!(full.body == f1);
        let etag = full.header("ETag").expect("ETag").to_string();
        let lm = full.header("Last-Modified").expect("Last-Modified").to_string();
        let r = get(&format!("If-None-Match: {etag}\r\n"));
        assert_eq!(r.status, 304);
        assert!(r.body.is_empty());
        assert_eq!(r.header("ETag"), Some(etag.as_str()));
        assert_eq!(get(&format!("If-Modified-Since: {lm}\r\n")).status, 304);
        assert_eq!(get("If-None-Match: \"other\"\r\n").status, 200);
        // Three pipelined requests in one write are answered in order.
        let mut s = connect(a);
        s.write_all(
            b"GET /f2.bin HTTP/1.1\r\nHost: t\r\n\r\nHEAD /f0.bin HTTP/1.1\r\nHost: t\r\n\r\nGET /f1.bin HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let mut r = BufReader::new(s);
        let p1 = read_resp(&mut r, false).expect("first");
        let p2 = read_resp(&mut r, true).expect("second");
        let p3 = read_resp(&mut r, false).expect("third");
        let mut rest = Vec::new();
        r.read_to_end(&mut rest).expect("closed after Connection: close");
        // HTTP/1.0 without keep-alive: one response, then the server closes.
        let mut s = connect(a);
        s.write_all(b"GET /f0.bin HTTP/1.0\r\n\r\n").unwrap();
        let mut r = BufReader::new(s);
        let h10 = read_resp(&mut r, false).expect("1.0 response");
        let mut rest10 = Vec::new();
        r.read_to_end(&mut rest10).expect("closed after an HTTP/1.0 response");
        rest.extend_from_slice(&rest10);
        (p1, p2, p3, h10, rest)
    });
    let (p1, p2, p3, h10, rest) = checks;
    assert!(h10.status == 200 && h10.body == files[0]);
    assert_eq!(h10.header("Connection"), Some("close"));
    assert!(p1.status == 200 && p1.body == files[2]);
    assert_eq!(p2.status, 200);
    assert_eq!(
        p2.header("Content-Length"),
        Some(files[0].len().to_string().as_str())
    );
    assert!(p3.status == 200 && p3.body == files[1]);
    assert_eq!(p3.header("Connection"), Some("close"));
    assert!(rest.is_empty(), "bytes after the last response");
    let json = stop(app, &dir);
    assert!(json_num(&json, "file_bytes_referenced") > 0.0, "{json}");
}

#[test]
#[ignore = "needs root"]
fn hundred_parallel_keepalive_clients() {
    require_root!();
    let dir = TempDir::new("hpar");
    let files = small_files(&dir.root(), 20);
    let hashes: Vec<String> = files.iter().map(|f| sha256_hex(f)).collect();
    let bed = TapBed::new("hpar", 25);
    // Copy mode: 100 rings filled from the files at once.
    let app = start(&bed, &dir, &["--send-mode", "copy"]);
    let a = addr(&bed);
    let bad = bed.within(move || {
        let clients: Vec<_> = (0..100usize)
            .map(|c| {
                let hashes = hashes.clone();
                std::thread::spawn(move || {
                    let mut s = connect(a);
                    let mut r = BufReader::new(s.try_clone().unwrap());
                    let mut bad = 0;
                    for k in 0..10 {
                        let i = (c * 7 + k * 3) % 20;
                        s.write_all(
                            format!("GET /f{i}.bin HTTP/1.1\r\nHost: t\r\n\r\n").as_bytes(),
                        )
                        .unwrap();
                        let resp = read_resp(&mut r, false).expect("response");
                        if resp.status != 200 || sha256_hex(&resp.body) != hashes[i] {
                            bad += 1;
                        }
                    }
                    bad
                })
            })
            .collect();
        clients
            .into_iter()
            .map(|c| c.join().expect("client panicked"))
            .sum::<usize>()
    });
    assert_eq!(bad, 0, "responses with wrong status or bytes");
    let json = stop(app, &dir);
    assert_eq!(json_num(&json, "requests"), 1000.0, "{json}");
    assert_eq!(
        json_num(&json, "connections"),
        100.0,
        "keep-alive: one connection per client"
    );
    assert!(json_num(&json, "file_bytes_copied") > 0.0, "{json}");
}

#[test]
#[ignore = "needs root"]
fn thousand_concurrent_connections() {
    require_root!();
    let dir = TempDir::new("hthou");
    std::fs::write(dir.root().join("index.html"), b"<h1>zc-httpd</h1>\n").unwrap();
    let bed = TapBed::new("hthou", 27);
    let app = start(&bed, &dir, &[]);
    let a = addr(&bed);
    let ok = bed.within(move || {
        let mut conns: Vec<TcpStream> = (0..1000).map(|_| connect(a)).collect();
        for s in &mut conns {
            s.write_all(b"GET / HTTP/1.1\r\nHost: t\r\n\r\n").unwrap();
        }
        conns
            .into_iter()
            .filter(|s| {
                let r = read_resp(&mut BufReader::new(s), false).expect("response");
                r.status == 200 && r.body == b"<h1>zc-httpd</h1>\n"
            })
            .count()
    });
    assert_eq!(ok, 1000);
    let json = stop(app, &dir);
    assert!(json_num(&json, "peak_connections") >= 1000.0, "{json}");
}

#[test]
#[ignore = "needs root"]
fn bad_requests_get_their_status_and_nothing_leaks() {
    require_root!();
    let dir = TempDir::new("hbad");
    let root = dir.root();
    std::fs::write(root.join("ok.txt"), b"fine\n").unwrap();
    std::fs::create_dir(root.join("sub")).unwrap();
    std::fs::write(dir.0.join("secret"), SECRET).unwrap();
    std::os::unix::fs::symlink(dir.0.join("secret"), root.join("link-out")).unwrap();
    std::os::unix::fs::symlink("../secret", root.join("sub/rel-out")).unwrap();
    std::os::unix::fs::symlink(&dir.0, root.join("dir-out")).unwrap();
    let bed = TapBed::new("hbad", 26);
    let app = start(
        &bed,
        &dir,
        &["--header-timeout", "1", "--idle-timeout", "2"],
    );
    let a = addr(&bed);
    let huge = format!(
        "GET /ok.txt HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
        "a".repeat(9000)
    );
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"HELLO\r\n\r\n".to_vec(), 400),
        (b"GET /ok.txt HTTP/1.1\r\n\r\n".to_vec(), 400), // no Host
        (b"GET /ok.txt\0 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (b"BREW /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        (b"DELETE /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 405),
        (huge.into_bytes(), 431),
        (
            b"GET /ok.txt HTTP/1.1\r\nHost: t\r\nContent-Length: 4\r\n\r\nabcd".to_vec(),
            413,
        ),
        (b"GET /nope.txt HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        (b"GET /../secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (
            b"GET /sub/../../secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /%2e%2e/secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /sub/%2E%2E/%2e%2e/secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (
            b"GET /..%2fsecret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET /%00 HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 400),
        (
            b"GET http://t/../secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            400,
        ),
        (b"GET //secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        (b"GET /link-out HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 404),
        (
            b"GET /sub/rel-out HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            404,
        ),
        (
            b"GET /dir-out/secret HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
            404,
        ),
        (b"GET /sub HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 301),
        (b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(), 200),
    ];
    let n = cases.len();
    let (got, timeout_status, idle_closed) = bed.within(move || {
        let got: Vec<(u16, u16, Resp)> = cases
            .into_iter()
            .map(|(raw, want)| (want, 0, exchange(a, &raw)))
            .map(|(want, _, r)| (want, r.status, r))
            .collect();
        // A request head that never completes: 408 after --header-timeout.
        let mut s = connect(a);
        s.write_all(b"GET /ok.txt HTTP/1.1\r\nHo").unwrap();
        let t = Instant::now();
        let r = read_resp(&mut BufReader::new(&s), false).expect("408 response");
        let timeout_status = (r.status, t.elapsed());
        // Heads that arrive in pieces, past the server's first head buffer
        // (1 KiB, grown on demand): one that fits in 8 KiB is served, one
        // that does not is refused.
        let dribbled: Vec<u16> = [7000, 9000]
            .into_iter()
            .map(|pad| {
                let raw = format!(
                    "GET /ok.txt HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n",
                    "b".repeat(pad)
                );
                let mut s = connect(a);
                for piece in raw.as_bytes().chunks(700) {
                    // The server may answer 431 and close before the rest.
                    if s.write_all(piece).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                read_resp(&mut BufReader::new(s), false).map_or(0, |r| r.status)
            })
            .collect();
        assert_eq!(dribbled, [200, 431], "heads sent in 700-byte pieces");
        // An idle keep-alive connection is closed after --idle-timeout.
        let mut s = connect(a);
        s.write_all(b"GET /ok.txt HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        let mut br = BufReader::new(s.try_clone().unwrap());
        assert_eq!(read_resp(&mut br, false).expect("response").status, 200);
        let t = Instant::now();
        let mut rest = Vec::new();
        let closed = br.read_to_end(&mut rest).is_ok() && rest.is_empty();
        (got, timeout_status, (closed, t.elapsed()))
    });
    assert_eq!(got.len(), n);
    for (i, (want, status, r)) in got.iter().enumerate() {
        assert_eq!(status, want, "case {i}: {r:?}");
        assert!(
            !r.body.windows(SECRET.len()).any(|w| w == SECRET),
            "case {i} leaked the secret"
        );
        if *want == 405 {
            assert_eq!(r.header("Allow"), Some("GET, HEAD"));
        }
    }
    assert_eq!(got[19].2.header("Location"), Some("/sub/"));
    assert_eq!(got[20].2.body, b"fine\n");
    assert_eq!(timeout_status.0, 408);
    assert!(
        timeout_status.1 < Duration::from_secs(4),
        "408 after {:?}",
        timeout_status.1
    );
    assert!(idle_closed.0, "idle connection not closed cleanly");
    assert!(
        idle_closed.1 >= Duration::from_millis(1500) && idle_closed.1 < Duration::from_secs(6),
        "idle close after {:?}",
        idle_closed.1
    );
    stop(app, &dir);
}

#[test]
fn setup_and_usage_errors_are_one_line() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(zcstack_tests::netns::bin("zc-httpd"))
            .args(args)
            .output()
            .expect("run zc-httpd");
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(err.trim_end().lines().count(), 1, "{err:?}");
        (out.status.code(), err)
    };
    let dev = ["--tap", "zcx", "--ip", "10.200.0.2/24"];
    let (code, err) = run(&[&dev[..], &["--root", "/nonexistent/zc-www"]].concat());
    assert_eq!(code, Some(1));
    assert!(
        err.starts_with("zc-httpd: document root /nonexistent/zc-www")
            && err.contains("give an existing directory with --root"),
        "{err}"
    );
    let (code, err) = run(&[&dev[..], &["--root", "/", "--send-mode", "fast"]].concat());
    assert_eq!(code, Some(2));
    assert!(
        err.contains("--send-mode") && err.contains("copy, reference, auto"),
        "{err}"
    );
    let (code, err) = run(&dev);
    assert_eq!(code, Some(2));
    assert!(err.contains("--root"), "{err}");
}

#[test]
#[ignore = "needs root"]
fn file_truncated_mid_transfer_then_served_anew() {
    require_root!();
    let dir = TempDir::new("htrunc");
    let path = dir.root().join("t.bin");
    let data = random_bytes(64 << 20, 28);
    std::fs::write(&path, &data).unwrap();
    let bed = TapBed::new("htrunc", 28);
    let app = start(&bed, &dir, &["--send-mode", "reference"]);
    let out = dir.0.join("got.bin");
    // A slow client (4 MiB/s): the transfer is still running when the file shrinks.
    let mut curl = bed
        .command("curl")
        .args(["-sS", "--max-time", "30", "--limit-rate", "4M", "-o"])
        .arg(&out)
        .arg(format!("http://{}/t.bin", bed.stack_ip()))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("curl");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::fs::metadata(&out).map_or(0, |m| m.len()) < 2 << 20 {
        assert!(
            Instant::now() < deadline,
            "curl received under 2 MiB in 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The server holds a read lease: the truncation waits until it lets go
    // (it must not wait out the kernel's 45 s lease-break time).
    let t = Instant::now();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .and_then(|f| f.set_len(1 << 20))
        .expect("truncate");
    let took = t.elapsed();
    assert!(
        took < Duration::from_secs(5),
        "truncate blocked for {took:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(st) = curl.try_wait().unwrap() {
            break st;
        }
        assert!(
            Instant::now() < deadline,
            "curl still running 30 s after the truncation"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let got = std::fs::read(&out).unwrap();
    assert!(
        !status.success(),
        "curl got a complete 64 MiB body from a truncated file"
    );
    assert!(got.len() < 64 << 20);
    assert!(
        got[..] == data[..got.len()],
        "the bytes that arrived are not the file's"
    );
    // The server goes on, and serves the file as it is now.
    let a = addr(&bed);
    let r = bed.within(move || exchange(a, b"GET /t.bin HTTP/1.1\r\nHost: t\r\n\r\n"));
    assert_eq!(r.status, 200);
    assert!(
        r.body == data[..1 << 20],
        "the truncated file's bytes differ"
    );
    stop(app, &dir);
}

#[test]
#[ignore = "needs root"]
fn a_thousand_pipelined_requests_in_order() {
    require_root!();
    let dir = TempDir::new("hpipe");
    // Sizes around 64 KiB, the send ring's and a segment's size.
    let files: Vec<Vec<u8>> = [10_000usize, 70_001, 150_123]
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let d = random_bytes(n, 2900 + i as u64);
            std::fs::write(dir.root().join(format!("p{i}.bin")), &d).unwrap();
            d
        })
        .collect();
    let bed = TapBed::new("hpipe", 29);
    let app = start(&bed, &dir, &["--send-mode", "reference"]);
    let a = addr(&bed);
    // 1000 requests (33 KB) written at once by one thread while this one
    // reads: more than the server's receive ring and head buffer hold.
    let reqs: Vec<u8> = (0..1000)
        .flat_map(|i| format!("GET /p{}.bin HTTP/1.1\r\nHost: t\r\n\r\n", i % 3).into_bytes())
        .collect();
    let sizes = bed.within(move || {
        let s = connect(a);
        let mut w = s.try_clone().unwrap();
        let writer = std::thread::spawn(move || w.write_all(&reqs).expect("pipelined write"));
        let mut r = BufReader::new(s);
        let got: Vec<Resp> = (0..1000)
            .map(|i| read_resp(&mut r, false).unwrap_or_else(|| panic!("response {i}")))
            .collect();
        writer.join().unwrap();
        got
    });
    for (i, r) in sizes.iter().enumerate() {
        assert_eq!(r.status, 200, "response {i}");
        assert!(r.body == files[i % 3], "response {i} is not p{}.bin", i % 3);
    }
    let json = stop(app, &dir);
    assert_eq!(json_num(&json, "requests"), 1000.0, "{json}");
}
