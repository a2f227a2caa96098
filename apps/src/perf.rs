//! zc-perf's wire protocol, data pattern and report, shared by its zcstack
//! and kernel backends so either end can be either stack.
//!
//! TCP: the client connects and sends a 24-byte [`Header`]; then the sender
//! (the client, or the server with `reverse`) streams [`Pattern`] bytes and
//! shuts down its sending side; the receiver checks every byte against the
//! pattern, and after the sender's FIN answers with a 16-byte [`Trailer`]
//! (bytes received, pattern ok) and closes. All integers little-endian.
//!
//! UDP: every datagram starts with a 16-byte [`UdpHead`]: magic, kind, run
//! id, sequence number (data) or count sent (end); the rest is pattern. The
//! client repeats its `End` until the server answers with a `Result` holding
//! the number it received.

use std::time::Duration;

use serde::Serialize;

/// Header magic ("zc-perf, TCP").
pub const MAGIC: [u8; 4] = *b"ZCPF";
/// Protocol version in the header.
pub const VERSION: u8 = 1;
/// Bytes in a [`Header`].
pub const HEADER_LEN: usize = 24;
/// Bytes in a [`Trailer`].
pub const TRAILER_LEN: usize = 16;
/// Largest slice [`Pattern::at`] hands out.
pub const MAX_CHUNK: usize = 64 * 1024;
/// The pattern repeats every this many bytes (a prime, so it never lines up
/// with buffer or segment sizes).
const PERIOD: usize = 65521;
/// The default TCP and UDP port.
pub const DEFAULT_PORT: u16 = 5201;

/// What the client asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// The server sends, the client receives.
    pub reverse: bool,
    /// Stop after this many payload bytes (`u64::MAX`: no byte bound).
    pub bytes: u64,
    /// Stop after this many milliseconds of sending.
    pub millis: u32,
    /// Seed of the data pattern.
    pub seed: u32,
}

impl Header {
    /// The 24 bytes on the wire.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[..4].copy_from_slice(&MAGIC);
        b[4] = VERSION;
        b[5] = u8::from(self.reverse);
        b[8..16].copy_from_slice(&self.bytes.to_le_bytes());
        b[16..20].copy_from_slice(&self.millis.to_le_bytes());
        b[20..24].copy_from_slice(&self.seed.to_le_bytes());
        b
    }

    /// Parses a header; the error says what was wrong (network input: never panics).
    pub fn decode(b: &[u8; HEADER_LEN]) -> Result<Header, String> {
        if b[..4] != MAGIC {
            return Err("not a zc-perf client (bad header magic)".into());
        }
        if b[4] != VERSION {
            return Err(format!(
                "zc-perf protocol version {} (this is {VERSION})",
                b[4]
            ));
        }
        if b[5] > 1 {
            return Err(format!("unknown direction {}", b[5]));
        }
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Ok(Header {
            reverse: b[5] == 1,
            bytes: u64_at(8),
            millis: u32_at(16),
            seed: u32_at(20),
        })
    }

    /// How long a receiver goes on before giving up: the sender's time
    /// limit (at most an hour, whatever the header says) plus 30 s.
    pub fn receive_limit(&self) -> Duration {
        Duration::from_millis(u64::from(self.millis)).min(Duration::from_secs(3600))
            + Duration::from_secs(30)
    }
}

/// The receiver's answer after the sender's FIN.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Trailer {
    /// Payload bytes received.
    pub bytes: u64,
    /// Every byte matched the pattern.
    pub pattern_ok: bool,
}

impl Trailer {
    /// The 16 bytes on the wire.
    pub fn encode(&self) -> [u8; TRAILER_LEN] {
        let mut b = [0u8; TRAILER_LEN];
        b[..4].copy_from_slice(b"ZCPR");
        b[4] = u8::from(self.pattern_ok);
        b[8..].copy_from_slice(&self.bytes.to_le_bytes());
        b
    }

    /// Parses a trailer.
    pub fn decode(b: &[u8; TRAILER_LEN]) -> Result<Trailer, String> {
        if &b[..4] != b"ZCPR" {
            return Err("the receiver's report is malformed".into());
        }
        Ok(Trailer {
            pattern_ok: b[4] == 1,
            bytes: u64::from_le_bytes(b[8..].try_into().expect("8 bytes")),
        })
    }
}

/// The seeded byte stream every sender sends and every receiver checks.
pub struct Pattern {
    block: Vec<u8>,
}

impl Pattern {
    /// The pattern for `seed` (xorshift64*, so both ends agree without a crate).
    pub fn new(seed: u32) -> Pattern {
        let mut x = u64::from(seed) ^ 0x9e37_79b9_7f4a_7c15;
        let mut block = Vec::with_capacity(PERIOD + MAX_CHUNK);
        while block.len() < PERIOD {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            block.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        block.truncate(PERIOD);
        // Repeat the start, so any MAX_CHUNK bytes from any offset are contiguous.
        for i in 0..MAX_CHUNK {
            block.push(block[i % PERIOD]);
        }
        Pattern { block }
    }

    /// The `len` (≤ [`MAX_CHUNK`]) pattern bytes at stream offset `offset`.
    pub fn at(&self, offset: u64, len: usize) -> &[u8] {
        let start = (offset % PERIOD as u64) as usize;
        &self.block[start..start + len.min(MAX_CHUNK)]
    }

    /// Whether `data` is what the stream holds at `offset` (any length).
    pub fn matches(&self, mut offset: u64, mut data: &[u8]) -> bool {
        while !data.is_empty() {
            let n = data.len().min(MAX_CHUNK);
            if data[..n] != *self.at(offset, n) {
                return false;
            }
            offset += n as u64;
            data = &data[n..];
        }
        true
    }
}

/// The kind of a UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpKind {
    /// A measured datagram; the number is its sequence number.
    Data,
    /// The client is done; the number is how many it sent.
    End,
    /// The server's answer to `End`; the number is how many it received.
    Result,
}

/// The first 16 bytes of every zc-perf UDP datagram.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpHead {
    /// What the datagram is.
    pub kind: UdpKind,
    /// Which run it belongs to (the client picks it).
    pub run: u32,
    /// Sequence number or count, by kind.
    pub number: u64,
}

/// Bytes in a [`UdpHead`]; also the smallest `--size`.
pub const UDP_HEAD_LEN: usize = 16;

impl UdpHead {
    /// Writes the head into the first 16 bytes of `buf`.
    pub fn write(&self, buf: &mut [u8]) {
        buf[..3].copy_from_slice(b"ZCU");
        buf[3] = match self.kind {
            UdpKind::Data => b'D',
            UdpKind::End => b'E',
            UdpKind::Result => b'R',
        };
        buf[4..8].copy_from_slice(&self.run.to_le_bytes());
        buf[8..16].copy_from_slice(&self.number.to_le_bytes());
    }

    /// Reads a head; `None` for anything that is not a zc-perf datagram.
    pub fn read(buf: &[u8]) -> Option<UdpHead> {
        if buf.len() < UDP_HEAD_LEN || &buf[..3] != b"ZCU" {
            return None;
        }
        let kind = match buf[3] {
            b'D' => UdpKind::Data,
            b'E' => UdpKind::End,
            b'R' => UdpKind::Result,
            _ => return None,
        };
        Some(UdpHead {
            kind,
            run: u32::from_le_bytes(buf[4..8].try_into().ok()?),
            number: u64::from_le_bytes(buf[8..16].try_into().ok()?),
        })
    }
}

/// CPU time this process has used (user + system), from `getrusage(RUSAGE_SELF)`.
pub fn cpu_time() -> Duration {
    use nix::sys::resource::{UsageWho, getrusage};
    match getrusage(UsageWho::RUSAGE_SELF) {
        Ok(u) => {
            let tv = |t: nix::sys::time::TimeVal| {
                Duration::new(t.tv_sec().max(0) as u64, (t.tv_usec().max(0) as u32) * 1000)
            };
            tv(u.user_time()) + tv(u.system_time())
        }
        Err(_) => Duration::ZERO,
    }
}

/// One side's figures for one test (`--json` prints exactly this).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    /// "client" or "server".
    pub side: &'static str,
    /// "sender" or "receiver".
    pub role: &'static str,
    /// "zcstack" or "kernel".
    pub stack: &'static str,
    /// "tcp" or "udp".
    pub proto: &'static str,
    /// The peer's address and port.
    pub peer: String,
    /// Payload bytes this side sent (sender) or received and checked (receiver).
    pub bytes: u64,
    /// UDP: datagrams this side sent (sender) or received (receiver).
    pub datagrams: Option<u64>,
    /// What the other side reported: bytes (TCP) or datagrams (UDP) it got or sent.
    pub peer_count: Option<u64>,
    /// The received bytes matched the pattern (receiver: own check; sender: the receiver's).
    pub pattern_ok: Option<bool>,
    /// Wall time of the transfer, seconds.
    pub seconds: f64,
    /// Payload rate.
    pub gbit_per_s: f64,
    /// Packets this side's stack sent and received during the test (zcstack:
    /// driver frames; kernel TCP: `tcpi_segs_in + tcpi_segs_out`; UDP: datagrams).
    pub packets: u64,
    /// `packets` per second.
    pub packets_per_s: f64,
    /// Segments this side retransmitted (kernel: `tcpi_total_retrans`;
    /// zcstack: `TcpRecoveryStats::retransmits`, one per offloaded segment).
    pub retrans_segments: Option<u64>,
    /// Payload bytes this side retransmitted (kernel: `tcpi_bytes_retrans`;
    /// zcstack: `TcpRecoveryStats::retransmitted_bytes`).
    pub retrans_bytes: Option<u64>,
    /// zcstack TCP: what loss recovery did during the test (`None` on the
    /// kernel, whose TCP_INFO has no such counters).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<TcpRecovery>,
    /// CPU seconds this process used (user + system).
    pub cpu_seconds: f64,
    /// CPU seconds per GB (10^9 bytes) of payload.
    pub cpu_seconds_per_gb: f64,
    /// zcstack TCP: CPU copies per payload byte on this side's path, from the
    /// stack's counters during the test (receiver: frame → ring, ring → app,
    /// driver reassembly; sender: app → ring, ring → frame with
    /// retransmissions). Copies the kernel makes (TAP, AF_XDP copy mode) are
    /// not counted. Kernel: not known (`None`).
    pub copies_per_byte: Option<f64>,
    /// zcstack TCP sender: payload bytes the device sent by reference (from
    /// the socket's ring, no CPU copy into a frame; TAP), retransmissions
    /// included. Kernel and receivers: `None`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes_by_reference: Option<u64>,
    /// Why the transfer ended ("bytes", "time", "peer").
    pub ended_by: &'static str,
    /// The device queue whose stack ran the test (servers with `--queues`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<usize>,
}

/// zcstack's loss-recovery counters over one test (see
/// `zcstack::TcpRecoveryStats`), with the `tcp_` names the JSON report uses.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct TcpRecovery {
    /// Retransmission timeouts.
    pub tcp_rto_expiries: u64,
    /// Fast recoveries (SACK, RACK or duplicate ACKs).
    pub tcp_fast_recoveries: u64,
    /// Tail loss probes sent.
    pub tcp_tail_loss_probes: u64,
    /// Recoveries undone as spurious.
    pub tcp_undos: u64,
    /// D-SACK blocks received.
    pub tcp_dsacks: u64,
    /// ACKs that showed reordering.
    pub tcp_reorderings: u64,
}

impl Report {
    /// Fills the rates from `bytes`, `packets`, `seconds` and `cpu_seconds`.
    pub fn finish(&mut self) {
        let secs = self.seconds.max(1e-9);
        self.gbit_per_s = self.bytes as f64 * 8.0 / secs / 1e9;
        self.packets_per_s = self.packets as f64 / secs;
        self.cpu_seconds_per_gb = if self.bytes == 0 {
            0.0
        } else {
            self.cpu_seconds / (self.bytes as f64 / 1e9)
        };
    }

    /// One human-readable line.
    pub fn line(&self) -> String {
        let mut s = format!(
            "{} {} {} {} {}: {} bytes in {:.3} s, {:.3} Gbit/s, {:.0} pkt/s",
            self.proto,
            self.side,
            self.role,
            self.stack,
            self.peer,
            self.bytes,
            self.seconds,
            self.gbit_per_s,
            self.packets_per_s
        );
        if let Some(q) = self.queue {
            s += &format!(" (queue {q})");
        }
        if let Some(d) = self.datagrams {
            s += &format!(", {d} datagrams");
        }
        if let Some(p) = self.peer_count {
            s += &format!(", peer counted {p}");
        }
        match (self.retrans_segments, self.retrans_bytes) {
            (Some(seg), Some(b)) => s += &format!(", retransmitted {seg} segments {b} bytes"),
            (None, Some(b)) => s += &format!(", retransmitted {b} bytes"),
            _ => {}
        }
        if let Some(t) = &self.tcp {
            s += &format!(
                " (rto {}, fast recoveries {}, probes {}, undos {})",
                t.tcp_rto_expiries, t.tcp_fast_recoveries, t.tcp_tail_loss_probes, t.tcp_undos
            );
        }
        s += &format!(", {:.2} CPU s/GB", self.cpu_seconds_per_gb);
        if let Some(c) = self.copies_per_byte {
            s += &format!(", {c:.2} copies per byte");
        }
        if let Some(b) = self.bytes_by_reference {
            s += &format!(" ({b} bytes sent by reference)");
        }
        match self.pattern_ok {
            Some(true) => s += ", data ok",
            Some(false) => s += ", DATA MISMATCH",
            None => {}
        }
        s + &format!(" (ended by {})", self.ended_by)
    }

    /// Prints the report: one JSON object per line with `json`, else one text line.
    pub fn print(&self, app: &str, json: bool) {
        if json {
            println!(
                "{}",
                serde_json::to_string(self).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
            );
        } else {
            println!("{app}: {}", self.line());
        }
    }
}

/// Parses a byte count with an optional K, M or G suffix (powers of 1024).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let (num, mult) = match s.char_indices().last() {
        Some((i, 'K' | 'k')) => (&s[..i], 1u64 << 10),
        Some((i, 'M' | 'm')) => (&s[..i], 1 << 20),
        Some((i, 'G' | 'g')) => (&s[..i], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(mult))
        .ok_or_else(|| format!("{s:?} is not a byte count like 1000, 64K, 64M or 1G"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_trailer_and_udp_head_round_trip() {
        let h = Header {
            reverse: true,
            bytes: 64 << 20,
            millis: 10_000,
            seed: 7,
        };
        assert_eq!(Header::decode(&h.encode()), Ok(h));
        let mut bad = h.encode();
        bad[0] = b'X';
        assert!(Header::decode(&bad).unwrap_err().contains("magic"));
        let t = Trailer {
            bytes: 12345,
            pattern_ok: true,
        };
        assert_eq!(Trailer::decode(&t.encode()), Ok(t));
        let u = UdpHead {
            kind: UdpKind::End,
            run: 9,
            number: 1_000_000,
        };
        let mut buf = [0u8; 64];
        u.write(&mut buf);
        assert_eq!(UdpHead::read(&buf), Some(u));
        assert_eq!(UdpHead::read(&buf[..15]), None);
    }

    #[test]
    fn pattern_is_seeded_and_checkable_at_any_offset() {
        let p = Pattern::new(1);
        assert_ne!(p.at(0, 64), Pattern::new(2).at(0, 64));
        let mut stream = Vec::new();
        let mut off = 0u64;
        while stream.len() < 300_000 {
            let n = 1 + (off as usize * 7919) % MAX_CHUNK;
            stream.extend_from_slice(p.at(off, n));
            off += n as u64;
        }
        assert!(p.matches(0, &stream));
        assert!(p.matches(12_345, &stream[12_345..200_000]));
        stream[250_000] ^= 1;
        assert!(!p.matches(0, &stream));
    }

    #[test]
    fn byte_counts() {
        assert_eq!(parse_bytes("64M"), Ok(64 << 20));
        assert_eq!(parse_bytes("1000"), Ok(1000));
        assert_eq!(parse_bytes("2k"), Ok(2048));
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("99999999999G").is_err());
    }
}
