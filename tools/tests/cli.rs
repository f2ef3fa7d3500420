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
        (
            vec!["--device", "sim:/nonexistent.sock", "dma"],
            "cannot open sim:/nonexistent.sock",
        ),
        (
            vec!["--device", "0000:zz:00.0", "reg", "read", "ID"],
            "bad device name \"0000:zz:00.0\": expected sim:SOCKET or a PCI address",
        ),
        (
            vec!["--device", "sim:", "selftest"],
            "sim: needs a socket path",
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

#[test]
fn unaligned_copies_round_trip_at_every_offset_combination() {
    for (ho, dof, co) in [("3", "17", "0x1005"), ("4095", "0", "31"), ("0", "1", "0")] {
        let args = [
            "dma",
            "--size",
            "5000",
            "--count",
            "2",
            "--host-offset",
            ho,
            "--dst-offset",
            dof,
            "--card-offset",
            co,
        ];
        let o = fdma(&args);
        let (out, err) = text(&o);
        assert!(
            o.status.success(),
            "{args:?}\nstdout:\n{out}\nstderr:\n{err}"
        );
        assert!(
            out.contains(&format!(
                "offsets: host source +{ho}, host destination +{dof}"
            )),
            "{out}"
        );
        for d in ["h2c", "c2h", "h2h"] {
            assert!(
                out.lines()
                    .any(|l| l.trim_start().starts_with(d) && l.ends_with("ok")),
                "{args:?}: {d} not verified:\n{out}"
            );
        }
    }
    // The alignment within datapath words is shown.
    let out = ok(&[
        "dma",
        "--size",
        "100",
        "--count",
        "1",
        "--host-offset",
        "33",
        "--card-offset",
        "0x47",
    ]);
    assert!(
        out.contains("card 0x47 (bytes 1, 1 and 7 of 32-byte datapath words)"),
        "{out}"
    );
}

#[test]
fn offsets_outside_what_the_engine_distinguishes_are_refused() {
    fails_with(
        &["dma", "--host-offset", "4096"],
        "--host-offset 4096: host offsets are 0 to 4095",
    );
    fails_with(
        &["dma", "--dst-offset", "1M"],
        "--dst-offset 1048576: host offsets are 0 to 4095",
    );
    fails_with(&["dma", "--host-offset=-1"], "\"-1\": not a size");
    fails_with(&["dma", "--dst-offset", "three"], "not a size");
    // A card range that ends past card memory, unaligned.
    fails_with(
        &[
            "dma",
            "--dir",
            "c2h",
            "--size",
            "10",
            "--card-offset",
            "0xffffff7",
        ],
        "beyond the card memory of 256 MiB",
    );
}

/// The exit codes the help documents: 2 for a malformed command line, 1
/// for a command that fails.
#[test]
fn exit_codes_are_documented_and_kept() {
    let (out, _) = text(&fdma(&["--help"]));
    assert!(out.contains("Exit codes:"), "{out}");
    let o = fdma(&["no-such-command"]);
    assert_eq!(o.status.code(), Some(2), "{:?}", text(&o));
    let o = fdma(&["--device", "sim:/nonexistent/fdma.sock", "info"]);
    assert_eq!(o.status.code(), Some(1), "{:?}", text(&o));
}

/// Every subcommand's `--help` ends with examples.
#[test]
fn every_command_has_examples_in_its_help() {
    for c in [
        "info",
        "dma",
        "bench",
        "reg",
        "selftest",
        "list",
        "bind",
        "unbind",
        "sim",
        "completions",
    ] {
        let o = fdma(&[c, "--help"]);
        let (out, err) = text(&o);
        assert!(o.status.success(), "{c}: {err}");
        assert!(out.contains("Examples:"), "{c} --help:\n{out}");
    }
}
