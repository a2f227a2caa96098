//! What an application asks of the AF_XDP driver ([`XdpConfig`], with the
//! attach mode), checked by [`XdpConfig::build`] into the
//! [`ValidXdpConfig`] that [`Xdp::open`](super::Xdp::open) takes, and every
//! way opening it can fail ([`XdpError`], one line each that says what to
//! do).

use std::fmt;
use std::io;

use crate::ifname::{BadInterfaceName, check_interface_name};

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

/// Entries per ring: the fewest and the most [`XdpConfig::ring_size`] takes.
const RING_SIZES: std::ops::RangeInclusive<u32> = 64..=16384;

/// AF_XDP driver settings; [`XdpConfig::new`] gives sound defaults, set
/// what you want, then [`build`](XdpConfig::build) checks them.
///
/// ```
/// use zcstack_driver::xdp::{AttachMode, XdpConfig};
///
/// let cfg = XdpConfig::new("zcsv0").queue(1).mode(AttachMode::Generic).build()?;
/// assert_eq!((cfg.iface(), cfg.queue()), ("zcsv0", 1));
/// let err = XdpConfig::new("zcsv0").ring_size(1000).build().unwrap_err();
/// assert_eq!(
///     err.to_string(),
///     "AF_XDP on zcsv0: ring size 1000 must be a power of two from 64 to 16384"
/// );
/// # Ok::<(), zcstack_driver::xdp::XdpError>(())
/// ```
#[derive(Clone, Debug)]
pub struct XdpConfig {
    iface: String,
    queue: u32,
    mode: AttachMode,
    ring_size: u32,
    zero_copy: bool,
    tx_checksum: bool,
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

    /// Checks everything that can be checked without the kernel: the
    /// interface name (as the kernel's `dev_valid_name` would) and the ring
    /// size. Whether the interface exists, its MTU and the queue are the
    /// kernel's to say, in [`Xdp::open`](super::Xdp::open).
    pub fn build(self) -> Result<ValidXdpConfig, XdpError> {
        check_interface_name(&self.iface)?;
        if !self.ring_size.is_power_of_two() || !RING_SIZES.contains(&self.ring_size) {
            return Err(XdpError::Config {
                iface: self.iface,
                what: format!(
                    "ring size {} must be a power of two from {} to {}",
                    self.ring_size,
                    RING_SIZES.start(),
                    RING_SIZES.end()
                ),
            });
        }
        // A packet's queue is a u16 in the kernel (`skb->queue_mapping`).
        if self.queue > u32::from(u16::MAX) {
            return Err(XdpError::Config {
                what: format!(
                    "queue {} cannot exist: queues are numbered below 65536 \
                     (`ethtool -l {}` lists them)",
                    self.queue, self.iface
                ),
                iface: self.iface,
            });
        }
        Ok(ValidXdpConfig(self))
    }
}

/// An [`XdpConfig`] that [`XdpConfig::build`] accepted: the only thing
/// [`Xdp::open`](super::Xdp::open) takes, so no unchecked setting reaches it.
#[derive(Clone, Debug)]
pub struct ValidXdpConfig(XdpConfig);

impl ValidXdpConfig {
    /// The interface.
    pub fn iface(&self) -> &str {
        &self.0.iface
    }
    /// The device queue to bind to.
    pub fn queue(&self) -> u32 {
        self.0.queue
    }
    /// Where to attach the program.
    pub fn mode(&self) -> AttachMode {
        self.0.mode
    }
    /// Entries in each of the four rings.
    pub fn ring_size(&self) -> u32 {
        self.0.ring_size
    }
    /// Whether zero-copy is tried before copy mode.
    pub fn zero_copy(&self) -> bool {
        self.0.zero_copy
    }
    /// Whether sent TCP segments on a veth ask the kernel to finish their checksum.
    pub fn tx_checksum(&self) -> bool {
        self.0.tx_checksum
    }
}

/// Why an AF_XDP driver could not be opened. Each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// No such interface in this network namespace.
    #[error("interface {0} does not exist in this network namespace (check `ip link`)")]
    NoInterface(String),
    /// A name no interface can have.
    #[error(transparent)]
    InterfaceName(#[from] BadInterfaceName),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The message `build` refuses `cfg` with.
    fn refusal(cfg: XdpConfig) -> String {
        cfg.build().expect_err("accepted").to_string()
    }

    #[test]
    fn ring_sizes_outside_64_to_16384_or_not_powers_of_two_are_refused() {
        for (n, msg) in [
            (
                1000,
                "ring size 1000 must be a power of two from 64 to 16384",
            ),
            (0, "ring size 0 must be a power of two from 64 to 16384"),
            (32, "ring size 32 must be a power of two from 64 to 16384"),
            (
                32768,
                "ring size 32768 must be a power of two from 64 to 16384",
            ),
            (
                16383,
                "ring size 16383 must be a power of two from 64 to 16384",
            ),
        ] {
            let got = refusal(XdpConfig::new("zcsv0").ring_size(n));
            assert_eq!(got, format!("AF_XDP on zcsv0: {msg}"));
        }
        for n in [64, 2048, 16384] {
            let cfg = XdpConfig::new("zcsv0").ring_size(n).build().expect("valid");
            assert_eq!(cfg.ring_size(), n);
        }
    }

    #[test]
    fn queues_past_u16_are_refused() {
        assert_eq!(
            refusal(XdpConfig::new("zcsv0").queue(65536)),
            "AF_XDP on zcsv0: queue 65536 cannot exist: queues are numbered below 65536 \
             (`ethtool -l zcsv0` lists them)"
        );
        assert!(
            refusal(XdpConfig::new("zcsv0").queue(u32::MAX)).contains("queue 4294967295 cannot")
        );
        let cfg = XdpConfig::new("zcsv0").queue(65535).build().expect("valid");
        assert_eq!(cfg.queue(), 65535);
    }

    #[test]
    fn a_name_the_kernel_refuses_is_refused() {
        assert_eq!(
            refusal(XdpConfig::new("eth0:1")),
            "\"eth0:1\" is not an interface name: it contains ':', and the kernel refuses '/', \
             ':', NUL and whitespace in one (check `ip link`)"
        );
        assert_eq!(
            XdpConfig::new("zcaveryverylong")
                .build()
                .expect("valid")
                .iface(),
            "zcaveryverylong"
        );
    }

    /// A bad name is reported before a bad ring size: it is in every
    /// other message.
    #[test]
    fn the_name_is_checked_first() {
        let got = refusal(XdpConfig::new("a/b").ring_size(3));
        assert!(got.starts_with("\"a/b\" is not an interface name"), "{got}");
    }

    #[test]
    fn build_keeps_every_setting() {
        let cfg = XdpConfig::new("zcsv0")
            .queue(3)
            .mode(AttachMode::Native)
            .ring_size(512)
            .zero_copy(false)
            .tx_checksum(false)
            .build()
            .expect("valid");
        assert_eq!(cfg.iface(), "zcsv0");
        assert_eq!(cfg.queue(), 3);
        assert_eq!(cfg.mode(), AttachMode::Native);
        assert_eq!(cfg.ring_size(), 512);
        assert!(!cfg.zero_copy());
        assert!(!cfg.tx_checksum());
        let d = XdpConfig::new("zcsv0").build().expect("defaults");
        assert_eq!(
            (
                d.queue(),
                d.mode(),
                d.ring_size(),
                d.zero_copy(),
                d.tx_checksum()
            ),
            (0, AttachMode::Auto, 2048, true, true)
        );
    }
}
