//! The host side of the card's bus: an IOMMU translating the engine's IOVAs
//! through the DMA mappings the client made (contract D3), and the memory
//! behind each mapping.
//!
//! * A mapping covers `[iova, iova + len)` with read and/or write permission
//!   and a [`Backing`] that holds the bytes (a shared mmap of the client's fd,
//!   the client's own memory reached through DMA_READ/DMA_WRITE messages, or
//!   plain memory in in-process tests).
//! * A map that overlaps an existing mapping fails ([`MapError::Overlap`],
//!   EEXIST on the wire); an unmap must match one map exactly (contract D5).
//! * An access that is not wholly covered by mappings with the needed
//!   permission fails as a whole and touches nothing: reads complete with an
//!   error, blocked writes are dropped (the caller logs them; the engine is
//!   never told).

use std::collections::BTreeMap;
use std::fmt;

/// Access rights of a DMA mapping, as the device sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Prot {
    /// The device may read.
    pub read: bool,
    /// The device may write.
    pub write: bool,
}

impl Prot {
    /// Read and write.
    pub const RW: Prot = Prot {
        read: true,
        write: true,
    };
    /// Read only.
    pub const R: Prot = Prot {
        read: true,
        write: false,
    };
    /// Write only.
    pub const W: Prot = Prot {
        read: false,
        write: true,
    };
}

impl fmt::Display for Prot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}{}",
            if self.read { "r" } else { "-" },
            if self.write { "w" } else { "-" }
        )
    }
}

/// Why a device access to host memory failed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DmaError {
    /// Part of the range is not mapped.
    #[error("IOVA {iova:#x} (+{len}) is not mapped")]
    Unmapped {
        /// First unmapped byte.
        iova: u64,
        /// Bytes of the access.
        len: usize,
    },
    /// The mapping lacks the permission the access needs.
    #[error("IOVA {iova:#x} (+{len}) is mapped {have}, access needs {need}")]
    Permission {
        /// Start of the refused part.
        iova: u64,
        /// Bytes of the access.
        len: usize,
        /// The mapping's permission.
        have: Prot,
        /// What the access needed.
        need: Prot,
    },
    /// Bus mastering is disabled in the card's command register.
    #[error("bus mastering is disabled")]
    BusMasterOff,
    /// The simulated link is down (simulator fault, D7).
    #[error("link is down")]
    LinkDown,
    /// The client did not answer a DMA request in time (D1).
    #[error("client did not answer DMA request for IOVA {iova:#x} within {ms} ms")]
    ClientTimeout {
        /// Address of the request.
        iova: u64,
        /// The wall-clock limit.
        ms: u64,
    },
    /// The client answered a DMA request with an error.
    #[error("client refused DMA request for IOVA {iova:#x} (errno {errno})")]
    ClientError {
        /// Address of the request.
        iova: u64,
        /// errno from the reply.
        errno: i32,
    },
    /// A DMA reply failure injected by the simulator (D7).
    #[error("DMA reply failure injected at IOVA {iova:#x}")]
    Injected {
        /// Address of the request.
        iova: u64,
    },
}

/// The bytes behind one mapping. Offsets are relative to the mapping start
/// and always within it (the table checks).
pub trait Backing: Send {
    /// Read `buf.len()` bytes at `offset`.
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Write `data` at `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DmaError>;
}

/// Plain process memory as a backing: for in-process tests and benchmarks.
#[derive(Clone, Debug, Default)]
pub struct VecBacking(pub Vec<u8>);

impl Backing for VecBacking {
    fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let o = offset as usize;
        buf.copy_from_slice(&self.0[o..o + buf.len()]);
        Ok(())
    }
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), DmaError> {
        let o = offset as usize;
        self.0[o..o + data.len()].copy_from_slice(data);
        Ok(())
    }
}

/// Anything the engine's host port can read and write.
pub trait HostMemory {
    /// Read `buf.len()` bytes at `iova`. On error nothing is read.
    fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError>;
    /// Write `data` at `iova`. On error nothing is written.
    fn write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaError>;
}

/// Why a map or unmap was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MapError {
    /// The new range overlaps an existing mapping (EEXIST).
    #[error("[{iova:#x}, +{len:#x}) overlaps the mapping at {existing:#x}")]
    Overlap {
        /// Requested start.
        iova: u64,
        /// Requested length.
        len: u64,
        /// Start of the mapping it overlaps.
        existing: u64,
    },
    /// Zero length or a range that wraps the address space (EINVAL).
    #[error("[{iova:#x}, +{len:#x}) is not a valid range")]
    Invalid {
        /// Requested start.
        iova: u64,
        /// Requested length.
        len: u64,
    },
    /// No mapping matches the unmap exactly (ENOENT).
    #[error("no mapping is exactly [{iova:#x}, +{len:#x})")]
    NoMatch {
        /// Requested start.
        iova: u64,
        /// Requested length.
        len: u64,
    },
}

impl MapError {
    /// The errno a vfio-user error reply carries for this refusal.
    pub fn errno(&self) -> i32 {
        match self {
            MapError::Overlap { .. } => libc::EEXIST,
            MapError::Invalid { .. } => libc::EINVAL,
            MapError::NoMatch { .. } => libc::ENOENT,
        }
    }
}

/// One DMA mapping.
pub struct Mapping {
    /// First IOVA.
    pub iova: u64,
    /// Length in bytes.
    pub len: u64,
    /// Device permissions.
    pub prot: Prot,
    /// The bytes.
    pub backing: Box<dyn Backing>,
}

impl fmt::Debug for Mapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Mapping[{:#x}, +{:#x}) {}",
            self.iova, self.len, self.prot
        )
    }
}

/// The IOMMU: the set of DMA mappings, keyed by start IOVA.
#[derive(Default, Debug)]
pub struct Iommu {
    maps: BTreeMap<u64, Mapping>,
}

impl Iommu {
    /// An IOMMU with no mappings: every access faults.
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a mapping. Fails without change on overlap or an invalid range.
    pub fn map(
        &mut self,
        iova: u64,
        len: u64,
        prot: Prot,
        backing: Box<dyn Backing>,
    ) -> Result<(), MapError> {
        let end = iova
            .checked_add(len)
            .filter(|_| len > 0)
            .ok_or(MapError::Invalid { iova, len })?;
        if let Some((&s, m)) = self.maps.range(..end).next_back() {
            if s + m.len > iova {
                return Err(MapError::Overlap {
                    iova,
                    len,
                    existing: s,
                });
            }
        }
        self.maps.insert(
            iova,
            Mapping {
                iova,
                len,
                prot,
                backing,
            },
        );
        Ok(())
    }

    /// Remove the mapping that is exactly `[iova, iova + len)` and return it.
    pub fn unmap(&mut self, iova: u64, len: u64) -> Result<Mapping, MapError> {
        match self.maps.get(&iova) {
            Some(m) if m.len == len => Ok(self.maps.remove(&iova).expect("present")),
            _ => Err(MapError::NoMatch { iova, len }),
        }
    }

    /// Remove every mapping (client disconnect).
    pub fn unmap_all(&mut self) -> Vec<Mapping> {
        std::mem::take(&mut self.maps).into_values().collect()
    }

    /// Number of mappings.
    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Whether there are no mappings.
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    /// The mappings in IOVA order.
    pub fn mappings(&self) -> impl Iterator<Item = &Mapping> {
        self.maps.values()
    }

    /// Check that `[iova, iova+len)` is wholly covered with `need`, returning
    /// the pieces as (mapping start, offset in mapping, piece length).
    fn translate(
        &self,
        iova: u64,
        len: usize,
        need: Prot,
    ) -> Result<Vec<(u64, u64, usize)>, DmaError> {
        let mut pieces = Vec::new();
        let mut cur = iova;
        let mut left = len;
        while left > 0 {
            let Some((&s, m)) = self
                .maps
                .range(..=cur)
                .next_back()
                .filter(|(&s, m)| cur - s < m.len)
            else {
                return Err(DmaError::Unmapped { iova: cur, len });
            };
            if (need.read && !m.prot.read) || (need.write && !m.prot.write) {
                return Err(DmaError::Permission {
                    iova: cur,
                    len,
                    have: m.prot,
                    need,
                });
            }
            let off = cur - s;
            let n = ((m.len - off).min(left as u64)) as usize;
            pieces.push((s, off, n));
            left -= n;
            cur = match cur.checked_add(n as u64) {
                Some(c) => c,
                None if left == 0 => cur,
                None => {
                    return Err(DmaError::Unmapped {
                        iova: u64::MAX,
                        len,
                    })
                }
            };
        }
        Ok(pieces)
    }
}

impl HostMemory for Iommu {
    fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let pieces = self.translate(iova, buf.len(), Prot::R)?;
        let mut done = 0;
        for (s, off, n) in pieces {
            let m = self.maps.get_mut(&s).expect("translated");
            m.backing.read(off, &mut buf[done..done + n])?;
            done += n;
        }
        Ok(())
    }

    fn write(&mut self, iova: u64, data: &[u8]) -> Result<(), DmaError> {
        let pieces = self.translate(iova, data.len(), Prot::W)?;
        let mut done = 0;
        for (s, off, n) in pieces {
            let m = self.maps.get_mut(&s).expect("translated");
            m.backing.write(off, &data[done..done + n])?;
            done += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vec(n: usize) -> Box<dyn Backing> {
        Box::new(VecBacking(vec![0; n]))
    }

    #[test]
    fn overlap_and_exact_unmap() {
        let mut m = Iommu::new();
        m.map(0x1000, 0x1000, Prot::RW, vec(0x1000)).unwrap();
        assert!(matches!(
            m.map(0x1800, 0x1000, Prot::RW, vec(0x1000)),
            Err(MapError::Overlap {
                existing: 0x1000,
                ..
            })
        ));
        assert!(matches!(
            m.map(0x0800, 0x1000, Prot::RW, vec(0x1000)),
            Err(MapError::Overlap { .. })
        ));
        m.map(0x2000, 0x1000, Prot::R, vec(0x1000)).unwrap();
        assert_eq!(
            m.map(0, 0, Prot::RW, vec(0)).unwrap_err().errno(),
            libc::EINVAL
        );
        assert_eq!(m.unmap(0x1000, 0x800).unwrap_err().errno(), libc::ENOENT);
        assert_eq!(m.unmap(0x1000, 0x1000).unwrap().len, 0x1000);
        assert_eq!(m.len(), 1);
    }

    #[test]
    fn access_spans_adjacent_mappings_and_checks_permissions() {
        let mut m = Iommu::new();
        m.map(0x1000, 0x1000, Prot::RW, vec(0x1000)).unwrap();
        m.map(0x2000, 0x1000, Prot::R, vec(0x1000)).unwrap();
        m.write(0x1ffe, &[1, 2]).unwrap();
        let mut b = [0u8; 4];
        m.read(0x1ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 0, 0]);
        // A write into the read-only half fails as a whole and writes nothing.
        assert!(matches!(
            m.write(0x1fff, &[9, 9]),
            Err(DmaError::Permission { iova: 0x2000, .. })
        ));
        m.read(0x1ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 0, 0]);
        assert!(matches!(
            m.read(0x2ffe, &mut b),
            Err(DmaError::Unmapped { iova: 0x3000, .. })
        ));
    }
}
