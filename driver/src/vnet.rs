//! The `virtio_net_hdr` in front of every frame of a TAP opened with
//! `IFF_VNET_HDR` ([`crate::tap`]) and of a packet socket with
//! `PACKET_VNET_HDR` ([`crate::packet`]), and the Internet checksums the
//! offload paths need. Both drivers use this module; neither calls into
//! the other.
//!
//! Layout and meaning: `include/uapi/linux/virtio_net.h` and the virtio
//! spec, section 5.1.6 ("Device Operation"). Both use the 10-byte header
//! (no `num_buffers`) in the host's byte order (little-endian here; a
//! big-endian host would need `TUNSETVNETLE`; AF_PACKET always uses the
//! host's), so every field is read and written little-endian.
//!
//! * Receive ([`parse_rx`]): the kernel may hand us a TCP segment larger than
//!   the MTU (its TSO/GSO output, `gso_type` TCPV4) and with a partial
//!   checksum (`NEEDS_CSUM`: only the pseudo-header sum is in the field).
//!   Such frames were built by this machine's kernel, so the driver trusts
//!   them, as the kernel itself does; it verifies the checksums of frames
//!   that carry neither `NEEDS_CSUM` nor `DATA_VALID` itself
//!   ([`checksums_ok`]) and drops bad ones, so the stack can skip checking
//!   any. A header that does not make sense is an error, never a panic.
//! * Transmit ([`tx_header`]): the stack leaves TCP checksums at zero; the
//!   driver writes the pseudo-header sum into the field and asks the kernel
//!   to finish it (`NEEDS_CSUM`), and for a segment longer than the MSS asks
//!   it to cut the segment into MSS-sized ones (`GSO_TCPV4`).

/// Bytes of the header (`struct virtio_net_hdr`).
pub const VNET_HDR_LEN: usize = 10;

/// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: checksum from `csum_start` on, stored at
/// `csum_start + csum_offset`, still to be computed.
pub const F_NEEDS_CSUM: u8 = 1;
/// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksums were verified.
pub const F_DATA_VALID: u8 = 2;
/// `VIRTIO_NET_HDR_F_RSC_INFO`: coalescing info (not used by TAP).
pub const F_RSC_INFO: u8 = 4;
/// `VIRTIO_NET_HDR_GSO_NONE`.
pub const GSO_NONE: u8 = 0;
/// `VIRTIO_NET_HDR_GSO_TCPV4`.
pub const GSO_TCPV4: u8 = 1;
/// `VIRTIO_NET_HDR_GSO_ECN` (a flag on `gso_type`).
pub const GSO_ECN: u8 = 0x80;

const ETH_HLEN: usize = 14;
const ETHERTYPE_IPV4: [u8; 2] = [0x08, 0x00];
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
/// Offset of the checksum in a TCP header.
const TCP_CSUM_OFF: usize = 16;

/// A `struct virtio_net_hdr`, fields in host order.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VnetHdr {
    /// `F_*` bits.
    pub flags: u8,
    /// `GSO_*`.
    pub gso_type: u8,
    /// Length of the headers to copy into each segment.
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts (from the Ethernet header).
    pub csum_start: u16,
    /// Where, from `csum_start`, the checksum goes.
    pub csum_offset: u16,
}

impl VnetHdr {
    /// Reads a header from the first [`VNET_HDR_LEN`] bytes of `b`.
    pub fn read(b: &[u8; VNET_HDR_LEN]) -> VnetHdr {
        let u = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        VnetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: u(2),
            gso_size: u(4),
            csum_start: u(6),
            csum_offset: u(8),
        }
    }

    /// The header's bytes.
    pub fn to_bytes(self) -> [u8; VNET_HDR_LEN] {
        let mut b = [0u8; VNET_HDR_LEN];
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Why a received frame was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxError {
    /// Shorter than the header plus an Ethernet header.
    Short,
    /// Flag bits this driver does not know.
    UnknownFlags,
    /// A segmentation type other than none or TCPv4.
    UnsupportedGso,
    /// `gso_size` 0, or `hdr_len` beyond the frame, for a GSO frame.
    BadGso,
    /// `csum_start + csum_offset` leaves no room for the checksum in the frame.
    BadCsum,
    /// The frame's own IPv4/TCP/UDP/ICMP checksum is wrong.
    Checksum,
}

/// Checks the header the kernel put in front of a received `frame` (the
/// Ethernet frame after the header) and, for a frame the kernel did not
/// vouch for, its checksums. Never panics, whatever the bytes.
pub fn parse_rx(hdr: &VnetHdr, frame: &[u8]) -> Result<(), RxError> {
    if frame.len() < ETH_HLEN {
        return Err(RxError::Short);
    }
    if hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID | F_RSC_INFO) != 0 {
        return Err(RxError::UnknownFlags);
    }
    match hdr.gso_type & !GSO_ECN {
        GSO_NONE => {}
        GSO_TCPV4 => {
            if hdr.gso_size == 0 || usize::from(hdr.hdr_len) > frame.len() {
                return Err(RxError::BadGso);
            }
        }
        _ => return Err(RxError::UnsupportedGso),
    }
    if hdr.flags & F_NEEDS_CSUM != 0 {
        let at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
        if at + 2 > frame.len() {
            return Err(RxError::BadCsum);
        }
        return Ok(());
    }
    if hdr.flags & F_DATA_VALID != 0 || checksums_ok(frame) {
        Ok(())
    } else {
        Err(RxError::Checksum)
    }
}

/// Whether an Ethernet frame's IPv4 header checksum and its TCP, UDP or ICMP
/// checksum are right. Frames that are not IPv4, are fragments, or whose
/// lengths do not add up pass (the stack parses and drops malformed ones);
/// never panics.
pub fn checksums_ok(frame: &[u8]) -> bool {
    if frame.len() < ETH_HLEN + 20 || frame[12..14] != ETHERTYPE_IPV4 {
        return true;
    }
    let ip = &frame[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return true;
    }
    if fold(sum(&ip[..ihl], 0)) != 0xffff {
        return false;
    }
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if fragment {
        return true;
    }
    let l4 = &ip[ihl..total];
    match ip[9] {
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

/// The header to send in front of `frame`, an Ethernet frame the stack
/// built. For a TCP/IPv4 segment it writes the pseudo-header sum into the
/// TCP checksum field (which the stack left at zero) and asks the kernel to
/// finish the checksum; if `gso_size` is non-zero and the payload is longer,
/// it asks the kernel to segment. Anything else goes as it is (the stack
/// computed its checksums). Never panics, whatever the bytes.
pub fn tx_header(frame: &mut [u8], gso_size: u16) -> VnetHdr {
    tx_header_split(frame, 0, gso_size)
}

/// [`tx_header`] for a packet sent as `headers` (Ethernet, IPv4 and the
/// whole TCP header) followed by `payload_len` more bytes that are not in
/// the buffer (a gathered send). The IPv4 total length must count them.
pub fn tx_header_split(headers: &mut [u8], payload_len: usize, gso_size: u16) -> VnetHdr {
    let frame = headers;
    let none = VnetHdr::default();
    if frame.len() < ETH_HLEN + 20 || frame[12..14] != ETHERTYPE_IPV4 {
        return none;
    }
    let ip = &frame[ETH_HLEN..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ip[9] != PROTO_TCP
        || ihl < 20
        || total > ip.len() + payload_len
        || total < ihl + 20
        || ip.len() < ihl + 20
    {
        return none;
    }
    let doff = usize::from(ip[ihl + 12] >> 4) * 4;
    if doff < 20 || ihl + doff > total || ihl + doff > ip.len() {
        return none;
    }
    let seg_len = total - ihl;
    let partial = fold(pseudo_sum(ip, PROTO_TCP, seg_len));
    let at = ETH_HLEN + ihl + TCP_CSUM_OFF;
    frame[at..at + 2].copy_from_slice(&partial.to_be_bytes());
    let mut hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: (ETH_HLEN + ihl) as u16,
        csum_offset: TCP_CSUM_OFF as u16,
        ..VnetHdr::default()
    };
    if gso_size > 0 && seg_len - doff > usize::from(gso_size) {
        hdr.gso_type = GSO_TCPV4;
        hdr.gso_size = gso_size;
        hdr.hdr_len = (ETH_HLEN + ihl + doff) as u16;
    }
    hdr
}

/// The IPv4 pseudo-header's sum (RFC 793 3.1, RFC 768) for `ip`'s addresses.
fn pseudo_sum(ip: &[u8], proto: u8, l4_len: usize) -> u32 {
    sum(&ip[12..20], u32::from(proto) + l4_len as u32)
}

/// One's-complement sum of `b` as big-endian 16-bit words (an odd last byte
/// padded with zero), added to `acc`, not yet folded (RFC 1071).
fn sum(b: &[u8], acc: u32) -> u32 {
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
fn fold(mut s: u32) -> u16 {
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    s as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An Ethernet frame with an IPv4/TCP segment from 10.200.1.1 to
    /// 10.200.1.2 carrying `payload`, all checksums right.
    fn tcp_frame(payload: &[u8]) -> Vec<u8> {
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
        let tc = !fold(sum(&f[34..], pseudo_sum(&f[14..], 6, f.len() - 34)));
        f[50..52].copy_from_slice(&tc.to_be_bytes());
        f
    }

    #[test]
    fn header_bytes_round_trip_little_endian() {
        let bytes = [1u8, 1, 54, 0, 0xb4, 0x05, 34, 0, 16, 0];
        let h = VnetHdr::read(&bytes);
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 54,
                gso_size: 1460,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(h.to_bytes(), bytes);
    }

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
        let uc = !fold(sum(&f[34..46], pseudo_sum(&f[14..], PROTO_UDP, 12)));
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

    #[test]
    fn received_headers_that_make_no_sense_are_errors() {
        let f = tcp_frame(&[7; 100]);
        let good = VnetHdr {
            flags: F_NEEDS_CSUM,
            gso_type: GSO_TCPV4,
            hdr_len: 54,
            gso_size: 50,
            csum_start: 34,
            csum_offset: 16,
        };
        assert_eq!(parse_rx(&good, &f), Ok(()));
        let cases = [
            (
                VnetHdr {
                    gso_size: 0,
                    ..good
                },
                RxError::BadGso,
            ),
            (
                VnetHdr {
                    hdr_len: 5000,
                    ..good
                },
                RxError::BadGso,
            ),
            (
                VnetHdr {
                    csum_start: 200,
                    ..good
                },
                RxError::BadCsum,
            ),
            (
                VnetHdr {
                    csum_start: 0xffff,
                    csum_offset: 0xffff,
                    ..good
                },
                RxError::BadCsum,
            ),
            (
                VnetHdr {
                    gso_type: 4,
                    ..good
                },
                RxError::UnsupportedGso,
            ),
            (
                VnetHdr {
                    gso_type: 3,
                    ..good
                },
                RxError::UnsupportedGso,
            ),
            (
                VnetHdr {
                    flags: 0x40,
                    ..good
                },
                RxError::UnknownFlags,
            ),
        ];
        for (h, want) in cases {
            assert_eq!(parse_rx(&h, &f), Err(want), "{h:?}");
        }
        assert_eq!(parse_rx(&good, &f[..10]), Err(RxError::Short));
        // Literal bytes: gso TCPV4 with gso_size 0; csum_start past the end.
        let raw = VnetHdr::read(&[1, 1, 54, 0, 0, 0, 34, 0, 16, 0]);
        assert_eq!(parse_rx(&raw, &f), Err(RxError::BadGso));
        let raw = VnetHdr::read(&[1, 0, 0, 0, 0, 0, 0xff, 0x7f, 16, 0]);
        assert_eq!(parse_rx(&raw, &f), Err(RxError::BadCsum));
        // No flags: the driver checks the frame's own checksums.
        assert_eq!(parse_rx(&VnetHdr::default(), &f), Ok(()));
        let mut bad = f.clone();
        bad[60] ^= 0x10;
        assert_eq!(parse_rx(&VnetHdr::default(), &bad), Err(RxError::Checksum));
        let valid = VnetHdr {
            flags: F_DATA_VALID,
            ..VnetHdr::default()
        };
        assert_eq!(
            parse_rx(&valid, &bad),
            Ok(()),
            "DATA_VALID is the kernel's word"
        );
    }

    #[test]
    fn random_headers_and_frames_never_panic() {
        let mut rng = fastrand::Rng::with_seed(7);
        let f = tcp_frame(&[1; 300]);
        for _ in 0..20_000 {
            let mut hb = [0u8; VNET_HDR_LEN];
            rng.fill(&mut hb);
            let cut = rng.usize(..=f.len());
            let mut frame = f[..cut].to_vec();
            if rng.bool() {
                let i = rng.usize(..frame.len().max(1));
                if let Some(b) = frame.get_mut(i) {
                    *b = rng.u8(..);
                }
            }
            let _ = parse_rx(&VnetHdr::read(&hb), &frame);
            let _ = checksums_ok(&frame);
            let _ = tx_header(&mut frame, rng.u16(..));
        }
    }

    #[test]
    fn tx_header_asks_for_partial_checksum_and_segmentation() {
        let want = tcp_frame(&[9; 3000]);
        let mut f = want.clone();
        f[50..52].copy_from_slice(&[0, 0]); // as the stack leaves it
        let h = tx_header(&mut f, 1448);
        assert_eq!(
            h,
            VnetHdr {
                flags: F_NEEDS_CSUM,
                gso_type: GSO_TCPV4,
                hdr_len: 54,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        // Finishing the checksum as the kernel does (sum from csum_start,
        // starting from the partial value) gives the full checksum.
        let done = !fold(sum(&f[34..], 0));
        f[50..52].copy_from_slice(&done.to_be_bytes());
        assert_eq!(f, want);
        // Short segment: checksum only, no segmentation.
        let mut small = tcp_frame(b"hi");
        assert_eq!(tx_header(&mut small, 1448).gso_type, GSO_NONE);
        // Not TCP: nothing asked.
        let mut arp = vec![0xff; 42];
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        assert_eq!(tx_header(&mut arp, 1448), VnetHdr::default());
    }

    /// Headers alone with the payload counted but not in the buffer (a
    /// gathered send): the same header and partial checksum as for the
    /// whole frame; a total length beyond headers + payload asks for nothing.
    #[test]
    fn split_header_matches_the_whole_frame() {
        let whole = tcp_frame(&[5; 3001]);
        let mut f = whole.clone();
        f[50..52].copy_from_slice(&[0, 0]);
        let mut headers = f[..54].to_vec();
        let want = tx_header(&mut f, 1448);
        assert_eq!(tx_header_split(&mut headers, 3001, 1448), want);
        assert_eq!(headers, f[..54]);
        let mut short = whole[..54].to_vec();
        assert_eq!(tx_header_split(&mut short, 3000, 1448), VnetHdr::default());
        // A TCP header cut short in the buffer is never read or written.
        let mut cut = whole[..40].to_vec();
        assert_eq!(tx_header_split(&mut cut, 3015, 1448), VnetHdr::default());
    }
}
