use super::*;

use crate::socket::tcp::Socket;

impl InterfaceInner {
    pub(crate) fn process_tcp<'frame>(
        &mut self,
        sockets: &mut SocketSet,
        handled_by_raw_socket: bool,
        ip_repr: IpRepr,
        ip_payload: &'frame [u8],
    ) -> Option<Packet<'frame>> {
        let (src_addr, dst_addr) = (ip_repr.src_addr(), ip_repr.dst_addr());

        // Per RFC 1122 §3.2.1.3, the unspecified address must never appear as a source
        // or destination in any IP datagram. Drop such TCP segments early to avoid
        // creating sockets with unspecified peers (which would later panic on egress).
        // This is not done at the iface level because it might be useful with
        // UDP or raw sockets, but it's definitely not useful for TCP.
        if src_addr.is_unspecified() || dst_addr.is_unspecified() {
            return None;
        }

        let tcp_packet = check!(self, TcpPacket::new_checked(ip_payload));
        let tcp_repr = check!(self, TcpRepr::parse(
            &tcp_packet,
            &src_addr,
            &dst_addr,
            &self.caps.checksum
        ));
        if tcp_repr.control == TcpControl::Syn && tcp_repr.ack_number.is_none() {
            self.listen_stats.syns += 1;
        }

        // ZCSTACK PATCH 3: try the connected socket that took the last
        // segment before scanning every socket (a bulk transfer's segments
        // come in runs). Only a non-listening socket is remembered: one that
        // accepts a segment matches its 4-tuple exactly, so the scan would
        // find no other connected socket for it.
        if let Some(item) = self.tcp_last_hit.and_then(|h| sockets.item_mut(h)) {
            if let Some(tcp_socket) = Socket::downcast_mut(&mut item.socket) {
                if tcp_socket.state() != crate::socket::tcp::State::Listen
                    && tcp_socket.accepts(self, &ip_repr, &tcp_repr)
                {
                    self.wake(&mut item.meta);
                    // ZCSTACK PATCH 24: the segment may change what the
                    // application sees.
                    self.note_changed(&mut item.meta);
                    return tcp_socket
                        .process(self, &ip_repr, &tcp_repr)
                        .map(|(ip, tcp)| Packet::new(ip, IpPayload::Tcp(tcp)));
                }
            }
        }

        for item in sockets.items_mut() {
            let Some(tcp_socket) = Socket::downcast_mut(&mut item.socket) else {
                continue;
            };
            if tcp_socket.accepts(self, &ip_repr, &tcp_repr) {
                // ZCSTACK PATCH 2: the segment may give the socket work.
                self.wake(&mut item.meta);
                // ZCSTACK PATCH 24: the segment may change what the
                // application sees.
                self.note_changed(&mut item.meta);
                // ZCSTACK PATCH 11: a listening socket starts a connection
                // with a new peer: it no longer waits on an old one's ARP.
                if tcp_socket.state() == crate::socket::tcp::State::Listen {
                    item.meta.new_connection();
                }
                // ZCSTACK PATCH 3: remember a connected socket.
                self.tcp_last_hit = (tcp_socket.state() != crate::socket::tcp::State::Listen)
                    .then_some(item.meta.handle);
                return tcp_socket
                    .process(self, &ip_repr, &tcp_repr)
                    .map(|(ip, tcp)| Packet::new(ip, IpPayload::Tcp(tcp)));
            }
        }

        // ZCSTACK PATCH 11: a SYN for a busy listener, or an ACK returning
        // a cookie.
        if !handled_by_raw_socket
            && let Some(reply) = self.syn_cookie_path(sockets, &ip_repr, &tcp_repr)
        {
            return reply.map(|(ip, tcp)| Packet::new(ip, IpPayload::Tcp(tcp)));
        }

        if tcp_repr.control == TcpControl::Rst
            || ip_repr.dst_addr().is_unspecified()
            || ip_repr.src_addr().is_unspecified()
            || handled_by_raw_socket
        {
            // Never reply to a TCP RST packet with another TCP RST packet.
            // Never send a TCP RST packet with unspecified addresses.
            // Never send a TCP RST when packet has been handled by raw socket.
            None
        } else {
            // The packet wasn't handled by a socket, send a TCP RST packet.
            let (ip, tcp) = tcp::Socket::rst_reply(&ip_repr, &tcp_repr);
            Some(Packet::new(ip, IpPayload::Tcp(tcp)))
        }
    }
}
