//! The frame check: a debug mode that compares, on every hit, the page
//! frames behind a registration's addresses now with the frames pinned
//! when it was registered ([`super::CacheOptions::verify_frames`]).
//!
//! Under a long-term pin the frame behind an address changes when the
//! application re-backs it (munmap + mmap, `MAP_FIXED`, `MADV_DONTNEED`,
//! ...), so a mismatch is a stale registration that no event source
//! reported: the entry is retired and the range registered again
//! (counted in [`super::CacheSnapshot::frame_mismatches`]). It costs a read
//! of `/proc/self/pagemap` per hit, and needs CAP_SYS_ADMIN to see frame
//! numbers (without it the kernel reports zeros and the check turns itself
//! off).

use std::fs::File;
use std::os::unix::fs::FileExt;

const PAGE: u64 = 4096;
/// Bits 0-54 of a pagemap entry: the page frame number.
const PFN_MASK: u64 = (1 << 55) - 1;
/// Bit 63: the page is present.
const PRESENT: u64 = 1 << 63;

/// The frames behind `[start, start + len)` now (0 for a page not present),
/// or `None` when they cannot be read (no pagemap, or no CAP_SYS_ADMIN).
pub(crate) fn frames(start: u64, len: u64) -> Option<Box<[u64]>> {
    let f = File::open("/proc/self/pagemap").ok()?;
    let n = (len / PAGE) as usize;
    let mut raw = vec![0u8; n * 8];
    f.read_exact_at(&mut raw, start / PAGE * 8).ok()?;
    let v: Box<[u64]> = raw
        .chunks_exact(8)
        .map(|c| {
            let e = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            if e & PRESENT != 0 {
                e & PFN_MASK
            } else {
                0
            }
        })
        .collect();
    // Present pages with frame 0: the kernel hides frame numbers from
    // this process.
    if v.iter().all(|&pfn| pfn == 0) {
        return None;
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touched_pages_have_frames_as_root() {
        let mut m = memmap2::MmapMut::map_anon(2 * PAGE as usize).unwrap();
        m[0] = 1;
        m[PAGE as usize] = 1;
        let start = m.as_ptr() as u64;
        match frames(start, 2 * PAGE) {
            Some(f) => {
                assert_eq!(f.len(), 2);
                assert!(f.iter().all(|&p| p != 0), "{f:?}");
                assert_ne!(f[0], f[1]);
            }
            None => assert_ne!(
                nix::unistd::geteuid().as_raw(),
                0,
                "root must see frame numbers"
            ),
        }
    }
}
