//! `fdma-sim`: the simulated fdma card as a vfio-user device server.
//!
//! Serves one client at a time on `--socket`, with a line-based control
//! socket at `<socket>.ctl` (see `fdma_sim::server`). SIGTERM and SIGINT
//! end it cleanly and remove both sockets. Logging through `RUST_LOG`.

use anyhow::Context;
use clap::Parser;
use fdma_sim::cli::SimArgs;

/// The fdma card, simulated, served over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    sim: SimArgs,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let a = Args::parse();
    fdma_sim::cli::run(&a.sim).context("simulator")
}
