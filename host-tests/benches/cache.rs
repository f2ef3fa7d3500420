//! Registration cache benchmarks, each next to its baseline measured in the
//! same run (these machines are shared and noisy: compare rows, not runs):
//!
//! * hit cost: one buffer looked up again and again, and a working set of
//!   1024 one-page buffers looked up in random order — next to a read lock
//!   plus a `BTreeMap` lookup over as many keys (the data structure alone);
//! * miss cost: register (pin + map through the cache) and `invalidate`,
//!   for 4 KiB, 64 KiB and 1 MiB — next to the backend's bare `dma_map` and
//!   `dma_unmap` of the same range.
//!
//! Run: `cargo bench -p fdma-host-tests --bench cache` (`-- --quick` for a
//! short run). Starts its own simulator.

use fdma::backend::{DmaProt, DmaSource};
use fdma::cache::RegCache;
use fdma::Device;
use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;
use std::sync::RwLock;
use std::time::Instant;

const PAGE: usize = 4096;

fn start_sim() -> fdma_host_tests::sim::SimProc {
    fdma_host_tests::sim::SimProc::start(Path::new(env!("CARGO_BIN_EXE_fdma-host-sim")), &[])
}

/// Anonymous memory, faulted in (so that pinning does not measure first
/// touch).
fn memory(len: usize) -> memmap2::MmapMut {
    let mut m = memmap2::MmapMut::map_anon(len).expect("anonymous memory");
    for i in (0..len).step_by(PAGE) {
        m[i] = 1;
    }
    m
}

/// xorshift64*: a reproducible random order without a dependency.
fn shuffled(n: usize, mut seed: u64) -> Vec<usize> {
    let mut v: Vec<usize> = (0..n).collect();
    for i in (1..n).rev() {
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        let r = seed.wrapping_mul(0x2545_f491_4f6c_dd1d);
        v.swap(i, (r % (i as u64 + 1)) as usize);
    }
    v
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Mean ns per lookup of `order` (repeated `rounds` times) through the cache.
fn cache_hits(cache: &RegCache, base: *const u8, order: &[usize], rounds: usize) -> f64 {
    let t0 = Instant::now();
    for _ in 0..rounds {
        for &i in order {
            // SAFETY: inside the mapping `base` points into (pointer
            // arithmetic only; nothing is dereferenced).
            let p = unsafe { base.add(i * PAGE) };
            black_box(cache.lookup_for_bench(p, PAGE, DmaProt::RW).unwrap());
        }
    }
    t0.elapsed().as_nanos() as f64 / (rounds * order.len()) as f64
}

/// The baseline of a hit: a read lock and a `BTreeMap` lookup of the entry
/// containing the address, over `n` page-sized entries.
fn btree_hits(base: u64, n: usize, order: &[usize], rounds: usize) -> f64 {
    let map: RwLock<BTreeMap<u64, (u64, u64)>> = RwLock::new(
        (0..n)
            .map(|i| {
                let a = base + (i * PAGE) as u64;
                (a, (PAGE as u64, 0x1000 + a))
            })
            .collect(),
    );
    let t0 = Instant::now();
    for _ in 0..rounds {
        for &i in order {
            let a = base + (i * PAGE) as u64;
            let m = map.read().unwrap();
            let hit = m
                .range(..=a)
                .next_back()
                .filter(|(s, (l, _))| **s <= a && a + PAGE as u64 <= **s + *l)
                .map(|(s, (_, iova))| iova + (a - s));
            black_box(hit);
        }
    }
    t0.elapsed().as_nanos() as f64 / (rounds * order.len()) as f64
}

struct Miss {
    register: f64,
    invalidate: f64,
    map: f64,
    unmap: f64,
}

/// Median ns of a cache miss (register) and of `invalidate`, next to the
/// backend's bare map and unmap of the same range.
fn misses(dev: &Device, cache: &RegCache, len: usize, iters: usize) -> Miss {
    let mem = memory(len);
    let p = mem.as_ptr();
    let (mut reg, mut inv) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let t0 = Instant::now();
        black_box(cache.lookup_for_bench(p, len, DmaProt::RW).unwrap());
        let t1 = Instant::now();
        cache.invalidate(p, len).unwrap();
        let t2 = Instant::now();
        reg.push((t1 - t0).as_nanos() as f64);
        inv.push((t2 - t1).as_nanos() as f64);
    }
    let space = dev.dma_space().unwrap();
    let backend = space.backend();
    let (mut map, mut unmap) = (Vec::new(), Vec::new());
    for _ in 0..iters {
        let iova = space.alloc_iova(len as u64, 0).unwrap();
        let t0 = Instant::now();
        backend
            .dma_map(iova, len as u64, DmaSource::Vaddr(p), DmaProt::RW)
            .unwrap();
        let t1 = Instant::now();
        backend.dma_unmap(iova, len as u64).unwrap();
        let t2 = Instant::now();
        space.free_iova(iova, len as u64);
        map.push((t1 - t0).as_nanos() as f64);
        unmap.push((t2 - t1).as_nanos() as f64);
    }
    Miss {
        register: median(&mut reg),
        invalidate: median(&mut inv),
        map: median(&mut map),
        unmap: median(&mut unmap),
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sim = start_sim();
    let dev = Device::open(&sim.name()).expect("open the simulator");
    let cache = dev.cache().expect("the device's registration cache");

    // Hits.
    const SET: usize = 1024;
    let rounds_one = if quick { 200_000 } else { 2_000_000 };
    let rounds_set = if quick { 200 } else { 2_000 };
    let set = memory(SET * PAGE);
    let base = set.as_ptr();
    let t0 = Instant::now();
    for i in 0..SET {
        // SAFETY: pointer arithmetic inside `set`.
        let p = unsafe { base.add(i * PAGE) };
        cache.lookup_for_bench(p, PAGE, DmaProt::RW).unwrap();
    }
    let warm = t0.elapsed();
    let s0 = cache.stats();
    let one = cache_hits(cache, base, &[0], rounds_one);
    let order = shuffled(SET, 0x9e37_79b9_7f4a_7c15);
    let many = cache_hits(cache, base, &order, rounds_set);
    let s1 = cache.stats();
    assert_eq!(s1.misses, s0.misses, "the working set must stay cached");
    let one_base = btree_hits(base as u64, SET, &[0], rounds_one);
    let many_base = btree_hits(base as u64, SET, &order, rounds_set);
    println!(
        "registration cache hits ({} lookups; {SET} one-page entries registered in {:.1?})",
        s1.hits - s0.hits,
        warm
    );
    println!("{:<34} {:>12} {:>22}", "", "fdma ns", "RwLock+BTreeMap ns");
    println!("{:<34} {:>12.1} {:>22.1}", "hit, one buffer", one, one_base);
    println!(
        "{:<34} {:>12.1} {:>22.1}",
        "hit, 1024 buffers, random order", many, many_base
    );
    println!();
    // The working set's entries go, so that the misses below do not evict.
    cache.invalidate(base, SET * PAGE).unwrap();
    drop(set);

    // Misses and invalidation.
    let iters = if quick { 50 } else { 400 };
    println!("registration cache misses, median of {iters} (ns)");
    println!(
        "{:<8} {:>14} {:>14} {:>14} {:>14}",
        "size", "cache miss", "bare dma_map", "invalidate", "bare dma_unmap"
    );
    for (name, len) in [("4 KiB", 4 << 10), ("64 KiB", 64 << 10), ("1 MiB", 1 << 20)] {
        let m = misses(&dev, cache, len, iters);
        println!(
            "{:<8} {:>14.0} {:>14.0} {:>14.0} {:>14.0}",
            name, m.register, m.map, m.invalidate, m.unmap
        );
    }
    // What the cache avoids per miss by reading CAP_IPC_LOCK once (from
    // /proc/self/status) and only RLIMIT_MEMLOCK each time.
    let n = iters * 10;
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(fdma::pci::has_cap_ipc_lock());
    }
    let cap = t0.elapsed().as_nanos() as f64 / n as f64;
    let t0 = Instant::now();
    for _ in 0..n {
        black_box(fdma::pci::memlock_limit().ok());
    }
    let rlimit = t0.elapsed().as_nanos() as f64 / n as f64;
    println!(
        "{:<8} {:>14.0}   (RLIMIT_MEMLOCK read, part of every miss; the CAP_IPC_LOCK check it replaces: {cap:.0} ns)",
        "", rlimit
    );
    let s = cache.stats();
    println!();
    println!(
        "cache counters: {} hits, {} misses, {} registrations, {} invalidated entries, {} evictions",
        s.hits, s.misses, s.registrations, s.invalidated_entries, s.evictions
    );
    dev.close().unwrap();
}
