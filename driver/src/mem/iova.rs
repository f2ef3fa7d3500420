//! The IOVA allocator: hands out device addresses for DMA mappings.
//!
//! The allocator manages the addresses the device may be given: the usable
//! IOVA ranges the backend reports ([`DmaLimits::iova_ranges`], with reserved
//! windows such as the MSI doorbell already removed), cut to what the device
//! can drive (`[0, 2^dma_bits)`), rounded inwards to 4 KiB pages, and never
//! including page 0 (IOVA 0 looks like a null pointer in every descriptor
//! dump, and a device bug that DMAs to address 0 must fault, not hit a
//! buffer).
//!
//! Free space is a [`BTreeMap`] of free blocks keyed by start, plus an index
//! of the same blocks by size; allocation is **best fit** (the smallest free
//! block that holds the request at the requested alignment), and a freed
//! range is coalesced with its free neighbours at once, so the free map
//! never holds two adjacent blocks. Both operations are `O(log n)` in the
//! number of free blocks, except that a best-fit search may skip blocks that
//! are large enough but not at the requested alignment.
//!
//! The allocator only does bookkeeping. Quarantine (C4: an IOVA range is not
//! reused until every job that used it has signalled and the IOMMU unmap is
//! done) is the callers' duty: they call [`IovaAllocator::free`] only after
//! both.
//!
//! [`DmaLimits::iova_ranges`]: crate::backend::DmaLimits::iova_ranges

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

/// The allocation granule and the smallest alignment: 4 KiB.
pub const IOVA_PAGE: u64 = 4096;

/// Best-fit allocator of device addresses over usable ranges, with
/// coalescing of freed ranges.
///
/// Sizes are rounded up to [`IOVA_PAGE`]; alignments are powers of two, at
/// least [`IOVA_PAGE`]. Not thread-safe by itself: [`super::DmaSpace`] keeps it
/// behind a mutex.
pub struct IovaAllocator {
    /// Free blocks: start -> end (exclusive). Never two adjacent blocks.
    free: BTreeMap<u64, u64>,
    /// The same blocks, by (size, start), for best fit.
    by_size: BTreeSet<(u64, u64)>,
    /// Allocated blocks: start -> size (rounded), to check frees.
    allocated: BTreeMap<u64, u64>,
    /// Bytes allocated.
    in_use: u64,
    /// Bytes managed (allocated or free).
    capacity: u64,
}

/// Round `v` up to a multiple of `align` (a power of two); `None` on overflow.
fn align_up(v: u64, align: u64) -> Option<u64> {
    Some(v.checked_add(align - 1)? & !(align - 1))
}

/// Round `v` down to a multiple of `align` (a power of two).
fn align_down(v: u64, align: u64) -> u64 {
    v & !(align - 1)
}

impl std::fmt::Debug for IovaAllocator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Counts only; [`IovaAllocator::free_ranges`] lists the blocks.
        f.debug_struct("IovaAllocator")
            .field("capacity", &self.capacity)
            .field("in_use", &self.in_use)
            .field("allocations", &self.allocated.len())
            .field("free_blocks", &self.free.len())
            .finish()
    }
}

impl IovaAllocator {
    /// Allocator over `ranges`, cut to addresses below 2^`dma_bits`; IOVA 0's
    /// page is never handed out.
    ///
    /// Ranges may overlap or touch each other (they are merged) and need not
    /// be page aligned (they are shrunk to whole 4 KiB pages). A `dma_bits`
    /// of 64 or more means the whole 64-bit space (whose last page is not
    /// used, so that range ends fit in a `u64`). The result may be empty
    /// (see [`IovaAllocator::capacity`]).
    pub fn new(ranges: &[Range<u64>], dma_bits: u8) -> IovaAllocator {
        let limit = if dma_bits >= 64 {
            u64::MAX
        } else {
            1u64 << dma_bits
        };
        let mut cut: Vec<(u64, u64)> = ranges
            .iter()
            .filter_map(|r| {
                let start = align_up(r.start.max(IOVA_PAGE), IOVA_PAGE)?;
                let end = align_down(r.end.min(limit), IOVA_PAGE);
                (start < end).then_some((start, end))
            })
            .collect();
        cut.sort_unstable();
        let mut alloc = IovaAllocator {
            free: BTreeMap::new(),
            by_size: BTreeSet::new(),
            allocated: BTreeMap::new(),
            in_use: 0,
            capacity: 0,
        };
        let mut pending: Option<(u64, u64)> = None;
        for (s, e) in cut {
            pending = match pending {
                Some((ps, pe)) if s <= pe => Some((ps, pe.max(e))),
                Some(block) => {
                    alloc.insert_free(block.0, block.1);
                    Some((s, e))
                }
                None => Some((s, e)),
            };
        }
        if let Some((s, e)) = pending {
            alloc.insert_free(s, e);
        }
        alloc.capacity = alloc.free.iter().map(|(s, e)| e - s).sum();
        alloc
    }

    fn insert_free(&mut self, start: u64, end: u64) {
        debug_assert!(start < end);
        self.free.insert(start, end);
        self.by_size.insert((end - start, start));
    }

    fn remove_free(&mut self, start: u64, end: u64) {
        self.free.remove(&start);
        self.by_size.remove(&(end - start, start));
    }

    /// Allocate `size` bytes (rounded up to 4 KiB) aligned to `align` (a
    /// power of two; values below 4 KiB mean 4 KiB). Best fit: the smallest
    /// free block that can hold the request is used.
    ///
    /// `None` when no free block fits, when `size` is 0, or when `align` is
    /// not a power of two (a bug of the caller; asserted in debug builds).
    pub fn alloc(&mut self, size: u64, align: u64) -> Option<u64> {
        let align = align.max(IOVA_PAGE);
        if !align.is_power_of_two() {
            debug_assert!(false, "IOVA alignment {align:#x} is not a power of two");
            log::error!("IOVA alignment {align:#x} is not a power of two");
            return None;
        }
        if size == 0 {
            return None;
        }
        let size = align_up(size, IOVA_PAGE)?;
        // Smallest blocks first; the first one that fits at `align` wins.
        let (start, end, at) = self.by_size.range((size, 0)..).find_map(|&(_, start)| {
            let end = self.free[&start];
            let at = align_up(start, align)?;
            (at.checked_add(size)? <= end).then_some((start, end, at))
        })?;
        self.remove_free(start, end);
        if start < at {
            self.insert_free(start, at);
        }
        if at + size < end {
            self.insert_free(at + size, end);
        }
        self.allocated.insert(at, size);
        self.in_use += size;
        Some(at)
    }

    /// Return a range from [`IovaAllocator::alloc`]: the address it returned
    /// and the size asked for (or that size rounded up to 4 KiB). The range
    /// is coalesced with its free neighbours.
    ///
    /// Freeing a range that is not allocated exactly so (a double free, a
    /// partial free, an address never handed out) is a bug of the caller: it
    /// panics in debug builds; release builds log an error and change
    /// nothing.
    pub fn free(&mut self, iova: u64, size: u64) {
        let rounded = align_up(size, IOVA_PAGE);
        match self.allocated.get(&iova) {
            Some(&s) if Some(s) == rounded => {}
            found => {
                debug_assert!(
                    false,
                    "IOVA free of {iova:#x}+{size:#x} that is not allocated so (found {found:x?})"
                );
                log::error!(
                    "IOVA free of {iova:#x}+{size:#x} that is not allocated so \
                     (found {found:x?}); ignored"
                );
                return;
            }
        }
        let size = self.allocated.remove(&iova).unwrap_or_default();
        self.in_use -= size;
        let mut start = iova;
        let mut end = iova + size;
        // Merge with the block ending at `iova`, if any.
        if let Some((&ps, &pe)) = self.free.range(..iova).next_back() {
            debug_assert!(pe <= iova, "free block overlaps an allocated one");
            if pe == iova {
                self.remove_free(ps, pe);
                start = ps;
            }
        }
        // Merge with the block starting at the end, if any.
        if let Some(&ne) = self.free.get(&end) {
            self.remove_free(end, ne);
            end = ne;
        }
        self.insert_free(start, end);
    }

    /// Bytes allocated.
    pub fn in_use(&self) -> u64 {
        self.in_use
    }

    /// Bytes managed: the usable ranges after cutting, allocated or not.
    /// Zero when no usable range remained.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Number of allocations outstanding.
    pub fn allocations(&self) -> usize {
        self.allocated.len()
    }

    /// The free blocks, in address order (for tests and diagnostics).
    pub fn free_ranges(&self) -> Vec<Range<u64>> {
        self.free.iter().map(|(&s, &e)| s..e).collect()
    }
}

#[cfg(test)]
mod tests {
    // One usable range is the common case, not a mistaken `Vec<u64>`.
    #![allow(clippy::single_range_in_vec_init)]

    use super::*;

    const K4: u64 = 4096;

    #[test]
    fn ranges_cut_to_dma_bits_and_page_zero() {
        let a = IovaAllocator::new(&[0..1 << 40], 32);
        assert_eq!(a.free_ranges(), vec![K4..1 << 32]);
        assert_eq!(a.capacity(), (1 << 32) - K4);
        // Ranges wholly above the limit vanish; partial ones are cut.
        let a = IovaAllocator::new(
            &[
                0x1_0000..0x2_0000,
                0xffff_0000..0x1_0001_0000,
                1 << 33..1 << 34,
            ],
            32,
        );
        assert_eq!(
            a.free_ranges(),
            vec![0x1_0000..0x2_0000, 0xffff_0000..1 << 32]
        );
        // Unaligned ends shrink inwards; overlapping and touching ranges merge.
        let a = IovaAllocator::new(
            &[
                0x1801..0x5fff,
                0x5000..0x9000,
                0x9000..0xa000,
                0x10_0000..0x10_0100,
            ],
            48,
        );
        assert_eq!(a.free_ranges(), vec![0x2000..0xa000]);
        // Nothing usable.
        let a = IovaAllocator::new(&[0..K4, 1 << 40..1 << 41], 39);
        assert_eq!(a.capacity(), 0);
        let mut a = a;
        assert_eq!(a.alloc(K4, K4), None);
        // The whole 64-bit space.
        let a = IovaAllocator::new(&[0..u64::MAX], 64);
        assert_eq!(a.free_ranges(), vec![K4..align_down(u64::MAX, K4)]);
    }

    #[test]
    fn never_page_zero() {
        let mut a = IovaAllocator::new(&[0..16 * K4], 32);
        let mut got = Vec::new();
        while let Some(iova) = a.alloc(K4, K4) {
            got.push(iova);
        }
        assert_eq!(got.len(), 15);
        assert!(!got.contains(&0));
        assert_eq!(a.in_use(), 15 * K4);
    }

    #[test]
    fn alignment_and_rounding() {
        let mut a = IovaAllocator::new(&[K4..1 << 32], 32);
        let x = a.alloc(1, 1).unwrap();
        assert_eq!(x % K4, 0);
        assert_eq!(a.in_use(), K4);
        let y = a.alloc(3 * K4, 1 << 21).unwrap();
        assert_eq!(y % (1 << 21), 0);
        assert_eq!(a.in_use(), 4 * K4);
        let z = a.alloc(1 << 30, 1 << 30).unwrap();
        assert_eq!(z, 1 << 30);
        // Freed with the size asked for, not the rounded one.
        a.free(x, 1);
        a.free(y, 3 * K4);
        a.free(z, 1 << 30);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.free_ranges(), vec![K4..1 << 32]);
        // Bad arguments.
        assert_eq!(a.alloc(0, K4), None);
        assert_eq!(a.alloc(u64::MAX, K4), None);
    }

    #[test]
    fn exhaustion_gives_none() {
        let mut a = IovaAllocator::new(&[K4..9 * K4], 32);
        assert_eq!(a.alloc(9 * K4, K4), None);
        let all = a.alloc(8 * K4, K4).unwrap();
        assert_eq!(all, K4);
        assert_eq!(a.alloc(K4, K4), None);
        a.free(all, 8 * K4);
        // Room, but not at that alignment.
        assert_eq!(a.alloc(K4, 1 << 20), None);
        assert_eq!(a.in_use(), 0);
    }

    #[test]
    fn best_fit_and_coalescing() {
        let mut a = IovaAllocator::new(&[K4..65 * K4], 32);
        let blocks: Vec<u64> = (0..8).map(|_| a.alloc(8 * K4, K4).unwrap()).collect();
        assert_eq!(a.alloc(K4, K4), None);
        // Holes of 8 pages at blocks 1 and 3, 16 pages at 5..7.
        a.free(blocks[1], 8 * K4);
        a.free(blocks[3], 8 * K4);
        a.free(blocks[5], 8 * K4);
        a.free(blocks[6], 8 * K4);
        assert_eq!(a.free_ranges().len(), 3, "5 and 6 coalesced");
        // A 12-page request goes to the 16-page hole, an 8-page one to the
        // lowest 8-page hole (best fit, then address order).
        assert_eq!(a.alloc(12 * K4, K4), Some(blocks[5]));
        assert_eq!(a.alloc(8 * K4, K4), Some(blocks[1]));
        // Freeing between two free blocks joins all three.
        a.free(blocks[5], 12 * K4);
        a.free(blocks[1], 8 * K4);
        a.free(blocks[2], 8 * K4);
        assert!(a.free_ranges().contains(&(blocks[1]..blocks[4])));
        for b in [0, 4, 7] {
            a.free(blocks[b], 8 * K4);
        }
        assert_eq!(a.free_ranges(), vec![K4..65 * K4]);
        assert_eq!(a.in_use(), 0);
        assert_eq!(a.allocations(), 0);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not allocated")]
    fn double_free_asserts() {
        let mut a = IovaAllocator::new(&[0..1 << 20], 32);
        let x = a.alloc(K4, K4).unwrap();
        a.free(x, K4);
        a.free(x, K4);
    }

    #[test]
    #[cfg(debug_assertions)]
    #[should_panic(expected = "not allocated")]
    fn partial_free_asserts() {
        let mut a = IovaAllocator::new(&[0..1 << 20], 32);
        let x = a.alloc(2 * K4, K4).unwrap();
        a.free(x, K4);
    }

    /// Deterministic xorshift64*.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    /// Whether some free gap of the reference model holds `size` at `align`.
    fn model_fits(ranges: &[(u64, u64)], live: &BTreeMap<u64, u64>, size: u64, align: u64) -> bool {
        ranges.iter().any(|&(rs, re)| {
            let mut cursor = rs;
            let mut gaps = Vec::new();
            for (&s, &sz) in live.range(rs..re) {
                gaps.push((cursor, s));
                cursor = s + sz;
            }
            gaps.push((cursor, re));
            gaps.iter().any(|&(gs, ge)| {
                let at = align_up(gs, align).unwrap();
                at + size <= ge
            })
        })
    }

    #[test]
    fn random_sequences_match_reference_model() {
        // Usable ranges with a reserved hole (an MSI window) and a cut at 2^32.
        let input = [0..0xfee0_0000, 0xfef0_0000..1 << 36];
        let ranges = [(K4, 0xfee0_0000), (0xfef0_0000, 1 << 32)];
        for seed in 1..=8u64 {
            let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            let mut a = IovaAllocator::new(&input, 32);
            assert_eq!(
                a.free_ranges(),
                ranges.iter().map(|&(s, e)| s..e).collect::<Vec<_>>()
            );
            // Model: live allocations, start -> rounded size.
            let mut live: BTreeMap<u64, u64> = BTreeMap::new();
            let mut asked: BTreeMap<u64, u64> = BTreeMap::new();
            for step in 0..4000 {
                if live.is_empty() || rng.below(100) < 55 {
                    // Mostly small sizes, sometimes huge ones to hit exhaustion.
                    let size = match rng.below(10) {
                        0 => (rng.below(1 << 10) + 1) << 20,
                        1..=3 => rng.below(1 << 24) + 1,
                        _ => rng.below(64 * K4) + 1,
                    };
                    let align = 1u64 << (12 + rng.below(11));
                    let rounded = align_up(size, K4).unwrap();
                    match a.alloc(size, align) {
                        Some(at) => {
                            assert_eq!(at % align, 0, "step {step}");
                            assert!(
                                ranges.iter().any(|&(s, e)| s <= at && at + rounded <= e),
                                "step {step}: {at:#x}+{rounded:#x} outside the usable ranges"
                            );
                            if let Some((&ps, &psz)) = live.range(..at + rounded).next_back() {
                                assert!(
                                    ps + psz <= at,
                                    "step {step}: {at:#x} overlaps {ps:#x}+{psz:#x}"
                                );
                            }
                            live.insert(at, rounded);
                            asked.insert(at, size);
                        }
                        None => assert!(
                            !model_fits(&ranges, &live, rounded, align),
                            "step {step}: {rounded:#x} at {align:#x} refused but fits"
                        ),
                    }
                } else {
                    let nth = rng.below(live.len() as u64) as usize;
                    let (&at, _) = live.iter().nth(nth).unwrap();
                    live.remove(&at);
                    a.free(at, asked.remove(&at).unwrap());
                }
                assert_eq!(a.in_use(), live.values().sum::<u64>(), "step {step}");
                assert_eq!(a.allocations(), live.len());
                if step % 97 == 0 {
                    // The free map is the exact complement, with no adjacent blocks.
                    let fr = a.free_ranges();
                    assert!(
                        fr.windows(2).all(|w| w[0].end < w[1].start),
                        "step {step}: not coalesced"
                    );
                    let free: u64 = fr.iter().map(|r| r.end - r.start).sum();
                    assert_eq!(free + a.in_use(), a.capacity());
                }
            }
            for (at, size) in asked {
                a.free(at, size);
            }
            assert_eq!(a.in_use(), 0);
            assert_eq!(
                a.free_ranges(),
                ranges.iter().map(|&(s, e)| s..e).collect::<Vec<_>>()
            );
        }
    }
}
