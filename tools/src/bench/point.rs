//! One point of `fdma bench`: a direction, a transfer size, a number of
//! channels, a queue depth and a completion mode, measured.
//!
//! Each channel of the point is driven by a thread of its own that keeps
//! `depth` jobs in flight: it submits until `depth` jobs are outstanding,
//! waits for the oldest (a channel completes its jobs in order), records
//! its latency and submits the next. Every in-flight slot has its own host
//! buffers and card range, so no job waits for another through the
//! buffers' reservations (implicit synchronisation stays on, as in an
//! application).
//!
//! * Latency is submit to signal: the time just before
//!   [`fdma::Channel::submit`] to the moment the fence's callback runs on
//!   the signalling thread (the reactor in interrupt mode, the benchmark
//!   thread's [`fdma::Channel::poll`] in poll mode). A fence that signalled
//!   before its callback could be registered is timed at the registration.
//! * Wall time runs from the moment every channel's thread is released to
//!   the moment the last one has its last completion.
//! * CPU time is the process's (`getrusage(RUSAGE_SELF)`, user + system)
//!   over the same span: the benchmark threads and the driver's own
//!   threads (reactor, watchdog, reclaim, transport). The simulator runs in
//!   another process and is not counted.
//! * Device time is the card's cycle counter (D1) over the same span.

use anyhow::{anyhow, bail, Context, Result};
use fdma::{Channel, Device, DmaBuffer, Fence, IrqMode, Job, Wait};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use crate::dma::{pattern, verify, Dir};

/// How completions are noticed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Mode {
    /// Interrupts: the driver's reactor thread wakes on the channel's
    /// interrupt and signals the fence; the benchmark thread sleeps in
    /// [`Fence::wait_timeout`].
    Irq,
    /// Polling: descriptors carry no interrupt flag and the benchmark
    /// thread calls [`Channel::poll`] until the fence signals, yielding the
    /// CPU between empty polls.
    Poll,
}

impl Mode {
    /// The name on the command line and in the output.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Mode::Irq => "irq",
            Mode::Poll => "poll",
        }
    }
}

/// When a point's measured run ends.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Stop {
    /// After this many jobs per channel.
    Jobs(u64),
    /// When this much wall time has passed (jobs in flight then finish and
    /// count).
    Time(Duration),
}

/// What one point measures.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Spec {
    /// Direction of the copies.
    pub dir: Dir,
    /// Bytes per job.
    pub size: u64,
    /// Channels driven at once: 0 to `channels - 1`.
    pub channels: usize,
    /// Jobs in flight per channel.
    pub depth: usize,
    /// Completion mode.
    pub mode: Mode,
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}, {} ch, depth {}, {}",
            self.dir.name(),
            crate::size::show(self.size),
            self.channels,
            self.depth,
            self.mode.name()
        )
    }
}

/// Settings shared by every point.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Settings {
    /// End of each measured run.
    pub stop: Stop,
    /// Unmeasured jobs per channel before the measured run.
    pub warmup: u64,
    /// Check the data of the first job on every channel.
    pub verify: bool,
    /// Limit of every wait for one job.
    pub timeout: Duration,
    /// Seed of the verified pattern.
    pub seed: u64,
    /// Card memory reserved to each channel: channel `c` uses
    /// `[c * window, (c + 1) * window)`.
    pub window: u64,
}

/// Latency distribution of a point, in microseconds.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct Latency {
    /// Median.
    pub p50: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Latency {
    /// Nearest-rank percentiles of `ns` (sorted here).
    pub(crate) fn of(ns: &mut [u64]) -> Latency {
        if ns.is_empty() {
            return Latency::default();
        }
        ns.sort_unstable();
        // Rank of the `per_mille` percentile, in integers (no rounding).
        let rank = |per_mille: usize| {
            let r = (per_mille * ns.len()).div_ceil(1000);
            ns[r.clamp(1, ns.len()) - 1] as f64 / 1e3
        };
        Latency {
            p50: rank(500),
            p99: rank(990),
            p999: rank(999),
            max: ns[ns.len() - 1] as f64 / 1e3,
            mean: ns.iter().map(|&n| n as f64).sum::<f64>() / ns.len() as f64 / 1e3,
        }
    }
}

/// The measurements of one point.
#[derive(Clone, Debug)]
pub(crate) struct Point {
    /// What was measured.
    pub spec: Spec,
    /// Measured jobs, all channels.
    pub jobs: u64,
    /// Bytes of the measured jobs.
    pub bytes: u64,
    /// Wall time of the measured run.
    pub wall: Duration,
    /// Per-job submit-to-signal latency.
    pub lat: Latency,
    /// Process CPU time (user + system) of the measured run, seconds.
    pub cpu_s: f64,
    /// Device cycles (D1) of the measured run.
    pub cycles: u64,
    /// Device clock, Hz.
    pub clock_hz: f64,
    /// Whether the first job's data was checked (and matched).
    pub verified: bool,
}

impl Point {
    /// Wall-clock throughput, 10^6 bytes per second.
    pub(crate) fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.wall.as_secs_f64().max(1e-9) / 1e6
    }

    /// Jobs per second, wall clock.
    pub(crate) fn jobs_per_s(&self) -> f64 {
        self.jobs as f64 / self.wall.as_secs_f64().max(1e-9)
    }

    /// Process CPU time per job, microseconds.
    pub(crate) fn cpu_us_per_job(&self) -> f64 {
        self.cpu_s * 1e6 / self.jobs.max(1) as f64
    }

    /// Device time of the run, seconds.
    pub(crate) fn device_s(&self) -> f64 {
        self.cycles as f64 / self.clock_hz
    }

    /// Throughput in device time, 10^9 bytes per second (0 if the counter
    /// did not move).
    pub(crate) fn device_gb_per_s(&self) -> f64 {
        if self.cycles == 0 {
            0.0
        } else {
            self.bytes as f64 / self.device_s() / 1e9
        }
    }
}

/// Process CPU time (user + system), seconds.
fn cpu_secs() -> f64 {
    // SAFETY: getrusage only fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above; RUSAGE_SELF is always valid.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// One in-flight slot of a channel: its buffers, card range and job.
struct Slot {
    src: Option<DmaBuffer>,
    dst: Option<DmaBuffer>,
    card: u64,
    job: Job,
}

/// One channel of a point, with a job per slot.
struct Lane {
    ch: Channel,
    slots: Vec<Slot>,
}

impl Lane {
    fn new(dev: &Device, c: usize, spec: &Spec, s: &Settings) -> Result<Lane> {
        let ch = dev.channel(c)?;
        let len = usize::try_from(spec.size).context("size")?;
        let stride = spec.size.next_multiple_of(4096);
        let per_window = (s.window / stride).max(1);
        let mut slots = Vec::with_capacity(spec.depth);
        for i in 0..spec.depth {
            let alloc = |what| {
                dev.alloc(len)
                    .with_context(|| format!("allocating a {what} buffer of {len} bytes"))
            };
            let src = if spec.dir != Dir::C2h {
                Some(alloc("source")?)
            } else {
                None
            };
            let dst = if spec.dir != Dir::H2c {
                Some(alloc("destination")?)
            } else {
                None
            };
            let card = c as u64 * s.window + (i as u64 % per_window) * stride;
            let mut job = Job::new();
            match (spec.dir, &src, &dst) {
                (Dir::H2c, Some(src), _) => job.h2c(src, 0, card, len),
                (Dir::C2h, _, Some(dst)) => job.c2h(card, dst, 0, len),
                (Dir::H2h, Some(src), Some(dst)) => job.h2h(src, 0, dst, 0, len),
                _ => unreachable!("buffers allocated for the direction"),
            };
            slots.push(Slot {
                src,
                dst,
                card,
                job,
            });
        }
        Ok(Lane { ch, slots })
    }
}

/// Wait for `fence` in `mode`, within `timeout`; a failure or a timeout
/// resets the channel (so that the next point starts clean) and fails.
fn complete(ch: &Channel, fence: &Fence, mode: Mode, timeout: Duration) -> Result<()> {
    let t0 = Instant::now();
    let status = match mode {
        Mode::Irq => match fence.wait_timeout(timeout) {
            Wait::Signalled(s) => Some(s),
            Wait::TimedOut => None,
        },
        Mode::Poll => loop {
            if let Some(s) = fence.status() {
                break Some(s);
            }
            if ch.poll()? == 0 {
                if t0.elapsed() > timeout {
                    break None;
                }
                std::thread::yield_now();
            }
        },
    };
    match status {
        Some(Ok(())) => Ok(()),
        Some(Err(e)) => {
            let _ = ch.reset();
            Err(anyhow!("channel {}: job failed: {e}", ch.index()))
        }
        None => {
            let _ = ch.reset();
            bail!(
                "channel {}: no completion within {} ms (--timeout-ms)",
                ch.index(),
                timeout.as_millis()
            )
        }
    }
}

/// Run the first slot's job alone with a fresh pattern and check what
/// arrived.
fn verify_first(dev: &Device, lane: &Lane, spec: &Spec, s: &Settings) -> Result<()> {
    let slot = &lane.slots[0];
    let len = spec.size as usize;
    let want = pattern(s.seed, lane.ch.index() as u32, len);
    match spec.dir {
        Dir::C2h => dev.card_write(slot.card, &want)?,
        _ => slot.src.as_ref().expect("source").write_at(0, &want)?,
    }
    match spec.dir {
        Dir::H2c => dev.card_write(slot.card, &vec![0u8; len])?,
        _ => slot.dst.as_ref().expect("destination").fill(0, len, 0)?,
    }
    let fence = lane.ch.submit(&slot.job)?;
    complete(&lane.ch, &fence, spec.mode, s.timeout)?;
    let got = match spec.dir {
        Dir::H2c => {
            let mut g = vec![0u8; len];
            dev.card_read(slot.card, &mut g)?;
            g
        }
        _ => slot.dst.as_ref().expect("destination").read_vec(0, len)?,
    };
    verify(
        &format!("{spec}: first job on channel {}", lane.ch.index()),
        &got,
        &want,
    )
}

/// What one channel's thread measured.
struct LaneRun {
    jobs: u64,
    bytes: u64,
    lat_ns: Vec<u64>,
}

/// Keep `depth` jobs in flight on `lane` until `stop`, recording each
/// job's submit-to-signal latency in nanoseconds since `base`.
fn drive(lane: &Lane, spec: &Spec, s: &Settings, stop: Stop, base: Instant) -> Result<LaneRun> {
    let ns = move |t: Instant| t.saturating_duration_since(base).as_nanos() as u64;
    let depth = lane.slots.len();
    // When each slot's fence signalled (0: not yet), set by its callback.
    let signalled: Arc<[AtomicU64]> = (0..depth).map(|_| AtomicU64::new(0)).collect();
    let mut inflight: VecDeque<(usize, u64, Fence)> = VecDeque::with_capacity(depth);
    let expect = match stop {
        Stop::Jobs(n) => n as usize,
        Stop::Time(d) => (d.as_millis() as usize).clamp(16, 1 << 20),
    };
    let mut lat_ns = Vec::with_capacity(expect);
    let end = match stop {
        Stop::Time(d) => Some(Instant::now() + d),
        Stop::Jobs(_) => None,
    };
    let mut submitted = 0u64;
    loop {
        while inflight.len() < depth
            && match (stop, end) {
                (Stop::Jobs(n), _) => submitted < n,
                (_, Some(end)) => submitted == 0 || Instant::now() < end,
                _ => false,
            }
        {
            let slot = (submitted % depth as u64) as usize;
            signalled[slot].store(0, Ordering::Relaxed);
            let t = ns(Instant::now());
            let fence = lane.ch.submit(&lane.slots[slot].job)?;
            let cell = signalled.clone();
            let cb = Box::new(move |_: &fdma::Status| {
                cell[slot].store(ns(Instant::now()).max(1), Ordering::Release);
            });
            if fence.on_signal(cb).is_err() {
                signalled[slot].store(ns(Instant::now()).max(1), Ordering::Release);
            }
            inflight.push_back((slot, t, fence));
            submitted += 1;
        }
        let Some((slot, t, fence)) = inflight.pop_front() else {
            break;
        };
        complete(&lane.ch, &fence, spec.mode, s.timeout)?;
        // The callback runs just after the status is visible: a waiter
        // woken by the status may be here first.
        let mut at = signalled[slot].load(Ordering::Acquire);
        let t_spin = Instant::now();
        while at == 0 && t_spin.elapsed() < Duration::from_millis(5) {
            std::hint::spin_loop();
            at = signalled[slot].load(Ordering::Acquire);
        }
        if at == 0 {
            at = ns(Instant::now());
        }
        lat_ns.push(at.saturating_sub(t));
    }
    Ok(LaneRun {
        jobs: submitted,
        bytes: submitted * spec.size,
        lat_ns,
    })
}

/// Set `mode` on every lane's channel; interrupts again on drop.
struct ModeGuard<'a>(&'a [Lane]);

impl Drop for ModeGuard<'_> {
    fn drop(&mut self) {
        for l in self.0 {
            l.ch.set_mode(IrqMode::Interrupt);
        }
    }
}

/// Measure one point on `dev`.
pub(crate) fn run(dev: &Device, spec: &Spec, s: &Settings) -> Result<Point> {
    let lanes = (0..spec.channels)
        .map(|c| Lane::new(dev, c, spec, s))
        .collect::<Result<Vec<_>>>()?;
    let _restore = ModeGuard(&lanes);
    for l in &lanes {
        l.ch.set_mode(match spec.mode {
            Mode::Irq => IrqMode::Interrupt,
            Mode::Poll => IrqMode::Poll,
        });
    }
    if s.verify {
        for l in &lanes {
            verify_first(dev, l, spec, s)?;
        }
    }
    let base = Instant::now();
    if s.warmup > 0 {
        std::thread::scope(|sc| {
            let hs: Vec<_> = lanes
                .iter()
                .map(|l| sc.spawn(move || drive(l, spec, s, Stop::Jobs(s.warmup), base)))
                .collect();
            hs.into_iter()
                .try_for_each(|h| h.join().expect("warm-up thread").map(|_| ()))
        })
        .context("warm-up")?;
    }
    let go = Barrier::new(lanes.len() + 1);
    let (runs, wall, cpu_s, cycles) = std::thread::scope(|sc| -> Result<_> {
        let hs: Vec<_> = lanes
            .iter()
            .map(|l| {
                let go = &go;
                sc.spawn(move || {
                    go.wait();
                    drive(l, spec, s, s.stop, base)
                })
            })
            .collect();
        // The threads wait at the barrier until released, whatever
        // happens here.
        let c0 = dev.cycles();
        let cpu0 = cpu_secs();
        let t0 = Instant::now();
        go.wait();
        let runs = hs
            .into_iter()
            .map(|h| h.join().expect("benchmark thread"))
            .collect::<Vec<_>>();
        let wall = t0.elapsed();
        let cpu_s = cpu_secs() - cpu0;
        let cycles = dev.cycles()?.wrapping_sub(c0?);
        Ok((runs, wall, cpu_s, cycles))
    })?;
    let mut lat_ns = Vec::new();
    let (mut jobs, mut bytes) = (0, 0);
    for r in runs {
        let r = r?;
        jobs += r.jobs;
        bytes += r.bytes;
        lat_ns.extend(r.lat_ns);
    }
    Ok(Point {
        spec: *spec,
        jobs,
        bytes,
        wall,
        lat: Latency::of(&mut lat_ns),
        cpu_s,
        cycles,
        clock_hz: dev.config().clock_mhz as f64 * 1e6,
        verified: s.verify,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut v: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        let l = Latency::of(&mut v);
        assert_eq!(l.p50, 500.0);
        assert_eq!(l.p99, 990.0);
        assert_eq!(l.p999, 999.0);
        assert_eq!(l.max, 1000.0);
        assert_eq!(l.mean, 500.5);
        let mut one = vec![7000];
        let l = Latency::of(&mut one);
        assert_eq!((l.p50, l.p99, l.p999, l.max), (7.0, 7.0, 7.0, 7.0));
        assert_eq!(Latency::of(&mut []), Latency::default());
    }
}
