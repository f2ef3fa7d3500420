//! Synchronisation primitives, switched to `loom`'s under `cfg(loom)`, and
//! the debug-build *signalling section* marker of contract F10.
//!
//! The fence, timeline and reservation code takes its atomics, mutexes and
//! condition variables from here, so `RUSTFLAGS="--cfg loom"` model-checks the
//! real code rather than a re-implementation (F1, F6, F9).
//!
//! # Signalling sections (F10)
//!
//! Code between "job visible to the hardware" and "fence signalled" must not
//! wait on a fence, take a reservation, cache or shim lock, or allocate. The
//! reactor, the poller, the watchdog, reset and the vfio-user DMA service
//! thread enter a signalling section with [`SignallingSection::enter`]; every
//! blocking wait and every reservation lock calls [`assert_may_block`] first,
//! which panics in debug builds when called inside a section. The marker
//! itself is kept in every build (one thread-local counter), so that tests
//! built with optimisations can still check the path, e.g. with an allocator
//! that counts allocations made inside a section.

#[cfg(loom)]
#[allow(unused_imports)] // a shim: not every build uses every type
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(loom)]
pub(crate) use loom::sync::{
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(not(loom))]
#[allow(unused_imports)] // a shim: not every build uses every type
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
#[cfg(not(loom))]
pub(crate) use std::sync::{
    Arc, Condvar, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard,
};

#[cfg(not(loom))]
std::thread_local! {
    static SIGNALLING_DEPTH: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// Marks the current thread as inside the signalling path until dropped (F10).
#[must_use = "the section ends when the guard is dropped"]
pub struct SignallingSection {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl SignallingSection {
    /// Enter a signalling section on this thread. Sections nest.
    pub fn enter() -> SignallingSection {
        #[cfg(not(loom))]
        SIGNALLING_DEPTH.with(|d| d.set(d.get() + 1));
        SignallingSection {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Whether the current thread is inside a signalling section (always
    /// `false` under loom).
    pub fn active() -> bool {
        #[cfg(not(loom))]
        return SIGNALLING_DEPTH.with(|d| d.get() > 0);
        #[cfg(loom)]
        false
    }
}

impl Drop for SignallingSection {
    fn drop(&mut self) {
        #[cfg(not(loom))]
        SIGNALLING_DEPTH.with(|d| d.set(d.get() - 1));
    }
}

/// Panics (debug builds) if the current thread is in a signalling section:
/// called before every fence wait and every reservation lock (F10, R6).
#[track_caller]
pub fn assert_may_block(what: &'static str) {
    if cfg!(debug_assertions) && SignallingSection::active() {
        panic!("F10 violated: {what} inside a signalling section");
    }
}
