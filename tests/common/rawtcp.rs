//! A scripted TCP peer on one end of the in-memory wire.
//!
//! Where two zcstack stacks cannot reproduce another TCP's behaviour (a
//! kernel's window probes, say), a test plays that TCP by hand: it builds
//! each segment with smoltcp's `wire` module, answers ARP, and records what
//! the stack sends back. No options beyond MSS, so the stack uses no window
//! scaling and no timestamps, and every number in the test is plain.

use std::net::Ipv4Addr;

use smoltcp::phy::ChecksumCapabilities;
use smoltcp::wire::{
    ArpOperation, ArpPacket, ArpRepr, EthernetAddress, EthernetFrame, EthernetProtocol,
    EthernetRepr, IpAddress, IpProtocol, Ipv4Packet, Ipv4Repr, TcpControl, TcpPacket, TcpRepr,
    TcpSeqNumber,
};
use zcstack_driver::wire::WireEnd;
use zcstack_driver::{Driver, Frame};

/// One TCP segment the stack sent to the peer (owned copy).
#[derive(Clone, Debug)]
pub struct Segment {
    /// SYN, FIN, RST, PSH or none.
    pub control: TcpControl,
    /// SEG.SEQ.
    pub seq: TcpSeqNumber,
    /// SEG.ACK, if the ACK flag was set.
    pub ack: Option<TcpSeqNumber>,
    /// SEG.WND (unscaled: the peer never offers window scaling).
    pub window: u16,
    /// Payload bytes.
    pub payload: Vec<u8>,
}

/// The scripted peer: its addresses, the stack's, and one connection's ports.
pub struct RawPeer {
    end: WireEnd,
    mac: EthernetAddress,
    ip: Ipv4Addr,
    stack_mac: EthernetAddress,
    stack_ip: Ipv4Addr,
    /// The peer's TCP port.
    pub port: u16,
    /// The stack's TCP port.
    pub stack_port: u16,
    rx: Vec<Frame>,
}

impl RawPeer {
    /// A peer at `ip` on `end`, talking to the stack at `stack_ip`/`stack_mac`.
    pub fn new(
        end: WireEnd,
        ip: Ipv4Addr,
        stack_ip: Ipv4Addr,
        stack_mac: [u8; 6],
        ports: (u16, u16),
    ) -> RawPeer {
        RawPeer {
            end,
            mac: EthernetAddress([0x02, 0, 0, 0, 0, 0x99]),
            ip,
            stack_mac: EthernetAddress(stack_mac),
            stack_ip,
            port: ports.0,
            stack_port: ports.1,
            rx: Vec::new(),
        }
    }

    /// Sends one segment to the stack.
    pub fn send(
        &mut self,
        control: TcpControl,
        seq: TcpSeqNumber,
        ack: Option<TcpSeqNumber>,
        window: u16,
        payload: &[u8],
    ) {
        self.send_as((self.ip, self.port), control, seq, ack, window, payload)
    }

    /// Sends one segment that claims to come from `from` (address, port): a
    /// spoofed source the peer does not own (it answers no ARP for it).
    pub fn send_as(
        &mut self,
        from: (Ipv4Addr, u16),
        control: TcpControl,
        seq: TcpSeqNumber,
        ack: Option<TcpSeqNumber>,
        window: u16,
        payload: &[u8],
    ) {
        let tcp = TcpRepr {
            src_port: from.1,
            dst_port: self.stack_port,
            control,
            seq_number: seq,
            ack_number: ack,
            window_len: window,
            window_scale: None,
            max_seg_size: (control == TcpControl::Syn).then_some(1460),
            sack_permitted: false,
            sack_ranges: [None, None, None],
            timestamp: None,
            payload,
        };
        let ip = Ipv4Repr {
            src_addr: from.0,
            dst_addr: self.stack_ip,
            next_header: IpProtocol::Tcp,
            payload_len: tcp.buffer_len(),
            hop_limit: 64,
        };
        let caps = ChecksumCapabilities::default();
        let (src, dst) = (IpAddress::Ipv4(from.0), IpAddress::Ipv4(self.stack_ip));
        self.transmit(
            EthernetProtocol::Ipv4,
            ip.buffer_len() + tcp.buffer_len(),
            |buf| {
                let mut packet = Ipv4Packet::new_unchecked(buf);
                ip.emit(&mut packet, &caps);
                tcp.emit(
                    &mut TcpPacket::new_unchecked(packet.payload_mut()),
                    &src,
                    &dst,
                    &caps,
                );
            },
        );
    }

    /// Asks the stack for its MAC address, as a host does before it first
    /// sends to it (the stack learns the peer's address from the request).
    pub fn announce(&mut self) {
        let request = ArpRepr::EthernetIpv4 {
            operation: ArpOperation::Request,
            source_hardware_addr: self.mac,
            source_protocol_addr: self.ip,
            target_hardware_addr: EthernetAddress([0; 6]),
            target_protocol_addr: self.stack_ip,
        };
        self.transmit(EthernetProtocol::Arp, request.buffer_len(), |buf| {
            request.emit(&mut ArpPacket::new_unchecked(buf));
        });
    }

    fn transmit(&mut self, ethertype: EthernetProtocol, len: usize, fill: impl FnOnce(&mut [u8])) {
        let mut frame = self.end.pool().alloc().expect("a free frame");
        let total = 14 + len;
        let mut eth = EthernetFrame::new_unchecked(&mut frame.room_mut()[..total]);
        EthernetRepr {
            src_addr: self.mac,
            dst_addr: self.stack_mac,
            ethertype,
        }
        .emit(&mut eth);
        fill(eth.payload_mut());
        frame.set_len(total);
        let mut out = vec![frame];
        self.end.tx_burst(&mut out).expect("wire");
        assert!(out.is_empty(), "wire queue full");
    }

    /// Receives what the stack sent: answers ARP requests for the peer's
    /// address and returns the TCP segments.
    pub fn receive(&mut self) -> Vec<Segment> {
        let mut rx = std::mem::take(&mut self.rx);
        self.end.rx_burst(&mut rx, 64).expect("wire");
        let mut segments = Vec::new();
        let mut arp_replies = Vec::new();
        for frame in rx.drain(..) {
            let Ok(eth) = EthernetFrame::new_checked(frame.data()) else {
                continue;
            };
            match eth.ethertype() {
                EthernetProtocol::Arp => {
                    let Ok(packet) = ArpPacket::new_checked(eth.payload()) else {
                        continue;
                    };
                    if let Ok(ArpRepr::EthernetIpv4 {
                        operation: ArpOperation::Request,
                        source_hardware_addr,
                        source_protocol_addr,
                        target_protocol_addr,
                        ..
                    }) = ArpRepr::parse(&packet)
                        && target_protocol_addr == self.ip
                    {
                        arp_replies.push((source_hardware_addr, source_protocol_addr));
                    }
                }
                EthernetProtocol::Ipv4 => {
                    let caps = ChecksumCapabilities::default();
                    let Ok(packet) = Ipv4Packet::new_checked(eth.payload()) else {
                        continue;
                    };
                    let Ok(ip) = Ipv4Repr::parse(&packet, &caps) else {
                        continue;
                    };
                    let Ok(tcp) = TcpPacket::new_checked(packet.payload()) else {
                        continue;
                    };
                    let (src, dst) = (IpAddress::Ipv4(ip.src_addr), IpAddress::Ipv4(ip.dst_addr));
                    let Ok(tcp) = TcpRepr::parse(&tcp, &src, &dst, &caps) else {
                        continue;
                    };
                    segments.push(Segment {
                        control: tcp.control,
                        seq: tcp.seq_number,
                        ack: tcp.ack_number,
                        window: tcp.window_len,
                        payload: tcp.payload.to_vec(),
                    });
                }
                _ => {}
            }
        }
        self.rx = rx;
        for (mac, ip) in arp_replies {
            let reply = ArpRepr::EthernetIpv4 {
                operation: ArpOperation::Reply,
                source_hardware_addr: self.mac,
                source_protocol_addr: self.ip,
                target_hardware_addr: mac,
                target_protocol_addr: ip,
            };
            self.transmit(EthernetProtocol::Arp, reply.buffer_len(), |buf| {
                reply.emit(&mut ArpPacket::new_unchecked(buf));
            });
        }
        segments
    }
}
