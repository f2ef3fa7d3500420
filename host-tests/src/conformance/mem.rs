//! Plain process memory for the suite's DMA: anonymous pages, as an
//! application's malloc'd or mmap'd buffers are. The device writes them
//! behind the compiler's back, so no Rust reference to them is ever
//! formed: data moves by copy through raw pointers.

use anyhow::Result;
use std::sync::atomic::{fence, Ordering};

/// Anonymous, page-aligned process memory.
pub struct UserMem {
    map: memmap2::MmapRaw,
}

impl UserMem {
    /// `len` bytes (rounded up to whole pages), zeroed.
    pub fn new(len: usize) -> Result<UserMem> {
        let len = len.div_ceil(4096) * 4096;
        let map = memmap2::MmapRaw::from(memmap2::MmapOptions::new().len(len).map_anon()?);
        Ok(UserMem { map })
    }

    /// Start address.
    pub fn ptr(&self) -> *const u8 {
        self.map.as_ptr()
    }

    /// Length in bytes.
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether the mapping is empty (never: lengths round up to a page).
    pub fn is_empty(&self) -> bool {
        self.map.len() == 0
    }

    /// Copy `data` in at `off`.
    pub fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len(), "write past the end");
        // SAFETY: the range lies inside the live mapping (asserted); a raw
        // copy forms no reference to memory the device may write.
        unsafe {
            std::ptr::copy_nonoverlapping(data.as_ptr(), self.map.as_mut_ptr().add(off), data.len())
        };
        fence(Ordering::Release);
    }

    /// Copy `len` bytes out from `off`.
    pub fn read(&self, off: usize, len: usize) -> Vec<u8> {
        assert!(off + len <= self.len(), "read past the end");
        fence(Ordering::Acquire);
        let mut v = vec![0u8; len];
        // SAFETY: as in `write`.
        unsafe { std::ptr::copy_nonoverlapping(self.map.as_ptr().add(off), v.as_mut_ptr(), len) };
        v
    }

    /// Replace the pages behind this address range with fresh zeroed ones
    /// (`MAP_FIXED`), as an allocator does when it returns memory to the
    /// system and gets new memory at the same address (D5, C3).
    pub fn reback(&self) -> Result<()> {
        // SAFETY: the range is this mapping's own; MAP_FIXED replaces it
        // with an anonymous mapping of the same size that `self.map` later
        // unmaps as before.
        let r = unsafe {
            libc::mmap(
                self.map.as_mut_ptr().cast(),
                self.len(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        if r == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error().into());
        }
        Ok(())
    }
}
