//! Interrupts and moderation, the fault-injection block (D7), fairness,
//! read pipelining and quiescence (D1).
mod common;
use common::*;
use fdma_hw::desc::{Descriptor, Direction};
use fdma_hw::regs;
use fdma_sim::card::{LinkModel, RunOutcome};

fn irq_job(n: u32) -> Descriptor {
    Descriptor::new(
        Direction::HostToHost,
        DATA_BASE,
        DATA_BASE + 4096,
        256,
        true,
        true,
        n,
    )
}

#[test]
fn each_flagged_completion_interrupts_on_its_vector() {
    let mut b = Bench::new(8192);
    b.start_channel(2, 16);
    b.submit(2, &[irq_job(0)]);
    assert_eq!(b.irqs, vec![2]);
    b.cwr(2, &regs::CH_IRQ_VEC, 3);
    b.submit(2, &[irq_job(1)]);
    assert_eq!(b.irqs, vec![2, 3]);
    b.submit(
        2,
        &[Descriptor::new(
            Direction::HostToHost,
            DATA_BASE,
            DATA_BASE + 4096,
            8,
            false,
            true,
            2,
        )],
    );
    assert_eq!(b.irqs, vec![2, 3], "no IRQ flag, no interrupt (poll mode)");
    assert_eq!(b.writeback(2).head, 3, "poll mode still gets the writeback");
}

#[test]
fn interrupt_follows_its_writeback() {
    let mut b = Bench::new(8192);
    b.start_channel(0, 16);
    b.queue(0, &[irq_job(0)]);
    b.doorbell(0);
    for _ in 0..100_000 {
        b.run_for(1);
        if !b.irqs.is_empty() {
            assert_eq!(
                b.writeback(0).head,
                1,
                "the writeback is visible when the interrupt arrives"
            );
            return;
        }
    }
    panic!("no interrupt");
}

#[test]
fn moderation_by_count() {
    let mut b = Bench::with_link(LinkModel::OFF, 8192);
    b.start_channel(1, 16);
    b.cwr(1, &regs::CH_IRQ_COUNT, 4);
    for i in 0..3 {
        b.submit(1, &[irq_job(i)]);
    }
    assert!(b.irqs.is_empty(), "3 of 4: held back");
    b.submit(1, &[irq_job(3)]);
    assert_eq!(b.irqs, vec![1], "the 4th releases one interrupt");
    b.submit(
        1,
        &[irq_job(4), irq_job(5), irq_job(6), irq_job(7), irq_job(8)],
    );
    assert_eq!(b.irqs, vec![1, 1]);
}

#[test]
fn moderation_timer_fires_when_the_count_is_never_reached() {
    let mut b = Bench::with_link(LinkModel::OFF, 8192);
    b.start_channel(1, 16);
    b.cwr(1, &regs::CH_IRQ_COUNT, 1000);
    b.cwr(1, &regs::CH_IRQ_TIMER, 5000);
    b.queue(1, &[irq_job(0)]);
    b.doorbell(1);
    // Run until the writeback shows the completion, then measure the wait.
    while b.writeback(1).head != 1 {
        assert_eq!(b.run_for(10), RunOutcome::Budget);
    }
    assert!(b.irqs.is_empty());
    assert!(
        !b.card.is_quiescent(),
        "an armed moderation timer is pending work"
    );
    let waited = b.run();
    assert_eq!(b.irqs, vec![1], "the timer released the interrupt");
    assert!(
        (4000..=6000).contains(&waited),
        "fired about 5000 device cycles later ({waited})"
    );
    assert!(b.card.is_quiescent());
}

#[test]
fn injected_interrupt_faults() {
    let mut b = Bench::new(8192);
    b.start_channel(3, 16);
    let sel = regs::FI_ONESHOT_CHANNEL.encode(3);
    b.wr(&regs::FI_ONESHOT, sel | regs::FI_ONESHOT_DROP_IRQ.encode(1));
    b.submit(3, &[irq_job(0)]);
    assert!(b.irqs.is_empty(), "dropped");
    assert_eq!(
        b.writeback(3).head,
        1,
        "completion state is still written (D6)"
    );
    assert_eq!(b.rd(&regs::FI_ONESHOT) & 0xf, 0, "one-shot bits self-clear");
    b.submit(3, &[irq_job(1)]);
    assert_eq!(b.irqs, vec![3]);
    b.wr(&regs::FI_ONESHOT, sel | regs::FI_ONESHOT_DUP_IRQ.encode(1));
    b.submit(3, &[irq_job(2)]);
    assert_eq!(b.irqs, vec![3, 3, 3], "duplicated");
    assert_eq!(b.rd(&regs::FI_COUNT), 2);
}

#[test]
fn injected_writeback_corruption_and_descriptor_error() {
    let mut b = Bench::new(8192);
    b.start_channel(0, 16);
    let sel = regs::FI_ONESHOT_CHANNEL.encode(0);
    b.wr(
        &regs::FI_ONESHOT,
        sel | regs::FI_ONESHOT_CORRUPT_WB.encode(1),
    );
    b.submit(0, &[irq_job(0)]);
    assert_eq!(b.writeback(0).head, !1u32, "HEAD field inverted");
    assert_eq!(
        b.crd(0, &regs::CH_HEAD),
        1,
        "the register still tells the truth"
    );
    b.submit(0, &[irq_job(1)]);
    assert_eq!(
        b.writeback(0).head,
        2,
        "only the next writeback is corrupted"
    );
    b.wr(&regs::FI_ONESHOT, sel | regs::FI_ONESHOT_DESC_ERR.encode(1));
    b.submit(0, &[irq_job(2)]);
    assert_eq!(b.status(0), (state::HALTED, err::INJECTED));
    assert_eq!(b.crd(0, &regs::CH_ERR_INDEX), 2);
    assert_eq!(b.rd(&regs::FI_COUNT), 2);
}

#[test]
fn stalled_channel_keeps_device_time_running_until_released() {
    let mut b = Bench::new(8192);
    b.start_channel(1, 16);
    b.wr(&regs::FI_STALL, 1 << 1);
    b.queue(1, &[irq_job(0)]);
    b.doorbell(1);
    let c0 = b.rd(&regs::CYCLE_LO);
    assert_eq!(
        b.run_for(50_000),
        RunOutcome::Budget,
        "a stalled channel with work is not quiescent"
    );
    let c1 = b.rd(&regs::CYCLE_LO);
    assert!(
        c1.wrapping_sub(c0) >= 50_000,
        "device time runs while stalled"
    );
    assert_eq!(b.crd(1, &regs::CH_HEAD), 0, "no progress while stalled");
    assert_eq!(b.status(1).0, state::RUNNING);
    b.wr(&regs::FI_STALL, 0);
    b.run();
    assert_eq!(b.crd(1, &regs::CH_HEAD), 1);
}

#[test]
fn channels_share_the_engine_fairly() {
    let mut b = Bench::new(8 << 20);
    b.start_channel(0, 16);
    b.start_channel(1, 16);
    b.queue(
        0,
        &[job(
            Direction::HostToHost,
            DATA_BASE,
            DATA_BASE + (4 << 20),
            4 << 20,
        )],
    );
    b.doorbell(0);
    b.run_for(2000);
    b.queue(
        1,
        &[job(
            Direction::HostToHost,
            DATA_BASE + (2 << 20),
            DATA_BASE + (3 << 20),
            16384,
        )],
    );
    b.doorbell(1);
    let start = b.card.cycles();
    while b.crd(1, &regs::CH_HEAD) != 1 {
        assert_eq!(
            b.run_for(100),
            RunOutcome::Budget,
            "channel 0 still busy while channel 1 waits"
        );
        assert_eq!(
            b.crd(0, &regs::CH_HEAD),
            0,
            "channel 1 finished only after channel 0's whole 4 MiB: starved"
        );
    }
    let waited = b.card.cycles() - start;
    b.run();
    assert_eq!(b.crd(0, &regs::CH_HEAD), 1);
    // 16 KiB on a fair engine shared with one other channel takes about twice
    // its solo time; 4 MiB ahead of it would take hundreds of times longer.
    assert!(waited < 20_000, "channel 1 waited {waited} cycles");
}

#[test]
fn reads_are_pipelined_under_latency() {
    let lat = 400u32;
    let mut b = Bench::with_link(
        LinkModel {
            enabled: true,
            read_latency_cycles: lat,
            bytes_per_cycle: 28,
        },
        4 << 20,
    );
    b.start_channel(0, 8);
    b.wr(&regs::RD_OUTSTANDING_MAX, 0);
    let len = 2u32 << 20;
    b.queue(0, &[job(Direction::HostToCard, DATA_BASE, 0, len)]);
    b.doorbell(0);
    let cycles = b.run();
    let max_out = b.rd(&regs::RD_OUTSTANDING_MAX);
    let max_read = 1u64 << b.card.engine().max_read_log2;
    let per_latency = len as f64 / cycles as f64 * lat as f64 / max_read as f64;
    assert!(max_out > 1, "RD_OUTSTANDING_MAX = {max_out}");
    assert!(max_out <= b.card.engine().max_reads_outstanding as u32);
    assert!(
        per_latency > 1.0,
        "moved {per_latency:.2} read requests per read latency"
    );
    assert_eq!(b.rd(&regs::RD_OUTSTANDING), 0);
}
