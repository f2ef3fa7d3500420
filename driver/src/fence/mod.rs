//! Fences: the completion of one job (contracts F1–F10).
//!
//! # Model
//!
//! Every channel has a [`Timeline`]. Submitting a job calls
//! [`Timeline::create`], which hands out the next sequence number and a pair
//! of handles on one shared piece of fence storage:
//!
//! * a [`Fence`], the waiting side: cheap to clone, queried, waited on,
//!   given callbacks, exported as an fd, kept in reservation objects
//!   ([`crate::resv`]);
//! * a [`Signaller`], the signalling side: unique, owned by the channel's
//!   completion code, which calls [`Signaller::signal`] exactly once with the
//!   job's final [`Status`].
//!
//! A fence is pending until it is signalled, then signalled for good with a
//! status (`Ok(())` or a [`FenceError`]). The timeline keeps a
//! *completed* counter (the highest seqno such that it and all earlier ones
//! are signalled) and an eventfd that callers' event loops poll.
//!
//! This is not Linux's `dma_fence`: it keeps its rules, not its machinery.
//! The storage of a fence lives until the last handle goes. Callbacks and
//! exported fds registered on it are released when the signaller is dropped
//! after the signal (or with the storage, if the signaller is dropped inside
//! a signalling section); the channel code drops signallers from its reclaim
//! queue, off the signalling path (F10).
//!
//! # The rules, and where they are enforced
//!
//! The numbering is the one of the design contracts; the code cites it as
//! `// F3`.
//!
//! * **F1 Signal once.** A fence goes from pending to signalled exactly once.
//!   [`Signaller::signal`] decides the winner under the fence's own mutex:
//!   the first caller stores the status, every later or racing caller gets
//!   [`AlreadySignalled`] and changes nothing. The signaller is `Sync`, so the
//!   race is possible and is model-checked (`loom_tests`).
//! * **F2 The error comes with the signal.** The status is stored in the same
//!   critical section that marks the fence signalled, and never written
//!   again: [`Fence::status`], every waiter, every callback and every later
//!   query see the same value.
//! * **F3 Finite time.** Enforced by the channel's watchdog, not here: this
//!   module offers unbounded [`Fence::wait`] because the channel guarantees
//!   that every fence it creates is signalled in bounded time. What this
//!   module adds is F6: a signaller that is dropped, for whatever reason
//!   (panic, shutdown, a bug), still signals.
//! * **F4 Errors are attributed.** The channel decides which job an error
//!   belongs to; [`FenceError`] carries the channel and seqno of that job.
//! * **F5 Wait.** [`Fence::wait_timeout`] returns [`Wait::Signalled`] or
//!   [`Wait::TimedOut`]; a timeout never touches the fence. A zero timeout
//!   polls without blocking. [`wait_any`] and [`wait_all`] wait on sets,
//!   sleeping on condition variables (never busy polling).
//! * **F6 One signaller.** [`Signaller`] is not `Clone`. All storage the
//!   signal needs (the fence itself, the timeline's slot for its seqno) is
//!   allocated by [`Timeline::create`], on the submitter's thread before the
//!   job reaches the hardware. Dropping a signaller that has not signalled
//!   signals [`FenceError::Cancelled`] and logs a warning (unless the thread
//!   is in a [`SignallingSection`](crate::sync::SignallingSection), where
//!   logging could allocate).
//! * **F7 Timeline.** A fence is (timeline, seqno); seqnos start at 1 and
//!   strictly increase per timeline ([`Timeline::create`]). Comparing fences
//!   of different timelines is refused ([`Fence::is_later`]).
//!   [`Timeline::completed`] advances only over a contiguous prefix of
//!   signalled seqnos, so it stays right even when an error or cancellation
//!   path signals out of order, and [`Fence::is_signalled`] is O(1).
//! * **F8 Pollable.** [`Timeline::fd`] is readable if and only if the target
//!   set by [`Timeline::arm`] is signalled. The signal path makes it readable
//!   after the status is visible and before [`Signaller::signal`] returns.
//!   [`Fence::export_fd`] gives a per-fence eventfd with the same guarantee.
//! * **F9 Callbacks** ([`Fence::on_signal`]) run exactly once, on the
//!   signalling thread, after the status is visible. Registering on a
//!   signalled fence returns [`AlreadySignalled`] and does not run the
//!   callback. Registration and signal decide under the fence's mutex, so
//!   their race neither loses nor double-runs a callback (model-checked).
//!   Callbacks must not block, allocate or panic.
//! * **F10 The signalling path is pure.** [`Signaller::signal`] does not
//!   allocate or free heap memory, log, or wait on anything. It takes only
//!   *leaf* locks: the fence's own mutex, the timeline's mutex, and the mutex
//!   of each `wait_any` waiter registered on the fence. Nobody holds a leaf
//!   lock while allocating, blocking, logging or calling out (growing the
//!   vectors they protect is done outside the lock and swapped in), so the
//!   signal path is delayed for a bounded time at most. Callbacks are run,
//!   not dropped: they are freed when the signaller is dropped (on the
//!   channel's reclaim thread), or with the fence storage. Every blocking wait calls
//!   [`assert_may_block`](crate::sync::assert_may_block) first, which panics
//!   in debug builds inside a signalling section. A test with a counting
//!   global allocator (`tests/fence_no_alloc.rs`) checks that a signal with
//!   waiters, exported fds, an armed timeline and a callback allocates
//!   nothing.
//!
//! # Loom
//!
//! All atomics, mutexes, condition variables and `Arc`s come from
//! [`crate::sync`], so `RUSTFLAGS="--cfg loom"` model-checks this code, not
//! a copy of it (`loom_tests.rs`: F1, F6, F9). The eventfds are real
//! syscalls in both builds; loom does not model them.

use crate::error::FenceError;

mod handle;
mod sys;
mod timeline;
mod wait;

#[cfg(all(test, loom))]
mod loom_tests;
#[cfg(all(test, not(loom)))]
mod tests;

pub use handle::{Fence, Signaller};
pub use timeline::Timeline;
pub use wait::{wait_all, wait_any};

/// Final status of a fence (F2).
pub type Status = Result<(), FenceError>;

/// A completion callback (F9): called exactly once, in completion context,
/// after the status is visible; it must not block. It is `FnMut` so that
/// running it does not free it: its storage is dropped later, off the
/// signalling path (F10).
///
/// Completion context is the reactor thread (or the poller, in poll mode)
/// with the channel's completion lock held: a callback must not call back
/// into the channel or device (submit, poll, reset, close) — that waits on
/// the lock it runs under — nor allocate if it wants the signalling path to
/// stay allocation-free. Hand work to another thread instead (an atomic, a
/// channel with preallocated capacity, an eventfd). A panic in a callback
/// is caught and recorded ([`Fence::callback_panicked`]); it does not stop
/// the reactor.
pub type Callback = Box<dyn FnMut(&Status) + Send + 'static>;

/// Outcome of a bounded wait (F5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// The fence signalled with this status.
    Signalled(Status),
    /// The timeout passed first; the fence is unchanged.
    TimedOut,
}

/// The fence was already signalled (F1, F9).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("fence already signalled")]
pub struct AlreadySignalled;

/// Lock a mutex of this module, ignoring poisoning: every critical section
/// here leaves its data consistent before anything that can panic.
pub(crate) fn lock<T>(m: &crate::sync::Mutex<T>) -> crate::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The deadline `timeout` from now; `None` means no deadline (unbounded, or
/// too far to represent).
pub(crate) fn deadline(timeout: Option<std::time::Duration>) -> Option<std::time::Instant> {
    timeout.and_then(|d| std::time::Instant::now().checked_add(d))
}
