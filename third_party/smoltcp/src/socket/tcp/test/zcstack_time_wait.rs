//! Tests of ZCSTACK PATCH 22: the end of TIME-WAIT keeps unread bytes.

use super::*;

/// FIN-WAIT-2; the peer sends "abcdef" with its FIN, and nobody reads.
fn time_wait_with_unread() -> TestSocket {
    let mut s = socket_fin_wait_2();
    send!(s, time 1_000, TcpRepr {
        control: TcpControl::Fin,
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1 + 1),
        payload: &b"abcdef"[..],
        ..SEND_TEMPL
    });
    assert_eq!(s.state, State::TimeWait);
    recv!(
        s,
        time 1_000,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 1,
            ack_number: Some(REMOTE_SEQ + 1 + 6 + 1),
            window_len: 58,
            ..RECV_TEMPL
        }]
    );
    s
}

#[test]
fn unread_bytes_outlive_time_wait() {
    let mut s = time_wait_with_unread();
    recv_nothing!(s, time 60_000);
    assert_eq!(s.state, State::Closed);
    assert!(s.may_recv(), "the unread bytes are still there");
    let mut buf = [0u8; 16];
    assert_eq!(s.recv_slice(&mut buf), Ok(6));
    assert_eq!(&buf[..6], b"abcdef");
    assert_eq!(s.recv_slice(&mut buf), Err(RecvError::Finished));
    assert!(!s.may_recv());
}

#[test]
fn the_closed_socket_answers_nothing() {
    let mut s = time_wait_with_unread();
    recv_nothing!(s, time 60_000);
    // A retransmitted FIN from the old connection no longer matches it.
    let fin = TcpRepr {
        control: TcpControl::Fin,
        seq_number: REMOTE_SEQ + 1,
        ack_number: Some(LOCAL_SEQ + 1 + 1),
        payload: &b"abcdef"[..],
        ..SEND_TEMPL
    };
    assert!(!s.socket.accepts(&mut s.cx, &SEND_IP_TEMPL, &fin));
    recv_nothing!(s, time 120_000);
    assert_eq!(s.recv_queue(), 6);
}

#[test]
fn listen_after_time_wait_starts_empty() {
    let mut s = time_wait_with_unread();
    recv_nothing!(s, time 60_000);
    s.listen(LOCAL_END).unwrap();
    assert_eq!(s.recv_queue(), 0);
    let mut buf = [0u8; 16];
    assert_eq!(s.recv_slice(&mut buf), Err(RecvError::InvalidState));
}

#[test]
fn a_reset_still_discards_nothing_but_ends_without_fin() {
    // Unchanged behaviour, for contrast: after a RST the unread bytes stay
    // readable, then the reader is told the stream did not end cleanly.
    let mut s = socket_recved();
    send!(
        s,
        TcpRepr {
            control: TcpControl::Rst,
            seq_number: REMOTE_SEQ + 1 + 6,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state, State::Closed);
    let mut buf = [0u8; 16];
    assert_eq!(s.recv_slice(&mut buf), Ok(6));
    assert_eq!(s.recv_slice(&mut buf), Err(RecvError::InvalidState));
}
