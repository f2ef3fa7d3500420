//! Renders the hardware contract as the SystemVerilog package the RTL imports.
//!
//! Naming in the package:
//! * global and fault-injection registers: `REG_<NAME>` (absolute BAR0 offset);
//! * channel registers: `CHREG_<NAME>` (offset within the channel block);
//! * fields: `<REG>_<FIELD>_LSB` and `<REG>_<FIELD>_W` (channel registers
//!   prefixed `CH_`);
//! * descriptor layout `DESC_*`, flags `FLAG_*`, directions `DIR_*`,
//!   writeback `WB_*`, error codes `ERR_*`, channel states `STATE_*`,
//!   default engine parameters `DEF_*`.

use crate::desc::{self, err, Flags};
use crate::regs::{self, Register};
use crate::{pci, EngineConfig};
use std::fmt::Write;

/// Path of the generated package, relative to the workspace root.
pub const SV_PACKAGE_PATH: &str = "fpga/rtl/generated/fdma_hw_pkg.sv";

fn hex32(v: u32) -> String {
    format!("32'h{:04X}_{:04X}", v >> 16, v & 0xffff)
}

fn emit_block(out: &mut String, block: &[Register], reg_prefix: &str, field_prefix: &str) {
    for r in block {
        let _ = writeln!(
            out,
            "  localparam logic [31:0] {reg_prefix}{:<20} = {}; // {} {}",
            r.name,
            hex32(r.offset),
            r.access.name(),
            r.doc
        );
    }
    let _ = writeln!(out);
    for r in block {
        for f in r.fields {
            let base = format!("{field_prefix}{}_{}", r.name, f.name);
            let _ = writeln!(
                out,
                "  localparam int {:<36} = {:>2};",
                format!("{base}_LSB"),
                f.lsb
            );
            let _ = writeln!(
                out,
                "  localparam int {:<36} = {:>2};",
                format!("{base}_W"),
                f.width
            );
        }
    }
}

/// Render the package text. Deterministic: the drift test compares it byte
/// for byte with the committed file.
pub fn sv_package() -> String {
    let c = EngineConfig::DEFAULT;
    let mut o = String::new();
    o.push_str("// fdma hardware contract, rendered from the Rust description in hw/.\n");
    o.push_str("// GENERATED FILE - do not edit. Change hw/src and run:\n");
    o.push_str("//   cargo run -p fdma-hw --bin fdma-hw-gen\n");
    o.push_str("// hw/tests/drift.rs fails while this file differs from what hw/ renders.\n\n");
    o.push_str("package fdma_hw_pkg;\n\n");
    o.push_str("  // A contract package: every module uses only part of it.\n");
    o.push_str("  /* verilator lint_off UNUSEDPARAM */\n\n");

    o.push_str("  // ---- identity\n");
    let _ = writeln!(
        o,
        "  localparam logic [31:0] ID_VALUE = {};",
        hex32(crate::id_value())
    );
    let _ = writeln!(
        o,
        "  localparam logic [15:0] PCI_VENDOR_ID = 16'h{:04X};",
        pci::VENDOR_ID
    );
    let _ = writeln!(
        o,
        "  localparam logic [15:0] PCI_DEVICE_ID = 16'h{:04X};",
        pci::DEVICE_ID
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] MSIX_TABLE_OFFSET = {};",
        hex32(pci::MSIX_TABLE_OFFSET)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] MSIX_PBA_OFFSET = {};",
        hex32(pci::MSIX_PBA_OFFSET)
    );
    o.push('\n');

    o.push_str("  // ---- default engine parameters (reported through CAP0..CAP2)\n");
    let defs: [(&str, u32); 11] = [
        ("CHANNELS", c.channels as u32),
        ("RING_LOG2_MAX", c.ring_log2_max as u32),
        ("DMA_ADDR_BITS", c.dma_addr_bits as u32),
        ("DATA_BYTES_LOG2", c.data_bytes_log2 as u32),
        ("FAULT_INJ", c.fault_injection as u32),
        ("CLOCK_MHZ", c.clock_mhz as u32),
        ("CARD_MEM_LOG2", c.card_mem_log2 as u32),
        ("MAX_PAYLOAD_LOG2", c.max_payload_log2 as u32),
        ("MAX_READ_LOG2", c.max_read_log2 as u32),
        ("MAX_DESC_LEN_LOG2", c.max_desc_len_log2 as u32),
        ("MAX_READS", c.max_reads_outstanding as u32),
    ];
    for (n, v) in defs {
        let _ = writeln!(o, "  localparam int DEF_{n:<18} = {v};");
    }
    let _ = writeln!(
        o,
        "  localparam int MAX_CHANNELS           = {};",
        regs::MAX_CHANNELS
    );
    let _ = writeln!(
        o,
        "  localparam int RING_LOG2_LIMIT        = {};",
        regs::RING_LOG2_LIMIT
    );
    o.push('\n');

    o.push_str("  // ---- global registers (absolute BAR0 offsets)\n");
    emit_block(&mut o, regs::GLOBAL, "REG_", "");
    o.push_str("\n  // ---- fault-injection registers (absolute BAR0 offsets, contract D7)\n");
    emit_block(&mut o, regs::FAULT, "REG_", "");
    o.push_str("\n  // ---- channel registers (offsets within a channel block)\n");
    let _ = writeln!(
        o,
        "  localparam logic [31:0] CHANNEL_BASE   = {};",
        hex32(regs::CHANNEL_BASE)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] CHANNEL_STRIDE = {};",
        hex32(regs::CHANNEL_STRIDE)
    );
    emit_block(&mut o, regs::CHANNEL, "CHREG_", "CH_");

    o.push_str("\n  // ---- channel states (STATUS.STATE)\n");
    for (n, v) in [
        ("STOPPED", regs::state::STOPPED),
        ("RUNNING", regs::state::RUNNING),
        ("HALTED", regs::state::HALTED),
        ("STOPPING", regs::state::STOPPING),
    ] {
        let _ = writeln!(o, "  localparam logic [1:0] STATE_{n:<9} = 2'd{v};");
    }

    o.push_str("\n  // ---- channel error codes (STATUS.ERR)\n");
    for (code, name, what) in err::ALL {
        let _ = writeln!(
            o,
            "  localparam logic [7:0] ERR_{name:<13} = 8'd{code}; // {what}"
        );
    }

    o.push_str("\n  // ---- descriptor layout (little-endian, byte offsets)\n");
    let _ = writeln!(o, "  localparam int DESC_BYTES = {};", desc::DESC_BYTES);
    for (n, v) in [
        ("SRC", desc::offsets::SRC),
        ("DST", desc::offsets::DST),
        ("LEN", desc::offsets::LEN),
        ("FLAGS", desc::offsets::FLAGS),
        ("TAG", desc::offsets::TAG),
        ("MAGIC", desc::offsets::MAGIC),
    ] {
        let _ = writeln!(o, "  localparam int DESC_OFF_{n:<6} = {v};");
    }
    let _ = writeln!(
        o,
        "  localparam logic [31:0] DESC_MAGIC = {};",
        hex32(desc::DESC_MAGIC)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] FLAG_DIR_MASK = {};",
        hex32(Flags::DIR_MASK)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] FLAG_IRQ      = {};",
        hex32(Flags::IRQ)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] FLAG_EOJ      = {};",
        hex32(Flags::EOJ)
    );
    let _ = writeln!(
        o,
        "  localparam logic [31:0] FLAG_RESERVED = {};",
        hex32(Flags::RESERVED)
    );
    for d in desc::Direction::ALL {
        let _ = writeln!(
            o,
            "  localparam logic [1:0] DIR_{} = 2'd{};",
            d.name().to_ascii_uppercase(),
            d as u32
        );
    }

    o.push_str("\n  // ---- writeback layout (little-endian, byte offsets)\n");
    let _ = writeln!(o, "  localparam int WB_BYTES = {};", desc::WB_BYTES);
    for (n, v) in [
        ("HEAD", desc::offsets::WB_HEAD),
        ("STATUS", desc::offsets::WB_STATUS),
        ("ERR_INDEX", desc::offsets::WB_ERR_INDEX),
        ("COUNT", desc::offsets::WB_COUNT),
    ] {
        let _ = writeln!(o, "  localparam int WB_OFF_{n:<9} = {v};");
    }
    o.push_str("\n  /* verilator lint_on UNUSEDPARAM */\n\nendpackage\n");
    o
}
