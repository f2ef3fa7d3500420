//! The transport seam: everything that differs between a board behind the
//! kernel's VFIO and the simulator behind vfio-user.
//!
//! Above [`Backend`] nothing knows the transport. Interrupts are eventfds and
//! DMA addresses are IOVAs on every transport.
//!
//! # D5: mapping means what VFIO means
//!
//! [`Backend::dma_map`] captures the pages behind a range at map time: until
//! [`Backend::dma_unmap`] returns, the device reaches those pages and no
//! others, whatever the process does to its address space afterwards. Kernel
//! VFIO type1 pins them; the vfio-user backend pins memory mapped without an
//! fd with io_uring fixed buffers and serves the device's DMA requests only
//! from those pages, and memory mapped with an fd stays reachable through the
//! server's own mapping. `dma_unmap` returns only when the device can no
//! longer touch the range. A map over an existing range fails (`EEXIST`); an
//! unmap must match one map exactly. [`DmaLimits`] says what the transport
//! allows.

use crate::error::BackendError;
use std::ops::Range;
use std::os::fd::BorrowedFd;

#[cfg(not(loom))]
pub mod vfio;
pub mod vfio_user;

/// The x86 interrupt window: a DMA write there is an MSI, never memory.
/// No transport hands out IOVAs inside it.
pub const X86_MSI_WINDOW: Range<u64> = 0xfee0_0000..0xfef0_0000;

/// Result of backend calls.
pub type BResult<T> = std::result::Result<T, BackendError>;

/// One region of the device (BAR, config space).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    /// VFIO region index (0..=5 BARs, 7 config space).
    pub index: u32,
    /// Size in bytes (0 = absent).
    pub size: u64,
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Parts of the region that may be mmapped, as offset ranges.
    pub mmap_areas: Vec<Range<u64>>,
}

/// A live mapping of (part of) a region into this process.
///
/// Never form a Rust reference to it: the device changes it behind the
/// compiler's back. Use [`crate::mmio`]'s volatile accessors.
#[derive(Debug)]
pub struct RegionMap {
    /// Start of the mapping.
    pub ptr: *mut u8,
    /// Offset of `ptr` within the region.
    pub offset: u64,
    /// Length in bytes.
    pub len: usize,
    /// Keeps the mapping alive. Shared so that a transport can revoke it
    /// (replace its pages) when it must give the device back.
    pub(crate) _keep: std::sync::Arc<memmap2::MmapRaw>,
}

// SAFETY: the mapping is plain shared memory; access goes through raw
// pointers with volatile operations only, which is sound from any thread.
unsafe impl Send for RegionMap {}
// SAFETY: as above; no `&` to the memory is ever formed.
unsafe impl Sync for RegionMap {}

/// Where the pages of a DMA mapping come from.
#[derive(Debug, Clone, Copy)]
pub enum DmaSource<'a> {
    /// Process memory at this address, `size` bytes (pinned at map time, D5).
    Vaddr(*const u8),
    /// A shareable file (memfd, hugetlbfs) at this offset, mapped at `vaddr`
    /// in this process as well.
    Fd {
        /// The file.
        fd: BorrowedFd<'a>,
        /// Offset of the mapping within the file.
        offset: u64,
        /// Where this process has the same range mapped.
        vaddr: *const u8,
    },
}

/// Device access rights of a DMA mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DmaProt {
    /// The device may read.
    pub read: bool,
    /// The device may write.
    pub write: bool,
}

impl DmaProt {
    /// Read and write.
    pub const RW: DmaProt = DmaProt {
        read: true,
        write: true,
    };
    /// Device reads only.
    pub const READ: DmaProt = DmaProt {
        read: true,
        write: false,
    };
    /// Device writes only.
    pub const WRITE: DmaProt = DmaProt {
        read: false,
        write: true,
    };
}

/// What the transport allows for DMA mappings (D5, C6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DmaLimits {
    /// Most mappings at once.
    pub max_mappings: u32,
    /// Largest single mapping in bytes.
    pub max_mapping_size: u64,
    /// Supported page sizes as a bit mask (bit n = 2^n bytes).
    pub page_sizes: u64,
    /// Usable IOVA ranges (reserved windows such as MSI already removed).
    pub iova_ranges: Vec<Range<u64>>,
    /// Whether mappings by virtual address behave as on a board (pinned,
    /// D5). False when the vfio-user backend could not pin (no io_uring).
    pub vaddr_pinned: bool,
}

/// Interrupt kinds, as VFIO numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqKind {
    /// Legacy INTx.
    Intx,
    /// MSI.
    Msi,
    /// MSI-X.
    Msix,
    /// The kernel asks the driver to release the device.
    Request,
}

/// Why an allocation-free register access failed (see
/// [`Backend::read32_nonalloc`]). Copy, so that reporting it allocates
/// nothing either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegFault {
    /// The device is lost (or was found lost by this access).
    Lost,
    /// The handle is used in a forked child (C10).
    Forked,
    /// The device refused the access with this errno.
    Refused(i32),
    /// Anything else the transport reported.
    Other,
}

impl From<&BackendError> for RegFault {
    fn from(e: &BackendError) -> RegFault {
        match e {
            BackendError::Lost { .. } => RegFault::Lost,
            BackendError::Forked { .. } => RegFault::Forked,
            BackendError::Refused { errno, .. } => RegFault::Refused(*errno),
            _ => RegFault::Other,
        }
    }
}

/// A transport to one device. Implementations are thread-safe: the reactor,
/// the watchdog and submitters call concurrently.
pub trait Backend: Send + Sync + std::fmt::Debug {
    /// The device as the user named it: `sim:PATH` or `0000:01:00.0`.
    fn name(&self) -> &str;

    /// Region description; `None` when the device has no such region.
    fn region_info(&self, index: u32) -> Option<&RegionInfo>;

    /// Read `buf.len()` bytes (1, 2, 4 or 8, naturally aligned, for
    /// registers) at `offset` of region `index`.
    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> BResult<()>;

    /// Write `data` at `offset` of region `index` and wait until the device
    /// has taken it (a non-posted write).
    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()>;

    /// Write without waiting for the device (a posted write, as a PCIe
    /// memory write is). Ordered after every earlier access of this backend.
    /// Doorbells use it.
    fn region_write_posted(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()>;

    /// Map a region's mmap-able areas into this process, where the transport
    /// offers that (`None` otherwise; use region reads and writes).
    fn region_mmap(&self, index: u32) -> BResult<Option<Vec<RegionMap>>>;

    /// Read PCI config space.
    fn config_read(&self, offset: u64, buf: &mut [u8]) -> BResult<()>;

    /// Write PCI config space.
    fn config_write(&self, offset: u64, data: &[u8]) -> BResult<()>;

    /// What DMA mappings may be made.
    fn dma_limits(&self) -> &DmaLimits;

    /// Map `size` bytes at `iova` for the device (D5).
    fn dma_map(&self, iova: u64, size: u64, source: DmaSource<'_>, prot: DmaProt) -> BResult<()>;

    /// Remove the mapping made at exactly `iova` with exactly `size` bytes;
    /// returns once the device can no longer reach it.
    fn dma_unmap(&self, iova: u64, size: u64) -> BResult<()>;

    /// Number of vectors of an interrupt kind.
    fn irq_count(&self, kind: IrqKind) -> u32;

    /// Route vectors `start..start + fds.len()` of `kind` to eventfds.
    fn set_irq_eventfds(&self, kind: IrqKind, start: u32, fds: &[BorrowedFd<'_>]) -> BResult<()>;

    /// Disconnect every vector of `kind`.
    fn disable_irqs(&self, kind: IrqKind) -> BResult<()>;

    /// Function-level reset through the transport (VFIO_DEVICE_RESET).
    /// [`BackendError::ResetUnsupported`] when the device offers none.
    fn reset(&self) -> BResult<()>;

    /// Read a 32-bit register of region `index` without allocating or
    /// logging: the watchdog and reset run on the signalling path (F10).
    /// The default goes through [`Backend::region_read`]; transports whose
    /// region access allocates override it.
    fn read32_nonalloc(&self, index: u32, offset: u64) -> Result<u32, RegFault> {
        let mut b = [0u8; 4];
        self.region_read(index, offset, &mut b)
            .map_err(|e| RegFault::from(&e))?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a 32-bit register and wait for the device to take it, without
    /// allocating or logging (see [`Backend::read32_nonalloc`]).
    fn write32_nonalloc(&self, index: u32, offset: u64, value: u32) -> Result<(), RegFault> {
        self.region_write(index, offset, &value.to_le_bytes())
            .map_err(|e| RegFault::from(&e))
    }

    /// Whether the transport has found the device gone.
    fn is_lost(&self) -> bool;

    /// Give the device back: the kernel asked for it (the device-request
    /// interrupt: an unbind or hot unplug is waiting). Every handle to the
    /// device is closed and every mapping of its regions revoked (reads
    /// then return all ones, writes go nowhere); later calls fail with
    /// [`BackendError::Lost`]. Callers fail their fences first. The
    /// default, for transports with no such request, does nothing.
    fn release(&self) {}
}

/// The [`Backend`] methods of a test backend that only records DMA
/// mappings: no regions, config space, interrupts or reset. Expands inside
/// an `impl Backend` whose type has a `limits: DmaLimits` field and an
/// `fn unsupported<T>(&self) -> BResult<T>`.
#[cfg(test)]
macro_rules! dma_only_test_backend {
    () => {
        fn region_info(&self, _index: u32) -> Option<&$crate::backend::RegionInfo> {
            None
        }
        fn region_read(&self, _: u32, _: u64, _: &mut [u8]) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn region_write(&self, _: u32, _: u64, _: &[u8]) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn region_write_posted(&self, _: u32, _: u64, _: &[u8]) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn region_mmap(
            &self,
            _: u32,
        ) -> $crate::backend::BResult<Option<Vec<$crate::backend::RegionMap>>> {
            Ok(None)
        }
        fn config_read(&self, _: u64, _: &mut [u8]) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn config_write(&self, _: u64, _: &[u8]) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn dma_limits(&self) -> &$crate::backend::DmaLimits {
            &self.limits
        }
        fn irq_count(&self, _: $crate::backend::IrqKind) -> u32 {
            0
        }
        fn set_irq_eventfds(
            &self,
            _: $crate::backend::IrqKind,
            _: u32,
            _: &[std::os::fd::BorrowedFd<'_>],
        ) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn disable_irqs(&self, _: $crate::backend::IrqKind) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn reset(&self) -> $crate::backend::BResult<()> {
            self.unsupported()
        }
        fn is_lost(&self) -> bool {
            false
        }
    };
}
#[cfg(test)]
pub(crate) use dma_only_test_backend;
