//! zc-perf's tests on zcstack: one test at a time, each a loop that moves
//! what it can and otherwise polls the stack (the server's other clients wait
//! in the listen backlog meanwhile). The TCP server accepts and closes in
//! the apps' shared connection loop (`zcstack_apps::conns`), with room for
//! one connection: a connection's step runs its whole test.

use std::cell::RefCell;

use zcstack::Event;
use zcstack_apps::conns::{ConnLoop, Service, Step};

use super::*;

type Zc = Stack<AppDriver>;

thread_local! {
    /// Where a test's own polls put the stack's events (reused: no
    /// allocation per poll). A test waits on its one connection, so they
    /// are dropped; the connection loop accepts the next client after the
    /// test whether or not its `Accept` was among them.
    static DROPPED: RefCell<Vec<Event>> = const { RefCell::new(Vec::new()) };
}

/// Polls once; with `moved`, tells the back-off the app did work.
fn tick(stack: &mut Zc, ticker: &mut StatsTicker, moved: bool) {
    if moved {
        stack.note_activity();
    }
    stack.poll_wait();
    DROPPED.with_borrow_mut(|ev| stack.events(ev));
    ticker.tick(APP, stack);
}

/// Reads exactly `buf.len()` bytes, polling as needed.
fn read_exact(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    c: TcpConn,
    buf: &mut [u8],
    limit: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + limit;
    let mut got = 0;
    while got < buf.len() {
        match stack.tcp_read(c, &mut buf[got..]) {
            Ok(0) => bail!("the peer closed the connection early"),
            Ok(n) => got += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if stop.load(Ordering::Relaxed) {
                    bail!("interrupted");
                }
                if Instant::now() > deadline {
                    bail!("timed out after {limit:?}");
                }
                tick(stack, ticker, false);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Writes all of `data`, polling as needed.
fn write_all(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    c: TcpConn,
    mut data: &[u8],
) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !data.is_empty() {
        match stack.tcp_write(c, data) {
            Ok(n) => data = &data[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock && Instant::now() < deadline => {
                tick(stack, ticker, false)
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// Polls until everything written on `c` is acknowledged (≤ 5 s).
fn drain(stack: &mut Zc, ticker: &mut StatsTicker, c: TcpConn) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while stack.tcp_unacked(c) > 0 && Instant::now() < deadline {
        tick(stack, ticker, false);
    }
}

/// The TCP server as a connection loop's service: a step runs one test.
struct PerfServer<'a> {
    ticker: &'a mut StatsTicker,
    stop: &'a AtomicBool,
    json: bool,
    stock: bool,
    /// Tests run so far.
    served: u64,
}

impl Service for PerfServer<'_> {
    type Conn = ();

    fn open(&mut self, stack: &mut Zc, c: TcpConn, _: Instant) {
        if self.stock {
            // Cannot fail on a connection just accepted.
            let _ = stack.tcp_use_smoltcp_defaults(c);
        }
    }

    fn step(&mut self, stack: &mut Zc, c: TcpConn, _: &mut (), _: Instant) -> Step {
        let peer = stack.tcp_peer(c).map_or("?".into(), |p| p.to_string());
        match serve(stack, self.ticker, c, self.stop) {
            Ok(mut r) => {
                r.peer = peer;
                r.print(APP, self.json);
            }
            Err(e) => eprintln!("{APP}: test from {peer} failed: {e:#}"),
        }
        self.served += 1;
        // The loop closes the connection (already reset by the peer:
        // nothing left to close).
        Step::Done
    }
}

pub fn tcp_server(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    a: &ServerArgs,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let once = a.once;
    let listener = stack.tcp_listen(a.common.port, a.backlog.into())?;
    let mut conns = ConnLoop::new(stack, listener, 1);
    let mut srv = PerfServer {
        ticker,
        stop,
        json: a.common.json,
        stock: a.common.smoltcp_defaults,
        served: 0,
    };
    while !stop.load(Ordering::Relaxed) {
        conns.turn(stack, &mut srv);
        srv.ticker.tick(APP, stack);
        if once && srv.served > 0 {
            let ticker = &mut *srv.ticker;
            // Let the close go out before the process ends.
            let deadline = Instant::now() + Duration::from_secs(2);
            while stack.stats().tcp_open > 0 && Instant::now() < deadline {
                tick(stack, ticker, false);
            }
            for _ in 0..100 {
                tick(stack, ticker, false);
            }
            break;
        }
    }
    Ok(())
}

fn serve(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    c: TcpConn,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let mut hb = [0u8; HEADER_LEN];
    read_exact(stack, ticker, c, &mut hb, Duration::from_secs(10), stop)
        .context("reading the test header")?;
    let h = Header::decode(&hb).map_err(|e| anyhow!(e))?;
    let mut r = if h.reverse {
        send(stack, ticker, c, &h, SERVER_SEND_CAP, stop)?
    } else {
        receive(stack, ticker, c, &h, stop)?
    };
    r.side = "server";
    Ok(r)
}

pub fn tcp_client(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    peer: SocketAddrV4,
    h: &Header,
    stock: bool,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let c = stack.tcp_connect(peer)?;
    if stock {
        stack.tcp_use_smoltcp_defaults(c)?;
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match stack.tcp_state(c) {
            TcpState::Established => break,
            TcpState::Closed => {
                bail!("connecting to {peer}: refused: is a zc-perf server running there?")
            }
            _ if Instant::now() > deadline => {
                bail!(
                    "connecting to {peer}: no answer within 5 s: is the address right and the server up?"
                )
            }
            _ => tick(stack, ticker, false),
        }
    }
    write_all(stack, ticker, c, &h.encode())?;
    let mut r = if h.reverse {
        receive(stack, ticker, c, h, stop)?
    } else {
        send(stack, ticker, c, h, Duration::MAX, stop)?
    };
    r.side = "client";
    r.peer = peer.to_string();
    // Both FINs are sent by now or soon: let the exchange finish (≤ 2 s) so
    // the peer is not left retransmitting its FIN to a process that is gone.
    let deadline = Instant::now() + Duration::from_secs(2);
    while !matches!(stack.tcp_state(c), TcpState::TimeWait | TcpState::Closed)
        && Instant::now() < deadline
    {
        tick(stack, ticker, false);
    }
    stack.tcp_close(c)?;
    Ok(r)
}

fn send(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    c: TcpConn,
    h: &Header,
    cap: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let meter = Meter::start(Some(stack));
    // `send_loop` needs the stack in two closures; a cell-free way: one
    // closure does both (0 from write means "I polled").
    let (sent, ended_by) = {
        let st = std::cell::RefCell::new((&mut *stack, &mut *ticker));
        send_loop(
            h,
            cap,
            stop,
            |d| {
                let mut g = st.borrow_mut();
                match g.0.tcp_write(c, d) {
                    Ok(n) => Ok(n),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(0),
                    Err(e) => Err(e.into()),
                }
            },
            || {
                let mut g = st.borrow_mut();
                let (s, t) = &mut *g;
                tick(s, t, true);
            },
        )?
    };
    stack.tcp_shutdown(c)?;
    let mut tb = [0u8; TRAILER_LEN];
    read_exact(stack, ticker, c, &mut tb, Duration::from_secs(30), stop)
        .context("reading the receiver's report")?;
    let t = Trailer::decode(&tb).map_err(|e| anyhow!(e))?;
    let mut r = Report {
        role: "sender",
        proto: "tcp",
        bytes: sent,
        peer_count: Some(t.bytes),
        pattern_ok: Some(t.pattern_ok),
        ended_by,
        ..Report::default()
    };
    meter.finish(&mut r, Some(stack));
    Ok(r)
}

fn receive(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    c: TcpConn,
    h: &Header,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    let meter = Meter::start(Some(stack));
    let pattern = Pattern::new(h.seed);
    let deadline = Instant::now() + h.receive_limit();
    let (mut got, mut ok) = (0u64, true);
    loop {
        // In place: the ring's bytes are checked where they lie (no copy).
        match stack.tcp_read_with(c, |data| {
            ok &= pattern.matches(got, data);
            (data.len(), data.len())
        }) {
            Ok(Some(n)) => {
                got += n as u64;
                tick(stack, ticker, true);
            }
            Ok(None) => break,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                // The last poll's time: no clock read per idle spin.
                if stack.poll_time() > deadline || stop.load(Ordering::Relaxed) {
                    bail!("the sender went silent (received {got} bytes)");
                }
                tick(stack, ticker, false);
            }
            Err(e) => return Err(e).context("receiving"),
        }
    }
    write_all(
        stack,
        ticker,
        c,
        &Trailer {
            bytes: got,
            pattern_ok: ok,
        }
        .encode(),
    )?;
    stack.tcp_shutdown(c)?;
    drain(stack, ticker, c);
    let mut r = Report {
        role: "receiver",
        proto: "tcp",
        bytes: got,
        pattern_ok: Some(ok),
        ended_by: "peer",
        ..Report::default()
    };
    meter.finish(&mut r, Some(stack));
    Ok(r)
}

/// UDP by frame handle (`dgram_*`): datagrams are read where the driver
/// put them and dropped back to the pool; no payload byte is copied.
pub fn udp_server(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    port: u16,
    once: bool,
    queue: Option<usize>,
    json: bool,
    stop: &AtomicBool,
) -> anyhow::Result<()> {
    let s = stack.dgram_bind(port)?;
    let mut rx = UdpRx {
        queue,
        ..UdpRx::default()
    };
    let mut got: Vec<RxDatagram> = Vec::with_capacity(1024);
    while !stop.load(Ordering::Relaxed) {
        // Everything queued: the stack steers up to a poll's budget at once.
        let n = stack.dgram_recv_burst(s, &mut got, 1024)?;
        for d in got.drain(..) {
            let from = d.source();
            if let Some(reply) = rx.on_datagram(d.payload(), from.into(), "zcstack", json) {
                // The answer goes back in the frame it came in.
                let mut t = d.into_reply();
                t.set_len(reply.len());
                t.payload_mut().copy_from_slice(&reply);
                // A full device queue loses this answer; the client asks again.
                let _ = stack.dgram_send(s, t, from);
            }
        }
        if once && rx.done_for(Duration::from_millis(300)) {
            break;
        }
        tick(stack, ticker, n > 0);
    }
    Ok(())
}

/// Sends one small control datagram (best effort).
fn send_small(stack: &mut Zc, s: DgramSock, msg: &[u8], to: SocketAddrV4) {
    if let Some(mut d) = stack.dgram_alloc() {
        d.set_len(msg.len());
        d.payload_mut().copy_from_slice(msg);
        let _ = stack.dgram_send(s, d, to);
    }
}

/// UDP by frame handle: each datagram is written straight into a pool
/// frame, in batches of 32 handed to the stack at once.
pub fn udp_client(
    stack: &mut Zc,
    ticker: &mut StatsTicker,
    peer: SocketAddrV4,
    a: &ClientArgs,
    limit: Duration,
    stop: &AtomicBool,
) -> anyhow::Result<Report> {
    // An ephemeral-range port derived from the process id.
    let local = 49152 + (std::process::id() % 16000) as u16;
    let s = stack.dgram_bind(local)?;
    let mut tx = UdpTx::new(a, limit);
    let size = tx.size();
    let mut batch: Vec<(TxDatagram, SocketAddrV4)> = Vec::with_capacity(UDP_BATCH);
    let mut fresh: Vec<TxDatagram> = Vec::with_capacity(UDP_BATCH);
    let mut meter_set = false;
    loop {
        if batch.is_empty() {
            let n = tx.batch(UDP_BATCH, stop);
            if n == 0 {
                break;
            }
            stack.dgram_alloc_burst(n, &mut fresh);
            for (i, mut d) in fresh.drain(..).enumerate() {
                tx.write(tx.sent + i as u64, &mut d.room_mut()[..size], false);
                d.set_len(size);
                batch.push((d, peer));
            }
        }
        let n = stack.dgram_send_burst(s, &mut batch).context("sending")?;
        tx.sent += n as u64;
        if !meter_set && n > 0 {
            // Measure from the first datagram queued (ARP comes before it).
            tx.meter = Meter::start(Some(stack));
            meter_set = true;
        }
        // Pool empty or device backed up: let the stack catch up.
        tick(stack, ticker, n > 0);
    }
    drop(batch);
    let mut got: Vec<RxDatagram> = Vec::new();
    for _ in 0..20 {
        send_small(stack, s, &tx.end(), peer);
        let until = Instant::now() + Duration::from_millis(100);
        while Instant::now() < until {
            tick(stack, ticker, false);
            stack.dgram_recv_burst(s, &mut got, 16)?;
            for d in got.drain(..) {
                if let Some(n) = tx.result(d.payload()) {
                    stack.dgram_close(s);
                    return Ok(tx.report(peer, n, Some(stack)));
                }
            }
        }
    }
    bail!(
        "no answer from the server at {peer} after the test: is a zc-perf --udp server running there?"
    )
}
