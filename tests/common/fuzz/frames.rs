//! Byte-level Ethernet/IPv4/TCP helpers for the stack harness, written
//! apart from smoltcp's parser on purpose: the harness must read and build
//! frames smoltcp would refuse, and must not share its bugs.

/// Ethernet header bytes.
pub const ETH: usize = 14;
/// TCP flag bits (RFC 9293 3.1).
pub const FIN: u8 = 0x01;
/// SYN
pub const SYN: u8 = 0x02;
/// RST
pub const RST: u8 = 0x04;
/// PSH
pub const PSH: u8 = 0x08;
/// ACK
pub const ACK: u8 = 0x10;

fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}
fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// One's-complement sum of big-endian 16-bit words (RFC 1071), a byte at a
/// time: slow and obviously right.
pub fn ones_sum(data: &[u8], mut acc: u32) -> u32 {
    for (i, &b) in data.iter().enumerate() {
        acc += if i % 2 == 0 {
            u32::from(b) << 8
        } else {
            u32::from(b)
        };
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc
}

/// `!fold(sum)`: the checksum field value for a sum taken with the field zero.
pub fn finish(acc: u32) -> u16 {
    let mut s = acc;
    while s > 0xffff {
        s = (s & 0xffff) + (s >> 16);
    }
    !(s as u16)
}

/// The IPv4 pseudo-header sum (RFC 9293 3.1) for `ip`'s addresses.
pub fn pseudo(ip: &[u8], proto: u8, len: usize) -> u32 {
    ones_sum(
        &ip[12..20],
        u32::from(proto) + (len as u32 & 0xffff) + (len as u32 >> 16),
    )
}

/// Where an IPv4 packet sits in `frame`: `(header length, total length)`,
/// if the frame is IPv4 and both lengths fit (smoltcp's `check_len` rules).
pub fn ipv4_bounds(frame: &[u8]) -> Option<(usize, usize)> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let total = usize::from(be16(ip, 2));
    (ihl >= 20 && ihl <= total && total <= ip.len()).then_some((ihl, total))
}

/// Rewrites the IPv4 header checksum and the TCP, UDP or ICMP checksum of
/// `frame` wherever the lengths allow, so that a frame the harness made up
/// is refused or taken for what it says, not for a bad checksum (a
/// `--cfg fuzzing` build of smoltcp verifies no checksum, a normal one
/// does: fixing them keeps both builds on the same path).
pub fn fix_checksums(frame: &mut [u8]) {
    let Some((ihl, total)) = ipv4_bounds(frame) else {
        return;
    };
    let ip = &mut frame[ETH..];
    ip[10..12].fill(0);
    let c = finish(ones_sum(&ip[..ihl], 0));
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let fragment = be16(ip, 6) & 0x3fff != 0;
    if fragment {
        return;
    }
    let proto = ip[9];
    let l4_len = total - ihl;
    let at = match proto {
        6 if l4_len >= 18 => 16,
        17 if l4_len >= 8 => 6,
        1 if l4_len >= 4 => 2,
        _ => return,
    };
    let len = if proto == 17 {
        // UDP sums its own length field's worth (RFC 768).
        let ulen = usize::from(be16(ip, ihl + 4));
        if ulen < 8 || ulen > l4_len {
            return;
        }
        ulen
    } else {
        l4_len
    };
    ip[ihl + at..ihl + at + 2].fill(0);
    let start = if proto == 1 {
        0
    } else {
        pseudo(ip, proto, len)
    };
    let mut c = finish(ones_sum(&ip[ihl..ihl + len], start));
    if proto == 17 && c == 0 {
        c = 0xffff; // zero means "no checksum" over IPv4
    }
    ip[ihl + at..ihl + at + 2].copy_from_slice(&c.to_be_bytes());
}

/// The TCP ports of an IPv4/TCP frame, read wherever the bytes are (no
/// length or checksum check): every frame smoltcp could take as TCP has
/// its ports here.
pub fn tcp_ports(frame: &[u8]) -> Option<(u16, u16)> {
    if frame.len() < ETH + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[ETH..];
    if ip[9] != 6 {
        return None;
    }
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    let t = ip.get(ihl..ihl + 4)?;
    Some((be16(t, 0), be16(t, 2)))
}

/// A TCP segment as the relay saw it.
#[derive(Clone, Copy, Debug, Default)]
pub struct Seg {
    /// Source and destination port.
    pub ports: (u16, u16),
    /// SEG.SEQ
    pub seq: u32,
    /// SEG.ACK (meaningful with the ACK flag).
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
    /// SEG.WND, unscaled.
    pub window: u16,
    /// Payload bytes.
    pub payload: usize,
    /// The window scale option (SYN segments).
    pub wscale: Option<u8>,
    /// The timestamp option's TSval.
    pub tsval: Option<u32>,
}

impl Seg {
    /// Sequence space the segment takes (SYN and FIN count one each).
    pub fn seq_len(&self) -> u32 {
        self.payload as u32 + u32::from(self.flags & SYN != 0) + u32::from(self.flags & FIN != 0)
    }
}

/// Parses a well-formed IPv4/TCP frame (lengths consistent; checksums not
/// checked: the relay reads what the stacks themselves sent).
pub fn parse_tcp(frame: &[u8]) -> Option<Seg> {
    let (ihl, total) = ipv4_bounds(frame)?;
    let ip = &frame[ETH..ETH + total];
    if ip[9] != 6 {
        return None;
    }
    let t = &ip[ihl..];
    if t.len() < 20 {
        return None;
    }
    let doff = usize::from(t[12] >> 4) * 4;
    if doff < 20 || doff > t.len() {
        return None;
    }
    let mut seg = Seg {
        ports: (be16(t, 0), be16(t, 2)),
        seq: be32(t, 4),
        ack: be32(t, 8),
        flags: t[13],
        window: be16(t, 14),
        payload: t.len() - doff,
        ..Seg::default()
    };
    let mut opts = &t[20..doff];
    while let Some(&kind) = opts.first() {
        match kind {
            0 => break,
            1 => {
                opts = &opts[1..];
                continue;
            }
            _ => {}
        }
        let Some(&len) = opts.get(1) else { break };
        let len = usize::from(len);
        if len < 2 || len > opts.len() {
            break;
        }
        match (kind, len) {
            (3, 3) => seg.wscale = Some(opts[2]),
            (8, 10) => seg.tsval = Some(be32(opts, 2)),
            _ => {}
        }
        opts = &opts[len..];
    }
    Some(seg)
}

/// Addresses of one end of a forged frame.
#[derive(Clone, Copy, Debug)]
pub struct Endpoint {
    /// MAC address.
    pub mac: [u8; 6],
    /// IPv4 address.
    pub ip: [u8; 4],
    /// TCP port.
    pub port: u16,
}

/// The fields of a TCP segment to build; `options` are raw bytes (padded
/// with NOPs to whole words, cut at 40 bytes).
pub struct TcpFields<'a> {
    /// SEG.SEQ
    pub seq: u32,
    /// SEG.ACK
    pub ack: u32,
    /// Flag bits.
    pub flags: u8,
    /// SEG.WND
    pub window: u16,
    /// Urgent pointer.
    pub urgent: u16,
    /// Option bytes.
    pub options: &'a [u8],
    /// Payload.
    pub payload: &'a [u8],
}

/// Builds an Ethernet/IPv4/TCP frame from `src` to `dst` into `out` with
/// every checksum right; returns its length (`out` must hold 14 + 20 + 60 +
/// the payload).
pub fn build_tcp(out: &mut [u8], src: &Endpoint, dst: &Endpoint, f: &TcpFields<'_>) -> usize {
    let opts = &f.options[..f.options.len().min(40)];
    let opt_len = opts.len().next_multiple_of(4);
    let tcp_len = 20 + opt_len + f.payload.len();
    let total = 20 + tcp_len;
    let frame = &mut out[..ETH + total];
    frame[0..6].copy_from_slice(&dst.mac);
    frame[6..12].copy_from_slice(&src.mac);
    frame[12..14].copy_from_slice(&[0x08, 0x00]);
    let ip = &mut frame[ETH..];
    ip[..20].copy_from_slice(&[
        0x45, 0, 0, 0, 0, 0, 0x40, 0, 64, 6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ]);
    ip[2..4].copy_from_slice(&(total as u16).to_be_bytes());
    ip[12..16].copy_from_slice(&src.ip);
    ip[16..20].copy_from_slice(&dst.ip);
    let t = &mut ip[20..];
    t[0..2].copy_from_slice(&src.port.to_be_bytes());
    t[2..4].copy_from_slice(&dst.port.to_be_bytes());
    t[4..8].copy_from_slice(&f.seq.to_be_bytes());
    t[8..12].copy_from_slice(&f.ack.to_be_bytes());
    t[12] = (((20 + opt_len) / 4) as u8) << 4;
    t[13] = f.flags;
    t[14..16].copy_from_slice(&f.window.to_be_bytes());
    t[16..18].fill(0);
    t[18..20].copy_from_slice(&f.urgent.to_be_bytes());
    t[20..20 + opts.len()].copy_from_slice(opts);
    t[20 + opts.len()..20 + opt_len].fill(1);
    t[20 + opt_len..tcp_len].copy_from_slice(f.payload);
    fix_checksums(frame);
    ETH + total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A frame `build_tcp` makes is one smoltcp parses with its checksums
    /// checked, and `parse_tcp` reads back what went in.
    #[test]
    fn built_frames_parse_both_ways() {
        use smoltcp::wire::{EthernetFrame, IpAddress, Ipv4Packet, TcpPacket};
        let a = Endpoint {
            mac: [2, 0, 0, 0, 0, 1],
            ip: [10, 200, 0, 1],
            port: 49152,
        };
        let b = Endpoint {
            mac: [2, 0, 0, 0, 0, 2],
            ip: [10, 200, 0, 2],
            port: 80,
        };
        let mut buf = [0u8; 200];
        let n = build_tcp(
            &mut buf,
            &a,
            &b,
            &TcpFields {
                seq: 7,
                ack: 9,
                flags: SYN | ACK,
                window: 512,
                urgent: 0,
                options: &[3, 3, 5, 8, 10, 0, 0, 0, 42, 0, 0, 0, 0],
                payload: b"hey",
            },
        );
        let eth = EthernetFrame::new_checked(&buf[..n]).unwrap();
        let ip = Ipv4Packet::new_checked(eth.payload()).unwrap();
        assert!(ip.verify_checksum());
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        let (s, d) = (
            IpAddress::Ipv4(ip.src_addr()),
            IpAddress::Ipv4(ip.dst_addr()),
        );
        assert!(tcp.verify_checksum(&s, &d));
        let seg = parse_tcp(&buf[..n]).unwrap();
        assert_eq!((seg.ports, seg.seq, seg.ack), ((49152, 80), 7, 9));
        assert_eq!((seg.wscale, seg.tsval, seg.payload), (Some(5), Some(42), 3));
        assert_eq!(seg.seq_len(), 4);
        assert_eq!(tcp_ports(&buf[..n]), Some((49152, 80)));
    }
}
