//! The UDP calls of [`Stack`], through smoltcp's UDP sockets (module
//! [`udp`](crate::udp)).

use std::io;
use std::net::SocketAddrV4;

use zcstack_driver::Driver;

use super::Stack;
use crate::udp::UdpSock;

impl<D: Driver> Stack<D> {
    /// Binds a UDP socket to `port` on the stack's address.
    pub fn udp_bind(&mut self, port: u16) -> io::Result<UdpSock> {
        let taken = self.dgram.port_bound(port);
        self.udp.bind(&mut self.sockets, port, taken)
    }

    /// Queues one datagram to `dst`. `WouldBlock` when the send ring is full.
    pub fn udp_send_to(&mut self, s: UdpSock, data: &[u8], dst: SocketAddrV4) -> io::Result<()> {
        self.udp.send_to(&mut self.sockets, s, data, dst)?;
        self.app.write += data.len() as u64;
        Ok(())
    }

    /// Receives one datagram into `buf`: its length and sender. `WouldBlock`
    /// when none is queued; `InvalidInput` (datagram kept) if `buf` is too small.
    pub fn udp_recv_from(
        &mut self,
        s: UdpSock,
        buf: &mut [u8],
    ) -> io::Result<(usize, SocketAddrV4)> {
        let (n, from) = self.udp.recv_from(&mut self.sockets, s, buf)?;
        self.app.read += n as u64;
        Ok((n, from))
    }

    /// Closes a UDP socket; its handle is invalid afterwards.
    pub fn udp_close(&mut self, s: UdpSock) {
        self.udp.close(&mut self.sockets, s);
    }
}
