//! Tests of ZCSTACK PATCH 16: `Socket::buffers_idle`.

use super::*;

fn data(seq: TcpSeqNumber, payload: &'static [u8]) -> TcpRepr<'static> {
    TcpRepr {
        seq_number: seq,
        ack_number: Some(LOCAL_SEQ + 1),
        payload,
        ..SEND_TEMPL
    }
}

#[test]
fn a_fresh_connection_is_idle() {
    let s = socket_established();
    assert!(s.buffers_idle());
    let s = socket_listen();
    assert!(s.buffers_idle());
}

#[test]
fn sent_bytes_keep_it_busy_until_acknowledged() {
    let mut s = socket_established();
    s.send_slice(b"abcdef").unwrap();
    assert!(!s.buffers_idle(), "queued, not sent");
    recv!(
        s,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"abcdef"[..],
            ..RECV_TEMPL
        }]
    );
    assert!(!s.buffers_idle(), "sent, not acknowledged");
    send!(
        s,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 3),
            ..SEND_TEMPL
        }
    );
    assert!(!s.buffers_idle(), "half acknowledged");
    send!(
        s,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            ..SEND_TEMPL
        }
    );
    assert!(s.buffers_idle());
}

#[test]
fn received_bytes_keep_it_busy_until_read() {
    let mut s = socket_established();
    send!(s, data(REMOTE_SEQ + 1, b"abcdef"));
    assert!(!s.buffers_idle());
    let mut buf = [0; 4];
    assert_eq!(s.recv_slice(&mut buf), Ok(4));
    assert!(!s.buffers_idle());
    assert_eq!(s.recv_slice(&mut buf), Ok(2));
    assert!(s.buffers_idle());
}

/// An out-of-order segment sits in the receive buffer beyond what
/// `recv_queue` counts: the buffer is not idle until it has been read.
#[test]
fn an_out_of_order_segment_keeps_it_busy() {
    let mut s = socket_established();
    // Bytes 3..6 arrive first; the socket answers with a duplicate ACK.
    let _ = send(&mut s, Instant::from_millis(0), &data(REMOTE_SEQ + 1 + 3, b"def"));
    assert_eq!(s.recv_queue(), 0, "nothing in order yet");
    assert!(!s.buffers_idle(), "the out-of-order bytes are held");
    let _ = send(&mut s, Instant::from_millis(1), &data(REMOTE_SEQ + 1, b"abc"));
    assert_eq!(s.recv_queue(), 6);
    let mut buf = [0; 8];
    assert_eq!(s.recv_slice(&mut buf), Ok(6));
    assert_eq!(&buf[..6], b"abcdef");
    assert!(s.buffers_idle());
}

/// ZCSTACK PATCH 28: the reassembly contigs an out-of-order segment
/// allocated are given back by `release_idle_memory` once the hole is
/// filled, and not before.
#[cfg(feature = "alloc")]
#[test]
fn zcstack_patch28_release_idle_memory_frees_the_reassembly_contigs() {
    let mut s = socket_established();
    let _ = send(&mut s, Instant::from_millis(0), &data(REMOTE_SEQ + 1 + 3, b"def"));
    s.release_idle_memory();
    assert!(!s.assembler.is_empty(), "out-of-order bytes are still tracked");
    let _ = send(&mut s, Instant::from_millis(1), &data(REMOTE_SEQ + 1, b"abc"));
    assert!(s.assembler.is_empty());
    assert!(s.assembler.capacity() > 0, "kept until the socket is idle");
    s.release_idle_memory();
    assert_eq!(s.assembler.capacity(), 0);
    let mut buf = [0; 8];
    assert_eq!(s.recv_slice(&mut buf), Ok(6));
    assert_eq!(&buf[..6], b"abcdef");
}

/// ZCSTACK PATCH 27: the storage of an idle socket's buffers is handed out
/// whole, and overwriting it (as giving its pages back does) changes
/// nothing the socket sends or delivers afterwards.
#[test]
fn zcstack_patch27_idle_storage_may_be_overwritten() {
    let mut s = socket_established();
    let (rx_cap, tx_cap) = (s.recv_capacity(), s.send_capacity());
    {
        let (rx, tx) = s.idle_buffer_storage().expect("idle");
        assert_eq!((rx.len(), tx.len()), (rx_cap, tx_cap));
    }
    s.send_slice(b"abcdef").unwrap();
    assert!(s.idle_buffer_storage().is_none(), "bytes queued");
    recv!(
        s,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1,
            ack_number: Some(REMOTE_SEQ + 1),
            payload: &b"abcdef"[..],
            ..RECV_TEMPL
        }]
    );
    send!(
        s,
        TcpRepr {
            seq_number: REMOTE_SEQ + 1,
            ack_number: Some(LOCAL_SEQ + 1 + 6),
            ..SEND_TEMPL
        }
    );
    send!(s, data(REMOTE_SEQ + 1, b"xyz"));
    assert!(s.idle_buffer_storage().is_none(), "bytes unread");
    assert_eq!(s.recv_slice(&mut [0; 3]), Ok(3));
    let (rx, tx) = s.idle_buffer_storage().expect("idle again");
    rx.fill(0xee);
    tx.fill(0xee);
    s.send_slice(b"ghi").unwrap();
    recv!(
        s,
        [TcpRepr {
            seq_number: LOCAL_SEQ + 1 + 6,
            ack_number: Some(REMOTE_SEQ + 1 + 3),
            payload: &b"ghi"[..],
            ..RECV_TEMPL
        }]
    );
    send!(s, data(REMOTE_SEQ + 1 + 3, b"jkl"));
    let mut got = [0; 3];
    assert_eq!(s.recv_slice(&mut got), Ok(3));
    assert_eq!(&got, b"jkl");
}
