//! PCI identity, configuration space and BAR layout of the card.
//!
//! | BAR | size                 | contents                                              |
//! |-----|----------------------|-------------------------------------------------------|
//! | 0   | [`crate::regs::BAR0_SIZE`] | registers; MSI-X table at [`MSIX_TABLE_OFFSET`], PBA at [`MSIX_PBA_OFFSET`] |
//! | 2   | card-memory size     | card memory, directly mappable (64-bit, prefetchable) |
//!
//! The configuration space is a type-0 header with one capability, MSI-X,
//! at [`MSIX_CAP_OFFSET`]. There is no INTx and no MSI: completion and error
//! interrupts are MSI-X only, one vector per channel plus the error vector.

/// Vendor ID. 0x1234 is the value commonly used for development devices;
/// a production bitstream carries its own vendor's ID.
pub const VENDOR_ID: u16 = 0x1234;
/// Device ID of the fdma engine (distinct from QEMU's `edu`, 0x11e8).
pub const DEVICE_ID: u16 = 0xFD3A;
/// Subsystem vendor ID.
pub const SUBSYS_VENDOR_ID: u16 = VENDOR_ID;
/// Subsystem ID.
pub const SUBSYS_ID: u16 = 0x0001;
/// Revision ID.
pub const REVISION: u8 = 0x01;
/// Class code: system peripheral (0x08), DMA controller (0x01), prog-if 0.
pub const CLASS_CODE: u32 = 0x08_01_00;

/// Index of the register BAR.
pub const BAR_REGS: u32 = 0;
/// Index of the card-memory BAR.
pub const BAR_CARD_MEM: u32 = 2;

/// Offset of the MSI-X table within BAR0 (64 KiB aligned).
pub const MSIX_TABLE_OFFSET: u32 = 0x10000;
/// Offset of the MSI-X pending-bit array within BAR0.
pub const MSIX_PBA_OFFSET: u32 = 0x10800;
/// Size of one MSI-X table entry.
pub const MSIX_ENTRY_BYTES: u32 = 16;
/// Vector-control mask bit in an MSI-X table entry's last dword.
pub const MSIX_ENTRY_CTRL_MASKED: u32 = 1;

// The largest table (every channel plus the error vector) ends before the PBA,
// and both lie inside BAR0.
const _: () = assert!(
    MSIX_TABLE_OFFSET + (crate::regs::MAX_CHANNELS as u32 + 1) * MSIX_ENTRY_BYTES
        <= MSIX_PBA_OFFSET
);
const _: () = assert!((MSIX_PBA_OFFSET as u64) < crate::regs::BAR0_SIZE);

/// Size of the configuration space the card presents.
pub const CONFIG_SPACE_SIZE: usize = 256;
/// Offset of the MSI-X capability in configuration space.
pub const MSIX_CAP_OFFSET: usize = 0x40;

/// Configuration-space register offsets (type-0 header).
pub mod cfg {
    /// Vendor ID, u16.
    pub const VENDOR_ID: usize = 0x00;
    /// Device ID, u16.
    pub const DEVICE_ID: usize = 0x02;
    /// Command, u16.
    pub const COMMAND: usize = 0x04;
    /// Status, u16.
    pub const STATUS: usize = 0x06;
    /// Revision ID, u8.
    pub const REVISION: usize = 0x08;
    /// Class code, 3 bytes.
    pub const CLASS: usize = 0x09;
    /// Header type, u8.
    pub const HEADER_TYPE: usize = 0x0E;
    /// BAR0, u32.
    pub const BAR0: usize = 0x10;
    /// Subsystem vendor ID, u16.
    pub const SUBSYS_VENDOR_ID: usize = 0x2C;
    /// Subsystem ID, u16.
    pub const SUBSYS_ID: usize = 0x2E;
    /// Capabilities pointer, u8.
    pub const CAP_PTR: usize = 0x34;
    /// Interrupt pin, u8 (0: no INTx).
    pub const INTERRUPT_PIN: usize = 0x3D;

    /// Command: memory space enable.
    pub const COMMAND_MEMORY: u16 = 1 << 1;
    /// Command: bus master enable. Without it the card issues no DMA and no MSI-X.
    pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
    /// Command: INTx disable.
    pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
    /// Status: capabilities list present.
    pub const STATUS_CAP_LIST: u16 = 1 << 4;

    /// MSI-X capability ID.
    pub const CAP_ID_MSIX: u8 = 0x11;
    /// MSI-X message control: enable.
    pub const MSIX_CTRL_ENABLE: u16 = 1 << 15;
    /// MSI-X message control: function mask.
    pub const MSIX_CTRL_FUNCTION_MASK: u16 = 1 << 14;
    /// MSI-X message control: table size minus one.
    pub const MSIX_CTRL_TABLE_SIZE_MASK: u16 = 0x7ff;
}

/// The configuration space a card of configuration `c` presents after reset.
///
/// BAR values hold the type bits only; sizing follows the usual protocol
/// (software writes all ones and reads the size mask back).
pub fn config_space(c: &crate::EngineConfig) -> [u8; CONFIG_SPACE_SIZE] {
    let mut s = [0u8; CONFIG_SPACE_SIZE];
    let put16 = |s: &mut [u8; CONFIG_SPACE_SIZE], o: usize, v: u16| {
        s[o..o + 2].copy_from_slice(&v.to_le_bytes())
    };
    let put32 = |s: &mut [u8; CONFIG_SPACE_SIZE], o: usize, v: u32| {
        s[o..o + 4].copy_from_slice(&v.to_le_bytes())
    };
    put16(&mut s, cfg::VENDOR_ID, VENDOR_ID);
    put16(&mut s, cfg::DEVICE_ID, DEVICE_ID);
    put16(&mut s, cfg::STATUS, cfg::STATUS_CAP_LIST);
    s[cfg::REVISION] = REVISION;
    s[cfg::CLASS..cfg::CLASS + 3].copy_from_slice(&CLASS_CODE.to_le_bytes()[..3]);
    s[cfg::HEADER_TYPE] = 0;
    // BAR0: 64-bit memory, non-prefetchable. BAR2: 64-bit memory, prefetchable.
    put32(&mut s, cfg::BAR0, 0x4);
    put32(&mut s, cfg::BAR0 + 4 * BAR_CARD_MEM as usize, 0xC);
    put16(&mut s, cfg::SUBSYS_VENDOR_ID, SUBSYS_VENDOR_ID);
    put16(&mut s, cfg::SUBSYS_ID, SUBSYS_ID);
    s[cfg::CAP_PTR] = MSIX_CAP_OFFSET as u8;
    s[cfg::INTERRUPT_PIN] = 0;
    // MSI-X capability: id, next, message control, table, PBA (both in BAR0).
    s[MSIX_CAP_OFFSET] = cfg::CAP_ID_MSIX;
    s[MSIX_CAP_OFFSET + 1] = 0;
    put16(&mut s, MSIX_CAP_OFFSET + 2, c.msix_vectors() - 1);
    put32(&mut s, MSIX_CAP_OFFSET + 4, MSIX_TABLE_OFFSET | BAR_REGS);
    put32(&mut s, MSIX_CAP_OFFSET + 8, MSIX_PBA_OFFSET | BAR_REGS);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_space_layout() {
        let s = config_space(&crate::EngineConfig::DEFAULT);
        assert_eq!(u16::from_le_bytes([s[0], s[1]]), VENDOR_ID);
        assert_eq!(u16::from_le_bytes([s[2], s[3]]), DEVICE_ID);
        assert_eq!(s[cfg::CAP_PTR] as usize, MSIX_CAP_OFFSET);
        assert_eq!(s[MSIX_CAP_OFFSET], cfg::CAP_ID_MSIX);
        let ctrl = u16::from_le_bytes([s[MSIX_CAP_OFFSET + 2], s[MSIX_CAP_OFFSET + 3]]);
        assert_eq!((ctrl & cfg::MSIX_CTRL_TABLE_SIZE_MASK) + 1, 5);
    }
}
