//! Rewrites the committed SystemVerilog package from the hardware description.
//!
//! Usage: `cargo run -p fdma-hw --bin fdma-hw-gen [PATH]` (default: the
//! package's place in the workspace).

use std::path::PathBuf;

fn main() {
    let path = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("..")
                .join(fdma_hw::svgen::SV_PACKAGE_PATH)
        });
    let text = fdma_hw::svgen::sv_package();
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("fdma-hw-gen: cannot write {}: {e}", path.display());
        std::process::exit(1);
    }
    println!("wrote {}", path.display());
}
