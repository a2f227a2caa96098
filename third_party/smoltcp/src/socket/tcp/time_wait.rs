//! ZCSTACK PATCH 22 (see ZCSTACK-PATCHES.md): the end of TIME-WAIT keeps
//! the bytes the application has not read yet.
//!
//! TIME-WAIT ends with [`Socket::reset`], which also empties the receive
//! buffer: bytes that arrived before the peer's FIN, were acknowledged and
//! were waiting for the application were thrown away, and the reader met
//! `RecvError::InvalidState` — or, to an application that reads "not
//! open" as the end of the stream, a clean end that came early. Linux
//! keeps a closed socket's unread data until the application reads or
//! closes it. So does this: the connection is forgotten (the socket is
//! `Closed`, matches no segment, sends nothing), while the unread bytes
//! stay readable and are followed by `RecvError::Finished`, since the peer
//! did send its FIN. `listen` and `connect` reset the socket again before
//! it is reused, so a new connection never sees them.

use core::mem;

use super::{Socket, SocketBuffer};

impl<'a> Socket<'a> {
    /// TIME-WAIT is over: reset the socket, keeping the receive buffer and
    /// the fact that the peer's FIN arrived.
    pub(super) fn time_wait_expired(&mut self) {
        let unread = mem::replace(&mut self.rx_buffer, SocketBuffer::new(&mut [][..]));
        let fin = self.rx_fin_received;
        self.reset();
        self.rx_buffer = unread;
        self.rx_fin_received = fin;
    }
}
