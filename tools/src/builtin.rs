//! Which device a command talks to, and the built-in simulator that stands
//! in when none is named.
//!
//! Every command that opens a device resolves `--device` (or
//! `FDMA_DEVICE`) here: `sim:SOCKET` and PCI addresses are passed on to the
//! driver; the keyword `sim`, an empty name or no name at all start a
//! private simulator that lives as long as the command.

#[cfg(feature = "sim")]
use anyhow::Context;
use anyhow::{bail, Result};
use std::process::Child;
use std::time::{Duration, Instant};

/// The keyword that asks for a private simulator (`--device sim`).
pub const PRIVATE_SIM: &str = "sim";

/// Whether `named` (from `--device` or `FDMA_DEVICE`) asks for a private
/// simulator rather than naming a device.
pub fn wants_private(named: Option<&str>) -> bool {
    matches!(named, None | Some("") | Some(PRIVATE_SIM))
}

/// The device of one command: named by the user, or a built-in simulator
/// running in a child process until this value drops.
pub enum DeviceArg {
    /// Named with `--device` or `FDMA_DEVICE`.
    Named(String),
    /// A simulator this process started.
    #[cfg_attr(not(feature = "sim"), allow(dead_code))]
    Builtin {
        name: String,
        child: Child,
        _dir: tempfile::TempDir,
    },
}

impl DeviceArg {
    /// Use `named`, or start the built-in simulator (no name, or `sim`).
    pub fn resolve(named: Option<String>) -> Result<DeviceArg> {
        match named {
            Some(n) if !wants_private(Some(&n)) => Ok(DeviceArg::Named(n)),
            n => start_builtin(n.is_some_and(|n| n == PRIVATE_SIM)),
        }
    }

    /// The device name to open.
    pub fn name(&self) -> &str {
        match self {
            DeviceArg::Named(n) => n,
            DeviceArg::Builtin { name, .. } => name,
        }
    }
}

impl Drop for DeviceArg {
    fn drop(&mut self) {
        if let DeviceArg::Builtin { child, .. } = self {
            // SIGTERM lets the simulator remove its sockets.
            // SAFETY: sending a signal to our own child's pid.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(5) {
                if let Ok(Some(_)) = child.try_wait() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(feature = "sim")]
fn start_builtin(asked: bool) -> Result<DeviceArg> {
    use std::path::Path;
    use std::process::Command;
    let dir = tempfile::Builder::new()
        .prefix("fdma-sim")
        .tempdir()
        .context("temporary directory for the simulator socket")?;
    let sock = dir.path().join("fdma.sock");
    let exe = std::env::current_exe().context("locating the fdma executable")?;
    if asked {
        eprintln!("fdma: device `sim`: using the built-in simulator, private to this command");
    } else {
        eprintln!("fdma: no device named (--device or FDMA_DEVICE): using the built-in simulator");
    }
    let mut cmd = Command::new(exe);
    cmd.arg("sim").arg("--socket").arg(&sock);
    // The private simulator must not outlive this command, however it
    // ends (killed, or SIGPIPE from `fdma info | head`): the kernel sends
    // it SIGTERM, on which it removes its socket and announcement.
    let parent = std::process::id();
    // SAFETY: the closure runs in the forked child before exec and calls
    // only prctl and getppid, which are async-signal-safe.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The parent may have died before the prctl.
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().context("starting the built-in simulator")?;
    let ctl = format!("{}.ctl", sock.display());
    let t0 = Instant::now();
    while !Path::new(&ctl).exists() {
        if let Some(st) = child.try_wait()? {
            bail!("the built-in simulator exited at start ({st})");
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            bail!("the built-in simulator did not start within 60 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Ok(DeviceArg::Builtin {
        name: format!("sim:{}", sock.display()),
        child,
        _dir: dir,
    })
}

#[cfg(not(feature = "sim"))]
fn start_builtin(asked: bool) -> Result<DeviceArg> {
    if asked {
        bail!(
            "--device sim asks for the built-in simulator, which this build does not have \
             (cargo feature `sim`): name a running one with --device sim:SOCKET \
             (see `fdma list`) or a PCI address"
        )
    }
    bail!(
        "no device named: pass --device (sim:SOCKET or a PCI address) or set FDMA_DEVICE; \
         this build has no built-in simulator (cargo feature `sim`)"
    )
}
