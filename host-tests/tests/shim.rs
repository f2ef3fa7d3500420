//! The MMU-notifier shim through the driver, on the simulator (or the card
//! `FDMA_DEVICE` names): every way an application re-backs memory it used
//! for DMA, followed by DMA both ways. With the shim on the device must
//! read the new data and the application must see the device's writes
//! (C2); with the shim off (the explicit API only, and no call to it) the
//! same scenario must show the stale pages: the negative control that
//! proves the test can fail (D5: pinned pages outlive the mapping).
//!
//! Each scenario runs in a child process of its own (this binary, re-run on
//! `shim_child`): it changes the process's memory map (brk, malloc
//! settings), and a deadlock must show up as a timeout, not a hung suite.

mod common;

use common::cache_rig::*;
use common::{assert_same, pattern, rig_with, Rig};
use fdma::cache::{CacheOptions, Watch};
use fdma::Job;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SCENARIO_ENV: &str = "FDMA_SHIM_SCENARIO";
const MODE_ENV: &str = "FDMA_SHIM_MODE";
const DONE: &str = "shim scenario finished:";
/// A child that runs longer than this is deadlocked.
const CHILD_BOUND: Duration = Duration::from_secs(120);

/// Run `scenario` in a child with the shim `on` or off; check it passed.
fn run_child(scenario: &str, on: bool) {
    let mode = if on { "on" } else { "off" };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "shim_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(SCENARIO_ENV, scenario)
        .env(MODE_ENV, mode)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run the child");
    let t0 = Instant::now();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if t0.elapsed() > CHILD_BOUND {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "scenario {scenario} (shim {mode}) still running after {CHILD_BOUND:?}: deadlock?\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains(&format!("{DONE} {scenario} {mode}")),
        "scenario {scenario} (shim {mode}): {}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
}

/// munmap, then mmap at the same address.
#[test]
fn c2_munmap_then_mmap() {
    run_child("munmap-mmap", true);
    run_child("munmap-mmap", false);
}

/// mmap(MAP_FIXED) over the live mapping.
#[test]
fn c2_map_fixed_over_the_range() {
    run_child("map-fixed", true);
    run_child("map-fixed", false);
}

/// mremap moves the pages away; new memory is mapped at the old address.
#[test]
fn c2_mremap_move() {
    run_child("mremap", true);
    run_child("mremap", false);
}

/// madvise(MADV_DONTNEED): same mapping, new zero pages on the next touch.
#[test]
fn c2_madvise_dontneed() {
    run_child("dontneed", true);
    run_child("dontneed", false);
}

/// madvise(MADV_FREE) is invalidated too; it cannot be a negative control
/// (a pinned page is never lazily freed), so it runs with the shim only.
#[test]
fn c2_madvise_free_is_invalidated() {
    run_child("free", true);
}

/// brk shrinks over the range and grows again.
#[test]
fn c2_brk_shrink_and_regrow() {
    run_child("brk", true);
    run_child("brk", false);
}

/// A large free and malloc that returns the same pointer (glibc's mmap
/// threshold pinned with mallopt).
#[test]
fn c2_free_then_malloc_same_pointer() {
    run_child("malloc", true);
    run_child("malloc", false);
}

/// Threads re-mapping addresses while other threads submit jobs on them,
/// some holding their own locks while they munmap: no stale DMA, no
/// deadlock (bounded by the child's time limit).
#[test]
fn c2_c8_stress_remap_while_submitting() {
    run_child("stress", true);
    run_child("stress", false);
}

/// C3: a munmap under a job in flight: the entry stays mapped (and pinned)
/// until the job's fence has signalled, the job reports StaleMemory, and
/// then the mapping goes. A wedged job is errored by the watchdog, so the
/// invalidation finishes.
#[test]
fn c3_invalidation_waits_for_the_job_in_flight() {
    run_child("inflight", true);
}

/// C3 with a job that never completes: the invalidation of its unmapped
/// memory waits for its fence, and the watchdog errors the job (F3), so
/// the invalidation finishes and the pages are unpinned.
#[test]
fn c3_a_wedged_job_is_errored_by_the_watchdog_and_the_invalidation_finishes() {
    run_child("wedged", true);
}

/// C10: a forked child that unmaps registered memory does not wait for
/// the parent's monitor, its handles are poisoned, and the parent's DMA
/// and shim keep working.
#[test]
fn c10_fork_child_is_poisoned_and_the_parent_stays_correct() {
    run_child("fork", true);
}

/// C9: memory the shim cannot watch (here: a second userfaultfd already
/// owns the range, EBUSY) is served uncached, counted, and still correct.
#[test]
fn c9_unwatchable_memory_is_served_uncached() {
    run_child("ebusy", true);
}

/// Two devices in one process share the shim: memory both use is cached
/// by both, and an munmap invalidates it in both.
#[test]
fn two_devices_share_the_shim() {
    run_child("two-devices", true);
}

/// Blind spot: a hole punched through a memfd's fd sends no event; the
/// device keeps the old page until `invalidate()` (as documented).
#[test]
fn blind_spot_memfd_punch_hole_needs_invalidate() {
    run_child("blind-memfd", true);
}

/// Blind spot: SysV shared memory cannot be watched: served uncached.
#[test]
fn blind_spot_sysv_shm_is_served_uncached() {
    run_child("sysv", true);
}

/// The frame check (debug mode, root): with no event source at all, a
/// hit whose pages were re-backed is caught by comparing page frames, and
/// the range is registered again.
#[test]
fn frame_check_catches_a_stale_hit_without_the_shim() {
    run_child("frames", false);
}

/// The body of every scenario, in a child process.
#[test]
#[ignore = "run by the shim tests, in a process of its own"]
fn shim_child() {
    let Ok(scenario) = std::env::var(SCENARIO_ENV) else {
        eprintln!("shim_child: run by the shim tests, in a process of its own");
        return;
    };
    let on = std::env::var(MODE_ENV).as_deref() == Ok("on");
    let mut opts = opts_with(CacheOptions {
        watch: if on {
            Watch::Userfaultfd
        } else {
            Watch::Explicit
        },
        verify_frames: scenario == "frames",
        ..Default::default()
    });
    if scenario == "wedged" {
        // The suite's usual watchdog: a stalled channel is hung in about
        // two seconds of simulation.
        opts.watchdog = common::test_opts().watchdog;
    }
    let r = rig_with(&[], opts.clone());
    assert!(
        r.dev.backend().dma_limits().vaddr_pinned,
        "{}: mappings by address are not pinned here: the negative controls prove nothing",
        r.dev.name()
    );
    let cache = r.dev.cache().unwrap();
    assert_eq!(cache.shim_active(), on, "shim state: {:?}", cache.stats());
    match scenario.as_str() {
        "stress" => scenarios::stress(&r, on),
        "inflight" => scenarios::inflight(&r),
        "fork" => scenarios::fork(&r),
        "ebusy" => scenarios::ebusy(&r),
        "blind-memfd" => scenarios::blind_memfd(&r),
        "sysv" => scenarios::sysv(&r),
        "frames" => scenarios::frames(&r),
        "wedged" => scenarios::wedged(&r),
        "two-devices" => scenarios::two_devices(&r, &opts),
        s => reback_scenario(&r, s, on),
    }
    r.dev.close().unwrap();
    println!("{DONE} {scenario} {}", if on { "on" } else { "off" });
}

/// Register memory by using it both ways, re-back it as `how` says, write
/// new data, and use it both ways again.
fn reback_scenario(r: &Rig, how: &str, on: bool) {
    let len = 64 * KIB;
    let mut mem = scenarios::Memory::new(how, len);
    let p = mem.ptr();
    // First use: registers the range (a miss), then hits.
    let old = pattern(1, len);
    write(p, &old);
    h2c(r, 0, bytes(p, len), 0);
    assert_same(&card(r, 0, len), &old, "first use, host to card");
    r.dev.card_write(0x10_0000, &pattern(2, len)).unwrap();
    c2h(r, 0x10_0000, p, len);
    assert_same(&read(p, len), &pattern(2, len), "first use, card to host");
    let before = stats(r);
    assert!(before.registrations >= 1, "{before:?}");

    mem.reback();
    assert_eq!(mem.ptr(), p, "{how}: re-backed at the same address");
    let new = pattern(3, len);
    write(p, &new);
    h2c(r, 0, bytes(p, len), 0x20_0000);
    let got = card(r, 0x20_0000, len);
    r.dev.card_write(0x30_0000, &pattern(4, len)).unwrap();
    c2h(r, 0x30_0000, p, len);
    let seen = read(p, len);
    let s = stats(r);
    if on {
        assert_same(
            &got,
            &new,
            &format!("{how}: the device reads the new pages"),
        );
        assert_same(
            &seen,
            &pattern(4, len),
            &format!("{how}: the application sees the device's writes"),
        );
        assert!(
            s.invalidations_shim > before.invalidations_shim
                // The worker retires the old entry, or the new registration
                // does first (C7), whichever comes first.
                && s.invalidated_entries + s.overlaps_retired
                    > before.invalidated_entries + before.overlaps_retired,
            "{how}: the shim invalidated the entry: {s:?}"
        );
    } else {
        // Negative control: the stale registration served both jobs.
        assert_ne!(
            got, new,
            "{how}: shim off, yet the device read the new pages"
        );
        assert_same(
            &got,
            &pattern(2, len),
            &format!("{how}: shim off: the device reads the old pages"),
        );
        assert_same(
            &seen,
            &new,
            &format!("{how}: shim off: the device's writes went to the old pages"),
        );
        assert_eq!(s.invalidations_shim, 0, "{s:?}");
        // Let the teardown unmap cleanly.
        r.dev.cache().unwrap().invalidate(p, len).unwrap();
    }
    drop(mem);
}

fn write(p: *mut u8, data: &[u8]) {
    // SAFETY: `p` is `data.len()` bytes of the scenario's memory; no job
    // uses it now and no reference into it exists.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
}

fn read(p: *const u8, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    // SAFETY: as in `write`; read only after the jobs have signalled.
    unsafe { std::ptr::copy_nonoverlapping(p, v.as_mut_ptr(), len) };
    v
}

fn bytes<'a>(p: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: mapped while the scenario uses it; nothing writes it while a
    // device read of it runs.
    unsafe { std::slice::from_raw_parts(p, len) }
}

/// A job on `p`, its status (the job may fail in some scenarios).
fn try_h2c(r: &Rig, ch: usize, p: *const u8, len: usize, card: u64) -> fdma::Status {
    let mut j = Job::new();
    j.h2c_user(bytes(p, len), card);
    let f = r.dev.channel(ch).unwrap().submit(&j).unwrap();
    match f.wait_timeout(common::LIVENESS) {
        fdma::Wait::Signalled(s) => s,
        fdma::Wait::TimedOut => panic!("job not signalled within {:?}", common::LIVENESS),
    }
}

/// Copy `[p, p + len)` to the card at `at` through channel 0 and require
/// that the card then holds `want`.
fn h2c_expect(r: &Rig, p: *const u8, len: usize, at: u64, want: &[u8], what: &str) {
    assert_eq!(try_h2c(r, 0, p, len, at), Ok(()), "{what}");
    assert_same(&card(r, at, len), want, what);
}

#[path = "shim/scenarios.rs"]
mod scenarios;
