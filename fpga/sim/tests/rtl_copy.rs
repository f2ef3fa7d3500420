//! Data movement through the RTL: every direction, sizes from one byte to
//! several MiB, odd alignments, 4 KiB crossings, request splitting, multi-
//! descriptor jobs, ring wrap-around and the last byte of card memory.
mod common;
use common::*;
use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs;
use fdma_sim::card::LinkModel;

const MIB: usize = 1 << 20;

/// Copy `len` bytes in direction `dir` with the given source/destination
/// offsets and check the destination, including the bytes around it.
fn copy_and_check(
    b: &mut Bench,
    ch: usize,
    dir: Direction,
    len: usize,
    src_off: u64,
    dst_off: u64,
    seed: u32,
) {
    let data = pattern(len, seed);
    let guard = 64usize;
    let (src, dst) = match dir {
        Direction::HostToCard => (DATA_BASE + src_off, dst_off),
        Direction::CardToHost => (src_off, DATA_BASE + dst_off),
        Direction::HostToHost => (DATA_BASE + src_off, DATA_BASE + dst_off),
    };
    if dir.src_is_host() {
        b.host_write(src, &data);
    } else {
        b.card.card_memory().write(src, &data);
    }
    // Known bytes around the destination, to catch writes outside it.
    let before = pattern(len + 2 * guard, seed ^ 0xffff);
    // (No guard where the destination ends at the end of card memory.)
    let card_end = b.card.engine().card_mem_bytes();
    let dst_lo = dst
        .checked_sub(guard as u64)
        .filter(|_| dir.dst_is_host() || dst + (len + guard) as u64 <= card_end);
    if let Some(lo) = dst_lo {
        if dir.dst_is_host() {
            if lo >= DATA_BASE {
                b.host_write(lo, &before);
            }
        } else {
            b.card.card_memory().write(lo, &before);
        }
    }
    b.submit(ch, &[job(dir, src, dst, len as u32)]);
    let got = if dir.dst_is_host() {
        b.host_read(dst, len)
    } else {
        card_read(b, dst, len)
    };
    if got != data {
        let first = got.iter().zip(&data).position(|(a, b)| a != b).unwrap();
        panic!(
            "{} len {len} src+{src_off} dst+{dst_off}: first difference at byte {first}",
            dir.name()
        );
    }
    if let Some(lo) = dst_lo {
        if !dir.dst_is_host() || lo >= DATA_BASE {
            let around = if dir.dst_is_host() {
                b.host_read(lo, len + 2 * guard)
            } else {
                card_read(b, lo, len + 2 * guard)
            };
            assert_eq!(
                &around[..guard],
                &before[..guard],
                "bytes before the destination untouched"
            );
            assert_eq!(
                &around[guard + len..],
                &before[guard + len..],
                "bytes after the destination untouched"
            );
        }
    }
    assert_eq!(b.status(ch), (state::RUNNING, err::NONE));
}

#[test]
fn every_direction_small_sizes_and_odd_alignments() {
    let mut b = Bench::with_link(LinkModel::OFF, 64 * 1024);
    b.start_channel(0, 64);
    let mut seed = 0;
    for dir in Direction::ALL {
        for len in [
            1usize, 2, 3, 31, 32, 33, 63, 64, 65, 255, 256, 257, 511, 513, 1000,
        ] {
            for (so, dof) in [(0u64, 0u64), (1, 0), (0, 1), (7, 29), (31, 1), (17, 17)] {
                seed += 1;
                let dst = if dir.dst_is_host() {
                    32768 + dof + 64
                } else {
                    4096 + dof + 64
                };
                copy_and_check(&mut b, 0, dir, len, so, dst, seed);
            }
        }
    }
}

#[test]
fn four_kib_crossings_and_request_splitting() {
    let mut b = Bench::new(64 * 1024);
    b.start_channel(0, 16);
    let cfg = *b.card.engine();
    let max_read = 1usize << cfg.max_read_log2;
    let max_write = 1usize << cfg.max_payload_log2;
    for (len, so, dof) in [
        (8192usize, 4090u64, 4095u64),
        (5000, 4095, 1),
        (4097, 0, 4095),
        (300, 4000, 4050),
    ] {
        b.host.accesses.clear();
        copy_and_check(
            &mut b,
            0,
            Direction::HostToHost,
            len,
            so,
            16384 + dof,
            len as u32,
        );
        let data: Vec<_> = b
            .host
            .accesses
            .iter()
            .filter(|a| a.iova >= DATA_BASE)
            .collect();
        assert!(data.iter().any(|a| !a.write) && data.iter().any(|a| a.write));
        for a in data {
            let limit = if a.write { max_write } else { max_read };
            assert!(a.len <= limit, "{a:?} exceeds {limit}");
            assert_eq!(
                a.iova / 4096,
                (a.iova + a.len as u64 - 1) / 4096,
                "{a:?} crosses a 4 KiB boundary"
            );
        }
    }
}

#[test]
fn several_mib_each_direction() {
    let mut b = Bench::new(8 * MIB + 8192);
    b.start_channel(2, 8);
    copy_and_check(
        &mut b,
        2,
        Direction::HostToCard,
        3 * MIB + 5,
        3,
        MIB as u64 + 7,
        11,
    );
    copy_and_check(
        &mut b,
        2,
        Direction::CardToHost,
        3 * MIB + 5,
        MIB as u64 + 7,
        4 * MIB as u64 + 9,
        12,
    );
    copy_and_check(
        &mut b,
        2,
        Direction::HostToHost,
        4 * MIB - 1,
        1,
        4 * MIB as u64 + 4096,
        13,
    );
    let bytes = b.crd(2, &regs::CH_BYTES_LO) as u64 | (b.crd(2, &regs::CH_BYTES_HI) as u64) << 32;
    assert_eq!(
        bytes,
        (3 * MIB + 5) as u64 * 2 + (4 * MIB - 1) as u64,
        "BYTES counts every byte written"
    );
}

#[test]
fn last_byte_of_card_memory() {
    let mut b = Bench::with_link(LinkModel::OFF, 8192);
    b.start_channel(0, 8);
    let end = b.card.engine().card_mem_bytes();
    copy_and_check(&mut b, 0, Direction::HostToCard, 100, 0, end - 100, 5);
    copy_and_check(&mut b, 0, Direction::CardToHost, 1, end - 1, 4096, 6);
}

#[test]
fn scatter_gather_job_and_ring_wrap() {
    let mut b = Bench::with_link(LinkModel::OFF, 256 * 1024);
    let ring = 4u32;
    b.start_channel(1, ring);
    // 25 jobs of 3 segments each on a ring of 4: the ring wraps many times
    // and one job never fits whole, so the doorbell is rung per descriptor.
    for j in 0..25u32 {
        let seg = [1000usize, 1, 4097];
        let mut descs = Vec::new();
        let mut src = DATA_BASE + (j as u64 % 4) * 8192 + 3;
        let mut dst = DATA_BASE + 128 * 1024 + (j as u64 % 4) * 8192 + 5;
        let mut expect = Vec::new();
        for (i, &n) in seg.iter().enumerate() {
            let d = pattern(n, j * 10 + i as u32);
            b.host_write(src, &d);
            expect.push((dst, d));
            descs.push(Descriptor::new(
                Direction::HostToHost,
                src,
                dst,
                n as u32,
                i == 2,
                i == 2,
                j,
            ));
            src += n as u64 + 11;
            dst += n as u64 + 13;
        }
        for d in descs {
            b.submit(1, &[d]);
        }
        for (dst, d) in expect {
            assert_eq!(b.host_read(dst, d.len()), d, "job {j}");
        }
        assert_eq!(b.crd(1, &regs::CH_HEAD), (j + 1) * 3);
        let wb = b.writeback(1);
        assert_eq!(
            wb.head,
            (j + 1) * 3,
            "writeback reports the job's last descriptor"
        );
        assert_eq!(wb.count, j + 1, "one writeback per end of job");
    }
}

#[test]
fn doorbell_batches_many_descriptors() {
    let mut b = Bench::new(64 * 1024);
    b.start_channel(3, 256);
    let mut descs = Vec::new();
    for i in 0..200u32 {
        let src = DATA_BASE + (i as u64 * 97) % 16384;
        let dst = DATA_BASE + 32768 + i as u64 * 64;
        descs.push(Descriptor::new(
            Direction::HostToHost,
            src,
            dst,
            64,
            false,
            i == 199,
            i,
        ));
    }
    let src_img = pattern(32768, 99);
    b.host_write(DATA_BASE, &src_img);
    b.submit(3, &descs);
    for i in 0..200usize {
        let s = (i * 97) % 16384;
        assert_eq!(
            b.host_read(DATA_BASE + 32768 + i as u64 * 64, 64),
            src_img[s..s + 64].to_vec(),
            "descriptor {i}"
        );
    }
    assert_eq!(b.writeback(3).head, 200);
    assert!(b.irqs.is_empty(), "no descriptor asked for an interrupt");
}
