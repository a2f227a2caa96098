//! ZCSTACK PATCH 11 (see ZCSTACK-PATCHES.md): SYN cookies (RFC 4987 3.6).
//!
//! smoltcp has no listen backlog: every half-open connection holds a whole
//! socket in SYN-RECEIVED, and a SYN that finds no socket in LISTEN is
//! answered with RST. A few hundred spoofed SYNs (whose SYN-ACKs go nowhere)
//! therefore lock a listener out, for as long as their sockets wait.
//!
//! With cookies on ([`Interface::set_syn_cookies`]), a SYN for a port that
//! has listening sockets but none free gets a SYN-ACK from no socket at all:
//! its initial sequence number (the cookie) encodes the time, the peer's MSS,
//! window scale and SACK permission, under a keyed hash of the 4-tuple and
//! the peer's ISN. Nothing is stored. When the peer's ACK arrives and no
//! socket has its 4-tuple, the cookie is checked (its hash, and that it is at
//! most about two minutes old) and the connection is created ESTABLISHED in
//! a socket of that listener: a free one in LISTEN, else the longest-waiting
//! SYN-RECEIVED one (a handshake that had a round trip's chance to finish
//! and did not: under a flood, a spoofed one). A stale or forged cookie gets
//! the RST any unexpected segment gets.
//!
//! Timestamps survive a cookie (the peer's ACK echoes ours; our offset for a
//! cookie connection is a keyed hash of its 4-tuple), so does SACK. The MSS
//! is rounded down to one of eight values. Sockets sharing a listen endpoint
//! should have the same receive buffer size: the window scale the SYN-ACK
//! offers is the first listening socket's.
//!
//! Counters: [`ListenStats`].

use super::InterfaceInner;
use crate::iface::SocketSet;
use crate::socket::AnySocket;
use crate::socket::tcp::{CookieParams, Socket, State};
use crate::time::Instant;
use crate::wire::{IpAddress, IpProtocol, IpRepr, TcpControl, TcpRepr, TcpSeqNumber};

/// What listeners saw: SYNs, cookies, and half-open connections given up.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct ListenStats {
    /// SYNs received (new connection requests, to any port).
    pub syns: u64,
    /// SYN-ACKs sent as cookies: the port's listening sockets were all busy.
    pub cookies_sent: u64,
    /// Connections created from a valid cookie.
    pub cookies_accepted: u64,
    /// ACKs that matched no socket and carried no valid cookie (answered
    /// with RST), while cookies were in use.
    pub cookies_rejected: u64,
    /// Valid cookies that found no socket to take them (no listening or
    /// half-open socket on the port): dropped, the peer retries.
    pub cookies_dropped: u64,
    /// SYN-RECEIVED sockets given to a cookie connection.
    pub half_open_evicted: u64,
    /// SYN-RECEIVED sockets that gave up after their SYN-ACK retries
    /// (`Socket::set_synack_retries`) and listen again.
    pub half_open_expired: u64,
}

/// The cookie secret and when cookies were last sent.
#[derive(Debug, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub(crate) struct SynCookies {
    key: (u64, u64),
    /// When a cookie was last sent: ACKs matching no socket are checked
    /// against cookies only for a while after (a cookie lives ~2 minutes).
    last_sent: Option<Instant>,
}

/// The peer MSS values a cookie can carry (3 bits); a peer's MSS is rounded
/// down to one of them.
const MSS_TABLE: [u16; 8] = [536, 1200, 1300, 1440, 1460, 4312, 8960, 65495];
/// Cookie time unit: 64 s. A cookie is valid in its unit and the next one.
const TIME_SHIFT: u32 = 6;
const MAX_AGE_UNITS: u8 = 1;
/// How long after the last cookie unmatched ACKs are checked.
const CHECK_WINDOW_SECS: i64 = 3 << TIME_SHIFT;

impl SynCookies {
    pub(crate) fn new(key: (u64, u64)) -> SynCookies {
        SynCookies {
            key,
            last_sent: None,
        }
    }
}

/// The fields a cookie carries besides its hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Fields {
    time: u8,
    mss_index: u8,
    /// Peer's window shift 0..=14, or 15 for none.
    wscale: u8,
    sack: bool,
}

impl Fields {
    fn pack(&self) -> u8 {
        (self.mss_index & 7) | ((self.wscale & 15) << 3) | ((self.sack as u8) << 7)
    }
    fn unpack(time: u8, p: u8) -> Fields {
        Fields {
            time,
            mss_index: p & 7,
            wscale: (p >> 3) & 15,
            sack: p & 0x80 != 0,
        }
    }
}

fn time_unit(now: Instant) -> u8 {
    ((now.total_millis() / 1000) >> TIME_SHIFT) as u8
}

/// The 4-tuple (addresses, ports) and the peer's ISN as hash input.
fn tuple_bytes(ip: &IpRepr, tcp: &TcpRepr, client_isn: TcpSeqNumber, buf: &mut [u8; 48]) -> usize {
    let mut n = 0;
    let mut put = |b: &[u8], buf: &mut [u8; 48]| {
        buf[n..n + b.len()].copy_from_slice(b);
        n += b.len();
    };
    for a in [ip.src_addr(), ip.dst_addr()] {
        match a {
            #[cfg(feature = "proto-ipv4")]
            IpAddress::Ipv4(a) => put(&a.octets(), buf),
            #[cfg(feature = "proto-ipv6")]
            IpAddress::Ipv6(a) => put(&a.octets(), buf),
        }
    }
    put(&tcp.src_port.to_be_bytes(), buf);
    put(&tcp.dst_port.to_be_bytes(), buf);
    put(&client_isn.0.to_be_bytes(), buf);
    n
}

impl SynCookies {
    fn hash(&self, ip: &IpRepr, tcp: &TcpRepr, client_isn: TcpSeqNumber, extra: &[u8]) -> u64 {
        let mut buf = [0u8; 48];
        let mut n = tuple_bytes(ip, tcp, client_isn, &mut buf);
        buf[n..n + extra.len()].copy_from_slice(extra);
        n += extra.len();
        siphash24(self.key, &buf[..n])
    }

    /// The cookie for a SYN (`ip`, `tcp` as received).
    fn make(&self, ip: &IpRepr, tcp: &TcpRepr, f: Fields) -> TcpSeqNumber {
        let isn = tcp.seq_number;
        let offset = self.hash(ip, tcp, isn, &[0]) as u32;
        let mac = self.hash(ip, tcp, isn, &[1, f.time, f.pack()]) as u16;
        let body = (u32::from(f.time) << 24) | (u32::from(f.pack()) << 16) | u32::from(mac);
        TcpSeqNumber(offset.wrapping_add(body) as i32)
    }

    /// Checks the cookie an ACK (`ip`, `tcp` as received) returns.
    fn check(&self, ip: &IpRepr, tcp: &TcpRepr, now: Instant) -> Option<Fields> {
        let ack = tcp.ack_number?;
        let cookie = (ack.0 as u32).wrapping_sub(1);
        let isn = tcp.seq_number - 1;
        let offset = self.hash(ip, tcp, isn, &[0]) as u32;
        let body = cookie.wrapping_sub(offset);
        let f = Fields::unpack((body >> 24) as u8, (body >> 16) as u8);
        if time_unit(now).wrapping_sub(f.time) > MAX_AGE_UNITS {
            return None;
        }
        let mac = self.hash(ip, tcp, isn, &[1, f.time, f.pack()]) as u16;
        (mac == body as u16).then_some(f)
    }

    /// The TSval offset of a cookie connection (it cannot store a random one).
    fn ts_offset(&self, ip: &IpRepr, tcp: &TcpRepr) -> u32 {
        // Keyed on the tuple only: the same for the SYN and the ACK.
        let mut buf = [0u8; 48];
        let n = tuple_bytes(ip, tcp, TcpSeqNumber(0), &mut buf);
        buf[n] = 2;
        siphash24(self.key, &buf[..n + 1]) as u32
    }
}

impl InterfaceInner {
    /// Turns SYN cookies on with `secret` as the hash key, or off.
    pub(crate) fn set_syn_cookies(&mut self, secret: Option<u128>) {
        self.syn_cookies = secret.map(|k| SynCookies::new((k as u64, (k >> 64) as u64)));
    }

    /// A segment no socket took: if it is a SYN for a busy listener, the
    /// cookie SYN-ACK; if it is an ACK with a valid cookie, the connection
    /// it creates (and that socket's reply). `None`: not ours, the caller
    /// answers as before (RST).
    pub(crate) fn syn_cookie_path(
        &mut self,
        sockets: &mut SocketSet,
        ip: &IpRepr,
        tcp: &TcpRepr,
    ) -> Option<Option<(IpRepr, TcpRepr<'static>)>> {
        let cookies = self.syn_cookies?;
        match (tcp.control, tcp.ack_number) {
            (TcpControl::Syn, None) => {
                let template = sockets
                    .items()
                    .filter_map(|item| Socket::downcast(&item.socket))
                    .find(|s| s.listens_for(ip, tcp))?
                    .cookie_template();
                let now = self.now;
                let peer_mss = tcp.max_seg_size.unwrap_or(536);
                let mss_index = MSS_TABLE.iter().rposition(|&m| m <= peer_mss).unwrap_or(0) as u8;
                let f = Fields {
                    time: time_unit(now),
                    mss_index,
                    wscale: tcp.window_scale.map_or(15, |s| s.min(14)),
                    sack: tcp.sack_permitted,
                };
                let cookie = cookies.make(ip, tcp, f);
                let ts_offset = cookies.ts_offset(ip, tcp);
                self.syn_cookies.as_mut()?.last_sent = Some(now);
                self.listen_stats.cookies_sent += 1;
                let ip_header_len = ip.header_len();
                let our_mss = self.ip_mtu() - ip_header_len - crate::wire::TCP_HEADER_LEN;
                let reply = TcpRepr {
                    src_port: tcp.dst_port,
                    dst_port: tcp.src_port,
                    control: TcpControl::Syn,
                    seq_number: cookie,
                    ack_number: Some(tcp.seq_number + 1),
                    window_len: template.window,
                    window_scale: tcp.window_scale.map(|_| template.shift),
                    max_seg_size: Some(our_mss.min(u16::MAX as usize) as u16),
                    sack_permitted: tcp.sack_permitted,
                    sack_ranges: [None, None, None],
                    timestamp: match (tcp.timestamp, template.timestamps) {
                        (Some(ts), true) => Some(crate::wire::TcpTimestampRepr::new(
                            (now.total_millis() as u32).wrapping_add(ts_offset),
                            ts.tsval,
                        )),
                        _ => None,
                    },
                    payload: &[],
                };
                let reply_ip = IpRepr::new(
                    ip.dst_addr(),
                    ip.src_addr(),
                    IpProtocol::Tcp,
                    reply.buffer_len(),
                    64,
                );
                Some(Some((reply_ip, reply)))
            }
            (TcpControl::None | TcpControl::Psh | TcpControl::Fin, Some(_)) => {
                let recent = cookies.last_sent.is_some_and(|t| {
                    (self.now - t).total_millis() as i64 <= CHECK_WINDOW_SECS * 1000
                });
                if !recent {
                    return None;
                }
                let Some(f) = cookies.check(ip, tcp, self.now) else {
                    self.listen_stats.cookies_rejected += 1;
                    return None;
                };
                let params = CookieParams {
                    our_isn: tcp.ack_number? - 1,
                    mss: MSS_TABLE[f.mss_index as usize] as usize,
                    window_scale: (f.wscale != 15).then_some(f.wscale),
                    sack: f.sack,
                    ts_offset: cookies.ts_offset(ip, tcp),
                };
                // A listening socket of this port, else its longest-waiting
                // half-open one.
                let mut free = None;
                let mut oldest: Option<(Instant, crate::iface::SocketHandle)> = None;
                for item in sockets.items() {
                    let Some(s) = Socket::downcast(&item.socket) else {
                        continue;
                    };
                    if !s.listens_for(ip, tcp) {
                        continue;
                    }
                    match s.state() {
                        State::Listen => {
                            free = Some(item.meta.handle);
                            break;
                        }
                        State::SynReceived => {
                            let since = s.syn_received_since();
                            if oldest.is_none_or(|(t, _)| since < t) {
                                oldest = Some((since, item.meta.handle));
                            }
                        }
                        _ => {}
                    }
                }
                let evict = free.is_none();
                let Some(handle) = free.or(oldest.map(|(_, h)| h)) else {
                    self.listen_stats.cookies_dropped += 1;
                    return Some(None);
                };
                if evict {
                    self.listen_stats.half_open_evicted += 1;
                }
                self.listen_stats.cookies_accepted += 1;
                let item = sockets.item_mut(handle)?;
                // An evicted half-open socket may be waiting for its spoofed
                // peer's ARP reply; the new connection has work at once.
                item.meta.new_connection();
                // ZCSTACK PATCH 24: the socket now holds a connection.
                self.wake(&mut item.meta);
                self.note_changed(&mut item.meta);
                let socket = Socket::downcast_mut(&mut item.socket)?;
                Some(socket.accept_syn_cookie(self, ip, tcp, params))
            }
            _ => None,
        }
    }
}

/// SipHash-2-4 (Aumasson, Bernstein) of `data` under `key`.
fn siphash24(key: (u64, u64), data: &[u8]) -> u64 {
    let (k0, k1) = key;
    let mut v0 = k0 ^ 0x736f_6d65_7073_6575;
    let mut v1 = k1 ^ 0x646f_7261_6e64_6f6d;
    let mut v2 = k0 ^ 0x6c79_6765_6e65_7261;
    let mut v3 = k1 ^ 0x7465_6462_7974_6573;
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v3);
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.wrapping_add(*v3);
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.wrapping_add(*v1);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v2 = v2.rotate_left(32);
    };
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let rest = chunks.remainder();
    let mut last = [0u8; 8];
    last[..rest.len()].copy_from_slice(rest);
    last[7] = data.len() as u8;
    let m = u64::from_le_bytes(last);
    v3 ^= m;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= m;
    v2 ^= 0xff;
    for _ in 0..4 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    v0 ^ v1 ^ v2 ^ v3
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn siphash_matches_the_reference_vectors() {
        // SipHash-2-4 paper, Appendix A: key 00..0f, messages 00, 00 01, ...
        let key = (
            u64::from_le_bytes([0, 1, 2, 3, 4, 5, 6, 7]),
            u64::from_le_bytes([8, 9, 10, 11, 12, 13, 14, 15]),
        );
        let msg: [u8; 15] = core::array::from_fn(|i| i as u8);
        assert_eq!(siphash24(key, &[]), 0x726f_db47_dd0e_0e31);
        assert_eq!(siphash24(key, &msg[..1]), 0x74f8_39c5_93dc_67fd);
        assert_eq!(siphash24(key, &msg[..8]), 0x93f5_f579_9a93_2462);
        assert_eq!(siphash24(key, &msg[..15]), 0xa129_ca61_49be_45e5);
    }

    #[cfg(feature = "proto-ipv4")]
    fn segment(seq: i32, ack: Option<i32>) -> (IpRepr, TcpRepr<'static>) {
        use crate::wire::Ipv4Address;
        let ip = IpRepr::new(
            IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 9)),
            IpAddress::Ipv4(Ipv4Address::new(10, 0, 0, 1)),
            IpProtocol::Tcp,
            20,
            64,
        );
        let tcp = TcpRepr {
            src_port: 40000,
            dst_port: 80,
            control: if ack.is_some() {
                TcpControl::None
            } else {
                TcpControl::Syn
            },
            seq_number: TcpSeqNumber(seq),
            ack_number: ack.map(TcpSeqNumber),
            window_len: 1000,
            window_scale: None,
            max_seg_size: None,
            sack_permitted: false,
            sack_ranges: [None; 3],
            timestamp: None,
            payload: &[],
        };
        (ip, tcp)
    }

    #[cfg(feature = "proto-ipv4")]
    #[test]
    fn a_cookie_checks_out_for_two_minutes_and_only_for_its_peer() {
        let c = SynCookies::new((0x0123_4567_89ab_cdef, 0xfedc_ba98_7654_3210));
        let t0 = Instant::from_secs(1000);
        let f = Fields {
            time: time_unit(t0),
            mss_index: 4,
            wscale: 7,
            sack: true,
        };
        let (ip, syn) = segment(5000, None);
        let cookie = c.make(&ip, &syn, f);
        let (ip, ack) = segment(5001, Some(cookie.0.wrapping_add(1)));
        assert_eq!(c.check(&ip, &ack, t0), Some(f));
        assert_eq!(
            c.check(&ip, &ack, t0 + crate::time::Duration::from_secs(64)),
            Some(f)
        );
        assert_eq!(
            c.check(&ip, &ack, t0 + crate::time::Duration::from_secs(192)),
            None
        );
        // Another peer ISN, port, or a cookie one off: rejected.
        let (ip2, ack2) = segment(6001, Some(cookie.0.wrapping_add(1)));
        assert_eq!(c.check(&ip2, &ack2, t0), None);
        let (ip3, ack3) = segment(5001, Some(cookie.0.wrapping_add(2)));
        assert_eq!(c.check(&ip3, &ack3, t0), None);
        // Another key: rejected.
        let other = SynCookies::new((1, 2));
        assert_eq!(other.check(&ip, &ack, t0), None);
    }

    #[cfg(feature = "proto-ipv4")]
    #[test]
    fn forged_cookies_rarely_pass() {
        // A blind attacker guessing cookies for one 4-tuple: about 2^-16 of
        // guesses carry a valid hash (and must also hit the time field).
        let c = SynCookies::new((42, 43));
        let t0 = Instant::from_secs(5000);
        let mut passed = 0;
        for guess in 0..200_000u32 {
            let (ip, ack) = segment(7001, Some(guess.wrapping_mul(2_654_435_761) as i32));
            passed += c.check(&ip, &ack, t0).is_some() as u32;
        }
        assert!(passed <= 2, "{passed} forged cookies passed");
    }

    #[test]
    fn fields_round_trip() {
        for p in 0..=255u8 {
            assert_eq!(Fields::unpack(9, p).pack(), p);
        }
    }
}
