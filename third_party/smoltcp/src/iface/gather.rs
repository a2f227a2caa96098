//! ZCSTACK PATCH 20: TCP payloads handed to the device by reference.
//!
//! A device that sets [`DeviceCapabilities::tx_gather`] gets a TCP segment
//! with a payload through [`TxToken::consume_gather`](crate::phy::TxToken):
//! the interface writes the Ethernet, IP and TCP headers into the device's
//! buffer and passes the payload as borrowed slices — of the socket's ring
//! or of the [`TxRef`](crate::socket::tcp::TxRef)s it sends by reference —
//! instead of copying it after the headers. The TCP checksum, unless the
//! device computes it, is summed over the headers and the slices.

use super::packet::{IpPayload, Packet};
use super::PayloadSlice;
use crate::phy::DeviceCapabilities;
use crate::socket::tcp::{GatherSlice, PayloadParts};
use crate::wire::*;

/// ZCSTACK PATCH 26: `payload` as handed to the device: with the reference
/// it was read from when the socket named one for exactly these bytes, and
/// (ZCSTACK PATCH 30) the slices the socket says follow it in the segment.
pub(crate) fn payload_parts<'a>(payload: &'a [u8], parts: PayloadSlice<'a>) -> PayloadParts<'a> {
    match parts.as_slice().first() {
        Some(s) if core::ptr::eq(s.bytes(), payload) => parts,
        _ => PayloadParts::one(GatherSlice::borrowed(payload)),
    }
}

impl<'p> Packet<'p> {
    /// The payload to hand over as slices: a TCP segment's, if it has one.
    pub(crate) fn gather_payload(&self) -> Option<&'p [u8]> {
        match self.payload() {
            IpPayload::Tcp(repr) if !repr.payload.is_empty() => Some(repr.payload),
            _ => None,
        }
    }

    /// Emits the IP header and the TCP header into `buf` (exactly their
    /// length); the IP header's length and the TCP checksum cover `payload`,
    /// which the device sends after them.
    pub(crate) fn emit_gather_headers(
        &self,
        ip_repr: &IpRepr,
        buf: &mut [u8],
        payload: &[GatherSlice<'_>],
        caps: &DeviceCapabilities,
    ) {
        ip_repr.emit(&mut *buf, &caps.checksum);
        let IpPayload::Tcp(repr) = self.payload() else {
            unreachable!("only TCP payloads are gathered")
        };
        let mut header = *repr;
        header.payload = &[];
        // The same window clamp as `emit_payload`.
        if let Some(max_burst_size) = caps.max_burst_size {
            let max_segment_size =
                caps.max_transmission_unit - ip_repr.header_len() - header.header_len();
            let max_window_size = max_burst_size * max_segment_size;
            if header.window_len as usize > max_window_size {
                header.window_len = max_window_size as u16;
            }
        }
        let tcp = &mut buf[ip_repr.header_len()..];
        let mut packet = TcpPacket::new_unchecked(&mut *tcp);
        let mut no_checksum = caps.checksum.clone();
        no_checksum.tcp = crate::phy::Checksum::None;
        header.emit(
            &mut packet,
            &ip_repr.src_addr(),
            &ip_repr.dst_addr(),
            &no_checksum,
        );
        if caps.checksum.tcp.tx() {
            let len: usize = tcp.len() + payload.iter().map(|p| p.len()).sum::<usize>();
            let sum = !checksum::combine(&[
                checksum::pseudo_header(
                    &ip_repr.src_addr(),
                    &ip_repr.dst_addr(),
                    IpProtocol::Tcp,
                    len as u32,
                ),
                checksum::data(tcp),
                slices_checksum(tcp.len(), payload),
            ]);
            TcpPacket::new_unchecked(&mut *tcp).set_checksum(sum);
        }
    }
}

/// The one's complement sum (RFC 1071) of `slices` as if they followed
/// `before` bytes in one buffer: a slice that starts at an odd offset has
/// its sum byte-swapped (RFC 1071 2(B)).
pub(crate) fn slices_checksum(before: usize, slices: &[GatherSlice<'_>]) -> u16 {
    let mut sums = 0u32;
    let mut at = before;
    for s in slices {
        let c = checksum::data(s.bytes());
        sums += u32::from(if at % 2 == 1 { c.swap_bytes() } else { c });
        at += s.len();
    }
    while sums > 0xffff {
        sums = (sums & 0xffff) + (sums >> 16);
    }
    sums as u16
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn slices_sum_as_one_buffer() {
        let data: alloc::vec::Vec<u8> = (0..1001u32).map(|i| (i * 37 % 251) as u8).collect();
        for before in [0usize, 1, 20] {
            let mut whole = alloc::vec![0u8; before];
            whole.extend_from_slice(&data);
            let want = checksum::data(&whole);
            for cuts in [&[][..], &[1][..], &[3, 4, 500][..], &[7, 8, 9, 1000][..]] {
                let mut slices = alloc::vec::Vec::new();
                let mut from = 0;
                for &c in cuts {
                    slices.push(GatherSlice::borrowed(&data[from..c]));
                    from = c;
                }
                slices.push(GatherSlice::borrowed(&data[from..]));
                let got = checksum::combine(&[
                    checksum::data(&whole[..before]),
                    slices_checksum(before, &slices),
                ]);
                assert_eq!(got, want, "before {before}, cuts {cuts:?}");
            }
        }
    }
}
