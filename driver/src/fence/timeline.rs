//! The per-channel timeline: seqnos (F7), the completed counter (F7) and the
//! pollable fd (F8).

use super::handle::{Fence, FenceInner, Signaller};
use super::{lock, sys};
use crate::sync::{Arc, AtomicU64, Mutex, Ordering};
use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

/// Per-channel timeline (F7, F8).
///
/// Hands out fences with strictly increasing seqnos, keeps the completed
/// counter, and owns an eventfd that is readable iff the armed target is
/// signalled.
pub struct Timeline {
    shared: Arc<Shared>,
}

/// What the fences of a timeline share with it.
pub(super) struct Shared {
    pub(super) channel: u8,
    /// Mirror of `TlState::base`, for lock-free reads (F7: O(1)).
    completed: AtomicU64,
    /// Mirror of `base + window.len()`: the last seqno handed out.
    issued: AtomicU64,
    state: Mutex<TlState>,
    /// Readable iff `TlState::armed` is signalled (F8).
    fd: OwnedFd,
}

/// The timeline's leaf-locked state. Nobody allocates, logs or blocks while
/// holding its lock (F10).
struct TlState {
    /// Every seqno `<= base` is signalled: the completed counter (F7).
    base: u64,
    /// `window[i]` tells whether seqno `base + 1 + i` is signalled. Its
    /// length is the number of seqnos issued after `base`. Its front is
    /// always `false` (otherwise `base` would have advanced). `pop_front`
    /// never frees, so the signal path does not either (F10); `create`
    /// grows it outside the lock.
    window: VecDeque<bool>,
    /// The target of the fd (F8), if armed.
    armed: Option<u64>,
}

impl TlState {
    /// Whether `seqno` is signalled. Seqno 0 (before every job) is.
    fn is_signalled(&self, seqno: u64) -> bool {
        if seqno <= self.base {
            return true;
        }
        usize::try_from(seqno - self.base - 1)
            .ok()
            .and_then(|i| self.window.get(i).copied())
            .unwrap_or(false)
    }
}

impl Timeline {
    /// A new timeline for `channel`; seqnos start at 1.
    ///
    /// # Panics
    ///
    /// If the timeline's eventfd cannot be created (out of file
    /// descriptors); [`Timeline::try_new`] reports that instead.
    pub fn new(channel: u8) -> Arc<Timeline> {
        match Timeline::try_new(channel) {
            Ok(t) => t,
            Err(e) => {
                panic!("fdma: cannot create the eventfd of channel {channel}'s timeline: {e}")
            }
        }
    }

    /// A new timeline for `channel`, or the error creating its eventfd.
    pub fn try_new(channel: u8) -> io::Result<Arc<Timeline>> {
        let fd = sys::eventfd(true)?;
        Ok(Arc::new(Timeline {
            shared: Arc::new(Shared {
                channel,
                completed: AtomicU64::new(0),
                issued: AtomicU64::new(0),
                state: Mutex::new(TlState {
                    base: 0,
                    window: VecDeque::new(),
                    armed: None,
                }),
                fd,
            }),
        }))
    }

    /// Channel.
    pub fn channel(&self) -> u8 {
        self.shared.channel
    }

    /// Create the next fence: (waiter side, unique signaller side).
    ///
    /// F7: the seqno is the previous one plus 1, starting at 1. F6: this is
    /// where everything the signal will need is allocated (the fence storage
    /// and the timeline's slot for the seqno), on the submitter's thread,
    /// before the job reaches the hardware.
    ///
    /// (The receiver is `&self`, so `timeline.create()` on an
    /// `Arc<Timeline>` works in every build, including `cfg(loom)`, whose
    /// `Arc` cannot be a method receiver.)
    pub fn create(&self) -> (Fence, Signaller) {
        let seqno = self.shared.next_seqno();
        let inner = Arc::new(FenceInner::new(Arc::clone(&self.shared), seqno));
        (
            Fence::from_inner(Arc::clone(&inner)),
            Signaller::from_inner(inner),
        )
    }

    /// Highest seqno such that it and every earlier seqno are signalled
    /// (F7). 0 when none is.
    pub fn completed(&self) -> u64 {
        self.shared.completed()
    }

    /// Last seqno handed out (0 = none).
    pub fn last_issued(&self) -> u64 {
        self.shared.issued.load(Ordering::Acquire)
    }

    /// The pollable fd: readable iff the armed target is signalled (F8).
    ///
    /// It is an eventfd (`O_CLOEXEC | O_NONBLOCK`), not readable until
    /// [`Timeline::arm`] is called. Poll it; do not read it (reading makes it
    /// unreadable while the target stays signalled, until the next `arm`).
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.shared.fd.as_fd()
    }

    /// Arm the fd for `seqno`: from now on it is readable iff `seqno` is
    /// signalled (F8). If it already is, the fd is readable when `arm`
    /// returns; otherwise the fd is drained and becomes readable when
    /// `seqno` signals, before that signal returns. `seqno` may be one not
    /// issued yet; seqno 0 counts as signalled.
    pub fn arm(&self, seqno: u64) {
        let mut st = lock(&self.shared.state);
        st.armed = Some(seqno);
        // Under the lock, so no signal runs between the drain and the check.
        sys::drain(self.shared.fd.as_fd());
        if st.is_signalled(seqno) {
            sys::notify(self.shared.fd.as_fd());
        }
    }
}

impl Shared {
    pub(super) fn completed(&self) -> u64 {
        self.completed.load(Ordering::Acquire)
    }

    /// Reserve the next seqno and its slot in the window (F6, F7). The
    /// window is grown outside the lock and swapped in, so the lock is never
    /// held across an allocation (F10).
    fn next_seqno(&self) -> u64 {
        let mut spare: VecDeque<bool> = VecDeque::new();
        loop {
            let mut st = lock(&self.state);
            if st.window.len() == st.window.capacity() {
                if spare.capacity() > st.window.len() {
                    spare.extend(st.window.drain(..));
                    std::mem::swap(&mut spare, &mut st.window);
                } else {
                    let want = (st.window.len() * 2).max(16);
                    drop(st);
                    spare = VecDeque::with_capacity(want);
                    continue;
                }
            }
            st.window.push_back(false);
            let seqno = st.base + st.window.len() as u64;
            self.issued.store(seqno, Ordering::Release);
            drop(st);
            // `spare` (the old, now empty window) is freed here, unlocked.
            return seqno;
        }
    }

    /// Record that `seqno` has signalled (its status is already visible):
    /// advance the completed counter over the contiguous prefix (F7) and
    /// make the fd readable if `seqno` is the armed target (F8). Called once
    /// per seqno, on the signal path: no allocation, no free, no logging
    /// (F10).
    pub(super) fn complete(&self, seqno: u64) {
        let mut st = lock(&self.state);
        debug_assert!(seqno > st.base, "seqno {seqno} signalled twice");
        let Some(slot) = usize::try_from(seqno - st.base - 1)
            .ok()
            .and_then(|i| st.window.get_mut(i))
        else {
            debug_assert!(false, "seqno {seqno} was never issued");
            return;
        };
        *slot = true;
        // F7: only a contiguous prefix of signalled seqnos counts.
        while st.window.front() == Some(&true) {
            st.window.pop_front();
            st.base += 1;
        }
        self.completed.store(st.base, Ordering::Release);
        // F8: the status is already visible; make the fd readable before
        // the signal returns.
        if st.armed == Some(seqno) {
            sys::notify(self.fd.as_fd());
        }
    }
}

impl fmt::Debug for Timeline {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Timeline")
            .field("channel", &self.channel)
            .field("completed", &self.completed())
            .field("last_issued", &self.issued.load(Ordering::Acquire))
            .finish_non_exhaustive()
    }
}
