//! Real pinning of memory mapped without an fd (contract D5): io_uring fixed
//! buffers, and the copies between them and a private scratch memfd.
//!
//! A range registered as a fixed buffer is pinned long-term by the kernel
//! (`FOLL_LONGTERM`, counted against RLIMIT_MEMLOCK without CAP_IPC_LOCK).
//! `IORING_OP_READ_FIXED` / `IORING_OP_WRITE_FIXED` name the buffer by slot
//! and reach the pinned pages even after the process has unmapped or
//! re-backed the address, exactly as the device reaches pages pinned by VFIO
//! type1. The DMA service thread serves the device's reads with
//! `WRITE_FIXED` (pinned pages -> scratch memfd) and its writes with
//! `READ_FIXED` (scratch memfd -> pinned pages); the socket I/O then goes
//! from and to the scratch's own mapping.
//!
//! Without io_uring (setup fails, `kernel.io_uring_disabled`) the backend
//! serves from the live address with `process_vm_readv`/`process_vm_writev`
//! on its own pid instead, and reports `DmaLimits::vaddr_pinned == false`.

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use io_uring::{opcode, types, IoUring};

/// Fixed-buffer slots of the ring (io_uring's own limit is 16384).
pub const MAX_SLOTS: u32 = 16384;
/// Largest fixed buffer io_uring accepts (1 GiB).
pub const MAX_BUFFER: u64 = 1 << 30;

static WARNED: AtomicBool = AtomicBool::new(false);

/// The ring that pins vaddr mappings, with its slot allocator.
pub(super) struct Pinner {
    ring: IoUring,
    /// Free slots; taken and returned on callers' threads only.
    free: Mutex<Vec<u16>>,
    /// Set when a submission's fate is unknown (the wait failed): a stale
    /// completion could then be taken for a later request's, so every
    /// later request fails instead of being served wrong data.
    broken: std::sync::atomic::AtomicBool,
}

impl Pinner {
    /// Set up a ring with a sparse table of [`MAX_SLOTS`] buffers. `None`
    /// (after one loud warning per process) when io_uring is unavailable.
    pub(super) fn new(device: &str) -> Option<Pinner> {
        let r = IoUring::builder().build(8).and_then(|ring| {
            ring.submitter().register_buffers_sparse(MAX_SLOTS)?;
            Ok(ring)
        });
        match r {
            Ok(ring) => Some(Pinner {
                ring,
                free: Mutex::new((0..MAX_SLOTS as u16).rev().collect()),
                broken: std::sync::atomic::AtomicBool::new(false),
            }),
            Err(e) => {
                if !WARNED.swap(true, Ordering::Relaxed) {
                    let disabled = std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
                        .map(|s| s.trim().to_string())
                        .unwrap_or_else(|_| "?".into());
                    log::warn!(
                        "{device}: io_uring is unavailable ({e}; kernel.io_uring_disabled = \
                         {disabled}): memory mapped for DMA by address is NOT pinned. The \
                         simulated device will reach whatever is mapped at the address when it \
                         accesses it, not the pages present at map time (contract D5 does not \
                         hold; DmaLimits::vaddr_pinned is false)"
                    );
                }
                None
            }
        }
    }

    /// Pin `len` bytes at `vaddr` into a free slot.
    pub(super) fn pin(&self, vaddr: usize, len: u64) -> io::Result<u16> {
        let slot = self
            .free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOSPC))?;
        let iov = libc::iovec {
            iov_base: vaddr as *mut libc::c_void,
            iov_len: len as usize,
        };
        // SAFETY: registering a buffer makes the kernel pin the pages behind
        // the range; it never dereferences the range from this process's
        // point of view beyond what `pin_user_pages` does, and invalid ranges
        // fail with EFAULT. The pinned pages stay valid for the kernel until
        // the slot is cleared, whatever happens to the address.
        let r = unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot as u32, &[iov], None)
        };
        match r {
            Ok(()) => Ok(slot),
            Err(e) => {
                self.release_slot(slot);
                Err(e)
            }
        }
    }

    /// Clear `slot` (unpinning its pages once no operation uses them) and
    /// make it free again.
    pub(super) fn unpin(&self, slot: u16) {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        // SAFETY: a null, empty iovec clears the slot; no memory is touched.
        let r = unsafe {
            self.ring
                .submitter()
                .register_buffers_update(slot as u32, &[iov], None)
        };
        match r {
            Ok(()) => self.release_slot(slot),
            // Keep the slot out of circulation rather than reuse a slot the
            // kernel may still hold pages in.
            Err(e) => log::error!("cannot clear io_uring fixed buffer {slot}: {e}; slot leaked"),
        }
    }

    fn release_slot(&self, slot: u16) {
        self.free
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(slot);
    }

    /// One fixed-buffer operation between the pinned buffer `slot` at
    /// address `buf` (inside the buffer's registered range) and the start of
    /// the scratch file `fd`: `to_file` = `WRITE_FIXED` (pinned -> scratch),
    /// otherwise `READ_FIXED` (scratch -> pinned). Returns an errno on
    /// failure. Called by the DMA service thread only; does not allocate.
    pub(super) fn fixed_io(
        &self,
        to_file: bool,
        fd: i32,
        buf: *mut u8,
        len: usize,
        slot: u16,
    ) -> Result<(), i32> {
        if self.broken.load(std::sync::atomic::Ordering::Acquire) {
            return Err(libc::EIO);
        }
        let mut done = 0usize;
        while done < len {
            let n = (len - done) as u32;
            // SAFETY: only arithmetic on the pinned buffer's address; the
            // kernel resolves it against the registered range and reaches
            // the pinned pages, never through this process's page tables.
            let p = unsafe { buf.add(done) };
            let e = if to_file {
                opcode::WriteFixed::new(types::Fd(fd), p, n, slot)
                    .offset(done as u64)
                    .build()
            } else {
                opcode::ReadFixed::new(types::Fd(fd), p, n, slot)
                    .offset(done as u64)
                    .build()
            };
            // SAFETY: the DMA service thread is the only user of the
            // submission and completion queues (callers only register
            // buffers through the submitter), so the shared views cannot
            // alias another live view.
            unsafe {
                let mut sq = self.ring.submission_shared();
                // The entry's buffer is the pinned fixed buffer (kept valid
                // by the registration until the slot is cleared, which waits
                // for the mapping's read lock held by the caller) and the
                // scratch file; both outlive the operation, which is waited
                // for below.
                if sq.push(&e).is_err() {
                    return Err(libc::EBUSY);
                }
                sq.sync();
            }
            loop {
                match self.ring.submitter().submit_and_wait(1) {
                    Ok(_) => break,
                    Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                    Err(e) => {
                        self.broken
                            .store(true, std::sync::atomic::Ordering::Release);
                        return Err(e.raw_os_error().unwrap_or(libc::EIO));
                    }
                }
            }
            // SAFETY: as above, single consumer.
            let res = unsafe {
                let mut cq = self.ring.completion_shared();
                let r = cq.next().map(|c| c.result());
                cq.sync();
                r
            };
            match res {
                Some(r) if r > 0 => done += r as usize,
                Some(0) => return Err(libc::EIO),
                Some(r) => return Err(-r),
                None => {
                    self.broken
                        .store(true, std::sync::atomic::Ordering::Release);
                    return Err(libc::EIO);
                }
            }
        }
        Ok(())
    }
}

/// The service thread's private scratch: a memfd, mapped shared.
pub(super) struct Scratch {
    file: File,
    map: memmap2::MmapRaw,
}

impl Scratch {
    /// A scratch of at least `len` bytes.
    pub(super) fn new(len: usize) -> io::Result<Scratch> {
        // SAFETY: memfd_create with a valid NUL-terminated name; the result
        // is checked and owned right away.
        let fd = unsafe { libc::memfd_create(c"fdma-dma-scratch".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nobody else.
        let file = unsafe { File::from_raw_fd(fd) };
        let len = len.div_ceil(4096) * 4096;
        file.set_len(len as u64)?;
        let map = memmap2::MmapOptions::new().len(len).map_raw(&file)?;
        Ok(Scratch { file, map })
    }

    /// The memfd.
    pub(super) fn fd(&self) -> i32 {
        self.file.as_raw_fd()
    }

    /// Start of the scratch's mapping.
    pub(super) fn ptr(&self) -> *mut u8 {
        self.map.as_mut_ptr()
    }

    /// Size of the scratch.
    pub(super) fn len(&self) -> usize {
        self.map.len()
    }
}

/// Copy `len` bytes at `remote` (an address of this process) to `local`
/// with `process_vm_readv`, or the other way with `write`. A bad address is
/// an errno (EFAULT), never a crash. Does not allocate.
pub(super) fn vm_copy(write: bool, local: *mut u8, remote: usize, len: usize) -> Result<(), i32> {
    let l = libc::iovec {
        iov_base: local.cast(),
        iov_len: len,
    };
    let r = libc::iovec {
        iov_base: remote as *mut libc::c_void,
        iov_len: len,
    };
    // SAFETY: `local` is a buffer of `len` bytes owned by the caller; the
    // remote range is checked by the kernel (EFAULT, not a fault) because it
    // goes through the process_vm interface even for our own pid.
    let n = unsafe {
        let pid = libc::getpid();
        if write {
            libc::process_vm_writev(pid, &l, 1, &r, 1, 0)
        } else {
            libc::process_vm_readv(pid, &l, 1, &r, 1, 0)
        }
    };
    if n < 0 {
        // SAFETY: reading errno right after the failed call.
        Err(unsafe { *libc::__errno_location() })
    } else if n as usize != len {
        Err(libc::EFAULT)
    } else {
        Ok(())
    }
}
