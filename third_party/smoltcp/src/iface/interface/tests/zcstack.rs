//! ZCSTACK PATCH 5 tests: a TCP socket sends its segments in runs per
//! egress visit (see `third_party/smoltcp/ZCSTACK-PATCHES.md`).

use std::collections::VecDeque;
use std::vec::Vec;

use crate::iface::{Config, Interface, SocketSet};
use crate::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use crate::socket::tcp;
use crate::time::Instant;
use crate::wire::{HardwareAddress, IpAddress, IpCidr, Ipv4Packet, TcpPacket};

/// A loopback with a small MTU that logs the source port of every TCP
/// segment carrying data, in the order the interface emits them.
struct Recorder {
    queue: VecDeque<Vec<u8>>,
    log: Vec<u16>,
}

struct Rx(Vec<u8>);

struct Tx<'a> {
    queue: &'a mut VecDeque<Vec<u8>>,
    log: &'a mut Vec<u16>,
}

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        let ip = Ipv4Packet::new_checked(&buf[..]).unwrap();
        let tcp = TcpPacket::new_checked(ip.payload()).unwrap();
        if !tcp.payload().is_empty() {
            self.log.push(tcp.src_port());
        }
        self.queue.push_back(buf);
        r
    }
}

impl Device for Recorder {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 576;
        caps.medium = Medium::Ip;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let buf = self.queue.pop_front()?;
        Some((
            Rx(buf),
            Tx {
                queue: &mut self.queue,
                log: &mut self.log,
            },
        ))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx {
            queue: &mut self.queue,
            log: &mut self.log,
        })
    }
}

fn socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 65536]),
        tcp::SocketBuffer::new(vec![0; 65536]),
    );
    s.set_nagle_enabled(false);
    s.set_ack_delay(None);
    // The runs are the point, not the congestion window (with a
    // controller feature enabled, the default would cap the burst).
    s.set_congestion_control(tcp::CongestionControl::None);
    s
}

/// Two connections with 20 segments each to send: the first egress visit
/// of each sends TCP_EGRESS_BURST (16) back to back, the next visit the
/// other 4, instead of alternating one segment at a time.
#[test]
fn zcstack_tcp_egress_sends_runs_per_socket() {
    let mut dev = Recorder {
        queue: VecDeque::new(),
        log: Vec::new(),
    };
    let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, Instant::ZERO);
    iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
    let mut sockets = SocketSet::new(vec![]);
    let mut clients = Vec::new();
    for port in [1001u16, 1002] {
        let mut server = socket();
        server.listen(port).unwrap();
        sockets.add(server);
        let mut client = socket();
        client
            .connect(
                iface.context(),
                (IpAddress::v4(127, 0, 0, 1), port),
                port + 1000,
            )
            .unwrap();
        clients.push(sockets.add(client));
    }
    let mut now = Instant::ZERO;
    for _ in 0..20 {
        iface.poll(now, &mut dev, &mut sockets);
        now += crate::time::Duration::from_millis(1);
    }
    for &h in &clients {
        let s = sockets.get_mut::<tcp::Socket>(h);
        assert_eq!(s.state(), tcp::State::Established);
        // 20 segments of 536 bytes (MSS for MTU 576).
        assert_eq!(s.send_slice(&[7; 20 * 536]).unwrap(), 20 * 536);
    }
    dev.log.clear();
    iface.poll(now, &mut dev, &mut sockets);
    let mut runs: Vec<(u16, usize)> = Vec::new();
    for &port in &dev.log {
        match runs.last_mut() {
            Some((p, n)) if *p == port => *n += 1,
            _ => runs.push((port, 1)),
        }
    }
    assert_eq!(runs, vec![(2001, 16), (2002, 16), (2001, 4), (2002, 4)]);
}
