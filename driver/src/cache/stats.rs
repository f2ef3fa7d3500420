//! The cache's counters (C12) and the limits it works within (C6).

use crate::sync::{AtomicU64, Ordering};

/// Counters of one registration cache (C12). Read them with
/// [`CacheStats::snapshot`].
#[derive(Debug, Default)]
pub struct CacheStats {
    pub(crate) hits: AtomicU64,
    pub(crate) misses: AtomicU64,
    pub(crate) registrations: AtomicU64,
    pub(crate) register_ns: AtomicU64,
    pub(crate) invalidations_api: AtomicU64,
    pub(crate) invalidations_shim: AtomicU64,
    pub(crate) invalidated_entries: AtomicU64,
    pub(crate) invalidate_wait_ns: AtomicU64,
    pub(crate) evictions: AtomicU64,
    pub(crate) overlaps_retired: AtomicU64,
    pub(crate) retired_bytes: AtomicU64,
    pub(crate) entries: AtomicU64,
    pub(crate) retired_pending: AtomicU64,
    pub(crate) pinned_bytes: AtomicU64,
    pub(crate) limit_errors: AtomicU64,
    pub(crate) uncached: AtomicU64,
    pub(crate) unwatched_explicit: AtomicU64,
    pub(crate) subscriptions: AtomicU64,
    pub(crate) frame_mismatches: AtomicU64,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CacheSnapshot {
    /// Lookups served by an existing registration.
    pub hits: u64,
    /// Lookups that had to register.
    pub misses: u64,
    /// Registrations made (pin + IOMMU map).
    pub registrations: u64,
    /// Time spent registering, in nanoseconds (pin and map calls).
    pub register_ns: u64,
    /// Invalidations through [`super::RegCache::invalidate`].
    pub invalidations_api: u64,
    /// Ranges published by the MMU-notifier shim that overlapped this
    /// cache's registrations (the shim serves every cache of the process
    /// and sees their events too).
    pub invalidations_shim: u64,
    /// Entries retired by invalidations.
    pub invalidated_entries: u64,
    /// Time invalidations spent waiting for fences and unmapping, in
    /// nanoseconds.
    pub invalidate_wait_ns: u64,
    /// Entries retired by LRU, entry-count or pinned-byte pressure (C5).
    pub evictions: u64,
    /// Entries retired because a new request overlapped them (C7).
    pub overlaps_retired: u64,
    /// Bytes of every retired entry so far.
    pub retired_bytes: u64,
    /// Entries in the index now (usable for lookups).
    pub entries: u64,
    /// Retired entries still mapped, waiting for their fences (C5).
    pub retired_pending: u64,
    /// Bytes pinned and mapped now, retired-but-unmapped included (C6).
    pub pinned_bytes: u64,
    /// Registrations refused by a limit.
    pub limit_errors: u64,
    /// Job ranges served uncached (mapped for one job, unmapped after it)
    /// because no event source could watch them (C9): the shim is off or
    /// failed, the kernel refused the subscription, the VMA budget was
    /// used up, or the monitor did not publish in time.
    pub uncached: u64,
    /// Explicit registrations the shim could not watch: kept, as the
    /// caller asked, but only `deregister`/`invalidate` retire them.
    pub unwatched_explicit: u64,
    /// Ranges subscribed to the shim's events now.
    pub subscriptions: u64,
    /// Hits refused by the frame check
    /// ([`CacheOptions::verify_frames`]): stale registrations no event
    /// source reported.
    pub frame_mismatches: u64,
}

impl CacheStats {
    /// The counters now.
    pub fn snapshot(&self) -> CacheSnapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        CacheSnapshot {
            hits: r(&self.hits),
            misses: r(&self.misses),
            registrations: r(&self.registrations),
            register_ns: r(&self.register_ns),
            invalidations_api: r(&self.invalidations_api),
            invalidations_shim: r(&self.invalidations_shim),
            invalidated_entries: r(&self.invalidated_entries),
            invalidate_wait_ns: r(&self.invalidate_wait_ns),
            evictions: r(&self.evictions),
            overlaps_retired: r(&self.overlaps_retired),
            retired_bytes: r(&self.retired_bytes),
            entries: r(&self.entries),
            retired_pending: r(&self.retired_pending),
            pinned_bytes: r(&self.pinned_bytes),
            limit_errors: r(&self.limit_errors),
            uncached: r(&self.uncached),
            unwatched_explicit: r(&self.unwatched_explicit),
            subscriptions: r(&self.subscriptions),
            frame_mismatches: r(&self.frame_mismatches),
        }
    }
}

/// Limits of a registration cache (C6).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheOptions {
    /// Most entries; the backend's mapping limit lowers it further (VFIO
    /// type1: 65,535 per container; the simulator's io_uring pins: 16,384).
    pub max_entries: u32,
    /// Most bytes pinned by the cache, always enforced. RLIMIT_MEMLOCK
    /// lowers it further unless the process has CAP_IPC_LOCK.
    pub max_pinned_bytes: u64,
    /// Mappings kept back for the driver's own buffers (rings, writeback,
    /// [`crate::DmaBuffer`]s) when the backend's limit applies.
    pub reserved_mappings: u32,
    /// How the cache learns that registered memory was unmapped or
    /// re-backed (C9).
    pub watch: Watch,
    /// Debug mode: on every hit, compare the page frames behind the range
    /// with those pinned at registration (`/proc/self/pagemap`, needs
    /// CAP_SYS_ADMIN), and treat a mismatch as a miss. Costs a pagemap
    /// read per hit; for hunting stale registrations, not for production.
    /// `FDMA_CACHE_VERIFY_FRAMES=1` turns it on too.
    pub verify_frames: bool,
}

/// The event source of a cache (C9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Watch {
    /// The MMU-notifier shim (userfaultfd events), plus
    /// [`super::RegCache::invalidate`]. Memory the shim cannot watch is
    /// served uncached. If userfaultfd is unavailable (another
    /// userfaultfd owns the memory, or the kernel or its settings refuse
    /// one), all process memory is served uncached.
    #[default]
    Userfaultfd,
    /// Only [`super::RegCache::invalidate`]: the application promises to
    /// call it before it unmaps or re-backs memory it used for DMA (an
    /// application that runs its own userfaultfd, or a test's negative
    /// control). Without the call the device keeps the old pages.
    Explicit,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            max_entries: 4096,
            max_pinned_bytes: 1 << 30,
            reserved_mappings: 256,
            watch: Watch::Userfaultfd,
            verify_frames: std::env::var_os("FDMA_CACHE_VERIFY_FRAMES").is_some_and(|v| v == "1"),
        }
    }
}

/// The locked-memory budget of this process: `None` when unlimited (the
/// process has CAP_IPC_LOCK, or RLIMIT_MEMLOCK is infinite).
pub(crate) fn memlock_budget(cap_ipc_lock: bool) -> Option<u64> {
    if cap_ipc_lock {
        return None;
    }
    crate::pci::memlock_limit().ok().and_then(|(soft, _)| soft)
}
