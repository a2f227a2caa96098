//! Queued file transfers and the poll-loop pump that moves them into send rings.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use smoltcp::socket::tcp::{self, TxRef, TxSource};
use zcstack_driver::Driver;

use super::remap::{self, PAGE, Region, SocketStore};
use super::{FileUse, MappedFile, SendMode};
use crate::stack::Stack;
use crate::tcp::TcpConn;

/// A remap-mode transfer whose ring position is not page-congruent with the
/// file offset waits for the ring to drain (its position then restarts at 0)
/// rather than copy, when at least this much is left.
const DRAIN_WORTH: u64 = 1 << 20;

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

/// Per TCP socket: queued transfers and the files whose pages its ring maps.
pub(crate) struct SlotFiles {
    /// Index of the socket's send ring in the [`SocketStore`].
    pub ring: usize,
    queue: VecDeque<Transfer>,
    /// Files with pages mapped in the ring (held so their leases stay).
    in_ring: Vec<FileUse>,
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
            in_ring: Vec::new(),
            in_refs: Vec::new(),
            tx_end: 0,
            close_after: false,
            listed: false,
        }
    }

    /// Transfers are queued, or file pages are mapped in the ring (the pump
    /// looks after such a ring).
    pub fn busy(&self) -> bool {
        !self.queue.is_empty() || !self.in_ring.is_empty() || !self.in_refs.is_empty()
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
    pub remapped: u64,
    pub referenced: u64,
    pub copied: u64,
    pub pread: u64,
    pub lease_breaks: u64,
    pub aborted: u64,
    pub remap_calls: u64,
    pub remap_failures: u64,
    pub ring_resets: u64,
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

fn in_flight(tx_end: usize, queued: usize, cap: usize) -> Vec<(usize, usize)> {
    if queued == 0 {
        return Vec::new();
    }
    let start = (tx_end % cap + cap - queued) % cap;
    if start + queued <= cap {
        vec![(start, queued)]
    } else {
        vec![(start, cap - start), (0, queued - (cap - start))]
    }
}

/// Copies (from the mapping, or `pread`) into the ring's free space.
fn fill_copy(
    sock: &mut tcp::Socket<'static>,
    ring: &Region,
    f: &mut SlotFiles,
    c: &mut FileCounters,
    limit: usize,
) -> Fill {
    let t = &f.queue[0];
    let (file, pos, rem) = (t.file.file(), t.pos, t.end - t.pos);
    let base = ring.base();
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

/// Maps whole file pages over the ring's free space (see the module doc of
/// `file` for the policy); copies only a head up to the next page boundary,
/// a transfer's partial last page, and incongruent transfers.
fn fill_remap(
    sock: &mut tcp::Socket<'static>,
    ring: &Region,
    f: &mut SlotFiles,
    c: &mut FileCounters,
    batch: usize,
    limit: usize,
) -> Fill {
    let cap = ring.len();
    let free_total = sock.send_capacity() - ring_queue(sock);
    let t = &f.queue[0];
    let (file, pos, rem) = (t.file.file().clone(), t.pos, t.end - t.pos);
    let to_eof = t.end == file.len();
    if (free_total as u64) < rem && free_total < batch {
        return Fill::Wait;
    }
    let ring_busy = ring_queue(sock) > 0;
    let base = ring.base();
    let rem_us = usize::try_from(rem).unwrap_or(usize::MAX);
    let mut result = Fill::Wait;
    let mut mapped_any = false;
    let mut end = f.tx_end;
    let _ = sock.send(|free| {
        let at = free.as_ptr() as usize - base;
        // The memory budget may leave room for fewer pages than are free.
        let room = limit.saturating_sub(at).min(cap - at).min(free.len());
        let room_limited = room < free.len();
        let free = &mut free[..room];
        if free.is_empty() {
            return (0, ());
        }
        let len = free.len().min(rem_us);
        let copy = |dst: &mut [u8], off: u64, c: &mut FileCounters| -> bool {
            match file.copy_to(dst, off) {
                Ok((k, mapped)) if k == dst.len() => {
                    if mapped {
                        c.copied += k as u64;
                    } else {
                        c.pread += k as u64;
                    }
                    true
                }
                _ => false,
            }
        };
        if at % PAGE != (pos % PAGE as u64) as usize {
            // Not congruent: a ring that drains restarts at 0, which fits a
            // page-aligned offset; otherwise copy.
            if ring_busy && pos.is_multiple_of(PAGE as u64) && rem >= DRAIN_WORTH {
                return (0, ());
            }
            if copy(&mut free[..len], pos, c) {
                result = Fill::Sent(len);
                end = at + len;
                return (len, ());
            }
            result = Fill::Short;
            return (0, ());
        }
        let head = ((PAGE - at % PAGE) % PAGE).min(len);
        let rest = rem_us - head;
        let room = (free.len() - head) / PAGE;
        let (full, tail) = (rest / PAGE, rest % PAGE);
        // Pages to map and bytes of a partial last page to copy.
        let (pages, tail_copy) = if full + usize::from(tail > 0) <= room {
            if tail > 0 && to_eof {
                (full + 1, 0) // the file's last page: bytes past EOF read as 0, never enqueued
            } else {
                (full, tail)
            }
        } else {
            (room, 0)
        };
        let finishing = pages * PAGE + tail_copy >= rest;
        // The ring's end, or as far as the memory budget lets it write now:
        // map what fits rather than wait for a whole batch.
        let at_ring_end = at + free.len() == cap || room_limited;
        let worth = pages > 0 && (pages * PAGE >= batch || finishing || at_ring_end);
        let mut n = 0;
        if head > 0 {
            if !copy(&mut free[..head], pos, c) {
                result = Fill::Short;
                return (0, ());
            }
            n = head;
        }
        if worth {
            let span = pages * PAGE;
            let bytes = span.min(rest);
            let dst = &mut free[head..head + span];
            c.remap_calls += 1;
            match ring.map_file(dst, &file.file, pos + head as u64) {
                Ok(()) => {
                    c.remapped += bytes as u64;
                    mapped_any = true;
                }
                Err(_) => {
                    c.remap_failures += 1;
                    if !copy(&mut free[head..head + bytes], pos + head as u64, c) {
                        result = Fill::Short;
                        return (head, ());
                    }
                }
            }
            n += bytes;
            if tail_copy > 0 {
                let t0 = head + bytes;
                if !copy(&mut free[t0..t0 + tail_copy], pos + t0 as u64, c) {
                    result = Fill::Short;
                    return (n, ());
                }
                n += tail_copy;
            }
        } else if rest > 0 && rest < PAGE && room > 0 {
            // The whole transfer is a partial page (short range): copy it.
            if !copy(&mut free[head..head + rest], pos + head as u64, c) {
                result = Fill::Short;
                return (n, ());
            }
            n += rest;
        }
        if n > 0 {
            result = Fill::Sent(n);
            end = at + n;
        }
        (n, ())
    });
    f.tx_end = end;
    if mapped_any && !f.in_ring.iter().any(|u| Arc::ptr_eq(u.file(), &file)) {
        f.in_ring.push(FileUse::new(&file));
    }
    result
}

impl<D: Driver> Stack<D> {
    /// Queues file[offset .. offset+len] to be sent on `c` after everything
    /// already written; poll() moves it into the socket's send ring (copy or
    /// remap). Several may be queued (FIFO). Errors: NotConnected (stale),
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

    /// How many padding bytes to add to a header of `header_len` bytes written
    /// now, so that a body starting at file `offset` lands page-aligned in the
    /// send ring and can be remapped. 0 in copy mode (or when not useful).
    /// The value is below 4096; add 4096 if the header needs a minimum pad.
    pub fn tcp_send_file_pad(&self, c: TcpConn, header_len: usize, offset: u64) -> usize {
        let Ok(slot) = self.open_slot(c) else {
            return 0;
        };
        let s = &self.tcp[slot as usize];
        if !self.remapping(usize::from(s.files.queue.is_empty())) {
            return 0;
        }
        let sock = self.sockets.get::<tcp::Socket>(s.handle);
        let cap = sock.send_capacity();
        let queued = ring_queue(sock);
        let write_at = if queued == 0 && s.files.queue.is_empty() {
            0
        } else {
            s.files.tx_end + s.files.pending() as usize
        };
        let at = (write_at + header_len) % cap;
        (PAGE + (offset % PAGE as u64) as usize - at % PAGE) % PAGE
    }

    /// Whether file bytes are queued by reference: [`SendMode::Reference`],
    /// or [`SendMode::Auto`] on a device that takes payload slices.
    pub(crate) fn by_reference(&self) -> bool {
        match self.send_mode {
            SendMode::Reference => true,
            SendMode::Auto => self.port.gathers(),
            SendMode::Copy | SendMode::Remap => false,
        }
    }

    /// Whether file pages are remapped right now, with `more` connections
    /// about to start sending files (see [`SendMode::Auto`]).
    fn remapping(&self, more: usize) -> bool {
        if self.by_reference() {
            return false;
        }
        match self.send_mode {
            SendMode::Copy | SendMode::Reference => false,
            SendMode::Remap => true,
            SendMode::Auto => {
                let sending = self
                    .file_slots
                    .iter()
                    .filter(|&&s| !self.tcp[s as usize].files.queue.is_empty())
                    .count();
                (sending + more) * self.tcp_tx_buffer >= super::AUTO_REMAP_RINGS
            }
        }
    }

    /// Moves queued file bytes into the send rings; gives idle rings
    /// anonymous memory back. Returns whether any bytes moved.
    pub(crate) fn pump_files(&mut self) -> bool {
        let mut moved = false;
        let (remap, batch) = (self.remapping(0), self.remap_batch);
        let by_ref = self.by_reference().then_some(self.tcp_tx_buffer);
        let mut i = 0;
        while i < self.file_slots.len() {
            let slot = self.file_slots[i] as usize;
            let limit = self.mem_tx_limit(slot as u32);
            let s = &mut self.tcp[slot];
            let (sock, ring) = self.sockets.tcp_and_ring(s.handle, s.files.ring);
            let end = pump_slot(
                sock,
                ring,
                &mut s.files,
                &mut self.file_counters,
                Pump {
                    remap,
                    batch,
                    limit,
                    by_ref,
                },
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

    /// After a lease-break signal: every ring holding pages of a breaking
    /// file keeps its in-flight bytes in anonymous memory; transfers of such
    /// files stop and their connections close after what their rings hold.
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
            let ring_hit = f.in_ring.iter().any(|u| u.file().is_breaking());
            let queue_hit = f.queue.iter().any(|t| t.file.file().is_breaking());
            let refs_hit = f.in_refs.iter().any(|u| u.is_breaking());
            if !ring_hit && !queue_hit && !refs_hit {
                continue;
            }
            let files = f
                .in_ring
                .iter()
                .map(|u| u.file())
                .chain(f.queue.iter().map(|t| t.file.file()))
                .chain(f.in_refs.iter());
            for file in files.filter(|file| file.is_breaking()) {
                let p = Arc::as_ptr(file);
                if !broken.contains(&p) {
                    broken.push(p);
                }
            }
            let (sock, ring) = self.sockets.tcp_and_ring(s.handle, f.ring);
            if ring_hit {
                let keep = in_flight(f.tx_end, ring_queue(sock), ring.len());
                if ring.detach(&keep).is_err() {
                    // The in-flight bytes could not be kept: reset.
                    sock.abort();
                }
                f.in_ring.clear();
            }
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

    /// Rings currently holding file pages.
    pub(crate) fn rings_with_file_pages(&self) -> usize {
        self.file_slots
            .iter()
            .filter(|&&s| !self.tcp[s as usize].files.in_ring.is_empty())
            .count()
    }
}

/// How [`pump_slot`] moves bytes this poll.
struct Pump {
    remap: bool,
    batch: usize,
    /// Ring bytes the memory budget lets this socket write.
    limit: usize,
    /// Queue by reference, up to this many bytes per socket.
    by_ref: Option<usize>,
}

fn pump_slot(
    sock: &mut tcp::Socket<'static>,
    ring: &Region,
    f: &mut SlotFiles,
    c: &mut FileCounters,
    p: Pump,
) -> Option<usize> {
    let Pump {
        remap,
        batch,
        limit,
        by_ref,
    } = p;
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
        let r = if remap && leased {
            fill_remap(sock, ring, f, c, batch, limit)
        } else {
            fill_copy(sock, ring, f, c, limit)
        };
        match r {
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
    // A CLOSED socket (reset, or done) never reads its ring again, even if
    // smoltcp left bytes counted in it.
    let drained = sock.send_queue() == 0 || sock.state() == tcp::State::Closed;
    if f.queue.is_empty() && !f.in_ring.is_empty() && drained {
        // Idle: give the ring anonymous memory back (one VMA, no file pages).
        if ring.detach(&[]).is_ok() {
            c.ring_resets += 1;
            f.in_ring.clear();
        }
    }
    moved
}

impl SocketStore {
    /// A TCP socket and its send ring, borrowed together.
    pub(crate) fn tcp_and_ring(
        &mut self,
        h: smoltcp::iface::SocketHandle,
        ring: usize,
    ) -> (&mut tcp::Socket<'static>, &Region) {
        let (set, rings) = self.parts();
        (set.get_mut::<tcp::Socket>(h), &rings[ring])
    }
}

/// Whether remapping can work here (the kernel's page size is the one the code assumes).
pub(crate) fn remap_supported() -> bool {
    remap::page_size_ok()
}

#[cfg(test)]
mod tests {
    use super::in_flight;

    #[test]
    fn in_flight_ranges_wrap() {
        assert_eq!(in_flight(100, 0, 4096), vec![]);
        assert_eq!(in_flight(100, 100, 4096), vec![(0, 100)]);
        assert_eq!(in_flight(4096, 96, 4096), vec![(4000, 96)]);
        assert_eq!(in_flight(100, 200, 4096), vec![(3996, 100), (0, 100)]);
    }
}
