//! How running simulators are found: each vfio-user server started from the
//! command line announces itself with a small JSON file in a per-user
//! runtime directory, which `fdma list` reads and the driver's client
//! consults to say who holds a busy simulator.
//!
//! It lives in this crate because both the simulator (which writes) and the
//! driver and tools (which read) already depend on it, and neither the
//! driver nor a lab build of the tools may depend on the simulator.
//!
//! # Location
//!
//! * `$XDG_RUNTIME_DIR/fdma/` when `XDG_RUNTIME_DIR` is set to an absolute
//!   path of a directory owned by this user;
//! * else `/tmp/fdma-<uid>/`.
//!
//! The `fdma` directory is created with mode 0700. A directory that is a
//! symbolic link or belongs to another user is refused
//! ([`AnnounceError::NotOwned`]); one of ours with group or other access is
//! tightened to 0700.
//!
//! # Format
//!
//! One file per server, `<pid>-<n>.json` (`n` counts the servers of one
//! process from 0), written to a temporary `.`-prefixed name and renamed,
//! so a reader never sees half a file. The object is [`Announcement`]:
//!
//! ```json
//! {"format":1,"socket":"/tmp/fdma.sock","pid":4242,"started":1733066400,
//!  "proc_start":123456,"busy":true,"client_pid":4300,"channels":4,
//!  "options":["link-down"]}
//! ```
//!
//! The server rewrites it when a client connects or leaves, and removes it
//! when it stops cleanly. A file whose process is gone (or whose pid was
//! reused: `proc_start` differs), or whose socket no longer exists, is
//! *stale*: [`list`] skips it and removes it.

use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

/// The current value of [`Announcement::format`].
pub const FORMAT: u32 = 1;

/// What a running server says about itself.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Announcement {
    /// Format version ([`FORMAT`]); readers skip files of other versions.
    pub format: u32,
    /// The absolute path of the vfio-user socket (the device is
    /// `sim:<socket>`).
    pub socket: PathBuf,
    /// The server's process ID.
    pub pid: u32,
    /// When the server started, in seconds since the Unix epoch.
    pub started: u64,
    /// The server process's start time in clock ticks since boot
    /// (`/proc/<pid>/stat` field 22), to tell a reused pid; `None` when
    /// unknown.
    #[serde(default)]
    pub proc_start: Option<u64>,
    /// Whether a client is connected (the server serves one at a time).
    #[serde(default)]
    pub busy: bool,
    /// The connected client's process ID, when the server could tell
    /// (`SO_PEERCRED`).
    #[serde(default)]
    pub client_pid: Option<u32>,
    /// DMA channels of the simulated engine.
    #[serde(default)]
    pub channels: u32,
    /// Non-default options, one short phrase each (`link-down`,
    /// `die-after 1000`, ...).
    #[serde(default)]
    pub options: Vec<String>,
}

impl Announcement {
    /// An announcement of this process serving `socket` (made absolute),
    /// started now, with no client.
    pub fn for_this_process(socket: &Path, channels: u32, options: Vec<String>) -> Announcement {
        let socket = if socket.is_absolute() {
            socket.to_path_buf()
        } else {
            std::env::current_dir()
                .map(|d| d.join(socket))
                .unwrap_or_else(|_| socket.to_path_buf())
        };
        let pid = std::process::id();
        Announcement {
            format: FORMAT,
            socket,
            pid,
            started: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
            proc_start: proc_start(pid),
            busy: false,
            client_pid: None,
            channels,
            options,
        }
    }

    /// The device name to open it by: `sim:<socket>`.
    pub fn device(&self) -> String {
        format!("sim:{}", self.socket.display())
    }

    /// Seconds since the server started (0 if the clock went back).
    pub fn uptime_secs(&self) -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            .saturating_sub(self.started)
    }

    /// Whether the server is still there: its process lives (and is the
    /// same process) and its socket exists.
    pub fn is_live(&self) -> bool {
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        let alive = match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
            Ok(()) | Err(nix::errno::Errno::EPERM) => true,
            Err(_) => false,
        };
        if !alive {
            return false;
        }
        if let (Some(a), Some(b)) = (self.proc_start, proc_start(self.pid)) {
            if a != b {
                return false;
            }
        }
        use std::os::unix::fs::FileTypeExt;
        std::fs::symlink_metadata(&self.socket).is_ok_and(|m| m.file_type().is_socket())
    }
}

/// What can go wrong finding the runtime directory or writing to it.
#[derive(Debug, thiserror::Error)]
pub enum AnnounceError {
    /// A file operation failed.
    #[error("{op} {path}")]
    Io {
        /// What was done (`"creating"`, `"writing"`, ...).
        op: &'static str,
        /// On what.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is not a directory of this user's (another user's, or
    /// a symbolic link): refused, since anyone could plant files there.
    #[error(
        "{path} is not a directory owned by this user (uid {uid}): refusing to use it for \
         simulator announcements; remove it or set XDG_RUNTIME_DIR"
    )]
    NotOwned {
        /// The directory.
        path: PathBuf,
        /// This user.
        uid: u32,
    },
}

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> AnnounceError + 'a {
    move |source| AnnounceError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// The start time of `pid` in clock ticks since boot, from `/proc`.
fn proc_start(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; the
    // fields after its closing parenthesis start at field 3.
    let rest = &s[s.rfind(')')? + 1..];
    rest.split_whitespace().nth(22 - 3)?.parse().ok()
}

/// The runtime directory this user's simulators announce themselves in
/// (see the module docs), without creating it.
pub fn runtime_dir_path() -> PathBuf {
    let uid = nix::unistd::geteuid().as_raw();
    if let Some(x) = std::env::var_os("XDG_RUNTIME_DIR") {
        let x = PathBuf::from(x);
        let ours = std::fs::metadata(&x).is_ok_and(|m| m.is_dir() && m.uid() == uid);
        if x.is_absolute() && ours {
            return x.join("fdma");
        }
    }
    PathBuf::from(format!("/tmp/fdma-{uid}"))
}

/// Check that `dir` is a real directory of this user's, tightening its mode
/// to 0700 if needed.
fn check_dir(dir: &Path) -> Result<(), AnnounceError> {
    let uid = nix::unistd::geteuid().as_raw();
    let m = std::fs::symlink_metadata(dir).map_err(io("inspecting", dir))?;
    if !m.is_dir() || m.uid() != uid {
        return Err(AnnounceError::NotOwned {
            path: dir.to_path_buf(),
            uid,
        });
    }
    if m.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(io("restricting to 0700", dir))?;
    }
    Ok(())
}

/// The runtime directory, created (mode 0700) if missing and checked.
pub fn runtime_dir() -> Result<PathBuf, AnnounceError> {
    let dir = runtime_dir_path();
    let mut b = std::fs::DirBuilder::new();
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    match b.create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("creating", &dir)(e)),
    }
    check_dir(&dir)?;
    Ok(dir)
}

/// A server's announcement file, removed on drop.
#[derive(Debug)]
pub struct Announcer {
    path: PathBuf,
    ann: Announcement,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl Announcer {
    /// Write `ann` into the runtime directory.
    pub fn create(ann: Announcement) -> Result<Announcer, AnnounceError> {
        let dir = runtime_dir()?;
        Announcer::create_in(&dir, ann)
    }

    /// Write `ann` into `dir` (which must exist).
    pub fn create_in(dir: &Path, ann: Announcement) -> Result<Announcer, AnnounceError> {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let a = Announcer {
            path: dir.join(format!("{}-{n}.json", ann.pid)),
            ann,
        };
        a.write()?;
        Ok(a)
    }

    /// The file written.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What is announced.
    pub fn announcement(&self) -> &Announcement {
        &self.ann
    }

    /// Record that a client connected (`Some(pid)` when known, `Some(None)`
    /// when not) or left (`None`), and rewrite the file.
    pub fn set_client(&mut self, client: Option<Option<u32>>) -> Result<(), AnnounceError> {
        self.ann.busy = client.is_some();
        self.ann.client_pid = client.flatten();
        self.write()
    }

    fn write(&self) -> Result<(), AnnounceError> {
        let name = self.path.file_name().unwrap_or_default().to_string_lossy();
        let tmp = self.path.with_file_name(format!(".{name}.tmp"));
        let text = serde_json::to_string(&self.ann).expect("an announcement serializes");
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io("creating", &tmp))?;
        f.write_all(text.as_bytes())
            .and_then(|()| f.write_all(b"\n"))
            .map_err(io("writing", &tmp))?;
        std::fs::rename(&tmp, &self.path).map_err(io("renaming into place", &self.path))
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The live servers announced in the runtime directory, oldest first.
/// Stale files are removed; unreadable ones skipped. No directory means
/// no servers.
pub fn list() -> Result<Vec<Announcement>, AnnounceError> {
    let dir = runtime_dir_path();
    match std::fs::symlink_metadata(&dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io("inspecting", &dir)(e)),
        Ok(_) => check_dir(&dir)?,
    }
    list_in(&dir)
}

/// [`list`] for the directory `dir`.
pub fn list_in(dir: &Path) -> Result<Vec<Announcement>, AnnounceError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(io("reading", dir))? {
        let Ok(e) = e else { continue };
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        let path = e.path();
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ann: Announcement = match serde_json::from_str(&text) {
            Ok(a) => a,
            Err(err) => {
                log::debug!("skipping {}: {err}", path.display());
                continue;
            }
        };
        if ann.format != FORMAT {
            continue;
        }
        if ann.is_live() {
            out.push(ann);
        } else {
            log::debug!("removing the stale announcement {}", path.display());
            let _ = std::fs::remove_file(&path);
        }
    }
    out.sort_by(|a, b| (a.started, &a.socket).cmp(&(b.started, &b.socket)));
    Ok(out)
}

/// The live announcement of the server on `socket`, if any.
pub fn find(socket: &Path) -> Option<Announcement> {
    let want = std::fs::canonicalize(socket).unwrap_or_else(|_| socket.to_path_buf());
    list()
        .ok()?
        .into_iter()
        .find(|a| a.socket == socket || std::fs::canonicalize(&a.socket).is_ok_and(|p| p == want))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn written_listed_updated_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        let ann = Announcement::for_this_process(&sock, 4, vec!["link-down".into()]);
        let mut a = Announcer::create_in(d.path(), ann.clone()).unwrap();
        assert_eq!(list_in(d.path()).unwrap(), vec![ann.clone()]);
        a.set_client(Some(Some(77))).unwrap();
        let got = list_in(d.path()).unwrap();
        assert!(got[0].busy);
        assert_eq!(got[0].client_pid, Some(77));
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        assert!(list_in(d.path()).unwrap().is_empty());
    }

    #[test]
    fn stale_files_are_skipped_and_removed() {
        let d = tempfile::tempdir().unwrap();
        let sock = d.path().join("s.sock");
        let _l = UnixListener::bind(&sock).unwrap();
        // A dead pid (pid_max is at most 2^22).
        let dead = Announcement {
            pid: (1 << 22) + 1,
            ..Announcement::for_this_process(&sock, 4, vec![])
        };
        // A live process without its socket.
        let gone = Announcement::for_this_process(&d.path().join("gone.sock"), 4, vec![]);
        let write = |name: &str, a: &Announcement| {
            let p = d.path().join(name);
            std::fs::write(&p, serde_json::to_string(a).unwrap()).unwrap();
            p
        };
        let p1 = write("1-0.json", &dead);
        let p2 = write("2-0.json", &gone);
        std::fs::write(d.path().join("3-0.json"), "not json").unwrap();
        assert!(list_in(d.path()).unwrap().is_empty());
        assert!(!p1.exists() && !p2.exists());
    }

    #[test]
    fn a_foreign_or_linked_directory_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let link = d.path().join("link");
        std::os::unix::fs::symlink(d.path(), &link).unwrap();
        assert!(matches!(
            check_dir(&link),
            Err(AnnounceError::NotOwned { .. })
        ));
        let own = d.path().join("own");
        std::fs::create_dir(&own).unwrap();
        std::fs::set_permissions(&own, std::fs::Permissions::from_mode(0o755)).unwrap();
        check_dir(&own).unwrap();
        assert_eq!(std::fs::metadata(&own).unwrap().mode() & 0o777, 0o700);
    }
}
