//! Flag and index constants from the spec (and from `<linux/vfio.h>`, which
//! the spec reuses).

/// Protocol major version this crate speaks.
pub const VERSION_MAJOR: u16 = 0;
/// Highest protocol minor version this crate speaks.
pub const VERSION_MINOR: u16 = 1;

/// DMA_MAP flags.
pub mod dma {
    /// The device may read the range.
    pub const FLAG_READ: u32 = 1 << 0;
    /// The device may write the range.
    pub const FLAG_WRITE: u32 = 1 << 1;
}

/// DEVICE_GET_INFO flags.
pub mod device {
    /// The device supports DEVICE_RESET.
    pub const FLAG_RESET: u32 = 1 << 0;
    /// The device is a PCI device.
    pub const FLAG_PCI: u32 = 1 << 1;
}

/// Region flags, capability IDs and PCI region indexes.
pub mod region {
    /// The client may read the region.
    pub const FLAG_READ: u32 = 1 << 0;
    /// The client may write the region.
    pub const FLAG_WRITE: u32 = 1 << 1;
    /// The client may mmap the region (the reply carries an fd).
    pub const FLAG_MMAP: u32 = 1 << 2;
    /// The reply has a capability chain.
    pub const FLAG_CAPS: u32 = 1 << 3;

    /// Capability ID: sparse mmap areas.
    pub const CAP_SPARSE_MMAP: u16 = 1;
    /// Capability ID: device-specific region type.
    pub const CAP_TYPE: u16 = 2;
    /// Version of the sparse mmap capability.
    pub const CAP_SPARSE_MMAP_VERSION: u16 = 1;

    /// PCI BAR0 region index (BAR n is index n, up to 5).
    pub const PCI_BAR0: u32 = 0;
    /// PCI BAR5 region index.
    pub const PCI_BAR5: u32 = 5;
    /// PCI expansion ROM region index.
    pub const PCI_ROM: u32 = 6;
    /// PCI configuration space region index.
    pub const PCI_CONFIG: u32 = 7;
    /// PCI VGA region index.
    pub const PCI_VGA: u32 = 8;
    /// Number of standard PCI region indexes.
    pub const PCI_NUM_REGIONS: u32 = 9;

    /// Size of the fixed region info structure.
    pub const INFO_SIZE: usize = 32;
}

/// IRQ info flags, SET_IRQS flags and PCI IRQ indexes.
pub mod irq {
    /// IRQ info: the IRQ type can signal an eventfd.
    pub const INFO_EVENTFD: u32 = 1 << 0;
    /// IRQ info: MASK and UNMASK actions are supported.
    pub const INFO_MASKABLE: u32 = 1 << 1;
    /// IRQ info: the IRQ masks itself when triggered.
    pub const INFO_AUTOMASKED: u32 = 1 << 2;
    /// IRQ info: sub-indexes cannot be enabled one by one.
    pub const INFO_NORESIZE: u32 = 1 << 3;

    /// SET_IRQS: no data.
    pub const SET_DATA_NONE: u32 = 1 << 0;
    /// SET_IRQS: data is an array of bool bytes.
    pub const SET_DATA_BOOL: u32 = 1 << 1;
    /// SET_IRQS: eventfds are attached.
    pub const SET_DATA_EVENTFD: u32 = 1 << 2;
    /// SET_IRQS: mask action.
    pub const SET_ACTION_MASK: u32 = 1 << 3;
    /// SET_IRQS: unmask action.
    pub const SET_ACTION_UNMASK: u32 = 1 << 4;
    /// SET_IRQS: trigger action.
    pub const SET_ACTION_TRIGGER: u32 = 1 << 5;
    /// All data-type bits.
    pub const SET_DATA_TYPE_MASK: u32 = SET_DATA_NONE | SET_DATA_BOOL | SET_DATA_EVENTFD;
    /// All action bits.
    pub const SET_ACTION_TYPE_MASK: u32 = SET_ACTION_MASK | SET_ACTION_UNMASK | SET_ACTION_TRIGGER;

    /// PCI INTx index.
    pub const PCI_INTX: u32 = 0;
    /// PCI MSI index.
    pub const PCI_MSI: u32 = 1;
    /// PCI MSI-X index.
    pub const PCI_MSIX: u32 = 2;
    /// PCI error (AER) index.
    pub const PCI_ERR: u32 = 3;
    /// PCI device-request index.
    pub const PCI_REQ: u32 = 4;
    /// Number of standard PCI IRQ indexes.
    pub const PCI_NUM_IRQS: u32 = 5;
}

/// REGION_IO_FDS sub-region types.
pub mod io_fd {
    /// The sub-region's fd is an ioeventfd.
    pub const TYPE_IOEVENTFD: u32 = 0;
    /// The sub-region's fd is an ioregionfd.
    pub const TYPE_IOREGIONFD: u32 = 1;
    /// Size of one sub-region entry.
    pub const SUBREGION_SIZE: usize = 40;
}
