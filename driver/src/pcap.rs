//! A driver wrapper that records every frame to a pcap file (debug aid).
//!
//! Wraps any [`Driver`]; received frames are recorded after `rx_burst`, sent
//! frames before `tx_burst` hands them on (a frame the device pushes back is
//! recorded once, when first offered). Recording copies each frame into the
//! file's buffer, so it is for debugging, not for measuring.

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::{Capabilities, Driver, Frame, Layer};

/// A [`Driver`] that writes every frame it moves to a pcap file.
pub struct Pcap<D> {
    inner: D,
    writer: PcapWriter<BufWriter<File>>,
    /// Frames at the front of the last tx vector that were already recorded.
    recorded_unsent: usize,
}

impl<D: Driver> Pcap<D> {
    /// Wraps `inner`, creating (truncating) `path`.
    pub fn create(inner: D, path: &Path) -> io::Result<Pcap<D>> {
        let file = File::create(path).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!("cannot create pcap file {}: {e}", path.display()),
            )
        })?;
        let writer = PcapWriter::new(BufWriter::new(file)).map_err(io::Error::other)?;
        Ok(Pcap {
            inner,
            writer,
            recorded_unsent: 0,
        })
    }

    fn record(&mut self, frames: &[Frame]) -> io::Result<()> {
        let ts = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or(Duration::ZERO);
        for f in frames {
            let pkt = PcapPacket::new(ts, f.len() as u32, f.data());
            self.writer.write_packet(&pkt).map_err(io::Error::other)?;
        }
        Ok(())
    }
}

impl<D: Driver> Layer for Pcap<D> {
    type Inner = D;
    fn inner(&self) -> &D {
        &self.inner
    }
    fn inner_mut(&mut self) -> &mut D {
        &mut self.inner
    }

    fn rx_burst(this: &mut Self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let start = out.len();
        let n = this.inner.rx_burst(out, max)?;
        this.record(&out[start..])?;
        Ok(n)
    }

    fn tx_burst(this: &mut Self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        let from = this.recorded_unsent.min(frames.len());
        this.record(&frames[from..])?;
        let n = this.inner.tx_burst(frames)?;
        this.recorded_unsent = frames.len();
        Ok(n)
    }

    fn capabilities(this: &Self) -> Capabilities {
        let mut caps = this.inner.capabilities();
        caps.description.push_str(" (recording pcap)");
        // Frames pass through this wrapper whole: no payload slices.
        caps.offloads.tx_gather = false;
        caps
    }
}
