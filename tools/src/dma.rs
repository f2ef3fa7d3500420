//! `fdma dma`: verified copies through the engine in any direction, with
//! the rate each achieved in wall-clock time and in device time.

use anyhow::{bail, Context, Result};
use fdma::{Device, Job};
use std::time::{Duration, Instant};

/// Options of `fdma dma`.
#[derive(clap::Args, Debug)]
pub struct DmaArgs {
    /// Directions, comma-separated: h2c (host to card), c2h (card to host),
    /// h2h (host to host), or all.
    #[arg(long, default_value = "all")]
    dir: String,
    /// Bytes per copy (suffixes k, M, G).
    #[arg(long, default_value = "1M", value_parser = crate::size::parse)]
    size: u64,
    /// Copies per direction.
    #[arg(long, default_value_t = 8)]
    count: u32,
    /// Channel to use.
    #[arg(long, default_value_t = 0)]
    channel: usize,
    /// Card-memory offset of the card side.
    #[arg(long, default_value = "0", value_parser = crate::size::parse)]
    card_offset: u64,
    /// Byte offset within the host buffers (unaligned copies).
    #[arg(long, default_value_t = 0)]
    host_offset: usize,
    /// Do not check the data (measure only).
    #[arg(long)]
    no_verify: bool,
    /// Seed of the data pattern.
    #[arg(long, default_value_t = 1)]
    seed: u64,
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
    if a.size == 0 || a.count == 0 {
        bail!("--size and --count must be at least 1");
    }
    let len = usize::try_from(a.size).context("size")?;
    let dev = Device::open(name).with_context(|| format!("opening {name}"))?;
    let ch = dev.channel(a.channel)?;
    let buf_len = len + a.host_offset;
    let src = dev.alloc(buf_len).context("allocating the source buffer")?;
    let dst = dev
        .alloc(buf_len)
        .context("allocating the destination buffer")?;
    let clock_hz = dev.config().clock_mhz as f64 * 1e6;
    let ho = a.host_offset;
    println!(
        "{}: channel {}, {} x {} per direction{}",
        dev.name(),
        a.channel,
        a.count,
        crate::size::show(a.size),
        if a.no_verify {
            ", not verified"
        } else {
            ", verified"
        }
    );
    for d in dirs {
        let mut wall = Duration::ZERO;
        let mut cycles = 0u64;
        for i in 0..a.count {
            let want = pattern(a.seed, i, len);
            let mut job = Job::new();
            match d {
                Dir::H2c => {
                    src.write_at(ho, &want)?;
                    job.h2c(&src, ho, a.card_offset, len);
                }
                Dir::C2h => {
                    dev.card_write(a.card_offset, &want)?;
                    dst.fill(ho, len, 0)?;
                    job.c2h(a.card_offset, &dst, ho, len);
                }
                Dir::H2h => {
                    src.write_at(ho, &want)?;
                    dst.fill(ho, len, 0)?;
                    job.h2h(&src, ho, &dst, ho, len);
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
            if !a.no_verify {
                let got = match d {
                    Dir::H2c => {
                        let mut g = vec![0u8; len];
                        dev.card_read(a.card_offset, &mut g)?;
                        g
                    }
                    Dir::C2h | Dir::H2h => dst.read_vec(ho, len)?,
                };
                verify(&format!("{} copy {i}", d.name()), &got, &want)?;
            }
        }
        let bytes = a.size as f64 * a.count as f64;
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
