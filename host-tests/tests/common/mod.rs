//! The test rig: a device for each test, its simulator when there is one,
//! and the helpers every test file shares.
#![allow(dead_code)]

pub mod cache_rig;

use fdma::{Device, OpenOptions, WatchdogConfig};
use std::path::Path;
use std::time::Duration;

/// No waiter in these tests waits beyond this (a liveness bound, F3).
pub const LIVENESS: Duration = Duration::from_secs(30);

pub use fdma_host_tests::sim::SimProc;

/// Start a simulator of the test's own (this package's `fdma-host-sim`)
/// with extra `fdma-sim` arguments.
pub fn start_sim(args: &[&str]) -> SimProc {
    SimProc::start(Path::new(env!("CARGO_BIN_EXE_fdma-host-sim")), args)
}

/// What `FDMA_DEVICE` asks for.
fn named_device() -> Option<String> {
    std::env::var(fdma::DEVICE_ENV)
        .ok()
        .filter(|s| !s.is_empty())
}

/// Options tests open with: a watchdog that catches a stalled channel after
/// two million device cycles (8 ms on a board, about 2 s of simulation) and
/// looks every 20 ms: long enough that a test holding a channel stalled for
/// a few register accesses on a loaded machine is not declared hung.
pub fn test_opts() -> OpenOptions {
    OpenOptions {
        watchdog: WatchdogConfig {
            stall_cycles: 2_000_000,
            tick: Duration::from_millis(20),
            backstop: Duration::from_secs(8),
        },
        ..Default::default()
    }
}

/// A device under test and the simulator behind it, if any.
pub struct Rig {
    pub dev: Device,
    pub sim: Option<SimProc>,
}

pub fn init_log() {
    let _ = env_logger::builder().is_test(true).try_init();
}

/// The device under test: the card `FDMA_DEVICE` names (failing loudly if
/// it cannot be opened), else a fresh simulator.
pub fn rig() -> Rig {
    rig_with(&[], test_opts())
}

/// As [`rig`], with simulator arguments and open options.
pub fn rig_with(sim_args: &[&str], opts: OpenOptions) -> Rig {
    init_log();
    if let Some(name) = named_device() {
        let dev = Device::open_with(&name, &opts).unwrap_or_else(|e| {
            panic!("FDMA_DEVICE={name} names a device that cannot be opened: {e}")
        });
        return Rig { dev, sim: None };
    }
    let sim = start_sim(sim_args);
    let dev = Device::open_with(&sim.name(), &opts).expect("open the simulator");
    Rig {
        dev,
        sim: Some(sim),
    }
}

/// A rig on a simulator of the test's own, for faults only a simulator can
/// make; `None` (and a loud note) when the suite runs against a card.
pub fn sim_rig(what: &str, sim_args: &[&str], opts: OpenOptions) -> Option<Rig> {
    if let Some(name) = named_device() {
        eprintln!("SKIPPED on {name}: {what} needs the simulator");
        return None;
    }
    init_log();
    let sim = start_sim(sim_args);
    let dev = Device::open_with(&sim.name(), &opts).expect("open the simulator");
    Some(Rig {
        dev,
        sim: Some(sim),
    })
}

#[allow(unused_imports)]
pub use fdma_host_tests::pattern;

/// Assert equal bytes, reporting the first difference rather than dumping.
#[track_caller]
pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!(
            "{what}: first difference at byte {i} of {}: got {:#04x}, want {:#04x}",
            want.len(),
            got[i],
            want[i]
        );
    }
}

/// Wait for a fence within the liveness bound; panics on timeout.
#[track_caller]
pub fn wait(f: &fdma::Fence) -> fdma::Status {
    match f.wait_timeout(LIVENESS) {
        fdma::Wait::Signalled(s) => s,
        fdma::Wait::TimedOut => panic!(
            "fence {}:{} did not signal within {LIVENESS:?}",
            f.channel(),
            f.seqno()
        ),
    }
}
