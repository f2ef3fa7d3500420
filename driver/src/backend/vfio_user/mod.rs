//! vfio-user client backend: the simulator's transport.
//!
//! [`VfioUserBackend::connect`] opens the server's socket and negotiates
//! (VERSION with twin-socket mode, which is required, then
//! DEVICE_GET_INFO, REGION_INFO for every region, IRQ_INFO for every kind).
//! Afterwards
//!
//! * requests go on the main socket, one at a time under a mutex, with a
//!   wall-clock reply timeout past which the device is lost (`client.rs`);
//! * the server's DMA_READ / DMA_WRITE requests arrive on the twin socket
//!   and are answered by a dedicated service thread on the signalling path
//!   (contract F10, `service.rs`);
//! * memory mapped for DMA by address is pinned with io_uring fixed buffers
//!   and served only from the pinned pages (contract D5, `pin.rs`); memory
//!   mapped with an fd is mapped by the server itself.
//!
//! # Limits ([`Backend::dma_limits`])
//!
//! * `max_mappings`: the server's `max_dma_maps`, at most 16384 (one io_uring
//!   fixed-buffer slot per mapping);
//! * `max_mapping_size`: 1 GiB, io_uring's limit for one fixed buffer (it
//!   applies to mappings by address; mappings by fd are not pinned here and
//!   are not limited by this backend);
//! * `page_sizes`: the server's `pgsizes`; IOVA, size and address must be
//!   aligned to the smallest;
//! * `iova_ranges`: everything but page 0 and the x86 MSI window
//!   (`0xfee00000..0xfef00000`), as on a lab host, so that an address plan
//!   that works against the simulator works on a board;
//! * `vaddr_pinned`: false when io_uring is unavailable (a loud warning is
//!   logged once per process).
//!
//! Limit violations are refused before anything is sent:
//! `Refused { errno: EEXIST }` for a map overlapping an existing one,
//! `Refused { errno: ENOSPC }` when no mapping (or fixed-buffer slot) is
//! left, `Invalid` for misaligned or out-of-range arguments and for an unmap
//! that does not match one mapping exactly.
//!
//! Pinning takes the pages with write access (io_uring does), so memory
//! that is mapped read-only in this process cannot be mapped by address
//! here, whatever [`DmaProt`] asks; map it by fd instead.
//!
//! # Loss and fork
//!
//! A reply missing past [`VfioUserOptions::reply_timeout`], an EOF, EPIPE or
//! ECONNRESET on either socket, or a message that puts the main socket out
//! of step marks the device lost: every later call fails at once with
//! [`BackendError::Lost`]. `dma_unmap` on a lost device still removes the
//! mapping locally (the service thread then refuses the range, so the
//! device cannot reach it through this backend) before returning `Lost`.
//! In a child forked after the connection was made (C10, see
//! [`crate::fork`]) every call returns [`BackendError::Forked`] and dropping
//! the handle sends nothing, shuts no socket down (the parent shares them)
//! and unregisters no buffer.

mod client;
mod dma;
mod fastreg;
mod handshake;
mod msix;
mod pin;
mod service;

use super::*;
use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::thread::JoinHandle;
use std::time::Duration;

use fdma_vfio_user::consts::{self, device, irq, region};
use fdma_vfio_user::{
    Capabilities, Connection, DeviceInfo, IrqInfo, IrqSet, Limits, RegionAccess, RegionCap,
    RegionData, RegionInfoRequest, Reply, Request, TwinSocket, Version,
};

use client::Client;
use service::{Service, Shared};

pub use pin::{MAX_BUFFER as MAX_VADDR_MAPPING_SIZE, MAX_SLOTS as MAX_VADDR_MAPPINGS};

/// Most fds this client accepts in one message (announced as
/// `max_msg_fds`).
pub const CLIENT_MAX_MSG_FDS: u32 = 16;

/// The usable IOVA space: everything but page 0 and the MSI window.
pub const IOVA_RANGES: [Range<u64>; 2] = [
    0x1000..crate::backend::X86_MSI_WINDOW.start,
    crate::backend::X86_MSI_WINDOW.end..u64::MAX,
];

/// Options of a vfio-user connection.
#[derive(Debug, Clone)]
pub struct VfioUserOptions {
    /// How long a request may wait for its reply before the device is
    /// reported lost (wall clock; D1's backstop).
    pub reply_timeout: Duration,
    /// Largest data transfer to ask the server for.
    pub max_data_xfer_size: u32,
}

impl Default for VfioUserOptions {
    fn default() -> Self {
        VfioUserOptions {
            reply_timeout: Duration::from_secs(10),
            max_data_xfer_size: 1 << 20,
        }
    }
}

/// A region as the server described it, with what mapping it needs.
struct RegionEntry {
    info: RegionInfo,
    /// mmap offset of the region in `file`.
    mmap_offset: u64,
    /// The fd the server passed for mmapping.
    file: Option<File>,
}

/// A device reached through a vfio-user server socket.
pub struct VfioUserBackend {
    client: Client,
    regions: BTreeMap<u32, RegionEntry>,
    irq_counts: HashMap<u32, u32>,
    limits: DmaLimits,
    /// Largest data transfer in one message (the smaller of both sides').
    xfer: usize,
    /// Most fds the server accepts in one message.
    server_max_fds: usize,
    reset: bool,
    /// The twin socket (shared with the service thread).
    twin: Arc<OwnedFd>,
    service: Mutex<Option<JoinHandle<()>>>,
    /// Serialises map and unmap.
    map_lock: Mutex<()>,
}

impl std::fmt::Debug for VfioUserBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioUserBackend")
            .field("name", &self.client.name)
            .field("lost", &self.is_lost())
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn irq_index(kind: IrqKind) -> u32 {
    match kind {
        IrqKind::Intx => irq::PCI_INTX,
        IrqKind::Msi => irq::PCI_MSI,
        IrqKind::Msix => irq::PCI_MSIX,
        IrqKind::Request => irq::PCI_REQ,
    }
}

impl VfioUserBackend {
    /// Connect to the server at `path` and negotiate.
    pub fn connect(path: &Path, opts: &VfioUserOptions) -> BResult<VfioUserBackend> {
        Self::connect_with(path, opts, true)
    }

    /// As [`connect`](Self::connect), but never pin memory mapped by
    /// address: serve it from the live address as when io_uring is
    /// unavailable (`DmaLimits::vaddr_pinned == false`, contract D5 does
    /// not hold). For tests of that fallback.
    pub fn connect_unpinned(path: &Path, opts: &VfioUserOptions) -> BResult<VfioUserBackend> {
        Self::connect_with(path, opts, false)
    }

    /// Check a region access against the region's description.
    fn check_access(
        &self,
        op: &str,
        index: u32,
        offset: u64,
        len: usize,
        write: bool,
    ) -> BResult<()> {
        let what = || format!("{op} region {index} offset {offset:#x} len {len}");
        self.client.check(what)?;
        let Some(r) = self.regions.get(&index) else {
            return Err(self.client.invalid(what(), "no such region"));
        };
        if offset
            .checked_add(len as u64)
            .map_or(true, |e| e > r.info.size)
        {
            return Err(self.client.invalid(
                what(),
                format!("beyond the region's {:#x} bytes", r.info.size),
            ));
        }
        if (write && !r.info.write) || (!write && !r.info.read) {
            return Err(self
                .client
                .invalid(what(), "access not permitted by the region"));
        }
        Ok(())
    }

    fn write_chunks(&self, index: u32, offset: u64, data: &[u8], posted: bool) -> BResult<()> {
        let op = if posted {
            "posted REGION_WRITE"
        } else {
            "REGION_WRITE"
        };
        self.check_access(op, index, offset, data.len(), true)?;
        for (i, chunk) in data.chunks(self.xfer).enumerate() {
            let off = offset + (i * self.xfer) as u64;
            let what = || format!("{op} region {index} offset {off:#x} len {}", chunk.len());
            let req = Request::RegionWrite(RegionData {
                offset: off,
                region: index,
                data: chunk.to_vec(),
            });
            if posted {
                self.client.post(what, &req)?;
                continue;
            }
            match self.client.call(what, &req, &[])? {
                (Reply::RegionWrite(a), _)
                    if a.offset == off && a.region == index && a.count as usize == chunk.len() => {}
                (r, _) => return Err(self.client.unexpected(what(), &r)),
            }
        }
        Ok(())
    }
}

impl Backend for VfioUserBackend {
    fn name(&self) -> &str {
        &self.client.name
    }

    fn region_info(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(&index).map(|r| &r.info)
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> BResult<()> {
        self.check_access("REGION_READ", index, offset, buf.len(), false)?;
        for (i, chunk) in buf.chunks_mut(self.xfer).enumerate() {
            let off = offset + (i * self.xfer) as u64;
            let n = chunk.len();
            let what = || format!("REGION_READ region {index} offset {off:#x} len {n}");
            let req = Request::RegionRead(RegionAccess {
                offset: off,
                region: index,
                count: n as u32,
            });
            match self.client.call(what, &req, &[])? {
                (Reply::RegionRead(d), _)
                    if d.offset == off && d.region == index && d.data.len() == n =>
                {
                    chunk.copy_from_slice(&d.data)
                }
                (r, _) => return Err(self.client.unexpected(what(), &r)),
            }
        }
        Ok(())
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        self.write_chunks(index, offset, data, false)
    }

    fn region_write_posted(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        self.write_chunks(index, offset, data, true)
    }

    fn region_mmap(&self, index: u32) -> BResult<Option<Vec<RegionMap>>> {
        self.client.check(|| format!("mmap region {index}"))?;
        let Some(r) = self.regions.get(&index) else {
            return Ok(None);
        };
        let Some(file) = &r.file else {
            return Ok(None);
        };
        if r.info.mmap_areas.is_empty() {
            return Ok(None);
        }
        let mut maps = Vec::with_capacity(r.info.mmap_areas.len());
        for a in &r.info.mmap_areas {
            let len = (a.end - a.start) as usize;
            let m = memmap2::MmapOptions::new()
                .offset(r.mmap_offset + a.start)
                .len(len)
                .map_raw(file)
                .map_err(|source| BackendError::Sys {
                    device: self.client.name.clone(),
                    op: format!("mmap region {index} area {:#x}+{len:#x}", a.start),
                    source,
                })?;
            maps.push(RegionMap {
                ptr: m.as_mut_ptr(),
                offset: a.start,
                len,
                _keep: std::sync::Arc::new(m),
            });
        }
        Ok(Some(maps))
    }

    fn config_read(&self, offset: u64, buf: &mut [u8]) -> BResult<()> {
        self.region_read(region::PCI_CONFIG, offset, buf)
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> BResult<()> {
        self.region_write(region::PCI_CONFIG, offset, data)
    }

    fn dma_limits(&self) -> &DmaLimits {
        &self.limits
    }

    fn dma_map(&self, iova: u64, size: u64, source: DmaSource<'_>, prot: DmaProt) -> BResult<()> {
        self.map(iova, size, source, prot)
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> BResult<()> {
        self.unmap(iova, size)
    }

    fn irq_count(&self, kind: IrqKind) -> u32 {
        if kind == IrqKind::Request {
            return 0;
        }
        self.irq_counts.get(&irq_index(kind)).copied().unwrap_or(0)
    }

    fn set_irq_eventfds(&self, kind: IrqKind, start: u32, fds: &[BorrowedFd<'_>]) -> BResult<()> {
        let index = irq_index(kind);
        let what = || format!("DEVICE_SET_IRQS {kind:?} {start}+{}", fds.len());
        self.client.check(what)?;
        let count = self.irq_count(kind);
        if start
            .checked_add(fds.len() as u32)
            .map_or(true, |e| e > count)
        {
            return Err(self
                .client
                .invalid(what(), format!("the device has {count} vectors")));
        }
        for (i, chunk) in fds.chunks(self.server_max_fds).enumerate() {
            let s = start + (i * self.server_max_fds) as u32;
            let req = Request::DeviceSetIrqs(IrqSet {
                flags: irq::SET_DATA_EVENTFD | irq::SET_ACTION_TRIGGER,
                index,
                start: s,
                count: chunk.len() as u32,
                bools: Vec::new(),
            });
            let op = || format!("DEVICE_SET_IRQS {kind:?} {s}+{}", chunk.len());
            match self.client.call(op, &req, chunk)? {
                (Reply::DeviceSetIrqs, _) => {}
                (r, _) => return Err(self.client.unexpected(op(), &r)),
            }
        }
        if kind == IrqKind::Msix {
            self.msix_enable(start, fds.len() as u32)?;
        }
        Ok(())
    }

    fn disable_irqs(&self, kind: IrqKind) -> BResult<()> {
        let what = || format!("DEVICE_SET_IRQS {kind:?} disable");
        self.client.check(what)?;
        if kind == IrqKind::Request {
            return Ok(());
        }
        let req = Request::DeviceSetIrqs(IrqSet {
            flags: irq::SET_DATA_NONE | irq::SET_ACTION_TRIGGER,
            index: irq_index(kind),
            start: 0,
            count: 0,
            bools: Vec::new(),
        });
        match self.client.call(what, &req, &[])? {
            (Reply::DeviceSetIrqs, _) => {}
            (r, _) => return Err(self.client.unexpected(what(), &r)),
        }
        if kind == IrqKind::Msix {
            self.msix_disable()?;
        }
        Ok(())
    }

    fn read32_nonalloc(&self, index: u32, offset: u64) -> Result<u32, super::RegFault> {
        self.client.reg32(index, offset, None)
    }

    fn write32_nonalloc(&self, index: u32, offset: u64, value: u32) -> Result<(), super::RegFault> {
        self.client.reg32(index, offset, Some(value)).map(|_| ())
    }

    fn reset(&self) -> BResult<()> {
        self.client.check(|| "DEVICE_RESET".into())?;
        if !self.reset {
            return Err(BackendError::ResetUnsupported {
                device: self.client.name.clone(),
            });
        }
        match self
            .client
            .call(|| "DEVICE_RESET".into(), &Request::DeviceReset, &[])?
        {
            (Reply::DeviceReset, _) => Ok(()),
            (r, _) => Err(self.client.unexpected("DEVICE_RESET".into(), &r)),
        }
    }

    fn is_lost(&self) -> bool {
        self.client.shared.lost.load(Ordering::Acquire)
    }
}

impl Drop for VfioUserBackend {
    fn drop(&mut self) {
        if crate::fork::in_forked_child() {
            // C10: in a forked child no I/O at all. shutdown() would act on
            // the sockets the parent shares, and the ring's buffers are the
            // parent's too: the service thread does not exist here, so the
            // shared state (ring, twin socket) is simply leaked, and the
            // remaining fds are closed by the field drops.
            if let Some(h) = self.service.get_mut().ok().and_then(|s| s.take()) {
                std::mem::forget(h);
            }
            return;
        }
        self.client.shared.stopping.store(true, Ordering::Release);
        self.client.with_link(|l| {
            let _ = l.conn.socket().shutdown(std::net::Shutdown::Both);
        });
        // SAFETY: shutdown(2) on the twin socket we own; it wakes the
        // service thread's blocking recv with an EOF.
        unsafe { libc::shutdown(self.twin.as_fd().as_raw_fd(), libc::SHUT_RDWR) };
        let h = self
            .service
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = h {
            if h.join().is_err() {
                log::error!("{}: the DMA service thread panicked", self.client.name);
            }
        }
        // The ring (and with it every pinned buffer) goes with the last
        // reference to the shared state, now ours alone.
    }
}
