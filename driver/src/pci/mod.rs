//! Lab-host PCI plumbing for the kernel VFIO path: find the card, check that
//! VFIO can use it, and move it between its host driver and vfio-pci.
//!
//! Everything here reads and writes the kernel's sysfs, the way
//! `dpdk-devbind` and `driverctl` do, through a [`Sysfs`] rooted at `/` on a
//! real host ([`Sysfs::system`]) or at a directory shaped like it in tests
//! ([`Sysfs::at`]). The usual problems of a lab host — IOMMU off, wrong
//! driver, a shared IOMMU group, missing permissions, a low locked-memory
//! limit — are distinct [`PciError`]s whose messages say what to do.
//!
//! ```no_run
//! use fdma::pci::{PciAddress, Sysfs};
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let addr: PciAddress = "0000:01:00.0".parse()?;
//! let sys = Sysfs::system();
//! sys.bind_vfio(&addr)?;
//! let ready = sys.check_vfio_ready(&addr)?;
//! println!("open {}", ready.dev_path.display());
//! # Ok(()) }
//! ```

mod address;
mod bind;
mod error;
mod limits;
mod sysfs;

#[cfg(test)]
mod tests;

pub use address::{AddressError, PciAddress};
pub use bind::{BindReport, UnbindReport};
pub use error::PciError;
pub use limits::{check_memlock, has_cap_ipc_lock, memlock_limit};
pub use sysfs::{PciDevice, Sysfs, VfioGroupInfo};

/// The kernel driver that hands PCI functions to user space.
pub const VFIO_PCI: &str = "vfio-pci";

/// The placeholder driver that only claims a device; a group member bound to
/// it does not stop VFIO from using the group.
pub const PCI_STUB: &str = "pci-stub";

/// The PCI class code (base class and subclass, the top 16 of the 24 bits)
/// of PCI-to-PCI bridges, which VFIO tolerates in a group.
pub const CLASS_PCI_BRIDGE: u32 = 0x0604;
