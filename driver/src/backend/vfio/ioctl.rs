//! The VFIO ioctls fdma issues itself, where `vfio-ioctls` falls short:
//! IOMMU info with its capability chain (usable IOVA ranges, the mapping
//! budget), DMA map with access rights and unmap with its result, IRQ
//! routing from borrowed fds, device info and a reset that reports failure.
//!
//! Each wrapper builds the kernel's structure in a local buffer, issues one
//! ioctl and returns the errno as an [`io::Error`]; callers add context.
//! Layouts follow `include/uapi/linux/vfio.h`.

use std::io;
use std::ops::Range;
use std::os::fd::{BorrowedFd, RawFd};

/// `VFIO_TYPE` (';') and `VFIO_BASE`: every VFIO ioctl is `_IO(';', 100 + n)`.
const fn vfio_io(n: u64) -> u64 {
    ((b';' as u64) << 8) | (100 + n)
}

const DEVICE_GET_INFO: u64 = vfio_io(7);
const DEVICE_SET_IRQS: u64 = vfio_io(10);
const DEVICE_RESET: u64 = vfio_io(11);
const IOMMU_GET_INFO: u64 = vfio_io(12);
const IOMMU_MAP_DMA: u64 = vfio_io(13);
const IOMMU_UNMAP_DMA: u64 = vfio_io(14);

/// `VFIO_DEVICE_FLAGS_RESET`: the device supports `VFIO_DEVICE_RESET`.
pub const DEVICE_FLAGS_RESET: u32 = 1 << 0;
/// `VFIO_DEVICE_FLAGS_PCI`.
pub const DEVICE_FLAGS_PCI: u32 = 1 << 1;

const IOMMU_INFO_PGSIZES: u32 = 1 << 0;
const IOMMU_INFO_CAPS: u32 = 1 << 1;
const CAP_IOVA_RANGE: u16 = 1;
const CAP_DMA_AVAIL: u16 = 3;

const DMA_MAP_FLAG_READ: u32 = 1 << 0;
const DMA_MAP_FLAG_WRITE: u32 = 1 << 1;

const IRQ_SET_DATA_NONE: u32 = 1 << 0;
const IRQ_SET_DATA_EVENTFD: u32 = 1 << 2;
const IRQ_SET_ACTION_UNMASK: u32 = 1 << 4;
const IRQ_SET_ACTION_TRIGGER: u32 = 1 << 5;

fn ioctl(fd: RawFd, req: u64, arg: *mut u8) -> io::Result<i32> {
    // SAFETY: every caller passes a buffer laid out as the kernel expects
    // for `req`, at least `argsz` bytes long, alive for the call.
    let r = unsafe { libc::ioctl(fd, req as _, arg) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// What `VFIO_IOMMU_GET_INFO` reports about a type1 container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IommuInfo {
    /// Supported IOMMU page sizes (bit n = 2^n bytes).
    pub page_sizes: u64,
    /// Usable IOVA ranges, reserved windows (MSI) excluded. Empty when the
    /// kernel reports none.
    pub iova_ranges: Vec<Range<u64>>,
    /// Mappings still available (`dma_entry_limit` less those in use).
    pub dma_avail: Option<u32>,
}

/// `VFIO_IOMMU_GET_INFO` with its capability chain.
pub fn iommu_info(container: RawFd) -> io::Result<IommuInfo> {
    // struct vfio_iommu_type1_info { u32 argsz, flags; u64 iova_pgsizes;
    // u32 cap_offset, pad; } followed by the chain when argsz allows.
    let mut argsz = 24u32;
    loop {
        let mut buf = vec![0u64; (argsz as usize).div_ceil(8)];
        let bytes = buf.as_mut_ptr().cast::<u8>();
        put_u32(&mut buf, 0, argsz);
        ioctl(container, IOMMU_GET_INFO, bytes)?;
        let need = get_u32(&buf, 0);
        if need > argsz {
            argsz = need;
            continue;
        }
        return Ok(parse_iommu_info(as_bytes(&buf)));
    }
}

/// Decode a `vfio_iommu_type1_info` buffer, capability chain included.
/// Separate from the ioctl so that it is unit-tested.
pub fn parse_iommu_info(b: &[u8]) -> IommuInfo {
    let u32_at = |o: usize| {
        b.get(o..o + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap()))
    };
    let u64_at = |o: usize| {
        b.get(o..o + 8)
            .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
    };
    let flags = u32_at(4).unwrap_or(0);
    let mut info = IommuInfo {
        page_sizes: if flags & IOMMU_INFO_PGSIZES != 0 {
            u64_at(8).unwrap_or(0)
        } else {
            0
        },
        iova_ranges: Vec::new(),
        dma_avail: None,
    };
    if flags & IOMMU_INFO_CAPS == 0 {
        return info;
    }
    // struct vfio_info_cap_header { u16 id, version; u32 next; }
    let mut off = u32_at(16).unwrap_or(0) as usize;
    let mut hops = 0;
    while off != 0 && off + 8 <= b.len() && hops < 64 {
        hops += 1;
        let id = u16::from_le_bytes([b[off], b[off + 1]]);
        let next = u32_at(off + 4).unwrap_or(0) as usize;
        match id {
            CAP_IOVA_RANGE => {
                // u32 nr_iovas, reserved; then { u64 start, end (inclusive) }.
                let n = u32_at(off + 8).unwrap_or(0) as usize;
                let pairs = (0..n).map_while(|i| {
                    let at = off + 16 + 16 * i;
                    Some((u64_at(at)?, u64_at(at + 8)?))
                });
                info.iova_ranges = super::iommu::exclusive_ranges(pairs);
            }
            CAP_DMA_AVAIL => info.dma_avail = u32_at(off + 8),
            _ => {}
        }
        if next <= off {
            break;
        }
        off = next;
    }
    info
}

/// `VFIO_IOMMU_MAP_DMA`: map `size` bytes of this process at `vaddr` to
/// `iova`. Type1 pins the pages now (D5) and charges them to
/// RLIMIT_MEMLOCK unless the process has CAP_IPC_LOCK.
pub fn map_dma(
    container: RawFd,
    iova: u64,
    size: u64,
    vaddr: u64,
    read: bool,
    write: bool,
) -> io::Result<()> {
    // struct vfio_iommu_type1_dma_map { u32 argsz, flags; u64 vaddr, iova, size; }
    let mut flags = 0;
    if read {
        flags |= DMA_MAP_FLAG_READ;
    }
    if write {
        flags |= DMA_MAP_FLAG_WRITE;
    }
    let mut buf = [0u64; 4];
    put_u32(&mut buf, 0, 32);
    put_u32(&mut buf, 4, flags);
    buf[1] = vaddr;
    buf[2] = iova;
    buf[3] = size;
    ioctl(container, IOMMU_MAP_DMA, buf.as_mut_ptr().cast())?;
    Ok(())
}

/// `VFIO_IOMMU_UNMAP_DMA` of exactly one earlier mapping. Returns the bytes
/// the kernel unmapped, which the caller checks.
pub fn unmap_dma(container: RawFd, iova: u64, size: u64) -> io::Result<u64> {
    // struct vfio_iommu_type1_dma_unmap { u32 argsz, flags; u64 iova, size; }
    let mut buf = [0u64; 3];
    put_u32(&mut buf, 0, 24);
    buf[1] = iova;
    buf[2] = size;
    ioctl(container, IOMMU_UNMAP_DMA, buf.as_mut_ptr().cast())?;
    Ok(buf[2])
}

/// `VFIO_DEVICE_GET_INFO`: (flags, regions, irqs).
pub fn device_info(device: RawFd) -> io::Result<(u32, u32, u32)> {
    // struct vfio_device_info { u32 argsz, flags, num_regions, num_irqs,
    // cap_offset, pad; }
    let mut buf = [0u32; 6];
    buf[0] = 24;
    ioctl(device, DEVICE_GET_INFO, buf.as_mut_ptr().cast())?;
    Ok((buf[1], buf[2], buf[3]))
}

/// `VFIO_DEVICE_RESET`, with its result.
pub fn reset(device: RawFd) -> io::Result<()> {
    ioctl(device, DEVICE_RESET, std::ptr::null_mut()).map(|_| ())
}

/// `VFIO_DEVICE_SET_IRQS`, ACTION_TRIGGER with eventfds: vectors
/// `start..start + fds.len()` of `index` signal these fds. No fds disables
/// the index.
pub fn set_irq_eventfds(
    device: RawFd,
    index: u32,
    start: u32,
    fds: &[BorrowedFd<'_>],
) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let flags = if fds.is_empty() {
        IRQ_SET_DATA_NONE | IRQ_SET_ACTION_TRIGGER
    } else {
        IRQ_SET_DATA_EVENTFD | IRQ_SET_ACTION_TRIGGER
    };
    let raw: Vec<i32> = fds.iter().map(|f| f.as_raw_fd()).collect();
    irq_set(device, flags, index, start, &raw)
}

/// `VFIO_DEVICE_SET_IRQS`, ACTION_UNMASK: unmask a level interrupt (INTx)
/// the kernel masked when it fired.
pub fn unmask_irq(device: RawFd, index: u32, vector: u32) -> io::Result<()> {
    irq_set(
        device,
        IRQ_SET_DATA_NONE | IRQ_SET_ACTION_UNMASK,
        index,
        vector,
        &[1],
    )
}

fn irq_set(device: RawFd, flags: u32, index: u32, start: u32, data: &[i32]) -> io::Result<()> {
    // struct vfio_irq_set { u32 argsz, flags, index, start, count; u8 data[]; }
    let count = if flags & IRQ_SET_DATA_NONE != 0 && flags & IRQ_SET_ACTION_UNMASK == 0 {
        0
    } else {
        data.len()
    };
    let data_len = if flags & IRQ_SET_DATA_EVENTFD != 0 {
        4 * data.len()
    } else {
        0
    };
    let argsz = 20 + data_len;
    let mut buf = vec![0u32; argsz.div_ceil(4)];
    buf[0] = argsz as u32;
    buf[1] = flags;
    buf[2] = index;
    buf[3] = start;
    buf[4] = count as u32;
    if data_len != 0 {
        for (i, fd) in data.iter().enumerate() {
            buf[5 + i] = *fd as u32;
        }
    }
    ioctl(device, DEVICE_SET_IRQS, buf.as_mut_ptr().cast()).map(|_| ())
}

fn put_u32(buf: &mut [u64], byte: usize, v: u32) {
    let w = &mut buf[byte / 8];
    let shift = (byte % 8) * 8;
    *w = (*w & !(0xffff_ffffu64 << shift)) | (u64::from(v) << shift);
}

fn get_u32(buf: &[u64], byte: usize) -> u32 {
    (buf[byte / 8] >> ((byte % 8) * 8)) as u32
}

fn as_bytes(buf: &[u64]) -> &[u8] {
    // SAFETY: u64 has no padding and any byte pattern is a valid u8; the
    // slice covers exactly the vector's initialised elements.
    unsafe { std::slice::from_raw_parts(buf.as_ptr().cast(), buf.len() * 8) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push_u32(v: &mut Vec<u8>, x: u32) {
        v.extend_from_slice(&x.to_le_bytes());
    }
    fn push_u64(v: &mut Vec<u8>, x: u64) {
        v.extend_from_slice(&x.to_le_bytes());
    }

    /// A buffer shaped as an x86 kernel fills it: 4 KiB pages and up, two
    /// usable ranges around the MSI window, then the DMA budget.
    fn sample() -> Vec<u8> {
        let mut b = Vec::new();
        push_u32(&mut b, 96); // argsz
        push_u32(&mut b, IOMMU_INFO_PGSIZES | IOMMU_INFO_CAPS);
        push_u64(&mut b, 0xffff_ffff_ffff_f000);
        push_u32(&mut b, 24); // cap_offset
        push_u32(&mut b, 0);
        // IOVA range cap at 24: header, nr=2, reserved, ranges.
        b.extend_from_slice(&CAP_IOVA_RANGE.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        push_u32(&mut b, 72); // next
        push_u32(&mut b, 2);
        push_u32(&mut b, 0);
        push_u64(&mut b, 0);
        push_u64(&mut b, 0xfedf_ffff);
        push_u64(&mut b, 0xfef0_0000);
        push_u64(&mut b, 0x7f_ffff_ffff);
        // DMA avail cap at 72.
        b.extend_from_slice(&CAP_DMA_AVAIL.to_le_bytes());
        b.extend_from_slice(&1u16.to_le_bytes());
        push_u32(&mut b, 0);
        push_u32(&mut b, 65535);
        push_u32(&mut b, 0);
        b
    }

    #[test]
    fn parses_ranges_and_budget() {
        let info = parse_iommu_info(&sample());
        assert_eq!(info.page_sizes, 0xffff_ffff_ffff_f000);
        assert_eq!(
            info.iova_ranges,
            vec![0..0xfee0_0000, 0xfef0_0000..0x80_0000_0000]
        );
        assert_eq!(info.dma_avail, Some(65535));
    }

    #[test]
    fn tolerates_a_truncated_or_looping_chain() {
        let mut b = sample();
        b.truncate(60); // second range cut off
        let info = parse_iommu_info(&b);
        assert_eq!(info.iova_ranges, vec![0..0xfee0_0000]);
        let mut b = sample();
        b[76..80].copy_from_slice(&24u32.to_le_bytes()); // next points back
        let info = parse_iommu_info(&b);
        assert_eq!(info.dma_avail, Some(65535));
        assert_eq!(info.iova_ranges.len(), 2);
    }

    #[test]
    fn no_caps_means_no_ranges() {
        let mut b = sample();
        b[4..8].copy_from_slice(&IOMMU_INFO_PGSIZES.to_le_bytes());
        let info = parse_iommu_info(&b);
        assert!(info.iova_ranges.is_empty());
        assert_eq!(info.dma_avail, None);
    }

    #[test]
    fn ioctl_numbers_match_the_uapi() {
        // _IO(';', 100 + n) from linux/vfio.h.
        assert_eq!(DEVICE_GET_INFO, 0x3b6b);
        assert_eq!(DEVICE_SET_IRQS, 0x3b6e);
        assert_eq!(DEVICE_RESET, 0x3b6f);
        assert_eq!(IOMMU_GET_INFO, 0x3b70);
        assert_eq!(IOMMU_MAP_DMA, 0x3b71);
        assert_eq!(IOMMU_UNMAP_DMA, 0x3b72);
    }
}
