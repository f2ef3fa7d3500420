//! QEMU's `edu` teaching device (vendor 0x1234, device 0x11e8) as a
//! conformance target: a 4 KiB DMA buffer, a DMA engine driven by four
//! registers, and one MSI. It stands in for a card under kernel VFIO in
//! the guest stage, where no fdma card exists.
//!
//! Its quirks, from QEMU 7.2 (`hw/misc/edu.c`): registers take 4- or
//! 8-byte accesses only; a DMA must lie inside the buffer at 0x40000
//! (QEMU aborts otherwise, and at exactly 4096 bytes), so the adapter
//! refuses such requests itself; each DMA takes about 100 ms of virtual
//! time; after an IOMMU refusal it still completes and interrupts; it has
//! no reset VFIO can use.

use super::Adapter;
use anyhow::{ensure, Context, Result};
use fdma::backend::{Backend, IrqKind};
use std::sync::Arc;
use std::time::Instant;

/// PCI vendor and device ID.
pub const IDS: (u16, u16) = (0x1234, 0x11e8);
/// Value of the identification register.
pub const ID_VALUE: u32 = 0x0100_00ed;

const BAR: u32 = 0;
const REG_ID: u64 = 0x00;
const REG_IRQ_STATUS: u64 = 0x24;
const REG_IRQ_RAISE: u64 = 0x60;
const REG_IRQ_ACK: u64 = 0x64;
const REG_DMA_SRC: u64 = 0x80;
const REG_DMA_DST: u64 = 0x88;
const REG_DMA_COUNT: u64 = 0x90;
const REG_DMA_CMD: u64 = 0x98;
const DMA_START: u64 = 1;
const DMA_TO_RAM: u64 = 2;
const DMA_BUF: u64 = 0x40000;
const DMA_BUF_SIZE: u64 = 4096;

/// An `edu` device behind a backend.
pub struct Edu {
    backend: Arc<dyn Backend>,
}

impl Edu {
    /// Take the device behind `backend`: check its identity and enable bus
    /// mastering (vfio-pci leaves it off; without it neither DMA nor MSI
    /// gets through).
    pub fn new(backend: Arc<dyn Backend>) -> Result<Edu> {
        let mut ids = [0u8; 4];
        backend.config_read(0, &mut ids)?;
        let got = (
            u16::from_le_bytes([ids[0], ids[1]]),
            u16::from_le_bytes([ids[2], ids[3]]),
        );
        ensure!(
            got == IDS,
            "{}: PCI id {got:04x?} is not edu",
            backend.name()
        );
        let mut cmd = [0u8; 2];
        backend.config_read(4, &mut cmd)?;
        let cmd = u16::from_le_bytes(cmd) | 0x6; // memory space, bus master
        backend.config_write(4, &cmd.to_le_bytes())?;
        Ok(Edu { backend })
    }

    /// Open the edu at PCI address `addr` through kernel VFIO.
    pub fn open(addr: &str) -> Result<Edu> {
        let b = fdma::device::connect(addr, &fdma::OpenOptions::default())
            .with_context(|| format!("open {addr}"))?;
        Edu::new(b)
    }

    fn read64(&self, off: u64) -> Result<u64> {
        let mut b = [0u8; 8];
        self.backend.region_read(BAR, off, &mut b)?;
        Ok(u64::from_le_bytes(b))
    }

    fn write64(&self, off: u64, v: u64) -> Result<()> {
        self.backend.region_write(BAR, off, &v.to_le_bytes())?;
        Ok(())
    }

    fn dma(&self, src: u64, dst: u64, len: u64, to_ram: bool) -> Result<()> {
        let dev_off = if to_ram { src } else { dst } - DMA_BUF;
        ensure!(
            len > 0 && len < DMA_BUF_SIZE && dev_off + len <= DMA_BUF_SIZE,
            "edu DMA of {len} bytes at buffer offset {dev_off:#x}: out of the device's range"
        );
        ensure!(self.read64(REG_DMA_CMD)? & DMA_START == 0, "edu DMA busy");
        self.write64(REG_DMA_SRC, src)?;
        self.write64(REG_DMA_DST, dst)?;
        self.write64(REG_DMA_COUNT, len)?;
        self.write64(REG_DMA_CMD, DMA_START | if to_ram { DMA_TO_RAM } else { 0 })?;
        let t0 = Instant::now();
        while self.read64(REG_DMA_CMD)? & DMA_START != 0 {
            ensure!(
                t0.elapsed() < super::DEVICE_TIMEOUT,
                "edu DMA did not finish within {:?}",
                super::DEVICE_TIMEOUT
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Ok(())
    }
}

/// DMAR fault lines in the kernel log so far (`/dev/kmsg`, root only).
pub fn kernel_dmar_faults() -> Result<u64> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("/dev/kmsg")
        .context("open /dev/kmsg (the kernel log; needs root)")?;
    let mut n = 0;
    let mut rec = vec![0u8; 8192];
    loop {
        match f.read(&mut rec) {
            Ok(0) => break,
            Ok(len) => {
                let line = String::from_utf8_lossy(&rec[..len]);
                if line.contains("DMAR") && line.contains("fault") {
                    n += 1;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            // A record overwritten while reading: skip it.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(n)
}

impl Adapter for Edu {
    fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    fn id_register(&self) -> (u32, u64, u32) {
        (BAR, REG_ID, ID_VALUE)
    }

    fn mmap_probe(&self) -> (u32, u64, bool) {
        (BAR, REG_ID, false)
    }

    fn max_dma(&self) -> u64 {
        DMA_BUF_SIZE / 2
    }

    fn reserved_iova(&self) -> u64 {
        u64::MAX
    }

    fn host_to_device(&self, iova: u64, dev_off: u64, len: u64) -> Result<()> {
        self.dma(iova, DMA_BUF + dev_off, len, false)
    }

    fn device_to_host(&self, dev_off: u64, iova: u64, len: u64) -> Result<()> {
        self.dma(DMA_BUF + dev_off, iova, len, true)
    }

    fn irq(&self) -> (IrqKind, u32) {
        (IrqKind::Msi, 0)
    }

    fn raise_irq(&self) -> Result<()> {
        self.backend
            .region_write(BAR, REG_IRQ_RAISE, &1u32.to_le_bytes())?;
        Ok(())
    }

    fn claim_irq(&self) -> bool {
        match self.backend.read32_nonalloc(BAR, REG_IRQ_STATUS) {
            Ok(0) | Err(_) => false,
            Ok(v) => self.backend.write32_nonalloc(BAR, REG_IRQ_ACK, v).is_ok(),
        }
    }

    fn iommu_faults(&self) -> Result<u64> {
        kernel_dmar_faults()
    }

    fn expects_reset(&self) -> bool {
        false
    }
}
