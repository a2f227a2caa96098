//! `tcp_send_file` between two stacks over the in-memory wire (unprivileged):
//! bytes equal in every mode, copies counted, pools full afterwards; a file
//! truncated by another process while it is sent.
//!
//! The tests take one lock: they count the process's mappings and copies,
//! and the machine has few cores.

#[path = "sendfile/bed.rs"]
mod bed;

use std::io::ErrorKind;
use std::time::{Duration, Instant};

use bed::{BedCfg, Send, TempFile, bed, connect_pair, hex, serial, sha_of};
use sha2::Digest;
use zcstack::{MappedFile, SendMode, TcpState};
use zcstack_tests::random_bytes;
fn sixty_four_mib(mode: SendMode) {
    let _g = serial();
    let data = random_bytes(64 << 20, 7);
    let tf = TempFile::new(&format!("64m-{mode}"), &data);
    let file = MappedFile::open(tf.path()).unwrap();
    assert!(file.is_leased(), "the test file can be leased");
    let mut bed = bed(BedCfg {
        mode,
        ..BedCfg::default()
    });
    let send = Send {
        header: Vec::new(),
        ranges: vec![(file.clone(), 0, data.len() as u64)],
    };
    let got = bed.run(&[send], Duration::from_secs(180), |_, _| {});
    assert_eq!(got[0].bytes, data.len() as u64);
    assert!(!got[0].reset);
    assert_eq!(hex(&got[0].sha.clone().finalize()), sha_of(&[&data]));
    let st = bed.a.stats();
    assert_eq!(st.file_bytes(), data.len() as u64);
    assert_eq!(st.file_transfers_aborted, 0);
    match mode {
        SendMode::Copy => {
            assert_eq!(st.file_bytes_copied, data.len() as u64);
            assert!(
                st.tx_copies_per_byte() >= 2.0,
                "{}",
                st.tx_copies_per_byte()
            );
        }
        SendMode::Reference | SendMode::Auto => {
            // Queued by reference (auto's choice too); the wire takes no payload slices, so
            // smoltcp copies them into frames, straight from the mapping.
            assert_eq!(st.file_bytes_referenced, data.len() as u64);
            assert_eq!(st.file_bytes_copied + st.file_bytes_pread, 0);
            assert_eq!(st.tcp_tx_payload_ref, 0);
            assert!(
                (1.0..1.05).contains(&st.tx_copies_per_byte()),
                "tx copies per byte {}",
                st.tx_copies_per_byte()
            );
        }
    }
    drop(file);
    bed.assert_pools_full();
}

#[test]
fn sixty_four_mib_file_by_copy() {
    sixty_four_mib(SendMode::Copy);
}

#[test]
fn sixty_four_mib_file_by_reference() {
    sixty_four_mib(SendMode::Reference);
}

#[test]
fn sixty_four_mib_file_by_auto() {
    sixty_four_mib(SendMode::Auto);
}

/// Header, two ranges (one unaligned, one to EOF), then a write
/// that must wait for the file bytes: the byte order is what was asked.
fn header_and_ranges(mode: SendMode) {
    let _g = serial();
    let data = random_bytes(3 << 20 | 1234, 11);
    let tf = TempFile::new(&format!("ranges-{mode}"), &data);
    let file = MappedFile::open(tf.path()).unwrap();
    let mut bed = bed(BedCfg {
        mode,
        ..BedCfg::default()
    });
    let (c, s) = connect_pair(&mut bed, 80);
    let head = b"HTTP/1.1 200 OK\r\n".to_vec();
    assert_eq!(bed.a.tcp_write(c, &head).unwrap(), head.len());
    let r1 = (100u64, 1u64 << 20);
    let r2 = (2u64 << 20, data.len() as u64 - (2 << 20));
    bed.a.tcp_send_file(c, &file, r1.0, r1.1).unwrap();
    bed.a.tcp_send_file(c, &file, r2.0, r2.1).unwrap();
    let e = bed
        .a
        .tcp_send_file(c, &file, 1, data.len() as u64)
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidInput);
    assert_eq!(bed.a.tcp_send_file_pending(c), r1.1 + r2.1);
    assert_eq!(
        bed.a.tcp_write(c, b"x").unwrap_err().kind(),
        ErrorKind::WouldBlock
    );
    let mut trailer_written = false;
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let want = head.len() + (r1.1 + r2.1) as usize + 7;
    while got.len() < want {
        assert!(
            Instant::now() < deadline,
            "stalled at {} of {want}",
            got.len()
        );
        if !trailer_written && bed.a.tcp_send_file_pending(c) == 0 {
            // File bytes queued by reference take no room in the ring.
            let room = bed.a.tcp_send_room(c);
            assert!((7..=256 << 10).contains(&room), "send room {room}");
            assert_eq!(bed.a.tcp_write(c, b"trailer").unwrap(), 7);
            trailer_written = true;
        }
        while let Ok(Some(())) = bed.b.tcp_read_with(s, |d| {
            got.extend_from_slice(d);
            (d.len(), ())
        }) {}
        bed.step(true);
    }
    let mut expect = head.clone();
    expect.extend_from_slice(&data[r1.0 as usize..(r1.0 + r1.1) as usize]);
    expect.extend_from_slice(&data[r2.0 as usize..]);
    expect.extend_from_slice(b"trailer");
    assert_eq!(sha_of(&[&got]), sha_of(&[&expect]));
    let st = bed.a.stats();
    assert_eq!(st.file_bytes(), r1.1 + r2.1);
    bed.a.tcp_close(c).unwrap();
    bed.b.tcp_close(s).unwrap();
    for _ in 0..5000 {
        bed.step(false);
    }
    assert_eq!(
        bed.a.tcp_send_file(c, &file, 0, 1).unwrap_err().kind(),
        ErrorKind::NotConnected
    );
    drop(file);
    bed.assert_pools_full();
}

#[test]
fn header_ranges_and_trailer_in_order_copy() {
    header_and_ranges(SendMode::Copy);
}

#[test]
fn header_ranges_and_trailer_in_order_reference() {
    header_and_ranges(SendMode::Reference);
}

/// A file someone keeps open for writing cannot be leased: it is sent with pread.
#[test]
fn unleasable_file_goes_by_pread() {
    let _g = serial();
    let data = random_bytes(5 << 20, 3);
    let tf = TempFile::new("pread", &data);
    let writer = std::fs::OpenOptions::new()
        .write(true)
        .open(tf.path())
        .unwrap();
    let file = MappedFile::open(tf.path()).unwrap();
    assert!(!file.is_leased());
    let mut bed = bed(BedCfg {
        mode: SendMode::Reference,
        ..BedCfg::default()
    });
    let got = bed.run(
        &[Send {
            header: b"hi".to_vec(),
            ranges: vec![(file.clone(), 0, data.len() as u64)],
        }],
        Duration::from_secs(60),
        |_, _| {},
    );
    assert_eq!(hex(&got[0].sha.clone().finalize()), sha_of(&[b"hi", &data]));
    let st = bed.a.stats();
    assert_eq!(st.file_bytes_pread, data.len() as u64);
    assert_eq!(st.file_bytes_referenced + st.file_bytes_copied, 0);
    drop((writer, file));
    bed.assert_pools_full();
}

/// Another process truncates the file while it is being sent: this process
/// survives, the receiver gets a prefix of the file and then a clean close
/// (leased) or a reset (pread path), the truncator is not held for long, the
/// next transfer is intact, the pools are full.
fn truncated_while_sent(mode: SendMode, leased: bool) {
    let _g = serial();
    let data = random_bytes(48 << 20, 21);
    let tf = TempFile::new(&format!("trunc-{mode}-{leased}"), &data);
    let writer = (!leased).then(|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(tf.path())
            .unwrap()
    });
    let file = MappedFile::open(tf.path()).unwrap();
    assert_eq!(file.is_leased(), leased);
    let mut bed = bed(BedCfg {
        mode,
        ..BedCfg::default()
    });
    bed.read_cap = 64 * 1024;
    let mut truncator: Option<(std::process::Child, Instant)> = None;
    let mut truncated_in = None;
    let got = bed.run(
        &[Send {
            header: Vec::new(),
            ranges: vec![(file.clone(), 0, data.len() as u64)],
        }],
        Duration::from_secs(60),
        |bed, _| {
            std::thread::sleep(Duration::from_micros(200));
            if truncator.is_none() && bed.a.stats().tcp_tx_payload > 4 << 20 {
                // The shell's `: > FILE` opens with O_TRUNC and blocks on
                // the lease like any writer (coreutils truncate(1) opens
                // with O_NONBLOCK and gives up with EAGAIN instead).
                let child = std::process::Command::new("sh")
                    .args(["-c", ": > \"$0\""])
                    .arg(tf.path())
                    .spawn()
                    .expect("run sh");
                truncator = Some((child, Instant::now()));
            }
            if let Some((c, t)) = &mut truncator
                && truncated_in.is_none()
                && let Some(st) = c.try_wait().unwrap()
            {
                assert!(st.success(), "truncate failed: {st}");
                truncated_in = Some(t.elapsed());
            }
        },
    );
    let (mut child, t) = truncator.expect("the truncator ran");
    let st = child.wait().unwrap();
    assert!(st.success());
    let took = truncated_in.unwrap_or_else(|| t.elapsed());
    assert!(
        took < Duration::from_secs(5),
        "truncate waited {took:?} for the lease"
    );
    assert_eq!(std::fs::metadata(tf.path()).unwrap().len(), 0);
    let g = &got[0];
    eprintln!(
        "{mode} leased={leased}: truncate took {took:?}; received {} of {} bytes, reset {}",
        g.bytes,
        data.len(),
        g.reset
    );
    assert!(
        g.bytes < data.len() as u64,
        "the transfer was cut short ({} bytes)",
        g.bytes
    );
    // A reset discards what was still in flight or unread at the receiver,
    // so only a clean close promises the 4 MiB sent before the truncation.
    if !g.reset {
        assert!(g.bytes >= 4 << 20, "{} bytes", g.bytes);
    }
    assert!(g.bytes > 0);
    assert_eq!(
        hex(&g.sha.clone().finalize()),
        sha_of(&[&data[..g.bytes as usize]]),
        "what arrived is the file's first {} bytes",
        g.bytes
    );
    let sa = bed.a.stats();
    assert_eq!(
        sa.file_transfers_aborted,
        1,
        "lease breaks {} (b: {}), {mode} leased={leased}; {sa}",
        sa.lease_breaks,
        bed.b.stats().lease_breaks
    );
    if leased {
        assert!(!g.reset, "a leased transfer ends with FIN");
        assert_eq!(sa.lease_breaks, 1);
        assert!(!file.is_leased());
    } else {
        assert!(
            g.reset,
            "a pread transfer that finds the file short is reset"
        );
    }
    drop((file, writer));

    // The stack goes on: another file, byte for byte.
    let other = random_bytes(8 << 20, 22);
    let tf2 = TempFile::new(&format!("after-{mode}-{leased}"), &other);
    let file2 = MappedFile::open(tf2.path()).unwrap();
    bed.read_cap = usize::MAX;
    let got = bed.run(
        &[Send {
            header: Vec::new(),
            ranges: vec![(file2.clone(), 0, other.len() as u64)],
        }],
        Duration::from_secs(60),
        |_, _| {},
    );
    assert_eq!(hex(&got[0].sha.clone().finalize()), sha_of(&[&other]));
    drop(file2);
    bed.assert_pools_full();
}

#[test]
fn truncated_while_sent_by_copy() {
    truncated_while_sent(SendMode::Copy, true);
}

#[test]
fn truncated_while_sent_by_reference() {
    truncated_while_sent(SendMode::Reference, true);
}

#[test]
fn truncated_while_sent_without_lease() {
    truncated_while_sent(SendMode::Reference, false);
}

/// The receiver resets the connection mid-transfer: the sender drops the
/// transfer and counts it, lets go of the file, writes say why they fail,
/// the pools fill up again.
#[test]
fn peer_reset_stops_the_transfer() {
    let _g = serial();
    let data = random_bytes(16 << 20, 51);
    let tf = TempFile::new("reset", &data);
    let file = MappedFile::open(tf.path()).unwrap();
    let mut bed = bed(BedCfg {
        mode: SendMode::Reference,
        ..BedCfg::default()
    });
    let (c, s) = connect_pair(&mut bed, 80);
    bed.a.tcp_send_file(c, &file, 0, data.len() as u64).unwrap();
    let mut got = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while got < 1 << 20 {
        assert!(Instant::now() < deadline, "stalled at {got}");
        while let Ok(Some(n)) = bed.b.tcp_read_with(s, |d| (d.len(), d.len())) {
            got += n;
        }
        bed.step(true);
    }
    assert!(
        std::sync::Arc::strong_count(&file) > 1,
        "the transfer and the socket's references hold the file"
    );
    bed.b.tcp_abort(s).unwrap();
    for _ in 0..100 {
        bed.step(false);
    }
    assert_eq!(bed.a.tcp_state(c), TcpState::Closed);
    assert_eq!(bed.a.tcp_send_file_pending(c), 0);
    let e = bed.a.tcp_write(c, b"x").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    assert_eq!(e.to_string(), "connection cannot send in state CLOSED");
    let e = bed.a.tcp_send_file(c, &file, 0, 1).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::BrokenPipe);
    let st = bed.a.stats();
    assert_eq!(st.file_transfers_aborted, 1);
    assert_eq!(
        std::sync::Arc::strong_count(&file),
        1,
        "the reset socket let go of the file"
    );
    bed.a.tcp_close(c).unwrap();
    drop(file);
    bed.assert_pools_full();
}
