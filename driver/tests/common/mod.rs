//! What the driver's integration tests share: the simulator's server on a
//! thread of the test process, and small helpers to drive the engine
//! through a bare [`fdma::backend::Backend`].
#![allow(dead_code)] // each test binary uses its own part

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fdma::backend::vfio_user::{VfioUserBackend, VfioUserOptions};
use fdma::backend::{Backend, DmaProt, DmaSource};
use fdma_hw::desc::Descriptor;
use fdma_hw::pci::{self, cfg};
use fdma_hw::regs::{self, channel_reg, state};
use fdma_sim::card::{LinkModel, SimConfig};
use fdma_sim::server::{Server, ServerConfig};
use nix::sys::eventfd::{EfdFlags, EventFd};

pub const RING_IOVA: u64 = 0x10_0000;
pub const RING_SIZE: u64 = 0x10_0000;
pub const SRC_IOVA: u64 = 0x200_0000;
pub const PAGE: usize = 4096;

/// The simulator's server on a thread of this process.
pub struct Sim {
    pub sock: PathBuf,
    stop: EventFd,
    thread: Option<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

pub fn start() -> Sim {
    let sim = SimConfig {
        link: LinkModel::OFF,
        ..SimConfig::default()
    };
    start_with(sim, false)
}

/// A server for a card configured as `sim`, announced (see
/// `fdma_vfio_user::announce`) when `announce`.
pub fn start_with(sim: SimConfig, announce: bool) -> Sim {
    let _ = env_logger::builder().is_test(true).try_init();
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fdma.sock");
    let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC).unwrap();
    let stop_fd: OwnedFd = stop.as_fd().try_clone_to_owned().unwrap();
    let (tx, rx) = mpsc::channel();
    let s = sock.clone();
    let thread = std::thread::spawn(move || {
        let mut cfg = ServerConfig::new(&s);
        cfg.announce = announce.then(|| vec!["test".to_string()]);
        let mut server = Server::new(cfg, sim).unwrap();
        tx.send(()).unwrap();
        server.run(Some(stop_fd.as_fd())).unwrap();
        // Dropping the server closes the client's sockets.
    });
    rx.recv_timeout(Duration::from_secs(30))
        .expect("server started");
    Sim {
        sock,
        stop,
        thread: Some(thread),
        _dir: dir,
    }
}

impl Sim {
    /// The device name the driver opens it by.
    pub fn name(&self) -> String {
        format!("sim:{}", self.sock.display())
    }

    /// Stop the server and join its thread.
    pub fn stop(&mut self) {
        self.stop.write(1).unwrap();
        if let Some(t) = self.thread.take() {
            t.join().unwrap();
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.stop.write(1);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

pub fn connect(sim: &Sim, opts: &VfioUserOptions) -> VfioUserBackend {
    VfioUserBackend::connect(&sim.sock, opts).unwrap()
}

pub fn reg(b: &dyn Backend, off: u32) -> u32 {
    let mut v = [0u8; 4];
    b.region_read(0, off as u64, &mut v).unwrap();
    u32::from_le_bytes(v)
}

pub fn set(b: &dyn Backend, off: u32, v: u32) {
    b.region_write(0, off as u64, &v.to_le_bytes()).unwrap();
}

pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 8) as u8)
        .collect()
}

/// Anonymous private memory, unmapped on drop.
pub struct Anon {
    pub ptr: *mut u8,
    pub len: usize,
}

impl Anon {
    pub fn new(len: usize) -> Anon {
        // SAFETY: fresh anonymous mapping; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(p, libc::MAP_FAILED);
        Anon { ptr: p.cast(), len }
    }
    pub fn fill(&self, data: &[u8]) {
        assert!(data.len() <= self.len);
        // SAFETY: within our mapping.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr, data.len()) }
    }
    pub fn read(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        // SAFETY: within our mapping.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), n) }
        v
    }
    /// Replace the pages at the same address with fresh memory (MAP_FIXED).
    pub fn reback(&self) {
        // SAFETY: replaces our own mapping in place.
        let p = unsafe {
            libc::mmap(
                self.ptr.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
                -1,
                0,
            )
        };
        assert_eq!(p.cast(), self.ptr);
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// A ring in a memfd mapped by fd, channel 0 programmed on it.
pub struct Ring {
    pub file: std::fs::File,
    _map: memmap2::MmapRaw,
    next: u32,
}

pub fn setup_ring(b: &VfioUserBackend) -> Ring {
    let fd = nix::sys::memfd::memfd_create(c"ring", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
        .unwrap();
    let file = std::fs::File::from(fd);
    file.set_len(RING_SIZE).unwrap();
    let map = memmap2::MmapOptions::new()
        .len(RING_SIZE as usize)
        .map_raw(&file)
        .unwrap();
    b.dma_map(
        RING_IOVA,
        RING_SIZE,
        DmaSource::Fd {
            fd: file.as_fd(),
            offset: 0,
            vaddr: map.as_ptr(),
        },
        DmaProt::RW,
    )
    .unwrap();
    b.config_write(
        cfg::COMMAND as u64,
        &(cfg::COMMAND_MEMORY | cfg::COMMAND_BUS_MASTER).to_le_bytes(),
    )
    .unwrap();
    let wb = RING_IOVA + 0x1000;
    set(b, channel_reg(0, &regs::CH_RING_LO), RING_IOVA as u32);
    set(
        b,
        channel_reg(0, &regs::CH_RING_HI),
        (RING_IOVA >> 32) as u32,
    );
    set(b, channel_reg(0, &regs::CH_RING_SIZE), 16);
    set(b, channel_reg(0, &regs::CH_WB_LO), wb as u32);
    set(b, channel_reg(0, &regs::CH_WB_HI), (wb >> 32) as u32);
    set(
        b,
        channel_reg(0, &regs::CH_CTRL),
        regs::CH_CTRL_RUN.encode(1),
    );
    set(b, regs::GCTRL.offset, regs::GCTRL_ENABLE.encode(1));
    Ring {
        file,
        _map: map,
        next: 0,
    }
}

impl Ring {
    /// Submit one descriptor with a posted doorbell and wait until the
    /// channel has consumed it; returns (state, error) of the channel.
    pub fn run(&mut self, b: &VfioUserBackend, d: Descriptor) -> (u32, u32) {
        let slot = (self.next % 16) as u64;
        self.file.write_all_at(&d.to_bytes(), slot * 32).unwrap();
        self.next += 1;
        b.region_write_posted(
            0,
            channel_reg(0, &regs::CH_TAIL) as u64,
            &(self.next % (1 << 16)).to_le_bytes(),
        )
        .unwrap();
        let t0 = Instant::now();
        loop {
            let st = reg(b, channel_reg(0, &regs::CH_STATUS));
            let s = regs::CH_STATUS_STATE.decode(st);
            if s == state::HALTED || reg(b, channel_reg(0, &regs::CH_HEAD)) == self.next {
                return (s, regs::CH_STATUS_ERR.decode(st));
            }
            assert!(t0.elapsed() < Duration::from_secs(15), "DMA never finished");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

pub fn card_read(b: &VfioUserBackend, off: u64, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    b.region_read(pci::BAR_CARD_MEM, off, &mut v).unwrap();
    v
}
