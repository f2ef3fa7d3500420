//! The shim against the real kernel (userfaultfd) over the recording test
//! backend: what the integration suite cannot provoke.

use super::super::test_backend;
use super::super::{CacheOptions, RegCache};
use crate::backend::DmaProt;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LEN: usize = 64 << 10;

fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "{what}: not within 10 s"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A monitor that dies (a read error) degrades the cache, never hangs it:
/// every registration is invalidated, later lookups are served uncached,
/// and an munmap of a range that was subscribed returns (the userfaultfd
/// is closed, so nobody waits for a reader).
#[test]
fn a_dead_monitor_invalidates_everything_and_serves_uncached() {
    let (space, _log) = test_backend::space(65535, None);
    // A shim of its own: the process's serves the other tests.
    let c = RegCache::with_private_shim(space, &CacheOptions::default(), super::ring::CAPACITY)
        .unwrap();
    assert!(c.shim_active(), "userfaultfd unavailable: {:?}", c.stats());
    let mut m = memmap2::MmapMut::map_anon(LEN).unwrap();
    m.fill(1);
    let addr = m.as_ptr() as u64;
    let e = c.acquire(addr, LEN as u64, DmaProt::RW).unwrap();
    assert!(e.subscribed && !e.oneshot);
    assert_eq!(c.stats().subscriptions, 1);

    c.inner.shim.get().unwrap().shim.fail_monitor();
    poll_until("the monitor's death is published", || {
        let s = c.stats();
        !c.shim_active() && s.entries == 0 && s.invalidations_shim == 1
    });
    assert!(!e.is_valid());
    assert!(e.stale_event(), "jobs on it would report StaleMemory");

    let again = c.acquire(addr, LEN as u64, DmaProt::RW).unwrap();
    assert!(again.oneshot, "served uncached after the monitor died");
    assert_eq!(c.stats().uncached, 1);
    c.inner.release_oneshot(&again);

    // The range was subscribed: with a live but unread userfaultfd this
    // munmap would wait for ever.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        drop(m);
        let _ = tx.send(());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("munmap of a once-subscribed range returns");
    c.close();
    let s = c.stats();
    assert_eq!(
        (s.entries, s.pinned_bytes, s.retired_pending),
        (0, 0, 0),
        "{s:?}"
    );
}

/// An munmap of a subscribed range is published by the shim alone, and
/// the worker unmaps the entry and drops its subscription.
#[test]
fn an_munmap_invalidates_through_the_shim() {
    let (space, log) = test_backend::space(65535, None);
    let c = RegCache::new(space, &CacheOptions::default()).unwrap();
    let m = memmap2::MmapMut::map_anon(LEN).unwrap();
    let addr = m.as_ptr() as u64;
    let e = c.acquire(addr, LEN as u64, DmaProt::RW).unwrap();
    drop(m);
    // The worker unmaps, then releases the subscription and the counters.
    poll_until(
        "the entry is unmapped and its subscription released",
        || {
            let s = c.stats();
            s.retired_pending == 0 && s.subscriptions == 0
        },
    );
    assert!(log.unmaps().iter().any(|u| u.0 == e.iova));
    let s = c.stats();
    assert_eq!(
        (s.entries, s.invalidations_shim, s.subscriptions),
        (0, 1, 0),
        "{s:?}"
    );
    assert!(!e.is_valid() && e.stale_event());
    c.close();
}

/// Near the VMA budget, new ranges are served uncached (counted), never
/// trusted unwatched; a subscription freed by an unmapped entry makes room.
#[test]
fn past_the_vma_budget_memory_is_served_uncached() {
    let (space, _log) = test_backend::space(65535, None);
    let c = RegCache::with_private_shim(space, &CacheOptions::default(), super::ring::CAPACITY)
        .unwrap();
    c.inner.shim.get().unwrap().shim.set_budget(1);
    let a = memmap2::MmapMut::map_anon(LEN).unwrap();
    let b = memmap2::MmapMut::map_anon(LEN).unwrap();
    let ea = c
        .acquire(a.as_ptr() as u64, LEN as u64, DmaProt::RW)
        .unwrap();
    assert!(ea.subscribed && !ea.oneshot);
    let eb = c
        .acquire(b.as_ptr() as u64, LEN as u64, DmaProt::RW)
        .unwrap();
    assert!(eb.oneshot && !eb.subscribed, "over budget: uncached");
    c.inner.release_oneshot(&eb);
    let s = c.stats();
    assert_eq!((s.uncached, s.subscriptions, s.entries), (1, 1, 1), "{s:?}");
    // A's entry goes (its memory is unmapped): B fits now.
    drop(a);
    poll_until("A's subscription is released", || {
        c.stats().subscriptions == 0
    });
    let eb = c
        .acquire(b.as_ptr() as u64, LEN as u64, DmaProt::RW)
        .unwrap();
    assert!(eb.subscribed && !eb.oneshot);
    c.close();
}

/// Two devices' caches on the same memory share the process's shim: both
/// cache it (one subscription per cache, one userfaultfd), and one munmap
/// invalidates both. The range stays subscribed until the second entry
/// goes.
#[test]
fn two_devices_caches_share_the_shim_and_both_see_an_munmap() {
    let (s1, _l1) = test_backend::space(65535, None);
    let (s2, _l2) = test_backend::space(65535, None);
    let c1 = RegCache::new(s1, &CacheOptions::default()).unwrap();
    let c2 = RegCache::new(s2, &CacheOptions::default()).unwrap();
    assert!(c1.shim_active() && c2.shim_active());
    assert!(std::sync::Arc::ptr_eq(
        &c1.inner.shim.get().unwrap().shim,
        &c2.inner.shim.get().unwrap().shim
    ));
    let m = memmap2::MmapMut::map_anon(LEN).unwrap();
    let addr = m.as_ptr() as u64;
    let e1 = c1.acquire(addr, LEN as u64, DmaProt::RW).unwrap();
    let e2 = c2.acquire(addr, LEN as u64, DmaProt::RW).unwrap();
    assert!(e1.subscribed && !e1.oneshot);
    assert!(
        e2.subscribed && !e2.oneshot,
        "the second device caches it too"
    );
    // Hits on both.
    assert!(Arc::ptr_eq(
        &c2.acquire(addr, LEN as u64, DmaProt::RW).unwrap(),
        &e2
    ));
    drop(m);
    poll_until("both caches unmapped the range", || {
        let (a, b) = (c1.stats(), c2.stats());
        a.entries == 0 && b.entries == 0 && a.subscriptions == 0 && b.subscriptions == 0
    });
    assert!(!e1.is_valid() && !e2.is_valid());
    let (a, b) = (c1.stats(), c2.stats());
    // (At least: another test's munmap at a reused address may also
    // overlap a retired entry here.)
    assert!(
        a.invalidations_shim >= 1 && b.invalidations_shim >= 1,
        "{a:?} {b:?}"
    );
    assert_eq!((a.uncached, b.uncached), (0, 0));
    c1.close();
    // The second cache is still watched after the first one closed.
    assert!(c2.shim_active());
    let m = memmap2::MmapMut::map_anon(LEN).unwrap();
    let e = c2
        .acquire(m.as_ptr() as u64, LEN as u64, DmaProt::RW)
        .unwrap();
    assert!(e.subscribed && !e.oneshot);
    drop(m);
    poll_until("the munmap reached the remaining cache", || {
        c2.stats().entries == 0
    });
    c2.close();
}

/// A ring that overflows (here: the drain held off while the monitor reads
/// more unmaps than the ring holds) invalidates every registration, also
/// those no event was read for, and the shim keeps working afterwards.
#[test]
fn a_ring_overflow_invalidates_everything_and_the_shim_goes_on() {
    let (space, _log) = test_backend::space(65535, None);
    let c = RegCache::with_private_shim(space, &CacheOptions::default(), 2).unwrap();
    let maps: Vec<_> = (0..4)
        .map(|_| memmap2::MmapMut::map_anon(LEN).unwrap())
        .collect();
    let entries: Vec<_> = maps
        .iter()
        .map(|m| {
            c.acquire(m.as_ptr() as u64, LEN as u64, DmaProt::RW)
                .unwrap()
        })
        .collect();
    assert!(entries.iter().all(|e| e.subscribed));
    let shim = &c.inner.shim.get().unwrap().shim;
    let mut maps = maps.into_iter();
    let kept = maps.next_back().unwrap();
    {
        let _held = shim.hold_drain();
        // Three unmaps into a ring of two: each munmap returns once the
        // monitor has read its event; the third finds the ring full.
        for m in maps {
            drop(m);
        }
        // The monitor pushes just after its read: wait for the overflow
        // to be recorded before a drain may make room.
        poll_until("the ring overflows", || shim.ring.overflows() == 1);
        assert!(shim.ring.pending());
    }
    // The drain thread publishes the overflow: the whole address space.
    poll_until("every entry is invalidated", || c.stats().entries == 0);
    assert!(entries.iter().all(|e| !e.is_valid()));
    assert!(
        entries[3].stale_event(),
        "no event for it, still invalidated"
    );
    assert!(c.shim_active(), "an overflow is not a dead monitor");
    // The memory nobody unmapped is registered again, and watched.
    let again = c
        .acquire(kept.as_ptr() as u64, LEN as u64, DmaProt::RW)
        .unwrap();
    assert!(again.subscribed && !again.oneshot && again.is_valid());
    drop(kept);
    poll_until("the new entry is invalidated by its munmap", || {
        c.stats().entries == 0
    });
    c.close();
    let s = c.stats();
    assert_eq!((s.pinned_bytes, s.retired_pending), (0, 0), "{s:?}");
}
