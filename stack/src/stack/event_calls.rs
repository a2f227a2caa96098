//! The event calls of [`Stack`], and the step of each poll that collects
//! readiness events (module [`event`](crate::event)).

use zcstack_driver::Driver;

use super::Stack;
use crate::event::Event;
use crate::tcp::TcpConn;

impl<D: Driver> Stack<D> {
    /// Moves the events of the polls since the last call into `out`,
    /// replacing what it held. Pass the same `Vec` every time: the stack
    /// keeps the one it gets back for the next events, so after the first
    /// few calls no event costs an allocation. See module [`event`](crate::event).
    ///
    /// The stack collects events from the first call on (an application
    /// that never asks keeps none): call it once before polling; what the
    /// polls before the first call did is not reported.
    pub fn events(&mut self, out: &mut Vec<Event>) {
        self.events.take(out);
    }

    /// Asks for one [`Event::Writable`] once `c` can take bytes: its send
    /// ring has room and every queued file transfer is in the ring (e.g.
    /// before writing the next response behind a
    /// [`tcp_send_file`](Stack::tcp_send_file)). Reported at once (on the
    /// next poll) if that is already so.
    pub fn tcp_want_writable(&mut self, c: TcpConn) -> std::io::Result<()> {
        let slot = self.tcp.open_slot(c)?;
        self.events.want_write(slot);
        Ok(())
    }

    /// After a poll: events for the sockets smoltcp changed and for the
    /// writers that can write now.
    pub(super) fn collect_events(&mut self) {
        if !self.events.on() {
            // smoltcp's list holds each socket once: it stays bounded.
            return;
        }
        let mut changed = self.events.changed_buf();
        self.engine.take_changed(&mut self.sockets, &mut changed);
        self.events
            .collect(changed, &self.tcp, &self.sockets, &self.files, &self.mem);
    }
}
