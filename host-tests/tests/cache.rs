//! The registration cache through the driver: jobs on process memory, on
//! the simulator (or the card `FDMA_DEVICE` names).

mod common;

use common::{assert_same, pattern, rig, wait};
use fdma::Job;

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
