//! `fdma dma`: verified copies through the engine in any direction, with
//! the rate each achieved in wall-clock time and in device time.
//!
//! # Alignment
//!
//! The engine copies between any byte addresses (descriptor `src`, `dst`
//! and `len` have no alignment rule in the hardware contract, `fdma_hw::desc`;
//! its realigner shifts source words onto destination words). What it
//! treats differently is where a copy starts within a datapath word
//! (`2^data_bytes_log2` bytes) and where it crosses write-payload and 4 KiB
//! boundaries, so offsets within one page reach every case:
//! `--host-offset` and `--dst-offset` take 0 to 4095. `--card-offset` is
//! any byte of card memory, with the copy ending inside it.

use anyhow::{bail, Context, Result};
use fdma::{Device, Job};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Options of `fdma dma`.
#[derive(clap::Args, Debug)]
pub struct DmaArgs {
    /// Directions, comma-separated: h2c (host to card), c2h (card to host),
    /// h2h (host to host), or all.
    #[arg(long, default_value = "all")]
    dir: String,
    /// Bytes per copy (suffixes k, M, G). Default: 1M, or the size of
    /// `--input` (which must then be at least this large).
    #[arg(long, value_parser = crate::size::parse)]
    size: Option<u64>,
    /// Copies per direction.
    #[arg(long, default_value_t = 8)]
    count: u32,
    /// Channel to use.
    #[arg(long, default_value_t = 0)]
    channel: usize,
    /// Card-memory byte offset of the card side (any alignment; the copy
    /// must end inside card memory).
    #[arg(long, default_value = "0", value_parser = crate::size::parse)]
    card_offset: u64,
    /// Byte offset of the data in the host source buffer (h2c, h2h), 0 to
    /// 4095: unaligned copies.
    #[arg(long, default_value = "0", value_parser = crate::size::parse)]
    host_offset: u64,
    /// Byte offset of the data in the host destination buffer (c2h, h2h), 0
    /// to 4095. Default: --host-offset. A different value than the source's
    /// makes h2h realign.
    #[arg(long, value_parser = crate::size::parse)]
    dst_offset: Option<u64>,
    /// Do not check the data (measure only).
    #[arg(long)]
    no_verify: bool,
    /// Seed of the data pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Copy the data of this file (its first `--size` bytes) instead of the
    /// generated pattern.
    #[arg(long, value_name = "FILE")]
    input: Option<PathBuf>,
    /// Write the data read back card to host (the last c2h copy) to this
    /// file.
    #[arg(long, value_name = "FILE")]
    output: Option<PathBuf>,
}

/// Default bytes per copy without `--input`.
const DEFAULT_SIZE: u64 = 1 << 20;

/// Host offsets stay within one page: that reaches every alignment the
/// engine distinguishes (see the module docs).
const PAGE: u64 = 4096;

/// The host source and destination offsets, checked.
fn host_offsets(a: &DmaArgs) -> Result<(usize, usize)> {
    let dst = a.dst_offset.unwrap_or(a.host_offset);
    for (opt, v) in [("--host-offset", a.host_offset), ("--dst-offset", dst)] {
        if v >= PAGE {
            bail!(
                "{opt} {v}: host offsets are 0 to {} — the engine copies between any byte \
                 addresses, and offsets within one page already reach every alignment it \
                 treats differently (datapath words, payload and 4 KiB boundaries)",
                PAGE - 1
            );
        }
    }
    Ok((a.host_offset as usize, dst as usize))
}

/// The data to copy: the `--input` file's first `size` bytes, else `None`
/// (the generated pattern), and the bytes per copy.
fn source(a: &DmaArgs) -> Result<(Option<Vec<u8>>, u64)> {
    if a.size == Some(0) {
        bail!("--size 0: a copy must be at least 1 byte");
    }
    if a.count == 0 {
        bail!("--count 0: at least one copy per direction is needed");
    }
    let Some(path) = &a.input else {
        return Ok((None, a.size.unwrap_or(DEFAULT_SIZE)));
    };
    let mut data = std::fs::read(path)
        .with_context(|| format!("reading the input file {}", path.display()))?;
    if data.is_empty() {
        bail!(
            "the input file {} is empty: there is nothing to copy",
            path.display()
        );
    }
    let size = match a.size {
        Some(s) if s > data.len() as u64 => bail!(
            "--size {s} is larger than the input file {} ({} bytes)",
            path.display(),
            data.len()
        ),
        Some(s) => s,
        None => data.len() as u64,
    };
    data.truncate(size as usize);
    Ok((Some(data), size))
}

/// A direction of copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Dir {
    /// Host to card.
    H2c,
    /// Card to host.
    C2h,
    /// Host to host.
    H2h,
}

impl Dir {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Dir::H2c => "h2c",
            Dir::C2h => "c2h",
            Dir::H2h => "h2h",
        }
    }
}

fn dirs(s: &str) -> Result<Vec<Dir>> {
    let mut v = Vec::new();
    for p in s.split(',') {
        match p.trim() {
            "all" => v.extend([Dir::H2c, Dir::C2h, Dir::H2h]),
            "h2c" => v.push(Dir::H2c),
            "c2h" => v.push(Dir::C2h),
            "h2h" => v.push(Dir::H2h),
            o => bail!("unknown direction {o:?}: use h2c, c2h, h2h or all"),
        }
    }
    Ok(v)
}

/// A reproducible pattern that differs for every copy.
pub(crate) fn pattern(seed: u64, n: u32, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (n as u64 + 1);
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

pub(crate) fn verify(what: &str, got: &[u8], want: &[u8]) -> Result<()> {
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        bail!(
            "{what}: data mismatch at byte {i} of {}: got {:#04x}, expected {:#04x}",
            want.len(),
            got[i],
            want[i]
        );
    }
    Ok(())
}

/// Run the copies and print one line per direction.
pub fn run(name: &str, a: &DmaArgs) -> Result<()> {
    let dirs = dirs(&a.dir)?;
    if a.output.is_some() && !dirs.contains(&Dir::C2h) {
        bail!("--output writes the data read card to host: add c2h to --dir");
    }
    let (input, size) = source(a)?;
    let (ho, hd) = host_offsets(a)?;
    let len = usize::try_from(size).context("size")?;
    let dev = Device::open(name).with_context(|| format!("opening {name}"))?;
    let card_mem = dev.config().card_mem_bytes();
    if dirs.iter().any(|d| *d != Dir::H2h)
        && (a.card_offset > card_mem || size > card_mem - a.card_offset)
    {
        bail!(
            "card range {:#x}+{:#x} (--card-offset {}, --size {}) is beyond the card memory \
             of {} ({card_mem:#x} bytes)",
            a.card_offset,
            size,
            a.card_offset,
            size,
            crate::size::show(card_mem)
        );
    }
    let ch = dev.channel(a.channel)?;
    let src = dev
        .alloc(len + ho)
        .context("allocating the source buffer")?;
    let dst = dev
        .alloc(len + hd)
        .context("allocating the destination buffer")?;
    let clock_hz = dev.config().clock_mhz as f64 * 1e6;
    println!(
        "{}: channel {}, {} x {} per direction{}",
        dev.name(),
        a.channel,
        a.count,
        crate::size::show(size),
        if a.no_verify {
            ", not verified"
        } else {
            ", verified"
        }
    );
    if ho != 0 || hd != 0 || a.card_offset != 0 {
        let word = 1u64 << dev.config().data_bytes_log2;
        println!(
            "  offsets: host source +{ho}, host destination +{hd}, card {:#x} \
             (bytes {}, {} and {} of {word}-byte datapath words)",
            a.card_offset,
            ho as u64 % word,
            hd as u64 % word,
            a.card_offset % word
        );
    }
    for d in dirs {
        let mut wall = Duration::ZERO;
        let mut cycles = 0u64;
        for i in 0..a.count {
            let want = match &input {
                Some(data) => data.clone(),
                None => pattern(a.seed, i, len),
            };
            let mut job = Job::new();
            match d {
                Dir::H2c => {
                    src.write_at(ho, &want)?;
                    job.h2c(&src, ho, a.card_offset, len);
                }
                Dir::C2h => {
                    dev.card_write(a.card_offset, &want)?;
                    dst.fill(hd, len, 0)?;
                    job.c2h(a.card_offset, &dst, hd, len);
                }
                Dir::H2h => {
                    src.write_at(ho, &want)?;
                    dst.fill(hd, len, 0)?;
                    job.h2h(&src, ho, &dst, hd, len);
                }
            }
            let c0 = dev.cycles()?;
            let t0 = Instant::now();
            let fence = ch.submit(&job)?;
            fence
                .wait()
                .with_context(|| format!("{} copy {i}", d.name()))?;
            wall += t0.elapsed();
            cycles += dev.cycles()?.wrapping_sub(c0);
            let last_c2h = d == Dir::C2h && i + 1 == a.count && a.output.is_some();
            if !a.no_verify || last_c2h {
                let got = match d {
                    Dir::H2c => {
                        let mut g = vec![0u8; len];
                        dev.card_read(a.card_offset, &mut g)?;
                        g
                    }
                    Dir::C2h | Dir::H2h => dst.read_vec(hd, len)?,
                };
                if let (true, Some(path)) = (last_c2h, &a.output) {
                    std::fs::write(path, &got)
                        .with_context(|| format!("writing the output file {}", path.display()))?;
                }
                if !a.no_verify {
                    verify(&format!("{} copy {i}", d.name()), &got, &want)?;
                }
            }
        }
        let bytes = size as f64 * a.count as f64;
        let secs = wall.as_secs_f64();
        println!(
            "  {}  {:>8.1} us/copy  {:>9.1} MB/s wall  {:>7.2} GB/s device ({} cycles){}",
            d.name(),
            secs * 1e6 / a.count as f64,
            bytes / secs / 1e6,
            if cycles > 0 {
                bytes / (cycles as f64 / clock_hz) / 1e9
            } else {
                0.0
            },
            cycles,
            if a.no_verify { "" } else { "  ok" }
        );
    }
    dev.close()?;
    Ok(())
}
