//! The file calls of [`Stack`]: queue a file range on a connection for the
//! file sender (module `file::transfer`), which the poll loop pumps.

use std::io;
use std::sync::Arc;

use smoltcp::socket::tcp;
use zcstack_driver::Driver;

use super::Stack;
use crate::file::MappedFile;
use crate::tcp::TcpConn;

impl<D: Driver> Stack<D> {
    /// Queues file[offset .. offset+len] to be sent on `c` after everything
    /// already written; poll() queues it in the socket by reference, or
    /// copies it into the send ring ([`SendMode`](crate::SendMode)). Several may be queued (FIFO). Errors: NotConnected (stale),
    /// BrokenPipe (cannot send), InvalidInput (range beyond the file).
    pub fn tcp_send_file(
        &mut self,
        c: TcpConn,
        file: &Arc<MappedFile>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let slot = self.tcp.open_slot(c)?;
        if offset.checked_add(len).is_none_or(|e| e > file.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}+{len} is beyond the end of {} ({} bytes)",
                    file.path().display(),
                    file.len()
                ),
            ));
        }
        let sock = self.tcp.socket(&self.sockets, slot);
        let handshaking = matches!(sock.state(), tcp::State::SynSent | tcp::State::SynReceived);
        if self.files.close_after(slot) || !(sock.may_send() || handshaking) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("connection cannot send in state {}", sock.state()),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        self.files.queue(slot, file, offset, len);
        self.tcp.mark_dirty();
        Ok(())
    }

    /// File bytes queued on `c` that are not in the send ring yet. While it is
    /// non-zero, tcp_write/tcp_write_with return WouldBlock (keeps order).
    pub fn tcp_send_file_pending(&self, c: TcpConn) -> u64 {
        self.tcp
            .open_slot(c)
            .map(|slot| self.files.pending(slot))
            .unwrap_or(0)
    }
}
