//! Card memory (BAR2) as software reaches it: through a mapping of the BAR
//! where the transport offers one (the simulator's card-memory fd; a board's
//! prefetchable BAR), else through region reads and writes.
//!
//! The mapping is device memory: it is only ever copied to and from with
//! raw pointers, never turned into a Rust reference.

use crate::backend::{Backend, RegionMap};
use crate::error::{Error, Result};
use fdma_hw::pci::BAR_CARD_MEM;
use std::sync::Arc;

/// Bytes per region access when there is no mapping.
const CHUNK: usize = 1 << 16;

/// Access to the card's memory.
#[derive(Debug)]
pub(crate) struct CardMemory {
    backend: Arc<dyn Backend>,
    size: u64,
    map: Option<RegionMap>,
}

impl CardMemory {
    /// Card memory of `size` bytes, mapped if the transport allows it.
    pub fn new(backend: Arc<dyn Backend>, size: u64) -> Result<CardMemory> {
        let map = backend.region_mmap(BAR_CARD_MEM)?.and_then(|maps| {
            maps.into_iter()
                .find(|m| m.offset == 0 && m.len as u64 >= size)
        });
        Ok(CardMemory { backend, size, map })
    }

    fn range(&self, offset: u64, len: usize) -> Result<()> {
        if offset > self.size || self.size - offset < len as u64 {
            return Err(Error::Invalid(format!(
                "card range {offset:#x}+{len:#x} outside card memory of {:#x} bytes",
                self.size
            )));
        }
        Ok(())
    }

    /// Copy card memory at `offset` into `buf`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.range(offset, buf.len())?;
        if let Some(m) = &self.map {
            // SAFETY: `offset + buf.len() <= size <= m.len` (checked above
            // and at construction); the mapping lives as long as `self`;
            // the copy goes through raw pointers, forming no reference to
            // the device memory.
            unsafe {
                std::ptr::copy_nonoverlapping(
                    m.ptr.add(offset as usize),
                    buf.as_mut_ptr(),
                    buf.len(),
                )
            };
            return Ok(());
        }
        for (i, chunk) in buf.chunks_mut(CHUNK).enumerate() {
            self.backend
                .region_read(BAR_CARD_MEM, offset + (i * CHUNK) as u64, chunk)?;
        }
        Ok(())
    }

    /// Copy `data` into card memory at `offset`.
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.range(offset, data.len())?;
        if let Some(m) = &self.map {
            // SAFETY: as in `read`, in the other direction.
            unsafe {
                std::ptr::copy_nonoverlapping(data.as_ptr(), m.ptr.add(offset as usize), data.len())
            };
            return Ok(());
        }
        for (i, chunk) in data.chunks(CHUNK).enumerate() {
            self.backend
                .region_write(BAR_CARD_MEM, offset + (i * CHUNK) as u64, chunk)?;
        }
        Ok(())
    }
}
