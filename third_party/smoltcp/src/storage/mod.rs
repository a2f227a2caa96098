/*! Specialized containers.

The `storage` module provides containers for use in other modules.
The containers support both pre-allocated memory, without the `std`
or `alloc` crates being available, and heap-allocated memory.
*/

mod assembler;
mod packet_buffer;
mod ring_buffer;

pub use self::assembler::Assembler;
pub use self::packet_buffer::{PacketBuffer, PacketMetadata};
pub use self::ring_buffer::RingBuffer;

/// ZCSTACK PATCH 31: the largest capacity a `Vec` that grows one element
/// at a time up to `len` elements reaches: the standard library doubles
/// from 4 (for elements larger than one byte), so the power of two at or
/// above `len`, and at least 4. The patch's tests fill each such vector and
/// check the bound.
#[cfg(feature = "alloc")]
pub(crate) const fn vec_capacity_max(len: usize) -> usize {
    let c = len.next_power_of_two();
    if c < 4 { 4 } else { c }
}

/// A trait for setting a value to a known state.
///
/// In-place analog of Default.
pub trait Resettable {
    fn reset(&mut self);
}

/// Error returned when enqueuing into a full buffer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Full;

/// Error returned when dequeuing from an empty buffer.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Empty;
