//! Loom models of the real registration cache (R4), built with
//! `--cfg loom`, which switches `crate::sync` (the cache's index lock,
//! publication list, counters, worker queue, the entries' reservations and
//! the fences) to loom's types.
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p fdma --release --lib cache::loom_tests
//! ```
//!
//! Under loom the cache starts no worker thread; a model runs the queued
//! work itself with `CacheInner::run_queued`, which calls the worker's own
//! `CacheInner::process`.
//!
//! # Why the submitter signals its own fence
//!
//! The invalidation waits for every fence on the entries it retires (C3).
//! In these models nothing else would ever signal the submitter's fence, so
//! a wait on it would block for good and loom would report a deadlock. The
//! submitter therefore signals its fence as the last step of its thread
//! (after dropping the commit guard, like a completion that arrives later),
//! and the backend's unmap *probe* records whether that fence had been
//! signalled when the unmap ran. "The invalidation waited for the job's
//! fence" is then observable: the unmap of the entry the job committed
//! against happened with the fence signalled. Checking the entry's
//! reservation contents instead would not prove that the worker *waited*.
//!
//! Models are kept small (three threads at most, preemption bound 2 unless
//! `LOOM_MAX_PREEMPTIONS` says otherwise).

use super::test_backend::{self, Event, Log};
use super::*;
use crate::fence::{Fence, Timeline};
use crate::resv::Usage;
use crate::sync::{Arc, Mutex};
use loom::thread;

const ADDR: u64 = 0x10_0000;
const LEN: u64 = 4096;
/// The mark a model's invalidating thread records just before it publishes.
const PUBLISH: u32 = 1;

fn model(f: impl Fn() + Sync + Send + 'static) {
    model_bounded(2, f)
}

/// [`model`] with another default preemption bound.
fn model_bounded(bound: usize, f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(bound);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t0 = std::time::Instant::now();
    {
        let runs = runs.clone();
        b.check(move || {
            runs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            f();
        });
    }
    eprintln!(
        "loom: {} executions in {:.1?}",
        runs.load(std::sync::atomic::Ordering::Relaxed),
        t0.elapsed()
    );
}

/// A cache over a test backend whose unmap probe reports whether the fence
/// in `slot` (the submitter's, once created) was signalled at that moment.
fn setup() -> (RegCache, std::sync::Arc<Log>, Arc<Mutex<Option<Fence>>>) {
    let slot: Arc<Mutex<Option<Fence>>> = Arc::new(Mutex::new(None));
    let probe = {
        let slot = slot.clone();
        Box::new(move || slot.lock().unwrap().as_ref().map(Fence::is_signalled))
    };
    let (space, log) = test_backend::space(1024, Some(probe));
    let opts = CacheOptions {
        watch: Watch::Explicit,
        ..CacheOptions::default()
    };
    let cache = RegCache::new(space, &opts).unwrap();
    (cache, log, slot)
}

/// The submit of `channel::Channel::submit_once`, reduced to what R4 is
/// about: look up (or register), reserve a slot, drain the shim's events,
/// commit, create the fence,
/// add it, drop the guard. Then the job "completes": the fence signals.
/// Returns the entry the job committed against, or `None` if the commit
/// was refused (the real submit then looks up again).
fn submit(cache: &RegCache, slot: &Mutex<Option<Fence>>) -> Option<Arc<Entry>> {
    let tl = Timeline::new(0);
    let e = match cache.acquire(ADDR, LEN, DmaProt::RW) {
        Ok(e) => e,
        // The registration raced the invalidation and was dropped: the
        // real submit looks up again.
        Err(crate::Error::StaleRegistration { .. }) => return None,
        Err(e) => panic!("{e}"),
    };
    let mut reserved = e.resv.reserve(1);
    cache.sync_events();
    let guard = cache.commit(&[&e])?;
    let (fence, sig) = tl.create();
    *slot.lock().unwrap() = Some(fence.clone());
    reserved.add(&fence, Usage::Write);
    drop(guard);
    drop(reserved);
    sig.signal(Ok(())).unwrap();
    Some(e)
}

/// An invalidation of the submitter's page, as `RegCache::invalidate` does
/// it, with this thread standing in for the worker.
fn invalidate(cache: &RegCache, log: &Log) {
    log.mark(PUBLISH);
    let done = cache.inner.publish(ADDR..ADDR + LEN);
    cache.inner.run_queued();
    // Processed on this thread: already done, so this does not block.
    done.wait();
}

/// Whether `e`'s mapping (the last map of its IOVA: IOVAs are reused once
/// unmapped) was made before the publication's mark.
fn mapped_before_publish(events: &[Event], e: &Entry) -> bool {
    let map = events
        .iter()
        .rposition(|ev| matches!(*ev, Event::Map { iova, .. } if iova == e.iova))
        .expect("the entry's map was recorded");
    let mark = events
        .iter()
        .position(|ev| *ev == Event::Mark(PUBLISH))
        .expect("the publication was marked");
    map < mark
}

/// A submit on a registered page races an invalidation of that page.
/// `strict_c3` also checks that `invalidate` returned only once the page's
/// old mapping was gone.
fn commit_vs_invalidate(strict_c3: bool) {
    model(move || {
        let (cache, log, slot) = setup();
        let pre = cache.acquire(ADDR, LEN, DmaProt::RW).unwrap();

        let a = {
            let (cache, slot) = (cache.clone(), slot.clone());
            thread::spawn(move || submit(&cache, &slot))
        };
        let b = {
            let (cache, log) = (cache.clone(), log.clone());
            thread::spawn(move || invalidate(&cache, &log))
        };
        b.join().unwrap();
        if strict_c3 {
            // C3: "after invalidate returns no registration overlapping
            // the range exists": the old mapping is gone. (Its IOVA may
            // already serve a new registration, so look for its unmap.)
            assert!(
                log.unmaps().iter().any(|u| u.0 == pre.iova),
                "C3: invalidate returned with {pre:?} still mapped: {:?}",
                log.events()
            );
        }
        let committed = a.join().unwrap();
        // The worker catches up (a submit that registered afresh retired
        // the old entry through C7 and queued its unmap).
        cache.inner.run_queued();

        // The pre-registered entry is gone, unmapped exactly once.
        assert!(!pre.is_valid());
        let unmaps = log.unmaps();
        let pre_unmaps: Vec<_> = unmaps.iter().filter(|u| u.0 == pre.iova).collect();
        assert_eq!(pre_unmaps.len(), 1, "{:?}", log.events());
        match committed {
            None => {}
            Some(e) if Arc::ptr_eq(&e, &pre) => {
                // Never neither: the job used the old entry, so the unmap
                // saw its fence signalled: the invalidation waited for it.
                assert_eq!(pre_unmaps[0].2, Some(true), "R4: unmapped under a live job");
            }
            Some(e) => {
                // The lookup saw the publication and registered afresh: the
                // new mapping was made after it, and is still valid.
                assert!(!mapped_before_publish(&log.events(), &e));
                assert!(e.is_valid());
            }
        }
        drop(pre);
        cache.close();
        assert_eq!(log.mapped(), 0);
    });
}

/// R4: a submit on a registered page races an invalidation of that page.
/// Never neither: either the commit is refused, or the invalidation
/// unmaps the entry only after the job's fence has signalled.
#[test]
fn r4_commit_races_invalidation() {
    commit_vs_invalidate(false);
}

/// C3 on the same race: when `invalidate` returns, the page's old mapping
/// is gone, even when a submit whose lookup saw the publication registered
/// afresh and retired the old entry through C7 before the worker got to
/// it (the invalidation also waits for retired entries still mapped).
#[test]
fn c3_invalidate_returns_after_old_mapping_is_gone() {
    commit_vs_invalidate(true);
}

/// C2, C3, R4 with the registration itself in the race: the submitter
/// finds nothing and registers the page while the invalidation runs. After
/// both finish, a mapping made before the publication must not be
/// committed against unless the invalidation waited for the job, and must
/// not survive in the cache (a later lookup would hit the old pages).
/// A registration that started before the publication is checked against
/// it when it inserts, even after the invalidation was processed, and is
/// dropped (the submit then looks up again).
#[test]
fn r4_registration_races_invalidation() {
    model(|| {
        let (cache, log, slot) = setup();

        let a = {
            let (cache, slot) = (cache.clone(), slot.clone());
            thread::spawn(move || submit(&cache, &slot))
        };
        let b = {
            let (cache, log) = (cache.clone(), log.clone());
            thread::spawn(move || invalidate(&cache, &log))
        };
        let committed = a.join().unwrap();
        b.join().unwrap();

        let events = log.events();
        if let Some(e) = &committed {
            if mapped_before_publish(&events, e) {
                // An old mapping was used: the invalidation must have
                // retired it and unmapped it after the job's fence.
                let u: Vec<_> = log.unmaps().into_iter().filter(|u| u.0 == e.iova).collect();
                assert_eq!(
                    u.len(),
                    1,
                    "C2: a mapping made before the invalidation survived it: {events:?}"
                );
                assert_eq!(u[0].2, Some(true), "R4: unmapped under a live job");
            }
        }
        // No entry mapped before the publication is still served.
        let index = cache.inner.index.read().unwrap();
        for e in index.by_start.values() {
            assert!(
                !mapped_before_publish(&events, e),
                "C2: stale entry {e:?} still in the index after the invalidation: {events:?}"
            );
        }
        drop(index);
        drop(committed);
        cache.close();
        assert_eq!(log.mapped(), 0);
    });
}

/// C2, R4 with the MMU-notifier shim's publication: the monitor reads an
/// unmap event of a registered page (the application's munmap returns at
/// that moment) and publishes it through the ring; the application, once
/// its munmap has returned, submits a job on the same address; the drain
/// thread publishes and runs the worker. Whatever the interleaving, the job
/// never commits against the page's old mapping: either the lookup waits
/// for the odd count to move and drains the event, or it finds the range
/// published (or being published: it waits on the drain lock), or it
/// serves the page uncached. Models the real `sync_shim`, `drain_shim`,
/// ring and worker; only the userfaultfd read is replaced by the push.
#[test]
fn r4_shim_publication_races_lookup_and_worker() {
    // Four threads and the cache's locks: bound 1 keeps it to minutes.
    model_bounded(1, || {
        let (space, log) = test_backend::space(1024, None);
        let cache = RegCache::with_detached_shim(space).unwrap();
        let pre = cache.acquire(ADDR, LEN, DmaProt::RW).unwrap();
        assert!(pre.subscribed && !pre.oneshot);
        let read = Arc::new(crate::sync::AtomicBool::new(false));

        let monitor = {
            let (cache, log, read) = (cache.clone(), log.clone(), read.clone());
            thread::spawn(move || {
                let ring = &cache.shim().unwrap().ring;
                log.mark(PUBLISH);
                ring.begin();
                // The kernel hands the event over: munmap returns.
                read.store(true, crate::sync::Ordering::Release);
                ring.push(ADDR, ADDR + LEN);
                ring.end();
            })
        };
        let app = {
            let (cache, read) = (cache.clone(), read.clone());
            thread::spawn(move || {
                while !read.load(crate::sync::Ordering::Acquire) {
                    thread::yield_now();
                }
                let slot = Arc::new(Mutex::new(None));
                let e = submit(&cache, &slot);
                if let Some(e) = &e {
                    if e.oneshot {
                        cache.inner.release_oneshot(e);
                    }
                }
                e
            })
        };
        let drainer = {
            let cache = cache.clone();
            thread::spawn(move || {
                cache.inner.sync_shim();
                cache.inner.run_queued();
            })
        };
        monitor.join().unwrap();
        let committed = app.join().unwrap();
        drainer.join().unwrap();
        cache.inner.sync_shim();
        cache.inner.run_queued();

        if let Some(e) = &committed {
            assert!(
                !Arc::ptr_eq(e, &pre),
                "C2: a job committed against the old mapping after munmap returned: {:?}",
                log.events()
            );
            assert!(
                !mapped_before_publish(&log.events(), e),
                "C2: the job's mapping predates the event: {:?}",
                log.events()
            );
        }
        assert!(!pre.is_valid(), "the event retired the old entry");
        assert!(
            pre.stale_event(),
            "jobs on the old entry would report StaleMemory"
        );
        drop(committed);
        drop(pre);
        cache.close();
        assert_eq!(log.mapped(), 0, "{:?}", log.events());
    });
}
