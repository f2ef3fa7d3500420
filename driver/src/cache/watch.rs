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
            (Watch::Userfaultfd, Some(s)) => s.subscribe(gen, r),
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
        if let Some(s) = self.shim.get() {
            s.release(gen);
            self.stats.subscriptions.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Publish whatever the shim has read (every lookup and commit does
    /// this first), and say how process memory can be served now.
    pub(super) fn sync_shim(&self) -> Serve {
        let s = match (self.watch, self.shim.get()) {
            (Watch::Explicit, _) => return Serve::Cached,
            (Watch::Userfaultfd, None) => return Serve::Uncached,
            (Watch::Userfaultfd, Some(s)) => s,
        };
        let settled = s.settle();
        let dead = s.ring.is_dead();
        if s.ring.pending() || (dead && !s.dead_published.load(Ordering::Acquire)) {
            self.drain_shim(s);
        }
        if settled && !dead {
            Serve::Cached
        } else {
            Serve::Uncached
        }
    }

    /// Move the ring's ranges into invalidations. Under the drain lock,
    /// so that a second caller finds them published, not merely taken.
    fn drain_shim(&self, s: &shim::Shim) {
        let _g = s.drain.lock().unwrap_or_else(|e| e.into_inner());
        let mut ranges = Vec::new();
        let drained = s.ring.drain(|r| ranges.push(r));
        if s.ring.is_dead() && !s.dead_published.swap(true, Ordering::AcqRel) {
            log::error!(
                "{}: the userfaultfd monitor stopped: every registration is invalidated and \
                 process memory is served uncached from now on",
                self.space.backend().name()
            );
            ranges.push(0..u64::MAX);
        }
        for r in ranges {
            if r.start >= r.end {
                continue;
            }
            self.stats
                .invalidations_shim
                .fetch_add(1, Ordering::Relaxed);
            {
                // Jobs on these pages that complete from now on report
                // StaleMemory (C3, best effort).
                let index = self.index.read().unwrap_or_else(|e| e.into_inner());
                for e in index.overlapping(r.start, r.end) {
                    e.mark_stale_event();
                }
                for e in index.retired.iter().filter(|e| e.overlaps(r.start, r.end)) {
                    e.mark_stale_event();
                }
            }
            // Nobody waits for this one; the worker carries it out.
            drop(self.publish(r));
        }
        // Only now may a lookup skip the drain lock (R4).
        s.ring.published(drained);
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

/// Held by a job for an uncached entry: dropping it (after the job's fence
/// is on the entry, or when the submit failed) unmaps the entry once its
/// fences have signalled.
pub(crate) struct OneShot {
    cache: RegCache,
    entry: Arc<Entry>,
}

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
