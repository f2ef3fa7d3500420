//! The 16-byte message header and the command numbers.

use crate::error::{Error, Result};

/// Size of the header that precedes every message.
pub const HEADER_SIZE: usize = 16;

/// Header flag bits (the spec's "Flags" field).
pub mod flags {
    /// Bits 0-3: message type.
    pub const TYPE_MASK: u32 = 0xf;
    /// Type: command.
    pub const TYPE_COMMAND: u32 = 0;
    /// Type: reply.
    pub const TYPE_REPLY: u32 = 1;
    /// Bit 4: the command wants no reply.
    pub const NO_REPLY: u32 = 1 << 4;
    /// Bit 5: the reply reports an error; the header's error field holds the errno.
    pub const ERROR: u32 = 1 << 5;
}

/// The command numbers of the spec's command table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(u16)]
pub enum Command {
    /// `VFIO_USER_VERSION`, client -> server.
    Version = 1,
    /// `VFIO_USER_DMA_MAP`, client -> server.
    DmaMap = 2,
    /// `VFIO_USER_DMA_UNMAP`, client -> server.
    DmaUnmap = 3,
    /// `VFIO_USER_DEVICE_GET_INFO`, client -> server.
    DeviceGetInfo = 4,
    /// `VFIO_USER_DEVICE_GET_REGION_INFO`, client -> server.
    DeviceGetRegionInfo = 5,
    /// `VFIO_USER_DEVICE_GET_REGION_IO_FDS`, client -> server.
    DeviceGetRegionIoFds = 6,
    /// `VFIO_USER_DEVICE_GET_IRQ_INFO`, client -> server.
    DeviceGetIrqInfo = 7,
    /// `VFIO_USER_DEVICE_SET_IRQS`, client -> server.
    DeviceSetIrqs = 8,
    /// `VFIO_USER_REGION_READ`, client -> server.
    RegionRead = 9,
    /// `VFIO_USER_REGION_WRITE`, client -> server.
    RegionWrite = 10,
    /// `VFIO_USER_DMA_READ`, server -> client.
    DmaRead = 11,
    /// `VFIO_USER_DMA_WRITE`, server -> client.
    DmaWrite = 12,
    /// `VFIO_USER_DEVICE_RESET`, client -> server.
    DeviceReset = 13,
    /// `VFIO_USER_REGION_WRITE_MULTI` (not implemented by this crate's types).
    RegionWriteMulti = 15,
    /// `VFIO_USER_DEVICE_FEATURE` (migration; not implemented by this crate's types).
    DeviceFeature = 16,
    /// `VFIO_USER_MIG_DATA_READ` (not implemented by this crate's types).
    MigDataRead = 17,
    /// `VFIO_USER_MIG_DATA_WRITE` (not implemented by this crate's types).
    MigDataWrite = 18,
}

impl Command {
    /// Every command of the spec's table.
    pub const ALL: [Command; 17] = [
        Command::Version,
        Command::DmaMap,
        Command::DmaUnmap,
        Command::DeviceGetInfo,
        Command::DeviceGetRegionInfo,
        Command::DeviceGetRegionIoFds,
        Command::DeviceGetIrqInfo,
        Command::DeviceSetIrqs,
        Command::RegionRead,
        Command::RegionWrite,
        Command::DmaRead,
        Command::DmaWrite,
        Command::DeviceReset,
        Command::RegionWriteMulti,
        Command::DeviceFeature,
        Command::MigDataRead,
        Command::MigDataWrite,
    ];

    /// The command with number `n`, if the spec defines one.
    pub fn from_u16(n: u16) -> Option<Command> {
        Command::ALL.iter().copied().find(|c| *c as u16 == n)
    }

    /// Whether the server sends this command (DMA_READ, DMA_WRITE) rather
    /// than the client.
    pub fn is_server_to_client(self) -> bool {
        matches!(self, Command::DmaRead | Command::DmaWrite)
    }
}

/// A message header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Header {
    /// Message ID, chosen by the sender of a command and echoed in its reply.
    pub msg_id: u16,
    /// Raw command number (see [`Command`]); raw so that unknown commands can
    /// be answered.
    pub command: u16,
    /// Size of the whole message including this header.
    pub msg_size: u32,
    /// Type, no-reply and error bits ([`flags`]).
    pub flags: u32,
    /// errno of an error reply; reserved (zero) otherwise.
    pub error: u32,
}

impl Header {
    /// Encode to the 16 wire bytes (host endianness, as the spec says).
    pub fn to_bytes(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..2].copy_from_slice(&self.msg_id.to_ne_bytes());
        b[2..4].copy_from_slice(&self.command.to_ne_bytes());
        b[4..8].copy_from_slice(&self.msg_size.to_ne_bytes());
        b[8..12].copy_from_slice(&self.flags.to_ne_bytes());
        b[12..16].copy_from_slice(&self.error.to_ne_bytes());
        b
    }

    /// Decode and check the 16 wire bytes: the message size covers at least
    /// the header and the type is command or reply.
    pub fn from_bytes(b: &[u8; HEADER_SIZE]) -> Result<Header> {
        let h = Header {
            msg_id: u16::from_ne_bytes([b[0], b[1]]),
            command: u16::from_ne_bytes([b[2], b[3]]),
            msg_size: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
            flags: u32::from_ne_bytes([b[8], b[9], b[10], b[11]]),
            error: u32::from_ne_bytes([b[12], b[13], b[14], b[15]]),
        };
        let bad = |reason| Error::BadHeader {
            msg_id: h.msg_id,
            command: h.command,
            reason,
        };
        if (h.msg_size as usize) < HEADER_SIZE {
            return Err(bad("message size smaller than the header"));
        }
        match h.flags & flags::TYPE_MASK {
            flags::TYPE_COMMAND | flags::TYPE_REPLY => Ok(h),
            _ => Err(bad("message type is neither command nor reply")),
        }
    }

    /// A command header for a payload of `payload_len` bytes.
    pub fn command(msg_id: u16, command: Command, payload_len: usize, no_reply: bool) -> Header {
        Header {
            msg_id,
            command: command as u16,
            msg_size: (HEADER_SIZE + payload_len) as u32,
            flags: flags::TYPE_COMMAND | if no_reply { flags::NO_REPLY } else { 0 },
            error: 0,
        }
    }

    /// A successful reply header for a payload of `payload_len` bytes.
    pub fn reply(msg_id: u16, command: u16, payload_len: usize) -> Header {
        Header {
            msg_id,
            command,
            msg_size: (HEADER_SIZE + payload_len) as u32,
            flags: flags::TYPE_REPLY,
            error: 0,
        }
    }

    /// An error reply header (no payload, as the spec requires).
    pub fn error_reply(msg_id: u16, command: u16, errno: i32) -> Header {
        Header {
            msg_id,
            command,
            msg_size: HEADER_SIZE as u32,
            flags: flags::TYPE_REPLY | flags::ERROR,
            error: errno as u32,
        }
    }

    /// Whether this is a reply.
    pub fn is_reply(&self) -> bool {
        self.flags & flags::TYPE_MASK == flags::TYPE_REPLY
    }

    /// Whether this is a command.
    pub fn is_command(&self) -> bool {
        self.flags & flags::TYPE_MASK == flags::TYPE_COMMAND
    }

    /// Whether the sender wants no reply (commands only).
    pub fn no_reply(&self) -> bool {
        self.flags & flags::NO_REPLY != 0
    }

    /// Whether this reply reports an error.
    pub fn is_error(&self) -> bool {
        self.flags & flags::ERROR != 0
    }

    /// The payload length the message size announces.
    pub fn payload_len(&self) -> usize {
        self.msg_size as usize - HEADER_SIZE
    }

    /// The typed command, if the number is one the spec defines.
    pub fn typed_command(&self) -> Option<Command> {
        Command::from_u16(self.command)
    }
}
