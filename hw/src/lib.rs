//! # fdma-hw — the card's hardware contract
//!
//! Everything the driver, the simulator and the RTL must agree on lives here and
//! only here:
//!
//! * [`regs`] — the BAR0 register map: global block, fault-injection block
//!   (contract D7), per-channel blocks, each register with its access type,
//!   reset value and bit fields.
//! * [`desc`] — the 32-byte descriptor and the 16-byte completion writeback that
//!   the engine exchanges with host memory, and the channel error codes.
//! * [`pci`] — the PCI identity and configuration space the card presents, the
//!   BAR layout and the MSI-X table placement.
//! * [`svgen`] — renders the same description as the SystemVerilog package the
//!   RTL imports (`fpga/rtl/generated/fdma_hw_pkg.sv`). The rendered file is
//!   committed; the test `hw/tests/drift.rs` fails when it differs from what
//!   this crate renders, and `cargo run -p fdma-hw --bin fdma-hw-gen` rewrites it.
//!
//! The crate does no I/O and contains no `unsafe`: it is pure description and
//! encoding, so both a lab host without Verilator and the simulator can use it.
//!
//! ## Register model
//!
//! All registers are 32 bits wide and must be accessed with aligned 4-byte
//! reads and writes. 64-bit quantities are split into `_LO`/`_HI` pairs; for
//! the free-running counters (`CYCLE`, channel `BYTES`) reading `_LO` latches
//! the upper half, so `_LO` then `_HI` yields a consistent 64-bit snapshot.
//!
//! Descriptor indices (`TAIL`, `HEAD`, `ERR_INDEX`) are free-running 32-bit
//! counters; the ring slot is `index & (RING_SIZE - 1)`. `TAIL - HEAD` is the
//! number of descriptors queued and must never exceed `RING_SIZE`.
#![forbid(unsafe_code)]

pub mod desc;
pub mod pci;
pub mod regs;
pub mod svgen;

/// Magic value in the upper half of the `ID` register.
pub const ID_MAGIC: u16 = 0xFD3A;
/// Major version of this register contract. A driver refuses a card whose major differs.
pub const VERSION_MAJOR: u8 = 1;
/// Minor version of this register contract. Additions only; a driver accepts any minor.
pub const VERSION_MINOR: u8 = 0;

/// The value of the `ID` register for this contract version.
pub const fn id_value() -> u32 {
    ((ID_MAGIC as u32) << 16) | ((VERSION_MAJOR as u32) << 8) | VERSION_MINOR as u32
}

/// Build-time configuration of the engine: the RTL's parameters, reported back
/// to software through the capability registers.
///
/// The default is the configuration the simulator is built with and the board
/// bitstream targets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EngineConfig {
    /// Number of DMA channels (descriptor rings), 1..=[`regs::MAX_CHANNELS`].
    pub channels: u8,
    /// log2 of the largest ring size in descriptors.
    pub ring_log2_max: u8,
    /// Width of DMA addresses the engine can emit, in bits.
    pub dma_addr_bits: u8,
    /// log2 of the datapath width in bytes (5 = 256-bit datapath).
    pub data_bytes_log2: u8,
    /// Whether the fault-injection block (contract D7) is present.
    pub fault_injection: bool,
    /// Engine clock in MHz (device time, contract D1, counts these cycles).
    pub clock_mhz: u16,
    /// log2 of the card-memory size in bytes.
    pub card_mem_log2: u8,
    /// log2 of the maximum write payload the engine emits, in bytes.
    pub max_payload_log2: u8,
    /// log2 of the maximum read request size the engine emits, in bytes.
    pub max_read_log2: u8,
    /// log2 of the largest descriptor length in bytes.
    pub max_desc_len_log2: u8,
    /// Most host-memory read requests the engine keeps outstanding.
    pub max_reads_outstanding: u8,
}

impl EngineConfig {
    /// The reference configuration: 4 channels, 256-bit datapath at 250 MHz,
    /// 256 MiB of card memory, 256-byte payloads, 512-byte read requests.
    pub const DEFAULT: EngineConfig = EngineConfig {
        channels: 4,
        ring_log2_max: 16,
        dma_addr_bits: 64,
        data_bytes_log2: 5,
        fault_injection: true,
        clock_mhz: 250,
        card_mem_log2: 28,
        max_payload_log2: 8,
        max_read_log2: 9,
        max_desc_len_log2: 28,
        max_reads_outstanding: 16,
    };

    /// Datapath width in bytes.
    pub const fn data_bytes(&self) -> usize {
        1 << self.data_bytes_log2
    }
    /// Card-memory size in bytes.
    pub const fn card_mem_bytes(&self) -> u64 {
        1 << self.card_mem_log2
    }
    /// Largest ring, in descriptors.
    pub const fn max_ring_entries(&self) -> u32 {
        1 << self.ring_log2_max
    }
    /// Largest descriptor length in bytes (inclusive).
    pub const fn max_desc_len(&self) -> u32 {
        1 << self.max_desc_len_log2
    }
    /// Number of MSI-X vectors: one per channel plus the error vector.
    pub const fn msix_vectors(&self) -> u16 {
        self.channels as u16 + 1
    }
    /// Expected value of `CAP0`.
    pub const fn cap0(&self) -> u32 {
        use regs::*;
        CAP0_CHANNELS.encode(self.channels as u32)
            | CAP0_RING_LOG2_MAX.encode(self.ring_log2_max as u32)
            | CAP0_DMA_ADDR_BITS.encode(self.dma_addr_bits as u32)
            | CAP0_DATA_BYTES_LOG2.encode(self.data_bytes_log2 as u32)
            | CAP0_FAULT_INJ.encode(self.fault_injection as u32)
    }
    /// Expected value of `CAP1`.
    pub const fn cap1(&self) -> u32 {
        use regs::*;
        CAP1_CLOCK_MHZ.encode(self.clock_mhz as u32)
            | CAP1_CARD_MEM_LOG2.encode(self.card_mem_log2 as u32)
            | CAP1_MAX_PAYLOAD_LOG2.encode(self.max_payload_log2 as u32)
            | CAP1_MAX_READ_LOG2.encode(self.max_read_log2 as u32)
    }
    /// Expected value of `CAP2`.
    pub const fn cap2(&self) -> u32 {
        use regs::*;
        CAP2_MAX_DESC_LEN_LOG2.encode(self.max_desc_len_log2 as u32)
            | CAP2_MSIX_VECTORS.encode(self.msix_vectors() as u32)
            | CAP2_MAX_READS.encode(self.max_reads_outstanding as u32)
    }

    /// Decode the capability registers as read from a card.
    ///
    /// Values are taken as the card reports them; callers range-check them
    /// (contract D2) with [`EngineConfig::validate`].
    pub const fn from_caps(cap0: u32, cap1: u32, cap2: u32) -> EngineConfig {
        use regs::*;
        EngineConfig {
            channels: CAP0_CHANNELS.decode(cap0) as u8,
            ring_log2_max: CAP0_RING_LOG2_MAX.decode(cap0) as u8,
            dma_addr_bits: CAP0_DMA_ADDR_BITS.decode(cap0) as u8,
            data_bytes_log2: CAP0_DATA_BYTES_LOG2.decode(cap0) as u8,
            fault_injection: CAP0_FAULT_INJ.decode(cap0) != 0,
            clock_mhz: CAP1_CLOCK_MHZ.decode(cap1) as u16,
            card_mem_log2: CAP1_CARD_MEM_LOG2.decode(cap1) as u8,
            max_payload_log2: CAP1_MAX_PAYLOAD_LOG2.decode(cap1) as u8,
            max_read_log2: CAP1_MAX_READ_LOG2.decode(cap1) as u8,
            max_desc_len_log2: CAP2_MAX_DESC_LEN_LOG2.decode(cap2) as u8,
            max_reads_outstanding: CAP2_MAX_READS.decode(cap2) as u8,
        }
    }

    /// Check that a configuration (typically decoded from a card) is within
    /// what this contract allows. Returns the name of the first bad field.
    pub fn validate(&self) -> Result<(), &'static str> {
        let checks: [(&'static str, bool); 10] = [
            (
                "channels",
                self.channels >= 1 && self.channels as usize <= regs::MAX_CHANNELS,
            ),
            (
                "ring_log2_max",
                (1..=regs::RING_LOG2_LIMIT).contains(&self.ring_log2_max),
            ),
            ("dma_addr_bits", (32..=64).contains(&self.dma_addr_bits)),
            ("data_bytes_log2", (2..=6).contains(&self.data_bytes_log2)),
            ("clock_mhz", self.clock_mhz > 0),
            ("card_mem_log2", (12..=40).contains(&self.card_mem_log2)),
            (
                "max_payload_log2",
                (self.data_bytes_log2..=12).contains(&self.max_payload_log2),
            ),
            (
                "max_read_log2",
                (self.data_bytes_log2..=12).contains(&self.max_read_log2),
            ),
            (
                "max_desc_len_log2",
                (12..=31).contains(&self.max_desc_len_log2),
            ),
            ("max_reads_outstanding", self.max_reads_outstanding >= 1),
        ];
        match checks.iter().find(|(_, ok)| !ok) {
            Some((name, _)) => Err(name),
            None => Ok(()),
        }
    }
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_round_trip() {
        let c = EngineConfig::DEFAULT;
        assert_eq!(EngineConfig::from_caps(c.cap0(), c.cap1(), c.cap2()), c);
        c.validate().unwrap();
    }

    #[test]
    fn id_layout() {
        assert_eq!(id_value() >> 16, ID_MAGIC as u32);
        assert_eq!((id_value() >> 8) & 0xff, VERSION_MAJOR as u32);
    }

    #[test]
    fn dead_link_caps_are_rejected() {
        // D2: a dead link reads all ones; it must never pass as a valid card.
        let c = EngineConfig::from_caps(!0, !0, !0);
        assert!(c.validate().is_err());
    }
}
