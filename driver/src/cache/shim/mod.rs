//! The MMU-notifier shim: userfaultfd events keep the registration cache
//! honest (C2, C3, C8, C9).
//!
//! The kernel does not tell a userspace driver when the application unmaps
//! or re-backs memory it registered: the IOMMU keeps the old pages pinned
//! and the device keeps reaching them while the application uses new pages
//! at the same address. The shim stands in for the kernel's mmu_notifier:
//! every range the cache registers is subscribed to userfaultfd events
//! (`uffd.rs`), and every unmap or re-backing of it invalidates the
//! overlapping registrations before a stale one can be used.
//!
//! # How it works
//!
//! * **Monitor** (thread `fdma-uffd`): waits for the userfaultfd, makes the
//!   publication count odd, reads the events into a buffer on its stack,
//!   pushes their ranges into the event ring, makes the count
//!   even, and wakes the drain thread. It never takes a lock, allocates,
//!   frees, logs or unmaps (C8): the application's munmap waits for it to
//!   read, and any of those could wait for the application in turn. A
//!   full ring sets a flag, and everything is invalidated.
//! * **Drain** (every lookup and commit first, and thread `fdma-shim` when
//!   woken): waits, bounded, for the count to be even, then publishes the
//!   ranges in the ring to the cache. From publication on, no lookup hits
//!   and no commit succeeds against an entry overlapping the range (R4);
//!   jobs on such entries that complete afterwards fail with
//!   [`crate::FenceError::StaleMemory`]. The cache's worker retires the
//!   entries, waits for their fences and unmaps them (C3).
//! * **Subscriptions** are made before a range is pinned, so no unmap can
//!   slip between the pin and the subscription. A subscription splits the
//!   process's mappings (VMAs); the kernel merges adjacent ones, and the
//!   shim keeps a budget below `vm.max_map_count` and serves memory
//!   uncached near it. A subscription is dropped when its entry is
//!   unmapped and the range is small (under [`UNSUBSCRIBE_MAX`]: dropping
//!   one costs ~46 ms per populated GiB in write-protect mode).
//!
//! # What it cannot see (blind spots)
//!
//! Memory re-backed without an event: `MADV_GUARD_INSTALL`/`REMOVE`,
//! `fallocate(PUNCH_HOLE)` or `ftruncate` through a memfd's fd, SysV
//! `shmdt`, and file mappings that cannot be registered in write-protect
//! mode (most filesystems). Ranges that cannot be subscribed (`EINVAL`,
//! `EBUSY` when the application owns a userfaultfd on them, `ENOMEM`) are
//! served uncached: mapped for one job and unmapped after it (counted in
//! [`super::CacheSnapshot::uncached`]). For the fd-based cases the
//! application must call [`super::RegCache::invalidate`] before re-backing.
//!
//! Each cache (each open device) has a userfaultfd of its own, and a range
//! can belong to one userfaultfd only: memory that two devices' caches
//! both use is watched by the first to register it and served uncached by
//! the second (`EBUSY`, counted). Ranges larger than [`UNSUBSCRIBE_MAX`]
//! stay subscribed after their entry goes (their mapping stays split until
//! the application unmaps it), and the budget counts live subscriptions,
//! not the mappings the kernel actually split.
//!
//! `StaleMemory` is best effort: the event arrives after the munmap, so a
//! job that completed on the old pages just before it may still report
//! success. Re-backing memory under in-flight DMA is an application bug.

pub(crate) mod ring;
#[cfg(all(test, not(loom)))]
mod tests;
#[cfg(not(loom))]
mod threads;

use crate::sync::{Mutex, Ordering};
use ring::EventRing;
use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

/// Subscriptions at most this long are dropped when their entry goes.
#[cfg_attr(loom, allow(dead_code))]
pub const UNSUBSCRIBE_MAX: u64 = 1 << 20;

/// How long a lookup waits for the monitor to publish a read before it
/// serves the memory uncached instead.
const SETTLE_BOUND: Duration = Duration::from_millis(100);

/// Why a range is not watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(loom, allow(dead_code))]
pub(crate) enum Unwatched {
    /// The kernel refused the subscription (`EBUSY`, `EINVAL`, `ENOMEM`).
    Refused,
    /// The VMA budget is used up.
    Budget,
    /// The monitor is not running (failed to start, or stopped).
    NoMonitor,
}

/// One cache's shim.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct Shim {
    pub ring: Arc<EventRing>,
    /// Serialises drains (the ring has one consumer).
    pub drain: Mutex<()>,
    /// Live subscriptions: (entry generation, range).
    subs: Mutex<Vec<(u64, Range<u64>)>>,
    /// Most live subscriptions (VMA budget).
    budget: crate::sync::AtomicUsize,
    /// The monitor's death has been published (everything invalidated).
    pub dead_published: crate::sync::AtomicBool,
    #[cfg(not(loom))]
    io: Option<threads::Io>,
}

impl Shim {
    /// A shim with no monitor (loom models, and `Watch::Explicit`-like
    /// tests): subscriptions always succeed, the ring is fed by hand.
    #[cfg(all(loom, test))]
    pub fn detached() -> Shim {
        Shim {
            ring: Arc::new(EventRing::new(ring::CAPACITY)),
            drain: Mutex::new(()),
            subs: Mutex::new(Vec::new()),
            budget: crate::sync::AtomicUsize::new(usize::MAX),
            dead_published: crate::sync::AtomicBool::new(false),
            #[cfg(not(loom))]
            io: None,
        }
    }

    /// Open a userfaultfd and start the monitor and drain threads for the
    /// cache `weak` points to. On failure the error says why; the cache
    /// then serves process memory uncached.
    #[cfg(not(loom))]
    pub fn start(
        weak: std::sync::Weak<super::CacheInner>,
    ) -> std::result::Result<Shim, nix::Error> {
        let ring = Arc::new(EventRing::new(ring::CAPACITY));
        let io = threads::Io::start(ring.clone(), weak)?;
        Ok(Shim {
            ring,
            drain: Mutex::new(()),
            subs: Mutex::new(Vec::new()),
            budget: crate::sync::AtomicUsize::new(vma_budget()),
            dead_published: crate::sync::AtomicBool::new(false),
            io: Some(io),
        })
    }

    /// Wait (bounded) for the monitor to publish what it has read. False
    /// when it could not be confirmed: serve uncached.
    pub fn settle(&self) -> bool {
        if self.ring.is_dead() {
            return false;
        }
        self.ring.settle(SETTLE_BOUND) == ring::Settled::Yes
    }

    /// Subscribe `r` for the registration of generation `gen`.
    pub fn subscribe(&self, gen: u64, r: &Range<u64>) -> Result<(), Unwatched> {
        if self.ring.is_dead() {
            return Err(Unwatched::NoMonitor);
        }
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        if subs.len() >= self.budget.load(Ordering::Relaxed) {
            return Err(Unwatched::Budget);
        }
        #[cfg(not(loom))]
        if let Some(io) = &self.io {
            let done = io
                .with_uffd(|u| u.subscribe(r.start, r.end - r.start))
                .unwrap_or(Err(nix::Error::EBADF));
            if let Err(e) = done {
                drop(subs);
                log::debug!(
                    "userfaultfd refused {:#x}+{:#x} ({e}): served uncached",
                    r.start,
                    r.end - r.start
                );
                return Err(Unwatched::Refused);
            }
        }
        subs.push((gen, r.clone()));
        Ok(())
    }

    /// The registration of generation `gen` is gone: forget its
    /// subscription, and drop it in the kernel if it is small and no other
    /// subscription overlaps it.
    pub fn release(&self, gen: u64) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = subs.iter().position(|(g, _)| *g == gen) else {
            return;
        };
        let (_, r) = subs.swap_remove(i);
        let shared = subs.iter().any(|(_, o)| o.start < r.end && r.start < o.end);
        #[cfg(not(loom))]
        if !shared && r.end - r.start <= UNSUBSCRIBE_MAX {
            if let Some(io) = &self.io {
                // The range may be unmapped already (that is often why the
                // entry went): nothing to drop then.
                let _ = io.with_uffd(|u| u.unsubscribe(r.start, r.end - r.start));
            }
        }
        #[cfg(loom)]
        let _ = shared;
    }

    /// How the userfaultfd was opened, if it was.
    #[cfg_attr(loom, allow(dead_code))]
    pub fn opened(&self) -> Option<crate::uffd::Opened> {
        #[cfg(not(loom))]
        {
            self.io.as_ref().map(|io| io.opened)
        }
        #[cfg(loom)]
        None
    }

    /// Close the userfaultfd after the monitor died.
    #[cfg(not(loom))]
    pub fn close_uffd(&self) {
        if let Some(io) = &self.io {
            io.close_uffd();
        }
    }

    /// Lower the VMA budget (tests).
    #[cfg(all(test, not(loom)))]
    pub fn set_budget(&self, n: usize) {
        self.budget.store(n, Ordering::Relaxed);
    }

    /// Make the monitor stop as a read error would (tests).
    #[cfg(all(test, not(loom)))]
    pub fn fail_monitor(&self) {
        if let Some(io) = &self.io {
            io.fail_monitor();
        }
    }

    /// Stop the threads and close the userfaultfd (the cache is closing).
    /// Idempotent.
    pub fn stop(&self) {
        // A deliberate stop: nothing to report or invalidate (the cache
        // retired everything before).
        self.dead_published.store(true, Ordering::Release);
        #[cfg(not(loom))]
        if let Some(io) = &self.io {
            io.stop();
        }
    }
}

/// Subscriptions allowed: a quarter of `vm.max_map_count` (each may split
/// a mapping in up to three), leaving the rest to the application.
#[cfg(not(loom))]
fn vma_budget() -> usize {
    std::fs::read_to_string("/proc/sys/vm/max_map_count")
        .ok()
        .and_then(|s| s.trim().parse::<usize>().ok())
        .map_or(16_000, |m| m / 4)
}
