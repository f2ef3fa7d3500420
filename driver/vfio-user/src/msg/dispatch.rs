//! The [`Request`] and [`Reply`] enums: decoding a payload by its header's command.

use super::*;
use crate::error::{Error, Expected, Result};
use crate::header::{Command, Header};

/// A decoded command message.
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// VERSION.
    Version(Version),
    /// DMA_MAP (the fd, if any, is in the message's fds).
    DmaMap(DmaMap),
    /// DMA_UNMAP.
    DmaUnmap(DmaUnmap),
    /// DEVICE_GET_INFO.
    DeviceGetInfo(DeviceInfo),
    /// DEVICE_GET_REGION_INFO.
    DeviceGetRegionInfo(RegionInfoRequest),
    /// DEVICE_GET_REGION_IO_FDS.
    DeviceGetRegionIoFds(RegionIoFdsRequest),
    /// DEVICE_GET_IRQ_INFO.
    DeviceGetIrqInfo(IrqInfo),
    /// DEVICE_SET_IRQS (eventfds in the message's fds).
    DeviceSetIrqs(IrqSet),
    /// REGION_READ.
    RegionRead(RegionAccess),
    /// REGION_WRITE.
    RegionWrite(RegionData),
    /// DMA_READ (server to client).
    DmaRead(DmaAccess),
    /// DMA_WRITE (server to client).
    DmaWrite(DmaData),
    /// DEVICE_RESET.
    DeviceReset,
    /// A command this crate has no types for (migration, write-multi,
    /// device features) or an unknown number. Its payload was consumed with
    /// the message, so the connection stays in step; answer it with an
    /// error reply (ENOSYS).
    Unsupported {
        /// Raw command number.
        command: u16,
    },
}

/// A decoded successful reply message.
#[derive(Clone, Debug, PartialEq)]
pub enum Reply {
    /// VERSION.
    Version(Version),
    /// DMA_MAP (no payload).
    DmaMap,
    /// DMA_UNMAP (echoes the request).
    DmaUnmap(DmaUnmap),
    /// DEVICE_GET_INFO.
    DeviceGetInfo(DeviceInfo),
    /// DEVICE_GET_REGION_INFO (an mmap fd, if any, is in the message's fds).
    DeviceGetRegionInfo(RegionInfo),
    /// DEVICE_GET_REGION_IO_FDS.
    DeviceGetRegionIoFds(RegionIoFds),
    /// DEVICE_GET_IRQ_INFO.
    DeviceGetIrqInfo(IrqInfo),
    /// DEVICE_SET_IRQS (no payload).
    DeviceSetIrqs,
    /// REGION_READ.
    RegionRead(RegionData),
    /// REGION_WRITE.
    RegionWrite(RegionAccess),
    /// DMA_READ.
    DmaRead(DmaData),
    /// DMA_WRITE.
    DmaWrite(DmaWriteReply),
    /// DEVICE_RESET (no payload).
    DeviceReset,
}

impl Request {
    /// The command of this request; `None` for [`Request::Unsupported`] with
    /// a number the spec does not define.
    pub fn command(&self) -> Option<Command> {
        Some(match self {
            Request::Version(_) => Command::Version,
            Request::DmaMap(_) => Command::DmaMap,
            Request::DmaUnmap(_) => Command::DmaUnmap,
            Request::DeviceGetInfo(_) => Command::DeviceGetInfo,
            Request::DeviceGetRegionInfo(_) => Command::DeviceGetRegionInfo,
            Request::DeviceGetRegionIoFds(_) => Command::DeviceGetRegionIoFds,
            Request::DeviceGetIrqInfo(_) => Command::DeviceGetIrqInfo,
            Request::DeviceSetIrqs(_) => Command::DeviceSetIrqs,
            Request::RegionRead(_) => Command::RegionRead,
            Request::RegionWrite(_) => Command::RegionWrite,
            Request::DmaRead(_) => Command::DmaRead,
            Request::DmaWrite(_) => Command::DmaWrite,
            Request::DeviceReset => Command::DeviceReset,
            Request::Unsupported { command } => return Command::from_u16(*command),
        })
    }

    /// Raw command number.
    pub fn command_number(&self) -> u16 {
        match self {
            Request::Unsupported { command } => *command,
            r => r.command().expect("typed") as u16,
        }
    }

    /// Encode the payload (without header).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Request::Version(v) => v.encode(&mut o),
            Request::DmaMap(m) => m.encode(&mut o),
            Request::DmaUnmap(m) => m.encode(&mut o),
            Request::DeviceGetInfo(m) => m.encode(&mut o),
            Request::DeviceGetRegionInfo(m) => m.encode(&mut o),
            Request::DeviceGetRegionIoFds(m) => m.encode(&mut o),
            Request::DeviceGetIrqInfo(m) => m.encode(&mut o),
            Request::DeviceSetIrqs(m) => m.encode(&mut o),
            Request::RegionRead(m) => m.encode(&mut o),
            Request::RegionWrite(m) => m.encode(&mut o),
            Request::DmaRead(m) => m.encode(&mut o),
            Request::DmaWrite(m) => m.encode(&mut o),
            Request::DeviceReset | Request::Unsupported { .. } => {}
        }
        o
    }

    /// Decode a command message's payload by its header's command.
    pub fn decode(h: &Header, p: &[u8]) -> Result<Request> {
        let Some(command) = h.typed_command() else {
            return Ok(Request::Unsupported { command: h.command });
        };
        let cx = Ctx {
            command,
            reply: false,
            msg_id: h.msg_id,
        };
        Ok(match command {
            Command::Version => Request::Version(Version::decode(cx, p)?),
            Command::DmaMap => Request::DmaMap(DmaMap::decode(cx, p)?),
            Command::DmaUnmap => Request::DmaUnmap(DmaUnmap::decode(cx, p)?),
            Command::DeviceGetInfo => Request::DeviceGetInfo(DeviceInfo::decode(cx, p)?),
            Command::DeviceGetRegionInfo => {
                Request::DeviceGetRegionInfo(RegionInfoRequest::decode(cx, p)?)
            }
            Command::DeviceGetRegionIoFds => {
                Request::DeviceGetRegionIoFds(RegionIoFdsRequest::decode(cx, p)?)
            }
            Command::DeviceGetIrqInfo => Request::DeviceGetIrqInfo(IrqInfo::decode(cx, p)?),
            Command::DeviceSetIrqs => Request::DeviceSetIrqs(IrqSet::decode(cx, p)?),
            Command::RegionRead => Request::RegionRead(RegionAccess::decode(cx, p)?),
            Command::RegionWrite => Request::RegionWrite(RegionData::decode(cx, p)?),
            Command::DmaRead => Request::DmaRead(DmaAccess::decode(cx, p)?),
            Command::DmaWrite => Request::DmaWrite(DmaData::decode(cx, p)?),
            Command::DeviceReset => {
                cx.check(p.len(), Expected::Exactly(0))?;
                Request::DeviceReset
            }
            Command::RegionWriteMulti
            | Command::DeviceFeature
            | Command::MigDataRead
            | Command::MigDataWrite => Request::Unsupported { command: h.command },
        })
    }
}

impl Reply {
    /// The command this replies to.
    pub fn command(&self) -> Command {
        match self {
            Reply::Version(_) => Command::Version,
            Reply::DmaMap => Command::DmaMap,
            Reply::DmaUnmap(_) => Command::DmaUnmap,
            Reply::DeviceGetInfo(_) => Command::DeviceGetInfo,
            Reply::DeviceGetRegionInfo(_) => Command::DeviceGetRegionInfo,
            Reply::DeviceGetRegionIoFds(_) => Command::DeviceGetRegionIoFds,
            Reply::DeviceGetIrqInfo(_) => Command::DeviceGetIrqInfo,
            Reply::DeviceSetIrqs => Command::DeviceSetIrqs,
            Reply::RegionRead(_) => Command::RegionRead,
            Reply::RegionWrite(_) => Command::RegionWrite,
            Reply::DmaRead(_) => Command::DmaRead,
            Reply::DmaWrite(_) => Command::DmaWrite,
            Reply::DeviceReset => Command::DeviceReset,
        }
    }

    /// Encode the payload (without header).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut o = Vec::new();
        match self {
            Reply::Version(v) => v.encode(&mut o),
            Reply::DmaUnmap(m) => m.encode(&mut o),
            Reply::DeviceGetInfo(m) => m.encode(&mut o),
            Reply::DeviceGetRegionInfo(m) => m.encode(&mut o),
            Reply::DeviceGetRegionIoFds(m) => m.encode(&mut o),
            Reply::DeviceGetIrqInfo(m) => m.encode(&mut o),
            Reply::RegionRead(m) => m.encode(&mut o),
            Reply::RegionWrite(m) => m.encode(&mut o),
            Reply::DmaRead(m) => m.encode(&mut o),
            Reply::DmaWrite(m) => m.encode(&mut o),
            Reply::DmaMap | Reply::DeviceSetIrqs | Reply::DeviceReset => {}
        }
        o
    }

    /// Decode a reply message's payload. An error reply (ERROR flag) becomes
    /// [`Error::Remote`]; an error reply with a payload is rejected, as the
    /// spec allows only the header.
    pub fn decode(h: &Header, p: &[u8]) -> Result<Reply> {
        let command = h.typed_command().ok_or(Error::UnknownCommand {
            command: h.command,
            msg_id: h.msg_id,
        })?;
        let cx = Ctx {
            command,
            reply: true,
            msg_id: h.msg_id,
        };
        if h.is_error() {
            cx.check(p.len(), Expected::Exactly(0))?;
            return Err(Error::Remote {
                command,
                msg_id: h.msg_id,
                errno: h.error,
            });
        }
        let empty = |r: Reply| cx.check(p.len(), Expected::Exactly(0)).map(|_| r);
        Ok(match command {
            Command::Version => Reply::Version(Version::decode(cx, p)?),
            Command::DmaMap => empty(Reply::DmaMap)?,
            Command::DmaUnmap => Reply::DmaUnmap(DmaUnmap::decode(cx, p)?),
            Command::DeviceGetInfo => Reply::DeviceGetInfo(DeviceInfo::decode(cx, p)?),
            Command::DeviceGetRegionInfo => Reply::DeviceGetRegionInfo(RegionInfo::decode(cx, p)?),
            Command::DeviceGetRegionIoFds => {
                Reply::DeviceGetRegionIoFds(RegionIoFds::decode(cx, p)?)
            }
            Command::DeviceGetIrqInfo => Reply::DeviceGetIrqInfo(IrqInfo::decode(cx, p)?),
            Command::DeviceSetIrqs => empty(Reply::DeviceSetIrqs)?,
            Command::RegionRead => Reply::RegionRead(RegionData::decode(cx, p)?),
            Command::RegionWrite => Reply::RegionWrite(RegionAccess::decode(cx, p)?),
            Command::DmaRead => Reply::DmaRead(DmaData::decode(cx, p)?),
            Command::DmaWrite => Reply::DmaWrite(DmaWriteReply::decode(cx, p)?),
            Command::DeviceReset => empty(Reply::DeviceReset)?,
            Command::RegionWriteMulti
            | Command::DeviceFeature
            | Command::MigDataRead
            | Command::MigDataWrite => {
                return Err(Error::UnknownCommand {
                    command: h.command,
                    msg_id: h.msg_id,
                })
            }
        })
    }
}
