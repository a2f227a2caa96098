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
//! Modules:
//! - `device`: the smoltcp `Device` adapter over any [`Driver`] — tokens hand
//!   out pool frames, so the driver ⇄ smoltcp hand-off copies nothing.
//! - [`stack`]: [`Stack`] and its builder; the run-to-completion poll loop with
//!   adaptive idle back-off; socket bookkeeping.
//! - [`tcp`]: listen with a backlog, accept, connect, read/write, send pool
//!   frames by reference (`tcp_send_frame`), shutdown, close.
//! - [`udp`]: bind, send_to, recv_from.
//! - [`file`](mod@file): [`Stack::tcp_send_file`] of a [`MappedFile`] range, by
//!   reference to the file's pages (smoltcp patch 20) or copied into the
//!   send ring ([`SendMode`]); read leases make truncation by another
//!   process safe. Its `map` submodule (file mappings, leases, giving idle
//!   ring pages back) is the only `unsafe` code in this crate.
//! - [`mem`]: idle connections give their ring memory back; the memory
//!   budget ([`StackBuilder::max_memory`]) and [`MemoryStats`].
//! - [`stats`]: [`StackStats`], including copies per payload byte.
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
//! loop {
//!     stack.poll_wait();
//!     while let Some(conn) = stack.tcp_accept(listener) {
//!         stack.tcp_write(conn, b"hello\n")?;
//!         stack.tcp_close(conn)?;
//!     }
//! }
//! # #[allow(unreachable_code)] Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod device;
pub mod file;
pub mod mem;
pub mod stack;
pub mod stats;
pub mod tcp;
pub mod udp;

pub use file::{MappedFile, SendMode};
pub use mem::MemoryStats;
pub use stack::{Clock, Stack, StackBuilder, StackError};
pub use stats::{ListenStats, StackStats, TcpRecoveryStats};
pub use tcp::{Congestion, TcpConn, TcpListener, TcpState};
pub use udp::UdpSock;
pub use zcstack_driver::Driver;
