//! `fdma reg`: read, write and dump BAR0 registers by name or offset, with
//! their fields decoded. Reads use an inspect open, so they never change the
//! card; see [`WRITE_HELP`] for which open a write uses.
//!
//! The register formatting here is shared with `fdma info --regs`.

use anyhow::{bail, Context, Result};
use fdma::Device;
use fdma_hw::regs::{self, Located};
use fdma_hw::EngineConfig;
use serde_json::{json, Map, Value};

/// Examples shown by `fdma reg --help`.
pub const REG_HELP: &str = "\
Registers are named as in the register map: global ones by name (GCTRL,
SCRATCH, FI_STALL), channel ones as CHn.NAME (CH0.TAIL, CH2.STATUS), case
insensitive, or by BAR0 offset in hex (0x1c, 0x100c). `fdma reg dump` lists
them all.

Examples:
  fdma reg read ID CAP0            decode identity and capabilities
  fdma reg read 0x1c               a register by offset
  fdma reg read --json CH0.STATUS  machine-readable
  fdma reg dump --channel 1        channel 1's block only
  fdma reg dump --json             every register, as a JSON array
  fdma reg write SCRATCH 0x1234    write, then print the value read back";

/// Which open `fdma reg write` uses, shown by `fdma reg write --help`.
pub const WRITE_HELP: &str = "\
Read-only registers are refused. SCRATCH, RD_OUTSTANDING_MAX, FI_STALL and
FI_ONESHOT are written through an inspect open, which leaves the rest of the
card as it is. Any other writable register (control, rings, doorbells,
interrupt settings) needs a full open: the driver soft-resets the engine
first and disables it again when the command ends, so such a write lasts
only for the command; use it to poke a card, not to configure one.

Examples:
  fdma reg write SCRATCH 0x1234        inspect open
  fdma reg write FI_STALL 0x2          stall channel 1 (inspect open)
  fdma reg write CH0.IRQ_COUNT 8       full open: resets the engine first";

/// Options of `fdma reg`.
#[derive(clap::Args, Debug)]
pub struct RegArgs {
    #[command(subcommand)]
    cmd: RegCmd,
}

#[derive(clap::Subcommand, Debug)]
enum RegCmd {
    /// Read registers by name or offset and decode their fields (inspect
    /// open: the card is not changed).
    Read {
        /// Registers: NAME, CHn.NAME or a hex offset (0x1c).
        #[arg(required = true, value_name = "REGISTER")]
        names: Vec<String>,
        /// Print a JSON array of {name, offset, access, value, fields}.
        #[arg(long)]
        json: bool,
    },
    /// Write a register, then print the value read back.
    #[command(after_help = WRITE_HELP)]
    Write {
        /// The register: NAME, CHn.NAME or a hex offset (0x1c).
        #[arg(value_name = "REGISTER")]
        name: String,
        /// The value: decimal or 0x hex (`_` separators allowed), 32 bits.
        value: String,
    },
    /// Read and decode every register: global, fault injection (when the
    /// card has it) and every channel (inspect open).
    Dump {
        /// Only this channel's block.
        #[arg(long)]
        channel: Option<usize>,
        /// Print a JSON array of {name, offset, access, value, fields}.
        #[arg(long)]
        json: bool,
    },
}

/// Run `fdma reg` against `name`.
pub fn run(name: &str, a: &RegArgs) -> Result<()> {
    match &a.cmd {
        RegCmd::Read { names, json } => {
            let dev = inspect(name)?;
            let c = *dev.config();
            let found = names
                .iter()
                .map(|n| resolve(n, &c))
                .collect::<Result<Vec<_>>>()?;
            show(&dev, &found, *json)
        }
        RegCmd::Dump { channel, json } => {
            let dev = inspect(name)?;
            let c = *dev.config();
            if let Some(ch) = channel {
                if *ch >= c.channels as usize {
                    bail!(
                        "no channel {ch}: the engine has {} channels (0..={})",
                        c.channels,
                        c.channels.saturating_sub(1)
                    );
                }
            }
            let sel: Vec<Located> = present(&c)
                .into_iter()
                .filter(|l| channel.is_none() || l.channel == *channel)
                .collect();
            show(&dev, &sel, *json)
        }
        RegCmd::Write { name: reg, value } => write(name, reg, value),
    }
}

fn inspect(name: &str) -> Result<Device> {
    Device::inspect(name).with_context(|| format!("opening {name} for inspection"))
}

fn write(name: &str, reg: &str, value: &str) -> Result<()> {
    let v = parse_value(value)?;
    // Decide the open from the register map alone: one open per command (a
    // simulator serves one client at a time and notices a close only
    // asynchronously, so an inspect open followed by a full one can be
    // refused). Names that match no card are resolved, and refused, on an
    // inspect open below.
    let full = match regs::lookup(reg, regs::MAX_CHANNELS) {
        Some(l) if !l.reg.access.writable() => return Err(read_only(&l)),
        Some(l) if !fdma::INSPECT_WRITABLE.contains(&l.reg.name) => Some(l.display_name()),
        _ => None,
    };
    let dev = if let Some(full) = full {
        eprintln!(
            "fdma: {full} needs a full open: the engine is reset first and disabled when this command ends"
        );
        Device::open(name).with_context(|| format!("opening {name}"))?
    } else {
        inspect(name)?
    };
    let l = resolve(reg, dev.config())?;
    if !l.reg.access.writable() {
        return Err(read_only(&l));
    }
    dev.write_reg(l.offset, v)
        .with_context(|| format!("writing {v:#010x} to {}", l.display_name()))?;
    let back = dev
        .read_reg(l.offset)
        .with_context(|| format!("reading {} back", l.display_name()))?;
    println!("{}", format_line(&l, back));
    Ok(())
}

fn read_only(l: &Located) -> anyhow::Error {
    anyhow::anyhow!(
        "register {} ({:#x}) is read-only ({}): it cannot be written",
        l.display_name(),
        l.offset,
        l.reg.access.name()
    )
}

/// The registers `c`'s card has: the fault-injection block only when
/// `CAP0.FAULT_INJ` is set.
fn present(c: &EngineConfig) -> Vec<Located> {
    regs::all_registers(c.channels as usize)
        .into_iter()
        .filter(|l| c.fault_injection || !is_fault(l))
        .collect()
}

fn is_fault(l: &Located) -> bool {
    l.channel.is_none() && regs::FAULT.iter().any(|r| r.offset == l.offset)
}

/// Find a register of `c`'s card by name or hex offset, or fail naming
/// close matches.
pub fn resolve(s: &str, c: &EngineConfig) -> Result<Located> {
    let channels = c.channels as usize;
    if let Some(l) = regs::lookup(s, channels) {
        if !c.fault_injection && is_fault(&l) {
            bail!(
                "register {}: this card has no fault-injection block (CAP0.FAULT_INJ is 0)",
                l.display_name()
            );
        }
        return Ok(l);
    }
    let t = s.trim();
    if t.starts_with("0x") || t.starts_with("0X") {
        bail!(
            "no register at offset {t}: offsets are BAR0 byte offsets of a register \
             (`fdma reg dump` lists them)"
        );
    }
    let close = suggestions(t, &present(c));
    if close.is_empty() {
        bail!("unknown register {t:?} (`fdma reg dump` lists every register)");
    }
    bail!("unknown register {t:?}; did you mean: {}", close.join(", "))
}

/// Names close to `s`: ones that contain it, that it contains (CH9.TAIL ->
/// CHn.TAIL), or that share a prefix of three characters or more.
fn suggestions(s: &str, all: &[Located]) -> Vec<String> {
    let q = s.to_ascii_uppercase();
    let bare = q.rsplit('.').next().unwrap_or(&q);
    let mut out: Vec<String> = Vec::new();
    for l in all {
        let n = l.display_name();
        let common = n.chars().zip(q.chars()).take_while(|(a, b)| a == b).count();
        let close = (!q.is_empty() && n.contains(&q))
            || (bare.len() >= 2 && l.reg.name.contains(bare))
            || common >= 3;
        if close && !out.contains(&n) {
            out.push(n);
        }
    }
    out.truncate(12);
    out
}

/// Parse a register value: decimal or 0x hex, `_` separators allowed, at
/// most 32 bits.
fn parse_value(s: &str) -> Result<u32> {
    let t: String = s.trim().chars().filter(|&c| c != '_').collect();
    let (digits, radix) = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        Some(h) => (h, 16),
        None => (t.as_str(), 10),
    };
    match u64::from_str_radix(digits, radix) {
        Ok(v) => u32::try_from(v)
            .map_err(|_| anyhow::anyhow!("value {s} does not fit in a 32-bit register")),
        Err(e) if *e.kind() == std::num::IntErrorKind::PosOverflow => {
            bail!("value {s} does not fit in a 32-bit register")
        }
        Err(_) => bail!("bad value {s:?}: expected decimal or 0x hex, e.g. 4660 or 0x1234"),
    }
}

/// One field value: bit masks (fields documented per "bit n") and the magic
/// in hex, everything else in decimal.
fn field_value(f: &regs::Field, v: u32) -> String {
    let x = f.decode(v);
    let hex = f.name == "MAGIC" || f.doc.to_ascii_lowercase().contains("bit n ");
    if hex && x >= 10 {
        format!("{x:#x}")
    } else {
        x.to_string()
    }
}

/// One register as a line: name, offset, raw value, and its fields decoded
/// (`NAME=value`), or the value in decimal when it has none.
pub fn format_line(l: &Located, v: u32) -> String {
    let decoded = if l.reg.fields.is_empty() {
        format!("({v})")
    } else {
        l.reg
            .fields
            .iter()
            .map(|f| format!("{}={}", f.name, field_value(f, v)))
            .collect::<Vec<_>>()
            .join(" ")
    };
    format!(
        "{:<18} {:#07x}  {:#010x}  {decoded}",
        l.display_name(),
        l.offset,
        v
    )
}

/// One register as a JSON object: {name, offset, access, value, fields}.
pub fn to_json(l: &Located, v: u32) -> Value {
    let fields: Map<String, Value> = l
        .reg
        .fields
        .iter()
        .map(|f| (f.name.to_string(), json!(f.decode(v))))
        .collect();
    json!({
        "name": l.display_name(),
        "offset": l.offset,
        "access": l.reg.access.name(),
        "value": v,
        "fields": fields,
    })
}

/// Read `sel` from `dev` (in the order given: a latched high half reads what
/// its low half, read before it, latched) and print them.
pub fn show(dev: &Device, sel: &[Located], json: bool) -> Result<()> {
    let mut vals = Vec::with_capacity(sel.len());
    for l in sel {
        let v = dev
            .read_reg(l.offset)
            .with_context(|| format!("reading {}", l.display_name()))?;
        vals.push(v);
    }
    if json {
        let arr: Vec<Value> = sel.iter().zip(&vals).map(|(l, &v)| to_json(l, v)).collect();
        println!("{}", serde_json::to_string_pretty(&arr)?);
    } else {
        for (l, &v) in sel.iter().zip(&vals) {
            println!("{}", format_line(l, v));
        }
    }
    Ok(())
}

/// Every register `dev` has, read, as a JSON array (`fdma info --regs --json`).
pub fn all_json(dev: &Device) -> Result<Value> {
    let sel = present(dev.config());
    let mut arr = Vec::with_capacity(sel.len());
    for l in &sel {
        let v = dev
            .read_reg(l.offset)
            .with_context(|| format!("reading {}", l.display_name()))?;
        arr.push(to_json(l, v));
    }
    Ok(Value::Array(arr))
}

/// Every register `dev` has, read and printed (`fdma info --regs`).
pub fn show_all(dev: &Device) -> Result<()> {
    show(dev, &present(dev.config()), false)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_parse_in_decimal_and_hex_up_to_32_bits() {
        assert_eq!(parse_value("4660").unwrap(), 0x1234);
        assert_eq!(parse_value("0x1234").unwrap(), 0x1234);
        assert_eq!(parse_value("0xffff_ffff").unwrap(), u32::MAX);
        assert!(parse_value("0x1_0000_0000")
            .unwrap_err()
            .to_string()
            .contains("32-bit"));
        assert!(parse_value("99999999999999999999999")
            .unwrap_err()
            .to_string()
            .contains("32-bit"));
        assert!(parse_value("12q").is_err());
        assert!(parse_value("").is_err());
    }

    #[test]
    fn unknown_names_suggest_close_ones() {
        let c = EngineConfig::DEFAULT;
        let e = resolve("SCRATC", &c).unwrap_err().to_string();
        assert!(e.contains("SCRATCH"), "{e}");
        let e = resolve("CH99.TAIL", &c).unwrap_err().to_string();
        assert!(e.contains("CH0.TAIL"), "{e}");
        assert!(resolve("0x3", &c).is_err());
        assert_eq!(resolve("ch1.head", &c).unwrap().display_name(), "CH1.HEAD");
    }

    #[test]
    fn write_help_names_the_registers_the_driver_writes_in_inspect_mode() {
        for r in fdma::INSPECT_WRITABLE {
            assert!(WRITE_HELP.contains(r), "{r} missing from WRITE_HELP");
        }
    }

    #[test]
    fn lines_decode_fields() {
        let l = resolve("ID", &EngineConfig::DEFAULT).unwrap();
        let s = format_line(&l, fdma_hw::id_value());
        assert!(
            s.contains(&format!("MAGIC={:#x}", fdma_hw::ID_MAGIC)),
            "{s}"
        );
        assert!(
            s.contains(&format!("MAJOR={}", fdma_hw::VERSION_MAJOR)),
            "{s}"
        );
    }
}
