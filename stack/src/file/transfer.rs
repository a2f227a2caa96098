//! The file sender: the send side of each TCP socket (its send ring's
//! place in the [`SocketStore`] and where the bytes in it end), the file
//! transfers queued on it, and the poll-loop pump that moves them into the
//! socket: by reference, or copied into the send ring. Per TCP slot, under
//! the TCP table's numbers; `Stack::tcp_send_file` (in `stack/file.rs`)
//! queues, `Stack::poll` pumps.

use std::collections::VecDeque;
use std::sync::Arc;

use smoltcp::iface::SocketHandle;
use smoltcp::socket::tcp::{self, TxRef, TxSource};

use super::map::SocketStore;
use super::{FileUse, MappedFile, SendMode};
use crate::mem::Memory;
use crate::tcp::TcpTable;

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
struct SlotFiles {
    /// Index of the socket's send ring in the [`SocketStore`].
    ring: usize,
    queue: VecDeque<Transfer>,
    /// Files the socket may hold references to (smoltcp's send buffer
    /// holds the references; this says which slots to check on a lease
    /// break). Cleared once the socket holds none.
    in_refs: Vec<Arc<MappedFile>>,
    /// Ring offset where the last enqueue ended (meaningful while the ring
    /// holds bytes): the in-flight bytes are the `send_queue()` bytes before it.
    tx_end: usize,
    /// The application closed (or shut down) with transfers queued: FIN
    /// after the last one.
    close_after: bool,
    /// In the stack's list of slots the pump visits.
    listed: bool,
}

impl SlotFiles {
    fn new(ring: usize) -> SlotFiles {
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
    fn busy(&self) -> bool {
        !self.queue.is_empty() || !self.in_refs.is_empty()
    }

    /// File bytes queued and not in the ring yet.
    fn pending(&self) -> u64 {
        self.queue.iter().map(|t| t.end - t.pos).sum()
    }

    /// Forgets queued transfers (abort, or the socket was recycled). Returns how many.
    fn drop_queue(&mut self) -> usize {
        let n = self.queue.iter().filter(|t| t.pos < t.end).count();
        self.queue.clear();
        self.close_after = false;
        n
    }
}

/// File-send counters (see [`StackStats`](crate::StackStats)): a snapshot.
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

/// The send side of every TCP socket, by slot (see the module doc).
pub(crate) struct FileSender {
    /// As built.
    mode: SendMode,
    /// Per TCP slot.
    slots: Vec<SlotFiles>,
    /// Slots with queued file transfers or file references.
    listed: Vec<u32>,
    counters: FileCounters,
    /// Lease-break signal count last handled.
    lease_seen: u64,
}

impl FileSender {
    /// Bytes kept per TCP slot.
    pub const SLOT_BYTES: usize = std::mem::size_of::<SlotFiles>();

    pub fn new(mode: SendMode) -> FileSender {
        FileSender {
            mode,
            slots: Vec::new(),
            listed: Vec::new(),
            counters: FileCounters::default(),
            lease_seen: super::lease_signals(),
        }
    }

    /// A new TCP slot (numbered as the TCP table's), whose send ring is
    /// `ring` in the [`SocketStore`].
    pub fn add_slot(&mut self, ring: usize) {
        self.slots.push(SlotFiles::new(ring));
    }

    /// The send mode the stack was built with.
    pub fn mode(&self) -> SendMode {
        self.mode
    }

    /// Whether file bytes are queued by reference (every mode but
    /// [`SendMode::Copy`]).
    fn by_reference(&self) -> bool {
        self.mode != SendMode::Copy
    }

    pub fn counters(&self) -> FileCounters {
        self.counters
    }

    /// Where `slot`'s send ring starts (an address, for offsets).
    pub fn ring_base(&self, sockets: &SocketStore, slot: u32) -> usize {
        sockets.ring_base(self.slots[slot as usize].ring)
    }

    /// Ring offset where `slot`'s last enqueue ended.
    pub fn tx_end(&self, slot: u32) -> usize {
        self.slots[slot as usize].tx_end
    }

    pub fn set_tx_end(&mut self, slot: u32, end: usize) {
        self.slots[slot as usize].tx_end = end;
    }

    /// The application shut `slot` down with transfers queued (FIN after them).
    pub fn close_after(&self, slot: u32) -> bool {
        self.slots[slot as usize].close_after
    }

    /// File bytes queued on `slot` and not in its socket yet.
    pub fn pending(&self, slot: u32) -> u64 {
        self.slots[slot as usize].pending()
    }

    /// `slot` has queued transfers or holds references to files.
    pub fn busy(&self, slot: u32) -> bool {
        self.slots[slot as usize].busy()
    }

    /// Forgets `slot`'s queued transfers. Returns how many.
    pub fn drop_queue(&mut self, slot: u32) -> usize {
        self.slots[slot as usize].drop_queue()
    }

    /// Shutting `slot` down for sending: true if transfers are queued (the
    /// FIN then follows the last of them), false if the socket may close now.
    pub fn defer_close(&mut self, slot: u32) -> bool {
        let f = &mut self.slots[slot as usize];
        if f.pending() > 0 {
            f.close_after = true;
            true
        } else {
            false
        }
    }

    /// Queues file[offset .. offset+len] on `slot` (the caller checked the
    /// range and the connection).
    pub fn queue(&mut self, slot: u32, file: &Arc<MappedFile>, offset: u64, len: u64) {
        let f = &mut self.slots[slot as usize];
        f.queue.push_back(Transfer {
            file: FileUse::new(file),
            pos: offset,
            end: offset + len,
            src: None,
        });
        if !f.listed {
            f.listed = true;
            self.listed.push(slot);
        }
    }

    /// Whether a poll has transfers to pump or references to watch.
    pub fn has_work(&self) -> bool {
        !self.listed.is_empty()
    }

    /// Whether lease-break signals arrived since the last call (one
    /// atomic load).
    pub fn lease_signalled(&mut self) -> bool {
        let signals = super::lease_signals();
        if signals != self.lease_seen {
            self.lease_seen = signals;
            true
        } else {
            false
        }
    }

    /// Moves queued file bytes into the sockets. Returns whether any ring
    /// bytes moved.
    pub fn pump(&mut self, sockets: &mut SocketStore, tcp: &TcpTable, mem: &mut Memory) -> bool {
        let mut moved = false;
        let by_ref = self.by_reference().then_some(tcp.tx_buffer());
        let mut i = 0;
        while i < self.listed.len() {
            let slot = self.listed[i] as usize;
            let limit = mem.tx_limit(slot as u32, tcp.len());
            let f = &mut self.slots[slot];
            let (sock, base) = sockets.tcp_and_ring(tcp.handle(slot as u32), f.ring);
            let end = pump_slot(sock, base, f, &mut self.counters, Pump { limit, by_ref });
            if let Some(end) = end {
                moved = true;
                mem.note_tx(slot as u32, end);
            }
            let f = &mut self.slots[slot];
            if !f.busy() {
                f.listed = false;
                self.listed.swap_remove(i);
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
    pub fn handle_lease_breaks(&mut self, sockets: &mut SocketStore, tcp: &TcpTable) {
        super::check_lease_breaks();
        let mut broken: Vec<*const MappedFile> = Vec::new();
        for &slot in &self.listed {
            let f = &mut self.slots[slot as usize];
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
            let sock = sockets.get_mut::<tcp::Socket>(tcp.handle(slot));
            if refs_hit {
                // The bytes in flight by reference are copied out of the
                // file (rarely: a lease break), so the lease can go now.
                for r in sock.send_refs_mut() {
                    let copy: Arc<dyn TxSource> = Arc::new(r.bytes().to_vec());
                    self.counters.snapshot += r.len() as u64;
                    *r = TxRef::new(copy, 0, r.len()).expect("a copy of the same length");
                }
                f.in_refs.clear();
            }
            if queue_hit {
                self.counters.aborted += f.drop_queue() as u64;
                sock.close();
            }
        }
        self.counters.lease_breaks += broken.len() as u64;
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
    fn tcp_and_ring(&mut self, h: SocketHandle, ring: usize) -> (&mut tcp::Socket<'static>, usize) {
        let base = self.ring_base(ring);
        (self.get_mut::<tcp::Socket>(h), base)
    }
}
