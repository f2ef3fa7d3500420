//! Descriptor and writeback formats, and channel error codes.
//!
//! # Descriptor (32 bytes, little-endian)
//!
//! | offset | size | field   | meaning                                                        |
//! |--------|------|---------|----------------------------------------------------------------|
//! | 0x00   | 8    | `src`   | source: host IOVA, or card-memory offset for card-to-host      |
//! | 0x08   | 8    | `dst`   | destination: host IOVA, or card-memory offset for host-to-card |
//! | 0x10   | 4    | `len`   | bytes to move, 1..=2^`CAP2.MAX_DESC_LEN_LOG2`                  |
//! | 0x14   | 4    | `flags` | [`Flags`]: direction, interrupt, end of job; other bits zero   |
//! | 0x18   | 4    | `tag`   | opaque to the card; for software's bookkeeping                 |
//! | 0x1C   | 4    | `magic` | [`DESC_MAGIC`]; anything else halts the channel (`ERR_DESC_RSVD`) |
//!
//! A *job* is one or more consecutive descriptors, the last with
//! [`Flags::EOJ`]. Descriptors of a channel complete in order (HEAD never
//! skips one), but the engine pipelines them: a later descriptor's reads may
//! be issued before an earlier descriptor's writes have landed. A copy that
//! reads what an earlier one wrote must wait for that earlier job's
//! completion first. The engine writes the writeback after every descriptor
//! that has `EOJ` or `IRQ` set and when the channel halts.
//!
//! # Writeback (16 bytes, little-endian, at the channel's `WB` IOVA)
//!
//! | offset | size | field       | meaning                                           |
//! |--------|------|-------------|---------------------------------------------------|
//! | 0x00   | 4    | `head`      | the channel's `HEAD` when written                 |
//! | 0x04   | 4    | `status`    | the channel's `STATUS` when written               |
//! | 0x08   | 4    | `err_index` | the channel's `ERR_INDEX` when written            |
//! | 0x0C   | 4    | `count`     | number of writebacks since channel reset, wrapping |
//!
//! The writeback is a posted write ordered after the data writes of the
//! descriptors it reports, and before the interrupt that follows it.
//! Software must treat every field as untrusted (contract D2).

/// Size of a descriptor in bytes.
pub const DESC_BYTES: usize = 32;
/// Size of the writeback area in bytes.
pub const WB_BYTES: usize = 16;
/// Required value of a descriptor's `magic` word.
pub const DESC_MAGIC: u32 = 0xD35C_FD3A;

/// Byte offsets of descriptor fields.
pub mod offsets {
    /// `src`, u64.
    pub const SRC: usize = 0x00;
    /// `dst`, u64.
    pub const DST: usize = 0x08;
    /// `len`, u32.
    pub const LEN: usize = 0x10;
    /// `flags`, u32.
    pub const FLAGS: usize = 0x14;
    /// `tag`, u32.
    pub const TAG: usize = 0x18;
    /// `magic`, u32.
    pub const MAGIC: usize = 0x1C;
    /// Writeback `head`, u32.
    pub const WB_HEAD: usize = 0x0;
    /// Writeback `status`, u32.
    pub const WB_STATUS: usize = 0x4;
    /// Writeback `err_index`, u32.
    pub const WB_ERR_INDEX: usize = 0x8;
    /// Writeback `count`, u32.
    pub const WB_COUNT: usize = 0xC;
}

/// Direction of a descriptor's copy (`flags[1:0]`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum Direction {
    /// Host memory to card memory.
    HostToCard = 0,
    /// Card memory to host memory.
    CardToHost = 1,
    /// Host memory to host memory, through the engine.
    HostToHost = 2,
}

impl Direction {
    /// Every direction.
    pub const ALL: [Direction; 3] = [
        Direction::HostToCard,
        Direction::CardToHost,
        Direction::HostToHost,
    ];
    /// Decode `flags[1:0]`; `None` for the reserved code 3.
    pub const fn from_bits(b: u32) -> Option<Direction> {
        match b & 3 {
            0 => Some(Direction::HostToCard),
            1 => Some(Direction::CardToHost),
            2 => Some(Direction::HostToHost),
            _ => None,
        }
    }
    /// Short name (`h2c`, `c2h`, `h2h`).
    pub const fn name(self) -> &'static str {
        match self {
            Direction::HostToCard => "h2c",
            Direction::CardToHost => "c2h",
            Direction::HostToHost => "h2h",
        }
    }
    /// Whether the source is host memory.
    pub const fn src_is_host(self) -> bool {
        !matches!(self, Direction::CardToHost)
    }
    /// Whether the destination is host memory.
    pub const fn dst_is_host(self) -> bool {
        !matches!(self, Direction::HostToCard)
    }
}

/// Descriptor flag bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Flags(pub u32);

impl Flags {
    /// Direction field mask (bits 1:0).
    pub const DIR_MASK: u32 = 0x3;
    /// Raise the channel's interrupt (subject to moderation) when this descriptor completes.
    pub const IRQ: u32 = 1 << 2;
    /// Last descriptor of a job: write the writeback when it completes.
    pub const EOJ: u32 = 1 << 3;
    /// Bits that must be zero.
    pub const RESERVED: u32 = !(Self::DIR_MASK | Self::IRQ | Self::EOJ);

    /// Flags for a descriptor in direction `d`.
    pub const fn new(d: Direction, irq: bool, eoj: bool) -> Flags {
        Flags(d as u32 | if irq { Self::IRQ } else { 0 } | if eoj { Self::EOJ } else { 0 })
    }
    /// The direction, if valid.
    pub const fn direction(self) -> Option<Direction> {
        Direction::from_bits(self.0)
    }
    /// Whether IRQ is set.
    pub const fn irq(self) -> bool {
        self.0 & Self::IRQ != 0
    }
    /// Whether EOJ is set.
    pub const fn eoj(self) -> bool {
        self.0 & Self::EOJ != 0
    }
}

/// A descriptor as software writes it into the ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Descriptor {
    /// Source address (host IOVA or card offset, by direction).
    pub src: u64,
    /// Destination address (host IOVA or card offset, by direction).
    pub dst: u64,
    /// Length in bytes.
    pub len: u32,
    /// Flags.
    pub flags: Flags,
    /// Software tag.
    pub tag: u32,
    /// Must be [`DESC_MAGIC`].
    pub magic: u32,
}

impl Descriptor {
    /// A well-formed descriptor.
    pub const fn new(
        dir: Direction,
        src: u64,
        dst: u64,
        len: u32,
        irq: bool,
        eoj: bool,
        tag: u32,
    ) -> Self {
        Descriptor {
            src,
            dst,
            len,
            flags: Flags::new(dir, irq, eoj),
            tag,
            magic: DESC_MAGIC,
        }
    }

    /// Encode to the 32-byte little-endian ring format.
    pub fn to_bytes(&self) -> [u8; DESC_BYTES] {
        let mut b = [0u8; DESC_BYTES];
        b[offsets::SRC..offsets::SRC + 8].copy_from_slice(&self.src.to_le_bytes());
        b[offsets::DST..offsets::DST + 8].copy_from_slice(&self.dst.to_le_bytes());
        b[offsets::LEN..offsets::LEN + 4].copy_from_slice(&self.len.to_le_bytes());
        b[offsets::FLAGS..offsets::FLAGS + 4].copy_from_slice(&self.flags.0.to_le_bytes());
        b[offsets::TAG..offsets::TAG + 4].copy_from_slice(&self.tag.to_le_bytes());
        b[offsets::MAGIC..offsets::MAGIC + 4].copy_from_slice(&self.magic.to_le_bytes());
        b
    }

    /// Decode from the ring format.
    pub fn from_bytes(b: &[u8; DESC_BYTES]) -> Self {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        Descriptor {
            src: u64_at(offsets::SRC),
            dst: u64_at(offsets::DST),
            len: u32_at(offsets::LEN),
            flags: Flags(u32_at(offsets::FLAGS)),
            tag: u32_at(offsets::TAG),
            magic: u32_at(offsets::MAGIC),
        }
    }

    /// The error code the engine halts with for this descriptor, given the
    /// engine configuration, or `None` if it is valid. Checked in this order;
    /// the RTL applies the same order.
    pub fn check(&self, cfg: &crate::EngineConfig) -> Option<u8> {
        if self.magic != DESC_MAGIC || self.flags.0 & Flags::RESERVED != 0 {
            return Some(err::DESC_RSVD);
        }
        let Some(dir) = self.flags.direction() else {
            return Some(err::DESC_DIR);
        };
        if self.len == 0 || self.len > cfg.max_desc_len() {
            return Some(err::DESC_LEN);
        }
        let card = cfg.card_mem_bytes();
        let card_addr = match dir {
            Direction::HostToCard => Some(self.dst),
            Direction::CardToHost => Some(self.src),
            Direction::HostToHost => None,
        };
        if let Some(a) = card_addr {
            if a >= card || card - a < self.len as u64 {
                return Some(err::CARD_RANGE);
            }
        }
        None
    }
}

/// A decoded writeback record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Writeback {
    /// HEAD at the time of writing.
    pub head: u32,
    /// STATUS at the time of writing.
    pub status: u32,
    /// ERR_INDEX at the time of writing.
    pub err_index: u32,
    /// Writebacks since channel reset (wrapping).
    pub count: u32,
}

impl Writeback {
    /// Decode the 16-byte writeback area.
    pub fn from_bytes(b: &[u8; WB_BYTES]) -> Self {
        let u32_at = |o: usize| u32::from_le_bytes(b[o..o + 4].try_into().expect("4 bytes"));
        Writeback {
            head: u32_at(offsets::WB_HEAD),
            status: u32_at(offsets::WB_STATUS),
            err_index: u32_at(offsets::WB_ERR_INDEX),
            count: u32_at(offsets::WB_COUNT),
        }
    }
    /// Encode to the 16-byte writeback format.
    pub fn to_bytes(&self) -> [u8; WB_BYTES] {
        let mut b = [0u8; WB_BYTES];
        b[0..4].copy_from_slice(&self.head.to_le_bytes());
        b[4..8].copy_from_slice(&self.status.to_le_bytes());
        b[8..12].copy_from_slice(&self.err_index.to_le_bytes());
        b[12..16].copy_from_slice(&self.count.to_le_bytes());
        b
    }
}

/// Channel error codes (`STATUS.ERR`).
pub mod err {
    /// No error.
    pub const NONE: u8 = 0;
    /// Descriptor length zero or above the maximum.
    pub const DESC_LEN: u8 = 1;
    /// Reserved direction code.
    pub const DESC_DIR: u8 = 2;
    /// Reserved flag bits set or wrong magic.
    pub const DESC_RSVD: u8 = 3;
    /// Card-memory range exceeded.
    pub const CARD_RANGE: u8 = 4;
    /// The descriptor fetch read completed with an error (IOMMU refused it).
    pub const FETCH_FAULT: u8 = 5;
    /// A data read completed with an error (IOMMU refused it).
    pub const READ_FAULT: u8 = 6;
    /// Ring configuration invalid when RUN was set (size not a power of two
    /// in range, base or writeback misaligned).
    pub const BAD_RING: u8 = 7;
    /// The doorbell moved TAIL more than RING_SIZE beyond HEAD.
    pub const BAD_DOORBELL: u8 = 8;
    /// Forced by the fault-injection block (D7).
    pub const INJECTED: u8 = 9;

    /// Every defined code with its name and meaning.
    pub const ALL: &[(u8, &str, &str)] = &[
        (NONE, "NONE", "no error"),
        (
            DESC_LEN,
            "DESC_LEN",
            "descriptor length zero or above the maximum",
        ),
        (DESC_DIR, "DESC_DIR", "reserved direction code"),
        (
            DESC_RSVD,
            "DESC_RSVD",
            "reserved flag bits set or bad magic",
        ),
        (CARD_RANGE, "CARD_RANGE", "card-memory range exceeded"),
        (
            FETCH_FAULT,
            "FETCH_FAULT",
            "descriptor fetch faulted (IOMMU)",
        ),
        (READ_FAULT, "READ_FAULT", "data read faulted (IOMMU)"),
        (
            BAD_RING,
            "BAD_RING",
            "invalid ring or writeback configuration",
        ),
        (
            BAD_DOORBELL,
            "BAD_DOORBELL",
            "doorbell beyond ring capacity",
        ),
        (INJECTED, "INJECTED", "descriptor error injected (D7)"),
    ];

    /// Name of an error code.
    pub fn name(code: u8) -> &'static str {
        ALL.iter()
            .find(|(c, _, _)| *c == code)
            .map_or("UNKNOWN", |(_, n, _)| n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::EngineConfig;

    #[test]
    fn descriptor_round_trip_and_layout() {
        let d = Descriptor::new(
            Direction::CardToHost,
            0x1122_3344_5566_7788,
            0x99,
            4096,
            true,
            true,
            7,
        );
        let b = d.to_bytes();
        assert_eq!(&b[0..8], &0x1122_3344_5566_7788u64.to_le_bytes());
        assert_eq!(b[0x14], 1 | 4 | 8);
        assert_eq!(&b[0x1C..0x20], &DESC_MAGIC.to_le_bytes());
        assert_eq!(Descriptor::from_bytes(&b), d);
    }

    #[test]
    fn descriptor_checks() {
        let c = EngineConfig::DEFAULT;
        let ok = Descriptor::new(Direction::HostToCard, 0, 0, 1, false, true, 0);
        assert_eq!(ok.check(&c), None);
        assert_eq!(Descriptor { len: 0, ..ok }.check(&c), Some(err::DESC_LEN));
        assert_eq!(
            Descriptor {
                len: c.max_desc_len(),
                ..ok
            }
            .check(&c),
            None
        );
        assert_eq!(
            Descriptor {
                len: c.max_desc_len() + 1,
                ..ok
            }
            .check(&c),
            Some(err::DESC_LEN)
        );
        assert_eq!(
            Descriptor {
                flags: Flags(3),
                ..ok
            }
            .check(&c),
            Some(err::DESC_DIR)
        );
        assert_eq!(
            Descriptor {
                flags: Flags(1 << 9),
                ..ok
            }
            .check(&c),
            Some(err::DESC_RSVD)
        );
        assert_eq!(
            Descriptor { magic: 0, ..ok }.check(&c),
            Some(err::DESC_RSVD)
        );
        let end = c.card_mem_bytes();
        assert_eq!(
            Descriptor {
                dst: end - 1,
                len: 1,
                ..ok
            }
            .check(&c),
            None
        );
        assert_eq!(
            Descriptor {
                dst: end - 1,
                len: 2,
                ..ok
            }
            .check(&c),
            Some(err::CARD_RANGE)
        );
        assert_eq!(
            Descriptor {
                dst: u64::MAX,
                len: 2,
                ..ok
            }
            .check(&c),
            Some(err::CARD_RANGE)
        );
        let h2h = Descriptor::new(Direction::HostToHost, u64::MAX - 8, 0, 4, false, true, 0);
        assert_eq!(h2h.check(&c), None);
    }

    #[test]
    fn writeback_round_trip() {
        let w = Writeback {
            head: 1,
            status: 0x0602,
            err_index: 3,
            count: 4,
        };
        assert_eq!(Writeback::from_bytes(&w.to_bytes()), w);
    }

    #[test]
    fn error_names_unique() {
        for (i, a) in err::ALL.iter().enumerate() {
            assert_eq!(a.0 as usize, i);
            assert_eq!(err::name(a.0), a.1);
        }
    }
}
