//! zc-httpd's request handling: head parsing, path decoding, ranges,
//! conditionals, and the reply decided for a small document tree.
//!
//! Input: a 16-byte prefix, then the bytes a client sent.
//!
//! | bytes | meaning |
//! |---|---|
//! | 0..8 | a file length for `range::parse` (u64, little-endian) |
//! | 8..10 | where to cut the request to check a prefix parse (u16) |
//! | 10..14 | a modification time in seconds for the validators (u32) |
//! | 14 | an inode number (u8) |
//! | 15 | bit 0: also decide the reply for the document tree |
//!
//! Promises checked: nothing panics; a complete head parses the same from
//! its own bytes, and every prefix of it asks for more bytes (a request
//! split across segments is not refused); a decoded path has no empty,
//! `.` or `..` segment and no `/` or NUL inside one, and its redirect
//! location starts with exactly one `/`, holds no control character and
//! decodes to the same path; a range lies inside the file; validators match
//! themselves; a reply's head has no stray CR or LF, says the status it
//! has, and a file body is a regular file inside the root (never the
//! secret next to it, whatever the symlinks), within the file's length.

use std::cell::RefCell;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use zcstack_apps::http::cond::Validators;
use zcstack_apps::http::path::{self, Root};
use zcstack_apps::http::range::{self, ByteRange};
use zcstack_apps::http::request::{self, MAX_HEAD, Method};
use zcstack_apps::http::serve::{self, Reply};

const DATE: &str = "Sun, 22 Nov 2026 01:00:00 GMT";

/// A document tree in a fresh temporary directory, removed on drop:
/// `base/root` holds files, a directory with an index, symlinks inside and
/// symlinks leading out to `base/secret`.
pub struct HttpBed {
    base: PathBuf,
    root: Root,
    /// (device, inode) of every regular file inside the root.
    inside: Vec<(u64, u64)>,
}

impl HttpBed {
    /// Creates the tree.
    pub fn new() -> HttpBed {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let base = std::env::temp_dir().join(format!(
            "zc-fuzz-http-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let r = base.join("root");
        std::fs::create_dir_all(r.join("d/sub")).expect("temp dir");
        std::fs::create_dir_all(r.join("empty")).expect("temp dir");
        let files: [(&str, Vec<u8>); 5] = [
            ("a.txt", b"hello".to_vec()),
            ("big.bin", (0..10_000u32).map(|i| (i * 7) as u8).collect()),
            ("d/index.html", b"<p>d</p>".to_vec()),
            ("sp ace%.txt", b"x".to_vec()),
            ("zero", Vec::new()),
        ];
        for (name, body) in &files {
            std::fs::write(r.join(name), body).expect("write");
        }
        std::fs::write(base.join("secret"), b"SECRET").expect("write");
        let link = |to: &Path, at: &str| std::os::unix::fs::symlink(to, r.join(at)).expect("link");
        link(&base.join("secret"), "out");
        link(Path::new("../secret"), "out2");
        link(&base, "up");
        link(Path::new("a.txt"), "in");
        link(&r.join("a.txt"), "abs");
        link(Path::new("/proc/self/root/etc/hostname"), "magic");
        nix::unistd::mkfifo(&r.join("fifo"), nix::sys::stat::Mode::S_IRUSR).expect("fifo");
        let inside = files
            .iter()
            .map(|(n, _)| {
                let m = std::fs::metadata(r.join(n)).expect("stat");
                (m.dev(), m.ino())
            })
            .collect();
        let root = Root::open(&r.canonicalize().expect("root")).expect("root");
        HttpBed { base, root, inside }
    }

    /// Runs one input against this tree.
    pub fn run(&self, data: &[u8]) {
        if data.len() < 16 {
            return;
        }
        let (p, buf) = data.split_at(16);
        let total = u64::from_le_bytes(p[0..8].try_into().unwrap());
        let split = usize::from(u16::from_le_bytes([p[8], p[9]]));
        let mtime = u64::from(u32::from_le_bytes(p[10..14].try_into().unwrap()));
        let ino = u64::from(p[14]);
        let respond = p[15] & 1 != 0;

        // httparse skips empty lines before the request line (RFC 9112 §2.2).
        let line = &buf[buf
            .iter()
            .position(|&b| b != b'\r' && b != b'\n')
            .unwrap_or(buf.len())..];
        let parsed = request::parse(buf);
        let Ok(Some((req, head_len))) = parsed else {
            if let Err(r) = parsed
                && r.head_method
            {
                assert!(line.starts_with(b"HEAD "), "HEAD refusal for {buf:?}");
            }
            if let Ok(None) = parsed {
                assert!(buf.len() < MAX_HEAD, "a full-size head still partial");
            }
            return;
        };
        assert!(head_len <= buf.len() && head_len <= MAX_HEAD);
        assert_eq!(
            request::parse(&buf[..head_len]),
            Ok(Some((req.clone(), head_len))),
            "the head parses the same from its own bytes"
        );
        let cut = split % head_len;
        assert_eq!(
            request::parse(&buf[..cut]),
            Ok(None),
            "a prefix of {cut} bytes of a good head must ask for more"
        );
        let method = if line.starts_with(b"GET ") {
            Method::Get
        } else if line.starts_with(b"HEAD ") {
            Method::Head
        } else {
            Method::Other
        };
        assert_eq!(req.method, method, "{buf:?}");

        if let Ok(u) = path::decode(&req.target) {
            for seg in &u.segments {
                assert!(
                    !matches!(seg.as_slice(), b"" | b"." | b".."),
                    "segment {seg:?} of {:?}",
                    req.target
                );
                assert!(
                    !seg.contains(&b'/') && !seg.contains(&0),
                    "segment {seg:?} of {:?}",
                    req.target
                );
            }
            let loc = u.with_slash();
            assert!(
                loc.starts_with('/') && !loc.starts_with("//"),
                "redirect {loc:?}"
            );
            assert!(
                loc.bytes().all(|b| b.is_ascii_graphic()),
                "redirect {loc:?} holds a control character or space"
            );
            let back = path::decode(&loc).expect("a redirect location decodes");
            assert_eq!(back.segments, u.segments, "redirect {loc:?}");
            assert!(back.trailing_slash);
        }

        match range::parse(req.range.as_deref(), total) {
            ByteRange::Part { start, len } => {
                assert!(
                    len >= 1 && start < total && len <= total - start,
                    "{start}+{len} of {total}"
                );
            }
            ByteRange::Full => {}
            ByteRange::Unsatisfiable => assert!(req.range.is_some()),
        }
        let v = Validators::new(total, UNIX_EPOCH + Duration::from_secs(mtime), ino);
        let not_modified = v.not_modified(&req);
        if req.if_none_match.as_deref() == Some(v.etag.as_str()) {
            assert!(not_modified, "If-None-Match with the ETag itself");
        }
        if req.if_none_match.is_none() && req.if_modified_since.as_deref() == Some(&v.last_modified)
        {
            assert!(not_modified, "If-Modified-Since with Last-Modified itself");
        }
        let _ = v.range_allowed(req.if_range.as_deref());
        assert!(v.range_allowed(Some(&v.etag)));
        assert!(v.range_allowed(Some(&v.last_modified)));

        if respond {
            self.check_reply(&req, serve::respond(&req, &self.root, DATE));
        }
    }

    fn check_reply(&self, req: &request::Request, reply: Reply) {
        let status = reply.status();
        if let Reply::File { body, .. } = &reply {
            let m = body.file.as_ref().expect("file").metadata().expect("fstat");
            assert!(m.is_file());
            assert!(
                self.inside.contains(&(m.dev(), m.ino())),
                "{:?} served a file outside the root: {:?}",
                req.target,
                body.path
            );
            assert!(body.len >= 1 && body.start + body.len <= m.len());
        }
        let bytes = reply.into_bytes();
        let want = format!("HTTP/1.1 {} {}\r\n", status.code(), status.reason());
        assert!(bytes.starts_with(want.as_bytes()), "{bytes:?}");
        let end = bytes
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a head ends with an empty line");
        for line in bytes[..end].split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            assert!(
                !line.contains(&b'\r') && !line.is_empty(),
                "a stray CR or LF in the head of {:?}: {:?}",
                req.target,
                String::from_utf8_lossy(&bytes[..end])
            );
        }
    }
}

impl Default for HttpBed {
    fn default() -> Self {
        HttpBed::new()
    }
}

impl Drop for HttpBed {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

thread_local! {
    static BED: RefCell<Option<HttpBed>> = const { RefCell::new(None) };
}

/// Runs one input against a tree made once per thread (removed when the
/// thread ends).
pub fn run(data: &[u8]) {
    BED.with(|b| b.borrow_mut().get_or_insert_with(HttpBed::new).run(data));
}
