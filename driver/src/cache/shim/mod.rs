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
//!   ranges in the ring to every cache attached to the shim. From publication on, no lookup hits
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
//! One shim serves the whole process: a range can belong to one
//! userfaultfd only, so the caches of every open device share one
//! userfaultfd, one monitor and one ring, and every published range is
//! applied to every cache. Memory that two devices use is watched once and
//! cached by both. (A forked child that opens devices gets a shim of its
//! own.) Ranges larger than [`UNSUBSCRIBE_MAX`]
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

use super::CacheInner;
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

/// A live subscription: the cache that made it, its entry's generation,
/// the range.
#[cfg_attr(loom, allow(dead_code))]
struct Sub {
    owner: u64,
    gen: u64,
    range: Range<u64>,
}

/// The process's shim, shared by every cache (see the module docs).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) struct Shim {
    pub ring: Arc<EventRing>,
    /// Serialises drains (the ring has one consumer) and their
    /// application to the caches.
    drain: Mutex<()>,
    /// Live subscriptions of every attached cache.
    subs: Mutex<Vec<Sub>>,
    /// Most live subscriptions (VMA budget).
    budget: crate::sync::AtomicUsize,
    /// The monitor's death has been published (everything invalidated), or
    /// the shim was stopped.
    dead_published: crate::sync::AtomicBool,
    /// The attached caches, by id. Under loom the one cache of the model
    /// drains for itself.
    #[cfg(not(loom))]
    listeners: std::sync::Mutex<Vec<(u64, std::sync::Weak<CacheInner>)>>,
    #[cfg(not(loom))]
    next_id: std::sync::atomic::AtomicU64,
    /// The last cache detached: the shim is being stopped and must not be
    /// handed out again (set under [`SHARED`]'s lock).
    #[cfg(not(loom))]
    closing: std::sync::atomic::AtomicBool,
    /// The process that started it (a forked child starts its own).
    #[cfg(not(loom))]
    pid: u32,
    #[cfg(not(loom))]
    io: Option<threads::Io>,
}

/// A cache's attachment to the shim.
pub(crate) struct Attached {
    /// The shim.
    pub shim: Arc<Shim>,
    /// The cache's id among the shim's listeners.
    pub id: u64,
}

/// The shim every cache of this process attaches to, while one lives.
#[cfg(not(loom))]
static SHARED: std::sync::Mutex<std::sync::Weak<Shim>> =
    std::sync::Mutex::new(std::sync::Weak::new());

impl Shim {
    /// A shim with no monitor (loom models): subscriptions always succeed,
    /// the ring is fed by hand.
    #[cfg(all(loom, test))]
    pub fn detached() -> Attached {
        Attached {
            shim: Arc::new(Shim {
                ring: Arc::new(EventRing::new(ring::CAPACITY)),
                drain: Mutex::new(()),
                subs: Mutex::new(Vec::new()),
                budget: crate::sync::AtomicUsize::new(usize::MAX),
                dead_published: crate::sync::AtomicBool::new(false),
            }),
            id: 1,
        }
    }

    /// Attach the cache `weak` points to to the process's shim, starting
    /// it (a userfaultfd, the monitor and drain threads) if none runs. On
    /// failure the error says why; the cache then serves process memory
    /// uncached.
    #[cfg(not(loom))]
    pub fn attach_shared(weak: std::sync::Weak<CacheInner>) -> Result<Attached, nix::Error> {
        let mut shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = shared.upgrade() {
            if s.pid == std::process::id() && !s.ring.is_dead() && !s.is_stopped() {
                let id = s.attach(weak);
                return Ok(Attached { shim: s, id });
            }
        }
        let s = Shim::start(ring::CAPACITY)?;
        *shared = Arc::downgrade(&s);
        let id = s.attach(weak);
        Ok(Attached { shim: s, id })
    }

    /// Attach the cache `weak` points to to a shim of its own, whose ring
    /// holds `capacity` records (tests that lower the budget, kill the
    /// monitor or overflow the ring must not touch the process's shim,
    /// which other tests use).
    #[cfg(all(test, not(loom)))]
    pub fn attach_private(
        weak: std::sync::Weak<CacheInner>,
        capacity: usize,
    ) -> Result<Attached, nix::Error> {
        let s = Shim::start(capacity)?;
        let id = s.attach(weak);
        Ok(Attached { shim: s, id })
    }

    /// Open a userfaultfd and start the threads, with a ring of `capacity`
    /// records.
    #[cfg(not(loom))]
    fn start(capacity: usize) -> Result<Arc<Shim>, nix::Error> {
        let ring = Arc::new(EventRing::new(capacity));
        let mut failed = None;
        let s = Arc::new_cyclic(|me| {
            let io = threads::Io::start(ring.clone(), me.clone())
                .map_err(|e| failed = Some(e))
                .ok();
            Shim {
                ring,
                drain: Mutex::new(()),
                subs: Mutex::new(Vec::new()),
                budget: crate::sync::AtomicUsize::new(vma_budget()),
                dead_published: crate::sync::AtomicBool::new(false),
                listeners: std::sync::Mutex::new(Vec::new()),
                next_id: std::sync::atomic::AtomicU64::new(1),
                closing: std::sync::atomic::AtomicBool::new(false),
                pid: std::process::id(),
                io,
            }
        });
        match failed {
            Some(e) => Err(e),
            None => Ok(s),
        }
    }

    #[cfg(not(loom))]
    fn attach(&self, weak: std::sync::Weak<CacheInner>) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
        l.retain(|(_, w)| w.strong_count() > 0);
        l.push((id, weak));
        id
    }

    /// The cache `id` is closing: forget it and its subscriptions, and stop
    /// the shim if it was the last cache. Idempotent.
    pub fn detach(&self, id: u64) {
        let subs: Vec<u64> = {
            let subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
            subs.iter()
                .filter(|s| s.owner == id)
                .map(|s| s.gen)
                .collect()
        };
        for gen in subs {
            self.release(id, gen);
        }
        #[cfg(not(loom))]
        {
            // Under the lock that hands the shim out, so that nobody
            // attaches to a shim being stopped.
            let _shared = SHARED.lock().unwrap_or_else(|e| e.into_inner());
            let mut l = self.listeners.lock().unwrap_or_else(|e| e.into_inner());
            l.retain(|(i, w)| *i != id && w.strong_count() > 0);
            if !l.is_empty() {
                return;
            }
            self.closing.store(true, Ordering::Release);
        }
        self.stop();
    }

    #[cfg(not(loom))]
    fn is_stopped(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Wait (bounded) for the monitor to publish what it has read. False
    /// when it could not be confirmed: serve uncached.
    pub fn settle(&self) -> bool {
        if self.ring.is_dead() {
            return false;
        }
        self.ring.settle(SETTLE_BOUND) == ring::Settled::Yes
    }

    /// Whether a drain is due: the ring holds unpublished ranges, or the
    /// monitor died and that is not yet published.
    pub fn drain_due(&self) -> bool {
        self.ring.pending() || (self.ring.is_dead() && !self.dead_published.load(Ordering::Acquire))
    }

    /// Publish the ring's ranges to every attached cache (and to `me`, the
    /// caller's, which under loom is the only one). Under the drain lock,
    /// so that a second caller finds them published, not merely taken.
    pub fn drain(&self, me: Option<&CacheInner>) {
        #[cfg(not(loom))]
        let mut others = Vec::new();
        {
            let _g = self.drain.lock().unwrap_or_else(|e| e.into_inner());
            let mut ranges = Vec::new();
            let drained = self.ring.drain(|r| ranges.push(r));
            let died = self.ring.is_dead() && !self.dead_published.swap(true, Ordering::AcqRel);
            if died {
                ranges.push(0..u64::MAX);
            }
            if !ranges.is_empty() {
                if let Some(me) = me {
                    me.apply_shim_ranges(&ranges, died);
                }
                #[cfg(not(loom))]
                {
                    let me = me.map_or(std::ptr::null(), |m| m as *const CacheInner);
                    others.extend(
                        self.listeners
                            .lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .iter()
                            .filter(|(_, w)| w.as_ptr() != me)
                            .filter_map(|(_, w)| w.upgrade()),
                    );
                    for c in &others {
                        c.apply_shim_ranges(&ranges, died);
                    }
                }
            }
            // Only now may a lookup skip the drain lock (R4).
            self.ring.published(drained);
        }
        // A cache whose last handle went meanwhile is dropped here, outside
        // the drain lock (its drop detaches from this shim).
        #[cfg(not(loom))]
        drop(others);
    }

    /// Subscribe `r` for the registration of generation `gen` of the cache
    /// `owner`.
    pub fn subscribe(&self, owner: u64, gen: u64, r: &Range<u64>) -> Result<(), Unwatched> {
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
        subs.push(Sub {
            owner,
            gen,
            range: r.clone(),
        });
        Ok(())
    }

    /// The registration of generation `gen` of the cache `owner` is gone:
    /// forget its subscription, and drop it in the kernel if it is small
    /// and no other subscription (of any cache) overlaps it.
    pub fn release(&self, owner: u64, gen: u64) {
        let mut subs = self.subs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(i) = subs.iter().position(|s| s.owner == owner && s.gen == gen) else {
            return;
        };
        let r = subs.swap_remove(i).range;
        let shared = subs
            .iter()
            .any(|o| o.range.start < r.end && r.start < o.range.end);
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

    /// Hold the drain lock, so that what the monitor reads piles up in the
    /// ring (tests of its overflow).
    #[cfg(all(test, not(loom)))]
    pub fn hold_drain(&self) -> crate::sync::MutexGuard<'_, ()> {
        self.drain.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Make the monitor stop as a read error would (tests).
    #[cfg(all(test, not(loom)))]
    pub fn fail_monitor(&self) {
        if let Some(io) = &self.io {
            io.fail_monitor();
        }
    }

    /// Stop the threads and close the userfaultfd (no cache is attached
    /// any more). Idempotent.
    fn stop(&self) {
        // A deliberate stop: nothing to report or invalidate (every cache
        // retired everything before).
        self.dead_published.store(true, Ordering::Release);
        #[cfg(not(loom))]
        if let Some(io) = &self.io {
            io.stop();
        }
    }
}

#[cfg(not(loom))]
impl Drop for Shim {
    fn drop(&mut self) {
        self.stop();
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
