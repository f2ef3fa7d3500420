//! The kernel VFIO transport against a real vfio-pci: QEMU's `edu` device
//! in the guest stage (`scripts/guest-test`), behind an emulated Intel
//! IOMMU. Every test here needs that device bound to vfio-pci, so they are
//! `#[ignore]`d in a normal `cargo test`; the guest runs them with
//! `--ignored`. `FDMA_TEST_EDU` names the device; otherwise the first edu
//! found in sysfs is used.
//!
//! The conformance checks are the ones the simulator passes over
//! vfio-user (`conformance.rs`); the rest are what only a kernel can do:
//! refuse a second opener, charge pinned pages to RLIMIT_MEMLOCK, and ask
//! for the device back.

use fdma::backend::{Backend, DmaProt, DmaSource, IrqKind};
use fdma::pci::{PciAddress, Sysfs};
use fdma::reactor::{IrqHandler, Reactor};
use fdma::{BackendError, FenceError, Timeline, Wait};
use fdma_host_tests::conformance::{self, edu::Edu, Adapter, UserMem};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const NEEDS: &str = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test";

fn edu_address() -> String {
    let _ = env_logger::builder().is_test(true).try_init();
    if let Ok(a) = std::env::var("FDMA_TEST_EDU") {
        return a;
    }
    let found = Sysfs::system()
        .list(Some((
            conformance::edu::IDS.0,
            Some(conformance::edu::IDS.1),
        )))
        .expect("list PCI devices");
    found
        .first()
        .unwrap_or_else(|| panic!("no edu device (1234:11e8) on this machine; {NEEDS}"))
        .address
        .to_string()
}

fn adapter() -> Arc<dyn Adapter> {
    Arc::new(Edu::open(&edu_address()).expect("open edu through kernel VFIO"))
}

fdma_host_tests::conformance_tests!(
    #[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
    setup = ((), adapter())
);

/// The IOMMU group can be open in one place only: a second open is a
/// typed "in use", and a device that does not exist is named as such.
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn open_errors_are_typed() {
    let addr = edu_address();
    let first = fdma::device::connect(&addr, &fdma::OpenOptions::default()).expect("first open");
    match fdma::device::connect(&addr, &fdma::OpenOptions::default()) {
        Err(fdma::Error::Backend(BackendError::Busy { device, .. })) => assert_eq!(device, addr),
        other => panic!("second open of {addr} gave {other:?}"),
    }
    drop(first);
    match fdma::device::connect("0000:7f:1f.7", &fdma::OpenOptions::default()) {
        Err(fdma::Error::Backend(BackendError::Preflight { .. })) => {}
        other => panic!("opening a missing device gave {other:?}"),
    }
    // Closed, the device opens again.
    fdma::device::connect(&addr, &fdma::OpenOptions::default()).expect("reopen");
}

/// Without CAP_IPC_LOCK, type1 charges pinned pages to RLIMIT_MEMLOCK: a
/// map beyond it is a clear `Memlock` error, one within it works. Run as
/// an unprivileged user (root has CAP_IPC_LOCK and would prove nothing).
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci, run by an unprivileged user: scripts/guest-test"]
fn memlock_limit_is_a_clear_error() {
    assert!(
        !fdma::pci::has_cap_ipc_lock(),
        "this test proves nothing with CAP_IPC_LOCK: run it as an unprivileged user"
    );
    let limit = 256 * 1024;
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_MEMLOCK, limit, limit)
        .expect("lower RLIMIT_MEMLOCK");
    let a = adapter();
    let b = a.backend();
    let base = b.dma_limits().iova_ranges[0].start.max(0x10_0000);
    let big = UserMem::new(4 << 20).unwrap();
    match b.dma_map(
        base,
        big.len() as u64,
        DmaSource::Vaddr(big.ptr()),
        DmaProt::RW,
    ) {
        Err(e @ BackendError::Memlock { .. }) => {
            let msg = e.to_string();
            assert!(msg.contains("RLIMIT_MEMLOCK is 262144 bytes"), "{msg}");
        }
        other => panic!("a 4 MiB map under a 256 KiB limit gave {other:?}"),
    }
    let small = UserMem::new(64 * 1024).unwrap();
    b.dma_map(
        base,
        small.len() as u64,
        DmaSource::Vaddr(small.ptr()),
        DmaProt::RW,
    )
    .expect("a map within the limit");
    b.dma_unmap(base, small.len() as u64).expect("unmap");
}

/// The kernel asks for the device back (an unbind while we hold it): the
/// request interrupt reaches the reactor, the pending fence fails with
/// `DeviceLost`, the backend releases the device, and the unbind finishes.
/// The device is bound back to vfio-pci afterwards.
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn device_request_fails_fences_and_releases() {
    struct OnRequest {
        backend: Arc<dyn Backend>,
        efd: nix::sys::eventfd::EventFd,
        pending: Mutex<Option<fdma::fence::Signaller>>,
    }
    impl IrqHandler for OnRequest {
        fn irq_fds(&self) -> Vec<BorrowedFd<'_>> {
            vec![self.efd.as_fd()]
        }
        fn on_irq(&self, _vector: usize, _count: u64) {
            if let Some(s) = self.pending.lock().unwrap().take() {
                let _ = s.signal(Err(FenceError::DeviceLost {
                    channel: 0,
                    seqno: s.seqno(),
                }));
            }
            self.backend.release();
        }
    }
    let addr = edu_address();
    let a = adapter();
    let b = a.backend().clone();
    assert_eq!(
        b.irq_count(IrqKind::Request),
        1,
        "vfio-pci offers the request interrupt"
    );
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .unwrap();
    b.set_irq_eventfds(IrqKind::Request, 0, &[efd.as_fd()])
        .expect("route the request");
    // A mapping and a BAR mmap the release must give up.
    let mem = UserMem::new(4096).unwrap();
    let iova = b.dma_limits().iova_ranges[0].start.max(0x10_0000);
    b.dma_map(iova, 4096, DmaSource::Vaddr(mem.ptr()), DmaProt::RW)
        .unwrap();
    let bar = b.region_mmap(0).unwrap().expect("BAR 0 mmap");
    let tl = Timeline::new(0);
    let (fence, signaller) = tl.create();
    let h = Arc::new(OnRequest {
        backend: b.clone(),
        efd,
        pending: Mutex::new(Some(signaller)),
    });
    let mut reactor = Reactor::start("request-reactor", h, Duration::from_millis(50)).unwrap();
    let target: PciAddress = addr.parse().unwrap();
    let unbind = std::thread::spawn(move || Sysfs::system().unbind_vfio(&target));
    match fence.wait_timeout(Duration::from_secs(30)) {
        Wait::Signalled(Err(FenceError::DeviceLost { .. })) => {}
        other => panic!("the pending fence gave {other:?}"),
    }
    let report = unbind
        .join()
        .unwrap()
        .expect("the unbind completes once released");
    eprintln!("unbind: {report:?}");
    reactor.stop();
    assert!(b.is_lost());
    // SAFETY: the mapping is still ours (revoked, not unmapped): it now
    // reads all ones, as a vanished device does.
    let v = unsafe { bar[0].ptr.cast::<u32>().read_volatile() };
    assert_eq!(v, u32::MAX, "a revoked BAR reads all ones");
    let mut id = [0u8; 4];
    assert!(matches!(
        b.region_read(0, 0, &mut id),
        Err(BackendError::Lost { .. })
    ));
    assert!(
        b.dma_unmap(iova, 4096).is_ok(),
        "unmap after release is a no-op"
    );
    drop(bar);
    Sysfs::system()
        .bind_vfio(&addr.parse().unwrap())
        .expect("bind edu back to vfio-pci");
}

/// A full open by PCI address goes through kernel VFIO and checks the
/// card's identity: edu is not an fdma card, and says so.
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn device_open_refuses_a_foreign_card() {
    let addr = edu_address();
    match fdma::Device::open(&addr) {
        Err(fdma::Error::Identity { device, why }) => {
            assert_eq!(device, addr);
            assert!(why.contains("is not an fdma card"), "{why}");
        }
        other => panic!("opening edu as an fdma card gave {:?}", other.map(|_| ())),
    }
    // The failed open released the device: it opens again.
    Edu::open(&addr).expect("reopen after the refused open");
}

/// Legacy INTx through VFIO: the kernel masks the line when it fires and
/// the driver unmasks it once the device is served; without the unmask a
/// second interrupt never arrives, with it it does.
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn intx_with_unmask() {
    use fdma::backend::vfio::VfioBackend;
    let addr = edu_address();
    let vfio = Arc::new(VfioBackend::open(&addr).expect("open edu"));
    let backend: Arc<dyn Backend> = vfio.clone();
    let edu = Edu::new(backend.clone()).expect("take edu");
    assert_eq!(backend.irq_count(IrqKind::Intx), 1, "edu has an INTx pin");
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )
    .unwrap();
    backend
        .set_irq_eventfds(IrqKind::Intx, 0, &[efd.as_fd()])
        .expect("route INTx");
    let fired = |within: Duration| {
        let t0 = std::time::Instant::now();
        while t0.elapsed() < within {
            if efd.read().is_ok() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    };
    edu.raise_irq().unwrap();
    assert!(
        fired(conformance::DEVICE_TIMEOUT),
        "first INTx never arrived"
    );
    assert!(
        edu.claim_irq(),
        "edu did not report the interrupt it raised"
    );
    // Masked by the kernel until unmasked: a second one stays pending.
    edu.raise_irq().unwrap();
    assert!(
        !fired(Duration::from_millis(500)),
        "INTx fired while masked"
    );
    vfio.unmask_intx().expect("unmask");
    assert!(
        fired(conformance::DEVICE_TIMEOUT),
        "INTx did not fire after the unmask"
    );
    assert!(edu.claim_irq());
    vfio.unmask_intx().unwrap();
    backend.disable_irqs(IrqKind::Intx).unwrap();
}

/// The registration cache over kernel VFIO (C3, D5), with edu as the
/// device: explicit registrations (type1 pins and maps them) serve DMA
/// both ways; `invalidate()` before re-backing the memory, then a new
/// registration, puts the device on the new pages for reads and writes;
/// without `invalidate()` the device still reaches the old pages (the
/// negative control: the positive half can fail). Then close leaves
/// nothing pinned (C11). The explicit API alone (`Watch::Explicit`): with
/// the MMU-notifier shim on, the re-backing of the negative control would
/// itself invalidate the registration (`shim_munmap_mmap_on_kernel_vfio`).
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn cache_invalidate_on_kernel_vfio() {
    use fdma::cache::{CacheOptions, RegCache, Watch};
    use fdma_host_tests::pattern;
    let edu = Edu::open(&edu_address()).expect("open edu through kernel VFIO");
    let space = fdma::mem::DmaSpace::new(edu.backend().clone(), 64).expect("DMA space");
    let opts = CacheOptions {
        watch: Watch::Explicit,
        ..Default::default()
    };
    let cache = RegCache::new(space, &opts).expect("registration cache");
    assert!(!cache.shim_active(), "Watch::Explicit started the shim");
    let n = edu.max_dma();
    let len = 8192;
    let reg = |m: &UserMem| {
        // SAFETY: the memory is only touched by copies through raw
        // pointers (`UserMem`), never through references.
        unsafe { cache.register(m.ptr(), m.len(), DmaProt::RW) }.expect("register")
    };
    let round_trip = |src_iova: u64, dst_iova: u64| {
        edu.host_to_device(src_iova, 0, n)
            .expect("edu reads host memory");
        edu.device_to_host(0, dst_iova, n)
            .expect("edu writes host memory");
    };
    let n = n as usize;

    let src = UserMem::new(len).unwrap();
    let dst = UserMem::new(len).unwrap();
    src.write(0, &pattern(1, n));
    let rs = reg(&src);
    let rd = reg(&dst);
    assert_ne!(rs.iova(), rd.iova());
    round_trip(rs.iova(), rd.iova());
    assert_eq!(dst.read(0, n), pattern(1, n), "registered round trip");

    // C3: invalidate, re-back, register again: the device reads the new
    // pages...
    cache.invalidate(src.ptr(), src.len()).unwrap();
    assert!(!rs.is_valid(), "invalidated");
    src.reback().unwrap();
    src.write(0, &pattern(2, n));
    let rs2 = reg(&src);
    round_trip(rs2.iova(), rd.iova());
    assert_eq!(
        dst.read(0, n),
        pattern(2, n),
        "device read after invalidate + re-back"
    );
    // ...and writes them.
    cache.invalidate(dst.ptr(), dst.len()).unwrap();
    assert!(!rd.is_valid(), "invalidated");
    dst.reback().unwrap();
    let rd2 = reg(&dst);
    edu.device_to_host(0, rd2.iova(), n as u64).unwrap();
    assert_eq!(
        dst.read(0, n),
        pattern(2, n),
        "device write after invalidate + re-back"
    );
    let s = cache.stats();
    assert_eq!(
        (s.registrations, s.invalidations_api, s.invalidated_entries),
        (4, 2, 2),
        "{s:?}"
    );
    assert_eq!((s.entries, s.pinned_bytes), (2, 2 * len as u64), "{s:?}");

    // D5 negative control: no invalidate. The device reads the old pages...
    let src3 = UserMem::new(len).unwrap();
    src3.write(0, &pattern(3, n));
    let rs3 = reg(&src3);
    src3.reback().unwrap();
    src3.write(0, &pattern(4, n));
    round_trip(rs3.iova(), rd2.iova());
    assert_eq!(
        dst.read(0, n),
        pattern(3, n),
        "without invalidate() the device reads the old pages"
    );
    // ...and writes them: the process's new pages stay zero.
    dst.reback().unwrap();
    edu.device_to_host(0, rd2.iova(), n as u64).unwrap();
    assert_eq!(
        dst.read(0, n),
        vec![0u8; n],
        "without invalidate() the device writes the old pages"
    );

    cache.close();
    let s = cache.stats();
    assert_eq!(
        (s.entries, s.pinned_bytes, s.retired_pending),
        (0, 0, 0),
        "after close: {s:?}"
    );
    assert!(!rs2.is_valid() && !rs3.is_valid());
}

/// The MMU-notifier shim over kernel VFIO type1 (C2), with edu as the
/// device: memory registered explicitly and used by DMA is unmapped and
/// mapped again at the same address with new data. With the shim on, the
/// userfaultfd event alone invalidates the registration (no `invalidate()`
/// call): it goes invalid, its pages are unmapped from the IOMMU (a DMA to
/// its IOVA faults), and a new registration puts edu on the new pages for
/// reads and writes. With the shim off (`Watch::Explicit`), the same steps
/// leave the stale registration valid and edu on the old pages: the
/// negative control that proves the positive half can fail (D5). Each
/// cache closes with nothing left pinned (C11).
#[test]
#[ignore = "needs QEMU's edu bound to vfio-pci: run scripts/guest-test"]
fn shim_munmap_mmap_on_kernel_vfio() {
    let edu = Edu::open(&edu_address()).expect("open edu through kernel VFIO");
    let space = fdma::mem::DmaSpace::new(edu.backend().clone(), 64).expect("DMA space");
    shim_munmap_mmap_part(&edu, &space, true);
    shim_munmap_mmap_part(&edu, &space, false);
}

fn shim_munmap_mmap_part(edu: &Edu, space: &Arc<fdma::mem::DmaSpace>, on: bool) {
    use fdma::cache::{CacheOptions, RegCache, Watch};
    use fdma_host_tests::pattern;
    let mode = if on { "shim on" } else { "shim off" };
    let opts = CacheOptions {
        watch: if on {
            Watch::Userfaultfd
        } else {
            Watch::Explicit
        },
        ..Default::default()
    };
    let cache = RegCache::new(space.clone(), &opts).expect("registration cache");
    if on {
        assert!(
            cache.shim_active(),
            "the MMU-notifier shim is not active: userfaultfd is unavailable in this kernel \
             or process (CONFIG_USERFAULTFD, vm.unprivileged_userfaultfd, /dev/userfaultfd; \
             the cache's warning in the log says why), so this test cannot check it: {:?}",
            cache.stats()
        );
    } else {
        assert!(!cache.shim_active(), "Watch::Explicit started the shim");
    }
    let n = edu.max_dma() as usize;
    let len = 8192;
    let reg = |p: *const u8, len: usize| {
        // SAFETY: the memory is only touched by copies through raw
        // pointers (`Anon`, `UserMem`), never through references.
        unsafe { cache.register(p, len, DmaProt::RW) }.expect("register")
    };
    // `mem` is the memory re-backed; `aux` carries data to and from edu's
    // buffer.
    let mem = fdma_host_tests::anon::Anon::new(len);
    let aux = UserMem::new(len).unwrap();
    let ra = reg(aux.ptr(), aux.len());
    // What edu reads at `iova`: its buffer is loaded with a filler first,
    // so a read that did not happen cannot pass for old data.
    let edu_reads = |iova: u64| {
        aux.write(0, &pattern(99, n));
        edu.host_to_device(ra.iova(), 0, n as u64).unwrap();
        edu.host_to_device(iova, 0, n as u64)
            .expect("edu reads host memory");
        edu.device_to_host(0, ra.iova(), n as u64).unwrap();
        aux.read(0, n)
    };
    // edu writes `data` at `iova`.
    let edu_writes = |iova: u64, data: &[u8]| {
        aux.write(0, data);
        edu.host_to_device(ra.iova(), 0, n as u64).unwrap();
        edu.device_to_host(0, iova, n as u64)
            .expect("edu writes host memory");
    };

    let old = pattern(1, n);
    mem.write(&old);
    let rm = reg(mem.p, mem.len);
    assert_eq!(edu_reads(rm.iova()), old, "{mode}: first use");
    let s = cache.stats();
    if on {
        assert_eq!(
            (s.subscriptions, s.unwatched_explicit),
            (2, 0),
            "{mode}: the shim could not watch the registrations: {s:?}"
        );
    }

    // munmap, and new pages at the same address with new data.
    mem.reback(fdma_host_tests::anon::Reback::UnmapThenMap);
    let new = pattern(2, n);
    mem.write(&new);

    if on {
        // The userfaultfd event alone retires the registration: no lookup
        // or registration runs meanwhile, so the shim's own thread
        // publishes it and the cache's worker unmaps it.
        let t0 = std::time::Instant::now();
        let s = loop {
            let s = cache.stats();
            if !rm.is_valid()
                && s.invalidations_shim >= 1
                && s.invalidated_entries >= 1
                && s.retired_pending == 0
            {
                break s;
            }
            assert!(
                t0.elapsed() < conformance::DEVICE_TIMEOUT,
                "{mode}: the munmap did not invalidate the registration within {:?}: \
                 valid {}, {s:?}",
                conformance::DEVICE_TIMEOUT,
                rm.is_valid()
            );
            std::thread::sleep(Duration::from_millis(10));
        };
        assert_eq!(s.invalidations_api, 0, "{s:?}");
        assert_eq!(
            (s.entries, s.pinned_bytes),
            (1, aux.len() as u64),
            "{mode}: only aux is left registered: {s:?}"
        );
        // The old pages are gone from the IOMMU: edu's read of the old
        // IOVA faults (and edu still completes).
        let before = conformance::edu::kernel_dmar_faults().expect("read the kernel log");
        edu.host_to_device(rm.iova(), 0, n as u64)
            .expect("edu completes a refused read");
        let t0 = std::time::Instant::now();
        while conformance::edu::kernel_dmar_faults().unwrap() <= before {
            assert!(
                t0.elapsed() < conformance::DEVICE_TIMEOUT,
                "{mode}: no IOMMU fault for a read of the invalidated IOVA {:#x}",
                rm.iova()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // A new registration: edu reads the new pages...
        let rm2 = reg(mem.p, mem.len);
        assert!(rm2.is_valid());
        assert_eq!(
            edu_reads(rm2.iova()),
            new,
            "{mode}: edu reads the new pages"
        );
        // ...and writes them.
        let written = pattern(3, n);
        edu_writes(rm2.iova(), &written);
        assert_eq!(
            mem.read_len(n),
            written,
            "{mode}: the process sees edu's write"
        );
        let s = cache.stats();
        assert_eq!(
            (s.registrations, s.entries, s.subscriptions),
            (3, 2, 2),
            "{s:?}"
        );
    } else {
        // No event source, no invalidate(): the stale registration stays
        // valid and edu reads the old pages...
        std::thread::sleep(Duration::from_millis(200));
        assert!(rm.is_valid(), "{mode}: nothing invalidated it");
        assert_eq!(
            edu_reads(rm.iova()),
            old,
            "{mode}: without the shim edu reads the old pages"
        );
        // ...and writes them: the process's new pages keep its own data,
        // the old pages (read back through the same IOVA) have edu's.
        let written = pattern(3, n);
        edu_writes(rm.iova(), &written);
        assert_eq!(
            mem.read_len(n),
            new,
            "{mode}: without the shim edu's write misses the new pages"
        );
        assert_eq!(
            edu_reads(rm.iova()),
            written,
            "{mode}: edu's write went to the old pages"
        );
        let s = cache.stats();
        assert_eq!(
            (
                s.invalidations_shim,
                s.invalidations_api,
                s.invalidated_entries,
                s.subscriptions
            ),
            (0, 0, 0, 0),
            "{s:?}"
        );
        assert_eq!((s.registrations, s.entries), (2, 2), "{s:?}");
    }

    cache.close();
    let s = cache.stats();
    assert_eq!(
        (
            s.entries,
            s.pinned_bytes,
            s.retired_pending,
            s.subscriptions
        ),
        (0, 0, 0, 0),
        "{mode}: after close: {s:?}"
    );
    assert!(!rm.is_valid() && !ra.is_valid());
    drop(mem);
}
