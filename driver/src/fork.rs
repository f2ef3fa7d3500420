//! Fork safety (C10).
//!
//! A forked child inherits copies of every fdma handle but none of the
//! threads behind them, and its DMA memory is gone (driver buffers are
//! `MADV_DONTFORK`). An `atfork` child handler marks the process as a forked
//! child; from then on every call on an inherited handle fails with
//! [`crate::Error::Forked`] and drops do no I/O: no protocol messages on the
//! parent's socket, no unmaps of the parent's IOVAs, no joins of threads
//! that do not exist. The inherited handles are leaked instead.

#![cfg_attr(loom, allow(dead_code))]

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

static FORKED: AtomicBool = AtomicBool::new(false);
static INSTALL: Once = Once::new();

extern "C" fn child_after_fork() {
    // Async-signal-safe: one atomic store.
    FORKED.store(true, Ordering::SeqCst);
}

/// Install the atfork handler (idempotent). Called by every transport
/// connect, DMA space and device open, before any handle exists that a
/// child could inherit.
pub(crate) fn install() {
    INSTALL.call_once(|| {
        // SAFETY: registering a handler that only performs an atomic store;
        // pthread_atfork has no other preconditions.
        let rc = unsafe { libc::pthread_atfork(None, None, Some(child_after_fork)) };
        if rc != 0 {
            log::error!("pthread_atfork failed ({rc}): forked children are not poisoned");
        }
    });
}

/// Whether this process is a child forked after fdma handles were created.
pub fn in_forked_child() -> bool {
    FORKED.load(Ordering::Relaxed)
}
