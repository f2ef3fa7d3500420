//! The fence storage and its two handles: [`Fence`] (waiters) and
//! [`Signaller`] (the unique signalling side).

use super::timeline::Shared;
use super::wait::Waker;
use super::{deadline, lock, sys, AlreadySignalled, Callback, Status, Wait};
use crate::error::FenceError;
use crate::sync::{assert_may_block, Arc, AtomicBool, Condvar, Mutex, Ordering, SignallingSection};
use std::fmt;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// The storage of one fence, shared by its [`Fence`] clones and its
/// [`Signaller`]. Allocated by `Timeline::create` (F6).
pub(super) struct FenceInner {
    pub(super) timeline: Arc<Shared>,
    pub(super) seqno: u64,
    /// Set, with `State::status`, under `state`'s lock; read lock-free by
    /// `is_signalled` (F7: O(1)).
    signalled: AtomicBool,
    /// A callback of this fence panicked (the panic was contained).
    callback_panicked: AtomicBool,
    /// The fence's own leaf lock (F10: never held across an allocation, a
    /// blocking call or a callback).
    state: Mutex<State>,
    /// Single-fence waiters sleep here.
    cv: Condvar,
}

/// What the fence's lock protects.
struct State {
    /// `None` while pending; written once (F1, F2).
    status: Option<Status>,
    /// Registered callbacks (F9). Run, never dropped, by the signal; freed
    /// by the signaller's drop or with the fence storage (F10).
    callbacks: Vec<Callback>,
    /// `wait_any` waiters currently registered on this fence.
    wakers: Vec<Arc<Waker>>,
    /// Our ends of the exported eventfds (F8), closed by the signaller's
    /// drop or with the storage.
    fds: Vec<OwnedFd>,
}

impl FenceInner {
    pub(super) fn new(timeline: Arc<Shared>, seqno: u64) -> FenceInner {
        FenceInner {
            timeline,
            seqno,
            signalled: AtomicBool::new(false),
            callback_panicked: AtomicBool::new(false),
            state: Mutex::new(State {
                status: None,
                callbacks: Vec::new(),
                wakers: Vec::new(),
                fds: Vec::new(),
            }),
            cv: Condvar::new(),
        }
    }

    pub(super) fn channel(&self) -> u8 {
        self.timeline.channel
    }

    /// F7: O(1), lock-free. The own flag is set before the timeline counter
    /// advances past this seqno, so the counter is only a shortcut.
    pub(super) fn is_signalled(&self) -> bool {
        self.signalled.load(Ordering::Acquire) || self.seqno <= self.timeline.completed()
    }

    pub(super) fn status(&self) -> Option<Status> {
        if !self.signalled.load(Ordering::Acquire) {
            return None;
        }
        lock(&self.state).status
    }

    /// The signal (F1, F2, F8, F9, F10). No allocation, no free, no log, no
    /// wait other than the leaf locks described in the module docs.
    pub(super) fn signal(&self, status: Status) -> Result<(), AlreadySignalled> {
        // F1, F2: the winner is decided, and the status published, in one
        // critical section; nobody writes `status` again.
        let mut st = lock(&self.state);
        if st.status.is_some() {
            return Err(AlreadySignalled);
        }
        st.status = Some(status);
        self.signalled.store(true, Ordering::Release);
        drop(st);

        // F7, F8: advance the completed counter; the timeline fd becomes
        // readable if this was its target. Done before waking anyone, so a
        // woken waiter sees `completed()` up to date.
        self.timeline.complete(self.seqno);

        // From here on nobody adds callbacks, wakers or fds (they all check
        // `status` under this lock first), so the signaller may take the
        // callbacks out and run them unlocked.
        let mut st = lock(&self.state);
        self.cv.notify_all();
        for w in &st.wakers {
            w.wake();
        }
        // F8: status visible before the per-fence fds become readable.
        for fd in &st.fds {
            sys::notify(fd.as_fd());
        }
        // `take` leaves `Vec::new()`, which owns no memory: no allocation.
        let callbacks = std::mem::take(&mut st.callbacks);
        drop(st);

        // F9: callbacks run on this thread, after the status is visible,
        // unlocked (so they may query the fence), exactly once. They are put
        // back afterwards, even on a panic, and freed off the signalling path
        // (when the signaller is dropped, or with the storage) (F10).
        let mut put_back = PutBack {
            fence: self,
            callbacks,
        };
        for cb in put_back.callbacks.iter_mut() {
            // A panicking callback must not take the signalling thread (the
            // reactor) down with it: every other fence depends on it (F3).
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cb(&status)));
            if r.is_err() {
                self.callback_panicked.store(true, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Free the callbacks and close our ends of the exported fds, once the
    /// signal is over (called by the signaller's drop, off the signalling
    /// path). They are dropped after the lock is released.
    fn release_after_signal(&self) {
        let mut st = lock(&self.state);
        debug_assert!(st.status.is_some());
        let callbacks = std::mem::take(&mut st.callbacks);
        let fds = std::mem::take(&mut st.fds);
        drop(st);
        drop(callbacks);
        drop(fds);
    }

    /// Wait until signalled or `deadline` (None: no deadline). Returns the
    /// status, or `None` on timeout. The caller has asserted it may block.
    pub(super) fn wait_until(&self, deadline: Option<Instant>) -> Option<Status> {
        let mut st = lock(&self.state);
        loop {
            if let Some(s) = st.status {
                return Some(s);
            }
            st = match deadline {
                None => self
                    .cv
                    .wait(st)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return None;
                    }
                    self.cv
                        .wait_timeout(st, d - now)
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .0
                }
            };
        }
    }

    /// Push `item` onto one of the vectors of `State` unless the fence is
    /// signalled, in which case `item` is handed back. The vector is grown
    /// outside the lock and swapped in, so the lock is never held across an
    /// allocation or a free (F10).
    fn push_unless_signalled<T>(
        &self,
        item: T,
        field: fn(&mut State) -> &mut Vec<T>,
    ) -> Result<(), T> {
        let mut spare: Vec<T> = Vec::new();
        loop {
            let mut st = lock(&self.state);
            if st.status.is_some() {
                drop(st);
                return Err(item);
            }
            let v = field(&mut st);
            if v.len() == v.capacity() {
                if spare.capacity() > v.len() {
                    spare.append(v);
                    std::mem::swap(v, &mut spare);
                } else {
                    let want = (v.len() * 2).max(2);
                    drop(st);
                    spare = Vec::with_capacity(want);
                    continue;
                }
            }
            v.push(item);
            drop(st);
            // The old buffer, if swapped out, is freed here, unlocked.
            return Ok(());
        }
    }

    pub(super) fn add_waker(&self, w: &Arc<Waker>) -> Result<(), AlreadySignalled> {
        self.push_unless_signalled(Arc::clone(w), |s| &mut s.wakers)
            .map_err(|_| AlreadySignalled)
    }

    /// How many `wait_any` waiters are registered (tests).
    #[cfg(all(test, not(loom)))]
    pub(super) fn registered_wakers(&self) -> usize {
        lock(&self.state).wakers.len()
    }

    pub(super) fn remove_waker(&self, w: &Arc<Waker>) {
        let mut st = lock(&self.state);
        let removed = st
            .wakers
            .iter()
            .position(|x| Arc::ptr_eq(x, w))
            .map(|i| st.wakers.swap_remove(i));
        drop(st);
        drop(removed);
    }
}

/// Puts the callbacks back into the fence after they ran (or one panicked),
/// so they are freed later, not on the signal path (F10).
struct PutBack<'a> {
    fence: &'a FenceInner,
    callbacks: Vec<Callback>,
}

impl Drop for PutBack<'_> {
    fn drop(&mut self) {
        let mut st = lock(&self.fence.state);
        // What is swapped out is the `Vec::new()` left by `take` (nothing is
        // added after the signal): dropping it frees nothing.
        std::mem::swap(&mut st.callbacks, &mut self.callbacks);
    }
}

/// A waitable handle on one job's completion. Cheap to clone.
///
/// A fence is (timeline, seqno) (F7). It does not keep the job's resources;
/// it keeps only the fence storage (status, callbacks, exported fds).
#[derive(Clone)]
pub struct Fence {
    pub(super) inner: Arc<FenceInner>,
}

impl Fence {
    pub(super) fn from_inner(inner: Arc<FenceInner>) -> Fence {
        Fence { inner }
    }

    /// Whether `self` and `other` are handles on the same fence.
    pub(crate) fn same(&self, other: &Fence) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    /// Channel of the fence.
    pub fn channel(&self) -> u8 {
        self.inner.channel()
    }

    /// Seqno on its channel's timeline.
    pub fn seqno(&self) -> u64 {
        self.inner.seqno
    }

    /// Status if signalled (F2: once `Some`, always the same).
    pub fn status(&self) -> Option<Status> {
        self.inner.status()
    }

    /// Whether signalled. O(1) and lock-free (F7).
    pub fn is_signalled(&self) -> bool {
        self.inner.is_signalled()
    }

    /// Whether one of this fence's callbacks panicked. The panic is caught
    /// where the callback runs, so the signalling thread (the reactor) lives
    /// on; the fence's status is unaffected.
    pub fn callback_panicked(&self) -> bool {
        self.inner.callback_panicked.load(Ordering::Relaxed)
    }

    /// Wait up to `timeout` (F5). A zero timeout polls and does not block; a
    /// timeout leaves the fence unchanged.
    ///
    /// # Panics
    ///
    /// In debug builds, inside a signalling section, unless `timeout` is
    /// zero (F10); also when the fence is already signalled, so that a
    /// latent blocking wait is caught deterministically.
    #[track_caller]
    pub fn wait_timeout(&self, timeout: Duration) -> Wait {
        if timeout.is_zero() {
            return match self.status() {
                Some(s) => Wait::Signalled(s),
                None => Wait::TimedOut,
            };
        }
        assert_may_block("fence wait"); // F10
        match self.inner.wait_until(deadline(Some(timeout))) {
            Some(s) => Wait::Signalled(s),
            None => Wait::TimedOut,
        }
    }

    /// Wait until signalled. Unbounded here: F3 (the channel's watchdog)
    /// bounds it.
    ///
    /// # Panics
    ///
    /// In debug builds, inside a signalling section (F10).
    #[track_caller]
    pub fn wait(&self) -> Status {
        assert_may_block("fence wait"); // F10
        match self.inner.wait_until(None) {
            Some(s) => s,
            None => unreachable!("an unbounded wait returned without a status"),
        }
    }

    /// Register a callback (F9). It runs exactly once, on the signalling
    /// thread, after the status is visible, and must not block, allocate or
    /// panic. On a signalled fence this returns [`AlreadySignalled`] and the
    /// callback is not run (it is dropped here, on the caller's thread).
    pub fn on_signal(&self, cb: Callback) -> Result<(), AlreadySignalled> {
        self.inner
            .push_unless_signalled(cb, |s| &mut s.callbacks)
            .map_err(|_| AlreadySignalled)
    }

    /// Export an fd readable once this fence is signalled (F8): a new
    /// eventfd (`O_CLOEXEC`; blocking, so a `read` waits for the signal)
    /// owned by the caller. Readable at once if the fence is signalled
    /// already; otherwise it becomes readable after the status is visible
    /// and before the signal returns. Each call gives an independent fd.
    pub fn export_fd(&self) -> std::io::Result<OwnedFd> {
        let fd = sys::eventfd(false)?;
        let ours = fd.try_clone()?;
        if let Err(ours) = self.inner.push_unless_signalled(ours, |s| &mut s.fds) {
            sys::notify(fd.as_fd());
            drop(ours);
        }
        Ok(fd)
    }

    /// Whether `self` is later than `other` on the same timeline (F7).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Invalid`] if the fences belong to different timelines:
    /// their seqnos are not comparable.
    pub fn is_later(&self, other: &Fence) -> Result<bool, crate::Error> {
        if !Arc::ptr_eq(&self.inner.timeline, &other.inner.timeline) {
            return Err(crate::Error::Invalid(format!(
                "cannot order fences of different timelines (channel {} seqno {}, channel {} seqno {})",
                self.channel(),
                self.seqno(),
                other.channel(),
                other.seqno()
            )));
        }
        Ok(self.seqno() > other.seqno())
    }
}

impl fmt::Debug for Fence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fence")
            .field("channel", &self.channel())
            .field("seqno", &self.seqno())
            .field("status", &self.status())
            .finish()
    }
}

/// The unique signalling side of a fence (F6).
///
/// Not `Clone`. `Sync`: [`Signaller::signal`] takes `&self` and may be
/// raced from many threads; exactly one wins (F1). Dropping it unsignalled
/// signals [`FenceError::Cancelled`].
pub struct Signaller {
    inner: Arc<FenceInner>,
}

impl Signaller {
    pub(super) fn from_inner(inner: Arc<FenceInner>) -> Signaller {
        Signaller { inner }
    }

    /// Channel.
    pub fn channel(&self) -> u8 {
        self.inner.channel()
    }

    /// Seqno.
    pub fn seqno(&self) -> u64 {
        self.inner.seqno
    }

    /// Signal with `status`, exactly once (F1, F2).
    ///
    /// In order: publish the status (F2), advance the timeline's completed
    /// counter (F7), make the timeline fd readable if this seqno is its
    /// armed target (F8), wake the waiters, make the exported fds readable
    /// (F8), run the callbacks (F9). Does not allocate, free, log or wait
    /// (F10).
    ///
    /// # Errors
    ///
    /// [`AlreadySignalled`] if the fence was signalled before (by this or a
    /// racing call); nothing changes then (F1).
    pub fn signal(&self, status: Status) -> Result<(), AlreadySignalled> {
        self.inner.signal(status)
    }

    /// Whether signalled.
    pub fn is_signalled(&self) -> bool {
        self.inner.is_signalled()
    }

    /// A waiting handle on the fence this signaller signals.
    pub fn fence(&self) -> Fence {
        Fence::from_inner(Arc::clone(&self.inner))
    }
}

impl Drop for Signaller {
    /// F6: an unsignalled signaller signals `Cancelled` (and logs a warning
    /// outside signalling sections).
    ///
    /// Then, outside a signalling section, the fence's callbacks and its ends
    /// of the exported fds are released: the signal is over, so they will
    /// never be used again, and a callback that holds a clone of its own
    /// fence would otherwise keep the storage alive for ever. The channel
    /// drops signallers on its reclaim thread (F10); inside a signalling
    /// section they are left to the fence storage.
    fn drop(&mut self) {
        if !self.inner.signalled.load(Ordering::Acquire) {
            let (channel, seqno) = (self.channel(), self.seqno());
            if self
                .inner
                .signal(Err(FenceError::Cancelled { channel, seqno }))
                .is_ok()
                && !SignallingSection::active()
            {
                // Logging may allocate: never inside a signalling section (F10).
                log::warn!(
                    "fence channel {channel} seqno {seqno}: signaller dropped unsignalled; cancelled"
                );
            }
        }
        if !SignallingSection::active() {
            self.inner.release_after_signal();
        }
    }
}

impl fmt::Debug for Signaller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Signaller")
            .field("channel", &self.channel())
            .field("seqno", &self.seqno())
            .field("signalled", &self.is_signalled())
            .finish()
    }
}
