//! One registration: a page-aligned range of process memory pinned and
//! mapped for the device at one IOVA (C7: one entry is one mapping), with
//! the reservation object of the jobs that use it (R1–R6).

use crate::backend::DmaProt;
use crate::resv::Resv;
use crate::sync::{AtomicBool, AtomicU64, Mutex, Ordering};

/// A cache entry. Shared by the index, the jobs that use it and explicit
/// [`Registration`](super::Registration) handles; unmapped by the retire
/// worker once retired and its fences have signalled (C4, C5).
pub(crate) struct Entry {
    /// First byte (page-aligned process address).
    pub start: u64,
    /// Length in bytes (whole pages).
    pub len: u64,
    /// Where the device sees `start`.
    pub iova: u64,
    /// Device access rights of the mapping.
    pub prot: DmaProt,
    /// Generation: entries created after a publication are not stale by it
    /// (R4).
    pub gen: u64,
    /// Registered through the explicit API: not evicted by LRU pressure.
    pub explicit: bool,
    /// Cleared when the entry is retired or invalidated; a commit against
    /// an invalid entry fails (R4).
    valid: AtomicBool,
    retired: AtomicBool,
    /// LRU clock of the last hit.
    last_used: AtomicU64,
    /// The fences of jobs using this registration.
    pub resv: Resv,
    /// Set once the mapping is gone; held while unmapping, so that whoever
    /// comes second (the worker, an invalidation) waits for the first.
    pub unmapped: Mutex<bool>,
    /// The range is subscribed to the shim's events (released on unmap).
    pub subscribed: bool,
    /// Served uncached: never in the index, unmapped after its job (C9).
    pub oneshot: bool,
    /// The shim published an unmap or re-backing of the range: jobs on it
    /// that complete from now on fail with `StaleMemory` (C3).
    stale_event: AtomicBool,
    /// The frames pinned at registration, when the frame check is on.
    pub frames: Option<Box<[u64]>>,
}

impl Entry {
    pub fn new(start: u64, len: u64, iova: u64, prot: DmaProt, gen: u64, explicit: bool) -> Entry {
        Entry {
            start,
            len,
            iova,
            prot,
            gen,
            explicit,
            valid: AtomicBool::new(true),
            retired: AtomicBool::new(false),
            last_used: AtomicU64::new(gen),
            resv: Resv::new(),
            unmapped: Mutex::new(false),
            subscribed: false,
            oneshot: false,
            stale_event: AtomicBool::new(false),
            frames: None,
        }
    }

    /// Record the frames pinned at registration (the frame check).
    pub fn with_frames(mut self, frames: Option<Box<[u64]>>) -> Entry {
        self.frames = frames;
        self
    }

    /// Record how the shim watches the entry.
    pub fn watched(mut self, subscribed: bool, oneshot: bool) -> Entry {
        self.subscribed = subscribed;
        self.oneshot = oneshot;
        self
    }

    /// The shim published an event over the range (C3).
    pub fn mark_stale_event(&self) {
        self.stale_event.store(true, Ordering::Release);
    }

    /// Whether the shim published an event over the range. Read on the
    /// signalling path: one atomic load (F10).
    #[cfg_attr(loom, allow(dead_code))] // read by the channel's completion
    pub fn stale_event(&self) -> bool {
        self.stale_event.load(Ordering::Acquire)
    }

    /// Stop new use without retiring (an invalidation reaching an entry
    /// that is already out of the index, C3).
    pub fn invalidate_use(&self) {
        self.valid.store(false, Ordering::Release);
    }

    /// Whether `[start, end)` lies inside this entry.
    pub fn covers(&self, start: u64, end: u64) -> bool {
        self.start <= start && end <= self.start + self.len
    }

    /// Whether `[start, end)` overlaps this entry.
    pub fn overlaps(&self, start: u64, end: u64) -> bool {
        self.start < end && start < self.start + self.len
    }

    /// Whether the mapping grants every right in `want`.
    pub fn grants(&self, want: DmaProt) -> bool {
        (!want.read || self.prot.read) && (!want.write || self.prot.write)
    }

    /// Still usable for new jobs.
    pub fn is_valid(&self) -> bool {
        self.valid.load(Ordering::Acquire)
    }

    /// Stop new use; returns true for the caller that retired it first.
    pub fn retire(&self) -> bool {
        self.valid.store(false, Ordering::Release);
        !self.retired.swap(true, Ordering::AcqRel)
    }

    /// Record a hit at LRU time `now`.
    pub fn touch(&self, now: u64) {
        self.last_used.store(now, Ordering::Relaxed);
    }

    /// LRU time of the last hit.
    pub fn last_used(&self) -> u64 {
        self.last_used.load(Ordering::Relaxed)
    }

    /// IOVA of process address `addr` (inside the entry).
    pub fn iova_of(&self, addr: u64) -> u64 {
        debug_assert!(self.covers(addr, addr));
        self.iova + (addr - self.start)
    }
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("range", &format_args!("{:#x}+{:#x}", self.start, self.len))
            .field("iova", &format_args!("{:#x}", self.iova))
            .field("prot", &self.prot)
            .field("gen", &self.gen)
            .field("valid", &self.is_valid())
            .field("oneshot", &self.oneshot)
            .finish()
    }
}
