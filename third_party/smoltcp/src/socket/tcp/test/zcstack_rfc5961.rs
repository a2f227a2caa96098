//! Tests of ZCSTACK PATCH 12: RFC 5961 (blind in-window RST, SYN and data
//! injection) and data arriving with an old ACK.

use super::*;

fn rst(seq: TcpSeqNumber) -> TcpRepr<'static> {
    TcpRepr {
        control: TcpControl::Rst,
        seq_number: seq,
        ack_number: None,
        ..SEND_TEMPL
    }
}

fn challenge_ack(s: &TestSocket) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1),
        window_len: s.scaled_window(),
        ..RECV_TEMPL
    }
}

#[test]
fn an_in_window_rst_off_rcv_nxt_gets_a_challenge_ack() {
    let mut s = socket_established();
    let expect = challenge_ack(&s);
    send!(s, time 0, rst(REMOTE_SEQ + 1 + 10), Some(expect));
    assert_eq!(s.state, State::Established);
    // Out of the window: nothing at all.
    send!(s, time 2000, rst(REMOTE_SEQ + 1 + 100_000));
    assert_eq!(s.state, State::Established);
    // Exactly at RCV.NXT: the connection is reset.
    send!(s, time 3000, rst(REMOTE_SEQ + 1));
    assert_eq!(s.state, State::Closed);
}

#[test]
fn a_syn_in_a_synchronized_state_gets_a_rate_limited_challenge_ack() {
    let mut s = socket_established();
    let expect = challenge_ack(&s);
    let syn = TcpRepr {
        control: TcpControl::Syn,
        seq_number: REMOTE_SEQ + 1 + 5,
        ack_number: None,
        ..SEND_TEMPL
    };
    send!(s, time 0, syn, Some(expect));
    assert_eq!(s.state, State::Established);
    // Within the second: no reply (RFC 5961 7).
    send!(s, time 500, syn);
    send!(s, time 1500, syn, Some(expect));
    assert_eq!(s.state, State::Established);
}

#[test]
fn data_with_an_old_ack_is_taken_and_a_blind_ack_is_not() {
    let mut s = socket_established();
    // Our 6 bytes are acknowledged: SND.UNA moves to LOCAL_SEQ + 7.
    s.send_slice(b"abcdef").unwrap();
    recv!(s, time 0, Ok(TcpRepr {
        seq_number: LOCAL_SEQ + 1,
        ack_number: Some(REMOTE_SEQ + 1),
        payload: &b"abcdef"[..],
        ..RECV_TEMPL
    }));
    send!(s, time 10, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 7),
        ..SEND_TEMPL
    });
    // The peer's data, sent before it saw our bytes, arrives late with the
    // ACK it had then: the data is taken (upstream dropped the segment).
    send!(s, time 20, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1),
        payload: &b"xyz"[..],
        ..SEND_TEMPL
    });
    assert_eq!(s.recv_queue(), 3);
    assert_eq!(s.local_seq_no, LOCAL_SEQ + 7);
    // An ACK far below SND.UNA - MAX.SND.WND is a blind injection: dropped,
    // answered with a challenge ACK.
    let reply = send(
        &mut s,
        Instant::from_millis(30),
        &TcpRepr {
            seq_number: REMOTE_SEQ + 1 + 3,
            ack_number: Some(LOCAL_SEQ - 100_000),
            payload: &b"evil"[..],
            ..SEND_TEMPL
        },
    );
    assert_eq!(reply.map(|r| r.ack_number), Some(Some(REMOTE_SEQ + 1 + 3)));
    assert_eq!(s.recv_queue(), 3, "the injected bytes were not taken");
}

/// ZCSTACK PATCH 21 (fuzzing finding): an ACK exactly 2^31 below SND.UNA
/// (before it in sequence order, by the largest possible distance) is a
/// blind ACK like any other: challenge ACK, no panic.
#[test]
fn an_ack_half_the_sequence_space_away_gets_a_challenge_ack() {
    let mut s = socket_established();
    let expect = challenge_ack(&s);
    let far = TcpSeqNumber((LOCAL_SEQ + 1).0.wrapping_add(i32::MIN));
    assert!(far < LOCAL_SEQ + 1, "before SND.UNA in sequence order");
    send!(s, time 0, TcpRepr {
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(far),
        payload: &b"evil"[..],
        ..SEND_TEMPL
    }, Some(TcpRepr { ack_number: Some(REMOTE_SEQ + 1), ..expect }));
    assert_eq!(s.state, State::Established);
    assert_eq!(s.recv_queue(), 0, "the injected bytes were not taken");
}
