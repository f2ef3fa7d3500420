//! # fdma — userspace driver for the fdma PCIe DMA engine
//!
//! fdma drives the fdma DMA engine from user space: on a lab host through
//! the kernel's VFIO, and in CI through the simulated card's vfio-user
//! socket. Everything above the transport is the same code.
//!
//! ```text
//! Device ── Channel ── Job ──submit──> Fence
//!   │          │                         ▲
//!   │          └─ ring + writeback       │ signalled by the reactor
//!   ├─ DmaSpace ── DmaBuffer ── Resv     │ (interrupts, watchdog)
//!   └─ Backend (vfio-user | kernel VFIO) ┘
//! ```
//!
//! ## The model
//!
//! * A [`Device`] is opened by name ([`Device::open`]: `sim:SOCKET` or a PCI
//!   address; [`Device::open_default`] reads `FDMA_DEVICE`). A full open
//!   checks identity and contract version, enables bus mastering,
//!   soft-resets and enables the engine, and starts two threads: the
//!   *reactor*, which turns interrupts into fences and runs the watchdog,
//!   and the *reclaim* thread, which frees what completed jobs held.
//!   [`Device::inspect`] opens without touching the engine's state.
//! * [`DmaBuffer`]s are driver-allocated memory (memfd, sealed,
//!   `MADV_DONTFORK`) mapped for the device at an IOVA. They are never
//!   exposed as Rust references, since the device writes them behind the
//!   compiler's back: data moves by copy ([`DmaBuffer::read_at`],
//!   [`DmaBuffer::write_at`]), after waiting for the fences the
//!   buffer's reservation object ([`resv::Resv`]) says the access must wait
//!   for (R1–R6).
//! * Process memory (the application's own buffers) reaches the device
//!   through the [`cache::RegCache`]: pinned and mapped on first use,
//!   reused after, retired without waiting on the device, and invalidated
//!   when the application unmaps or re-backs it: the MMU-notifier shim
//!   learns of that from userfaultfd events, [`cache::RegCache::invalidate`]
//!   covers what no event reports (C1–C12, R4).
//! * A [`Job`] is a scatter-gather list of copies — host to card, card to
//!   host, host to host — submitted to a [`Channel`] (one hardware ring).
//!   [`Channel::submit`] returns a [`Fence`]: wait on it (with a timeout),
//!   poll it, register a callback, or poll the channel's fd in an event loop.
//! * Completion state comes from the engine's writeback and `HEAD` register
//!   only; interrupts are hints (D6), and every device value is range-checked
//!   (D2). Every fence signals in bounded time (F3): completions, device
//!   errors attributed to their job (F4), a watchdog measuring progress in
//!   device cycles (D1), reset (D4), device loss and close.
//!
//! ## Transports
//!
//! [`backend::Backend`] is the seam. On a lab host a PCI address opens the
//! card through the kernel's VFIO ([`backend::vfio`]: IOMMU group, type1
//! container, BAR mmaps, MSI-X eventfds, the device-request interrupt);
//! [`pci`] finds cards, checks the host is ready (IOMMU on, group viable,
//! permissions, locked-memory limit) and moves a card to vfio-pci and back.
//! In CI `sim:SOCKET` reaches the simulated card over vfio-user
//! ([`backend::vfio_user`]). The [`reactor::Reactor`] that turns a device's
//! interrupt eventfds into fences is public, so that a test tool driving
//! another device through a backend gets the same machinery; the backend
//! conformance suite in `host-tests` uses it on QEMU's `edu` device.
//!
//! ## Contracts
//!
//! The numbered rules of the design (F1–F10 fences, R1–R6 reservations,
//! D1–D7 the device boundary, C10 fork) are documented next to the code that
//! enforces them: [`fence`], [`resv`], [`channel`], [`backend`], [`fork`],
//! and the reactor. Tests cite the rule they prove.
//!
//! ## Threads and the signalling path (F10)
//!
//! The reactor, the poller in poll mode, the watchdog, reset, and the
//! vfio-user transport's DMA service thread are the *signalling path*: they
//! must not allocate, log, wait on fences or take reservation locks. In
//! debug builds they run inside [`sync::SignallingSection`]s, and waits and
//! reservation locks assert they are not inside one.
//!
//! ## Example
//!
//! ```no_run
//! use fdma::{Device, Job};
//! # fn main() -> fdma::Result<()> {
//! let dev = Device::open("sim:/tmp/fdma.sock")?;
//! let ch = dev.channel(0)?;
//! let buf = dev.alloc(4096)?;
//! buf.write_at(0, b"hello, card")?;
//! let mut job = Job::new();
//! job.h2c(&buf, 0, 0x1000, 4096);
//! ch.submit(&job)?.wait()?;
//! # Ok(()) }
//! ```

// Under `--cfg loom` only the modules loom model-checks (fences, their
// timelines, reservations) and what they need are built; the device
// machinery above them uses std's types directly.
pub mod backend;
pub mod cache;
#[cfg(not(loom))]
mod cardmem;
#[cfg(not(loom))]
pub mod channel;
#[cfg(not(loom))]
pub mod device;
pub mod error;
#[cfg(not(loom))]
pub mod faults;
pub mod fence;
pub mod fork;
pub mod mem;
#[cfg(not(loom))]
pub mod mmio;
pub mod pci;
#[cfg(not(loom))]
pub mod reactor;
pub mod resv;
pub mod sync;
mod uffd;

#[cfg(not(loom))]
pub use channel::{
    Channel, Endpoint, Health, IrqMode, Job, OnFull, SubmitOptions, UserRange, WatchdogConfig,
};
#[cfg(not(loom))]
pub use device::{Device, OpenOptions, Target, DEVICE_ENV, INSPECT_WRITABLE};
pub use error::{BackendError, Error, FenceError, Result};
pub use fence::{Fence, Status, Timeline, Wait};
pub use mem::{BufferOptions, DmaBuffer, DmaSpace};
