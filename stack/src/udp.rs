//! The UDP table: smoltcp UDP sockets by handle (bind, send_to,
//! recv_from; the calls are `Stack::udp_*`, in `stack/udp.rs`).
//!
//! Datagrams are copied once between the application's buffer and the
//! socket's packet ring (counted by the stack), and once more by smoltcp
//! between the ring and a pool frame. Datagrams by frame handle, with no
//! copy, are module [`dgram`](crate::dgram).

use std::io;
use std::net::SocketAddrV4;

use smoltcp::iface::{SocketHandle, SocketSet};
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};

use crate::tcp::stale;

/// Datagrams each UDP socket buffers per direction.
const UDP_PACKETS: usize = 256;
/// Payload bytes each UDP socket buffers per direction.
const UDP_BYTES: usize = 256 * 1024;

/// A bound UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpSock(u32);

struct UdpSlot {
    handle: SocketHandle,
    open: bool,
}

/// Every UDP socket the stack made (closed ones stay, with their handles stale).
#[derive(Default)]
pub(crate) struct UdpTable {
    slots: Vec<UdpSlot>,
}

impl UdpTable {
    /// Binds a UDP socket to `port`; `taken` says whether the datagram
    /// path has it.
    pub fn bind(
        &mut self,
        sockets: &mut SocketSet<'static>,
        port: u16,
        taken: bool,
    ) -> io::Result<UdpSock> {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot bind UDP port 0",
            ));
        }
        if self.port_bound(sockets, port) || taken {
            return Err(io::Error::new(
                io::ErrorKind::AddrInUse,
                format!("UDP port {port} is already bound"),
            ));
        }
        let mut sock = udp::Socket::new(
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
            udp::PacketBuffer::new(
                vec![udp::PacketMetadata::EMPTY; UDP_PACKETS],
                vec![0; UDP_BYTES],
            ),
        );
        sock.bind(port)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("UDP bind: {e}")))?;
        let handle = sockets.add(sock);
        self.slots.push(UdpSlot { handle, open: true });
        Ok(UdpSock((self.slots.len() - 1) as u32))
    }

    /// Whether a smoltcp UDP socket is bound to `port`.
    pub fn port_bound(&self, sockets: &SocketSet<'static>, port: u16) -> bool {
        self.slots
            .iter()
            .filter(|s| s.open)
            .any(|s| sockets.get::<udp::Socket>(s.handle).endpoint().port == port)
    }

    fn sock<'s>(
        &self,
        sockets: &'s mut SocketSet<'static>,
        s: UdpSock,
    ) -> io::Result<&'s mut udp::Socket<'static>> {
        match self.slots.get(s.0 as usize) {
            Some(slot) if slot.open => Ok(sockets.get_mut(slot.handle)),
            _ => Err(stale()),
        }
    }

    /// Queues one datagram to `dst`. `WouldBlock` when the send ring is full.
    pub fn send_to(
        &self,
        sockets: &mut SocketSet<'static>,
        s: UdpSock,
        data: &[u8],
        dst: SocketAddrV4,
    ) -> io::Result<()> {
        let sock = self.sock(sockets, s)?;
        let ep = IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port());
        match sock.send_slice(data, ep) {
            Ok(()) => Ok(()),
            Err(udp::SendError::BufferFull) => Err(io::ErrorKind::WouldBlock.into()),
            Err(udp::SendError::Unaddressable) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send a datagram to {dst}"),
            )),
        }
    }

    /// Receives one datagram into `buf`: its length and sender. `WouldBlock`
    /// when none is queued; `InvalidInput` (datagram kept) if `buf` is too small.
    pub fn recv_from(
        &self,
        sockets: &mut SocketSet<'static>,
        s: UdpSock,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddrV4)> {
        let sock = self.sock(sockets, s)?;
        match sock.peek() {
            Err(_) => return Err(io::ErrorKind::WouldBlock.into()),
            Ok((data, _)) if data.len() > buf.len() => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "a {}-byte datagram does not fit a {}-byte buffer",
                        data.len(),
                        buf.len()
                    ),
                ));
            }
            Ok(_) => {}
        }
        let (n, meta) = sock
            .recv_slice(buf)
            .map_err(|_| io::Error::from(io::ErrorKind::WouldBlock))?;
        let IpAddress::Ipv4(ip) = meta.endpoint.addr;
        Ok((n, SocketAddrV4::new(ip, meta.endpoint.port)))
    }

    /// Closes a UDP socket; its handle is invalid afterwards.
    pub fn close(&mut self, sockets: &mut SocketSet<'static>, s: UdpSock) {
        if let Some(slot) = self.slots.get_mut(s.0 as usize)
            && slot.open
        {
            slot.open = false;
            sockets.get_mut::<udp::Socket>(slot.handle).close();
        }
    }
}
