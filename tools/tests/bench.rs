//! `fdma bench` against a simulator, as a lab engineer or CI runs it: the
//! table has a row per point with plausible figures, `--json` has every
//! field, `--plot` writes an SVG or a PNG, bad input is a one-line error.
//! Every run is tiny (a few jobs of a few KiB) so that the file stays fast.

mod common;

use common::*;

/// `fdma --device SIM bench ARGS`, required to succeed; stdout.
fn bench(sim: &SimProc, args: &[&str]) -> String {
    let name = sim.name();
    let mut all = vec!["--device", name.as_str(), "bench"];
    all.extend_from_slice(args);
    ok(&all)
}

/// `fdma --device SIM bench ARGS`, required to fail; stderr.
fn bench_fails(sim: &SimProc, args: &[&str]) -> String {
    let name = sim.name();
    let mut all = vec!["--device", name.as_str(), "bench"];
    all.extend_from_slice(args);
    fails(&all)
}

/// One table row, parsed.
#[derive(Debug)]
struct Row {
    dir: String,
    size: String,
    channels: u32,
    depth: u32,
    mode: String,
    jobs: u64,
    mb_s: f64,
    jobs_s: f64,
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
    cpu: f64,
    dev_gb_s: f64,
}

/// The rows of the table (lines starting with a direction).
fn table_rows(out: &str) -> Vec<Row> {
    out.lines()
        .filter(|l| ["h2c ", "c2h ", "h2h "].iter().any(|d| l.starts_with(d)))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 14, "{l}");
            let n = |i: usize| -> f64 { f[i].parse().unwrap_or_else(|_| panic!("{l}: {}", f[i])) };
            Row {
                dir: f[0].into(),
                size: f[1].into(),
                channels: f[2].parse().unwrap(),
                depth: f[3].parse().unwrap(),
                mode: f[4].into(),
                jobs: f[5].parse().unwrap(),
                mb_s: n(6),
                jobs_s: n(7),
                p50: n(8),
                p99: n(9),
                p999: n(10),
                max: n(11),
                cpu: n(12),
                dev_gb_s: n(13),
            }
        })
        .collect()
}

fn plausible(r: &Row) {
    assert!(r.mb_s > 0.0 && r.jobs_s > 0.0, "{r:?}");
    assert!(r.p50 > 0.0, "{r:?}");
    assert!(
        r.p50 <= r.p99 && r.p99 <= r.p999 && r.p999 <= r.max,
        "{r:?}"
    );
    assert!(r.cpu > 0.0, "{r:?}");
    assert!(r.dev_gb_s > 0.0, "{r:?}");
}

#[test]
fn the_table_has_a_row_per_point_with_plausible_figures() {
    let sim = SimProc::start_private(&[]);
    let out = bench(
        &sim,
        &[
            "--sizes", "4k,16k", "--depths", "1,4", "--mode", "both", "--jobs", "6",
        ],
    );
    assert!(out.contains("8 points, 6 jobs per channel each"), "{out}");
    assert!(out.contains("first job of each point verified"), "{out}");
    let header = out.lines().find(|l| l.starts_with("dir")).expect(&out);
    for col in ["MB/s", "jobs/s", "p50 us", "p99 us", "p99.9 us", "max us"] {
        assert!(header.contains(col), "{header}");
    }
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 8, "{out}");
    let mut seen = Vec::new();
    for r in &rows {
        plausible(r);
        assert_eq!((r.dir.as_str(), r.channels, r.jobs), ("h2c", 1, 6), "{r:?}");
        seen.push((r.size.clone(), r.depth, r.mode.clone()));
    }
    for size in ["4KiB", "16KiB"] {
        for depth in [1, 4] {
            for mode in ["irq", "poll"] {
                assert!(
                    seen.contains(&(size.to_string(), depth, mode.to_string())),
                    "{size} {depth} {mode} missing:\n{out}"
                );
            }
        }
    }

    // Every direction, two channels at once, and a timed point.
    let out = bench(
        &sim,
        &[
            "--dir",
            "all",
            "--sizes",
            "8k",
            "--channels",
            "1,2",
            "--depths",
            "2",
            "--mode",
            "irq",
            "--jobs",
            "3",
        ],
    );
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 6, "{out}");
    for r in &rows {
        plausible(r);
        assert_eq!(r.jobs, 3 * r.channels as u64, "{r:?}");
    }
    let out = bench(
        &sim,
        &[
            "--sizes",
            "4k",
            "--depths",
            "2",
            "--mode",
            "poll",
            "--duration-ms",
            "150",
        ],
    );
    let rows = table_rows(&out);
    assert_eq!(rows.len(), 1, "{out}");
    plausible(&rows[0]);
    assert!(rows[0].jobs > 2, "{:?}", rows[0]);
}

#[test]
fn json_has_every_field_and_the_svg_plot_its_axes() {
    let sim = SimProc::start_private(&[]);
    let dir = tempfile::tempdir().unwrap();
    let svg = dir.path().join("bench.svg");
    let out = bench(
        &sim,
        &[
            "--sizes",
            "4k,8k",
            "--depths",
            "1,2",
            "--mode",
            "irq",
            "--dir",
            "h2c,c2h",
            "--jobs",
            "4",
            "--json",
            "--plot",
            svg.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&out).expect("stdout is one JSON document");
    let points = v.as_array().expect("an array of points");
    assert_eq!(points.len(), 8, "{out}");
    for p in points {
        for f in ["dir", "mode"] {
            assert!(p[f].is_string(), "{f}: {p}");
        }
        for f in [
            "size_bytes",
            "channels",
            "depth",
            "jobs",
            "bytes",
            "device_cycles",
        ] {
            assert!(p[f].is_u64(), "{f}: {p}");
        }
        for f in [
            "wall_s",
            "mb_per_s",
            "jobs_per_s",
            "lat_p50_us",
            "lat_p99_us",
            "lat_p999_us",
            "lat_max_us",
            "lat_mean_us",
            "cpu_us_per_job",
            "cpu_s",
            "device_clock_hz",
            "device_s",
            "device_gb_per_s",
        ] {
            assert!(p[f].is_f64(), "{f}: {p}");
        }
        assert_eq!(p["verified"], true, "{p}");
        assert_eq!(p["jobs"], 4, "{p}");
        assert_eq!(p["bytes"], 4 * p["size_bytes"].as_u64().unwrap(), "{p}");
        let f = |k: &str| p[k].as_f64().unwrap();
        assert!(f("mb_per_s") > 0.0, "{p}");
        assert!(f("lat_p50_us") <= f("lat_p99_us"), "{p}");
        assert!(f("lat_p99_us") <= f("lat_max_us"), "{p}");
    }
    let svg = std::fs::read_to_string(&svg).expect("the SVG was written");
    assert!(svg.starts_with("<svg"), "{}", &svg[..100.min(svg.len())]);
    for label in [
        "Transfer size",
        "Throughput (MB/s)",
        "Latency (µs)",
        "h2c 1 ch, depth 2, irq",
        "c2h 1 ch, depth 1, irq",
    ] {
        assert!(svg.contains(label), "no {label:?} in the SVG");
    }
}

#[test]
fn png_plot_is_a_png() {
    let dir = tempfile::tempdir().unwrap();
    let png = dir.path().join("bench.png");
    // No device named: the built-in simulator, started for the command.
    let out = ok(&[
        "bench",
        "--sizes",
        "4k,8k",
        "--depths",
        "1",
        "--mode",
        "poll",
        "--jobs",
        "3",
        "--plot",
        png.to_str().unwrap(),
    ]);
    assert_eq!(table_rows(&out).len(), 2, "{out}");
    let bytes = std::fs::read(&png).expect("the PNG was written");
    assert!(
        bytes.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {:?}",
        &bytes[..8.min(bytes.len())]
    );
    assert!(bytes.len() > 5000, "a suspiciously small PNG");
}

/// A one-line error (after the built-in simulator's notice, if any).
fn one_line(err: &str, want: &str) {
    let lines: Vec<_> = err
        .lines()
        .filter(|l| !l.contains("built-in simulator"))
        .collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].starts_with("fdma: error: "), "{err}");
    assert!(lines[0].contains(want), "expected {want:?} in:\n{err}");
}

#[test]
fn bad_input_is_a_one_line_error() {
    // Refused before the device is opened: the device does not exist.
    for (args, want) in [
        (&["--sizes", "0"][..], "size 0"),
        (&["--sizes", "4k,12q"], "unknown unit"),
        (&["--depths", "0"], "a queue depth must be at least 1"),
        (&["--channels", "0"], "a channel count must be at least 1"),
        (&["--mode", "busy"], "--mode \"busy\": unknown mode"),
        (&["--dir", "up"], "unknown direction"),
        (
            &["--plot", "x.pdf"],
            "--plot x.pdf: unknown plot format \"pdf\"",
        ),
        (&["--jobs", "0"], "--jobs 0"),
    ] {
        let mut all = vec!["--device", "sim:/nonexistent/fdma.sock", "bench"];
        all.extend_from_slice(args);
        one_line(&fails(&all), want);
    }
    // Refused against what the card has.
    let sim = SimProc::start_private(&[]);
    one_line(
        &bench_fails(&sim, &["--channels", "1,5"]),
        "--channels 5: the card has 4 channels (0-3)",
    );
    one_line(
        &bench_fails(&sim, &["--sizes", "4k,128M"]),
        "--sizes 128 MiB: beyond the card memory per channel",
    );
}

#[test]
fn help_has_examples_and_the_options() {
    let out = ok(&["bench", "--help"]);
    assert!(out.contains("Examples:"), "{out}");
    for opt in [
        "--sizes",
        "--channels",
        "--depths",
        "--mode",
        "--dir",
        "--duration-ms",
        "--jobs",
        "--warmup",
        "--json",
        "--plot",
    ] {
        assert!(out.contains(opt), "{opt} missing:\n{out}");
    }
}

/// A point whose verified job comes back wrong (a simulator that silently
/// corrupts a host write) ends the run with exit code 1 and the first
/// differing byte.
#[test]
fn a_corrupted_point_fails_the_run() {
    let sim = SimProc::start_private(&["--corrupt-host-writes", "1"]);
    let name = sim.name();
    let o = fdma(&[
        "--device", &name, "bench", "--dir", "c2h", "--sizes", "4k", "--depths", "1", "--mode",
        "irq", "--jobs", "2",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("byte 128"), "{err}");
}
