//! The simulated card: the engine's RTL clocked cycle by cycle, with the bus
//! around it a board would have.
//!
//! * **Host port** — read requests are translated through [`HostMemory`] (the
//!   IOMMU, contract D3) when the request reaches the host, and complete after
//!   the link's read latency, paced by its bandwidth. Writes are posted:
//!   a whole write request is applied when its last beat is accepted, or
//!   dropped and recorded in the [`FaultLog`] — the engine is never told.
//! * **Card port** — card memory ([`CardMemory`], a memfd shared with BAR2).
//! * **Interrupts** — MSI-X messages are delivered in the order accepted,
//!   which is after the writes they report (posted-write ordering).
//! * **Time** (contract D1) — device time is the count of clocked cycles. The
//!   model is clocked only by [`Card::run`] and register accesses; `run`
//!   stops as soon as the RTL says it is quiescent and the bus has nothing
//!   in flight, so an idle card costs no CPU.
//! * **Faults** (contract D7, simulator-only part) — link down (register
//!   reads return all ones, writes and DMA are dropped), the device dying
//!   after N cycles, and bus mastering off (DMA fails, MSI-X is suppressed),
//!   as a real bus behaves.

use crate::cardmem::{CardMemError, CardMemory};
use crate::faultlog::{FaultKind, FaultLog, FaultRecord};
use crate::hostmem::{DmaError, HostMemory};
use crate::rtl::{Inputs, Outputs, RtlError, RtlModel, DB};
use fdma_hw::{regs, EngineConfig};
use std::collections::VecDeque;
use std::os::fd::BorrowedFd;
use std::path::PathBuf;

/// Card-memory read latency in cycles (a DDR controller's order of magnitude).
pub const CARD_READ_LATENCY: u64 = 16;

/// The host link: how long a read takes and how many bytes per cycle flow
/// each way. The defaults approximate a PCIe Gen3 x8 link (about 7 GB/s of
/// payload each way, ~0.8 µs read round trip) under a 250 MHz engine.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LinkModel {
    /// When false, reads complete the next cycle and bandwidth is unlimited.
    pub enabled: bool,
    /// Cycles from a read request to its first completion beat.
    pub read_latency_cycles: u32,
    /// Payload bytes per cycle in each direction.
    pub bytes_per_cycle: u32,
}

impl Default for LinkModel {
    fn default() -> Self {
        LinkModel {
            enabled: true,
            read_latency_cycles: 200,
            bytes_per_cycle: 28,
        }
    }
}

impl LinkModel {
    /// No latency, no bandwidth limit: the engine's own speed.
    pub const OFF: LinkModel = LinkModel {
        enabled: false,
        read_latency_cycles: 0,
        bytes_per_cycle: 0,
    };
}

/// Faults only a simulator can inject at the card (contract D7). Failed or
/// slow replies to client-served DMA belong to the server's DMA link
/// (`server::DmaFaults`), the only place they act.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SimFaults {
    /// The link is down: register reads return all ones, writes and DMA are dropped.
    pub link_down: bool,
    /// The device dies this many cycles after the value is set (or after creation).
    pub die_after_cycles: Option<u64>,
    /// Silently corrupt the next this-many DMA writes to host memory (one
    /// byte of each, in the middle, XOR 0x5a): a datapath or link error no
    /// status reports, which only the data check of a test tool catches.
    pub corrupt_host_writes: u64,
}

/// How to build the card.
#[derive(Clone, Debug, Default)]
pub struct SimConfig {
    /// The engine configuration expected; must match what the RTL reports.
    pub engine: EngineConfig,
    /// Host link model.
    pub link: LinkModel,
    /// Injected simulator faults.
    pub faults: SimFaults,
    /// Write an FST waveform here.
    pub trace: Option<PathBuf>,
}

/// Errors building the card.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The model could not be created.
    #[error("cannot create the RTL model")]
    Model(#[source] RtlError),
    /// Card memory could not be created.
    #[error("cannot create card memory")]
    CardMemory(#[source] CardMemError),
    /// The RTL reports a configuration other than the one asked for.
    #[error("the RTL reports {actual:?}, the simulator was configured for {expected:?}")]
    ConfigMismatch {
        /// Asked for.
        expected: Box<EngineConfig>,
        /// Reported by CAP0..CAP2.
        actual: Box<EngineConfig>,
    },
    /// A run of the model did not end as it must (see [`crate::modelrun`]).
    #[error("model run failed: {0}")]
    Run(String),
}

/// Why [`Card::run`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RunOutcome {
    /// Nothing pending: the card will not change until software acts.
    Quiescent,
    /// The cycle budget ran out with work pending.
    Budget,
    /// The device is dead (injected fault).
    Dead,
}

struct PendingRead {
    ready_at: u64,
    data: Vec<u8>,
    err: bool,
    beats: usize,
    next: usize,
    remaining: usize,
}

#[derive(Default)]
struct WriteAssembly {
    start: Option<u64>,
    bytes: Vec<u8>,
}

/// The simulated card. See the module docs.
pub struct Card {
    model: RtlModel,
    engine: EngineConfig,
    link: LinkModel,
    faults: SimFaults,
    mem: CardMemory,
    inp: Inputs,
    cycles: u64,
    bus_master: bool,
    host_reads: VecDeque<PendingRead>,
    card_reads: VecDeque<PendingRead>,
    host_write: WriteAssembly,
    down_credit: u64,
    up_credit: u64,
    irqs: Vec<u16>,
    log: FaultLog,
    die_seen: Option<u64>,
    die_base: u64,
    dead: bool,
    /// Cycles to clock after a register write before trusting `quiescent`:
    /// the RTL's status is registered, so a doorbell shows a cycle or two later.
    settle: u32,
}

impl Card {
    /// Build and reset a card.
    pub fn new(cfg: SimConfig) -> Result<Card, SimError> {
        let model = RtlModel::new(cfg.trace.as_deref()).map_err(SimError::Model)?;
        let mem = CardMemory::new(cfg.engine.card_mem_bytes()).map_err(SimError::CardMemory)?;
        let mut card = Card {
            model,
            engine: cfg.engine,
            link: cfg.link,
            // The start-up faults apply once the capability check below
            // has read the RTL's own registers (a card configured to start
            // with its link down is still the card it says it is).
            faults: SimFaults::default(),
            mem,
            inp: Inputs::default(),
            cycles: 0,
            bus_master: false,
            host_reads: VecDeque::new(),
            card_reads: VecDeque::new(),
            host_write: WriteAssembly::default(),
            down_credit: 0,
            up_credit: 0,
            irqs: Vec::new(),
            log: FaultLog::default(),
            die_seen: None,
            die_base: 0,
            dead: false,
            settle: 0,
        };
        card.reset();
        let mut none = crate::hostmem::Iommu::new();
        let caps = [regs::CAP0, regs::CAP1, regs::CAP2].map(|r| card.reg_read(&mut none, r.offset));
        let actual = EngineConfig::from_caps(caps[0], caps[1], caps[2]);
        if actual != cfg.engine {
            return Err(SimError::ConfigMismatch {
                expected: Box::new(cfg.engine),
                actual: Box::new(actual),
            });
        }
        card.faults = cfg.faults;
        Ok(card)
    }

    /// The engine's configuration (as its capability registers report it).
    pub fn engine(&self) -> &EngineConfig {
        &self.engine
    }

    /// Card memory (BAR2).
    pub fn card_memory(&self) -> &CardMemory {
        &self.mem
    }

    /// The card-memory memfd, for a sparse-mmap BAR2.
    pub fn card_memory_fd(&self) -> BorrowedFd<'_> {
        self.mem.fd()
    }

    /// Device cycles clocked since the card was created (device time, D1).
    pub fn cycles(&self) -> u64 {
        self.cycles
    }

    /// The link model.
    pub fn link(&self) -> &LinkModel {
        &self.link
    }

    /// Change the link model.
    pub fn set_link(&mut self, link: LinkModel) {
        self.link = link;
    }

    /// The injected simulator faults.
    pub fn faults(&self) -> &SimFaults {
        &self.faults
    }

    /// Change the injected simulator faults.
    pub fn faults_mut(&mut self) -> &mut SimFaults {
        &mut self.faults
    }

    /// The fault log.
    pub fn fault_log(&self) -> &FaultLog {
        &self.log
    }

    /// The fault log, to clear it.
    pub fn fault_log_mut(&mut self) -> &mut FaultLog {
        &mut self.log
    }

    /// Set the PCI command register's bus-master bit.
    pub fn set_bus_master(&mut self, on: bool) {
        self.bus_master = on;
    }

    /// Whether bus mastering is on.
    pub fn bus_master(&self) -> bool {
        self.bus_master
    }

    /// Whether the device has died (injected fault).
    pub fn is_dead(&self) -> bool {
        self.dead
    }

    /// Nothing pending in the RTL or on its buses.
    pub fn is_quiescent(&self) -> bool {
        self.settle == 0
            && self.model.outputs().quiescent != 0
            && self.host_reads.is_empty()
            && self.card_reads.is_empty()
            && self.host_write.start.is_none()
    }

    /// Move the MSI-X vectors raised since the last call into `out`, in order.
    pub fn drain_irqs(&mut self, out: &mut Vec<u16>) {
        out.append(&mut self.irqs);
    }

    /// Device reset: hold the RTL in reset, discard everything in flight on
    /// the buses. Card memory keeps its contents (it is DRAM, not state).
    pub fn reset(&mut self) {
        self.host_reads.clear();
        self.card_reads.clear();
        self.host_write = WriteAssembly::default();
        self.irqs.clear();
        self.inp = Inputs::default();
        let mut none = crate::hostmem::Iommu::new();
        for _ in 0..4 {
            self.step(&mut none);
        }
        self.inp.rst_n = 1;
        self.step(&mut none);
    }

    /// Read a BAR0 register (4-byte aligned offset below the MSI-X table).
    /// Clocks the card for the access, so DMA progresses meanwhile.
    pub fn reg_read(&mut self, host: &mut dyn HostMemory, offset: u32) -> u32 {
        self.reg_access(host, offset, None)
    }

    /// Write a BAR0 register. Posted, as on PCIe: nothing comes back.
    pub fn reg_write(&mut self, host: &mut dyn HostMemory, offset: u32, value: u32) {
        self.reg_access(host, offset, Some(value));
    }

    fn reg_access(&mut self, host: &mut dyn HostMemory, offset: u32, write: Option<u32>) -> u32 {
        self.check_death();
        if self.dead || self.faults.link_down {
            // A dead link answers reads with all ones and drops writes.
            return u32::MAX;
        }
        debug_assert!(offset % 4 == 0 && offset < fdma_hw::pci::MSIX_TABLE_OFFSET);
        self.inp.reg_req_valid = 1;
        self.inp.reg_req_write = write.is_some() as u8;
        self.inp.reg_req_addr = offset;
        self.inp.reg_req_wdata = write.unwrap_or(0);
        self.step(host);
        self.inp.reg_req_valid = 0;
        self.inp.reg_req_write = 0;
        if write.is_some() {
            self.settle = 4;
        }
        for _ in 0..4 {
            let o = self.model.outputs();
            if o.reg_rsp_valid != 0 {
                return o.reg_rsp_rdata;
            }
            self.step(host);
        }
        log::error!("register access at {offset:#x} got no response from the RTL");
        u32::MAX
    }

    /// Clock until quiescent, dead, or `max_cycles` have passed.
    pub fn run(&mut self, host: &mut dyn HostMemory, max_cycles: u64) -> RunOutcome {
        for _ in 0..max_cycles {
            if self.dead {
                return RunOutcome::Dead;
            }
            if self.is_quiescent() {
                return RunOutcome::Quiescent;
            }
            self.step(host);
            self.check_death();
        }
        if self.dead {
            RunOutcome::Dead
        } else if self.is_quiescent() {
            RunOutcome::Quiescent
        } else {
            RunOutcome::Budget
        }
    }

    /// Flush the waveform, if tracing.
    pub fn flush_trace(&mut self) {
        self.model.flush_trace();
    }

    fn check_death(&mut self) {
        if self.faults.die_after_cycles != self.die_seen {
            self.die_seen = self.faults.die_after_cycles;
            self.die_base = self.cycles;
        }
        if let Some(n) = self.die_seen {
            if !self.dead && self.cycles - self.die_base >= n {
                log::warn!("injected fault: the device dies at cycle {}", self.cycles);
                self.dead = true;
            }
        }
    }

    fn dma_gate(&self) -> Result<(), DmaError> {
        if self.faults.link_down {
            Err(DmaError::LinkDown)
        } else if !self.bus_master {
            Err(DmaError::BusMasterOff)
        } else {
            Ok(())
        }
    }

    fn fault(&mut self, kind: FaultKind, iova: u64, len: usize, error: DmaError) {
        self.log.push(FaultRecord {
            cycle: self.cycles,
            kind,
            iova,
            len,
            error,
        });
    }

    /// One cycle: drive the inputs from the outputs seen after the previous
    /// edge, clock, then settle the handshakes that completed at this edge.
    fn step(&mut self, host: &mut dyn HostMemory) {
        let o: Outputs = *self.model.outputs();
        let now = self.cycles;
        let (lat, bpc) = if self.link.enabled {
            (
                self.link.read_latency_cycles.max(1) as u64,
                self.link.bytes_per_cycle.max(1) as u64,
            )
        } else {
            (1, u64::MAX / 4)
        };
        let cap = (2 * DB as u64).max(2 * bpc.min(1 << 20));
        self.down_credit = (self.down_credit + bpc).min(cap);
        self.up_credit = (self.up_credit + bpc).min(cap);

        let running = self.inp.rst_n != 0;
        self.inp.hr_req_ready = running as u8;
        self.inp.cr_req_ready = running as u8;
        self.inp.irq_ready = running as u8;
        self.inp.cw_ready = running as u8;
        self.inp.hw_ready = (running && self.up_credit >= o.hw_strb.count_ones() as u64) as u8;
        present(
            &mut self.inp.hr_rsp_valid,
            &mut self.inp.hr_rsp_last,
            &mut self.inp.hr_rsp_err,
            &mut self.inp.hr_rsp_data,
            self.host_reads.front(),
            now,
            Some(self.down_credit),
        );
        present(
            &mut self.inp.cr_rsp_valid,
            &mut self.inp.cr_rsp_last,
            &mut self.inp.cr_rsp_err,
            &mut self.inp.cr_rsp_data,
            self.card_reads.front(),
            now,
            None,
        );

        let inp = self.inp;
        self.model.tick(&inp);
        self.cycles += 1;
        self.settle = self.settle.saturating_sub(1);

        // Completion beats consumed at this edge.
        if inp.hr_rsp_valid != 0 && o.hr_rsp_ready != 0 {
            let r = self.host_reads.front_mut().expect("presented");
            let charge = r.remaining.min(DB);
            r.remaining -= charge;
            self.down_credit = self.down_credit.saturating_sub(charge as u64);
            r.next += 1;
            if r.next == r.beats {
                self.host_reads.pop_front();
            }
        }
        if inp.cr_rsp_valid != 0 && o.cr_rsp_ready != 0 {
            let r = self.card_reads.front_mut().expect("presented");
            r.next += 1;
            if r.next == r.beats {
                self.card_reads.pop_front();
            }
        }
        // Requests accepted at this edge.
        if o.hr_req_valid != 0 && inp.hr_req_ready != 0 {
            let r = self.host_read(host, o.hr_req_addr, o.hr_req_len as usize, now + lat);
            self.host_reads.push_back(r);
        }
        if o.cr_req_valid != 0 && inp.cr_req_ready != 0 {
            let r = self.card_read(
                o.cr_req_addr,
                o.cr_req_len as usize,
                now + CARD_READ_LATENCY,
            );
            self.card_reads.push_back(r);
        }
        if o.hw_valid != 0 && inp.hw_ready != 0 {
            self.up_credit = self.up_credit.saturating_sub(o.hw_strb.count_ones() as u64);
            self.host_write_beat(host, &o);
        }
        if o.cw_valid != 0 && inp.cw_ready != 0 {
            self.card_write_beat(&o);
        }
        if o.irq_valid != 0 && inp.irq_ready != 0 {
            let v = o.irq_vector as u16;
            match self.dma_gate() {
                Ok(()) => self.irqs.push(v),
                Err(e) => self.fault(FaultKind::Irq, v as u64, 0, e),
            }
        }
    }

    fn host_read(
        &mut self,
        host: &mut dyn HostMemory,
        addr: u64,
        len: usize,
        ready_at: u64,
    ) -> PendingRead {
        let lead = (addr % DB as u64) as usize;
        let beats = (lead + len).div_ceil(DB).max(1);
        let mut data = vec![0u8; beats * DB];
        let res = self
            .dma_gate()
            .and_then(|()| host.read(addr, &mut data[lead..lead + len]));
        let err = match res {
            Ok(()) => false,
            Err(e) => {
                data.fill(0);
                self.fault(FaultKind::Read, addr, len, e);
                true
            }
        };
        PendingRead {
            ready_at,
            data,
            err,
            beats,
            next: 0,
            remaining: len,
        }
    }

    fn card_read(&mut self, addr: u64, len: usize, ready_at: u64) -> PendingRead {
        let lead = (addr % DB as u64) as usize;
        let beats = (lead + len).div_ceil(DB).max(1);
        let mut data = vec![0u8; beats * DB];
        let in_range = addr
            .checked_add(len as u64)
            .is_some_and(|e| e <= self.mem.len());
        if in_range {
            self.mem.read(addr, &mut data[lead..lead + len]);
        } else {
            self.fault(
                FaultKind::Card,
                addr,
                len,
                DmaError::Unmapped { iova: addr, len },
            );
        }
        PendingRead {
            ready_at,
            data,
            err: !in_range,
            beats,
            next: 0,
            remaining: len,
        }
    }

    fn host_write_beat(&mut self, host: &mut dyn HostMemory, o: &Outputs) {
        let strb = o.hw_strb;
        if strb != 0 {
            let first = strb.trailing_zeros() as usize;
            let n = strb.count_ones() as usize;
            let w = &mut self.host_write;
            if w.start.is_none() {
                w.start = Some(o.hw_addr + first as u64);
            }
            w.bytes.extend_from_slice(&o.hw_data[first..first + n]);
        }
        if o.hw_last != 0 {
            let mut w = std::mem::take(&mut self.host_write);
            if self.faults.corrupt_host_writes > 0 && !w.bytes.is_empty() {
                self.faults.corrupt_host_writes -= 1;
                let mid = w.bytes.len() / 2;
                w.bytes[mid] ^= 0x5a;
            }
            if let Some(start) = w.start {
                if let Err(e) = self.dma_gate().and_then(|()| host.write(start, &w.bytes)) {
                    self.fault(FaultKind::Write, start, w.bytes.len(), e);
                }
            }
        }
    }

    fn card_write_beat(&mut self, o: &Outputs) {
        let strb = o.cw_strb;
        if strb == 0 {
            return;
        }
        let first = strb.trailing_zeros() as usize;
        let n = strb.count_ones() as usize;
        let addr = o.cw_addr + first as u64;
        if addr
            .checked_add(n as u64)
            .is_some_and(|e| e <= self.mem.len())
        {
            self.mem.write(addr, &o.cw_data[first..first + n]);
        } else {
            self.fault(
                FaultKind::Card,
                addr,
                n,
                DmaError::Unmapped { iova: addr, len: n },
            );
        }
    }
}

/// Drive a completion channel from the head of its queue.
fn present(
    valid: &mut u8,
    last: &mut u8,
    err: &mut u8,
    data: &mut [u8; DB],
    head: Option<&PendingRead>,
    now: u64,
    credit: Option<u64>,
) {
    *valid = 0;
    let Some(r) = head else { return };
    if r.ready_at > now {
        return;
    }
    if let Some(c) = credit {
        if c < r.remaining.min(DB) as u64 {
            return;
        }
    }
    *valid = 1;
    *last = (r.next + 1 == r.beats) as u8;
    *err = r.err as u8;
    data.copy_from_slice(&r.data[r.next * DB..(r.next + 1) * DB]);
}
