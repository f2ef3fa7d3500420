//! `fdma info`: what a card is and what state it is in, read without
//! resetting or enabling anything (an inspect open), so that after a hang
//! it shows the hang.

use anyhow::{Context, Result};
use fdma::Device;
use fdma_hw::desc::err;
use fdma_hw::regs::{self, channel_reg, state};
use serde_json::{json, Value};

/// Options of `fdma info`.
#[derive(clap::Args, Debug)]
pub struct InfoArgs {
    /// Also dump every register with its value.
    #[arg(long)]
    regs: bool,
    /// Print one JSON object instead of text (with --regs, it includes a
    /// `registers` array like `fdma reg dump --json`).
    #[arg(long)]
    json: bool,
}

/// Print the device's identity, capabilities and state.
pub fn run(name: &str, a: &InfoArgs) -> Result<()> {
    let dev = Device::inspect(name).with_context(|| format!("opening {name} for inspection"))?;
    if a.json {
        let v = to_json(&dev, name, a.regs)?;
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
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

/// The device's identity, capabilities and state as one JSON object
/// (`fdma info --json`).
fn to_json(dev: &Device, name: &str, with_regs: bool) -> Result<Value> {
    let c = *dev.config();
    let r = |off: u32| dev.read_reg(off);
    let id = r(regs::ID.offset)?;
    let g = r(regs::GCTRL.offset)?;
    let s = r(regs::GSTATUS.offset)?;
    let errs = regs::GSTATUS_ERR_CHANNELS.decode(s);
    let faults = if c.fault_injection {
        json!({
            "stalled_channels": r(regs::FI_STALL.offset)?,
            "oneshot_armed": r(regs::FI_ONESHOT.offset)?,
            "applied": r(regs::FI_COUNT.offset)?,
        })
    } else {
        Value::Null
    };
    let mut channels = Vec::with_capacity(c.channels as usize);
    for ch in 0..c.channels as usize {
        let rr = |reg: &regs::Register| r(channel_reg(ch, reg));
        let st = rr(&regs::CH_STATUS)?;
        let st_val = regs::CH_STATUS_STATE.decode(st);
        let code = regs::CH_STATUS_ERR.decode(st) as u8;
        let bytes_lo = rr(&regs::CH_BYTES_LO)?;
        let bytes_hi = rr(&regs::CH_BYTES_HI)?;
        channels.push(json!({
            "channel": ch,
            "state": state::name(st_val),
            "healthy": code == 0 && matches!(st_val, state::STOPPED | state::RUNNING | state::STOPPING),
            "error": if code == 0 {
                Value::Null
            } else {
                json!({ "code": code, "name": err::name(code) })
            },
            "head": rr(&regs::CH_HEAD)?,
            "tail": rr(&regs::CH_TAIL)?,
            "err_index": rr(&regs::CH_ERR_INDEX)?,
            "bytes": (bytes_hi as u64) << 32 | bytes_lo as u64,
        }));
    }
    let mut v = json!({
        "device": dev.name(),
        "identity": {
            "id": id,
            "magic": regs::ID_MAGIC_F.decode(id),
            "version_major": regs::ID_MAJOR.decode(id),
            "version_minor": regs::ID_MINOR.decode(id),
            "vendor_id": fdma_hw::pci::VENDOR_ID,
            "device_id": fdma_hw::pci::DEVICE_ID,
        },
        "capabilities": {
            "channels": c.channels,
            "max_ring_entries": c.max_ring_entries(),
            "dma_addr_bits": c.dma_addr_bits,
            "data_bytes": c.data_bytes(),
            "clock_mhz": c.clock_mhz,
            "card_mem_bytes": c.card_mem_bytes(),
            "max_desc_len": c.max_desc_len(),
            "max_reads_outstanding": c.max_reads_outstanding,
            "fault_injection": c.fault_injection,
        },
        "status": {
            "enabled": regs::GCTRL_ENABLE.decode(g) == 1,
            "reset_busy": regs::GSTATUS_RESET_BUSY.decode(s) == 1,
            "quiescent": regs::GSTATUS_QUIESCENT.decode(s) == 1,
            "error_channels": (0..16).filter(|b| errs & (1 << b) != 0).collect::<Vec<u32>>(),
        },
        "device_cycles": dev.cycles()?,
        "host_reads": {
            "outstanding": r(regs::RD_OUTSTANDING.offset)? & 0xffff,
            "max_since_reset": r(regs::RD_OUTSTANDING_MAX.offset)?,
        },
        "faults": faults,
        "channels": channels,
        "fault_log": fault_log(name),
    });
    if with_regs {
        v["registers"] = crate::reg::all_json(dev)?;
    }
    Ok(v)
}

/// Print the simulator's fault log, where there is one.
fn show_fault_log(name: &str) {
    let Some(lines) = fault_log(name) else {
        return;
    };
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

/// The simulator's IOMMU fault log (its DMAR log, D3): write faults are never
/// reported to the engine, so this is where they show. A card's faults are
/// in the host kernel's log instead, so this is `None` for a card (and when
/// the simulator's control socket does not answer, with a warning).
#[cfg(feature = "sim")]
fn fault_log(name: &str) -> Option<Vec<String>> {
    let path = name.strip_prefix("sim:")?;
    match fdma_sim::server::control::request(std::path::Path::new(path), "fault-log") {
        Ok(Ok(lines)) => Some(lines),
        Ok(Err(e)) => {
            log::warn!("{name}: fault log: {e}");
            None
        }
        Err(e) => {
            log::warn!("{name}: no control socket for the fault log: {e}");
            None
        }
    }
}

#[cfg(not(feature = "sim"))]
fn fault_log(_name: &str) -> Option<Vec<String>> {
    None
}
