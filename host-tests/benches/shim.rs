//! MMU-notifier shim benchmarks, each next to its baseline measured in the
//! same run (these machines are shared and noisy: compare rows, not runs):
//!
//! * munmap of a 64 KiB range the cache registered and the shim watches —
//!   next to munmap of a range nobody registered, and of one registered
//!   with the shim off (`Watch::Explicit`);
//! * invalidation latency: from the start of the munmap until the range's
//!   registration is unmapped from the device and unpinned — next to an
//!   explicit `invalidate()` of the same range (the synchronous API);
//! * cache hit cost with the shim on — next to the same lookups with the
//!   shim off.
//!
//! Run: `cargo bench -p fdma-host-tests --bench shim` (`-- --quick` for a
//! short run). Starts its own simulators.

use fdma::backend::DmaProt;
use fdma::cache::{CacheOptions, RegCache, Watch};
use fdma::{Device, OpenOptions};
use fdma_host_tests::anon::{map_anon, unmap};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

const PAGE: usize = 4096;
const LEN: usize = 64 << 10;

fn start_sim() -> fdma_host_tests::sim::SimProc {
    fdma_host_tests::sim::SimProc::start(Path::new(env!("CARGO_BIN_EXE_fdma-host-sim")), &[])
}

fn open(sim: &fdma_host_tests::sim::SimProc, watch: Watch) -> Device {
    let opts = OpenOptions {
        cache: CacheOptions {
            watch,
            ..Default::default()
        },
        ..Default::default()
    };
    Device::open_with(&sim.name(), &opts).expect("open the simulator")
}

/// Fresh anonymous memory, every page touched.
fn map(len: usize) -> *mut u8 {
    let p = map_anon(std::ptr::null_mut(), len, 0);
    for i in (0..len).step_by(PAGE) {
        // SAFETY: inside the mapping; no reference is formed.
        unsafe { p.add(i).write_volatile(1) };
    }
    p
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn p99(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// ns of munmap of a fresh range, registered through `cache` first if given.
fn munmap_ns(cache: Option<&RegCache>, iters: usize) -> Vec<f64> {
    (0..iters)
        .map(|_| {
            let p = map(LEN);
            if let Some(c) = cache {
                black_box(c.lookup_for_bench(p, LEN, DmaProt::RW).unwrap());
            }
            let t0 = Instant::now();
            unmap(p, LEN);
            let ns = t0.elapsed().as_nanos() as f64;
            if let Some(c) = cache {
                // Let the entry go before the next round (the shim's
                // publication, or the explicit API for the shim-off cache).
                settle(c);
            }
            ns
        })
        .collect()
}

/// Wait until `cache` holds nothing (bounded).
fn settle(c: &RegCache) {
    let t0 = Instant::now();
    loop {
        let s = c.stats();
        if s.entries == 0 && s.retired_pending == 0 && s.pinned_bytes == 0 {
            return;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            panic!("the cache did not empty: {s:?}");
        }
        std::thread::yield_now();
    }
}

/// ns from the start of munmap until the registration is unmapped, with
/// the shim; and of `invalidate()` on the same kind of range.
fn invalidation_ns(shim: &RegCache, iters: usize) -> (Vec<f64>, Vec<f64>) {
    let mut by_event = Vec::new();
    for _ in 0..iters {
        let p = map(LEN);
        black_box(shim.lookup_for_bench(p, LEN, DmaProt::RW).unwrap());
        let pinned = shim.stats().pinned_bytes;
        let t0 = Instant::now();
        unmap(p, LEN);
        while shim.stats().pinned_bytes >= pinned {
            std::hint::spin_loop();
            assert!(t0.elapsed() < Duration::from_secs(10), "no invalidation");
        }
        by_event.push(t0.elapsed().as_nanos() as f64);
        settle(shim);
    }
    let mut by_api = Vec::new();
    for _ in 0..iters {
        let p = map(LEN);
        black_box(shim.lookup_for_bench(p, LEN, DmaProt::RW).unwrap());
        let t0 = Instant::now();
        shim.invalidate(p, LEN).unwrap();
        by_api.push(t0.elapsed().as_nanos() as f64);
        unmap(p, LEN);
        settle(shim);
    }
    (by_event, by_api)
}

/// Mean ns per hit on one registered buffer.
fn hit_ns(cache: &RegCache, rounds: usize) -> f64 {
    let p = map(LEN);
    cache.lookup_for_bench(p, LEN, DmaProt::RW).unwrap();
    let s0 = cache.stats();
    let t0 = Instant::now();
    for _ in 0..rounds {
        black_box(
            cache
                .lookup_for_bench(black_box(p), LEN, DmaProt::RW)
                .unwrap(),
        );
    }
    let ns = t0.elapsed().as_nanos() as f64 / rounds as f64;
    assert_eq!(
        cache.stats().misses,
        s0.misses,
        "the buffer must stay cached"
    );
    cache.invalidate(p, LEN).unwrap();
    unmap(p, LEN);
    ns
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let iters = if quick { 100 } else { 1000 };
    let rounds = if quick { 200_000 } else { 2_000_000 };
    let (sim_on, sim_off) = (start_sim(), start_sim());
    let on = open(&sim_on, Watch::Userfaultfd);
    let off = open(&sim_off, Watch::Explicit);
    let (con, coff) = (on.cache().unwrap(), off.cache().unwrap());
    assert!(
        con.shim_active(),
        "userfaultfd unavailable: nothing to measure"
    );

    println!("munmap of {} KiB, median / p99 of {iters} (ns)", LEN >> 10);
    let mut bare = munmap_ns(None, iters);
    let mut watched = munmap_ns(Some(con), iters);
    // The shim-off cache keeps the stale entries; `settle` needs them gone.
    let mut unwatched: Vec<f64> = (0..iters)
        .map(|_| {
            let p = map(LEN);
            black_box(coff.lookup_for_bench(p, LEN, DmaProt::RW).unwrap());
            coff.invalidate(p, LEN).unwrap();
            // Registered and invalidated: what munmap costs without a
            // subscription on the range.
            let t0 = Instant::now();
            unmap(p, LEN);
            t0.elapsed().as_nanos() as f64
        })
        .collect();
    for (name, v) in [
        ("not registered (baseline)", &mut bare),
        ("registered, shim off", &mut unwatched),
        ("registered, shim on", &mut watched),
    ] {
        let m = median(v);
        println!("  {name:<28} {m:>10.0} {:>10.0}", p99(v));
    }
    println!();

    let (mut ev, mut api) = invalidation_ns(con, iters);
    println!(
        "invalidation of {} KiB until unmapped and unpinned, median / p99 of {iters} (ns)",
        LEN >> 10
    );
    let m = median(&mut api);
    println!(
        "  {:<28} {m:>10.0} {:>10.0}",
        "invalidate() (baseline)",
        p99(&mut api)
    );
    let m = median(&mut ev);
    println!(
        "  {:<28} {m:>10.0} {:>10.0}",
        "munmap, by the shim",
        p99(&mut ev)
    );
    println!();

    let h_off = hit_ns(coff, rounds);
    let h_on = hit_ns(con, rounds);
    println!("cache hit, one buffer, mean of {rounds} (ns)");
    println!("  {:<28} {h_off:>10.1}", "shim off (baseline)");
    println!("  {:<28} {h_on:>10.1}", "shim on");
    let s = con.stats();
    println!();
    println!(
        "shim counters: {} published invalidations, {} invalidated entries, {} uncached, {} subscriptions now",
        s.invalidations_shim, s.invalidated_entries, s.uncached, s.subscriptions
    );
    on.close().unwrap();
    off.close().unwrap();
}
