//! The DMA domain behind a [`VfioBackend`](super::VfioBackend): where its
//! IOVA mappings live and which ioctls change them.
//!
//! * [`Iommu::Type1`]: the legacy VFIO container (`/dev/vfio/vfio`) with the
//!   type1v2 IOMMU, reached through the device's IOMMU group. Always built;
//!   the default way to open.
//! * `Iommu::Iommufd` (cargo feature `iommufd`, off by default): an IO
//!   address space (IOAS) of `/dev/iommu`, with the device opened through
//!   its VFIO cdev (`/dev/vfio/devices/vfioN`) and attached to the IOAS.
//!
//! # Status of the iommufd path
//!
//! **Verified on a lab host only.** CI builds it and unit-tests its pure
//! parts (request encodings against the uapi layouts of
//! `include/uapi/linux/iommufd.h`, the IOVA range conversion); no kernel
//! installable in CI has `CONFIG_IOMMUFD`, so the ioctls themselves never
//! run there.
//!
//! # How the two differ, as fdma sees it
//!
//! * **IOVA ranges**: type1 reports them in `VFIO_IOMMU_GET_INFO`'s
//!   capability chain; iommufd in `IOMMU_IOAS_IOVA_RANGES`, narrowed by
//!   each attached device (so they are read after the attach). Both give
//!   an inclusive last address; [`exclusive_ranges`] converts.
//! * **Page sizes**: type1 reports the IOMMU's page-size bitmap. An IOAS
//!   reports none, only a minimum IOVA alignment (at most the CPU page
//!   size); fdma assumes 4 KiB pages ([`IOMMUFD_PAGE_SIZE`]), or the
//!   reported alignment where that is larger.
//! * **Mapping budget**: type1 reports `dma_avail`; iommufd has no such
//!   limit and reports nothing (`None`).
//! * **Pinning (D5)** is the same: both pin at map time and charge
//!   `RLIMIT_MEMLOCK` unless the process has `CAP_IPC_LOCK`, failing with
//!   `ENOMEM` beyond it.
//! * **After release**: closing the device fd empties a type1 container
//!   (its last group leaves) and with it every mapping; an IOAS keeps its
//!   mappings, and their pins, until they are unmapped or the IOAS is
//!   destroyed ([`Iommu::mappings_outlive_device`]).

use super::ioctl::{self, IommuInfo};
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::sync::Arc;
#[cfg(feature = "iommufd")]
use vfio_ioctls::VfioIommufd;
use vfio_ioctls::{VfioContainer, VfioOps};

/// The IOMMU page size assumed for an iommufd IOAS, which reports no page
/// sizes (only a minimum IOVA alignment, taken instead when larger).
pub const IOMMUFD_PAGE_SIZE: u64 = 0x1000;

/// The DMA domain of an open VFIO device.
#[derive(Clone)]
pub enum Iommu {
    /// A legacy type1v2 container, the device reached through its group.
    Type1(Arc<VfioContainer>),
    /// An iommufd IOAS, the device reached through its VFIO cdev.
    #[cfg(feature = "iommufd")]
    Iommufd(Arc<VfioIommufd>),
}

impl std::fmt::Debug for Iommu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Iommu::Type1(c) => f
                .debug_struct("Type1")
                .field("container_fd", &c.as_raw_fd())
                .finish(),
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(i) => f
                .debug_struct("Iommufd")
                .field("iommufd_fd", &i.iommufd().as_raw_fd())
                .field("ioas_id", &i.ioas().id())
                .finish(),
        }
    }
}

impl Iommu {
    /// `"type1"` or `"iommufd"`, for logs and reports.
    pub fn kind(&self) -> &'static str {
        match self {
            Iommu::Type1(_) => "type1",
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(_) => "iommufd",
        }
    }

    /// The domain as `vfio-ioctls` wants it for [`vfio_ioctls::VfioDevice::new`].
    pub fn ops(&self) -> Arc<dyn VfioOps> {
        match self {
            Iommu::Type1(c) => c.clone(),
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(i) => i.clone(),
        }
    }

    /// The name of the ioctl [`Iommu::info`] issues, for error reports.
    pub fn info_op(&self) -> &'static str {
        match self {
            Iommu::Type1(_) => "VFIO_IOMMU_GET_INFO",
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(_) => "IOMMU_IOAS_IOVA_RANGES",
        }
    }

    /// Page sizes, usable IOVA ranges (reserved windows excluded) and the
    /// mapping budget. Ask after the device is attached: attaching narrows
    /// an IOAS's ranges.
    pub fn info(&self) -> io::Result<IommuInfo> {
        match self {
            Iommu::Type1(c) => ioctl::iommu_info(c.as_raw_fd()),
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(i) => {
                let (ranges, align) = ioas::iova_ranges(i.iommufd().as_raw_fd(), i.ioas().id())?;
                Ok(ioas::info_from(ranges, align))
            }
        }
    }

    /// Map `size` bytes of this process at `vaddr` to `iova`, exactly there
    /// (FIXED_IOVA), with the device's access limited to `read`/`write`.
    /// The pages are pinned now (D5).
    pub fn map(&self, iova: u64, size: u64, vaddr: u64, read: bool, write: bool) -> io::Result<()> {
        match self {
            Iommu::Type1(c) => ioctl::map_dma(c.as_raw_fd(), iova, size, vaddr, read, write),
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(i) => ioas::map(
                i.iommufd().as_raw_fd(),
                i.ioas().id(),
                iova,
                size,
                vaddr,
                read,
                write,
            ),
        }
    }

    /// Unmap `iova..iova + size`, which should be one earlier mapping.
    /// Returns the bytes the kernel unmapped, which the caller checks.
    pub fn unmap(&self, iova: u64, size: u64) -> io::Result<u64> {
        match self {
            Iommu::Type1(c) => ioctl::unmap_dma(c.as_raw_fd(), iova, size),
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(i) => ioas::unmap(i.iommufd().as_raw_fd(), i.ioas().id(), iova, size),
        }
    }

    /// Whether mappings survive the device fd's close: false for type1 (the
    /// container empties with its last group), true for an IOAS (it lives
    /// as long as this process holds it).
    pub fn mappings_outlive_device(&self) -> bool {
        match self {
            Iommu::Type1(_) => false,
            #[cfg(feature = "iommufd")]
            Iommu::Iommufd(_) => true,
        }
    }
}

/// Half-open ranges from the kernel's `(start, last)` pairs, `last`
/// inclusive as both `vfio_iova_range` and `iommu_iova_range` have it.
/// Inverted pairs are dropped; a `last` of `u64::MAX` ends the range at
/// `u64::MAX` (a `Range<u64>` cannot reach 2^64; the last byte is lost).
/// Sorted by start.
pub fn exclusive_ranges(pairs: impl IntoIterator<Item = (u64, u64)>) -> Vec<Range<u64>> {
    let mut out: Vec<Range<u64>> = pairs
        .into_iter()
        .filter(|&(start, last)| last >= start)
        .map(|(start, last)| start..last.saturating_add(1))
        .collect();
    out.sort_by_key(|r| r.start);
    out
}

/// The iommufd ioctls fdma issues itself. `iommufd-ioctls` has no
/// `IOMMU_IOAS_IOVA_RANGES`, and `VfioIommufd`'s map is read-write only;
/// for uniform `io::Error`s all three are issued here, with the structs of
/// `iommufd-bindings`.
#[cfg(feature = "iommufd")]
mod ioas {
    use super::{exclusive_ranges, IommuInfo, IOMMUFD_PAGE_SIZE};
    use iommufd_bindings::iommufd::{
        iommu_ioas_iova_ranges, iommu_ioas_map, iommu_ioas_unmap, iommu_iova_range,
        iommufd_ioas_map_flags_IOMMU_IOAS_MAP_FIXED_IOVA as MAP_FIXED_IOVA,
        iommufd_ioas_map_flags_IOMMU_IOAS_MAP_READABLE as MAP_READABLE,
        iommufd_ioas_map_flags_IOMMU_IOAS_MAP_WRITEABLE as MAP_WRITEABLE,
        IOMMUFD_CMD_IOAS_IOVA_RANGES, IOMMUFD_CMD_IOAS_MAP, IOMMUFD_CMD_IOAS_UNMAP, IOMMUFD_TYPE,
    };
    use std::io;
    use std::ops::Range;
    use std::os::fd::RawFd;

    /// `_IO(IOMMUFD_TYPE, cmd)`: iommufd ioctls carry no size or direction;
    /// the struct's own `size` field versions it.
    const fn iommufd_io(cmd: u32) -> u64 {
        ((IOMMUFD_TYPE as u64) << 8) | cmd as u64
    }

    pub(super) const IOAS_IOVA_RANGES: u64 = iommufd_io(IOMMUFD_CMD_IOAS_IOVA_RANGES);
    pub(super) const IOAS_MAP: u64 = iommufd_io(IOMMUFD_CMD_IOAS_MAP);
    pub(super) const IOAS_UNMAP: u64 = iommufd_io(IOMMUFD_CMD_IOAS_UNMAP);

    /// A request struct and the ioctl that takes it, so that the two cannot
    /// be mismatched.
    pub(super) trait Request {
        /// The ioctl number.
        const NR: u64;
    }
    impl Request for iommu_ioas_iova_ranges {
        const NR: u64 = IOAS_IOVA_RANGES;
    }
    impl Request for iommu_ioas_map {
        const NR: u64 = IOAS_MAP;
    }
    impl Request for iommu_ioas_unmap {
        const NR: u64 = IOAS_UNMAP;
    }

    /// Issue `T::NR` on the iommufd `fd` with `arg`, which the kernel reads
    /// and may write back.
    ///
    /// # Safety
    ///
    /// Every user pointer inside `arg` (e.g. `allowed_iovas`) must be valid
    /// for the kernel to access as the uapi describes, for the whole call.
    unsafe fn ioctl<T: Request>(fd: RawFd, arg: &mut T) -> io::Result<()> {
        // SAFETY: `arg` is an exclusively borrowed, initialised instance of
        // the struct the kernel expects for `T::NR` (tied by `Request`),
        // alive for the call; the pointers inside it are the caller's
        // responsibility, per this function's contract.
        let r = unsafe { libc::ioctl(fd, T::NR as _, std::ptr::from_mut(arg)) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(())
        }
    }

    /// `IOMMU_IOAS_MAP` of `size` bytes at `vaddr` to exactly `iova`.
    pub(super) fn map_request(
        ioas_id: u32,
        iova: u64,
        size: u64,
        vaddr: u64,
        read: bool,
        write: bool,
    ) -> iommu_ioas_map {
        let mut flags = MAP_FIXED_IOVA;
        if read {
            flags |= MAP_READABLE;
        }
        if write {
            flags |= MAP_WRITEABLE;
        }
        iommu_ioas_map {
            size: std::mem::size_of::<iommu_ioas_map>() as u32,
            flags,
            ioas_id,
            __reserved: 0,
            user_va: vaddr,
            length: size,
            iova,
        }
    }

    /// `IOMMU_IOAS_UNMAP` of `iova..iova + size`.
    pub(super) fn unmap_request(ioas_id: u32, iova: u64, size: u64) -> iommu_ioas_unmap {
        iommu_ioas_unmap {
            size: std::mem::size_of::<iommu_ioas_unmap>() as u32,
            ioas_id,
            iova,
            length: size,
        }
    }

    /// `IOMMU_IOAS_IOVA_RANGES` with room for `out.len()` ranges (none: a
    /// null array, to learn the count).
    pub(super) fn ranges_request(
        ioas_id: u32,
        out: &mut [iommu_iova_range],
    ) -> iommu_ioas_iova_ranges {
        iommu_ioas_iova_ranges {
            size: std::mem::size_of::<iommu_ioas_iova_ranges>() as u32,
            ioas_id,
            num_iovas: out.len() as u32,
            __reserved: 0,
            allowed_iovas: if out.is_empty() {
                0
            } else {
                out.as_mut_ptr() as u64
            },
            out_iova_alignment: 0,
        }
    }

    /// The ranges the kernel filled in: the first `reported` of `out` (no
    /// more than it has), converted to half-open ranges.
    pub(super) fn ranges_from(out: &[iommu_iova_range], reported: u32) -> Vec<Range<u64>> {
        let n = out.len().min(reported as usize);
        exclusive_ranges(out[..n].iter().map(|r| (r.start, r.last)))
    }

    /// [`IommuInfo`] of an IOAS: its ranges, a 4 KiB page (or the IOVA
    /// alignment where that is larger), no mapping budget.
    pub(super) fn info_from(iova_ranges: Vec<Range<u64>>, alignment: u64) -> IommuInfo {
        IommuInfo {
            page_sizes: alignment.max(IOMMUFD_PAGE_SIZE).next_power_of_two(),
            iova_ranges,
            dma_avail: None,
        }
    }

    /// The IOAS's allowed IOVA ranges and minimum IOVA alignment. Sized by
    /// a first call; the kernel answers `EMSGSIZE` with the count when the
    /// array is too small (it may grow between calls, hence the loop).
    pub(super) fn iova_ranges(fd: RawFd, ioas_id: u32) -> io::Result<(Vec<Range<u64>>, u64)> {
        let mut out: Vec<iommu_iova_range> = Vec::new();
        for _ in 0..8 {
            let mut req = ranges_request(ioas_id, &mut out);
            // SAFETY: `allowed_iovas` is null or points at `out`, which has
            // room for `num_iovas` ranges and is neither moved nor freed
            // before the call returns.
            match unsafe { ioctl(fd, &mut req) } {
                Ok(()) => return Ok((ranges_from(&out, req.num_iovas), req.out_iova_alignment)),
                Err(e)
                    if e.raw_os_error() == Some(libc::EMSGSIZE)
                        && req.num_iovas as usize > out.len() =>
                {
                    out = vec![iommu_iova_range::default(); req.num_iovas as usize];
                }
                Err(e) => return Err(e),
            }
        }
        Err(io::Error::other(
            "IOMMU_IOAS_IOVA_RANGES: the number of ranges kept changing",
        ))
    }

    /// `IOMMU_IOAS_MAP` with FIXED_IOVA and the access asked for.
    pub(super) fn map(
        fd: RawFd,
        ioas_id: u32,
        iova: u64,
        size: u64,
        vaddr: u64,
        read: bool,
        write: bool,
    ) -> io::Result<()> {
        let mut req = map_request(ioas_id, iova, size, vaddr, read, write);
        // SAFETY: the map request carries no pointer the kernel writes
        // through; `user_va` names memory to pin, which the kernel checks.
        unsafe { ioctl(fd, &mut req) }
    }

    /// `IOMMU_IOAS_UNMAP`; returns the bytes unmapped.
    pub(super) fn unmap(fd: RawFd, ioas_id: u32, iova: u64, size: u64) -> io::Result<u64> {
        let mut req = unmap_request(ioas_id, iova, size);
        // SAFETY: the unmap request carries no pointers.
        unsafe { ioctl(fd, &mut req) }?;
        Ok(req.length)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inclusive_pairs_become_half_open_sorted_ranges() {
        let r = exclusive_ranges([
            (0xfef0_0000, 0xffff_ffff_ffff),
            (0, 0xfedf_ffff),
            (0x2000, 0x1000), // inverted: dropped
            (0x5000, 0x5000), // one byte
        ]);
        assert_eq!(
            r,
            vec![
                0..0xfee0_0000,
                0x5000..0x5001,
                0xfef0_0000..0x1_0000_0000_0000
            ]
        );
        // The top of the address space saturates rather than wrapping.
        assert_eq!(exclusive_ranges([(0, u64::MAX)]), vec![0..u64::MAX]);
        assert!(exclusive_ranges([]).is_empty());
    }
}

#[cfg(all(test, feature = "iommufd"))]
mod iommufd_tests {
    use super::ioas::*;
    use iommufd_bindings::iommufd::{
        iommu_ioas_iova_ranges, iommu_ioas_map, iommu_ioas_unmap, iommu_iova_range,
    };
    use std::mem::{offset_of, size_of};

    /// The bytes of a padding-free `repr(C)` uapi struct, as the kernel
    /// reads them.
    fn bytes<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: only called with the iommufd uapi structs, which are
        // `repr(C)`, made of u32/u64 fields laid out without padding (the
        // size assertions below check that), so every byte is initialised.
        unsafe { std::slice::from_raw_parts(std::ptr::from_ref(v).cast::<u8>(), size_of::<T>()) }
            .to_vec()
    }
    fn u32_at(b: &[u8], o: usize) -> u32 {
        u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], o: usize) -> u64 {
        u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
    }

    #[test]
    fn struct_layouts_match_the_uapi() {
        // include/uapi/linux/iommufd.h
        assert_eq!(size_of::<iommu_iova_range>(), 16);
        assert_eq!(offset_of!(iommu_iova_range, start), 0);
        assert_eq!(offset_of!(iommu_iova_range, last), 8);

        assert_eq!(size_of::<iommu_ioas_iova_ranges>(), 32);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, size), 0);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, ioas_id), 4);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, num_iovas), 8);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, __reserved), 12);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, allowed_iovas), 16);
        assert_eq!(offset_of!(iommu_ioas_iova_ranges, out_iova_alignment), 24);

        assert_eq!(size_of::<iommu_ioas_map>(), 40);
        assert_eq!(offset_of!(iommu_ioas_map, size), 0);
        assert_eq!(offset_of!(iommu_ioas_map, flags), 4);
        assert_eq!(offset_of!(iommu_ioas_map, ioas_id), 8);
        assert_eq!(offset_of!(iommu_ioas_map, __reserved), 12);
        assert_eq!(offset_of!(iommu_ioas_map, user_va), 16);
        assert_eq!(offset_of!(iommu_ioas_map, length), 24);
        assert_eq!(offset_of!(iommu_ioas_map, iova), 32);

        assert_eq!(size_of::<iommu_ioas_unmap>(), 24);
        assert_eq!(offset_of!(iommu_ioas_unmap, size), 0);
        assert_eq!(offset_of!(iommu_ioas_unmap, ioas_id), 4);
        assert_eq!(offset_of!(iommu_ioas_unmap, iova), 8);
        assert_eq!(offset_of!(iommu_ioas_unmap, length), 16);
    }

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        // _IO(IOMMUFD_TYPE = ';', IOMMUFD_CMD_BASE 0x80 + n).
        assert_eq!(IOAS_IOVA_RANGES, 0x3b84);
        assert_eq!(IOAS_MAP, 0x3b85);
        assert_eq!(IOAS_UNMAP, 0x3b86);
        // And as iommufd-ioctls computes them.
        assert_eq!(IOAS_MAP, iommufd_ioctls::IOMMU_IOAS_MAP() as u64);
        assert_eq!(IOAS_UNMAP, iommufd_ioctls::IOMMU_IOAS_UNMAP() as u64);
    }

    #[test]
    fn map_request_encodes_access_and_fixed_iova() {
        let b = bytes(&map_request(
            7,
            0x10_0000,
            0x4000,
            0x7f00_0000_1000,
            true,
            false,
        ));
        assert_eq!(b.len(), 40);
        assert_eq!(u32_at(&b, 0), 40); // size
        assert_eq!(u32_at(&b, 4), 1 | 4); // FIXED_IOVA | READABLE
        assert_eq!(u32_at(&b, 8), 7); // ioas_id
        assert_eq!(u32_at(&b, 12), 0); // __reserved
        assert_eq!(u64_at(&b, 16), 0x7f00_0000_1000); // user_va
        assert_eq!(u64_at(&b, 24), 0x4000); // length
        assert_eq!(u64_at(&b, 32), 0x10_0000); // iova
        let flags = |r, w| map_request(1, 0, 0x1000, 0x1000, r, w).flags;
        assert_eq!(flags(false, true), 1 | 2); // FIXED_IOVA | WRITEABLE
        assert_eq!(flags(true, true), 1 | 2 | 4);
        // Neither: the kernel refuses it (EINVAL), as type1 does.
        assert_eq!(flags(false, false), 1);
    }

    #[test]
    fn unmap_request_encodes_the_range() {
        let b = bytes(&unmap_request(3, 0x20_0000, 0x2000));
        assert_eq!(b.len(), 24);
        assert_eq!(u32_at(&b, 0), 24);
        assert_eq!(u32_at(&b, 4), 3);
        assert_eq!(u64_at(&b, 8), 0x20_0000);
        assert_eq!(u64_at(&b, 16), 0x2000);
    }

    #[test]
    fn ranges_request_points_at_the_array() {
        let b = bytes(&ranges_request(5, &mut []));
        assert_eq!(b.len(), 32);
        assert_eq!(u32_at(&b, 0), 32);
        assert_eq!(u32_at(&b, 4), 5);
        assert_eq!(u32_at(&b, 8), 0); // num_iovas
        assert_eq!(u32_at(&b, 12), 0);
        assert_eq!(u64_at(&b, 16), 0); // no array: null
        let mut out = vec![iommu_iova_range::default(); 3];
        let req = ranges_request(5, &mut out);
        assert_eq!(req.num_iovas, 3);
        assert_eq!(req.allowed_iovas, out.as_ptr() as u64);
        assert_eq!(req.out_iova_alignment, 0);
    }

    #[test]
    fn kernel_ranges_convert_to_exclusive() {
        let r = |start, last| iommu_iova_range { start, last };
        // An x86 IOAS after attach: the MSI window cut out, 48 bits.
        let out = [r(0, 0xfedf_ffff), r(0xfef0_0000, 0xffff_ffff_ffff), r(9, 9)];
        assert_eq!(
            ranges_from(&out, 2),
            vec![0..0xfee0_0000, 0xfef0_0000..0x1_0000_0000_0000]
        );
        // A count above the array (never on success) reads only the array.
        assert_eq!(ranges_from(&out[..1], 5), vec![0..0xfee0_0000]);
        assert!(ranges_from(&out, 0).is_empty());
    }

    #[test]
    fn info_assumes_4k_pages_and_no_budget() {
        let i = info_from(vec![0x1000..0x2000, 0x4000..0x5000], 1);
        assert_eq!(i.page_sizes, 0x1000);
        assert_eq!(i.dma_avail, None);
        assert_eq!(i.iova_ranges, vec![0x1000..0x2000, 0x4000..0x5000]);
        // A 64 KiB-page host reports a larger alignment.
        assert_eq!(info_from(vec![], 0x1_0000).page_sizes, 0x1_0000);
    }
}
