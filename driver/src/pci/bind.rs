//! Moving a PCI function between its host driver and vfio-pci, and handing
//! its IOMMU group to an unprivileged user.
//!
//! The sequence is the one `dpdk-devbind` and `driverctl` use: set the
//! device's `driver_override` (so that only the named driver may probe it,
//! whatever IDs other drivers claim), unbind it from its current driver, and
//! ask the kernel to probe it again. This needs root.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use super::sysfs::read_optional;
use super::{PciAddress, PciError, Sysfs, VfioGroupInfo, VFIO_PCI};

/// What [`Sysfs::bind_vfio`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindReport {
    /// The device.
    pub address: PciAddress,
    /// Its driver before the call (`vfio-pci` when it was already bound).
    pub previous_driver: Option<String>,
    /// It was already bound to vfio-pci; nothing was written.
    pub already_bound: bool,
}

/// What [`Sysfs::unbind_vfio`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnbindReport {
    /// The device.
    pub address: PciAddress,
    /// It was bound to vfio-pci and has been released.
    pub was_bound: bool,
    /// The driver that owns it now, if any.
    pub driver: Option<String>,
}

impl Sysfs {
    /// Bind `addr` to vfio-pci, taking it from its current driver.
    ///
    /// Checks first that the device has an IOMMU group (vfio-pci refuses it
    /// otherwise) and that vfio-pci is loaded, then sets `driver_override`
    /// to `vfio-pci`, unbinds the current driver and asks the kernel to
    /// probe the device again, and verifies that vfio-pci took it. If it did
    /// not, the override is cleared and the device probed again so that it
    /// is not left without a driver, and [`PciError::BindFailed`] says which
    /// driver has it.
    ///
    /// The override stays set, so the device comes back to vfio-pci after a
    /// rescan or a reset, until [`Sysfs::unbind_vfio`]. It does not survive
    /// a reboot.
    pub fn bind_vfio(&self, addr: &PciAddress) -> Result<BindReport, PciError> {
        let dev = self.device(addr)?;
        if dev.is_vfio() {
            log::info!("{addr}: already bound to {VFIO_PCI}");
            return Ok(BindReport {
                address: *addr,
                previous_driver: dev.driver,
                already_bound: true,
            });
        }
        if dev.iommu_group.is_none() {
            return Err(self.no_group_error(addr));
        }
        let vfio_dir = self.driver_dir(VFIO_PCI);
        if !vfio_dir.is_dir() {
            return Err(PciError::VfioPciNotLoaded { path: vfio_dir });
        }
        let dir = self.device_dir(addr);
        let address = addr.to_string();
        write_attr(&dir.join("driver_override"), VFIO_PCI)?;
        if let Some(cur) = &dev.driver {
            log::info!("{addr}: unbinding from {cur}");
            write_attr(&self.driver_dir(cur).join("unbind"), &address)?;
        }
        write_attr(&self.probe_file(), &address)?;
        let now = self.device(addr)?.driver;
        if now.as_deref() != Some(VFIO_PCI) {
            // Give the device back rather than leave it driverless; the
            // error reports the failure, so these steps only log theirs.
            log::warn!("{addr}: vfio-pci did not take it (driver now {now:?}); undoing");
            for (path, value) in [
                (dir.join("driver_override"), "\n"),
                (self.probe_file(), address.as_str()),
            ] {
                if let Err(e) = write_attr(&path, value) {
                    log::warn!("{addr}: undoing the bind: {e}");
                }
            }
            return Err(PciError::BindFailed {
                address: *addr,
                driver: now,
            });
        }
        log::info!("{addr}: bound to {VFIO_PCI}");
        Ok(BindReport {
            address: *addr,
            previous_driver: dev.driver,
            already_bound: false,
        })
    }

    /// Release `addr` from vfio-pci and let its usual driver take it back.
    ///
    /// Unbinding from vfio-pci **blocks in the kernel until every process
    /// using the device has closed it** (the kernel asks the user to release
    /// it and waits), so stop the program using the card first. Then
    /// `driver_override` is cleared and the device probed again. A device
    /// that is neither bound to vfio-pci nor overridden to it is left alone.
    pub fn unbind_vfio(&self, addr: &PciAddress) -> Result<UnbindReport, PciError> {
        let dev = self.device(addr)?;
        let override_path = self.device_dir(addr).join("driver_override");
        let overridden = read_optional(&override_path)?.as_deref() == Some(VFIO_PCI);
        if !dev.is_vfio() && !overridden {
            log::info!("{addr}: not bound to {VFIO_PCI}; nothing to do");
            return Ok(UnbindReport {
                address: *addr,
                was_bound: false,
                driver: dev.driver,
            });
        }
        let address = addr.to_string();
        if dev.is_vfio() {
            log::info!("{addr}: unbinding from {VFIO_PCI} (waits for its users to close it)");
            write_attr(&self.driver_dir(VFIO_PCI).join("unbind"), &address)?;
        }
        if overridden {
            // A lone newline is how sysfs clears the override.
            write_attr(&override_path, "\n")?;
        }
        write_attr(&self.probe_file(), &address)?;
        let driver = self.device(addr)?.driver;
        log::info!("{addr}: now bound to {driver:?}");
        Ok(UnbindReport {
            address: *addr,
            was_bound: dev.is_vfio(),
            driver,
        })
    }

    /// Give the IOMMU group node of `addr` (`/dev/vfio/N`) to user `uid`
    /// and group `gid`, so that they can use the device without root.
    ///
    /// Only the group node needs this: the container node `/dev/vfio/vfio`
    /// is world-readable and writable by default (a warning is logged when
    /// it is not). The user also needs a locked-memory limit large enough
    /// for their DMA buffers (see [`check_memlock`](super::check_memlock)).
    /// The ownership lasts until the node is recreated — when the group
    /// leaves vfio-pci, or at reboot; a udev rule makes it permanent.
    pub fn give_to_user(
        &self,
        addr: &PciAddress,
        uid: u32,
        gid: u32,
    ) -> Result<VfioGroupInfo, PciError> {
        let dev = self.device(addr)?;
        let Some(group) = dev.iommu_group else {
            return Err(self.no_group_error(addr));
        };
        let path = self.group_node(group);
        if let Err(e) = fs::symlink_metadata(&path) {
            return Err(match e.kind() {
                io::ErrorKind::NotFound if !dev.is_vfio() => PciError::NotBoundToVfio {
                    address: *addr,
                    driver: dev.driver,
                },
                io::ErrorKind::NotFound => PciError::GroupNodeMissing {
                    address: *addr,
                    group,
                    path,
                },
                _ => PciError::Read { path, source: e },
            });
        }
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| PciError::write(path.clone(), e))?;
        log::info!("{}: owner set to {uid}:{gid}", path.display());
        let container = self.root().join("dev/vfio/vfio");
        if let Ok(m) = fs::metadata(&container) {
            if m.permissions().mode() & 0o006 != 0o006 {
                log::warn!(
                    "{} is not world read/write (mode {:o}); the user needs that too",
                    container.display(),
                    m.permissions().mode() & 0o777
                );
            }
        }
        Ok(VfioGroupInfo {
            group,
            dev_path: path,
        })
    }
}

/// Write a sysfs attribute in one `write`, as the kernel expects. The file
/// must exist: sysfs attributes are never created by writing.
fn write_attr(path: &Path, value: &str) -> Result<(), PciError> {
    log::debug!("write {:?} to {}", value, path.display());
    OpenOptions::new()
        .write(true)
        // sysfs ignores O_TRUNC; it keeps a test's plain files exact.
        .truncate(true)
        .open(path)
        .and_then(|mut f| f.write_all(value.as_bytes()))
        .map_err(|e| PciError::write(path.to_path_buf(), e))
}
