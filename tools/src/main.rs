//! `fdma` — the command-line tool for lab engineers and CI scripts.
//!
//! * `fdma sim --socket PATH` runs the simulated card (built-in simulator).
//! * `fdma info` inspects a card without resetting it: identity,
//!   capabilities, channel states, error registers.
//! * `fdma dma` runs verified copies in every direction and reports rates.
//! * `fdma bench` sweeps sizes, channels, queue depths and completion modes:
//!   throughput, latency percentiles, CPU per job, as a table, JSON or plot.
//! * `fdma reg read|write|dump` reads and writes registers by name or
//!   offset, with their fields decoded.
//! * `fdma selftest` checks a card end to end after it is plugged in or a
//!   bitstream is loaded: identity, registers, DMA on every channel,
//!   interrupts, fault recovery, reset, the registration cache.
//! * `fdma list`, `fdma bind`, `fdma unbind` find the card on a lab host and
//!   move it between its host driver and vfio-pci (root).
//! * `fdma completions SHELL` prints a shell completion script.
//!
//! The device is `--device NAME` or `FDMA_DEVICE`: `sim:SOCKET` (a running
//! simulator, see `fdma list`), a PCI address, or `sim`. With `sim` or
//! neither, `info`, `dma`, `reg` and `selftest` start the built-in simulator
//! in a child process for the duration of the command.

mod bench;
mod builtin;
mod dma;
mod info;
mod pci_cmds;
mod reg;
mod selftest;
mod size;

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};

/// fdma: drive the fdma PCIe DMA engine, on a card or its simulator.
#[derive(Parser, Debug)]
#[command(version, about, propagate_version = true, after_help = EXIT_CODES)]
struct Cli {
    /// The device: `sim:SOCKET`, a PCI address (`0000:01:00.0`), or `sim`
    /// for a built-in simulator started for this command. Default:
    /// `FDMA_DEVICE`, else `sim`.
    #[arg(short, long, global = true, env = "FDMA_DEVICE")]
    device: Option<String>,
    /// Where sysfs and /dev are (tests point this at a fake tree).
    #[arg(long, global = true, env = "FDMA_SYSFS_ROOT", hide = true)]
    sysfs_root: Option<std::path::PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the simulated card as a vfio-user server until SIGTERM/SIGINT.
    #[cfg(feature = "sim")]
    #[command(after_help = SIM_EXAMPLES)]
    Sim(fdma_sim::cli::SimArgs),
    /// Run the simulated card (not in this build).
    #[cfg(not(feature = "sim"))]
    Sim {
        /// Ignored.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Show a card's identity, capabilities and state, without resetting it.
    #[command(after_help = INFO_EXAMPLES)]
    Info(info::InfoArgs),
    /// Verified DMA copies in any direction, with rates.
    #[command(after_help = DMA_EXAMPLES)]
    Dma(dma::DmaArgs),
    /// Benchmark DMA: throughput, latency percentiles and CPU per job over
    /// sizes, channels, queue depths and interrupt or poll completion.
    #[command(after_help = bench::BENCH_HELP)]
    Bench(bench::BenchArgs),
    /// Read, write or dump registers by name or offset, fields decoded.
    #[command(after_help = reg::REG_HELP)]
    Reg(reg::RegArgs),
    /// Check a card end to end: identity, registers, verified DMA on every
    /// channel and direction, interrupts, fault recovery, reset, the
    /// registration cache. Exits non-zero if any check fails.
    #[command(after_help = SELFTEST_EXAMPLES)]
    Selftest(selftest::SelftestArgs),
    /// List fdma cards (or other PCI functions) and whether fdma can use
    /// them, then this user's running simulators.
    #[command(after_help = LIST_EXAMPLES)]
    List(pci_cmds::ListArgs),
    /// Bind a PCI function to vfio-pci (root), optionally for a user.
    #[command(after_help = BIND_EXAMPLES)]
    Bind(pci_cmds::BindArgs),
    /// Give a PCI function back from vfio-pci to its usual driver (root).
    #[command(after_help = UNBIND_EXAMPLES)]
    Unbind(pci_cmds::UnbindArgs),
    /// Print a shell completion script to stdout.
    #[command(after_help = COMPLETIONS_EXAMPLES)]
    Completions {
        /// The shell to complete for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The exit codes, for scripts (also in the README).
const EXIT_CODES: &str = "\
Exit codes:
  0  success
  1  the command failed: a device or driver error, a data mismatch (the
     first differing offset is printed), a failed selftest check, bad
     values (size, register, address); one line on stderr, with its causes
  2  the command line itself is wrong (unknown option or subcommand)

Logging: RUST_LOG=fdma=debug (or info, trace) on stderr.";

#[cfg(feature = "sim")]
const SIM_EXAMPLES: &str = "\
Examples:
  fdma sim --socket /tmp/fdma.sock &               # then FDMA_DEVICE=sim:/tmp/fdma.sock
  fdma sim --socket /tmp/fdma.sock --trace run.fst # a waveform for GTKWave
  fdma sim --socket /tmp/fdma.sock --link-latency 400 --link-bytes-per-cycle 16
  fdma sim --socket /tmp/fdma.sock --corrupt-host-writes 1   # test a tool's data check

Serving starts once <socket>.ctl exists; `fdma list` shows it. SIGTERM or
SIGINT stops it and removes its sockets.";

const INFO_EXAMPLES: &str = "\
Examples:
  fdma info                           # the built-in simulator
  fdma -d 0000:01:00.0 info           # a card: state after a hang is kept (no reset)
  fdma -d sim:/tmp/fdma.sock info --json | jq .channels";

const DMA_EXAMPLES: &str = "\
Examples:
  fdma dma --size 4M --count 8                     # every direction, verified, with rates
  fdma -d 0000:01:00.0 dma --dir c2h --size 64M --channel 2
  fdma dma --dir h2h --host-offset 3 --dst-offset 30   # unaligned at both ends
  fdma dma --input data.bin --output back.bin --dir h2c,c2h

A mismatch exits 1 and names the first differing byte.";

const LIST_EXAMPLES: &str = "\
Examples:
  fdma list                 # fdma cards: driver, IOMMU group, ready? then simulators
  fdma list --all           # every PCI function
  fdma list --json | jq '.[] | select(.kind == \"sim\") | .device'";

const BIND_EXAMPLES: &str = "\
Examples:
  sudo fdma bind 0000:01:00.0                       # to vfio-pci, for root
  sudo fdma bind 0000:01:00.0 --user alice          # /dev/vfio/N handed to alice;
                                                    # prints the memlock line she needs";

const UNBIND_EXAMPLES: &str = "\
Examples:
  sudo fdma unbind 0000:01:00.0     # back to the driver it had before";

const COMPLETIONS_EXAMPLES: &str = "\
Examples:
  fdma completions bash > ~/.local/share/bash-completion/completions/fdma
  fdma completions zsh > \"${fpath[1]}/_fdma\"
  fdma completions fish > ~/.config/fish/completions/fdma.fish";

const SELFTEST_EXAMPLES: &str = "\
Examples:
  fdma selftest                          # the built-in simulator
  fdma --device 0000:01:00.0 selftest    # a card bound to vfio-pci
  sudo fdma -d 0000:01:00.0 selftest --rescan
                                         # after loading a bitstream: remove,
                                         # rescan, then test
  fdma -d sim:/tmp/fdma.sock selftest --json | jq '.[] | select(.status != \"PASS\")'

Each check prints `PASS|FAIL|SKIP  name  detail (time)`, then
`selftest: N passed, M failed, K skipped`; the exit code is 1 if any failed.";

fn main() {
    // `fdma info | head` ends quietly when the reader goes away, as other
    // command-line tools do, instead of panicking on the broken pipe.
    // SAFETY: restores the default disposition of one signal before any
    // thread is started.
    unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
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
        Cmd::Bench(a) => bench::main(cli.device, &a),
        Cmd::Reg(a) => {
            let dev = builtin::DeviceArg::resolve(cli.device)?;
            reg::run(dev.name(), &a)
        }
        Cmd::Selftest(a) => {
            if a.rescan && builtin::wants_private(cli.device.as_deref()) {
                anyhow::bail!(
                    "--rescan removes and rescans a PCI device; with no --device (or --device \
                     sim) the built-in simulator is used, which has no PCI function to rescan: \
                     name the card with --device ADDR, or run without --rescan"
                );
            }
            let dev = builtin::DeviceArg::resolve(cli.device)?;
            selftest::run(dev.name(), &pci_cmds::sysfs(cli.sysfs_root), &a)
        }
        Cmd::List(a) => pci_cmds::list(&pci_cmds::sysfs(cli.sysfs_root), &a),
        Cmd::Bind(a) => pci_cmds::bind(&pci_cmds::sysfs(cli.sysfs_root), &a),
        Cmd::Unbind(a) => pci_cmds::unbind(&pci_cmds::sysfs(cli.sysfs_root), &a),
        Cmd::Completions { shell } => {
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "fdma", &mut out);
            // A script piped into `head` is not an error.
            match std::io::Write::write_all(&mut std::io::stdout().lock(), &out) {
                Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
                _ => Ok(()),
            }
        }
    }
}
