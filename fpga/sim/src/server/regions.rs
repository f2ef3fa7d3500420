//! The device's regions as the client sees them: PCI configuration space
//! (emulated here), BAR0 (registers trapped to the card, then the MSI-X
//! table and PBA) and BAR2 (card memory, also mmappable).
//!
//! Configuration space follows the usual PCI rules: only the command
//! register's memory, bus-master and INTx-disable bits, the BARs' size-mask
//! bits (so the write-all-ones sizing protocol works), the interrupt line
//! and the MSI-X enable and function-mask bits are writable; everything
//! else is read-only.
//!
//! BAR0 accepts aligned 4- and 8-byte accesses; an 8-byte register access is
//! split into the low dword then the high dword. BAR2 accepts any access
//! within card memory. Memory-space enable is not enforced.

use fdma_hw::pci::{
    self, cfg, CONFIG_SPACE_SIZE, MSIX_CAP_OFFSET, MSIX_PBA_OFFSET, MSIX_TABLE_OFFSET,
};
use fdma_hw::regs::BAR0_SIZE;
use fdma_hw::EngineConfig;
use fdma_vfio_user::consts::region;

use super::irqs::{Gate, Msix};
use crate::card::Card;
use crate::hostmem::Iommu;

const MSIX_CTRL: usize = MSIX_CAP_OFFSET + 2;

/// Emulated device state outside the card's RTL.
#[derive(Debug)]
pub struct Device {
    config: [u8; CONFIG_SPACE_SIZE],
    wmask: [u8; CONFIG_SPACE_SIZE],
    /// MSI-X table, PBA and eventfds.
    pub msix: Msix,
    card_mem: u64,
}

fn set_mask(w: &mut [u8; CONFIG_SPACE_SIZE], off: usize, mask: u32, bytes: usize) {
    w[off..off + bytes].copy_from_slice(&mask.to_le_bytes()[..bytes]);
}

impl Device {
    /// The device a card of configuration `e` presents after reset.
    pub fn new(e: &EngineConfig) -> Self {
        let mut wmask = [0u8; CONFIG_SPACE_SIZE];
        let cmd = cfg::COMMAND_MEMORY | cfg::COMMAND_BUS_MASTER | cfg::COMMAND_INTX_DISABLE;
        set_mask(&mut wmask, cfg::COMMAND, cmd as u32, 2);
        let bar_mask = |size: u64| !(size - 1);
        let b0 = bar_mask(BAR0_SIZE);
        let b2 = bar_mask(e.card_mem_bytes());
        set_mask(&mut wmask, cfg::BAR0, b0 as u32 & 0xffff_fff0, 4);
        set_mask(&mut wmask, cfg::BAR0 + 4, (b0 >> 32) as u32, 4);
        set_mask(&mut wmask, cfg::BAR0 + 8, b2 as u32 & 0xffff_fff0, 4);
        set_mask(&mut wmask, cfg::BAR0 + 12, (b2 >> 32) as u32, 4);
        wmask[0x3C] = 0xff; // interrupt line
        set_mask(
            &mut wmask,
            MSIX_CTRL,
            (cfg::MSIX_CTRL_ENABLE | cfg::MSIX_CTRL_FUNCTION_MASK) as u32,
            2,
        );
        Device {
            config: pci::config_space(e),
            wmask,
            msix: Msix::new(e.msix_vectors() as usize),
            card_mem: e.card_mem_bytes(),
        }
    }

    fn cfg16(&self, off: usize) -> u16 {
        u16::from_le_bytes([self.config[off], self.config[off + 1]])
    }

    /// Whether the command register's bus-master bit is set.
    pub fn bus_master(&self) -> bool {
        self.cfg16(cfg::COMMAND) & cfg::COMMAND_BUS_MASTER != 0
    }

    /// The conditions that gate MSI-X delivery.
    pub fn gate(&self) -> Gate {
        let ctrl = self.cfg16(MSIX_CTRL);
        Gate {
            bus_master: self.bus_master(),
            enabled: ctrl & cfg::MSIX_CTRL_ENABLE != 0,
            function_masked: ctrl & cfg::MSIX_CTRL_FUNCTION_MASK != 0,
        }
    }

    /// Device reset (DEVICE_RESET): configuration space and MSI-X back to
    /// their reset values, the card reset; card memory kept.
    pub fn reset(&mut self, card: &mut Card, e: &EngineConfig) {
        self.config = pci::config_space(e);
        self.msix.reset();
        card.set_bus_master(false);
        card.reset();
    }

    /// Size of region `index` (0 for regions the card does not have).
    pub fn region_size(&self, index: u32) -> u64 {
        match index {
            pci::BAR_REGS => BAR0_SIZE,
            pci::BAR_CARD_MEM => self.card_mem,
            region::PCI_CONFIG => CONFIG_SPACE_SIZE as u64,
            _ => 0,
        }
    }

    fn check(&self, index: u32, offset: u64, count: usize) -> Result<(), i32> {
        let size = self.region_size(index);
        if count == 0 || offset.checked_add(count as u64).map_or(true, |e| e > size) {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    fn check_bar0(offset: u64, count: usize) -> Result<(), i32> {
        if !(count == 4 || count == 8) || offset % count as u64 != 0 {
            return Err(libc::EINVAL);
        }
        Ok(())
    }

    /// REGION_READ.
    pub fn read(
        &mut self,
        card: &mut Card,
        iommu: &mut Iommu,
        index: u32,
        offset: u64,
        count: usize,
    ) -> Result<Vec<u8>, i32> {
        self.check(index, offset, count)?;
        let mut out = vec![0u8; count];
        match index {
            region::PCI_CONFIG => {
                out.copy_from_slice(&self.config[offset as usize..offset as usize + count])
            }
            pci::BAR_CARD_MEM => card.card_memory().read(offset, &mut out),
            _ => {
                Self::check_bar0(offset, count)?;
                for (i, chunk) in out.chunks_mut(4).enumerate() {
                    let o = offset as u32 + 4 * i as u32;
                    chunk.copy_from_slice(&self.bar0_read(card, iommu, o).to_le_bytes());
                }
            }
        }
        Ok(out)
    }

    /// REGION_WRITE.
    pub fn write(
        &mut self,
        card: &mut Card,
        iommu: &mut Iommu,
        index: u32,
        offset: u64,
        data: &[u8],
    ) -> Result<(), i32> {
        self.check(index, offset, data.len())?;
        match index {
            region::PCI_CONFIG => self.config_write(card, offset as usize, data),
            pci::BAR_CARD_MEM => card.card_memory().write(offset, data),
            _ => {
                Self::check_bar0(offset, data.len())?;
                for (i, chunk) in data.chunks(4).enumerate() {
                    let o = offset as u32 + 4 * i as u32;
                    let v = u32::from_le_bytes(chunk.try_into().expect("4-byte chunks"));
                    self.bar0_write(card, iommu, o, v);
                }
            }
        }
        Ok(())
    }

    fn bar0_read(&mut self, card: &mut Card, iommu: &mut Iommu, o: u32) -> u32 {
        if o < MSIX_TABLE_OFFSET {
            card.reg_read(iommu, o)
        } else if o < MSIX_PBA_OFFSET {
            self.msix.table_read(o - MSIX_TABLE_OFFSET)
        } else {
            self.msix.pba_read(o - MSIX_PBA_OFFSET)
        }
    }

    fn bar0_write(&mut self, card: &mut Card, iommu: &mut Iommu, o: u32, v: u32) {
        if o < MSIX_TABLE_OFFSET {
            card.reg_write(iommu, o, v);
            // Clock the card a few more cycles with a side-effect-free read so
            // its quiescent output reflects the write (a doorbell) before the
            // main loop decides whether to keep clocking it.
            card.reg_read(iommu, fdma_hw::regs::GSTATUS.offset);
        } else if o < MSIX_PBA_OFFSET {
            let g = self.gate();
            self.msix.table_write(o - MSIX_TABLE_OFFSET, v, g);
        }
        // The PBA and the rest of BAR0 are read-only.
    }

    fn config_write(&mut self, card: &mut Card, off: usize, data: &[u8]) {
        let before = self.bus_master();
        for (i, b) in data.iter().enumerate() {
            let m = self.wmask[off + i];
            self.config[off + i] = (self.config[off + i] & !m) | (b & m);
        }
        let after = self.bus_master();
        if before != after {
            log::debug!("bus mastering {}", if after { "on" } else { "off" });
            card.set_bus_master(after);
        }
        let g = self.gate();
        self.msix.flush(g);
    }
}
