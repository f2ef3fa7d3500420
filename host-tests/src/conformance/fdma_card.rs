//! The fdma card (or its simulator) as a conformance target, driven by raw
//! register writes rather than the driver's channel layer, so that the
//! suite tests the transport and nothing above it: channel 0 gets a
//! 16-descriptor ring in user memory the adapter maps itself, each DMA is
//! one descriptor, and completion is polled from `HEAD`.

use super::{Adapter, UserMem, DEVICE_TIMEOUT};
use anyhow::{bail, ensure, Context, Result};
use fdma::backend::{Backend, DmaProt, DmaSource, IrqKind};
use fdma_hw::desc::{self, Descriptor, Direction};
use fdma_hw::regs::{self, channel_reg};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

const RING: u32 = 16;
const WB_OFF: usize = 2048;
const IRQ_SRC_OFF: usize = 3072;
/// Card memory the interrupt-raising copy lands in, away from test data.
const IRQ_DST: u64 = 0x10000;

/// The fdma card behind a backend, channel 0 under the adapter's control.
pub struct FdmaCard {
    backend: Arc<dyn Backend>,
    ring: UserMem,
    ring_iova: u64,
    tail: Mutex<u32>,
    /// The simulator's socket, for its IOMMU fault log.
    sim_socket: Option<std::path::PathBuf>,
    raised: AtomicU32,
}

fn reg(ch: usize, r: &regs::Register) -> u64 {
    u64::from(channel_reg(ch, r))
}

impl FdmaCard {
    /// Take the card behind `backend`: bus master on, engine enabled,
    /// channel 0's ring mapped at the top of the first usable IOVA range's
    /// first 64 MiB. `sim_socket` names the simulator whose fault log
    /// [`Adapter::iommu_faults`] reads.
    pub fn new(
        backend: Arc<dyn Backend>,
        sim_socket: Option<std::path::PathBuf>,
    ) -> Result<FdmaCard> {
        let mut cmd = [0u8; 2];
        backend.config_read(4, &mut cmd)?;
        let cmd = u16::from_le_bytes(cmd) | 0x6;
        backend.config_write(4, &cmd.to_le_bytes())?;
        let base = backend
            .dma_limits()
            .iova_ranges
            .first()
            .context("no usable IOVA range")?
            .start;
        let ring_iova = ((base + 0xf_ffff) & !0xf_ffff) + 0x400_0000;
        let ring = UserMem::new(4096)?;
        backend.dma_map(ring_iova, 4096, DmaSource::Vaddr(ring.ptr()), DmaProt::RW)?;
        let card = FdmaCard {
            backend,
            ring,
            ring_iova,
            tail: Mutex::new(0),
            sim_socket,
            raised: AtomicU32::new(0),
        };
        card.w(u64::from(regs::GCTRL.offset), regs::GCTRL_ENABLE.encode(1))?;
        card.program()?;
        Ok(card)
    }

    fn w(&self, off: u64, v: u32) -> Result<()> {
        self.backend
            .region_write(fdma_hw::pci::BAR_REGS, off, &v.to_le_bytes())?;
        Ok(())
    }

    fn r(&self, off: u64) -> Result<u32> {
        let mut b = [0u8; 4];
        self.backend
            .region_read(fdma_hw::pci::BAR_REGS, off, &mut b)?;
        Ok(u32::from_le_bytes(b))
    }

    /// Reset channel 0 and program its ring.
    fn program(&self) -> Result<()> {
        self.w(reg(0, &regs::CH_CTRL), regs::CH_CTRL_RESET.encode(1))?;
        let t0 = Instant::now();
        while regs::CH_CTRL_RESET.decode(self.r(reg(0, &regs::CH_CTRL))?) != 0 {
            ensure!(
                t0.elapsed() < DEVICE_TIMEOUT,
                "channel reset did not finish"
            );
        }
        let wb = self.ring_iova + WB_OFF as u64;
        self.w(reg(0, &regs::CH_RING_LO), self.ring_iova as u32)?;
        self.w(reg(0, &regs::CH_RING_HI), (self.ring_iova >> 32) as u32)?;
        self.w(reg(0, &regs::CH_RING_SIZE), RING)?;
        self.w(reg(0, &regs::CH_WB_LO), wb as u32)?;
        self.w(reg(0, &regs::CH_WB_HI), (wb >> 32) as u32)?;
        self.w(reg(0, &regs::CH_IRQ_COUNT), 0)?;
        self.w(reg(0, &regs::CH_CTRL), regs::CH_CTRL_RUN.encode(1))?;
        *self.tail.lock().unwrap() = 0;
        Ok(())
    }

    /// Run one descriptor to completion.
    fn run(&self, dir: Direction, src: u64, dst: u64, len: u64, irq: bool) -> Result<()> {
        let mut tail = self.tail.lock().unwrap();
        let d = Descriptor::new(dir, src, dst, len as u32, irq, true, *tail);
        let slot = (*tail % RING) as usize * desc::DESC_BYTES;
        self.ring.write(slot, &d.to_bytes());
        *tail = tail.wrapping_add(1);
        // The ring write above is ordered before the doorbell (release
        // fence in `UserMem::write`, posted write after it).
        self.backend.region_write_posted(
            fdma_hw::pci::BAR_REGS,
            reg(0, &regs::CH_TAIL),
            &tail.to_le_bytes(),
        )?;
        let want = *tail;
        drop(tail);
        let t0 = Instant::now();
        loop {
            if self.r(reg(0, &regs::CH_HEAD))? == want {
                return Ok(());
            }
            let st = self.r(reg(0, &regs::CH_STATUS))?;
            if regs::CH_STATUS_STATE.decode(st) == regs::state::HALTED {
                let code = regs::CH_STATUS_ERR.decode(st) as u8;
                self.program()?;
                bail!("channel 0 halted: {}", desc::err::name(code));
            }
            ensure!(
                t0.elapsed() < DEVICE_TIMEOUT,
                "DMA did not finish within {DEVICE_TIMEOUT:?}"
            );
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Adapter for FdmaCard {
    fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn id_register(&self) -> (u32, u64, u32) {
        (
            fdma_hw::pci::BAR_REGS,
            u64::from(regs::ID.offset),
            fdma_hw::id_value(),
        )
    }

    fn mmap_probe(&self) -> (u32, u64, bool) {
        (fdma_hw::pci::BAR_CARD_MEM, 0x100, true)
    }

    fn max_dma(&self) -> u64 {
        4096
    }

    fn reserved_iova(&self) -> u64 {
        self.ring_iova
    }

    fn host_to_device(&self, iova: u64, dev_off: u64, len: u64) -> Result<()> {
        self.run(Direction::HostToCard, iova, dev_off, len, false)
    }

    fn device_to_host(&self, dev_off: u64, iova: u64, len: u64) -> Result<()> {
        self.run(Direction::CardToHost, dev_off, iova, len, false)
    }

    fn irq(&self) -> (IrqKind, u32) {
        (IrqKind::Msix, 0)
    }

    fn raise_irq(&self) -> Result<()> {
        self.raised.fetch_add(1, Ordering::Relaxed);
        let src = self.ring_iova + IRQ_SRC_OFF as u64;
        self.run(Direction::HostToCard, src, IRQ_DST, 64, true)
    }

    fn claim_irq(&self) -> bool {
        let st = self
            .backend
            .read32_nonalloc(fdma_hw::pci::BAR_REGS, reg(0, &regs::CH_STATUS));
        matches!(st, Ok(s) if regs::CH_STATUS_STATE.decode(s) != regs::state::HALTED)
            && self.raised.load(Ordering::Relaxed) > 0
    }

    fn iommu_faults(&self) -> Result<u64> {
        let sock = self
            .sim_socket
            .as_ref()
            .context("IOMMU fault records of a card: read them from the host's kernel log")?;
        let lines = fdma_sim_status(sock)?;
        lines
            .split_whitespace()
            .skip_while(|w| *w != "faults")
            .nth(1)
            .and_then(|n| n.parse().ok())
            .with_context(|| format!("no fault count in the simulator's status: {lines}"))
    }

    fn expects_reset(&self) -> bool {
        true
    }
}

impl Drop for FdmaCard {
    fn drop(&mut self) {
        let _ = self.w(reg(0, &regs::CH_CTRL), regs::CH_CTRL_RESET.encode(1));
        let _ = self.backend.dma_unmap(self.ring_iova, 4096);
    }
}

#[cfg(feature = "sim")]
fn fdma_sim_status(sock: &std::path::Path) -> Result<String> {
    fdma_sim::server::control::request(sock, "status")?
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .next()
        .context("empty status")
}

#[cfg(not(feature = "sim"))]
fn fdma_sim_status(_sock: &std::path::Path) -> Result<String> {
    bail!("this build has no simulator support (feature `sim`)")
}
