//! The eventfds of F8: creating, making readable, draining.
//!
//! [`notify`] is called on the signalling path: it is one `write(2)` of an
//! 8-byte counter, which neither allocates nor logs (F10).

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// A new eventfd with counter 0 and the given extra flags (`O_CLOEXEC` is
/// always set, C10).
pub(super) fn eventfd(nonblock: bool) -> io::Result<OwnedFd> {
    let mut flags = libc::EFD_CLOEXEC;
    if nonblock {
        flags |= libc::EFD_NONBLOCK;
    }
    // SAFETY: eventfd takes no pointers; the result is checked below.
    let fd = unsafe { libc::eventfd(0, flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a freshly created descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Make `fd` readable by adding 1 to its counter. Errors are ignored: the
/// only possible one on a valid eventfd is a counter overflow, which cannot
/// happen with our writes of 1 (each fd is written at most a handful of
/// times between drains). Does not allocate (F10).
pub(super) fn notify(fd: BorrowedFd<'_>) {
    let one: u64 = 1;
    // SAFETY: the buffer is a live, properly sized u64 for the whole call and
    // `fd` is a valid open descriptor for the lifetime of the borrow.
    let _ = unsafe {
        libc::write(
            fd.as_raw_fd(),
            (&one as *const u64).cast::<libc::c_void>(),
            std::mem::size_of::<u64>(),
        )
    };
}

/// Reset the counter of a non-blocking eventfd to 0 (not readable). A
/// non-semaphore eventfd is reset by one successful read; `EAGAIN` means it
/// was 0 already.
pub(super) fn drain(fd: BorrowedFd<'_>) {
    let mut buf: u64 = 0;
    // SAFETY: the buffer is a live, writable u64 for the whole call and `fd`
    // is a valid open descriptor for the lifetime of the borrow.
    let _ = unsafe {
        libc::read(
            fd.as_raw_fd(),
            (&mut buf as *mut u64).cast::<libc::c_void>(),
            std::mem::size_of::<u64>(),
        )
    };
}
