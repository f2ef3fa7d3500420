//! Revoking BAR mappings when the kernel asks for the device back.
//!
//! An mmap of a region holds the device file open, and vfio-pci's release
//! (which the waiting unbind needs) runs only when the last reference goes.
//! Other threads may still hold raw pointers into a BAR, so the mapping
//! cannot simply be unmapped: its pages are replaced in place (`MAP_FIXED`)
//! by private memory reading all ones — what a read of a vanished PCIe
//! device returns, and what the watchdog already treats as a dead link.

use crate::backend::RegionMap;
use std::io;
use std::sync::{Arc, Mutex, Weak};

/// The BAR mappings handed out, to revoke on release.
#[derive(Debug, Default)]
pub(super) struct MappedBars {
    maps: Mutex<Vec<Weak<memmap2::MmapRaw>>>,
}

impl MappedBars {
    /// Hand out `m` (area at `offset` of its region) and remember it.
    pub fn track(&self, m: memmap2::MmapRaw, offset: u64) -> RegionMap {
        let keep = Arc::new(m);
        let mut maps = self.maps.lock().unwrap_or_else(|e| e.into_inner());
        maps.retain(|w| w.strong_count() > 0);
        maps.push(Arc::downgrade(&keep));
        RegionMap {
            ptr: keep.as_mut_ptr(),
            offset,
            len: keep.len(),
            _keep: keep,
        }
    }

    /// Replace every live mapping's pages with all-ones private memory.
    pub fn revoke(&self) {
        let maps = std::mem::take(&mut *self.maps.lock().unwrap_or_else(|e| e.into_inner()));
        for m in maps.iter().filter_map(Weak::upgrade) {
            if let Err(e) = replace_with_ones(m.as_mut_ptr(), m.len()) {
                log::error!("revoking a BAR mapping of {} bytes failed: {e}", m.len());
            }
        }
    }
}

/// Map a memfd full of 0xff over `[ptr, ptr + len)`, privately (writes go
/// to copies and are lost, as writes to a vanished device are).
fn replace_with_ones(ptr: *mut u8, len: usize) -> io::Result<()> {
    use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
    let fd = memfd_create(c"fdma-revoked-bar", MemFdCreateFlag::MFD_CLOEXEC)?;
    let file = std::fs::File::from(fd);
    file.set_len(len as u64)?;
    let page = vec![0xffu8; 1 << 16];
    let mut off = 0;
    while off < len {
        let n = page.len().min(len - off);
        std::os::unix::fs::FileExt::write_all_at(&file, &page[..n], off as u64)?;
        off += n;
    }
    use std::os::fd::AsRawFd;
    // SAFETY: `ptr..ptr + len` is a live mapping we own (kept alive by the
    // caller's Arc); MAP_FIXED replaces it atomically with pages of the
    // same size, so concurrent raw-pointer readers see either the device
    // or all ones, never an unmapped hole.
    let r = unsafe {
        libc::mmap(
            ptr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_FIXED,
            file.as_raw_fd(),
            0,
        )
    };
    if r == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}
