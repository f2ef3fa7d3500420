//! Kernel VFIO backend: a PCI function bound to `vfio-pci`, reached through
//! its IOMMU group and a type1 container — the lab host's transport — or,
//! with the `iommufd` cargo feature, through its VFIO cdev and an iommufd
//! IOAS ([`OpenVia`]; the DMA domain is an [`Iommu`]).
//!
//! Opening through the group follows the kernel's order: container, group
//! (it must be viable: every device in it bound to vfio-pci or to no
//! driver), IOMMU type1v2, device fd. Through the cdev: `/dev/iommu`, an
//! IOAS, the device's `/dev/vfio/devices/vfioN`, bound to the iommufd and
//! attached to the IOAS. `vfio-ioctls` does that part; the calls whose
//! results matter to fdma are issued by [`ioctl`] and [`iommu`] so that
//! every failure is reported, not logged.
//!
//! The cdev path is verified on a lab host only; CI builds and unit-tests
//! it (no kernel installable there has `CONFIG_IOMMUFD`). See [`iommu`].
//!
//! * **Regions**: `pread`/`pwrite` on the device fd at the region's offset;
//!   BARs are mmapped where the kernel allows it, sparse areas respected
//!   (an MSI-X table inside a BAR is not mappable on older kernels).
//! * **D5**: type1 and iommufd pin the pages behind a virtual address when
//!   they map them, and charge them to `RLIMIT_MEMLOCK` unless the process
//!   has `CAP_IPC_LOCK`; a map beyond the limit is a
//!   [`BackendError::Memlock`], not a bare `ENOMEM`. Mappings by fd use the
//!   fd's mapping in this process, which pins the same pages.
//! * **IOVA ranges** come from `VFIO_IOMMU_GET_INFO`'s capability (type1)
//!   or `IOMMU_IOAS_IOVA_RANGES` (iommufd): the kernel leaves out its
//!   reserved windows (the x86 MSI window at `0xfee00000`). Older type1
//!   kernels report none; then the MSI window is cut here. Page 0 is never
//!   used, so that a zero IOVA is always a bug.
//! * **Interrupts**: INTx, MSI and MSI-X route to eventfds; INTx is masked
//!   by the kernel when it fires and [`VfioBackend::unmask_intx`] unmasks
//!   it. The device-request interrupt ([`IrqKind::Request`]) is the kernel
//!   asking the driver to let go (an unbind, a hot unplug): the driver
//!   fails its fences and calls [`Backend::release`], after which the
//!   unbind completes.
//! * **Reset**: `VFIO_DEVICE_RESET` where the device advertises it, with
//!   its result; [`BackendError::ResetUnsupported`] where not.
//! * **Posted writes**: a `pwrite` to a BAR is a posted PCIe write. A
//!   non-posted [`Backend::region_write`] is followed by a config-space
//!   read, which the root complex may not reorder ahead of it and which
//!   has no side effects on the device's registers.

pub mod ioctl;
pub mod iommu;
mod release;
mod rw;

use crate::backend::{
    BResult, Backend, DmaLimits, DmaProt, DmaSource, IrqKind, RegFault, RegionInfo, RegionMap,
};
use crate::error::BackendError;
pub use iommu::Iommu;
use release::MappedBars;
use rw::{pread_all, pwrite_all};
use std::collections::BTreeMap;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioRegionInfoCap};

/// VFIO's region index of PCI config space.
const CONFIG_REGION: u32 = 7;
/// `VFIO_REGION_INFO_FLAG_{READ,WRITE,MMAP}`.
const REGION_READ: u32 = 1;
const REGION_WRITE: u32 = 2;
const REGION_MMAP: u32 = 4;

#[derive(Debug, Clone)]
struct Region {
    info: RegionInfo,
    /// Offset of the region within the device fd.
    fd_offset: u64,
}

/// How [`VfioBackend::open_with`] reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OpenVia {
    /// Its IOMMU group (`/dev/vfio/N`) in a type1 container
    /// (`/dev/vfio/vfio`). The default, and what [`VfioBackend::open`] does.
    #[default]
    Group,
    /// Its VFIO cdev (`/dev/vfio/devices/vfioN`) bound to `/dev/iommu`, in
    /// an iommufd IOAS. Needs the `iommufd` cargo feature; a build without
    /// it refuses with [`BackendError::Invalid`].
    Cdev,
}

/// A PCI function behind the kernel's vfio-pci.
pub struct VfioBackend {
    name: String,
    iommu: Iommu,
    /// The open device; `None` once released to the kernel.
    device: RwLock<Option<VfioDevice>>,
    regions: BTreeMap<u32, Region>,
    irq_counts: [u32; 5],
    device_flags: u32,
    limits: DmaLimits,
    lost: AtomicBool,
    bars: MappedBars,
}

impl std::fmt::Debug for VfioBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VfioBackend")
            .field("name", &self.name)
            .field("iommu", &self.iommu.kind())
            .field("lost", &self.is_lost())
            .field("device_flags", &self.device_flags)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

fn irq_index(kind: IrqKind) -> u32 {
    match kind {
        IrqKind::Intx => 0,
        IrqKind::Msi => 1,
        IrqKind::Msix => 2,
        IrqKind::Request => 4,
    }
}

/// The errno behind a `vfio-ioctls` error, where it carries one.
fn vfio_errno(e: &vfio_ioctls::VfioError) -> Option<i32> {
    use std::error::Error as _;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(s) = cur {
        if let Some(io) = s.downcast_ref::<io::Error>() {
            return io.raw_os_error();
        }
        if let Some(sys) = s.downcast_ref::<vmm_sys_util::errno::Error>() {
            return Some(sys.errno());
        }
        cur = s.source();
    }
    None
}

impl VfioBackend {
    /// Open the PCI function `address` (`dddd:bb:dd.f`), which must be bound
    /// to vfio-pci (`fdma bind`), through its IOMMU group and a type1
    /// container ([`OpenVia::Group`]). The lab host's usual problems (IOMMU
    /// off, wrong driver, group not viable, no permission) are found first
    /// and reported as such.
    pub fn open(address: &str) -> BResult<VfioBackend> {
        Self::open_with(address, OpenVia::Group)
    }

    /// Open the PCI function `address` as [`VfioBackend::open`] does, the
    /// way `how` says. [`OpenVia::Cdev`] needs the `iommufd` cargo feature
    /// (a build without it returns [`BackendError::Invalid`]) and a kernel
    /// with `CONFIG_IOMMUFD` and `CONFIG_VFIO_DEVICE_CDEV`.
    pub fn open_with(address: &str, how: OpenVia) -> BResult<VfioBackend> {
        let addr: crate::pci::PciAddress = address.parse().map_err(|e| BackendError::Invalid {
            device: address.to_string(),
            op: "open".into(),
            why: format!("{e}"),
        })?;
        let name = addr.to_string();
        #[cfg(not(feature = "iommufd"))]
        if how == OpenVia::Cdev {
            return Err(BackendError::Invalid {
                device: name,
                op: "open via the VFIO cdev".into(),
                why: "this build of fdma lacks the `iommufd` cargo feature".into(),
            });
        }
        let sysfs = crate::pci::Sysfs::system();
        let preflight = |source| BackendError::Preflight {
            device: name.clone(),
            source,
        };
        let open_err = |e: vfio_ioctls::VfioError| match vfio_errno(&e) {
            Some(libc::EBUSY) => BackendError::Busy {
                device: name.clone(),
                source: io::Error::other(e),
            },
            _ => BackendError::Open {
                device: name.clone(),
                source: io::Error::other(e),
            },
        };
        let path = PathBuf::from("/sys/bus/pci/devices").join(&name);
        let (iommu, device) = match how {
            OpenVia::Group => {
                sysfs.check_vfio_ready(&addr).map_err(preflight)?;
                let iommu = Iommu::Type1(Arc::new(VfioContainer::new(None).map_err(open_err)?));
                let device = VfioDevice::new(&path, iommu.ops(), false).map_err(open_err)?;
                (iommu, device)
            }
            #[cfg(not(feature = "iommufd"))]
            OpenVia::Cdev => unreachable!("refused above"),
            #[cfg(feature = "iommufd")]
            OpenVia::Cdev => {
                // No group node is needed (a kernel may have none), but the
                // binding and the group's viability are.
                let dev = sysfs.device(&addr).map_err(preflight)?;
                sysfs.check_bound_and_viable(&dev).map_err(preflight)?;
                if !path.join("vfio-dev").is_dir() {
                    return Err(BackendError::Open {
                        device: name.clone(),
                        source: io::Error::new(
                            io::ErrorKind::NotFound,
                            "no VFIO cdev (sysfs vfio-dev/): kernel without \
                             CONFIG_VFIO_DEVICE_CDEV?",
                        ),
                    });
                }
                let fd = iommufd_ioctls::IommuFd::new().map_err(|e| BackendError::Open {
                    device: name.clone(),
                    source: match e {
                        iommufd_ioctls::IommufdError::OpenIommufd(io) => io::Error::new(
                            io.kind(),
                            format!("/dev/iommu: {io} (kernel without CONFIG_IOMMUFD?)"),
                        ),
                        other => io::Error::other(other),
                    },
                })?;
                let ioas =
                    vfio_ioctls::VfioIommufd::new(Arc::new(fd), None, None).map_err(open_err)?;
                let iommu = Iommu::Iommufd(Arc::new(ioas));
                // Bound to the iommufd and attached to the IOAS.
                let device = VfioDevice::new(&path, iommu.ops(), true).map_err(open_err)?;
                (iommu, device)
            }
        };
        let sys = |op: &str, source: io::Error| BackendError::Sys {
            device: name.clone(),
            op: op.to_string(),
            source,
        };
        let (device_flags, num_regions, num_irqs) =
            ioctl::device_info(device.as_raw_fd()).map_err(|e| sys("VFIO_DEVICE_GET_INFO", e))?;
        let mut regions = BTreeMap::new();
        // The BARs and config space; the ROM and VGA regions are not ours.
        for index in (0..=5).chain([CONFIG_REGION]) {
            if index >= num_regions {
                continue;
            }
            let size = device.get_region_size(index);
            if size == 0 {
                continue;
            }
            let flags = device.get_region_flags(index);
            let mut mmap_areas = Vec::new();
            if flags & REGION_MMAP != 0 {
                let sparse = device
                    .get_region_caps(index)
                    .into_iter()
                    .find_map(|c| match c {
                        VfioRegionInfoCap::SparseMmap(s) => Some(s),
                        _ => None,
                    });
                match sparse {
                    Some(s) => mmap_areas.extend(
                        s.areas
                            .iter()
                            .filter(|a| a.size != 0)
                            .map(|a| a.offset..a.offset + a.size),
                    ),
                    None => mmap_areas.push(0..size),
                }
            }
            regions.insert(
                index,
                Region {
                    info: RegionInfo {
                        index,
                        size,
                        read: flags & REGION_READ != 0,
                        write: flags & REGION_WRITE != 0,
                        mmap_areas,
                    },
                    fd_offset: device.get_region_offset(index),
                },
            );
        }
        let mut irq_counts = [0u32; 5];
        for kind in [IrqKind::Intx, IrqKind::Msi, IrqKind::Msix, IrqKind::Request] {
            let i = irq_index(kind);
            // Only indices the device reports: vfio-ioctls warns on others.
            if i < num_irqs {
                irq_counts[i as usize] = device.get_irq_info(i).map_or(0, |q| q.count);
            }
        }
        // After the attach: attaching narrows an IOAS's ranges.
        let info = iommu.info().map_err(|e| sys(iommu.info_op(), e))?;
        let limits = limits_from(&info);
        log::info!(
            "{name}: vfio-pci via {}, flags {device_flags:#x}, {} regions, irqs intx/msi/msix/req {}/{}/{}/{}, iova {:x?}",
            iommu.kind(),
            regions.len(),
            irq_counts[0],
            irq_counts[1],
            irq_counts[2],
            irq_counts[4],
            limits.iova_ranges
        );
        Ok(VfioBackend {
            name,
            iommu,
            device: RwLock::new(Some(device)),
            regions,
            irq_counts,
            device_flags,
            limits,
            lost: AtomicBool::new(false),
            bars: MappedBars::default(),
        })
    }

    /// The DMA domain's kind: `"type1"` or `"iommufd"`.
    pub fn iommu_kind(&self) -> &'static str {
        self.iommu.kind()
    }

    /// Whether the device advertises `VFIO_DEVICE_RESET`.
    pub fn has_reset(&self) -> bool {
        self.device_flags & ioctl::DEVICE_FLAGS_RESET != 0
    }

    /// Unmask INTx after it fired (the kernel masks a level interrupt
    /// until the driver has served it).
    pub fn unmask_intx(&self) -> BResult<()> {
        self.with_fd("unmask INTx", |fd| ioctl::unmask_irq(fd, 0, 0))
    }

    fn lost_err(&self, op: &str, source: Option<io::Error>) -> BackendError {
        BackendError::Lost {
            device: self.name.clone(),
            op: op.to_string(),
            source,
        }
    }

    /// Run `f` with the device fd, holding it open for the call. ENODEV
    /// (the device went away under us) marks the backend lost.
    fn with_fd<T>(&self, op: &str, f: impl FnOnce(RawFd) -> io::Result<T>) -> BResult<T> {
        if crate::fork::in_forked_child() {
            return Err(BackendError::Forked {
                device: self.name.clone(),
            });
        }
        let guard = self.device.read().unwrap_or_else(|e| e.into_inner());
        let Some(dev) = guard.as_ref() else {
            return Err(self.lost_err(op, None));
        };
        f(dev.as_raw_fd()).map_err(|e| {
            if e.raw_os_error() == Some(libc::ENODEV) {
                self.lost.store(true, Ordering::Release);
                self.lost_err(op, Some(e))
            } else {
                BackendError::Sys {
                    device: self.name.clone(),
                    op: op.to_string(),
                    source: e,
                }
            }
        })
    }

    fn region(&self, op: &str, index: u32, offset: u64, len: usize, write: bool) -> BResult<u64> {
        let invalid = |why: String| BackendError::Invalid {
            device: self.name.clone(),
            op: format!("{op} region {index} offset {offset:#x} len {len}"),
            why,
        };
        let Some(r) = self.regions.get(&index) else {
            return Err(invalid("no such region".into()));
        };
        if offset
            .checked_add(len as u64)
            .map_or(true, |e| e > r.info.size)
        {
            return Err(invalid(format!(
                "beyond the region's {:#x} bytes",
                r.info.size
            )));
        }
        if (write && !r.info.write) || (!write && !r.info.read) {
            return Err(invalid("access not permitted by the region".into()));
        }
        Ok(r.fd_offset + offset)
    }

    /// A 32-bit register access for the signalling path (F10): no
    /// allocation, no log. `f` gets the device fd, the register's offset in
    /// it and config space's offset.
    fn reg_nonalloc<T>(
        &self,
        index: u32,
        offset: u64,
        f: impl FnOnce(RawFd, u64, u64) -> io::Result<T>,
    ) -> Result<T, RegFault> {
        if crate::fork::in_forked_child() {
            return Err(RegFault::Forked);
        }
        let (Some(r), Some(cfg)) = (self.regions.get(&index), self.regions.get(&CONFIG_REGION))
        else {
            return Err(RegFault::Other);
        };
        if offset + 4 > r.info.size {
            return Err(RegFault::Other);
        }
        let guard = self.device.read().unwrap_or_else(|e| e.into_inner());
        let Some(dev) = guard.as_ref() else {
            return Err(RegFault::Lost);
        };
        f(dev.as_raw_fd(), r.fd_offset + offset, cfg.fd_offset).map_err(|e| {
            match e.raw_os_error() {
                Some(libc::ENODEV) => {
                    self.lost.store(true, Ordering::Release);
                    RegFault::Lost
                }
                errno => RegFault::Refused(errno.unwrap_or(libc::EIO)),
            }
        })
    }

    /// A posted write: one `pwrite`, no flush.
    fn pwrite(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        let at = self.region("write", index, offset, data.len(), true)?;
        self.with_fd("region write", |fd| pwrite_all(fd, data, at))
    }
}

/// The DMA limits of a type1 container or an iommufd IOAS.
fn limits_from(info: &ioctl::IommuInfo) -> DmaLimits {
    let mut ranges = if info.iova_ranges.is_empty() {
        // No capability (kernel < 5.4): a 39-bit space, as the smallest
        // Intel VT-d address width, less the x86 MSI window.
        let msi = crate::backend::X86_MSI_WINDOW;
        vec![0..msi.start, msi.end..1 << 39]
    } else {
        info.iova_ranges.clone()
    };
    for r in &mut ranges {
        r.start = r.start.max(0x1000);
    }
    ranges.retain(|r| r.end > r.start);
    let largest = ranges.iter().map(|r| r.end - r.start).max().unwrap_or(0);
    DmaLimits {
        // type1's default dma_entry_limit.
        max_mappings: info.dma_avail.unwrap_or(u16::MAX as u32),
        max_mapping_size: largest,
        page_sizes: if info.page_sizes == 0 {
            0x1000
        } else {
            info.page_sizes
        },
        iova_ranges: ranges,
        vaddr_pinned: true,
    }
}

impl Backend for VfioBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn region_info(&self, index: u32) -> Option<&RegionInfo> {
        self.regions.get(&index).map(|r| &r.info)
    }

    fn region_read(&self, index: u32, offset: u64, buf: &mut [u8]) -> BResult<()> {
        let at = self.region("read", index, offset, buf.len(), false)?;
        self.with_fd("region read", |fd| pread_all(fd, buf, at))
    }

    fn region_write(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        self.pwrite(index, offset, data)?;
        if index != CONFIG_REGION {
            // Flush the posted write: a read may not pass it.
            let mut id = [0u8; 2];
            self.config_read(0, &mut id)?;
        }
        Ok(())
    }

    fn region_write_posted(&self, index: u32, offset: u64, data: &[u8]) -> BResult<()> {
        self.pwrite(index, offset, data)
    }

    fn region_mmap(&self, index: u32) -> BResult<Option<Vec<RegionMap>>> {
        let Some(r) = self.regions.get(&index) else {
            return Ok(None);
        };
        if r.info.mmap_areas.is_empty() || index == CONFIG_REGION {
            return Ok(None);
        }
        let guard = self.device.read().unwrap_or_else(|e| e.into_inner());
        let Some(dev) = guard.as_ref() else {
            return Err(self.lost_err("mmap", None));
        };
        let mut maps = Vec::with_capacity(r.info.mmap_areas.len());
        for a in &r.info.mmap_areas {
            let len = (a.end - a.start) as usize;
            let m = memmap2::MmapOptions::new()
                .offset(r.fd_offset + a.start)
                .len(len)
                .map_raw(dev.as_raw_fd())
                .map_err(|source| BackendError::Sys {
                    device: self.name.clone(),
                    op: format!("mmap region {index} area {:#x}+{len:#x}", a.start),
                    source,
                })?;
            maps.push(self.bars.track(m, a.start));
        }
        Ok(Some(maps))
    }

    fn config_read(&self, offset: u64, buf: &mut [u8]) -> BResult<()> {
        self.region_read(CONFIG_REGION, offset, buf)
    }

    fn config_write(&self, offset: u64, data: &[u8]) -> BResult<()> {
        self.pwrite(CONFIG_REGION, offset, data)
    }

    fn dma_limits(&self) -> &DmaLimits {
        &self.limits
    }

    fn dma_map(&self, iova: u64, size: u64, source: DmaSource<'_>, prot: DmaProt) -> BResult<()> {
        let vaddr = match source {
            DmaSource::Vaddr(p) => p as u64,
            // The same pages, through this process's mapping of the fd.
            DmaSource::Fd { vaddr, .. } => vaddr as u64,
        };
        let op = format!("DMA map iova {iova:#x} size {size:#x}");
        if size == 0 || iova % 4096 != 0 || size % 4096 != 0 || vaddr % 4096 != 0 {
            return Err(BackendError::Invalid {
                device: self.name.clone(),
                op,
                why: "iova, size and address must be page-aligned and size non-zero".into(),
            });
        }
        let r = {
            let guard = self.device.read().unwrap_or_else(|e| e.into_inner());
            if guard.is_none() {
                return Err(self.lost_err(&op, None));
            }
            self.iommu.map(iova, size, vaddr, prot.read, prot.write)
        };
        r.map_err(|e| match e.raw_os_error() {
            Some(libc::ENOMEM) if !crate::pci::has_cap_ipc_lock() => {
                let soft = crate::pci::memlock_limit().ok().and_then(|l| l.0);
                BackendError::Memlock {
                    device: self.name.clone(),
                    bytes: size,
                    limit: soft.unwrap_or(u64::MAX),
                }
            }
            Some(errno @ (libc::EEXIST | libc::EINVAL | libc::ENOSPC)) => BackendError::Refused {
                device: self.name.clone(),
                op,
                errno,
            },
            _ => BackendError::Sys {
                device: self.name.clone(),
                op,
                source: e,
            },
        })
    }

    fn dma_unmap(&self, iova: u64, size: u64) -> BResult<()> {
        let op = || format!("DMA unmap iova {iova:#x} size {size:#x}");
        let guard = self.device.read().unwrap_or_else(|e| e.into_inner());
        if guard.is_none() && !self.iommu.mappings_outlive_device() {
            // Released: the container's last group left, so the kernel
            // dropped every mapping and unpinned its pages already. (An
            // IOAS keeps them: unmap as usual.)
            return Ok(());
        }
        match self.iommu.unmap(iova, size) {
            Ok(n) if n == size => Ok(()),
            Ok(n) => Err(BackendError::Invalid {
                device: self.name.clone(),
                op: op(),
                why: format!("the kernel unmapped {n:#x} bytes: not one whole mapping"),
            }),
            Err(source) => Err(BackendError::Sys {
                device: self.name.clone(),
                op: op(),
                source,
            }),
        }
    }

    fn irq_count(&self, kind: IrqKind) -> u32 {
        self.irq_counts[irq_index(kind) as usize]
    }

    fn set_irq_eventfds(&self, kind: IrqKind, start: u32, fds: &[BorrowedFd<'_>]) -> BResult<()> {
        let count = self.irq_count(kind);
        if start
            .checked_add(fds.len() as u32)
            .map_or(true, |e| e > count)
        {
            return Err(BackendError::Invalid {
                device: self.name.clone(),
                op: format!("set {kind:?} eventfds {start}+{}", fds.len()),
                why: format!("the device has {count} vectors"),
            });
        }
        self.with_fd("VFIO_DEVICE_SET_IRQS", |fd| {
            ioctl::set_irq_eventfds(fd, irq_index(kind), start, fds)
        })
    }

    fn disable_irqs(&self, kind: IrqKind) -> BResult<()> {
        if self.irq_count(kind) == 0 {
            return Ok(());
        }
        self.with_fd("VFIO_DEVICE_SET_IRQS (disable)", |fd| {
            ioctl::set_irq_eventfds(fd, irq_index(kind), 0, &[])
        })
    }

    fn reset(&self) -> BResult<()> {
        if !self.has_reset() {
            return Err(BackendError::ResetUnsupported {
                device: self.name.clone(),
            });
        }
        self.with_fd("VFIO_DEVICE_RESET", ioctl::reset)
    }

    fn read32_nonalloc(&self, index: u32, offset: u64) -> Result<u32, RegFault> {
        self.reg_nonalloc(index, offset, |fd, at, _| {
            let mut b = [0u8; 4];
            pread_all(fd, &mut b, at).map(|()| u32::from_le_bytes(b))
        })
    }

    fn write32_nonalloc(&self, index: u32, offset: u64, value: u32) -> Result<(), RegFault> {
        self.reg_nonalloc(index, offset, |fd, at, cfg| {
            // Flushed by a config read, as `region_write` is.
            let mut id = [0u8; 2];
            pwrite_all(fd, &value.to_le_bytes(), at).and_then(|()| pread_all(fd, &mut id, cfg))
        })
    }

    fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    fn release(&self) {
        self.lost.store(true, Ordering::Release);
        // The BAR mappings hold the device file open; the kernel's release
        // (and with it the unbind waiting on us) needs every one gone.
        self.bars.revoke();
        let dev = self
            .device
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(d) = dev {
            // Closing the device fd disables its interrupts and leaves the
            // group; the container's mappings go with its last group. An
            // IOAS keeps its mappings until unmapped or dropped with us.
            drop(d);
            log::warn!("{}: device released to the kernel", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_without_the_capability_cut_the_msi_window_and_page_zero() {
        let l = limits_from(&ioctl::IommuInfo {
            page_sizes: 0,
            iova_ranges: vec![],
            dma_avail: None,
        });
        assert_eq!(
            l.iova_ranges,
            vec![0x1000..0xfee0_0000, 0xfef0_0000..1 << 39]
        );
        assert_eq!(l.max_mappings, 65535);
        assert_eq!(l.page_sizes, 0x1000);
        assert!(l.vaddr_pinned);
    }

    #[cfg(not(feature = "iommufd"))]
    #[test]
    fn cdev_without_the_feature_is_a_typed_refusal() {
        let e = VfioBackend::open_with("0000:01:00.0", OpenVia::Cdev).unwrap_err();
        match e {
            BackendError::Invalid { device, why, .. } => {
                assert_eq!(device, "0000:01:00.0");
                assert!(why.contains("`iommufd` cargo feature"), "{why}");
            }
            other => panic!("expected Invalid, got {other:?}"),
        }
        // A bad address is still reported as such first.
        assert!(matches!(
            VfioBackend::open_with("nonsense", OpenVia::Cdev),
            Err(BackendError::Invalid { op, .. }) if op == "open"
        ));
    }

    #[test]
    fn open_via_defaults_to_the_group() {
        assert_eq!(OpenVia::default(), OpenVia::Group);
    }

    #[test]
    fn limits_follow_the_kernel_ranges() {
        let l = limits_from(&ioctl::IommuInfo {
            page_sizes: 0x4020_1000,
            iova_ranges: vec![0..0xfee0_0000, 0xfef0_0000..1 << 48],
            dma_avail: Some(100),
        });
        assert_eq!(l.iova_ranges[0], 0x1000..0xfee0_0000);
        assert_eq!(l.max_mappings, 100);
        assert_eq!(l.max_mapping_size, (1 << 48) - 0xfef0_0000);
    }
}
