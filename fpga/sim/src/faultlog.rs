//! The simulator's out-of-band fault log: its equivalent of the host's DMAR
//! log (contract D3). Blocked writes are never reported to the engine; tests
//! and `fdma info` find them here.

use crate::hostmem::DmaError;
use std::collections::VecDeque;
use std::fmt;

/// What kind of device access faulted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FaultKind {
    /// A host-memory read (the engine got an error completion).
    Read,
    /// A host-memory write (dropped; the engine was not told).
    Write,
    /// An MSI-X message that could not be delivered (bus mastering off, link down).
    Irq,
    /// A card-memory access outside card memory (an RTL bug: the engine must range-check first).
    Card,
}

impl FaultKind {
    /// Lower-case name.
    pub fn name(self) -> &'static str {
        match self {
            FaultKind::Read => "read",
            FaultKind::Write => "write",
            FaultKind::Irq => "irq",
            FaultKind::Card => "card",
        }
    }
}

/// One faulted access.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FaultRecord {
    /// Device cycle (harness ticks since the model was created) of the fault.
    pub cycle: u64,
    /// Access kind.
    pub kind: FaultKind,
    /// IOVA (or card offset, or MSI-X vector for `Irq`).
    pub iova: u64,
    /// Bytes of the access (0 for `Irq`).
    pub len: usize,
    /// Why it failed.
    pub error: DmaError,
}

impl fmt::Display for FaultRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            FaultKind::Irq => write!(
                f,
                "cycle {}: irq vector {} dropped: {}",
                self.cycle, self.iova, self.error
            ),
            k => write!(
                f,
                "cycle {}: {} [{:#x}, +{}) {}: {}",
                self.cycle,
                k.name(),
                self.iova,
                self.len,
                if k == FaultKind::Read {
                    "failed"
                } else {
                    "dropped"
                },
                self.error
            ),
        }
    }
}

/// A bounded log of faults, oldest dropped first, with a running total.
#[derive(Clone, Debug)]
pub struct FaultLog {
    records: VecDeque<FaultRecord>,
    total: u64,
    capacity: usize,
}

impl Default for FaultLog {
    fn default() -> Self {
        FaultLog::with_capacity(4096)
    }
}

impl FaultLog {
    /// A log keeping at most `capacity` records.
    pub fn with_capacity(capacity: usize) -> Self {
        FaultLog {
            records: VecDeque::new(),
            total: 0,
            capacity: capacity.max(1),
        }
    }

    /// Record a fault.
    pub fn push(&mut self, r: FaultRecord) {
        log::warn!("device fault: {r}");
        if self.records.len() == self.capacity {
            self.records.pop_front();
        }
        self.records.push_back(r);
        self.total += 1;
    }

    /// The records kept, oldest first.
    pub fn records(&self) -> impl ExactSizeIterator<Item = &FaultRecord> {
        self.records.iter()
    }

    /// Faults recorded since creation or the last [`FaultLog::clear`], including dropped ones.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Forget every record.
    pub fn clear(&mut self) {
        self.records.clear();
        self.total = 0;
    }
}
