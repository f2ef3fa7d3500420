//! Jobs: scatter-gather lists of copies, in any direction, lowered to
//! descriptors.

use crate::cache::{Entry, RegCache, Registration};
use crate::error::{Error, Result};
use crate::mem::{DmaBuffer, DmaSpace};
use fdma_hw::desc::Direction;
use fdma_hw::EngineConfig;
use std::sync::Arc;

/// One side of a copy.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// A driver buffer at a byte offset (tracked by its reservation).
    Buffer {
        /// The buffer; the job keeps it alive until its fence signals.
        buf: DmaBuffer,
        /// Byte offset in the buffer.
        offset: usize,
    },
    /// A raw host IOVA the caller mapped itself (a registration), or one
    /// that is not mapped at all (the IOMMU will refuse it, D3).
    Iova(u64),
    /// An offset in card memory.
    Card(u64),
    /// Process memory, looked up in the device's registration cache and
    /// registered there on a miss (see [`crate::cache`]).
    User(UserRange),
    /// An explicit registration ([`RegCache::register`]) at a byte offset.
    Reg {
        /// The registration; a stale one fails the submit.
        reg: Registration,
        /// Byte offset from the registration's start.
        offset: u64,
    },
}

/// Process memory a job reads or writes through the registration cache.
#[derive(Debug, Clone, Copy)]
pub struct UserRange {
    addr: u64,
    /// Bytes the caller vouched for.
    len: u64,
    /// The device may write it.
    writable: bool,
}

impl UserRange {
    /// Memory the device only reads. A job using it as a destination is
    /// refused.
    pub fn readable(data: &[u8]) -> UserRange {
        UserRange {
            addr: data.as_ptr() as u64,
            len: data.len() as u64,
            writable: false,
        }
    }

    /// Memory the device may write.
    ///
    /// # Safety
    ///
    /// `len` bytes at `ptr` must stay allocated, and no Rust reference to
    /// them may be live, until the fence of every job using this range has
    /// signalled: the device writes them behind the compiler's back.
    /// Freeing or re-backing the memory without [`RegCache::invalidate`]
    /// leaves the device writing the old pages (D5).
    pub unsafe fn writable(ptr: *mut u8, len: usize) -> UserRange {
        UserRange {
            addr: ptr as u64,
            len: len as u64,
            writable: true,
        }
    }
}

/// One copy of a job.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Source.
    pub src: Endpoint,
    /// Destination.
    pub dst: Endpoint,
    /// Bytes.
    pub len: u64,
}

/// A job: one or more copies, completed together by one fence.
///
/// ```no_run
/// # fn f(dev: &fdma::Device) -> fdma::Result<()> {
/// let buf = dev.alloc(4096)?;
/// let mut job = fdma::Job::new();
/// job.h2c(&buf, 0, 0x1000, 4096).c2h(0x1000, &buf, 0, 4096);
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub(crate) segs: Vec<Segment>,
}

/// A descriptor to write, before ring placement.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoweredDesc {
    pub dir: Direction,
    pub src: u64,
    pub dst: u64,
    pub len: u32,
}

/// A job checked and split into descriptors.
#[derive(Debug, Default)]
pub(crate) struct Lowered {
    pub descs: Vec<LoweredDesc>,
    /// Buffers the device reads (Read usage) and writes (Write usage).
    pub reads: Vec<DmaBuffer>,
    pub writes: Vec<DmaBuffer>,
    /// Registrations, each with whether the device writes it.
    pub regs: Vec<(Arc<Entry>, bool)>,
    /// Uncached registrations among them: unmapped when the job's fences
    /// signal, once this is dropped (after the submit).
    pub oneshots: Vec<crate::cache::OneShot>,
    pub bytes: u64,
}

impl Job {
    /// An empty job.
    pub fn new() -> Job {
        Job::default()
    }

    /// Add any copy.
    pub fn push(&mut self, src: Endpoint, dst: Endpoint, len: u64) -> &mut Job {
        self.segs.push(Segment { src, dst, len });
        self
    }

    /// Host buffer to card memory.
    pub fn h2c(&mut self, src: &DmaBuffer, src_off: usize, card: u64, len: usize) -> &mut Job {
        self.push(
            Endpoint::Buffer {
                buf: src.clone(),
                offset: src_off,
            },
            Endpoint::Card(card),
            len as u64,
        )
    }

    /// Card memory to a host buffer.
    pub fn c2h(&mut self, card: u64, dst: &DmaBuffer, dst_off: usize, len: usize) -> &mut Job {
        self.push(
            Endpoint::Card(card),
            Endpoint::Buffer {
                buf: dst.clone(),
                offset: dst_off,
            },
            len as u64,
        )
    }

    /// Host buffer to host buffer.
    pub fn h2h(
        &mut self,
        src: &DmaBuffer,
        src_off: usize,
        dst: &DmaBuffer,
        dst_off: usize,
        len: usize,
    ) -> &mut Job {
        self.push(
            Endpoint::Buffer {
                buf: src.clone(),
                offset: src_off,
            },
            Endpoint::Buffer {
                buf: dst.clone(),
                offset: dst_off,
            },
            len as u64,
        )
    }

    /// Process memory to card memory, through the registration cache.
    pub fn h2c_user(&mut self, src: &[u8], card: u64) -> &mut Job {
        let len = src.len() as u64;
        self.push(
            Endpoint::User(UserRange::readable(src)),
            Endpoint::Card(card),
            len,
        )
    }

    /// Card memory to process memory, through the registration cache.
    ///
    /// # Safety
    ///
    /// As [`UserRange::writable`].
    pub unsafe fn c2h_user(&mut self, card: u64, dst: *mut u8, len: usize) -> &mut Job {
        self.push(
            Endpoint::Card(card),
            // SAFETY: the caller's contract is this function's.
            Endpoint::User(unsafe { UserRange::writable(dst, len) }),
            len as u64,
        )
    }

    /// Number of copies.
    pub fn segments(&self) -> usize {
        self.segs.len()
    }

    /// Total bytes moved.
    pub fn bytes(&self) -> u64 {
        self.segs.iter().map(|s| s.len).sum()
    }

    /// Check every copy against the engine and the buffers, split copies
    /// longer than the descriptor limit, and collect the buffers. Nothing
    /// is touched when this fails.
    pub(crate) fn lower(
        &self,
        cfg: &EngineConfig,
        space: &Arc<DmaSpace>,
        cache: Option<&RegCache>,
    ) -> Result<Lowered> {
        if self.segs.is_empty() {
            return Err(Error::Invalid("empty job".into()));
        }
        let mut out = Lowered::default();
        let card = cfg.card_mem_bytes();
        let max = cfg.max_desc_len() as u64;
        for (i, s) in self.segs.iter().enumerate() {
            if s.len == 0 {
                return Err(Error::Invalid(format!("segment {i}: zero length")));
            }
            let host = |e: &Endpoint, write: bool, out: &mut Lowered| -> Result<Option<u64>> {
                Ok(match e {
                    Endpoint::Buffer { buf, offset } => {
                        if !Arc::ptr_eq(buf.space(), space) {
                            return Err(Error::Invalid(format!(
                                "segment {i}: the buffer belongs to another device"
                            )));
                        }
                        let end = (*offset as u64).checked_add(s.len);
                        if !end.is_some_and(|e| e <= buf.len() as u64) {
                            return Err(Error::Invalid(format!(
                                "segment {i}: {} bytes at offset {offset} outside a buffer of {} bytes",
                                s.len,
                                buf.len()
                            )));
                        }
                        if write {
                            out.writes.push(buf.clone());
                        } else {
                            out.reads.push(buf.clone());
                        }
                        Some(buf.iova() + *offset as u64)
                    }
                    Endpoint::Iova(a) => {
                        if a.checked_add(s.len).is_none() {
                            return Err(Error::Invalid(format!("segment {i}: IOVA range wraps")));
                        }
                        Some(*a)
                    }
                    Endpoint::Card(_) => None,
                    Endpoint::User(u) => {
                        if s.len > u.len {
                            return Err(Error::Invalid(format!(
                                "segment {i}: {} bytes from a range of {}",
                                s.len, u.len
                            )));
                        }
                        if write && !u.writable {
                            return Err(Error::Invalid(format!(
                                "segment {i}: the destination was given as read-only memory"
                            )));
                        }
                        let cache = cache.ok_or_else(|| {
                            Error::Invalid(format!(
                                "segment {i}: process memory needs a device's registration cache"
                            ))
                        })?;
                        let prot = if write {
                            crate::backend::DmaProt::WRITE
                        } else {
                            crate::backend::DmaProt::READ
                        };
                        let e = cache.acquire(u.addr, s.len, prot)?;
                        if e.oneshot {
                            out.oneshots.push(crate::cache::OneShot::new(cache, &e));
                        }
                        let iova = e.iova_of(u.addr);
                        out.regs.push((e, write));
                        Some(iova)
                    }
                    Endpoint::Reg { reg, offset } => {
                        let e = &reg.entry;
                        if !cache.is_some_and(|c| Arc::ptr_eq(c.space(), space)) {
                            return Err(Error::Invalid(format!(
                                "segment {i}: the registration belongs to another device"
                            )));
                        }
                        if !offset.checked_add(s.len).is_some_and(|end| end <= e.len) {
                            return Err(Error::Invalid(format!(
                                "segment {i}: {} bytes at offset {offset} outside a registration of {} bytes",
                                s.len, e.len
                            )));
                        }
                        let want = if write {
                            crate::backend::DmaProt::WRITE
                        } else {
                            crate::backend::DmaProt::READ
                        };
                        if !e.grants(want) {
                            return Err(Error::Invalid(format!(
                                "segment {i}: the registration was made without {} access",
                                if write { "device write" } else { "device read" }
                            )));
                        }
                        if !e.is_valid() {
                            return Err(Error::StaleRegistration {
                                addr: e.start,
                                len: e.len,
                            });
                        }
                        out.regs.push((e.clone(), write));
                        Some(e.iova + offset)
                    }
                })
            };
            let card_ok = |a: u64| -> Result<u64> {
                if a >= card || card - a < s.len {
                    return Err(Error::Invalid(format!(
                        "segment {i}: card range {a:#x}+{:#x} outside card memory of {card:#x} bytes",
                        s.len
                    )));
                }
                Ok(a)
            };
            let (dir, src, dst) = match (&s.src, &s.dst) {
                (Endpoint::Card(_), Endpoint::Card(_)) => {
                    return Err(Error::Invalid(format!(
                        "segment {i}: card-to-card copies are not supported by the engine"
                    )))
                }
                (Endpoint::Card(c), d) => (
                    Direction::CardToHost,
                    card_ok(*c)?,
                    host(d, true, &mut out)?.expect("host"),
                ),
                (sr, Endpoint::Card(c)) => (
                    Direction::HostToCard,
                    host(sr, false, &mut out)?.expect("host"),
                    card_ok(*c)?,
                ),
                (sr, d) => (
                    Direction::HostToHost,
                    host(sr, false, &mut out)?.expect("host"),
                    host(d, true, &mut out)?.expect("host"),
                ),
            };
            let mut done = 0u64;
            while done < s.len {
                let n = (s.len - done).min(max);
                out.descs.push(LoweredDesc {
                    dir,
                    src: src + done,
                    dst: dst + done,
                    len: n as u32,
                });
                done += n;
            }
            out.bytes += s.len;
        }
        Ok(out)
    }
}
