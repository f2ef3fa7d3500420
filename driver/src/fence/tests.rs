//! Unit tests of the fence rules (std build). Each test is named after the
//! rule it proves. F10's allocation check is `tests/fence_no_alloc.rs`.

use super::*;
use crate::error::FenceError;
use crate::sync::{Arc, SignallingSection};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Liveness bound of every blocking wait in these tests (F3-style: no
/// waiter waits beyond it).
const LIVENESS: Duration = Duration::from_secs(30);

fn dev_err(channel: u8, seqno: u64, code: u8) -> Status {
    Err(FenceError::Device {
        channel,
        seqno,
        code,
        index: 0,
    })
}

fn readable(fd: BorrowedFd<'_>) -> bool {
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    let n = poll(&mut fds, PollTimeout::ZERO).expect("poll");
    n == 1
        && fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN))
}

#[test]
fn handles_are_send_and_sync() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Fence>();
    send_sync::<Signaller>(); // F1: `signal(&self)` may be raced
    send_sync::<Timeline>();
    send_sync::<crate::resv::Resv>();
}

#[test]
fn f1_concurrent_signal_one_winner() {
    const THREADS: usize = 8;
    for round in 0..50 {
        let tl = Timeline::new(1);
        let (fence, sig) = tl.create();
        let barrier = Barrier::new(THREADS);
        let results: Vec<(Status, Result<(), AlreadySignalled>)> = thread::scope(|s| {
            let handles: Vec<_> = (0..THREADS)
                .map(|i| {
                    let (sig, barrier) = (&sig, &barrier);
                    s.spawn(move || {
                        let status = if i == 0 {
                            Ok(())
                        } else {
                            dev_err(1, sig.seqno(), i as u8)
                        };
                        barrier.wait();
                        (status, sig.signal(status))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let winners: Vec<_> = results.iter().filter(|(_, r)| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: exactly one winner");
        assert_eq!(
            fence.status(),
            Some(winners[0].0),
            "the winner's status stands"
        );
        assert_eq!(
            sig.signal(Ok(())),
            Err(AlreadySignalled),
            "a later signal is a no-op"
        );
        assert_eq!(fence.status(), Some(winners[0].0));
    }
}

#[test]
fn f2_every_observer_sees_the_same_status() {
    let tl = Timeline::new(2);
    let (fence, sig) = tl.create();
    let status = Err(FenceError::IommuFault {
        channel: 2,
        seqno: fence.seqno(),
        index: 7,
    });
    let seen_by_callback = Arc::new(Mutex::new(None));
    let cb_slot = Arc::clone(&seen_by_callback);
    let cb_fence = fence.clone();
    fence
        .on_signal(Box::new(move |s: &Status| {
            *cb_slot.lock().unwrap() = Some((*s, cb_fence.status()));
        }))
        .unwrap();
    let seen = thread::scope(|s| {
        let waiters: Vec<_> = (0..4)
            .map(|i| {
                let f = fence.clone();
                s.spawn(move || match i {
                    0 => f.wait(),
                    1 => match f.wait_timeout(LIVENESS) {
                        Wait::Signalled(s) => s,
                        Wait::TimedOut => panic!("timed out"),
                    },
                    2 => {
                        wait_any(std::slice::from_ref(&f), Some(LIVENESS))
                            .unwrap()
                            .1
                    }
                    _ => match wait_all(std::slice::from_ref(&f), None) {
                        Wait::Signalled(s) => s,
                        Wait::TimedOut => panic!("timed out"),
                    },
                })
            })
            .collect();
        thread::sleep(Duration::from_millis(20));
        sig.signal(status).unwrap();
        waiters
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect::<Vec<_>>()
    });
    assert!(seen.iter().all(|s| *s == status), "waiters: {seen:?}");
    assert_eq!(
        *seen_by_callback.lock().unwrap(),
        Some((status, Some(status)))
    );
    assert_eq!(fence.status(), Some(status));
    assert_eq!(fence.wait_timeout(Duration::ZERO), Wait::Signalled(status));
    assert_eq!(sig.signal(Ok(())), Err(AlreadySignalled));
    assert_eq!(fence.clone().status(), Some(status), "never changes after");
}

#[test]
fn f5_timeout_leaves_fence_unchanged() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    let t0 = Instant::now();
    assert_eq!(
        fence.wait_timeout(Duration::from_millis(20)),
        Wait::TimedOut
    );
    assert!(t0.elapsed() >= Duration::from_millis(20));
    assert_eq!(fence.status(), None);
    assert!(!fence.is_signalled());
    assert!(!sig.is_signalled());
    assert_eq!(tl.completed(), 0);
    sig.signal(Ok(()))
        .expect("the timed-out fence can still be signalled");
    assert_eq!(
        fence.wait_timeout(Duration::from_millis(20)),
        Wait::Signalled(Ok(()))
    );
}

#[test]
fn f5_zero_timeout_polls() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    // Polling does not block, even inside a signalling section.
    {
        let _section = SignallingSection::enter();
        assert_eq!(fence.wait_timeout(Duration::ZERO), Wait::TimedOut);
        assert_eq!(
            wait_any(std::slice::from_ref(&fence), Some(Duration::ZERO)),
            None
        );
        assert_eq!(
            wait_all(std::slice::from_ref(&fence), Some(Duration::ZERO)),
            Wait::TimedOut
        );
    }
    sig.signal(dev_err(0, 1, 3)).unwrap();
    assert_eq!(
        fence.wait_timeout(Duration::ZERO),
        Wait::Signalled(dev_err(0, 1, 3))
    );
    assert_eq!(
        wait_any(std::slice::from_ref(&fence), Some(Duration::ZERO)),
        Some((0, dev_err(0, 1, 3)))
    );
}

#[test]
fn f5_wait_any() {
    let tl = Timeline::new(0);
    let pairs: Vec<_> = (0..3).map(|_| tl.create()).collect();
    let fences: Vec<Fence> = pairs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(wait_any(&[], None), None, "empty set");
    assert_eq!(
        wait_any(&fences, Some(Duration::from_millis(10))),
        None,
        "times out"
    );
    assert!(fences.iter().all(|f| f.status().is_none()), "unchanged");
    let got = thread::scope(|s| {
        let h = s.spawn(|| wait_any(&fences, Some(LIVENESS)));
        thread::sleep(Duration::from_millis(20));
        pairs[1].1.signal(dev_err(0, 2, 9)).unwrap();
        h.join().unwrap()
    });
    assert_eq!(got, Some((1, dev_err(0, 2, 9))));
    // Unbounded wait, woken by a later fence while earlier ones stay pending.
    let got = thread::scope(|s| {
        let h = s.spawn(|| wait_any(&fences[2..], None));
        thread::sleep(Duration::from_millis(20));
        pairs[2].1.signal(Ok(())).unwrap();
        h.join().unwrap()
    });
    assert_eq!(got, Some((0, Ok(()))));
    // The waiters unregistered themselves from the pending fence.
    assert!(pairs[0].0.inner.registered_wakers() == 0);
}

#[test]
fn f5_wait_all() {
    let tl = Timeline::new(4);
    let pairs: Vec<_> = (0..4).map(|_| tl.create()).collect();
    let fences: Vec<Fence> = pairs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(
        wait_all(&[], Some(Duration::ZERO)),
        Wait::Signalled(Ok(())),
        "empty set"
    );
    pairs[0].1.signal(Ok(())).unwrap();
    assert_eq!(
        wait_all(&fences, Some(Duration::from_millis(10))),
        Wait::TimedOut
    );
    let got = thread::scope(|s| {
        let h = s.spawn(|| wait_all(&fences, Some(LIVENESS)));
        thread::sleep(Duration::from_millis(10));
        // Out of slice order: index 3 fails first, then index 2.
        pairs[3].1.signal(dev_err(4, 4, 1)).unwrap();
        pairs[2].1.signal(dev_err(4, 3, 2)).unwrap();
        thread::sleep(Duration::from_millis(10));
        pairs[1].1.signal(Ok(())).unwrap();
        h.join().unwrap()
    });
    assert_eq!(
        got,
        Wait::Signalled(dev_err(4, 3, 2)),
        "first error in slice order"
    );
    assert_eq!(wait_all(&fences[..2], None), Wait::Signalled(Ok(())));
}

#[test]
fn f6_dropped_signaller_cancels() {
    let tl = Timeline::new(5);
    let (_f1, s1) = tl.create();
    let (fence, sig) = tl.create();
    let waiter = {
        let f = fence.clone();
        thread::spawn(move || f.wait_timeout(LIVENESS))
    };
    thread::sleep(Duration::from_millis(10));
    drop(sig);
    let cancelled = Err(FenceError::Cancelled {
        channel: 5,
        seqno: 2,
    });
    assert_eq!(waiter.join().unwrap(), Wait::Signalled(cancelled));
    assert_eq!(fence.status(), Some(cancelled));
    // A signalled signaller's drop changes nothing.
    s1.signal(Ok(())).unwrap();
    let f1 = s1.fence();
    drop(s1);
    assert_eq!(f1.status(), Some(Ok(())));
    assert_eq!(tl.completed(), 2);
    // Inside a signalling section the drop still cancels (without logging).
    let (f3, s3) = tl.create();
    {
        let _section = SignallingSection::enter();
        drop(s3);
    }
    assert_eq!(
        f3.status(),
        Some(Err(FenceError::Cancelled {
            channel: 5,
            seqno: 3
        }))
    );
}

#[test]
fn f7_seqnos_strictly_increase() {
    let tl = Timeline::new(6);
    assert_eq!(tl.channel(), 6);
    assert_eq!(tl.last_issued(), 0);
    let fences: Vec<_> = (0..100).map(|_| tl.create()).collect();
    for (i, (f, s)) in fences.iter().enumerate() {
        assert_eq!(f.seqno(), i as u64 + 1);
        assert_eq!(s.seqno(), f.seqno());
        assert_eq!((f.channel(), s.channel()), (6, 6));
    }
    assert_eq!(tl.last_issued(), 100);
    assert!(fences[5].0.is_later(&fences[4].0).unwrap());
    assert!(!fences[4].0.is_later(&fences[5].0).unwrap());
    assert!(!fences[4].0.is_later(&fences[4].0.clone()).unwrap());
    // Seqnos from many threads: all distinct, each thread's increasing.
    let tl2 = Timeline::new(7);
    let mut all: Vec<u64> = thread::scope(|s| {
        let hs: Vec<_> = (0..4)
            .map(|_| {
                s.spawn(|| {
                    let v: Vec<u64> = (0..200).map(|_| tl2.create().0.seqno()).collect();
                    assert!(v.windows(2).all(|w| w[0] < w[1]));
                    v
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    });
    all.sort_unstable();
    assert_eq!(all, (1..=800).collect::<Vec<u64>>());
    // Dropped signallers cancelled them all, in some order: all complete.
    assert_eq!(tl2.completed(), 800);
}

#[test]
fn f7_cross_channel_comparison_refused() {
    let a = Timeline::new(0);
    let b = Timeline::new(1);
    let same_number = Timeline::new(0);
    let (fa, _sa) = a.create();
    let (fb, _sb) = b.create();
    let (fc, _sc) = same_number.create();
    assert!(matches!(fa.is_later(&fb), Err(crate::Error::Invalid(_))));
    assert!(matches!(fb.is_later(&fa), Err(crate::Error::Invalid(_))));
    // Same channel number, different timeline (another device): refused too.
    assert!(matches!(fa.is_later(&fc), Err(crate::Error::Invalid(_))));
}

#[test]
fn f7_completed_contiguous_out_of_order() {
    let tl = Timeline::new(0);
    let p: Vec<_> = (0..6).map(|_| tl.create()).collect();
    let sig = |n: usize| p[n - 1].1.signal(Ok(())).unwrap();
    sig(3);
    assert_eq!(tl.completed(), 0);
    assert!(p[2].0.is_signalled(), "its own flag");
    assert!(!p[0].0.is_signalled());
    sig(1);
    assert_eq!(tl.completed(), 1);
    sig(2);
    assert_eq!(tl.completed(), 3, "advances over the signalled run");
    sig(5);
    assert_eq!(tl.completed(), 3);
    p[3].1.signal(dev_err(0, 4, 1)).unwrap();
    assert_eq!(tl.completed(), 5, "an error completes its seqno too");
    assert_eq!(
        p[3].0.status(),
        Some(dev_err(0, 4, 1)),
        "errors stay per seqno"
    );
    assert_eq!(p[4].0.status(), Some(Ok(())));
    assert!(!p[5].0.is_signalled());
    // More seqnos than the window's first capacity, signalled in reverse.
    let q: Vec<_> = (0..100).map(|_| tl.create()).collect();
    for (_, s) in q.iter().rev() {
        s.signal(Ok(())).unwrap();
        assert_eq!(tl.completed(), 5);
    }
    sig(6);
    assert_eq!(tl.completed(), 106);
    assert!(q.iter().all(|(f, _)| f.is_signalled()));
}

#[test]
fn f8_timeline_fd_readable_iff_armed_target_signalled() {
    let tl = Timeline::new(0);
    assert!(!readable(tl.fd()), "not armed: not readable");
    let p: Vec<_> = (0..4).map(|_| tl.create()).collect();
    tl.arm(2);
    assert!(!readable(tl.fd()));
    p[0].1.signal(Ok(())).unwrap();
    assert!(!readable(tl.fd()), "an earlier seqno is not the target");
    p[1].1.signal(Ok(())).unwrap();
    assert!(readable(tl.fd()), "readable when signal() returns");
    assert!(readable(tl.fd()), "level: stays readable");
    tl.arm(4);
    assert!(!readable(tl.fd()), "re-armed on a pending target: drained");
    p[2].1.signal(Ok(())).unwrap();
    assert!(!readable(tl.fd()));
    tl.arm(1);
    assert!(
        readable(tl.fd()),
        "armed on a signalled target: readable at once"
    );
    tl.arm(4);
    assert!(!readable(tl.fd()));
    p[3].1.signal(dev_err(0, 4, 5)).unwrap();
    assert!(readable(tl.fd()), "an error signals too");
    // A target not issued yet.
    tl.arm(5);
    assert!(!readable(tl.fd()));
    let (_f5, s5) = tl.create();
    assert!(!readable(tl.fd()));
    s5.signal(Ok(())).unwrap();
    assert!(readable(tl.fd()));
    // Out of order: the target's own signal counts, not the prefix.
    let (_f6, s6) = tl.create();
    let (_f7, s7) = tl.create();
    tl.arm(7);
    s7.signal(Ok(())).unwrap();
    assert!(readable(tl.fd()));
    tl.arm(6);
    assert!(!readable(tl.fd()));
    s6.signal(Ok(())).unwrap();
    assert!(readable(tl.fd()));
}

#[test]
fn f8_fd_never_readable_before_status_visible() {
    for _ in 0..50 {
        let tl = Timeline::new(0);
        let (fence, sig) = tl.create();
        tl.arm(fence.seqno());
        let exported = fence.export_fd().unwrap();
        thread::scope(|s| {
            let fence = &fence;
            let exported = &exported;
            let tl = &tl;
            let h = s.spawn(move || {
                let mut fds = [
                    PollFd::new(tl.fd(), PollFlags::POLLIN),
                    PollFd::new(exported.as_fd(), PollFlags::POLLIN),
                ];
                let n = poll(&mut fds, PollTimeout::from(30_000u16)).unwrap();
                assert!(n >= 1, "timed out");
                assert!(
                    fence.status().is_some(),
                    "fd readable before the status was visible"
                );
                assert!(fence.is_signalled());
            });
            sig.signal(Ok(())).unwrap();
            h.join().unwrap();
        });
    }
}

#[test]
fn f8_exported_fd() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    let before = fence.export_fd().unwrap();
    let before2 = fence.export_fd().unwrap();
    assert!(!readable(before.as_fd()));
    sig.signal(Ok(())).unwrap();
    assert!(readable(before.as_fd()));
    assert!(readable(before2.as_fd()), "each export is independent");
    let after = fence.export_fd().unwrap();
    assert!(
        readable(after.as_fd()),
        "exported after the signal: readable at once"
    );
    // O_CLOEXEC.
    let flags = nix::fcntl::fcntl(after.as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert!(flags & libc::FD_CLOEXEC != 0);
    let flags = nix::fcntl::fcntl(tl.fd().as_raw_fd(), nix::fcntl::FcntlArg::F_GETFD).unwrap();
    assert!(flags & libc::FD_CLOEXEC != 0);
    // A blocking read of the exported fd returns once signalled.
    let mut buf = [0u8; 8];
    assert_eq!(nix::unistd::read(before.as_raw_fd(), &mut buf).unwrap(), 8);
}

#[test]
fn f9_callback_exactly_once() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    let runs = Arc::new(AtomicUsize::new(0));
    for _ in 0..3 {
        let runs = Arc::clone(&runs);
        fence
            .on_signal(Box::new(move |_| {
                runs.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
    }
    sig.signal(Ok(())).unwrap();
    assert_eq!(runs.load(Ordering::SeqCst), 3);
    assert_eq!(sig.signal(Ok(())), Err(AlreadySignalled));
    drop(sig);
    assert_eq!(runs.load(Ordering::SeqCst), 3, "never run again");
}

#[test]
fn f9_register_after_signal_refused() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    sig.signal(Ok(())).unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    let r = Arc::clone(&ran);
    let res = fence.on_signal(Box::new(move |_| {
        r.fetch_add(1, Ordering::SeqCst);
    }));
    assert_eq!(res, Err(AlreadySignalled));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "not run");
    assert_eq!(
        Arc::strong_count(&ran),
        1,
        "the refused callback was dropped"
    );
}

#[test]
fn f9_callback_runs_after_status_visible() {
    let tl = Timeline::new(3);
    let (fence, sig) = tl.create();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let (f, s) = (fence.clone(), Arc::clone(&seen));
    let tl2 = Arc::clone(&tl);
    fence
        .on_signal(Box::new(move |st| {
            s.lock()
                .unwrap()
                .push((*st, f.status(), f.is_signalled(), tl2.completed()));
        }))
        .unwrap();
    let status = Err(FenceError::Hung {
        channel: 3,
        seqno: 1,
        cycles: 100,
    });
    sig.signal(status).unwrap();
    assert_eq!(*seen.lock().unwrap(), vec![(status, Some(status), true, 1)]);
}

#[test]
fn f9_registration_races_signal() {
    for _ in 0..50 {
        let tl = Timeline::new(0);
        let (fence, sig) = tl.create();
        let runs = Arc::new(AtomicUsize::new(0));
        let barrier = Barrier::new(5);
        let accepted: usize = thread::scope(|s| {
            let hs: Vec<_> = (0..4)
                .map(|_| {
                    let (fence, runs, barrier) = (&fence, &runs, &barrier);
                    s.spawn(move || {
                        barrier.wait();
                        (0..20)
                            .filter(|_| {
                                let r = Arc::clone(runs);
                                fence
                                    .on_signal(Box::new(move |_| {
                                        r.fetch_add(1, Ordering::SeqCst);
                                    }))
                                    .is_ok()
                            })
                            .count()
                    })
                })
                .collect();
            barrier.wait();
            sig.signal(Ok(())).unwrap();
            hs.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(
            runs.load(Ordering::SeqCst),
            accepted,
            "none lost, none run twice"
        );
    }
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "F10 violated: fence wait inside a signalling section")]
fn f10_wait_in_signalling_section_panics() {
    let tl = Timeline::new(0);
    let (fence, _sig) = tl.create();
    let _section = SignallingSection::enter();
    let _ = fence.wait_timeout(Duration::from_millis(1));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "F10 violated: fence wait inside a signalling section")]
fn f10_wait_any_in_signalling_section_panics() {
    let tl = Timeline::new(0);
    let (fence, _sig) = tl.create();
    let _section = SignallingSection::enter();
    let _ = wait_any(&[fence], Some(Duration::from_millis(1)));
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "F10 violated: fence wait inside a signalling section")]
fn f10_wait_on_signalled_fence_in_signalling_section_panics() {
    // Caught even when this particular wait would not block.
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    sig.signal(Ok(())).unwrap();
    let _section = SignallingSection::enter();
    let _ = wait_any(&[fence], None);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "F10 violated: fence wait inside a signalling section")]
fn f10_wait_all_in_signalling_section_panics() {
    let tl = Timeline::new(0);
    let (fence, _sig) = tl.create();
    let _section = SignallingSection::enter();
    let _ = wait_all(&[fence], None);
}

#[test]
fn f10_signal_inside_signalling_section() {
    // The signal path itself never asserts: it may run inside a section,
    // with callbacks that query the fence.
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    let f = fence.clone();
    fence
        .on_signal(Box::new(move |_| assert!(f.is_signalled())))
        .unwrap();
    tl.arm(1);
    let _fd = fence.export_fd().unwrap();
    let _section = SignallingSection::enter();
    sig.signal(Ok(())).unwrap();
    assert_eq!(fence.status(), Some(Ok(())));
}

#[test]
fn f10_callbacks_released_off_the_signal_path() {
    let tl = Timeline::new(0);
    let (fence, sig) = tl.create();
    let token = Arc::new(());
    let t = Arc::clone(&token);
    // The callback holds its own fence: released all the same.
    let f = fence.clone();
    fence
        .on_signal(Box::new(move |_| {
            let _ = (&t, &f);
        }))
        .unwrap();
    sig.signal(Ok(())).unwrap();
    assert_eq!(
        Arc::strong_count(&token),
        2,
        "not freed by the signal (F10)"
    );
    drop(sig);
    assert_eq!(
        Arc::strong_count(&token),
        1,
        "freed when the signaller is reclaimed"
    );
    assert_eq!(fence.status(), Some(Ok(())));

    // Dropped inside a signalling section: left to the fence storage.
    let (fence, sig) = tl.create();
    let t = Arc::clone(&token);
    fence
        .on_signal(Box::new(move |_| {
            let _ = &t;
        }))
        .unwrap();
    {
        let _section = SignallingSection::enter();
        sig.signal(Ok(())).unwrap();
        drop(sig);
    }
    assert_eq!(Arc::strong_count(&token), 2, "kept while in the section");
    drop(fence);
    assert_eq!(Arc::strong_count(&token), 1, "freed with the storage");
}
