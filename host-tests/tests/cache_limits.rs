//! The registration cache's limits (C6), each scenario in a child process
//! of its own: RLIMIT_MEMLOCK is process-wide, and the memlock scenarios
//! run as an unprivileged user (no CAP_IPC_LOCK; the kernel charges locked
//! memory per user, so other tests cannot eat the budget). The parent
//! re-runs this test binary on `c6_child` with the scenario in an
//! environment variable.

mod common;

use common::cache_rig::*;
use common::{assert_same, pattern, rig, rig_with, wait, Rig};
use fdma::backend::DmaProt;
use fdma::cache::CacheOptions;
use fdma::{Endpoint, Error, Job};

// C6, in child processes: a process-wide RLIMIT_MEMLOCK and no
// CAP_IPC_LOCK. The parent re-runs this test binary on `c6_child` with the
// scenario in `SCENARIO_ENV`.

const SCENARIO_ENV: &str = "FDMA_CACHE_C6_SCENARIO";
const DONE: &str = "C6 scenario finished:";

/// Run the `c6_child` test of this binary in a child process on
/// `scenario`, without CAP_IPC_LOCK if `drop_cap`, and check it passed.
fn run_child(scenario: &str, drop_cap: bool) {
    use std::os::unix::process::CommandExt;
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "c6_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(SCENARIO_ENV, scenario);
    if drop_cap {
        // An unprivileged user of its own: a change of uid from root drops
        // every capability (CAP_IPC_LOCK included, in every thread), and
        // the kernel charges locked memory per user, so other tests pinning
        // memory as root at the same time cannot eat this child's budget.
        let uid = 61000 + scenario.bytes().map(u32::from).sum::<u32>() % 1000;
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run the child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success()
            && stdout.contains("1 passed")
            && stdout.contains(&format!("{DONE} {scenario}")),
        "child for C6 scenario {scenario}: {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

const CAP_IPC_LOCK: u32 = 14;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

/// Clear CAP_IPC_LOCK from this thread's effective and permitted sets
/// (capset(2), version 3).
fn capset_drop_ipc_lock() {
    let mut h = CapHeader {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: header and two data structs, as version 3 wants.
    let rc = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    assert_eq!(rc, 0, "capget: {}", std::io::Error::last_os_error());
    let bit = !(1u32 << CAP_IPC_LOCK);
    d[0].effective &= bit;
    d[0].permitted &= bit;
    d[0].inheritable &= bit;
    // SAFETY: as above.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    assert_eq!(rc, 0, "capset: {}", std::io::Error::last_os_error());
}

/// C6 (pinned bytes within RLIMIT_MEMLOCK without CAP_IPC_LOCK): see
/// `c6_memlock_refuse_scenario`.
#[test]
fn c6_memlock_limit_refuses_an_oversized_registration() {
    run_child("memlock-refuse", true);
}

/// C6 and C5 (pinned bytes within RLIMIT_MEMLOCK, by eviction): see
/// `c6_memlock_evict_scenario`.
#[test]
fn c6_memlock_limit_evicts_to_stay_within_it() {
    run_child("memlock-evict", true);
}

/// C6 (entry limit): see `c6_entries_scenario`.
#[test]
fn c6_entry_limit_bounds_registrations() {
    run_child("entries", false);
}

/// The child side of the C6 tests: does nothing unless a parent set
/// `SCENARIO_ENV`.
#[test]
#[ignore = "child process of the c6_* tests: runs only when they re-run it"]
fn c6_child() {
    let Ok(scenario) = std::env::var(SCENARIO_ENV) else {
        eprintln!("c6_child: run by the c6_* tests, in a process of its own");
        return;
    };
    match scenario.as_str() {
        "memlock-refuse" => c6_memlock_refuse_scenario(),
        "memlock-evict" => c6_memlock_evict_scenario(),
        "entries" => c6_entries_scenario(),
        other => panic!("unknown scenario {other}"),
    }
    println!("{DONE} {scenario}");
}

/// The cache budget of the memlock scenarios.
const MEMLOCK_BUDGET: u64 = 256 * 1024;

/// A device whose process has no CAP_IPC_LOCK and an RLIMIT_MEMLOCK of
/// what the driver's own buffers take plus [`MEMLOCK_BUDGET`] (set after
/// the open, which pins nothing the limit would refuse).
fn memlock_rig() -> Rig {
    capset_drop_ipc_lock();
    assert!(
        !fdma::pci::has_cap_ipc_lock(),
        "the child still has CAP_IPC_LOCK: the limit would not apply"
    );
    let r = rig();
    let own = r.dev.dma_space().unwrap().mapped_bytes();
    let limit = (own + MEMLOCK_BUDGET).next_multiple_of(4096);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, limit, limit)
        .expect("lower RLIMIT_MEMLOCK");
    r
}

/// C6 (a), refusal: without CAP_IPC_LOCK, an explicit registration larger
/// than RLIMIT_MEMLOCK allows is a `CacheLimit` error that names
/// RLIMIT_MEMLOCK, and pins nothing; one within it works, and a second
/// that would go over is refused (explicit registrations are not
/// evicted).
fn c6_memlock_refuse_scenario() {
    let r = memlock_rig();
    let cache = r.dev.cache().unwrap();
    let big = Anon::new(512 * KIB);
    // SAFETY: never used by a job.
    match unsafe { cache.register(big.p, big.len, DmaProt::READ) } {
        Err(e @ Error::CacheLimit { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("RLIMIT_MEMLOCK"), "{msg}");
        }
        other => panic!("a 512 KiB registration under a 256 KiB budget gave {other:?}"),
    }
    let s = cache.stats();
    assert_eq!(
        (s.limit_errors, s.pinned_bytes, s.entries),
        (1, 0, 0),
        "{s:?}"
    );

    let m = Anon::new(192 * KIB);
    m.write(&pattern(81, m.len));
    // SAFETY: the device only reads it.
    let reg = unsafe { cache.register(m.p, m.len, DmaProt::READ) }.expect("within the limit");
    let mut j = Job::new();
    j.push(
        Endpoint::Reg {
            reg: reg.clone(),
            offset: 0,
        },
        Endpoint::Card(0),
        m.len as u64,
    );
    wait(&r.dev.channel(0).unwrap().submit(&j).unwrap()).unwrap();
    assert_same(
        &card(&r, 0, m.len),
        &m.read(),
        "registered within the limit",
    );
    let m2 = Anon::new(96 * KIB);
    // SAFETY: never used by a job.
    match unsafe { cache.register(m2.p, m2.len, DmaProt::READ) } {
        Err(Error::CacheLimit {
            limit, requested, ..
        }) => {
            assert_eq!((limit, requested), (MEMLOCK_BUDGET, 288 * KIB as u64));
        }
        other => panic!("192 + 96 KiB of explicit registrations in 256 gave {other:?}"),
    }
    let s = cache.stats();
    assert_eq!(
        (s.limit_errors, s.pinned_bytes, s.entries),
        (2, 192 * KIB as u64, 1),
        "{s:?}"
    );
    r.dev.close().unwrap();
}

/// C6 (a), eviction: without CAP_IPC_LOCK and with a budget of 256 KiB,
/// jobs on four ranges of 96 KiB (two fit) evict the least recently used
/// range and succeed, and the pinned bytes stay within the budget all
/// along. The jobs are finished before the next registration, so nothing
/// retired waits for the device: evicting one entry makes the room.
fn c6_memlock_evict_scenario() {
    let r = memlock_rig();
    let cache = r.dev.cache().unwrap();
    let ranges: Vec<Anon> = (0..4)
        .map(|i| {
            let m = Anon::new(96 * KIB);
            m.write(&pattern(80 + i, m.len));
            m
        })
        .collect();
    for round in 0..2 {
        for (i, m) in ranges.iter().enumerate() {
            let at = 0x10_0000 * (i as u64 + 1);
            let mut j = Job::new();
            j.h2c_user(m.bytes(), at);
            let f = r.dev.channel(0).unwrap().submit(&j).unwrap_or_else(|e| {
                panic!(
                    "round {round}, range {i}: a job on 96 KiB under a 256 KiB budget: {e}; {:?}",
                    cache.stats()
                )
            });
            wait(&f).unwrap();
            assert_same(
                &card(&r, at, m.len),
                &m.read(),
                &format!("round {round}, range {i}"),
            );
            let s = cache.stats();
            assert!(
                s.pinned_bytes <= MEMLOCK_BUDGET,
                "round {round}, range {i}: {} bytes pinned over a budget of {MEMLOCK_BUDGET}: {s:?}",
                s.pinned_bytes
            );
            // LRU: one eviction makes room for one range.
            let uses = round * 4 + i as u64 + 1;
            assert_eq!(s.evictions, uses.saturating_sub(2), "{s:?}");
        }
    }
    let s = cache.stats();
    assert_eq!(
        (s.limit_errors, s.registrations, s.entries),
        (0, 8, 2),
        "{s:?}"
    );
    r.dev.close().unwrap();
}

/// C6 (b): with `max_entries: 2`, jobs on five ranges evict and never hold
/// more than two entries; two explicit registrations (which LRU pressure
/// does not evict) fill the cache: a third, or a job on new memory, is a
/// `CacheLimit` error until one is deregistered.
fn c6_entries_scenario() {
    let r = rig_with(
        &[],
        opts_with(CacheOptions {
            max_entries: 2,
            ..Default::default()
        }),
    );
    let cache = r.dev.cache().unwrap();
    let ranges: Vec<Anon> = (0..6)
        .map(|i| {
            let m = Anon::new(16 * KIB);
            m.write(&pattern(90 + i, m.len));
            m
        })
        .collect();
    for (i, m) in ranges[..5].iter().enumerate() {
        let at = 0x10_0000 * (i as u64 + 1);
        h2c(&r, 0, m.bytes(), at);
        assert_same(&card(&r, at, m.len), &m.read(), &format!("range {i}"));
        let s = cache.stats();
        assert!(s.entries <= 2, "range {i}: {s:?}");
    }
    let s = cache.stats();
    assert_eq!(
        (s.registrations, s.evictions, s.entries),
        (5, 3, 2),
        "{s:?}"
    );

    // SAFETY: the device only reads these.
    let r0 = unsafe { cache.register(ranges[0].p, 16 * KIB, DmaProt::READ) }.unwrap();
    // SAFETY: as above.
    let r1 = unsafe { cache.register(ranges[1].p, 16 * KIB, DmaProt::READ) }.unwrap();
    let s = cache.stats();
    assert_eq!(
        (s.evictions, s.entries),
        (5, 2),
        "the job entries went: {s:?}"
    );
    // SAFETY: as above.
    match unsafe { cache.register(ranges[2].p, 16 * KIB, DmaProt::READ) } {
        Err(Error::CacheLimit {
            what,
            limit,
            requested,
        }) => assert_eq!((what, limit, requested), ("registrations", 2, 3)),
        other => panic!("a third explicit registration under max_entries 2 gave {other:?}"),
    }
    let mut j = Job::new();
    j.h2c_user(ranges[5].bytes(), 0);
    match r.dev.channel(0).unwrap().submit(&j) {
        Err(Error::CacheLimit { what, .. }) => assert_eq!(what, "registrations"),
        other => panic!(
            "a job on new memory with the cache full of explicit registrations gave {other:?}"
        ),
    }
    let s = cache.stats();
    assert_eq!((s.limit_errors, s.entries), (2, 2), "{s:?}");
    // Jobs on what is registered still work, as hits.
    h2c(&r, 0, ranges[1].bytes(), 0x70_0000);
    assert_eq!(cache.stats().hits, s.hits + 1);

    cache.deregister(r0);
    h2c(&r, 0, ranges[5].bytes(), 0x80_0000);
    assert_same(
        &card(&r, 0x80_0000, 16 * KIB),
        &ranges[5].read(),
        "after a deregistration",
    );
    let s = cache.stats();
    assert!(s.entries <= 2, "{s:?}");
    drop(r1);
    r.dev.close().unwrap();
}
