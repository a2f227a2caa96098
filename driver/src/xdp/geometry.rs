//! How packets fit the pool's frames and the UMEM's chunks: the frame size
//! an MTU needs, and for an open socket its chunk size, the largest frame
//! it receives and whether packets span several descriptors. Pure
//! arithmetic, no kernel: `Xdp::open` computes a [`Geometry`] before it
//! creates the socket.

use super::{AttachMode, TX_META_LEN, XdpError};
use crate::ETH_HLEN;

/// The largest IP packet GRO or GSO hands the generic XDP hook (without
/// BIG TCP): 64 KiB less one.
const GSO_MAX_IP: usize = 65535;
/// Bytes the kernel keeps in front of received data in each chunk
/// (`XDP_PACKET_HEADROOM`).
pub(super) const XDP_HEADROOM: usize = 256;
/// Largest UMEM chunk this kernel accepts: one page.
const MAX_CHUNK: usize = 4096;

/// The pool frame size an interface with IP MTU `mtu` needs: the smallest
/// power of two that holds the Ethernet frame behind the kernel's headroom.
pub fn frame_size_for_mtu(mtu: usize) -> u32 {
    ((mtu + ETH_HLEN + XDP_HEADROOM).next_power_of_two() as u32).max(2048)
}

/// The largest IP packet the program hands the socket on an interface with
/// IP MTU `mtu`: the MTU, but in generic mode, which runs after GRO and sees
/// a peer's GSO packets whole, 64 KiB.
fn largest_ip_packet(mtu: usize, mode: AttachMode) -> usize {
    if mode == AttachMode::Generic {
        mtu.max(GSO_MAX_IP)
    } else {
        mtu
    }
}

/// The pool frame size an AF_XDP driver in attach mode `mode` on an
/// interface with IP MTU `mtu` needs to receive every packet it can get
/// ([`frame_size_for_mtu`] of the largest one).
pub fn frame_size_for(mtu: usize, mode: AttachMode) -> u32 {
    frame_size_for_mtu(largest_ip_packet(mtu, mode))
}

/// Frames, chunks and whether packets need several descriptors, for one
/// socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Geometry {
    /// The pool's frame size.
    pub frame_size: usize,
    /// The UMEM chunk: a frame, at most a page.
    pub chunk: usize,
    /// The largest Ethernet frame the socket receives.
    pub wire: usize,
    /// Whether a packet may span several descriptors (`XDP_USE_SG`).
    pub multi_buffer: bool,
}

impl Geometry {
    /// The geometry of a socket on `iface` (IP MTU `mtu`, attach mode
    /// `mode`) over a pool of `frame_size`-byte frames with `headroom`
    /// bytes before the data; refused if a frame cannot hold a packet of
    /// the MTU behind both the kernel's headroom and the pool's.
    pub fn new(
        iface: &str,
        mtu: usize,
        mode: AttachMode,
        frame_size: usize,
        headroom: usize,
    ) -> Result<Geometry, XdpError> {
        let chunk = frame_size.min(MAX_CHUNK);
        let wire = mtu + ETH_HLEN;
        if wire + XDP_HEADROOM > frame_size || wire + headroom > frame_size {
            return Err(XdpError::MtuTooLarge {
                iface: iface.to_string(),
                mtu,
                why: format!(
                    "for the pool's {frame_size}-byte frames: use a frame size of {} \
                     (apps pick it from the MTU), or lower the MTU",
                    frame_size_for_mtu(mtu)
                ),
            });
        }
        // In generic mode the hook sees packets up to 64 KiB whatever the
        // MTU (`largest_ip_packet`). When the frames can hold them (apps size
        // them with `frame_size_for`), receive them, as multi-buffer packets.
        let wire = if frame_size >= frame_size_for(mtu, mode) as usize {
            largest_ip_packet(mtu, mode) + ETH_HLEN
        } else {
            wire
        };
        let multi_buffer = wire + XDP_HEADROOM > chunk || wire + headroom > chunk;
        Ok(Geometry {
            frame_size,
            chunk,
            wire,
            multi_buffer,
        })
    }

    /// Largest TX descriptor: a chunk (cut at chunk boundaries), or with
    /// unaligned chunks a chunk less the TX metadata in front of it.
    pub fn tx_desc_max(&self, unaligned: bool) -> usize {
        if unaligned {
            self.chunk - TX_META_LEN
        } else {
            self.chunk
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geo(mtu: usize, mode: AttachMode, frame: usize, headroom: usize) -> Geometry {
        Geometry::new("zcsv0", mtu, mode, frame, headroom).expect("fits")
    }

    #[test]
    fn a_1500_mtu_in_2_kib_frames_is_one_descriptor_per_packet() {
        let g = geo(1500, AttachMode::Auto, 2048, 128);
        assert_eq!(
            g,
            Geometry {
                frame_size: 2048,
                chunk: 2048,
                wire: 1514,
                multi_buffer: false
            }
        );
        assert_eq!((g.tx_desc_max(false), g.tx_desc_max(true)), (2048, 2024));
        assert_eq!(frame_size_for_mtu(1500), 2048);
    }

    #[test]
    fn jumbo_frames_are_cut_into_page_chunks() {
        let frame = frame_size_for_mtu(9000) as usize;
        assert_eq!(frame, 16384);
        let g = geo(9000, AttachMode::Native, frame, 128);
        assert_eq!((g.chunk, g.wire, g.multi_buffer), (4096, 9014, true));
        assert_eq!((g.tx_desc_max(false), g.tx_desc_max(true)), (4096, 4072));
    }

    /// Generic mode sees 64 KiB GRO packets: received whole when the
    /// frames hold them, else only up to the MTU.
    #[test]
    fn generic_mode_takes_64_kib_packets_when_the_frames_hold_them() {
        let big = frame_size_for(1500, AttachMode::Generic) as usize;
        assert_eq!(big, 131072);
        let g = geo(1500, AttachMode::Generic, big, 128);
        assert_eq!((g.chunk, g.wire, g.multi_buffer), (4096, 65535 + 14, true));
        let g = geo(1500, AttachMode::Generic, 2048, 128);
        assert_eq!((g.wire, g.multi_buffer), (1514, false));
        // Native mode with the same big frames: the MTU is the limit.
        let g = geo(1500, AttachMode::Native, big, 128);
        assert_eq!((g.wire, g.multi_buffer), (1514, false));
    }

    /// A large pool headroom alone can make packets multi-buffer.
    #[test]
    fn the_pool_headroom_counts_like_the_kernels() {
        let g = geo(3500, AttachMode::Native, 8192, 128);
        assert_eq!((g.wire, g.multi_buffer), (3514, false));
        let g = geo(3500, AttachMode::Native, 8192, 700);
        assert_eq!((g.wire, g.multi_buffer), (3514, true));
    }

    #[test]
    fn an_mtu_too_large_for_the_frames_says_which_frame_size_to_use() {
        let msg = |mtu, frame, headroom| {
            Geometry::new("zcsv0", mtu, AttachMode::Auto, frame, headroom)
                .expect_err("fits")
                .to_string()
        };
        assert_eq!(
            msg(9000, 2048, 128),
            "AF_XDP on zcsv0: MTU 9000 is too large for the pool's 2048-byte frames: use a \
             frame size of 16384 (apps pick it from the MTU), or lower the MTU"
        );
        // 1514 + 256 = 1770 fits 2048, but not behind a 600-byte headroom.
        assert_eq!(
            msg(1500, 2048, 600),
            "AF_XDP on zcsv0: MTU 1500 is too large for the pool's 2048-byte frames: use a \
             frame size of 2048 (apps pick it from the MTU), or lower the MTU"
        );
        // The largest MTU a 2 KiB frame takes behind the kernel's headroom.
        assert!(Geometry::new("zcsv0", 2048 - 256 - 14, AttachMode::Auto, 2048, 128).is_ok());
        assert!(Geometry::new("zcsv0", 2048 - 256 - 13, AttachMode::Auto, 2048, 128).is_err());
    }
}
