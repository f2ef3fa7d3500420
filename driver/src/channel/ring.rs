//! The descriptor ring and writeback area of one channel, in driver DMA
//! memory. Written and read with volatile accesses through raw pointers
//! only: the device reads the ring and writes the writeback behind the
//! compiler's back.

use crate::mem::DmaBuffer;
use fdma_hw::desc::{Descriptor, Writeback, DESC_BYTES, WB_BYTES};

/// Ring memory of `size` descriptors plus a writeback slot.
#[derive(Debug)]
pub(crate) struct RingMem {
    pub ring: DmaBuffer,
    pub wb: DmaBuffer,
    pub size: u32,
}

impl RingMem {
    /// Write descriptor `d` at free-running index `idx`.
    pub fn write_desc(&self, idx: u32, d: &Descriptor) {
        let slot = (idx & (self.size - 1)) as usize;
        let bytes = d.to_bytes();
        let base = self.ring.raw_ptr();
        for w in 0..DESC_BYTES / 8 {
            let v = u64::from_le_bytes(bytes[w * 8..w * 8 + 8].try_into().expect("8 bytes"));
            // SAFETY: `slot < size` and the ring buffer holds `size`
            // descriptors of DESC_BYTES, so the 8-byte aligned word is in
            // bounds; the buffer lives as long as `self`. Volatile, through a
            // raw pointer: no reference to device-visible memory is formed.
            unsafe {
                std::ptr::write_volatile(base.add(slot * DESC_BYTES + w * 8) as *mut u64, v.to_le())
            };
        }
    }

    /// Read the writeback area. Every field is untrusted (D2).
    pub fn read_wb(&self) -> Writeback {
        let base = self.wb.raw_ptr();
        let mut b = [0u8; WB_BYTES];
        for w in 0..WB_BYTES / 4 {
            // SAFETY: the writeback buffer is at least WB_BYTES long and
            // 4-byte aligned (page aligned); volatile read through a raw
            // pointer, no reference formed.
            let v = unsafe { std::ptr::read_volatile(base.add(w * 4) as *const u32) };
            b[w * 4..w * 4 + 4].copy_from_slice(&u32::from_le(v).to_le_bytes());
        }
        // Later reads of the ring state must not be hoisted above this one.
        std::sync::atomic::fence(std::sync::atomic::Ordering::Acquire);
        Writeback::from_bytes(&b)
    }

    /// Zero the writeback area (channel reset), so that a stale record from
    /// before the reset is never taken for a new one.
    pub fn clear_wb(&self) {
        let base = self.wb.raw_ptr();
        for w in 0..WB_BYTES / 4 {
            // SAFETY: as in `read_wb`; the channel is reset, so the device
            // does not write the area concurrently.
            unsafe { std::ptr::write_volatile(base.add(w * 4) as *mut u32, 0) };
        }
    }
}
