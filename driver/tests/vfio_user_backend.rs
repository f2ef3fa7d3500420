//! The vfio-user backend against the simulator's server, run in-process on
//! a temporary socket: handshake and identity, register and region access,
//! DMA mapped by fd and by address with real DMA through the engine, the
//! D5 conformance test (re-backed address: the device sees the old pages),
//! EEXIST / exact-unmap rules, permissions, a lost device, and a handle
//! poisoned after fork. The DMA service thread's F10 check is in
//! `signalling_no_alloc.rs`, with that binary's counting allocator.

mod common;

use common::*;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fdma::backend::vfio_user::{VfioUserBackend, VfioUserOptions};
use fdma::backend::{Backend, DmaProt, DmaSource, IrqKind, RegFault};
use fdma::BackendError;
use fdma_hw::desc::{err, Descriptor, Direction};
use fdma_hw::pci::{self, cfg};
use fdma_hw::regs::{self, state};
use nix::sys::eventfd::{EfdFlags, EventFd};

#[test]
fn handshake_and_identity() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    assert_eq!(b.name(), format!("sim:{}", sim.sock.display()));
    let engine = fdma_hw::EngineConfig::DEFAULT;
    let r0 = b.region_info(0).unwrap();
    assert_eq!((r0.size, r0.read, r0.write), (regs::BAR0_SIZE, true, true));
    assert!(r0.mmap_areas.is_empty());
    assert!(b.region_info(1).is_none());
    let r2 = b.region_info(2).unwrap();
    assert_eq!(r2.size, engine.card_mem_bytes());
    assert_eq!(r2.mmap_areas, vec![0..engine.card_mem_bytes()]);
    assert_eq!(b.region_info(7).unwrap().size, 256);
    assert!(b.region_mmap(0).unwrap().is_none());
    assert_eq!(b.irq_count(IrqKind::Msix), engine.msix_vectors() as u32);
    assert_eq!(b.irq_count(IrqKind::Request), 0);
    let l = b.dma_limits();
    assert_eq!(l.max_mappings, 16384);
    assert_eq!(l.max_mapping_size, 1 << 30);
    assert_eq!(l.page_sizes, 4096);
    assert_eq!(
        l.iova_ranges,
        vec![0x1000..0xfee0_0000, 0xfef0_0000..u64::MAX]
    );
    assert!(l.vaddr_pinned, "io_uring pinning expected on this machine");

    assert_eq!(reg(&b, regs::ID.offset), fdma_hw::id_value());
    let mut id = [0u8; 4];
    b.config_read(0, &mut id).unwrap();
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), pci::VENDOR_ID);
    assert_eq!(u16::from_le_bytes([id[2], id[3]]), pci::DEVICE_ID);
    b.reset().unwrap();
    assert_eq!(reg(&b, regs::ID.offset), fdma_hw::id_value());
    // Out-of-range accesses are refused locally.
    let mut x = [0u8; 4];
    assert!(matches!(
        b.region_read(0, regs::BAR0_SIZE, &mut x),
        Err(BackendError::Invalid { .. })
    ));
    assert!(!b.is_lost());
}

#[test]
fn scratch_and_posted_write_ordering() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    set(&b, regs::SCRATCH.offset, 0x1234_5678);
    assert_eq!(reg(&b, regs::SCRATCH.offset), 0x1234_5678);
    for i in 0..200u32 {
        b.region_write_posted(0, regs::SCRATCH.offset as u64, &i.to_le_bytes())
            .unwrap();
        if i % 50 == 49 {
            assert_eq!(reg(&b, regs::SCRATCH.offset), i, "posted write {i} landed");
        }
    }
    b.region_write_posted(
        0,
        regs::SCRATCH.offset as u64,
        &0xfeed_f00du32.to_le_bytes(),
    )
    .unwrap();
    assert_eq!(reg(&b, regs::SCRATCH.offset), 0xfeed_f00d);
}

#[test]
fn chunked_card_memory_access_matches_mmap() {
    let sim = start();
    let opts = VfioUserOptions {
        max_data_xfer_size: 4096,
        ..Default::default()
    };
    let b = connect(&sim, &opts);
    let maps = b
        .region_mmap(pci::BAR_CARD_MEM)
        .unwrap()
        .expect("BAR2 mmappable");
    assert_eq!(maps.len(), 1);
    let m = &maps[0];
    assert_eq!(m.offset, 0);
    let n = 5 * 4096 + 123;
    let off = 0x3001u64;
    let data = pattern(n, 7);
    b.region_write(pci::BAR_CARD_MEM, off, &data).unwrap();
    let mut seen = vec![0u8; n];
    // SAFETY: within the live BAR2 mapping; raw copy, no reference formed.
    unsafe { std::ptr::copy_nonoverlapping(m.ptr.add(off as usize), seen.as_mut_ptr(), n) };
    assert_eq!(seen, data, "chunked writes land in card memory");
    let other = pattern(n, 99);
    // SAFETY: as above.
    unsafe { std::ptr::copy_nonoverlapping(other.as_ptr(), m.ptr.add(off as usize), n) };
    assert_eq!(card_read(&b, off, n), other, "chunked reads see the mmap");
}

#[test]
fn dma_by_fd_and_by_vaddr() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    let mut ring = setup_ring(&b);
    // MSI-X through eventfds: vector 0 fires for an IRQ descriptor.
    let n = b.irq_count(IrqKind::Msix) as usize;
    let evs: Vec<EventFd> = (0..n)
        .map(|_| EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).unwrap())
        .collect();
    let fds: Vec<_> = evs.iter().map(|e| e.as_fd()).collect();
    b.set_irq_eventfds(IrqKind::Msix, 0, &fds).unwrap();
    let ctrl = (pci::MSIX_CAP_OFFSET + 2) as u64;
    let mut c = [0u8; 2];
    b.config_read(ctrl, &mut c).unwrap();
    let c = u16::from_le_bytes(c) | cfg::MSIX_CTRL_ENABLE;
    b.config_write(ctrl, &c.to_le_bytes()).unwrap();
    for v in 0..n as u32 {
        set(&b, pci::MSIX_TABLE_OFFSET + v * 16 + 12, 0);
    }

    // Host (vaddr) -> card.
    let len = 3 * PAGE + 100;
    let src = Anon::new(4 * PAGE);
    let data = pattern(len, 3);
    src.fill(&data);
    b.dma_map(
        SRC_IOVA,
        4 * PAGE as u64,
        DmaSource::Vaddr(src.ptr),
        DmaProt::RW,
    )
    .unwrap();
    let d = Descriptor::new(
        Direction::HostToCard,
        SRC_IOVA,
        0x1000,
        len as u32,
        true,
        true,
        1,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(card_read(&b, 0x1000, len), data);
    assert!(
        fdma_vfio_user::wait_fd(evs[0].as_fd(), Some(Duration::from_secs(10))).unwrap(),
        "MSI-X vector 0 fired"
    );

    // Card -> host (vaddr): the device writes through DMA_WRITE.
    let back = pattern(2 * PAGE, 77);
    b.region_write(pci::BAR_CARD_MEM, 0x8000, &back).unwrap();
    let d = Descriptor::new(
        Direction::CardToHost,
        0x8000,
        SRC_IOVA + 5,
        back.len() as u32,
        false,
        true,
        2,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(src.read(5 + back.len())[5..], back[..]);

    // Host (fd) -> card.
    let fd_data = pattern(PAGE, 11);
    ring.file.write_all_at(&fd_data, 0x4000).unwrap();
    let d = Descriptor::new(
        Direction::HostToCard,
        RING_IOVA + 0x4000,
        0x20000,
        PAGE as u32,
        false,
        true,
        3,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(card_read(&b, 0x20000, PAGE), fd_data);

    b.disable_irqs(IrqKind::Msix).unwrap();
    b.dma_unmap(SRC_IOVA, 4 * PAGE as u64).unwrap();
    // After the unmap the device faults on the range.
    let d = Descriptor::new(Direction::HostToCard, SRC_IOVA, 0x1000, 64, false, true, 4);
    assert_eq!(ring.run(&b, d), (state::HALTED, err::READ_FAULT as u32));
}

/// D5: the device reaches the pages present at map time, not what the
/// address is re-backed with afterwards.
#[test]
fn d5_rebacked_address_device_sees_old_pages() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    assert!(b.dma_limits().vaddr_pinned);
    let mut ring = setup_ring(&b);
    let len = 2 * PAGE;
    let mem = Anon::new(len);
    let old = pattern(len, 0xaa);
    mem.fill(&old);
    b.dma_map(SRC_IOVA, len as u64, DmaSource::Vaddr(mem.ptr), DmaProt::RW)
        .unwrap();
    mem.reback();
    let new = pattern(len, 0x55);
    mem.fill(&new);
    // Device read: old content.
    let d = Descriptor::new(
        Direction::HostToCard,
        SRC_IOVA,
        0x4000,
        len as u32,
        false,
        true,
        1,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(card_read(&b, 0x4000, len), old, "device read the old pages");
    // Device write: lands in the old pages, the new memory is untouched.
    let w = pattern(PAGE, 0x11);
    b.region_write(pci::BAR_CARD_MEM, 0x10000, &w).unwrap();
    let d = Descriptor::new(
        Direction::CardToHost,
        0x10000,
        SRC_IOVA,
        PAGE as u32,
        false,
        true,
        2,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(mem.read(len), new, "the re-backed memory is untouched");
    let d = Descriptor::new(
        Direction::HostToCard,
        SRC_IOVA,
        0x6000,
        PAGE as u32,
        false,
        true,
        3,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(
        card_read(&b, 0x6000, PAGE),
        w,
        "the device wrote the old pages"
    );
    b.dma_unmap(SRC_IOVA, len as u64).unwrap();
}

/// Without pinning (the io_uring fallback) the device follows the address.
#[test]
fn unpinned_fallback_follows_the_address() {
    let sim = start();
    let b = VfioUserBackend::connect_unpinned(&sim.sock, &VfioUserOptions::default()).unwrap();
    assert!(!b.dma_limits().vaddr_pinned);
    let mut ring = setup_ring(&b);
    let mem = Anon::new(PAGE);
    mem.fill(&pattern(PAGE, 1));
    b.dma_map(
        SRC_IOVA,
        PAGE as u64,
        DmaSource::Vaddr(mem.ptr),
        DmaProt::RW,
    )
    .unwrap();
    mem.reback();
    let new = pattern(PAGE, 2);
    mem.fill(&new);
    let d = Descriptor::new(
        Direction::HostToCard,
        SRC_IOVA,
        0x4000,
        PAGE as u32,
        false,
        true,
        1,
    );
    assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
    assert_eq!(card_read(&b, 0x4000, PAGE), new);
    b.dma_unmap(SRC_IOVA, PAGE as u64).unwrap();
}

#[test]
fn overlapping_maps_and_inexact_unmaps_are_refused() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    let mem = Anon::new(8 * PAGE);
    let at = |i: usize| DmaSource::Vaddr(mem.ptr.wrapping_add(i * PAGE));
    b.dma_map(0x30_0000, 4 * PAGE as u64, at(0), DmaProt::RW)
        .unwrap();
    for (iova, size) in [
        (0x30_0000u64, 4 * PAGE as u64),
        (0x30_2000, 4 * PAGE as u64),
        (0x2f_f000, 2 * PAGE as u64),
        (0x30_1000, PAGE as u64),
        (0x2f_0000, 0x2_0000),
    ] {
        match b.dma_map(iova, size, at(4), DmaProt::RW) {
            Err(BackendError::Refused { errno, .. }) => assert_eq!(errno, libc::EEXIST),
            r => panic!("map {iova:#x}+{size:#x} over an existing one: {r:?}"),
        }
    }
    // Adjacent ranges are fine.
    b.dma_map(0x30_4000, PAGE as u64, at(4), DmaProt::READ)
        .unwrap();
    b.dma_map(0x2f_f000, PAGE as u64, at(5), DmaProt::WRITE)
        .unwrap();
    for (iova, size) in [
        (0x30_0000u64, 2 * PAGE as u64),
        (0x30_1000, 3 * PAGE as u64),
        (0x40_0000, PAGE as u64),
    ] {
        assert!(
            matches!(b.dma_unmap(iova, size), Err(BackendError::Invalid { .. })),
            "unmap {iova:#x}+{size:#x}"
        );
    }
    // Misaligned and page-0 maps are invalid.
    assert!(matches!(
        b.dma_map(0x50_0800, PAGE as u64, at(6), DmaProt::RW),
        Err(BackendError::Invalid { .. })
    ));
    assert!(matches!(
        b.dma_map(0, PAGE as u64, at(6), DmaProt::RW),
        Err(BackendError::Invalid { .. })
    ));
    b.dma_unmap(0x30_0000, 4 * PAGE as u64).unwrap();
    assert!(matches!(
        b.dma_unmap(0x30_0000, 4 * PAGE as u64),
        Err(BackendError::Invalid { .. })
    ));
    // The range is free again.
    b.dma_map(0x30_1000, PAGE as u64, at(1), DmaProt::RW)
        .unwrap();
    b.dma_unmap(0x30_1000, PAGE as u64).unwrap();
    b.dma_unmap(0x30_4000, PAGE as u64).unwrap();
    b.dma_unmap(0x2f_f000, PAGE as u64).unwrap();
}

#[test]
fn read_of_write_only_mapping_faults() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    let mut ring = setup_ring(&b);
    let mem = Anon::new(PAGE);
    mem.fill(&pattern(PAGE, 5));
    b.dma_map(
        SRC_IOVA,
        PAGE as u64,
        DmaSource::Vaddr(mem.ptr),
        DmaProt::WRITE,
    )
    .unwrap();
    let d = Descriptor::new(Direction::HostToCard, SRC_IOVA, 0x4000, 256, false, true, 1);
    assert_eq!(ring.run(&b, d), (state::HALTED, err::READ_FAULT as u32));
    b.dma_unmap(SRC_IOVA, PAGE as u64).unwrap();
}

#[test]
fn lost_device_fails_fast_everywhere() {
    let mut sim = start();
    let opts = VfioUserOptions {
        reply_timeout: Duration::from_secs(3),
        ..Default::default()
    };
    let b = connect(&sim, &opts);
    let mem = Anon::new(PAGE);
    b.dma_map(
        SRC_IOVA,
        PAGE as u64,
        DmaSource::Vaddr(mem.ptr),
        DmaProt::RW,
    )
    .unwrap();
    set(&b, regs::SCRATCH.offset, 1);
    sim.stop();
    let t0 = Instant::now();
    let mut x = [0u8; 4];
    loop {
        match b.region_read(0, regs::SCRATCH.offset as u64, &mut x) {
            Err(e) if e.is_lost() => break,
            r => assert!(t0.elapsed() < Duration::from_secs(5), "still {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(b.is_lost());
    let t1 = Instant::now();
    let ev = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
    let results: Vec<(&str, Result<(), BackendError>)> = vec![
        ("read", b.region_read(0, 0, &mut x)),
        ("write", b.region_write(0, 0x1c, &x)),
        ("posted", b.region_write_posted(0, 0x1c, &x)),
        ("config", b.config_read(0, &mut x)),
        ("mmap", b.region_mmap(2).map(drop)),
        (
            "map",
            b.dma_map(
                0x40_0000,
                PAGE as u64,
                DmaSource::Vaddr(mem.ptr),
                DmaProt::RW,
            ),
        ),
        ("unmap", b.dma_unmap(SRC_IOVA, PAGE as u64)),
        ("irqs", b.set_irq_eventfds(IrqKind::Msix, 0, &[ev.as_fd()])),
        ("disable", b.disable_irqs(IrqKind::Msix)),
        ("reset", b.reset()),
    ];
    for (what, r) in results {
        assert!(matches!(r, Err(ref e) if e.is_lost()), "{what}: {r:?}");
    }
    assert!(
        t1.elapsed() < Duration::from_secs(1),
        "lost calls fail fast"
    );
    drop(b);
    assert!(t0.elapsed() < Duration::from_secs(10));
}

#[test]
fn forked_handle_is_poisoned() {
    let sim = start();
    let b = connect(&sim, &VfioUserOptions::default());
    let mem = Anon::new(PAGE);
    b.dma_map(
        SRC_IOVA,
        PAGE as u64,
        DmaSource::Vaddr(mem.ptr),
        DmaProt::RW,
    )
    .unwrap();
    // SAFETY: the child only makes calls that must fail at once without
    // I/O, drops the handle (which must do no I/O either), and _exits.
    match unsafe { libc::fork() } {
        0 => {
            let mut x = [0u8; 4];
            let ok = matches!(
                b.region_read(0, 0, &mut x),
                Err(BackendError::Forked { .. })
            ) && matches!(b.reset(), Err(BackendError::Forked { .. }))
                && matches!(
                    b.dma_unmap(SRC_IOVA, PAGE as u64),
                    Err(BackendError::Forked { .. })
                )
                && matches!(
                    b.region_write_posted(0, 0x1c, &x),
                    Err(BackendError::Forked { .. })
                )
                && matches!(b.read32_nonalloc(0, 0), Err(RegFault::Forked));
            drop(b);
            // SAFETY: leave without the parent's destructors or atexit hooks.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        }
        _ => panic!("fork failed"),
    }
    // The parent's session and mapping are untouched by the child.
    assert_eq!(reg(&b, regs::ID.offset), fdma_hw::id_value());
    b.dma_unmap(SRC_IOVA, PAGE as u64).unwrap();
    drop(sim);
}

/// A fake server: answers the handshake (granting the twin socket or not),
/// then never answers anything else, keeping the connection open.
fn fake_server(sock: &std::path::Path, grant_twin: bool) -> JoinHandle<()> {
    use fdma_vfio_user::consts::{device, irq};
    use fdma_vfio_user::*;
    let l = std::os::unix::net::UnixListener::bind(sock).unwrap();
    std::thread::spawn(move || {
        let (s, _) = l.accept().unwrap();
        let c = Connection::new(s, Limits::default()).unwrap();
        let (_ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        loop {
            let Ok(m) = c.recv(None) else { return };
            let id = m.header.msg_id;
            let reply = match m.request().unwrap() {
                Request::Version(_) => {
                    let caps = Capabilities {
                        twin_socket: grant_twin.then_some(TwinSocket {
                            supported: Some(true),
                            fd_index: Some(0),
                        }),
                        ..Default::default()
                    };
                    let v = Reply::Version(Version {
                        major: 0,
                        minor: 1,
                        caps: Some(caps),
                    });
                    let fds = if grant_twin {
                        vec![theirs.as_fd()]
                    } else {
                        vec![]
                    };
                    let _ = c.send_reply(id, &v, &fds);
                    continue;
                }
                Request::DeviceGetInfo(_) => Reply::DeviceGetInfo(DeviceInfo {
                    argsz: 16,
                    flags: device::FLAG_PCI,
                    num_regions: 9,
                    num_irqs: 5,
                }),
                Request::DeviceGetRegionInfo(r) => {
                    let cfg = r.index == 7;
                    Reply::DeviceGetRegionInfo(RegionInfo {
                        argsz: 32,
                        flags: if cfg { 3 } else { 0 },
                        index: r.index,
                        size: if cfg { 256 } else { 0 },
                        ..Default::default()
                    })
                }
                Request::DeviceGetIrqInfo(i) => Reply::DeviceGetIrqInfo(IrqInfo {
                    argsz: 16,
                    flags: irq::INFO_EVENTFD,
                    index: i.index,
                    count: 0,
                }),
                // Hang: never answer.
                _ => continue,
            };
            let _ = c.send_reply(id, &reply, &[]);
        }
    })
}

#[test]
fn unanswered_request_marks_the_device_lost() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fake.sock");
    let server = fake_server(&sock, true);
    let opts = VfioUserOptions {
        reply_timeout: Duration::from_secs(1),
        ..Default::default()
    };
    let b = VfioUserBackend::connect(&sock, &opts).unwrap();
    assert!(b.region_info(0).is_none());
    assert!(b.reset().is_err(), "no reset offered");
    let t0 = Instant::now();
    let mut x = [0u8; 4];
    let r = b.config_read(0, &mut x);
    assert!(matches!(r, Err(ref e) if e.is_lost()), "{r:?}");
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
        "{waited:?}"
    );
    assert!(b.is_lost());
    let t1 = Instant::now();
    assert!(b.config_read(0, &mut x).unwrap_err().is_lost());
    assert!(b.config_write(0, &x).unwrap_err().is_lost());
    assert!(
        t1.elapsed() < Duration::from_millis(200),
        "later calls fail fast"
    );
    drop(b);
    server.join().unwrap();
}

#[test]
fn server_without_twin_socket_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fake.sock");
    let server = fake_server(&sock, false);
    match VfioUserBackend::connect(&sock, &VfioUserOptions::default()) {
        Err(BackendError::Invalid { why, .. }) => assert!(why.contains("twin"), "{why}"),
        r => panic!("{r:?}"),
    }
    server.join().unwrap();
}
