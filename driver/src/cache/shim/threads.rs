//! The shim's two threads: the monitor, which reads the userfaultfd into
//! the ring and must never lock, allocate, log or unmap (C8), and the
//! drain thread, which publishes the ring to the caches when woken (it may
//! do all of those).

use super::ring::EventRing;
use crate::uffd::{Msg, Uffd};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::AsFd;
use std::os::fd::{AsRawFd, BorrowedFd};
use std::sync::{Arc, Mutex, Weak};
use std::thread::JoinHandle;

/// Events read per odd window of the publication count.
const BATCH: usize = 64;

/// The userfaultfd, the threads, and the fds that wake and stop them.
///
/// The userfaultfd must be closed as soon as the monitor stops: an
/// application's munmap of a subscribed range waits until the event is
/// read, and once nobody reads, only closing the fd releases it (and drops
/// every subscription). The drain thread closes it when the monitor dies;
/// [`Io::stop`] closes it after joining the monitor.
pub(super) struct Io {
    uffd: Mutex<Option<Uffd>>,
    /// How it was opened.
    pub opened: crate::uffd::Opened,
    stop: Arc<EventFd>,
    /// Makes the monitor stop as if reading had failed (tests of the
    /// dead-monitor path: everything invalidated, memory served uncached,
    /// nobody's munmap left waiting).
    #[cfg_attr(not(test), allow(dead_code))]
    fail: Arc<EventFd>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Io {
    /// Open the userfaultfd and start both threads.
    pub fn start(ring: Arc<EventRing>, shim: Weak<super::Shim>) -> nix::Result<Io> {
        let uffd = Uffd::open()?;
        let raw = uffd.as_fd().as_raw_fd();
        let flags = EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK;
        let stop = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let wake = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let fail = Arc::new(EventFd::from_value_and_flags(0, flags)?);
        let spawn_err =
            |e: std::io::Error| nix::Error::from_raw(e.raw_os_error().unwrap_or(libc::EAGAIN));
        let m = {
            let (stop, wake, fail, ring) = (stop.clone(), wake.clone(), fail.clone(), ring.clone());
            std::thread::Builder::new()
                .name("fdma-uffd".into())
                .spawn(move || {
                    // SAFETY: the userfaultfd stays open until this thread
                    // has stopped using it: it is closed only after the ring
                    // is marked dead (by this thread, as its last use) or
                    // after this thread is joined.
                    let fd = unsafe { BorrowedFd::borrow_raw(raw) };
                    monitor(fd, &ring, &stop, &wake, &fail)
                })
                .map_err(spawn_err)?
        };
        let d = {
            let stop2 = stop.clone();
            let spawned = std::thread::Builder::new()
                .name("fdma-shim".into())
                .spawn(move || drainer(&ring, &stop2, &wake, &shim));
            match spawned {
                Ok(h) => h,
                Err(e) => {
                    let _ = stop.write(1);
                    let _ = m.join();
                    return Err(spawn_err(e));
                }
            }
        };
        Ok(Io {
            opened: uffd.opened,
            uffd: Mutex::new(Some(uffd)),
            stop,
            fail,
            threads: Mutex::new(vec![m, d]),
        })
    }

    /// Make the monitor stop as a read error would.
    #[cfg(test)]
    pub fn fail_monitor(&self) {
        let _ = self.fail.write(1);
    }

    /// Run `f` on the userfaultfd, if it is still open.
    pub fn with_uffd<T>(&self, f: impl FnOnce(&Uffd) -> T) -> Option<T> {
        self.uffd
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(f)
    }

    /// Close the userfaultfd (the monitor has stopped): blocked munmaps
    /// return and every subscription is gone.
    pub fn close_uffd(&self) {
        drop(self.uffd.lock().unwrap_or_else(|e| e.into_inner()).take());
    }

    /// Stop and join both threads (not from one of them), then close the
    /// userfaultfd.
    pub fn stop(&self) {
        let _ = self.stop.write(1);
        let me = std::thread::current().id();
        let hs = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        for h in hs {
            if h.thread().id() != me && h.join().is_err() {
                log::error!("a registration cache shim thread panicked");
            }
        }
        self.close_uffd();
    }
}

/// The monitor. Between `begin` and `end` it only reads into its stack
/// buffer and stores into the ring; outside, it only polls and writes the
/// wake eventfd: no lock, no allocation, no log, no unmap (C8).
fn monitor(uffd: BorrowedFd<'_>, ring: &EventRing, stop: &EventFd, wake: &EventFd, fail: &EventFd) {
    let mut buf = [Msg::default(); BATCH];
    loop {
        let mut fds = [
            PollFd::new(uffd, PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
            PollFd::new(fail.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(_) => break,
        }
        if fds[1].any().unwrap_or(true) || fds[2].any().unwrap_or(true) {
            break;
        }
        ring.begin();
        let read = crate::uffd::read_events(uffd, &mut buf);
        if let Ok(n) = read {
            for m in &buf[..n] {
                if let Some((start, end)) = m.range() {
                    ring.push(start, end);
                }
            }
        }
        ring.end();
        if read.is_err() {
            break;
        }
        let _ = wake.write(1);
    }
    // Events from here on are lost: the drain thread invalidates
    // everything and the cache stops trusting process memory.
    ring.set_dead();
    let _ = wake.write(1);
}

/// The drain thread: publishes what the monitor pushed, so that memory
/// nobody looks up again is still unmapped and unpinned promptly.
fn drainer(ring: &EventRing, stop: &EventFd, wake: &EventFd, shim: &Weak<super::Shim>) {
    loop {
        let mut fds = [
            PollFd::new(wake.as_fd(), PollFlags::POLLIN),
            PollFd::new(stop.as_fd(), PollFlags::POLLIN),
        ];
        match poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => {
                log::error!("registration cache shim: poll failed: {e}; drains on lookups only");
                return;
            }
        }
        if fds[1].any().unwrap_or(true) {
            return;
        }
        let _ = wake.read();
        // Not yet (still being built) or no longer (being dropped, which
        // stops this thread): nothing to publish to.
        let Some(s) = shim.upgrade() else {
            continue;
        };
        s.settle();
        if s.drain_due() {
            s.drain(None);
        }
        if ring.is_dead() {
            // The monitor is gone: release whoever waits for it to read.
            s.close_uffd();
            return;
        }
    }
}
