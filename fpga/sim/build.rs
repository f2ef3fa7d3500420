//! Builds the card's RTL into a C++ model with Verilator and links it.
//!
//! * Verilator runs into OUT_DIR on `fpga/rtl/generated/fdma_hw_pkg.sv` and
//!   every `fpga/rtl/*.sv`, with FST tracing compiled in (enabled at run time
//!   only when asked).
//! * The generated C++ is compiled at -O2 even in debug builds: an
//!   unoptimised model is about 8x slower and the tests clock millions of
//!   cycles. No `--threads`: for a design this size Verilator's threading is
//!   far slower than one thread.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    // FDMA_RTL_DIR builds another copy of the RTL (e.g. a bisect checkout).
    println!("cargo:rerun-if-env-changed=FDMA_RTL_DIR");
    let rtl =
        std::env::var_os("FDMA_RTL_DIR").map_or_else(|| manifest.join("../rtl"), PathBuf::from);
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let mdir = out.join("vobj");

    let pkg = manifest.join("../rtl/generated/fdma_hw_pkg.sv");
    let mut sources = vec![pkg.clone()];
    let mut rtl_files: Vec<PathBuf> = std::fs::read_dir(&rtl)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", rtl.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sv"))
        .collect();
    rtl_files.sort();
    sources.extend(rtl_files);
    println!("cargo:rerun-if-changed={}", rtl.display());
    for s in &sources {
        println!("cargo:rerun-if-changed={}", s.display());
    }
    println!("cargo:rerun-if-changed=csrc");
    println!("cargo:rerun-if-env-changed=VERILATOR");

    let verilator = std::env::var("VERILATOR").unwrap_or_else(|_| "verilator".into());
    let root = verilator_root(&verilator);
    let _ = std::fs::remove_dir_all(&mdir);
    let status = Command::new(&verilator)
        .args(["--cc", "-O3", "--x-assign", "fast", "--x-initial", "fast", "--noassert"])
        .args(["--trace-fst", "--trace-structs", "--top-module", "fdma_top", "--prefix", "Vfdma_top"])
        // Lint is its own CI stage (`verilator --lint-only -Wall`); here only errors stop the build.
        .arg("-Wno-fatal")
        .arg("--Mdir")
        .arg(&mdir)
        .arg(format!("-I{}", pkg.parent().unwrap().display()))
        .args(&sources)
        .status()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run Verilator ({verilator}): {e}.\n\
                 The simulated card needs Verilator: `apt-get install --no-install-recommends verilator`.\n\
                 A lab host that only drives a real card can build without the simulator \
                 (the driver's `sim` feature off)."
            )
        });
    assert!(
        status.success(),
        "Verilator failed on the RTL (see its messages above)"
    );

    let include = root.join("include");
    let mut cpp = cc::Build::new();
    cpp.cpp(true)
        .std("c++17")
        .opt_level(2)
        .debug(false)
        .warnings(false)
        .flag_if_supported("-w")
        .flag_if_supported("-fno-strict-aliasing")
        .define("VM_TRACE", "1")
        .define("VM_TRACE_FST", "1")
        .define("VM_COVERAGE", "0")
        .define("VM_SC", "0")
        .include(&mdir)
        .include(&include)
        .include(include.join("vltstd"));
    let mut generated: Vec<PathBuf> = std::fs::read_dir(&mdir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "cpp"))
        .collect();
    generated.sort();
    cpp.files(&generated);
    for f in [
        "verilated.cpp",
        "verilated_threads.cpp",
        "verilated_fst_c.cpp",
    ] {
        cpp.file(include.join(f));
    }
    cpp.file(manifest.join("csrc/model.cpp"));
    cpp.compile("fdma_model");

    // verilated_fst_c.cpp compiles GTKWave's FST writer itself.
    println!("cargo:rustc-link-lib=z");
    println!("cargo:rustc-link-lib=pthread");
    println!("cargo:rustc-link-lib=stdc++");
}

fn verilator_root(verilator: &str) -> PathBuf {
    if let Ok(r) = std::env::var("VERILATOR_ROOT") {
        return PathBuf::from(r);
    }
    let out = Command::new(verilator)
        .arg("--getenv")
        .arg("VERILATOR_ROOT")
        .output();
    match out {
        Ok(o) if o.status.success() => {
            let s = String::from_utf8_lossy(&o.stdout).trim().to_string();
            if Path::new(&s).join("include/verilated.h").exists() {
                return PathBuf::from(s);
            }
            PathBuf::from("/usr/share/verilator")
        }
        _ => PathBuf::from("/usr/share/verilator"),
    }
}
