//! Tests of ZCSTACK PATCHES 6–11 and 13: RTO bounds, clock timestamps and PAWS,
//! SACK blocks sent, the sender's loss recovery (SACK scoreboard, RACK-TLP,
//! PRR, undo), congestion control per connection, and half-open connections
//! given up. The peer is scripted segment by segment.

use super::*;

/// Segments of 10 bytes, SACK on, a roomy window.
const MSS: usize = 10;

/// What one transmitted segment looked like.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Seg {
    /// Offset of the first byte from the first data byte (LOCAL_SEQ + 1).
    off: i64,
    len: usize,
    control: TcpControl,
    timestamp: Option<TcpTimestampRepr>,
}

pub(super) fn sacking_socket(tx: usize, rx: usize) -> TestSocket {
    let mut s = socket_established_with_buffer_sizes(tx, rx);
    // Tests that want a congestion controller set one.
    s.set_congestion_control(CongestionControl::None);
    s.remote_mss = MSS;
    s.remote_has_sack = true;
    s.remote_win_len = 4096;
    s.congestion_controller.inner_mut().set_mss(MSS);
    s
}

/// Everything the socket sends at `ms`, until it sends nothing more.
pub(super) fn drain(s: &mut TestSocket, ms: i64) -> Vec<Seg> {
    s.cx.set_now(Instant::from_millis(ms));
    let mut out = Vec::new();
    loop {
        let mut got = None;
        let _ = s
            .socket
            .dispatch(&mut s.cx, |_, _, (_, repr)| -> Result<(), ()> {
                got = Some(Seg {
                    off: (repr.seq_number.0.wrapping_sub((LOCAL_SEQ + 1).0)) as i64,
                    len: repr.payload.len(),
                    control: repr.control.quash_psh(),
                    timestamp: repr.timestamp,
                });
                Ok(())
            });
        match got {
            Some(seg) => out.push(seg),
            None => break,
        }
        assert!(out.len() < 10_000, "the socket never stops sending");
    }
    out
}

pub(super) fn data(off: i64, len: usize) -> Seg {
    Seg {
        off,
        len,
        control: TcpControl::None,
        timestamp: None,
    }
}

/// The peer acknowledges `ack` bytes (from the first data byte) and
/// selectively `sacks` (offsets, end exclusive); returns the socket's reply.
pub(super) fn ack(
    s: &mut TestSocket,
    ms: i64,
    ack: usize,
    sacks: &[(usize, usize)],
) -> Option<TcpRepr<'static>> {
    let base = LOCAL_SEQ + 1;
    let mut ranges = [None; 3];
    for (i, &(l, r)) in sacks.iter().enumerate() {
        ranges[i] = Some(((base + l).0 as u32, (base + r).0 as u32));
    }
    send(
        s,
        Instant::from_millis(ms),
        &TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(base + ack),
            window_len: 4096,
            sack_ranges: ranges,
            ..SEND_TEMPL
        },
    )
}

/// Sends `n` bytes at `ms` and checks they leave as MSS-sized segments.
pub(super) fn send_bytes(s: &mut TestSocket, ms: i64, from: usize, n: usize) {
    s.send_slice(&vec![b'x'; n]).unwrap();
    let segs = drain(s, ms);
    let expect: Vec<Seg> = (0..n.div_ceil(MSS))
        .map(|i| data((from + i * MSS) as i64, MSS.min(n - i * MSS)))
        .collect();
    assert_eq!(segs, expect);
}

/// One RTT sample of `rtt` ms first, so RACK and TLP have an RTT.
pub(super) fn warm_up(s: &mut TestSocket, rtt: i64) -> usize {
    send_bytes(s, 0, 0, MSS);
    ack(s, rtt, MSS, &[]);
    MSS
}

#[test]
fn sack_recovery_resends_only_the_hole() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 100);
    // The first segment is lost; the peer holds the other nine.
    ack(&mut s, 30, base, &[(base + 10, base + 100)]);
    assert_eq!(drain(&mut s, 30), vec![data(base as i64, 10)]);
    ack(&mut s, 40, base + 100, &[]);
    assert_eq!(drain(&mut s, 40), vec![]);
    let st = s.recovery_stats();
    assert_eq!(st.fast_recoveries, 1);
    assert_eq!(st.retransmits, 1);
    assert_eq!(st.retransmitted_bytes, 10);
    assert_eq!(st.rto_expiries, 0);
    assert_eq!(s.send_queue(), 0);
}

#[test]
fn sack_recovery_resends_several_holes_once_each() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 100);
    let b = base;
    // Segments 1, 4 and 7 lost.
    ack(
        &mut s,
        30,
        b,
        &[(b + 80, b + 100), (b + 50, b + 70), (b + 20, b + 40)],
    );
    // The first segment (0) too: SACKs start at 20.
    assert_eq!(
        drain(&mut s, 30),
        vec![
            data(b as i64, 20),
            data((b + 40) as i64, 10),
            data((b + 70) as i64, 10)
        ]
        .into_iter()
        .flat_map(|seg| {
            // Retransmissions go out MSS by MSS.
            (0..seg.len / MSS).map(move |i| data(seg.off + (i * MSS) as i64, MSS))
        })
        .collect::<Vec<_>>()
    );
    ack(&mut s, 40, b + 100, &[]);
    assert_eq!(drain(&mut s, 40), vec![]);
    assert_eq!(s.recovery_stats().retransmitted_bytes, 40);
    assert_eq!(s.recovery_stats().fast_recoveries, 1);
}

#[test]
fn reordering_is_not_taken_for_loss() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 30);
    // Segment 1 arrives before segment 0 (one segment SACKed: under
    // DupThresh, so RACK waits a quarter RTT before calling 0 lost).
    ack(&mut s, 30, base, &[(base + 10, base + 20)]);
    assert_eq!(drain(&mut s, 30), vec![]);
    // Segment 0 arrives 1 ms later: no retransmission, reordering noted.
    ack(&mut s, 31, base + 20, &[]);
    assert_eq!(drain(&mut s, 35), vec![]);
    ack(&mut s, 36, base + 30, &[]);
    let st = s.recovery_stats();
    assert_eq!(st.retransmits, 0);
    assert_eq!(st.fast_recoveries, 0);
    assert_eq!(st.reorderings, 1);
}

#[test]
fn rack_timer_declares_a_late_segment_lost() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 20);
    // Only the second segment arrives; RACK waits RTT + min_rtt/4 = 12.5 ms
    // from the first one's transmission (at 20) before resending it.
    ack(&mut s, 30, base, &[(base + 10, base + 20)]);
    assert_eq!(drain(&mut s, 30), vec![]);
    assert_eq!(drain(&mut s, 32), vec![]);
    assert_eq!(drain(&mut s, 33), vec![data(base as i64, 10)]);
    assert_eq!(s.recovery_stats().rto_expiries, 0);
}

#[test]
fn tail_loss_probe_recovers_a_lost_tail() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 50);
    // Three of five arrive; the last two are lost and no SACK can tell.
    ack(&mut s, 30, base + 30, &[]);
    assert_eq!(drain(&mut s, 30), vec![]);
    // The probe timer: 2 * SRTT + 2 ms after the ACK. The probe resends the
    // last segment.
    assert_eq!(drain(&mut s, 50), vec![]);
    assert_eq!(drain(&mut s, 53), vec![data((base + 40) as i64, 10)]);
    assert_eq!(s.recovery_stats().tail_loss_probes, 1);
    // Its SACK reveals the other loss, which RACK resends at once.
    ack(&mut s, 63, base + 30, &[(base + 40, base + 50)]);
    assert_eq!(drain(&mut s, 63), vec![data((base + 30) as i64, 10)]);
    ack(&mut s, 73, base + 50, &[]);
    let st = s.recovery_stats();
    assert_eq!(st.rto_expiries, 0);
    assert_eq!(st.fast_recoveries, 1);
    assert_eq!(st.retransmits, 2);
    assert_eq!(s.send_queue(), 0);
}

#[test]
fn dsack_undoes_a_spurious_recovery() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 100);
    let window = s.congestion_controller.inner().window();
    ack(&mut s, 30, base, &[(base + 10, base + 100)]);
    assert_eq!(drain(&mut s, 30), vec![data(base as i64, 10)]);
    // The original was only late: the peer reports the resent copy as a
    // duplicate (D-SACK below the ACK).
    ack(&mut s, 40, base + 100, &[(base, base + 10)]);
    let st = s.recovery_stats();
    assert_eq!(st.dsacks, 1);
    assert_eq!(st.undos, 1);
    assert_eq!(s.congestion_controller.inner().window(), window);
}

#[cfg(feature = "socket-tcp-reno")]
#[test]
fn a_real_loss_keeps_the_window_cut() {
    let mut s = sacking_socket(400, 64);
    s.set_congestion_control(CongestionControl::Reno);
    s.congestion_controller.inner_mut().set_mss(MSS);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 20);
    let window = s.congestion_controller.inner().window();
    ack(&mut s, 30, base, &[(base + 10, base + 20)]);
    ack(&mut s, 45, base, &[(base + 10, base + 20)]);
    assert_eq!(drain(&mut s, 45), vec![data(base as i64, 10)]);
    ack(&mut s, 55, base + 20, &[]);
    assert_eq!(s.recovery_stats().undos, 0);
    assert!(s.congestion_controller.inner().window() < window);
}

#[test]
fn rto_respects_the_configured_minimum() {
    let mut s = sacking_socket(400, 64);
    s.set_rto_bounds(Duration::from_millis(200), Duration::from_secs(60));
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 10);
    // No ACK comes. One segment in flight: the probe would wait 2 * SRTT
    // plus the delayed-ACK allowance (222 ms), past the timeout at 20 +
    // 200 ms, so it goes at the timeout's time, instead of it.
    assert_eq!(drain(&mut s, 219), vec![]);
    assert_eq!(drain(&mut s, 220), vec![data(base as i64, 10)]);
    assert_eq!(s.recovery_stats().tail_loss_probes, 1);
    assert_eq!(s.recovery_stats().rto_expiries, 0);
    // The probe is lost too: the timeout, 200 ms after it...
    assert_eq!(drain(&mut s, 419), vec![]);
    assert_eq!(drain(&mut s, 420), vec![data(base as i64, 10)]);
    assert_eq!(s.recovery_stats().rto_expiries, 1);
    // ...then backed off: the next one 400 ms later.
    assert_eq!(drain(&mut s, 819), vec![]);
    assert_eq!(drain(&mut s, 820), vec![data(base as i64, 10)]);
    assert_eq!(s.recovery_stats().rto_expiries, 2);
}

#[test]
fn rto_resends_only_what_the_peer_lacks() {
    let mut s = sacking_socket(400, 64);
    s.set_rto_bounds(Duration::from_millis(200), Duration::from_secs(60));
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 50);
    let b = base as i64;
    // The peer holds 20..30 and 40..50 (of this burst). RACK resends the
    // holes a quarter RTT after they were due; those are lost too.
    ack(
        &mut s,
        30,
        base,
        &[(base + 40, base + 50), (base + 20, base + 30)],
    );
    assert_eq!(drain(&mut s, 30), vec![]);
    let holes = vec![data(b, 10), data(b + 10, 10), data(b + 30, 10)];
    assert_eq!(drain(&mut s, 33), holes);
    // The timer fires 200 ms after the first transmission: the holes go
    // again, never the SACKed bytes.
    assert_eq!(drain(&mut s, 219), vec![]);
    assert_eq!(drain(&mut s, 220), holes);
    assert_eq!(s.recovery_stats().rto_expiries, 1);
    ack(&mut s, 230, base + 50, &[]);
    assert_eq!(s.send_queue(), 0);
    assert_eq!(s.recovery_stats().retransmitted_bytes, 60);
}

#[test]
fn clock_timestamps_measure_and_paws_drops_old_segments() {
    let mut s = socket_listen();
    s.set_timestamp_clock(true);
    send!(
        s,
        time 1000,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            timestamp: Some(TcpTimestampRepr::new(500, 0)),
            ..SEND_TEMPL
        }
    );
    // TSval is the clock in ms (the random offset is 0 in tests); TSecr
    // echoes the SYN's TSval.
    recv!(
        s,
        time 1000,
        [TcpRepr {
            control: TcpControl::Syn,
            seq_number: LOCAL_SEQ,
            ack_number: Some(REMOTE_SEQ + 1),
            max_seg_size: Some(BASE_MSS),
            timestamp: Some(TcpTimestampRepr::new(1000, 500)),
            ..RECV_TEMPL
        }]
    );
    send!(
        s,
        time 1010,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            timestamp: Some(TcpTimestampRepr::new(510, 1000)),
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state, State::Established);
    assert_eq!(s.smoothed_rtt(), Some(Duration::from_millis(10)));
    // An old duplicate (TSval 505 < TS.Recent 510) is dropped, not received.
    send!(
        s,
        time 1020,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"old"[..],
            timestamp: Some(TcpTimestampRepr::new(505, 1000)),
            ..SEND_TEMPL
        },
        Some(TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            window_len: 64,
            timestamp: Some(TcpTimestampRepr::new(1020, 510)),
            ..RECV_TEMPL
        })
    );
    assert_eq!(s.recv_queue(), 0);
    assert_eq!(s.recovery_stats().paws_rejects, 1);
    // A fresh one is taken.
    send!(
        s,
        time 1030,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"new"[..],
            timestamp: Some(TcpTimestampRepr::new(520, 1000)),
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.recv_queue(), 3);
}

#[test]
fn timestamps_come_back_after_a_peer_without_them() {
    let mut s = socket_listen();
    s.set_timestamp_clock(true);
    send!(
        s,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    assert!(!s.timestamp_enabled());
    s.abort();
    s.listen(LISTEN_END).unwrap();
    assert!(
        s.timestamp_enabled(),
        "a reused socket offers timestamps again"
    );
}

/// The SACK blocks of the socket's reply to a segment at `off` (from the
/// peer's first data byte), as offsets.
fn sack_reply(s: &mut TestSocket, off: usize, payload: &'static [u8]) -> Vec<(usize, usize)> {
    let base = REMOTE_SEQ + 1;
    let reply = send(
        s,
        Instant::from_millis(0),
        &TcpRepr {
            seq_number: base + off,
            ack_number: Some(LOCAL_SEQ + 1),
            payload,
            ..SEND_TEMPL
        },
    )
    .expect("an out-of-order segment is acknowledged at once");
    reply
        .sack_ranges
        .iter()
        .flatten()
        .map(|&(l, r)| (TcpSeqNumber(l as i32) - base, TcpSeqNumber(r as i32) - base))
        .collect()
}

#[test]
fn sack_blocks_report_the_latest_first_and_repeat_the_others() {
    let mut s = socket_established_with_buffer_sizes(64, 256);
    s.remote_has_sack = true;
    assert_eq!(sack_reply(&mut s, 10, b"aaaaaaaaaa"), vec![(10, 20)]);
    assert_eq!(
        sack_reply(&mut s, 50, b"bbbbbbbbbb"),
        vec![(50, 60), (10, 20)]
    );
    assert_eq!(
        sack_reply(&mut s, 30, b"cccccccccc"),
        vec![(30, 40), (50, 60), (10, 20)]
    );
    // A fourth block: the oldest reported drops out.
    assert_eq!(
        sack_reply(&mut s, 70, b"dddddddddd"),
        vec![(70, 80), (30, 40), (50, 60)]
    );
    // A duplicate of held data is reported first, as a D-SACK.
    assert_eq!(
        sack_reply(&mut s, 30, b"cccccccccc"),
        vec![(30, 40), (70, 80), (50, 60)]
    );
    // Filling the first hole: RCV.NXT moves to 20, the rest stay reported.
    let reply = sack_reply(&mut s, 0, b"0000000000");
    assert_eq!(reply, vec![(70, 80), (30, 40), (50, 60)]);
}

#[test]
fn a_duplicate_below_the_window_is_reported_as_dsack() {
    let mut s = socket_established_with_buffer_sizes(64, 256);
    s.remote_has_sack = true;
    send!(
        s,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1),
            payload: &b"abcdef"[..],
            ..SEND_TEMPL
        }
    );
    let blocks = sack_reply(&mut s, 0, b"abcdef");
    assert_eq!(blocks, vec![(0, 6)]);
}

#[cfg(feature = "socket-tcp-reno")]
#[test]
fn each_connection_starts_from_the_initial_window() {
    let mut s = sacking_socket(400, 64);
    s.set_congestion_control(CongestionControl::Reno);
    s.congestion_controller.inner_mut().set_mss(MSS);
    // RFC 6928: ten segments.
    assert_eq!(s.congestion_controller.inner().window(), 10 * MSS);
    s.congestion_controller
        .inner_mut()
        .on_rto(Instant::ZERO, 10 * MSS);
    assert_eq!(s.congestion_controller.inner().window(), MSS);
    // The socket is reused for another connection: its window is not the
    // last connection's.
    s.abort();
    s.listen(LISTEN_END).unwrap();
    s.congestion_controller.inner_mut().set_mss(MSS);
    assert_eq!(s.congestion_controller.inner().window(), 10 * MSS);
    assert_eq!(s.congestion_control(), CongestionControl::Reno);
}

#[cfg(feature = "socket-tcp-cubic")]
#[test]
fn a_stretch_ack_counts_every_segment_it_covers() {
    let mut s = sacking_socket(400, 64);
    s.set_congestion_control(CongestionControl::Cubic);
    s.congestion_controller.inner_mut().set_mss(MSS);
    let base = warm_up(&mut s, 10);
    let before = s.congestion_controller.inner().window();
    send_bytes(&mut s, 20, base, 80);
    // One ACK for eight segments: slow start grows by all eight.
    ack(&mut s, 30, base + 80, &[]);
    assert_eq!(s.congestion_controller.inner().window(), before + 80);
}

#[cfg(feature = "socket-tcp-reno")]
#[test]
fn the_last_segment_the_window_admits_carries_psh() {
    let mut s = sacking_socket(400, 64);
    s.set_congestion_control(CongestionControl::Reno);
    s.congestion_controller.inner_mut().set_mss(MSS);
    s.send_slice(&[b'x'; 150]).unwrap();
    s.cx.set_now(Instant::from_millis(0));
    let mut sent = Vec::new();
    for _ in 0..20 {
        let mut got = None;
        let _ = s
            .socket
            .dispatch(&mut s.cx, |_, _, (_, repr)| -> Result<(), ()> {
                got = Some((repr.payload.len(), repr.control));
                Ok(())
            });
        match got {
            Some(g) => sent.push(g),
            None => break,
        }
    }
    // The initial window admits ten whole segments; only the tenth, after
    // which the sender waits, is pushed.
    assert_eq!(sent.len(), 10);
    assert!(sent.iter().all(|&(len, _)| len == MSS));
    assert_eq!(sent[9].1, TcpControl::Psh);
    assert!(sent[..9].iter().all(|&(_, c)| c == TcpControl::None));
}

#[test]
fn a_half_open_connection_listens_again_after_its_retries() {
    let mut s = socket_listen();
    s.set_synack_retries(Some(2));
    send!(
        s,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    let synack = TcpRepr {
        control: TcpControl::Syn,
        seq_number: LOCAL_SEQ,
        ack_number: Some(REMOTE_SEQ + 1),
        max_seg_size: Some(BASE_MSS),
        ..RECV_TEMPL
    };
    recv!(s, time 0, [synack]);
    // Two retransmissions, 1 s and then 2 s apart...
    recv!(s, time 1000, [synack]);
    recv!(s, time 3000, [synack]);
    assert_eq!(s.state, State::SynReceived);
    // ...then, instead of a third, the socket listens again, silently.
    recv_nothing!(s, time 7000);
    assert_eq!(s.state, State::Listen);
    assert_eq!(s.listen_endpoint, LISTEN_END);
    assert_eq!(s.cx.listen_stats.half_open_expired, 1);
    // And takes the next SYN.
    send!(
        s,
        time 7001,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ + 100,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state, State::SynReceived);
}

#[test]
fn a_half_open_connection_that_cannot_even_send_expires_too() {
    let mut s = socket_listen();
    s.set_synack_retries(Some(2));
    send!(
        s,
        time 0,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    // The SYN-ACK never leaves (say its neighbour never answers ARP): no
    // retransmission timer runs, but the handshake's time runs out all the
    // same, after 1 + 2 + 4 s.
    assert_eq!(s.half_open_deadline(), Some(Instant::from_millis(7000)));
    recv_nothing!(s, time 7000);
    assert_eq!(s.state, State::Listen);
}

/// The peer acknowledges `ack` bytes with TSval `tsval`, window `win` and
/// SACK blocks `sacks`; returns the socket's reply.
fn ack_ts(
    s: &mut TestSocket,
    ms: i64,
    ack: usize,
    tsval: u32,
    win: u16,
    sacks: &[(usize, usize)],
) -> Option<TcpRepr<'static>> {
    let base = LOCAL_SEQ + 1;
    let mut ranges = [None; 3];
    for (i, &(l, r)) in sacks.iter().enumerate() {
        ranges[i] = Some(((base + l).0 as u32, (base + r).0 as u32));
    }
    send(
        s,
        Instant::from_millis(ms),
        &TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(base + ack),
            window_len: win,
            sack_ranges: ranges,
            timestamp: Some(TcpTimestampRepr::new(tsval, 0)),
            ..SEND_TEMPL
        },
    )
}

#[test]
fn paws_lets_a_reordered_duplicate_ack_through() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 50);
    // Timestamps from here on (the helpers above expect segments without).
    s.set_timestamp_clock(true);
    s.ts_active = true;
    s.ts_recent_valid = true;
    s.last_remote_tsval = 500;
    s.remote_mss = MSS + 12;
    // The peer's ACKs for the first segment (TSval 510) overtook the ACK
    // that SACKs the three after it (TSval 508): the late one still counts,
    // and the hole is resent.
    ack_ts(&mut s, 30, base, 510, 4096, &[]);
    ack_ts(&mut s, 31, base, 508, 4096, &[(base + 10, base + 40)]);
    assert_eq!(s.recovery_stats().paws_rejects, 0);
    let resent: Vec<(i64, usize)> = drain(&mut s, 31).iter().map(|g| (g.off, g.len)).collect();
    assert_eq!(resent, vec![(base as i64, 10)]);
    // Not let through, however late: an ACK that opens the window, one with
    // data, and one older than a timeout. (An ACK below SND.UNA without
    // data is dropped before PAWS, as upstream does.)
    ack_ts(&mut s, 40, base + 50, 520, 4096, &[]);
    assert_eq!(s.send_queue(), 0);
    let rejects = |s: &TestSocket| s.recovery_stats().paws_rejects;
    ack_ts(&mut s, 42, base + 50, 515, 8192, &[]);
    assert_eq!(rejects(&s), 1, "a window update");
    send(
        &mut s,
        Instant::from_millis(43),
        &TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + base + 50),
            window_len: 4096,
            payload: &b"old"[..],
            timestamp: Some(TcpTimestampRepr::new(515, 0)),
            ..SEND_TEMPL
        },
    );
    assert_eq!(rejects(&s), 2, "data");
    assert_eq!(s.recv_queue(), 0);
    let rto = s.rtte.retransmission_timeout().total_millis() as u32;
    ack_ts(
        &mut s,
        44,
        base + 50,
        520u32.wrapping_sub(rto * 6 / 5 + 1),
        4096,
        &[],
    );
    assert_eq!(rejects(&s), 3, "older than a timeout");
    ack_ts(&mut s, 45, base + 50, 519, 4096, &[]);
    assert_eq!(rejects(&s), 3, "a late duplicate ACK");
}

/// ZCSTACK PATCH 18 (fuzzing finding): a tail loss probe that became due
/// but could not leave (here the device refused the segment; in the fuzzer,
/// the neighbour's address was being resolved) stayed pending after an ACK
/// left nothing in flight. `poll_at` then said "now" for ever while
/// `dispatch` had nothing to send: the application's poll loop never slept,
/// and a test driving simulated time never got past that instant.
#[test]
fn a_probe_that_could_not_leave_is_dropped_once_nothing_is_in_flight() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, MSS);
    // The probe timer (2 * SRTT + 200 ms for one segment) fires; the
    // device takes nothing.
    s.cx.set_now(Instant::from_millis(300));
    let _ = s
        .socket
        .dispatch(&mut s.cx, |_, _, _| -> Result<(), ()> { Err(()) });
    assert_eq!(s.socket.poll_at(&mut s.cx), PollAt::Now, "the probe is due");
    // The segment's ACK arrives before the probe could go.
    ack(&mut s, 301, base + MSS, &[]);
    assert_eq!(s.send_queue(), 0);
    assert_eq!(drain(&mut s, 302), vec![], "nothing to send");
    assert_eq!(
        s.socket.poll_at(&mut s.cx),
        PollAt::Ingress,
        "nothing in flight, no timer: wait for input"
    );
    assert_eq!(s.recovery_stats().tail_loss_probes, 0);
}
