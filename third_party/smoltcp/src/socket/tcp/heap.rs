//! ZCSTACK PATCH 31 (see ZCSTACK-PATCHES.md): how much heap a socket's
//! loss-recovery state may hold.
//!
//! With `alloc`, two parts of a TCP socket grow on the heap while segments
//! are lost or reordered, and are given back by
//! [`Socket::release_idle_memory`]: the SACK scoreboard of what was sent
//! (ZCSTACK PATCH 9) and the reassembly table of what arrived out of order
//! (ZCSTACK PATCH 28). Both are bounded. A host that budgets memory per
//! connection needs the bound as a number, to charge it before a
//! connection can use it.

use super::{Socket, scoreboard};
use crate::storage::Assembler;

impl Socket<'_> {
    /// The most heap, in bytes, a socket's scoreboard and reassembly table
    /// may hold together (the allocator's own overhead aside); 0 without
    /// `alloc`, where both are fixed arrays inside the socket.
    pub const RECOVERY_HEAP_MAX: usize = scoreboard::HEAP_MAX + Assembler::HEAP_MAX;
}

#[cfg(test)]
mod test {
    use super::*;

    #[test]
    fn the_bound_is_both_parts() {
        assert_eq!(
            Socket::RECOVERY_HEAP_MAX,
            scoreboard::HEAP_MAX + Assembler::HEAP_MAX
        );
        #[cfg(feature = "alloc")]
        assert!(scoreboard::HEAP_MAX > 0 && Assembler::HEAP_MAX > 0);
        #[cfg(not(feature = "alloc"))]
        assert_eq!(Socket::RECOVERY_HEAP_MAX, 0);
    }
}
