//! The event ring between the monitor thread and the cache: a
//! single-producer, single-consumer ring of invalidated ranges and the
//! publication sequence count (C2, C8, R4).
//!
//! The monitor (producer) makes the count odd just before it reads the
//! userfaultfd, pushes what it read, and makes it even again. munmap and
//! friends return once the monitor has *read* their event, so a lookup that
//! runs after one returned sees either an odd count (a read is being
//! published: it waits for the count to move) or the published range (it
//! drains it into the cache first). Without the count, an application that
//! re-maps an address and looks it up at once beats the monitor often
//! enough to matter (thousands of stale DMAs in 40,000 tries).
//!
//! The producer never blocks, locks or allocates: when the ring is full it
//! sets the overflow flag, and the consumer invalidates everything.

#![cfg_attr(all(loom, not(test)), allow(dead_code))] // the monitor side is not built under loom

use crate::sync::{AtomicBool, AtomicU64, Ordering};
use std::ops::Range;
use std::time::Duration;

/// Records the ring holds between two drains.
pub(crate) const CAPACITY: usize = 1024;

struct Slot {
    start: AtomicU64,
    end: AtomicU64,
}

/// The ring and its sequence count.
pub(crate) struct EventRing {
    seq: AtomicU64,
    /// Records written (producer-owned).
    head: AtomicU64,
    /// Records consumed (consumer-owned, under the cache's drain lock).
    tail: AtomicU64,
    /// Records consumed *and published* to the cache: a lookup that finds
    /// `head` beyond it must drain (or wait for the drain in progress).
    published: AtomicU64,
    /// Overflows so far (producer), and those published (consumer).
    overflows: AtomicU64,
    overflows_published: AtomicU64,
    /// The monitor stopped reading: events may be lost from here on.
    dead: AtomicBool,
    slots: Box<[Slot]>,
}

/// How a lookup found the ring.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// No read is being published: what was read is in the ring.
    Yes,
    /// A read stayed unpublished past the bound (a stalled monitor).
    TimedOut,
}

impl EventRing {
    /// An empty ring of `cap` records.
    pub fn new(cap: usize) -> EventRing {
        EventRing {
            seq: AtomicU64::new(0),
            head: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            published: AtomicU64::new(0),
            overflows: AtomicU64::new(0),
            overflows_published: AtomicU64::new(0),
            dead: AtomicBool::new(false),
            slots: (0..cap)
                .map(|_| Slot {
                    start: AtomicU64::new(0),
                    end: AtomicU64::new(0),
                })
                .collect(),
        }
    }

    // ---- producer: the monitor thread. No locks, no allocation. ----

    /// A read is about to happen: the count goes odd.
    pub fn begin(&self) {
        self.seq.fetch_add(1, Ordering::SeqCst);
    }

    /// Add one invalidated range, or set the overflow flag.
    pub fn push(&self, start: u64, end: u64) {
        let h = self.head.load(Ordering::Relaxed);
        let t = self.tail.load(Ordering::Acquire);
        if h - t >= self.slots.len() as u64 {
            self.overflows.fetch_add(1, Ordering::Release);
            return;
        }
        let s = &self.slots[(h % self.slots.len() as u64) as usize];
        s.start.store(start, Ordering::Relaxed);
        s.end.store(end, Ordering::Relaxed);
        self.head.store(h + 1, Ordering::Release);
    }

    /// What was read is published: the count goes even.
    pub fn end(&self) {
        self.seq.fetch_add(1, Ordering::Release);
    }

    /// The monitor stops for good (an error reading, or shutdown).
    #[cfg_attr(loom, allow(dead_code))]
    pub fn set_dead(&self) {
        self.dead.store(true, Ordering::Release);
    }

    // ---- consumer ----

    /// Whether the monitor has stopped.
    pub fn is_dead(&self) -> bool {
        self.dead.load(Ordering::Acquire)
    }

    /// Wait (bounded) until no read is being published: if the count is
    /// odd, until it moves.
    pub fn settle(&self, bound: Duration) -> Settled {
        let s = self.seq.load(Ordering::Acquire);
        if s & 1 == 0 {
            return Settled::Yes;
        }
        #[cfg(not(loom))]
        let t0 = std::time::Instant::now();
        let mut spins = 0u32;
        loop {
            if self.seq.load(Ordering::Acquire) != s {
                return Settled::Yes;
            }
            if self.is_dead() {
                return Settled::TimedOut;
            }
            spins += 1;
            #[cfg(loom)]
            {
                let _ = bound;
                if spins > 3 {
                    return Settled::TimedOut;
                }
                loom::thread::yield_now();
            }
            #[cfg(not(loom))]
            {
                if t0.elapsed() > bound {
                    return Settled::TimedOut;
                }
                if spins < 64 {
                    std::hint::spin_loop();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
        }
    }

    /// Whether something pushed is not yet published to the cache: then
    /// the caller must drain, or wait (on the drain lock) for the drain in
    /// progress to publish it.
    pub fn pending(&self) -> bool {
        self.head.load(Ordering::Acquire) != self.published.load(Ordering::Acquire)
            || self.overflows.load(Ordering::Acquire)
                != self.overflows_published.load(Ordering::Acquire)
    }

    /// Hand every pushed range to `f`, oldest first; after an overflow, the
    /// whole address space. One consumer at a time (the caller holds the
    /// drain lock); call [`Drained::published`] once the ranges are
    /// published to the cache.
    pub fn drain(&self, mut f: impl FnMut(Range<u64>)) -> Drained {
        let h = self.head.load(Ordering::Acquire);
        let o = self.overflows.load(Ordering::Acquire);
        let mut t = self.tail.load(Ordering::Relaxed);
        while t != h {
            let s = &self.slots[(t % self.slots.len() as u64) as usize];
            f(s.start.load(Ordering::Relaxed)..s.end.load(Ordering::Relaxed));
            t += 1;
        }
        // The slots are read before the producer may reuse them.
        self.tail.store(t, Ordering::Release);
        if o != self.overflows_published.load(Ordering::Relaxed) {
            f(0..u64::MAX);
        }
        Drained {
            head: h,
            overflows: o,
        }
    }

    /// Overflows so far (tests).
    #[cfg(all(test, not(loom)))]
    pub fn overflows(&self) -> u64 {
        self.overflows.load(Ordering::Acquire)
    }

    /// What [`Self::drain`] handed out is now published to the cache.
    pub fn published(&self, d: Drained) {
        self.published.store(d.head, Ordering::Release);
        self.overflows_published
            .store(d.overflows, Ordering::Release);
    }
}

/// How far a drain went (see [`EventRing::published`]).
#[must_use]
pub(crate) struct Drained {
    head: u64,
    overflows: u64,
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn drains_in_order_and_overflow_means_everything() {
        let r = EventRing::new(2);
        r.begin();
        r.push(1, 2);
        r.push(3, 4);
        r.push(5, 6); // full: overflow
        r.end();
        assert_eq!(r.settle(Duration::ZERO), Settled::Yes);
        let mut got = vec![];
        let d = r.drain(|x| got.push(x));
        assert_eq!(got, vec![1..2, 3..4, 0..u64::MAX]);
        assert!(r.pending(), "taken but not yet published");
        r.published(d);
        assert!(!r.pending());
        r.begin();
        r.push(7, 8);
        r.end();
        got.clear();
        let d = r.drain(|x| got.push(x));
        r.published(d);
        assert_eq!(got, vec![7..8]);
        assert!(!r.pending());
    }

    #[test]
    fn an_odd_count_that_never_moves_times_out() {
        let r = EventRing::new(4);
        r.begin();
        let t0 = std::time::Instant::now();
        assert_eq!(r.settle(Duration::from_millis(20)), Settled::TimedOut);
        assert!(t0.elapsed() >= Duration::from_millis(20));
        r.end();
        assert_eq!(r.settle(Duration::ZERO), Settled::Yes);
    }
}
