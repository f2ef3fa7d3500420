//! The registration cache: process memory pinned and mapped for the device
//! once, reused by later jobs, and retired safely.
//!
//! Pinning and IOMMU-mapping memory costs tens of microseconds per MiB, so
//! a job built from the application's own memory ([`crate::Job::h2c_user`]
//! and friends) looks its ranges up here and registers them on a miss; the
//! explicit API ([`RegCache::register`], like `ibv_reg_mr`) does the same
//! for a range the caller names. The design follows the registration
//! caches of libfabric and UCX and the rules below, which the tests cite.
//!
//! # Contracts
//!
//! * **C2 No stale hit.** Once the MMU-notifier shim ([`shim`]) has
//!   published an unmap or re-backing of a range, no lookup returns an
//!   entry overlapping it and no commit succeeds against one: every lookup
//!   and commit first waits (bounded) for the monitor to publish what it
//!   has read, and drains it into the publication list.
//! * **C1 Hit correctness.** A lookup hits only an entry that covers the
//!   whole (page-rounded) request, grants the access asked for, is valid,
//!   and is not stale (no published invalidation newer than it overlaps
//!   it).
//! * **C3 Invalidation waits for the device.** [`RegCache::invalidate`]
//!   publishes the range first (from then on no commit against an entry
//!   overlapping it succeeds, R4), then the cache's worker thread retires
//!   the overlapping entries, waits for their fences (bounded by F3),
//!   unmaps and unpins them; `invalidate` returns when that is done. The
//!   shim's publications are carried out the same way, by the worker,
//!   never by the thread that reads the events; jobs on their entries that
//!   complete afterwards fail with `StaleMemory` (best effort). Call
//!   `invalidate` before re-backing memory no event reports (see the
//!   shim's blind spots), or with [`Watch::Explicit`]; without it the
//!   device keeps reaching the old pages (D5).
//! * **C4 IOVA quarantine.** A retired entry's IOVA range is freed only
//!   after its fences have signalled and the unmap is done.
//! * **C5 Eviction never blocks on the device.** LRU, count and size
//!   pressure retire entries onto the worker's queue with their fences:
//!   lookups miss at once, jobs in flight keep a valid mapping, and the
//!   unmap happens when their fences signal.
//! * **C6 Limits.** At most [`CacheOptions::max_entries`] entries (lowered
//!   to what the backend allows, less [`CacheOptions::reserved_mappings`]),
//!   mappings no larger than the backend's limit, at most
//!   [`CacheOptions::max_pinned_bytes`] pinned, and within RLIMIT_MEMLOCK
//!   unless the process has CAP_IPC_LOCK. Pinned bytes count retired
//!   entries until they are unmapped. On a failed map: evict and retry
//!   once, then a clear error; nothing is ever registered outside the
//!   accounting.
//! * **C7 Overlap.** One entry is one IOMMU mapping. A request that
//!   overlaps entries without being covered by one retires them (through
//!   C5: the submit never waits) and registers exactly its own range.
//!   Registrations are whole pages, so two buffers that share a page (small
//!   heap allocations side by side) retire each other in turn: correct, but
//!   every use misses. Give DMA buffers pages of their own.
//! * **C8** Registration (pin and map, a system call) runs outside the
//!   cache lock and is inserted afterwards, re-checking under the lock. The
//!   shim's monitor thread takes no lock, allocates nothing and logs
//!   nothing: the application's munmap waits for it.
//! * **C9 Event sources.** userfaultfd events on every range the cache
//!   registers ([`Watch::Userfaultfd`], the default) plus
//!   [`RegCache::invalidate`]. A range no source can watch is served
//!   uncached (mapped for one job, counted in [`CacheSnapshot::uncached`]),
//!   never silently trusted; [`Watch::Explicit`] is the application's
//!   promise to call `invalidate` itself.
//! * **C11 Teardown.** [`RegCache::close`] (run by `Device::close`) retires
//!   everything, waits for the worker to unmap it, and reports any counter
//!   not back to zero.
//! * **C12 Observability.** [`RegCache::stats`].
//! * **R4 Commit is atomic with validation.** A submit looks its entries
//!   up, then, holding the cache's read lock, checks that every entry is
//!   still valid and not stale and adds the job's fence to each entry's
//!   reservation. The worker marks entries invalid under the write lock
//!   and only then collects their fences: either the submit sees the
//!   invalidation (and looks up again) or the invalidation sees the job's
//!   fence (and waits for it). A registration takes its generation before
//!   it pins anything and, when it inserts its entry, is checked against
//!   every publication newer than it, processed or not: pages pinned before
//!   an invalidation began never become a valid entry after it (C2); the
//!   submit looks up again. An invalidation also waits for the unmap of
//!   entries retired earlier (overlap, eviction, deregistration) that are
//!   still mapped, so `invalidate` returns only when no old mapping of the
//!   range is left (C3). The MMU-notifier shim's publications join the
//!   same check. Loom model-checks these races on this code
//!   (`cache::loom_tests`).
//!
//! User memory is never `MADV_DONTFORK`ed (C10): the kernel copies pinned
//! anonymous pages for a child.

mod entry;
mod frames;
mod index;
mod publish;
pub mod shim;
mod stats;
mod watch;
mod worker;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(test)]
mod test_backend;
#[cfg(all(test, not(loom)))]
mod tests;

pub(crate) use entry::Entry;
use index::Index;
pub use stats::{CacheOptions, CacheSnapshot, CacheStats, Watch};
#[cfg_attr(loom, allow(unused_imports))] // used by the channel, not built under loom
pub(crate) use watch::OneShot;

use crate::backend::{DmaProt, DmaSource};
use crate::error::{BackendError, Error, Result};
use crate::mem::DmaSpace;
use crate::sync::{Arc, AtomicU64, Ordering, RwLock, RwLockReadGuard};
use std::ops::Range;
use worker::{Work, Worker};

const PAGE: u64 = 4096;

/// Shared state of one cache.
pub(crate) struct CacheInner {
    space: Arc<DmaSpace>,
    index: RwLock<Index>,
    pubs: publish::Publications,
    /// Whether the process has CAP_IPC_LOCK (read once: it costs a read of
    /// /proc; read again after a memlock refusal).
    cap_ipc_lock: crate::sync::AtomicBool,
    next_gen: AtomicU64,
    /// LRU clock: ticks on every hit and registration.
    clock: AtomicU64,
    max_entries: u64,
    max_mapping: u64,
    max_pinned: u64,
    stats: CacheStats,
    worker: Worker,
    watch: Watch,
    verify_frames: bool,
    /// The MMU-notifier shim, once started (`Watch::Userfaultfd`).
    shim: std::sync::OnceLock<shim::Attached>,
}

/// How process memory is served now (C9).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Serve {
    /// Cached: an event source watches it (or the application promised).
    Cached,
    /// Mapped for one job and unmapped after it.
    Uncached,
}

/// The registration cache of one device. Cheap to clone.
#[derive(Clone)]
pub struct RegCache {
    inner: Arc<CacheInner>,
}

/// An explicit registration ([`RegCache::register`]). The mapping stays
/// until [`RegCache::deregister`], an invalidation of its range, or the
/// cache's close; after the first two the handle is stale and jobs using
/// it fail with [`Error::StaleRegistration`].
#[derive(Clone, Debug)]
pub struct Registration {
    pub(crate) entry: Arc<Entry>,
}

impl Registration {
    /// Start address of the registered range (page-aligned).
    pub fn addr(&self) -> u64 {
        self.entry.start
    }

    /// Length in bytes (whole pages).
    pub fn len(&self) -> u64 {
        self.entry.len
    }

    /// Never true: registrations are at least a page.
    pub fn is_empty(&self) -> bool {
        self.entry.len == 0
    }

    /// The IOVA the device uses for the start of the range.
    pub fn iova(&self) -> u64 {
        self.entry.iova
    }

    /// Whether jobs may still use it.
    pub fn is_valid(&self) -> bool {
        self.entry.is_valid()
    }
}

fn page_range(addr: u64, len: u64) -> Result<Range<u64>> {
    let end = addr
        .checked_add(len)
        .and_then(|e| e.checked_next_multiple_of(PAGE))
        .ok_or_else(|| Error::Invalid(format!("range {addr:#x}+{len:#x} wraps")))?;
    if len == 0 || addr == 0 {
        return Err(Error::Invalid(format!(
            "cannot register {len} bytes at {addr:#x}"
        )));
    }
    Ok(addr & !(PAGE - 1)..end)
}

impl RegCache {
    /// A cache mapping into `space`, within `opts` and the backend's limits.
    pub fn new(space: Arc<DmaSpace>, opts: &CacheOptions) -> Result<RegCache> {
        let c = RegCache::unattached(space, opts)?;
        #[cfg(not(loom))]
        if opts.watch == Watch::Userfaultfd {
            c.attach(shim::Shim::attach_shared(Arc::downgrade(&c.inner)));
        }
        Ok(c)
    }

    /// The cache and its worker, watching nothing yet.
    pub(super) fn unattached(space: Arc<DmaSpace>, opts: &CacheOptions) -> Result<RegCache> {
        let limits = space.backend().dma_limits();
        let backend_entries = limits
            .max_mappings
            .saturating_sub(opts.reserved_mappings)
            .max(1);
        let inner = Arc::new(CacheInner {
            max_entries: u64::from(opts.max_entries.min(backend_entries)),
            max_mapping: limits.max_mapping_size,
            max_pinned: opts.max_pinned_bytes,
            space,
            index: RwLock::new(Index::default()),
            pubs: publish::Publications::default(),
            cap_ipc_lock: crate::sync::AtomicBool::new(crate::pci::has_cap_ipc_lock()),
            next_gen: AtomicU64::new(1),
            clock: AtomicU64::new(0),
            stats: CacheStats::default(),
            worker: Worker::default(),
            watch: opts.watch,
            verify_frames: opts.verify_frames,
            shim: std::sync::OnceLock::new(),
        });
        #[cfg(not(loom))]
        Worker::start(&inner)?;
        Ok(RegCache { inner })
    }

    /// A cache whose shim has no monitor: the model feeds its ring by hand.
    #[cfg(all(loom, test))]
    pub(crate) fn with_detached_shim(space: Arc<DmaSpace>) -> Result<RegCache> {
        let c = RegCache::unattached(space, &CacheOptions::default())?;
        let _ = c.inner.shim.set(shim::Shim::detached());
        Ok(c)
    }

    /// The shim, in tests and models.
    #[cfg(all(loom, test))]
    pub(crate) fn shim(&self) -> Option<&shim::Shim> {
        self.inner.shim.get().map(|a| &*a.shim)
    }

    /// The counters (C12).
    pub fn stats(&self) -> CacheSnapshot {
        self.inner.stats.snapshot()
    }

    /// Whether the MMU-notifier shim is watching process memory (false
    /// with [`Watch::Explicit`], or when userfaultfd was unavailable or its
    /// monitor stopped: process memory is then served uncached).
    pub fn shim_active(&self) -> bool {
        self.inner
            .shim
            .get()
            .is_some_and(|a| !a.shim.ring.is_dead())
    }

    /// Register `len` bytes at `addr` explicitly (an `ibv_reg_mr`): the
    /// pages are pinned and mapped now, and LRU pressure never evicts the
    /// registration.
    ///
    /// # Safety
    ///
    /// If `prot.write`, the device may write the range whenever a job says
    /// so: no Rust reference to it may be live while such a job runs.
    pub unsafe fn register(
        &self,
        addr: *const u8,
        len: usize,
        prot: DmaProt,
    ) -> Result<Registration> {
        let r = page_range(addr as u64, len as u64)?;
        // A registration that raced an invalidation of its range is
        // dropped (R4); try again, a few times.
        let mut tries = 0;
        let entry = loop {
            match self.inner.register(r.clone(), prot, true) {
                Err(Error::StaleRegistration { .. }) if tries < 3 => tries += 1,
                other => break other?,
            }
        };
        Ok(Registration { entry })
    }

    /// Retire an explicit registration: lookups stop finding it at once,
    /// its mapping goes when the jobs using it are done (C5).
    pub fn deregister(&self, reg: Registration) {
        let mut index = self.inner.write_index();
        let first = index.take_out(&reg.entry);
        drop(index);
        if first {
            self.inner.retired(&reg.entry, &self.inner.stats.evictions);
        }
    }

    /// Invalidate `len` bytes at `addr` (C3): after this returns, no
    /// registration overlapping the range exists, the jobs that used one
    /// have signalled, and its pages are unmapped and unpinned. Call it
    /// before the memory is unmapped or re-backed. Blocks for the fences
    /// (bounded by F3); must not be called from a fence callback.
    pub fn invalidate(&self, addr: *const u8, len: usize) -> Result<()> {
        let r = page_range(addr as u64, len as u64)?;
        crate::sync::assert_may_block("RegCache::invalidate");
        self.inner
            .stats
            .invalidations_api
            .fetch_add(1, Ordering::Relaxed);
        let done = self.inner.publish(r);
        done.wait();
        Ok(())
    }

    /// Retire everything, wait until it is all unmapped, and stop the
    /// worker (C11). Jobs must be finished (the device closes its channels
    /// first). Logs any counter that does not return to zero.
    pub fn close(&self) {
        let mut index = self.inner.write_index();
        let all: Vec<_> = index.by_start.values().cloned().collect();
        let all: Vec<_> = all.into_iter().filter(|e| index.take_out(e)).collect();
        drop(index);
        for e in &all {
            self.inner.retired(e, &self.inner.stats.evictions);
        }
        // Loom models have no worker thread: do its work here.
        #[cfg(loom)]
        self.inner.run_queued();
        self.inner.worker.stop();
        if let Some(a) = self.inner.shim.get() {
            a.shim.detach(a.id);
        }
        let s = self.stats();
        if s.entries != 0 || s.pinned_bytes != 0 || s.retired_pending != 0 {
            log::error!(
                "{}: registration cache closed with {} entries, {} retired entries and {} bytes still pinned",
                self.inner.space.backend().name(),
                s.entries,
                s.retired_pending,
                s.pinned_bytes
            );
        }
    }

    /// The IOVA of `addr` after looking `[addr, addr + len)` up with rights
    /// `prot` and registering it on a miss: the lookup a job on process
    /// memory does, for benchmarks (`host-tests/benches/cache.rs`). Hidden:
    /// the IOVA is not protected by anything once this returns (an
    /// eviction or invalidation may unmap it at once), so it must not be
    /// given to the device; jobs go through [`crate::Job`].
    #[doc(hidden)]
    pub fn lookup_for_bench(&self, addr: *const u8, len: usize, prot: DmaProt) -> Result<u64> {
        let e = self.acquire(addr as u64, len as u64, prot)?;
        Ok(e.iova_of(addr as u64))
    }

    /// Look up `[addr, addr + len)` with rights `prot`, registering on a
    /// miss (C1, C7).
    pub(crate) fn acquire(&self, addr: u64, len: u64, prot: DmaProt) -> Result<Arc<Entry>> {
        let r = page_range(addr, len)?;
        self.inner.acquire(r, prot)
    }

    /// R4: hold the cache's read lock while checking `entries` and adding
    /// the job's fences. `None` when one is no longer valid: look up again.
    /// Called under the channel's state lock, which the completion path
    /// takes too: it only checks. The shim's events are drained before
    /// (by the lookups and [`Self::sync_events`]), never here, so the
    /// reactor never waits behind a drain or a wait for the monitor.
    pub(crate) fn commit<'a>(&'a self, entries: &[&Arc<Entry>]) -> Option<CommitGuard<'a>> {
        let index = self.inner.index.read().unwrap_or_else(|e| e.into_inner());
        if entries
            .iter()
            .all(|e| e.is_valid() && !self.inner.is_stale(e))
        {
            Some(CommitGuard { _index: index })
        } else {
            None
        }
    }

    /// Publish what the shim has read so far (a submit does this just
    /// before it takes the channel's lock to commit): an unmap that
    /// returned before this call fails the commit (R4, C2).
    #[cfg_attr(loom, allow(dead_code))] // used by the channel, not built under loom
    pub(crate) fn sync_events(&self) {
        self.inner.sync_shim();
    }

    /// The DMA space registrations are mapped in.
    #[cfg_attr(loom, allow(dead_code))] // used by the channel, not built under loom
    pub(crate) fn space(&self) -> &Arc<DmaSpace> {
        &self.inner.space
    }
}

/// Held from the validity check to the last fence added (R4).
pub(crate) struct CommitGuard<'a> {
    _index: RwLockReadGuard<'a, Index>,
}

impl std::fmt::Debug for RegCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RegCache")
            .field("max_entries", &self.inner.max_entries)
            .field("max_pinned", &self.inner.max_pinned)
            .field("stats", &self.stats())
            .finish()
    }
}

impl CacheInner {
    fn write_index(&self) -> crate::sync::RwLockWriteGuard<'_, Index> {
        crate::sync::assert_may_block("registration cache lock");
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The frame check: whether the frames behind `e`'s range changed
    /// since it was registered (false when the check is off).
    fn frames_moved(&self, e: &Entry) -> bool {
        match &e.frames {
            Some(pinned) => frames::frames(e.start, e.len).as_deref() != Some(&pinned[..]),
            None => false,
        }
    }

    /// Whether a publication newer than `e` overlaps it (R4).
    fn is_stale(&self, e: &Entry) -> bool {
        self.pubs.stale(e.gen, e.start, e.start + e.len)
    }

    fn acquire(&self, r: Range<u64>, prot: DmaProt) -> Result<Arc<Entry>> {
        if self.sync_shim() == Serve::Uncached {
            self.stats.misses.fetch_add(1, Ordering::Relaxed);
            return self.register_as(r, prot, false, Serve::Uncached);
        }
        let mut moved = None;
        let keep_prot = {
            let index = self.index.read().unwrap_or_else(|e| e.into_inner());
            if let Some(e) = index.covering(r.start, r.end) {
                if e.grants(prot) && e.is_valid() && !self.is_stale(e) {
                    if !self.frames_moved(e) {
                        e.touch(self.clock.fetch_add(1, Ordering::Relaxed));
                        self.stats.hits.fetch_add(1, Ordering::Relaxed);
                        return Ok(e.clone());
                    }
                    moved = Some(e.clone());
                }
            }
            // An explicit registration is the caller's promise to itself:
            // a job never retires one behind its back (C7 applies to the
            // cache's own entries).
            if let Some(x) = index
                .overlapping(r.start, r.end)
                .into_iter()
                .find(|e| e.explicit && e.is_valid())
            {
                return Err(Error::Invalid(format!(
                    "process memory {:#x}+{:#x} overlaps the explicit registration {:#x}+{:#x}{}: \
                     use the registration (Endpoint::Reg) or deregister it first",
                    r.start,
                    r.end - r.start,
                    x.start,
                    x.len,
                    if x.covers(r.start, r.end) {
                        " without the access this job needs"
                    } else {
                        ""
                    }
                )));
            }
            // A permission miss on the same range keeps the rights it had,
            // so that alternating readers and writers do not ping-pong.
            match index.by_start.get(&r.start) {
                Some(e) if e.len == r.end - r.start && e.is_valid() => Some(e.prot),
                _ => None,
            }
        };
        if let Some(e) = moved {
            // The frame check caught a stale registration: retire it.
            let first = self.write_index().take_out(&e);
            if first {
                self.retired(&e, &self.stats.frame_mismatches);
            }
            log::warn!(
                "{}: registration {e:?} no longer holds the pages at its addresses \
                 (re-backed without an event or invalidate()); registering again",
                self.space.backend().name()
            );
        }
        self.stats.misses.fetch_add(1, Ordering::Relaxed);
        let prot = match keep_prot {
            Some(p) => DmaProt {
                read: prot.read || p.read,
                write: prot.write || p.write,
            },
            None => prot,
        };
        self.register(r, prot, false)
    }

    /// Pin and map `r`, then insert it, retiring what it overlaps (C7, C8).
    fn register(&self, r: Range<u64>, prot: DmaProt, explicit: bool) -> Result<Arc<Entry>> {
        self.register_as(r, prot, explicit, Serve::Cached)
    }

    /// [`Self::register`], served as `serve` asks or uncached when the
    /// range cannot be watched (C9).
    fn register_as(
        &self,
        r: Range<u64>,
        prot: DmaProt,
        explicit: bool,
        serve: Serve,
    ) -> Result<Arc<Entry>> {
        let len = r.end - r.start;
        if len > self.max_mapping {
            self.stats.limit_errors.fetch_add(1, Ordering::Relaxed);
            return Err(Error::CacheLimit {
                what: "mapping size",
                limit: self.max_mapping,
                requested: len,
            });
        }
        let t0 = std::time::Instant::now();
        let mut retried = false;
        // The generation is taken before anything is pinned (R4, C2): see
        // `publish`.
        let gen = self.pubs.begin_registration(&self.next_gen);
        let _running = Running(&self.pubs, gen);
        // Subscribed before anything is pinned: an unmap from here on is
        // an event newer than `gen` (C2).
        let (subscribed, oneshot) = self.watch_range(gen, &r, explicit, serve);
        // Until the entry exists (it releases the subscription when it is
        // unmapped), a failure releases it here.
        let mut sub = Subscription {
            inner: self,
            gen,
            armed: subscribed,
        };
        let iova = loop {
            self.make_room(len)?;
            let iova = self.space.alloc_iova(len, 0)?;
            // Pinned before the map, so that concurrent registrations see
            // it (C6: never outside the accounting).
            self.stats.pinned_bytes.fetch_add(len, Ordering::Relaxed);
            let mapped = self.space.backend().dma_map(
                iova,
                len,
                DmaSource::Vaddr(r.start as *const u8),
                prot,
            );
            match mapped {
                Ok(()) => break iova,
                Err(e) => {
                    self.stats.pinned_bytes.fetch_sub(len, Ordering::Relaxed);
                    self.space.free_iova(iova, len);
                    let memlock = matches!(e, BackendError::Memlock { .. });
                    if memlock {
                        self.cap_ipc_lock
                            .store(crate::pci::has_cap_ipc_lock(), Ordering::Relaxed);
                    }
                    let pressure = memlock
                        || matches!(
                            e,
                            BackendError::Refused {
                                errno: libc::ENOSPC | libc::ENOMEM,
                                ..
                            }
                        );
                    if pressure && !retried && self.evict_one(false) {
                        retried = true;
                        self.worker.flush();
                        continue;
                    }
                    return Err(e.into());
                }
            }
        };
        sub.armed = false;
        let frames = if self.verify_frames && !oneshot {
            frames::frames(r.start, len)
        } else {
            None
        };
        let entry = Arc::new(
            Entry::new(r.start, len, iova, prot, gen, explicit)
                .watched(subscribed, oneshot)
                .with_frames(frames),
        );
        entry.touch(self.clock.fetch_add(1, Ordering::Relaxed));
        // Events read while this range was pinned are published before the
        // check below.
        self.sync_shim();
        let mut index = self.write_index();
        if self.pubs.stale(gen, r.start, r.end) {
            // An invalidation of this range began after these pages were
            // pinned: they may be the ones the application is replacing.
            // Nothing uses the mapping yet; drop it and look up again.
            drop(index);
            let _ = entry.retire();
            self.stats.retired_pending.fetch_add(1, Ordering::Relaxed);
            self.unmap(&entry);
            return Err(Error::StaleRegistration { addr: r.start, len });
        }
        if oneshot {
            // Uncached: never found by lookups; kept on the retired list so
            // that an invalidation of its range waits for its unmap (C3).
            index.retired.push(entry.clone());
            drop(index);
            self.stats.retired_pending.fetch_add(1, Ordering::Relaxed);
            self.stats.uncached.fetch_add(1, Ordering::Relaxed);
            self.stats.registrations.fetch_add(1, Ordering::Relaxed);
            self.stats
                .register_ns
                .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
            return Ok(entry);
        }
        let overlapping = index.overlapping(r.start, r.end);
        let old: Vec<_> = overlapping
            .into_iter()
            .filter(|o| index.take_out(o))
            .collect();
        index.by_start.insert(r.start, entry.clone());
        drop(index);
        for o in &old {
            self.retired(o, &self.stats.overlaps_retired);
        }
        self.stats.entries.fetch_add(1, Ordering::Relaxed);
        self.stats.registrations.fetch_add(1, Ordering::Relaxed);
        self.stats
            .register_ns
            .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok(entry)
    }

    /// The pinned-byte limit now: ours, and RLIMIT_MEMLOCK unless the
    /// process has CAP_IPC_LOCK (less what the driver's own buffers pin).
    fn pinned_limit(&self) -> u64 {
        match stats::memlock_budget(self.cap_ipc_lock.load(Ordering::Relaxed)) {
            Some(m) => self
                .max_pinned
                .min(m.saturating_sub(self.space.mapped_bytes())),
            None => self.max_pinned,
        }
    }

    /// Retire LRU entries until one more of `len` bytes fits (C5, C6).
    /// Entries no job is using go first, and are unmapped at once; entries
    /// jobs still use are retired (and unmapped when their fences signal)
    /// only for the entry-count limit, since retiring them frees no pinned
    /// bytes until then.
    fn make_room(&self, len: u64) -> Result<()> {
        loop {
            let s = self.stats.snapshot();
            let limit = self.pinned_limit();
            let count_ok = s.entries < self.max_entries;
            let bytes_ok = s.pinned_bytes + len <= limit;
            if count_ok && bytes_ok {
                return Ok(());
            }
            if self.evict_one(!bytes_ok) {
                continue;
            }
            // Nothing left to evict: what is pinned belongs to explicit
            // registrations or to jobs still running.
            self.stats.limit_errors.fetch_add(1, Ordering::Relaxed);
            return Err(if bytes_ok {
                Error::CacheLimit {
                    what: "registrations",
                    limit: self.max_entries,
                    requested: s.entries + 1,
                }
            } else {
                Error::CacheLimit {
                    what:
                        "pinned bytes (the cache's limit, or RLIMIT_MEMLOCK without CAP_IPC_LOCK)",
                    limit,
                    requested: s.pinned_bytes + len,
                }
            });
        }
    }

    /// Retire the least recently used evictable entry, preferring one no
    /// job uses; with `idle_only`, only such an entry. False when none.
    fn evict_one(&self, idle_only: bool) -> bool {
        let mut index = self.write_index();
        let mut idle = None;
        let mut busy = None;
        for e in index.by_start.values().filter(|e| !e.explicit) {
            let slot = if e.resv.pending() == 0 {
                &mut idle
            } else {
                &mut busy
            };
            if slot
                .as_ref()
                .map_or(true, |v: &Arc<Entry>| e.last_used() < v.last_used())
            {
                *slot = Some(e.clone());
            }
        }
        let Some(v) = idle.or(if idle_only { None } else { busy }) else {
            return false;
        };
        let first = index.take_out(&v);
        drop(index);
        if first {
            self.retired(&v, &self.stats.evictions);
        }
        true
    }

    /// `e` was just retired (marked invalid under the index's write lock
    /// and taken out of the index): count it, and unmap it now if no job
    /// uses it, else hand it to the worker, which unmaps it once its fences
    /// have signalled (C4, C5). Every commit either added its fence before
    /// the write lock was taken (and `pending` sees it) or fails (R4).
    fn retired(&self, e: &Arc<Entry>, why: &AtomicU64) {
        why.fetch_add(1, Ordering::Relaxed);
        self.stats.entries.fetch_sub(1, Ordering::Relaxed);
        self.stats.retired_pending.fetch_add(1, Ordering::Relaxed);
        self.stats.retired_bytes.fetch_add(e.len, Ordering::Relaxed);
        if e.resv.pending() == 0 {
            self.unmap(e);
        } else {
            self.worker.push(Work::Unmap(e.clone()));
        }
    }

    /// Publish `r` for invalidation (R4) and queue its processing.
    fn publish(&self, r: Range<u64>) -> Arc<worker::Done> {
        let gen = self.pubs.publish(r.clone(), &self.next_gen);
        let done = Arc::new(worker::Done::default());
        self.worker.push(Work::Invalidate {
            range: r,
            gen,
            done: done.clone(),
        });
        done
    }
}

/// A subscription not yet owned by an entry.
struct Subscription<'a> {
    inner: &'a CacheInner,
    gen: u64,
    armed: bool,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.inner.release_subscription(self.gen);
        }
    }
}

/// A registration in progress, for the publication list (R4).
struct Running<'a>(&'a publish::Publications, u64);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.end_registration(self.1);
    }
}
