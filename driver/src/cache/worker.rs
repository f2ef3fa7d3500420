//! The cache's worker thread: unmaps retired entries once their fences
//! have signalled (C4, C5) and carries out published invalidations (C3).
//! It is the only place that waits on the device for the cache; eviction
//! and submits only queue work for it.
//!
//! Work is done in order, so an invalidation also waits for every
//! retirement queued before it. The thread holds only a weak reference to
//! the cache; dropping the last handle stops it, and what is left is done
//! by the drop itself.

use super::{CacheInner, Entry};
use crate::resv::Purpose;
use crate::sync::{Arc, Condvar, Mutex, Ordering};
use std::collections::VecDeque;
use std::ops::Range;

/// One piece of work.
pub(super) enum Work {
    /// Wait for the entry's fences, unmap, unpin, free its IOVA.
    Unmap(Arc<Entry>),
    /// Retire every entry older than `gen` overlapping `range`, unmap them
    /// (waiting for their fences), withdraw the publication, signal `done`.
    Invalidate {
        range: Range<u64>,
        gen: u64,
        done: Arc<Done>,
    },
}

/// Completion of an invalidation, for the caller of `invalidate`.
#[derive(Default)]
pub(super) struct Done {
    done: Mutex<bool>,
    cv: Condvar,
}

impl Done {
    fn signal(&self) {
        *self.done.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.cv.notify_all();
    }

    /// Block until signalled.
    pub fn wait(&self) {
        let mut d = self.done.lock().unwrap_or_else(|e| e.into_inner());
        while !*d {
            d = self.cv.wait(d).unwrap_or_else(|e| e.into_inner());
        }
    }
}

#[derive(Default)]
struct Queue {
    work: VecDeque<Work>,
    /// The thread is processing an item taken from `work`.
    busy: bool,
    stop: bool,
}

/// The queue and its thread.
#[derive(Default)]
pub(super) struct Worker {
    q: Mutex<Queue>,
    cv: Condvar,
    #[cfg(not(loom))]
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Worker {
    /// Start the thread for `inner`.
    #[cfg(not(loom))]
    pub fn start(inner: &Arc<CacheInner>) -> crate::Result<()> {
        let weak = Arc::downgrade(inner);
        let h = std::thread::Builder::new()
            .name("fdma-cache".into())
            .spawn(move || run(&weak))
            .map_err(|source| crate::Error::Sys {
                op: "spawn the registration cache worker",
                source,
            })?;
        *inner
            .worker
            .thread
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(h);
        Ok(())
    }

    pub fn push(&self, w: Work) {
        let mut q = self.lock();
        q.work.push_back(w);
        self.cv.notify_all();
    }

    /// Wait until everything queued so far is done.
    pub fn flush(&self) {
        crate::sync::assert_may_block("registration cache flush");
        let mut q = self.lock();
        while (!q.work.is_empty() || q.busy) && !q.stop {
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Finish the queue and stop the thread.
    pub fn stop(&self) {
        self.flush();
        self.lock().stop = true;
        self.cv.notify_all();
        #[cfg(not(loom))]
        if let Some(h) = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take() {
            if h.thread().id() != std::thread::current().id() && h.join().is_err() {
                log::error!("the registration cache worker panicked");
            }
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Queue> {
        self.q.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take the next item, or `None` when stopped and empty.
    #[cfg(not(loom))]
    fn next(&self) -> Option<Work> {
        let mut q = self.lock();
        q.busy = false;
        self.cv.notify_all();
        loop {
            if let Some(w) = q.work.pop_front() {
                q.busy = true;
                return Some(w);
            }
            if q.stop {
                return None;
            }
            q = self.cv.wait(q).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// The next queued item, without waiting (loom models, which have no
    /// worker thread, run the queue on their own threads).
    #[cfg(loom)]
    fn try_next(&self) -> Option<Work> {
        self.lock().work.pop_front()
    }

    /// Everything still queued (the cache is being dropped).
    fn take_all(&self) -> VecDeque<Work> {
        std::mem::take(&mut self.lock().work)
    }
}

#[cfg(not(loom))]
fn run(weak: &std::sync::Weak<CacheInner>) {
    loop {
        let Some(inner) = weak.upgrade() else {
            return;
        };
        let Some(w) = inner.worker.next() else {
            return;
        };
        inner.process(w);
    }
}

impl CacheInner {
    /// Do one piece of work (the worker thread, or a loom model).
    pub(super) fn process(&self, w: Work) {
        match w {
            Work::Unmap(e) => self.unmap(&e),
            Work::Invalidate { range, gen, done } => {
                let t0 = std::time::Instant::now();
                let mut index = self.write_index();
                let hit: Vec<_> = index
                    .overlapping(range.start, range.end)
                    .into_iter()
                    .filter(|e| e.gen < gen && index.take_out(e))
                    .collect();
                // Entries retired earlier (overlap, eviction, deregister)
                // may still be mapped: their unmap is waited for too, or
                // `invalidate` could return with old pages mapped (C3).
                let earlier: Vec<_> = index
                    .retired
                    .iter()
                    .filter(|e| e.overlaps(range.start, range.end))
                    .cloned()
                    .collect();
                // An uncached entry not yet committed must not be committed
                // after its unmap below (R4).
                for e in &earlier {
                    e.invalidate_use();
                }
                drop(index);
                for e in &hit {
                    self.stats.entries.fetch_sub(1, Ordering::Relaxed);
                    self.stats.retired_pending.fetch_add(1, Ordering::Relaxed);
                    self.stats.retired_bytes.fetch_add(e.len, Ordering::Relaxed);
                }
                for e in hit.iter().chain(&earlier) {
                    self.unmap(e);
                }
                self.stats
                    .invalidated_entries
                    .fetch_add(hit.len() as u64, Ordering::Relaxed);
                self.pubs.processed(gen);
                self.stats
                    .invalidate_wait_ns
                    .fetch_add(t0.elapsed().as_nanos() as u64, Ordering::Relaxed);
                done.signal();
            }
        }
    }

    /// Loom models have no worker thread (see [`Worker::start`]): run
    /// everything queued so far on the calling thread, as the worker would.
    #[cfg(loom)]
    pub(super) fn run_queued(&self) {
        while let Some(w) = self.worker.try_next() {
            self.process(w);
        }
    }

    /// Wait for `e`'s fences, unmap it, free its IOVA (C4). Once per
    /// entry: a second caller waits for the first and returns.
    pub(super) fn unmap(&self, e: &Arc<Entry>) {
        let mut unmapped = e.unmapped.lock().unwrap_or_else(|x| x.into_inner());
        if *unmapped {
            return;
        }
        let name = self.space.backend().name();
        if let Err(err) = e.resv.wait(Purpose::Invalidate, None) {
            log::error!("{name}: registration {e:?}: waiting for its fences: {err}");
        }
        match self.space.backend().dma_unmap(e.iova, e.len) {
            Ok(()) => {
                self.space.free_iova(e.iova, e.len);
                self.stats.pinned_bytes.fetch_sub(e.len, Ordering::Relaxed);
            }
            Err(err) if err.is_lost() || self.space.backend().is_lost() => {
                // Nothing can reach the range any more.
                self.space.free_iova(e.iova, e.len);
                self.stats.pinned_bytes.fetch_sub(e.len, Ordering::Relaxed);
            }
            Err(err) => {
                // C4: it may still be mapped; never hand the IOVA out again,
                // and keep counting its pages as pinned.
                log::error!("{name}: unmap of registration {e:?} failed: {err}; IOVA range leaked");
            }
        }
        if e.subscribed {
            self.release_subscription(e.gen);
        }
        *unmapped = true;
        drop(unmapped);
        self.stats.retired_pending.fetch_sub(1, Ordering::Relaxed);
        self.write_index().retired.retain(|x| !Arc::ptr_eq(x, e));
    }
}

impl Drop for CacheInner {
    fn drop(&mut self) {
        if let Some(a) = self.shim.get() {
            a.shim.detach(a.id);
        }
        // The thread has stopped (it cannot upgrade any more); finish what
        // it left.
        for w in self.worker.take_all() {
            self.process(w);
        }
    }
}
