//! Small typed views of the Ethernet, IPv4, TCP and UDP headers the drivers
//! and the stack's counters and datagram path read, in the style of smoltcp's `wire` module: a
//! view is made by a constructor that checks the bytes are there, so its
//! accessors never panic, whatever the frame holds.
//!
//! The views check length only. What a header *says* (an IHL below 5, a
//! total length past the buffer) is for the caller to judge: the checksum
//! check, the offload request and the payload counter each refuse
//! different things. Field layout: RFC 791 section 3.1 (IPv4), RFC 9293
//! section 3.1 (TCP), RFC 768 (UDP).

/// Bytes of an Ethernet header (destination, source, ethertype).
pub const ETH_HLEN: usize = 14;
/// Bytes of an IPv4 header without options.
pub const IPV4_HLEN: usize = 20;
/// Bytes of a TCP header without options.
pub const TCP_HLEN: usize = 20;
/// The ethertype of IPv4, as it appears on the wire.
pub const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
/// IP protocol number of ICMP.
pub const PROTO_ICMP: u8 = 1;
/// IP protocol number of TCP.
pub const PROTO_TCP: u8 = 6;
/// IP protocol number of UDP.
pub const PROTO_UDP: u8 = 17;
/// Bytes of a UDP header.
pub const UDP_HLEN: usize = 8;
/// Offset of the checksum in a TCP header.
pub const TCP_CSUM_OFF: usize = 16;

/// The destination MAC address of Ethernet frame `frame`, if it holds a
/// whole Ethernet header.
#[inline]
pub fn eth_dst(frame: &[u8]) -> Option<&[u8; 6]> {
    if frame.len() < ETH_HLEN {
        return None;
    }
    frame[..6].try_into().ok()
}

/// The IPv4 header at the start of a buffer that holds at least its fixed
/// 20 bytes (options and payload may follow, or be cut short).
#[derive(Clone, Copy, Debug)]
pub struct Ipv4<'a> {
    /// From the first byte of the IPv4 header to the end of the buffer.
    bytes: &'a [u8],
}

impl<'a> Ipv4<'a> {
    /// The IPv4 header of Ethernet frame `frame`: `None` unless the
    /// ethertype is IPv4 and the fixed header is in the buffer.
    #[inline]
    pub fn of_frame(frame: &'a [u8]) -> Option<Ipv4<'a>> {
        if frame.len() < ETH_HLEN + IPV4_HLEN || frame[12..14] != ETHERTYPE_IPV4 {
            return None;
        }
        Some(Ipv4 {
            bytes: &frame[ETH_HLEN..],
        })
    }

    /// From the first byte of the header to the end of the buffer.
    #[inline]
    pub fn bytes(self) -> &'a [u8] {
        self.bytes
    }

    /// The version field (4 in a well-formed header).
    #[inline]
    pub fn version(self) -> u8 {
        self.bytes[0] >> 4
    }

    /// The header length the header states (IHL × 4: 0 to 60 bytes;
    /// below 20 is malformed).
    #[inline]
    pub fn header_len(self) -> usize {
        usize::from(self.bytes[0] & 0x0f) * 4
    }

    /// The total length field: header and payload bytes.
    #[inline]
    pub fn total_len(self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[2], self.bytes[3]]))
    }

    /// The protocol field.
    #[inline]
    pub fn protocol(self) -> u8 {
        self.bytes[9]
    }

    /// Whether this is a fragment (more fragments follow, or an offset).
    #[inline]
    pub fn is_fragment(self) -> bool {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]]) & 0x3fff != 0
    }

    /// Source and destination addresses, 8 bytes (what the pseudo-header
    /// sums).
    #[inline]
    pub fn addrs(self) -> &'a [u8] {
        &self.bytes[12..20]
    }

    /// The source address.
    #[inline]
    pub fn src(self) -> [u8; 4] {
        [
            self.bytes[12],
            self.bytes[13],
            self.bytes[14],
            self.bytes[15],
        ]
    }

    /// The destination address.
    #[inline]
    pub fn dst(self) -> [u8; 4] {
        [
            self.bytes[16],
            self.bytes[17],
            self.bytes[18],
            self.bytes[19],
        ]
    }

    /// The TCP header after this header: `None` unless the protocol is TCP
    /// and the stated header length plus a fixed TCP header lie in the
    /// buffer.
    #[inline]
    pub fn tcp(self) -> Option<Tcp<'a>> {
        let ihl = self.header_len();
        if self.protocol() != PROTO_TCP || self.bytes.len() < ihl + TCP_HLEN {
            return None;
        }
        Some(Tcp {
            bytes: &self.bytes[ihl..],
        })
    }

    /// The UDP header after this header: `None` unless the protocol is UDP
    /// and the stated header length plus a UDP header lie in the buffer.
    #[inline]
    pub fn udp(self) -> Option<Udp<'a>> {
        let ihl = self.header_len();
        if self.protocol() != PROTO_UDP || self.bytes.len() < ihl + UDP_HLEN {
            return None;
        }
        Some(Udp {
            bytes: &self.bytes[ihl..],
        })
    }
}

/// A TCP header at the start of a buffer that holds at least its fixed 20
/// bytes.
#[derive(Clone, Copy, Debug)]
pub struct Tcp<'a> {
    /// From the first byte of the TCP header to the end of the buffer.
    bytes: &'a [u8],
}

impl Tcp<'_> {
    /// The header length the data offset states (0 to 60 bytes; below 20
    /// is malformed).
    #[inline]
    pub fn header_len(self) -> usize {
        usize::from(self.bytes[12] >> 4) * 4
    }
}

/// A UDP header at the start of a buffer that holds at least its 8 bytes.
#[derive(Clone, Copy, Debug)]
pub struct Udp<'a> {
    /// From the first byte of the UDP header to the end of the buffer.
    bytes: &'a [u8],
}

impl Udp<'_> {
    /// The source port.
    #[inline]
    pub fn src_port(self) -> u16 {
        u16::from_be_bytes([self.bytes[0], self.bytes[1]])
    }

    /// The destination port.
    #[inline]
    pub fn dst_port(self) -> u16 {
        u16::from_be_bytes([self.bytes[2], self.bytes[3]])
    }

    /// The length field: header and payload bytes (below 8 is malformed).
    #[inline]
    pub fn length(self) -> usize {
        usize::from(u16::from_be_bytes([self.bytes[4], self.bytes[5]]))
    }

    /// The checksum field (0: none was sent, RFC 768).
    #[inline]
    pub fn checksum(self) -> u16 {
        u16::from_be_bytes([self.bytes[6], self.bytes[7]])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ethernet, IPv4 (IHL 6: one option word), TCP (data offset 8), 5
    /// payload bytes, total length 61.
    const FRAME: [u8; 75] = [
        2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
        0x46, 0, 0, 61, 0, 1, 0x20, 0, 64, 6, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2, // IPv4
        1, 1, 1, 0, // IP options (NOPs, end)
        0x9c, 0x40, 0, 80, 0, 0, 0, 1, 0, 0, 0, 0, 0x80, 0x18, 0xff, 0xff, 0, 0, 0, 0, // TCP
        1, 1, 8, 10, 0, 0, 0, 0, 0, 0, 0, 0, // TCP options
        b'h', b'e', b'l', b'l', b'o',
    ];

    #[test]
    fn fields_read_from_literal_bytes() {
        let ip = Ipv4::of_frame(&FRAME).unwrap();
        assert_eq!(ip.header_len(), 24);
        assert_eq!(ip.total_len(), 61);
        assert_eq!(ip.protocol(), PROTO_TCP);
        assert!(ip.is_fragment(), "more fragments bit set");
        assert_eq!(ip.addrs(), &[10, 200, 0, 1, 10, 200, 0, 2]);
        assert_eq!(ip.bytes().len(), FRAME.len() - ETH_HLEN);
        assert_eq!(ip.tcp().unwrap().header_len(), 32);
    }

    #[test]
    fn short_or_other_frames_give_no_view() {
        for cut in 0..ETH_HLEN + IPV4_HLEN {
            assert!(Ipv4::of_frame(&FRAME[..cut]).is_none(), "cut at {cut}");
        }
        // The IP header with its option word, but the TCP header cut short.
        for cut in ETH_HLEN + IPV4_HLEN..ETH_HLEN + 24 + TCP_HLEN {
            let ip = Ipv4::of_frame(&FRAME[..cut]).unwrap();
            assert!(ip.tcp().is_none(), "cut at {cut}");
        }
        assert!(
            Ipv4::of_frame(&FRAME[..ETH_HLEN + 24 + TCP_HLEN])
                .unwrap()
                .tcp()
                .is_some()
        );
        let mut arp = FRAME;
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert!(Ipv4::of_frame(&arp).is_none());
        let mut udp = FRAME;
        udp[ETH_HLEN + 9] = PROTO_UDP;
        assert!(Ipv4::of_frame(&udp).unwrap().tcp().is_none());
    }

    #[test]
    fn udp_fields_read_from_literal_bytes() {
        // Ethernet, IPv4 without options, UDP 40000 -> 53, length 13, checksum 0xbeef, 5 bytes.
        let mut f = [0u8; 47];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[12..14].copy_from_slice(&ETHERTYPE_IPV4);
        f[14..34].copy_from_slice(&[
            0x45, 0, 0, 33, 0, 1, 0x40, 0, 64, 17, 0, 0, 10, 200, 0, 1, 10, 200, 0, 2,
        ]);
        f[34..42].copy_from_slice(&[0x9c, 0x40, 0, 53, 0, 13, 0xbe, 0xef]);
        assert_eq!(eth_dst(&f), Some(&[2, 0, 0, 0, 0, 2]));
        assert_eq!(eth_dst(&f[..13]), None);
        let ip = Ipv4::of_frame(&f).unwrap();
        assert_eq!(ip.version(), 4);
        assert!(!ip.is_fragment(), "only don't-fragment set");
        assert_eq!((ip.src(), ip.dst()), ([10, 200, 0, 1], [10, 200, 0, 2]));
        assert!(ip.tcp().is_none());
        let u = ip.udp().unwrap();
        assert_eq!(
            (u.src_port(), u.dst_port(), u.length(), u.checksum()),
            (40000, 53, 13, 0xbeef)
        );
        for cut in ETH_HLEN + IPV4_HLEN..ETH_HLEN + IPV4_HLEN + UDP_HLEN {
            assert!(
                Ipv4::of_frame(&f[..cut]).unwrap().udp().is_none(),
                "cut at {cut}"
            );
        }
        assert!(
            Ipv4::of_frame(&FRAME).unwrap().udp().is_none(),
            "TCP is not UDP"
        );
    }

    /// An IHL of 15 (60 bytes) that the buffer does not hold: the view
    /// reports it, and the TCP view refuses to start past the end.
    #[test]
    fn stated_lengths_are_reported_not_trusted() {
        let mut f = FRAME;
        f[ETH_HLEN] = 0x4f;
        let ip = Ipv4::of_frame(&f[..ETH_HLEN + 40]).unwrap();
        assert_eq!(ip.header_len(), 60);
        assert!(ip.tcp().is_none());
    }
}
