//! Tests of ZCSTACK PATCH 25: transmissions that left late do not make
//! the tail loss probe fire early.

use super::zcstack_recovery::{ack, data, drain, sacking_socket, send_bytes, warm_up};
use super::*;

#[test]
fn a_late_transmission_pushes_its_probe_back() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    // Two segments stamped at 20 ms; the probe would be due at
    // 20 + 2 * SRTT (10) + 2 = 42 ms. They left the host 15 ms late.
    send_bytes(&mut s, 20, base, 20);
    assert!(
        s.socket
            .transmitted_late(Instant::from_millis(20), Duration::from_millis(15))
    );
    assert_eq!(drain(&mut s, 42), vec![], "not yet: they left at 35 ms");
    assert_eq!(drain(&mut s, 56), vec![]);
    // Their ACK comes back in time: no probe at all.
    ack(&mut s, 50, base + 20, &[]);
    assert_eq!(drain(&mut s, 80), vec![]);
    assert_eq!(s.recovery_stats().tail_loss_probes, 0);
}

#[test]
fn a_probe_still_comes_once_the_late_tail_had_its_time() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 20);
    s.socket
        .transmitted_late(Instant::from_millis(20), Duration::from_millis(15));
    assert_eq!(drain(&mut s, 56), vec![]);
    assert_eq!(drain(&mut s, 57), vec![data((base + 10) as i64, 10)]);
    assert_eq!(s.recovery_stats().tail_loss_probes, 1);
}

#[test]
fn only_the_poll_that_sent_counts() {
    let mut s = sacking_socket(400, 64);
    let base = warm_up(&mut s, 10);
    send_bytes(&mut s, 20, base, 20);
    // A late poll at another time, in which this socket sent nothing.
    assert!(
        !s.socket
            .transmitted_late(Instant::from_millis(21), Duration::from_millis(15))
    );
    assert_eq!(drain(&mut s, 41), vec![]);
    assert_eq!(drain(&mut s, 42), vec![data((base + 10) as i64, 10)]);
    // Nothing armed: nothing to move.
    let mut idle = sacking_socket(400, 64);
    assert!(
        !idle
            .socket
            .transmitted_late(Instant::from_millis(0), Duration::from_millis(15))
    );
}
