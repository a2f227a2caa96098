//! Request-target → file under the document root, refusing every way out.
//!
//! [`decode`] is pure: the target must be origin-form (`/…`); the query is
//! dropped; percent-escapes are decoded, but an encoded `/` (`%2f`) or NUL
//! (`%00`) is refused, and so is a `..` segment in any spelling (`%2e%2e`
//! decodes to `..` first). [`resolve`] then opens the segments beneath the
//! document root with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)`:
//! the kernel refuses every step out of the root (a `..`, an absolute
//! symlink, a symlink leading out, a `/proc` magic link) while it resolves,
//! so nothing can swap a path between a check and the open, and a symlink
//! leading out reveals nothing (404). The file is opened `O_NONBLOCK`, so a
//! FIFO in the tree cannot block the server (it is not a regular file: 404).
//! A directory is served by its `index.html`; a directory URL without the
//! trailing slash is redirected (301) to the slash form, so relative links
//! inside the index work.

use std::ffi::OsStr;
use std::fs::{File, Metadata};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use super::response::Status;

/// The file served for a directory.
pub const INDEX: &str = "index.html";

/// A decoded, checked request path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UrlPath {
    /// Non-empty segments, percent-decoded, none of them `.` or `..`.
    pub segments: Vec<Vec<u8>>,
    /// The path ended with `/`.
    pub trailing_slash: bool,
    /// The query (after `?`), kept for redirects.
    pub query: Option<String>,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Decodes and checks a request-target (400 for anything refused).
pub fn decode(target: &str) -> Result<UrlPath, Status> {
    let target = target.split('#').next().unwrap_or("");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q.to_string())),
        None => (target, None),
    };
    if !path.starts_with('/') {
        // Absolute-form, authority-form and `*` are not for a file server.
        return Err(Status::BadRequest);
    }
    let raw = path.as_bytes();
    let mut segments = Vec::new();
    for seg in raw.split(|&b| b == b'/') {
        let mut out = Vec::with_capacity(seg.len());
        let mut i = 0;
        while i < seg.len() {
            let b = seg[i];
            if b == b'%' {
                let hi = seg.get(i + 1).copied().and_then(hex);
                let lo = seg.get(i + 2).copied().and_then(hex);
                let (Some(hi), Some(lo)) = (hi, lo) else {
                    return Err(Status::BadRequest);
                };
                let d = hi << 4 | lo;
                if d == b'/' || d == 0 {
                    return Err(Status::BadRequest);
                }
                out.push(d);
                i += 3;
            } else {
                if b == 0 {
                    return Err(Status::BadRequest);
                }
                out.push(b);
                i += 1;
            }
        }
        match out.as_slice() {
            b"" | b"." => {}
            b".." => return Err(Status::BadRequest),
            _ => segments.push(out),
        }
    }
    Ok(UrlPath {
        segments,
        trailing_slash: path.ends_with('/'),
        query,
    })
}

/// Percent-encodes a segment for a `Location` header.
fn encode_segment(seg: &[u8], out: &mut String) {
    for &b in seg {
        if b.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=:@".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

impl UrlPath {
    /// The slash form of this path (for a directory's redirect), re-encoded
    /// from the checked segments, so it always starts with exactly one `/`.
    pub fn with_slash(&self) -> String {
        let mut s = String::from("/");
        for seg in &self.segments {
            encode_segment(seg, &mut s);
            s.push('/');
        }
        if let Some(q) = &self.query {
            s.push('?');
            // httparse lets bytes from 0x80 up (obs-text) into the
            // request-target: escape them, a Location is a URI (RFC 9110
            // §10.2.2, RFC 3986 §2.1). It refuses controls and spaces.
            for &b in q.as_bytes() {
                if b.is_ascii_graphic() {
                    s.push(b as char);
                } else {
                    s.push_str(&format!("%{b:02X}"));
                }
            }
        }
        s
    }
}

/// The document root, held open: every file is opened beneath it.
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    dir: OwnedFd,
}

impl Root {
    /// Opens directory `path` (canonical, for messages and file names) as
    /// the root. Fails with the reason if it is not a directory, or if the
    /// kernel has no `openat2` (Linux before 5.6).
    pub fn open(path: &Path) -> io::Result<Root> {
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let root = Root {
            path: path.to_path_buf(),
            dir,
        };
        root.open_beneath(Path::new("."))?;
        Ok(root)
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` for reading beneath the root; the kernel refuses any
    /// step out of it (`EXDEV`), and magic links (`ELOOP`).
    fn open_beneath(&self, rel: &Path) -> io::Result<File> {
        let fd = rustix::fs::openat2(
            &self.dir,
            rel,
            OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_MAGICLINKS,
        )?;
        Ok(File::from(fd))
    }
}

/// What a path resolves to.
#[derive(Debug)]
pub enum Found {
    /// A regular file inside the root: open, its path (under the root, as
    /// asked for, for its name) and its metadata.
    File(File, PathBuf, Metadata),
    /// A directory asked for without its trailing slash: redirect here.
    Redirect(String),
}

/// Opens `rel` beneath `root` with its metadata; 404 for anything missing
/// or outside.
fn open_stat(root: &Root, rel: &Path) -> Result<(File, Metadata), Status> {
    let rel = if rel.as_os_str().is_empty() {
        Path::new(".")
    } else {
        rel
    };
    let f = root.open_beneath(rel).map_err(|_| Status::NotFound)?;
    let m = f.metadata().map_err(|_| Status::NotFound)?;
    Ok((f, m))
}

/// Resolves `url` under `root`. 404 for anything missing, outside the root,
/// or not a regular file.
pub fn resolve(root: &Root, url: &UrlPath) -> Result<Found, Status> {
    let mut rel = PathBuf::new();
    for seg in &url.segments {
        rel.push(OsStr::from_bytes(seg));
    }
    let (mut file, mut meta) = open_stat(root, &rel)?;
    if meta.is_dir() {
        if !url.trailing_slash && !url.segments.is_empty() {
            return Ok(Found::Redirect(url.with_slash()));
        }
        rel.push(INDEX);
        (file, meta) = open_stat(root, &rel)?;
    } else if url.trailing_slash {
        return Err(Status::NotFound);
    }
    if !meta.is_file() {
        return Err(Status::NotFound);
    }
    Ok(Found::File(file, root.path.join(rel), meta))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn segs(t: &str) -> Vec<String> {
        decode(t)
            .unwrap()
            .segments
            .into_iter()
            .map(|s| String::from_utf8(s).unwrap())
            .collect()
    }

    #[test]
    fn decoding() {
        assert_eq!(segs("/"), Vec::<String>::new());
        assert_eq!(segs("/a/b.txt"), ["a", "b.txt"]);
        assert_eq!(segs("//a/./b//"), ["a", "b"]);
        assert_eq!(segs("/a%20b/%41?x=1"), ["a b", "A"]);
        assert_eq!(segs("/caf%C3%A9"), ["café"]);
        assert_eq!(segs("/a..b/.hidden"), ["a..b", ".hidden"]);
        let u = decode("/d?q=1").unwrap();
        assert_eq!(u.query.as_deref(), Some("q=1"));
        assert!(!u.trailing_slash);
        assert!(decode("/d/").unwrap().trailing_slash);
    }

    #[test]
    fn traversal_refused() {
        for t in [
            "/../secret",
            "/a/../../secret",
            "/..",
            "/%2e%2e/secret",
            "/%2E%2E/secret",
            "/.%2e/secret",
            "/a%2f..%2fsecret",
            "/a%2F..",
            "/%00",
            "/a%0",
            "/a%zz",
            "http://host/a",
            "*",
            "secret",
            "",
        ] {
            assert_eq!(decode(t), Err(Status::BadRequest), "{t:?}");
        }
    }

    #[test]
    fn redirect_location() {
        assert_eq!(decode("/a%20b").unwrap().with_slash(), "/a%20b/");
        assert_eq!(
            decode("//evil.example").unwrap().with_slash(),
            "/evil.example/"
        );
        assert_eq!(decode("/d?x=1").unwrap().with_slash(), "/d/?x=1");
        // Non-ASCII in the query is escaped (found by fuzzing: it went
        // into the Location header raw).
        assert_eq!(
            decode("/d?q=caf\u{e9}&a=%41").unwrap().with_slash(),
            "/d/?q=caf%C3%A9&a=%41"
        );
    }

    /// A fresh directory under the system temp dir, removed on drop.
    pub(crate) struct TempDir(pub PathBuf);
    impl TempDir {
        pub(crate) fn new(tag: &str) -> TempDir {
            use std::sync::atomic::{AtomicU32, Ordering};
            static N: AtomicU32 = AtomicU32::new(0);
            let p = std::env::temp_dir().join(format!(
                "zc-httpd-{tag}-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::Relaxed)
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p.canonicalize().unwrap())
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    /// `base/root` with a file, a directory with and without an index, a
    /// symlink inside, and symlinks to `base/secret` outside.
    pub(crate) fn tree() -> (TempDir, PathBuf) {
        let t = TempDir::new("path");
        let root = t.0.join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::write(root.join("a.txt"), b"hello").unwrap();
        std::fs::write(root.join("d/index.html"), b"<p>d</p>").unwrap();
        std::fs::write(t.0.join("secret"), b"SECRET").unwrap();
        std::os::unix::fs::symlink(t.0.join("secret"), root.join("out")).unwrap();
        std::os::unix::fs::symlink("../secret", root.join("out2")).unwrap();
        std::os::unix::fs::symlink(&t.0, root.join("up")).unwrap();
        std::os::unix::fs::symlink("a.txt", root.join("in")).unwrap();
        // An absolute symlink, even to a file inside the root, is refused
        // (RESOLVE_BENEATH), and so is a magic link.
        std::os::unix::fs::symlink(root.join("a.txt"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("/proc/self/root/etc/hostname", root.join("magic")).unwrap();
        nix::unistd::mkfifo(&root.join("fifo"), nix::sys::stat::Mode::S_IRUSR).unwrap();
        (t, root)
    }

    fn res(root: &Path, target: &str) -> Result<Found, Status> {
        resolve(&Root::open(root).unwrap(), &decode(target)?)
    }

    #[test]
    fn resolving() {
        use std::io::Read;
        let (_t, root) = tree();
        let file = |t: &str| match res(&root, t) {
            Ok(Found::File(mut f, p, m)) => {
                let mut body = String::new();
                f.read_to_string(&mut body).unwrap();
                (p.strip_prefix(&root).unwrap().to_path_buf(), m.len(), body)
            }
            other => panic!("{t}: {other:?}"),
        };
        let f = |p: &str, len, body: &str| (PathBuf::from(p), len, body.to_string());
        assert_eq!(file("/a.txt"), f("a.txt", 5, "hello"));
        assert_eq!(file("/in"), f("in", 5, "hello"));
        assert_eq!(file("/d/"), f("d/index.html", 8, "<p>d</p>"));
        assert!(matches!(res(&root, "/d"), Ok(Found::Redirect(l)) if l == "/d/"));
        for t in [
            "/missing",
            "/empty/",
            "/a.txt/",
            "/out",
            "/out2",
            "/up/secret",
            "/abs",
            "/magic",
            "/fifo",
            "/",
        ] {
            assert!(matches!(res(&root, t), Err(Status::NotFound)), "{t}");
        }
        std::fs::write(root.join("index.html"), b"top").unwrap();
        assert_eq!(file("/"), f("index.html", 3, "top"));
    }
}
