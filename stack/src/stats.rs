//! Counters a running stack reports, and the copies per payload byte they imply.

use std::fmt;

use zcstack_driver::{DriverStats, KernelStats, PoolStats};

use crate::dgram::DgramStats;
use crate::mem::MemoryStats;

/// A snapshot of a stack's counters. Byte counts are cumulative.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StackStats {
    /// The driver's packet and byte counters.
    pub driver: DriverStats,
    /// The buffer pool.
    pub pool: PoolStats,
    /// The driver's pool of large frames for TCP segments, if it has one
    /// (AF_XDP with TSO through a packet socket).
    pub gso_pool: Option<PoolStats>,
    /// TCP payload bytes received; smoltcp copied each once, frame → socket ring.
    pub tcp_rx_payload: u64,
    /// TCP payload bytes copied into frames, retransmissions included
    /// (smoltcp's emit: socket ring or referenced file → frame).
    pub tcp_tx_payload: u64,
    /// TCP payload bytes sent by reference, retransmissions included: the
    /// device sent them from the socket ring or the file mapping (TAP: one
    /// `writev`, the kernel's copy the only one). No CPU copy in user space.
    pub tcp_tx_payload_ref: u64,
    /// Bytes the application copied out of socket rings (`tcp_read`, `udp_recv_from`).
    pub app_read_bytes: u64,
    /// Bytes copied into socket rings from the application (`tcp_write`,
    /// `tcp_write_with`, `udp_send_to`).
    pub app_write_bytes: u64,
    /// Bytes the application wrote in place into pool frames and handed
    /// over by reference (`tcp_send_frame`): no copy into the socket.
    pub app_frame_bytes: u64,
    /// Packets smoltcp produced that were dropped because the pool was empty.
    pub tx_dropped_no_frame: u64,
    /// Packets dropped because they did not fit one frame.
    pub tx_dropped_too_big: u64,
    /// Driver receive errors.
    pub rx_errors: u64,
    /// Received frames the stack dropped as malformed: a header (Ethernet,
    /// ARP, IPv4, ICMP, UDP, TCP) that did not parse, or a wrong checksum
    /// (smoltcp's `Interface::rx_malformed`, ZCSTACK PATCH 17). Frames the
    /// driver already refused are in the driver's `rx_errors`.
    pub rx_malformed: u64,
    /// Frames lost to driver transmit errors.
    pub tx_errors: u64,
    /// Times the driver took fewer frames than offered (they were kept and retried).
    pub tx_pushed_back: u64,
    /// Poll iterations.
    pub polls: u64,
    /// Polls whose TCP data reached the device more than 1 ms after the
    /// poll read its clock (the thread lost its CPU in between: a sign of a
    /// shared core); their tail loss probes were pushed back by as much.
    pub late_tx_polls: u64,
    /// Idle back-offs that slept.
    pub idle_sleeps: u64,
    /// TCP sockets the stack has created (open, listening or recyclable).
    pub tcp_sockets: usize,
    /// TCP connections the application holds.
    pub tcp_open: usize,
    /// File bytes queued in sockets by reference to the file mapping (no
    /// CPU copy; [`SendMode::Reference`](crate::SendMode::Reference)).
    pub file_bytes_referenced: u64,
    /// File bytes copied from the file mapping into send rings (one copy).
    pub file_bytes_copied: u64,
    /// File bytes read into send rings with `pread` (one copy, in the
    /// kernel; files without a read lease).
    pub file_bytes_pread: u64,
    /// Files whose read lease broke (truncated or opened for writing by
    /// someone else) while this stack's transfers or rings used them.
    pub lease_breaks: u64,
    /// File transfers stopped before their end (lease break, short file, reset).
    pub file_transfers_aborted: u64,
    /// TCP loss recovery, summed over every connection.
    pub tcp: TcpRecoveryStats,
    /// Listening ports: SYNs, SYN cookies, half-open connections given up.
    pub listen: ListenStats,
    /// Memory accounted for, idle connections that gave it back, the
    /// budget and connections refused at it.
    pub memory: MemoryStats,
    /// Datagrams by frame handle ([`crate::dgram`]).
    pub dgram: DgramStats,
}

/// What listening ports saw (see `third_party/smoltcp/ZCSTACK-PATCHES.md`,
/// patch 11): connection requests, SYN cookies, and half-open connections
/// that gave their socket back.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ListenStats {
    /// SYNs received.
    pub syns: u64,
    /// SYN-ACKs sent as cookies because every listening socket was busy.
    pub cookies_sent: u64,
    /// Connections created from a valid cookie.
    pub cookies_accepted: u64,
    /// ACKs with an invalid or stale cookie while cookies were in use.
    pub cookies_rejected: u64,
    /// Valid cookies that found no socket (the port's connections all
    /// busy): dropped, the client retries.
    pub cookies_dropped: u64,
    /// Half-open connections whose socket went to a cookie connection.
    pub half_open_evicted: u64,
    /// Half-open connections given up after their SYN-ACK retries.
    pub half_open_expired: u64,
}

impl From<smoltcp::iface::ListenStats> for ListenStats {
    fn from(s: smoltcp::iface::ListenStats) -> Self {
        ListenStats {
            syns: s.syns,
            cookies_sent: s.cookies_sent,
            cookies_accepted: s.cookies_accepted,
            cookies_rejected: s.cookies_rejected,
            cookies_dropped: s.cookies_dropped,
            half_open_evicted: s.half_open_evicted,
            half_open_expired: s.half_open_expired,
        }
    }
}

impl fmt::Display for ListenStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "syns {}, cookies sent {} accepted {} rejected {} dropped {}, half-open evicted {} expired {}",
            self.syns,
            self.cookies_sent,
            self.cookies_accepted,
            self.cookies_rejected,
            self.cookies_dropped,
            self.half_open_evicted,
            self.half_open_expired
        )
    }
}

/// What TCP loss recovery did (see `third_party/smoltcp/ZCSTACK-PATCHES.md`,
/// patches 6–9): cumulative counts over every connection a stack has had.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpRecoveryStats {
    /// Segments sent that carried retransmitted bytes (with TSO, one per
    /// large segment).
    pub retransmits: u64,
    /// Payload bytes sent again.
    pub retransmitted_bytes: u64,
    /// Retransmission timeouts (each stalls a connection for at least the
    /// minimum RTO).
    pub rto_expiries: u64,
    /// Fast recoveries: losses found by SACK, RACK or duplicate ACKs and
    /// repaired without a timeout.
    pub fast_recoveries: u64,
    /// Tail loss probes sent (RFC 8985).
    pub tail_loss_probes: u64,
    /// Probes that repaired a lost tail.
    pub tlp_repairs: u64,
    /// Recoveries found spurious (reordering, not loss) and undone: the
    /// congestion window was restored.
    pub undos: u64,
    /// D-SACK blocks received: the peer got bytes twice.
    pub dsacks: u64,
    /// ACKs that showed reordering on the path.
    pub reorderings: u64,
    /// Segments dropped as old duplicates by their timestamp (PAWS).
    pub paws_rejects: u64,
}

impl fmt::Display for TcpRecoveryStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "retransmits {} ({} B), rto {}, fast recoveries {}, probes {} (repairs {}), undos {}, dsacks {}, reorderings {}",
            self.retransmits,
            self.retransmitted_bytes,
            self.rto_expiries,
            self.fast_recoveries,
            self.tail_loss_probes,
            self.tlp_repairs,
            self.undos,
            self.dsacks,
            self.reorderings
        )?;
        if self.paws_rejects > 0 {
            write!(f, ", paws rejects {}", self.paws_rejects)?;
        }
        Ok(())
    }
}

impl StackStats {
    /// Received frames lost: pool empty in the driver, frames the driver
    /// rejected, frames the kernel dropped before the driver saw them (AF_XDP:
    /// RX ring full, other kernel drops), or stack errors.
    pub fn rx_drops(&self) -> u64 {
        let k = &self.driver.kernel;
        self.driver.rx_dropped_no_frame
            + self.driver.rx_errors
            + k.rx_dropped
            + k.rx_ring_full
            + self.rx_errors
    }

    /// Frames the stack produced that never reached the device.
    pub fn tx_drops(&self) -> u64 {
        self.tx_dropped_no_frame + self.tx_dropped_too_big + self.tx_errors + self.driver.tx_errors
    }

    /// File bytes moved into send rings, by any path.
    pub fn file_bytes(&self) -> u64 {
        self.file_bytes_referenced + self.file_bytes_copied + self.file_bytes_pread
    }

    /// CPU copies per TCP payload byte on the send path: the copy into the
    /// ring (application writes, file copies and `pread`s; referenced file
    /// bytes and pool frames the application filled are no copy) plus the copies into frames
    /// (smoltcp's emit, retransmissions included; bytes sent by reference,
    /// [`tcp_tx_payload_ref`](Self::tcp_tx_payload_ref), are none), per byte
    /// the application handed over. The driver ⇄ smoltcp hand-off copies
    /// nothing (frames move by handle).
    pub fn tx_copies_per_byte(&self) -> f64 {
        let handed = self.app_write_bytes + self.app_frame_bytes + self.file_bytes();
        if handed == 0 {
            return 0.0;
        }
        let into_ring = self.app_write_bytes + self.file_bytes_copied + self.file_bytes_pread;
        (into_ring + self.tcp_tx_payload) as f64 / handed as f64
    }

    /// CPU copies per TCP payload byte on the receive path: smoltcp's frame →
    /// ring copy plus the application's copy out, plus any bytes the driver
    /// copied (AF_XDP multi-buffer reassembly), per byte received.
    pub fn rx_copies_per_byte(&self) -> f64 {
        if self.tcp_rx_payload == 0 {
            return 0.0;
        }
        (self.tcp_rx_payload + self.app_read_bytes + self.driver.rx_copied_bytes) as f64
            / self.tcp_rx_payload as f64
    }
}

impl fmt::Display for StackStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.driver;
        write!(
            f,
            "rx {} pkts {} B, tx {} pkts {} B, drops rx {} tx {}, tcp open {}, {}",
            d.rx_packets,
            d.rx_bytes,
            d.tx_packets,
            d.tx_bytes,
            self.rx_drops(),
            self.tx_drops(),
            self.tcp_open,
            self.pool
        )?;
        if let Some(g) = &self.gso_pool {
            write!(f, ", gso {g}")?;
        }
        let k = &d.kernel;
        if *k != KernelStats::default() {
            write!(
                f,
                ", kernel: rx ring full {}, fill ring empty {}, dropped {}, invalid descs {}",
                k.rx_ring_full,
                k.fill_ring_empty,
                k.rx_dropped,
                k.rx_invalid_descs + k.tx_invalid_descs
            )?;
        }
        if self.tcp != TcpRecoveryStats::default() {
            write!(f, ", tcp: {}", self.tcp)?;
        }
        if self.rx_malformed > 0 {
            write!(f, ", rx malformed {}", self.rx_malformed)?;
        }
        if self.late_tx_polls > 0 {
            write!(f, ", late tx polls {}", self.late_tx_polls)?;
        }
        if self.dgram != DgramStats::default() {
            write!(f, ", {}", self.dgram)?;
        }
        let l = &self.listen;
        if l.cookies_sent + l.cookies_rejected + l.half_open_expired > 0 {
            write!(f, ", listen: {l}")?;
        }
        write!(f, ", {}", self.memory)
    }
}
