//! F10: the signalling path never allocates or frees.
//!
//! This test binary's global allocator counts every allocation and free made
//! on a thread while it is inside a `SignallingSection` (the reactor's
//! completion processing, the poller, the watchdog, the failure paths of
//! reset and device loss, the vfio-user DMA service thread). It then drives
//! every one of those paths against a simulated card served in-process —
//! normal completions with callbacks and dropped waiters, device errors,
//! dropped interrupts found by the watchdog, a hung channel, reset, device
//! loss — with logging at trace level, and requires the count to be zero.
//!
//! A second test drives the vfio-user DMA service thread alone, through a
//! bare backend, with memory mapped pinned and not.
//!
//! Set `FDMA_ABORT_ON_SIGNALLING_ALLOC=1` to abort at the first offending
//! allocation instead, for a backtrace in a debugger.

mod common;

use common::{connect, pattern, setup_ring, start, start_with, Anon, PAGE, SRC_IOVA};
use fdma::backend::vfio_user::{VfioUserBackend, VfioUserOptions};
use fdma::backend::{Backend, DmaProt, DmaSource};
use fdma::faults::OneShot;
use fdma::sync::SignallingSection;
use fdma::{Device, FenceError, IrqMode, Job, OpenOptions, WatchdogConfig};
use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs::state;
use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

struct Guard;

static VIOLATIONS: AtomicUsize = AtomicUsize::new(0);
static ABORT: AtomicBool = AtomicBool::new(false);

fn check() {
    if SignallingSection::active() {
        VIOLATIONS.fetch_add(1, Ordering::Relaxed);
        if ABORT.load(Ordering::Relaxed) {
            std::process::abort();
        }
    }
}

// SAFETY: forwards to the system allocator unchanged; the bookkeeping reads
// a const-initialised thread-local and bumps an atomic, neither allocates.
unsafe impl GlobalAlloc for Guard {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        check();
        // SAFETY: the caller's contract is the system allocator's.
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        check();
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        check();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        check();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

#[global_allocator]
static GLOBAL: Guard = Guard;

fn wait(f: &fdma::Fence) -> fdma::Status {
    match f.wait_timeout(Duration::from_secs(30)) {
        fdma::Wait::Signalled(s) => s,
        fdma::Wait::TimedOut => panic!("fence did not signal in 30 s"),
    }
}

#[test]
fn f10_completion_paths_do_not_allocate() {
    ABORT.store(
        std::env::var("FDMA_ABORT_ON_SIGNALLING_ALLOC").is_ok_and(|v| v == "1"),
        Ordering::Relaxed,
    );
    let mut logger = env_logger::builder();
    logger.is_test(true).filter_level(log::LevelFilter::Warn);
    for m in [
        "channel", "reactor", "fence", "backend", "device", "mem", "resv",
    ] {
        logger.filter_module(&format!("fdma::{m}"), log::LevelFilter::Trace);
    }
    let _ = logger.try_init();
    let mut sim = start_with(fdma_sim::card::SimConfig::default(), false);
    let opts = OpenOptions {
        watchdog: WatchdogConfig {
            stall_cycles: 300_000,
            tick: Duration::from_millis(10),
            backstop: Duration::from_secs(5),
        },
        ..Default::default()
    };
    let dev = Device::open_with(&sim.name(), &opts).unwrap();
    let fi = dev.faults().unwrap();
    let buf = dev.alloc(64 * 1024).unwrap();
    let mut job = Job::new();
    job.h2c(&buf, 0, 0, 4096).c2h(0x10000, &buf, 8192, 4096);
    // Jobs queued behind a stall only read the buffer: a job that writes it
    // would make the next submit wait for it (implicit sync, R2).
    let mut read_job = Job::new();
    read_job.h2c(&buf, 0, 0x20000, 4096);
    let counted = std::sync::Arc::new(AtomicUsize::new(0));

    // Normal completions, callbacks, dropped waiters, all channels.
    for ch in 0..dev.channels() {
        let c = dev.channel(ch).unwrap();
        for i in 0..20 {
            let f = c.submit(&job).unwrap();
            let k = counted.clone();
            let _ = f.on_signal(Box::new(move |_| {
                k.fetch_add(1, Ordering::Relaxed);
            }));
            let _ = f.export_fd().unwrap();
            if i % 2 == 0 {
                drop(f); // a waiter that went away
            } else {
                c.arm(&f).unwrap();
                wait(&f).unwrap();
            }
        }
    }
    // Poll mode.
    let c = dev.channel(1).unwrap();
    c.set_mode(IrqMode::Poll);
    let f = c.submit(&job).unwrap();
    while !f.is_signalled() {
        c.poll().unwrap();
    }
    c.set_mode(IrqMode::Interrupt);
    // A dropped interrupt, found by the watchdog; a duplicated one.
    let c = dev.channel(0).unwrap();
    fi.one_shot(0, OneShot::DropIrq).unwrap();
    wait(&c.submit(&job).unwrap()).unwrap();
    fi.one_shot(0, OneShot::DupIrq).unwrap();
    wait(&c.submit(&job).unwrap()).unwrap();
    fi.one_shot(0, OneShot::CorruptWriteback).unwrap();
    wait(&c.submit(&job).unwrap()).unwrap();
    // A device error, with later jobs cancelled; then reset.
    fi.stall(0, true).unwrap();
    let fs: Vec<_> = (0..3).map(|_| c.submit(&read_job).unwrap()).collect();
    fi.one_shot(0, OneShot::DescriptorError).unwrap();
    fi.stall(0, false).unwrap();
    assert!(matches!(wait(&fs[0]), Err(FenceError::Device { .. })));
    c.reset().unwrap();
    // A hung channel caught by the watchdog; reset.
    let c2 = dev.channel(2).unwrap();
    fi.stall(2, true).unwrap();
    let f = c2.submit(&job).unwrap();
    assert!(matches!(wait(&f), Err(FenceError::Hung { .. })));
    fi.stall(2, false).unwrap();
    c2.reset().unwrap();
    wait(&c2.submit(&job).unwrap()).unwrap();
    // Jobs in flight when the device dies.
    fi.stall(3, true).unwrap();
    let c3 = dev.channel(3).unwrap();
    let fs: Vec<_> = (0..4).map(|_| c3.submit(&read_job).unwrap()).collect();
    sim.stop();
    for f in &fs {
        assert!(matches!(wait(f), Err(FenceError::DeviceLost { .. })));
    }
    drop(dev);
    assert!(counted.load(Ordering::Relaxed) > 0);
    assert_eq!(
        VIOLATIONS.load(Ordering::Relaxed),
        0,
        "allocations or frees inside a signalling section \
         (rerun with FDMA_ABORT_ON_SIGNALLING_ALLOC=1 for a backtrace)"
    );
}

/// F10: the DMA service thread serves reads and writes, pinned and not,
/// without allocating or freeing.
#[test]
fn service_thread_does_not_allocate() {
    let sim = start();
    for pinned in [true, false] {
        let b = if pinned {
            connect(&sim, &VfioUserOptions::default())
        } else {
            VfioUserBackend::connect_unpinned(&sim.sock, &VfioUserOptions::default()).unwrap()
        };
        // Device state outlives a session: start from a reset card.
        b.reset().unwrap();
        let mut ring = setup_ring(&b);
        let mem = Anon::new(16 * PAGE);
        mem.fill(&pattern(16 * PAGE, 9));
        b.dma_map(
            SRC_IOVA,
            16 * PAGE as u64,
            DmaSource::Vaddr(mem.ptr),
            DmaProt::RW,
        )
        .unwrap();
        for i in 0..4u64 {
            let d = Descriptor::new(
                Direction::HostToCard,
                SRC_IOVA,
                0x4000,
                8 * PAGE as u32,
                false,
                true,
                1,
            );
            assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
            let d = Descriptor::new(
                Direction::CardToHost,
                0x4000,
                SRC_IOVA + 8 * PAGE as u64 + i,
                4 * PAGE as u32,
                false,
                true,
                2,
            );
            assert_eq!(ring.run(&b, d), (state::RUNNING, 0));
        }
        assert_eq!(
            mem.read(12 * PAGE + 3)[8 * PAGE + 3..],
            pattern(16 * PAGE, 9)[..4 * PAGE]
        );
        b.dma_unmap(SRC_IOVA, 16 * PAGE as u64).unwrap();
        drop(ring);
        // The next client connects at once: the server finishes this
        // session first rather than refusing it as a second client.
        drop(b);
    }
    assert_eq!(
        VIOLATIONS.load(Ordering::Relaxed),
        0,
        "heap use inside the DMA service thread's signalling section"
    );
}
