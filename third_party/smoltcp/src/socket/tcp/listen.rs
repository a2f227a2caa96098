//! ZCSTACK PATCH 11 (see ZCSTACK-PATCHES.md): the listening socket's side of
//! SYN cookies (`iface/interface/syncookie.rs`), and a bound on how long a
//! half-open connection holds a socket.
//!
//! Upstream, a socket in SYN-RECEIVED retransmits its SYN-ACK with the usual
//! backoff forever: a SYN from a spoofed address pins a listening socket for
//! good. [`Socket::set_synack_retries`] gives up after that many
//! retransmissions and returns the socket to LISTEN, silently (there is no
//! one to tell). Linux does the same (`tcp_synack_retries`, default 5).

use super::{Socket, State, Tuple};
use crate::iface::Context;
use crate::time::{Duration, Instant};
use crate::wire::{IpEndpoint, IpRepr, TcpRepr, TcpSeqNumber};

/// What a valid cookie told the interface about the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CookieParams {
    /// Our initial sequence number (the cookie).
    pub our_isn: TcpSeqNumber,
    /// The peer's MSS, as the cookie rounded it.
    pub mss: usize,
    /// The peer's window shift, if it offered window scaling.
    pub window_scale: Option<u8>,
    /// Whether the peer offered SACK.
    pub sack: bool,
    /// Our TSval offset for this connection.
    pub ts_offset: u32,
}

/// What a cookie SYN-ACK offers, taken from a listening socket.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CookieTemplate {
    /// The window field (unscaled, as in any SYN).
    pub window: u16,
    /// Our window shift, if the peer offered scaling.
    pub shift: u8,
    /// Whether to answer timestamps (only clock timestamps survive a cookie).
    pub timestamps: bool,
}

impl<'a> Socket<'a> {
    /// Give up a half-open connection (SYN-RECEIVED, reached from LISTEN)
    /// after `retries` SYN-ACK retransmissions, and listen again; `None`
    /// (the default) retransmits forever. (ZCSTACK PATCH 11.)
    pub fn set_synack_retries(&mut self, retries: Option<u8>) {
        self.synack_retries = retries;
    }

    /// Whether this socket serves the listen endpoint `tcp` (as received in
    /// `ip`) is addressed to, in LISTEN or on a connection it took from it.
    pub(crate) fn listens_for(&self, ip: &IpRepr, tcp: &TcpRepr) -> bool {
        let ep = self.listen_endpoint;
        ep.port != 0
            && ep.port == tcp.dst_port
            && ep.addr.is_none_or(|a| a == ip.dst_addr())
            && !matches!(self.state, State::Closed | State::TimeWait)
    }

    pub(crate) fn cookie_template(&self) -> CookieTemplate {
        CookieTemplate {
            window: u16::try_from(self.rx_buffer.window()).unwrap_or(u16::MAX),
            shift: self.remote_win_shift,
            timestamps: self.ts_clock && self.tsval_generator.is_none(),
        }
    }

    /// When this socket entered SYN-RECEIVED.
    pub(crate) fn syn_received_since(&self) -> Instant {
        self.syn_received_at
    }

    /// Notes a SYN-ACK sent, and that a SYN-RECEIVED socket began waiting.
    pub(super) fn note_synack_sent(&mut self) {
        self.synack_sent = self.synack_sent.saturating_add(1);
    }

    /// How long a half-open connection may wait for its handshake to
    /// finish: as long as `max` SYN-ACK retransmissions take with the
    /// initial 1 s timeout doubling (1 + 2 + 4 + ... s). A SYN-ACK that
    /// cannot even be sent (its neighbour never answers ARP) counts the same.
    fn half_open_lifetime(max: u8) -> Duration {
        Duration::from_secs((1u64 << (u32::from(max) + 1).min(16)) - 1)
    }

    /// When this half-open connection is given up, if it will be.
    pub(super) fn half_open_deadline(&self) -> Option<Instant> {
        let max = self.synack_retries?;
        (self.state == State::SynReceived && self.listen_endpoint.port != 0)
            .then(|| self.syn_received_at + Self::half_open_lifetime(max))
    }

    /// In SYN-RECEIVED: if the SYN-ACK was retransmitted as often as
    /// allowed, or the handshake had as long as that takes, go back to
    /// LISTEN. Returns whether it did.
    pub(super) fn synack_gave_up(&mut self, cx: &mut Context) -> bool {
        let (Some(max), Some(deadline)) = (self.synack_retries, self.half_open_deadline()) else {
            return false;
        };
        let retried_out = self.synack_sent > max && self.timer.should_retransmit(cx.now());
        if !retried_out && cx.now() < deadline {
            return false;
        }
        net_debug!("half-open connection not completed: listening again");
        let ep = self.listen_endpoint;
        self.reset();
        self.listen_endpoint = ep;
        self.set_state(State::Listen);
        cx.listen_stats.half_open_expired += 1;
        true
    }

    /// Creates the connection a valid cookie in `tcp` (an ACK, as received
    /// in `ip`) describes, ESTABLISHED, in this socket (in LISTEN, or in
    /// SYN-RECEIVED, whose half-open connection is dropped), then processes
    /// the segment. Returns the reply, if any.
    pub(crate) fn accept_syn_cookie(
        &mut self,
        cx: &mut Context,
        ip: &IpRepr,
        tcp: &TcpRepr,
        p: CookieParams,
    ) -> Option<(IpRepr, TcpRepr<'static>)> {
        let ep = self.listen_endpoint;
        let template = self.cookie_template();
        self.reset();
        self.listen_endpoint = ep;
        self.tuple = Some(Tuple {
            local: IpEndpoint::new(ip.dst_addr(), tcp.dst_port),
            remote: IpEndpoint::new(ip.src_addr(), tcp.src_port),
        });
        // Our SYN is acknowledged; the peer's data starts at its SEQ.
        self.local_seq_no = p.our_isn + 1;
        self.remote_last_seq = p.our_isn + 1;
        self.remote_seq_no = tcp.seq_number;
        self.remote_last_ack = Some(tcp.seq_number);
        self.remote_mss = p.mss;
        self.congestion_controller.inner_mut().set_mss(p.mss);
        self.remote_has_sack = p.sack;
        self.remote_win_scale = p.window_scale;
        if p.window_scale.is_none() {
            self.remote_win_shift = 0;
        }
        // The SYN-ACK advertised the template's (unscaled) window.
        self.remote_last_win =
            (usize::from(template.window) >> self.remote_win_shift).min(u16::MAX as usize) as u16;
        match tcp.timestamp {
            Some(ts) if template.timestamps => {
                self.ts_active = true;
                self.ts_offset = p.ts_offset;
                self.last_remote_tsval = ts.tsval;
                self.ts_recent_valid = true;
            }
            _ => self.ts_active = false,
        }
        self.remote_last_ts = Some(cx.now());
        self.set_state(State::Established);
        self.timer.set_for_idle(cx.now(), self.keep_alive);
        self.process(cx, ip, tcp)
    }
}
