//! MSI-X enable and vector masking through config space and the MSI-X
//! table, as the vfio-user client must do it itself.
//!
//! On kernel VFIO, `VFIO_DEVICE_SET_IRQS` programs the device's MSI-X
//! capability and table; on vfio-user the device is emulated by the server
//! and the client plays that role, as QEMU does for its guests: it sets the
//! capability's enable bit and unmasks the table entries of the vectors it
//! routed. The capability is found by walking config space's capability
//! list; the table by its BIR and offset.

use super::VfioUserBackend;
use crate::backend::{BResult, Backend};

const CAP_PTR: u64 = 0x34;
const CAP_ID_MSIX: u8 = 0x11;
const CTRL_ENABLE: u16 = 1 << 15;
const CTRL_FUNCTION_MASK: u16 = 1 << 14;
const ENTRY_BYTES: u64 = 16;
const ENTRY_CTRL: u64 = 12;

impl VfioUserBackend {
    /// Config-space offset of the MSI-X capability, if any.
    fn msix_cap(&self) -> BResult<Option<u64>> {
        let mut b = [0u8; 1];
        self.config_read(CAP_PTR, &mut b)?;
        let mut at = (b[0] & !3) as u64;
        // A capability list has at most 48 entries in 256 bytes; bound the
        // walk so a looping list from a broken device cannot hang us (D2).
        for _ in 0..48 {
            if at < 0x40 {
                return Ok(None);
            }
            let mut h = [0u8; 2];
            self.config_read(at, &mut h)?;
            if h[0] == CAP_ID_MSIX {
                return Ok(Some(at));
            }
            at = (h[1] & !3) as u64;
        }
        Ok(None)
    }

    /// Enable MSI-X and unmask vectors `start..start + count`.
    pub(super) fn msix_enable(&self, start: u32, count: u32) -> BResult<()> {
        let Some(cap) = self.msix_cap()? else {
            return Ok(());
        };
        let mut t = [0u8; 4];
        self.config_read(cap + 4, &mut t)?;
        let table = u32::from_le_bytes(t);
        let bir = table & 7;
        let table_off = (table & !7) as u64;
        for v in start..start + count {
            let off = table_off + v as u64 * ENTRY_BYTES + ENTRY_CTRL;
            self.region_write(bir, off, &0u32.to_le_bytes())?;
        }
        let mut c = [0u8; 2];
        self.config_read(cap + 2, &mut c)?;
        let ctrl = (u16::from_le_bytes(c) | CTRL_ENABLE) & !CTRL_FUNCTION_MASK;
        self.config_write(cap + 2, &ctrl.to_le_bytes())
    }

    /// Disable MSI-X.
    pub(super) fn msix_disable(&self) -> BResult<()> {
        let Some(cap) = self.msix_cap()? else {
            return Ok(());
        };
        let mut c = [0u8; 2];
        self.config_read(cap + 2, &mut c)?;
        let ctrl = u16::from_le_bytes(c) & !CTRL_ENABLE;
        self.config_write(cap + 2, &ctrl.to_le_bytes())
    }
}
