//! A bookkeeping-only test backend for the registration cache's unit tests
//! and loom models: it records maps and unmaps, enforces the D5 rules the
//! cache relies on (a map over a mapped IOVA is `EEXIST`, an unmap must
//! match one map exactly), can fail the next map, and never touches the
//! memory it is given (tests register made-up addresses).
//!
//! Its state is behind `crate::sync::Mutex`, so under `cfg(loom)` its locks
//! are loom's and take part in the model. The log is shared through a std
//! `Arc` ([`Log`]) so that tests keep a typed handle while the cache holds
//! an `Arc<dyn Backend>` (loom's `Arc` cannot unsize; `Arc::from_std` can).

use crate::backend::{BResult, Backend, DmaLimits, DmaProt, DmaSource};
use crate::error::BackendError;
use crate::mem::DmaSpace;
use crate::sync::{Arc, Mutex};
use std::collections::BTreeMap;

/// What the test sees at an unmap, computed by its probe (e.g. "was the
/// job's fence signalled by now").
pub(crate) type Probe = Box<dyn Fn() -> Option<bool> + Send + Sync>;

/// One backend call, in the order they happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Event {
    Map {
        iova: u64,
        size: u64,
        vaddr: u64,
    },
    Unmap {
        iova: u64,
        size: u64,
        /// The probe's answer at the moment of the unmap.
        probe: Option<bool>,
    },
    /// Pushed by a test ([`Log::mark`]) to order its own steps among the
    /// backend's calls.
    Mark(u32),
}

/// How the next `dma_map` fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(dead_code)] // not every build (loom, unit tests) uses every kind
pub(crate) enum MapFail {
    None,
    /// `Refused` with `ENOSPC` (the container's mapping limit).
    NoSpace,
    /// RLIMIT_MEMLOCK.
    Memlock,
    /// `Refused` with `EINVAL`: not a pressure failure.
    Invalid,
}

#[derive(Default)]
struct State {
    /// iova -> (size, vaddr).
    maps: BTreeMap<u64, (u64, u64)>,
    events: Vec<Event>,
    fail_next_map: Option<MapFail>,
}

/// The test's handle on the backend's record.
pub(crate) struct Log {
    state: Mutex<State>,
    probe: Option<Probe>,
}

#[allow(dead_code)] // not every build (loom, unit tests) uses every call
impl Log {
    fn lock(&self) -> crate::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Every call so far.
    pub fn events(&self) -> Vec<Event> {
        self.lock().events.clone()
    }

    /// The unmaps so far: (iova, size, probe).
    pub fn unmaps(&self) -> Vec<(u64, u64, Option<bool>)> {
        self.lock()
            .events
            .iter()
            .filter_map(|e| match *e {
                Event::Unmap { iova, size, probe } => Some((iova, size, probe)),
                _ => None,
            })
            .collect()
    }

    /// Mappings in place now.
    pub fn mapped(&self) -> usize {
        self.lock().maps.len()
    }

    /// Whether `iova` is mapped now.
    pub fn is_mapped(&self, iova: u64) -> bool {
        self.lock().maps.contains_key(&iova)
    }

    /// Fail the next `dma_map` as `how`.
    pub fn fail_next_map(&self, how: MapFail) {
        self.lock().fail_next_map = Some(how);
    }

    /// Record a step of the test among the backend's calls.
    pub fn mark(&self, n: u32) {
        self.lock().events.push(Event::Mark(n));
    }
}

pub(crate) struct TestBackend {
    limits: DmaLimits,
    log: std::sync::Arc<Log>,
}

impl std::fmt::Debug for TestBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TestBackend")
    }
}

/// A DMA space (32-bit, one IOVA range above page 0) over a fresh test
/// backend allowing `max_mappings`, and the handle on its record. `probe`
/// runs at every unmap, outside the backend's lock.
pub(crate) fn space(
    max_mappings: u32,
    probe: Option<Probe>,
) -> (Arc<DmaSpace>, std::sync::Arc<Log>) {
    let log = std::sync::Arc::new(Log {
        state: Mutex::new(State::default()),
        probe,
    });
    let be = TestBackend {
        limits: DmaLimits {
            max_mappings,
            max_mapping_size: 1 << 30,
            page_sizes: !0xfff,
            #[allow(clippy::single_range_in_vec_init)] // a list of one range
            iova_ranges: vec![0..1 << 32],
            vaddr_pinned: true,
        },
        log: log.clone(),
    };
    let be: std::sync::Arc<dyn Backend> = std::sync::Arc::new(be);
    #[cfg(loom)]
    let be = Arc::from_std(be);
    (DmaSpace::new(be, 32).expect("test DMA space"), log)
}

impl TestBackend {
    fn refused(&self, op: String, errno: i32) -> BackendError {
        BackendError::Refused {
            device: self.name().into(),
            op,
            errno,
        }
    }

    fn unsupported<T>(&self) -> BResult<T> {
        Err(BackendError::Invalid {
            device: self.name().into(),
            op: "test".into(),
            why: "not provided by the cache's test backend".into(),
        })
    }
}

impl Backend for TestBackend {
    fn name(&self) -> &str {
        "cache-test-backend"
    }
    crate::backend::dma_only_test_backend!();
    fn dma_map(&self, iova: u64, size: u64, source: DmaSource<'_>, _prot: DmaProt) -> BResult<()> {
        let op = format!("DMA_MAP iova {iova:#x} size {size:#x}");
        let vaddr = match source {
            DmaSource::Vaddr(p) => p as u64,
            DmaSource::Fd { vaddr, .. } => vaddr as u64,
        };
        let mut st = self.log.lock();
        match st.fail_next_map.take() {
            None | Some(MapFail::None) => {}
            Some(MapFail::NoSpace) => return Err(self.refused(op, libc::ENOSPC)),
            Some(MapFail::Invalid) => return Err(self.refused(op, libc::EINVAL)),
            Some(MapFail::Memlock) => {
                return Err(BackendError::Memlock {
                    device: self.name().into(),
                    bytes: size,
                    limit: 0,
                })
            }
        }
        if iova % 4096 != 0 || size % 4096 != 0 || size == 0 {
            return Err(self.refused(op, libc::EINVAL));
        }
        let overlaps = st
            .maps
            .range(..iova + size)
            .next_back()
            .is_some_and(|(&s, &(sz, _))| s + sz > iova);
        if overlaps {
            return Err(self.refused(op, libc::EEXIST));
        }
        if st.maps.len() >= self.limits.max_mappings as usize {
            return Err(self.refused(op, libc::ENOSPC));
        }
        st.maps.insert(iova, (size, vaddr));
        st.events.push(Event::Map { iova, size, vaddr });
        Ok(())
    }
    fn dma_unmap(&self, iova: u64, size: u64) -> BResult<()> {
        // The probe first, without the backend's lock (it may take the
        // test's own locks).
        let probe = self.log.probe.as_ref().and_then(|p| p());
        let mut st = self.log.lock();
        if st.maps.get(&iova).map(|m| m.0) != Some(size) {
            return Err(self.refused(
                format!("DMA_UNMAP iova {iova:#x} size {size:#x}"),
                libc::EINVAL,
            ));
        }
        st.maps.remove(&iova);
        st.events.push(Event::Unmap { iova, size, probe });
        Ok(())
    }
}
