//! Simulator throughput: model cycles per second and simulated MB/s for a
//! large copy with the link model off and on, plus the device-time view
//! (what the RTL would do at its clock) and the read pipelining the engine
//! achieves under latency (RD_OUTSTANDING_MAX, read requests per latency).
//!
//! Run: `cargo bench -p fdma-sim --bench model` (`-- --size-mib N` to change
//! the copy size). Figures are for this machine at this moment: compare rows
//! of one run, not runs of different days.

use fdma_hw::desc::Direction;
use fdma_sim::card::LinkModel;
use fdma_sim::modelrun;

struct Row {
    name: String,
    cycles: u64,
    secs: f64,
    bytes: u64,
    max_out: u32,
    latency: u32,
}

fn one(name: &str, link: LinkModel, dir: Direction, bytes: u32) -> Row {
    let r = modelrun::copy(link, dir, bytes, 1).expect("model run");
    Row {
        name: name.to_string(),
        cycles: r.cycles,
        secs: r.secs,
        bytes: r.bytes,
        max_out: r.max_reads_outstanding,
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
