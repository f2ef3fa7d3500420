//! The `fdma` command as a lab engineer or a CI script runs it: exit codes,
//! what it prints, and its errors.

use std::process::{Command, Output};

fn fdma(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fdma"))
        .args(args)
        .env_remove("FDMA_DEVICE")
        .output()
        .expect("run fdma")
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

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
