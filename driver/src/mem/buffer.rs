//! [`DmaBuffer`]: a sealed memfd, mapped here and for the device.
//!
//! See the [module docs](super) for the model.

use super::{device_gone, BufferOptions, DmaSpace};
use crate::backend::DmaSource;
use crate::error::Error;
use crate::resv::{Purpose, Resv};
use crate::sync::{Arc, Ordering};
use memmap2::{Advice, MmapOptions, MmapRaw};
use nix::fcntl::{fallocate, fcntl, FallocateFlags, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MemFdCreateFlag};
use nix::unistd::ftruncate;
use std::ffi::CString;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::ptr::NonNull;

/// Page size of normal buffers.
const PAGE_4K: u64 = 4096;
/// Page size of huge-page buffers (`MFD_HUGE_2MB`).
const PAGE_2M: u64 = 2 << 20;
/// Longest memfd name Linux accepts (249 bytes plus the `memfd:` prefix).
const MAX_NAME: usize = 249;

/// A driver-allocated DMA buffer; clones share it. Freed (unmapped, after
/// every fence on it, R5) when the last clone drops.
///
/// `Send + Sync`: all access to the memory goes through raw pointers (copies
/// after the reservation waits, or the driver's volatile accesses), never
/// through references, and the bookkeeping is immutable after creation.
/// The memory is treated as foreign shared memory: concurrent overlapping
/// accesses (by CPU threads, the device, or holders of the fd) give
/// unspecified bytes; order them with fences and [`DmaBuffer::resv`] (R2).
#[derive(Debug, Clone)]
pub struct DmaBuffer {
    inner: Arc<Inner>,
}

struct Inner {
    space: Arc<DmaSpace>,
    /// Start of the mapping (`map`'s address), cached for raw access.
    ptr: NonNull<u8>,
    /// The process mapping; `None` only during drop.
    map: Option<MmapRaw>,
    fd: OwnedFd,
    /// Length asked for; accesses are checked against it.
    len: usize,
    /// Length of the memfd, the mapping and the IOMMU mapping.
    size: u64,
    iova: u64,
    resv: Resv,
}

// SAFETY: `ptr` points into `map`, a shared mapping owned by `Inner` that
// lives as long as it and is not tied to the creating thread; the memory is
// only ever accessed through raw pointers (`ptr::copy_nonoverlapping`,
// `ptr::write_bytes`, or the driver's volatile accesses), which are valid
// from any thread, and no Rust reference to it is ever formed. All other
// fields are `Send`.
unsafe impl Send for Inner {}
// SAFETY: the fields are not mutated after construction (except in `drop`,
// which has `&mut self`), so shared use only reads them. The memory behind
// `ptr` is foreign memory in the Rust sense: a `MAP_SHARED` mapping that the
// device, the simulator server and any holder of the fd may write at any
// time, so no Rust code can rely on it being unchanged, and none does: there
// are no references into it, only raw byte copies of `u8` (every bit pattern
// is valid). Overlapping CPU accesses from several threads at once give
// unspecified bytes, exactly as overlapping device accesses do; ordering them
// is the callers' job (R2).
unsafe impl Sync for Inner {}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuffer")
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("len", &self.len)
            .field("mapped_size", &self.size)
            .field("ptr", &self.ptr)
            .field("fd", &self.fd.as_raw_fd())
            .field("resv", &self.resv)
            .field("space", &self.space)
            .finish()
    }
}

fn sys(op: &'static str) -> impl FnOnce(nix::errno::Errno) -> Error {
    move |e| Error::Sys {
        op,
        source: io::Error::from(e),
    }
}

/// The error of a failed huge-page (or memory) reservation.
fn out_of_memory(e: nix::errno::Errno, huge: bool, requested: u64, op: &'static str) -> Error {
    use nix::errno::Errno;
    match e {
        Errno::ENOMEM | Errno::ENOSPC if huge => Error::OutOfSpace {
            what: "2 MiB huge pages (see /proc/sys/vm/nr_hugepages)",
            requested,
        },
        Errno::ENOMEM | Errno::ENOSPC => Error::OutOfSpace {
            what: "DMA memory",
            requested,
        },
        e => sys(op)(e),
    }
}

impl DmaBuffer {
    /// Allocate `len` bytes, zeroed, mapped for the device.
    ///
    /// The memory is rounded up to whole pages (2 MiB with
    /// [`BufferOptions::huge_pages`], else 4 KiB, or the IOMMU page if
    /// larger) and mapped at an IOVA aligned to that page size. Errors:
    /// [`Error::Invalid`] for a zero length, a length beyond the backend's
    /// largest mapping or a name with a NUL byte; [`Error::OutOfSpace`] when
    /// memory, huge pages or IOVA space run out; [`Error::Sys`] when a system
    /// call fails (e.g. `memfd_create` with `MFD_HUGETLB` on a kernel without
    /// hugetlbfs); [`Error::Backend`] when the device mapping fails. On error
    /// everything done so far is undone.
    pub fn new(
        space: &Arc<DmaSpace>,
        len: usize,
        opts: &BufferOptions,
    ) -> crate::Result<DmaBuffer> {
        crate::sync::assert_may_block("allocating a DmaBuffer");
        if len == 0 {
            return Err(Error::Invalid("zero-length DMA buffer".into()));
        }
        let huge = opts.huge_pages;
        let page = space.iommu_page().max(if huge { PAGE_2M } else { PAGE_4K });
        let size = (len as u64)
            .checked_next_multiple_of(page)
            .filter(|&s| usize::try_from(s).is_ok() && i64::try_from(s).is_ok())
            .ok_or_else(|| Error::Invalid(format!("DMA buffer of {len} bytes")))?;
        let max = space.backend().dma_limits().max_mapping_size;
        if max != 0 && size > max {
            return Err(Error::Invalid(format!(
                "DMA buffer of {size:#x} bytes exceeds the backend's largest mapping ({max:#x})"
            )));
        }

        // The memory: a sealed memfd of `size` bytes, allocated now.
        let mut name = opts.name.clone();
        if name.len() > MAX_NAME {
            let mut cut = MAX_NAME;
            while !name.is_char_boundary(cut) {
                cut -= 1;
            }
            name.truncate(cut);
        }
        let name = CString::new(name)
            .map_err(|_| Error::Invalid(format!("buffer name {:?} contains NUL", opts.name)))?;
        let mut flags = MemFdCreateFlag::MFD_CLOEXEC | MemFdCreateFlag::MFD_ALLOW_SEALING;
        if huge {
            flags |= MemFdCreateFlag::MFD_HUGETLB | MemFdCreateFlag::MFD_HUGE_2MB;
        }
        let fd = memfd_create(&name, flags).map_err(sys(if huge {
            "memfd_create(MFD_HUGETLB | MFD_HUGE_2MB)"
        } else {
            "memfd_create"
        }))?;
        ftruncate(&fd, size as i64).map_err(sys("ftruncate (memfd)"))?;
        fallocate(fd.as_raw_fd(), FallocateFlags::empty(), 0, size as i64)
            .map_err(|e| out_of_memory(e, huge, size, "fallocate (memfd)"))?;
        let seals = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
        fcntl(fd.as_raw_fd(), FcntlArg::F_ADD_SEALS(seals)).map_err(sys("fcntl(F_ADD_SEALS)"))?;

        // Our mapping of it, kept out of forked children (C10).
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(fd.as_raw_fd())
            .map_err(|e| match e.raw_os_error() {
                Some(n) => {
                    out_of_memory(nix::errno::Errno::from_raw(n), huge, size, "mmap (memfd)")
                }
                None => Error::Sys {
                    op: "mmap (memfd)",
                    source: e,
                },
            })?;
        map.advise(Advice::DontFork).map_err(|source| Error::Sys {
            op: "madvise(MADV_DONTFORK)",
            source,
        })?;
        let ptr = NonNull::new(map.as_mut_ptr()).ok_or_else(|| Error::Sys {
            op: "mmap (memfd)",
            source: io::Error::other("null mapping"),
        })?;

        // The device's mapping of it.
        let iova = space.alloc_iova(size, page)?;
        let source = DmaSource::Fd {
            fd: fd.as_fd(),
            offset: 0,
            vaddr: ptr.as_ptr(),
        };
        if let Err(e) = space.backend().dma_map(iova, size, source, opts.prot) {
            // Not mapped: nothing can reach the range, so it can go back now.
            space.free_iova(iova, size);
            return Err(e.into());
        }
        space.mapped.fetch_add(size, Ordering::Relaxed);
        log::debug!(
            "{}: DMA buffer {:?} of {len:#x} bytes ({size:#x} mapped) at IOVA {iova:#x}",
            space.backend().name(),
            opts.name
        );
        Ok(DmaBuffer {
            inner: Arc::new(Inner {
                space: space.clone(),
                ptr,
                map: Some(map),
                fd,
                len,
                size,
                iova,
                resv: Resv::new(),
            }),
        })
    }

    /// Length in bytes, as asked for.
    pub fn len(&self) -> usize {
        self.inner.len
    }

    /// Whether empty (never: zero-length buffers are refused).
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Bytes mapped for the device: [`DmaBuffer::len`] rounded up to the
    /// page size. The device may reach the padding too.
    pub fn mapped_size(&self) -> u64 {
        self.inner.size
    }

    /// Device address of byte 0.
    pub fn iova(&self) -> u64 {
        self.inner.iova
    }

    /// The DMA space (device) the buffer is mapped in.
    pub fn space(&self) -> &Arc<DmaSpace> {
        &self.inner.space
    }

    /// The reservation object (R1–R6).
    pub fn resv(&self) -> &Resv {
        &self.inner.resv
    }

    /// The memfd behind the buffer, for tools that map it themselves. Its
    /// size is [`DmaBuffer::mapped_size`] and sealed (no shrinking, growing
    /// or further seals). Whoever maps it must follow the same rules as the
    /// driver: wait on [`DmaBuffer::resv`] before touching the memory, and
    /// never form references to it while the device may write.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.inner.fd.as_fd()
    }

    /// Copy out, after the fences a CPU read must wait for (R2, R5).
    ///
    /// [`Error::Invalid`] if `offset + buf.len()` is beyond the buffer
    /// (nothing is copied); [`Error::Forked`] in a forked child.
    pub fn read_at(&self, offset: usize, buf: &mut [u8]) -> crate::Result<()> {
        self.check(offset, buf.len())?;
        if buf.is_empty() {
            return Ok(());
        }
        self.inner.resv.wait(Purpose::CpuRead, None)?;
        // SAFETY: `check` proved `offset + buf.len() <= len <= size`, so the
        // source lies inside our live mapping; `buf` is a distinct Rust
        // allocation, so the ranges do not overlap. The copy reads the
        // device-shared memory through a raw pointer, never a reference.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.inner.ptr.as_ptr().add(offset),
                buf.as_mut_ptr(),
                buf.len(),
            );
        }
        Ok(())
    }

    /// Copy `len` bytes at `offset` out into a new vector, as
    /// [`DmaBuffer::read_at`].
    pub fn read_vec(&self, offset: usize, len: usize) -> crate::Result<Vec<u8>> {
        self.check(offset, len)?;
        let mut v = vec![0; len];
        self.read_at(offset, &mut v)?;
        Ok(v)
    }

    /// Copy in, after the fences a CPU write must wait for (R2, R5).
    ///
    /// [`Error::Invalid`] if `offset + data.len()` is beyond the buffer
    /// (nothing is copied); [`Error::Forked`] in a forked child.
    pub fn write_at(&self, offset: usize, data: &[u8]) -> crate::Result<()> {
        self.check(offset, data.len())?;
        if data.is_empty() {
            return Ok(());
        }
        self.inner.resv.wait(Purpose::CpuWrite, None)?;
        // SAFETY: `check` proved the destination lies inside our live
        // mapping; `data` is a distinct Rust allocation, so the ranges do not
        // overlap. The mapping is writable, and written through a raw pointer.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.inner.ptr.as_ptr().add(offset),
                data.len(),
            );
        }
        Ok(())
    }

    /// Fill `len` bytes at `offset` with `byte`, as [`DmaBuffer::write_at`].
    pub fn fill(&self, offset: usize, len: usize, byte: u8) -> crate::Result<()> {
        self.check(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        self.inner.resv.wait(Purpose::CpuWrite, None)?;
        // SAFETY: `check` proved `offset + len` is inside our live, writable
        // mapping; written through a raw pointer.
        unsafe {
            std::ptr::write_bytes(self.inner.ptr.as_ptr().add(offset), byte, len);
        }
        Ok(())
    }

    /// Raw pointer to byte 0, for the driver's own rings and writeback.
    /// Never turn it into a reference. Valid for [`DmaBuffer::mapped_size`]
    /// bytes while a clone of the buffer lives; not mapped in a forked child.
    // Its users (the channel module's rings and writeback) are merged
    // separately; until then only the tests call it.
    #[allow(dead_code)]
    pub(crate) fn raw_ptr(&self) -> *mut u8 {
        self.inner.ptr.as_ptr()
    }

    /// Refuse use in a forked child and out-of-range accesses.
    fn check(&self, offset: usize, len: usize) -> crate::Result<()> {
        if self.inner.forked() {
            return Err(Error::Forked);
        }
        match offset.checked_add(len) {
            Some(end) if end <= self.inner.len => Ok(()),
            _ => Err(Error::Invalid(format!(
                "access of {len} bytes at offset {offset} of a {}-byte DMA buffer",
                self.inner.len
            ))),
        }
    }
}

impl Inner {
    fn forked(&self) -> bool {
        crate::fork::in_forked_child()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if self.forked() {
            // C10: the child has no such mapping (MADV_DONTFORK) and may have
            // reused the address; the IOVA and its mapping are the parent's.
            // Do nothing but close our copy of the fd.
            std::mem::forget(self.map.take());
            return;
        }
        if !std::thread::panicking() {
            crate::sync::assert_may_block("dropping a DmaBuffer");
        }
        let space = &self.space;
        let name = space.backend().name();
        // R5: no unmap and no IOVA reuse while a job may still use the buffer.
        if let Err(e) = self.resv.wait(Purpose::Invalidate, None) {
            log::error!(
                "{name}: DMA buffer at IOVA {:#x}: waiting for its fences: {e}",
                self.iova
            );
        }
        match space.backend().dma_unmap(self.iova, self.size) {
            Ok(()) => {
                space.mapped.fetch_sub(self.size, Ordering::Relaxed);
                space.free_iova(self.iova, self.size);
            }
            Err(e) if device_gone(space, &e) => {
                // Nothing can reach the range any more: reuse is safe.
                log::warn!(
                    "{name}: unmap of IOVA {:#x}+{:#x}: {e}; freed locally",
                    self.iova,
                    self.size
                );
                space.mapped.fetch_sub(self.size, Ordering::Relaxed);
                space.free_iova(self.iova, self.size);
            }
            Err(e) => {
                // C4: it may still be mapped; never hand the range out again.
                log::error!(
                    "{name}: unmap of IOVA {:#x}+{:#x} failed: {e}; IOVA range leaked",
                    self.iova,
                    self.size
                );
                space.leak_iova(self.size);
            }
        }
        // `map` (munmap) and `fd` (close) drop after this.
    }
}
