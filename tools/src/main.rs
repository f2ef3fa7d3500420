//! `fdma` — the command-line tool for lab engineers and CI scripts.
//!
//! * `fdma sim --socket PATH` runs the simulated card (built-in simulator).
//! * `fdma info` inspects a card without resetting it: identity,
//!   capabilities, channel states, error registers.
//! * `fdma dma` runs verified copies in every direction and reports rates.
//!
//! The device is `--device NAME` or `FDMA_DEVICE` (`sim:SOCKET` or a PCI
//! address). With neither, `info` and `dma` start the built-in simulator in
//! a child process for the duration of the command.

mod builtin;
mod dma;
mod info;
mod size;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// fdma: drive the fdma PCIe DMA engine, on a card or its simulator.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// The device: `sim:SOCKET` or a PCI address (`0000:01:00.0`). Default:
    /// `FDMA_DEVICE`, else a built-in simulator started for this command.
    #[arg(short, long, global = true, env = "FDMA_DEVICE")]
    device: Option<String>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the simulated card as a vfio-user server until SIGTERM/SIGINT.
    #[cfg(feature = "sim")]
    Sim(fdma_sim::cli::SimArgs),
    /// Run the simulated card (not in this build).
    #[cfg(not(feature = "sim"))]
    Sim {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a card's identity, capabilities and state, without resetting it.
    Info(info::InfoArgs),
    /// Verified DMA copies in any direction, with rates.
    Dma(dma::DmaArgs),
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    if let Err(e) = run(cli) {
        eprintln!("fdma: error: {e}");
        for cause in e.chain().skip(1) {
            eprintln!("  caused by: {cause}");
        }
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        #[cfg(feature = "sim")]
        Cmd::Sim(a) => {
            fdma_sim::cli::run(&a)?;
            Ok(())
        }
        #[cfg(not(feature = "sim"))]
        Cmd::Sim { .. } => anyhow::bail!(
            "this fdma was built without the simulator (cargo feature `sim`); \
             rebuild with default features, or use the fdma-sim binary"
        ),
        Cmd::Info(a) => {
            let dev = builtin::DeviceArg::resolve(cli.device)?;
            info::run(dev.name(), &a)
        }
        Cmd::Dma(a) => {
            let dev = builtin::DeviceArg::resolve(cli.device)?;
            dma::run(dev.name(), &a)
        }
    }
}
