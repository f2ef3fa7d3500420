//! Opening a device, its life cycle, and the device-wide operations.
//!
//! A device is named by a string: `sim:PATH` is the simulated card behind
//! the vfio-user socket at `PATH`; `0000:01:00.0` is a card behind the
//! kernel's VFIO. [`Device::open_default`] takes the name from the
//! `FDMA_DEVICE` environment variable.
//!
//! A *full* open checks the card's identity and contract version, turns on
//! bus mastering, soft-resets and enables the engine, routes every MSI-X
//! vector to an eventfd, programs every channel's ring and starts the
//! reactor and reclaim threads. An *inspect* open ([`OpenOptions::inspect`])
//! does none of that: it reads registers and allows guarded writes only, so
//! that looking at a hung card shows the hang rather than erasing it.

use crate::backend::vfio::{OpenVia, VfioBackend};
use crate::backend::vfio_user::{VfioUserBackend, VfioUserOptions};
use crate::backend::{Backend, IrqKind};
use crate::cardmem::CardMemory;
use crate::channel::{Channel, ChannelCore, WatchdogConfig};
use crate::error::{Error, Result};
use crate::mem::{BufferOptions, DmaBuffer, DmaSpace};
use crate::mmio::Regs;
use crate::reactor::{ReclaimSignal, Threads};
use fdma_hw::pci::{self, cfg};
use fdma_hw::regs::{self, Access};
use fdma_hw::EngineConfig;
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The environment variable naming the default device.
pub const DEVICE_ENV: &str = "FDMA_DEVICE";

/// How to open a device.
#[derive(Debug, Clone)]
pub struct OpenOptions {
    /// Inspect only: no reset, no enable, no interrupts, no DMA.
    pub inspect: bool,
    /// Descriptors per channel ring (a power of two).
    pub ring_size: u32,
    /// Watchdog settings (F3, D1).
    pub watchdog: WatchdogConfig,
    /// vfio-user transport settings (simulator).
    pub vfio_user: VfioUserOptions,
    /// Limits of the registration cache (C6).
    pub cache: crate::cache::CacheOptions,
    /// How a PCI address is opened through kernel VFIO: its IOMMU group in
    /// a type1 container (the default) or its cdev in an iommufd IOAS
    /// (cargo feature `iommufd`).
    pub kernel_vfio: OpenVia,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            inspect: false,
            ring_size: 256,
            watchdog: WatchdogConfig::default(),
            vfio_user: VfioUserOptions::default(),
            kernel_vfio: OpenVia::default(),
            cache: crate::cache::CacheOptions::default(),
        }
    }
}

/// What a device name designates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// The simulator's vfio-user socket.
    Sim(PathBuf),
    /// A PCI function behind kernel VFIO, as `dddd:bb:dd.f`.
    Pci(String),
}

impl Target {
    /// Parse `sim:PATH` or a PCI address (`0000:01:00.0`, or `01:00.0` for
    /// domain 0).
    pub fn parse(name: &str) -> Result<Target> {
        if let Some(p) = name.strip_prefix("sim:") {
            if p.is_empty() {
                return Err(Error::DeviceName {
                    name: name.into(),
                    why: "sim: needs a socket path, e.g. sim:/tmp/fdma.sock",
                });
            }
            return Ok(Target::Sim(PathBuf::from(p)));
        }
        let full = if name.len() == 7 {
            format!("0000:{name}")
        } else {
            name.to_string()
        };
        let b = full.as_bytes();
        let hex = |r: std::ops::Range<usize>| b[r].iter().all(|c| c.is_ascii_hexdigit());
        if b.len() == 12
            && hex(0..4)
            && b[4] == b':'
            && hex(5..7)
            && b[7] == b':'
            && hex(8..10)
            && b[10] == b'.'
            && (b'0'..=b'7').contains(&b[11])
        {
            return Ok(Target::Pci(full.to_ascii_lowercase()));
        }
        Err(Error::DeviceName {
            name: name.into(),
            why: "expected sim:SOCKET or a PCI address such as 0000:01:00.0",
        })
    }
}

/// Open a transport for `name`.
pub fn connect(name: &str, opts: &OpenOptions) -> Result<Arc<dyn Backend>> {
    match Target::parse(name)? {
        Target::Sim(p) => Ok(Arc::new(VfioUserBackend::connect(&p, &opts.vfio_user)?)),
        Target::Pci(addr) => Ok(Arc::new(VfioBackend::open_with(&addr, opts.kernel_vfio)?)),
    }
}

/// State shared by the device handle, its channels and its threads.
#[derive(Debug)]
pub(crate) struct Shared {
    pub name: String,
    pub regs: Arc<Regs>,
    pub cfg: EngineConfig,
    pub inspect: bool,
    pub space: Option<Arc<DmaSpace>>,
    pub channels: Vec<Arc<ChannelCore>>,
    pub err_irq: Option<nix::sys::eventfd::EventFd>,
    /// The device-request interrupt, where the transport has one.
    pub req_irq: Option<nix::sys::eventfd::EventFd>,
    /// Set by the reactor when the kernel asked for the device back; the
    /// reclaim thread releases it.
    pub release_requested: AtomicBool,
    /// The registration cache (full opens only).
    pub cache: Option<crate::cache::RegCache>,
    pub watchdog: WatchdogConfig,
    pub reclaim: Arc<ReclaimSignal>,
    pub card: CardMemory,
    pub stop: AtomicBool,
    lost: AtomicBool,
    closed: AtomicBool,
}

impl Shared {
    /// Fail if the handle may not be used: forked child, lost, closed.
    pub fn check_usable(&self) -> Result<()> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        if self.is_lost() {
            return Err(Error::DeviceLost {
                device: self.name.clone(),
            });
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed {
                device: self.name.clone(),
            });
        }
        Ok(())
    }

    /// Whether the device is lost.
    pub fn is_lost(&self) -> bool {
        self.lost.load(Ordering::Acquire)
    }

    /// The device is gone: every in-flight fence signals `DeviceLost` and
    /// every later call fails (F3). Signalling path: no allocation, no log.
    pub fn fail_lost(&self) -> bool {
        let first = !self.lost.swap(true, Ordering::AcqRel);
        for c in &self.channels {
            c.mark_lost();
        }
        first
    }

    /// [`Shared::fail_lost`], and say so (not on the signalling path).
    pub fn mark_lost(&self) {
        if self.fail_lost() {
            log::error!("{}: device lost; all jobs failed", self.name);
        }
    }
}

/// An open fdma device.
#[derive(Debug)]
pub struct Device {
    shared: Arc<Shared>,
    threads: Mutex<Option<Threads>>,
}

fn wait_until(
    regs: &Regs,
    name: &str,
    what: &'static str,
    cycles: u64,
    wall: Duration,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let c0 = regs.cycles()?;
    let t0 = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        let c = regs.cycles()?;
        if c.wrapping_sub(c0) > cycles || t0.elapsed() > wall {
            return Err(Error::DeviceTimeout {
                device: name.into(),
                what,
                cycles,
            });
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The registers an inspect session may write with [`Device::write_reg`]:
/// none of them starts DMA or resets state. Every other writable register
/// needs a full open.
pub const INSPECT_WRITABLE: &[&str] = &["SCRATCH", "RD_OUTSTANDING_MAX", "FI_STALL", "FI_ONESHOT"];

impl Device {
    /// Open `name` fully with default options.
    pub fn open(name: &str) -> Result<Device> {
        Device::open_with(name, &OpenOptions::default())
    }

    /// Open the device named by `FDMA_DEVICE`.
    pub fn open_default(opts: &OpenOptions) -> Result<Device> {
        match std::env::var(DEVICE_ENV) {
            Ok(n) if !n.is_empty() => Device::open_with(&n, opts),
            _ => Err(Error::DeviceName {
                name: String::new(),
                why: "no device given and FDMA_DEVICE is not set",
            }),
        }
    }

    /// Open `name` for inspection only (no reset, no enable, no DMA).
    pub fn inspect(name: &str) -> Result<Device> {
        Device::open_with(
            name,
            &OpenOptions {
                inspect: true,
                ..Default::default()
            },
        )
    }

    /// Open `name` with options.
    pub fn open_with(name: &str, opts: &OpenOptions) -> Result<Device> {
        crate::fork::install();
        let backend = connect(name, opts)?;
        Device::from_backend(backend, opts)
    }

    /// Open a device over an already connected transport.
    pub fn from_backend(backend: Arc<dyn Backend>, opts: &OpenOptions) -> Result<Device> {
        crate::fork::install();
        let name = backend.name().to_string();
        let regs = Arc::new(Regs::new(backend.clone())?);
        let cfg = identify(&regs, &name)?;
        let reclaim = Arc::new(ReclaimSignal::default());
        let card = CardMemory::new(backend.clone(), cfg.card_mem_bytes())?;
        let mut shared = Shared {
            name,
            regs,
            cfg,
            inspect: opts.inspect,
            space: None,
            channels: Vec::new(),
            err_irq: None,
            req_irq: None,
            release_requested: AtomicBool::new(false),
            cache: None,
            watchdog: opts.watchdog,
            reclaim,
            card,
            stop: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            closed: AtomicBool::new(false),
        };
        if opts.inspect {
            return Ok(Device {
                shared: Arc::new(shared),
                threads: Mutex::new(None),
            });
        }

        let (name, regs) = (&shared.name, &shared.regs);
        enable_bus_master(backend.as_ref())?;
        soft_reset(regs, name, opts.watchdog.backstop)?;

        // One eventfd per vector: channels, then the error vector.
        let vectors = cfg.msix_vectors() as u32;
        let have = backend.irq_count(IrqKind::Msix);
        if have < vectors {
            return Err(Error::Identity {
                device: name.clone(),
                why: format!("{have} MSI-X vectors offered, the engine uses {vectors}"),
            });
        }
        let space = DmaSpace::new(backend.clone(), cfg.dma_addr_bits)?;
        let mut channels = Vec::with_capacity(cfg.channels as usize);
        for ch in 0..cfg.channels {
            channels.push(Arc::new(ChannelCore::new(
                ch,
                regs.clone(),
                cfg,
                &space,
                opts.ring_size,
                opts.watchdog,
                shared.reclaim.clone(),
            )?));
        }
        let cache = crate::cache::RegCache::new(space.clone(), &opts.cache)?;
        for c in &channels {
            let _ = c.cache.set(cache.clone());
        }
        shared.cache = Some(cache);
        let err_irq = crate::reactor::eventfd()?;
        route_irqs(backend.as_ref(), &channels, Some(&err_irq))?;
        if backend.irq_count(IrqKind::Request) > 0 {
            let req = crate::reactor::eventfd()?;
            backend.set_irq_eventfds(IrqKind::Request, 0, &[req.as_fd()])?;
            shared.req_irq = Some(req);
        }
        regs.write(regs::ERR_VEC.offset, cfg.channels as u32)?;
        regs.write(regs::GCTRL.offset, regs::GCTRL_ENABLE.encode(1))?;
        shared.space = Some(space);
        shared.channels = channels;
        shared.err_irq = Some(err_irq);
        let shared = Arc::new(shared);
        let threads = Threads::start(&shared).map_err(|e| Error::Sys {
            op: "spawn the reactor",
            source: e,
        })?;
        log::info!(
            "{}: fdma {}.{} open, {} channels, ring {} descriptors",
            shared.name,
            fdma_hw::VERSION_MAJOR,
            fdma_hw::VERSION_MINOR,
            cfg.channels,
            opts.ring_size
        );
        Ok(Device {
            shared,
            threads: Mutex::new(Some(threads)),
        })
    }

    /// The device name (`sim:PATH`, a PCI address).
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The engine's configuration, from its capability registers.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.cfg
    }

    /// Whether the device was opened for inspection only.
    pub fn is_inspect(&self) -> bool {
        self.shared.inspect
    }

    /// Whether the device is lost.
    pub fn is_lost(&self) -> bool {
        self.shared.is_lost()
    }

    /// The transport.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        self.shared.regs.backend()
    }

    /// A handle on channel `index`.
    pub fn channel(&self, index: usize) -> Result<Channel> {
        self.shared.check_usable()?;
        self.full("channels")?;
        let core = self.shared.channels.get(index).ok_or_else(|| {
            Error::Invalid(format!(
                "channel {index}: the engine has {} channels",
                self.shared.channels.len()
            ))
        })?;
        Ok(Channel {
            core: core.clone(),
            dev: self.shared.clone(),
        })
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.shared.cfg.channels as usize
    }

    fn full(&self, what: &'static str) -> Result<()> {
        if self.shared.inspect {
            return Err(Error::InspectOnly {
                device: self.shared.name.clone(),
                what,
            });
        }
        Ok(())
    }

    /// The device's DMA address space.
    pub fn dma_space(&self) -> Result<&Arc<DmaSpace>> {
        self.shared.check_usable()?;
        self.full("DMA memory")?;
        Ok(self
            .shared
            .space
            .as_ref()
            .expect("full open has a DMA space"))
    }

    /// The registration cache: process memory pinned and mapped for the
    /// device, reused across jobs ([`crate::cache`]).
    pub fn cache(&self) -> Result<&crate::cache::RegCache> {
        self.shared.check_usable()?;
        self.full("the registration cache")?;
        Ok(self
            .shared
            .cache
            .as_ref()
            .expect("full open has a registration cache"))
    }

    /// Allocate a DMA buffer of `len` bytes, zeroed, device read-write.
    pub fn alloc(&self, len: usize) -> Result<DmaBuffer> {
        self.alloc_with(len, &BufferOptions::default())
    }

    /// Allocate a DMA buffer with options.
    pub fn alloc_with(&self, len: usize, opts: &BufferOptions) -> Result<DmaBuffer> {
        self.shared.check_usable()?;
        DmaBuffer::new(self.dma_space()?, len, opts)
    }

    /// Read a BAR0 register.
    pub fn read_reg(&self, offset: u32) -> Result<u32> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        self.shared.regs.read(offset)
    }

    /// Write a BAR0 register by offset. Read-only registers are refused; an
    /// inspect session also refuses the registers that would start DMA or
    /// reset state (ring addresses, doorbells, control).
    pub fn write_reg(&self, offset: u32, value: u32) -> Result<()> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        let r = regs::all_registers(self.shared.cfg.channels as usize)
            .into_iter()
            .find(|r| r.offset == offset)
            .ok_or_else(|| Error::Register {
                name: format!("{offset:#x}"),
                why: "no register at this offset",
            })?;
        if r.reg.access == Access::Ro {
            return Err(Error::Register {
                name: r.display_name(),
                why: "read-only",
            });
        }
        if self.shared.inspect && !INSPECT_WRITABLE.contains(&r.reg.name) {
            return Err(Error::Register {
                name: r.display_name(),
                why: "not writable in an inspect session (it could start DMA or reset state)",
            });
        }
        self.shared.regs.write(offset, value)
    }

    /// The device cycle counter (D1).
    pub fn cycles(&self) -> Result<u64> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        self.shared.regs.cycles()
    }

    /// Read card memory (BAR2), through its mapping where the transport
    /// offers one.
    pub fn card_read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.shared.check_usable()?;
        self.shared.card.read(offset, buf)
    }

    /// Write card memory (BAR2), through its mapping where the transport
    /// offers one.
    pub fn card_write(&self, offset: u64, data: &[u8]) -> Result<()> {
        self.shared.check_usable()?;
        self.shared.card.write(offset, data)
    }

    /// Reset the whole engine through its soft-reset register (D4): every
    /// job in flight on every channel is cancelled (never replayed), every
    /// ring is rebuilt, and every channel accepts jobs again — halted and
    /// hung ones included.
    pub fn reset(&self) -> Result<()> {
        self.reset_with(false)
    }

    /// As [`Device::reset`], preceded by a function-level reset through the
    /// transport (VFIO_DEVICE_RESET, or vfio-user DEVICE_RESET), after which
    /// bus mastering and the interrupt routing are set up again. Fails with
    /// [`crate::BackendError::ResetUnsupported`] where the device offers
    /// none; the engine is then reset through its own register only.
    pub fn function_reset(&self) -> Result<()> {
        self.reset_with(true)
    }

    fn reset_with(&self, function: bool) -> Result<()> {
        self.shared.check_usable()?;
        self.full("reset")?;
        let sh = &self.shared;
        // Every channel's reset lock, in index order, for the whole reset.
        let _guards: Vec<_> = sh.channels.iter().map(|c| c.reset_guard()).collect();
        for c in &sh.channels {
            c.park()?;
        }
        let mut unsupported = None;
        if function {
            match sh.regs.backend().reset() {
                Ok(()) => {
                    enable_bus_master(sh.regs.backend().as_ref())?;
                    route_irqs(
                        sh.regs.backend().as_ref(),
                        &sh.channels,
                        sh.err_irq.as_ref(),
                    )?;
                }
                Err(e @ crate::BackendError::ResetUnsupported { .. }) => unsupported = Some(e),
                Err(e) => return Err(e.into()),
            }
        }
        soft_reset(&sh.regs, &sh.name, sh.watchdog.backstop)?;
        for c in &sh.channels {
            c.unpark()?;
        }
        sh.regs
            .write(regs::ERR_VEC.offset, sh.cfg.channels as u32)?;
        sh.regs
            .write(regs::GCTRL.offset, regs::GCTRL_ENABLE.encode(1))?;
        log::info!(
            "{}: engine reset{}",
            sh.name,
            if function && unsupported.is_none() {
                " (function-level and soft)"
            } else {
                ""
            }
        );
        match unsupported {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }

    /// Fault injection at the device boundary (D7), when the card has it.
    pub fn faults(&self) -> Result<crate::faults::FaultInjector<'_>> {
        crate::faults::FaultInjector::new(self)
    }

    /// Close: refuse new jobs, let in-flight jobs finish (bounded by the
    /// watchdog) and cancel what remains, stop the engine and the threads,
    /// and unmap the rings. Dropping the device does the same.
    pub fn close(self) -> Result<()> {
        self.close_inner();
        Ok(())
    }

    fn close_inner(&self) {
        let sh = &self.shared;
        if crate::fork::in_forked_child() {
            // C10: no I/O, no joins; the parent owns all of it.
            std::mem::forget(self.threads.lock().map(|mut t| t.take()));
            std::mem::forget(sh.clone());
            return;
        }
        if sh.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        for c in &sh.channels {
            c.mark_closed();
        }
        let t0 = Instant::now();
        while !sh.is_lost()
            && sh.channels.iter().any(|c| c.in_flight() > 0)
            && t0.elapsed() < sh.watchdog.backstop
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Stop each channel in the device before its remaining jobs are
        // cancelled: their memory is released only once the engine can no
        // longer touch it.
        for c in &sh.channels {
            let stopped = !sh.is_lost() && c.stop_in_device().is_ok();
            c.cancel_all(stopped || sh.is_lost());
        }
        // C11: every job has signalled; unmap and unpin every registration.
        if let Some(cache) = &sh.cache {
            cache.close();
        }
        if !sh.inspect && !sh.is_lost() {
            let _ = sh.regs.write(regs::GCTRL.offset, 0);
            let _ = sh.regs.backend().disable_irqs(IrqKind::Msix);
        }
        if let Some(mut t) = self
            .threads
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            t.stop(sh);
        }
        for c in &sh.channels {
            c.reclaim();
        }
        log::debug!("{}: closed", sh.name);
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.close_inner();
    }
}

/// Bus mastering (and memory decoding) on: without it neither DMA nor MSI-X
/// gets through. vfio-pci does not set it, and a function reset clears it.
fn enable_bus_master(backend: &dyn Backend) -> Result<()> {
    let mut cmd = [0u8; 2];
    backend.config_read(cfg::COMMAND as u64, &mut cmd)?;
    let cmd = u16::from_le_bytes(cmd) | cfg::COMMAND_MEMORY | cfg::COMMAND_BUS_MASTER;
    backend.config_write(cfg::COMMAND as u64, &cmd.to_le_bytes())?;
    Ok(())
}

/// Soft-reset the engine and wait for it, bounded in device time (D1) with
/// the wall-clock backstop.
fn soft_reset(regs: &Regs, name: &str, backstop: Duration) -> Result<()> {
    regs.write(regs::GCTRL.offset, regs::GCTRL_SOFT_RESET.encode(1))?;
    wait_until(regs, name, "soft reset", 10_000_000, backstop, || {
        let s = regs.read(regs::GSTATUS.offset)?;
        Ok(s != u32::MAX && regs::GSTATUS_RESET_BUSY.decode(s) == 0)
    })
}

/// One eventfd per MSI-X vector: the channels', then the error vector's.
fn route_irqs(
    backend: &dyn Backend,
    channels: &[Arc<ChannelCore>],
    err_irq: Option<&nix::sys::eventfd::EventFd>,
) -> Result<()> {
    let mut fds: Vec<_> = channels.iter().map(|c| c.irq.as_fd()).collect();
    fds.extend(err_irq.map(|e| e.as_fd()));
    backend.set_irq_eventfds(IrqKind::Msix, 0, &fds)?;
    Ok(())
}

/// Check identity and contract version; read the capabilities.
fn identify(regs: &Regs, name: &str) -> Result<EngineConfig> {
    let b = regs.backend();
    let mut ids = [0u8; 4];
    b.config_read(cfg::VENDOR_ID as u64, &mut ids)?;
    let (vendor, device) = (
        u16::from_le_bytes([ids[0], ids[1]]),
        u16::from_le_bytes([ids[2], ids[3]]),
    );
    if (vendor, device) != (pci::VENDOR_ID, pci::DEVICE_ID) {
        return Err(Error::Identity {
            device: name.into(),
            why: format!(
                "PCI id {vendor:04x}:{device:04x} is not an fdma card ({:04x}:{:04x})",
                pci::VENDOR_ID,
                pci::DEVICE_ID
            ),
        });
    }
    let id = regs.read(regs::ID.offset)?;
    if id == u32::MAX {
        return Err(Error::Identity {
            device: name.into(),
            why: "ID register reads all ones: link down or card dead".into(),
        });
    }
    let magic = regs::ID_MAGIC_F.decode(id) as u16;
    let major = regs::ID_MAJOR.decode(id) as u8;
    if magic != fdma_hw::ID_MAGIC {
        return Err(Error::Identity {
            device: name.into(),
            why: format!("ID magic {magic:#06x}, expected {:#06x}", fdma_hw::ID_MAGIC),
        });
    }
    if major != fdma_hw::VERSION_MAJOR {
        return Err(Error::Identity {
            device: name.into(),
            why: format!(
                "register contract {major}.{}, this driver speaks {}.x",
                regs::ID_MINOR.decode(id),
                fdma_hw::VERSION_MAJOR
            ),
        });
    }
    let c0 = regs.read(regs::CAP0.offset)?;
    let c1 = regs.read(regs::CAP1.offset)?;
    let c2 = regs.read(regs::CAP2.offset)?;
    let cfg = EngineConfig::from_caps(c0, c1, c2);
    cfg.validate().map_err(|why| Error::Identity {
        device: name.into(),
        why: format!("capabilities invalid: {why}"),
    })?;
    Ok(cfg)
}
