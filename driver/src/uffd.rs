//! userfaultfd, as the registration cache's MMU-notifier shim uses it: an
//! event subscription, never a fault handler.
//!
//! Ranges are registered in write-protect mode and no page is ever
//! write-protected, so no fault is trapped; what arrives are the
//! non-cooperative events `UNMAP` (munmap, `MAP_FIXED` over the range,
//! mremap shrink, brk shrink), `REMOVE` (`MADV_DONTNEED`/`MADV_FREE`) and
//! `REMAP` (mremap move). `FORK` is not asked for (a fork would wait on
//! the monitor); neither is `WP_ASYNC` (it makes SysV shm registrable,
//! whose `shmdt` sends no event).
//!
//! This is one of the few modules with `unsafe`: the system call, the
//! ioctls and the `read` of raw event records. Nothing here allocates, so
//! the monitor thread can call [`Uffd::read_events`] (contract C8).

// Loom models feed the shim's ring by hand: nothing here runs under loom.
#![cfg_attr(loom, allow(dead_code))]

use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

/// `UFFD_API`: the only API version.
const UFFD_API: u64 = 0xaa;
/// `UFFD_USER_MODE_ONLY`: no kernel-mode faults; lets an unprivileged
/// process use the system call when `vm.unprivileged_userfaultfd` is 0.
const UFFD_USER_MODE_ONLY: libc::c_int = 1;
/// Event features asked for.
const FEATURE_EVENT_REMAP: u64 = 1 << 2;
const FEATURE_EVENT_REMOVE: u64 = 1 << 3;
const FEATURE_EVENT_UNMAP: u64 = 1 << 6;
/// The features the shim needs.
pub const FEATURES: u64 = FEATURE_EVENT_REMAP | FEATURE_EVENT_REMOVE | FEATURE_EVENT_UNMAP;
/// `UFFDIO_REGISTER_MODE_WP`.
const REGISTER_MODE_WP: u64 = 1 << 1;

/// `UFFD_EVENT_REMAP`.
pub const EVENT_REMAP: u8 = 0x14;
/// `UFFD_EVENT_REMOVE`.
pub const EVENT_REMOVE: u8 = 0x15;
/// `UFFD_EVENT_UNMAP`.
pub const EVENT_UNMAP: u8 = 0x16;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

nix::ioctl_readwrite!(uffdio_api, 0xaa, 0x3f, UffdioApi);
nix::ioctl_readwrite!(uffdio_register, 0xaa, 0x00, UffdioRegister);
nix::ioctl_read!(uffdio_unregister, 0xaa, 0x01, UffdioRange);

/// One event record (`struct uffd_msg`, 32 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Msg {
    /// `UFFD_EVENT_*`.
    pub event: u8,
    _reserved1: u8,
    _reserved2: u16,
    _reserved3: u32,
    /// The event's arguments: `[start, end, _]` for UNMAP and REMOVE,
    /// `[from, to, len]` for REMAP.
    pub arg: [u64; 3],
}

impl Msg {
    /// The process range the event takes away from its old pages, if the
    /// event is one the shim asked for.
    pub fn range(&self) -> Option<(u64, u64)> {
        match self.event {
            EVENT_UNMAP | EVENT_REMOVE => Some((self.arg[0], self.arg[1])),
            EVENT_REMAP => Some((self.arg[0], self.arg[0].saturating_add(self.arg[2]))),
            _ => None,
        }
    }
}

/// How the userfaultfd was opened (for the logs and the docs' figures).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opened {
    /// Through `/dev/userfaultfd` (its permissions decide who may).
    Device,
    /// Through the `userfaultfd(2)` system call with `UFFD_USER_MODE_ONLY`.
    Syscall,
}

/// A userfaultfd with the shim's features, non-blocking and close-on-exec.
#[derive(Debug)]
pub struct Uffd {
    fd: OwnedFd,
    /// How it was opened.
    pub opened: Opened,
}

impl Uffd {
    /// Open one: `/dev/userfaultfd` first, else the system call, and
    /// enable the event features. Fails with `EINVAL` when the kernel lacks
    /// one of them.
    pub fn open() -> Result<Uffd, Errno> {
        let flags = libc::O_CLOEXEC | libc::O_NONBLOCK | UFFD_USER_MODE_ONLY;
        let (fd, opened) = match open_dev(flags) {
            Ok(fd) => (fd, Opened::Device),
            Err(_) => {
                // SAFETY: userfaultfd(2) takes flags only; the result is a
                // new fd or -1.
                let rc = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
                let raw = Errno::result(rc)? as libc::c_int;
                // SAFETY: `raw` is a new fd that nothing else owns.
                (unsafe { OwnedFd::from_raw_fd(raw) }, Opened::Syscall)
            }
        };
        let mut api = UffdioApi {
            api: UFFD_API,
            features: FEATURES,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_API reads and writes a `uffdio_api` we own.
        unsafe { uffdio_api(fd.as_raw_fd(), &mut api) }?;
        if api.features & FEATURES != FEATURES {
            return Err(Errno::EINVAL);
        }
        Ok(Uffd { fd, opened })
    }

    /// Subscribe to events on `[start, start + len)`: register it in
    /// write-protect mode (no page is ever write-protected). `EBUSY`:
    /// another userfaultfd owns part of it; `EINVAL`: a mapping there does
    /// not support it (file mappings on most filesystems, `VM_PFNMAP`);
    /// `ENOMEM`: part of it is not mapped.
    pub fn subscribe(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut r = UffdioRegister {
            range: UffdioRange { start, len },
            mode: REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes a struct we own; it
        // changes VMA flags of our own process, not memory contents.
        unsafe { uffdio_register(self.fd.as_raw_fd(), &mut r) }.map(drop)
    }

    /// Drop the subscription of `[start, start + len)`.
    pub fn unsubscribe(&self, start: u64, len: u64) -> Result<(), Errno> {
        let mut r = UffdioRange { start, len };
        // SAFETY: UFFDIO_UNREGISTER reads a struct we own (declared _IOR in
        // the uapi, hence the mutable pointer).
        unsafe { uffdio_unregister(self.fd.as_raw_fd(), &mut r) }.map(drop)
    }
}

/// Read whatever events are queued on the userfaultfd `fd` into `buf`,
/// without blocking, allocating or logging: the number read (0 when none).
/// Takes the raw fd so that the monitor holds no reference that would keep
/// the userfaultfd open once the shim closes it.
pub fn read_events(fd: BorrowedFd<'_>, buf: &mut [Msg]) -> Result<usize, Errno> {
    let size = std::mem::size_of_val(buf);
    // SAFETY: `buf` is `size` writable bytes of plain-old-data records; the
    // kernel writes whole records.
    let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), size) };
    match Errno::result(n) {
        Ok(n) => Ok(n as usize / std::mem::size_of::<Msg>()),
        Err(Errno::EAGAIN) => Ok(0),
        Err(e) => Err(e),
    }
}

impl AsFd for Uffd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

fn open_dev(flags: libc::c_int) -> Result<OwnedFd, Errno> {
    let dev = nix::fcntl::open(
        "/dev/userfaultfd",
        nix::fcntl::OFlag::O_RDWR | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )?;
    // SAFETY: `dev` is an fd we just opened and own.
    let dev = unsafe { OwnedFd::from_raw_fd(dev) };
    // SAFETY: USERFAULTFD_IOC_NEW takes its flags as the argument value
    // (nix's ioctl_none passes none, so call ioctl directly).
    let rc = unsafe {
        libc::ioctl(
            dev.as_raw_fd(),
            userfaultfd_ioc_new_request(),
            flags as libc::c_ulong,
        )
    };
    let raw = Errno::result(rc)?;
    // SAFETY: `raw` is a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(raw) })
}

/// The request number of `USERFAULTFD_IOC_NEW` (`_IO(0xAA, 0x00)`).
fn userfaultfd_ioc_new_request() -> libc::c_ulong {
    nix::request_code_none!(0xaa, 0x00) as libc::c_ulong
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_the_kernels_size() {
        assert_eq!(std::mem::size_of::<Msg>(), 32);
        assert_eq!(std::mem::size_of::<UffdioApi>(), 24);
        assert_eq!(std::mem::size_of::<UffdioRegister>(), 32);
        assert_eq!(userfaultfd_ioc_new_request(), 0xaa00);
        // linux/userfaultfd.h; FORK (1 << 1) must never be asked for.
        assert_eq!(FEATURES, (1 << 2) | (1 << 3) | (1 << 6));
    }
}
