//! Every error path of the engine: invalid descriptors, IOMMU faults on
//! fetch and data reads, bad ring configuration and doorbells, posted write
//! faults (never reported to the engine, D3), isolation between channels,
//! and channel reset restoring service (D4).
mod common;
use common::*;
use fdma_hw::desc::{Descriptor, Direction, Flags, DESC_MAGIC};
use fdma_hw::regs;
use fdma_sim::card::LinkModel;
use fdma_sim::faultlog::FaultKind;
use fdma_sim::hostmem::{HostMemory, Prot};

fn ok_desc() -> Descriptor {
    job(Direction::HostToHost, DATA_BASE, DATA_BASE + 4096, 64)
}

/// Submit `good` valid descriptors then `bad`; expect a halt with `code` at index `good`.
fn expect_halt(b: &mut Bench, ch: usize, good: u32, bad: Descriptor, code: u8) {
    let head0 = b.crd(ch, &regs::CH_HEAD);
    let mut descs: Vec<_> = (0..good).map(|_| ok_desc()).collect();
    descs.push(bad);
    descs.push(ok_desc()); // never runs
    b.irqs.clear();
    b.submit(ch, &descs);
    assert_eq!(
        b.status(ch),
        (state::HALTED, code),
        "error {}",
        fdma_hw::desc::err::name(code)
    );
    assert_eq!(
        b.crd(ch, &regs::CH_ERR_INDEX),
        head0 + good,
        "ERR_INDEX is the failing descriptor"
    );
    assert_eq!(
        b.crd(ch, &regs::CH_HEAD),
        head0 + good,
        "every earlier descriptor completed, none after"
    );
    let g = b.rd(&regs::GSTATUS);
    assert_ne!(
        regs::GSTATUS_ERR_CHANNELS.decode(g) & (1 << ch),
        0,
        "error summary names the channel"
    );
    let wb = b.writeback(ch);
    assert_eq!(
        regs::CH_STATUS_STATE.decode(wb.status),
        state::HALTED,
        "halt is written back"
    );
    assert_eq!(regs::CH_STATUS_ERR.decode(wb.status) as u8, code);
    assert_eq!(wb.err_index, head0 + good);
    let err_vec = b.rd(&regs::ERR_VEC) as u16;
    assert!(
        b.irqs.contains(&err_vec),
        "the error vector fired: {:?}",
        b.irqs
    );
    // Channel reset restores service (D4).
    b.cwr(ch, &regs::CH_CTRL, regs::CH_CTRL_RESET.encode(1));
    b.run();
    assert_eq!(b.status(ch), (state::STOPPED, err::NONE));
    assert_eq!(b.crd(ch, &regs::CH_HEAD), 0);
    assert_eq!(b.crd(ch, &regs::CH_TAIL), 0);
    let g = b.rd(&regs::GSTATUS);
    assert_eq!(regs::GSTATUS_ERR_CHANNELS.decode(g) & (1 << ch), 0);
    b.tail[ch] = 0;
    b.start_channel(ch, b.ring_size[ch]);
    b.host_write(DATA_BASE, &pattern(64, 3));
    b.submit(ch, &[ok_desc()]);
    assert_eq!(b.host_read(DATA_BASE + 4096, 64), pattern(64, 3));
    assert_eq!(b.status(ch), (state::RUNNING, err::NONE));
}

#[test]
fn invalid_descriptors_halt_with_their_code() {
    let mut b = Bench::with_link(LinkModel::OFF, 64 * 1024);
    b.start_channel(0, 16);
    let max = b.card.engine().max_desc_len();
    let card = b.card.engine().card_mem_bytes();
    let d = ok_desc();
    expect_halt(&mut b, 0, 2, Descriptor { len: 0, ..d }, err::DESC_LEN);
    expect_halt(
        &mut b,
        0,
        1,
        Descriptor { len: max + 1, ..d },
        err::DESC_LEN,
    );
    expect_halt(
        &mut b,
        0,
        0,
        Descriptor {
            flags: Flags(3 | Flags::EOJ),
            ..d
        },
        err::DESC_DIR,
    );
    expect_halt(
        &mut b,
        0,
        1,
        Descriptor {
            flags: Flags(2 | Flags::EOJ | 1 << 20),
            ..d
        },
        err::DESC_RSVD,
    );
    expect_halt(
        &mut b,
        0,
        1,
        Descriptor {
            magic: DESC_MAGIC ^ 1,
            ..d
        },
        err::DESC_RSVD,
    );
    let h2c = job(Direction::HostToCard, DATA_BASE, card - 10, 11);
    expect_halt(&mut b, 0, 1, h2c, err::CARD_RANGE);
    let c2h = job(Direction::CardToHost, u64::MAX - 4, DATA_BASE, 16);
    expect_halt(&mut b, 0, 1, c2h, err::CARD_RANGE);
    let c2h_far = job(Direction::CardToHost, card, DATA_BASE, 1);
    expect_halt(&mut b, 0, 0, c2h_far, err::CARD_RANGE);
}

#[test]
fn validation_order_matches_the_contract() {
    // Bad magic and bad direction and zero length at once: DESC_RSVD wins,
    // as fdma_hw::desc::Descriptor::check orders it.
    let mut b = Bench::with_link(LinkModel::OFF, 8192);
    b.start_channel(0, 8);
    let cfg = *b.card.engine();
    let d = Descriptor {
        len: 0,
        flags: Flags(3),
        magic: 0,
        ..ok_desc()
    };
    assert_eq!(d.check(&cfg), Some(err::DESC_RSVD));
    expect_halt(&mut b, 0, 0, d, err::DESC_RSVD);
    let d = Descriptor {
        len: 0,
        flags: Flags(3),
        ..ok_desc()
    };
    assert_eq!(d.check(&cfg), Some(err::DESC_DIR));
    expect_halt(&mut b, 0, 0, d, err::DESC_DIR);
}

#[test]
fn read_faults_are_attributed_to_the_job() {
    let mut b = Bench::new(64 * 1024);
    b.host.map(0x7000_0000, 4096, Prot::W); // write-only: reads refused
    b.start_channel(2, 16);
    expect_halt(
        &mut b,
        2,
        1,
        job(Direction::HostToHost, 0x5000_0000, DATA_BASE, 100),
        err::READ_FAULT,
    );
    expect_halt(
        &mut b,
        2,
        0,
        job(Direction::HostToCard, 0x7000_0000, 0, 4096),
        err::READ_FAULT,
    );
    // A fault in the middle of a long transfer: the first part was readable.
    let straddle = job(
        Direction::HostToHost,
        DATA_BASE + 60 * 1024,
        DATA_BASE,
        8192,
    );
    expect_halt(&mut b, 2, 1, straddle, err::READ_FAULT);
    assert!(b
        .card
        .fault_log()
        .records()
        .any(|r| r.kind == FaultKind::Read));
}

#[test]
fn descriptor_fetch_fault() {
    let mut b = Bench::new(4096);
    b.wr(&regs::GCTRL, 1);
    b.cwr(0, &regs::CH_RING_LO, 0x4000_0000); // not mapped
    b.cwr(0, &regs::CH_RING_HI, 0);
    b.cwr(0, &regs::CH_RING_SIZE, 8);
    b.cwr(0, &regs::CH_WB_LO, WB_BASE as u32);
    b.cwr(0, &regs::CH_WB_HI, (WB_BASE >> 32) as u32);
    b.cwr(0, &regs::CH_CTRL, 1);
    b.cwr(0, &regs::CH_TAIL, 1);
    b.run();
    assert_eq!(b.status(0), (state::HALTED, err::FETCH_FAULT));
    assert_eq!(b.crd(0, &regs::CH_ERR_INDEX), 0);
    assert!(b
        .card
        .fault_log()
        .records()
        .any(|r| r.kind == FaultKind::Read && r.iova == 0x4000_0000));
}

#[test]
fn bad_ring_configuration_is_refused_at_run() {
    for (size, ring_lo, wb_lo) in [
        (0u32, RING_BASE as u32, WB_BASE as u32),
        (1, RING_BASE as u32, WB_BASE as u32),
        (12, RING_BASE as u32, WB_BASE as u32),
        (1 << 17, RING_BASE as u32, WB_BASE as u32),
        (16, RING_BASE as u32 + 8, WB_BASE as u32),
        (16, RING_BASE as u32, WB_BASE as u32 + 4),
    ] {
        let mut b = Bench::new(0);
        b.wr(&regs::GCTRL, 1);
        b.cwr(1, &regs::CH_RING_LO, ring_lo);
        b.cwr(1, &regs::CH_RING_HI, (RING_BASE >> 32) as u32);
        b.cwr(1, &regs::CH_RING_SIZE, size);
        b.cwr(1, &regs::CH_WB_LO, wb_lo);
        b.cwr(1, &regs::CH_WB_HI, (WB_BASE >> 32) as u32);
        b.cwr(1, &regs::CH_CTRL, 1);
        b.run();
        assert_eq!(
            b.status(1),
            (state::HALTED, err::BAD_RING),
            "size {size} ring {ring_lo:#x} wb {wb_lo:#x}"
        );
    }
}

#[test]
fn doorbell_beyond_capacity_halts() {
    let mut b = Bench::new(8192);
    b.start_channel(0, 4);
    b.cwr(0, &regs::CH_TAIL, 5);
    b.run();
    assert_eq!(b.status(0), (state::HALTED, err::BAD_DOORBELL));
}

#[test]
fn write_faults_are_posted_logged_and_never_reported() {
    let mut b = Bench::new(8192);
    b.host.map(0x6000_0000, 4096, Prot::R); // read-only: writes blocked
    b.start_channel(0, 8);
    b.card.card_memory().write(0, &pattern(512, 9));
    b.submit(0, &[job(Direction::CardToHost, 0, 0x5555_0000, 300)]);
    b.submit(0, &[job(Direction::CardToHost, 0, 0x6000_0000, 512)]);
    assert_eq!(
        b.status(0),
        (state::RUNNING, err::NONE),
        "the engine is never told of a blocked write"
    );
    assert_eq!(b.crd(0, &regs::CH_HEAD), 2, "both jobs complete");
    let mut ro = vec![0xEEu8; 512];
    b.host.iommu.read(0x6000_0000, &mut ro).unwrap();
    assert_eq!(ro, vec![0u8; 512], "read-only memory untouched");
    let writes: Vec<_> = b
        .card
        .fault_log()
        .records()
        .filter(|r| r.kind == FaultKind::Write)
        .cloned()
        .collect();
    assert!(
        writes
            .iter()
            .any(|r| r.iova >= 0x5555_0000 && r.iova < 0x5555_0000 + 300),
        "{writes:?}"
    );
    assert!(
        writes
            .iter()
            .any(|r| r.iova >= 0x6000_0000 && r.iova < 0x6000_0000 + 512),
        "{writes:?}"
    );
    let bytes: usize = writes.iter().map(|r| r.len).sum();
    assert_eq!(bytes, 812, "every dropped byte is logged");
}

#[test]
fn a_halted_channel_does_not_stop_the_others() {
    let mut b = Bench::new(64 * 1024);
    b.start_channel(0, 8);
    b.start_channel(1, 8);
    b.queue(0, &[job(Direction::HostToHost, 0x9999_0000, DATA_BASE, 64)]);
    b.host_write(DATA_BASE + 8192, &pattern(20000, 4));
    b.queue(
        1,
        &[job(
            Direction::HostToHost,
            DATA_BASE + 8192,
            DATA_BASE + 32768,
            20000,
        )],
    );
    b.doorbell(0);
    b.doorbell(1);
    b.run();
    assert_eq!(b.status(0), (state::HALTED, err::READ_FAULT));
    assert_eq!(b.status(1), (state::RUNNING, err::NONE));
    assert_eq!(b.host_read(DATA_BASE + 32768, 20000), pattern(20000, 4));
}

#[test]
fn bus_mastering_off_fails_reads_and_drops_writes() {
    let mut b = Bench::new(8192);
    b.start_channel(0, 8);
    b.card.set_bus_master(false);
    b.doorbell(0);
    b.queue(0, &[ok_desc()]);
    b.doorbell(0);
    b.run();
    assert_eq!(
        b.status(0),
        (state::HALTED, err::FETCH_FAULT),
        "the fetch cannot reach host memory"
    );
    assert!(b
        .card
        .fault_log()
        .records()
        .all(|r| matches!(r.error, fdma_sim::hostmem::DmaError::BusMasterOff)));
    assert!(b.irqs.is_empty(), "no MSI-X without bus mastering");
}

#[test]
fn stop_and_resume() {
    let mut b = Bench::new(64 * 1024);
    b.start_channel(0, 16);
    b.cwr(0, &regs::CH_CTRL, 0);
    b.run();
    assert_eq!(b.status(0).0, state::STOPPED);
    b.queue(0, &[ok_desc(), ok_desc()]);
    b.doorbell(0);
    b.run();
    assert_eq!(
        b.crd(0, &regs::CH_HEAD),
        0,
        "a stopped channel starts nothing"
    );
    b.cwr(0, &regs::CH_CTRL, 1);
    b.run();
    assert_eq!(b.crd(0, &regs::CH_HEAD), 2, "RUN resumes at HEAD");
    b.wr(&regs::GCTRL, 0);
    b.queue(0, &[ok_desc()]);
    b.doorbell(0);
    b.run();
    assert_eq!(
        b.crd(0, &regs::CH_HEAD),
        2,
        "a disabled engine starts nothing"
    );
    b.wr(&regs::GCTRL, 1);
    b.run();
    assert_eq!(b.crd(0, &regs::CH_HEAD), 3);
}
