//! Submission: a full ring waits or errors as the caller chooses; doorbells
//! are batched; invalid jobs are refused before anything reaches the device.

mod common;

use common::*;
use fdma::{Endpoint, Job, OnFull, SubmitOptions};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

#[test]
fn a_full_ring_errors_or_waits_as_asked() {
    let mut opts = test_opts();
    opts.ring_size = 4;
    let rig = rig_with(&[], opts);
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let fi = dev.faults().unwrap();
    let b = dev.alloc(4096).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    fi.stall(0, true).unwrap();
    let fs: Vec<_> = (0..4).map(|_| c.submit(&j).unwrap()).collect();
    let no_wait = SubmitOptions {
        on_full: OnFull::Error,
        ..Default::default()
    };
    let e = c.submit_with(&j, no_wait).unwrap_err();
    assert!(
        matches!(
            e,
            fdma::Error::RingFull {
                channel: 0,
                in_flight: 4
            }
        ),
        "{e}"
    );
    // A waiting submit returns once the ring drains.
    let t0 = Instant::now();
    std::thread::scope(|s| {
        let waiter = s.spawn(|| c.submit(&j).unwrap());
        std::thread::sleep(Duration::from_millis(50));
        assert!(!waiter.is_finished(), "submit did not wait for room");
        fi.stall(0, false).unwrap();
        let f = waiter.join().unwrap();
        assert_eq!(wait(&f), Ok(()));
    });
    assert!(t0.elapsed() < LIVENESS);
    for f in &fs {
        assert_eq!(wait(f), Ok(()));
    }
}

#[test]
fn doorbells_are_batched_until_flushed() {
    // A watchdog tick far longer than the test, so only `flush` rings.
    let mut opts = test_opts();
    opts.watchdog.tick = Duration::from_secs(5);
    let rig = rig_with(&[], opts);
    let dev = &rig.dev;
    let c = dev.channel(1).unwrap();
    let b = dev.alloc(4096).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 1024);
    let deferred = SubmitOptions {
        doorbell: false,
        ..Default::default()
    };
    let rung = c.stats().doorbells.load(Ordering::Relaxed);
    let fs: Vec<_> = (0..8)
        .map(|_| c.submit_with(&j, deferred).unwrap())
        .collect();
    assert_eq!(c.stats().doorbells.load(Ordering::Relaxed), rung);
    // Nothing was told to the device: nothing completes.
    assert_eq!(
        fs[0].wait_timeout(Duration::from_millis(50)),
        fdma::Wait::TimedOut
    );
    c.flush().unwrap();
    assert_eq!(c.stats().doorbells.load(Ordering::Relaxed), rung + 1);
    for f in &fs {
        assert_eq!(wait(f), Ok(()));
    }
    c.flush().unwrap();
    assert_eq!(
        c.stats().doorbells.load(Ordering::Relaxed),
        rung + 1,
        "no doorbell without new work"
    );
}

#[test]
fn invalid_jobs_are_refused_before_the_device_sees_them() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(2).unwrap();
    let b = dev.alloc(4096).unwrap();
    let card = dev.config().card_mem_bytes();
    let cases: Vec<(&str, Job)> = vec![
        ("empty", Job::new()),
        ("zero length", {
            let mut j = Job::new();
            j.h2c(&b, 0, 0, 0);
            j
        }),
        ("past the buffer", {
            let mut j = Job::new();
            j.h2c(&b, 4000, 0, 200);
            j
        }),
        ("past card memory", {
            let mut j = Job::new();
            j.h2c(&b, 0, card - 100, 200);
            j
        }),
        ("card to card", {
            let mut j = Job::new();
            j.push(Endpoint::Card(0), Endpoint::Card(4096), 16);
            j
        }),
        ("IOVA wraps", {
            let mut j = Job::new();
            j.push(Endpoint::Iova(u64::MAX - 8), Endpoint::Card(0), 16);
            j
        }),
    ];
    for (what, j) in cases {
        let e = c.submit(&j).unwrap_err();
        assert!(matches!(e, fdma::Error::Invalid(_)), "{what}: {e}");
    }
    assert_eq!(c.stats().jobs.load(Ordering::Relaxed), 0);
    assert_eq!(c.health(), fdma::Health::Running);
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    wait(&c.submit(&j).unwrap()).unwrap();
}

#[test]
fn a_cpu_write_waits_for_the_device_reading_the_buffer() {
    // R5: a CPU write during a host-to-card job blocks until that job's
    // fence signals.
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(3).unwrap();
    let fi = dev.faults().unwrap();
    let b = dev.alloc(8192).unwrap();
    let old = pattern(1, 8192);
    b.write_at(0, &old).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 8192);
    fi.stall(3, true).unwrap();
    let f = c.submit(&j).unwrap();
    std::thread::scope(|s| {
        let writer = s.spawn(|| {
            b.write_at(0, &pattern(2, 8192)).unwrap();
            f.is_signalled()
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !writer.is_finished(),
            "CPU write did not wait for the device read"
        );
        fi.stall(3, false).unwrap();
        assert!(
            writer.join().unwrap(),
            "the write went ahead before the fence"
        );
    });
    let mut card = vec![0u8; 8192];
    dev.card_read(0, &mut card).unwrap();
    assert_same(&card, &old, "the device read the data as it was at submit");
}

#[test]
fn f3_a_deferred_doorbell_nobody_flushes_still_completes() {
    // The watchdog rings doorbells a batching caller left pending, so a
    // submitted job completes in bounded time even if flush never comes.
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(2).unwrap();
    let b = dev.alloc(4096).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    let deferred = SubmitOptions {
        doorbell: false,
        ..Default::default()
    };
    let f = c.submit_with(&j, deferred).unwrap();
    assert_eq!(wait(&f), Ok(()));
}

#[test]
fn f9_a_panicking_callback_does_not_stop_the_reactor() {
    let rig = rig();
    let dev = &rig.dev;
    let c = dev.channel(0).unwrap();
    let b = dev.alloc(4096).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    let fi = dev.faults().unwrap();
    fi.stall(0, true).unwrap();
    let f = c.submit(&j).unwrap();
    f.on_signal(Box::new(|_| {
        panic!("a callback that panics (expected in this test)")
    }))
    .unwrap();
    fi.stall(0, false).unwrap();
    assert_eq!(wait(&f), Ok(()));
    let t0 = Instant::now();
    while !f.callback_panicked() {
        assert!(t0.elapsed() < LIVENESS);
        std::thread::sleep(Duration::from_millis(1));
    }
    // Interrupt-driven completions still work on every channel.
    for ch in 0..dev.channels() {
        wait(&dev.channel(ch).unwrap().submit(&j).unwrap()).unwrap();
    }
}

#[test]
fn r2_a_device_read_waits_for_the_device_write_before_it() {
    // A job that reads a buffer is held back until the job writing it has
    // completed, even across channels: the reader sees the writer's data.
    let rig = rig();
    let dev = &rig.dev;
    let fi = dev.faults().unwrap();
    let len = 64 * 1024;
    let (old, new) = (pattern(10, len), pattern(11, len));
    let a = dev.alloc(len).unwrap();
    a.write_at(0, &old).unwrap();
    dev.card_write(1 << 20, &new).unwrap();
    fi.stall(0, true).unwrap();
    let mut w = Job::new();
    w.c2h(1 << 20, &a, 0, len);
    let writer = dev.channel(0).unwrap().submit(&w).unwrap();
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut r = Job::new();
            r.h2c(&a, 0, 2 << 20, len);
            let f = dev.channel(1).unwrap().submit(&r).unwrap();
            (writer.is_signalled(), wait(&f))
        });
        std::thread::sleep(Duration::from_millis(50));
        assert!(!reader.is_finished(), "the read did not wait for the write");
        fi.stall(0, false).unwrap();
        let (writer_done, st) = reader.join().unwrap();
        assert!(
            writer_done,
            "the read was submitted before the write completed"
        );
        assert_eq!(st, Ok(()));
    });
    let mut got = vec![0u8; len];
    dev.card_read(2 << 20, &mut got).unwrap();
    assert_same(&got, &new, "the reader saw the writer's data");
}
