//! Protocol-level demo of the simulated card: starts the `fdma-sim` server,
//! connects over vfio-user, maps host memory, and runs a verified DMA round
//! trip in every direction followed by a short throughput run.
//!
//! Run: `cargo build --release -p fdma-sim && cargo run --release -p fdma-sim --example demo`.
//! (The driver library's own client replaces this once it lands.)

#[path = "../tests/client/mod.rs"]
mod client;

use client::*;
use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs::{self, channel_reg};
use std::time::Instant;

const RING: u64 = FD_IOVA;
const WB: u64 = FD_IOVA + 0x1000;
const SRC: u64 = FD_IOVA + 0x1_0000;
const DST: u64 = FD_IOVA + 0x8_0000;
const LEN: usize = 0x6_0000; // 384 KiB

fn cycles(c: &mut Client) -> u64 {
    let lo = c.reg(regs::CYCLE_LO.offset) as u64;
    lo | (c.reg(regs::CYCLE_HI.offset) as u64) << 32
}

fn main() {
    let exe = std::env::current_exe().expect("own path");
    let bin = exe
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("fdma-sim"))
        .expect("target dir");
    if !bin.exists() {
        eprintln!(
            "demo: {} not found; build it first: cargo build --release -p fdma-sim",
            bin.display()
        );
        std::process::exit(2);
    }
    let sim = start_bin(&bin, &[]);
    let mut c = connect(&sim);
    println!(
        "connected to the simulated card over vfio-user ({})",
        sim.sock.display()
    );
    let id = c.reg(regs::ID.offset);
    let cfg = fdma_hw::EngineConfig::from_caps(
        c.reg(regs::CAP0.offset),
        c.reg(regs::CAP1.offset),
        c.reg(regs::CAP2.offset),
    );
    println!(
        "card: ID {id:#010x}, {} channels, {} MiB card memory, {} MHz engine, fault injection {}",
        cfg.channels,
        cfg.card_mem_bytes() >> 20,
        cfg.clock_mhz,
        if cfg.fault_injection {
            "present"
        } else {
            "absent"
        }
    );
    c.setup_channel(0, RING, WB);
    let mut slot = 0u64;
    let mut run = |c: &mut Client, d: Descriptor| {
        submit(c, 0, RING, slot % 16, d);
        slot += 1;
        c.set(channel_reg(0, &regs::CH_TAIL), slot as u32);
        c.wait_reg(channel_reg(0, &regs::CH_HEAD), "job done", |h| {
            h == slot as u32
        });
    };

    let data = pattern(LEN, 42);
    c.fd_write(SRC, &data);
    run(
        &mut c,
        Descriptor::new(
            Direction::HostToCard,
            SRC,
            0x10_0000,
            LEN as u32,
            true,
            true,
            1,
        ),
    );
    let card = c.read(2, 0x10_0000, 4096);
    assert_same(
        &card,
        &data[..4096],
        "card memory (BAR2) after host-to-card",
    );
    println!("h2c: {LEN} bytes host -> card        verified through BAR2");
    run(
        &mut c,
        Descriptor::new(
            Direction::CardToHost,
            0x10_0000,
            DST,
            LEN as u32,
            true,
            true,
            2,
        ),
    );
    assert_same(
        &c.fd_read(DST, LEN),
        &data,
        "host memory after card-to-host",
    );
    println!("c2h: {LEN} bytes card -> host        verified");
    c.fd_write(DST, &vec![0; LEN]);
    run(
        &mut c,
        Descriptor::new(
            Direction::HostToHost,
            SRC + 3,
            DST + 5,
            LEN as u32 - 8,
            true,
            true,
            3,
        ),
    );
    assert_same(
        &c.fd_read(DST + 5, LEN - 8),
        &data[3..LEN - 5],
        "host memory after host-to-host",
    );
    println!(
        "h2h: {} bytes host -> host (odd alignment) verified",
        LEN - 8
    );

    let rounds = 20;
    let t0 = Instant::now();
    let c0 = cycles(&mut c);
    for i in 0..rounds {
        run(
            &mut c,
            Descriptor::new(Direction::HostToCard, SRC, 0, LEN as u32, false, true, i),
        );
        run(
            &mut c,
            Descriptor::new(Direction::CardToHost, 0, DST, LEN as u32, false, true, i),
        );
    }
    let wall = t0.elapsed().as_secs_f64();
    let dev = (cycles(&mut c) - c0) as f64 / (cfg.clock_mhz as f64 * 1e6);
    let bytes = (2 * rounds as usize * LEN) as f64;
    println!(
        "bench: {rounds} x (h2c + c2h) of {} KiB: {:.1} MB/s wall-clock through the simulator, {:.2} GB/s in device time",
        LEN >> 10,
        bytes / wall / 1e6,
        bytes / dev / 1e9
    );
    let faults = sim.ctl("fault-log");
    println!("fault log: {} record(s)", faults.len());
    println!("demo: all transfers verified");
}
