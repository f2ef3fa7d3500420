//! `fdma reg` against the built-in simulator. Each command starts its own
//! private simulator, so nothing persists from one command to the next.

mod common;

use common::*;

use fdma_hw::regs;

#[test]
fn read_id_decodes_magic_and_version() {
    let out = ok(&["reg", "read", "ID"]);
    let line = out
        .lines()
        .find(|l| l.starts_with("ID "))
        .unwrap_or_else(|| panic!("no ID line:\n{out}"));
    assert!(
        line.contains(&format!("{:#010x}", fdma_hw::id_value())),
        "{line}"
    );
    for want in [
        format!("MAGIC={:#x}", fdma_hw::ID_MAGIC),
        format!("MAJOR={}", fdma_hw::VERSION_MAJOR),
        format!("MINOR={}", fdma_hw::VERSION_MINOR),
    ] {
        assert!(line.contains(&want), "{want} not in {line}");
    }
}

#[test]
fn read_by_offset_and_several_at_once() {
    let out = ok(&["reg", "read", "0x1c", "ch1.status"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].starts_with("SCRATCH "), "{out}");
    assert!(lines[0].contains(&format!("{:#07x}", regs::SCRATCH.offset)));
    assert!(lines[1].starts_with("CH1.STATUS "), "{out}");
    assert!(lines[1].contains("STATE=0") && lines[1].contains("ERR=0"));
}

#[test]
fn read_json_is_an_array_of_decoded_registers() {
    let out = ok(&["reg", "read", "--json", "ID"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let r = &v.as_array().expect("array")[0];
    assert_eq!(r["name"], "ID");
    assert_eq!(r["offset"], regs::ID.offset);
    assert_eq!(r["value"], fdma_hw::id_value());
    assert_eq!(r["fields"]["MAGIC"], fdma_hw::ID_MAGIC);
    assert_eq!(r["fields"]["MAJOR"], fdma_hw::VERSION_MAJOR);
}

#[test]
fn write_scratch_prints_the_value_read_back() {
    let out = ok(&["reg", "write", "SCRATCH", "0x1234"]);
    assert!(out.starts_with("SCRATCH "), "{out}");
    assert!(out.contains("0x00001234"), "{out}");
    // Decimal works too.
    let out = ok(&["reg", "write", "scratch", "4660"]);
    assert!(out.contains("0x00001234"), "{out}");
}

#[test]
fn write_needing_a_full_open_works_and_says_so() {
    let o = fdma(&["reg", "write", "CH0.IRQ_COUNT", "8"]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("full open"), "{err}");
    assert!(out.starts_with("CH0.IRQ_COUNT ") && out.contains("THRESHOLD=8"));
}

#[test]
fn bad_writes_and_names_fail_clearly() {
    let err = fails(&["reg", "write", "ID", "1"]);
    assert!(
        err.contains("ID") && err.contains("read-only") && err.contains("RO"),
        "{err}"
    );
    let err = fails(&["reg", "write", "SCRATCH", "0x1_0000_0000"]);
    assert!(err.contains("32-bit"), "{err}");
    let err = fails(&["reg", "write", "SCRATCH", "twelve"]);
    assert!(err.contains("decimal or 0x hex"), "{err}");
    let err = fails(&["reg", "read", "NOPE"]);
    assert!(err.contains("unknown register \"NOPE\""), "{err}");
    let err = fails(&["reg", "read", "SCRATC"]);
    assert!(
        err.contains("did you mean") && err.contains("SCRATCH"),
        "{err}"
    );
    let err = fails(&["reg", "read", "0x2"]);
    assert!(err.contains("no register at offset 0x2"), "{err}");
    let err = fails(&["reg", "dump", "--channel", "99"]);
    assert!(err.contains("no channel 99"), "{err}");
}

#[test]
fn dump_json_has_every_register_of_every_channel() {
    let out = ok(&["reg", "dump", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    let arr = v.as_array().expect("array");
    let names: Vec<&str> = arr.iter().map(|r| r["name"].as_str().unwrap()).collect();
    let cap0 = arr.iter().find(|r| r["name"] == "CAP0").expect("CAP0");
    let channels = cap0["fields"]["CHANNELS"].as_u64().unwrap() as usize;
    assert!(channels >= 1);
    for r in regs::GLOBAL {
        assert!(names.contains(&r.name), "{} missing", r.name);
    }
    let fault = cap0["fields"]["FAULT_INJ"] == 1;
    if fault {
        for r in regs::FAULT {
            assert!(names.contains(&r.name), "{} missing", r.name);
        }
    }
    for ch in 0..channels {
        for r in regs::CHANNEL {
            let n = format!("CH{ch}.{}", r.name);
            assert!(names.contains(&n.as_str()), "{n} missing");
        }
    }
    assert_eq!(
        arr.len(),
        regs::GLOBAL.len()
            + if fault { regs::FAULT.len() } else { 0 }
            + channels * regs::CHANNEL.len()
    );
}

#[test]
fn dump_one_channel() {
    let out = ok(&["reg", "dump", "--channel", "1"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), regs::CHANNEL.len(), "{out}");
    assert!(lines.iter().all(|l| l.starts_with("CH1.")), "{out}");
}
