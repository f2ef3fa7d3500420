//! The memory behind the client's DMA mappings (DMA_MAP / DMA_UNMAP).
//!
//! * Mapped **with an fd**: the server mmaps the fd (`MAP_SHARED`, at the
//!   given offset, read-only unless the mapping is writeable) and the engine
//!   reaches the client's pages directly ([`MmapBacking`]). Copies go through
//!   raw pointers: the client changes that memory concurrently, so no Rust
//!   reference to it is ever formed.
//! * Mapped **without an fd**: every access becomes DMA_READ / DMA_WRITE
//!   requests to the client ([`MsgBacking`]), on the twin socket when one was
//!   negotiated, chunked to the client's `max_data_xfer_size`. Each request
//!   waits at most a wall-clock limit for its reply (contract D1): past it
//!   a read completes with [`DmaError::ClientTimeout`] (the engine sees a read
//!   error) and a write is dropped and logged. The simulator faults
//!   [`DmaFaults`] (D7: slow or failing replies) apply here.
//!
//! DMA_UNMAP drains in-flight accesses for free: the card performs host
//! accesses synchronously inside `Card::run` and register accesses, and the
//! server handles messages only between those calls, so when the unmap is
//! processed no access to the range is in progress, and none starts after
//! the mapping is removed.

use std::collections::VecDeque;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fdma_vfio_user::{Connection, DmaAccess, DmaData, Error, Message, Reply, Request};

use crate::hostmem::{Backing, DmaError, Prot};

/// The client-served DMA faults (contract D7), shared between the control
/// socket and the session's [`DmaLink`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaFaults {
    /// Wall-clock delay added to every client-served DMA request.
    pub reply_delay_ms: u64,
    /// After this many more client-served DMA requests, fail every further one.
    pub fail_after: Option<u64>,
}

/// A mapping backed by the server's own shared mmap of the client's fd.
pub struct MmapBacking {
    map: memmap2::MmapRaw,
    _file: File,
}

impl MmapBacking {
    /// Map `len` bytes of `fd` at `offset` with the protection `prot` asks for.
    pub fn new(fd: OwnedFd, offset: u64, len: u64, prot: Prot) -> std::io::Result<Self> {
        let file = File::from(fd);
        let len =
            usize::try_from(len).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))?;
        let mut o = memmap2::MmapOptions::new();
        o.offset(offset).len(len);
        let map = if prot.write {
            o.map_raw(&file)?
        } else {
            o.map_raw_read_only(&file)?
        };
        Ok(MmapBacking { map, _file: file })
    }
}

impl Backing for MmapBacking {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        assert!(
            offset as usize + buf.len() <= self.map.len(),
            "IOMMU checked the range"
        );
        // SAFETY: the range lies within the live mapping (asserted above, and
        // the IOMMU only passes in-range offsets). The client may write these
        // pages concurrently, so this is a raw byte copy; no reference to the
        // shared memory is formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.map.as_ptr().add(offset as usize),
                buf.as_mut_ptr(),
                buf.len(),
            )
        };
        Ok(())
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DmaError> {
        assert!(
            offset as usize + data.len() <= self.map.len(),
            "IOMMU checked the range"
        );
        // SAFETY: in range as above; the IOMMU passes writes only for mappings
        // with write permission, which were mapped PROT_WRITE. Raw copy into
        // shared memory, no reference formed.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                data.len(),
            )
        };
        Ok(())
    }
}

/// The server-to-client request channel of one session.
pub struct DmaLink {
    conn: Arc<Connection>,
    /// Whether `conn` is the twin socket (no client commands arrive on it).
    twin: bool,
    /// Client commands that arrived on the main socket while a DMA reply was
    /// awaited there (no twin socket); the session handles them next.
    pending: Arc<Mutex<VecDeque<Message>>>,
    max_xfer: usize,
    timeout: Duration,
    faults: Arc<Mutex<DmaFaults>>,
    next_id: AtomicU16,
}

impl DmaLink {
    /// A link sending on `conn`.
    pub fn new(
        conn: Arc<Connection>,
        twin: bool,
        pending: Arc<Mutex<VecDeque<Message>>>,
        max_xfer: u64,
        timeout: Duration,
        faults: Arc<Mutex<DmaFaults>>,
    ) -> Self {
        DmaLink {
            conn,
            twin,
            pending,
            max_xfer: max_xfer.clamp(1, 1 << 30) as usize,
            timeout,
            faults,
            next_id: AtomicU16::new(1),
        }
    }

    /// Apply the injected faults to one request: `Err` to fail it now.
    fn inject(&self, iova: u64) -> Result<(), DmaError> {
        let (delay, fail) = {
            let mut f = self.faults.lock().unwrap_or_else(|p| p.into_inner());
            let fail = match f.fail_after {
                Some(0) => true,
                Some(n) => {
                    f.fail_after = Some(n - 1);
                    false
                }
                None => false,
            };
            (f.reply_delay_ms, fail)
        };
        if fail {
            return Err(DmaError::Injected { iova });
        }
        if delay > 0 {
            let d = Duration::from_millis(delay);
            if d >= self.timeout {
                std::thread::sleep(self.timeout);
                return Err(DmaError::ClientTimeout {
                    iova,
                    ms: self.timeout.as_millis() as u64,
                });
            }
            std::thread::sleep(d);
        }
        Ok(())
    }

    /// Send one request and wait for its reply within the limit.
    fn call(&self, iova: u64, req: &Request) -> Result<Reply, DmaError> {
        self.inject(iova)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let client_err = |e: &Error| DmaError::ClientError {
            iova,
            errno: e.errno(),
        };
        self.conn.send_request(id, req, &[], false).map_err(|e| {
            log::warn!("DMA request to the client failed: {e}");
            client_err(&e)
        })?;
        let deadline = Instant::now() + self.timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = match self.conn.recv(Some(left)) {
                Ok(m) => m,
                Err(Error::Timeout { .. }) => {
                    log::warn!(
                        "client did not answer DMA request {id} at {iova:#x} within {:?}",
                        self.timeout
                    );
                    return Err(DmaError::ClientTimeout {
                        iova,
                        ms: self.timeout.as_millis() as u64,
                    });
                }
                Err(e) => {
                    log::warn!("waiting for a DMA reply: {e}");
                    return Err(client_err(&e));
                }
            };
            let h = m.header;
            if h.is_reply() && h.msg_id == id && h.command == req.command_number() {
                return m.reply().map_err(|e| {
                    log::debug!("DMA request {id} at {iova:#x} refused: {e}");
                    client_err(&e)
                });
            }
            if h.is_reply() {
                log::debug!("discarding stale reply {}", m.describe());
            } else if self.twin {
                log::warn!(
                    "client sent a command on the twin socket; ignored: {}",
                    m.describe()
                );
            } else {
                self.pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_back(m);
            }
        }
    }

    fn read(&self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let mut done = 0;
        while done < buf.len() {
            let n = (buf.len() - done).min(self.max_xfer);
            let a = iova + done as u64;
            match self.call(
                a,
                &Request::DmaRead(DmaAccess {
                    address: a,
                    count: n as u64,
                }),
            )? {
                Reply::DmaRead(d) if d.address == a && d.data.len() == n => {
                    buf[done..done + n].copy_from_slice(&d.data);
                }
                other => {
                    log::warn!("bad DMA_READ reply for {a:#x}+{n}: {other:?}");
                    return Err(DmaError::ClientError {
                        iova: a,
                        errno: libc::EIO,
                    });
                }
            }
            done += n;
        }
        Ok(())
    }

    fn write(&self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        for (i, chunk) in data.chunks(self.max_xfer).enumerate() {
            let a = iova + (i * self.max_xfer) as u64;
            let req = Request::DmaWrite(DmaData {
                address: a,
                data: chunk.to_vec(),
            });
            match self.call(a, &req)? {
                Reply::DmaWrite(r) if r.address == a && r.count as usize == chunk.len() => {}
                other => {
                    log::warn!("bad DMA_WRITE reply for {a:#x}+{}: {other:?}", chunk.len());
                    return Err(DmaError::ClientError {
                        iova: a,
                        errno: libc::EIO,
                    });
                }
            }
        }
        Ok(())
    }
}

impl std::fmt::Debug for DmaLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "DmaLink(twin: {}, max_xfer: {}, timeout: {:?})",
            self.twin, self.max_xfer, self.timeout
        )
    }
}

/// A mapping served by the client through DMA_READ / DMA_WRITE.
pub struct MsgBacking {
    link: Arc<DmaLink>,
    iova: u64,
}

impl MsgBacking {
    /// The mapping starting at `iova`, served over `link`.
    pub fn new(link: Arc<DmaLink>, iova: u64) -> Self {
        MsgBacking { link, iova }
    }
}

impl Backing for MsgBacking {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        self.link.read(self.iova + offset, buf)
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DmaError> {
        self.link.write(self.iova + offset, data)
    }
}
