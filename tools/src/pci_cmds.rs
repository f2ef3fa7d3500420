//! `fdma list`, `fdma bind`, `fdma unbind`: find the card on a lab host and
//! hand it to vfio-pci (and to a user), or give it back to its host driver.
//! `fdma list` also shows the user's running simulators, from their
//! announcements (`fdma_vfio_user::announce`), so it needs no simulator in
//! this build.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use fdma::pci::{self, PciAddress, PciDevice, PciError, Sysfs};
use fdma_vfio_user::announce::{self, Announcement};

use crate::size;

/// The sysfs to use: the system's, or a fake tree for tests.
pub fn sysfs(root: Option<PathBuf>) -> Sysfs {
    root.map_or_else(Sysfs::system, Sysfs::at)
}

/// A PCI vendor ID and optionally a device ID, `VVVV:DDDD` or `VVVV` (hex).
#[derive(Debug, Clone, Copy)]
pub struct PciId(u16, Option<u16>);

fn parse_id(s: &str) -> Result<PciId, String> {
    let hex = |t: &str| {
        let t = t.trim_start_matches("0x");
        u16::from_str_radix(t, 16).map_err(|_| format!("{s:?}: expected hex VVVV:DDDD or VVVV"))
    };
    match s.split_once(':') {
        Some((v, d)) => Ok(PciId(hex(v)?, Some(hex(d)?))),
        None => Ok(PciId(hex(s)?, None)),
    }
}

/// Options of `fdma list`.
#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// List every PCI function, not only fdma cards.
    #[arg(long, conflicts_with = "id")]
    all: bool,
    /// List functions with these IDs instead of the fdma card's (hex).
    #[arg(long, value_name = "VVVV:DDDD", value_parser = parse_id)]
    id: Option<PciId>,
    /// Print a JSON array of the functions and simulators instead of the
    /// tables (notes go to stderr). Each entry has `kind` (`pci` or `sim`)
    /// and `device` (the name for --device).
    #[arg(long)]
    json: bool,
}

/// Options of `fdma bind`.
#[derive(clap::Args, Debug)]
pub struct BindArgs {
    /// The PCI function, e.g. 0000:01:00.0 (see `fdma list`).
    #[arg(value_name = "ADDR")]
    addr: PciAddress,
    /// Also hand the device's IOMMU group (/dev/vfio/N) to this user, so
    /// that they can use the card without root.
    #[arg(long, value_name = "USER")]
    user: Option<String>,
    /// The locked memory the user's DMA buffers need, for the limits advice
    /// (VFIO counts every mapped buffer against RLIMIT_MEMLOCK).
    #[arg(long, value_name = "SIZE", default_value = "256M", value_parser = size::parse)]
    memlock: u64,
}

/// Options of `fdma unbind`.
#[derive(clap::Args, Debug)]
pub struct UnbindArgs {
    /// The PCI function, e.g. 0000:01:00.0.
    #[arg(value_name = "ADDR")]
    addr: PciAddress,
}

/// The running simulators, for `fdma list`: none when `--id` names
/// another device than the card; a runtime directory that cannot be read
/// is a warning.
fn simulators(a: &ListArgs) -> Vec<Announcement> {
    let card = (fdma_hw::pci::VENDOR_ID, fdma_hw::pci::DEVICE_ID);
    if let Some(PciId(v, d)) = a.id {
        if v != card.0 || d.is_some_and(|d| d != card.1) {
            return Vec::new();
        }
    }
    announce::list().unwrap_or_else(|e| {
        eprintln!("fdma: warning: cannot list running simulators: {e}");
        Vec::new()
    })
}

/// Who holds a busy simulator: `pid N (comm)`, `pid N` or nothing.
fn client(s: &Announcement) -> String {
    match s.client_pid {
        Some(pid) => match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
            Ok(c) if !c.trim().is_empty() => format!("pid {pid} ({})", c.trim()),
            _ => format!("pid {pid}"),
        },
        None => String::new(),
    }
}

/// `1h02m`, `3m05s`, `12s`.
fn uptime(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs / 60 % 60),
    }
}

fn sim_json(s: &Announcement) -> serde_json::Value {
    serde_json::json!({
        "kind": "sim",
        "device": s.device(),
        "socket": s.socket,
        "pid": s.pid,
        "started": s.started,
        "uptime_s": s.uptime_secs(),
        "busy": s.busy,
        "client_pid": s.client_pid,
        "channels": s.channels,
        "options": s.options,
        "ready": !s.busy,
        "reason": s.busy.then(|| {
            let who = client(s);
            if who.is_empty() { "busy: another client is connected".to_string() } else { format!("busy: {who} is connected") }
        }),
    })
}

/// Left-aligned columns, two spaces apart, the last unpadded.
fn table<const N: usize>(head: [&str; N], rows: Vec<[String; N]>) -> String {
    let width = |i: usize| {
        rows.iter()
            .map(|r| r[i].len())
            .chain([head[i].len()])
            .max()
            .unwrap_or(0)
    };
    let w: Vec<usize> = (0..N).map(width).collect();
    let mut t = String::new();
    for r in std::iter::once(head.map(String::from)).chain(rows) {
        let mut line = String::new();
        for (i, cell) in r.iter().enumerate() {
            if i + 1 == N {
                line += cell;
            } else {
                line += &format!("{cell:<w$}  ", w = w[i]);
            }
        }
        t += line.trim_end();
        t.push('\n');
    }
    t
}

fn sim_table(sims: &[Announcement]) -> String {
    let rows = sims
        .iter()
        .map(|s| {
            let state = match (s.busy, client(s)) {
                (false, _) => "free".to_string(),
                (true, w) if w.is_empty() => "busy".to_string(),
                (true, w) => format!("busy: {w}"),
            };
            let mut opts = vec![format!("{} channels", s.channels)];
            opts.extend(s.options.iter().cloned());
            [
                s.device(),
                s.pid.to_string(),
                uptime(s.uptime_secs()),
                state,
                opts.join(", "),
            ]
        })
        .collect();
    table(["SIMULATOR", "PID", "UPTIME", "CLIENT", "OPTIONS"], rows)
}

/// Print the matching PCI functions and whether fdma can use each, then
/// the running simulators.
pub fn list(sys: &Sysfs, a: &ListArgs) -> Result<()> {
    let card = (fdma_hw::pci::VENDOR_ID, fdma_hw::pci::DEVICE_ID);
    let filter = match (a.all, a.id) {
        (true, _) => None,
        (false, Some(PciId(v, d))) => Some((v, d)),
        (false, None) => Some((card.0, Some(card.1))),
    };
    let devs = sys.list(filter).context("listing PCI devices")?;
    let sims = simulators(a);
    if !sys.iommu_enabled() {
        let note = "note: the IOMMU is off (no IOMMU groups): enable VT-d/AMD-Vi in the firmware \
                    and add `intel_iommu=on iommu=pt` or `amd_iommu=on iommu=pt` to the kernel \
                    command line";
        if a.json {
            eprintln!("{note}");
        } else {
            println!("{note}");
        }
    }
    if a.json {
        let arr: Vec<serde_json::Value> = devs
            .iter()
            .map(|d| {
                let ready = readiness(sys, d);
                let reason = ready.strip_prefix("no: ").map(str::to_string);
                serde_json::json!({
                    "kind": "pci",
                    "device": d.address.to_string(),
                    "address": d.address.to_string(),
                    "vendor": format!("{:04x}", d.vendor),
                    "device": format!("{:04x}", d.device),
                    "driver": d.driver,
                    "iommu_group": d.iommu_group,
                    "ready": reason.is_none(),
                    "reason": reason,
                })
            })
            .chain(sims.iter().map(sim_json))
            .collect();
        return print(serde_json::to_string_pretty(&arr)? + "\n");
    }
    let mut text = String::new();
    if devs.is_empty() {
        text += &match filter {
            None => "no PCI functions on this host\n".to_string(),
            Some((v, d)) => {
                let id = d.map_or(format!("{v:04x}"), |d| format!("{v:04x}:{d:04x}"));
                let what = if (v, d) == (card.0, Some(card.1)) {
                    " (the fdma card)"
                } else {
                    ""
                };
                format!(
                    "no PCI function with ID {id}{what}; `fdma list --all` shows every function\n"
                )
            }
        };
    } else {
        text += &pci_table(sys, &devs);
    }
    if !sims.is_empty() {
        text.push('\n');
        text += &sim_table(&sims);
    }
    print(text)
}

/// Write to stdout; a listing piped into `head` is not an error.
fn print(text: String) -> Result<()> {
    match std::io::stdout().lock().write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn pci_table(sys: &Sysfs, devs: &[PciDevice]) -> String {
    let rows: Vec<[String; 5]> = devs
        .iter()
        .map(|d| {
            [
                d.address.to_string(),
                format!("{:04x}:{:04x}", d.vendor, d.device),
                d.driver.clone().unwrap_or_else(|| "-".into()),
                d.iommu_group.map_or("-".into(), |g| g.to_string()),
                readiness(sys, d),
            ]
        })
        .collect();
    table(["ADDRESS", "ID", "DRIVER", "GROUP", "READY FOR FDMA"], rows)
}

/// The "ready for fdma" column: bound to vfio-pci with a viable group, or
/// a short reason why not.
fn readiness(sys: &Sysfs, d: &PciDevice) -> String {
    match sys.check_bound_and_viable(d) {
        Ok(_) => "yes".into(),
        Err(PciError::NotBoundToVfio { address, .. }) => format!("no: `fdma bind {address}`"),
        Err(PciError::IommuOff { .. } | PciError::NoIommuGroup { .. }) => {
            "no: no IOMMU group".into()
        }
        Err(PciError::GroupNotViable { blockers, .. }) => {
            let who: Vec<String> = blockers.iter().map(|b| b.address.to_string()).collect();
            format!("no: group shared with {}", who.join(", "))
        }
        Err(e) => format!("no: {e}"),
    }
}

/// Bind a function to vfio-pci, optionally hand it to a user.
pub fn bind(sys: &Sysfs, a: &BindArgs) -> Result<()> {
    let addr = a.addr;
    let r = sys.bind_vfio(&addr)?;
    match (&r.previous_driver, r.already_bound) {
        (_, true) => println!("{addr}: already bound to vfio-pci"),
        (Some(prev), false) => println!("{addr}: bound to vfio-pci (was {prev})"),
        (None, false) => println!("{addr}: bound to vfio-pci (had no driver)"),
    }
    // Binding worked; whether the group can be opened is a separate matter
    // that binding the other members fixes.
    let dev = sys.device(&addr)?;
    if let Err(e) = sys.check_bound_and_viable(&dev) {
        eprintln!("fdma: warning: {e}");
    }
    if let Some(name) = &a.user {
        let user = nix::unistd::User::from_name(name)
            .with_context(|| format!("looking up user {name:?}"))?
            .with_context(|| format!("no user {name:?} on this host"))?;
        let info = sys.give_to_user(&addr, user.uid.as_raw(), user.gid.as_raw())?;
        println!(
            "{}: owner now {name} (uid {}); /dev/vfio/vfio is open to everyone. \
             This lasts until the group leaves vfio-pci or the host reboots.",
            info.dev_path.display(),
            user.uid
        );
        let kib = a.memlock.div_ceil(1024);
        println!(
            "{name} needs a locked-memory limit of at least {} for DMA buffers:\n  \
             add to /etc/security/limits.conf:  {name} - memlock {kib}\n  \
             then log in again; `ulimit -l` must show {kib} or more (or unlimited)",
            size::show(a.memlock)
        );
    }
    if let Err(e) = pci::check_memlock(a.memlock) {
        eprintln!("fdma: warning: for this process: {e}");
    }
    Ok(())
}

/// Give a function back from vfio-pci to its host driver.
pub fn unbind(sys: &Sysfs, a: &UnbindArgs) -> Result<()> {
    let addr = a.addr;
    if sys.device(&addr)?.is_vfio() {
        eprintln!("{addr}: releasing from vfio-pci (waits until every program using it closes it)");
    }
    let r = sys.unbind_vfio(&addr)?;
    let now = match &r.driver {
        Some(d) => format!("bound to {d}"),
        None => "without a driver (no host driver claimed it)".into(),
    };
    if r.was_bound {
        println!("{addr}: released from vfio-pci; now {now}");
    } else {
        println!("{addr}: not on vfio-pci, nothing to do; {now}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_ids() {
        let PciId(v, d) = parse_id("1234:fd3a").unwrap();
        assert_eq!((v, d), (0x1234, Some(0xfd3a)));
        let PciId(v, d) = parse_id("8086").unwrap();
        assert_eq!((v, d), (0x8086, None));
        assert!(parse_id("12345").is_err());
        assert!(parse_id("zz:00").is_err());
    }
}
