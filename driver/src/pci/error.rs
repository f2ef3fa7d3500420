//! [`PciError`]: what goes wrong preparing a PCI function for VFIO, each
//! case with what to do about it.

use std::io;
use std::path::PathBuf;

use super::{PciAddress, PciDevice};

/// Why a PCI function cannot be used through VFIO yet, or why binding or
/// unbinding it failed.
///
/// Messages name the address, file and IOMMU group involved and say how to
/// fix the problem; an underlying I/O error is the [`source`] and is not
/// repeated in the message, so print the whole chain.
///
/// [`source`]: std::error::Error::source
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PciError {
    /// No such PCI function in sysfs.
    #[error(
        "no PCI device {address} ({path} does not exist): \
         `fdma list --all` or `lspci -D` shows the addresses of this host"
    )]
    NoDevice {
        /// The address asked for.
        address: PciAddress,
        /// Its sysfs directory.
        path: PathBuf,
    },
    /// A sysfs or device file could not be read.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A sysfs file could not be written, for a reason other than
    /// permissions (those are [`PciError::NotRoot`]).
    #[error("cannot write {path}")]
    Write {
        /// The file.
        path: PathBuf,
        /// Why (the kernel's refusal: `ENODEV`, `EBUSY`, `EINVAL`, ...).
        #[source]
        source: io::Error,
    },
    /// A sysfs file holds something the kernel does not write there.
    #[error("unexpected contents {content:?} in {path}: {why}")]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it held.
        content: String,
        /// What was expected.
        why: &'static str,
    },
    /// The IOMMU is off: the kernel made no IOMMU groups at all, so VFIO
    /// cannot isolate the device's DMA.
    #[error(
        "{address} has no IOMMU group: the IOMMU is off (no IOMMU groups on this host). \
         Enable VT-d/AMD-Vi in the firmware, add `intel_iommu=on iommu=pt` (Intel) or \
         `amd_iommu=on iommu=pt` (AMD) to the kernel command line and reboot"
    )]
    IommuOff {
        /// The device.
        address: PciAddress,
    },
    /// Other devices have IOMMU groups but this one has none.
    #[error(
        "{address} has no IOMMU group although the IOMMU is on: look for DMAR or AMD-Vi \
         messages about it in `dmesg`; check that `intel_iommu=on` or `amd_iommu=on` \
         (with `iommu=pt`) is on the kernel command line"
    )]
    NoIommuGroup {
        /// The device.
        address: PciAddress,
    },
    /// The device is bound to another driver, or to none.
    #[error("{address} is {}, not to vfio-pci: run `sudo fdma bind {address}`", bound_to(.driver))]
    NotBoundToVfio {
        /// The device.
        address: PciAddress,
        /// Its driver, if any.
        driver: Option<String>,
    },
    /// Another device in the IOMMU group is owned by a host driver, so the
    /// kernel will not let the group be opened.
    #[error(
        "IOMMU group {group} of {address} is not viable: every device in it must be bound \
         to vfio-pci or pci-stub, or have no driver, but {}. Bind those too \
         (`sudo fdma bind ADDR` for each), or move the card to a slot with its own \
         IOMMU group (a root port or switch with ACS)",
        blockers_list(.blockers)
    )]
    GroupNotViable {
        /// The device asked about.
        address: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// The group members that make it unusable.
        blockers: Vec<PciDevice>,
    },
    /// The device is bound to vfio-pci but its group has no device node.
    #[error(
        "{path} (IOMMU group {group} of {address}) does not exist although vfio-pci is bound: \
         in a container, pass the device node in (`--device {path}`); otherwise check that \
         udev created it"
    )]
    GroupNodeMissing {
        /// The device.
        address: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// The missing node, `/dev/vfio/N`.
        path: PathBuf,
    },
    /// The caller may not open the group's device node.
    #[error(
        "no read/write access to {path} (IOMMU group {group} of {address}): run as root, or \
         hand the group to your user with `sudo fdma bind {address} --user $USER`"
    )]
    NoPermission {
        /// The device.
        address: PciAddress,
        /// Its IOMMU group.
        group: u32,
        /// The node, `/dev/vfio/N`.
        path: PathBuf,
        /// The refusal.
        #[source]
        source: io::Error,
    },
    /// The vfio-pci driver is not loaded.
    #[error("vfio-pci is not loaded ({path} does not exist): sudo modprobe vfio-pci")]
    VfioPciNotLoaded {
        /// The driver's sysfs directory.
        path: PathBuf,
    },
    /// Changing drivers or device ownership needs root.
    #[error("not allowed to change {path}: changing a device's driver or owner needs root (sudo)")]
    NotRoot {
        /// The file that could not be written or changed.
        path: PathBuf,
        /// The refusal (`EACCES` or `EPERM`).
        #[source]
        source: io::Error,
    },
    /// After the bind sequence the device is still not on vfio-pci.
    #[error(
        "{address} did not bind to vfio-pci: it is {} afterwards. `dmesg | tail` says why \
         (vfio-pci refuses devices without an IOMMU group); the previous driver was \
         offered the device back",
        bound_to(.driver)
    )]
    BindFailed {
        /// The device.
        address: PciAddress,
        /// Its driver after the attempt.
        driver: Option<String>,
    },
    /// The locked-memory limit is below what the caller's DMA buffers need.
    ///
    /// VFIO's type1 IOMMU driver pins every page mapped for the device and
    /// counts it against `RLIMIT_MEMLOCK`, unless the process has
    /// `CAP_IPC_LOCK`.
    #[error(
        "the locked-memory limit (RLIMIT_MEMLOCK) is {have} bytes but DMA buffers need {need}: \
         raise it with `ulimit -l {}` (up to the hard limit), or for good in \
         /etc/security/limits.conf with the line `USER - memlock {}` and a new login; \
         or run as root",
        .need.div_ceil(1024),
        .need.div_ceil(1024)
    )]
    MemlockTooLow {
        /// The current soft limit, bytes.
        have: u64,
        /// What is needed, bytes.
        need: u64,
    },
    /// `getrlimit(RLIMIT_MEMLOCK)` failed.
    #[error("cannot read the locked-memory limit (getrlimit RLIMIT_MEMLOCK)")]
    Rlimit {
        /// Why.
        #[source]
        source: io::Error,
    },
}

fn bound_to(driver: &Option<String>) -> String {
    match driver {
        Some(d) => format!("bound to {d}"),
        None => "bound to no driver".into(),
    }
}

fn blockers_list(blockers: &[PciDevice]) -> String {
    let each: Vec<String> = blockers
        .iter()
        .map(|d| match &d.driver {
            Some(drv) => format!("{} is bound to {drv}", d.address),
            None => format!("{} has no driver", d.address),
        })
        .collect();
    each.join(", ")
}

impl PciError {
    /// Map a failed write or ownership change: permission problems become
    /// [`PciError::NotRoot`], the rest [`PciError::Write`].
    pub(crate) fn write(path: PathBuf, source: io::Error) -> PciError {
        match source.kind() {
            io::ErrorKind::PermissionDenied => PciError::NotRoot { path, source },
            _ => PciError::Write { path, source },
        }
    }
}
