//! Driver-owned DMA memory: the device's address space ([`DmaSpace`]) and
//! buffers the driver allocates for the device ([`DmaBuffer`]).
//!
//! # The model
//!
//! **Memory.** A [`DmaBuffer`] is a `memfd` (`MFD_CLOEXEC | MFD_ALLOW_SEALING`,
//! plus `MFD_HUGETLB | MFD_HUGE_2MB` for [`BufferOptions::huge_pages`]), sized
//! to whole pages (4 KiB, or 2 MiB with huge pages, or the IOMMU's smallest
//! page if that is larger), allocated up front with `fallocate` (so that a
//! lack of memory or of huge pages is an error at allocation rather than a
//! `SIGBUS` at first touch), and sealed with `F_SEAL_SHRINK | F_SEAL_GROW |
//! F_SEAL_SEAL`: nobody holding the fd (a tool that maps it, the simulator
//! server that maps it for the device) can truncate the pages out from under
//! a live DMA mapping, and the seals themselves cannot be changed. The memfd
//! is mapped shared and read-write in this process and handed to the backend
//! as [`DmaSource::Fd`](crate::backend::DmaSource::Fd), so on the simulator
//! transport the server maps the very same pages (D5).
//!
//! **Fork (C10).** The mapping is `MADV_DONTFORK`: driver-owned DMA memory
//! never reaches a forked child, so a child can neither see nor
//! copy-on-write-split pages the device is writing. The memfd is close-on-exec.
//! A buffer used in a forked child returns [`Error::Forked`] from every call,
//! and its drop in the child does nothing: no fence wait, no unmap of the
//! parent's IOVA, not even a `munmap` (the child does not have the mapping,
//! and the address may since name something else of the child's).
//!
//! **IOVA allocation.** A [`DmaSpace`] is the device's DMA address space: the
//! backend plus an [`IovaAllocator`] over the backend's usable IOVA ranges
//! ([`DmaLimits::iova_ranges`](crate::backend::DmaLimits::iova_ranges),
//! reserved windows already removed) cut to the device's DMA address width
//! (`[0, 2^dma_bits)`), never handing out page 0. Buffers take their IOVA
//! aligned to their page size. The registration cache takes IOVAs from the
//! same space with [`DmaSpace::alloc_iova`].
//!
//! **Fences (R2, R5).** Every buffer has a reservation object
//! ([`Resv`](crate::resv::Resv)). [`DmaBuffer::read_at`] first waits for
//! the fences a CPU read must wait for (Kernel and Write),
//! [`DmaBuffer::write_at`] and [`DmaBuffer::fill`] for those a CPU write
//! must wait for (Kernel, Write and Read: never overwrite a
//! buffer the device is still reading). When the last clone of a buffer is
//! dropped it waits for every fence, unmaps the range from the device, and
//! only then returns the IOVA to the allocator (C4): an address is never
//! reused while a job may still use it or the IOMMU still maps it. If the
//! unmap fails because the device is lost, the IOVA is freed anyway (there is
//! no device left to reach it); if it fails otherwise, the IOVA range is
//! leaked, counted in [`DmaSpace::iova_leaked`] and logged, rather than
//! reused while it may still be mapped.
//!
//! **No references to device memory.** The device may write a buffer at any
//! time the fences allow, so the driver never forms a Rust reference (`&[u8]`
//! or `&mut [u8]`) to it: the safe accessors copy with raw-pointer copies
//! after the waits above, and the driver's rings and writeback areas use
//! volatile accesses through a crate-internal raw pointer
//! (`DmaBuffer::raw_ptr`).

use crate::backend::{Backend, DmaProt};
use crate::error::{BackendError, Error};
use crate::sync::{Arc, AtomicU64, Mutex, MutexGuard, Ordering};

mod buffer;
pub mod iova;

pub use buffer::DmaBuffer;
pub use iova::IovaAllocator;

#[cfg(all(test, not(loom)))]
mod tests;

/// How to allocate a buffer.
#[derive(Debug, Clone)]
pub struct BufferOptions {
    /// Name shown in /proc/self/maps (memfd name).
    pub name: String,
    /// Back the buffer with huge pages (MFD_HUGETLB).
    pub huge_pages: bool,
    /// What the device may do with it.
    pub prot: DmaProt,
}

impl Default for BufferOptions {
    fn default() -> Self {
        BufferOptions {
            name: "fdma-buffer".into(),
            huge_pages: false,
            prot: DmaProt::RW,
        }
    }
}

/// The device's DMA address space: the backend plus the IOVA allocator.
pub struct DmaSpace {
    backend: Arc<dyn Backend>,
    iova: Mutex<IovaAllocator>,
    dma_bits: u8,
    /// Smallest IOMMU page of the backend, at least 4 KiB.
    iommu_page: u64,
    /// Bytes of [`DmaBuffer`] memory mapped for the device.
    mapped: AtomicU64,
    /// Bytes of IOVA space leaked after failed unmaps.
    leaked: AtomicU64,
}

impl DmaSpace {
    /// A DMA space over `backend`'s usable IOVA ranges, cut to `dma_bits`.
    ///
    /// [`Error::Invalid`] when `dma_bits` is not in `32..=64` or no usable
    /// IOVA range remains below 2^`dma_bits` (after removing page 0).
    pub fn new(backend: Arc<dyn Backend>, dma_bits: u8) -> crate::Result<Arc<DmaSpace>> {
        crate::fork::install();
        if !(32..=64).contains(&dma_bits) {
            return Err(Error::Invalid(format!(
                "{}: DMA address width of {dma_bits} bits (supported: 32 to 64)",
                backend.name()
            )));
        }
        let limits = backend.dma_limits();
        let alloc = IovaAllocator::new(&limits.iova_ranges, dma_bits);
        if alloc.capacity() == 0 {
            return Err(Error::Invalid(format!(
                "{}: no usable IOVA range below 2^{dma_bits} (backend reports {:x?})",
                backend.name(),
                limits.iova_ranges
            )));
        }
        // The lowest set bit of the page-size mask is the IOMMU's granule.
        let iommu_page = match limits.page_sizes {
            0 => iova::IOVA_PAGE,
            mask => (1u64 << mask.trailing_zeros()).max(iova::IOVA_PAGE),
        };
        log::debug!(
            "{}: DMA space of {:#x} bytes below 2^{dma_bits}, IOMMU page {iommu_page:#x}",
            backend.name(),
            alloc.capacity()
        );
        Ok(Arc::new(DmaSpace {
            backend,
            iova: Mutex::new(alloc),
            dma_bits,
            iommu_page,
            mapped: AtomicU64::new(0),
            leaked: AtomicU64::new(0),
        }))
    }

    /// Bytes of IOVA space in use (by buffers, registrations, and leaked
    /// ranges, see [`DmaSpace::iova_leaked`]).
    pub fn iova_in_use(&self) -> u64 {
        self.allocator().in_use()
    }

    /// Bytes of driver DMA memory mapped: the page-rounded sizes of the live
    /// [`DmaBuffer`]s, plus those whose unmap failed other than by loss of
    /// the device (they may still be mapped).
    pub fn mapped_bytes(&self) -> u64 {
        self.mapped.load(Ordering::Relaxed)
    }

    /// Bytes of IOVA space never returned to the allocator because an unmap
    /// failed (C4: rather leak than reuse a range that may still be mapped).
    pub fn iova_leaked(&self) -> u64 {
        self.leaked.load(Ordering::Relaxed)
    }

    /// The transport.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// The device's DMA address width this space was cut to.
    pub fn dma_bits(&self) -> u8 {
        self.dma_bits
    }

    /// The smallest page the IOMMU maps (at least 4 KiB): every mapping's
    /// IOVA and size are multiples of it.
    pub fn iommu_page(&self) -> u64 {
        self.iommu_page
    }

    /// Bytes of usable IOVA space in total.
    pub fn iova_capacity(&self) -> u64 {
        self.allocator().capacity()
    }

    /// Allocate `size` bytes of IOVA space aligned to `align` (a power of
    /// two, or 0 for no particular alignment; the size is rounded up to, and
    /// the alignment is at least, [`DmaSpace::iommu_page`]), for a mapping
    /// the caller makes. [`Error::OutOfSpace`] when no range fits;
    /// [`Error::Invalid`] for a zero size or an alignment that is not a power
    /// of two.
    pub fn alloc_iova(&self, size: u64, align: u64) -> crate::Result<u64> {
        if size == 0 || !(align == 0 || align.is_power_of_two()) {
            return Err(Error::Invalid(format!(
                "IOVA allocation of {size:#x} bytes aligned to {align:#x}"
            )));
        }
        let page = self.iommu_page;
        let rounded = size
            .checked_next_multiple_of(page)
            .ok_or(Error::OutOfSpace {
                what: "IOVA space",
                requested: size,
            })?;
        self.allocator()
            .alloc(rounded, align.max(page))
            .ok_or(Error::OutOfSpace {
                what: "IOVA space",
                requested: size,
            })
    }

    /// Return an IOVA range from [`DmaSpace::alloc_iova`], with the size
    /// passed to it. C4: only once the range is unmapped from the device and
    /// every job that used it has signalled.
    pub fn free_iova(&self, iova: u64, size: u64) {
        match size.checked_next_multiple_of(self.iommu_page) {
            Some(rounded) => self.allocator().free(iova, rounded),
            None => log::error!("IOVA free of {iova:#x}+{size:#x}: bad size; ignored"),
        }
    }

    /// Count a range whose unmap failed and that is kept out of the
    /// allocator for good.
    fn leak_iova(&self, size: u64) {
        self.leaked.fetch_add(size, Ordering::Relaxed);
    }

    fn allocator(&self) -> MutexGuard<'_, IovaAllocator> {
        // The allocator is consistent between calls; a panic inside one (a
        // debug assertion) leaves nothing half-done worth refusing service for.
        self.iova.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl std::fmt::Debug for DmaSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Concise: a buffer's Debug includes its space, and the allocator's
        // maps can hold thousands of entries.
        let mut d = f.debug_struct("DmaSpace");
        d.field("backend", &self.backend.name())
            .field("dma_bits", &self.dma_bits)
            .field("iommu_page", &self.iommu_page);
        match self.iova.try_lock() {
            Ok(a) => d.field("iova", &*a),
            Err(_) => d.field("iova", &"<locked>"),
        };
        d.field("mapped_bytes", &self.mapped_bytes())
            .field("iova_leaked", &self.iova_leaked())
            .finish()
    }
}

/// Whether a backend error means the device can no longer reach anything.
fn device_gone(space: &DmaSpace, e: &BackendError) -> bool {
    e.is_lost() || space.backend.is_lost()
}
