//! Register reads and writes on the main socket without allocating or
//! logging, for the signalling path (F10): the watchdog reads the cycle
//! counter, `HEAD` and the byte counters, and stops hung channels, from the
//! reactor thread.
//!
//! The request and its reply live in stack buffers and go straight through
//! `send`/`recv` on the socket, under the same lock as every other request,
//! so the stream stays in step with [`super::client::Client::call`]. Any
//! reply that is not exactly the expected one puts the stream out of step,
//! and the device is marked lost, as the general path does.

use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use fdma_vfio_user::{Command, Header, HEADER_SIZE};

use super::client::Client;
use crate::backend::RegFault;

/// REGION_READ/REGION_WRITE's fixed part: offset, region, count.
const ACCESS: usize = 16;

impl Client {
    fn fault_lost(&self) -> RegFault {
        self.shared.lost.store(true, Ordering::Release);
        RegFault::Lost
    }

    /// One 4-byte access: a read when `write` is `None`.
    pub(super) fn reg32(
        &self,
        region: u32,
        offset: u64,
        write: Option<u32>,
    ) -> Result<u32, RegFault> {
        if crate::fork::in_forked_child() {
            return Err(RegFault::Forked);
        }
        if self.shared.lost.load(Ordering::Acquire) {
            return Err(RegFault::Lost);
        }
        self.with_link(|l| {
            if self.shared.lost.load(Ordering::Acquire) {
                return Err(RegFault::Lost);
            }
            let id = l.take_id();
            let (cmd, plen, reply_len) = match write {
                None => (Command::RegionRead, ACCESS, ACCESS + 4),
                Some(_) => (Command::RegionWrite, ACCESS + 4, ACCESS),
            };
            let mut msg = [0u8; HEADER_SIZE + ACCESS + 4];
            msg[..HEADER_SIZE].copy_from_slice(&Header::command(id, cmd, plen, false).to_bytes());
            let p = &mut msg[HEADER_SIZE..];
            p[0..8].copy_from_slice(&offset.to_ne_bytes());
            p[8..12].copy_from_slice(&region.to_ne_bytes());
            p[12..16].copy_from_slice(&4u32.to_ne_bytes());
            if let Some(v) = write {
                p[16..20].copy_from_slice(&v.to_le_bytes());
            }
            let fd = l.conn.socket().as_raw_fd();
            send_all(fd, &msg[..HEADER_SIZE + plen]).map_err(|_| self.fault_lost())?;
            let deadline = Instant::now() + self.timeout();
            let mut hb = [0u8; HEADER_SIZE];
            recv_all(fd, &mut hb, deadline).map_err(|_| self.fault_lost())?;
            let h = Header::from_bytes(&hb).map_err(|_| self.fault_lost())?;
            if !h.is_reply() || h.msg_id != id || h.command != cmd as u16 {
                return Err(self.fault_lost());
            }
            if h.is_error() {
                if h.payload_len() != 0 {
                    return Err(self.fault_lost());
                }
                return Err(RegFault::Refused(h.error as i32));
            }
            if h.payload_len() != reply_len {
                return Err(self.fault_lost());
            }
            let mut rb = [0u8; ACCESS + 4];
            recv_all(fd, &mut rb[..reply_len], deadline).map_err(|_| self.fault_lost())?;
            let echo_off = u64::from_ne_bytes(rb[0..8].try_into().expect("8 bytes"));
            let echo_region = u32::from_ne_bytes(rb[8..12].try_into().expect("4 bytes"));
            let echo_count = u32::from_ne_bytes(rb[12..16].try_into().expect("4 bytes"));
            if echo_off != offset || echo_region != region || echo_count != 4 {
                return Err(RegFault::Other);
            }
            Ok(match write {
                None => u32::from_le_bytes(rb[16..20].try_into().expect("4 bytes")),
                Some(v) => v,
            })
        })
    }
}

fn send_all(fd: i32, mut buf: &[u8]) -> Result<(), ()> {
    while !buf.is_empty() {
        // SAFETY: sending from a live stack buffer on a socket we hold.
        let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
        if n < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(());
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

fn recv_all(fd: i32, buf: &mut [u8], deadline: Instant) -> Result<(), ()> {
    let mut got = 0;
    while got < buf.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left == Duration::ZERO {
            return Err(());
        }
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        // SAFETY: polling one pollfd on the stack.
        let r = unsafe { libc::poll(&mut p, 1, ms) };
        if r < 0 {
            if std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return Err(());
        }
        if r == 0 {
            continue;
        }
        // SAFETY: receiving into the unfilled tail of a live buffer.
        let n = unsafe {
            libc::recv(
                fd,
                buf[got..].as_mut_ptr().cast(),
                buf.len() - got,
                libc::MSG_DONTWAIT,
            )
        };
        if n == 0 {
            return Err(());
        }
        if n < 0 {
            match std::io::Error::last_os_error().raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) => continue,
                _ => return Err(()),
            }
        }
        got += n as usize;
    }
    Ok(())
}
