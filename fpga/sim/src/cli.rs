//! The simulator's command line, shared by the `fdma-sim` binary and the
//! `fdma sim` subcommand of the tools, so both accept the same options and
//! run the same server.

use std::path::PathBuf;
use std::time::Duration;

use crate::card::{LinkModel, SimConfig, SimFaults};
use crate::server::{DmaFaults, Server, ServerConfig, ServerError};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// Options of a simulated card and its vfio-user server.
#[derive(clap::Args, Debug, Clone)]
pub struct SimArgs {
    /// Path of the vfio-user socket to create (the control socket is
    /// `<socket>.ctl`).
    #[arg(long)]
    pub socket: PathBuf,
    /// Host read latency in device cycles.
    #[arg(long, value_name = "CYCLES")]
    pub link_latency: Option<u32>,
    /// Host link payload bytes per cycle in each direction.
    #[arg(long, value_name = "N")]
    pub link_bytes_per_cycle: Option<u32>,
    /// No link model: reads complete at once, no bandwidth limit.
    #[arg(long, conflicts_with_all = ["link_latency", "link_bytes_per_cycle"])]
    pub no_link_model: bool,
    /// Start with the link down (reads all ones, writes and DMA dropped).
    #[arg(long)]
    pub link_down: bool,
    /// The device dies after this many cycles.
    #[arg(long, value_name = "CYCLES")]
    pub die_after: Option<u64>,
    /// Silently corrupt one byte of each of the next N DMA writes to host
    /// memory (a datapath error no status reports; test tools' data checks
    /// must catch it).
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub corrupt_host_writes: u64,
    /// Delay every client-served DMA request by this many milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 0)]
    pub dma_reply_delay_ms: u64,
    /// Fail every client-served DMA request after this many more.
    #[arg(long, value_name = "N")]
    pub dma_reply_fail_after: Option<u64>,
    /// Wall-clock limit for a client's DMA reply, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 5000)]
    pub dma_reply_timeout_ms: u64,
    /// Write an FST waveform of the RTL to this file.
    #[arg(long, value_name = "FILE.fst")]
    pub trace: Option<PathBuf>,
    /// Largest data transfer per message the server accepts and announces.
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 20)]
    pub max_data_xfer_size: u64,
}

impl SimArgs {
    /// Defaults for a socket path.
    pub fn new(socket: impl Into<PathBuf>) -> SimArgs {
        SimArgs {
            socket: socket.into(),
            link_latency: None,
            link_bytes_per_cycle: None,
            no_link_model: false,
            link_down: false,
            die_after: None,
            corrupt_host_writes: 0,
            dma_reply_delay_ms: 0,
            dma_reply_fail_after: None,
            dma_reply_timeout_ms: 5000,
            trace: None,
            max_data_xfer_size: 1 << 20,
        }
    }

    /// The options that differ from the defaults, one short phrase each
    /// (`link-down`, `die-after 1000`), for the server's announcement.
    pub fn summary(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.no_link_model {
            v.push("no-link-model".to_string());
        }
        if let Some(l) = self.link_latency {
            v.push(format!("link-latency {l}"));
        }
        if let Some(b) = self.link_bytes_per_cycle {
            v.push(format!("link-bytes-per-cycle {b}"));
        }
        if self.link_down {
            v.push("link-down".into());
        }
        if let Some(n) = self.die_after {
            v.push(format!("die-after {n}"));
        }
        if self.corrupt_host_writes > 0 {
            v.push(format!("corrupt-host-writes {}", self.corrupt_host_writes));
        }
        if self.dma_reply_delay_ms > 0 {
            v.push(format!("dma-reply-delay-ms {}", self.dma_reply_delay_ms));
        }
        if let Some(n) = self.dma_reply_fail_after {
            v.push(format!("dma-reply-fail-after {n}"));
        }
        if self.dma_reply_timeout_ms != 5000 {
            v.push(format!(
                "dma-reply-timeout-ms {}",
                self.dma_reply_timeout_ms
            ));
        }
        if self.max_data_xfer_size != 1 << 20 {
            v.push(format!("max-data-xfer-size {}", self.max_data_xfer_size));
        }
        if let Some(t) = &self.trace {
            v.push(format!("trace {}", t.display()));
        }
        v
    }

    /// The card and server configurations these options describe.
    pub fn configs(&self) -> (ServerConfig, SimConfig) {
        let mut link = LinkModel::default();
        if self.no_link_model {
            link = LinkModel::OFF;
        }
        if let Some(l) = self.link_latency {
            link.read_latency_cycles = l;
        }
        if let Some(b) = self.link_bytes_per_cycle {
            link.bytes_per_cycle = b;
        }
        let sim = SimConfig {
            engine: fdma_hw::EngineConfig::DEFAULT,
            link,
            faults: SimFaults {
                link_down: self.link_down,
                die_after_cycles: self.die_after,
                corrupt_host_writes: self.corrupt_host_writes,
            },
            trace: self.trace.clone(),
        };
        let mut cfg = ServerConfig::new(&self.socket);
        cfg.max_data_xfer_size = self.max_data_xfer_size.max(4096);
        cfg.dma_reply_timeout = Duration::from_millis(self.dma_reply_timeout_ms);
        cfg.dma_faults = DmaFaults {
            reply_delay_ms: self.dma_reply_delay_ms,
            fail_after: self.dma_reply_fail_after,
        };
        (cfg, sim)
    }
}

/// Serve until SIGTERM or SIGINT, then remove the sockets.
///
/// While it serves, the server is announced in the user's runtime
/// directory (`fdma_vfio_user::announce`), so that `fdma list` shows it; a
/// directory that cannot be used costs only a warning. The announcement is
/// written before the control socket appears.
///
/// The signals are blocked on the calling thread and read from a signalfd
/// the server polls, so one can never slip in between a check and a
/// blocking poll. Call it before starting other threads so they inherit the
/// mask.
pub fn run(args: &SimArgs) -> Result<(), ServerError> {
    let (mut cfg, sim) = args.configs();
    cfg.announce = Some(args.summary());
    let mut mask = SigSet::empty();
    mask.add(Signal::SIGTERM);
    mask.add(Signal::SIGINT);
    mask.thread_block()
        .map_err(|e| ServerError::io("sigprocmask", "SIGTERM/SIGINT", e.into()))?;
    let sfd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| ServerError::io("signalfd", "SIGTERM/SIGINT", e.into()))?;
    let mut server = Server::new(cfg, sim)?;
    server.run(Some(std::os::fd::AsFd::as_fd(&sfd)))?;
    server.core().card.flush_trace();
    drop(server);
    log::info!("stopped");
    Ok(())
}
