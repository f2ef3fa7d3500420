//! The DMA service thread (contract F10): answers the server's DMA_READ and
//! DMA_WRITE requests on the twin socket.
//!
//! The simulated device makes progress only while this thread answers, so
//! it is part of the signalling path: it runs inside a
//! [`SignallingSection`] for its whole life, and in steady state it does not
//! allocate or free heap memory and does not log. Messages are read into a
//! header buffer on the stack and a payload buffer allocated before the
//! section starts, with plain `recv`/`sendmsg`; the IOVA lookup takes the
//! read side of the mapping table's `RwLock` and walks a `BTreeMap`, which
//! allocates nothing (insertions and removals happen on callers' threads).
//! The read lock is held across the access to the mapping's pages, so
//! `dma_unmap` (which takes the write lock) cannot release a fixed buffer
//! under an access.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};

use fdma_vfio_user::{Command, Header, HEADER_SIZE};

use super::pin::{vm_copy, Pinner, Scratch};
use crate::backend::DmaProt;
use crate::sync::SignallingSection;

/// How the pages of a mapping are reached.
#[derive(Debug, Clone, Copy)]
pub(super) enum MapKind {
    /// Pinned in io_uring fixed buffer `slot`, registered at `vaddr`.
    Fixed {
        /// The slot.
        slot: u16,
        /// Registered start address.
        vaddr: usize,
    },
    /// Not pinned (no io_uring): the live address.
    Live {
        /// Start address.
        vaddr: usize,
    },
    /// Mapped with an fd; the server reaches it itself.
    Fd,
}

/// One DMA mapping as the client records it.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mapping {
    pub(super) size: u64,
    pub(super) prot: DmaProt,
    pub(super) kind: MapKind,
}

/// Mappings by IOVA.
pub(super) type MapTable = RwLock<BTreeMap<u64, Mapping>>;

/// What the service thread and the backend share.
pub(super) struct Shared {
    /// The device is lost.
    pub(super) lost: AtomicBool,
    /// The backend is being dropped (an EOF is then expected).
    pub(super) stopping: AtomicBool,
    /// The mappings.
    pub(super) maps: MapTable,
    /// The pinning ring, when io_uring is available.
    pub(super) pinner: Option<Pinner>,
}

/// Everything the thread owns.
pub(super) struct Service {
    pub(super) shared: Arc<Shared>,
    pub(super) twin: Arc<OwnedFd>,
    /// Payload buffer: max_data_xfer_size + 64 bytes.
    pub(super) buf: Vec<u8>,
    /// Present with a pinner.
    pub(super) scratch: Option<Scratch>,
    /// Largest count served.
    pub(super) max_xfer: usize,
    pub(super) device: String,
}

enum Exit {
    Eof,
    Truncated,
    Io(i32),
    BadHeader,
}

/// Read exactly `len` bytes into `p`. `Ok(false)`: EOF before the first byte.
fn read_exact(fd: i32, p: *mut u8, len: usize) -> Result<bool, Exit> {
    let mut got = 0usize;
    while got < len {
        // SAFETY: `p` points to `len` writable bytes owned by the caller
        // (the payload buffer, a stack buffer or the scratch mapping).
        let n = unsafe { libc::recv(fd, p.add(got).cast(), len - got, 0) };
        if n < 0 {
            // SAFETY: errno right after the failed call.
            let e = unsafe { *libc::__errno_location() };
            if e == libc::EINTR {
                continue;
            }
            return Err(Exit::Io(e));
        }
        if n == 0 {
            return if got == 0 {
                Ok(false)
            } else {
                Err(Exit::Truncated)
            };
        }
        got += n as usize;
    }
    Ok(true)
}

/// Send the iovecs whole (continuing after partial writes).
fn send_all(fd: i32, iov: &mut [libc::iovec]) -> Result<(), Exit> {
    let mut first = 0usize;
    while first < iov.len() {
        if iov[first].iov_len == 0 {
            first += 1;
            continue;
        }
        // SAFETY: an all-zero msghdr is valid; fields are set below.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = iov[first..].as_mut_ptr();
        m.msg_iovlen = (iov.len() - first) as _;
        // SAFETY: the iovecs point to live buffers owned by the caller.
        let n = unsafe { libc::sendmsg(fd, &m, libc::MSG_NOSIGNAL) };
        if n < 0 {
            // SAFETY: errno right after the failed call.
            let e = unsafe { *libc::__errno_location() };
            if e == libc::EINTR {
                continue;
            }
            return Err(Exit::Io(e));
        }
        let mut n = n as usize;
        while n > 0 {
            let v = &mut iov[first];
            let k = n.min(v.iov_len);
            // SAFETY: advancing within the same buffer.
            v.iov_base = unsafe { v.iov_base.cast::<u8>().add(k) }.cast();
            v.iov_len -= k;
            n -= k;
            if v.iov_len == 0 {
                first += 1;
            }
        }
    }
    Ok(())
}

fn iov(p: *const u8, len: usize) -> libc::iovec {
    libc::iovec {
        iov_base: p as *mut libc::c_void,
        iov_len: len,
    }
}

impl Service {
    /// The thread's body.
    pub(super) fn run(mut self) {
        let section = SignallingSection::enter();
        let exit = self.serve();
        drop(section);
        let stopping = self.shared.stopping.load(Ordering::Acquire);
        self.shared.lost.store(true, Ordering::Release);
        if !stopping {
            match exit {
                Exit::Eof => log::warn!("{}: the server closed the DMA socket", self.device),
                Exit::Truncated => log::warn!("{}: DMA socket closed mid-message", self.device),
                Exit::Io(e) => log::warn!(
                    "{}: DMA socket failed: {}",
                    self.device,
                    std::io::Error::from_raw_os_error(e)
                ),
                Exit::BadHeader => {
                    log::warn!("{}: malformed message on the DMA socket", self.device)
                }
            }
            log::warn!("{}: device lost", self.device);
        }
    }

    fn drain(&mut self, fd: i32, mut n: usize) -> Result<(), Exit> {
        while n > 0 {
            let k = n.min(self.buf.len());
            if !read_exact(fd, self.buf.as_mut_ptr(), k)? {
                return Err(Exit::Truncated);
            }
            n -= k;
        }
        Ok(())
    }

    fn error_reply(fd: i32, h: &Header, errno: i32) -> Result<(), Exit> {
        if h.no_reply() {
            return Ok(());
        }
        let hb = Header::error_reply(h.msg_id, h.command, errno).to_bytes();
        send_all(fd, &mut [iov(hb.as_ptr(), HEADER_SIZE)])
    }

    fn serve(&mut self) -> Exit {
        let fd = self.twin.as_raw_fd();
        loop {
            let mut hb = [0u8; HEADER_SIZE];
            match read_exact(fd, hb.as_mut_ptr(), HEADER_SIZE) {
                Ok(true) => {}
                Ok(false) => return Exit::Eof,
                Err(e) => return e,
            }
            let Ok(h) = Header::from_bytes(&hb) else {
                return Exit::BadHeader;
            };
            let r = if !h.is_command() {
                // Replies never come this way (we send no commands here).
                self.drain(fd, h.payload_len())
            } else if h.command == Command::DmaRead as u16 {
                self.dma_read(fd, &h)
            } else if h.command == Command::DmaWrite as u16 {
                self.dma_write(fd, &h)
            } else {
                self.drain(fd, h.payload_len())
                    .and_then(|()| Self::error_reply(fd, &h, libc::ENOSYS))
            };
            if let Err(e) = r {
                return e;
            }
        }
    }

    /// Find the mapping covering `[addr, addr + len)` with the right to be
    /// read (`write == false`) or written, under the table's read lock, and
    /// run `f` on it. EFAULT when there is none.
    fn with_mapping<R>(
        shared: &Shared,
        addr: u64,
        len: usize,
        write: bool,
        f: impl FnOnce(u64, &Mapping) -> Result<R, i32>,
    ) -> Result<R, i32> {
        let maps = shared.maps.read().unwrap_or_else(|p| p.into_inner());
        let (iova, m) = maps.range(..=addr).next_back().ok_or(libc::EFAULT)?;
        let end = addr.checked_add(len as u64).ok_or(libc::EFAULT)?;
        if end > iova + m.size {
            return Err(libc::EFAULT);
        }
        if (write && !m.prot.write) || (!write && !m.prot.read) {
            return Err(libc::EFAULT);
        }
        f(addr - iova, m)
    }

    /// Device reads host memory: reply with the data.
    fn dma_read(&mut self, fd: i32, h: &Header) -> Result<(), Exit> {
        if h.payload_len() != 16 {
            self.drain(fd, h.payload_len())?;
            return Self::error_reply(fd, h, libc::EINVAL);
        }
        let mut p = [0u8; 16];
        if !read_exact(fd, p.as_mut_ptr(), 16)? {
            return Err(Exit::Truncated);
        }
        let addr = u64::from_ne_bytes(p[0..8].try_into().unwrap_or([0; 8]));
        let count = u64::from_ne_bytes(p[8..16].try_into().unwrap_or([0; 8]));
        if count > self.max_xfer as u64 {
            return Self::error_reply(fd, h, libc::E2BIG);
        }
        let len = count as usize;
        // Where the data ends up: the scratch (pinned) or the payload buffer.
        let out: *mut u8 = match &self.scratch {
            Some(s) => s.ptr(),
            None => self.buf.as_mut_ptr(),
        };
        if let Err(e) = self.move_data(addr, len, false, out) {
            return Self::error_reply(fd, h, e);
        }
        if h.no_reply() {
            return Ok(());
        }
        let hb = Header::reply(h.msg_id, h.command, 16 + len).to_bytes();
        send_all(
            fd,
            &mut [
                iov(hb.as_ptr(), HEADER_SIZE),
                iov(p.as_ptr(), 16),
                iov(out, len),
            ],
        )
    }

    /// Move `len` bytes between the mapping at `addr` and `data` (the
    /// scratch when pinned, else the payload buffer): into host memory when
    /// the device writes, out of it when it reads. Only mappings made
    /// without an fd are served here; an errno for the error reply otherwise.
    fn move_data(
        &self,
        addr: u64,
        len: usize,
        device_writes: bool,
        data: *mut u8,
    ) -> Result<(), i32> {
        let scratch_fd = self.scratch.as_ref().map_or(-1, |s| s.fd());
        let shared = &self.shared;
        Self::with_mapping(shared, addr, len, device_writes, |off, m| match m.kind {
            MapKind::Fixed { slot, vaddr } => match &shared.pinner {
                Some(p) => p.fixed_io(
                    !device_writes,
                    scratch_fd,
                    (vaddr + off as usize) as *mut u8,
                    len,
                    slot,
                ),
                None => Err(libc::EFAULT),
            },
            MapKind::Live { vaddr } => vm_copy(device_writes, data, vaddr + off as usize, len),
            MapKind::Fd => Err(libc::EFAULT),
        })
    }

    /// Device writes host memory.
    fn dma_write(&mut self, fd: i32, h: &Header) -> Result<(), Exit> {
        let plen = h.payload_len();
        if plen < 16 {
            self.drain(fd, plen)?;
            return Self::error_reply(fd, h, libc::EINVAL);
        }
        let mut p = [0u8; 16];
        if !read_exact(fd, p.as_mut_ptr(), 16)? {
            return Err(Exit::Truncated);
        }
        let addr = u64::from_ne_bytes(p[0..8].try_into().unwrap_or([0; 8]));
        let count = u64::from_ne_bytes(p[8..16].try_into().unwrap_or([0; 8]));
        let data_len = plen - 16;
        if count != data_len as u64 {
            self.drain(fd, data_len)?;
            return Self::error_reply(fd, h, libc::EINVAL);
        }
        if data_len > self.max_xfer || self.scratch.as_ref().is_some_and(|s| s.len() < data_len) {
            self.drain(fd, data_len)?;
            return Self::error_reply(fd, h, libc::E2BIG);
        }
        // The data goes straight into the scratch (pinned) or the buffer.
        let input: *mut u8 = match &self.scratch {
            Some(s) => s.ptr(),
            None => self.buf.as_mut_ptr(),
        };
        if !read_exact(fd, input, data_len)? && data_len > 0 {
            return Err(Exit::Truncated);
        }
        if let Err(e) = self.move_data(addr, data_len, true, input) {
            return Self::error_reply(fd, h, e);
        }
        if h.no_reply() {
            return Ok(());
        }
        let hb = Header::reply(h.msg_id, h.command, 12).to_bytes();
        let c = (data_len as u32).to_ne_bytes();
        send_all(
            fd,
            &mut [
                iov(hb.as_ptr(), HEADER_SIZE),
                iov(p.as_ptr(), 8),
                iov(c.as_ptr(), 4),
            ],
        )
    }
}
