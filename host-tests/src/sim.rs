//! Simulator processes for tests and benchmarks.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// A simulator process of the caller's own, on a socket in a temporary
/// directory; killed (SIGKILL) on drop.
pub struct SimProc {
    child: Option<Child>,
    /// The vfio-user socket.
    pub socket: PathBuf,
    _dir: Option<tempfile::TempDir>,
}

impl SimProc {
    /// Start the simulator binary `bin` (an `fdma-sim` server) with extra
    /// arguments, and wait until its control socket exists.
    pub fn start(bin: &Path, args: &[&str]) -> SimProc {
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("fdma.sock");
        let child = Command::new(bin)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .spawn()
            .expect("starting the simulator");
        let ctl = format!("{}.ctl", socket.display());
        let t0 = Instant::now();
        while !Path::new(&ctl).exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "simulator did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        SimProc {
            child: Some(child),
            socket,
            _dir: Some(dir),
        }
    }

    /// The device name of this simulator.
    pub fn name(&self) -> String {
        format!("sim:{}", self.socket.display())
    }

    /// Send a control command; returns its output lines (panics on `err`).
    pub fn ctl(&self, cmd: &str) -> Vec<String> {
        fdma_sim::server::control::request(&self.socket, cmd)
            .expect("control socket")
            .unwrap_or_else(|e| panic!("{cmd}: {e}"))
    }

    /// Kill the simulator (SIGKILL: no goodbye on the socket).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        self.kill();
    }
}
