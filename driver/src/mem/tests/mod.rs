//! Unit tests of [`DmaSpace`] and [`DmaBuffer`] over a recording test
//! backend. The backend only checks the D5 bookkeeping rules (a map over an
//! existing range is `EEXIST`, an unmap must match one map exactly); it is a
//! unit-test fixture, not a model of the device.

#![allow(clippy::single_range_in_vec_init)]

use super::*;
use nix::fcntl::{fcntl, FcntlArg, FdFlag, SealFlag};
use std::os::fd::AsRawFd;

mod backend;
use backend::{Event, TestBackend, UnmapFail};

const K4: u64 = 4096;
const M2: u64 = 2 << 20;

/// A space over a typical usable layout: an MSI window removed, cut at 4 GiB.
fn setup() -> (Arc<TestBackend>, Arc<DmaSpace>) {
    setup_ranges(vec![0..0xfee0_0000, 0xfef0_0000..1 << 48])
}

fn setup_ranges(ranges: Vec<std::ops::Range<u64>>) -> (Arc<TestBackend>, Arc<DmaSpace>) {
    let be = TestBackend::new(ranges);
    let space = DmaSpace::new(be.clone(), 32).unwrap();
    be.space.set(Arc::downgrade(&space)).unwrap();
    (be, space)
}

fn opts() -> BufferOptions {
    BufferOptions {
        name: "fdma-mem-test".into(),
        ..BufferOptions::default()
    }
}

#[test]
fn space_refuses_bad_widths_and_empty_ranges() {
    let be = TestBackend::new(vec![0..1 << 40]);
    for bits in [0, 31, 65] {
        assert!(
            matches!(DmaSpace::new(be.clone(), bits), Err(Error::Invalid(_))),
            "{bits}"
        );
    }
    assert!(DmaSpace::new(be.clone(), 32).is_ok());
    // Only page 0, or only above the DMA width: nothing usable.
    for ranges in [vec![0..K4], vec![1 << 32..1 << 40], vec![]] {
        let be = TestBackend::new(ranges);
        assert!(matches!(DmaSpace::new(be, 32), Err(Error::Invalid(_))));
    }
}

#[test]
fn buffer_maps_inside_usable_range() {
    let (be, space) = setup();
    let sizes = [1usize, 4096, 4097, 100_000, 3 << 20];
    let bufs: Vec<DmaBuffer> = sizes
        .iter()
        .map(|&n| DmaBuffer::new(&space, n, &opts()).unwrap())
        .collect();
    let mut total = 0;
    for (b, &n) in bufs.iter().zip(&sizes) {
        assert_eq!(b.len(), n);
        assert!(!b.is_empty());
        assert_eq!(b.mapped_size(), (n as u64).next_multiple_of(K4));
        let (iova, size) = (b.iova(), b.mapped_size());
        assert!(iova >= K4 && iova % K4 == 0);
        assert!(iova + size <= 0xfee0_0000 || (iova >= 0xfef0_0000 && iova + size <= 1 << 32));
        let (msize, prot, vaddr) = be.mapping(iova).expect("mapped");
        assert_eq!(
            (msize, prot, vaddr),
            (size, DmaProt::RW, b.raw_ptr() as usize)
        );
        total += size;
    }
    assert_eq!(space.mapped_bytes(), total);
    assert_eq!(space.iova_in_use(), total);
    // Device-read-only buffers keep their prot.
    let ro = DmaBuffer::new(
        &space,
        10,
        &BufferOptions {
            prot: DmaProt::READ,
            ..opts()
        },
    )
    .unwrap();
    assert_eq!(be.mapping(ro.iova()).unwrap().1, DmaProt::READ);
    // Debug output is concise: counts, not the allocator's maps.
    let dbg = format!("{ro:?}");
    assert!(
        dbg.contains("iova") && dbg.contains("in_use") && !dbg.contains("free:"),
        "{dbg}"
    );
    drop((bufs, ro));
    assert_eq!(space.mapped_bytes(), 0);
    assert_eq!(space.iova_in_use(), 0);
    assert!(be.maps.lock().unwrap().is_empty());
}

#[test]
fn memfd_is_sealed_and_cloexec() {
    let (_be, space) = setup();
    let b = DmaBuffer::new(&space, 5000, &opts()).unwrap();
    let fd = b.fd().as_raw_fd();
    let seals = SealFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GET_SEALS).unwrap());
    let want = SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL;
    assert!(seals.contains(want), "{seals:?}");
    assert!(!seals.contains(SealFlag::F_SEAL_WRITE));
    let fdflags = FdFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFD).unwrap());
    assert!(fdflags.contains(FdFlag::FD_CLOEXEC));
    let st = nix::sys::stat::fstat(fd).unwrap();
    assert_eq!(st.st_size as u64, b.mapped_size());
    // The seals hold.
    assert_eq!(
        nix::unistd::ftruncate(b.fd(), 0),
        Err(nix::errno::Errno::EPERM)
    );
    assert_eq!(
        nix::unistd::ftruncate(b.fd(), 1 << 20),
        Err(nix::errno::Errno::EPERM)
    );
    let more = SealFlag::F_SEAL_WRITE;
    assert_eq!(
        fcntl(fd, FcntlArg::F_ADD_SEALS(more)),
        Err(nix::errno::Errno::EPERM)
    );
    let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
    assert!(
        link.to_string_lossy().contains("memfd:fdma-mem-test"),
        "{link:?}"
    );
}

/// The `VmFlags` of the mapping that starts at `addr`, from /proc/self/smaps.
fn vm_flags(addr: usize) -> Vec<String> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut in_it = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, _)) = first.split_once('-') {
            if let Ok(start) = usize::from_str_radix(start, 16) {
                in_it = start == addr;
                continue;
            }
        }
        if in_it {
            if let Some(flags) = line.strip_prefix("VmFlags:") {
                return flags.split_whitespace().map(String::from).collect();
            }
        }
    }
    panic!("no mapping at {addr:#x} in /proc/self/smaps");
}

#[test]
fn mapping_is_dontfork_and_shared() {
    let (_be, space) = setup();
    let b = DmaBuffer::new(&space, 3 * 4096, &opts()).unwrap();
    let flags = vm_flags(b.raw_ptr() as usize);
    assert!(
        flags.iter().any(|f| f == "dc"),
        "MADV_DONTFORK missing: {flags:?}"
    );
    assert!(
        flags.iter().any(|f| f == "sh"),
        "not a shared mapping: {flags:?}"
    );
    assert!(flags.iter().any(|f| f == "wr"), "not writable: {flags:?}");
}

#[test]
fn read_write_fill_round_trip() {
    let (_be, space) = setup();
    let b = DmaBuffer::new(&space, 10_000, &opts()).unwrap();
    assert_eq!(b.read_vec(0, 10_000).unwrap(), vec![0; 10_000], "zeroed");
    let data: Vec<u8> = (0..5000u32).map(|i| (i * 7) as u8).collect();
    b.write_at(4000, &data).unwrap();
    let mut back = vec![0; 5000];
    b.read_at(4000, &mut back).unwrap();
    assert_eq!(back, data);
    b.fill(9000, 1000, 0xa5).unwrap();
    assert_eq!(b.read_vec(9000, 1000).unwrap(), vec![0xa5; 1000]);
    assert_eq!(b.read_vec(8999, 1).unwrap(), vec![data[4999]]);
    // A clone shares the memory.
    let c = b.clone();
    c.write_at(0, b"hello").unwrap();
    assert_eq!(b.read_vec(0, 5).unwrap(), b"hello");
    // The fd maps the same pages.
    let other = memmap2::MmapOptions::new()
        .len(10_000)
        .map_raw(b.fd().as_raw_fd())
        .unwrap();
    let mut first = [0u8; 5];
    // SAFETY: `other` maps 10,000 bytes; nothing writes them concurrently.
    unsafe { std::ptr::copy_nonoverlapping(other.as_ptr(), first.as_mut_ptr(), 5) };
    assert_eq!(&first, b"hello");
    // Empty accesses at the end are fine.
    b.read_at(10_000, &mut []).unwrap();
    b.write_at(10_000, &[]).unwrap();
    b.fill(10_000, 0, 1).unwrap();
}

#[test]
fn out_of_bounds_is_invalid_and_copies_nothing() {
    let (_be, space) = setup();
    let b = DmaBuffer::new(&space, 100, &opts()).unwrap();
    b.fill(0, 100, 0x11).unwrap();
    let mut buf = [0x77u8; 8];
    for (off, len) in [(93, 8), (100, 1), (usize::MAX, 8), (usize::MAX - 2, 8)] {
        let mut part = buf[..len].to_vec();
        let err = b.read_at(off, &mut part).unwrap_err();
        assert!(
            matches!(&err, Error::Invalid(m) if m.contains("100-byte")),
            "{err}"
        );
        assert!(part.iter().all(|&x| x == 0x77), "nothing copied out");
        assert!(matches!(
            b.write_at(off, &buf[..len]),
            Err(Error::Invalid(_))
        ));
        assert!(matches!(b.fill(off, len, 0x22), Err(Error::Invalid(_))));
        assert!(matches!(b.read_vec(off, len), Err(Error::Invalid(_))));
    }
    assert!(matches!(
        b.read_at(0, &mut [0; 101]),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(b.read_vec(0, usize::MAX), Err(Error::Invalid(_))));
    b.read_at(92, &mut buf).unwrap();
    assert_eq!(buf, [0x11; 8], "nothing written by the refused calls");
    assert_eq!(b.read_vec(0, 100).unwrap(), vec![0x11; 100]);
}

#[test]
fn zero_length_and_bad_options_refused() {
    let (be, space) = setup();
    assert!(matches!(
        DmaBuffer::new(&space, 0, &opts()),
        Err(Error::Invalid(_))
    ));
    let nul = BufferOptions {
        name: "a\0b".into(),
        ..opts()
    };
    assert!(matches!(
        DmaBuffer::new(&space, 10, &nul),
        Err(Error::Invalid(_))
    ));
    // Beyond the backend's largest mapping.
    assert!(matches!(
        DmaBuffer::new(&space, (1 << 30) + 1, &opts()),
        Err(Error::Invalid(_))
    ));
    assert!(matches!(
        DmaBuffer::new(&space, usize::MAX, &opts()),
        Err(Error::Invalid(_))
    ));
    // A long name is shortened, not refused.
    let long = BufferOptions {
        name: "é".repeat(300),
        ..opts()
    };
    drop(DmaBuffer::new(&space, 10, &long).unwrap());
    assert_eq!(be.events().len(), 2);
    assert_eq!(space.iova_in_use(), 0);
}

#[test]
fn drop_waits_unmaps_then_frees_iova() {
    let (be, space) = setup();
    let a = DmaBuffer::new(&space, 8192, &opts()).unwrap();
    let (iova, size) = (a.iova(), a.mapped_size());
    let a2 = a.clone();
    drop(a);
    assert_eq!(
        be.events(),
        vec![Event::Map { iova, size }],
        "a clone keeps it mapped"
    );
    assert_eq!(a2.read_vec(0, 4).unwrap(), vec![0; 4]);
    // While it is mapped, a new buffer gets another IOVA.
    let b = DmaBuffer::new(&space, 8192, &opts()).unwrap();
    assert_ne!(b.iova(), iova);
    assert!(b.iova() >= iova + size || b.iova() + b.mapped_size() <= iova);
    drop(a2);
    // The unmap ran while the IOVA was still allocated (both buffers' worth).
    assert_eq!(
        be.events()[2],
        Event::Unmap {
            iova,
            size,
            iova_in_use: 2 * size
        }
    );
    assert_eq!(space.iova_in_use(), size);
    // Only now is the range handed out again.
    let c = DmaBuffer::new(&space, 8192, &opts()).unwrap();
    assert_eq!(c.iova(), iova);
    drop((b, c));
    assert_eq!(space.iova_in_use(), 0);
    assert_eq!(space.mapped_bytes(), 0);
}

#[test]
fn failed_map_undoes_iova_allocation() {
    let (be, space) = setup_ranges(vec![0..1 << 32]);
    *be.fail_next_map.lock().unwrap() = true;
    let err = DmaBuffer::new(&space, 4096, &opts()).unwrap_err();
    assert!(
        matches!(err, Error::Backend(BackendError::Refused { errno, .. }) if errno == libc::ENOMEM)
    );
    assert_eq!(space.iova_in_use(), 0);
    assert_eq!(space.mapped_bytes(), 0);
    assert!(be.events().is_empty());
    let ok = DmaBuffer::new(&space, 4096, &opts()).unwrap();
    assert_eq!(ok.iova(), K4, "the IOVA was returned");
}

#[test]
fn failed_unmap_leaks_iova_unless_device_lost() {
    let (be, space) = setup();
    let a = DmaBuffer::new(&space, 4096, &opts()).unwrap();
    let iova = a.iova();
    *be.fail_next_unmap.lock().unwrap() = UnmapFail::Refused;
    drop(a);
    // C4: still possibly mapped, so never reused.
    assert_eq!(space.iova_in_use(), K4);
    assert_eq!(space.iova_leaked(), K4);
    assert_eq!(space.mapped_bytes(), K4);
    let b = DmaBuffer::new(&space, 4096, &opts()).unwrap();
    assert_ne!(b.iova(), iova);
    // A lost device reaches nothing: the range is freed locally.
    let biova = b.iova();
    *be.fail_next_unmap.lock().unwrap() = UnmapFail::Lost;
    drop(b);
    assert_eq!(space.iova_in_use(), K4, "only the leaked page");
    assert_eq!(space.mapped_bytes(), K4);
    let c = DmaBuffer::new(&space, 4096, &opts()).unwrap();
    assert_eq!(c.iova(), biova);
}

#[test]
fn iova_exhaustion_is_out_of_space() {
    // 16 usable pages, page 0 excluded: 15.
    let (be, space) = setup_ranges(vec![0..16 * K4]);
    let bufs: Vec<DmaBuffer> = (0..15)
        .map(|_| DmaBuffer::new(&space, 1, &opts()).unwrap())
        .collect();
    let err = DmaBuffer::new(&space, 1, &opts()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::OutOfSpace {
                what: "IOVA space",
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(be.events().len(), 15, "nothing mapped for the refused one");
    drop(bufs);
    let big = DmaBuffer::new(&space, 15 * 4096, &opts()).unwrap();
    assert_eq!(big.iova(), K4);
    // The same allocator serves explicit IOVA users (the registration cache).
    assert!(matches!(
        space.alloc_iova(1, K4),
        Err(Error::OutOfSpace { .. })
    ));
    drop(big);
    let r = space.alloc_iova(5000, 0).unwrap();
    assert_eq!(space.iova_in_use(), 2 * K4);
    space.free_iova(r, 5000);
    assert_eq!(space.iova_in_use(), 0);
    assert!(matches!(space.alloc_iova(0, K4), Err(Error::Invalid(_))));
    assert!(matches!(
        space.alloc_iova(K4, 3 * K4),
        Err(Error::Invalid(_))
    ));
}

#[test]
fn huge_pages_work_or_fail_clearly() {
    let (be, space) = setup();
    let huge = BufferOptions {
        huge_pages: true,
        ..opts()
    };
    match DmaBuffer::new(&space, 5000, &huge) {
        Ok(b) => {
            assert_eq!(b.mapped_size(), M2);
            assert_eq!(b.iova() % M2, 0);
            b.write_at(4999, b"x").unwrap();
            assert_eq!(b.read_vec(4999, 1).unwrap(), b"x");
            assert!(
                vm_flags(b.raw_ptr() as usize).iter().any(|f| f == "ht"),
                "hugetlb mapping"
            );
        }
        Err(e) => {
            let clear = match &e {
                Error::OutOfSpace { what, .. } => what.contains("huge pages"),
                Error::Sys { op, .. } => op.contains("MFD_HUGETLB"),
                _ => false,
            };
            assert!(clear, "unclear huge page error: {e}");
            assert_eq!(space.iova_in_use(), 0);
            assert!(be.events().is_empty());
            eprintln!("no huge pages here: {e}");
        }
    }
}

#[test]
fn forked_child_gets_forked_and_drops_nothing() {
    let (be, space) = setup();
    let b = DmaBuffer::new(&space, 4096, &opts()).unwrap();
    b.write_at(0, b"parent").unwrap();
    // SAFETY: the child only calls into this module (no locks other threads
    // of the test harness may hold, other than glibc's fork-safe malloc) and
    // leaves with `_exit`.
    match unsafe { nix::unistd::fork() }.unwrap() {
        nix::unistd::ForkResult::Child => {
            let ok = matches!(b.read_vec(0, 6), Err(Error::Forked))
                && matches!(b.write_at(0, b"child"), Err(Error::Forked))
                && matches!(b.fill(0, 1, 0), Err(Error::Forked));
            drop(b);
            let quiet = be.events().len() == 1 && space.iova_in_use() == K4;
            // SAFETY: ends the child without running the parent's atexit
            // handlers or the test harness.
            unsafe { libc::_exit(if ok && quiet { 0 } else { 1 }) };
        }
        nix::unistd::ForkResult::Parent { child } => {
            let status = nix::sys::wait::waitpid(child, None).unwrap();
            assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
        }
    }
    assert_eq!(b.read_vec(0, 6).unwrap(), b"parent");
    drop(b);
    assert_eq!(space.iova_in_use(), 0);
    assert_eq!(be.events().len(), 2);
}

#[test]
fn buffers_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<DmaBuffer>();
    check::<DmaSpace>();
    let (_be, space) = setup();
    let b = DmaBuffer::new(&space, 1 << 16, &opts()).unwrap();
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let b = b.clone();
            s.spawn(move || {
                let off = t as usize * (1 << 14);
                b.fill(off, 1 << 14, t + 1).unwrap();
                assert_eq!(b.read_vec(off, 1 << 14).unwrap(), vec![t + 1; 1 << 14]);
            });
        }
    });
}
