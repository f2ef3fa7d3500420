//! Reservation objects (contracts R1–R6): the fences of one buffer or
//! registration, and what each use of it must wait for.
//!
//! A [`Resv`] holds the unsignalled fences of the jobs that use a piece of
//! memory, each with a [`Usage`]. A submit reserves slots before its point
//! of no return ([`Resv::reserve`]) and adds its job's fence into them once
//! the job is on the hardware ([`Reserved::add`]). Anyone about to touch the
//! memory asks, by [`Purpose`], which fences to wait for ([`Resv::fences_for`],
//! [`Resv::wait`]).
//!
//! # The rules
//!
//! * **R1 Four ordered usages**, [`Usage::Kernel`] < [`Usage::Write`] <
//!   [`Usage::Read`] < [`Usage::Bookkeep`]. A query for usage `u` returns
//!   every fence of usage `<= u`. Adding a fence that is already held with a
//!   different usage keeps the later of the two: a fence is promoted, never
//!   demoted.
//! * **R2 Ask by purpose.** The API answers only "what must I wait for
//!   before this [`Purpose`]": CPU and device reads wait for Kernel and
//!   Write fences; CPU and device writes for Kernel, Write and Read fences
//!   (never overwrite memory the device is still reading); invalidation,
//!   unmap, unpin and IOVA reuse for all of them. There is no call that
//!   returns only Write or only Read fences, so Kernel fences cannot be
//!   skipped.
//! * **R3 Reserve, then add.** [`Resv::reserve`] may allocate (and prunes
//!   signalled fences); it is called before the job reaches the hardware.
//!   [`Reserved::add`] then pushes into reserved capacity: it cannot fail
//!   and does not allocate. Invariant: the fence vector's capacity is at
//!   least its length plus every slot reserved and not yet used.
//! * **R4 Commit is atomic with cache validation.** Not here: the
//!   registration cache calls [`Reserved::add`] under its own read-side
//!   lock, together with its validity check. The hook is that `add` cannot
//!   fail or allocate, so it can run under that lock.
//! * **R5 Memory-management fences are always waited.** CPU reads and
//!   writes, unmap, unpin and IOVA reuse go through [`Resv::wait`] with the
//!   matching purpose. Only completion matters to memory: a fence that
//!   signalled an error does not make the wait fail.
//! * **R6 Locks.** The completion, watchdog and reset paths never take a
//!   reservation lock: every acquisition calls [`assert_may_block`], which
//!   panics in debug builds inside a signalling section (F10). No call waits on a
//!   fence while holding the lock: [`Resv::wait`] clones the fences under
//!   the lock, drops it, then waits. Nothing here holds two reservation
//!   locks; code that locks several must take them in one global order
//!   (e.g. by address).

use crate::fence::{lock, wait_all, Fence, Wait};
use crate::sync::{assert_may_block, Mutex, MutexGuard};
use std::fmt;
use std::time::Duration;

/// Fence usages, ordered (R1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Usage {
    /// Driver-internal DMA.
    Kernel,
    /// A job the device writes the buffer with.
    Write,
    /// A job the device reads the buffer with.
    Read,
    /// Explicitly synchronised use.
    Bookkeep,
}

/// What the caller is about to do (R2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// The CPU reads the buffer.
    CpuRead,
    /// The CPU writes the buffer.
    CpuWrite,
    /// The device reads the buffer.
    DeviceRead,
    /// The device writes the buffer.
    DeviceWrite,
    /// The buffer is unmapped, unpinned or its IOVA reused.
    Invalidate,
}

impl Purpose {
    /// The latest usage this purpose waits for: it waits for every fence of
    /// this usage or an earlier one (R1, R2). Reads: [`Usage::Write`];
    /// writes: [`Usage::Read`]; invalidation: [`Usage::Bookkeep`].
    pub fn wait_usage(self) -> Usage {
        match self {
            Purpose::CpuRead | Purpose::DeviceRead => Usage::Write,
            Purpose::CpuWrite | Purpose::DeviceWrite => Usage::Read,
            Purpose::Invalidate => Usage::Bookkeep,
        }
    }
}

/// The fences of one buffer or registration.
pub struct Resv {
    inner: Mutex<Inner>,
    /// Held by a submitter from its implicit-sync wait to the moment its
    /// fence is added (R2 made atomic with the commit): two submits that
    /// use the same buffer cannot both pass the wait before either adds its
    /// fence. Never taken by the completion path (R6). Several are taken in
    /// one global order: by the reservation's address.
    submit: Mutex<()>,
}

/// A submitter's hold on the reservations of one job's buffers, taken in
/// address order (R6). Dropping it releases them.
pub struct SubmitGuards<'a> {
    _guards: Vec<MutexGuard<'a, ()>>,
}

impl std::fmt::Debug for SubmitGuards<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SubmitGuards")
            .field("held", &self._guards.len())
            .finish()
    }
}

/// Take the submit locks of `resvs` in one global order (their addresses),
/// each once. Blocks (not on the signalling path: asserts so).
pub fn lock_for_submit<'a>(resvs: &[&'a Resv]) -> SubmitGuards<'a> {
    assert_may_block("reservation submit lock");
    let mut order: Vec<&'a Resv> = resvs.to_vec();
    order.sort_by_key(|r| *r as *const Resv as usize);
    order.dedup_by_key(|r| *r as *const Resv as usize);
    SubmitGuards {
        _guards: order.iter().map(|r| lock(&r.submit)).collect(),
    }
}

struct Inner {
    /// Held fences, each once, with its usage (R1). Unordered.
    fences: Vec<(Fence, Usage)>,
    /// Slots reserved by live [`Reserved`]s and not used yet (R3).
    reserved: usize,
}

/// Slots reserved on a [`Resv`] (R3). Unused slots are released on drop.
#[derive(Debug)]
pub struct Reserved<'a> {
    resv: &'a Resv,
    left: usize,
}

impl Default for Resv {
    fn default() -> Resv {
        Resv {
            inner: Mutex::new(Inner {
                fences: Vec::new(),
                reserved: 0,
            }),
            submit: Mutex::new(()),
        }
    }
}

impl Resv {
    /// Empty.
    pub fn new() -> Resv {
        Resv::default()
    }

    /// Take the lock. R6/F10: never inside a signalling section.
    #[track_caller]
    fn lock(&self) -> MutexGuard<'_, Inner> {
        assert_may_block("reservation lock");
        lock(&self.inner)
    }

    /// Reserve room for `n` fences; may allocate (R3). Call before the
    /// point of no return. Prunes signalled fences first; they are dropped
    /// after the lock is released.
    #[track_caller]
    pub fn reserve(&self, n: usize) -> Reserved<'_> {
        let mut inner = self.lock();
        let mut pruned = Vec::new();
        let mut i = 0;
        while i < inner.fences.len() {
            if inner.fences[i].0.is_signalled() {
                pruned.push(inner.fences.swap_remove(i));
            } else {
                i += 1;
            }
        }
        inner.reserved += n;
        // R3 invariant: capacity >= len + reserved.
        let want = inner.reserved;
        inner.fences.reserve(want);
        drop(inner);
        drop(pruned);
        Reserved {
            resv: self,
            left: n,
        }
    }

    /// Fences `purpose` must wait for (R2): the unsignalled fences of usage
    /// `<= purpose.wait_usage()`, cloned under the lock.
    #[track_caller]
    pub fn fences_for(&self, purpose: Purpose) -> Vec<Fence> {
        let max = purpose.wait_usage();
        let inner = self.lock();
        inner
            .fences
            .iter()
            .filter(|(f, u)| *u <= max && !f.is_signalled())
            .map(|(f, _)| f.clone())
            .collect()
    }

    /// Wait for the fences `purpose` must wait for (R2, R5), never while
    /// holding the lock (R6): they are collected under the lock, which is
    /// released before waiting. Fence errors do not fail the wait: for
    /// memory only completion matters.
    ///
    /// # Errors
    ///
    /// [`crate::Error::Timeout`] if `timeout` (`None`: no bound; zero:
    /// poll) passes first.
    ///
    /// # Panics
    ///
    /// In debug builds, inside a signalling section (F10, R6).
    #[track_caller]
    pub fn wait(&self, purpose: Purpose, timeout: Option<Duration>) -> crate::Result<()> {
        assert_may_block("reservation wait");
        let fences = self.fences_for(purpose); // R6: the lock is released here
        match wait_all(&fences, timeout) {
            Wait::Signalled(_) => Ok(()),
            Wait::TimedOut => Err(crate::Error::Timeout(timeout.unwrap_or_default())),
        }
    }

    /// Number of unsignalled fences held.
    #[track_caller]
    pub fn pending(&self) -> usize {
        let inner = self.lock();
        inner
            .fences
            .iter()
            .filter(|(f, _)| !f.is_signalled())
            .count()
    }
}

impl fmt::Debug for Resv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // try_lock: formatting must never block (or assert) on the lock.
        let mut d = f.debug_struct("Resv");
        match self.inner.try_lock() {
            Ok(inner) => d
                .field("fences", &inner.fences.len())
                .field("reserved", &inner.reserved),
            Err(_) => d.field("fences", &format_args!("<locked>")),
        };
        d.finish()
    }
}

impl Reserved<'_> {
    /// Add a fence into a reserved slot; cannot fail or allocate (R3).
    ///
    /// A fence already held keeps the later of its usages (R1: promoted,
    /// never demoted) and uses no slot. A signalled fence is not added.
    /// Adding more new fences than were reserved is a bug (debug assertion;
    /// release builds then may allocate).
    #[track_caller]
    pub fn add(&mut self, fence: &Fence, usage: Usage) {
        let mut inner = self.resv.lock();
        if let Some(held) = inner.fences.iter_mut().find(|(f, _)| f.same(fence)) {
            held.1 = held.1.max(usage); // R1: promote, never demote
            return;
        }
        if fence.is_signalled() {
            return;
        }
        debug_assert!(self.left > 0, "R3: Reserved::add without a reserved slot");
        if self.left > 0 {
            self.left -= 1;
            inner.reserved -= 1;
        }
        debug_assert!(inner.fences.len() < inner.fences.capacity());
        inner.fences.push((fence.clone(), usage));
    }

    /// Slots still reserved and unused.
    pub fn remaining(&self) -> usize {
        self.left
    }
}

impl Drop for Reserved<'_> {
    fn drop(&mut self) {
        if self.left > 0 {
            let mut inner = self.resv.lock();
            inner.reserved -= self.left;
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::error::FenceError;
    use crate::fence::{Signaller, Timeline};
    use std::sync::mpsc;
    use std::thread;
    use std::time::Instant;

    const LIVENESS: Duration = Duration::from_secs(30);

    fn seqnos(fences: &[Fence]) -> Vec<u64> {
        let mut v: Vec<u64> = fences.iter().map(Fence::seqno).collect();
        v.sort_unstable();
        v
    }

    /// One fence per usage, seqno 1 = Kernel … 4 = Bookkeep.
    fn one_per_usage(resv: &Resv) -> Vec<Signaller> {
        let tl = Timeline::new(0);
        let usages = [Usage::Kernel, Usage::Write, Usage::Read, Usage::Bookkeep];
        let mut slots = resv.reserve(usages.len());
        usages
            .iter()
            .map(|&u| {
                let (f, s) = tl.create();
                slots.add(&f, u);
                s
            })
            .collect()
    }

    #[test]
    fn r1_usages_ordered_and_promoted_never_demoted() {
        assert!(Usage::Kernel < Usage::Write);
        assert!(Usage::Write < Usage::Read);
        assert!(Usage::Read < Usage::Bookkeep);

        let tl = Timeline::new(0);
        let resv = Resv::new();
        let (a, _sa) = tl.create();
        let (b, _sb) = tl.create();
        let mut slots = resv.reserve(2);
        slots.add(&a, Usage::Write);
        assert_eq!(seqnos(&resv.fences_for(Purpose::CpuRead)), vec![1]);
        // Promotion Write -> Read: a read no longer waits for it, a write does.
        slots.add(&a, Usage::Read);
        assert_eq!(slots.remaining(), 1, "a held fence uses no new slot");
        assert!(resv.fences_for(Purpose::CpuRead).is_empty());
        assert_eq!(seqnos(&resv.fences_for(Purpose::CpuWrite)), vec![1]);
        // No demotion: adding it again as Kernel keeps Read.
        slots.add(&a, Usage::Kernel);
        assert!(resv.fences_for(Purpose::DeviceRead).is_empty());
        assert_eq!(seqnos(&resv.fences_for(Purpose::DeviceWrite)), vec![1]);
        slots.add(&b, Usage::Bookkeep);
        drop(slots);
        assert_eq!(resv.pending(), 2, "each fence held once");
        assert_eq!(seqnos(&resv.fences_for(Purpose::Invalidate)), vec![1, 2]);
    }

    #[test]
    fn r2_purpose_selects_fence_sets() {
        let resv = Resv::new();
        let _sigs = one_per_usage(&resv);
        // Kernel fences are in every set (no call skips them).
        assert_eq!(seqnos(&resv.fences_for(Purpose::CpuRead)), vec![1, 2]);
        assert_eq!(seqnos(&resv.fences_for(Purpose::DeviceRead)), vec![1, 2]);
        assert_eq!(seqnos(&resv.fences_for(Purpose::CpuWrite)), vec![1, 2, 3]);
        assert_eq!(
            seqnos(&resv.fences_for(Purpose::DeviceWrite)),
            vec![1, 2, 3]
        );
        assert_eq!(
            seqnos(&resv.fences_for(Purpose::Invalidate)),
            vec![1, 2, 3, 4]
        );
        assert_eq!(Purpose::CpuRead.wait_usage(), Usage::Write);
        assert_eq!(Purpose::DeviceWrite.wait_usage(), Usage::Read);
        assert_eq!(Purpose::Invalidate.wait_usage(), Usage::Bookkeep);
    }

    #[test]
    fn r2_signalled_fences_are_not_returned() {
        let resv = Resv::new();
        let sigs = one_per_usage(&resv);
        sigs[0].signal(Ok(())).unwrap();
        sigs[2].signal(Ok(())).unwrap();
        assert_eq!(seqnos(&resv.fences_for(Purpose::CpuWrite)), vec![2]);
        assert_eq!(resv.pending(), 2);
    }

    #[test]
    fn r3_add_into_reserved_capacity() {
        let tl = Timeline::new(0);
        let resv = Resv::new();
        let pairs: Vec<_> = (0..8).map(|_| tl.create()).collect();
        let mut s1 = resv.reserve(3);
        let mut s2 = resv.reserve(5);
        let cap = |r: &Resv| {
            let i = r.inner.lock().unwrap();
            (i.fences.len(), i.fences.capacity(), i.reserved)
        };
        let (len, capacity, reserved) = cap(&resv);
        assert_eq!((len, reserved), (0, 8));
        assert!(capacity >= 8);
        // Interleaved adds of two reservations never grow the vector.
        for (i, (f, _)) in pairs.iter().enumerate() {
            if i % 2 == 0 && s1.remaining() > 0 {
                s1.add(f, Usage::Write);
            } else {
                s2.add(f, Usage::Read);
            }
            assert_eq!(cap(&resv).1, capacity, "add {i} reallocated");
        }
        assert_eq!((s1.remaining(), s2.remaining()), (0, 0));
        drop((s1, s2));
        assert_eq!(cap(&resv), (8, capacity, 0));
        // Unused slots are released on drop.
        let s3 = resv.reserve(4);
        assert_eq!(cap(&resv).2, 4);
        drop(s3);
        assert_eq!(cap(&resv).2, 0);
        // Reserving prunes signalled fences.
        for (_, s) in &pairs[..6] {
            s.signal(Ok(())).unwrap();
        }
        drop(resv.reserve(0));
        assert_eq!(cap(&resv).0, 2);
        assert_eq!(resv.pending(), 2);
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "R3")]
    fn r3_add_without_reserved_slot_panics() {
        let tl = Timeline::new(0);
        let resv = Resv::new();
        let (f, _s) = tl.create();
        resv.reserve(0).add(&f, Usage::Write);
    }

    #[test]
    fn r5_cpu_write_waits_for_read_fence() {
        let tl = Timeline::new(0);
        let resv = Resv::new();
        let (reader, sig) = tl.create();
        resv.reserve(1).add(&reader, Usage::Read);
        // A CPU read need not wait for the device reading the buffer...
        resv.wait(Purpose::CpuRead, Some(Duration::ZERO)).unwrap();
        // ...a CPU write must.
        assert!(matches!(
            resv.wait(Purpose::CpuWrite, Some(Duration::from_millis(10))),
            Err(crate::Error::Timeout(_))
        ));
        assert!(!reader.is_signalled(), "a timeout changes nothing");
        let signaller = thread::spawn(move || {
            thread::sleep(Duration::from_millis(50));
            // Only completion matters to memory: an error still releases it.
            sig.signal(Err(FenceError::Cancelled {
                channel: 0,
                seqno: 1,
            }))
            .unwrap();
            sig
        });
        let t0 = Instant::now();
        resv.wait(Purpose::CpuWrite, Some(LIVENESS)).unwrap();
        assert!(
            reader.is_signalled(),
            "returned before the Read fence signalled"
        );
        assert!(t0.elapsed() < LIVENESS);
        drop(signaller.join().unwrap());
        assert_eq!(resv.pending(), 0);
    }

    #[test]
    fn r6_wait_releases_the_lock() {
        let tl = Timeline::new(0);
        let resv = Resv::new();
        let (busy, sig) = tl.create();
        resv.reserve(1).add(&busy, Usage::Write);
        let (tx, rx) = mpsc::channel();
        thread::scope(|s| {
            let waiter = s.spawn(|| {
                tx.send(()).unwrap();
                resv.wait(Purpose::Invalidate, Some(LIVENESS))
            });
            rx.recv().unwrap();
            thread::sleep(Duration::from_millis(20)); // let it block
                                                      // The waiter is blocked on the fence; the lock is free.
            let (other, other_sig) = tl.create();
            let mut slots = resv.reserve(1);
            slots.add(&other, Usage::Read);
            drop(slots);
            assert_eq!(resv.pending(), 2);
            assert_eq!(resv.fences_for(Purpose::CpuRead).len(), 1);
            assert!(!waiter.is_finished());
            sig.signal(Ok(())).unwrap();
            waiter.join().unwrap().unwrap();
            drop(other_sig);
        });
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "F10 violated: reservation lock inside a signalling section")]
    fn r6_reservation_lock_in_signalling_section_panics() {
        let resv = Resv::new();
        let _section = crate::sync::SignallingSection::enter();
        let _ = resv.pending();
    }

    #[cfg(debug_assertions)]
    #[test]
    #[should_panic(expected = "F10 violated: reservation wait inside a signalling section")]
    fn r6_reservation_wait_in_signalling_section_panics() {
        let resv = Resv::new();
        let _section = crate::sync::SignallingSection::enter();
        let _ = resv.wait(Purpose::CpuRead, None);
    }
}
