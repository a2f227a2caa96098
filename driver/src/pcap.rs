//! A driver wrapper that records every frame to a pcap file (debug aid).
//!
//! Wraps any [`Driver`]; received frames are recorded after `rx_burst`, sent
//! frames before `tx_burst` hands them on (a frame the device pushes back is
//! recorded once, when first offered). Recording copies each frame into the
//! file's buffer, so it is for debugging, not for measuring.

#![deny(unsafe_code)]

use std::fs::File;
use std::io::{self, BufWriter};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use pcap_file::pcap::{PcapPacket, PcapWriter};

use crate::{Driver, DriverStats, Frame, Pool};

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

    /// The wrapped driver.
    pub fn inner(&self) -> &D {
        &self.inner
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

impl<D: Driver> Driver for Pcap<D> {
    fn rx_burst(&mut self, out: &mut Vec<Frame>, max: usize) -> io::Result<usize> {
        let start = out.len();
        let n = self.inner.rx_burst(out, max)?;
        self.record(&out[start..])?;
        Ok(n)
    }

    fn tx_burst(&mut self, frames: &mut Vec<Frame>) -> io::Result<usize> {
        let from = self.recorded_unsent.min(frames.len());
        self.record(&frames[from..])?;
        let n = self.inner.tx_burst(frames)?;
        self.recorded_unsent = frames.len();
        Ok(n)
    }

    fn pool(&self) -> &Pool {
        self.inner.pool()
    }
    fn gso_pool(&self) -> Option<&Pool> {
        self.inner.gso_pool()
    }
    fn mtu(&self) -> usize {
        self.inner.mtu()
    }
    fn stats(&self) -> DriverStats {
        self.inner.stats()
    }
    fn describe(&self) -> String {
        format!("{} (recording pcap)", self.inner.describe())
    }
    fn mac(&self) -> Option<[u8; 6]> {
        self.inner.mac()
    }
    fn rx_checksums_trusted(&self) -> bool {
        self.inner.rx_checksums_trusted()
    }
    fn offloads(&self) -> crate::Offloads {
        // Frames pass through this wrapper whole: no payload slices.
        crate::Offloads {
            tx_gather: false,
            ..self.inner.offloads()
        }
    }
    fn wait(&mut self, timeout: std::time::Duration) -> io::Result<()> {
        self.inner.wait(timeout)
    }
}
