//! The model on its own, without a server or a client: copies run by
//! clocking the Verilated engine in-process against host memory kept in
//! plain vectors. This is the simulator's ceiling, the baseline the
//! benchmarks of the server and of the driver are read against.

use crate::card::{Card, LinkModel, RunOutcome, SimConfig, SimError};
use crate::hostmem::{HostMemory, Iommu, Prot, VecBacking};
use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs::{self, channel_reg};
use std::time::Instant;

const RING: u64 = 0x1000_0000;
const WB: u64 = 0x2000_0000;
const DATA: u64 = 0x4000_0000;
const RING_SIZE: u32 = 64;

/// What one model run did.
#[derive(Debug, Clone, Copy)]
pub struct ModelRun {
    /// Device cycles clocked.
    pub cycles: u64,
    /// Wall-clock seconds.
    pub secs: f64,
    /// Bytes copied.
    pub bytes: u64,
    /// Jobs run.
    pub jobs: u32,
    /// `RD_OUTSTANDING_MAX` at the end.
    pub max_reads_outstanding: u32,
}

/// Run `jobs` copies of `bytes` each in direction `dir` on channel 0, up to
/// 32 jobs queued at once, each one descriptor of at most 16 MiB per
/// descriptor (a larger job takes several), interrupts off.
pub fn copy(link: LinkModel, dir: Direction, bytes: u32, jobs: u32) -> Result<ModelRun, SimError> {
    let mut card = Card::new(SimConfig {
        link,
        ..SimConfig::default()
    })?;
    card.set_bus_master(true);
    let mut host = Iommu::new();
    let map = |host: &mut Iommu, at: u64, len: u64, fill: u8| {
        host.map(
            at,
            len,
            Prot::RW,
            Box::new(VecBacking(vec![fill; len as usize])),
        )
        .expect("fresh mapping");
    };
    map(&mut host, RING, RING_SIZE as u64 * 32, 0);
    map(&mut host, WB, 4096, 0);
    map(&mut host, DATA, bytes as u64, 0x5a);
    let ch = |r: &regs::Register| channel_reg(0, r);
    card.reg_write(&mut host, regs::GCTRL.offset, regs::GCTRL_ENABLE.encode(1));
    card.reg_write(&mut host, ch(&regs::CH_RING_LO), RING as u32);
    card.reg_write(&mut host, ch(&regs::CH_RING_SIZE), RING_SIZE);
    card.reg_write(&mut host, ch(&regs::CH_WB_LO), WB as u32);
    card.reg_write(&mut host, ch(&regs::CH_CTRL), regs::CH_CTRL_RUN.encode(1));
    let (src, dst) = match dir {
        Direction::HostToCard => (DATA, 0),
        Direction::CardToHost => (0, DATA),
        Direction::HostToHost => (DATA, DATA),
    };
    let mut job_descs = Vec::new();
    let mut off = 0u64;
    while off < bytes as u64 {
        let n = (bytes as u64 - off).min(16 << 20) as u32;
        let last = off + n as u64 == bytes as u64;
        job_descs.push(Descriptor::new(
            dir,
            src + off,
            dst + off,
            n,
            false,
            last,
            0,
        ));
        off += n as u64;
    }
    let per_job = job_descs.len() as u32;
    let batch = (RING_SIZE / per_job).clamp(1, 32);
    let c0 = card.cycles();
    let t0 = Instant::now();
    let mut tail = 0u32;
    let mut done = 0u32;
    while done < jobs {
        let n = batch.min(jobs - done);
        for _ in 0..n {
            for d in &job_descs {
                let slot = (tail % RING_SIZE) as u64;
                host.write(RING + slot * 32, &d.to_bytes())
                    .expect("ring is mapped");
                tail = tail.wrapping_add(1);
            }
        }
        card.reg_write(&mut host, ch(&regs::CH_TAIL), tail);
        let r = card.run(&mut host, u64::MAX);
        if r != RunOutcome::Quiescent {
            return Err(SimError::Run(format!("model run ended with {r:?}")));
        }
        done += n;
    }
    let secs = t0.elapsed().as_secs_f64();
    let head = card.reg_read(&mut host, ch(&regs::CH_HEAD));
    if head != tail {
        return Err(SimError::Run(format!(
            "head {head} != tail {tail} after the run"
        )));
    }
    Ok(ModelRun {
        cycles: card.cycles() - c0,
        secs,
        bytes: bytes as u64 * jobs as u64,
        jobs,
        max_reads_outstanding: card.reg_read(&mut host, regs::RD_OUTSTANDING_MAX.offset),
    })
}
