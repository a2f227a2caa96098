//! The virtio-net header of a TAP with `IFF_VNET_HDR` (receive side) and
//! the checksums the driver verifies and asks the kernel for.
//!
//! Input: `[header: 10][gso_size: u16 LE][mode: u8][flip: u16 LE][frame…]`.
//! Mode bit 0 first gives the frame right checksums (so the fuzzer reaches
//! frames a peer really sends); bit 1 then corrupts the byte at `flip`.
//!
//! Promises checked: nothing panics; the header reads back to its bytes;
//! `parse_rx` accepts only what it documents (known flags, a GSO frame with
//! a segment size and its headers inside the frame, a partial checksum
//! that fits); for a frame the kernel vouched nothing for, `parse_rx` and
//! `checksums_ok` say exactly what an independent checksum check says
//! (RFC 1071 sums; a UDP checksum covers the UDP length, RFC 768);
//! `tx_header` on a frame the stack could send asks for a partial checksum
//! that, finished as the kernel does, makes the segment's checksum right,
//! asks for segmentation exactly when the payload exceeds the segment size,
//! changes nothing else, and is accepted by `parse_rx`.

use zcstack_driver::vnet::{
    self, F_DATA_VALID, F_NEEDS_CSUM, F_RSC_INFO, GSO_ECN, GSO_NONE, GSO_TCPV4, RxError,
    VNET_HDR_LEN, VnetHdr,
};

use super::frames::{ETH, finish, ones_sum, pseudo};

/// What a receiver that checks every checksum thinks of `frame`: `None` if
/// it is not IPv4 with consistent lengths, a fragment, or (UDP) has a bad
/// length field — frames the stack drops or does not checksum anyway.
fn reference(frame: &[u8]) -> Option<bool> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    if ihl < 20 || total < ihl || total > ip.len() {
        return None;
    }
    if finish(ones_sum(&ip[..ihl], 0)) != 0 {
        return Some(false);
    }
    if u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    let l4 = &ip[ihl..total];
    Some(match ip[9] {
        6 => finish(ones_sum(l4, pseudo(ip, 6, l4.len()))) == 0,
        17 if l4.len() >= 8 => {
            let ulen = usize::from(u16::from_be_bytes([l4[4], l4[5]]));
            if ulen < 8 || ulen > l4.len() {
                return None;
            }
            l4[6..8] == [0, 0] || finish(ones_sum(&l4[..ulen], pseudo(ip, 17, ulen))) == 0
        }
        1 => finish(ones_sum(l4, 0)) == 0,
        _ => true,
    })
}

/// Runs one input.
pub fn run(data: &[u8]) {
    if data.len() < VNET_HDR_LEN + 5 {
        return;
    }
    let hb: [u8; VNET_HDR_LEN] = data[..VNET_HDR_LEN].try_into().unwrap();
    let p = &data[VNET_HDR_LEN..];
    let gso = u16::from_le_bytes([p[0], p[1]]);
    let mode = p[2];
    let flip = usize::from(u16::from_le_bytes([p[3], p[4]]));
    let mut frame = p[5..].to_vec();
    if mode & 1 != 0 {
        super::frames::fix_checksums(&mut frame);
    }
    if mode & 2 != 0 && !frame.is_empty() {
        let at = flip % frame.len();
        frame[at] ^= (mode >> 2) | 1;
    }
    let frame = &frame[..];

    let hdr = VnetHdr::read(&hb);
    assert_eq!(hdr.to_bytes(), hb, "header bytes round trip");

    let r = vnet::parse_rx(&hdr, frame);
    let ok = zcstack_driver::offload::checksums_ok(frame);
    let want = reference(frame);
    if let Some(w) = want {
        assert_eq!(ok, w, "checksums_ok disagrees with the reference");
    } else {
        assert!(ok, "checksums_ok refused a frame it documents as passing");
    }
    match r {
        Ok(()) => {
            assert!(frame.len() >= ETH);
            assert_eq!(hdr.flags & !(F_NEEDS_CSUM | F_DATA_VALID | F_RSC_INFO), 0);
            match hdr.gso_type & !GSO_ECN {
                GSO_NONE => {}
                GSO_TCPV4 => {
                    assert!(hdr.gso_size > 0 && usize::from(hdr.hdr_len) <= frame.len())
                }
                t => panic!("accepted gso_type {t}"),
            }
            if hdr.flags & F_NEEDS_CSUM != 0 {
                let at = usize::from(hdr.csum_start) + usize::from(hdr.csum_offset);
                assert!(
                    at + 2 <= frame.len(),
                    "partial checksum field outside the frame"
                );
            } else if hdr.flags & F_DATA_VALID == 0 {
                assert!(ok, "accepted a frame whose checksums are wrong");
            }
        }
        Err(RxError::Checksum) => {
            assert_eq!(hdr.flags & (F_NEEDS_CSUM | F_DATA_VALID), 0);
            assert!(!ok);
        }
        Err(_) => {}
    }

    // Send side: what the TAP driver puts in front of a frame of the stack.
    let mut sent = frame.to_vec();
    let h = vnet::tx_header(&mut sent, gso);
    if h.flags & F_NEEDS_CSUM == 0 {
        assert_eq!(h, VnetHdr::default());
        assert_eq!(sent, frame, "no offload asked, nothing changed");
        return;
    }
    let cs = usize::from(h.csum_start);
    let field = cs + usize::from(h.csum_offset);
    assert_eq!(h.csum_offset, 16, "the TCP checksum field");
    assert!(field + 2 <= sent.len());
    assert_eq!(&sent[..field], &frame[..field], "only the checksum changed");
    assert_eq!(
        &sent[field + 2..],
        &frame[field + 2..],
        "only the checksum changed"
    );
    assert_eq!(
        vnet::parse_rx(&h, &sent),
        Ok(()),
        "our own header is accepted"
    );
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(u16::from_be_bytes([ip[2], ip[3]]));
    assert_eq!(cs, ETH + ihl);
    let doff = usize::from(ip[ihl + 12] >> 4) * 4;
    let payload = total - ihl - doff;
    if gso > 0 && payload > usize::from(gso) {
        assert_eq!(h.gso_type, GSO_TCPV4);
        assert_eq!(h.gso_size, gso);
        assert_eq!(usize::from(h.hdr_len), ETH + ihl + doff);
    } else {
        assert_eq!(h.gso_type, GSO_NONE);
    }
    // The kernel finishes the checksum over the rest of the frame
    // (skb_checksum_help). The stack's frames end where the IP packet
    // does, and it sends no fragments.
    let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
    if frame.len() == ETH + total && finish(ones_sum(&ip[..ihl], 0)) == 0 && !fragment {
        let mut done = sent.clone();
        let c = finish(ones_sum(&done[cs..], 0));
        done[field..field + 2].copy_from_slice(&c.to_be_bytes());
        assert_eq!(
            reference(&done),
            Some(true),
            "the finished partial checksum is wrong"
        );
    }
}
