//! Faults injected at the device boundary (D7) and what the driver makes of
//! them: attributed errors (F4, D3), interrupts as hints (D6), the watchdog
//! and reset (F3, D4).

mod common;

use common::*;
use fdma::faults::OneShot;
use fdma::{Endpoint, FenceError, Health, Job};
use std::sync::atomic::Ordering;

fn h2c_job(dev: &fdma::Device, len: usize, card: u64) -> (Job, fdma::DmaBuffer) {
    let b = dev.alloc(len).unwrap();
    b.write_at(0, &pattern(card, len)).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, card, len);
    (j, b)
}

#[test]
fn f4_descriptor_error_fails_its_job_cancels_later_ones_and_reset_restores() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let fi = dev.faults().unwrap();
    let (j, _b) = h2c_job(dev, 8192, 0);
    wait(&c.submit(&j).unwrap()).unwrap();

    // Queue three jobs behind a stall so that all are in flight when the
    // first one fails.
    fi.stall(0, true).unwrap();
    let fences: Vec<_> = (0..3).map(|_| c.submit(&j).unwrap()).collect();
    fi.one_shot(0, OneShot::DescriptorError).unwrap();
    fi.stall(0, false).unwrap();
    let s0 = wait(&fences[0]);
    assert!(
        matches!(
            s0,
            Err(FenceError::Device {
                channel: 0,
                code: 9,
                ..
            })
        ),
        "{s0:?}"
    );
    for f in &fences[1..] {
        let s = wait(f);
        assert!(
            matches!(s, Err(FenceError::Cancelled { channel: 0, .. })),
            "{s:?}"
        );
    }
    assert_eq!(c.health(), Health::Halted(fdma_hw::desc::err::INJECTED));
    let e = c.submit(&j).unwrap_err();
    assert!(
        matches!(e, fdma::Error::ChannelDown { channel: 0, .. }),
        "{e}"
    );

    c.reset().unwrap();
    assert_eq!(c.health(), Health::Running);
    wait(&c.submit(&j).unwrap()).unwrap();
    // Other channels were never affected.
    let (j1, _b1) = h2c_job(dev, 100, 0x1000);
    wait(&dev.channel(1).unwrap().submit(&j1).unwrap()).unwrap();
}

#[test]
fn d3_read_fault_at_unmapped_iova_errors_the_job() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(1).unwrap();
    let mut j = Job::new();
    j.push(Endpoint::Iova(0x7f00_0000_0000), Endpoint::Card(0), 4096);
    let s = wait(&c.submit(&j).unwrap());
    assert!(
        matches!(s, Err(FenceError::IommuFault { channel: 1, .. })),
        "{s:?}"
    );
    c.reset().unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn d3_write_fault_is_dropped_and_logged_not_reported() {
    let Some(rig) = sim_rig("reading the IOMMU fault log", &[], test_opts()) else {
        return;
    };
    let sim = rig.sim.as_ref().unwrap();
    let dev = &rig.dev;
    let c = dev.channel(2).unwrap();
    sim.ctl("fault-log clear");
    let mut j = Job::new();
    j.push(Endpoint::Card(0), Endpoint::Iova(0x7f00_0000_0000), 256);
    // Posted writes: the engine is never told, so the job succeeds.
    wait(&c.submit(&j).unwrap()).unwrap();
    let log = sim.ctl("fault-log");
    assert!(
        log.iter().any(|l| l.contains("write [0x7f0000000000")),
        "fault log: {log:?}"
    );
    assert_eq!(c.health(), Health::Running);
}

#[test]
fn d6_dropped_interrupt_is_recovered_by_the_watchdog() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let fi = dev.faults().unwrap();
    fi.one_shot(0, OneShot::DropIrq).unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    let irqs = c.stats().irqs.load(Ordering::Relaxed);
    wait(&c.submit(&j).unwrap()).unwrap();
    assert!(fi.applied().unwrap() >= 1, "the interrupt was dropped");
    // Found by the watchdog's look at the writeback — unless some other
    // wake of the channel (interrupts are hints) got there first.
    assert!(
        c.stats().watchdog_completions.load(Ordering::Relaxed) >= 1
            || c.stats().irqs.load(Ordering::Relaxed) > irqs
    );
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn d6_duplicated_and_spurious_interrupts_change_nothing() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(3).unwrap();
    let fi = dev.faults().unwrap();
    fi.one_shot(3, OneShot::DupIrq).unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    let f1 = c.submit(&j).unwrap();
    wait(&f1).unwrap();
    let f2 = c.submit(&j).unwrap();
    wait(&f2).unwrap();
    // A spurious interrupt with nothing in flight, so it cannot coalesce
    // with a real one: the vector fires with nothing new to report.
    let empty = c.stats().empty_irqs.load(Ordering::Relaxed);
    let one = 1u64.to_ne_bytes();
    // SAFETY: writing 8 bytes to the channel's eventfd, as an MSI would.
    let n = unsafe {
        libc::write(
            std::os::fd::AsRawFd::as_raw_fd(&c.irq_fd()),
            one.as_ptr().cast(),
            8,
        )
    };
    assert_eq!(n, 8);
    let t0 = std::time::Instant::now();
    while c.stats().empty_irqs.load(Ordering::Relaxed) == empty {
        assert!(
            t0.elapsed() < LIVENESS,
            "the spurious interrupt was not taken"
        );
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    let f3 = c.submit(&j).unwrap();
    wait(&f3).unwrap();
    // Nothing changed: every job succeeded once, none failed.
    assert_eq!(f1.status(), Some(Ok(())));
    assert_eq!(c.stats().completed.load(Ordering::Relaxed), 3);
    assert_eq!(c.stats().failed.load(Ordering::Relaxed), 0);
    assert!(fi.applied().unwrap() >= 1, "the duplicate was applied");
}

#[test]
fn d6_corrupted_writeback_falls_back_to_the_head_register() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(1).unwrap();
    let fi = dev.faults().unwrap();
    fi.one_shot(1, OneShot::CorruptWriteback).unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    wait(&c.submit(&j).unwrap()).unwrap();
    assert!(c.stats().rejected.load(Ordering::Relaxed) >= 1);
    assert_eq!(c.health(), Health::Running);
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn f3_stalled_channel_is_caught_by_the_watchdog_and_reset_restores_service() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(2).unwrap();
    let fi = dev.faults().unwrap();
    fi.stall(2, true).unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    let f = c.submit(&j).unwrap();
    let s = wait(&f);
    assert!(
        matches!(s, Err(FenceError::Hung { channel: 2, .. })),
        "{s:?}"
    );
    assert_eq!(c.health(), Health::Hung);
    assert!(matches!(
        c.submit(&j).unwrap_err(),
        fdma::Error::ChannelDown { channel: 2, .. }
    ));
    // Other channels keep working while one is hung.
    let (j0, _b0) = h2c_job(dev, 512, 0x2000);
    wait(&dev.channel(0).unwrap().submit(&j0).unwrap()).unwrap();
    fi.stall(2, false).unwrap();
    c.reset().unwrap();
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn device_lost_when_the_simulator_is_killed_mid_job() {
    let Some(mut rig) = sim_rig("killing the device", &[], test_opts()) else {
        return;
    };
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let (j, _b) = h2c_job(dev, 16 << 20, 0);
    let fences: Vec<_> = (0..3).map(|_| c.submit(&j).unwrap()).collect();
    rig.sim.as_mut().unwrap().kill();
    for f in &fences {
        let s = wait(f);
        assert!(
            matches!(s, Ok(()) | Err(FenceError::DeviceLost { .. })),
            "{s:?}"
        );
    }
    assert!(matches!(
        wait(fences.last().unwrap()),
        Err(FenceError::DeviceLost { .. })
    ));
    let e = c.submit(&j).unwrap_err();
    assert!(matches!(e, fdma::Error::DeviceLost { .. }), "{e}");
    assert!(dev.is_lost());
    assert!(dev.read_reg(0).is_err());
}

#[test]
fn link_down_loses_the_device_in_bounded_time() {
    let Some(rig) = sim_rig("link down", &[], test_opts()) else {
        return;
    };
    let dev = &rig.dev;
    let c = dev.channel(1).unwrap();
    let fi = dev.faults().unwrap();
    fi.stall(1, true).unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    let f = c.submit(&j).unwrap();
    rig.sim.as_ref().unwrap().ctl("fault link-down on");
    // Reads return all ones: the cycle counter stops and the wall-clock
    // backstop declares the device lost (D1, D2).
    let t0 = std::time::Instant::now();
    let s = wait(&f);
    assert!(matches!(s, Err(FenceError::DeviceLost { .. })), "{s:?}");
    assert!(t0.elapsed() < test_opts().watchdog.backstop * 3);
    assert!(dev.is_lost());
}

#[test]
fn slow_and_failing_dma_replies_from_the_client() {
    // Memory mapped without an fd is served by the driver's DMA thread; the
    // simulator delays (then fails) those replies.
    let Some(rig) = sim_rig("client-served DMA faults", &[], test_opts()) else {
        return;
    };
    let sim = rig.sim.as_ref().unwrap();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let len = 8192usize;
    let mem = UserMem::new(len);
    let want = pattern(5, len);
    mem.write(0, &want);
    let space = dev.dma_space().unwrap();
    let iova = space.alloc_iova(len as u64, 4096).unwrap();
    dev.backend()
        .dma_map(
            iova,
            len as u64,
            fdma::backend::DmaSource::Vaddr(mem.ptr()),
            fdma::backend::DmaProt::RW,
        )
        .unwrap();
    sim.ctl("fault dma-reply-delay 20");
    let mut j = Job::new();
    j.push(Endpoint::Iova(iova), Endpoint::Card(0), len as u64);
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut card = vec![0u8; len];
    dev.card_read(0, &mut card).unwrap();
    assert_same(&card, &want, "slowly served h2c");

    sim.ctl("fault dma-reply-delay 0");
    sim.ctl("fault dma-reply-fail-after 0");
    let s = wait(&c.submit(&j).unwrap());
    assert!(matches!(s, Err(FenceError::IommuFault { .. })), "{s:?}");
    sim.ctl("fault dma-reply-fail-after off");
    c.reset().unwrap();
    wait(&c.submit(&j).unwrap()).unwrap();
    dev.backend().dma_unmap(iova, len as u64).unwrap();
    space.free_iova(iova, len as u64);
}

/// Anonymous process memory, not a driver buffer.
struct UserMem {
    ptr: *mut u8,
    len: usize,
}

impl UserMem {
    fn new(len: usize) -> UserMem {
        // SAFETY: a fresh private anonymous mapping.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        UserMem { ptr: p.cast(), len }
    }
    fn ptr(&self) -> *const u8 {
        self.ptr
    }
    fn write(&self, off: usize, data: &[u8]) {
        assert!(off + data.len() <= self.len);
        // SAFETY: in bounds of our own mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(off), data.len()) };
    }
}

impl Drop for UserMem {
    fn drop(&mut self) {
        // SAFETY: unmapping our own mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

#[test]
fn d4_device_reset_restores_every_channel() {
    let rig = rig();
    let dev = &rig.dev;
    let fi = dev.faults().unwrap();
    let (j, _b) = h2c_job(dev, 4096, 0);
    // Channel 0 halted by an error, channel 2 hung, channel 1 with jobs
    // queued behind a stall.
    let c0 = dev.channel(0).unwrap();
    fi.one_shot(0, OneShot::DescriptorError).unwrap();
    assert!(wait(&c0.submit(&j).unwrap()).is_err());
    let c2 = dev.channel(2).unwrap();
    fi.stall(2, true).unwrap();
    assert!(matches!(
        wait(&c2.submit(&j).unwrap()),
        Err(FenceError::Hung { .. })
    ));
    let c1 = dev.channel(1).unwrap();
    fi.stall(1, true).unwrap();
    let queued: Vec<_> = (0..3).map(|_| c1.submit(&j).unwrap()).collect();
    fi.stall(2, false).unwrap();

    dev.reset().unwrap();
    // Cancelled by the reset, never replayed (D4) — or already failed by
    // the watchdog if the stall outlived its threshold on a slow machine.
    for f in &queued {
        let s = wait(f);
        assert!(
            matches!(
                s,
                Err(FenceError::Cancelled { channel: 1, .. } | FenceError::Hung { channel: 1, .. })
            ),
            "{s:?}"
        );
    }
    fi.stall(1, false).unwrap();
    for ch in 0..dev.channels() {
        let c = dev.channel(ch).unwrap();
        assert_eq!(c.health(), Health::Running, "channel {ch}");
        wait(&c.submit(&j).unwrap()).unwrap();
    }
}

#[test]
fn d4_function_reset_through_the_transport() {
    let rig = rig();
    let dev = &rig.dev;
    let (j, _b) = h2c_job(dev, 4096, 0);
    let c = dev.channel(3).unwrap();
    wait(&c.submit(&j).unwrap()).unwrap();
    match dev.function_reset() {
        Ok(()) => {}
        Err(fdma::Error::Backend(fdma::BackendError::ResetUnsupported { .. })) => {
            eprintln!("{}: no function-level reset; engine reset only", dev.name())
        }
        Err(e) => panic!("function reset: {e}"),
    }
    // Interrupts and DMA work again (bus mastering and MSI-X restored).
    let irqs = c.stats().irqs.load(Ordering::Relaxed);
    wait(&c.submit(&j).unwrap()).unwrap();
    let t0 = std::time::Instant::now();
    while c.stats().irqs.load(Ordering::Relaxed) == irqs {
        assert!(t0.elapsed() < LIVENESS, "no interrupt after the reset");
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
}
