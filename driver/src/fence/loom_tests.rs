//! Loom models of the real fence code (built with `--cfg loom`, which
//! switches `crate::sync` to loom's types).
//!
//! ```text
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test -p fdma --release --lib fence::loom_tests
//! ```
//!
//! Models are kept small (at most three threads, preemption bound 2).

use super::*;
use crate::error::FenceError;
use crate::sync::{Arc, AtomicUsize, Ordering};
use loom::thread;

/// A model checker bounded to 2 preemptions (unless `LOOM_MAX_PREEMPTIONS`
/// asks for another bound).
fn model(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(2);
    }
    b.check(f);
}

fn dev_err(code: u8) -> Status {
    Err(FenceError::Device {
        channel: 0,
        seqno: 1,
        code,
        index: 0,
    })
}

/// F1, F2: two threads race the main thread to signal; exactly one wins and
/// every participant then sees the winner's status.
#[test]
fn f1_concurrent_signal_one_winner() {
    model(|| {
        let tl = Timeline::new(0);
        let (fence, sig) = tl.create();
        let sig = Arc::new(sig);
        let racers: Vec<_> = [dev_err(1), dev_err(2)]
            .into_iter()
            .map(|status| {
                let (sig, fence) = (Arc::clone(&sig), fence.clone());
                thread::spawn(move || {
                    let won = sig.signal(status).is_ok();
                    (status, won, fence.status())
                })
            })
            .collect();
        let mut results = vec![(Ok(()), sig.signal(Ok(())).is_ok(), fence.status())];
        results.extend(racers.into_iter().map(|h| h.join().unwrap()));

        let winners: Vec<_> = results.iter().filter(|r| r.1).collect();
        assert_eq!(winners.len(), 1, "exactly one winner");
        let final_status = winners[0].0;
        // F2: everyone, as soon as its own call returned, saw the final status.
        for (_, _, seen) in &results {
            assert_eq!(*seen, Some(final_status));
        }
        assert_eq!(fence.status(), Some(final_status));
        assert_eq!(tl.completed(), 1);
    });
}

/// F6: the signaller is dropped on one thread while another waits; the
/// waiter wakes with `Cancelled`.
#[test]
fn f6_dropped_signaller_wakes_waiter_with_cancelled() {
    model(|| {
        let tl = Timeline::new(3);
        let (fence, sig) = tl.create();
        let waiter = {
            let fence = fence.clone();
            thread::spawn(move || fence.wait())
        };
        let dropper = thread::spawn(move || drop(sig));
        let cancelled = Err(FenceError::Cancelled {
            channel: 3,
            seqno: 1,
        });
        assert_eq!(waiter.join().unwrap(), cancelled);
        dropper.join().unwrap();
        assert_eq!(fence.status(), Some(cancelled));
    });
}

/// F9: registration races the signal; the callback runs exactly once if
/// registration succeeded, never if it reported `AlreadySignalled`, and
/// always after the status is visible.
#[test]
fn f9_callback_registration_races_signal() {
    model(|| {
        let tl = Timeline::new(0);
        let (fence, sig) = tl.create();
        let runs = Arc::new(AtomicUsize::new(0));
        let registrar = {
            let (fence, runs) = (fence.clone(), Arc::clone(&runs));
            thread::spawn(move || {
                let f = fence.clone();
                fence
                    .on_signal(Box::new(move |st: &Status| {
                        assert_eq!(f.status().as_ref(), Some(st), "status visible");
                        runs.fetch_add(1, Ordering::SeqCst);
                    }))
                    .is_ok()
            })
        };
        sig.signal(Ok(())).unwrap();
        let registered = registrar.join().unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), usize::from(registered));
        // Nothing runs it again.
        drop(sig);
        assert_eq!(runs.load(Ordering::SeqCst), usize::from(registered));
    });
}

/// F5: `wait_any` with its shared waker never misses a signal that races
/// its registration (no lost wake-up; loom would report a deadlock).
#[test]
fn f5_wait_any_no_lost_wakeup() {
    model(|| {
        let tl = Timeline::new(0);
        let (a, _sa) = tl.create();
        let (b, sb) = tl.create();
        let signaller = thread::spawn(move || sb.signal(Ok(())).unwrap());
        assert_eq!(wait_any(&[a, b], None), Some((1, Ok(()))));
        signaller.join().unwrap();
    });
}
