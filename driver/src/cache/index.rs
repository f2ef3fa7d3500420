//! The cache's index: entries by start address, never overlapping, and
//! the retired entries not yet unmapped. Guarded by the cache's `RwLock`.

use super::Entry;
use crate::sync::Arc;
use std::collections::BTreeMap;

/// The index: entries by start address, never overlapping.
#[derive(Default)]
pub(super) struct Index {
    pub by_start: BTreeMap<u64, Arc<Entry>>,
    /// Retired entries not unmapped yet: an invalidation overlapping one
    /// waits for its unmap (C3).
    pub retired: Vec<Arc<Entry>>,
}

impl Index {
    /// Take `e` out of service: out of the lookup map, invalid, onto the
    /// retired list. True for the first caller. Under the write lock, so
    /// that every commit either added its fence before or fails (R4).
    pub fn take_out(&mut self, e: &Arc<Entry>) -> bool {
        if self
            .by_start
            .get(&e.start)
            .is_some_and(|x| Arc::ptr_eq(x, e))
        {
            self.by_start.remove(&e.start);
        }
        let first = e.retire();
        if first {
            self.retired.push(e.clone());
        }
        first
    }

    /// The entry containing `[start, end)`, if one does.
    pub fn covering(&self, start: u64, end: u64) -> Option<&Arc<Entry>> {
        self.by_start
            .range(..=start)
            .next_back()
            .map(|(_, e)| e)
            .filter(|e| e.covers(start, end))
    }

    /// Entries overlapping `[start, end)`.
    pub fn overlapping(&self, start: u64, end: u64) -> Vec<Arc<Entry>> {
        let mut v: Vec<_> = self
            .by_start
            .range(..end)
            .rev()
            // Sorted and disjoint: once one ends at or before `start`, so
            // do all before it.
            .take_while(|(_, e)| e.start + e.len > start)
            .map(|(_, e)| e.clone())
            .collect();
        v.reverse();
        v
    }
}
