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
