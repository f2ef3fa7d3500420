//! DMA_MAP and DMA_UNMAP with the local bookkeeping of contract D5.
//!
//! Map and unmap are serialised by the backend's map lock. A map is checked
//! locally first (alignment, IOVA range, size, overlap: `EEXIST`, count:
//! `ENOSPC`), its pages pinned when it is by address, recorded in the table
//! the service thread looks up, and only then sent; a refused map is rolled
//! back. An unmap must name one mapping exactly; it waits for the server's
//! reply (the server drains in-flight accesses first), then removes the
//! record under the table's write lock (which waits for an access the
//! service thread may still be making) and only then releases the
//! fixed-buffer slot.

use std::sync::atomic::Ordering;

use fdma_vfio_user::consts::dma as dma_flags;
use fdma_vfio_user::{DmaMap, DmaUnmap, Reply, Request};

use super::service::{MapKind, Mapping};
use super::VfioUserBackend;
use crate::backend::{BResult, DmaProt, DmaSource};
use crate::error::BackendError;

impl VfioUserBackend {
    fn refused(&self, op: String, errno: i32) -> BackendError {
        BackendError::Refused {
            device: self.client.name.clone(),
            op,
            errno,
        }
    }

    pub(super) fn map(
        &self,
        iova: u64,
        size: u64,
        source: DmaSource<'_>,
        prot: DmaProt,
    ) -> BResult<()> {
        let what = || format!("DMA_MAP iova {iova:#x} size {size:#x}");
        self.client.check(what)?;
        let page = 1u64 << self.limits.page_sizes.trailing_zeros().min(63);
        let end = iova.checked_add(size);
        if size == 0 || iova % page != 0 || size % page != 0 {
            return Err(self.client.invalid(
                what(),
                format!("IOVA and size must be non-zero multiples of {page:#x}"),
            ));
        }
        let in_range = end.is_some_and(|e| {
            self.limits
                .iova_ranges
                .iter()
                .any(|r| r.start <= iova && e <= r.end)
        });
        if !in_range {
            return Err(self
                .client
                .invalid(what(), "outside the usable IOVA ranges"));
        }
        if !prot.read && !prot.write {
            return Err(self
                .client
                .invalid(what(), "neither read nor write permission"));
        }
        let vaddr = match source {
            DmaSource::Vaddr(p) => Some(p as usize),
            DmaSource::Fd { .. } => None,
        };
        if let Some(v) = vaddr {
            if v as u64 % page != 0 || v == 0 {
                return Err(self
                    .client
                    .invalid(what(), "the address must be page-aligned"));
            }
            if size > self.limits.max_mapping_size {
                return Err(self.client.invalid(
                    what(),
                    format!(
                        "larger than the {:#x} bytes one pinned mapping may have",
                        self.limits.max_mapping_size
                    ),
                ));
            }
            if (v as u64).checked_add(size).is_none() {
                return Err(self.client.invalid(what(), "address range wraps"));
            }
        }
        let _g = self.map_lock.lock().unwrap_or_else(|p| p.into_inner());
        let shared = &self.client.shared;
        {
            let maps = shared.maps.read().unwrap_or_else(|p| p.into_inner());
            let end = iova + size;
            let overlap = maps
                .range(..end)
                .next_back()
                .is_some_and(|(a, m)| a + m.size > iova);
            if overlap {
                return Err(self.refused(what(), libc::EEXIST));
            }
            if maps.len() >= self.limits.max_mappings as usize {
                return Err(self.refused(what(), libc::ENOSPC));
            }
        }
        let kind = match (vaddr, &shared.pinner) {
            (None, _) => MapKind::Fd,
            (Some(v), Some(p)) => {
                let slot = p.pin(v, size).map_err(|source| {
                    if source.raw_os_error() == Some(libc::ENOSPC) {
                        self.refused(what(), libc::ENOSPC)
                    } else {
                        BackendError::Sys {
                            device: self.client.name.clone(),
                            op: format!("{}: pin with io_uring", what()),
                            source,
                        }
                    }
                })?;
                MapKind::Fixed { slot, vaddr: v }
            }
            (Some(v), None) => MapKind::Live { vaddr: v },
        };
        let m = Mapping { size, prot, kind };
        shared
            .maps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(iova, m);
        let req = Request::DmaMap(DmaMap {
            flags: if prot.read { dma_flags::FLAG_READ } else { 0 }
                | if prot.write { dma_flags::FLAG_WRITE } else { 0 },
            offset: match source {
                DmaSource::Fd { offset, .. } => offset,
                DmaSource::Vaddr(_) => 0,
            },
            address: iova,
            size,
        });
        let fds: Vec<_> = match source {
            DmaSource::Fd { fd, .. } => vec![fd],
            DmaSource::Vaddr(_) => Vec::new(),
        };
        let r = match self.client.call(what, &req, &fds) {
            Ok((Reply::DmaMap, _)) => Ok(()),
            Ok((r, _)) => Err(self.client.unexpected(what(), &r)),
            Err(e) => Err(e),
        };
        if r.is_err() {
            self.forget(iova);
        }
        r
    }

    /// Remove the record of the mapping at `iova` and release its slot.
    fn forget(&self, iova: u64) {
        let shared = &self.client.shared;
        let m = shared
            .maps
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&iova);
        if let (
            Some(Mapping {
                kind: MapKind::Fixed { slot, .. },
                ..
            }),
            Some(p),
        ) = (m, &shared.pinner)
        {
            p.unpin(slot);
        }
    }

    pub(super) fn unmap(&self, iova: u64, size: u64) -> BResult<()> {
        let what = || format!("DMA_UNMAP iova {iova:#x} size {size:#x}");
        let shared = &self.client.shared;
        if crate::fork::in_forked_child() {
            return self.client.check(what);
        }
        let _g = self.map_lock.lock().unwrap_or_else(|p| p.into_inner());
        let exact = shared
            .maps
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&iova)
            .is_some_and(|m| m.size == size);
        if !exact {
            return Err(self.client.invalid(
                what(),
                "no mapping at exactly this IOVA and size (ENOENT); an unmap must match one map",
            ));
        }
        if shared.lost.load(Ordering::Acquire) {
            // The device is gone: nothing can reach the pages through this
            // backend any more once the record is removed.
            self.forget(iova);
            return self.client.check(what);
        }
        let req = Request::DmaUnmap(DmaUnmap {
            argsz: DmaUnmap::SIZE as u32,
            flags: 0,
            address: iova,
            size,
        });
        let r = match self.client.call(what, &req, &[]) {
            Ok((Reply::DmaUnmap(u), _)) if u.address == iova && u.size == size => Ok(()),
            Ok((r, _)) => Err(self.client.unexpected(what(), &r)),
            Err(e) => Err(e),
        };
        match &r {
            // The server no longer maps it (or can no longer reach us).
            Ok(()) | Err(BackendError::Lost { .. }) => self.forget(iova),
            Err(BackendError::Refused { errno, .. }) if *errno == libc::ENOENT => self.forget(iova),
            Err(_) => {}
        }
        r
    }
}
