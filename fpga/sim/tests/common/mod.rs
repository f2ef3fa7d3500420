//! In-process test bench for the RTL: a [`Card`] with an IOMMU whose mappings
//! are plain process memory, and helpers to program channels the way a
//! driver does (ring, writeback, doorbell) through the register port.
#![allow(dead_code)]

pub use fdma_hw::desc::err;
use fdma_hw::desc::{Descriptor, Direction, Writeback, DESC_BYTES, WB_BYTES};
pub use fdma_hw::regs::state;
use fdma_hw::regs::{self, channel_reg, Register};
use fdma_sim::card::{Card, LinkModel, RunOutcome, SimConfig};
use fdma_sim::hostmem::{HostMemory, Iommu, Prot, VecBacking};

/// IOVA of the descriptor rings (channel c's ring at RING_BASE + c * RING_STRIDE).
pub const RING_BASE: u64 = 0x1_0000_0000;
/// Space reserved per ring.
pub const RING_STRIDE: u64 = 0x10_0000;
/// IOVA of the writeback areas (channel c at WB_BASE + c * 64).
pub const WB_BASE: u64 = 0x2_0000_0000;
/// IOVA of the general data buffer.
pub const DATA_BASE: u64 = 0x10_0000_0000;

/// One host-memory access the card made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// A write (else a read).
    pub write: bool,
    /// First IOVA.
    pub iova: u64,
    /// Bytes.
    pub len: usize,
    /// Whether it succeeded.
    pub ok: bool,
}

/// The IOMMU, recording every access the card makes through it.
#[derive(Default)]
pub struct Host {
    /// The mappings.
    pub iommu: Iommu,
    /// Every access, in order.
    pub accesses: Vec<Access>,
}

impl HostMemory for Host {
    fn read(&mut self, iova: u64, buf: &mut [u8]) -> Result<(), fdma_sim::hostmem::DmaError> {
        let r = self.iommu.read(iova, buf);
        self.accesses.push(Access {
            write: false,
            iova,
            len: buf.len(),
            ok: r.is_ok(),
        });
        r
    }
    fn write(&mut self, iova: u64, data: &[u8]) -> Result<(), fdma_sim::hostmem::DmaError> {
        let r = self.iommu.write(iova, data);
        self.accesses.push(Access {
            write: true,
            iova,
            len: data.len(),
            ok: r.is_ok(),
        });
        r
    }
}

impl Host {
    /// Map `len` zeroed bytes at `iova`.
    pub fn map(&mut self, iova: u64, len: usize, prot: Prot) {
        self.iommu
            .map(iova, len as u64, prot, Box::new(VecBacking(vec![0; len])))
            .unwrap();
    }
}

/// A card plus host memory and per-channel software state.
pub struct Bench {
    /// The card.
    pub card: Card,
    /// The host memory behind the IOMMU.
    pub host: Host,
    /// Next free descriptor index per channel (software's TAIL).
    pub tail: Vec<u32>,
    /// Ring size per channel.
    pub ring_size: Vec<u32>,
    /// Interrupts seen so far, in order.
    pub irqs: Vec<u16>,
}

/// A budget large enough for any test transfer; a test that hits it has hung.
pub const BUDGET: u64 = 200_000_000;

impl Bench {
    /// A bench with the default link model and `data_len` bytes of host data
    /// buffer mapped read-write at [`DATA_BASE`].
    pub fn new(data_len: usize) -> Bench {
        Bench::with_link(LinkModel::default(), data_len)
    }

    /// A bench with a given link model.
    pub fn with_link(link: LinkModel, data_len: usize) -> Bench {
        let _ = env_logger::builder().is_test(true).try_init();
        let card = Card::new(SimConfig {
            link,
            ..SimConfig::default()
        })
        .expect("card");
        let mut host = Host::default();
        let ch = card.engine().channels as usize;
        host.map(RING_BASE, (RING_STRIDE * ch as u64) as usize, Prot::RW);
        host.map(WB_BASE, 4096, Prot::RW);
        if data_len > 0 {
            host.map(DATA_BASE, data_len, Prot::RW);
        }
        let mut b = Bench {
            card,
            host,
            tail: vec![0; ch],
            ring_size: vec![0; ch],
            irqs: Vec::new(),
        };
        b.card.set_bus_master(true);
        b
    }

    /// Read a global register.
    pub fn rd(&mut self, r: &Register) -> u32 {
        self.card.reg_read(&mut self.host, r.offset)
    }
    /// Write a global register.
    pub fn wr(&mut self, r: &Register, v: u32) {
        self.card.reg_write(&mut self.host, r.offset, v)
    }
    /// Read a channel register.
    pub fn crd(&mut self, ch: usize, r: &Register) -> u32 {
        self.card.reg_read(&mut self.host, channel_reg(ch, r))
    }
    /// Write a channel register.
    pub fn cwr(&mut self, ch: usize, r: &Register, v: u32) {
        self.card.reg_write(&mut self.host, channel_reg(ch, r), v)
    }

    /// Enable the engine and start channel `ch` with a ring of `size` descriptors.
    pub fn start_channel(&mut self, ch: usize, size: u32) {
        self.wr(&regs::GCTRL, regs::GCTRL_ENABLE.encode(1));
        let ring = RING_BASE + ch as u64 * RING_STRIDE;
        let wb = WB_BASE + ch as u64 * 64;
        self.cwr(ch, &regs::CH_RING_LO, ring as u32);
        self.cwr(ch, &regs::CH_RING_HI, (ring >> 32) as u32);
        self.cwr(ch, &regs::CH_RING_SIZE, size);
        self.cwr(ch, &regs::CH_WB_LO, wb as u32);
        self.cwr(ch, &regs::CH_WB_HI, (wb >> 32) as u32);
        self.cwr(ch, &regs::CH_CTRL, regs::CH_CTRL_RUN.encode(1));
        self.ring_size[ch] = size;
        self.tail[ch] = self.crd(ch, &regs::CH_HEAD);
    }

    /// Write descriptors into channel `ch`'s ring without ringing the doorbell.
    pub fn queue(&mut self, ch: usize, descs: &[Descriptor]) {
        let ring = RING_BASE + ch as u64 * RING_STRIDE;
        for d in descs {
            let slot = (self.tail[ch] & (self.ring_size[ch] - 1)) as u64;
            self.host
                .iommu
                .write(ring + slot * DESC_BYTES as u64, &d.to_bytes())
                .unwrap();
            self.tail[ch] = self.tail[ch].wrapping_add(1);
        }
    }

    /// Ring channel `ch`'s doorbell with software's TAIL.
    pub fn doorbell(&mut self, ch: usize) {
        let t = self.tail[ch];
        self.cwr(ch, &regs::CH_TAIL, t);
    }

    /// Queue, ring and run to quiescence.
    pub fn submit(&mut self, ch: usize, descs: &[Descriptor]) {
        self.queue(ch, descs);
        self.doorbell(ch);
        self.run();
    }

    /// Clock until quiescent; panics if the card never settles.
    pub fn run(&mut self) -> u64 {
        let start = self.card.cycles();
        let r = self.card.run(&mut self.host, BUDGET);
        assert_eq!(
            r,
            RunOutcome::Quiescent,
            "card did not settle within {BUDGET} cycles"
        );
        self.card.drain_irqs(&mut self.irqs);
        self.card.cycles() - start
    }

    /// Clock `n` cycles (or until quiescent).
    pub fn run_for(&mut self, n: u64) -> RunOutcome {
        let r = self.card.run(&mut self.host, n);
        self.card.drain_irqs(&mut self.irqs);
        r
    }

    /// Channel `ch`'s writeback record.
    pub fn writeback(&mut self, ch: usize) -> Writeback {
        let mut b = [0u8; WB_BYTES];
        self.host
            .iommu
            .read(WB_BASE + ch as u64 * 64, &mut b)
            .unwrap();
        Writeback::from_bytes(&b)
    }

    /// (state, error code) of channel `ch`.
    pub fn status(&mut self, ch: usize) -> (u32, u8) {
        let s = self.crd(ch, &regs::CH_STATUS);
        (
            regs::CH_STATUS_STATE.decode(s),
            regs::CH_STATUS_ERR.decode(s) as u8,
        )
    }

    /// Fill host memory at `iova` with `data`.
    pub fn host_write(&mut self, iova: u64, data: &[u8]) {
        self.host.iommu.write(iova, data).unwrap();
    }

    /// Read host memory.
    pub fn host_read(&mut self, iova: u64, len: usize) -> Vec<u8> {
        let mut v = vec![0; len];
        self.host.iommu.read(iova, &mut v).unwrap();
        v
    }
}

/// A deterministic byte pattern distinct per `seed`.
pub fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9E37_79B9) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

/// A single-descriptor job.
pub fn job(dir: Direction, src: u64, dst: u64, len: u32) -> Descriptor {
    Descriptor::new(dir, src, dst, len, true, true, 0)
}

/// Card-memory contents.
pub fn card_read(b: &Bench, off: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    b.card.card_memory().read(off, &mut v);
    v
}
