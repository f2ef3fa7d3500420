//! The cache's side of the MMU-notifier shim: subscribing ranges,
//! draining published events into invalidations, and serving what no
//! source watches uncached (C2, C3, C9).

use super::{shim, CacheInner, Entry, RegCache, Serve, Watch};
use crate::sync::{Arc, Ordering};
use std::ops::Range;

impl CacheInner {
    /// How to serve `r` for a registration of generation `gen`, and
    /// subscribe it if it is to be cached: (subscribed, oneshot).
    pub(super) fn watch_range(
        &self,
        gen: u64,
        r: &Range<u64>,
        explicit: bool,
        serve: Serve,
    ) -> (bool, bool) {
        if serve == Serve::Uncached {
            return (false, true);
        }
        let watched = match (self.watch, self.shim.get()) {
            (Watch::Explicit, _) => return (false, false),
            (Watch::Userfaultfd, None) => Err(shim::Unwatched::NoMonitor),
            (Watch::Userfaultfd, Some(a)) => a.shim.subscribe(a.id, gen, r),
        };
        match watched {
            Ok(()) => {
                self.stats.subscriptions.fetch_add(1, Ordering::Relaxed);
                (true, false)
            }
            Err(why) if explicit => {
                // The caller asked for this registration and retires it
                // itself; it is counted, and the docs say what it misses.
                log::debug!(
                    "explicit registration {:#x}+{:#x} not watched ({why:?})",
                    r.start,
                    r.end - r.start
                );
                self.stats
                    .unwatched_explicit
                    .fetch_add(1, Ordering::Relaxed);
                (false, false)
            }
            Err(_) => (false, true),
        }
    }

    /// The subscription of generation `gen` is no longer needed.
    pub(super) fn release_subscription(&self, gen: u64) {
        if let Some(a) = self.shim.get() {
            a.shim.release(a.id, gen);
            self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Publish whatever the shim has read (every lookup and commit does
    /// this first), and say how process memory can be served now.
    pub(super) fn sync_shim(&self) -> Serve {
        let s = match (self.watch, self.shim.get()) {
            (Watch::Explicit, _) => return Serve::Cached,
            (Watch::Userfaultfd, None) => return Serve::Uncached,
            (Watch::Userfaultfd, Some(a)) => &a.shim,
        };
        let settled = s.settle();
        let dead = s.ring.is_dead();
        if s.drain_due() {
            s.drain(Some(self));
        }
        if settled && !dead {
            Serve::Cached
        } else {
            Serve::Uncached
        }
    }

    /// Turn the ranges the shim drained into invalidations of this cache
    /// (called under the shim's drain lock, for every attached cache).
    /// `died`: the monitor stopped, and the last range covers everything.
    pub(super) fn apply_shim_ranges(&self, ranges: &[Range<u64>], died: bool) {
        if died {
            log::error!(
                "{}: the userfaultfd monitor stopped: every registration is invalidated and \
                 process memory is served uncached from now on",
                self.space.backend().name()
            );
        }
        for r in ranges.iter().cloned() {
            if r.start >= r.end {
                continue;
            }
            let mut ours = died;
            {
                // Jobs on these pages that complete from now on report
                // StaleMemory (C3, best effort).
                let index = self.index.read().unwrap_or_else(|e| e.into_inner());
                for e in index.overlapping(r.start, r.end) {
                    e.mark_stale_event();
                    ours = true;
                }
                for e in index.retired.iter().filter(|e| e.overlaps(r.start, r.end)) {
                    e.mark_stale_event();
                    ours = true;
                }
            }
            // Every cache of the process sees every range the shim read;
            // count those that concerned this one.
            if ours {
                self.stats
                    .invalidations_shim
                    .fetch_add(1, Ordering::Relaxed);
            }
            // Published even when no entry overlaps it: a registration of
            // the range may be in progress (R4).
            drop(self.publish(r));
        }
    }

    /// An uncached entry's job has its fences (or failed to submit):
    /// unmap it now if nothing uses it, else when its fences signal.
    pub(super) fn release_oneshot(&self, e: &Arc<Entry>) {
        e.invalidate_use();
        if e.resv.pending() == 0 {
            self.unmap(e);
        } else {
            self.worker.push(super::worker::Work::Unmap(e.clone()));
        }
    }
}

impl RegCache {
    /// [`RegCache::new`] with a shim of its own rather than the process's,
    /// its ring holding `capacity` records (tests that kill its monitor,
    /// lower its budget or overflow its ring).
    #[cfg(all(test, not(loom)))]
    pub(crate) fn with_private_shim(
        space: Arc<crate::mem::DmaSpace>,
        opts: &super::CacheOptions,
        capacity: usize,
    ) -> crate::Result<RegCache> {
        let c = RegCache::unattached(space, opts)?;
        c.attach(shim::Shim::attach_private(
            Arc::downgrade(&c.inner),
            capacity,
        ));
        Ok(c)
    }

    /// Record the shim attached to (or why none is).
    #[cfg(not(loom))]
    pub(super) fn attach(&self, attached: Result<shim::Attached, nix::Error>) {
        match attached {
            Ok(a) => {
                log::debug!(
                    "{}: registration cache watches process memory through userfaultfd ({:?})",
                    self.inner.space.backend().name(),
                    a.shim.opened()
                );
                let _ = self.inner.shim.set(a);
            }
            Err(e) => log::warn!(
                "{}: no userfaultfd ({e}): process memory is served uncached \
                 (mapped per job); see the cache docs",
                self.inner.space.backend().name()
            ),
        }
    }
}

/// Held by a job for an uncached entry: dropping it (after the job's fence
/// is on the entry, or when the submit failed) unmaps the entry once its
/// fences have signalled.
#[cfg_attr(loom, allow(dead_code))] // jobs are not built in loom models
pub(crate) struct OneShot {
    cache: RegCache,
    entry: Arc<Entry>,
}

#[cfg_attr(loom, allow(dead_code))]
impl OneShot {
    /// Guard `entry` (an uncached one) of `cache`.
    pub(crate) fn new(cache: &RegCache, entry: &Arc<Entry>) -> OneShot {
        debug_assert!(entry.oneshot);
        OneShot {
            cache: cache.clone(),
            entry: entry.clone(),
        }
    }
}

impl Drop for OneShot {
    fn drop(&mut self) {
        self.cache.inner.release_oneshot(&self.entry);
    }
}

impl std::fmt::Debug for OneShot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("OneShot").field(&self.entry).finish()
    }
}
