//! The simulator the integration tests start (the `fdma-sim` server, built
//! into this package so that tests can find it through Cargo).

use anyhow::Context;
use clap::Parser;

/// The fdma card, simulated, for the integration tests.
#[derive(Parser, Debug)]
struct Args {
    #[command(flatten)]
    sim: fdma_sim::cli::SimArgs,
}

fn main() -> anyhow::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let a = Args::parse();
    fdma_sim::cli::run(&a.sim).context("simulator")
}
