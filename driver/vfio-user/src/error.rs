//! The crate's error type.

use std::time::Duration;

use crate::header::Command;

/// How long a payload may be for a command, as the spec's tables allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// Exactly this many bytes.
    Exactly(usize),
    /// At least this many bytes (a fixed part followed by variable data).
    AtLeast(usize),
}

impl std::fmt::Display for Expected {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Expected::Exactly(n) => write!(f, "exactly {n}"),
            Expected::AtLeast(n) => write!(f, "at least {n}"),
        }
    }
}

/// Everything that can go wrong encoding, decoding, sending or receiving a
/// vfio-user message.
///
/// Variants that concern one message carry its command and message ID so a
/// server can answer it with an error reply (see [`Error::reply_target`]).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A socket operation failed.
    #[error("{op} failed")]
    Io {
        /// What was being done (`"sendmsg"`, `"recvmsg"`, `"poll"`).
        op: &'static str,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The peer closed the connection between messages.
    #[error("connection closed by peer")]
    Closed,
    /// The peer closed the connection in the middle of a message.
    #[error("connection closed after {got} of {want} bytes of a message")]
    Truncated {
        /// Bytes of the message received.
        got: usize,
        /// Bytes the message should have had (16 while the header is incomplete).
        want: usize,
    },
    /// No complete message arrived in time.
    #[error("no complete message within {after:?} (waiting for {what})")]
    Timeout {
        /// What was awaited.
        what: &'static str,
        /// The limit.
        after: Duration,
    },
    /// A header is malformed: a message size below 16 or a type other than
    /// command or reply.
    #[error("malformed header for message {msg_id} (command {command}): {reason}")]
    BadHeader {
        /// Message ID from the header.
        msg_id: u16,
        /// Raw command number from the header.
        command: u16,
        /// What is wrong.
        reason: &'static str,
    },
    /// A message is larger than the receiver accepts. The connection cannot
    /// be resynchronised after this.
    #[error("message {msg_id} (command {command}) is {size} bytes, above the limit of {max}")]
    TooLarge {
        /// Message ID.
        msg_id: u16,
        /// Raw command number.
        command: u16,
        /// Message size from the header.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// A message carried more file descriptors than allowed. The message was
    /// consumed and its descriptors closed.
    #[error("message {msg_id} ({command}) carried {got} file descriptors, at most {max} allowed")]
    TooManyFds {
        /// Message ID.
        msg_id: u16,
        /// Raw command number.
        command: u16,
        /// Descriptors received (a lower bound when the kernel truncated them).
        got: usize,
        /// The limit.
        max: usize,
    },
    /// A payload's length does not match what the command's table allows.
    #[error("{command:?} {kind} {msg_id}: payload is {actual} bytes, expected {expected}")]
    PayloadLength {
        /// The command.
        command: Command,
        /// `"request"` or `"reply"`.
        kind: &'static str,
        /// Message ID.
        msg_id: u16,
        /// What the table allows.
        expected: Expected,
        /// What arrived.
        actual: usize,
    },
    /// A field of a payload is inconsistent (a count that disagrees with the
    /// data, a capability chain that points outside the payload, etc.).
    #[error("{command:?} message {msg_id}: invalid field {field}: {reason}")]
    BadField {
        /// The command.
        command: Command,
        /// Message ID.
        msg_id: u16,
        /// The field.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The VERSION message's JSON data could not be parsed.
    #[error("VERSION message {msg_id}: invalid capabilities JSON")]
    Json {
        /// Message ID.
        msg_id: u16,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// A command number this crate does not know. Reported only where a
    /// typed command is needed; [`crate::Request::decode`] yields
    /// [`crate::Request::Unsupported`] instead.
    #[error("unknown command {command} in message {msg_id}")]
    UnknownCommand {
        /// Raw command number.
        command: u16,
        /// Message ID.
        msg_id: u16,
    },
    /// The peer answered a command with an error reply.
    #[error("{command:?} message {msg_id} failed on the peer: errno {errno} ({})", nix::errno::Errno::from_raw(*errno as i32).desc())]
    Remote {
        /// The command.
        command: Command,
        /// Message ID.
        msg_id: u16,
        /// errno from the reply (may be 0, as the spec allows).
        errno: u32,
    },
    /// A message arrived that is not the awaited reply.
    #[error("expected the reply to {command:?} message {msg_id}, got {got}")]
    UnexpectedMessage {
        /// The command whose reply was awaited.
        command: Command,
        /// Its message ID.
        msg_id: u16,
        /// What arrived instead.
        got: String,
    },
    /// A message to send is not valid (too many fds, too large).
    #[error("cannot send {command:?} message {msg_id}: {reason}")]
    Unsendable {
        /// The command.
        command: Command,
        /// Message ID.
        msg_id: u16,
        /// Why.
        reason: String,
    },
}

impl Error {
    /// For an error about one received message that was consumed whole (so
    /// the connection is still in step), the (message ID, raw command) to
    /// address an error reply to. `None` for connection-level errors, after
    /// which the connection should be closed.
    pub fn reply_target(&self) -> Option<(u16, u16)> {
        match self {
            Error::TooManyFds {
                msg_id, command, ..
            } => Some((*msg_id, *command)),
            Error::PayloadLength {
                msg_id, command, ..
            }
            | Error::BadField {
                msg_id, command, ..
            } => Some((*msg_id, *command as u16)),
            Error::Json { msg_id, .. } => Some((*msg_id, Command::Version as u16)),
            Error::UnknownCommand { command, msg_id } => Some((*msg_id, *command)),
            _ => None,
        }
    }

    /// The errno an error reply to the message this error is about should
    /// carry.
    pub fn errno(&self) -> i32 {
        match self {
            Error::TooManyFds { .. } => libc::EINVAL,
            Error::UnknownCommand { .. } => libc::ENOSYS,
            Error::TooLarge { .. } => libc::E2BIG,
            Error::Timeout { .. } => libc::ETIMEDOUT,
            Error::Remote { errno, .. } => *errno as i32,
            Error::Io { source, .. } => source.raw_os_error().unwrap_or(libc::EIO),
            _ => libc::EINVAL,
        }
    }
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
