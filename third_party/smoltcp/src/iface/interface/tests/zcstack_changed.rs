//! ZCSTACK PATCH 24 tests: `Interface::take_changed` lists the TCP sockets
//! a segment or a timer changed, each once, and no others; a socket closed
//! by its timeout says so (see `third_party/smoltcp/ZCSTACK-PATCHES.md`).

use std::collections::VecDeque;
use std::vec::Vec;

use crate::iface::{Config, Interface, SocketHandle, SocketSet};
use crate::phy::{self, ChecksumCapabilities, Device, DeviceCapabilities, Medium};
use crate::socket::tcp;
use crate::time::{Duration, Instant};
use crate::wire::{HardwareAddress, IpAddress, IpCidr};

/// A loopback: what the interface sends, it receives next; `drop` loses
/// everything sent (a peer that went away).
struct Loop {
    queue: VecDeque<Vec<u8>>,
    drop: bool,
}

struct Rx(Vec<u8>);
struct Tx<'a>(&'a mut VecDeque<Vec<u8>>, bool);

impl phy::RxToken for Rx {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for Tx<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buf = vec![0; len];
        let r = f(&mut buf);
        if !self.1 {
            self.0.push_back(buf);
        }
        r
    }
}

impl Device for Loop {
    type RxToken<'a> = Rx;
    type TxToken<'a> = Tx<'a>;

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.max_transmission_unit = 1500;
        caps.medium = Medium::Ip;
        caps.checksum = ChecksumCapabilities::ignored();
        caps
    }

    fn receive(&mut self, _: Instant) -> Option<(Rx, Tx<'_>)> {
        let buf = self.queue.pop_front()?;
        Some((Rx(buf), Tx(&mut self.queue, self.drop)))
    }

    fn transmit(&mut self, _: Instant) -> Option<Tx<'_>> {
        Some(Tx(&mut self.queue, self.drop))
    }
}

fn socket() -> tcp::Socket<'static> {
    let mut s = tcp::Socket::new(
        tcp::SocketBuffer::new(vec![0; 4096]),
        tcp::SocketBuffer::new(vec![0; 4096]),
    );
    s.set_ack_delay(None);
    s
}

struct Bed {
    dev: Loop,
    iface: Interface,
    sockets: SocketSet<'static>,
    now: Instant,
}

impl Bed {
    fn new() -> Bed {
        let mut dev = Loop {
            queue: VecDeque::new(),
            drop: false,
        };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, Instant::ZERO);
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::v4(127, 0, 0, 1), 8)).unwrap());
        Bed {
            dev,
            iface,
            sockets: SocketSet::new(vec![]),
            now: Instant::ZERO,
        }
    }

    /// Polls until the loopback is quiet; 1 ms passes per poll.
    fn settle(&mut self) {
        for _ in 0..50 {
            self.iface.poll(self.now, &mut self.dev, &mut self.sockets);
            self.now += Duration::from_millis(1);
            if self.dev.queue.is_empty() {
                break;
            }
        }
    }

    fn changed(&mut self) -> Vec<SocketHandle> {
        let mut out = Vec::new();
        self.iface.take_changed(&mut self.sockets, &mut out);
        out.sort();
        out
    }

    /// A listener on `port` and a client connected to it, established.
    fn pair(&mut self, port: u16) -> (SocketHandle, SocketHandle) {
        let mut server = socket();
        server.listen(port).unwrap();
        let server = self.sockets.add(server);
        let mut client = socket();
        client
            .connect(
                self.iface.context(),
                (IpAddress::v4(127, 0, 0, 1), port),
                port + 1000,
            )
            .unwrap();
        let client = self.sockets.add(client);
        self.settle();
        for h in [server, client] {
            assert_eq!(
                self.sockets.get::<tcp::Socket>(h).state(),
                tcp::State::Established
            );
        }
        (server, client)
    }
}

/// Data for one connection lists its receiver (and the sender, whose data
/// the ACK freed), once however many segments came; the idle connection is
/// not listed; a second take is empty.
#[test]
fn zcstack_take_changed_lists_only_sockets_a_segment_changed() {
    let mut bed = Bed::new();
    let (server_a, client_a) = bed.pair(1001);
    let (server_b, client_b) = bed.pair(1002);
    let all = bed.changed();
    for h in [server_a, client_a, server_b, client_b] {
        assert!(all.contains(&h), "{h} completed a handshake: {all:?}");
    }
    assert!(bed.changed().is_empty());

    // Three segments' worth from client A.
    let s = bed.sockets.get_mut::<tcp::Socket>(client_a);
    assert_eq!(s.send_slice(&[7; 3000]).unwrap(), 3000);
    bed.settle();
    assert_eq!(
        bed.sockets.get::<tcp::Socket>(server_a).recv_queue(),
        3000
    );
    let mut want = vec![server_a, client_a];
    want.sort();
    assert_eq!(bed.changed(), want);
    // Nothing moves: nothing is listed, however often the interface polls.
    bed.settle();
    bed.settle();
    assert!(bed.changed().is_empty());
    assert!(!bed.sockets.get::<tcp::Socket>(server_b).closed_by_timeout());
}

/// A connection whose peer is gone times out: the egress timer closes it,
/// it is listed, and it says the timeout closed it; a reset-free close by
/// the peer (FIN) is listed too and does not say so.
#[test]
fn zcstack_timeout_close_is_listed_and_told_apart() {
    let mut bed = Bed::new();
    let (server, client) = bed.pair(1003);
    let (server2, client2) = bed.pair(1004);
    bed.changed();

    // Client 2 finishes (FIN): its server is listed, not timed out.
    bed.sockets.get_mut::<tcp::Socket>(client2).close();
    bed.settle();
    assert_eq!(
        bed.sockets.get::<tcp::Socket>(server2).state(),
        tcp::State::CloseWait
    );
    assert!(bed.changed().contains(&server2));
    assert!(!bed.sockets.get::<tcp::Socket>(server2).closed_by_timeout());

    // The peer of `client` disappears: what it sends is lost.
    let s = bed.sockets.get_mut::<tcp::Socket>(client);
    s.set_timeout(Some(Duration::from_millis(500)));
    s.send_slice(b"anyone?").unwrap();
    bed.dev.drop = true;
    bed.changed();
    let mut closed_at = None;
    for _ in 0..200 {
        bed.iface.poll(bed.now, &mut bed.dev, &mut bed.sockets);
        if bed.sockets.get::<tcp::Socket>(client).state() == tcp::State::Closed {
            closed_at = Some(bed.now);
            break;
        }
        bed.now += Duration::from_millis(10);
    }
    assert!(closed_at.is_some(), "the timeout never closed the socket");
    assert_eq!(bed.changed(), vec![client]);
    assert!(bed.sockets.get::<tcp::Socket>(client).closed_by_timeout());
    // Reused, it forgets why it closed last time.
    let s = bed.sockets.get_mut::<tcp::Socket>(client);
    s.listen(1005).unwrap();
    assert!(!s.closed_by_timeout());
    let _ = server;
}

/// A handle's index is its position: stable, dense, reused after removal.
#[test]
fn zcstack_handle_index_is_its_position() {
    let mut sockets = SocketSet::new(vec![]);
    let a = sockets.add(socket());
    let b = sockets.add(socket());
    assert_eq!((a.index(), b.index()), (0, 1));
    sockets.remove(a);
    let c = sockets.add(socket());
    assert_eq!(c.index(), 0);
}

/// Egress visits only the active list: idle connections leave it, a
/// segment or the application puts a socket back, and a removed socket's
/// entry goes with it.
#[test]
fn zcstack_idle_sockets_leave_the_egress_list() {
    let mut bed = Bed::new();
    let (server_a, client_a) = bed.pair(1011);
    let (server_b, client_b) = bed.pair(1012);
    bed.settle();
    bed.settle();
    assert_eq!(bed.sockets.active, vec![], "idle connections are visited");
    for h in [server_a, client_a, server_b, client_b] {
        assert!(!bed.sockets.item(h).unwrap().meta.active);
    }
    // The application writes on A: A's client is listed at once and stays
    // while its segment is unacknowledged (a retransmission timer); the
    // server's ACK (it is visited once the segment wakes it) lets it go.
    let s = bed.sockets.get_mut::<tcp::Socket>(client_a);
    s.send_slice(b"hello").unwrap();
    assert_eq!(bed.sockets.active, vec![client_a]);
    bed.iface.poll(bed.now, &mut bed.dev, &mut bed.sockets);
    assert_eq!(bed.sockets.active, vec![client_a]);
    bed.settle();
    bed.settle();
    assert_eq!(bed.sockets.active, vec![]);
    assert_eq!(bed.sockets.get::<tcp::Socket>(server_a).recv_queue(), 5);
    // A removed socket takes its entry along; its index is reused once.
    bed.sockets.get_mut::<tcp::Socket>(server_b);
    bed.sockets.remove(server_b);
    let again = bed.sockets.add(socket());
    assert_eq!(again.index(), server_b.index());
    assert_eq!(bed.sockets.active, vec![again]);
}
