//! `fdma list`, `fdma bind` and `fdma unbind` without root or a card: on
//! this machine's own PCI bus (which has no fdma card), and on fake sysfs
//! trees given through `FDMA_SYSFS_ROOT`. Real binding is tested in a QEMU
//! guest.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::process::{Command, Output};

fn fdma(root: Option<&Path>, args: &[&str]) -> (Output, String, String) {
    // An empty runtime directory: simulators running elsewhere on this
    // machine stay out of the listings.
    let rt = tempfile::tempdir().unwrap();
    let mut c = Command::new(env!("CARGO_BIN_EXE_fdma"));
    c.args(args)
        .env_remove("FDMA_DEVICE")
        .env_remove("FDMA_SYSFS_ROOT")
        .env("XDG_RUNTIME_DIR", rt.path());
    if let Some(r) = root {
        c.env("FDMA_SYSFS_ROOT", r);
    }
    let o = c.output().expect("run fdma");
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    (o, out, err)
}

/// Add a PCI function to a fake sysfs tree at `root`, shaped like the
/// kernel's (see the driver's `pci` tests for the full fake).
fn add(root: &Path, addr: &str, id: (u16, u16), driver: Option<&str>, group: Option<u32>) {
    let w = |rel: &str, s: &str| {
        let p = root.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, s).unwrap();
    };
    let dir = format!("sys/bus/pci/devices/{addr}");
    w(&format!("{dir}/vendor"), &format!("0x{:04x}\n", id.0));
    w(&format!("{dir}/device"), &format!("0x{:04x}\n", id.1));
    w(&format!("{dir}/class"), "0x118000\n");
    w(&format!("{dir}/driver_override"), "(null)\n");
    w("sys/bus/pci/drivers_probe", "");
    if let Some(d) = driver {
        w(&format!("sys/bus/pci/drivers/{d}/unbind"), "");
        symlink(
            format!("../../drivers/{d}"),
            root.join(format!("{dir}/driver")),
        )
        .unwrap();
    }
    if let Some(g) = group {
        let gdir = format!("sys/kernel/iommu_groups/{g}/devices");
        fs::create_dir_all(root.join(&gdir)).unwrap();
        symlink(
            format!("../../../../bus/pci/devices/{addr}"),
            root.join(format!("{gdir}/{addr}")),
        )
        .unwrap();
        symlink(
            format!("../../../../kernel/iommu_groups/{g}"),
            root.join(format!("{dir}/iommu_group")),
        )
        .unwrap();
        if driver == Some("vfio-pci") {
            w(&format!("dev/vfio/{g}"), "");
        }
    }
}

#[test]
fn bind_and_unbind_reject_malformed_addresses() {
    for args in [
        ["bind", "01:00"],
        ["bind", "0000:01:00.9"],
        ["unbind", "sim:/tmp/x"],
    ] {
        let (o, out, err) = fdma(None, &args);
        assert!(!o.status.success(), "{args:?}: {out}");
        assert!(err.contains("invalid PCI address"), "{args:?}: {err}");
        assert!(err.contains("0000:01:00.0"), "{args:?}: {err}");
    }
}

#[test]
fn list_runs_on_this_machine() {
    // No fdma card here: a clear line, exit 0. (On a lab host with a card,
    // the table.)
    let (o, out, err) = fdma(None, &["list"]);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(
        out.contains("1234:fd3a") || out.contains("ADDRESS"),
        "{out}"
    );
    let (o, _, err) = fdma(None, &["list", "--id", "12345"]);
    assert!(!o.status.success());
    assert!(err.contains("VVVV:DDDD"), "{err}");
}

#[test]
fn list_shows_drivers_groups_and_readiness() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    add(r, "0000:02:00.0", (0x1234, 0xfd3a), None, Some(14));
    add(
        r,
        "0000:01:00.0",
        (0x1234, 0xfd3a),
        Some("vfio-pci"),
        Some(12),
    );
    add(
        r,
        "0000:03:00.0",
        (0x1234, 0xfd3a),
        Some("vfio-pci"),
        Some(13),
    );
    add(r, "0000:03:00.1", (0x8086, 0x10fb), Some("ixgbe"), Some(13));

    let (o, out, err) = fdma(Some(r), &["list"]);
    assert!(o.status.success(), "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].starts_with("ADDRESS") && lines[0].contains("READY"),
        "{out}"
    );
    let cols = |l: &str| l.split_whitespace().take(5).collect::<Vec<_>>().join(" ");
    assert_eq!(cols(lines[1]), "0000:01:00.0 1234:fd3a vfio-pci 12 yes");
    assert!(lines[2].starts_with("0000:02:00.0  1234:fd3a  -"), "{out}");
    assert!(lines[2].contains("fdma bind 0000:02:00.0"), "{out}");
    assert!(lines[3].contains("group shared with 0000:03:00.1"), "{out}");
    assert!(!out.contains("IOMMU is off"), "{out}");

    let (_, out, _) = fdma(Some(r), &["list", "--all"]);
    assert_eq!(out.lines().count(), 5, "{out}");
    let (_, out, _) = fdma(Some(r), &["list", "--id", "8086:10fb"]);
    assert!(out.contains("0000:03:00.1  8086:10fb  ixgbe"), "{out}");
    let (o, out, _) = fdma(Some(r), &["list", "--id", "dead"]);
    assert!(o.status.success());
    assert!(out.contains("no PCI function with ID dead"), "{out}");
}

#[test]
fn list_json_describes_each_function() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    add(
        r,
        "0000:01:00.0",
        (0x1234, 0xfd3a),
        Some("vfio-pci"),
        Some(12),
    );
    add(r, "0000:02:00.0", (0x1234, 0xfd3a), None, Some(14));
    add(r, "0000:03:00.1", (0x8086, 0x10fb), Some("ixgbe"), Some(13));

    let root = r.to_str().unwrap();
    let (o, out, err) = fdma(None, &["--sysfs-root", root, "list", "--json"]);
    assert!(o.status.success(), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("list --json is JSON");
    let a = v.as_array().unwrap();
    assert_eq!(a.len(), 2, "{out}");
    assert_eq!(a[0]["address"], "0000:01:00.0");
    assert_eq!(a[0]["vendor"], "1234");
    assert_eq!(a[0]["device"], "fd3a");
    assert_eq!(a[0]["driver"], "vfio-pci");
    assert_eq!(a[0]["iommu_group"], 12);
    assert_eq!(a[0]["ready"], true);
    assert!(a[0]["reason"].is_null(), "{out}");
    assert_eq!(a[1]["address"], "0000:02:00.0");
    assert!(a[1]["driver"].is_null(), "{out}");
    assert_eq!(a[1]["ready"], false);
    assert!(
        a[1]["reason"]
            .as_str()
            .unwrap()
            .contains("fdma bind 0000:02:00.0"),
        "{out}"
    );

    let (o, out, _) = fdma(None, &["--sysfs-root", root, "list", "--all", "--json"]);
    assert!(o.status.success());
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 3, "{out}");
    assert!(out.contains("\"ixgbe\""), "{out}");

    // An IOMMU-less host: the note goes to stderr, stdout stays JSON.
    let t = tempfile::tempdir().unwrap();
    add(
        t.path(),
        "0000:00:01.0",
        (0x1af4, 0x1041),
        Some("virtio-pci"),
        None,
    );
    let (o, out, err) = fdma(Some(t.path()), &["list", "--json"]);
    assert!(o.status.success());
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&out).unwrap(),
        serde_json::json!([])
    );
    assert!(err.contains("IOMMU is off"), "{err}");
}

#[test]
fn list_says_when_the_iommu_is_off_or_nothing_matches() {
    let t = tempfile::tempdir().unwrap();
    add(
        t.path(),
        "0000:00:01.0",
        (0x1af4, 0x1041),
        Some("virtio-pci"),
        None,
    );
    let (o, out, _) = fdma(Some(t.path()), &["list"]);
    assert!(o.status.success());
    assert!(
        out.contains("IOMMU is off") && out.contains("intel_iommu=on"),
        "{out}"
    );
    assert!(
        out.contains("no PCI function with ID 1234:fd3a (the fdma card)"),
        "{out}"
    );
    assert!(out.contains("fdma list --all"), "{out}");
}

#[test]
fn bind_and_unbind_report_typed_errors_and_no_ops() {
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    add(
        r,
        "0000:01:00.0",
        (0x1234, 0xfd3a),
        Some("fdma_kmod"),
        Some(12),
    );
    let (o, _, err) = fdma(Some(r), &["bind", "01:00.0"]);
    assert!(!o.status.success());
    assert!(err.contains("fdma: error: vfio-pci is not loaded"), "{err}");
    assert!(err.contains("modprobe vfio-pci"), "{err}");

    // Now with vfio-pci loaded (it has a device).
    add(
        r,
        "0000:02:00.0",
        (0x1234, 0xfd3a),
        Some("vfio-pci"),
        Some(14),
    );
    let (o, _, err) = fdma(Some(r), &["bind", "01:00.0"]);
    assert!(!o.status.success());
    // Nothing rebinds in a fake tree: the verify step reports it.
    assert!(err.contains("did not bind to vfio-pci"), "{err}");

    let (o, out, err) = fdma(Some(r), &["bind", "0000:02:00.0"]);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("0000:02:00.0: already bound to vfio-pci"),
        "{out}"
    );

    let (o, _, err) = fdma(
        Some(r),
        &["bind", "0000:02:00.0", "--user", "no-such-user-fdma"],
    );
    assert!(!o.status.success());
    assert!(err.contains("no user \"no-such-user-fdma\""), "{err}");

    let (o, out, err) = fdma(Some(r), &["unbind", "0000:01:00.0"]);
    assert!(o.status.success(), "{err}");
    assert!(
        out.contains("not on vfio-pci, nothing to do; bound to fdma_kmod"),
        "{out}"
    );

    let (o, _, err) = fdma(Some(r), &["unbind", "0000:07:00.0"]);
    assert!(!o.status.success());
    assert!(err.contains("no PCI device 0000:07:00.0"), "{err}");
}

#[test]
fn bind_for_a_user_hands_over_the_group_and_gives_the_limits_line() {
    if !nix::unistd::geteuid().is_root() {
        return; // chown needs root; the refusal is covered in the driver's tests.
    }
    let t = tempfile::tempdir().unwrap();
    let r = t.path();
    add(
        r,
        "0000:02:00.0",
        (0x1234, 0xfd3a),
        Some("vfio-pci"),
        Some(14),
    );
    let (o, out, err) = fdma(
        Some(r),
        &["bind", "0000:02:00.0", "--user", "root", "--memlock", "1G"],
    );
    assert!(o.status.success(), "{err}");
    assert!(out.contains("dev/vfio/14: owner now root (uid 0)"), "{out}");
    assert!(out.contains("root - memlock 1048576"), "{out}");
    assert!(out.contains("ulimit -l"), "{out}");
}
