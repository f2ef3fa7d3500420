//! `fdma bench --plot FILE.svg|FILE.png`: throughput (left) and latency
//! (right) against transfer size, one line per direction, channel count,
//! queue depth and completion mode.
//!
//! Text is laid out (SVG) and rasterised (PNG) with DejaVu Sans, embedded in
//! the binary from the `dejavu` crate and registered with plotters'
//! `ab_glyph` font backend, so no system font library (fontconfig,
//! freetype) is needed to build or run. DejaVu Sans is under the Bitstream
//! Vera / DejaVu fonts license (free to use, embed and redistribute with its
//! notice, `docs/LICENSE-DejaVu-fonts.txt`). A PNG
//! is drawn into a pixel buffer by plotters' bitmap backend and encoded by
//! the `png` crate.

use anyhow::{bail, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

use super::point::Point;

/// Image file formats of `--plot`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Format {
    /// Scalable vector graphics.
    Svg,
    /// Portable network graphics.
    Png,
}

impl Format {
    /// The format named by `path`'s extension.
    pub(crate) fn of(path: &Path) -> Result<Format> {
        let ext = path
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("svg") => Ok(Format::Svg),
            Some("png") => Ok(Format::Png),
            Some(e) => bail!(
                "--plot {}: unknown plot format {e:?}: use FILE.svg or FILE.png",
                path.display()
            ),
            None => bail!(
                "--plot {}: unknown plot format (no extension): use FILE.svg or FILE.png",
                path.display()
            ),
        }
    }
}

/// Image size in pixels.
const SIZE: (u32, u32) = (1280, 560);
/// The font family every text uses (registered by [`font`]).
const FONT: &str = "sans-serif";

/// Line colours (Tableau 10): distinct, and legible on white.
const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Axis label of a latency in microseconds.
fn us_label(v: &f64) -> String {
    if *v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// Register the embedded font once.
fn font() -> Result<()> {
    static DONE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let ok = *DONE.get_or_init(|| {
        plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok()
    });
    if !ok {
        bail!("the embedded font (DejaVu Sans) could not be loaded");
    }
    Ok(())
}

/// Draw the plot of `points` into `path`.
pub(crate) fn draw(path: &Path, format: Format, points: &[Point]) -> Result<()> {
    if points.is_empty() {
        bail!("no points to plot");
    }
    font()?;
    match format {
        Format::Svg => {
            let root = SVGBackend::new(path, SIZE).into_drawing_area();
            panels(&root, points)?;
            root.present()?;
        }
        Format::Png => {
            let (w, h) = SIZE;
            let mut rgb = vec![0u8; w as usize * h as usize * 3];
            {
                let root = BitMapBackend::with_buffer(&mut rgb, SIZE).into_drawing_area();
                panels(&root, points)?;
                root.present()?;
            }
            let file = std::io::BufWriter::new(std::fs::File::create(path)?);
            let mut enc = png::Encoder::new(file, w, h);
            enc.set_color(png::ColorType::Rgb);
            enc.set_depth(png::BitDepth::Eight);
            enc.set_compression(png::Compression::Best);
            let mut wr = enc.write_header()?;
            wr.write_image_data(&rgb)?;
            wr.finish()?;
        }
    }
    Ok(())
}

/// Points grouped into lines: everything but the size in common, sorted
/// by size; in order of first appearance.
fn series(points: &[Point]) -> Vec<(String, Vec<&Point>)> {
    let mut out: Vec<(String, Vec<&Point>)> = Vec::new();
    for p in points {
        let s = &p.spec;
        let key = format!(
            "{} {} ch, depth {}, {}",
            s.dir.name(),
            s.channels,
            s.depth,
            s.mode.name()
        );
        match out.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => v.push(p),
            None => out.push((key, vec![p])),
        }
    }
    for (_, v) in &mut out {
        v.sort_by_key(|p| p.spec.size);
    }
    out
}

/// The x coordinate of a size: log2 of its bytes.
fn x_of(p: &Point) -> f64 {
    (p.spec.size as f64).log2()
}

/// Axis label of an x coordinate: the size at whole powers of two.
fn size_label(x: &f64) -> String {
    if (x - x.round()).abs() < 1e-6 && *x >= 0.0 && *x < 63.0 {
        crate::size::show(1u64 << x.round() as u32)
    } else {
        String::new()
    }
}

/// Both panels on `root`.
fn panels<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, points: &[Point]) -> Result<()>
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let root = root.titled(
        "fdma bench: throughput and latency against transfer size",
        (FONT, 22),
    )?;
    let (left, right) = root.split_horizontally(SIZE.0 / 2);
    let lines = series(points);
    let xs = points.iter().map(x_of);
    let (x0, x1) = xs.fold((f64::MAX, f64::MIN), |(a, b), x| (a.min(x), b.max(x)));
    let xr = (x0 - 0.4)..(x1 + 0.4);
    let x_labels = ((x1 - x0).round() as usize + 2).min(16);
    let color = |i: usize| {
        let (r, g, b) = PALETTE[i % PALETTE.len()];
        RGBColor(r, g, b).to_rgba()
    };

    let ymax = points.iter().map(Point::mb_per_s).fold(0.0, f64::max) * 1.15;
    let mb_label = move |v: &f64| {
        if ymax < 10.0 {
            format!("{v:.1}")
        } else {
            format!("{v:.0}")
        }
    };
    let mut c = ChartBuilder::on(&left)
        .caption("Throughput, wall clock", (FONT, 18))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(xr.clone(), 0f64..ymax.max(1e-3))?;
    c.configure_mesh()
        .x_desc("Transfer size")
        .y_desc("Throughput (MB/s)")
        .x_labels(x_labels)
        .x_label_formatter(&size_label)
        .y_label_formatter(&mb_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, (key, pts)) in lines.iter().enumerate() {
        let col = color(i);
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (x_of(p), p.mb_per_s())),
            col.stroke_width(2),
        ))?
        .label(key.as_str())
        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(
            pts.iter()
                .map(|p| Circle::new((x_of(p), p.mb_per_s()), 3, col.filled())),
        )?;
    }
    c.configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 13))
        .draw()?;

    let lats = points.iter().flat_map(|p| [p.lat.p50, p.lat.p99]);
    let (l0, l1) = lats.fold((f64::MAX, f64::MIN), |(a, b), l| (a.min(l), b.max(l)));
    let (l0, l1) = (l0.max(0.01) / 1.5, l1.max(0.02) * 1.5);
    let mut c = ChartBuilder::on(&right)
        .caption("Latency per job, submit to signal", (FONT, 18))
        .margin(12)
        .x_label_area_size(50)
        .y_label_area_size(70)
        .build_cartesian_2d(xr, (l0..l1).log_scale())?;
    c.configure_mesh()
        .x_desc("Transfer size")
        .y_desc("Latency (µs): p50 thick, p99 thin")
        .x_labels(x_labels)
        .x_label_formatter(&size_label)
        .y_label_formatter(&us_label)
        .label_style((FONT, 13))
        .axis_desc_style((FONT, 15))
        .draw()?;
    for (i, (_, pts)) in lines.iter().enumerate() {
        let col = color(i);
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (x_of(p), p.lat.p50)),
            col.stroke_width(2),
        ))?;
        c.draw_series(
            pts.iter()
                .map(|p| Circle::new((x_of(p), p.lat.p50), 3, col.filled())),
        )?;
        c.draw_series(LineSeries::new(
            pts.iter().map(|p| (x_of(p), p.lat.p99)),
            col.stroke_width(1),
        ))?;
        c.draw_series(
            pts.iter()
                .map(|p| TriangleMarker::new((x_of(p), p.lat.p99), 4, col.stroke_width(1))),
        )?;
    }
    Ok(())
}
