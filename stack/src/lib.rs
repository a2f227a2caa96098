//! # zcstack: a kernel-bypass TCP/IP stack
//!
//! smoltcp runs TCP/IP over frames that a poll-mode driver from
//! [`zcstack_driver`] moves in and out of one pre-mapped buffer pool. A
//! packet's path:
//!
//! ```text
//!  driver rx_burst ──► Frame ──► device::Port (RxToken shows smoltcp the frame in place)
//!                                   │ smoltcp: Ethernet/ARP/IPv4/ICMP/TCP/UDP
//!                                   ▼ TCP payload copied into the socket ring (copy #1, smoltcp's)
//!                     app: tcp_read / tcp_read_with (in place) / tcp_write / tcp_write_with
//!                                   │ socket ring → frame (copy #1 on send, smoltcp's emit)
//!  driver tx_burst ◄── Frame ◄── device::Port (TxToken lets smoltcp write into a pool frame)
//!  tx_gather      ◄── headers + payload slices (send by reference: TAP one writev,
//!                     AF_XDP+TSO a sendmmsg iovec, AF_XDP descriptors into pool frames)
//! ```
//!
//! Modules, from the bottom up (each imports only modules above it in
//! this list, so the `use` lines form no circle):
//! - `device`: the smoltcp `Device` adapter over any [`Driver`] — tokens hand
//!   out pool frames, so the driver ⇄ smoltcp hand-off copies nothing.
//! - [`file`](mod@file): [`MappedFile`] (a file mapping with a read lease)
//!   and [`SendMode`]; its `map` submodule is the only `unsafe` code in
//!   this crate: file mappings, leases, and `SocketStore`, smoltcp's
//!   socket set together with the ring mappings its TCP sockets borrow
//!   (owned together, so the sockets are dropped before their rings).
//! - `engine`: the poll engine — smoltcp's interface over the device
//!   adapter, the [`Clock`], the idle back-off.
//! - [`tcp`]: the TCP table — every socket by slot with its generation
//!   and role, listeners with a backlog and an accept queue, the free list.
//! - [`udp`]: the UDP table (through smoltcp's socket buffers: two copies
//!   each way).
//! - [`dgram`]: UDP by frame handle, fbufs style: the application writes a
//!   payload into a pool frame and the stack writes the headers in front of
//!   it; received datagrams for a bound port are steered past smoltcp and
//!   handed over in place. No payload copy either way.
//! - [`mem`]: ring memory per connection (idle connections give it back);
//!   the memory budget ([`StackBuilder::max_memory`]) and [`MemoryStats`].
//! - [`stats`]: [`StackStats`], including copies per payload byte.
//! - `file::transfer`: the file sender — each TCP socket's send side and the
//!   file ranges queued on it ([`Stack::tcp_send_file`]), moved into the
//!   socket every poll by reference to the file's pages (smoltcp patch 20)
//!   or copied into the send ring.
//! - [`event`]: readiness events ([`Stack::events`]): which connections
//!   and listeners a poll made readable, writable, accepted, closed or
//!   timed out, found without looking at the idle ones.
//! - [`stack`]: [`Stack`], which owns one of each part above, and its
//!   builder; the run-to-completion poll loop. Its child modules hold the
//!   application's calls, one per part (`tcp_calls`: listen, accept,
//!   connect, read/write, send pool frames by reference, shutdown, close;
//!   `udp_calls`, `dgram_calls`, `file_calls`, `event_calls`, `mem_calls`).
//!   Per-connection state lives with the part it belongs to, under the TCP
//!   table's slot number.
//!
//! ICMP echo requests to the stack's address are answered by smoltcp.
//!
//! ```no_run
//! use zcstack::Stack;
//! use zcstack_driver::{PoolConfig, tap::Tap};
//!
//! let pool = PoolConfig::new().build()?;
//! let tap = Tap::open("zctap0", pool)?;
//! let mut stack = Stack::builder(tap).ip("10.200.0.2".parse()?, 24).build()?;
//! let listener = stack.tcp_listen(7, 16)?;
//! let mut events = Vec::new();
//! stack.events(&mut events); // from now on the stack collects events
//! loop {
//!     stack.poll_wait();
//!     stack.events(&mut events);
//!     for ev in &events {
//!         if let zcstack::Event::Accept(l) = *ev {
//!             while let Some(conn) = stack.tcp_accept(l) {
//!                 stack.tcp_write(conn, b"hello\n")?;
//!                 stack.tcp_close(conn)?;
//!             }
//!         }
//!     }
//! }
//! # #[allow(unreachable_code)] Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! One thread owns a [`Stack`] and makes every call on it (it is never
//! `Sync`, and `Send` when its driver is); more cores means more stacks,
//! each with its own driver.
//! Sending files takes read leases, for which the first [`MappedFile`]
//! installs process-wide handlers for `SIGRTMIN + 2` and `SIGIO` (module
//! [`file`](mod@file)). The project's `docs/api.md` covers both, the
//! event loop, and how to size the pool and the rings.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod device;
pub mod dgram;
mod engine;
pub mod event;
pub mod file;
pub mod mem;
pub mod stack;
pub mod stats;
pub mod tcp;
pub mod udp;

pub use dgram::{DgramSendError, DgramSock, DgramStats, RxDatagram, TxDatagram};
pub use engine::Clock;
pub use event::Event;
pub use file::{MappedFile, SendMode};
pub use mem::MemoryStats;
pub use stack::{Stack, StackBuilder, StackError};
pub use stats::{ListenStats, StackStats, TcpRecoveryStats};
pub use tcp::{Congestion, TcpConn, TcpListener, TcpState};
pub use udp::UdpSock;
pub use zcstack_driver::Driver;
