//! F10: the signal path does not allocate or free heap memory.
//!
//! An integration test so that its counting `#[global_allocator]` is this
//! binary's only. The allocator counts the allocations, reallocations and
//! frees made by the current thread while its thread-local flag is on; the
//! tests turn it on around `signal()` (and `Reserved::add`, R3) with every
//! kind of observer attached and assert the count is zero.
//!
//! Run without `--release` (`cargo test -p fdma --test fence_no_alloc`) to
//! also exercise the debug-build `assert_may_block` checks inside the
//! signalling section. Not built under `cfg(loom)` (loom models run
//! in-crate, and this needs the std primitives).

#![cfg(not(loom))]

use fdma::error::FenceError;
use fdma::fence::{wait_any, Fence, Status, Timeline, Wait};
use fdma::resv::{Purpose, Resv, Usage};
use fdma::sync::SignallingSection;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::Duration;

struct Counting;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    // try_with: the allocator may run during thread-local teardown.
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = COUNT.try_with(|c| c.set(c.get() + 1));
        }
    });
}

// SAFETY: every method forwards to the system allocator with the caller's
// arguments unchanged; `note` only touches const-initialised thread-locals,
// which never allocate.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::alloc_zeroed`.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note();
        // SAFETY: forwarded contract of `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Heap operations `f` makes on this thread.
fn heap_ops<R>(f: impl FnOnce() -> R) -> (R, usize) {
    COUNT.with(|c| c.set(0));
    COUNTING.with(|on| on.set(true));
    let r = f();
    COUNTING.with(|on| on.set(false));
    (r, COUNT.with(|c| c.get()))
}

const LIVENESS: Duration = Duration::from_secs(30);

/// Attach every kind of observer to `fence`: blocked waiters (single,
/// `wait_any`, bounded), exported fds, the armed timeline fd, callbacks
/// that query the fence. Returns the threads and what must stay alive.
fn observe(
    tl: &Timeline,
    fence: &Fence,
    other: &Fence,
    ran: &Arc<AtomicUsize>,
) -> (Vec<thread::JoinHandle<Status>>, Vec<std::os::fd::OwnedFd>) {
    let mut waiters = Vec::new();
    let started = Arc::new(Barrier::new(4));
    for kind in 0..3 {
        let (f, o, started) = (fence.clone(), other.clone(), Arc::clone(&started));
        waiters.push(thread::spawn(move || {
            started.wait();
            match kind {
                0 => f.wait(),
                1 => wait_any(&[o, f], Some(LIVENESS)).expect("timed out").1,
                _ => match f.wait_timeout(LIVENESS) {
                    Wait::Signalled(s) => s,
                    Wait::TimedOut => panic!("timed out"),
                },
            }
        }));
    }
    started.wait();
    // Let them block (best effort; the test is valid either way).
    thread::sleep(Duration::from_millis(50));
    let fds = vec![fence.export_fd().unwrap(), fence.export_fd().unwrap()];
    tl.arm(fence.seqno());
    for _ in 0..3 {
        let (f, ran) = (fence.clone(), Arc::clone(ran));
        fence
            .on_signal(Box::new(move |st| {
                assert_eq!(f.status().as_ref(), Some(st));
                ran.fetch_add(1, Ordering::SeqCst);
            }))
            .unwrap();
    }
    (waiters, fds)
}

#[test]
fn f10_signal_does_not_allocate() {
    let tl = Timeline::new(1);
    let (other, _other_sig) = tl.create();
    let statuses = [
        Ok(()),
        Err(FenceError::Device {
            channel: 1,
            seqno: 3,
            code: 2,
            index: 9,
        }),
    ];
    for status in statuses {
        let (fence, sig) = tl.create();
        let ran = Arc::new(AtomicUsize::new(0));
        let (waiters, _fds) = observe(&tl, &fence, &other, &ran);

        let (res, ops) = heap_ops(|| {
            let _section = SignallingSection::enter();
            sig.signal(status)
        });
        assert_eq!(res, Ok(()));
        assert_eq!(ops, 0, "signal() made {ops} heap operations (F10)");
        assert_eq!(ran.load(Ordering::SeqCst), 3);
        for w in waiters {
            assert_eq!(w.join().unwrap(), status);
        }
        // The signaller goes to the channel's reclaim queue in the driver;
        // here it is simply dropped after the measurement.
        drop(sig);
    }
}

#[test]
fn f10_cancel_by_drop_does_not_allocate() {
    let tl = Timeline::new(2);
    let (other, _other_sig) = tl.create();
    let (fence, sig) = tl.create();
    let ran = Arc::new(AtomicUsize::new(0));
    let (waiters, _fds) = observe(&tl, &fence, &other, &ran);
    let cancelled = Err(FenceError::Cancelled {
        channel: 2,
        seqno: fence.seqno(),
    });
    // In a signalling section the drop does not log; the fence keeps the
    // storage alive, so dropping the signaller frees nothing.
    let ((), ops) = heap_ops(|| {
        let _section = SignallingSection::enter();
        drop(sig);
    });
    assert_eq!(
        ops, 0,
        "dropping an unsignalled signaller made {ops} heap operations"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 3);
    for w in waiters {
        assert_eq!(w.join().unwrap(), cancelled);
    }
}

#[test]
fn f10_out_of_order_completion_does_not_allocate() {
    let tl = Timeline::new(3);
    let pairs: Vec<_> = (0..64).map(|_| tl.create()).collect();
    tl.arm(64);
    let ((), ops) = heap_ops(|| {
        let _section = SignallingSection::enter();
        for (_, s) in pairs.iter().rev() {
            s.signal(Ok(())).unwrap();
        }
    });
    assert_eq!(ops, 0);
    assert_eq!(tl.completed(), 64);
}

#[test]
fn r3_add_into_reserved_slots_does_not_allocate() {
    let tl = Timeline::new(0);
    let resv = Resv::new();
    let (a, _sa) = tl.create();
    let (b, _sb) = tl.create();
    let (c, _sc) = tl.create();
    let mut slots = resv.reserve(2);
    let ((), ops) = heap_ops(|| {
        slots.add(&a, Usage::Write);
        slots.add(&b, Usage::Read);
        slots.add(&a, Usage::Read); // promotion: no slot
    });
    assert_eq!(ops, 0, "Reserved::add made {ops} heap operations (R3)");
    drop(slots);
    let mut slots = resv.reserve(1);
    let ((), ops) = heap_ops(|| slots.add(&c, Usage::Kernel));
    assert_eq!(ops, 0);
    assert_eq!(resv.fences_for(Purpose::Invalidate).len(), 3);
}

#[cfg(debug_assertions)]
#[test]
#[should_panic(expected = "F10 violated")]
fn f10_assert_may_block_panics_in_signalling_section() {
    let _section = SignallingSection::enter();
    fdma::sync::assert_may_block("test");
}

/// The allocator really counts (guards against a vacuous pass).
#[test]
fn counting_allocator_counts() {
    let (v, ops) = heap_ops(|| vec![1u8; 16]);
    assert!(ops >= 1);
    drop(v);
}
