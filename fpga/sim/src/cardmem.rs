//! Card memory: the DDR behind the engine's card port and BAR2.
//!
//! It is a memfd so that the vfio-user server can hand it to the client as a
//! sparse-mmap region (BAR2 mapped straight into the driver), exactly as a
//! board's prefetchable BAR is mapped. The client may write it at any time,
//! so this side never forms a Rust reference to it: all access is by raw
//! pointer copies within bounds.

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Errors creating card memory.
#[derive(Debug, thiserror::Error)]
pub enum CardMemError {
    /// memfd_create, ftruncate or mmap failed.
    #[error("cannot create {bytes} bytes of card memory: {op}")]
    Create {
        /// Requested size.
        bytes: u64,
        /// Which call failed.
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
}

/// Card memory mapped into this process.
pub struct CardMemory {
    fd: OwnedFd,
    map: memmap2::MmapRaw,
    len: u64,
}

impl CardMemory {
    /// Create `len` bytes of zeroed card memory (sparse: pages are allocated on first write).
    pub fn new(len: u64) -> Result<Self, CardMemError> {
        let err = |op, source| CardMemError::Create {
            bytes: len,
            op,
            source,
        };
        let fd = nix::sys::memfd::memfd_create(
            c"fdma-card-memory",
            nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
        )
        .map_err(|e| err("memfd_create", e.into()))?;
        nix::unistd::ftruncate(&fd, len as i64).map_err(|e| err("ftruncate", e.into()))?;
        let map = memmap2::MmapOptions::new()
            .len(len as usize)
            .map_raw(&fd)
            .map_err(|e| err("mmap", e))?;
        Ok(CardMemory { fd, map, len })
    }

    /// Size in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the memory has zero size.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The memfd, for sharing with a client.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    fn check(&self, offset: u64, n: usize) {
        assert!(
            offset.checked_add(n as u64).is_some_and(|e| e <= self.len),
            "card-memory access [{offset:#x}, +{n}) beyond {} bytes",
            self.len
        );
    }

    /// Copy `buf.len()` bytes out of card memory at `offset`. Panics when out
    /// of range: the engine range-checks card addresses before it issues.
    pub fn read(&self, offset: u64, buf: &mut [u8]) {
        self.check(offset, buf.len());
        // SAFETY: the range is within the live mapping (checked above); the
        // source may be written concurrently by the client through its own
        // mapping, which is why this is a raw copy and never a reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
    }

    /// Copy `data` into card memory at `offset`. Panics when out of range.
    pub fn write(&self, offset: u64, data: &[u8]) {
        self.check(offset, data.len());
        // SAFETY: the range is within the live, writable shared mapping
        // (checked above); raw copy, no reference to shared memory is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                data.len(),
            )
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_back_and_sparse() {
        let m = CardMemory::new(1 << 28).unwrap();
        m.write((1 << 28) - 3, &[1, 2, 3]);
        let mut b = [0u8; 4];
        m.read((1 << 28) - 4, &mut b);
        assert_eq!(b, [0, 1, 2, 3]);
    }

    #[test]
    #[should_panic(expected = "beyond")]
    fn out_of_range_panics() {
        CardMemory::new(4096).unwrap().write(4095, &[0, 0]);
    }
}
