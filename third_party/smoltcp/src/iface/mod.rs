/*! Network interface logic.

The `iface` module deals with the *network interfaces*. It filters incoming frames,
provides lookup and caching of hardware addresses, and handles management packets.
*/

mod fragmentation;
mod interface;
#[cfg(any(feature = "medium-ethernet", feature = "medium-ieee802154"))]
mod neighbor;
mod route;
#[cfg(feature = "proto-rpl")]
mod rpl;
#[cfg(feature = "proto-ipv6-slaac")]
mod slaac;
mod socket_meta;
mod socket_set;

mod packet;
// ZCSTACK PATCH 20: TCP payloads handed to the device by reference.
#[cfg(feature = "socket-tcp-extents")]
mod gather;

/// ZCSTACK PATCH 26: what a TCP socket says of a segment's payload when it
/// dispatches it: the reference it was read from, if any, for a device
/// that gathers and keeps it past the call; and (ZCSTACK PATCH 30) the
/// slices that follow the segment's `payload`, when it spans several
/// extents of the send buffer.
#[cfg(feature = "socket-tcp-extents")]
pub(crate) type PayloadSlice<'a> = crate::socket::tcp::PayloadParts<'a>;
#[cfg(not(feature = "socket-tcp-extents"))]
pub(crate) type PayloadSlice<'a> = core::marker::PhantomData<&'a ()>;

#[cfg(feature = "multicast")]
pub use self::interface::multicast::MulticastError;
pub use self::interface::{
    Config, Interface, InterfaceInner as Context, PollIngressSingleResult, PollResult,
};
#[cfg(feature = "socket-tcp")]
pub use self::interface::ListenStats;
#[cfg(all(feature = "medium-ethernet", feature = "proto-ipv4"))]
pub use self::interface::NeighborLookup;

pub use self::route::{Route, RouteTableFull, Routes};
#[cfg(feature = "proto-ipv6-slaac")]
pub use self::slaac::Slaac;
pub use self::socket_set::{SocketHandle, SocketSet, SocketStorage};
