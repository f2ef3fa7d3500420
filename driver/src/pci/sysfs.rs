//! Reading the kernel's view of PCI functions and IOMMU groups from sysfs,
//! and deciding whether VFIO can use a function.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use nix::unistd::{faccessat, AccessFlags};

use super::{PciAddress, PciError, CLASS_PCI_BRIDGE, PCI_STUB, VFIO_PCI};

/// The kernel's sysfs and `/dev`, below a root directory.
///
/// [`Sysfs::system`] is the running kernel's; [`Sysfs::at`] points at a
/// directory laid out the same way, so that tests can build a host with
/// whatever devices, drivers and groups they need. Paths used, relative to
/// the root:
///
/// * `sys/bus/pci/devices/ADDR/{vendor,device,class,numa_node,driver_override}`
///   and the symlinks `driver` and `iommu_group` in the same directory;
/// * `sys/bus/pci/drivers/NAME/{bind,unbind}` and `sys/bus/pci/drivers_probe`;
/// * `sys/kernel/iommu_groups/N/devices/ADDR`;
/// * `dev/vfio/N` (a group's node) and `dev/vfio/vfio` (the container).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sysfs {
    root: PathBuf,
}

/// One PCI function as sysfs describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// Its address.
    pub address: PciAddress,
    /// PCI vendor ID.
    pub vendor: u16,
    /// PCI device ID.
    pub device: u16,
    /// Class code: base class, subclass, programming interface (24 bits).
    pub class: u32,
    /// The driver bound to it, e.g. `vfio-pci`; `None` when unbound.
    pub driver: Option<String>,
    /// Its IOMMU group; `None` when the IOMMU is off.
    pub iommu_group: Option<u32>,
    /// The NUMA node it is attached to; `None` when the kernel does not say
    /// (a non-NUMA host, or `-1`).
    pub numa_node: Option<i32>,
}

impl PciDevice {
    /// Whether it is a PCI-to-PCI bridge (class `0x0604xx`).
    pub fn is_bridge(&self) -> bool {
        self.class >> 8 == CLASS_PCI_BRIDGE
    }

    /// Whether it is bound to vfio-pci.
    pub fn is_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_PCI)
    }

    /// Whether, as a member of an IOMMU group, it keeps the group from being
    /// used through VFIO: bound to a host driver other than vfio-pci or
    /// pci-stub. Unbound devices and bridges are tolerated, as the kernel
    /// tolerates them.
    pub fn blocks_group(&self) -> bool {
        match self.driver.as_deref() {
            None | Some(VFIO_PCI) | Some(PCI_STUB) => false,
            Some(_) => !self.is_bridge(),
        }
    }
}

/// Where VFIO reaches a device that is ready for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VfioGroupInfo {
    /// The device's IOMMU group.
    pub group: u32,
    /// The group's device node, `dev/vfio/N` below the [`Sysfs`] root.
    pub dev_path: PathBuf,
}

impl Sysfs {
    /// The running kernel's sysfs and `/dev`.
    pub fn system() -> Sysfs {
        Sysfs::at("/")
    }

    /// A tree shaped like the kernel's below `root` (for tests).
    pub fn at(root: impl Into<PathBuf>) -> Sysfs {
        Sysfs { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A function's sysfs directory, `sys/bus/pci/devices/ADDR`.
    pub fn device_dir(&self, addr: &PciAddress) -> PathBuf {
        self.root.join(format!("sys/bus/pci/devices/{addr}"))
    }

    /// A PCI driver's sysfs directory, `sys/bus/pci/drivers/NAME`.
    pub fn driver_dir(&self, name: &str) -> PathBuf {
        self.root.join("sys/bus/pci/drivers").join(name)
    }

    /// An IOMMU group's device node, `dev/vfio/N`.
    pub fn group_node(&self, group: u32) -> PathBuf {
        self.root.join(format!("dev/vfio/{group}"))
    }

    pub(crate) fn probe_file(&self) -> PathBuf {
        self.root.join("sys/bus/pci/drivers_probe")
    }

    fn groups_dir(&self) -> PathBuf {
        self.root.join("sys/kernel/iommu_groups")
    }

    /// Whether the kernel made IOMMU groups: with the IOMMU off (or no
    /// IOMMU driver), `sys/kernel/iommu_groups` is missing or empty.
    pub fn iommu_enabled(&self) -> bool {
        fs::read_dir(self.groups_dir()).is_ok_and(|mut d| d.next().is_some())
    }

    /// The error for a device without an IOMMU group: the IOMMU is off, or
    /// this device was left out.
    pub(crate) fn no_group_error(&self, addr: &PciAddress) -> PciError {
        if self.iommu_enabled() {
            PciError::NoIommuGroup { address: *addr }
        } else {
            PciError::IommuOff { address: *addr }
        }
    }

    /// Read one function's identity, driver, IOMMU group and NUMA node.
    pub fn device(&self, addr: &PciAddress) -> Result<PciDevice, PciError> {
        let dir = self.device_dir(addr);
        if !dir.is_dir() {
            return Err(PciError::NoDevice {
                address: *addr,
                path: dir,
            });
        }
        let iommu_group = match link_name(&dir.join("iommu_group"))? {
            None => None,
            Some(g) => Some(g.parse().map_err(|_| PciError::Malformed {
                path: dir.join("iommu_group"),
                content: g.clone(),
                why: "the link should end in the group number",
            })?),
        };
        let numa_path = dir.join("numa_node");
        let numa_node = match read_optional(&numa_path)? {
            None => None,
            Some(s) => match s.parse::<i32>() {
                Ok(n) if n >= 0 => Some(n),
                Ok(_) => None,
                Err(_) => {
                    return Err(PciError::Malformed {
                        path: numa_path,
                        content: s,
                        why: "expected a node number or -1",
                    })
                }
            },
        };
        Ok(PciDevice {
            address: *addr,
            vendor: read_hex(&dir.join("vendor"), 0xffff)? as u16,
            device: read_hex(&dir.join("device"), 0xffff)? as u16,
            class: read_hex(&dir.join("class"), 0xff_ffff)?,
            driver: link_name(&dir.join("driver"))?,
            iommu_group,
            numa_node,
        })
    }

    /// Every PCI function, or those with vendor ID `v` (and device ID `d`)
    /// when `filter` is `Some((v, d))`, sorted by address.
    pub fn list(&self, filter: Option<(u16, Option<u16>)>) -> Result<Vec<PciDevice>, PciError> {
        let dir = self.root.join("sys/bus/pci/devices");
        let mut out = Vec::new();
        for addr in addresses_in(&dir)? {
            let dev = match self.device(&addr) {
                Ok(dev) => dev,
                // Hot-unplugged since the directory was read.
                Err(PciError::NoDevice { .. }) => continue,
                Err(e) => return Err(e),
            };
            let wanted = match filter {
                None => true,
                Some((v, None)) => dev.vendor == v,
                Some((v, Some(d))) => dev.vendor == v && dev.device == d,
            };
            if wanted {
                out.push(dev);
            }
        }
        out.sort_by_key(|d| d.address);
        Ok(out)
    }

    /// The functions in IOMMU group `group` (including any being asked
    /// about), sorted by address.
    pub fn group_members(&self, group: u32) -> Result<Vec<PciDevice>, PciError> {
        let dir = self.groups_dir().join(format!("{group}/devices"));
        let mut out = Vec::new();
        for addr in addresses_in(&dir)? {
            out.push(self.device(&addr)?);
        }
        out.sort_by_key(|d| d.address);
        Ok(out)
    }

    /// Check that `dev` is bound to vfio-pci and that its IOMMU group is
    /// viable (no other member owned by a host driver); return the group.
    ///
    /// This is what the kernel checks when the group is opened; it does not
    /// look at the group's device node or permissions (see
    /// [`Sysfs::check_vfio_ready`]).
    pub fn check_bound_and_viable(&self, dev: &PciDevice) -> Result<u32, PciError> {
        let address = dev.address;
        let Some(group) = dev.iommu_group else {
            return Err(self.no_group_error(&address));
        };
        if !dev.is_vfio() {
            return Err(PciError::NotBoundToVfio {
                address,
                driver: dev.driver.clone(),
            });
        }
        let blockers: Vec<PciDevice> = self
            .group_members(group)?
            .into_iter()
            .filter(|m| m.address != address && m.blocks_group())
            .collect();
        if !blockers.is_empty() {
            return Err(PciError::GroupNotViable {
                address,
                group,
                blockers,
            });
        }
        Ok(group)
    }

    /// Check everything the kernel VFIO backend needs to open `addr`: the
    /// device exists, the IOMMU is on, the device is bound to vfio-pci, its
    /// group is viable, and the group's node exists and this process may
    /// read and write it.
    pub fn check_vfio_ready(&self, addr: &PciAddress) -> Result<VfioGroupInfo, PciError> {
        let dev = self.device(addr)?;
        let group = self.check_bound_and_viable(&dev)?;
        let path = self.group_node(group);
        match fs::metadata(&path) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(PciError::GroupNodeMissing {
                    address: *addr,
                    group,
                    path,
                })
            }
            Err(source) => return Err(PciError::Read { path, source }),
        }
        // Ask rather than open: opening a group node claims the group, and
        // fails with EBUSY while another process holds it. AT_EACCESS checks
        // the effective ids, which are what an open would use.
        let rw = AccessFlags::R_OK | AccessFlags::W_OK;
        if let Err(errno) = faccessat(None, &path, rw, nix::fcntl::AtFlags::AT_EACCESS) {
            let source = io::Error::from(errno);
            return Err(match source.kind() {
                io::ErrorKind::PermissionDenied => PciError::NoPermission {
                    address: *addr,
                    group,
                    path,
                    source,
                },
                _ => PciError::Read { path, source },
            });
        }
        Ok(VfioGroupInfo {
            group,
            dev_path: path,
        })
    }
}

/// The PCI addresses named by the entries of `dir` (a devices directory);
/// other entries are skipped.
fn addresses_in(dir: &Path) -> Result<Vec<PciAddress>, PciError> {
    let entries = fs::read_dir(dir).map_err(|source| PciError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PciError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let name = entry.file_name();
        match name.to_str().map(str::parse::<PciAddress>) {
            Some(Ok(a)) => out.push(a),
            _ => log::debug!("{}: skipping {name:?}", dir.display()),
        }
    }
    Ok(out)
}

/// A sysfs attribute's contents without the trailing newline; `None` when
/// the file does not exist.
pub(crate) fn read_optional(path: &Path) -> Result<Option<String>, PciError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s.trim_end().to_string())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PciError::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A `0x`-prefixed hex attribute (`vendor`, `device`, `class`), at most `max`.
fn read_hex(path: &Path, max: u32) -> Result<u32, PciError> {
    let s = fs::read_to_string(path).map_err(|source| PciError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let t = s.trim_end();
    t.strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .filter(|&v| v <= max)
        .ok_or_else(|| PciError::Malformed {
            path: path.to_path_buf(),
            content: t.to_string(),
            why: "expected a 0x-prefixed hex number",
        })
}

/// The last component of a symlink's target (`driver` -> `.../ixgbe`);
/// `None` when there is no link.
fn link_name(path: &Path) -> Result<Option<String>, PciError> {
    let target = match fs::read_link(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(PciError::Read {
                path: path.to_path_buf(),
                source,
            })
        }
    };
    match target.file_name().and_then(|n| n.to_str()) {
        Some(n) => Ok(Some(n.to_string())),
        None => Err(PciError::Malformed {
            path: path.to_path_buf(),
            content: target.display().to_string(),
            why: "a link to a named directory",
        }),
    }
}
