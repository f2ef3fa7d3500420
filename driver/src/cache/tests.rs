//! Unit tests of the registration cache's internals over the bookkeeping
//! test backend ([`super::test_backend`]). Addresses are made up: the
//! backend never touches the memory it is given.

use super::test_backend::{self, Event, Log, MapFail};
use super::*;
use crate::fence::{Fence, Signaller, Timeline};
use crate::resv::Usage;
use std::time::Duration;

const P: u64 = PAGE;
/// A made-up page-aligned process address.
const BASE: u64 = 0x7000_0000;

fn addr(page: u64) -> u64 {
    BASE + page * P
}

fn opts(max_entries: u32, max_pinned_bytes: u64) -> CacheOptions {
    CacheOptions {
        max_entries,
        max_pinned_bytes,
        reserved_mappings: 0,
        // Fake addresses: nothing to subscribe. The shim has its own tests.
        watch: Watch::Explicit,
        verify_frames: false,
    }
}

/// Default limits, watched by the explicit API only.
fn explicit() -> CacheOptions {
    CacheOptions {
        watch: Watch::Explicit,
        ..CacheOptions::default()
    }
}

type Slot = std::sync::Arc<std::sync::Mutex<Option<Fence>>>;

/// A cache over a fresh test backend. The backend's unmap probe reports
/// whether the fence put in the returned slot had signalled by then.
fn setup(o: &CacheOptions) -> (RegCache, std::sync::Arc<Log>, Slot) {
    let slot: Slot = Default::default();
    let probe = {
        let slot = slot.clone();
        Box::new(move || slot.lock().unwrap().as_ref().map(Fence::is_signalled))
    };
    let (space, log) = test_backend::space(65535, Some(probe));
    (RegCache::new(space, o).unwrap(), log, slot)
}

fn get(c: &RegCache, page: u64, pages: u64) -> Arc<Entry> {
    c.acquire(addr(page), pages * P, DmaProt::RW).unwrap()
}

fn register(c: &RegCache, page: u64, pages: u64) -> Result<Registration> {
    // SAFETY: the test backend never touches the memory.
    unsafe { c.register(addr(page) as *const u8, (pages * P) as usize, DmaProt::RW) }
}

/// A job on `e`: an unsignalled fence in its reservation, as a submit
/// leaves it.
fn job_on(e: &Entry, tl: &Timeline) -> (Fence, Signaller) {
    let (f, s) = tl.create();
    e.resv.reserve(1).add(&f, Usage::Write);
    (f, s)
}

fn flush(c: &RegCache) {
    c.inner.worker.flush();
}

fn entry(start: u64, len: u64) -> Arc<Entry> {
    Arc::new(Entry::new(start, len, start, DmaProt::RW, 1, false))
}

#[test]
fn index_covering_and_overlapping_edges() {
    let mut ix = Index::default();
    // Adjacent: [1, 2) and [2, 4) pages; a gap; [6, 7).
    for (s, l) in [(1, 1), (2, 2), (6, 1)] {
        ix.by_start.insert(s * P, entry(s * P, l * P));
    }
    let starts = |v: Vec<Arc<Entry>>| v.iter().map(|e| e.start / P).collect::<Vec<_>>();
    let cov = |s: u64, e: u64| ix.covering(s, e).map(|e| e.start / P);

    // Exact bounds.
    assert_eq!(cov(P, 2 * P), Some(1));
    assert_eq!(cov(2 * P, 4 * P), Some(2));
    assert_eq!(cov(2 * P + 1, 4 * P - 1), Some(2));
    // One byte past an entry's end, or spanning two adjacent entries.
    assert_eq!(cov(2 * P, 4 * P + 1), None);
    assert_eq!(cov(2 * P - 1, 2 * P + 1), None);
    // In the gap, before the first, after the last.
    assert_eq!(cov(4 * P, 5 * P), None);
    assert_eq!(cov(0, P), None);
    assert_eq!(cov(7 * P, 8 * P), None);

    // Ends are exclusive: touching is not overlapping.
    assert_eq!(starts(ix.overlapping(0, P)), Vec::<u64>::new());
    assert_eq!(starts(ix.overlapping(4 * P, 6 * P)), Vec::<u64>::new());
    assert_eq!(starts(ix.overlapping(7 * P, 9 * P)), Vec::<u64>::new());
    // One byte on each side of a boundary.
    assert_eq!(starts(ix.overlapping(2 * P - 1, 2 * P + 1)), vec![1, 2]);
    assert_eq!(starts(ix.overlapping(4 * P - 1, 6 * P + 1)), vec![2, 6]);
    // Everything, in address order.
    assert_eq!(starts(ix.overlapping(0, u64::MAX)), vec![1, 2, 6]);
    // Inside one entry.
    assert_eq!(starts(ix.overlapping(3 * P, 3 * P + 1)), vec![2]);
}

#[test]
fn hit_needs_cover_and_rights_c1() {
    let (c, log, _) = setup(&explicit());
    let a = c.acquire(addr(0), 2 * P, DmaProt::READ).unwrap();
    // Sub-range of the entry: a hit.
    let b = c.acquire(addr(0) + 100, P, DmaProt::READ).unwrap();
    assert!(Arc::ptr_eq(&a, &b));
    assert_eq!((c.stats().hits, c.stats().misses), (1, 1));
    // More rights: a miss that keeps the old rights too, and retires the
    // old entry (same range: C7).
    let w = c.acquire(addr(0), 2 * P, DmaProt::WRITE).unwrap();
    assert!(!Arc::ptr_eq(&a, &w) && !a.is_valid());
    assert_eq!(w.prot, DmaProt::RW);
    flush(&c);
    assert!(!log.is_mapped(a.iova) && log.is_mapped(w.iova));
    c.close();
}

#[test]
fn lru_evicts_least_recently_used() {
    let (c, log, _) = setup(&opts(3, 1 << 30));
    let a = get(&c, 0, 1);
    let b = get(&c, 10, 1);
    let d = get(&c, 20, 1);
    // Use a again: b is now the least recently used.
    assert!(Arc::ptr_eq(&get(&c, 0, 1), &a));
    let e = get(&c, 30, 1);
    assert!(a.is_valid() && !b.is_valid() && d.is_valid() && e.is_valid());
    // Then d (a was used after it).
    assert!(Arc::ptr_eq(&get(&c, 0, 1), &a));
    let f = get(&c, 40, 1);
    assert!(a.is_valid() && !d.is_valid() && e.is_valid() && f.is_valid());
    flush(&c);
    let s = c.stats();
    assert_eq!((s.entries, s.evictions, s.retired_pending), (3, 2, 0));
    let unmapped: Vec<_> = log.unmaps().iter().map(|u| u.0).collect();
    assert_eq!(unmapped, vec![b.iova, d.iova]);
    c.close();
}

#[test]
fn entry_limit_c6() {
    let (c, log, _) = setup(&opts(2, 1 << 30));
    for i in 0..5 {
        get(&c, i * 10, 1);
        assert!(c.stats().entries <= 2);
    }
    assert_eq!(c.stats().evictions, 3);
    // Explicit registrations are never evicted: with two of them the
    // cached entries go, then a third is refused.
    let _r1 = register(&c, 100, 1).unwrap();
    let _r2 = register(&c, 110, 1).unwrap();
    assert_eq!(c.stats().evictions, 5);
    match register(&c, 120, 1) {
        Err(Error::CacheLimit {
            what: "registrations",
            limit: 2,
            requested: 3,
        }) => {}
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.acquire(addr(130), P, DmaProt::RW),
        Err(Error::CacheLimit { .. })
    ));
    assert_eq!(c.stats().limit_errors, 2);
    flush(&c);
    assert_eq!(log.mapped(), 2);
    c.close();
}

#[test]
fn pinned_byte_limit_c6() {
    let (c, log, _) = setup(&opts(100, 4 * P));
    let tl = Timeline::new(0);
    // Four pages cached; a fifth evicts.
    let x = get(&c, 0, 2);
    get(&c, 10, 2);
    // A job on x, which is the LRU entry: evicting it would free nothing
    // until the job signals (C5), so byte pressure takes the idle entry.
    let (_f, sig) = job_on(&x, &tl);
    let _r = register(&c, 20, 2).unwrap();
    assert!(
        x.is_valid(),
        "a busy entry was evicted for bytes it cannot free yet"
    );
    assert_eq!(c.stats().evictions, 1);
    assert_eq!(
        c.stats().pinned_bytes,
        4 * P,
        "the idle entry was unmapped at once"
    );
    // Two more pages: only x could go, and it is busy: refused, and x is
    // left alone.
    let r = register(&c, 30, 2);
    assert!(
        matches!(r, Err(Error::CacheLimit { .. })),
        "{r:?} with {:?}",
        c.stats()
    );
    assert!(x.is_valid());
    assert_eq!(c.stats().evictions, 1);
    assert!(log.is_mapped(x.iova), "C5: unmapped under a live job");
    // The job completes; now x is idle, and goes.
    sig.signal(Ok(())).unwrap();
    let _r2 = register(&c, 30, 2).unwrap();
    assert!(!x.is_valid());
    assert_eq!(c.stats().retired_pending, 0, "x was idle: unmapped at once");
    assert_eq!(c.stats().pinned_bytes, 4 * P);
    // Only explicit registrations remain: refused, nothing evicted.
    let ev = c.stats().evictions;
    match c.acquire(addr(40), P, DmaProt::RW) {
        Err(Error::CacheLimit { requested, .. }) => assert_eq!(requested, 5 * P),
        other => panic!("{other:?}"),
    }
    assert_eq!(c.stats().evictions, ev);
    // Larger than the backend's largest mapping: refused up front.
    assert!(matches!(
        c.acquire(addr(1000), 2 << 30, DmaProt::RW),
        Err(Error::CacheLimit {
            what: "mapping size",
            ..
        })
    ));
    c.close();
}

#[test]
fn map_failure_evicts_and_retries_once_c6() {
    let (c, log, _) = setup(&explicit());
    let x = get(&c, 0, 1);
    // ENOSPC (the container's mapping limit): evict x, retry, succeed.
    log.fail_next_map(MapFail::NoSpace);
    let y = get(&c, 10, 1);
    assert!(!x.is_valid() && y.is_valid());
    assert_eq!(c.stats().evictions, 1);
    let ev = log.events();
    let tail: Vec<_> = ev[ev.len() - 2..].to_vec();
    assert!(
        matches!(tail[..], [Event::Unmap { iova, .. }, Event::Map { vaddr, .. }] if iova == x.iova && vaddr == addr(10)),
        "{ev:?}"
    );
    // RLIMIT_MEMLOCK is pressure too.
    log.fail_next_map(MapFail::Memlock);
    let z = get(&c, 20, 1);
    assert!(!y.is_valid() && z.is_valid());
    // Nothing evictable (only an explicit registration): the error.
    let r = register(&c, 30, 1).unwrap();
    c.deregister(Registration { entry: z.clone() });
    flush(&c);
    log.fail_next_map(MapFail::NoSpace);
    assert!(matches!(
        c.acquire(addr(40), P, DmaProt::RW),
        Err(Error::Backend(BackendError::Refused {
            errno: libc::ENOSPC,
            ..
        }))
    ));
    // Not a pressure error: no eviction, no retry.
    let w = get(&c, 50, 1);
    let ev = c.stats().evictions;
    log.fail_next_map(MapFail::Invalid);
    assert!(c.acquire(addr(60), P, DmaProt::RW).is_err());
    assert!(w.is_valid() && r.is_valid());
    assert_eq!(c.stats().evictions, ev);
    // Nothing leaked by the failures.
    flush(&c);
    assert_eq!(c.stats().pinned_bytes, 2 * P);
    assert_eq!(c.space().iova_in_use(), 2 * P);
    c.close();
}

#[test]
fn overlap_retires_and_registers_exact_range_c7() {
    let (c, log, _) = setup(&explicit());
    let a = get(&c, 0, 2); // pages 0-1
    let b = get(&c, 2, 2); // pages 2-3, adjacent: a is untouched
    assert!(a.is_valid() && b.is_valid());
    // Covered: a hit, not an overlap.
    assert!(Arc::ptr_eq(&get(&c, 1, 1), &a));
    // Pages 1-2 straddle a and b: both retired, exactly pages 1-2 mapped.
    let n = get(&c, 1, 2);
    assert!(!a.is_valid() && !b.is_valid());
    assert_eq!((n.start, n.len), (addr(1), 2 * P));
    let s = c.stats();
    assert_eq!((s.entries, s.overlaps_retired, s.evictions), (1, 2, 0));
    // Page 0 again: it overlaps nothing now.
    let z = get(&c, 0, 1);
    assert!(n.is_valid() && z.is_valid());
    flush(&c);
    let mut unmapped: Vec<_> = log.unmaps().iter().map(|u| u.0).collect();
    unmapped.sort_unstable();
    let mut want = vec![a.iova, b.iova];
    want.sort_unstable();
    assert_eq!(unmapped, want);
    assert_eq!(c.stats().pinned_bytes, 3 * P);
    c.close();
}

#[test]
fn iova_quarantine_c4() {
    let (c, log, slot) = setup(&explicit());
    let tl = Timeline::new(0);
    let x = get(&c, 0, 1);
    let (f, sig) = job_on(&x, &tl);
    *slot.lock().unwrap() = Some(f.clone());
    // Retire x while its job runs (an overlapping request, C7).
    let y = get(&c, 0, 2);
    assert!(!x.is_valid());
    // x's IOVA is not handed out again, and x stays mapped.
    let z = get(&c, 10, 1);
    assert!(![y.iova, z.iova].contains(&x.iova), "{x:?} {y:?} {z:?}");
    std::thread::sleep(Duration::from_millis(50));
    assert!(log.is_mapped(x.iova));
    assert_eq!(c.stats().retired_pending, 1);
    // The job completes: the worker unmaps, after the signal.
    sig.signal(Ok(())).unwrap();
    flush(&c);
    assert_eq!(log.unmaps(), vec![(x.iova, P, Some(true))]);
    assert_eq!(c.stats().retired_pending, 0);
    // Now the IOVA can be reused (the allocator takes the smallest fitting
    // block: x's freed page).
    let w = get(&c, 20, 1);
    assert_eq!(w.iova, x.iova);
    c.close();
}

#[test]
fn invalidate_waits_for_jobs_c3() {
    let (c, log, slot) = setup(&explicit());
    let tl = Timeline::new(0);
    let x = get(&c, 0, 2);
    let other = get(&c, 10, 1);
    let (f, sig) = job_on(&x, &tl);
    *slot.lock().unwrap() = Some(f);
    let signaller = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(50));
        sig.signal(Ok(())).unwrap();
    });
    // A partial range invalidates the whole entry.
    c.invalidate(addr(1) as *const u8, 1).unwrap();
    assert!(!x.is_valid() && other.is_valid());
    assert_eq!(log.unmaps(), vec![(x.iova, 2 * P, Some(true))]);
    let s = c.stats();
    assert_eq!((s.invalidations_api, s.invalidated_entries), (1, 1));
    assert_eq!((s.entries, s.pinned_bytes), (1, P));
    signaller.join().unwrap();
    // A fresh lookup registers anew.
    assert!(!Arc::ptr_eq(&get(&c, 0, 1), &x));
    c.close();
}

#[test]
fn close_brings_counters_to_zero_c11() {
    let (c, log, _) = setup(&opts(4, 1 << 30));
    let tl = Timeline::new(0);
    let mut sigs = Vec::new();
    for i in 0..6 {
        let e = get(&c, i * 4, 1 + i % 3);
        sigs.push(job_on(&e, &tl).1);
    }
    let _r = register(&c, 100, 3).unwrap();
    let r2 = register(&c, 200, 1).unwrap();
    c.deregister(r2);
    for s in sigs {
        s.signal(Ok(())).unwrap();
    }
    c.close();
    let s = c.stats();
    assert_eq!(
        (s.entries, s.pinned_bytes, s.retired_pending),
        (0, 0, 0),
        "{s:?}"
    );
    assert_eq!(log.mapped(), 0);
    assert_eq!(c.space().iova_in_use(), 0);
}
