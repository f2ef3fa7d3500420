//! The registration cache through the driver: jobs on process memory, on
//! the simulator (or the card `FDMA_DEVICE` names). Each test names the
//! rule of the cache's contract (`driver/src/cache/mod.rs`, design
//! contracts §3) it checks; the counters (C12) are asserted along the way.

mod common;

use common::cache_rig::*;
use common::{assert_same, pattern, rig, rig_with, wait, Rig};
use fdma::backend::{DmaProt, DmaSource};
use fdma::cache::{CacheOptions, Watch};
use fdma::{Endpoint, Error, Job};

/// Process memory in both directions, through the cache: the second use of
/// the same memory hits (C1), and the data is right.
#[test]
fn user_memory_round_trip_hits_the_second_time() {
    let r = rig();
    let ch = r.dev.channel(0).unwrap();
    let cache = r.dev.cache().unwrap();
    // Pages of their own: ranges that share a page with another
    // registration retire each other (C7).
    let mut src = memmap2::MmapMut::map_anon(64 * 1024).unwrap();
    src.copy_from_slice(&pattern(1, 64 * 1024));
    let mut dst = memmap2::MmapMut::map_anon(64 * 1024).unwrap();
    for round in 0..2 {
        let mut job = Job::new();
        job.h2c_user(&src, 0);
        wait(&ch.submit(&job).unwrap()).unwrap();
        let mut job = Job::new();
        // SAFETY: `dst` is not touched until the fence has signalled.
        unsafe { job.c2h_user(0, dst.as_mut_ptr(), dst.len()) };
        wait(&ch.submit(&job).unwrap()).unwrap();
        assert_same(&dst, &src, &format!("round {round}"));
        dst.fill(0);
    }
    let s = cache.stats();
    assert_eq!(s.misses, 2, "{s:?}");
    assert_eq!(s.hits, 2, "{s:?}");
    r.dev.close().unwrap();
}

/// C1 (hit correctness) and C12 (counters): the same range twice is one
/// registration and a hit; a sub-range of an entry hits it too; a range
/// no entry covers misses and registers; the registration time is
/// counted.
#[test]
fn c1_same_range_hits_and_another_range_misses() {
    let r = rig();
    let a = Anon::new(64 * KIB);
    a.write(&pattern(11, a.len));
    let b = Anon::new(32 * KIB);
    b.write(&pattern(12, b.len));

    h2c(&r, 0, a.bytes(), 0);
    let s = stats(&r);
    assert_eq!(
        (s.misses, s.hits, s.registrations, s.entries),
        (1, 0, 1, 1),
        "first use: {s:?}"
    );
    assert_eq!(s.pinned_bytes, 64 * KIB as u64, "{s:?}");
    assert!(s.register_ns > 0, "registration time is counted: {s:?}");

    h2c(&r, 0, a.bytes(), 0x10_0000);
    // Two pages from the middle: covered by the entry.
    h2c(&r, 0, &a.bytes()[8 * KIB..16 * KIB], 0x20_0000);
    let s = stats(&r);
    assert_eq!(
        (s.misses, s.hits, s.registrations, s.entries),
        (1, 2, 1, 1),
        "same range, then a covered sub-range: {s:?}"
    );

    h2c(&r, 0, b.bytes(), 0x30_0000);
    let s = stats(&r);
    assert_eq!(
        (s.misses, s.hits, s.registrations, s.entries),
        (2, 2, 2, 2),
        "another range: {s:?}"
    );
    assert_eq!(s.pinned_bytes, 96 * KIB as u64, "{s:?}");
    assert_eq!(
        (s.evictions, s.overlaps_retired, s.retired_pending),
        (0, 0, 0),
        "{s:?}"
    );

    assert_same(&card(&r, 0, a.len), &a.read(), "a");
    assert_same(&card(&r, 0x10_0000, a.len), &a.read(), "a again");
    assert_same(
        &card(&r, 0x20_0000, 8 * KIB),
        &a.read()[8 * KIB..16 * KIB],
        "sub-range of a",
    );
    assert_same(&card(&r, 0x30_0000, b.len), &b.read(), "b");
}

/// C1 and C7 (partial overlap): a request that overlaps an entry without
/// being covered by it misses; the old entry is retired (counted as an
/// overlap, not an eviction) and exactly the new range is registered.
#[test]
fn c1_c7_partial_overlap_retires_the_old_entry_and_registers_the_new_range() {
    let r = rig();
    let m = Anon::new(64 * KIB);
    m.write(&pattern(21, m.len));
    let all = m.bytes();

    h2c(&r, 0, &all[..32 * KIB], 0);
    let s0 = stats(&r);
    assert_eq!((s0.registrations, s0.entries), (1, 1), "{s0:?}");

    // [16K, 48K) overlaps [0, 32K) and is not covered by it.
    h2c(&r, 0, &all[16 * KIB..48 * KIB], 0x10_0000);
    let s = stats(&r);
    assert_eq!(s.misses, 2, "{s:?}");
    assert_eq!(s.registrations, 2, "{s:?}");
    assert_eq!(s.overlaps_retired, 1, "the old entry is retired: {s:?}");
    assert_eq!(s.evictions, 0, "an overlap is not an eviction: {s:?}");
    assert_eq!(s.entries, 1, "one entry: the new range: {s:?}");
    assert_eq!(s.retired_bytes, 32 * KIB as u64, "{s:?}");
    // The new entry is exactly [16K, 48K): it covers its own range...
    h2c(&r, 0, &all[16 * KIB..48 * KIB], 0x20_0000);
    let s = stats(&r);
    assert_eq!((s.hits, s.registrations), (1, 2), "{s:?}");
    // ...and not what only the old entry covered.
    h2c(&r, 0, &all[..4 * KIB], 0x30_0000);
    let s = stats(&r);
    assert_eq!((s.hits, s.misses, s.registrations), (1, 3, 3), "{s:?}");
    assert_eq!(s.overlaps_retired, 1, "[0, 4K) overlaps nothing: {s:?}");
    assert_eq!(s.entries, 2, "{s:?}");
    // No ratchet: what stays pinned is the two live entries (once the
    // retired one is unmapped), not their union grown.
    poll_until("the retired entry is unmapped", || {
        stats(&r).retired_pending == 0
    });
    assert_eq!(stats(&r).pinned_bytes, 36 * KIB as u64);

    let want = m.read();
    assert_same(&card(&r, 0, 32 * KIB), &want[..32 * KIB], "first range");
    assert_same(
        &card(&r, 0x10_0000, 32 * KIB),
        &want[16 * KIB..48 * KIB],
        "overlapping range",
    );
    assert_same(
        &card(&r, 0x20_0000, 32 * KIB),
        &want[16 * KIB..48 * KIB],
        "overlapping range, hit",
    );
    assert_same(
        &card(&r, 0x30_0000, 4 * KIB),
        &want[..4 * KIB],
        "first page",
    );
}

/// C1 (rights): an entry registered read-only by `h2c_user` does not serve
/// a device write: `c2h_user` on the same range misses and registers it
/// again with write access (keeping read, so that readers and writers do
/// not alternate registrations), retiring the read-only one. The data
/// lands in the process's memory.
#[test]
fn c1_permission_mismatch_misses_and_registers_with_write_access() {
    let r = rig();
    let m = Anon::new(32 * KIB);
    m.write(&pattern(31, m.len));
    h2c(&r, 0, m.bytes(), 0);
    assert_same(&card(&r, 0, m.len), &m.read(), "device read");
    let s = stats(&r);
    assert_eq!((s.misses, s.registrations), (1, 1), "{s:?}");

    let new = pattern(32, m.len);
    r.dev.card_write(0x10_0000, &new).unwrap();
    c2h(&r, 0x10_0000, m.p, m.len);
    assert_same(&m.read(), &new, "device write into process memory");
    let s = stats(&r);
    assert_eq!(s.hits, 0, "a read-only entry never serves a write: {s:?}");
    assert_eq!((s.misses, s.registrations), (2, 2), "{s:?}");
    assert_eq!(s.overlaps_retired, 1, "the read-only entry went: {s:?}");
    assert_eq!(s.entries, 1, "{s:?}");

    // The new entry grants both: a read and a write hit it.
    h2c(&r, 0, m.bytes(), 0x20_0000);
    c2h(&r, 0x10_0000, m.p, m.len);
    let s = stats(&r);
    assert_eq!((s.hits, s.misses, s.registrations), (2, 2, 2), "{s:?}");
    assert_same(&card(&r, 0x20_0000, m.len), &new, "device read, hit");
}

/// Register `m` through the cache for device reads and writes (a read,
/// then a write: C1's permission upgrade), checking the data.
fn use_both_ways(r: &Rig, m: &Anon, seed: u64) {
    m.write(&pattern(seed, m.len));
    h2c(r, 0, m.bytes(), 0x40_0000);
    assert_same(&card(r, 0x40_0000, m.len), &m.read(), "device read");
    let w = pattern(seed + 1, m.len);
    r.dev.card_write(0x50_0000, &w).unwrap();
    c2h(r, 0x50_0000, m.p, m.len);
    assert_same(&m.read(), &w, "device write");
}

fn require_pinning(r: &Rig) {
    assert!(
        r.dev.backend().dma_limits().vaddr_pinned,
        "{}: mappings by address are not pinned on this host (no io_uring): D5 does not \
         hold and the re-back tests prove nothing",
        r.dev.name()
    );
}

/// D5 and C3, positive: an application that calls `invalidate()` before
/// re-backing its memory (MAP_FIXED, or munmap and mmap again) gets the
/// device on the NEW pages: it reads the new data, and its writes show up
/// in the new pages. C12: the invalidation and its entry are counted.
#[test]
fn d5_c3_invalidate_before_reback_moves_the_device_to_the_new_pages() {
    let r = rig();
    require_pinning(&r);
    let cache = r.dev.cache().unwrap();
    let m = Anon::new(64 * KIB);
    for (round, how) in [Reback::MapFixed, Reback::UnmapThenMap]
        .into_iter()
        .enumerate()
    {
        use_both_ways(&r, &m, 100 + round as u64 * 10);
        let before = cache.stats();
        assert_eq!(before.entries, 1, "{how:?}: {before:?}");

        cache.invalidate(m.p, m.len).unwrap();
        let s = cache.stats();
        assert_eq!(
            s.invalidations_api,
            before.invalidations_api + 1,
            "{how:?}: {s:?}"
        );
        assert_eq!(
            s.invalidated_entries,
            before.invalidated_entries + 1,
            "{how:?}: {s:?}"
        );
        // invalidate() returns when the entry is unmapped and unpinned.
        assert_eq!(
            (s.entries, s.retired_pending, s.pinned_bytes),
            (0, 0, 0),
            "{how:?}: {s:?}"
        );

        m.reback(how);
        let new = pattern(200 + round as u64, m.len);
        m.write(&new);
        h2c(&r, 0, m.bytes(), 0x60_0000);
        assert_same(
            &card(&r, 0x60_0000, m.len),
            &new,
            &format!("{how:?}: the device reads the new pages"),
        );
        let w = pattern(300 + round as u64, m.len);
        r.dev.card_write(0x70_0000, &w).unwrap();
        c2h(&r, 0x70_0000, m.p, m.len);
        assert_same(
            &m.read(),
            &w,
            &format!("{how:?}: the device's writes are in the new pages"),
        );
        let s = cache.stats();
        assert_eq!(
            s.misses,
            before.misses + 2,
            "{how:?}: after the invalidation, both uses miss: {s:?}"
        );
        assert!(s.invalidate_wait_ns > 0, "{s:?}");
    }
}

/// D5, negative control for the test above (it can fail): with the shim
/// off and without `invalidate()`, the cache keeps serving the old registration (a hit) and
/// the device keeps reaching the OLD pages: it reads the old data, and its
/// writes land where the application cannot see them.
#[test]
fn d5_without_invalidate_the_device_reaches_the_old_pages() {
    // The explicit API only: the shim would catch the re-backing (its own
    // tests, `shim.rs`, use this as their negative control too).
    let r = rig_with(
        &[],
        opts_with(CacheOptions {
            watch: Watch::Explicit,
            ..Default::default()
        }),
    );
    require_pinning(&r);
    let m = Anon::new(64 * KIB);
    for (round, how) in [Reback::MapFixed, Reback::UnmapThenMap]
        .into_iter()
        .enumerate()
    {
        let seed = 400 + round as u64 * 10;
        use_both_ways(&r, &m, seed);
        // What the old pages hold now: the device's write.
        let old = pattern(seed + 1, m.len);
        let before = stats(&r);

        m.reback(how);
        let new = pattern(500 + round as u64, m.len);
        m.write(&new);
        h2c(&r, 0, m.bytes(), 0x60_0000);
        assert_same(
            &card(&r, 0x60_0000, m.len),
            &old,
            &format!("{how:?}: without invalidate() the device reads the old pages"),
        );
        r.dev
            .card_write(0x70_0000, &pattern(600 + round as u64, m.len))
            .unwrap();
        c2h(&r, 0x70_0000, m.p, m.len);
        assert_same(
            &m.read(),
            &new,
            &format!("{how:?}: the device's writes went to the old pages"),
        );
        let s = stats(&r);
        assert_eq!(
            (s.hits, s.misses),
            (before.hits + 2, before.misses),
            "{how:?}: the stale entry served both: {s:?}"
        );
        // Let the next round (and the teardown) start clean.
        r.dev.cache().unwrap().invalidate(m.p, m.len).unwrap();
    }
}

/// C5 (eviction never blocks on the device) and C6 (entry limit): with
/// room for one entry, a job on range A is held in flight by a stalled
/// channel; a job on range B evicts A and completes on another channel
/// while A's job is still stalled. A stays mapped (retired, pending) until
/// its job finishes with the right data; then it is unmapped and its bytes
/// unpinned.
#[test]
fn c5_eviction_does_not_wait_for_a_job_in_flight() {
    let r = rig_with(
        &[],
        opts_with(CacheOptions {
            max_entries: 1,
            ..Default::default()
        }),
    );
    let a = Anon::new(64 * KIB);
    a.write(&pattern(41, a.len));
    let b = Anon::new(32 * KIB);
    b.write(&pattern(42, b.len));
    let fi = r.dev.faults().unwrap();
    let c0 = r.dev.channel(0).unwrap();

    fi.stall(0, true).unwrap();
    let mut ja = Job::new();
    ja.h2c_user(a.bytes(), 0);
    let fa = c0.submit(&ja).unwrap();
    // B's registration needs A's slot: A is evicted, B's job runs at once.
    h2c(&r, 1, b.bytes(), 0x10_0000);
    let s = stats(&r);
    assert!(!fa.is_signalled(), "A's job is still stalled");
    assert_eq!(s.evictions, 1, "{s:?}");
    assert_eq!(s.entries, 1, "never more entries than the limit: {s:?}");
    assert_eq!(s.retired_pending, 1, "A waits for its job: {s:?}");
    assert_eq!(
        s.pinned_bytes,
        96 * KIB as u64,
        "A's pages are still pinned: {s:?}"
    );
    assert_same(&card(&r, 0x10_0000, b.len), &b.read(), "B's job");

    fi.stall(0, false).unwrap();
    wait(&fa).unwrap();
    assert_same(
        &card(&r, 0, a.len),
        &a.read(),
        "A's job, finished after A's eviction",
    );
    poll_until("A is unmapped once its job has signalled", || {
        stats(&r).retired_pending == 0
    });
    let s = stats(&r);
    assert_eq!(s.pinned_bytes, 32 * KIB as u64, "only B is pinned: {s:?}");
    assert_eq!((s.entries, s.registrations), (1, 2), "{s:?}");
}

/// C4 (IOVA quarantine) and C5: an explicit registration deregistered
/// while a job on it is in flight stays mapped at its IOVA: the backend
/// refuses a map over it, and a new registration of the same size gets
/// another IOVA. Once the job has finished (with the right data) the
/// mapping goes and the bytes are unpinned.
#[test]
fn c4_deregistered_iova_is_not_reused_while_a_job_uses_it() {
    let r = rig_with(&[], opts_with(CacheOptions::default()));
    let cache = r.dev.cache().unwrap();
    let len = 64 * KIB;
    let a = Anon::new(len);
    a.write(&pattern(51, len));
    let b = Anon::new(len);
    let fi = r.dev.faults().unwrap();
    let c0 = r.dev.channel(0).unwrap();

    // SAFETY: the device only reads A.
    let ra = unsafe { cache.register(a.p, len, DmaProt::READ) }.unwrap();
    fi.stall(0, true).unwrap();
    let mut ja = Job::new();
    ja.push(
        Endpoint::Reg {
            reg: ra.clone(),
            offset: 0,
        },
        Endpoint::Card(0),
        len as u64,
    );
    let fa = c0.submit(&ja).unwrap();
    cache.deregister(ra.clone());
    assert!(!ra.is_valid());
    // SAFETY: the device only reads B.
    let rb = unsafe { cache.register(b.p, len, DmaProt::READ) }.unwrap();
    let s = cache.stats();
    assert!(!fa.is_signalled(), "A's job is still stalled");
    assert_eq!(s.retired_pending, 1, "{s:?}");
    assert_eq!(s.pinned_bytes, 2 * len as u64, "{s:?}");
    let (ia, ib) = (ra.iova(), rb.iova());
    assert!(
        ib + len as u64 <= ia || ia + len as u64 <= ib,
        "B's IOVA {ib:#x} reuses A's {ia:#x} while A's job runs"
    );
    // The backend still holds A's mapping.
    let probe = Anon::new(4 * KIB);
    let e = r
        .dev
        .backend()
        .dma_map(ia, 4096, DmaSource::Vaddr(probe.p), DmaProt::READ)
        .expect_err("a map over A's IOVA while A is retired but in use");
    assert!(
        e.to_string().contains("refused") || e.to_string().contains("EEXIST"),
        "{e}"
    );

    fi.stall(0, false).unwrap();
    wait(&fa).unwrap();
    assert_same(
        &card(&r, 0, len),
        &a.read(),
        "A's job after A's deregistration",
    );
    poll_until("A is unmapped once its job has signalled", || {
        cache.stats().retired_pending == 0
    });
    let s = cache.stats();
    assert_eq!(s.pinned_bytes, len as u64, "only B is pinned: {s:?}");
    assert_eq!(s.evictions, 1, "a deregistration counts as one: {s:?}");
    cache.deregister(rb);
    poll_until("B is unmapped", || cache.stats().pinned_bytes == 0);
}

/// The explicit API (C1, C3, R4): a registration serves jobs through
/// `Endpoint::Reg` (both directions, at an offset) and lookups of process
/// memory it covers; deregistered or invalidated, it is stale: jobs on it
/// fail with `StaleRegistration`, and `is_valid()` says so. Rights are
/// checked; a deregistration after an invalidation changes no counter.
#[test]
fn explicit_register_deregister_invalidate() {
    let r = rig();
    let cache = r.dev.cache().unwrap();
    let c0 = r.dev.channel(0).unwrap();
    let len = 64 * KIB;
    let m = Anon::new(len);
    m.write(&pattern(61, len));

    // SAFETY: no reference to `m` is live while jobs run.
    let reg = unsafe { cache.register(m.p, len, DmaProt::RW) }.unwrap();
    assert_eq!(reg.addr(), m.p as u64);
    assert_eq!(reg.len(), len as u64);
    assert!(reg.is_valid());
    let s = cache.stats();
    assert_eq!(
        (s.registrations, s.entries, s.pinned_bytes),
        (1, 1, len as u64),
        "{s:?}"
    );

    // Device read at an offset.
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: reg.clone(),
            offset: 4096,
        },
        Endpoint::Card(0),
        8192,
    );
    wait(&c0.submit(&j).unwrap()).unwrap();
    assert_same(&card(&r, 0, 8192), &m.read()[4096..12288], "Reg read");
    // Device write at an offset.
    let w = pattern(62, 8192);
    r.dev.card_write(0x10_0000, &w).unwrap();
    let mut j = Job::new();
    j.push(
        Endpoint::Card(0x10_0000),
        Endpoint::Reg {
            reg: reg.clone(),
            offset: 16384,
        },
        8192,
    );
    wait(&c0.submit(&j).unwrap()).unwrap();
    assert_same(&m.read()[16384..24576], &w, "Reg write");
    // A job on process memory it covers hits it.
    h2c(&r, 0, &m.bytes()[..4096], 0x20_0000);
    let s = cache.stats();
    assert_eq!((s.hits, s.misses, s.registrations), (1, 0, 1), "{s:?}");
    // Beyond its end: refused before anything is touched.
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: reg.clone(),
            offset: len as u64 - 4096,
        },
        Endpoint::Card(0),
        8192,
    );
    assert!(matches!(c0.submit(&j), Err(Error::Invalid(_))));

    cache.deregister(reg.clone());
    assert!(!reg.is_valid());
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: reg.clone(),
            offset: 0,
        },
        Endpoint::Card(0),
        4096,
    );
    match c0.submit(&j) {
        Err(Error::StaleRegistration { addr, len: l }) => {
            assert_eq!((addr, l), (m.p as u64, len as u64));
        }
        other => panic!("a job on a deregistered registration gave {other:?}"),
    }
    poll_until("the deregistered range is unmapped", || {
        cache.stats().pinned_bytes == 0
    });
    let s = cache.stats();
    assert_eq!((s.entries, s.evictions), (0, 1), "{s:?}");

    // Read-only: a device write through it is refused.
    // SAFETY: as above.
    let ro = unsafe { cache.register(m.p, len, DmaProt::READ) }.unwrap();
    let mut j = Job::new();
    j.push(
        Endpoint::Card(0),
        Endpoint::Reg {
            reg: ro.clone(),
            offset: 0,
        },
        4096,
    );
    match c0.submit(&j) {
        Err(Error::Invalid(why)) => assert!(why.contains("write"), "{why}"),
        other => panic!("a device write into a read-only registration gave {other:?}"),
    }

    // An invalidation of part of it invalidates all of it (C7), and returns
    // once it is unmapped (C3).
    cache.invalidate(m.p.wrapping_add(8192), 4096).unwrap();
    assert!(!ro.is_valid(), "invalidated");
    let s = cache.stats();
    assert_eq!(
        (s.invalidations_api, s.invalidated_entries),
        (1, 1),
        "{s:?}"
    );
    assert_eq!(
        (s.entries, s.retired_pending, s.pinned_bytes),
        (0, 0, 0),
        "{s:?}"
    );
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: ro.clone(),
            offset: 0,
        },
        Endpoint::Card(0),
        4096,
    );
    assert!(
        matches!(c0.submit(&j), Err(Error::StaleRegistration { .. })),
        "a job on an invalidated registration"
    );
    // Deregistering what an invalidation already retired changes nothing.
    cache.deregister(ro);
    assert_eq!(cache.stats(), s);
}

/// C11 (teardown): after `close()`, with an explicit registration, cached
/// entries and a retired one, nothing is left: no entries, nothing pinned,
/// nothing pending; the registration is no longer valid.
#[test]
fn c11_close_leaves_nothing_pinned() {
    let r = rig();
    let cache = r.dev.cache().unwrap().clone();
    let a = Anon::new(64 * KIB);
    a.write(&pattern(71, a.len));
    let b = Anon::new(32 * KIB);
    b.write(&pattern(72, b.len));
    let e = Anon::new(16 * KIB);
    h2c(&r, 0, &a.bytes()[..32 * KIB], 0);
    h2c(&r, 1, b.bytes(), 0x10_0000);
    // [16K, 64K) overlaps [0, 32K): that entry is retired (C7).
    h2c(&r, 0, &a.bytes()[16 * KIB..], 0x20_0000);
    // SAFETY: no job uses it.
    let reg = unsafe { cache.register(e.p, e.len, DmaProt::RW) }.unwrap();
    let s = cache.stats();
    assert_eq!(s.entries, 3, "{s:?}");
    assert!(s.pinned_bytes > 0, "{s:?}");

    r.dev.close().unwrap();
    let s = cache.stats();
    assert_eq!(
        (s.entries, s.pinned_bytes, s.retired_pending),
        (0, 0, 0),
        "after close: {s:?}"
    );
    assert!(!reg.is_valid(), "a registration does not outlive its cache");
    // The overlapped entry, then the three close retired.
    assert_eq!(s.retired_bytes, (32 + 48 + 32 + 16) * KIB as u64, "{s:?}");
    assert_eq!(s.overlaps_retired, 1, "{s:?}");
    assert_eq!(s.evictions, 3, "close retires the rest: {s:?}");
}

/// C7 against the explicit API's promise (`Registration`: "the mapping
/// stays until deregister, an invalidation of its range, or the cache's
/// close"): a job on process memory that partially overlaps an explicit
/// registration must not make that registration stale behind its owner's
/// back. The job's data must be right either way.
#[test]
fn c7_a_job_overlapping_an_explicit_registration_leaves_it_valid() {
    let r = rig();
    let cache = r.dev.cache().unwrap();
    let m = Anon::new(64 * KIB);
    m.write(&pattern(111, m.len));
    // SAFETY: the device only reads it.
    let reg = unsafe { cache.register(m.p, 32 * KIB, DmaProt::READ) }.unwrap();
    // [16K, 48K): overlaps the registration, not covered by it. The cache
    // does not retire an explicit registration behind its owner's back: the
    // job is refused, clearly, and nothing changes.
    let mut job = Job::new();
    job.h2c_user(&m.bytes()[16 * KIB..48 * KIB], 0);
    let before = cache.stats();
    match r.dev.channel(0).unwrap().submit(&job) {
        Err(fdma::Error::Invalid(why)) => {
            assert!(why.contains("overlaps the explicit registration"), "{why}")
        }
        other => panic!("a job overlapping an explicit registration gave {other:?}"),
    }
    let s = cache.stats();
    assert!(
        reg.is_valid(),
        "an explicit registration went stale because a job's range overlapped it: {s:?}"
    );
    assert_eq!(s.overlaps_retired, before.overlaps_retired, "{s:?}");
    assert_eq!(s.registrations, before.registrations, "{s:?}");
    // A job inside it, with the access it grants, uses it (a hit).
    h2c(&r, 0, &m.bytes()[4 * KIB..12 * KIB], 0);
    assert_eq!(cache.stats().hits, s.hits + 1);
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: reg.clone(),
            offset: 0,
        },
        Endpoint::Card(0x10_0000),
        32 * KIB as u64,
    );
    wait(&r.dev.channel(0).unwrap().submit(&j).unwrap()).unwrap();
    assert_same(
        &card(&r, 0x10_0000, 32 * KIB),
        &m.read()[..32 * KIB],
        "the registration",
    );
}
