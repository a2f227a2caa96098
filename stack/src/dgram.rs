//! Datagrams by frame handle, in the fbufs style: UDP with no payload copy.
//!
//! Sending: [`Stack::dgram_alloc`](crate::Stack::dgram_alloc) takes a frame from the driver's pool and
//! hands it out as a [`TxDatagram`] whose payload area starts behind 42
//! bytes of headroom; the application writes its payload there, in place,
//! and [`Stack::dgram_send`](crate::Stack::dgram_send) writes the Ethernet, IPv4 and UDP headers into
//! the headroom (UDP checksum included) and queues that same frame for the
//! driver's next burst.
//!
//! Receiving: a port bound with [`Stack::dgram_bind`](crate::Stack::dgram_bind) is steered before
//! smoltcp sees the frame: each poll looks at the IPv4/UDP headers of the
//! frames the driver delivered, and those for a bound port (checksums
//! verified unless the driver vouches for them) go to that port's queue as
//! [`RxDatagram`]s: a view of the payload inside the frame and the source
//! address. Dropping one gives the frame back to the pool;
//! [`RxDatagram::into_reply`] turns it into a [`TxDatagram`] with the
//! payload where it lies (an echo moves no byte).
//!
//! ```text
//!  driver rx_burst ─► Frame ─► steer (IPv4/UDP to a bound port?) ─► port queue ─► RxDatagram (payload view)
//!                               └─ anything else ─► smoltcp
//!  app: dgram_alloc ─► TxDatagram ─► write payload ─► dgram_send: headers into the headroom ─► driver tx_burst
//! ```
//!
//! The destination's Ethernet address comes from smoltcp's neighbor cache
//! (ZCSTACK PATCH 23), so ARP is the stack's own. A datagram for a
//! neighbor not resolved yet waits (at most [`PENDING_MAX`] per stack, at
//! most [`PENDING_FOR`]) while the stack's ARP request is answered; beyond
//! that [`Stack::dgram_send`](crate::Stack::dgram_send) gives the datagram back with `WouldBlock`,
//! and datagrams that waited too long are dropped and counted in
//! [`DgramStats::tx_unresolved`]. smoltcp keeps a neighbor for 60 s after
//! its last ARP exchange (steered datagrams do not refresh it, as they
//! never reach smoltcp), so a long one-way flow waits for one ARP round
//! trip a minute.
//!
//! No byte of payload is copied in user space on this path: the only CPU
//! work on it is the checksum, which reads the payload once.
//!
//! Here: the datagram types, the bound ports and their queues, steering,
//! and sending through the poll engine (module `engine`: the device
//! adapter's transmit queue, smoltcp's neighbor cache). The calls
//! (`Stack::dgram_*`) are in `stack/dgram_calls.rs`.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

use smoltcp::iface::NeighborLookup;
use smoltcp::time::Instant;
use zcstack_driver::{Driver, Frame};

use crate::engine::Engine;
use crate::tcp::stale;
use zcstack_driver::header::{self, ETH_HLEN, IPV4_HLEN, Ipv4, UDP_HLEN};
use zcstack_driver::offload::{self, fold, sum};

/// Ethernet + IPv4 (no options) + UDP header bytes in front of a payload.
pub const DGRAM_HEADROOM: usize = ETH_HLEN + IPV4_HLEN + UDP_HLEN;
/// Datagrams waiting for ARP, per stack.
pub const PENDING_MAX: usize = 64;
/// How long a datagram waits for its neighbor before it is dropped.
pub const PENDING_FOR: Duration = Duration::from_secs(3);
/// Default receive queue of a bound port, in datagrams (at most a quarter
/// of the pool: queued datagrams hold pool frames).
pub const DEFAULT_QUEUE: usize = 1024;

/// A port bound for datagrams by frame handle.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct DgramSock(u32);

/// A datagram being written: a pool frame whose payload area starts after
/// [`DGRAM_HEADROOM`] bytes kept for the headers.
pub struct TxDatagram {
    frame: Frame,
    /// Largest payload: the MTU's, or what the frame holds.
    max: usize,
}

impl TxDatagram {
    /// The payload written so far.
    pub fn payload(&self) -> &[u8] {
        self.frame.data()
    }
    /// The payload, writable, at its current length.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.frame.data_mut()
    }
    /// The whole payload area, up to [`capacity`](Self::capacity), writable:
    /// fill it, then [`set_len`](Self::set_len).
    pub fn room_mut(&mut self) -> &mut [u8] {
        let max = self.max;
        &mut self.frame.room_mut()[..max]
    }
    /// Sets the payload length; panics above [`capacity`](Self::capacity)
    /// (a bug in the caller).
    pub fn set_len(&mut self, len: usize) {
        assert!(
            len <= self.max,
            "datagram payload {len} exceeds its capacity {}",
            self.max
        );
        self.frame.set_len(len);
    }
    /// Payload length.
    pub fn len(&self) -> usize {
        self.frame.len()
    }
    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.frame.is_empty()
    }
    /// Largest payload this datagram can carry (MTU − 28, or less if the
    /// frame is smaller).
    pub fn capacity(&self) -> usize {
        self.max
    }
}

impl fmt::Debug for TxDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TxDatagram")
            .field("len", &self.len())
            .field("capacity", &self.max)
            .finish()
    }
}

/// A received datagram: its payload where the driver put it, and its sender.
pub struct RxDatagram {
    frame: Frame,
    src: SocketAddrV4,
    /// The stack's largest payload, for [`into_reply`](Self::into_reply).
    max: u16,
}

impl RxDatagram {
    /// The payload, in place in the pool frame.
    pub fn payload(&self) -> &[u8] {
        self.frame.data()
    }
    /// The payload, writable in place.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.frame.data_mut()
    }
    /// Who sent it.
    pub fn source(&self) -> SocketAddrV4 {
        self.src
    }
    /// Turns the received frame into one to send, its payload where it
    /// lies, writable and resizable up to the stack's largest payload (an
    /// echo copies nothing). The headers go in front of it, where the
    /// received ones were.
    pub fn into_reply(self) -> TxDatagram {
        let room = self.frame.capacity();
        TxDatagram {
            frame: self.frame,
            max: usize::from(self.max).min(room),
        }
    }
}

impl fmt::Debug for RxDatagram {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RxDatagram")
            .field("len", &self.frame.len())
            .field("source", &self.src)
            .finish()
    }
}

/// Why [`Stack::dgram_send`](crate::Stack::dgram_send) did not take a datagram; the datagram comes
/// back with the error, to send later or drop.
pub struct DgramSendError {
    /// What went wrong: `WouldBlock` (the device is backed up, or too many
    /// datagrams wait for ARP: poll and try again), `InvalidInput` (no
    /// route), `NotConnected` (a closed handle).
    pub error: io::Error,
    /// The datagram, unchanged.
    pub datagram: TxDatagram,
}

impl fmt::Debug for DgramSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.error, f)
    }
}
impl fmt::Display for DgramSendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.error, f)
    }
}
impl std::error::Error for DgramSendError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.error.source()
    }
}
impl From<DgramSendError> for io::Error {
    fn from(e: DgramSendError) -> io::Error {
        e.error
    }
}

/// Counters of the datagram path. Payload bytes only; none of them copied.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DgramStats {
    /// Datagrams handed to the driver.
    pub tx_datagrams: u64,
    /// Their payload bytes (written in place by the application).
    pub tx_bytes: u64,
    /// Datagrams steered to a bound port's queue.
    pub rx_datagrams: u64,
    /// Their payload bytes (left in place for the application).
    pub rx_bytes: u64,
    /// Datagrams for a bound port dropped because its queue was full.
    pub rx_queue_full: u64,
    /// Datagrams for a bound port dropped for a wrong IPv4 or UDP checksum
    /// or inconsistent lengths.
    pub rx_malformed: u64,
    /// Datagrams dropped after waiting [`PENDING_FOR`] for ARP.
    pub tx_unresolved: u64,
    /// Datagrams waiting for ARP now.
    pub tx_waiting: usize,
}

impl fmt::Display for DgramStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "datagrams tx {} ({} B), rx {} ({} B), 0 B copied; rx queue full {}, malformed {}, tx unresolved {}",
            self.tx_datagrams,
            self.tx_bytes,
            self.rx_datagrams,
            self.rx_bytes,
            self.rx_queue_full,
            self.rx_malformed,
            self.tx_unresolved
        )
    }
}

struct Slot {
    port: u16,
    open: bool,
    cap: usize,
    queue: VecDeque<RxDatagram>,
}

/// A datagram whose headers are written but for the destination MAC.
struct Pending {
    frame: Frame,
    dst: Ipv4Addr,
    since: Instant,
}

/// The stack's datagram state.
#[derive(Default)]
pub(crate) struct Dgram {
    slots: Vec<Slot>,
    /// (port, slot) of the open slots: what steering looks up.
    ports: Vec<(u16, u32)>,
    pending: VecDeque<Pending>,
    /// The other half of the driver's receive vector while steering.
    spare: Vec<Frame>,
    ip_id: u16,
    /// The last neighbor looked up, valid during one poll.
    neighbor: Option<(Ipv4Addr, [u8; 6], u64)>,
    stats: DgramStats,
}

impl Dgram {
    pub(crate) fn stats(&self) -> DgramStats {
        DgramStats {
            tx_waiting: self.pending.len(),
            ..self.stats
        }
    }
    /// Whether steering has anything to do.
    pub(crate) fn active(&self) -> bool {
        !self.ports.is_empty()
    }
    pub(crate) fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }
    pub(crate) fn port_bound(&self, port: u16) -> bool {
        self.ports.iter().any(|&(p, _)| p == port)
    }

    /// Takes from `rx` every frame for a bound port; the rest stay, in order.
    /// Returns how many were taken (queued or dropped).
    pub(crate) fn steer(
        &mut self,
        rx: &mut Vec<Frame>,
        ip: Ipv4Addr,
        mac: [u8; 6],
        trusted: bool,
        max_payload: usize,
    ) -> usize {
        let max = max_payload.min(usize::from(u16::MAX)) as u16;
        std::mem::swap(rx, &mut self.spare);
        let before = self.spare.len();
        let ip = ip.octets();
        // `rx` is newest first (smoltcp pops from its end): walk it oldest
        // first so each queue keeps arrival order, then restore its order.
        for frame in self.spare.drain(..).rev() {
            let Some(h) = classify(frame.data(), ip, mac) else {
                rx.push(frame);
                continue;
            };
            let Some(&(_, slot)) = self.ports.iter().find(|&&(p, _)| p == h.dst_port) else {
                rx.push(frame);
                continue;
            };
            if !trusted && !offload::checksums_ok(frame.data()) {
                self.stats.rx_malformed += 1;
                continue;
            }
            let slot = &mut self.slots[slot as usize];
            if slot.queue.len() >= slot.cap {
                self.stats.rx_queue_full += 1;
                continue;
            }
            let mut frame = frame;
            let start = frame.offset() + h.payload_at;
            frame.set_offset(start);
            frame.set_len(h.payload_len);
            self.stats.rx_datagrams += 1;
            self.stats.rx_bytes += h.payload_len as u64;
            slot.queue.push_back(RxDatagram {
                frame,
                src: h.src,
                max,
            });
        }
        rx.reverse();
        before - rx.len()
    }
}

/// What steering reads from a frame's headers.
struct UdpHead {
    src: SocketAddrV4,
    dst_port: u16,
    /// Payload offset from the frame's data start.
    payload_at: usize,
    payload_len: usize,
}

/// An unfragmented IPv4/UDP datagram to `ip` (Ethernet to `mac` or
/// broadcast) with consistent lengths; `None` for anything else, which
/// smoltcp then handles. Never panics on short or malformed frames.
#[inline]
fn classify(f: &[u8], ip: [u8; 4], mac: [u8; 6]) -> Option<UdpHead> {
    let dst = header::eth_dst(f)?;
    if *dst != mac && *dst != [0xff; 6] {
        return None;
    }
    let p = Ipv4::of_frame(f)?;
    let ihl = p.header_len();
    // A fragment (more follow, or an offset) is smoltcp's business: it drops them.
    if p.version() != 4 || ihl < IPV4_HLEN || p.dst() != ip || p.is_fragment() {
        return None;
    }
    let u = p.udp()?;
    let total = p.total_len();
    if total > p.bytes().len() || total < ihl + UDP_HLEN {
        return None;
    }
    let ulen = u.length();
    if ulen < UDP_HLEN || ulen > total - ihl {
        return None;
    }
    Some(UdpHead {
        src: SocketAddrV4::new(Ipv4Addr::from(p.src()), u.src_port()),
        dst_port: u.dst_port(),
        payload_at: ETH_HLEN + ihl + UDP_HLEN,
        payload_len: ulen - UDP_HLEN,
    })
}

impl Dgram {
    /// Binds `port` with a queue of `queue` datagrams; `headroom` is the
    /// pool's, `taken` whether a smoltcp UDP socket has the port.
    pub(crate) fn bind(
        &mut self,
        port: u16,
        queue: usize,
        headroom: usize,
        taken: bool,
    ) -> io::Result<DgramSock> {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot bind UDP port 0",
            ));
        }
        if queue == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "a datagram queue needs room for at least one datagram",
            ));
        }
        if headroom < DGRAM_HEADROOM {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "datagrams need {DGRAM_HEADROOM} bytes of pool headroom for their headers; the pool has {headroom}: build it with more"
                ),
            ));
        }
        if self.port_bound(port) || taken {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("UDP port {port} is already bound"),
            ));
        }
        self.slots.push(Slot {
            port,
            open: true,
            cap: queue,
            queue: VecDeque::with_capacity(queue.min(4096)),
        });
        let s = (self.slots.len() - 1) as u32;
        self.ports.push((port, s));
        Ok(DgramSock(s))
    }

    /// Closes a port: its queued datagrams go back to the pool.
    pub(crate) fn close(&mut self, s: DgramSock) {
        if let Some(slot) = self.slots.get_mut(s.0 as usize)
            && slot.open
        {
            slot.open = false;
            slot.queue.clear();
            let port = slot.port;
            self.ports.retain(|&(p, _)| p != port);
        }
    }

    /// The port an open handle is bound to.
    fn src_port(&self, s: DgramSock) -> io::Result<u16> {
        match self.slots.get(s.0 as usize) {
            Some(slot) if slot.open => Ok(slot.port),
            _ => Err(stale()),
        }
    }

    /// Sends one datagram from the bound port `s` (see `Stack::dgram_send`).
    pub(crate) fn send<D: Driver>(
        &mut self,
        engine: &mut Engine<D>,
        s: DgramSock,
        datagram: TxDatagram,
        dst: SocketAddrV4,
    ) -> Result<(), DgramSendError> {
        let src_port = match self.src_port(s) {
            Ok(port) => port,
            Err(error) => return Err(DgramSendError { error, datagram }),
        };
        self.send_one(engine, src_port, datagram, dst)
    }

    /// Sends from the front of `batch` (see `Stack::dgram_send_burst`).
    pub(crate) fn send_burst<D: Driver>(
        &mut self,
        engine: &mut Engine<D>,
        s: DgramSock,
        batch: &mut Vec<(TxDatagram, SocketAddrV4)>,
    ) -> io::Result<usize> {
        let src_port = self.src_port(s)?;
        let mut taken = 0;
        let mut items = batch.drain(..).collect::<VecDeque<_>>();
        let mut err = None;
        while let Some((d, dst)) = items.pop_front() {
            match self.send_one(engine, src_port, d, dst) {
                Ok(()) => taken += 1,
                Err(e) => {
                    items.push_front((e.datagram, dst));
                    err = Some(e.error);
                    break;
                }
            }
        }
        batch.extend(items);
        match err {
            Some(e) if taken == 0 && e.kind() != io::ErrorKind::WouldBlock => Err(e),
            _ => Ok(taken),
        }
    }

    /// The next datagram queued on `s`; `WouldBlock` when there is none.
    pub(crate) fn recv(&mut self, s: DgramSock) -> io::Result<RxDatagram> {
        match self.slots.get_mut(s.0 as usize) {
            Some(slot) if slot.open => slot
                .queue
                .pop_front()
                .ok_or_else(|| io::ErrorKind::WouldBlock.into()),
            _ => Err(stale()),
        }
    }

    /// Moves up to `max` queued datagrams of `s` to `out`; returns how many.
    pub(crate) fn recv_burst(
        &mut self,
        s: DgramSock,
        out: &mut Vec<RxDatagram>,
        max: usize,
    ) -> io::Result<usize> {
        match self.slots.get_mut(s.0 as usize) {
            Some(slot) if slot.open => {
                let n = max.min(slot.queue.len());
                out.extend(slot.queue.drain(..n));
                Ok(n)
            }
            _ => Err(stale()),
        }
    }

    fn send_one<D: Driver>(
        &mut self,
        engine: &mut Engine<D>,
        src_port: u16,
        mut d: TxDatagram,
        dst: SocketAddrV4,
    ) -> Result<(), DgramSendError> {
        if !engine.port_mut().tx_room() {
            return Err(DgramSendError {
                error: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    "the device's transmit queue is full: poll and send again",
                ),
                datagram: d,
            });
        }
        let now = engine.last_now();
        let polls = engine.polls();
        let dip = *dst.ip();
        let mac = match self.neighbor {
            Some((ip, mac, at)) if ip == dip && at == polls => Some(mac),
            _ => match engine.neighbor_for(now, dip) {
                NeighborLookup::Found(m) => {
                    self.neighbor = Some((dip, m.0, polls));
                    Some(m.0)
                }
                NeighborLookup::Pending => None,
                NeighborLookup::NoRoute => {
                    return Err(DgramSendError {
                        error: io::Error::new(
                            io::ErrorKind::InvalidInput,
                            format!(
                                "no route to {dip}: it is outside {}/{} and the stack has no gateway",
                                engine.ip().0,
                                engine.ip().1
                            ),
                        ),
                        datagram: d,
                    });
                }
            },
        };
        if mac.is_none() && self.pending.len() >= PENDING_MAX {
            return Err(DgramSendError {
                error: io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!(
                        "{PENDING_MAX} datagrams already wait for ARP to find {dip}: poll and send again"
                    ),
                ),
                datagram: d,
            });
        }
        let len = d.frame.len();
        let src_ip = engine.ip().0;
        self.ip_id = self.ip_id.wrapping_add(1);
        write_headers(
            &mut d.frame,
            engine.mac(),
            src_ip,
            src_port,
            dst,
            self.ip_id,
        );
        self.stats.tx_datagrams += 1;
        self.stats.tx_bytes += len as u64;
        match mac {
            Some(mac) => {
                d.frame.data_mut()[0..6].copy_from_slice(&mac);
                engine.port_mut().queue_tx(d.frame);
            }
            None => self.pending.push_back(Pending {
                frame: d.frame,
                dst: dip,
                since: now,
            }),
        }
        Ok(())
    }

    /// After a poll: datagrams whose neighbor is now known leave; those
    /// that waited longer than [`PENDING_FOR`] are dropped and counted.
    pub(crate) fn flush_pending<D: Driver>(&mut self, engine: &mut Engine<D>, now: Instant) {
        let limit = smoltcp::time::Duration::from_micros(PENDING_FOR.as_micros() as u64);
        for _ in 0..self.pending.len() {
            let Some(mut p) = self.pending.pop_front() else {
                break;
            };
            match engine.neighbor_for(now, p.dst) {
                NeighborLookup::Found(m) if engine.port_mut().tx_room() => {
                    p.frame.data_mut()[0..6].copy_from_slice(&m.0);
                    engine.port_mut().queue_tx(p.frame);
                }
                NeighborLookup::NoRoute => self.stats.tx_unresolved += 1,
                _ if now - p.since > limit => self.stats.tx_unresolved += 1,
                _ => self.pending.push_back(p),
            }
        }
    }

    /// Moves this poll's frames for bound ports from the driver's receive
    /// vector to their queues; returns how many.
    pub(crate) fn steer_rx<D: Driver>(&mut self, engine: &mut Engine<D>) -> usize {
        let (ip, mac) = (engine.ip().0, engine.mac());
        let max = max_payload(engine);
        let port = engine.port_mut();
        let trusted = port.rx_trusted();
        let n = self.steer(port.rx_frames(), ip, mac, trusted, max);
        port.rx_budget_to_held();
        n
    }
}

/// Largest payload of one datagram on `engine`'s device: MTU − 28.
pub(crate) fn max_payload<D: Driver>(engine: &Engine<D>) -> usize {
    engine.caps().mtu - IPV4_HLEN - UDP_HLEN
}

/// Takes a frame from `engine`'s pool for one datagram, its payload empty.
pub(crate) fn alloc<D: Driver>(engine: &Engine<D>) -> Option<TxDatagram> {
    let pool = &engine.caps().pool;
    let mut frame = pool.alloc()?;
    let at = pool.headroom();
    frame.set_offset(at);
    frame.set_len(0);
    let max = max_payload(engine).min(pool.frame_size() - at);
    Some(TxDatagram { frame, max })
}

/// Writes Ethernet (destination left for the caller), IPv4 and UDP headers
/// in front of `frame`'s payload and makes the frame's data the whole packet.
fn write_headers(
    frame: &mut Frame,
    src_mac: [u8; 6],
    src_ip: Ipv4Addr,
    src_port: u16,
    dst: SocketAddrV4,
    id: u16,
) {
    let len = frame.len();
    let at = frame.offset() - DGRAM_HEADROOM;
    frame.set_offset(at);
    frame.set_len(DGRAM_HEADROOM + len);
    let f = frame.data_mut();
    f[6..12].copy_from_slice(&src_mac);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip_total = (IPV4_HLEN + UDP_HLEN + len) as u16;
    let udp_len = (UDP_HLEN + len) as u16;
    let (src, dst_ip) = (src_ip.octets(), dst.ip().octets());
    {
        let p = &mut f[ETH_HLEN..ETH_HLEN + IPV4_HLEN];
        p[0] = 0x45;
        p[1] = 0;
        p[2..4].copy_from_slice(&ip_total.to_be_bytes());
        p[4..6].copy_from_slice(&id.to_be_bytes());
        // Don't fragment (RFC 6864 lets the ID be anything then).
        p[6..8].copy_from_slice(&0x4000u16.to_be_bytes());
        p[8] = 64;
        p[9] = 17;
        p[10..12].copy_from_slice(&[0, 0]);
        p[12..16].copy_from_slice(&src);
        p[16..20].copy_from_slice(&dst_ip);
        let c = !fold(sum(p, 0));
        p[10..12].copy_from_slice(&c.to_be_bytes());
    }
    let u = &mut f[ETH_HLEN + IPV4_HLEN..];
    u[0..2].copy_from_slice(&src_port.to_be_bytes());
    u[2..4].copy_from_slice(&dst.port().to_be_bytes());
    u[4..6].copy_from_slice(&udp_len.to_be_bytes());
    u[6..8].copy_from_slice(&[0, 0]);
    let pseudo = sum(
        &src,
        sum(&dst_ip, u32::from(header::PROTO_UDP) + u32::from(udp_len)),
    );
    let mut c = !fold(sum(&u[..usize::from(udp_len)], pseudo));
    // RFC 768: a computed zero is sent as all ones.
    if c == 0 {
        c = 0xffff;
    }
    u[6..8].copy_from_slice(&c.to_be_bytes());
}

#[cfg(test)]
mod tests;
