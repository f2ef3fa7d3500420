//! Requests and replies on the main socket.
//!
//! One request is outstanding at a time (the socket is held under a mutex
//! from send to reply), so replies are matched strictly: the next message
//! must be the reply with the request's message ID and command. A reply
//! that does not come within the wall-clock reply timeout, an EOF, EPIPE or
//! ECONNRESET, or a message that puts the stream out of step marks the
//! device lost; every later call then fails fast with
//! [`BackendError::Lost`].

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fdma_vfio_user::{Connection, Error as ProtoError, Reply, Request};

use super::service::Shared;
use crate::backend::BResult;
use crate::error::BackendError;

/// The main socket and its message IDs.
pub(super) struct Link {
    pub(super) conn: Connection,
    next_id: u16,
}

impl Link {
    /// The next message ID.
    pub(super) fn take_id(&mut self) -> u16 {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        id
    }
}

/// The request side of the backend.
pub(super) struct Client {
    pub(super) name: String,
    link: Mutex<Link>,
    pub(super) shared: Arc<Shared>,
    timeout: Duration,
}

impl Client {
    pub(super) fn new(
        name: String,
        conn: Connection,
        shared: Arc<Shared>,
        timeout: Duration,
    ) -> Client {
        Client {
            name,
            link: Mutex::new(Link { conn, next_id: 1 }),
            shared,
            timeout,
        }
    }

    /// The wall-clock reply timeout.
    pub(super) fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Run `f` on the main socket (for setting limits, shutting down).
    pub(super) fn with_link<R>(&self, f: impl FnOnce(&mut Link) -> R) -> R {
        f(&mut self.link.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Fail fast when the handle is poisoned or the device lost.
    pub(super) fn check(&self, op: impl FnOnce() -> String) -> BResult<()> {
        if crate::fork::in_forked_child() {
            return Err(BackendError::Forked {
                device: self.name.clone(),
            });
        }
        if self.shared.lost.load(Ordering::Acquire) {
            return Err(self.lost(op(), None));
        }
        Ok(())
    }

    /// A `Lost` error (and the device marked lost).
    pub(super) fn lost(&self, op: String, source: Option<io::Error>) -> BackendError {
        self.shared.lost.store(true, Ordering::Release);
        BackendError::Lost {
            device: self.name.clone(),
            op,
            source,
        }
    }

    /// A `Protocol` error about `op`.
    pub(super) fn protocol(&self, op: String, source: ProtoError) -> BackendError {
        BackendError::Protocol {
            device: self.name.clone(),
            op,
            source,
        }
    }

    /// An `Invalid` error.
    pub(super) fn invalid(&self, op: String, why: impl Into<String>) -> BackendError {
        BackendError::Invalid {
            device: self.name.clone(),
            op,
            why: why.into(),
        }
    }

    /// Map a protocol-layer error to the backend's.
    pub(super) fn map_err(&self, op: String, e: ProtoError) -> BackendError {
        match e {
            ProtoError::Remote { errno, .. } => BackendError::Refused {
                device: self.name.clone(),
                op,
                errno: errno as i32,
            },
            ProtoError::Closed => self.lost(op, None),
            ProtoError::Truncated { .. } => {
                let s = io::Error::new(io::ErrorKind::UnexpectedEof, e.to_string());
                self.lost(op, Some(s))
            }
            ProtoError::Timeout { .. } => {
                let s = io::Error::new(io::ErrorKind::TimedOut, e.to_string());
                log::error!("{}: {op}: no reply within {:?}", self.name, self.timeout);
                self.lost(op, Some(s))
            }
            ProtoError::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EPIPE | libc::ECONNRESET | libc::ENOTCONN | libc::ESHUTDOWN) => {
                    self.lost(op, Some(source))
                }
                _ => BackendError::Sys {
                    device: self.name.clone(),
                    op,
                    source,
                },
            },
            // The stream is out of step after these: nothing later can be
            // trusted.
            e @ (ProtoError::BadHeader { .. }
            | ProtoError::TooLarge { .. }
            | ProtoError::UnexpectedMessage { .. }) => {
                log::error!("{}: {op}: {e}; treating the device as lost", self.name);
                self.shared.lost.store(true, Ordering::Release);
                self.protocol(op, e)
            }
            e => self.protocol(op, e),
        }
    }

    /// The main socket, after checking the handle is usable before and
    /// after waiting for it (another caller may have found the device lost
    /// meanwhile).
    fn lock_link(&self, op: impl Fn() -> String) -> BResult<std::sync::MutexGuard<'_, Link>> {
        self.check(&op)?;
        let l = self.link.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&op)?;
        Ok(l)
    }

    /// Send `req` and wait for its reply. `op` describes the request for
    /// errors.
    pub(super) fn call(
        &self,
        op: impl Fn() -> String,
        req: &Request,
        fds: &[BorrowedFd<'_>],
    ) -> BResult<(Reply, Vec<OwnedFd>)> {
        let mut l = self.lock_link(&op)?;
        let id = l.take_id();
        l.conn
            .send_request(id, req, fds, false)
            .map_err(|e| self.map_err(op(), e))?;
        let m = l
            .conn
            .recv(Some(self.timeout))
            .map_err(|e| self.map_err(op(), e))?;
        if !m.header.is_reply() || m.header.msg_id != id || m.header.command != req.command_number()
        {
            let e = ProtoError::UnexpectedMessage {
                command: req.command().unwrap_or(fdma_vfio_user::Command::Version),
                msg_id: id,
                got: m.describe(),
            };
            return Err(self.map_err(op(), e));
        }
        drop(l);
        let reply = m.reply().map_err(|e| self.map_err(op(), e))?;
        Ok((reply, m.fds))
    }

    /// Send `req` with the no-reply flag and return at once.
    pub(super) fn post(&self, op: impl Fn() -> String, req: &Request) -> BResult<()> {
        let mut l = self.lock_link(&op)?;
        let id = l.take_id();
        l.conn
            .send_request(id, req, &[], true)
            .map_err(|e| self.map_err(op(), e))
    }

    /// A reply of the wrong kind for `op`.
    pub(super) fn unexpected(&self, op: String, reply: &Reply) -> BackendError {
        let e = ProtoError::UnexpectedMessage {
            command: reply.command(),
            msg_id: 0,
            got: format!("{reply:?}"),
        };
        self.protocol(op, e)
    }
}
