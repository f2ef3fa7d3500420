//! `fdma bench`: throughput, latency and CPU cost of DMA through the
//! driver, swept over directions, transfer sizes, channel counts, queue
//! depths and completion modes.
//!
//! Every combination is a *point*. A point allocates its buffers, checks
//! the data of one job per channel (unless `--no-verify`), runs
//! `--warmup` unmeasured jobs per channel, then measures for
//! `--duration-ms` (or `--jobs` jobs per channel). How each figure is
//! taken is described in [`point`]. The results are a table on standard
//! output (a row as each point completes), or one JSON document with
//! `--json`, and optionally a plot (`--plot FILE.svg|FILE.png`, see
//! [`plot`]).

mod plot;
mod point;

use anyhow::{bail, Context, Result};
use fdma::{Device, OpenOptions};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Duration;

use crate::dma::Dir;
use point::{Mode, Point, Settings, Spec, Stop};

/// `Examples:` of `fdma bench --help`.
pub const BENCH_HELP: &str = "\
Examples:
  fdma bench                                   # a quick sweep on the built-in simulator
  fdma bench --sizes 4k,64k,1M --depths 1,8,32 --mode both --dir h2c,c2h
  fdma bench --channels 1,2,4 --sizes 1M --depths 16 --mode irq --duration-ms 2000
  fdma -d 0000:01:00.0 bench --sizes 4k,16k,64k,256k,1M,4M --plot bench.png
  fdma bench --jobs 100 --json | jq '.[] | {size_bytes, mb_per_s, lat_p99_us}'

Columns: MB/s and jobs/s in wall-clock time (MB = 10^6 bytes); latency
percentiles of each job from submit to the signal of its fence (us); CPU
time of the whole fdma process per job (us, user + system, getrusage
RUSAGE_SELF: the benchmark threads and the driver's threads, not the
simulator); device GB/s in device time (the card's cycle counter). A data
mismatch in the verified first job of a point is an error (exit code 1).";

/// Options of `fdma bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Bytes per job, comma-separated (suffixes k, M, G: binary).
    #[arg(long, value_name = "SIZES", default_value = "4k,64k,256k")]
    sizes: String,
    /// Numbers of channels driven at once, comma-separated: N drives
    /// channels 0 to N-1, a thread each.
    #[arg(long, value_name = "COUNTS", default_value = "1")]
    channels: String,
    /// Queue depths, comma-separated: jobs kept in flight per channel.
    #[arg(long, value_name = "DEPTHS", default_value = "1,8")]
    depths: String,
    /// Completion modes, comma-separated: irq (interrupts; the driver's
    /// reactor signals, the benchmark thread sleeps), poll (no interrupts;
    /// the benchmark thread polls the channel), or both.
    #[arg(long, value_name = "MODES", default_value = "both")]
    mode: String,
    /// Directions, comma-separated: h2c (host to card), c2h (card to host),
    /// h2h (host to host), or all.
    #[arg(long, value_name = "DIRS", default_value = "h2c")]
    dir: String,
    /// Measured wall time of each point, in milliseconds.
    #[arg(
        long,
        value_name = "MS",
        default_value_t = 200,
        conflicts_with = "jobs"
    )]
    duration_ms: u64,
    /// Measured jobs per channel at each point, instead of a duration.
    #[arg(long, value_name = "N")]
    jobs: Option<u64>,
    /// Unmeasured jobs per channel before each point's measured run.
    #[arg(long, value_name = "N", default_value_t = 2)]
    warmup: u64,
    /// Do not check the data of the first job of each point.
    #[arg(long)]
    no_verify: bool,
    /// Time limit of every wait for one job, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    timeout_ms: u64,
    /// Print one JSON document (an array of points) instead of the table.
    #[arg(long)]
    json: bool,
    /// Also draw throughput and latency against transfer size into FILE
    /// (.svg or .png).
    #[arg(long, value_name = "FILE")]
    plot: Option<PathBuf>,
    /// Seed of the verified data pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// The validated options.
struct Plan {
    dirs: Vec<Dir>,
    sizes: Vec<u64>,
    channels: Vec<usize>,
    depths: Vec<usize>,
    modes: Vec<Mode>,
    stop: Stop,
    warmup: u64,
    verify: bool,
    timeout: Duration,
    json: bool,
    plot: Option<(PathBuf, plot::Format)>,
    seed: u64,
}

/// Most jobs in flight per channel.
const MAX_DEPTH: usize = 4096;
/// Most host memory the buffers of one point may take.
const MAX_HOST_BYTES: u64 = 1 << 30;

/// Split a comma-separated option and parse each item.
fn list<T>(opt: &str, s: &str, parse: impl Fn(&str) -> Result<T, String>) -> Result<Vec<T>> {
    let mut v = Vec::new();
    for item in s.split(',') {
        let item = item.trim();
        if item.is_empty() {
            bail!("--{opt} {s:?}: an empty item (use a comma-separated list, e.g. 1,2)");
        }
        v.push(parse(item).map_err(|e| anyhow::anyhow!("--{opt} {item:?}: {e}"))?);
    }
    Ok(v)
}

/// A count of at least 1 and at most `max`.
fn count(what: &'static str, max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |s| match s.parse::<usize>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) if n > max => Err(format!("{what} must be at most {max}")),
        Ok(n) => Ok(n),
        Err(_) => Err("not a number".into()),
    }
}

/// Check the options that need no device.
fn plan(a: &BenchArgs) -> Result<Plan> {
    let sizes = list("sizes", &a.sizes, |s| match crate::size::parse(s)? {
        0 => Err("size 0: a job must move at least 1 byte".into()),
        n => Ok(n),
    })?;
    let channels = list("channels", &a.channels, count("a channel count", 64))?;
    let depths = list("depths", &a.depths, count("a queue depth", MAX_DEPTH))?;
    let mut modes = Vec::new();
    for m in list("mode", &a.mode, |s| match s {
        "irq" | "interrupt" => Ok(vec![Mode::Irq]),
        "poll" => Ok(vec![Mode::Poll]),
        "both" => Ok(vec![Mode::Irq, Mode::Poll]),
        _ => Err("unknown mode: use irq, poll or both".into()),
    })? {
        modes.extend(m);
    }
    let mut dirs = Vec::new();
    for d in list("dir", &a.dir, |s| match s {
        "h2c" => Ok(vec![Dir::H2c]),
        "c2h" => Ok(vec![Dir::C2h]),
        "h2h" => Ok(vec![Dir::H2h]),
        "all" => Ok(vec![Dir::H2c, Dir::C2h, Dir::H2h]),
        _ => Err("unknown direction: use h2c, c2h, h2h or all".into()),
    })? {
        dirs.extend(d);
    }
    let stop = match a.jobs {
        Some(0) => bail!("--jobs 0: at least one job per channel is needed"),
        Some(n) => Stop::Jobs(n),
        None if a.duration_ms == 0 => bail!("--duration-ms 0: a point needs some time"),
        None => Stop::Time(Duration::from_millis(a.duration_ms)),
    };
    if a.timeout_ms == 0 {
        bail!("--timeout-ms 0: a job needs some time");
    }
    let plot = match &a.plot {
        Some(p) => Some((p.clone(), plot::Format::of(p)?)),
        None => None,
    };
    Ok(Plan {
        dirs: dedup(dirs),
        sizes: dedup(sizes),
        channels: dedup(channels),
        depths: dedup(depths),
        modes: dedup(modes),
        stop,
        warmup: a.warmup,
        verify: !a.no_verify,
        timeout: Duration::from_millis(a.timeout_ms),
        json: a.json,
        plot,
        seed: a.seed,
    })
}

/// `v` without repeats, in first-seen order.
fn dedup<T: PartialEq>(v: Vec<T>) -> Vec<T> {
    let mut out: Vec<T> = Vec::with_capacity(v.len());
    for x in v {
        if !out.contains(&x) {
            out.push(x);
        }
    }
    out
}

/// `fdma bench`: check the options, then resolve the device (starting the
/// built-in simulator if none is named) and run the sweep.
pub fn main(device: Option<String>, a: &BenchArgs) -> Result<()> {
    let plan = plan(a)?;
    let dev = crate::builtin::DeviceArg::resolve(device)?;
    run(dev.name(), &plan)
}

/// Check the options against the opened card.
fn check_card(dev: &Device, p: &Plan) -> Result<u64> {
    let n = dev.channels();
    if let Some(&c) = p.channels.iter().find(|&&c| c > n) {
        bail!(
            "--channels {c}: the card has {n} channel{} (0-{})",
            if n == 1 { "" } else { "s" },
            n - 1
        );
    }
    let card = dev.config().card_mem_bytes();
    let window = card / n as u64;
    if p.dirs.iter().any(|&d| d != Dir::H2h) {
        if let Some(&s) = p.sizes.iter().find(|&&s| s > window) {
            bail!(
                "--sizes {}: beyond the card memory per channel ({} of card memory / {n} \
                 channels = {})",
                crate::size::show(s),
                crate::size::show(card),
                crate::size::show(window)
            );
        }
    }
    let max = |v: &[usize]| v.iter().copied().max().unwrap_or(1) as u64;
    let host = p
        .sizes
        .iter()
        .max()
        .copied()
        .unwrap_or(0)
        .next_multiple_of(4096)
        * 2
        * max(&p.depths)
        * max(&p.channels);
    if host > MAX_HOST_BYTES {
        bail!(
            "the largest point needs {} of host buffers (size x 2 x depth x channels), more \
             than {}: use smaller --sizes, --depths or --channels",
            crate::size::show(host),
            crate::size::show(MAX_HOST_BYTES)
        );
    }
    Ok(window)
}

/// Run every point and report.
fn run(name: &str, p: &Plan) -> Result<()> {
    let mut opts = OpenOptions::default();
    let max_depth = p.depths.iter().copied().max().unwrap_or(1) as u32;
    // Room for every job in flight (one descriptor each), and more.
    opts.ring_size = opts.ring_size.max((2 * max_depth).next_power_of_two());
    let dev = Device::open_with(name, &opts).with_context(|| format!("opening {name}"))?;
    let window = check_card(&dev, p)?;
    let settings = Settings {
        stop: p.stop,
        warmup: p.warmup,
        verify: p.verify,
        timeout: p.timeout,
        seed: p.seed,
        window,
    };
    let mut specs = Vec::new();
    for &dir in &p.dirs {
        for &size in &p.sizes {
            for &channels in &p.channels {
                for &depth in &p.depths {
                    for &mode in &p.modes {
                        specs.push(Spec {
                            dir,
                            size,
                            channels,
                            depth,
                            mode,
                        });
                    }
                }
            }
        }
    }
    if !p.json {
        println!(
            "{}: {} point{}, {} each, {}, {} MHz device clock",
            dev.name(),
            specs.len(),
            if specs.len() == 1 { "" } else { "s" },
            match p.stop {
                Stop::Jobs(n) => format!("{n} jobs per channel"),
                Stop::Time(d) => format!("{} ms", d.as_millis()),
            },
            if p.verify {
                "first job of each point verified"
            } else {
                "not verified"
            },
            dev.config().clock_mhz
        );
        println!("{}", header());
    }
    let bar = progress(p, specs.len());
    let mut points = Vec::with_capacity(specs.len());
    for spec in &specs {
        if let Some(b) = &bar {
            b.set_message(spec.to_string());
        }
        let pt = point::run(&dev, spec, &settings).with_context(|| format!("point {spec}"))?;
        if !p.json {
            let line = row(&pt);
            match &bar {
                Some(b) => b.suspend(|| println!("{line}")),
                None => println!("{line}"),
            }
        }
        if let Some(b) = &bar {
            b.inc(1);
        }
        points.push(pt);
    }
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    dev.close().context("closing the device")?;
    if p.json {
        let v: Vec<_> = points.iter().map(json).collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    }
    if let Some((path, format)) = &p.plot {
        plot::draw(path, *format, &points)
            .with_context(|| format!("writing the plot {}", path.display()))?;
        eprintln!("fdma: plot written to {}", path.display());
    }
    Ok(())
}

/// A progress bar on standard error, for a run of more than one point on a
/// terminal; never with `--json`.
fn progress(p: &Plan, points: usize) -> Option<indicatif::ProgressBar> {
    if p.json || points < 2 || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(points as u64);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} points, {elapsed}  {msg}")
            .expect("progress template"),
    );
    Some(b)
}

/// The table's column headings.
fn header() -> String {
    format!(
        "{:<4} {:>8} {:>3} {:>5} {:<4} {:>7} {:>9} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>8}",
        "dir",
        "size",
        "ch",
        "depth",
        "mode",
        "jobs",
        "MB/s",
        "jobs/s",
        "p50 us",
        "p99 us",
        "p99.9 us",
        "max us",
        "CPU us",
        "dev GB/s"
    )
}

/// One row of the table.
fn row(p: &Point) -> String {
    let s = &p.spec;
    format!(
        "{:<4} {:>8} {:>3} {:>5} {:<4} {:>7} {:>9.1} {:>9.0} {:>8.1} {:>8.1} {:>9.1} {:>8.1} {:>8.1} {:>8.2}",
        s.dir.name(),
        crate::size::show(s.size).replace(' ', ""),
        s.channels,
        s.depth,
        s.mode.name(),
        p.jobs,
        p.mb_per_s(),
        p.jobs_per_s(),
        p.lat.p50,
        p.lat.p99,
        p.lat.p999,
        p.lat.max,
        p.cpu_us_per_job(),
        p.device_gb_per_s()
    )
}

/// One point as JSON; units are in the field names.
fn json(p: &Point) -> serde_json::Value {
    let s = &p.spec;
    serde_json::json!({
        "dir": s.dir.name(),
        "size_bytes": s.size,
        "channels": s.channels,
        "depth": s.depth,
        "mode": s.mode.name(),
        "jobs": p.jobs,
        "bytes": p.bytes,
        "wall_s": p.wall.as_secs_f64(),
        "mb_per_s": p.mb_per_s(),
        "jobs_per_s": p.jobs_per_s(),
        "lat_p50_us": p.lat.p50,
        "lat_p99_us": p.lat.p99,
        "lat_p999_us": p.lat.p999,
        "lat_max_us": p.lat.max,
        "lat_mean_us": p.lat.mean,
        "cpu_us_per_job": p.cpu_us_per_job(),
        "cpu_s": p.cpu_s,
        "device_cycles": p.cycles,
        "device_clock_hz": p.clock_hz,
        "device_s": p.device_s(),
        "device_gb_per_s": p.device_gb_per_s(),
        "verified": p.verified,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct T {
        #[command(flatten)]
        a: BenchArgs,
    }

    fn plan_of(args: &[&str]) -> Result<Plan> {
        let t = T::try_parse_from(std::iter::once("bench").chain(args.iter().copied()))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        plan(&t.a)
    }

    fn err(args: &[&str]) -> String {
        match plan_of(args) {
            Ok(_) => panic!("{args:?} accepted"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn lists_parse_and_repeat_nothing() {
        let p = plan_of(&[
            "--sizes",
            "4k, 1M,4k",
            "--depths",
            "1,8",
            "--mode",
            "both,irq",
            "--dir",
            "all",
        ])
        .unwrap();
        assert_eq!(p.sizes, vec![4096, 1 << 20]);
        assert_eq!(p.depths, vec![1, 8]);
        assert_eq!(p.modes, vec![Mode::Irq, Mode::Poll]);
        assert_eq!(p.dirs, vec![Dir::H2c, Dir::C2h, Dir::H2h]);
        assert!(matches!(p.stop, Stop::Time(d) if d == Duration::from_millis(200)));
        let p = plan_of(&["--jobs", "5", "--no-verify"]).unwrap();
        assert!(matches!(p.stop, Stop::Jobs(5)));
        assert!(!p.verify);
    }

    #[test]
    fn bad_input_is_one_clear_line() {
        for (args, want) in [
            (&["--sizes", "0"][..], "--sizes \"0\": size 0"),
            (&["--sizes", "4k,,8k"], "an empty item"),
            (&["--sizes", "4q"], "unknown unit"),
            (
                &["--depths", "0"],
                "--depths \"0\": a queue depth must be at least 1",
            ),
            (&["--depths", "100000"], "at most 4096"),
            (&["--channels", "0"], "a channel count must be at least 1"),
            (&["--mode", "busy"], "--mode \"busy\": unknown mode"),
            (&["--dir", "x2y"], "unknown direction"),
            (&["--jobs", "0"], "--jobs 0"),
            (&["--duration-ms", "0"], "--duration-ms 0"),
            (&["--plot", "x.pdf"], "unknown plot format"),
            (&["--plot", "x"], "unknown plot format"),
        ] {
            let e = err(args);
            assert!(e.contains(want), "{args:?}: {e:?} lacks {want:?}");
            assert!(!e.contains('\n'), "{args:?}: {e:?}");
        }
    }

    #[test]
    fn a_mismatch_names_the_first_differing_byte() {
        let want = crate::dma::pattern(1, 0, 4096);
        let mut got = want.clone();
        got[1234] ^= 0xff;
        got[2000] ^= 0xff;
        let e = crate::dma::verify("first job", &got, &want).unwrap_err();
        assert!(
            e.to_string().contains("mismatch at byte 1234 of 4096"),
            "{e}"
        );
    }
}
