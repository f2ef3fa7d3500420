//! The BAR0 register map.
//!
//! BAR0 is [`BAR0_SIZE`] bytes:
//!
//! | range             | contents                                                  |
//! |-------------------|-----------------------------------------------------------|
//! | `0x0000..0x0100`  | global block ([`GLOBAL`])                                 |
//! | `0x0100..0x0200`  | fault-injection block ([`FAULT`], contract D7)            |
//! | `0x1000..0x2000`  | channel blocks, [`CHANNEL_STRIDE`] apart ([`CHANNEL`])    |
//! | `0x10000..`       | MSI-X table and PBA (see [`crate::pci`])                  |
//!
//! The doorbells (`TAIL`) live in the page at `0x1000`; the MSI-X structures
//! start 64 KiB in, so they never share a page with doorbells even on hosts
//! with 64 KiB pages, and the register pages can be mmapped where the
//! transport allows.
//!
//! The tables in this module are the single description from which both the
//! Rust constants below and the SystemVerilog package are derived.

/// Size of BAR0 in bytes.
pub const BAR0_SIZE: u64 = 0x20000;
/// Offset of channel 0's register block.
pub const CHANNEL_BASE: u32 = 0x1000;
/// Distance between channel register blocks.
pub const CHANNEL_STRIDE: u32 = 0x100;
/// Most channels the register map has room for.
pub const MAX_CHANNELS: usize = 16;
/// Largest `ring_log2_max` a card may advertise.
pub const RING_LOG2_LIMIT: u8 = 20;

/// Offset of channel `ch`'s register `reg` within BAR0.
pub const fn channel_reg(ch: usize, reg: &Register) -> u32 {
    CHANNEL_BASE + ch as u32 * CHANNEL_STRIDE + reg.offset
}

/// How software may access a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Access {
    /// Read-only: writes are ignored by the card and refused by the tools.
    Ro,
    /// Read-write. Fields documented as "self-clearing" read back as 0 once
    /// their action has been taken.
    Rw,
}

impl Access {
    /// Whether software may write the register.
    pub const fn writable(self) -> bool {
        matches!(self, Access::Rw)
    }
    /// Short name used in docs and by the tools.
    pub const fn name(self) -> &'static str {
        match self {
            Access::Ro => "RO",
            Access::Rw => "RW",
        }
    }
}

/// The value a register holds after reset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reset {
    /// A fixed value.
    Value(u32),
    /// Derived from the build configuration ([`crate::EngineConfig`]).
    Config,
    /// Not defined by reset (free-running counters).
    Running,
}

/// A bit field within a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Field {
    /// Field name, upper case.
    pub name: &'static str,
    /// Least significant bit.
    pub lsb: u8,
    /// Width in bits (1..=32).
    pub width: u8,
    /// What the field means.
    pub doc: &'static str,
}

impl Field {
    /// A field of `width` bits at `lsb`.
    pub const fn new(name: &'static str, lsb: u8, width: u8, doc: &'static str) -> Field {
        Field {
            name,
            lsb,
            width,
            doc,
        }
    }
    /// The field's bits in place.
    pub const fn mask(&self) -> u32 {
        (((1u64 << self.width) - 1) as u32) << self.lsb
    }
    /// Extract the field from a register value.
    pub const fn decode(&self, reg: u32) -> u32 {
        (reg & self.mask()) >> self.lsb
    }
    /// Place `v` in the field (bits beyond the width are dropped).
    pub const fn encode(&self, v: u32) -> u32 {
        ((v as u64) << self.lsb) as u32 & self.mask()
    }
}

/// One 32-bit register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Register {
    /// Register name, upper case, unique within its block.
    pub name: &'static str,
    /// Byte offset (within BAR0 for global and fault registers, within the
    /// channel block for channel registers).
    pub offset: u32,
    /// Software access.
    pub access: Access,
    /// Value after reset.
    pub reset: Reset,
    /// What the register does.
    pub doc: &'static str,
    /// Bit fields; empty means the whole register is one value.
    pub fields: &'static [Field],
}

macro_rules! field {
    ($(#[$m:meta])* $id:ident = $name:literal, $lsb:expr, $w:expr, $doc:literal) => {
        $(#[$m])*
        #[doc = $doc]
        pub const $id: Field = Field::new($name, $lsb, $w, $doc);
    };
}

macro_rules! register {
    ($id:ident = $name:literal @ $off:expr, $acc:ident, $reset:expr, $doc:literal, [$($f:expr),* $(,)?]) => {
        #[doc = $doc]
        pub const $id: Register = Register {
            name: $name,
            offset: $off,
            access: Access::$acc,
            reset: $reset,
            doc: $doc,
            fields: &[$($f),*],
        };
    };
}

// ---------------------------------------------------------------- global block

field!(
    ID_MINOR = "MINOR",
    0,
    8,
    "Minor version of the register contract."
);
field!(
    ID_MAJOR = "MAJOR",
    8,
    8,
    "Major version of the register contract; drivers refuse a different major."
);
field!(ID_MAGIC_F = "MAGIC", 16, 16, "Always 0xFD3A.");
register!(ID = "ID" @ 0x000, Ro, Reset::Value(crate::id_value()),
    "Identification: magic and contract version. Checked by the driver before it binds.",
    [ID_MINOR, ID_MAJOR, ID_MAGIC_F]);

field!(CAP0_CHANNELS = "CHANNELS", 0, 8, "Number of DMA channels.");
field!(
    CAP0_RING_LOG2_MAX = "RING_LOG2_MAX",
    8,
    8,
    "log2 of the largest ring size in descriptors."
);
field!(
    CAP0_DMA_ADDR_BITS = "DMA_ADDR_BITS",
    16,
    8,
    "Width of host DMA addresses the engine emits."
);
field!(
    CAP0_DATA_BYTES_LOG2 = "DATA_BYTES_LOG2",
    24,
    4,
    "log2 of the datapath width in bytes."
);
field!(
    CAP0_FAULT_INJ = "FAULT_INJ",
    28,
    1,
    "1 when the fault-injection block is present (contract D7)."
);
register!(CAP0 = "CAP0" @ 0x004, Ro, Reset::Config, "Capabilities: channels, rings, addressing, datapath.",
    [CAP0_CHANNELS, CAP0_RING_LOG2_MAX, CAP0_DMA_ADDR_BITS, CAP0_DATA_BYTES_LOG2, CAP0_FAULT_INJ]);

field!(
    CAP1_CLOCK_MHZ = "CLOCK_MHZ",
    0,
    16,
    "Engine clock in MHz: the rate of the CYCLE counter."
);
field!(
    CAP1_CARD_MEM_LOG2 = "CARD_MEM_LOG2",
    16,
    8,
    "log2 of the card-memory size in bytes."
);
field!(
    CAP1_MAX_PAYLOAD_LOG2 = "MAX_PAYLOAD_LOG2",
    24,
    4,
    "log2 of the largest write the engine emits, in bytes."
);
field!(
    CAP1_MAX_READ_LOG2 = "MAX_READ_LOG2",
    28,
    4,
    "log2 of the largest read request the engine emits, in bytes."
);
register!(CAP1 = "CAP1" @ 0x008, Ro, Reset::Config, "Capabilities: clock, card memory, transfer sizes.",
    [CAP1_CLOCK_MHZ, CAP1_CARD_MEM_LOG2, CAP1_MAX_PAYLOAD_LOG2, CAP1_MAX_READ_LOG2]);

field!(
    CAP2_MAX_DESC_LEN_LOG2 = "MAX_DESC_LEN_LOG2",
    0,
    8,
    "log2 of the largest descriptor length in bytes (inclusive)."
);
field!(
    CAP2_MSIX_VECTORS = "MSIX_VECTORS",
    8,
    8,
    "MSI-X vectors implemented: one per channel plus the error vector."
);
field!(
    CAP2_MAX_READS = "MAX_READS",
    16,
    8,
    "Most host read requests the engine keeps outstanding."
);
register!(CAP2 = "CAP2" @ 0x00C, Ro, Reset::Config, "Capabilities: descriptor length, vectors, read concurrency.",
    [CAP2_MAX_DESC_LEN_LOG2, CAP2_MSIX_VECTORS, CAP2_MAX_READS]);

field!(
    GCTRL_ENABLE = "ENABLE",
    0,
    1,
    "1 enables the engine; channels fetch descriptors only while set."
);
field!(
    GCTRL_SOFT_RESET = "SOFT_RESET",
    1,
    1,
    "Write 1 to reset the whole engine (self-clearing; GSTATUS.RESET_BUSY shows progress)."
);
register!(GCTRL = "GCTRL" @ 0x010, Rw, Reset::Value(0), "Global control.",
    [GCTRL_ENABLE, GCTRL_SOFT_RESET]);

field!(GSTATUS_ENABLED = "ENABLED", 0, 1, "The engine is enabled.");
field!(
    GSTATUS_RESET_BUSY = "RESET_BUSY",
    1,
    1,
    "A soft reset is in progress: outstanding reads are being drained."
);
field!(GSTATUS_QUIESCENT = "QUIESCENT", 2, 1, "Nothing queued, no reads or writes outstanding, no moderation timer armed, no interrupt pending.");
field!(
    GSTATUS_ERR_CHANNELS = "ERR_CHANNELS",
    16,
    16,
    "Error summary: bit n set while channel n is halted with an error."
);
register!(GSTATUS = "GSTATUS" @ 0x014, Ro, Reset::Value(0x4), "Global status.",
    [GSTATUS_ENABLED, GSTATUS_RESET_BUSY, GSTATUS_QUIESCENT, GSTATUS_ERR_CHANNELS]);

field!(
    ERR_VEC_VECTOR = "VECTOR",
    0,
    8,
    "MSI-X vector raised when any channel halts with an error."
);
register!(ERR_VEC = "ERR_VEC" @ 0x018, Rw, Reset::Config, "Error interrupt vector; resets to the number of channels (the vector after the per-channel ones).",
    [ERR_VEC_VECTOR]);

register!(SCRATCH = "SCRATCH" @ 0x01C, Rw, Reset::Value(0), "Scratch register with no effect, for register-path sanity checks.", []);

register!(CYCLE_LO = "CYCLE_LO" @ 0x020, Ro, Reset::Running,
    "Free-running device cycle counter, low half (contract D1). Reading it latches CYCLE_HI.", []);
register!(CYCLE_HI = "CYCLE_HI" @ 0x024, Ro, Reset::Running,
    "Device cycle counter, high half as latched by the last CYCLE_LO read.", []);

field!(
    RD_OUTSTANDING_CUR = "CUR",
    0,
    16,
    "Host read requests outstanding now."
);
register!(RD_OUTSTANDING = "RD_OUTSTANDING" @ 0x028, Ro, Reset::Value(0), "Host read requests outstanding.",
    [RD_OUTSTANDING_CUR]);
register!(RD_OUTSTANDING_MAX = "RD_OUTSTANDING_MAX" @ 0x02C, Rw, Reset::Value(0),
    "Most host read requests seen outstanding at once since reset or since software last wrote it (write 0 to restart the measurement).", []);

/// The global register block, in address order.
pub const GLOBAL: &[Register] = &[
    ID,
    CAP0,
    CAP1,
    CAP2,
    GCTRL,
    GSTATUS,
    ERR_VEC,
    SCRATCH,
    CYCLE_LO,
    CYCLE_HI,
    RD_OUTSTANDING,
    RD_OUTSTANDING_MAX,
];

// -------------------------------------------------------- fault-injection block

field!(
    FI_STALL_CHANNELS = "CHANNELS",
    0,
    16,
    "Bit n stalls channel n: it fetches and starts nothing while set."
);
register!(FI_STALL = "FI_STALL" @ 0x100, Rw, Reset::Value(0), "Fault injection: stall channels (D7).",
    [FI_STALL_CHANNELS]);

field!(
    FI_ONESHOT_DROP_IRQ = "DROP_IRQ",
    0,
    1,
    "Drop the next interrupt of the selected channel."
);
field!(
    FI_ONESHOT_DUP_IRQ = "DUP_IRQ",
    1,
    1,
    "Send the next interrupt of the selected channel twice."
);
field!(
    FI_ONESHOT_CORRUPT_WB = "CORRUPT_WB",
    2,
    1,
    "Corrupt the next writeback of the selected channel (HEAD field inverted)."
);
field!(
    FI_ONESHOT_DESC_ERR = "DESC_ERR",
    3,
    1,
    "Fail the next descriptor of the selected channel with ERR_INJECTED."
);
field!(
    FI_ONESHOT_CHANNEL = "CHANNEL",
    8,
    4,
    "Channel the one-shot faults apply to."
);
register!(FI_ONESHOT = "FI_ONESHOT" @ 0x104, Rw, Reset::Value(0),
    "Fault injection: one-shot faults. Each fault bit is self-clearing once the fault has been applied.",
    [FI_ONESHOT_DROP_IRQ, FI_ONESHOT_DUP_IRQ, FI_ONESHOT_CORRUPT_WB, FI_ONESHOT_DESC_ERR, FI_ONESHOT_CHANNEL]);

register!(FI_COUNT = "FI_COUNT" @ 0x108, Ro, Reset::Value(0), "Number of one-shot faults applied since reset.", []);

/// The fault-injection block, in address order. Present when `CAP0.FAULT_INJ` is set.
pub const FAULT: &[Register] = &[FI_STALL, FI_ONESHOT, FI_COUNT];

// --------------------------------------------------------------- channel block

register!(CH_RING_LO = "RING_LO" @ 0x00, Rw, Reset::Value(0), "Ring base IOVA, low half. Must be 32-byte aligned.", []);
register!(CH_RING_HI = "RING_HI" @ 0x04, Rw, Reset::Value(0), "Ring base IOVA, high half.", []);
register!(CH_RING_SIZE = "RING_SIZE" @ 0x08, Rw, Reset::Value(0),
    "Ring size in descriptors: a power of two from 2 to 2^RING_LOG2_MAX. Checked when RUN is set.", []);
register!(CH_TAIL = "TAIL" @ 0x0C, Rw, Reset::Value(0),
    "Doorbell: free-running index one past the last descriptor software has written. TAIL - HEAD must not exceed RING_SIZE.", []);
register!(CH_HEAD = "HEAD" @ 0x10, Ro, Reset::Value(0),
    "Free-running index of the next descriptor to complete: every descriptor before it is done.", []);
register!(CH_WB_LO = "WB_LO" @ 0x14, Rw, Reset::Value(0), "Writeback IOVA, low half. Must be 16-byte aligned.", []);
register!(CH_WB_HI = "WB_HI" @ 0x18, Rw, Reset::Value(0), "Writeback IOVA, high half.", []);

field!(
    CH_CTRL_RUN = "RUN",
    0,
    1,
    "1 runs the channel; 0 stops it after the descriptor in progress."
);
field!(CH_CTRL_RESET = "RESET", 1, 1, "Write 1 to reset the channel: abandon queued work, clear HEAD, TAIL and errors (self-clearing).");
register!(CH_CTRL = "CTRL" @ 0x1C, Rw, Reset::Value(0), "Channel control.", [CH_CTRL_RUN, CH_CTRL_RESET]);

field!(
    CH_STATUS_STATE = "STATE",
    0,
    2,
    "Channel state (see CHANNEL_STATE_*)."
);
field!(
    CH_STATUS_ERR = "ERR",
    8,
    8,
    "Error code when halted (see ERR_*)."
);
register!(CH_STATUS = "STATUS" @ 0x20, Ro, Reset::Value(0), "Channel status.", [CH_STATUS_STATE, CH_STATUS_ERR]);
register!(CH_ERR_INDEX = "ERR_INDEX" @ 0x24, Ro, Reset::Value(0), "Free-running index of the descriptor that halted the channel.", []);

field!(CH_IRQ_COUNT_THRESHOLD = "THRESHOLD", 0, 16, "Raise the interrupt once this many interrupt-flagged descriptors are pending (0 and 1 both mean every one).");
register!(CH_IRQ_COUNT = "IRQ_COUNT" @ 0x28, Rw, Reset::Value(0), "Interrupt moderation: count threshold.",
    [CH_IRQ_COUNT_THRESHOLD]);
register!(CH_IRQ_TIMER = "IRQ_TIMER" @ 0x2C, Rw, Reset::Value(0),
    "Interrupt moderation: raise the interrupt this many device cycles after the first pending completion, even if THRESHOLD is not reached (0 = no timer).", []);
field!(
    CH_IRQ_VEC_VECTOR = "VECTOR",
    0,
    8,
    "MSI-X vector for this channel's completions."
);
register!(CH_IRQ_VEC = "IRQ_VEC" @ 0x30, Rw, Reset::Config, "Completion interrupt vector; resets to the channel number.",
    [CH_IRQ_VEC_VECTOR]);
register!(CH_BYTES_LO = "BYTES_LO" @ 0x34, Ro, Reset::Value(0),
    "Bytes the channel has written since reset, low half (progress for the watchdog, F3). Reading it latches BYTES_HI.", []);
register!(CH_BYTES_HI = "BYTES_HI" @ 0x38, Ro, Reset::Value(0), "Bytes written, high half as latched by the last BYTES_LO read.", []);

/// One channel's register block, in address order; offsets are relative to
/// the block (see [`channel_reg`]).
pub const CHANNEL: &[Register] = &[
    CH_RING_LO,
    CH_RING_HI,
    CH_RING_SIZE,
    CH_TAIL,
    CH_HEAD,
    CH_WB_LO,
    CH_WB_HI,
    CH_CTRL,
    CH_STATUS,
    CH_ERR_INDEX,
    CH_IRQ_COUNT,
    CH_IRQ_TIMER,
    CH_IRQ_VEC,
    CH_BYTES_LO,
    CH_BYTES_HI,
];

/// Channel states (`STATUS.STATE`).
pub mod state {
    /// Not running: RUN is clear (or was never set) and nothing is in flight.
    pub const STOPPED: u32 = 0;
    /// Fetching and executing descriptors.
    pub const RUNNING: u32 = 1;
    /// Halted by an error; `STATUS.ERR` and `ERR_INDEX` say which and where.
    /// Only a channel reset leaves this state.
    pub const HALTED: u32 = 2;
    /// RUN was cleared or a reset requested; work already issued is draining.
    pub const STOPPING: u32 = 3;

    /// Name of a state value.
    pub const fn name(s: u32) -> &'static str {
        match s {
            STOPPED => "stopped",
            RUNNING => "running",
            HALTED => "halted",
            STOPPING => "stopping",
            _ => "invalid",
        }
    }
}

/// A register located in BAR0, as found by name or offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Located {
    /// Absolute BAR0 offset.
    pub offset: u32,
    /// Channel index for channel registers.
    pub channel: Option<usize>,
    /// The register's description.
    pub reg: &'static Register,
}

impl Located {
    /// Display name: `NAME` or `CHn.NAME`.
    pub fn display_name(&self) -> String {
        match self.channel {
            Some(ch) => format!("CH{ch}.{}", self.reg.name),
            None => self.reg.name.to_string(),
        }
    }
}

/// Every register of a card with `channels` channels, in address order.
pub fn all_registers(channels: usize) -> Vec<Located> {
    let mut v: Vec<Located> = GLOBAL
        .iter()
        .chain(FAULT.iter())
        .map(|r| Located {
            offset: r.offset,
            channel: None,
            reg: r,
        })
        .collect();
    for ch in 0..channels.min(MAX_CHANNELS) {
        v.extend(CHANNEL.iter().map(|r| Located {
            offset: channel_reg(ch, r),
            channel: Some(ch),
            reg: r,
        }));
    }
    v
}

/// Find a register by name (`GCTRL`, `CH2.TAIL`, case-insensitive) or by
/// offset (`0x100c`).
pub fn lookup(name_or_offset: &str, channels: usize) -> Option<Located> {
    let regs = all_registers(channels);
    let s = name_or_offset.trim();
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        let off = u32::from_str_radix(hex, 16).ok()?;
        return regs.into_iter().find(|l| l.offset == off);
    }
    let upper = s.to_ascii_uppercase();
    regs.into_iter().find(|l| l.display_name() == upper)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_block(block: &[Register], limit: u32) {
        let mut last = None;
        for r in block {
            assert_eq!(r.offset % 4, 0, "{} unaligned", r.name);
            assert!(r.offset < limit, "{} outside its block", r.name);
            if let Some(prev) = last {
                assert!(r.offset > prev, "{} out of order or overlapping", r.name);
            }
            last = Some(r.offset);
            let mut used = 0u32;
            for f in r.fields {
                assert!(
                    f.width >= 1 && f.lsb as u32 + f.width as u32 <= 32,
                    "{}.{}",
                    r.name,
                    f.name
                );
                assert_eq!(used & f.mask(), 0, "{}.{} overlaps", r.name, f.name);
                used |= f.mask();
            }
        }
    }

    #[test]
    fn blocks_are_well_formed() {
        check_block(GLOBAL, 0x100);
        check_block(FAULT, 0x200);
        check_block(CHANNEL, CHANNEL_STRIDE);
        assert!(FAULT[0].offset >= 0x100);
        assert!(CHANNEL_BASE + MAX_CHANNELS as u32 * CHANNEL_STRIDE <= 0x2000);
    }

    #[test]
    fn doorbells_never_share_a_page_with_msix() {
        let last_doorbell = channel_reg(MAX_CHANNELS - 1, &CH_TAIL);
        assert!(last_doorbell / 0x10000 < crate::pci::MSIX_TABLE_OFFSET / 0x10000);
        assert_eq!(crate::pci::MSIX_TABLE_OFFSET % 0x10000, 0);
    }

    #[test]
    fn lookup_by_name_and_offset() {
        let l = lookup("ch2.tail", 4).unwrap();
        assert_eq!(l.offset, 0x1000 + 2 * 0x100 + 0x0C);
        assert_eq!(lookup("0x100c", 4).unwrap().display_name(), "CH0.TAIL");
        assert_eq!(lookup("GCTRL", 4).unwrap().offset, 0x10);
        assert!(lookup("CH7.TAIL", 4).is_none());
        assert!(lookup("NOPE", 4).is_none());
    }

    #[test]
    fn field_encoding() {
        assert_eq!(CH_STATUS_ERR.encode(0x1ff), 0xff00);
        assert_eq!(CH_STATUS_ERR.decode(0x1234_5678), 0x56);
        assert_eq!(GSTATUS_ERR_CHANNELS.mask(), 0xffff_0000);
    }
}
