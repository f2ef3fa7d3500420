//! Data integrity: every direction, sizes from 1 byte to 64 MiB, unaligned
//! offsets, multi-segment jobs, all channels at once from several threads,
//! and ring wrap-around.

mod common;

use common::*;
use fdma::Job;

/// h2c then c2h back through card memory, and h2h, for one size and
/// offset set; checks the card copy through BAR2 as well.
fn round_trip(rig: &Rig, ch: usize, len: usize, host_off: usize, card_off: u64, seed: u64) {
    let dev = &rig.dev;
    let c = dev.channel(ch).unwrap();
    let src = dev.alloc(len + host_off).unwrap();
    let dst = dev.alloc(len + host_off + 3).unwrap();
    let want = pattern(seed, len);
    src.write_at(host_off, &want).unwrap();

    let mut j = Job::new();
    j.h2c(&src, host_off, card_off, len);
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut card = vec![0u8; len];
    dev.card_read(card_off, &mut card).unwrap();
    assert_same(
        &card,
        &want,
        &format!("h2c {len} B at +{host_off} -> card {card_off:#x}"),
    );

    let mut j = Job::new();
    j.c2h(card_off, &dst, host_off + 3, len);
    wait(&c.submit(&j).unwrap()).unwrap();
    assert_same(
        &dst.read_vec(host_off + 3, len).unwrap(),
        &want,
        &format!("c2h {len} B card {card_off:#x} -> +{}", host_off + 3),
    );
    // Bytes around the destination range are untouched.
    assert_eq!(
        dst.read_vec(host_off, 3).unwrap(),
        vec![0; 3],
        "c2h wrote before its range"
    );

    dst.fill(0, len + host_off + 3, 0).unwrap();
    let mut j = Job::new();
    j.h2h(&src, host_off, &dst, 1, len);
    wait(&c.submit(&j).unwrap()).unwrap();
    assert_same(
        &dst.read_vec(1, len).unwrap(),
        &want,
        &format!("h2h {len} B"),
    );
    assert_eq!(
        dst.read_vec(0, 1).unwrap(),
        vec![0],
        "h2h wrote before its range"
    );
}

#[test]
fn every_direction_small_and_odd_sizes() {
    let rig = rig();
    for (i, &len) in [1usize, 2, 3, 31, 32, 33, 4095, 4096, 4097, 65_537]
        .iter()
        .enumerate()
    {
        round_trip(&rig, 0, len, i * 7 % 13, (i as u64) * 4099, i as u64 + 1);
    }
}

#[test]
fn one_mebibyte_unaligned() {
    let rig = rig();
    round_trip(&rig, 1, (1 << 20) + 7, 5, 0x1234, 99);
}

#[test]
fn sixty_four_mebibytes() {
    // The largest job: several descriptors' worth split by the driver only
    // if above the engine's descriptor limit; it runs without tripping the
    // watchdog (progress, not duration, F3).
    let rig = rig();
    let dev = &rig.dev;
    let len = 64 << 20;
    let c = dev.channel(2).unwrap();
    let src = dev.alloc(len).unwrap();
    let dst = dev.alloc(len).unwrap();
    let want = pattern(64, len);
    src.write_at(0, &want).unwrap();
    // Two jobs: a card read may pass an earlier descriptor's card write
    // unless that job has completed (descriptors pipeline).
    let mut j1 = Job::new();
    j1.h2c(&src, 0, 0, len);
    wait(&c.submit(&j1).unwrap()).unwrap();
    let mut j2 = Job::new();
    j2.c2h(0, &dst, 0, len);
    wait(&c.submit(&j2).unwrap()).unwrap();
    assert_same(&dst.read_vec(0, len).unwrap(), &want, "64 MiB round trip");
}

#[test]
fn multi_segment_jobs_scatter_and_gather() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let pieces: Vec<Vec<u8>> = (0..6)
        .map(|i| pattern(i + 10, 1000 + i as usize * 517))
        .collect();
    let bufs: Vec<_> = pieces
        .iter()
        .map(|p| {
            let b = dev.alloc(p.len()).unwrap();
            b.write_at(0, p).unwrap();
            b
        })
        .collect();
    // Gather six host buffers into consecutive card memory in one job.
    let mut j = Job::new();
    let mut off = 0x10_0000u64;
    for (b, p) in bufs.iter().zip(&pieces) {
        j.h2c(b, 0, off, p.len());
        off += p.len() as u64;
    }
    assert_eq!(j.segments(), 6);
    wait(&c.submit(&j).unwrap()).unwrap();
    let total: usize = pieces.iter().map(|p| p.len()).sum();
    let want: Vec<u8> = pieces.concat();
    let mut card = vec![0u8; total];
    dev.card_read(0x10_0000, &mut card).unwrap();
    assert_same(&card, &want, "gathered to card");

    // Scatter it back into one buffer in reverse piece order, mixing in an
    // h2h segment.
    let out = dev.alloc(total).unwrap();
    let mut j = Job::new();
    let mut card_off = 0x10_0000u64;
    let mut dst_off = total;
    for p in &pieces {
        dst_off -= p.len();
        j.c2h(card_off, &out, dst_off, p.len());
        card_off += p.len() as u64;
    }
    let extra = dev.alloc(4096).unwrap();
    j.h2h(&bufs[0], 0, &extra, 100, 1000);
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut want_rev = Vec::new();
    for p in pieces.iter().rev() {
        want_rev.extend_from_slice(p);
    }
    assert_same(
        &out.read_vec(0, total).unwrap(),
        &want_rev,
        "scattered from card",
    );
    assert_same(
        &extra.read_vec(100, 1000).unwrap(),
        &pieces[0][..1000],
        "h2h segment",
    );
}

#[test]
fn all_channels_from_several_threads() {
    let rig = rig();
    let dev = &rig.dev;
    let n = dev.channels();
    std::thread::scope(|s| {
        for ch in 0..n {
            s.spawn(move || {
                let c = dev.channel(ch).unwrap();
                let len = 40_000 + ch * 1111;
                let src = dev.alloc(len).unwrap();
                let dst = dev.alloc(len).unwrap();
                for round in 0..12u64 {
                    let want = pattern(ch as u64 * 1000 + round, len);
                    src.write_at(0, &want).unwrap();
                    let card = (ch as u64) << 24;
                    let mut a = Job::new();
                    a.h2c(&src, 0, card, len);
                    let fa = c.submit(&a).unwrap();
                    let mut b = Job::new();
                    b.c2h(card, &dst, 0, len);
                    // Same channel, later job: it reads card memory the
                    // first wrote, so wait for the first (descriptors
                    // pipeline; only completion orders them).
                    wait(&fa).unwrap();
                    wait(&c.submit(&b).unwrap()).unwrap();
                    assert_same(
                        &dst.read_vec(0, len).unwrap(),
                        &want,
                        &format!("channel {ch} round {round}"),
                    );
                }
            });
        }
    });
    for ch in 0..n {
        let st = dev.channel(ch).unwrap();
        assert_eq!(
            st.stats().jobs.load(std::sync::atomic::Ordering::Relaxed),
            24
        );
    }
}

#[test]
fn ring_wraps_around_many_times() {
    // A ring of 8 descriptors and 200 jobs of 1-3 descriptors each: the
    // ring wraps ~50 times, with jobs queued back to back.
    let mut opts = test_opts();
    opts.ring_size = 8;
    let rig = rig_with(&[], opts);
    let dev = &rig.dev;
    let c = dev.channel(3).unwrap();
    let len = 3000;
    let src = dev.alloc(len * 3).unwrap();
    let want = pattern(7, len * 3);
    src.write_at(0, &want).unwrap();
    let mut fences = Vec::new();
    for i in 0..200u64 {
        let segs = 1 + (i % 3) as usize;
        let mut j = Job::new();
        for s in 0..segs {
            j.h2c(&src, s * len, (i % 16) * 0x10000 + (s * len) as u64, len);
        }
        fences.push(c.submit(&j).unwrap());
        if fences.len() > 20 {
            let f: fdma::Fence = fences.remove(0);
            wait(&f).unwrap();
        }
    }
    for f in &fences {
        wait(f).unwrap();
    }
    let mut card = vec![0u8; len * 3];
    dev.card_read(7 * 0x10000, &mut card).unwrap();
    // Job 199 has 2 segments (199 % 3 == 1) at slot 199 % 16 = 7.
    assert_same(&card[..len * 2], &want[..len * 2], "last job's data");
    assert!(c.timeline().completed() >= 200);
}
