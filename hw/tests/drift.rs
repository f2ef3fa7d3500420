//! The committed SystemVerilog package must be exactly what hw/ renders.
//! Fix a failure with `cargo run -p fdma-hw --bin fdma-hw-gen` and commit the result.

#[test]
fn committed_sv_package_matches_description() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(fdma_hw::svgen::SV_PACKAGE_PATH);
    let committed = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let rendered = fdma_hw::svgen::sv_package();
    if committed != rendered {
        let first = committed
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || "length differs".to_string(),
                |i| format!("first difference at line {}", i + 1),
            );
        panic!(
            "{} has drifted from hw/ ({first}); run `cargo run -p fdma-hw --bin fdma-hw-gen` and commit it",
            path.display()
        );
    }
}
