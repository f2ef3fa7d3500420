//! # fdma-vfio-user — the vfio-user protocol
//!
//! The project's own implementation of the vfio-user protocol (QEMU's
//! `docs/interop/vfio-user.rst`), used by the simulator's device server and
//! the driver's client alike. It knows the wire format and nothing about
//! either role's policy: what a server answers, or when a client retries, is
//! up to the caller.
//!
//! ## Message model
//!
//! Every message is a 16-byte [`Header`] followed by a payload:
//!
//! | offset | size | field                                                  |
//! |--------|------|--------------------------------------------------------|
//! | 0      | 2    | message ID (chosen by the command's sender, echoed)    |
//! | 2      | 2    | command ([`Command`])                                  |
//! | 4      | 4    | message size, header included                          |
//! | 8      | 4    | flags: type in bits 0-3 (0 command, 1 reply), bit 4 no-reply, bit 5 error |
//! | 12     | 4    | errno of an error reply                                |
//!
//! Values are in host byte order. A command is answered by a reply with the
//! same message ID and command, unless it set no-reply; an error reply is the
//! header alone with the error bit and an errno. File descriptors (DMA memory,
//! region mmaps, eventfds, the twin socket) travel as `SCM_RIGHTS` ancillary
//! data with the message.
//!
//! * [`Connection`] moves whole messages with their fds over a UNIX stream
//!   socket and gives back a [`Message`] (header, payload bytes, fds).
//! * [`Request::decode`] and [`Reply::decode`] turn a payload into typed
//!   values, one struct per table of the spec ([`DmaMap`], [`RegionInfo`],
//!   [`IrqSet`], ...). The payload length comes from the header's message
//!   size and must be exactly what the command's table allows; anything else
//!   is [`Error::PayloadLength`]. Commands without types here (migration,
//!   device features, write-multi) and unknown numbers decode as
//!   [`Request::Unsupported`] with their payload already consumed, so a
//!   server can answer ENOSYS and stay in step.
//! * [`Capabilities`] is the JSON object of the VERSION message, with the
//!   spec's defaults for omitted capabilities.
//! * [`announce`] is how running servers are found: a JSON file per server
//!   in a per-user runtime directory (not part of the vfio-user spec; this
//!   project's convention, shared by the simulator, driver and tools).
//!
//! Server-to-client commands (DMA_READ, DMA_WRITE) use the same types; in
//! twin-socket mode they and their replies travel on a second socket whose
//! client end the server passes with its VERSION reply
//! ([`TwinSocket::fd_index`]).
//!
//! Note the spec's asymmetries, which this crate follows rather than
//! "fixing": the DMA_WRITE reply's count is 4 bytes while the DMA_READ
//! reply's is 8; DMA_MAP and SET_IRQS have no reply payload while DMA_UNMAP's
//! reply echoes the request.

pub mod announce;
pub mod caps;
pub mod conn;
pub mod consts;
pub mod error;
pub mod header;
pub mod msg;

pub use caps::{Capabilities, TwinSocket};
pub use conn::{wait_fd, Connection, Limits, Message};
pub use error::{Error, Expected, Result};
pub use header::{flags, Command, Header, HEADER_SIZE};
pub use msg::{
    DeviceInfo, DmaAccess, DmaData, DmaMap, DmaUnmap, DmaWriteReply, IrqInfo, IrqSet, RegionAccess,
    RegionCap, RegionData, RegionInfo, RegionInfoRequest, RegionIoFds, RegionIoFdsRequest, Reply,
    Request, SparseArea, SubRegionIoFd, Version,
};
