//! The recording test backend: checks the D5 bookkeeping rules (a map over
//! an existing range is `EEXIST`, an unmap must match one map exactly) and
//! records maps and unmaps. A unit-test fixture, not a model of the device.

use super::K4;
use crate::backend::{BResult, Backend, DmaLimits, DmaProt, DmaSource};
use crate::mem::DmaSpace;
use crate::sync::Arc;
use std::collections::BTreeMap;
use std::os::fd::AsRawFd;
use std::sync::{Mutex as StdMutex, OnceLock, Weak};

/// How the next `dma_unmap` fails.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum UnmapFail {
    None,
    Refused,
    Lost,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum Event {
    Map {
        iova: u64,
        size: u64,
    },
    /// With the space's IOVA bytes in use while the unmap ran.
    Unmap {
        iova: u64,
        size: u64,
        iova_in_use: u64,
    },
}

#[derive(Debug)]
pub(super) struct TestBackend {
    pub(super) limits: DmaLimits,
    /// iova -> (size, prot, vaddr).
    pub(super) maps: StdMutex<BTreeMap<u64, (u64, DmaProt, usize)>>,
    pub(super) events: StdMutex<Vec<Event>>,
    pub(super) fail_next_map: StdMutex<bool>,
    pub(super) fail_next_unmap: StdMutex<UnmapFail>,
    pub(super) space: OnceLock<Weak<DmaSpace>>,
}

impl TestBackend {
    pub(super) fn new(iova_ranges: Vec<std::ops::Range<u64>>) -> Arc<TestBackend> {
        Arc::new(TestBackend {
            limits: DmaLimits {
                max_mappings: 65535,
                max_mapping_size: 1 << 30,
                page_sizes: !0xfff,
                iova_ranges,
                vaddr_pinned: true,
            },
            maps: StdMutex::default(),
            events: StdMutex::default(),
            fail_next_map: StdMutex::new(false),
            fail_next_unmap: StdMutex::new(UnmapFail::None),
            space: OnceLock::new(),
        })
    }

    fn refused(&self, op: String, errno: nix::errno::Errno) -> crate::error::BackendError {
        crate::error::BackendError::Refused {
            device: self.name().into(),
            op,
            errno: errno as i32,
        }
    }

    fn unsupported<T>(&self) -> BResult<T> {
        Err(crate::error::BackendError::Invalid {
            device: self.name().into(),
            op: "test".into(),
            why: "not provided by the test backend".into(),
        })
    }

    pub(super) fn events(&self) -> Vec<Event> {
        self.events.lock().unwrap().clone()
    }

    pub(super) fn mapping(&self, iova: u64) -> Option<(u64, DmaProt, usize)> {
        self.maps.lock().unwrap().get(&iova).copied()
    }
}

impl Backend for TestBackend {
    fn name(&self) -> &str {
        "test-backend"
    }
    crate::backend::dma_only_test_backend!();
    fn dma_map(&self, iova: u64, size: u64, source: DmaSource<'_>, prot: DmaProt) -> BResult<()> {
        let op = format!("DMA_MAP iova {iova:#x} size {size:#x}");
        if std::mem::take(&mut *self.fail_next_map.lock().unwrap()) {
            return Err(self.refused(op, nix::errno::Errno::ENOMEM));
        }
        let DmaSource::Fd { fd, offset, vaddr } = source else {
            return Err(self.refused(op, nix::errno::Errno::EINVAL));
        };
        let file_size = nix::sys::stat::fstat(fd.as_raw_fd()).unwrap().st_size as u64;
        let page_ok = iova % K4 == 0 && size % K4 == 0 && size > 0;
        let in_range = self
            .limits
            .iova_ranges
            .iter()
            .any(|r| r.start <= iova && iova + size <= r.end);
        if !page_ok || !in_range || offset != 0 || file_size < size || vaddr.is_null() {
            return Err(self.refused(op, nix::errno::Errno::EINVAL));
        }
        let mut maps = self.maps.lock().unwrap();
        let overlaps = maps
            .range(..iova + size)
            .next_back()
            .is_some_and(|(&s, &(sz, _, _))| s + sz > iova);
        if overlaps {
            return Err(self.refused(op, nix::errno::Errno::EEXIST));
        }
        maps.insert(iova, (size, prot, vaddr as usize));
        self.events.lock().unwrap().push(Event::Map { iova, size });
        Ok(())
    }
    fn dma_unmap(&self, iova: u64, size: u64) -> BResult<()> {
        let op = format!("DMA_UNMAP iova {iova:#x} size {size:#x}");
        let mut maps = self.maps.lock().unwrap();
        if maps.get(&iova).map(|m| m.0) != Some(size) {
            return Err(self.refused(op, nix::errno::Errno::EINVAL));
        }
        match std::mem::replace(&mut *self.fail_next_unmap.lock().unwrap(), UnmapFail::None) {
            UnmapFail::None => {}
            UnmapFail::Refused => return Err(self.refused(op, nix::errno::Errno::EBUSY)),
            UnmapFail::Lost => {
                // A lost device reaches nothing any more.
                maps.remove(&iova);
                return Err(crate::error::BackendError::Lost {
                    device: self.name().into(),
                    op,
                    source: None,
                });
            }
        }
        maps.remove(&iova);
        let iova_in_use = self
            .space
            .get()
            .and_then(Weak::upgrade)
            .map_or(u64::MAX, |s| s.iova_in_use());
        self.events.lock().unwrap().push(Event::Unmap {
            iova,
            size,
            iova_in_use,
        });
        Ok(())
    }
}
