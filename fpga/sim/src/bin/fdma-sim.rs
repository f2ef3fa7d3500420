//! `fdma-sim`: the simulated fdma card as a vfio-user device server.
//!
//! Serves one client at a time on `--socket`, with a line-based control
//! socket at `<socket>.ctl` (see `fdma_sim::server`). SIGTERM and SIGINT
//! end it cleanly and remove both sockets. Logging through `RUST_LOG`.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use fdma_sim::card::{LinkModel, SimConfig, SimFaults};
use fdma_sim::server::{Server, ServerConfig};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The fdma card, simulated, served over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Path of the vfio-user socket to create.
    #[arg(long)]
    socket: PathBuf,
    /// Host read latency in device cycles.
    #[arg(long, value_name = "CYCLES")]
    link_latency: Option<u32>,
    /// Host link payload bytes per cycle in each direction.
    #[arg(long, value_name = "N")]
    link_bytes_per_cycle: Option<u32>,
    /// No link model: reads complete at once, no bandwidth limit.
    #[arg(long, conflicts_with_all = ["link_latency", "link_bytes_per_cycle"])]
    no_link_model: bool,
    /// Start with the link down (reads all ones, writes and DMA dropped).
    #[arg(long)]
    link_down: bool,
    /// The device dies after this many cycles.
    #[arg(long, value_name = "CYCLES")]
    die_after: Option<u64>,
    /// Delay every client-served DMA request by this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    dma_reply_delay_ms: u64,
    /// Fail every client-served DMA request after this many more.
    #[arg(long, value_name = "N")]
    dma_reply_fail_after: Option<u64>,
    /// Wall-clock limit for a client's DMA reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    dma_reply_timeout_ms: u64,
    /// Write an FST waveform of the RTL to this file.
    #[arg(long, value_name = "FILE.fst")]
    trace: Option<PathBuf>,
    /// Largest data transfer per message the server accepts and announces.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    max_data_xfer_size: u64,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    let mut link = LinkModel::default();
    if a.no_link_model {
        link = LinkModel::OFF;
    }
    if let Some(l) = a.link_latency {
        link.read_latency_cycles = l;
    }
    if let Some(b) = a.link_bytes_per_cycle {
        link.bytes_per_cycle = b;
    }
    let sim = SimConfig {
        engine: fdma_hw::EngineConfig::DEFAULT,
        link,
        faults: SimFaults {
            link_down: a.link_down,
            die_after_cycles: a.die_after,
        },
        trace: a.trace,
    };
    let mut cfg = ServerConfig::new(&a.socket);
    cfg.max_data_xfer_size = a.max_data_xfer_size.max(4096);
    cfg.dma_reply_timeout = Duration::from_millis(a.dma_reply_timeout_ms);
    cfg.dma_faults = fdma_sim::server::DmaFaults {
        reply_delay_ms: a.dma_reply_delay_ms,
        fail_after: a.dma_reply_fail_after,
    };

    // Block SIGTERM and SIGINT and read them from a signalfd the main loop
    // polls, so a signal can never slip in between a check and a blocking poll.
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block().context("blocking SIGTERM/SIGINT")?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .context("signalfd")?;

    let mut server = Server::new(cfg, sim).context("starting the server")?;
    server
        .run(Some(std::os::fd::AsFd::as_fd(&sfd)))
        .context("serving")?;
    server.core().card.flush_trace();
    drop(server);
    log::info!("stopped");
    Ok(())
}
