//! Queued file transfers and the poll-loop pump that moves them into the
//! sockets: by reference, or copied into the send ring.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use smoltcp::socket::tcp::{self, TxRef, TxSource};
use zcstack_driver::Driver;

use super::map::SocketStore;
use super::{FileUse, MappedFile, SendMode};
use crate::stack::Stack;
use crate::tcp::TcpConn;

/// One queued range of a file.
struct Transfer {
    file: FileUse,
    pos: u64,
    end: u64,
    /// The file as a source of references, once this transfer sends by
    /// reference (taken when the first bytes go).
    src: Option<Arc<dyn TxSource>>,
}

/// Bytes queued in the socket's ring (not by reference).
pub(crate) fn ring_queue(sock: &tcp::Socket<'_>) -> usize {
    sock.send_queue() - sock.send_ref_queue()
}

/// Per TCP socket: queued transfers and the files it sends by reference.
pub(crate) struct SlotFiles {
    /// Index of the socket's send ring in the [`SocketStore`].
    pub ring: usize,
    queue: VecDeque<Transfer>,
    /// Files the socket may hold references to (smoltcp's send buffer
    /// holds the references; this says which slots to check on a lease
    /// break). Cleared once the socket holds none.
    in_refs: Vec<Arc<MappedFile>>,
    /// Ring offset where the last enqueue ended (meaningful while the ring
    /// holds bytes): the in-flight bytes are the `send_queue()` bytes before it.
    pub tx_end: usize,
    /// The application closed (or shut down) with transfers queued: FIN
    /// after the last one.
    pub close_after: bool,
    /// In the stack's list of slots the pump visits.
    listed: bool,
}

impl SlotFiles {
    pub fn new(ring: usize) -> SlotFiles {
        SlotFiles {
            ring,
            queue: VecDeque::new(),
            in_refs: Vec::new(),
            tx_end: 0,
            close_after: false,
            listed: false,
        }
    }

    /// Transfers are queued, or the socket holds references to files (the
    /// pump looks after such a socket).
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || !self.in_refs.is_empty()
    }

    /// File bytes queued and not in the ring yet.
    pub fn pending(&self) -> u64 {
        self.queue.iter().map(|t| t.end - t.pos).sum()
    }

    /// Forgets queued transfers (abort, or the socket was recycled). Returns how many.
    pub fn drop_queue(&mut self) -> usize {
        let n = self.queue.iter().filter(|t| t.pos < t.end).count();
        self.queue.clear();
        self.close_after = false;
        n
    }
}

/// File-send counters (see [`StackStats`](crate::StackStats)).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct FileCounters {
    pub referenced: u64,
    pub copied: u64,
    pub pread: u64,
    pub lease_breaks: u64,
    pub aborted: u64,
    /// Bytes by reference copied out of a file whose lease broke.
    pub snapshot: u64,
}

/// What one fill step did.
enum Fill {
    /// Enqueued this many bytes.
    Sent(usize),
    /// Nothing now (not enough room, or waiting for the ring to drain).
    Wait,
    /// The file is shorter than the transfer: the connection is reset.
    Short,
}

/// Copies (from the mapping, or `pread`) into the ring's free space.
fn fill_copy(
    sock: &mut tcp::Socket<'static>,
    base: usize,
    f: &mut SlotFiles,
    c: &mut FileCounters,
    limit: usize,
) -> Fill {
    let t = &f.queue[0];
    let (file, pos, rem) = (t.file.file(), t.pos, t.end - t.pos);
    let mut out = Ok((0, false));
    let mut end = f.tx_end;
    let mut limited = false;
    let _ = sock.send(|free| {
        let at = free.as_ptr() as usize - base;
        // The memory budget may leave room for fewer pages than are free.
        let room = free.len().min(limit.saturating_sub(at));
        limited = room < free.len();
        let n = room.min(usize::try_from(rem).unwrap_or(usize::MAX));
        if n == 0 {
            end = at;
            return (0, ());
        }
        out = file.copy_to(&mut free[..n], pos);
        let k = out.as_ref().map(|r| r.0).unwrap_or(0);
        end = free.as_ptr() as usize - base + k;
        (k, ())
    });
    f.tx_end = end;
    match out {
        Ok((0, _)) if limited => Fill::Wait,
        Ok((0, _)) if rem > 0 && sock.send_capacity() > ring_queue(sock) => Fill::Short,
        Ok((0, _)) => Fill::Wait,
        Ok((k, true)) => {
            c.copied += k as u64;
            Fill::Sent(k)
        }
        Ok((k, false)) => {
            c.pread += k as u64;
            Fill::Sent(k)
        }
        Err(_) => Fill::Short,
    }
}

/// Queues the front transfer's bytes by reference, up to `limit` bytes by
/// reference in the socket (the send buffer's size: what the ring would
/// hold). No syscall, no copy; a continuing reference merges with the
/// last one, so a transfer stays one extent in the socket.
fn fill_ref(sock: &mut tcp::Socket<'static>, f: &mut SlotFiles, limit: usize) -> Fill {
    let room = limit.saturating_sub(sock.send_ref_queue());
    let t = &mut f.queue[0];
    let n = usize::try_from(t.end - t.pos)
        .unwrap_or(usize::MAX)
        .min(room);
    if n == 0 {
        return Fill::Wait;
    }
    let file = t.file.file();
    if t.src.is_none() {
        t.src = file.tx_source();
    }
    let Some(src) = &t.src else {
        return Fill::Wait;
    };
    let Some(r) = usize::try_from(t.pos)
        .ok()
        .and_then(|pos| TxRef::new(src.clone(), pos, n))
    else {
        // The range is beyond the mapping: the file was shorter than the transfer.
        return Fill::Short;
    };
    match sock.send_ref(r) {
        Ok(k) if k > 0 => {
            if !f.in_refs.iter().any(|u| Arc::ptr_eq(u, file)) {
                f.in_refs.push(file.clone());
            }
            Fill::Sent(k)
        }
        _ => Fill::Wait,
    }
}

impl<D: Driver> Stack<D> {
    /// Queues file[offset .. offset+len] to be sent on `c` after everything
    /// already written; poll() queues it in the socket by reference, or
    /// copies it into the send ring ([`SendMode`]). Several may be queued (FIFO). Errors: NotConnected (stale),
    /// BrokenPipe (cannot send), InvalidInput (range beyond the file).
    pub fn tcp_send_file(
        &mut self,
        c: TcpConn,
        file: &Arc<MappedFile>,
        offset: u64,
        len: u64,
    ) -> io::Result<()> {
        let slot = self.open_slot(c)?;
        if offset.checked_add(len).is_none_or(|e| e > file.len()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "range {offset}+{len} is beyond the end of {} ({} bytes)",
                    file.path().display(),
                    file.len()
                ),
            ));
        }
        let s = &self.tcp[slot as usize];
        let sock = self.sockets.get::<tcp::Socket>(s.handle);
        let handshaking = matches!(sock.state(), tcp::State::SynSent | tcp::State::SynReceived);
        if s.files.close_after || !(sock.may_send() || handshaking) {
            return Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                format!("connection cannot send in state {}", sock.state()),
            ));
        }
        if len == 0 {
            return Ok(());
        }
        let s = &mut self.tcp[slot as usize];
        s.files.queue.push_back(Transfer {
            file: FileUse::new(file),
            pos: offset,
            end: offset + len,
            src: None,
        });
        if !s.files.listed {
            s.files.listed = true;
            self.file_slots.push(slot);
        }
        self.dirty = true;
        Ok(())
    }

    /// File bytes queued on `c` that are not in the send ring yet. While it is
    /// non-zero, tcp_write/tcp_write_with return WouldBlock (keeps order).
    pub fn tcp_send_file_pending(&self, c: TcpConn) -> u64 {
        self.open_slot(c)
            .map(|slot| self.tcp[slot as usize].files.pending())
            .unwrap_or(0)
    }

    /// Whether file bytes are queued by reference (every mode but
    /// [`SendMode::Copy`]).
    pub(crate) fn by_reference(&self) -> bool {
        self.send_mode != SendMode::Copy
    }

    /// Moves queued file bytes into the sockets. Returns whether any ring
    /// bytes moved.
    pub(crate) fn pump_files(&mut self) -> bool {
        let mut moved = false;
        let by_ref = self.by_reference().then_some(self.tcp_tx_buffer);
        let mut i = 0;
        while i < self.file_slots.len() {
            let slot = self.file_slots[i] as usize;
            let limit = self.mem_tx_limit(slot as u32);
            let s = &mut self.tcp[slot];
            let (sock, base) = self.sockets.tcp_and_ring(s.handle, s.files.ring);
            let end = pump_slot(
                sock,
                base,
                &mut s.files,
                &mut self.file_counters,
                Pump { limit, by_ref },
            );
            if let Some(end) = end {
                moved = true;
                self.mem_note_tx(slot as u32, end);
            }
            let f = &mut self.tcp[slot].files;
            if !f.busy() {
                f.listed = false;
                self.file_slots.swap_remove(i);
            } else {
                i += 1;
            }
        }
        moved
    }

    /// After a lease-break signal: the bytes of a breaking file that sockets
    /// still send by reference are copied out of it; transfers of such
    /// files stop and their connections close after what they hold.
    ///
    /// The lease registry is process-wide, so whichever stack polls first
    /// marks a file as breaking; each stack counts the breaking files its
    /// own transfers and rings were using (once: a handled file leaves them).
    pub(crate) fn handle_lease_breaks(&mut self) {
        super::check_lease_breaks();
        let mut broken: Vec<*const MappedFile> = Vec::new();
        for &slot in &self.file_slots {
            let s = &mut self.tcp[slot as usize];
            let f = &mut s.files;
            let queue_hit = f.queue.iter().any(|t| t.file.file().is_breaking());
            let refs_hit = f.in_refs.iter().any(|u| u.is_breaking());
            if !queue_hit && !refs_hit {
                continue;
            }
            let files = f
                .queue
                .iter()
                .map(|t| t.file.file())
                .chain(f.in_refs.iter());
            for file in files.filter(|file| file.is_breaking()) {
                let p = Arc::as_ptr(file);
                if !broken.contains(&p) {
                    broken.push(p);
                }
            }
            let sock = self.sockets.get_mut::<tcp::Socket>(s.handle);
            if refs_hit {
                // The bytes in flight by reference are copied out of the
                // file (rarely: a lease break), so the lease can go now.
                for r in sock.send_refs_mut() {
                    let copy: Arc<dyn TxSource> = Arc::new(r.bytes().to_vec());
                    self.file_counters.snapshot += r.len() as u64;
                    *r = TxRef::new(copy, 0, r.len()).expect("a copy of the same length");
                }
                f.in_refs.clear();
            }
            if queue_hit {
                self.file_counters.aborted += f.drop_queue() as u64;
                sock.close();
            }
        }
        self.file_counters.lease_breaks += broken.len() as u64;
    }
}

/// How [`pump_slot`] moves bytes this poll.
struct Pump {
    /// Ring bytes the memory budget lets this socket write.
    limit: usize,
    /// Queue by reference, up to this many bytes per socket.
    by_ref: Option<usize>,
}

fn pump_slot(
    sock: &mut tcp::Socket<'static>,
    base: usize,
    f: &mut SlotFiles,
    c: &mut FileCounters,
    p: Pump,
) -> Option<usize> {
    let Pump { limit, by_ref } = p;
    // The furthest ring offset written (fills never wrap within one call).
    let mut moved: Option<usize> = None;
    while let Some(t) = f.queue.front() {
        if t.pos == t.end {
            f.queue.pop_front();
            continue;
        }
        if !sock.may_send() {
            if !matches!(sock.state(), tcp::State::SynSent | tcp::State::SynReceived) {
                c.aborted += f.drop_queue() as u64;
            }
            break;
        }
        let leased = t.file.file().is_leased();
        if let Some(ref_limit) = by_ref.filter(|_| leased) {
            match fill_ref(sock, f, ref_limit) {
                Fill::Sent(n) => {
                    f.queue[0].pos += n as u64;
                    c.referenced += n as u64;
                    continue;
                }
                Fill::Wait => break,
                Fill::Short => {
                    c.aborted += f.drop_queue() as u64;
                    sock.abort();
                    break;
                }
            }
        }
        if ring_queue(sock) == sock.send_capacity() {
            break;
        }
        match fill_copy(sock, base, f, c, limit) {
            Fill::Sent(n) => {
                f.queue[0].pos += n as u64;
                moved = Some(moved.unwrap_or(0).max(f.tx_end));
            }
            Fill::Wait => break,
            Fill::Short => {
                c.aborted += f.drop_queue() as u64;
                sock.abort();
                break;
            }
        }
    }
    if f.queue.is_empty() && f.close_after {
        f.close_after = false;
        sock.close();
    }
    // A CLOSED socket never sends what its buffer holds: references go now.
    sock.release_send_buffer_if_closed();
    if sock.send_ref_queue() == 0 {
        f.in_refs.clear();
    }
    moved
}

impl SocketStore {
    /// A TCP socket, and where its send ring starts.
    pub(crate) fn tcp_and_ring(
        &mut self,
        h: smoltcp::iface::SocketHandle,
        ring: usize,
    ) -> (&mut tcp::Socket<'static>, usize) {
        let base = self.ring_base(ring);
        (self.get_mut::<tcp::Socket>(h), base)
    }
}
