//! `fdma info`: what a card is and what state it is in, read without
//! resetting or enabling anything (an inspect open), so that after a hang
//! it shows the hang.

use anyhow::{Context, Result};
use fdma::Device;
use fdma_hw::desc::err;
use fdma_hw::regs::{self, channel_reg, state};

/// Options of `fdma info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Also dump every register with its value.
    #[arg(long)]
    regs: bool,
}

/// Print the device's identity, capabilities and state.
pub fn run(name: &str, a: &InfoArgs) -> Result<()> {
    let dev = Device::inspect(name).with_context(|| format!("opening {name} for inspection"))?;
    let c = *dev.config();
    let r = |off: u32| dev.read_reg(off);
    let id = r(regs::ID.offset)?;
    println!("device        {}", dev.name());
    println!(
        "identity      fdma {}.{} (ID {id:#010x}), PCI {:04x}:{:04x}",
        regs::ID_MAJOR.decode(id),
        regs::ID_MINOR.decode(id),
        fdma_hw::pci::VENDOR_ID,
        fdma_hw::pci::DEVICE_ID
    );
    println!(
        "engine        {} channels, rings up to {} descriptors, {}-bit DMA addresses, {}-byte datapath at {} MHz",
        c.channels,
        c.max_ring_entries(),
        c.dma_addr_bits,
        c.data_bytes(),
        c.clock_mhz
    );
    println!(
        "              card memory {}, descriptors up to {}, {} reads outstanding, fault injection {}",
        crate::size::show(c.card_mem_bytes()),
        crate::size::show(c.max_desc_len() as u64),
        c.max_reads_outstanding,
        if c.fault_injection { "yes" } else { "no" }
    );
    let g = r(regs::GCTRL.offset)?;
    let s = r(regs::GSTATUS.offset)?;
    let errs = regs::GSTATUS_ERR_CHANNELS.decode(s);
    println!(
        "status        {}{}{}, channels in error: {}",
        if regs::GCTRL_ENABLE.decode(g) == 1 {
            "enabled"
        } else {
            "disabled"
        },
        if regs::GSTATUS_RESET_BUSY.decode(s) == 1 {
            ", reset in progress"
        } else {
            ""
        },
        if regs::GSTATUS_QUIESCENT.decode(s) == 1 {
            ", quiescent"
        } else {
            ", busy"
        },
        if errs == 0 {
            "none".to_string()
        } else {
            (0..16)
                .filter(|b| errs & (1 << b) != 0)
                .map(|b| b.to_string())
                .collect::<Vec<_>>()
                .join(" ")
        }
    );
    println!("device cycles {}", dev.cycles()?);
    println!(
        "host reads    {} outstanding, {} at most since reset",
        r(regs::RD_OUTSTANDING.offset)? & 0xffff,
        r(regs::RD_OUTSTANDING_MAX.offset)?
    );
    if c.fault_injection {
        println!(
            "faults        stalled channels {:#x}, one-shot armed {:#x}, applied {}",
            r(regs::FI_STALL.offset)?,
            r(regs::FI_ONESHOT.offset)?,
            r(regs::FI_COUNT.offset)?
        );
    }
    println!();
    println!("channel  state     error              head       tail       err_index  bytes");
    for ch in 0..c.channels as usize {
        let rr = |reg: &regs::Register| r(channel_reg(ch, reg));
        let st = rr(&regs::CH_STATUS)?;
        let code = regs::CH_STATUS_ERR.decode(st) as u8;
        let bytes_lo = rr(&regs::CH_BYTES_LO)?;
        let bytes_hi = rr(&regs::CH_BYTES_HI)?;
        println!(
            "{ch:<8} {:<9} {:<18} {:<10} {:<10} {:<10} {}",
            state::name(regs::CH_STATUS_STATE.decode(st)),
            if code == 0 {
                "-".to_string()
            } else {
                format!("{code} {}", err::name(code))
            },
            rr(&regs::CH_HEAD)?,
            rr(&regs::CH_TAIL)?,
            rr(&regs::CH_ERR_INDEX)?,
            (bytes_hi as u64) << 32 | bytes_lo as u64
        );
    }
    show_fault_log(name);
    if a.regs {
        println!();
        crate::reg::show_all(&dev)?;
    }
    Ok(())
}

/// The simulator's IOMMU fault log (its DMAR log, D3): write faults are never
/// reported to the engine, so this is where they show. A card's faults are
/// in the host kernel's log instead.
#[cfg(feature = "sim")]
fn show_fault_log(name: &str) {
    let Some(path) = name.strip_prefix("sim:") else {
        return;
    };
    match fdma_sim::server::control::request(std::path::Path::new(path), "fault-log") {
        Ok(Ok(lines)) => {
            println!();
            if lines.is_empty() {
                println!("fault log     empty");
            } else {
                println!(
                    "fault log     {} entries (simulator IOMMU, oldest first)",
                    lines.len()
                );
                for l in lines {
                    println!("  {l}");
                }
            }
        }
        Ok(Err(e)) => log::warn!("{name}: fault log: {e}"),
        Err(e) => log::warn!("{name}: no control socket for the fault log: {e}"),
    }
}

#[cfg(not(feature = "sim"))]
fn show_fault_log(_name: &str) {}
