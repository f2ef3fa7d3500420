//! Running the `fdma` binary as a user does, shared by the CLI tests.
#![allow(dead_code)]

use std::process::{Command, Output};

/// Run `fdma ARGS` with no device named (a private simulator).
pub fn fdma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdma"))
        .args(args)
        .env_remove("FDMA_DEVICE")
        .output()
        .expect("run fdma")
}

/// Standard output and standard error as text.
pub fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// Run and require success; the standard output.
pub fn ok(args: &[&str]) -> String {
    let o = fdma(args);
    let (out, err) = text(&o);
    assert!(
        o.status.success(),
        "{args:?} failed\nstdout:\n{out}\nstderr:\n{err}"
    );
    out
}

/// Run and require failure; the standard error.
pub fn fails(args: &[&str]) -> String {
    let o = fdma(args);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "{args:?} succeeded:\n{out}\n{err}");
    err
}

/// Run, require failure, and require `want` in the standard error.
pub fn fails_with(args: &[&str], want: &str) {
    let err = fails(args);
    assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
}

/// Run `fdma ARGS` with no device named and `XDG_RUNTIME_DIR` set to
/// `runtime`, so that simulator announcements stay in the test's own
/// directory.
pub fn fdma_in(runtime: &std::path::Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdma"))
        .args(args)
        .env_remove("FDMA_DEVICE")
        .env("XDG_RUNTIME_DIR", runtime)
        .output()
        .expect("run fdma")
}

/// An `fdma sim` process announcing itself in a runtime directory of the
/// test's; stopped with SIGTERM (a clean exit) on drop.
pub struct SimProc {
    /// The process.
    pub child: std::process::Child,
    /// Its vfio-user socket.
    pub socket: std::path::PathBuf,
    _dir: tempfile::TempDir,
    /// The runtime directory, when the simulator has one of its own.
    _runtime: Option<tempfile::TempDir>,
}

impl SimProc {
    /// Start `fdma sim --socket <tmp>/fdma.sock ARGS` and wait until it
    /// serves and has announced itself in `runtime`.
    pub fn start(runtime: &std::path::Path, args: &[&str]) -> SimProc {
        use std::time::{Duration, Instant};
        let dir = tempfile::tempdir().expect("tempdir");
        let socket = dir.path().join("fdma.sock");
        let mut child = Command::new(env!("CARGO_BIN_EXE_fdma"))
            .arg("sim")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env("XDG_RUNTIME_DIR", runtime)
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("starting fdma sim");
        // Ready means serving and announced. The simulator announces
        // itself before it binds the control socket; waiting for both
        // states what the tests rely on rather than that order.
        let ctl = format!("{}.ctl", socket.display());
        let ann = runtime.join("fdma").join(format!("{}-0.json", child.id()));
        let t0 = Instant::now();
        while !std::path::Path::new(&ctl).exists() || !ann.exists() {
            if let Some(st) = child.try_wait().unwrap() {
                panic!("fdma sim exited at start: {st}");
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "simulator did not start"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        SimProc {
            child,
            socket,
            _dir: dir,
            _runtime: None,
        }
    }

    /// [`SimProc::start`] with a runtime directory of its own (a test that
    /// does not look at announcements).
    pub fn start_private(args: &[&str]) -> SimProc {
        let rt = tempfile::tempdir().expect("tempdir");
        let mut s = SimProc::start(rt.path(), args);
        s._runtime = Some(rt);
        s
    }

    /// The device name, `sim:<socket>`.
    pub fn name(&self) -> String {
        format!("sim:{}", self.socket.display())
    }

    /// Stop with SIGTERM and wait; the exit status.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        // SAFETY: signalling our own child process by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        self.child.wait().expect("wait for fdma sim")
    }
}

impl Drop for SimProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.stop();
        }
    }
}
