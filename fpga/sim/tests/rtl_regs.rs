//! Register behaviour of the RTL: reset values, access types, latching
//! counters, self-clearing bits — all checked against the hw description.
mod common;
use common::*;
use fdma_hw::regs::{self, all_registers, Access, Reset};
use fdma_hw::EngineConfig;

fn expected_config_reset(name: &str, channel: Option<usize>, c: &EngineConfig) -> u32 {
    match (name, channel) {
        ("CAP0", None) => c.cap0(),
        ("CAP1", None) => c.cap1(),
        ("CAP2", None) => c.cap2(),
        ("ERR_VEC", None) => c.channels as u32,
        ("IRQ_VEC", Some(ch)) => ch as u32,
        _ => panic!("no configured reset value known for {name}"),
    }
}

#[test]
fn every_register_has_its_reset_value() {
    let mut b = Bench::new(0);
    let c = *b.card.engine();
    for l in all_registers(c.channels as usize) {
        let v = b.card.reg_read(&mut b.host, l.offset);
        match l.reg.reset {
            Reset::Value(x) => assert_eq!(v, x, "{} reset value", l.display_name()),
            Reset::Config => assert_eq!(
                v,
                expected_config_reset(l.reg.name, l.channel, &c),
                "{}",
                l.display_name()
            ),
            Reset::Running => {}
        }
    }
}

#[test]
fn read_only_registers_ignore_writes_and_plain_rw_registers_hold_values() {
    let mut b = Bench::new(0);
    let c = *b.card.engine();
    // Registers whose writes have side effects are exercised by their own tests.
    let side_effects = [
        "GCTRL",
        "CTRL",
        "TAIL",
        "FI_STALL",
        "FI_ONESHOT",
        "RD_OUTSTANDING_MAX",
    ];
    for l in all_registers(c.channels as usize) {
        if side_effects.contains(&l.reg.name) || matches!(l.reg.reset, Reset::Running) {
            continue;
        }
        let before = b.card.reg_read(&mut b.host, l.offset);
        let pattern = 0xA5A5_5A5A ^ l.offset;
        b.card.reg_write(&mut b.host, l.offset, pattern);
        let after = b.card.reg_read(&mut b.host, l.offset);
        match l.reg.access {
            Access::Ro => assert_eq!(after, before, "{} is read-only", l.display_name()),
            Access::Rw => {
                let mask = if l.reg.fields.is_empty() {
                    u32::MAX
                } else {
                    l.reg.fields.iter().fold(0, |m, f| m | f.mask())
                };
                assert_eq!(
                    after & mask,
                    pattern & mask,
                    "{} holds what was written",
                    l.display_name()
                );
            }
        }
    }
}

#[test]
fn unmapped_offsets_read_zero() {
    let mut b = Bench::new(0);
    for off in [
        0x0F0u32,
        0x1FC,
        0x0800,
        0x1000 + 0x3C,
        0x1000 + 15 * 0x100,
        0xFFFC,
    ] {
        assert_eq!(b.card.reg_read(&mut b.host, off), 0, "offset {off:#x}");
    }
}

#[test]
fn cycle_counter_runs_and_latches_high_half() {
    let mut b = Bench::new(0);
    let lo1 = b.rd(&regs::CYCLE_LO) as u64 | (b.rd(&regs::CYCLE_HI) as u64) << 32;
    let lo2 = b.rd(&regs::CYCLE_LO) as u64 | (b.rd(&regs::CYCLE_HI) as u64) << 32;
    assert!(
        lo2 > lo1,
        "device time advances with every clocked cycle ({lo1} -> {lo2})"
    );
    assert!(lo2 - lo1 < 16);
}

#[test]
fn engine_reports_quiescent_when_idle_and_enabled() {
    let mut b = Bench::new(0);
    b.wr(&regs::GCTRL, regs::GCTRL_ENABLE.encode(1));
    b.run();
    let g = b.rd(&regs::GSTATUS);
    assert_eq!(regs::GSTATUS_ENABLED.decode(g), 1);
    assert_eq!(regs::GSTATUS_QUIESCENT.decode(g), 1);
    assert!(b.card.is_quiescent());
}

#[test]
fn soft_reset_restores_reset_values() {
    let mut b = Bench::new(4096);
    b.wr(&regs::SCRATCH, 77);
    b.start_channel(1, 16);
    b.cwr(1, &regs::CH_IRQ_TIMER, 1234);
    b.submit(
        1,
        &[job(
            fdma_hw::desc::Direction::HostToHost,
            DATA_BASE,
            DATA_BASE + 2048,
            64,
        )],
    );
    assert_eq!(b.crd(1, &regs::CH_HEAD), 1);
    b.wr(&regs::GCTRL, regs::GCTRL_SOFT_RESET.encode(1));
    b.run();
    let g = b.rd(&regs::GSTATUS);
    assert_eq!(regs::GSTATUS_RESET_BUSY.decode(g), 0);
    assert_eq!(regs::GSTATUS_ENABLED.decode(g), 0);
    assert_eq!(
        b.rd(&regs::GCTRL),
        0,
        "SOFT_RESET self-clears, ENABLE cleared"
    );
    assert_eq!(b.rd(&regs::SCRATCH), 0);
    assert_eq!(b.crd(1, &regs::CH_HEAD), 0);
    assert_eq!(b.crd(1, &regs::CH_IRQ_TIMER), 0);
    assert_eq!(b.crd(1, &regs::CH_IRQ_VEC), 1);
    assert_eq!(b.status(1), (state::STOPPED, err::NONE));
    // and the engine works again after being set up anew
    b.start_channel(1, 16);
    b.host_write(DATA_BASE, &pattern(64, 1));
    b.submit(
        1,
        &[job(
            fdma_hw::desc::Direction::HostToHost,
            DATA_BASE,
            DATA_BASE + 1024,
            64,
        )],
    );
    assert_eq!(b.host_read(DATA_BASE + 1024, 64), pattern(64, 1));
}
