//! ZCSTACK PATCH 25 (see ZCSTACK-PATCHES.md): transmissions that left the
//! host late do not make the tail loss probe fire early.
//!
//! A socket stamps what it sends with the `timestamp` of the
//! `Interface::poll` that sent it, and arms its tail loss probe (RFC 8985
//! 7.2) from that time. A poll-mode stack on a shared CPU can lose the CPU
//! after reading its clock and before its device has sent the segments —
//! for a whole scheduler time slice, tens of milliseconds on a busy
//! machine — so the segments leave late while the probe timer has been
//! running since the stamp. On a path with a microsecond RTT the probe
//! then fires before the peer's ACK could come back: measured with
//! zcstack's zc-httpd serving 64 KiB files on a loaded 2-CPU machine,
//! 8–18% of responses drew a probe, none of them needed (the client's ACK
//! was seen 20 µs after the data, the probe a millisecond later), each
//! resending up to a whole 64 KiB segment.
//!
//! The caller knows when that happened: it can read its clock again once
//! the device has taken the frames. [`Socket::transmitted_late`] (and
//! `Interface::transmitted_late`, for every socket of a set) then moves the
//! probe that the poll's transmissions armed back by the lateness. Nothing
//! else changes: the retransmission timeout (at least 200 ms by default) is
//! far longer than such delays, and an RTT sample taken from the late
//! segments only comes out longer, which errs on the safe side.

use super::Socket;
use crate::time::{Duration, Instant};

impl<'a> Socket<'a> {
    /// Tells the socket that what it sent in the poll at `at` left the host
    /// `by` later than that: a tail loss probe armed by those segments now
    /// waits `by` longer. A socket that sent nothing then, or has no probe
    /// armed, is unchanged. Returns whether the probe moved.
    pub fn transmitted_late(&mut self, at: Instant, by: Duration) -> bool {
        self.tlp_defer(at, by)
    }
}
