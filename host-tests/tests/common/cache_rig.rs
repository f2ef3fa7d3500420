//! Shared by the registration-cache tests: page-aligned process memory
//! that can be re-backed, and one-line jobs through the cache.
#![allow(dead_code)]

use super::{test_opts, wait, Rig, LIVENESS};
use fdma::cache::{CacheOptions, CacheSnapshot};
use fdma::{Job, OpenOptions, WatchdogConfig};
use std::time::{Duration, Instant};

#[allow(unused_imports)] // not every test binary uses both
pub use fdma_host_tests::anon::{Anon, Reback};

/// Host memory to card memory through the cache, on channel `ch`.
pub fn h2c(r: &Rig, ch: usize, src: &[u8], card: u64) {
    let mut j = Job::new();
    j.h2c_user(src, card);
    wait(&r.dev.channel(ch).unwrap().submit(&j).unwrap()).unwrap();
}

/// Card memory to host memory through the cache, on channel 0.
pub fn c2h(r: &Rig, card: u64, dst: *mut u8, len: usize) {
    let mut j = Job::new();
    // SAFETY: the callers read `dst` only after the fence has signalled.
    unsafe { j.c2h_user(card, dst, len) };
    wait(&r.dev.channel(0).unwrap().submit(&j).unwrap()).unwrap();
}

pub fn card(r: &Rig, at: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    r.dev.card_read(at, &mut v).unwrap();
    v
}

pub fn stats(r: &Rig) -> CacheSnapshot {
    r.dev.cache().unwrap().stats()
}

/// Poll `f` (bounded by the suite's liveness bound) until it holds.
#[track_caller]
pub fn poll_until(what: &str, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < LIVENESS, "{what}: not within {LIVENESS:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Open options with the cache's limits set, and a watchdog patient enough
/// for a channel held stalled while the test registers memory.
pub fn opts_with(cache: CacheOptions) -> OpenOptions {
    let t = test_opts();
    OpenOptions {
        cache,
        watchdog: WatchdogConfig {
            stall_cycles: 20_000_000,
            ..t.watchdog
        },
        ..t
    }
}

pub const KIB: usize = 1024;
