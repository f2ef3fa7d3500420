//! Fault injection at the device boundary (D7).
//!
//! The card's fault-injection register block (present when `CAP0.FAULT_INJ`
//! is set, on the simulator and on boards built with it) stalls channels and
//! applies one-shot faults to a channel's next interrupt, writeback or
//! descriptor. Tests use it so that every fault enters where a real one
//! would, and the driver's own code paths are the ones exercised; nothing
//! inside the driver is ever short-circuited.

use crate::device::Device;
use crate::error::{Error, Result};
use fdma_hw::regs;

/// A one-shot fault applied to a channel's next event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OneShot {
    /// Drop the next interrupt.
    DropIrq,
    /// Send the next interrupt twice.
    DupIrq,
    /// Corrupt the next writeback (its head is inverted).
    CorruptWriteback,
    /// Fail the next descriptor with `ERR_INJECTED`.
    DescriptorError,
}

/// Access to the fault-injection registers of one device.
#[derive(Debug)]
pub struct FaultInjector<'a> {
    dev: &'a Device,
}

impl<'a> FaultInjector<'a> {
    pub(crate) fn new(dev: &'a Device) -> Result<FaultInjector<'a>> {
        if !dev.config().fault_injection {
            return Err(Error::Invalid(format!(
                "{}: the card has no fault-injection block (CAP0.FAULT_INJ = 0)",
                dev.name()
            )));
        }
        Ok(FaultInjector { dev })
    }

    fn check(&self, ch: usize) -> Result<()> {
        if ch >= self.dev.channels() {
            return Err(Error::Invalid(format!("channel {ch} does not exist")));
        }
        Ok(())
    }

    /// Stall (or release) channel `ch`: it fetches and starts nothing.
    pub fn stall(&self, ch: usize, on: bool) -> Result<()> {
        self.check(ch)?;
        let v = self.dev.read_reg(regs::FI_STALL.offset)?;
        let bit = 1u32 << ch;
        self.dev
            .write_reg(regs::FI_STALL.offset, if on { v | bit } else { v & !bit })
    }

    /// Arm a one-shot fault on channel `ch`.
    pub fn one_shot(&self, ch: usize, fault: OneShot) -> Result<()> {
        self.check(ch)?;
        let f = match fault {
            OneShot::DropIrq => regs::FI_ONESHOT_DROP_IRQ,
            OneShot::DupIrq => regs::FI_ONESHOT_DUP_IRQ,
            OneShot::CorruptWriteback => regs::FI_ONESHOT_CORRUPT_WB,
            OneShot::DescriptorError => regs::FI_ONESHOT_DESC_ERR,
        };
        self.dev.write_reg(
            regs::FI_ONESHOT.offset,
            f.encode(1) | regs::FI_ONESHOT_CHANNEL.encode(ch as u32),
        )
    }

    /// One-shot faults applied since reset.
    pub fn applied(&self) -> Result<u32> {
        self.dev.read_reg(regs::FI_COUNT.offset)
    }
}
