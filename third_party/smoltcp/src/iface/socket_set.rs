use core::fmt;
use managed::ManagedSlice;

use super::socket_meta::Meta;
use crate::socket::{AnySocket, Socket};

/// Opaque struct with space for storing one socket.
///
/// This is public so you can use it to allocate space for storing
/// sockets when creating an Interface.
#[derive(Debug, Default)]
pub struct SocketStorage<'a> {
    inner: Option<Item<'a>>,
}

impl<'a> SocketStorage<'a> {
    pub const EMPTY: Self = Self { inner: None };
}

/// An item of a socket set.
#[derive(Debug)]
pub(crate) struct Item<'a> {
    pub(crate) meta: Meta,
    pub(crate) socket: Socket<'a>,
}

/// A handle, identifying a socket in an Interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SocketHandle(usize);

impl SocketHandle {
    /// The socket's position in its set: stable while the socket is in the
    /// set, and small (the set's length bounds it), so an application can
    /// keep its own per-socket data in a `Vec` indexed by it. A removed
    /// socket's index may be given to the next socket added.
    /// (ZCSTACK PATCH 24.)
    pub fn index(self) -> usize {
        self.0
    }
}

impl fmt::Display for SocketHandle {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "#{}", self.0)
    }
}

/// An extensible set of sockets.
///
/// The lifetime `'a` is used when storing a `Socket<'a>`.  If you're using
/// owned buffers for your sockets (passed in as `Vec`s) you can use
/// `SocketSet<'static>`.
#[derive(Debug)]
pub struct SocketSet<'a> {
    sockets: ManagedSlice<'a, SocketStorage<'a>>,
    /// ZCSTACK PATCH 24: the sockets egress visits: every socket but the
    /// TCP sockets waiting for a segment (`Meta::active`), so that idle
    /// connections cost a poll nothing.
    #[cfg(feature = "alloc")]
    pub(crate) active: alloc::vec::Vec<SocketHandle>,
}

impl<'a> SocketSet<'a> {
    /// Create a socket set using the provided storage.
    pub fn new<SocketsT>(sockets: SocketsT) -> SocketSet<'a>
    where
        SocketsT: Into<ManagedSlice<'a, SocketStorage<'a>>>,
    {
        let sockets = sockets.into();
        SocketSet {
            sockets,
            #[cfg(feature = "alloc")]
            active: alloc::vec::Vec::new(),
        }
    }

    /// Add a socket to the set, and return its handle.
    ///
    /// # Panics
    /// This function panics if the storage is fixed-size (not a `Vec`) and is full.
    pub fn add<T: AnySocket<'a>>(&mut self, socket: T) -> SocketHandle {
        fn put<'a>(index: usize, slot: &mut SocketStorage<'a>, socket: Socket<'a>) -> SocketHandle {
            net_trace!("[{}]: adding", index);
            let handle = SocketHandle(index);
            let mut meta = Meta::default();
            meta.handle = handle;
            *slot = SocketStorage {
                inner: Some(Item { meta, socket }),
            };
            handle
        }

        let socket = socket.upcast();

        let handle = 'put: {
            for (index, slot) in self.sockets.iter_mut().enumerate() {
                if slot.inner.is_none() {
                    break 'put put(index, slot, socket);
                }
            }

            match &mut self.sockets {
                ManagedSlice::Borrowed(_) => panic!("adding a socket to a full SocketSet"),
                #[cfg(feature = "alloc")]
                ManagedSlice::Owned(sockets) => {
                    sockets.push(SocketStorage { inner: None });
                    let index = sockets.len() - 1;
                    put(index, &mut sockets[index], socket)
                }
            }
        };
        // ZCSTACK PATCH 24: a new socket is visited by egress.
        self.wake(handle);
        handle
    }

    /// Get a socket from the set by its handle, as mutable.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set
    /// or the socket has the wrong type.
    pub fn get<T: AnySocket<'a>>(&self, handle: SocketHandle) -> &T {
        match self.sockets[handle.0].inner.as_ref() {
            Some(item) => {
                T::downcast(&item.socket).expect("handle refers to a socket of a wrong type")
            }
            None => panic!("handle does not refer to a valid socket"),
        }
    }

    /// Get a mutable socket from the set by its handle, as mutable.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set
    /// or the socket has the wrong type.
    pub fn get_mut<T: AnySocket<'a>>(&mut self, handle: SocketHandle) -> &mut T {
        if self.sockets[handle.0].inner.is_none() {
            panic!("handle does not refer to a valid socket");
        }
        // ZCSTACK PATCH 2: the caller may change the socket.
        self.wake(handle);
        match self.sockets[handle.0].inner.as_mut() {
            Some(item) => T::downcast_mut(&mut item.socket)
                .expect("handle refers to a socket of a wrong type"),
            None => unreachable!(),
        }
    }

    /// ZCSTACK PATCH 2 and 24: the socket may have work: egress visits it
    /// until its dispatch says it waits for a segment.
    fn wake(&mut self, handle: SocketHandle) {
        let Some(item) = self.sockets[handle.0].inner.as_mut() else {
            return;
        };
        item.meta.idle = super::socket_meta::EgressIdle::Busy;
        #[cfg(feature = "alloc")]
        if !item.meta.active {
            item.meta.active = true;
            self.active.push(handle);
        }
    }

    /// Remove a socket from the set, without changing its state.
    ///
    /// # Panics
    /// This function may panic if the handle does not belong to this socket set.
    pub fn remove(&mut self, handle: SocketHandle) -> Socket<'a> {
        net_trace!("[{}]: removing", handle.0);
        match self.sockets[handle.0].inner.take() {
            Some(item) => {
                // ZCSTACK PATCH 24: a socket added at this index later
                // must not be listed twice.
                #[cfg(feature = "alloc")]
                self.active.retain(|&h| h != handle);
                item.socket
            }
            None => panic!("handle does not refer to a valid socket"),
        }
    }

    /// Get an iterator to the inner sockets.
    pub fn iter(&self) -> impl Iterator<Item = (SocketHandle, &Socket<'a>)> {
        self.items().map(|i| (i.meta.handle, &i.socket))
    }

    /// Get a mutable iterator to the inner sockets.
    pub fn iter_mut(&mut self) -> impl Iterator<Item = (SocketHandle, &mut Socket<'a>)> {
        // ZCSTACK PATCH 2: the caller may change any socket.
        #[cfg(feature = "alloc")]
        let active = &mut self.active;
        self.sockets
            .iter_mut()
            .filter_map(|x| x.inner.as_mut())
            .map(move |i| {
                i.meta.idle = super::socket_meta::EgressIdle::Busy;
                #[cfg(feature = "alloc")]
                if !i.meta.active {
                    i.meta.active = true;
                    active.push(i.meta.handle);
                }
                (i.meta.handle, &mut i.socket)
            })
    }

    /// Iterate every socket in this set.
    pub(crate) fn items(&self) -> impl Iterator<Item = &Item<'a>> + '_ {
        self.sockets.iter().filter_map(|x| x.inner.as_ref())
    }

    /// Iterate every socket in this set.
    /// ZCSTACK PATCH 3: the item behind `handle`, if the slot holds one.
    pub(crate) fn item(&self, handle: SocketHandle) -> Option<&Item<'a>> {
        self.sockets.get(handle.0)?.inner.as_ref()
    }

    /// ZCSTACK PATCH 3: the item behind `handle`, mutably.
    pub(crate) fn item_mut(&mut self, handle: SocketHandle) -> Option<&mut Item<'a>> {
        self.sockets.get_mut(handle.0)?.inner.as_mut()
    }

    pub(crate) fn items_mut(&mut self) -> impl Iterator<Item = &mut Item<'a>> + '_ {
        self.sockets.iter_mut().filter_map(|x| x.inner.as_mut())
    }
}
