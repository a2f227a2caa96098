//! Tests of ZCSTACK PATCH 29: a listening socket that a RST returned from
//! SYN-RECEIVED forgets the aborted handshake.

use super::*;

/// The SYN-ACK the socket sends now.
fn syn_ack(s: &mut TestSocket) -> TcpRepr<'static> {
    let mut got = None;
    recv(s, Instant::from_millis(0), |r| {
        let r = r.expect("a SYN-ACK");
        assert_eq!(r.control, TcpControl::Syn);
        got = Some(TcpRepr {
            payload: &[],
            ..r
        });
    });
    got.unwrap()
}

/// A SYN from a peer whose TSval is far ahead of the next peer's (their
/// clocks have different random offsets, RFC 7323 7.1), then its RST: the
/// next SYN, with an older TSval and no options, gets a SYN-ACK that echoes
/// *its* TSval and offers nothing the first SYN asked for. Before, TS.Recent
/// kept the first peer's value, the SYN-ACK echoed it, and a Linux client
/// reset the SYN-ACK of every retry (measured: curl could not connect for
/// 60 s after a burst of `Connection: close` requests).
#[test]
fn a_rst_in_syn_received_forgets_the_handshake() {
    let mut s = socket_listen();
    s.set_tsval_generator(Some(|| 1000));
    send!(
        s,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ,
            ack_number: None,
            window_scale: Some(7),
            sack_permitted: true,
            timestamp: Some(TcpTimestampRepr::new(3_000_000_000, 0)),
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state(), State::SynReceived);
    let first = syn_ack(&mut s);
    assert_eq!(first.timestamp.map(|t| t.tsecr), Some(3_000_000_000));
    send!(
        s,
        TcpRepr {
            control: TcpControl::Rst,
            seq_number: REMOTE_SEQ + 1,
            ack_number: None,
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state(), State::Listen);
    assert_eq!(s.listen_endpoint, LISTEN_END);

    send!(
        s,
        TcpRepr {
            control: TcpControl::Syn,
            seq_number: REMOTE_SEQ + 5000,
            ack_number: None,
            timestamp: Some(TcpTimestampRepr::new(1_000_000, 0)),
            ..SEND_TEMPL
        }
    );
    assert_eq!(s.state(), State::SynReceived);
    let second = syn_ack(&mut s);
    assert_eq!(second.ack_number, Some(REMOTE_SEQ + 5000 + 1));
    assert_eq!(
        second.timestamp.map(|t| t.tsecr),
        Some(1_000_000),
        "the SYN-ACK echoes this SYN's TSval"
    );
    assert_eq!(second.window_scale, None, "no window scale was offered");
    assert!(!second.sack_permitted, "no SACK was offered");
}
