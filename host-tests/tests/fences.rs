//! Fences as a caller sees them through a real device: waits and
//! timeouts (F5), the pollable channel fd (F8), callbacks (F9), poll mode,
//! timelines (F7).

mod common;

use common::*;
use fdma::faults::OneShot;
use fdma::{IrqMode, Job, Wait};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn job(dev: &fdma::Device, len: usize) -> (Job, fdma::DmaBuffer) {
    let b = dev.alloc(len).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, len);
    (j, b)
}

fn readable(fd: std::os::fd::BorrowedFd<'_>, ms: u16) -> bool {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
    poll(&mut p, PollTimeout::from(ms)).unwrap() == 1
}

#[test]
fn f5_timeout_leaves_the_fence_unchanged_then_it_signals() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let fi = dev.faults().unwrap();
    let (j, _b) = job(dev, 4096);
    fi.stall(0, true).unwrap();
    let f = c.submit(&j).unwrap();
    assert_eq!(f.wait_timeout(Duration::ZERO), Wait::TimedOut);
    assert_eq!(f.wait_timeout(Duration::from_millis(30)), Wait::TimedOut);
    assert_eq!(f.status(), None);
    assert!(!f.is_signalled());
    fi.stall(0, false).unwrap();
    assert_eq!(wait(&f), Ok(()));
    assert_eq!(f.wait_timeout(Duration::ZERO), Wait::Signalled(Ok(())));
}

#[test]
fn f5_wait_any_and_all_across_channels() {
    let rig = rig();
    let dev = &rig.dev;
    let fi = dev.faults().unwrap();
    let (j, _b) = job(dev, 4096);
    fi.stall(1, true).unwrap();
    let slow = dev.channel(1).unwrap().submit(&j).unwrap();
    let fast = dev.channel(2).unwrap().submit(&j).unwrap();
    let fences = [slow.clone(), fast.clone()];
    let (i, s) = fdma::fence::wait_any(&fences, Some(LIVENESS)).expect("one signals");
    assert_eq!((i, s), (1, Ok(())));
    assert_eq!(
        fdma::fence::wait_all(&fences, Some(Duration::from_millis(20))),
        Wait::TimedOut
    );
    fi.stall(1, false).unwrap();
    assert_eq!(
        fdma::fence::wait_all(&fences, Some(LIVENESS)),
        Wait::Signalled(Ok(()))
    );
}

#[test]
fn f7_seqnos_increase_and_completion_is_in_order() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(3).unwrap();
    let (j, _b) = job(dev, 1024);
    let fs: Vec<_> = (0..10).map(|_| c.submit(&j).unwrap()).collect();
    for w in fs.windows(2) {
        assert!(w[1].seqno() > w[0].seqno());
        assert!(w[1].is_later(&w[0]).unwrap());
    }
    wait(fs.last().unwrap()).unwrap();
    // The last one signalled: every earlier one has too (in order).
    assert!(fs.iter().all(|f| f.is_signalled()));
    assert!(c.timeline().completed() >= fs.last().unwrap().seqno());
    let other = dev.channel(0).unwrap().submit(&j).unwrap();
    assert!(
        other.is_later(&fs[0]).is_err(),
        "cross-channel comparison refused"
    );
}

#[test]
fn f8_channel_fd_is_readable_iff_the_armed_fence_signalled() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(1).unwrap();
    let fi = dev.faults().unwrap();
    let (j, _b) = job(dev, 4096);
    fi.stall(1, true).unwrap();
    let f = c.submit(&j).unwrap();
    c.arm(&f).unwrap();
    assert!(!readable(c.fd(), 0));
    let exported = f.export_fd().unwrap();
    assert!(!readable(exported.as_fd(), 0));
    fi.stall(1, false).unwrap();
    assert!(readable(c.fd(), 30_000), "channel fd readable after signal");
    assert!(f.is_signalled(), "readable only once the status is visible");
    // The exported fd is written later in the same signal; it is readable by
    // the time the signal returns.
    assert!(readable(exported.as_fd(), 30_000));
    assert!(f.status().is_some());
    // An event loop on the fd: arm, wait, repeat.
    for _ in 0..5 {
        let f = c.submit(&j).unwrap();
        c.arm(&f).unwrap();
        assert!(readable(c.fd(), 30_000));
        assert_eq!(f.status(), Some(Ok(())));
    }
}

#[test]
fn f9_callbacks_run_once_in_the_reactor_after_the_status() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(2).unwrap();
    let fi = dev.faults().unwrap();
    let (j, _b) = job(dev, 4096);
    fi.stall(2, true).unwrap();
    let f = c.submit(&j).unwrap();
    let runs = Arc::new(AtomicU32::new(0));
    let seen = Arc::new(Mutex::new(None));
    let (r2, s2, f2) = (runs.clone(), seen.clone(), f.clone());
    f.on_signal(Box::new(move |st| {
        r2.fetch_add(1, Ordering::SeqCst);
        let thread = std::thread::current().name().map(str::to_owned);
        *s2.lock().unwrap() = Some((*st, f2.status(), thread));
    }))
    .unwrap();
    fi.stall(2, false).unwrap();
    wait(&f).unwrap();
    let t0 = std::time::Instant::now();
    while runs.load(Ordering::SeqCst) == 0 {
        assert!(t0.elapsed() < LIVENESS);
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    let (st, status_then, thread) = seen.lock().unwrap().clone().unwrap();
    assert_eq!(st, Ok(()));
    assert_eq!(
        status_then,
        Some(Ok(())),
        "status visible inside the callback"
    );
    assert_eq!(thread.as_deref(), Some("fdma-reactor"));
    assert!(f.on_signal(Box::new(|_| panic!("must not run"))).is_err());
}

#[test]
fn poll_mode_completes_in_the_callers_thread_without_interrupts() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    c.set_mode(IrqMode::Poll);
    let irqs0 = c.stats().irqs.load(Ordering::Relaxed);
    let (j, b) = job(dev, 65536);
    b.write_at(0, &pattern(3, 65536)).unwrap();
    for _ in 0..20 {
        let f = c.submit(&j).unwrap();
        let t0 = std::time::Instant::now();
        while !f.is_signalled() {
            c.poll().unwrap();
            assert!(t0.elapsed() < LIVENESS);
        }
        assert_eq!(f.status(), Some(Ok(())));
    }
    assert_eq!(
        c.stats().irqs.load(Ordering::Relaxed),
        irqs0,
        "no interrupts in poll mode"
    );
    c.set_mode(IrqMode::Interrupt);
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn moderation_coalesces_interrupts_without_changing_results() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(3).unwrap();
    let fi = dev.faults().unwrap();
    c.set_moderation(8, 2000).unwrap();
    let (j, _b) = job(dev, 512);
    fi.stall(3, true).unwrap();
    let fs: Vec<_> = (0..32).map(|_| c.submit(&j).unwrap()).collect();
    let irqs0 = c.stats().irqs.load(Ordering::Relaxed);
    fi.stall(3, false).unwrap();
    for f in &fs {
        assert_eq!(wait(f), Ok(()));
    }
    let irqs = c.stats().irqs.load(Ordering::Relaxed) - irqs0;
    assert!(irqs < 32, "{irqs} interrupts for 32 jobs with moderation 8");
    fi.one_shot(3, OneShot::DupIrq).unwrap();
    wait(&c.submit(&j).unwrap()).unwrap();
}
