//! Backend conformance: one suite that every transport must pass, whatever
//! device sits behind it.
//!
//! The suite speaks only [`Backend`], the driver's [`Reactor`] and its
//! fences; a small [`Adapter`] per device says how to start a DMA and how
//! to raise an interrupt. It runs over vfio-user against the simulated card
//! ([`fdma_card::FdmaCard`]) and over kernel VFIO against QEMU's `edu`
//! device in the guest stage ([`edu::Edu`]): the same checks, so that what
//! CI proves on the simulator's transport it also proves on the kernel's.
//!
//! Each check is a function returning `Result`; the test files call one
//! per `#[test]`, so a failure is named.

pub mod edu;
pub mod fdma_card;
mod mem;

pub use mem::UserMem;

use anyhow::{bail, ensure, Context, Result};
use fdma::backend::{Backend, DmaProt, DmaSource, IrqKind};
use fdma::fence::Signaller;
use fdma::reactor::{IrqHandler, Reactor};
use fdma::{Status, Timeline, Wait};
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long any one device operation may take before the suite calls it
/// hung. edu takes about 100 ms of virtual time per DMA; under TCG virtual
/// time runs slower than wall time.
pub const DEVICE_TIMEOUT: Duration = Duration::from_secs(20);

/// What the suite needs to know about one device.
pub trait Adapter: Send + Sync {
    /// The transport under test.
    fn backend(&self) -> &Arc<dyn Backend>;

    /// A read-only register and the value it must hold: (region, offset,
    /// value).
    fn id_register(&self) -> (u32, u64, u32);

    /// A location readable both through region reads and through the
    /// region's mmap: (region, offset, whether the suite may write it).
    fn mmap_probe(&self) -> (u32, u64, bool);

    /// Largest DMA the device does at once, in bytes.
    fn max_dma(&self) -> u64;

    /// Where the adapter keeps its own DMA structures: IOVAs at and above
    /// this are the adapter's; the suite uses those below.
    fn reserved_iova(&self) -> u64;

    /// Copy `len` bytes from host IOVA `iova` into the device's own memory
    /// at `dev_off`; return when the device has finished. An IOMMU refusal
    /// is not an error here: the suite checks memory and the fault record.
    fn host_to_device(&self, iova: u64, dev_off: u64, len: u64) -> Result<()>;

    /// Copy `len` bytes of the device's memory at `dev_off` to host IOVA
    /// `iova`; return when the device has finished.
    fn device_to_host(&self, dev_off: u64, iova: u64, len: u64) -> Result<()>;

    /// The interrupt [`Adapter::raise_irq`] raises: (kind, vector).
    fn irq(&self) -> (IrqKind, u32);

    /// Make the device raise that interrupt once.
    fn raise_irq(&self) -> Result<()>;

    /// Called on the reactor thread when the vector fires: confirm with
    /// the device that it raised it (interrupts are hints, D6) and
    /// acknowledge it. Must not allocate or block.
    fn claim_irq(&self) -> bool;

    /// IOMMU faults the platform has recorded so far for this device (the
    /// kernel's DMAR log lines; the simulator's fault log).
    fn iommu_faults(&self) -> Result<u64>;

    /// Whether the transport should offer a function-level reset.
    fn expects_reset(&self) -> bool;
}

/// IOVA of the suite's `n`-th scratch buffer (1 MiB apart, below the
/// adapter's reservation).
fn iova(a: &dyn Adapter, n: u64) -> Result<u64> {
    let base = a
        .backend()
        .dma_limits()
        .iova_ranges
        .first()
        .map(|r| (r.start + 0xf_ffff) & !0xf_ffff)
        .context("the backend reports no usable IOVA range")?;
    let at = base + n * 0x10_0000;
    ensure!(
        at + 0x10_0000 <= a.reserved_iova(),
        "scratch IOVA {at:#x} runs into the adapter's"
    );
    Ok(at)
}

/// Identity through region reads, on the device the adapter names.
pub fn identity(a: &dyn Adapter) -> Result<()> {
    let (region, off, want) = a.id_register();
    let mut b = [0u8; 4];
    a.backend().region_read(region, off, &mut b)?;
    ensure!(
        u32::from_le_bytes(b) == want,
        "identity register {region}:{off:#x} reads {:#x}, want {want:#x}",
        u32::from_le_bytes(b)
    );
    // A read beyond the region is refused with a typed error, not a crash.
    let size = a
        .backend()
        .region_info(region)
        .context("no region info")?
        .size;
    match a.backend().region_read(region, size, &mut b) {
        Err(fdma::BackendError::Invalid { .. }) => Ok(()),
        other => bail!("read past the region's end gave {other:?}"),
    }
}

/// The IOMMU's description: usable ranges, page sizes, mapping budget.
pub fn iommu_info(a: &dyn Adapter) -> Result<()> {
    let l = a.backend().dma_limits();
    ensure!(!l.iova_ranges.is_empty(), "no usable IOVA ranges");
    ensure!(l.page_sizes & 0x1000 != 0, "4 KiB pages unsupported: {l:?}");
    ensure!(l.max_mappings > 0, "no mappings allowed: {l:?}");
    ensure!(l.vaddr_pinned, "mappings by address are not pinned (D5)");
    for r in &l.iova_ranges {
        ensure!(r.start >= 0x1000, "page 0 is usable: {r:x?}");
        // The x86 MSI window is never DMA memory.
        ensure!(
            r.end <= 0xfee0_0000 || r.start >= 0xfef0_0000,
            "range {r:x?} overlaps the MSI window"
        );
    }
    Ok(())
}

/// A region's mmap shows what region reads show.
pub fn bar_mmap(a: &dyn Adapter) -> Result<()> {
    let b = a.backend();
    let (region, off, writable) = a.mmap_probe();
    let maps = b
        .region_mmap(region)?
        .with_context(|| format!("region {region} offers no mmap"))?;
    let m = maps
        .iter()
        .find(|m| off >= m.offset && off + 4 <= m.offset + m.len as u64)
        .with_context(|| format!("offset {off:#x} of region {region} is in no mmap area"))?;
    if writable {
        b.region_write(region, off, &0x5a5a_c3c3u32.to_le_bytes())?;
    }
    let mut via_read = [0u8; 4];
    b.region_read(region, off, &mut via_read)?;
    // SAFETY: `off` lies inside this live mapping (checked above); device
    // memory is read with a volatile access, never through a reference.
    let via_map = unsafe {
        m.ptr
            .add((off - m.offset) as usize)
            .cast::<u32>()
            .read_volatile()
    };
    ensure!(
        via_map == u32::from_le_bytes(via_read),
        "mmap reads {via_map:#x}, region read {:#x}",
        u32::from_le_bytes(via_read)
    );
    if writable {
        ensure!(
            via_map == 0x5a5a_c3c3,
            "written word reads back {via_map:#x}"
        );
    }
    Ok(())
}

/// User memory mapped for the device; unmapped on drop.
struct Mapped<'a> {
    a: &'a dyn Adapter,
    mem: UserMem,
    iova: u64,
    mapped: bool,
}

impl<'a> Mapped<'a> {
    fn new(a: &'a dyn Adapter, n: u64, len: usize, fill: &[u8]) -> Result<Mapped<'a>> {
        let mem = UserMem::new(len)?;
        mem.write(0, fill);
        let iova = iova(a, n)?;
        a.backend().dma_map(
            iova,
            mem.len() as u64,
            DmaSource::Vaddr(mem.ptr()),
            DmaProt::RW,
        )?;
        Ok(Mapped {
            a,
            mem,
            iova,
            mapped: true,
        })
    }

    /// Unmap now; the memory stays.
    fn unmap(&mut self) -> Result<()> {
        self.mapped = false;
        self.a
            .backend()
            .dma_unmap(self.iova, self.mem.len() as u64)?;
        Ok(())
    }
}

impl Drop for Mapped<'_> {
    fn drop(&mut self) {
        if !self.mapped {
            return;
        }
        let _ = self.a.backend().dma_unmap(self.iova, self.mem.len() as u64);
    }
}

fn dma_len(a: &dyn Adapter) -> usize {
    a.max_dma().min(2048) as usize
}

/// User memory to the device and back to other user memory, data checked.
pub fn dma_round_trip(a: &dyn Adapter) -> Result<()> {
    let len = dma_len(a);
    let want = crate::pattern(11, len);
    let src = Mapped::new(a, 0, 4096, &want)?;
    let dst = Mapped::new(a, 1, 4096, &vec![0u8; len])?;
    a.host_to_device(src.iova, 0, len as u64)?;
    a.device_to_host(0, dst.iova, len as u64)?;
    let got = dst.mem.read(0, len);
    ensure!(
        got == want,
        "round trip corrupted: {}",
        crate::first_diff(&got, &want)
    );
    Ok(())
}

/// The interrupt reaches a fence through the driver's reactor.
pub fn irq_signals_fence(a: &Arc<dyn Adapter>) -> Result<()> {
    struct Handler {
        a: Arc<dyn Adapter>,
        efd: nix::sys::eventfd::EventFd,
        pending: Mutex<Option<Signaller>>,
        claimed: std::sync::atomic::AtomicU64,
    }
    impl IrqHandler for Handler {
        fn irq_fds(&self) -> Vec<BorrowedFd<'_>> {
            vec![self.efd.as_fd()]
        }
        fn on_irq(&self, _vector: usize, _count: u64) {
            if self.a.claim_irq() {
                self.claimed
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if let Some(s) = self.pending.lock().unwrap().take() {
                    let _ = s.signal(Ok(()));
                }
            }
        }
    }
    let (kind, vector) = a.irq();
    let efd = nix::sys::eventfd::EventFd::from_flags(
        nix::sys::eventfd::EfdFlags::EFD_CLOEXEC | nix::sys::eventfd::EfdFlags::EFD_NONBLOCK,
    )?;
    a.backend().set_irq_eventfds(kind, vector, &[efd.as_fd()])?;
    let tl = Timeline::new(0);
    let h = Arc::new(Handler {
        a: a.clone(),
        efd,
        pending: Mutex::new(None),
        claimed: Default::default(),
    });
    let mut reactor = Reactor::start("conformance-reactor", h.clone(), Duration::from_millis(50))?;
    let result = (|| {
        for round in 0..3 {
            let (fence, signaller) = tl.create();
            *h.pending.lock().unwrap() = Some(signaller);
            a.raise_irq()?;
            match fence.wait_timeout(DEVICE_TIMEOUT) {
                Wait::Signalled(Status::Ok(())) => {}
                Wait::Signalled(s) => bail!("round {round}: fence signalled {s:?}"),
                Wait::TimedOut => bail!("round {round}: no interrupt within {DEVICE_TIMEOUT:?}"),
            }
        }
        Ok(())
    })();
    reactor.stop();
    a.backend().disable_irqs(kind)?;
    result
}

/// A DMA to an IOVA nobody mapped is refused by the IOMMU: memory that was
/// once mapped there is untouched, and the platform records the fault.
pub fn unmapped_iova_faults(a: &dyn Adapter) -> Result<()> {
    let len = dma_len(a);
    let device_data = crate::pattern(21, len);
    let src = Mapped::new(a, 2, 4096, &device_data)?;
    a.host_to_device(src.iova, 0, len as u64)?;
    let victim_data = crate::pattern(22, len);
    let mut victim = Mapped::new(a, 3, 4096, &victim_data)?;
    let gone = victim.iova;
    victim.unmap()?;
    let before = a.iommu_faults()?;
    a.device_to_host(0, gone, len as u64)?;
    ensure!(
        victim.mem.read(0, len) == victim_data,
        "memory unmapped from IOVA {gone:#x} changed: the IOMMU let a write through"
    );
    let t0 = Instant::now();
    loop {
        let now = a.iommu_faults()?;
        if now > before {
            break;
        }
        ensure!(
            t0.elapsed() < DEVICE_TIMEOUT,
            "no IOMMU fault recorded for the write to {gone:#x} ({before} before and after)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// D5: a mapping captures its pages. Re-backing the address afterwards
/// does not change what the device reads.
pub fn map_pins_pages(a: &dyn Adapter) -> Result<()> {
    let len = dma_len(a);
    let old = crate::pattern(31, len);
    let new = crate::pattern(32, len);
    let src = Mapped::new(a, 4, 4096, &old)?;
    src.mem.reback()?;
    src.mem.write(0, &new);
    let dst = Mapped::new(a, 5, 4096, &vec![0u8; len])?;
    a.host_to_device(src.iova, 0, len as u64)?;
    a.device_to_host(0, dst.iova, len as u64)?;
    let got = dst.mem.read(0, len);
    ensure!(
        got == old,
        "the device did not read the pages mapped at map time (D5): {}",
        if got == new {
            "it read the new pages".to_string()
        } else {
            crate::first_diff(&got, &old)
        }
    );
    Ok(())
}

/// A second map over a mapped range, or an unmap that matches no map, is
/// refused with a typed error and changes nothing.
pub fn map_rules(a: &dyn Adapter) -> Result<()> {
    let m = Mapped::new(a, 6, 8192, &[1, 2, 3])?;
    let other = UserMem::new(4096)?;
    let b = a.backend();
    match b.dma_map(
        m.iova + 4096,
        4096,
        DmaSource::Vaddr(other.ptr()),
        DmaProt::RW,
    ) {
        Err(fdma::BackendError::Refused { .. } | fdma::BackendError::Invalid { .. }) => {}
        r => bail!("a map over a mapped range gave {r:?}"),
    }
    ensure!(
        b.dma_unmap(m.iova + 0x20_0000, 4096).is_err(),
        "unmapping an unmapped range succeeded"
    );
    // The original mapping still works.
    let len = dma_len(a).min(64);
    a.host_to_device(m.iova, 0, len as u64)?;
    Ok(())
}

/// Function reset where the device offers one; a typed refusal where not.
pub fn reset_contract(a: &dyn Adapter) -> Result<()> {
    match (a.backend().reset(), a.expects_reset()) {
        (Ok(()), true) => Ok(()),
        (Err(fdma::BackendError::ResetUnsupported { .. }), false) => Ok(()),
        (r, want) => bail!(
            "reset gave {r:?}; the device should {}offer one",
            if want { "" } else { "not " }
        ),
    }
}

/// One conformance check.
pub type Check = fn(&Arc<dyn Adapter>) -> Result<()>;

/// Every check, in order, by name.
pub const CHECKS: &[(&str, Check)] = &[
    ("identity", |a| identity(&**a)),
    ("iommu_info", |a| iommu_info(&**a)),
    ("bar_mmap", |a| bar_mmap(&**a)),
    ("dma_round_trip", |a| dma_round_trip(&**a)),
    ("irq_signals_fence", irq_signals_fence),
    ("unmapped_iova_faults", |a| unmapped_iova_faults(&**a)),
    ("map_pins_pages", |a| map_pins_pages(&**a)),
    ("map_rules", |a| map_rules(&**a)),
    ("reset_contract", |a| reset_contract(&**a)),
];

/// Run the check called `name` on `a`, panicking with its error chain.
pub fn run(name: &str, a: &Arc<dyn Adapter>) {
    let (_, f) = CHECKS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no conformance check called {name}"));
    if let Err(e) = f(a) {
        panic!("{name}: {e:#}");
    }
}

/// One `#[test]` per conformance check, each on a fresh adapter from
/// `setup` (an expression giving `(keep_alive, Arc<dyn Adapter>)`), with
/// the attributes given (e.g. `#[ignore = "..."]`); and a test that every
/// check in [`CHECKS`] has one.
#[macro_export]
macro_rules! conformance_tests {
    ($(#[$attr:meta])* setup = $setup:expr) => {
        $crate::conformance_tests!(@each [$(#[$attr])*] $setup;
            identity iommu_info bar_mmap dma_round_trip irq_signals_fence
            unmapped_iova_faults map_pins_pages map_rules reset_contract);
    };
    (@one [$($attr:tt)*] $name:ident ($setup:expr)) => {
        $($attr)*
        #[test]
        fn $name() {
            let (_keep, a) = $setup;
            $crate::conformance::run(stringify!($name), &a);
        }
    };
    (@each $attrs:tt $setup:expr; $($name:ident)*) => {
        $( $crate::conformance_tests!(@one $attrs $name ($setup)); )*

        #[test]
        fn every_check_has_a_test() {
            let here = [$(stringify!($name)),*];
            for (name, _) in $crate::conformance::CHECKS {
                assert!(here.contains(name), "conformance check {name} has no test");
            }
        }
    };
}
