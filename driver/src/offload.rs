//! Checksum work a driver does for the stack: Internet checksums (RFC
//! 1071), the IPv4 pseudo-header (RFC 9293 section 3.1, RFC 768),
//! verifying a received frame's checksums, and asking a device to finish a
//! TCP checksum on transmit. The TAP and packet-socket drivers put such a
//! request in a virtio-net header ([`crate::vnet`]); AF_XDP puts it in TX
//! metadata ([`crate::xdp`]). Neither calls into the other.
//!
//! Every function here takes any bytes and never panics.

use crate::header::{ETH_HLEN, IPV4_HLEN, Ipv4, PROTO_ICMP, PROTO_TCP, PROTO_UDP, TCP_CSUM_OFF};

/// A TCP checksum the device is asked to finish: the one's-complement sum
/// of the packet from `start` to its end, stored at `start + offset`. The
/// checksum field already holds the pseudo-header's sum, as both a
/// virtio-net `NEEDS_CSUM` header and AF_XDP's `XDP_TXMD_FLAGS_CHECKSUM`
/// expect.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpCsum {
    /// Where the TCP header starts, counted from the Ethernet header.
    pub start: u16,
    /// Where the checksum field is, counted from `start`.
    pub offset: u16,
    /// Ethernet, IPv4 and TCP header bytes (what each segment repeats when
    /// the device segments).
    pub headers_len: usize,
    /// TCP payload bytes.
    pub payload_len: usize,
}

/// Prepares a TCP/IPv4 segment for a device that finishes its checksum:
/// the segment is `headers` (Ethernet, IPv4 and the whole TCP header,
/// maybe payload) followed by `payload_len` more bytes that are not in the
/// buffer (a gathered send; 0 when the frame is whole), and the IPv4 total
/// length counts them. Writes the pseudo-header sum into the TCP checksum
/// field (which the stack left at zero) and says where the checksum goes.
///
/// `None`, with nothing written, for anything else (not TCP over IPv4, or
/// lengths that do not add up): the stack computed those checksums itself.
pub fn request_tcp_checksum(headers: &mut [u8], payload_len: usize) -> Option<TcpCsum> {
    let ip = Ipv4::of_frame(headers)?;
    let tcp = ip.tcp()?;
    let (ihl, total, doff) = (ip.header_len(), ip.total_len(), tcp.header_len());
    if ihl < IPV4_HLEN
        || total > ip.bytes().len() + payload_len
        || total < ihl + 20
        || doff < 20
        || ihl + doff > total
        || ihl + doff > ip.bytes().len()
    {
        return None;
    }
    let seg_len = total - ihl;
    let partial = fold(pseudo_sum(ip, PROTO_TCP, seg_len));
    let start = ETH_HLEN + ihl;
    headers[start + TCP_CSUM_OFF..start + TCP_CSUM_OFF + 2].copy_from_slice(&partial.to_be_bytes());
    Some(TcpCsum {
        start: start as u16,
        offset: TCP_CSUM_OFF as u16,
        headers_len: start + doff,
        payload_len: seg_len - doff,
    })
}

/// Whether an Ethernet frame's IPv4 header checksum and its TCP, UDP or ICMP
/// checksum are right. Frames that are not IPv4, are fragments, or whose
/// lengths do not add up pass (the stack parses and drops malformed ones).
pub fn checksums_ok(frame: &[u8]) -> bool {
    let Some(ip) = Ipv4::of_frame(frame) else {
        return true;
    };
    let (ihl, total) = (ip.header_len(), ip.total_len());
    if ihl < IPV4_HLEN || total < ihl || total > ip.bytes().len() {
        return true;
    }
    let b = ip.bytes();
    if fold(sum(&b[..ihl], 0)) != 0xffff {
        return false;
    }
    if ip.is_fragment() {
        return true;
    }
    let l4 = &b[ihl..total];
    match ip.protocol() {
        PROTO_TCP => fold(sum(l4, pseudo_sum(ip, PROTO_TCP, l4.len()))) == 0xffff,
        PROTO_UDP if l4.len() >= 8 => {
            // The checksum covers the UDP length, which may be less than
            // the IP payload (RFC 768; smoltcp and Linux ignore what
            // follows); a length outside the payload is the stack's to drop.
            let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if !(8..=l4.len()).contains(&ulen) {
                return true;
            }
            // A zero UDP checksum means "none" over IPv4 (RFC 768).
            l4[6..8] == [0, 0] || fold(sum(&l4[..ulen], pseudo_sum(ip, PROTO_UDP, ulen))) == 0xffff
        }
        PROTO_ICMP => fold(sum(l4, 0)) == 0xffff,
        _ => true,
    }
}

/// The IPv4 pseudo-header's sum (RFC 9293 section 3.1, RFC 768) for
/// `ip`'s addresses, not yet folded.
pub(crate) fn pseudo_sum(ip: Ipv4<'_>, proto: u8, l4_len: usize) -> u32 {
    sum(ip.addrs(), u32::from(proto) + l4_len as u32)
}

/// One's-complement sum of `b` as big-endian 16-bit words (an odd last byte
/// padded with zero), added to `acc`, not yet folded (RFC 1071).
pub fn sum(b: &[u8], acc: u32) -> u32 {
    let mut acc = u64::from(acc);
    let mut words = b.chunks_exact(8);
    for w in &mut words {
        let x = u64::from_be_bytes([w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7]]);
        acc += (x >> 48) + ((x >> 32) & 0xffff) + ((x >> 16) & 0xffff) + (x & 0xffff);
    }
    let mut rest = words.remainder().chunks_exact(2);
    for w in &mut rest {
        acc += u64::from(u16::from_be_bytes([w[0], w[1]]));
    }
    if let [last] = rest.remainder() {
        acc += u64::from(*last) << 8;
    }
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a sum to 16 bits.
pub fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

/// Test frames with right checksums, shared with [`crate::vnet`]'s tests.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;

    /// An Ethernet frame with an IPv4/TCP segment from 10.200.1.1 to
    /// 10.200.1.2 carrying `payload`, all checksums right.
    pub(crate) fn tcp_frame(payload: &[u8]) -> Vec<u8> {
        let mut f = vec![
            2, 0x5a, 10, 200, 1, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
            0x45, 0, 0, 0, 0x12, 0x34, 0x40, 0, 64, 6, 0, 0, 10, 200, 1, 1, 10, 200, 1,
            2, // IPv4
            0x9c, 0x40, 0, 7, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0,
            0, // TCP, doff 5, PSH|ACK
        ];
        f.extend_from_slice(payload);
        let total = (f.len() - ETH_HLEN) as u16;
        f[16..18].copy_from_slice(&total.to_be_bytes());
        let hc = !fold(sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&hc.to_be_bytes());
        let ip = Ipv4::of_frame(&f).unwrap();
        let tc = !fold(sum(&f[34..], pseudo_sum(ip, 6, f.len() - 34)));
        f[50..52].copy_from_slice(&tc.to_be_bytes());
        f
    }
}

#[cfg(test)]
mod tests {
    use super::testing::tcp_frame;
    use super::*;

    #[test]
    fn checksum_of_known_bytes() {
        // RFC 1071's example: 0001 f203 f4f5 f6f7 sums to ddf2.
        assert_eq!(
            fold(sum(&[0, 1, 0xf2, 3, 0xf4, 0xf5, 0xf6, 0xf7], 0)),
            0xddf2
        );
        // Odd length: the last byte is the high half of a word.
        assert_eq!(fold(sum(&[0, 1, 0xf2], 0)), 0xf201);
        let f = tcp_frame(b"hello, world");
        assert!(checksums_ok(&f));
        let mut bad = f.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(!checksums_ok(&bad), "a flipped payload bit is caught");
        let mut bad = f.clone();
        bad[22] ^= 1; // TTL: IPv4 header checksum
        assert!(!checksums_ok(&bad));
    }

    /// A UDP checksum covers the UDP length, not the IP payload: a datagram
    /// with bytes after it inside the IP packet is good if its own
    /// checksum is (found by fuzzing: it used to be refused), and a UDP
    /// length outside the payload is not the driver's to judge.
    #[test]
    fn udp_checksum_covers_the_udp_length() {
        let mut f = vec![
            2, 0x5a, 10, 200, 1, 2, 2, 0, 0, 0, 0, 1, 0x08, 0x00, // Ethernet
            0x45, 0, 0, 36, 0x12, 0x34, 0x40, 0, 64, 17, 0, 0, 10, 200, 1, 1, 10, 200, 1,
            2, // IPv4, 36 bytes
            0x13, 0x88, 0, 53, 0, 12, 0, 0, b'd', b'n', b's', b'?', // UDP, length 12
            0xde, 0xad, 0xbe, 0xef, // inside the IP packet, after the datagram
        ];
        let hc = !fold(sum(&f[14..34], 0));
        f[24..26].copy_from_slice(&hc.to_be_bytes());
        let ip = Ipv4::of_frame(&f).unwrap();
        let uc = !fold(sum(&f[34..46], pseudo_sum(ip, PROTO_UDP, 12)));
        f[40..42].copy_from_slice(&uc.to_be_bytes());
        assert!(checksums_ok(&f), "the datagram's own checksum is right");
        let mut bad = f.clone();
        bad[45] ^= 1;
        assert!(!checksums_ok(&bad), "a flipped datagram bit is caught");
        let mut long = f.clone();
        long[38..40].copy_from_slice(&40u16.to_be_bytes());
        assert!(
            checksums_ok(&long),
            "a UDP length past the packet: the stack drops it"
        );
    }

    /// The request leaves the pseudo-header sum in the field; finishing it
    /// as a device does (sum from `start`, store the complement) gives the
    /// segment's real checksum.
    #[test]
    fn a_request_finished_as_the_device_does_gives_the_checksum() {
        let want = tcp_frame(&[9; 3000]);
        let mut f = want.clone();
        f[50..52].copy_from_slice(&[0, 0]); // as the stack leaves it
        let c = request_tcp_checksum(&mut f, 0).unwrap();
        assert_eq!(
            c,
            TcpCsum {
                start: 34,
                offset: 16,
                headers_len: 54,
                payload_len: 3000
            }
        );
        let at = usize::from(c.start + c.offset);
        let done = !fold(sum(&f[usize::from(c.start)..], 0));
        f[at..at + 2].copy_from_slice(&done.to_be_bytes());
        assert_eq!(f, want);
        // Headers alone, the payload elsewhere: the same request and bytes.
        let mut headers = want[..54].to_vec();
        headers[50..52].copy_from_slice(&[0, 0]);
        assert_eq!(request_tcp_checksum(&mut headers, 3000), Some(c));
        let mut whole = want.clone();
        whole[50..52].copy_from_slice(&[0, 0]);
        request_tcp_checksum(&mut whole, 0);
        assert_eq!(headers, whole[..54]);
    }

    /// Nothing is asked, and nothing written, for frames that are not TCP
    /// over IPv4 or whose lengths do not add up.
    #[test]
    fn other_frames_are_left_alone() {
        let mut arp = vec![0xff; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let before = arp.clone();
        assert_eq!(request_tcp_checksum(&mut arp, 0), None);
        assert_eq!(arp, before);
        let f = tcp_frame(&[1; 100]);
        // Total length past headers + payload.
        let mut short = f[..54].to_vec();
        assert_eq!(request_tcp_checksum(&mut short, 99), None);
        assert_eq!(short, f[..54]);
        // IHL 4 (16 bytes): malformed.
        let mut bad = f.clone();
        bad[14] = 0x44;
        assert_eq!(request_tcp_checksum(&mut bad, 0), None);
        // Data offset 4: malformed.
        let mut bad = f.clone();
        bad[46] = 0x40;
        assert_eq!(request_tcp_checksum(&mut bad, 0), None);
        for cut in 0..f.len() {
            let mut c = f[..cut].to_vec();
            let _ = request_tcp_checksum(&mut c, 0);
            let _ = checksums_ok(&c);
        }
    }
}
