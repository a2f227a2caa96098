//! Tests of ZCSTACK PATCH 14: data in flight when the peer's window closes
//! is retransmitted once the window opens again.

use super::*;

/// Sends 12 bytes, then the peer acknowledges 6 of them with a zero window
/// (the other 6 now lie beyond its window) and later opens its window
/// without acknowledging more: the 6 bytes in flight must come again when
/// the retransmission timer expires. Without the patch, leaving the
/// zero-window probe timer set the socket idle and nothing ever resent them.
#[test]
fn data_in_flight_when_the_window_closed_is_retransmitted_after_it_opens() {
    let mut s = socket_established();
    s.send_slice(b"abcdef123456").unwrap();
    recv!(
        s,
        time 0,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"abcdef123456"[..],
            ..RECV_TEMPL
        }]
    );
    send!(
        s,
        time 10,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 0,
            ..SEND_TEMPL
        }
    );
    assert!(s.timer.is_zero_window_probe());
    send!(
        s,
        time 20,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 64,
            ..SEND_TEMPL
        }
    );
    assert!(
        s.timer.is_retransmit(),
        "six bytes in flight, timer {:?}",
        s.timer
    );
    // Nothing new to send before the timer expires ...
    recv_nothing!(s, time 30);
    // ... and then the bytes in flight again, from SND.UNA.
    recv!(
        s,
        time 10_000,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"123456"[..],
            ..RECV_TEMPL
        }]
    );
}

/// With nothing in flight the socket goes idle as before: no spurious
/// retransmission timer, nothing sent.
#[test]
fn nothing_in_flight_when_the_window_opens_leaves_the_socket_idle() {
    let mut s = socket_established();
    s.send_slice(b"abcdef").unwrap();
    recv!(
        s,
        time 0,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"abcdef"[..],
            ..RECV_TEMPL
        }]
    );
    send!(
        s,
        time 10,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 0,
            ..SEND_TEMPL
        }
    );
    s.send_slice(b"123456").unwrap();
    assert!(s.timer.is_zero_window_probe());
    send!(
        s,
        time 20,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            window_len: 64,
            ..SEND_TEMPL
        }
    );
    assert!(s.timer.is_idle(), "timer {:?}", s.timer);
    // The queued bytes go out because the window allows them.
    recv!(
        s,
        time 30,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"123456"[..],
            ..RECV_TEMPL
        }]
    );
}
