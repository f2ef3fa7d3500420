//! Shared by the registration-cache tests: page-aligned process memory
//! that can be re-backed, and one-line jobs through the cache.
#![allow(dead_code)]

use super::{test_opts, wait, Rig, LIVENESS};
use fdma::cache::{CacheOptions, CacheSnapshot};
use fdma::{Job, OpenOptions, WatchdogConfig};
use std::time::{Duration, Instant};

/// Page-aligned anonymous memory with no Rust reference into it (the
/// device writes it behind the compiler's back), that can be re-backed at
/// the same address the two ways an allocator does it.
pub struct Anon {
    pub p: *mut u8,
    pub len: usize,
}

/// How to put new pages behind an address.
#[derive(Debug, Clone, Copy)]
pub enum Reback {
    /// mmap(MAP_FIXED) over the live mapping.
    MapFixed,
    /// munmap, then mmap again at the same address.
    UnmapThenMap,
}

impl Anon {
    pub fn new(len: usize) -> Anon {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED, "mmap");
        Anon { p: p.cast(), len }
    }

    /// New zeroed pages at the same address.
    pub fn reback(&self, how: Reback) {
        let flags = match how {
            Reback::MapFixed => libc::MAP_FIXED,
            Reback::UnmapThenMap => {
                // SAFETY: our own mapping; nothing references it.
                assert_eq!(unsafe { libc::munmap(self.p.cast(), self.len) }, 0);
                libc::MAP_FIXED_NOREPLACE
            }
        };
        // SAFETY: the range is our own (mapped, or unmapped just above).
        let p = unsafe {
            libc::mmap(
                self.p.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
                -1,
                0,
            )
        };
        assert_eq!(p.cast(), self.p, "re-back {how:?} at the same address");
    }

    pub fn write(&self, data: &[u8]) {
        assert!(data.len() <= self.len);
        // SAFETY: inside our mapping; no reference is formed.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.p, data.len()) };
    }

    pub fn read(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.len];
        // SAFETY: as in `write`; only called when no job writes it.
        unsafe { std::ptr::copy_nonoverlapping(self.p, v.as_mut_ptr(), self.len) };
        v
    }

    /// The memory as a slice for a device read (`h2c_user`).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: mapped for our lifetime; nothing writes it while a job
        // reads it in these tests.
        unsafe { std::slice::from_raw_parts(self.p, self.len) }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: our own mapping.
        unsafe { libc::munmap(self.p.cast(), self.len) };
    }
}

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
