//! Publications: ranges being invalidated, and the registrations that
//! started before them (R4, C2, C3).
//!
//! An invalidation *begins* when its range is published: from then on a
//! lookup or commit against an entry older than the publication that
//! overlaps it fails. A registration takes its generation when it starts
//! (before it pins anything) and is checked against every publication
//! newer than it when it inserts its entry, processed or not: pages pinned
//! before an invalidation must never become a valid entry after it. A
//! processed publication is kept until no registration older than it is
//! still running.
//!
//! Generations are drawn under this module's lock, so a registration is
//! known to be running before any publication can be pruned past it.

use crate::sync::{AtomicU64, Mutex, Ordering};
use std::ops::Range;

struct Published {
    range: Range<u64>,
    gen: u64,
    processed: bool,
}

#[derive(Default)]
struct State {
    pubs: Vec<Published>,
    /// Generations of registrations in progress.
    registering: Vec<u64>,
}

/// The publication list of one cache.
#[derive(Default)]
pub(super) struct Publications {
    state: Mutex<State>,
    /// `pubs.len()`, read without the lock on the hit path.
    len: AtomicU64,
}

impl Publications {
    fn lock(&self) -> crate::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Publish `range`; returns its generation.
    pub fn publish(&self, range: Range<u64>, next_gen: &AtomicU64) -> u64 {
        let mut s = self.lock();
        let gen = next_gen.fetch_add(1, Ordering::AcqRel);
        s.pubs.push(Published {
            range,
            gen,
            processed: false,
        });
        self.len.store(s.pubs.len() as u64, Ordering::Release);
        gen
    }

    /// The invalidation of generation `gen` is done.
    pub fn processed(&self, gen: u64) {
        let mut s = self.lock();
        if let Some(p) = s.pubs.iter_mut().find(|p| p.gen == gen) {
            p.processed = true;
        }
        self.prune(&mut s);
    }

    /// A registration starts: its generation.
    pub fn begin_registration(&self, next_gen: &AtomicU64) -> u64 {
        let mut s = self.lock();
        let gen = next_gen.fetch_add(1, Ordering::AcqRel);
        s.registering.push(gen);
        gen
    }

    /// The registration of generation `gen` has inserted its entry or
    /// given up.
    pub fn end_registration(&self, gen: u64) {
        let mut s = self.lock();
        if let Some(i) = s.registering.iter().position(|g| *g == gen) {
            s.registering.swap_remove(i);
        }
        self.prune(&mut s);
    }

    /// Whether a publication newer than generation `gen` overlaps
    /// `[start, end)`: an entry of that generation there may hold pages
    /// the application has replaced.
    pub fn stale(&self, gen: u64, start: u64, end: u64) -> bool {
        if self.len.load(Ordering::Acquire) == 0 {
            return false;
        }
        self.lock()
            .pubs
            .iter()
            .any(|p| p.gen > gen && p.range.start < end && start < p.range.end)
    }

    fn prune(&self, s: &mut State) {
        let oldest = s.registering.iter().min().copied();
        s.pubs
            .retain(|p| !p.processed || oldest.is_some_and(|g| g < p.gen));
        self.len.store(s.pubs.len() as u64, Ordering::Release);
    }
}
