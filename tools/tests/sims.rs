//! Running simulators as a CI script or an engineer meets them: `fdma list`
//! shows them (and drops stale announcements), a busy one refuses a second
//! command with a message naming who holds it, and `--device sim` gives a
//! command a private one that goes away with it.

mod common;

use common::*;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `fdma list --json` in `runtime`: the simulator entries.
fn listed_sims(runtime: &Path) -> Vec<serde_json::Value> {
    let o = fdma_in(runtime, &["list", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("list --json is JSON");
    v.as_array()
        .expect("an array")
        .iter()
        .filter(|e| e["kind"] == "sim")
        .cloned()
        .collect()
}

/// Write an announcement file as a simulator would.
fn plant(runtime: &Path, file: &str, socket: &Path, pid: u32) {
    let dir = runtime.join("fdma");
    std::fs::create_dir_all(&dir).unwrap();
    let ann = serde_json::json!({
        "format": 1, "socket": socket, "pid": pid, "started": 0,
        "busy": false, "channels": 4, "options": [],
    });
    std::fs::write(dir.join(file), ann.to_string()).unwrap();
}

#[test]
fn list_shows_a_running_simulator_and_ignores_stale_announcements() {
    let rt = tempfile::tempdir().unwrap();
    let mut sim = SimProc::start(rt.path(), &["--dma-reply-delay-ms", "3"]);
    // A simulator killed without cleaning up (its pid is gone), and one
    // whose socket was removed.
    let dead = rt.path().join("dead.sock");
    let _l = std::os::unix::net::UnixListener::bind(&dead).unwrap();
    plant(rt.path(), "4194305-0.json", &dead, (1 << 22) + 1);
    plant(
        rt.path(),
        "1-0.json",
        &rt.path().join("gone.sock"),
        std::process::id(),
    );

    let o = fdma_in(rt.path(), &["list"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let head = out
        .lines()
        .position(|l| l.starts_with("SIMULATOR"))
        .unwrap_or_else(|| panic!("no simulator table:\n{out}"));
    let rows: Vec<&str> = out.lines().skip(head + 1).collect();
    assert_eq!(rows.len(), 1, "{out}");
    let cols: Vec<&str> = rows[0].split("  ").filter(|c| !c.is_empty()).collect();
    assert_eq!(cols[0].trim(), sim.name(), "{out}");
    assert_eq!(cols[1].trim(), sim.child.id().to_string(), "{out}");
    assert_eq!(cols[3].trim(), "free", "{out}");
    assert!(
        rows[0].ends_with("4 channels, dma-reply-delay-ms 3"),
        "{out}"
    );
    assert!(
        !out.contains("dead.sock") && !out.contains("gone.sock"),
        "{out}"
    );
    // The stale files were cleaned up; the live one stays.
    let files: Vec<String> = std::fs::read_dir(rt.path().join("fdma"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files, vec![format!("{}-0.json", sim.child.id())]);

    let sims = listed_sims(rt.path());
    assert_eq!(sims.len(), 1, "{sims:?}");
    let s = &sims[0];
    assert_eq!(s["device"], sim.name());
    assert_eq!(s["socket"], sim.socket.to_str().unwrap());
    assert_eq!(s["pid"], sim.child.id());
    assert_eq!(s["busy"], false);
    assert_eq!(s["ready"], true);
    assert_eq!(s["channels"], 4);
    assert_eq!(s["options"], serde_json::json!(["dma-reply-delay-ms 3"]));
    assert!(s["uptime_s"].is_u64(), "{s}");

    // A clean stop removes the announcement.
    assert!(sim.stop().success());
    assert!(listed_sims(rt.path()).is_empty());
    let o = fdma_in(rt.path(), &["list"]);
    assert!(!text(&o).0.contains("SIMULATOR"));
}

#[test]
fn a_busy_simulator_refuses_a_second_command_naming_the_first() {
    let rt = tempfile::tempdir().unwrap();
    let sim = SimProc::start(rt.path(), &[]);
    let name = sim.name();
    let mut first = Command::new(env!("CARGO_BIN_EXE_fdma"))
        .args(["--device", &name, "dma", "--dir", "h2h", "--size", "4M"])
        .args(["--count", "100000"])
        .env("XDG_RUNTIME_DIR", rt.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the simulator says it serves the first command.
    let t0 = Instant::now();
    loop {
        let sims = listed_sims(rt.path());
        if sims[0]["busy"] == true {
            assert_eq!(sims[0]["client_pid"], first.id(), "{sims:?}");
            assert_eq!(sims[0]["ready"], false);
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "never busy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = fdma_in(rt.path(), &["--device", &name, "info"]);
    let (out, err) = text(&o);
    assert!(!o.status.success(), "succeeded:\n{out}");
    for want in [
        &format!("{name}: in use by another process"),
        &format!(
            "the simulator at {} serves one client at a time",
            sim.socket.display()
        ),
        &format!("process {} (fdma) is connected", first.id()),
    ] {
        assert!(err.contains(want.as_str()), "expected {want:?} in:\n{err}");
    }
    let o = fdma_in(rt.path(), &["list"]);
    let (out, _) = text(&o);
    assert!(
        out.contains(&format!("busy: pid {} (fdma)", first.id())),
        "{out}"
    );

    // When the first command goes, the simulator is free again.
    first.kill().unwrap();
    first.wait().unwrap();
    let t0 = Instant::now();
    while listed_sims(rt.path())[0]["busy"] == true {
        assert!(t0.elapsed() < Duration::from_secs(30), "still busy");
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = fdma_in(rt.path(), &["--device", &name, "reg", "read", "ID"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
}

#[test]
fn device_sim_is_a_private_simulator_for_every_command() {
    let rt = tempfile::tempdir().unwrap();
    for args in [
        vec!["--device", "sim", "info"],
        vec!["--device", "sim", "reg", "read", "ID"],
        vec![
            "--device", "sim", "dma", "--size", "4k", "--count", "1", "--dir", "h2h",
        ],
    ] {
        let o = fdma_in(rt.path(), &args);
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "{args:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            err.contains("device `sim`: using the built-in simulator"),
            "{args:?}: {err}"
        );
    }
    // FDMA_DEVICE=sim too, and selftest takes it the same way.
    let o = Command::new(env!("CARGO_BIN_EXE_fdma"))
        .args(["selftest", "--json"])
        .env("FDMA_DEVICE", "sim")
        .env("XDG_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("device `sim`"), "{err}");
    // Each private simulator announced itself and cleaned up on exit.
    assert!(rt.path().join("fdma").is_dir());
    assert!(listed_sims(rt.path()).is_empty());
    assert_eq!(
        std::fs::read_dir(rt.path().join("fdma")).unwrap().count(),
        0
    );
    // `--rescan` has no PCI function to rescan on a private simulator.
    let o = fdma_in(rt.path(), &["--device", "sim", "selftest", "--rescan"]);
    let (_, err) = text(&o);
    assert!(!o.status.success());
    assert!(err.contains("no PCI function to rescan"), "{err}");
}

/// `fdma info | head -1`: the reader goes away, fdma ends quietly on the
/// broken pipe (no panic), and its private simulator does not outlive it.
#[test]
fn a_closed_pipe_ends_fdma_quietly_and_takes_its_simulator_along() {
    let rt = tempfile::tempdir().unwrap();
    let o = Command::new("sh")
        .args([
            "-c",
            &format!("'{}' info | head -1", env!("CARGO_BIN_EXE_fdma")),
        ])
        .env_remove("FDMA_DEVICE")
        .env("XDG_RUNTIME_DIR", rt.path())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.starts_with("device"), "{out}");
    assert!(!err.contains("panicked"), "{err}");
    let t0 = std::time::Instant::now();
    while !listed_sims(rt.path()).is_empty() {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(10),
            "the private simulator outlived fdma: {:?}",
            listed_sims(rt.path())
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// `fdma sim --link-down` starts (its capability check reads the RTL with
/// the link up), and a command against it says the link is down.
#[test]
fn a_simulator_started_with_the_link_down_serves_and_info_says_so() {
    let sim = SimProc::start_private(&["--link-down"]);
    let err = fails(&["--device", &sim.name(), "info"]);
    assert!(
        err.contains("reads all ones: link down or card dead"),
        "{err}"
    );
}
