//! Waiting on sets of fences (F5), without busy polling.
//!
//! [`wait_any`] registers one shared [`Waker`] on every fence of the set;
//! the signal of any of them sets the waker's flag and notifies its
//! condition variable. [`wait_all`] waits on each fence in turn against one
//! deadline.

use super::handle::Fence;
use super::{deadline, lock, Status, Wait};
use crate::sync::{assert_may_block, Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// A `wait_any` waiter, registered on each fence it waits for. Its mutex is
/// a leaf lock: the signal path holds it only to set the flag (F10).
pub(super) struct Waker {
    woken: Mutex<bool>,
    cv: Condvar,
}

impl Waker {
    fn new() -> Waker {
        Waker {
            woken: Mutex::new(false),
            cv: Condvar::new(),
        }
    }

    /// Called by the signal path: set the flag, wake the waiter. No
    /// allocation (F10).
    pub(super) fn wake(&self) {
        let mut woken = lock(&self.woken);
        *woken = true;
        self.cv.notify_all();
    }

    /// Sleep until woken (the flag is consumed) or `deadline`; `false` on
    /// timeout.
    fn sleep(&self, deadline: Option<Instant>) -> bool {
        let mut woken = lock(&self.woken);
        while !*woken {
            woken = match deadline {
                None => self
                    .cv
                    .wait(woken)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    self.cv
                        .wait_timeout(woken, d - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
        *woken = false;
        true
    }
}

/// The first signalled fence of `fences`, in slice order.
fn first_signalled(fences: &[Fence]) -> Option<(usize, Status)> {
    fences
        .iter()
        .enumerate()
        .find_map(|(i, f)| f.status().map(|s| (i, s)))
}

/// Wait until any fence signals (F5).
///
/// Returns the index and status of a signalled fence (the first in slice
/// order among those signalled when the waiter looks), or `None` if
/// `timeout` passes first (`None` timeout: no bound; zero: poll). An empty
/// set returns `None` at once. The fences are unchanged.
///
/// # Panics
///
/// In debug builds, inside a signalling section, unless `timeout` is zero
/// (F10).
#[track_caller]
pub fn wait_any(fences: &[Fence], timeout: Option<Duration>) -> Option<(usize, Status)> {
    if timeout != Some(Duration::ZERO) {
        // F10: asserted even when nothing would block this time, so that a
        // latent wait in a signalling section is caught deterministically.
        assert_may_block("fence wait");
    }
    if let Some(r) = first_signalled(fences) {
        return Some(r);
    }
    if fences.is_empty() || timeout == Some(Duration::ZERO) {
        return None;
    }
    let deadline = deadline(timeout);
    let waker = Arc::new(Waker::new());
    let mut registered = 0;
    for f in fences {
        if f.inner.add_waker(&waker).is_err() {
            break; // signalled meanwhile: found by the loop below
        }
        registered += 1;
    }
    // The flag persists, so a signal between the check and the sleep is not
    // lost.
    let result = loop {
        if let Some(r) = first_signalled(fences) {
            break Some(r);
        }
        if !waker.sleep(deadline) {
            break first_signalled(fences);
        }
    };
    for f in &fences[..registered] {
        f.inner.remove_waker(&waker);
    }
    result
}

/// Wait until all fences signal (F5).
///
/// Returns [`Wait::Signalled`] with the first error in slice order if any
/// fence failed, else `Ok(())`; or [`Wait::TimedOut`] if `timeout` passes
/// first (`None`: no bound; zero: poll). An empty set is signalled `Ok`.
/// The fences are unchanged.
///
/// # Panics
///
/// In debug builds, inside a signalling section, unless `timeout` is zero
/// (F10).
#[track_caller]
pub fn wait_all(fences: &[Fence], timeout: Option<Duration>) -> Wait {
    if timeout == Some(Duration::ZERO) {
        if fences.iter().any(|f| !f.is_signalled()) {
            return Wait::TimedOut;
        }
    } else {
        assert_may_block("fence wait"); // F10, as in `wait_any`
        let deadline = deadline(timeout);
        for f in fences {
            if f.inner.wait_until(deadline).is_none() {
                return Wait::TimedOut;
            }
        }
    }
    let first_error = fences
        .iter()
        .filter_map(|f| f.status())
        .find(|s| s.is_err())
        .unwrap_or(Ok(()));
    Wait::Signalled(first_error)
}
