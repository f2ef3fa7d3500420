//! A vfio-user connection over a UNIX stream socket: whole messages with
//! file descriptors.
//!
//! * A message is sent with one `sendmsg` carrying the header, the payload
//!   and the fds (`SCM_RIGHTS`); partial writes are continued without fds,
//!   `EINTR` is retried, and `MSG_NOSIGNAL` turns a closed peer into an
//!   error instead of `SIGPIPE`.
//! * A message is received header first; the header's message size says how
//!   much payload follows. Messages above [`Limits::max_msg_size`] are
//!   refused (the connection cannot be resynchronised after that). Fds are
//!   received with `MSG_CMSG_CLOEXEC` and owned as [`OwnedFd`]; more than
//!   [`Limits::max_fds`] fails the message after consuming it, so the
//!   connection stays in step and the caller can send an error reply.
//! * Sending and receiving are independent: one thread may wait in
//!   [`Connection::recv`] while others send. Concurrent senders are
//!   serialised so messages never interleave.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

use crate::error::{Error, Result};
use crate::header::{Command, Header, HEADER_SIZE};
use crate::msg::{Reply, Request};

/// Most fds the kernel passes in one `SCM_RIGHTS` message (`SCM_MAX_FD`); the
/// receive buffer has room for this many so an over-limit message is
/// counted rather than silently truncated.
const SCM_MAX_FD: usize = 253;

/// What a connection accepts from its peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest message, header included.
    pub max_msg_size: usize,
    /// Most fds in one message.
    pub max_fds: usize,
}

impl Limits {
    /// Limits for a peer that may send data messages of up to
    /// `max_data_xfer_size` bytes of data: room for the largest fixed part
    /// of any message plus that much data.
    pub fn for_data_xfer(max_data_xfer_size: u64, max_fds: usize) -> Limits {
        Limits {
            max_msg_size: (max_data_xfer_size as usize).saturating_add(HEADER_SIZE + 4096),
            max_fds,
        }
    }
}

impl Default for Limits {
    /// Room for the spec's default 1 MiB data transfers and 16 fds.
    fn default() -> Self {
        Limits::for_data_xfer(crate::caps::DEFAULT_MAX_DATA_XFER_SIZE, 16)
    }
}

/// A received message: header, payload and fds.
#[derive(Debug)]
pub struct Message {
    /// The header.
    pub header: Header,
    /// The payload (`header.msg_size - 16` bytes).
    pub payload: Vec<u8>,
    /// File descriptors that came with the message, close-on-exec.
    pub fds: Vec<OwnedFd>,
}

impl Message {
    /// Decode as a command.
    pub fn request(&self) -> Result<Request> {
        Request::decode(&self.header, &self.payload)
    }
    /// Decode as a reply ([`Error::Remote`] for an error reply).
    pub fn reply(&self) -> Result<Reply> {
        Reply::decode(&self.header, &self.payload)
    }
    /// One-line description for logs.
    pub fn describe(&self) -> String {
        let h = &self.header;
        let name = h
            .typed_command()
            .map(|c| format!("{c:?}"))
            .unwrap_or_else(|| format!("command {}", h.command));
        let kind = if h.is_reply() { "reply" } else { "request" };
        format!(
            "{name} {kind} id {} ({} bytes, {} fds, flags {:#x}, error {})",
            h.msg_id,
            h.msg_size,
            self.fds.len(),
            h.flags,
            h.error
        )
    }
}

/// One end of a vfio-user socket.
#[derive(Debug)]
pub struct Connection {
    sock: UnixStream,
    limits: Limits,
    send_lock: Mutex<()>,
    recv_lock: Mutex<()>,
}

impl AsFd for Connection {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.sock.as_fd()
    }
}

fn io_err(op: &'static str, e: Errno) -> Error {
    Error::Io {
        op,
        source: std::io::Error::from(e),
    }
}

impl Connection {
    /// Wrap a connected stream socket (blocking mode is set).
    pub fn new(sock: UnixStream, limits: Limits) -> Result<Connection> {
        sock.set_nonblocking(false).map_err(|source| Error::Io {
            op: "set_nonblocking",
            source,
        })?;
        Ok(Connection {
            sock,
            limits,
            send_lock: Mutex::new(()),
            recv_lock: Mutex::new(()),
        })
    }

    /// Wrap a socket received as an fd (the twin socket).
    pub fn from_fd(fd: OwnedFd, limits: Limits) -> Result<Connection> {
        Connection::new(UnixStream::from(fd), limits)
    }

    /// A connected pair (both ends with the same limits).
    pub fn pair(limits: Limits) -> Result<(Connection, Connection)> {
        let (a, b) = UnixStream::pair().map_err(|source| Error::Io {
            op: "socketpair",
            source,
        })?;
        Ok((Connection::new(a, limits)?, Connection::new(b, limits)?))
    }

    /// Connect to a server's socket.
    pub fn connect(path: &std::path::Path, limits: Limits) -> Result<Connection> {
        let s = UnixStream::connect(path).map_err(|source| Error::Io {
            op: "connect",
            source,
        })?;
        Connection::new(s, limits)
    }

    /// The limits applied to received messages.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Change the limits (after VERSION negotiation).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The underlying socket.
    pub fn socket(&self) -> &UnixStream {
        &self.sock
    }

    /// Send one message made of `header` (whose `msg_size` must match) and
    /// `payload`, with `fds` attached.
    pub fn send_raw(&self, header: &Header, payload: &[u8], fds: &[BorrowedFd<'_>]) -> Result<()> {
        if header.msg_size as usize != HEADER_SIZE + payload.len() {
            return Err(Error::Unsendable {
                command: Command::from_u16(header.command).unwrap_or(Command::Version),
                msg_id: header.msg_id,
                reason: format!(
                    "header says {} bytes, message has {}",
                    header.msg_size,
                    HEADER_SIZE + payload.len()
                ),
            });
        }
        let hb = header.to_bytes();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        let _g = self.send_lock.lock().unwrap_or_else(|p| p.into_inner());
        let total = HEADER_SIZE + payload.len();
        let mut sent = 0usize;
        while sent < total {
            let (a, b): (&[u8], &[u8]) = if sent < HEADER_SIZE {
                (&hb[sent..], payload)
            } else {
                (&payload[sent - HEADER_SIZE..], &[])
            };
            let iov = [IoSlice::new(a), IoSlice::new(b)];
            let cmsg = [ControlMessage::ScmRights(&raw)];
            let cmsgs: &[ControlMessage<'_>] = if sent == 0 && !raw.is_empty() {
                &cmsg
            } else {
                &[]
            };
            match sendmsg::<()>(
                self.sock.as_raw_fd(),
                &iov,
                cmsgs,
                MsgFlags::MSG_NOSIGNAL,
                None,
            ) {
                Ok(n) => sent += n,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(io_err("sendmsg", e)),
            }
        }
        log::trace!(
            "sent command {} id {} ({} bytes, {} fds, flags {:#x})",
            header.command,
            header.msg_id,
            total,
            raw.len(),
            header.flags
        );
        Ok(())
    }

    /// Send a command. With `no_reply` the peer sends no reply.
    pub fn send_request(
        &self,
        msg_id: u16,
        req: &Request,
        fds: &[BorrowedFd<'_>],
        no_reply: bool,
    ) -> Result<()> {
        let p = req.encode_payload();
        let mut h = Header::command(msg_id, Command::Version, p.len(), no_reply);
        h.command = req.command_number();
        self.send_raw(&h, &p, fds)
    }

    /// Send a successful reply to message `msg_id`.
    pub fn send_reply(&self, msg_id: u16, reply: &Reply, fds: &[BorrowedFd<'_>]) -> Result<()> {
        let p = reply.encode_payload();
        self.send_raw(
            &Header::reply(msg_id, reply.command() as u16, p.len()),
            &p,
            fds,
        )
    }

    /// Send an error reply (header only) to message `msg_id` of raw command
    /// `command`.
    pub fn send_error(&self, msg_id: u16, command: u16, errno: i32) -> Result<()> {
        self.send_raw(&Header::error_reply(msg_id, command, errno), &[], &[])
    }

    /// Wait until the socket is readable, up to `timeout` (`None`: forever).
    /// Returns false on timeout.
    pub fn wait_readable(&self, timeout: Option<Duration>) -> Result<bool> {
        wait_fd(self.sock.as_fd(), timeout)
    }

    /// Receive one whole message. `timeout` bounds the wait for the whole
    /// message (`None`: wait forever). [`Error::Closed`] means the peer
    /// closed the connection cleanly between messages.
    pub fn recv(&self, timeout: Option<Duration>) -> Result<Message> {
        let _g = self.recv_lock.lock().unwrap_or_else(|p| p.into_inner());
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut fds = Vec::new();
        let mut truncated_fds = false;
        let mut hb = [0u8; HEADER_SIZE];
        self.read_full(&mut hb, 0, deadline, timeout, &mut fds, &mut truncated_fds)?;
        let header = Header::from_bytes(&hb)?;
        if header.msg_size as usize > self.limits.max_msg_size {
            return Err(Error::TooLarge {
                msg_id: header.msg_id,
                command: header.command,
                size: header.msg_size as u64,
                max: self.limits.max_msg_size as u64,
            });
        }
        let mut payload = vec![0u8; header.payload_len()];
        self.read_full(
            &mut payload,
            HEADER_SIZE,
            deadline,
            timeout,
            &mut fds,
            &mut truncated_fds,
        )?;
        if truncated_fds || fds.len() > self.limits.max_fds {
            return Err(Error::TooManyFds {
                msg_id: header.msg_id,
                command: header.command,
                got: fds.len(),
                max: self.limits.max_fds,
            });
        }
        let m = Message {
            header,
            payload,
            fds,
        };
        log::trace!("received {}", m.describe());
        Ok(m)
    }

    /// Fill `buf` from the socket, collecting any fds. `before` is how many
    /// bytes of the message were read already (for error reports).
    fn read_full(
        &self,
        buf: &mut [u8],
        before: usize,
        deadline: Option<Instant>,
        timeout: Option<Duration>,
        fds: &mut Vec<OwnedFd>,
        truncated: &mut bool,
    ) -> Result<()> {
        let mut got = 0;
        while got < buf.len() {
            if let Some(d) = deadline {
                let left = d.saturating_duration_since(Instant::now());
                if !wait_fd(self.sock.as_fd(), Some(left))? {
                    return Err(Error::Timeout {
                        what: if before + got < HEADER_SIZE {
                            "message header"
                        } else {
                            "message payload"
                        },
                        after: timeout.unwrap_or_default(),
                    });
                }
            }
            let mut cmsg = nix::cmsg_space!([RawFd; SCM_MAX_FD]);
            let mut iov = [IoSliceMut::new(&mut buf[got..])];
            let r = recvmsg::<()>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut cmsg),
                MsgFlags::MSG_CMSG_CLOEXEC,
            );
            let msg = match r {
                Ok(m) => m,
                Err(Errno::EINTR) | Err(Errno::EAGAIN) => continue,
                Err(e) => return Err(io_err("recvmsg", e)),
            };
            let n = msg.bytes;
            if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                *truncated = true;
            }
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    if let ControlMessageOwned::ScmRights(raw) = c {
                        for fd in raw {
                            // SAFETY: the kernel has just installed `fd` in
                            // this process's table for this message; nothing
                            // else refers to it, so we take sole ownership.
                            fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
                        }
                    }
                }
            }
            if n == 0 {
                return Err(if before + got == 0 {
                    Error::Closed
                } else {
                    Error::Truncated {
                        got: before + got,
                        want: before + buf.len(),
                    }
                });
            }
            got += n;
        }
        Ok(())
    }

    /// Send a command and wait for its reply, up to `timeout`. Only for
    /// sockets on which the peer sends no commands of its own meanwhile
    /// (the client's main socket in twin-socket mode, or any socket whose
    /// peer sends no DMA requests): any other message is an error.
    pub fn call(
        &self,
        msg_id: u16,
        req: &Request,
        fds: &[BorrowedFd<'_>],
        timeout: Option<Duration>,
    ) -> Result<(Reply, Vec<OwnedFd>)> {
        self.send_request(msg_id, req, fds, false)?;
        let m = self.recv(timeout)?;
        let command = req.command().unwrap_or(Command::Version);
        if !m.header.is_reply()
            || m.header.msg_id != msg_id
            || m.header.command != req.command_number()
        {
            return Err(Error::UnexpectedMessage {
                command,
                msg_id,
                got: m.describe(),
            });
        }
        let reply = m.reply()?;
        Ok((reply, m.fds))
    }
}

/// Wait until `fd` is readable (or hung up), up to `timeout`. Returns false
/// on timeout. `EINTR` restarts the wait with the remaining time.
pub fn wait_fd(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> Result<bool> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let t = match deadline {
            None => PollTimeout::NONE,
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                let ms = left.as_millis().min(i32::MAX as u128 - 1) as i32;
                // Round up so a sub-millisecond remainder still waits.
                let ms = if ms == 0 && !left.is_zero() { 1 } else { ms };
                PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        match poll(&mut p, t) {
            Ok(0) => return Ok(false),
            Ok(_) => return Ok(true),
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(io_err("poll", e)),
        }
    }
}
