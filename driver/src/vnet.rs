//! The `virtio_net_hdr` in front of every frame of a TAP opened with
//! `IFF_VNET_HDR` ([`crate::tap`]) and of a packet socket with
//! `PACKET_VNET_HDR` ([`crate::packet`]). Both drivers use this module;
//! neither calls into the other. The checksum work behind the header is
//! [`crate::offload`]'s, which AF_XDP uses too.
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
//!   ([`offload::checksums_ok`]) and drops bad ones, so the stack can skip checking
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

use crate::header::ETH_HLEN;
use crate::offload;

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
    if hdr.flags & F_DATA_VALID != 0 || offload::checksums_ok(frame) {
        Ok(())
    } else {
        Err(RxError::Checksum)
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
    let Some(c) = offload::request_tcp_checksum(headers, payload_len) else {
        return VnetHdr::default();
    };
    let mut hdr = VnetHdr {
        flags: F_NEEDS_CSUM,
        csum_start: c.start,
        csum_offset: c.offset,
        ..VnetHdr::default()
    };
    if gso_size > 0 && c.payload_len > usize::from(gso_size) {
        hdr.gso_type = GSO_TCPV4;
        hdr.gso_size = gso_size;
        hdr.hdr_len = c.headers_len as u16;
    }
    hdr
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offload::testing::tcp_frame;
    use crate::offload::{checksums_ok, fold, sum};

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
