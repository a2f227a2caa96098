//! Sending file ranges on TCP connections: by reference, or copied into the
//! send ring.
//!
//! [`Stack::tcp_send_file`](crate::Stack::tcp_send_file) queues a range of a
//! [`MappedFile`]; every poll moves queued bytes into the sockets:
//!
//! - [`SendMode::Reference`] (the default, [`SendMode::Auto`]): the socket's
//!   send buffer holds counted references to the file mapping (smoltcp
//!   patch 20), up to the send buffer's size per connection, no copy and no
//!   syscall. A device that takes payload slices (TAP, AF_XDP with
//!   `--tx-gso`) sends them from the mapping with no CPU copy; any other
//!   gets each segment copied once into its frame (smoltcp's emit).
//! - [`SendMode::Copy`]: inside smoltcp's `send` closure, one copy from the
//!   file mapping straight into the ring; then the ring's bytes go as any
//!   the application wrote.
//!
//! Truncation safety: [`MappedFile::open`] takes a read lease. When another
//! process truncates or opens the file for writing, the kernel signals the
//! process and holds the truncation back until the lease is released; the
//! poll loop then copies the bytes sockets still send by reference out of
//! the file, stops reading it, lets each affected connection send what it
//! holds and closes it (FIN), unmaps the file and releases the lease. Where
//! no lease can be had (the file is open for writing elsewhere, or we do not
//! own it), transfers `pread` into the ring, which cannot fault; a transfer
//! that finds the file shorter than promised resets its connection.
//!
//! The poll loop does the work (the file sender, submodule `transfer`,
//! which also keeps each TCP socket's send side): no syscall per packet;
//! one `pread` per ring fill on the fallback path. The `unsafe` code (the
//! file mapping, fcntl, the signal handler, the socket set with the ring
//! mappings it borrows, giving idle ring pages back) is all in the `map`
//! submodule, with the invariants that make it sound.
//!
//! The submodules sit at two levels of the crate (see the crate doc):
//! `map` and this module import nothing of the stack; `transfer` imports
//! the TCP table and the memory accounting, which import `map`.

mod map;
pub(crate) mod transfer;

use std::fmt;
use std::fs::{File, Metadata};
use std::io;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};

use smoltcp::socket::tcp::TxSource;

pub use map::lease_signal;
pub(crate) use map::{PAGE, SocketStore};

/// How file bytes get into a TCP socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SendMode {
    /// One CPU copy from the file mapping into the ring; then the ring's
    /// bytes are sent as any the application wrote.
    Copy,
    /// Queue the file's bytes in the socket by reference (smoltcp patch
    /// 20): nothing is copied into the ring; a device that takes payload
    /// slices (TAP, AF_XDP with `--tx-gso`) sends them from the file
    /// mapping with no CPU copy, any other gets them copied once into its
    /// frames. Files without a lease are `pread` into the ring as in copy
    /// mode.
    Reference,
    /// [`Reference`](SendMode::Reference): never more copies than copy
    /// mode, and no ring memory for the file's bytes.
    #[default]
    Auto,
}

impl FromStr for SendMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "copy" => Ok(SendMode::Copy),
            "auto" => Ok(SendMode::Auto),
            "reference" | "ref" => Ok(SendMode::Reference),
            "remap" => Err(
                "send mode 'remap' is gone: files go by reference now (no copy on TAP \
                 and with --tx-gso, one elsewhere); use reference, copy or auto"
                    .to_string(),
            ),
            _ => Err(format!(
                "send mode '{s}' is not one of copy, reference, auto"
            )),
        }
    }
}

impl fmt::Display for SendMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SendMode::Copy => "copy",
            SendMode::Auto => "auto",
            SendMode::Reference => "reference",
        })
    }
}

/// Every file that holds a lease, so a lease break is handled even for a
/// file no transfer is using right now.
static LEASED: Mutex<Vec<Weak<MappedFile>>> = Mutex::new(Vec::new());

/// A regular file mapped read-only, shared by every transfer that sends it,
/// protected by a read lease where one can be taken.
///
/// Keep it open (e.g. in a cache) as long as it is served; the lease stops
/// nobody: a writer or truncator waits only the milliseconds the stack needs
/// to copy out the bytes it still sends by reference.
pub struct MappedFile {
    path: PathBuf,
    meta: Metadata,
    len: u64,
    /// The mapping; `Some` only while the lease is held. Declared before
    /// `file` so it is unmapped before the descriptor (and lease) goes.
    map: RwLock<Option<Arc<map::FileMap>>>,
    /// The lease is held (the mapping may be read).
    leased: AtomicBool,
    /// The lease is being broken: no new reads, release when `users` is 0.
    breaking: AtomicBool,
    /// Transfers and references (in any stack) that read this file's pages.
    users: AtomicUsize,
    file: File,
}

impl fmt::Debug for MappedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MappedFile")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("leased", &self.leased.load(Ordering::Relaxed))
            .finish()
    }
}

impl MappedFile {
    /// Opens and maps a regular file and takes a read lease on it. Without a
    /// lease (the file is open for writing elsewhere, or owned by another
    /// user and no CAP_LEASE) it still opens: transfers then use `pread`.
    pub fn open(path: &Path) -> io::Result<Arc<MappedFile>> {
        let file = File::open(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot open {}: {e} (check the path and its permissions)",
                    path.display()
                ),
            )
        })?;
        MappedFile::from_file(file, path)
    }

    /// Like [`MappedFile::open`], for a file the caller opened itself (e.g.
    /// with `openat2` beneath a directory, so nothing can swap the path in
    /// between); `path` names it in messages and [`MappedFile::path`].
    pub fn from_file(file: File, path: &Path) -> io::Result<Arc<MappedFile>> {
        let what = |e: io::Error, doing: &str| {
            io::Error::new(
                e.kind(),
                format!(
                    "{doing} {}: {e} (check the path and its permissions)",
                    path.display()
                ),
            )
        };
        let meta = file.metadata().map_err(|e| what(e, "cannot stat"))?;
        if !meta.is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} is not a regular file: only regular files can be sent",
                    path.display()
                ),
            ));
        }
        let len = meta.len();
        let mut map = None;
        let leased = match map::take_lease(&file) {
            Ok(()) => {
                if len > 0 {
                    let n = usize::try_from(len).map_err(|_| {
                        io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!("{} is too large to map", path.display()),
                        )
                    })?;
                    match map::FileMap::new(&file, n) {
                        Ok(m) => map = Some(Arc::new(m)),
                        Err(e) => {
                            map::release_lease(&file);
                            return Err(what(e, "cannot map"));
                        }
                    }
                }
                true
            }
            // EAGAIN: open for writing elsewhere; EACCES: not ours. Use pread.
            Err(_) => false,
        };
        let f = Arc::new(MappedFile {
            path: path.to_owned(),
            meta,
            len,
            map: RwLock::new(map),
            leased: AtomicBool::new(leased),
            breaking: AtomicBool::new(false),
            users: AtomicUsize::new(0),
            file,
        });
        if leased {
            let mut reg = LEASED.lock().unwrap_or_else(|e| e.into_inner());
            reg.retain(|w| w.strong_count() > 0);
            reg.push(Arc::downgrade(&f));
        }
        Ok(f)
    }

    /// Length in bytes when opened.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the file was empty when opened.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The file's metadata when opened (for Last-Modified / ETag).
    pub fn metadata(&self) -> &Metadata {
        &self.meta
    }

    /// The path it was opened with.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether the file is protected by a read lease right now (mapped, can
    /// be sent by reference or copied from the mapping). `false`: transfers
    /// `pread`.
    pub fn is_leased(&self) -> bool {
        self.leased.load(Ordering::Acquire) && !self.breaking.load(Ordering::Acquire)
    }

    fn is_breaking(&self) -> bool {
        self.breaking.load(Ordering::Acquire)
    }

    /// Checks the lease after a lease-break signal; returns whether this
    /// call found it breaking (first to notice).
    fn check_break(&self) -> bool {
        if !self.leased.load(Ordering::Acquire) || self.is_breaking() {
            return false;
        }
        if !map::lease_breaking(&self.file) {
            return false;
        }
        let first = !self.breaking.swap(true, Ordering::AcqRel);
        self.release_if_unused();
        first
    }

    /// Unmaps the file and releases the lease once no transfer or reference
    /// uses its pages.
    fn release_if_unused(&self) {
        if !self.is_breaking() || self.users.load(Ordering::Acquire) != 0 {
            return;
        }
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if self.leased.swap(false, Ordering::AcqRel) {
            *map = None;
            map::release_lease(&self.file);
        }
    }

    /// Copies file bytes at `off` into `dst` from the mapping (`Copy`
    /// source) or with `pread` (no lease). Returns bytes copied and whether
    /// the mapping was used; `Ok(0)` for a non-empty `dst` means the file
    /// ended early.
    fn copy_to(&self, dst: &mut [u8], off: u64) -> io::Result<(usize, bool)> {
        if self.is_leased() {
            let map = self.map.read().unwrap_or_else(|e| e.into_inner());
            if let Some(m) = map.as_ref() {
                let b = m.bytes();
                let start = (off as usize).min(b.len());
                let n = dst.len().min(b.len() - start);
                dst[..n].copy_from_slice(&b[start..start + n]);
                return Ok((n, true));
            }
        }
        use std::os::unix::fs::FileExt;
        loop {
            match self.file.read_at(dst, off) {
                Ok(n) => return Ok((n, false)),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

impl Drop for MappedFile {
    fn drop(&mut self) {
        let map = self.map.get_mut().unwrap_or_else(|e| e.into_inner());
        *map = None;
        if *self.leased.get_mut() {
            map::release_lease(&self.file);
        }
    }
}

/// File bytes a TCP socket sends by reference (smoltcp's `TxRef`): the
/// mapping, and a use of the file that keeps its lease (and so its pages
/// readable) until every reference is acknowledged or replaced.
struct FileSource {
    map: Arc<map::FileMap>,
    _use: FileUse,
}

impl TxSource for FileSource {
    fn bytes(&self) -> &[u8] {
        self.map.bytes()
    }
}

impl MappedFile {
    /// The file as a source of send-by-reference extents, while it is
    /// leased and mapped; `None` otherwise (then it is copied or `pread`).
    fn tx_source(self: &Arc<Self>) -> Option<Arc<dyn TxSource>> {
        if !self.is_leased() {
            return None;
        }
        let map = self.map.read().unwrap_or_else(|e| e.into_inner());
        let map = map.as_ref()?.clone();
        Some(Arc::new(FileSource {
            map,
            _use: FileUse::new(self),
        }))
    }
}

/// A counted use of a file's pages: while any exists, a broken lease is not
/// released (so those pages stay readable).
pub(crate) struct FileUse(Arc<MappedFile>);

impl FileUse {
    pub fn new(f: &Arc<MappedFile>) -> FileUse {
        f.users.fetch_add(1, Ordering::AcqRel);
        FileUse(f.clone())
    }
    pub fn file(&self) -> &Arc<MappedFile> {
        &self.0
    }
}

impl Clone for FileUse {
    fn clone(&self) -> Self {
        FileUse::new(&self.0)
    }
}

impl Drop for FileUse {
    fn drop(&mut self) {
        self.0.users.fetch_sub(1, Ordering::AcqRel);
        self.0.release_if_unused();
    }
}

/// After a lease-break signal: checks every leased file; returns how many
/// this call found breaking. Files nobody uses are released at once.
pub(crate) fn check_lease_breaks() -> u64 {
    let files: Vec<Arc<MappedFile>> = {
        let mut reg = LEASED.lock().unwrap_or_else(|e| e.into_inner());
        reg.retain(|w| {
            w.upgrade()
                .is_some_and(|f| f.leased.load(Ordering::Acquire))
        });
        reg.iter().filter_map(Weak::upgrade).collect()
    };
    files.iter().filter(|f| f.check_break()).count() as u64
}

pub(crate) use map::lease_signals;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn send_mode_parses_and_prints() {
        for m in [SendMode::Copy, SendMode::Reference, SendMode::Auto] {
            assert_eq!(m.to_string().parse::<SendMode>(), Ok(m));
        }
        assert_eq!(SendMode::default(), SendMode::Auto);
        assert_eq!(
            "zero".parse::<SendMode>().unwrap_err(),
            "send mode 'zero' is not one of copy, reference, auto"
        );
        assert!(
            "remap"
                .parse::<SendMode>()
                .unwrap_err()
                .starts_with("send mode 'remap' is gone")
        );
    }

    /// A truncator is held back while a transfer or ring still uses the
    /// file's pages, and let go the moment the last one is gone.
    #[test]
    fn lease_is_released_when_the_last_user_goes() {
        let path = std::env::temp_dir().join(format!("zcstack-lease-{}", std::process::id()));
        std::fs::write(&path, vec![7u8; 3 * PAGE]).unwrap();
        let f = MappedFile::open(&path).unwrap();
        assert!(f.is_leased());
        let user = FileUse::new(&f);
        let seen = lease_signals();
        let mut truncator = std::process::Command::new("sh")
            .args(["-c", ": > \"$0\""])
            .arg(&path)
            .spawn()
            .unwrap();
        let t = std::time::Instant::now();
        while lease_signals() == seen {
            assert!(t.elapsed().as_secs() < 5, "no lease-break signal");
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        // Another test's stack, polling in parallel, may handle the break
        // first (the registry is process-wide): either way it is handled.
        check_lease_breaks();
        assert!(!f.is_leased());
        std::thread::sleep(std::time::Duration::from_millis(50));
        assert!(truncator.try_wait().unwrap().is_none(), "held while in use");
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 3 * PAGE as u64);
        drop(user);
        let st = truncator.wait().unwrap();
        assert!(st.success());
        assert!(
            t.elapsed().as_secs() < 5,
            "released at once, not after lease-break-time"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 0);
        let mut buf = [0u8; 8];
        assert_eq!(
            f.copy_to(&mut buf, 0).unwrap(),
            (0, false),
            "pread sees the new end"
        );
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn open_names_the_path_on_error() {
        let e = MappedFile::open(Path::new("/nonexistent/zc-file")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::NotFound);
        assert!(
            e.to_string()
                .starts_with("cannot open /nonexistent/zc-file: "),
            "{e}"
        );
        let e = MappedFile::open(Path::new("/")).unwrap_err();
        assert_eq!(
            e.to_string(),
            "/ is not a regular file: only regular files can be sent"
        );
    }
}
