//! Simulator throughput: model cycles per second and simulated MB/s for a
//! large copy with the link model off and on, plus the device-time view
//! (what the RTL would do at its clock) and the read pipelining the engine
//! achieves under latency (RD_OUTSTANDING_MAX, read requests per latency).
//!
//! Run: `cargo bench -p fdma-sim --bench model` (`-- --size-mib N` to change
//! the copy size). Figures are for this machine at this moment: compare rows
//! of one run, not runs of different days.

use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs::{self, channel_reg};
use fdma_sim::card::{Card, LinkModel, RunOutcome, SimConfig};
use fdma_sim::hostmem::{Iommu, Prot, VecBacking};
use std::time::Instant;

const RING: u64 = 0x1000_0000;
const WB: u64 = 0x2000_0000;
const DATA: u64 = 0x4000_0000;

struct Row {
    name: String,
    cycles: u64,
    secs: f64,
    bytes: u64,
    max_out: u32,
    latency: u32,
}

fn one(name: &str, link: LinkModel, dir: Direction, bytes: u32) -> Row {
    let mut card = Card::new(SimConfig {
        link,
        ..SimConfig::default()
    })
    .expect("card");
    card.set_bus_master(true);
    let mut host = Iommu::new();
    host.map(RING, 4096, Prot::RW, Box::new(VecBacking(vec![0; 4096])))
        .unwrap();
    host.map(WB, 4096, Prot::RW, Box::new(VecBacking(vec![0; 4096])))
        .unwrap();
    host.map(
        DATA,
        bytes as u64,
        Prot::RW,
        Box::new(VecBacking(vec![0x5a; bytes as usize])),
    )
    .unwrap();
    let w = |card: &mut Card, host: &mut Iommu, off: u32, v: u32| card.reg_write(host, off, v);
    w(&mut card, &mut host, regs::GCTRL.offset, 1);
    let c = |r: &regs::Register| channel_reg(0, r);
    w(&mut card, &mut host, c(&regs::CH_RING_LO), RING as u32);
    w(&mut card, &mut host, c(&regs::CH_RING_SIZE), 16);
    w(&mut card, &mut host, c(&regs::CH_WB_LO), WB as u32);
    w(&mut card, &mut host, c(&regs::CH_CTRL), 1);
    let (src, dst) = match dir {
        Direction::HostToCard => (DATA, 0),
        Direction::CardToHost => (0, DATA),
        Direction::HostToHost => (DATA, DATA),
    };
    // Split into descriptors of at most 16 MiB so any size fits the ring.
    let mut descs = Vec::new();
    let mut off = 0u64;
    while off < bytes as u64 {
        let n = (bytes as u64 - off).min(16 << 20) as u32;
        descs.push(Descriptor::new(
            dir,
            src + off,
            dst + off,
            n,
            false,
            off + n as u64 == bytes as u64,
            0,
        ));
        off += n as u64;
    }
    use fdma_sim::hostmem::HostMemory;
    for (i, d) in descs.iter().enumerate() {
        host.write(RING + i as u64 * 32, &d.to_bytes()).unwrap();
    }
    let c0 = card.cycles();
    let t0 = Instant::now();
    w(&mut card, &mut host, c(&regs::CH_TAIL), descs.len() as u32);
    let r = card.run(&mut host, u64::MAX);
    let secs = t0.elapsed().as_secs_f64();
    assert_eq!(r, RunOutcome::Quiescent);
    let head = card.reg_read(&mut host, c(&regs::CH_HEAD));
    assert_eq!(head as usize, descs.len(), "copy completed");
    let max_out = card.reg_read(&mut host, regs::RD_OUTSTANDING_MAX.offset);
    Row {
        name: name.to_string(),
        cycles: card.cycles() - c0,
        secs,
        bytes: bytes as u64,
        max_out,
        latency: if link.enabled {
            link.read_latency_cycles
        } else {
            1
        },
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let size_mib: u32 = args
        .iter()
        .position(|a| a == "--size-mib")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(64);
    let bytes = size_mib << 20;
    let cfg = fdma_hw::EngineConfig::DEFAULT;
    let clock_hz = cfg.clock_mhz as f64 * 1e6;
    let max_read = 1u64 << cfg.max_read_log2;
    let link_on = LinkModel::default();
    let rows = [
        one(
            "h2c, link off",
            LinkModel::OFF,
            Direction::HostToCard,
            bytes,
        ),
        one("h2c, link on", link_on, Direction::HostToCard, bytes),
        one("c2h, link on", link_on, Direction::CardToHost, bytes),
        one("h2h, link on", link_on, Direction::HostToHost, bytes),
    ];
    println!(
        "fdma-sim model benchmark: {size_mib} MiB copy; engine {} MHz, {}-byte datapath; link on = {} cycles read latency, {} B/cycle",
        cfg.clock_mhz,
        cfg.data_bytes(),
        link_on.read_latency_cycles,
        link_on.bytes_per_cycle
    );
    println!(
        "{:<16} {:>12} {:>10} {:>14} {:>12} {:>16} {:>14} {:>14}",
        "case",
        "cycles",
        "wall s",
        "Mcycles/s",
        "sim MB/s",
        "device GB/s",
        "max rd out",
        "reads/latency"
    );
    for r in rows {
        let dev_secs = r.cycles as f64 / clock_hz;
        let reads_per_lat = r.bytes as f64 / r.cycles as f64 * r.latency as f64 / max_read as f64;
        println!(
            "{:<16} {:>12} {:>10.3} {:>14.2} {:>12.1} {:>16.2} {:>14} {:>14.2}",
            r.name,
            r.cycles,
            r.secs,
            r.cycles as f64 / r.secs / 1e6,
            r.bytes as f64 / r.secs / 1e6,
            r.bytes as f64 / dev_secs / 1e9,
            r.max_out,
            reads_per_lat
        );
    }
}
