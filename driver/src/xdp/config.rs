//! What an application asks of the AF_XDP driver ([`XdpConfig`], with the
//! attach mode) and every way opening it can fail ([`XdpError`], one line
//! each that says what to do).

use std::fmt;
use std::io;

/// Where the kernel runs the redirect program.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AttachMode {
    /// Native first, generic if the driver refuses.
    #[default]
    Auto,
    /// Native (`XDP_FLAGS_DRV_MODE`): in the device driver, before an skb exists.
    Native,
    /// Generic (`XDP_FLAGS_SKB_MODE`): after the kernel built an skb; works everywhere.
    Generic,
}

impl std::str::FromStr for AttachMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(AttachMode::Auto),
            "native" => Ok(AttachMode::Native),
            "generic" => Ok(AttachMode::Generic),
            _ => Err(format!(
                "{s:?} is not an XDP mode: use native, generic or auto"
            )),
        }
    }
}

impl fmt::Display for AttachMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AttachMode::Auto => "auto",
            AttachMode::Native => "native",
            AttachMode::Generic => "generic",
        })
    }
}

/// AF_XDP driver settings; [`XdpConfig::new`] gives sound defaults.
#[derive(Clone, Debug)]
pub struct XdpConfig {
    pub(super) iface: String,
    pub(super) queue: u32,
    pub(super) mode: AttachMode,
    pub(super) ring_size: u32,
    pub(super) zero_copy: bool,
    pub(super) tx_checksum: bool,
}

impl XdpConfig {
    /// Queue 0 of `iface`, attach mode auto, 2048-entry rings, zero-copy
    /// tried first.
    pub fn new(iface: &str) -> XdpConfig {
        XdpConfig {
            iface: iface.to_string(),
            queue: 0,
            mode: AttachMode::Auto,
            ring_size: 2048,
            zero_copy: true,
            tx_checksum: true,
        }
    }
    /// The device queue to bind to.
    pub fn queue(mut self, q: u32) -> Self {
        self.queue = q;
        self
    }
    /// Where to attach the program.
    pub fn mode(mut self, m: AttachMode) -> Self {
        self.mode = m;
        self
    }
    /// Entries in each of the four rings (a power of two, 64..=16384).
    pub fn ring_size(mut self, n: u32) -> Self {
        self.ring_size = n;
        self
    }
    /// Whether to try zero-copy before copy mode (default true).
    pub fn zero_copy(mut self, on: bool) -> Self {
        self.zero_copy = on;
        self
    }
    /// On a veth, whether sent TCP segments ask the kernel to finish their
    /// checksum (TX metadata; default true, for frames the stack leaves
    /// unsummed). Off, frames go out exactly as given: what a relay wants,
    /// whose frames carry their sender's checksums (and must keep a
    /// corrupted one wrong).
    pub fn tx_checksum(mut self, on: bool) -> Self {
        self.tx_checksum = on;
        self
    }
}

/// Why an AF_XDP driver could not be opened. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No such interface in this network namespace.
    #[error("interface {0} does not exist in this network namespace (check `ip link`)")]
    NoInterface(String),
    /// Missing privileges.
    #[error(
        "AF_XDP on {iface}: {step} was refused: AF_XDP needs CAP_NET_ADMIN, CAP_BPF and \
         CAP_NET_RAW: run as root"
    )]
    Permission {
        /// Interface.
        iface: String,
        /// The step that failed.
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The kernel would not pin the pool as a UMEM.
    #[error("AF_XDP on {iface}: registering the {bytes}-byte pool as UMEM was refused: {why}")]
    Umem {
        /// Interface.
        iface: String,
        /// Pool size.
        bytes: usize,
        /// What it means and what to do.
        why: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The MTU is too large for the pool's frames or for the attach mode.
    #[error("AF_XDP on {iface}: MTU {mtu} is too large {why}")]
    MtuTooLarge {
        /// Interface.
        iface: String,
        /// Its MTU.
        mtu: usize,
        /// For what, and what to change.
        why: String,
    },
    /// The program could not be attached.
    #[error("AF_XDP on {iface}: attaching the XDP program in {mode} mode failed{hint}")]
    Attach {
        /// Interface.
        iface: String,
        /// Mode tried last.
        mode: AttachMode,
        /// What to do.
        hint: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// The socket could not be bound to the queue.
    #[error("AF_XDP on {iface}: binding to queue {queue} failed{hint}")]
    Bind {
        /// Interface.
        iface: String,
        /// Queue.
        queue: u32,
        /// What to do.
        hint: String,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
    /// Bad settings.
    #[error("AF_XDP on {iface}: {what}")]
    Config {
        /// Interface.
        iface: String,
        /// What is wrong.
        what: String,
    },
    /// Any other failure, with the step that failed.
    #[error("AF_XDP on {iface}: {step}")]
    Io {
        /// Interface.
        iface: String,
        /// The step that failed.
        step: &'static str,
        /// The kernel's error.
        #[source]
        source: io::Error,
    },
}
