//! The `fdma` command as a lab engineer or a CI script runs it: exit codes,
//! what it prints, and its errors.

mod common;

use common::*;

#[test]
fn dma_with_the_builtin_simulator_verifies_every_direction() {
    let o = fdma(&[
        "dma",
        "--size",
        "100k",
        "--count",
        "2",
        "--host-offset",
        "3",
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("built-in simulator"), "{err}");
    for d in ["h2c", "c2h", "h2h"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(d) && l.ends_with("ok")),
            "{d} not verified:\n{out}"
        );
    }
}

#[test]
fn info_inspects_without_resetting() {
    let o = fdma(&["info", "--regs"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("fdma 1.0"), "{out}");
    assert!(out.contains("4 channels"), "{out}");
    assert!(out.contains("CH3.BYTES_HI"), "{out}");
    assert!(out.contains("fault log     empty"), "{out}");
}

#[test]
fn bad_arguments_are_clear_errors_with_a_failing_exit() {
    for (args, want) in [
        (
            vec!["--device", "nonsense", "info"],
            "expected sim:SOCKET or a PCI address",
        ),
        (
            vec!["--device", "sim:/nonexistent/x.sock", "info"],
            "/nonexistent/x.sock",
        ),
        (
            vec!["--device", "0000:7f:1f.7", "info"],
            "no PCI device 0000:7f:1f.7",
        ),
        (vec!["dma", "--size", "12q"], "unknown unit"),
        (
            vec!["dma", "--dir", "sideways", "--device", "sim:/nonexistent"],
            "unknown direction",
        ),
    ] {
        let o = fdma(&args);
        let (out, err) = text(&o);
        assert!(!o.status.success(), "{args:?} succeeded:\n{out}");
        assert!(err.contains(want), "{args:?}: expected {want:?} in:\n{err}");
    }
}

#[test]
fn info_json_has_the_identity_and_every_channel() {
    let o = fdma(&["info", "--json"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("info --json is JSON");
    let id = &v["identity"];
    assert_eq!(id["id"], fdma_hw::id_value());
    assert_eq!(id["magic"], fdma_hw::ID_MAGIC);
    assert_eq!(id["version_major"], fdma_hw::VERSION_MAJOR);
    assert_eq!(id["version_minor"], fdma_hw::VERSION_MINOR);
    assert_eq!(id["vendor_id"], fdma_hw::pci::VENDOR_ID);
    assert_eq!(id["device_id"], fdma_hw::pci::DEVICE_ID);
    let channels = v["capabilities"]["channels"].as_u64().unwrap();
    let chs = v["channels"].as_array().unwrap();
    assert_eq!(chs.len() as u64, channels, "{out}");
    for (i, ch) in chs.iter().enumerate() {
        assert_eq!(ch["channel"], i, "{out}");
        assert!(ch["state"].is_string(), "{out}");
        assert!(ch["healthy"].is_boolean(), "{out}");
    }
    assert!(v["status"]["enabled"].is_boolean(), "{out}");
    assert_eq!(v["fault_log"], serde_json::json!([]), "{out}");
    assert!(v.get("registers").is_none(), "{out}");
}

#[test]
fn completions_print_a_script_naming_the_subcommands() {
    let o = fdma(&["completions", "bash"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stderr:\n{err}");
    assert!(out.contains("_fdma"), "{out}");
    for sub in [
        "info",
        "dma",
        "reg",
        "selftest",
        "list",
        "bind",
        "unbind",
        "completions",
    ] {
        assert!(out.contains(sub), "{sub} missing:\n{out}");
    }
    for shell in ["zsh", "fish", "elvish", "powershell"] {
        let o = fdma(&["completions", shell]);
        assert!(o.status.success() && !o.stdout.is_empty(), "{shell}");
    }
    let o = fdma(&["completions", "tcsh"]);
    assert!(!o.status.success());
}
