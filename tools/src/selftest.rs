//! `fdma selftest`: the health check a lab engineer runs after plugging in a
//! card or loading a bitstream.
//!
//! Every check prints one line as it completes (`PASS|FAIL|SKIP  name
//! detail (time)`), or with `--json` the whole run is one JSON array. Every
//! check is bounded in time: fence waits use [`fdma::Fence::wait_timeout`],
//! and register and transport accesses are bounded by the transport's reply
//! timeout and the driver's device-time bounds (D1), all set from
//! `--timeout`. A check that runs out of time fails; it never hangs.

use anyhow::{anyhow, bail, Context, Result};
use fdma::faults::OneShot;
use fdma::{Channel, Device, FenceError, Health, IrqMode, Job, OpenOptions, Target, Wait};
use fdma_hw::regs;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::dma::{pattern, verify, Dir};

/// Options of `fdma selftest`.
#[derive(clap::Args, Debug)]
pub struct SelftestArgs {
    /// Print a JSON array of `{name, status, detail, ms}` instead of lines.
    #[arg(long)]
    pub json: bool,
    /// First remove the PCI device and rescan the bus through sysfs (root;
    /// PCI devices only, not a simulator).
    #[arg(long)]
    pub rescan: bool,
    /// Time limit of every wait of a check, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Bytes per verified transfer.
    #[arg(long, default_value = "4k", value_parser = crate::size::parse)]
    pub size: u64,
}

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Pass,
    Fail,
    Skip,
}

impl Verdict {
    fn name(self) -> &'static str {
        match self {
            Verdict::Pass => "PASS",
            Verdict::Fail => "FAIL",
            Verdict::Skip => "SKIP",
        }
    }
}

/// What a check returns when it did not fail: passed, or skipped (why).
enum Done {
    Pass(String),
    Skip(String),
}

struct Outcome {
    name: String,
    verdict: Verdict,
    detail: String,
    ms: u64,
}

/// Runs checks, printing each as it completes.
struct Runner {
    json: bool,
    outcomes: Vec<Outcome>,
}

impl Runner {
    fn check(&mut self, name: &str, f: impl FnOnce() -> Result<Done>) {
        let t0 = Instant::now();
        let (verdict, detail) = match f() {
            Ok(Done::Pass(d)) => (Verdict::Pass, d),
            Ok(Done::Skip(d)) => (Verdict::Skip, d),
            Err(e) => (Verdict::Fail, format!("{e:#}")),
        };
        let ms = t0.elapsed().as_millis() as u64;
        if !self.json {
            println!("{}  {name}  {detail} ({ms} ms)", verdict.name());
        }
        self.outcomes.push(Outcome {
            name: name.to_string(),
            verdict,
            detail,
            ms,
        });
    }

    fn count(&self, v: Verdict) -> usize {
        self.outcomes.iter().filter(|o| o.verdict == v).count()
    }
}

/// Run the self test on `name`; fails (non-zero exit) if any check failed.
pub fn run(name: &str, sysfs: &fdma::pci::Sysfs, a: &SelftestArgs) -> Result<()> {
    if a.size == 0 {
        bail!("--size must be at least 1");
    }
    let len = usize::try_from(a.size).context("size")?;
    if a.rescan {
        rescan(name, sysfs, Duration::from_millis(a.timeout_ms))?;
    }
    let timeout = Duration::from_millis(a.timeout_ms.max(1));
    let mut opts = OpenOptions::default();
    // A stalled simulator is lost after twice the per-check limit, so a
    // check that merely waits too long reports its own timeout first
    // ("no completion within"), not a lost device.
    opts.vfio_user.reply_timeout = timeout.saturating_mul(2);
    let dev = Device::open_with(name, &opts).with_context(|| format!("opening {name}"))?;
    let per_channel = (len as u64).next_multiple_of(4096);
    if per_channel * dev.channels() as u64 > dev.config().card_mem_bytes() {
        bail!(
            "--size {} is too large for card memory of {}",
            crate::size::show(a.size),
            crate::size::show(dev.config().card_mem_bytes())
        );
    }
    if !a.json {
        println!(
            "{}: self test, {} channels, {} per transfer",
            dev.name(),
            dev.channels(),
            crate::size::show(a.size)
        );
    }
    let mut r = Runner {
        json: a.json,
        outcomes: Vec::new(),
    };
    let t = Tx {
        dev: &dev,
        len,
        timeout,
    };

    r.check("identity", || identity(&dev));
    r.check("registers", || registers(&dev));
    for ch in 0..dev.channels() {
        for d in [Dir::H2c, Dir::C2h, Dir::H2h] {
            r.check(&format!("dma ch{ch} {}", d.name()), || {
                let c = dev.channel(ch)?;
                t.verified(&c, d, 1 + ch as u64)
            });
        }
    }
    r.check("interrupts", || interrupts(&t));
    r.check("fault recovery", || fault_recovery(&t));
    r.check("engine reset", || engine_reset(&t));
    r.check("registration cache", || registration_cache(&t));

    let closed = dev.close();
    let (pass, fail, skip) = (
        r.count(Verdict::Pass),
        r.count(Verdict::Fail),
        r.count(Verdict::Skip),
    );
    if a.json {
        let v: Vec<_> = r
            .outcomes
            .iter()
            .map(|o| {
                serde_json::json!({
                    "name": o.name,
                    "status": o.verdict.name(),
                    "detail": o.detail,
                    "ms": o.ms,
                })
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        println!("selftest: {pass} passed, {fail} failed, {skip} skipped");
    }
    closed.context("closing the device")?;
    if fail > 0 {
        bail!("selftest: {fail} of {} checks failed", r.outcomes.len());
    }
    Ok(())
}

/// PCI ID from config space, ID magic and register contract version.
fn identity(dev: &Device) -> Result<Done> {
    let mut cfg = [0u8; 4];
    dev.backend()
        .config_read(0, &mut cfg)
        .context("reading PCI config space")?;
    let vendor = u16::from_le_bytes([cfg[0], cfg[1]]);
    let device = u16::from_le_bytes([cfg[2], cfg[3]]);
    let want = (fdma_hw::pci::VENDOR_ID, fdma_hw::pci::DEVICE_ID);
    if (vendor, device) != want {
        bail!(
            "PCI id {vendor:04x}:{device:04x}, expected {:04x}:{:04x}",
            want.0,
            want.1
        );
    }
    let id = dev.read_reg(regs::ID.offset)?;
    let magic = regs::ID_MAGIC_F.decode(id) as u16;
    if magic != fdma_hw::ID_MAGIC {
        bail!(
            "ID register {id:#010x}: magic {magic:#06x}, expected {:#06x}",
            fdma_hw::ID_MAGIC
        );
    }
    let (major, minor) = (regs::ID_MAJOR.decode(id), regs::ID_MINOR.decode(id));
    if major != fdma_hw::VERSION_MAJOR as u32 {
        bail!(
            "register contract {major}.{minor}, this tool speaks {}.x",
            fdma_hw::VERSION_MAJOR
        );
    }
    Ok(Done::Pass(format!(
        "PCI {vendor:04x}:{device:04x}, magic {magic:#06x}, contract {major}.{minor}"
    )))
}

/// SCRATCH write/read-back patterns; the identity and capability registers
/// unchanged by a write attempt that goes to the device (bypassing the
/// driver's refusal of read-only writes). They have no side effects.
fn registers(dev: &Device) -> Result<Done> {
    let patterns = [
        0x0000_0000,
        0xffff_ffff,
        0xa5a5_a5a5,
        0x5a5a_5a5a,
        0x0123_4567,
        0xfedc_ba98,
    ];
    let saved = dev.read_reg(regs::SCRATCH.offset)?;
    for p in patterns {
        dev.write_reg(regs::SCRATCH.offset, p)?;
        let got = dev.read_reg(regs::SCRATCH.offset)?;
        if got != p {
            let _ = dev.write_reg(regs::SCRATCH.offset, saved);
            bail!("SCRATCH: wrote {p:#010x}, read back {got:#010x}");
        }
    }
    for i in 0..32 {
        let p = 1u32 << i;
        dev.write_reg(regs::SCRATCH.offset, p)?;
        let got = dev.read_reg(regs::SCRATCH.offset)?;
        if got != p {
            let _ = dev.write_reg(regs::SCRATCH.offset, saved);
            bail!("SCRATCH walking one: wrote {p:#010x}, read back {got:#010x}");
        }
    }
    dev.write_reg(regs::SCRATCH.offset, saved)?;
    let ro = [&regs::ID, &regs::CAP0, &regs::CAP1, &regs::CAP2];
    for r in ro {
        let before = dev.read_reg(r.offset)?;
        dev.backend()
            .region_write(0, r.offset as u64, &(!before).to_le_bytes())
            .with_context(|| format!("writing {} (read-only)", r.name))?;
        let after = dev.read_reg(r.offset)?;
        if after != before {
            bail!(
                "read-only {} changed by a write: {before:#010x} -> {after:#010x}",
                r.name
            );
        }
    }
    Ok(Done::Pass(format!(
        "SCRATCH {} patterns + walking ones; ID, CAP0-2 read-only",
        patterns.len()
    )))
}

/// Verified transfers of one size, bounded in time.
struct Tx<'a> {
    dev: &'a Device,
    len: usize,
    timeout: Duration,
}

impl Tx<'_> {
    /// Wait for `fence` within the limit; a timeout resets the channel so
    /// that the next check starts clean, and fails.
    fn wait(&self, c: &Channel, fence: &fdma::Fence, what: &str) -> Result<()> {
        match fence.wait_timeout(self.timeout) {
            Wait::Signalled(Ok(())) => Ok(()),
            Wait::Signalled(Err(e)) => {
                let _ = c.reset();
                Err(anyhow!("{what}: {e}"))
            }
            Wait::TimedOut => {
                let _ = c.reset();
                bail!(
                    "{what}: no completion within {} ms",
                    self.timeout.as_millis()
                )
            }
        }
    }

    /// One verified copy in direction `d` on channel `c`.
    fn verified(&self, c: &Channel, d: Dir, seed: u64) -> Result<Done> {
        let dev = self.dev;
        let len = self.len;
        let card = c.index() as u64 * (len as u64).next_multiple_of(4096);
        let want = pattern(seed, c.index() as u32, len);
        let src = dev.alloc(len).context("allocating the source buffer")?;
        let dst = dev
            .alloc(len)
            .context("allocating the destination buffer")?;
        let mut job = Job::new();
        match d {
            Dir::H2c => {
                src.write_at(0, &want)?;
                dev.card_write(card, &vec![0u8; len])?;
                job.h2c(&src, 0, card, len);
            }
            Dir::C2h => {
                dev.card_write(card, &want)?;
                job.c2h(card, &dst, 0, len);
            }
            Dir::H2h => {
                src.write_at(0, &want)?;
                job.h2h(&src, 0, &dst, 0, len);
            }
        }
        let t0 = Instant::now();
        let fence = c.submit(&job)?;
        self.wait(c, &fence, d.name())?;
        let us = t0.elapsed().as_micros();
        let got = match d {
            Dir::H2c => {
                let mut g = vec![0u8; len];
                dev.card_read(card, &mut g)?;
                g
            }
            Dir::C2h | Dir::H2h => dst.read_vec(0, len)?,
        };
        verify(d.name(), &got, &want)?;
        Ok(Done::Pass(format!(
            "{} verified in {us} us",
            crate::size::show(len as u64)
        )))
    }
}

/// A job in interrupt mode signals its fence, and the channel's interrupt
/// counter moves.
fn interrupts(t: &Tx<'_>) -> Result<Done> {
    let c = t.dev.channel(0)?;
    let mode = c.mode();
    c.set_mode(IrqMode::Interrupt);
    let irqs0 = c.stats().irqs.load(Ordering::Relaxed);
    let wd0 = c.stats().watchdog_completions.load(Ordering::Relaxed);
    let r = t.verified(&c, Dir::H2c, 100);
    // The counter is updated by the reactor thread: give it a moment.
    let t0 = Instant::now();
    let mut irqs = irqs0;
    while r.is_ok() && t0.elapsed() < t.timeout {
        irqs = c.stats().irqs.load(Ordering::Relaxed);
        if irqs > irqs0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    c.set_mode(mode);
    r?;
    if irqs == irqs0 {
        let wd = c.stats().watchdog_completions.load(Ordering::Relaxed) - wd0;
        bail!(
            "the fence signalled but channel 0 took no interrupt within {} ms \
             ({wd} completions found by the watchdog): check MSI-X routing",
            t.timeout.as_millis()
        );
    }
    Ok(Done::Pass(format!(
        "fence signalled, {} interrupt(s) on channel 0",
        irqs - irqs0
    )))
}

/// A one-shot descriptor error fails its job with a device error, the
/// channel halts, a channel reset restores service.
fn fault_recovery(t: &Tx<'_>) -> Result<Done> {
    let dev = t.dev;
    let fi = match dev.faults() {
        Ok(fi) => fi,
        Err(_) => {
            return Ok(Done::Skip(
                "the card has no fault-injection block (CAP0.FAULT_INJ = 0)".into(),
            ))
        }
    };
    let ch = dev.channels() - 1;
    let c = dev.channel(ch)?;
    let applied0 = fi.applied()?;
    fi.one_shot(ch, OneShot::DescriptorError)?;
    let buf = dev.alloc(t.len)?;
    buf.write_at(0, &pattern(7, 0, t.len))?;
    let mut job = Job::new();
    job.h2c(&buf, 0, 0, t.len);
    let fence = c.submit(&job)?;
    let status = match fence.wait_timeout(t.timeout) {
        Wait::Signalled(s) => s,
        Wait::TimedOut => {
            let _ = c.reset();
            bail!(
                "the faulted job did not signal within {} ms",
                t.timeout.as_millis()
            );
        }
    };
    let code = match status {
        Err(FenceError::Device { code, .. }) => code,
        other => {
            let _ = c.reset();
            bail!("expected a device error from the injected fault, the fence signalled {other:?}");
        }
    };
    let health = c.health();
    if !matches!(health, Health::Halted(_)) {
        let _ = c.reset();
        bail!("after the device error channel {ch} is {health:?}, expected halted");
    }
    let applied = fi.applied()?.wrapping_sub(applied0);
    c.reset().context("resetting the channel")?;
    if c.health() != Health::Running {
        bail!(
            "channel {ch} is {:?} after its reset, expected running",
            c.health()
        );
    }
    t.verified(&c, Dir::H2c, 200)
        .context("transfer after the channel reset")?;
    Ok(Done::Pass(format!(
        "channel {ch}: injected descriptor error -> device error {code} ({}), \
         {applied} fault(s) applied, channel reset, transfer verified",
        fdma_hw::desc::err::name(code)
    )))
}

/// `Device::reset` and a verified transfer on every channel after it.
fn engine_reset(t: &Tx<'_>) -> Result<Done> {
    let t0 = Instant::now();
    t.dev.reset().context("engine reset")?;
    let us = t0.elapsed().as_micros();
    for ch in 0..t.dev.channels() {
        let c = t.dev.channel(ch)?;
        if c.health() != Health::Running {
            bail!("channel {ch} is {:?} after the reset", c.health());
        }
        t.verified(&c, Dir::H2c, 300 + ch as u64)
            .with_context(|| format!("channel {ch} after the reset"))?;
    }
    Ok(Done::Pass(format!(
        "reset in {us} us, a transfer verified on each of {} channels",
        t.dev.channels()
    )))
}

/// Process memory (not a driver buffer) through the registration cache,
/// out to the card and back, twice: registrations the first time, hits the
/// second.
fn registration_cache(t: &Tx<'_>) -> Result<Done> {
    let dev = t.dev;
    let cache = dev.cache()?;
    let c = dev.channel(0)?;
    let len = t.len;
    let want = pattern(400, 0, len);
    // Mappings of their own: ranges that share a page with another
    // registration retire each other (C7), and a heap vector may.
    let src = AnonMap::new(len)?;
    let dst = AnonMap::new(len)?;
    // SAFETY: both mappings are ours and `len` bytes long; no job uses them
    // yet.
    unsafe { std::ptr::copy_nonoverlapping(want.as_ptr(), src.ptr, len) };
    let s0 = cache.stats();
    let r = (|| -> Result<()> {
        for round in 0..2 {
            // SAFETY: as above; the previous round's jobs have signalled.
            unsafe { std::ptr::write_bytes(dst.ptr, 0, len) };
            let mut job = Job::new();
            // SAFETY: `src` is ours, `len` bytes, and only read by the device.
            job.h2c_user(unsafe { std::slice::from_raw_parts(src.ptr, len) }, 0);
            let f = c.submit(&job)?;
            t.wait(&c, &f, "process memory to card")
                .with_context(|| format!("round {round}"))?;
            let mut job = Job::new();
            // SAFETY: `dst` stays mapped, and no reference to it is formed,
            // until the fence has signalled: `Tx::wait` waits for it, and on
            // a timeout resets the channel, which cancels the job and stops
            // the engine. The cache invalidates the range before it is
            // unmapped (below).
            unsafe { job.c2h_user(0, dst.ptr, len) };
            let f = c.submit(&job)?;
            t.wait(&c, &f, "card to process memory")
                .with_context(|| format!("round {round}"))?;
            // SAFETY: the job writing `dst` has signalled.
            let got = unsafe { std::slice::from_raw_parts(dst.ptr, len) }.to_vec();
            verify(&format!("round {round}"), &got, &want)?;
        }
        Ok(())
    })();
    let s = cache.stats();
    // C3: no registration of these ranges may outlive their mappings.
    cache.invalidate(src.ptr, len)?;
    cache.invalidate(dst.ptr, len)?;
    r?;
    Ok(Done::Pass(format!(
        "{} of process memory to the card and back twice, verified; {} registrations, {} hits",
        crate::size::show(len as u64),
        s.registrations - s0.registrations,
        s.hits - s0.hits
    )))
}

/// A private anonymous mapping, unmapped on drop.
struct AnonMap {
    ptr: *mut u8,
    len: usize,
}

impl AnonMap {
    fn new(len: usize) -> Result<AnonMap> {
        // SAFETY: a fresh private anonymous mapping; nothing else is affected.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error()).context("mmap of process memory");
        }
        Ok(AnonMap { ptr: p.cast(), len })
    }
}

impl Drop for AnonMap {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; the cache no longer holds
        // it (invalidated by the user of the mapping).
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// Remove the PCI function and rescan the bus through sysfs, then wait for
/// it to come back.
fn rescan(name: &str, sys: &fdma::pci::Sysfs, timeout: Duration) -> Result<()> {
    let addr = match Target::parse(name)? {
        Target::Sim(p) => bail!(
            "--rescan removes and rescans a PCI device; {} is a simulator \
             (there is no PCI function to rescan): run without --rescan",
            p.display()
        ),
        Target::Pci(a) => a,
    };
    let addr: fdma::pci::PciAddress = addr
        .parse()
        .map_err(|e| anyhow!("{addr}: {e}"))
        .context("PCI address")?;
    if !nix::unistd::geteuid().is_root() {
        bail!("--rescan writes /sys/bus/pci/devices/{addr}/remove and /sys/bus/pci/rescan: run as root (sudo)");
    }
    let dir = sys.device_dir(&addr);
    if !dir.exists() {
        bail!("no PCI device {addr} ({} does not exist)", dir.display());
    }
    eprintln!("fdma: removing {addr} and rescanning the PCI bus");
    std::fs::write(dir.join("remove"), "1")
        .with_context(|| format!("writing {}", dir.join("remove").display()))?;
    let rescan = sys.root().join("sys/bus/pci/rescan");
    std::fs::write(&rescan, "1").with_context(|| format!("writing {}", rescan.display()))?;
    let t0 = Instant::now();
    let dev = loop {
        if let Ok(d) = sys.device(&addr) {
            if d.is_vfio() {
                break d;
            }
            if t0.elapsed() > timeout {
                bail!(
                    "{addr} came back bound to {}, not vfio-pci: run `fdma bind {addr}` and \
                     then `fdma selftest` without --rescan",
                    d.driver.as_deref().unwrap_or("no driver")
                );
            }
        } else if t0.elapsed() > timeout {
            bail!(
                "{addr} did not reappear within {} ms of the rescan",
                timeout.as_millis()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    eprintln!(
        "fdma: {addr} is back ({:04x}:{:04x}, vfio-pci)",
        dev.vendor, dev.device
    );
    Ok(())
}
