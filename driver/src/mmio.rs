//! Register access to BAR0, whatever the transport.
//!
//! Where the transport lets BAR0 be mmapped (kernel VFIO), registers are
//! read and written with volatile 32-bit accesses through a raw pointer;
//! otherwise (vfio-user) through the backend's region reads and writes. Doorbells
//! are posted writes with release ordering before them, so that descriptors
//! written to DMA memory are visible before the device is told about them.
//!
//! Every value read is untrusted (D2): an all-ones ID or status word is what
//! a PCIe read returns when the link is down, and callers check for it.

use crate::backend::{Backend, RegFault, RegionMap};
use crate::error::{BackendError, Error, Result};
use crate::sync::Arc;
use fdma_hw::pci::BAR_REGS;
use fdma_hw::regs::BAR0_SIZE;

/// BAR0 of one device.
#[derive(Debug)]
pub struct Regs {
    backend: Arc<dyn Backend>,
    /// The mmapped BAR0, when the transport offers one covering it all.
    map: Option<RegionMap>,
}

impl Regs {
    /// Register access over `backend`, mmapping BAR0 if the transport lets it.
    pub fn new(backend: Arc<dyn Backend>) -> Result<Regs> {
        let map = match backend.region_mmap(BAR_REGS)? {
            Some(maps) => maps
                .into_iter()
                .find(|m| m.offset == 0 && m.len as u64 >= BAR0_SIZE),
            None => None,
        };
        Ok(Regs { backend, map })
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn check(&self, off: u32) -> Result<()> {
        if off % 4 != 0 || off as u64 + 4 > BAR0_SIZE {
            return Err(Error::Invalid(format!(
                "register offset {off:#x} outside BAR0 or unaligned"
            )));
        }
        Ok(())
    }

    /// Read a 32-bit register.
    pub fn read(&self, off: u32) -> Result<u32> {
        self.check(off)?;
        if let Some(m) = &self.map {
            // SAFETY: `off + 4 <= BAR0_SIZE <= m.len` (checked above and at
            // construction), the mapping lives as long as `self`, and the
            // offset is 4-byte aligned; a volatile read of device memory
            // through a raw pointer forms no reference.
            let v = unsafe { std::ptr::read_volatile(m.ptr.add(off as usize) as *const u32) };
            return Ok(u32::from_le(v));
        }
        let mut b = [0u8; 4];
        self.backend.region_read(BAR_REGS, off as u64, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Write a 32-bit register and wait until the device has taken it.
    pub fn write(&self, off: u32, v: u32) -> Result<()> {
        self.check(off)?;
        if let Some(m) = &self.map {
            // SAFETY: as in `read`; the volatile write is the MMIO access.
            unsafe { std::ptr::write_volatile(m.ptr.add(off as usize) as *mut u32, v.to_le()) };
            // A read flushes the posted write, making this a non-posted write.
            let _ = self.read(fdma_hw::regs::SCRATCH.offset)?;
            return Ok(());
        }
        self.backend
            .region_write(BAR_REGS, off as u64, &v.to_le_bytes())
            .map_err(Error::from)
    }

    /// Doorbell: a posted write, with release ordering so that everything
    /// written to DMA memory before it (descriptors) is visible to the device
    /// first.
    pub fn doorbell(&self, off: u32, v: u32) -> std::result::Result<(), BackendError> {
        doorbell_barrier();
        if let Some(m) = &self.map {
            // SAFETY: as in `read`; `off` comes from the register map.
            unsafe { std::ptr::write_volatile(m.ptr.add(off as usize) as *mut u32, v.to_le()) };
            return Ok(());
        }
        self.backend
            .region_write_posted(BAR_REGS, off as u64, &v.to_le_bytes())
    }

    /// Read a register without allocating or logging (the signalling path,
    /// F10). `off` must come from the register map.
    pub fn read_nonalloc(&self, off: u32) -> Result<u32, RegFault> {
        if off % 4 != 0 || off as u64 + 4 > BAR0_SIZE {
            return Err(RegFault::Other);
        }
        if let Some(m) = &self.map {
            // SAFETY: as in `read`.
            let v = unsafe { std::ptr::read_volatile(m.ptr.add(off as usize) as *const u32) };
            return Ok(u32::from_le(v));
        }
        self.backend.read32_nonalloc(BAR_REGS, off as u64)
    }

    /// Write a register without allocating or logging (see
    /// [`Regs::read_nonalloc`]).
    pub fn write_nonalloc(&self, off: u32, v: u32) -> Result<(), RegFault> {
        if off % 4 != 0 || off as u64 + 4 > BAR0_SIZE {
            return Err(RegFault::Other);
        }
        if let Some(m) = &self.map {
            // SAFETY: as in `read`.
            unsafe { std::ptr::write_volatile(m.ptr.add(off as usize) as *mut u32, v.to_le()) };
            return self
                .read_nonalloc(fdma_hw::regs::SCRATCH.offset)
                .map(|_| ());
        }
        self.backend.write32_nonalloc(BAR_REGS, off as u64, v)
    }

    /// [`Regs::cycles`] without allocating or logging.
    pub fn cycles_nonalloc(&self) -> Result<u64, RegFault> {
        let lo = self.read_nonalloc(fdma_hw::regs::CYCLE_LO.offset)?;
        let hi = self.read_nonalloc(fdma_hw::regs::CYCLE_HI.offset)?;
        Ok((hi as u64) << 32 | lo as u64)
    }

    /// A channel's byte counter (`BYTES_HI:BYTES_LO`), without allocating
    /// or logging.
    pub fn channel_bytes_nonalloc(&self, ch: usize) -> Result<u64, RegFault> {
        use fdma_hw::regs::{channel_reg, CH_BYTES_HI, CH_BYTES_LO};
        let lo = self.read_nonalloc(channel_reg(ch, &CH_BYTES_LO))?;
        let hi = self.read_nonalloc(channel_reg(ch, &CH_BYTES_HI))?;
        Ok((hi as u64) << 32 | lo as u64)
    }

    /// Read the free-running device cycle counter (D1): `CYCLE_LO` latches
    /// `CYCLE_HI`.
    pub fn cycles(&self) -> Result<u64> {
        let lo = self.read(fdma_hw::regs::CYCLE_LO.offset)?;
        let hi = self.read(fdma_hw::regs::CYCLE_HI.offset)?;
        Ok((hi as u64) << 32 | lo as u64)
    }
}

/// Order every earlier write to DMA memory before a following MMIO write
/// (the doorbell). On x86-64 stores are not reordered with other stores, so
/// a release fence (a compiler barrier) suffices; on AArch64 a release fence
/// is `dmb ish`, which does not order normal-memory stores before device
/// stores, so an outer-shareable store barrier is needed.
#[inline]
pub fn doorbell_barrier() {
    std::sync::atomic::fence(std::sync::atomic::Ordering::Release);
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a store barrier has no operands and no memory effects beyond
    // ordering.
    unsafe {
        std::arch::asm!("dmb oshst", options(nostack, preserves_flags))
    };
}
