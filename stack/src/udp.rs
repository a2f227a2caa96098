//! UDP: bind, send_to, recv_from.
//!
//! Datagrams are copied once between the application's buffer and the
//! socket's packet ring (counted), and once more by smoltcp between the ring
//! and a pool frame.

use std::io;
use std::net::SocketAddrV4;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::udp;
use smoltcp::wire::{IpAddress, IpEndpoint};
use zcstack_driver::Driver;

use crate::stack::{Stack, stale};

/// Datagrams each UDP socket buffers per direction.
const UDP_PACKETS: usize = 256;
/// Payload bytes each UDP socket buffers per direction.
const UDP_BYTES: usize = 256 * 1024;

/// A bound UDP socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UdpSock(u32);

pub(crate) struct UdpSlot {
    handle: SocketHandle,
    open: bool,
}

impl<D: Driver> Stack<D> {
    /// Binds a UDP socket to `port` on the stack's address.
    pub fn udp_bind(&mut self, port: u16) -> io::Result<UdpSock> {
        if port == 0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "cannot bind UDP port 0",
            ));
        }
        if self.udp_port_bound(port) || self.dgram.port_bound(port) {
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
        let handle = self.sockets.add(sock);
        self.udp.push(UdpSlot { handle, open: true });
        Ok(UdpSock((self.udp.len() - 1) as u32))
    }

    /// Whether a smoltcp UDP socket is bound to `port`.
    pub(crate) fn udp_port_bound(&self, port: u16) -> bool {
        self.udp
            .iter()
            .filter(|s| s.open)
            .any(|s| self.sockets.get::<udp::Socket>(s.handle).endpoint().port == port)
    }

    fn udp_sock(&mut self, s: UdpSock) -> io::Result<&mut udp::Socket<'static>> {
        match self.udp.get(s.0 as usize) {
            Some(slot) if slot.open => Ok(self.sockets.get_mut(slot.handle)),
            _ => Err(stale()),
        }
    }

    /// Queues one datagram to `dst`. `WouldBlock` when the send ring is full.
    pub fn udp_send_to(&mut self, s: UdpSock, data: &[u8], dst: SocketAddrV4) -> io::Result<()> {
        let sock = self.udp_sock(s)?;
        let ep = IpEndpoint::new(IpAddress::Ipv4(*dst.ip()), dst.port());
        match sock.send_slice(data, ep) {
            Ok(()) => {
                self.app_write_bytes += data.len() as u64;
                Ok(())
            }
            Err(udp::SendError::BufferFull) => Err(io::ErrorKind::WouldBlock.into()),
            Err(udp::SendError::Unaddressable) => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("cannot send a datagram to {dst}"),
            )),
        }
    }

    /// Receives one datagram into `buf`: its length and sender. `WouldBlock`
    /// when none is queued; `InvalidInput` (datagram kept) if `buf` is too small.
    pub fn udp_recv_from(
        &mut self,
        s: UdpSock,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddrV4)> {
        let sock = self.udp_sock(s)?;
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
        self.app_read_bytes += n as u64;
        let IpAddress::Ipv4(ip) = meta.endpoint.addr;
        Ok((n, SocketAddrV4::new(ip, meta.endpoint.port)))
    }

    /// Closes a UDP socket; its handle is invalid afterwards.
    pub fn udp_close(&mut self, s: UdpSock) {
        if let Some(slot) = self.udp.get_mut(s.0 as usize)
            && slot.open
        {
            slot.open = false;
            self.sockets.get_mut::<udp::Socket>(slot.handle).close();
        }
    }
}
