//! Channels: one hardware descriptor ring each, its jobs and their fences.
//!
//! # Model
//!
//! A channel owns a ring of `ring_size` descriptors in driver DMA memory and
//! a 16-byte writeback area. Software keeps two free-running indices: `tail`
//! (one past the last descriptor written) and `head` (every descriptor
//! before it is known complete). A [`Job`] is lowered to consecutive
//! descriptors, the last flagged end-of-job (and interrupt, in interrupt
//! mode); [`Channel::submit`] writes them, creates the job's fence on the
//! channel's [`Timeline`], and rings the doorbell (a posted write of `TAIL`,
//! after a release fence).
//!
//! Completion is read only from the writeback area and the `HEAD` register
//! (D6): interrupts merely say "look now". Lost, duplicated or spurious
//! interrupts therefore change nothing, and the watchdog looks periodically
//! anyway. Every value from the device is range-checked before use (D2): a
//! head outside `[head, tail]` or an error index outside the in-flight
//! window is ignored and counted, never followed.
//!
//! # Rules enforced here
//!
//! * F3 — every in-flight fence signals in bounded time: on completion, on a
//!   device error (the failing job gets the error, later jobs `Cancelled`,
//!   F4), when the watchdog finds no progress for `stall_cycles` device
//!   cycles (`Hung`), on reset (`Cancelled`), on loss (`DeviceLost`), and on
//!   close.
//! * F10 — completion processing and the failure paths run in a
//!   signalling section: no allocation (queues are preallocated to the ring
//!   size), no logging, no reservation locks. Completed jobs, with their
//!   buffers and signallers, move to a per-channel done queue that the
//!   reclaim thread (or the next submitter) drains.
//! * D4 — a halted or hung channel refuses new jobs until [`Channel::reset`]
//!   resets it, rebuilds its ring and reprograms it.

mod completion;
mod handle;
mod job;
mod ring;

pub use handle::Channel;

pub use job::{Endpoint, Job, Segment, UserRange};

use crate::backend::RegFault;
use crate::error::{Error, FenceError, Result};
use crate::fence::{Fence, Signaller, Timeline};
use crate::mem::{DmaBuffer, DmaSpace};
use crate::mmio::Regs;
use crate::resv::{Purpose, Usage};
use crate::sync::SignallingSection;
use fdma_hw::desc::{err, Descriptor};
use fdma_hw::regs::{self, channel_reg, state};
use fdma_hw::EngineConfig;
use ring::RingMem;
use std::collections::VecDeque;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// How completions of a channel are noticed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IrqMode {
    /// The reactor thread wakes on the channel's interrupt.
    Interrupt,
    /// No interrupts: the caller drives completion with [`Channel::poll`]
    /// (the watchdog still guarantees F3).
    Poll,
}

/// What [`Channel::submit_with`] does when the ring has no room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnFull {
    /// Wait for room (bounded by the watchdog, F3).
    Wait,
    /// Return [`Error::RingFull`] at once.
    Error,
}

/// Options of one submission.
#[derive(Debug, Clone, Copy)]
pub struct SubmitOptions {
    /// Behaviour on a full ring.
    pub on_full: OnFull,
    /// Ring the doorbell now. `false` batches: the descriptors are written
    /// and the doorbell is rung by a later submit or [`Channel::flush`].
    pub doorbell: bool,
    /// Wait for the fences the job's buffers carry before submitting
    /// (implicit synchronisation by purpose, R2). On by default: the engine
    /// pipelines descriptors, so a job may otherwise read data an earlier
    /// job has not finished writing.
    pub implicit_sync: bool,
}

impl Default for SubmitOptions {
    fn default() -> Self {
        SubmitOptions {
            on_full: OnFull::Wait,
            doorbell: true,
            implicit_sync: true,
        }
    }
}

/// Channel health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Accepting jobs.
    Running,
    /// Halted by a device error (`STATUS.ERR` code).
    Halted(u8),
    /// Stopped by the watchdog for lack of progress.
    Hung,
    /// The device is lost.
    Lost,
    /// The device was closed.
    Closed,
    /// A channel or device reset is in progress.
    Resetting,
}

const H_RUNNING: u8 = 0;
const H_HALTED: u8 = 1;
const H_HUNG: u8 = 2;
const H_LOST: u8 = 3;
const H_CLOSED: u8 = 4;
const H_RESETTING: u8 = 5;

/// Counters of one channel.
#[derive(Debug, Default)]
pub struct ChannelStats {
    /// Jobs submitted.
    pub jobs: AtomicU64,
    /// Jobs completed without error.
    pub completed: AtomicU64,
    /// Jobs completed with an error.
    pub failed: AtomicU64,
    /// Bytes of completed jobs.
    pub bytes: AtomicU64,
    /// Interrupts taken.
    pub irqs: AtomicU64,
    /// Interrupts that found nothing new (duplicate or spurious, D6).
    pub empty_irqs: AtomicU64,
    /// Writeback or register values rejected by range checks (D2).
    pub rejected: AtomicU64,
    /// Completions found by the watchdog rather than an interrupt.
    pub watchdog_completions: AtomicU64,
    /// Doorbells rung.
    pub doorbells: AtomicU64,
}

/// Watchdog settings (F3, D1).
#[derive(Debug, Clone, Copy)]
pub struct WatchdogConfig {
    /// A channel with work pending whose head and byte counter do not move
    /// for this many device cycles is hung.
    pub stall_cycles: u64,
    /// How often the watchdog looks (wall clock).
    pub tick: Duration,
    /// Wall-clock backstop: the device cycle counter not advancing for this
    /// long while work is pending, or the device not answering, means the
    /// device is lost.
    pub backstop: Duration,
}

impl Default for WatchdogConfig {
    fn default() -> Self {
        WatchdogConfig {
            // 2^24 cycles: 67 ms at 250 MHz on a board.
            stall_cycles: 1 << 24,
            tick: Duration::from_millis(50),
            backstop: Duration::from_secs(20),
        }
    }
}

struct Inflight {
    /// Free-running index one past the job's last descriptor.
    end: u32,
    sig: Signaller,
    bytes: u64,
    /// Buffers read and written, kept alive until the fence has signalled.
    _buffers: (Vec<DmaBuffer>, Vec<DmaBuffer>),
    /// Registrations used, kept alive likewise; the completion checks
    /// whether the shim published an event over one of them (C3).
    entries: Vec<Arc<crate::cache::Entry>>,
}

fn entries_keep(low: &job::Lowered) -> Vec<Arc<crate::cache::Entry>> {
    low.regs.iter().map(|(e, _)| e.clone()).collect()
}

struct State {
    tail: u32,
    head: u32,
    inflight: VecDeque<Inflight>,
    /// Signalled jobs waiting to be reclaimed off the signalling path.
    done: VecDeque<Inflight>,
    /// Failed jobs whose memory the engine may still touch (a halted or
    /// hung channel not yet reset): their fences are signalled (F3) but
    /// their buffers, and so their IOVAs (C4), are kept until the channel
    /// is stopped in the device.
    held: VecDeque<Inflight>,
    /// Watchdog: last validated (head, bytes), and the device cycle and
    /// wall-clock time they last changed.
    progress: Option<((u32, u64), u64, Instant)>,
}

impl State {
    /// Job slots in use: in flight, held, or awaiting reclaim.
    fn jobs(&self) -> usize {
        self.inflight.len() + self.done.len() + self.held.len()
    }

    /// Move held jobs to the done queue (the device has stopped touching
    /// their memory). No allocation: both queues have the ring's capacity
    /// and never hold more than the ring's jobs together.
    fn release_held(&mut self) {
        while let Some(j) = self.held.pop_front() {
            self.done.push_back(j);
        }
    }
}

/// One channel's shared state. Handles are [`Channel`].
pub(crate) struct ChannelCore {
    pub index: u8,
    pub timeline: Arc<Timeline>,
    mem: RingMem,
    regs: Arc<Regs>,
    cfg: EngineConfig,
    dma: Arc<DmaSpace>,
    state: Mutex<State>,
    /// Signalled when ring room may have appeared.
    room: Condvar,
    doorbell: Mutex<u32>,
    published_tail: AtomicU32,
    /// The tail last written to the device: HEAD can never pass it (D2).
    rung_tail: AtomicU32,
    /// Serialises channel resets, and device resets against them.
    reset_lock: Mutex<()>,
    health: AtomicU8,
    halted_code: AtomicU8,
    mode: AtomicU8,
    pub irq: nix::sys::eventfd::EventFd,
    pub stats: ChannelStats,
    watchdog: WatchdogConfig,
    reclaim: Arc<crate::reactor::ReclaimSignal>,
    /// The device's registration cache, for jobs on process memory.
    pub cache: std::sync::OnceLock<crate::cache::RegCache>,
}

impl std::fmt::Debug for ChannelCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Channel")
            .field("index", &self.index)
            .field("ring_size", &self.mem.size)
            .field("health", &self.health())
            .finish()
    }
}

fn ch_reg(ch: u8, r: &regs::Register) -> u32 {
    channel_reg(ch as usize, r)
}

impl ChannelCore {
    /// Allocate ring memory and program channel `index` (the caller enables
    /// the engine).
    pub fn new(
        index: u8,
        regs: Arc<Regs>,
        cfg: EngineConfig,
        space: &Arc<crate::mem::DmaSpace>,
        ring_size: u32,
        watchdog: WatchdogConfig,
        reclaim: Arc<crate::reactor::ReclaimSignal>,
    ) -> Result<ChannelCore> {
        if !ring_size.is_power_of_two() || ring_size < 2 || ring_size > cfg.max_ring_entries() {
            return Err(Error::Invalid(format!(
                "ring size {ring_size}: must be a power of two from 2 to {}",
                cfg.max_ring_entries()
            )));
        }
        let opts = crate::mem::BufferOptions {
            name: format!("fdma-ring{index}"),
            ..Default::default()
        };
        let ring = DmaBuffer::new(space, ring_size as usize * fdma_hw::desc::DESC_BYTES, &opts)?;
        let wb = DmaBuffer::new(
            space,
            4096,
            &crate::mem::BufferOptions {
                name: format!("fdma-wb{index}"),
                ..Default::default()
            },
        )?;
        let irq = crate::reactor::eventfd()?;
        let core = ChannelCore {
            index,
            timeline: Timeline::new(index),
            mem: RingMem {
                ring,
                wb,
                size: ring_size,
            },
            regs,
            cfg,
            state: Mutex::new(State {
                tail: 0,
                head: 0,
                inflight: VecDeque::with_capacity(ring_size as usize),
                done: VecDeque::with_capacity(ring_size as usize),
                held: VecDeque::with_capacity(ring_size as usize),
                progress: None,
            }),
            dma: space.clone(),
            room: Condvar::new(),
            doorbell: Mutex::new(0),
            published_tail: AtomicU32::new(0),
            rung_tail: AtomicU32::new(0),
            reset_lock: Mutex::new(()),
            health: AtomicU8::new(H_RUNNING),
            halted_code: AtomicU8::new(0),
            mode: AtomicU8::new(0),
            irq,
            stats: ChannelStats::default(),
            watchdog,
            reclaim,
            cache: std::sync::OnceLock::new(),
        };
        core.program()?;
        Ok(core)
    }

    /// Reset the channel in the device and wait until it is stopped: from
    /// then on the engine touches none of the channel's memory.
    pub(crate) fn stop_in_device(&self) -> Result<()> {
        let ch = self.index;
        self.regs
            .write(ch_reg(ch, &regs::CH_CTRL), regs::CH_CTRL_RESET.encode(1))?;
        self.wait_reset_done()
    }

    /// Reset the channel in the device and program its ring, writeback and
    /// vector, then set RUN. Software indices must be zero.
    fn program(&self) -> Result<()> {
        let ch = self.index;
        self.stop_in_device()?;
        self.mem.clear_wb();
        let ring = self.mem.ring.iova();
        let wb = self.mem.wb.iova();
        let r = &self.regs;
        r.write(ch_reg(ch, &regs::CH_RING_LO), ring as u32)?;
        r.write(ch_reg(ch, &regs::CH_RING_HI), (ring >> 32) as u32)?;
        r.write(ch_reg(ch, &regs::CH_RING_SIZE), self.mem.size)?;
        r.write(ch_reg(ch, &regs::CH_WB_LO), wb as u32)?;
        r.write(ch_reg(ch, &regs::CH_WB_HI), (wb >> 32) as u32)?;
        r.write(ch_reg(ch, &regs::CH_IRQ_VEC), ch as u32)?;
        r.write(ch_reg(ch, &regs::CH_CTRL), regs::CH_CTRL_RUN.encode(1))?;
        Ok(())
    }

    /// Wait for a channel reset to finish: bounded in device time (D1) with
    /// the wall-clock backstop.
    fn wait_reset_done(&self) -> Result<()> {
        let ch = self.index;
        let bound = 1_000_000u64;
        let start_cycles = self.regs.cycles()?;
        let t0 = Instant::now();
        loop {
            let ctrl = self.regs.read(ch_reg(ch, &regs::CH_CTRL))?;
            let st = self.regs.read(ch_reg(ch, &regs::CH_STATUS))?;
            if ctrl != u32::MAX
                && regs::CH_CTRL_RESET.decode(ctrl) == 0
                && regs::CH_STATUS_STATE.decode(st) == state::STOPPED
            {
                return Ok(());
            }
            let now = self.regs.cycles()?;
            if now.wrapping_sub(start_cycles) > bound || t0.elapsed() > self.watchdog.backstop {
                return Err(Error::DeviceTimeout {
                    device: self.regs.backend().name().to_string(),
                    what: "channel reset",
                    cycles: bound,
                });
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Current health.
    pub fn health(&self) -> Health {
        match self.health.load(Ordering::Acquire) {
            H_RUNNING => Health::Running,
            H_HALTED => Health::Halted(self.halted_code.load(Ordering::Relaxed)),
            H_HUNG => Health::Hung,
            H_LOST => Health::Lost,
            H_RESETTING => Health::Resetting,
            _ => Health::Closed,
        }
    }

    fn down_error(&self) -> Error {
        let state = match self.health() {
            Health::Halted(c) => format!("halted (error {c}: {})", err::name(c)),
            Health::Hung => "hung".into(),
            Health::Lost => "lost".into(),
            Health::Closed => "closed".into(),
            Health::Resetting => "being reset".into(),
            Health::Running => "running".into(),
        };
        if self.health() == Health::Lost {
            return Error::DeviceLost {
                device: self.regs.backend().name().to_string(),
            };
        }
        Error::ChannelDown {
            channel: self.index,
            state,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Submit a job (see [`Channel::submit_with`]). A job using process
    /// memory whose registration was invalidated between lookup and commit
    /// (R4) is looked up again, a few times at most.
    pub fn submit(&self, job: &Job, opts: SubmitOptions) -> Result<Fence> {
        let mut attempts = 0;
        loop {
            match self.submit_once(job, opts) {
                Err(Error::StaleRegistration { .. }) if attempts < 3 => attempts += 1,
                r => return r,
            }
        }
    }

    fn submit_once(&self, job: &Job, opts: SubmitOptions) -> Result<Fence> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        let low = job.lower(&self.cfg, &self.dma, self.cache.get())?;
        let n = low.descs.len() as u32;
        if n > self.mem.size {
            return Err(Error::Invalid(format!(
                "job needs {n} descriptors; channel {} ring holds {}",
                self.index, self.mem.size
            )));
        }
        if self.health() != Health::Running {
            return Err(self.down_error());
        }
        // R2: wait for what the device may not overtake. The buffers'
        // submit locks (address order, R6) make the wait and the adding of
        // this job's fence one step for every other submitter; no
        // reservation lock is held while waiting.
        let resvs: Vec<&crate::resv::Resv> = low
            .reads
            .iter()
            .chain(&low.writes)
            .map(|b| b.resv())
            .chain(low.regs.iter().map(|(e, _)| &e.resv))
            .collect();
        let _submit_guards = crate::resv::lock_for_submit(&resvs);
        if opts.implicit_sync {
            for b in &low.reads {
                b.resv().wait(Purpose::DeviceRead, None)?;
            }
            for b in &low.writes {
                b.resv().wait(Purpose::DeviceWrite, None)?;
            }
            for (e, write) in &low.regs {
                let p = if *write {
                    Purpose::DeviceWrite
                } else {
                    Purpose::DeviceRead
                };
                e.resv.wait(p, None)?;
            }
        }
        // R3: reserve fence slots before the point of no return.
        let mut read_slots: Vec<_> = low.reads.iter().map(|b| b.resv().reserve(1)).collect();
        let mut write_slots: Vec<_> = low.writes.iter().map(|b| b.resv().reserve(1)).collect();
        let mut reg_slots: Vec<_> = low.regs.iter().map(|(e, _)| e.resv.reserve(1)).collect();

        // The shim's drain may wait (bounded) for its monitor and allocate:
        // done here, before the state lock the completion path takes.
        if let Some(c) = self.cache.get().filter(|_| !low.regs.is_empty()) {
            c.sync_events();
        }
        let mut reclaimed = Vec::new();
        let mut st = self.lock();
        loop {
            if self.health() != Health::Running {
                return Err(self.down_error());
            }
            // Opportunistic reclaim on the submitter's thread (not a
            // signalling path): dropped after the lock is released.
            reclaimed.extend(st.done.drain(..));
            let used = st.tail.wrapping_sub(st.head);
            let jobs = st.jobs();
            if used + n <= self.mem.size && jobs < self.mem.size as usize {
                break;
            }
            if opts.on_full == OnFull::Error {
                return Err(Error::RingFull {
                    channel: self.index,
                    in_flight: used,
                });
            }
            // Deferred doorbells must go out, or the room never comes.
            drop(st);
            drop(std::mem::take(&mut reclaimed));
            self.ring_doorbell()?;
            crate::sync::assert_may_block("ring-full wait");
            st = self.lock();
            if st.tail.wrapping_sub(st.head) + n > self.mem.size {
                st = self
                    .room
                    .wait_timeout(st, self.watchdog.tick)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }

        // R4: the registrations are still valid, and this job's fence is
        // on them, as one step against the cache's invalidations.
        let entries: Vec<_> = low.regs.iter().map(|(e, _)| e).collect();
        let commit = match self.cache.get() {
            Some(c) if !entries.is_empty() => match c.commit(&entries) {
                Some(g) => Some(g),
                None => {
                    let (e, _) = &low.regs[0];
                    return Err(Error::StaleRegistration {
                        addr: e.start,
                        len: e.len,
                    });
                }
            },
            _ => None,
        };
        let (fence, sig) = self.timeline.create();
        let irq = self.mode.load(Ordering::Relaxed) == 0;
        let tag = fence.seqno() as u32;
        for (i, d) in low.descs.iter().enumerate() {
            let last = i + 1 == low.descs.len();
            let desc = Descriptor::new(d.dir, d.src, d.dst, d.len, last && irq, last, tag);
            debug_assert_eq!(desc.check(&self.cfg), None);
            self.mem.write_desc(st.tail.wrapping_add(i as u32), &desc);
        }
        for s in &mut read_slots {
            s.add(&fence, Usage::Read);
        }
        for s in &mut write_slots {
            s.add(&fence, Usage::Write);
        }
        for (s, (_, write)) in reg_slots.iter_mut().zip(&low.regs) {
            s.add(&fence, if *write { Usage::Write } else { Usage::Read });
        }
        drop(commit);
        drop(read_slots);
        drop(write_slots);
        drop(reg_slots);
        st.tail = st.tail.wrapping_add(n);
        let end = st.tail;
        st.inflight.push_back(Inflight {
            end,
            sig,
            bytes: low.bytes,
            _buffers: (low.reads.clone(), low.writes.clone()),
            entries: entries_keep(&low),
        });
        if st.inflight.len() == 1 {
            st.progress = None;
        }
        self.published_tail.store(st.tail, Ordering::Release);
        drop(st);
        drop(reclaimed);
        self.stats.jobs.fetch_add(1, Ordering::Relaxed);
        // Past the point of no return the job exists: a failed doorbell does
        // not unmake it. It runs with the next doorbell (the watchdog rings
        // deferred ones), or fails with the device if the device is lost.
        if opts.doorbell {
            if let Err(e) = self.ring_doorbell() {
                log::warn!(
                    "channel {}: doorbell for job {} failed: {e}; the watchdog retries",
                    self.index,
                    fence.seqno()
                );
            }
        }
        Ok(fence)
    }

    /// Write `TAIL` if it moved since the last doorbell (batching: one
    /// doorbell covers every job written before it).
    pub fn ring_doorbell(&self) -> Result<()> {
        let mut last = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.published_tail.load(Ordering::Acquire);
        if t == *last {
            return Ok(());
        }
        // Before the write: the device cannot report past it any sooner.
        self.rung_tail.store(t, Ordering::Release);
        match self.regs.doorbell(ch_reg(self.index, &regs::CH_TAIL), t) {
            Ok(()) => {
                *last = t;
                self.stats.doorbells.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Jobs in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().inflight.len()
    }

    /// Reset the channel (D4): in-flight jobs are cancelled, never replayed;
    /// the ring is rebuilt and the channel accepts jobs again.
    pub fn reset(&self) -> Result<()> {
        let _g = self.reset_guard();
        self.park()?;
        self.unpark()
    }

    /// Held across a reset: [`ChannelCore::park`] and
    /// [`ChannelCore::unpark`] must be called with it.
    pub(crate) fn reset_guard(&self) -> MutexGuard<'_, ()> {
        self.reset_lock.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// First half of a reset: refuse new jobs, stop the channel in the
    /// device (so the engine touches none of its memory), then cancel every
    /// job still in flight and forget the ring's indices. Jobs that
    /// complete while the channel stops complete normally. The channel
    /// stays parked (health `Resetting`) until [`ChannelCore::unpark`].
    pub(crate) fn park(&self) -> Result<()> {
        if crate::fork::in_forked_child() {
            return Err(Error::Forked);
        }
        {
            let _st = self.lock();
            let h = self.health.load(Ordering::Acquire);
            if h == H_LOST || h == H_CLOSED {
                return Err(self.down_error());
            }
            self.health.store(H_RESETTING, Ordering::Release);
        }
        let stopped = self.stop_in_device();
        self.process();
        let mut db = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        let ch = self.index;
        let mut st = self.lock();
        {
            let _s = SignallingSection::enter();
            // If the device did not confirm the stop, keep the memory.
            let hold = stopped.is_err();
            self.fail_all(&mut st, H_RESETTING, hold, |seqno| FenceError::Cancelled {
                channel: ch,
                seqno,
            });
            if !hold {
                st.release_held();
            }
        }
        st.tail = 0;
        st.head = 0;
        st.progress = None;
        self.published_tail.store(0, Ordering::Release);
        self.rung_tail.store(0, Ordering::Release);
        *db = 0;
        stopped
    }

    /// Second half of a reset: program the ring, writeback and vector, run
    /// the channel, and accept jobs again. Loses to a concurrent close.
    pub(crate) fn unpark(&self) -> Result<()> {
        if self.health.load(Ordering::Acquire) != H_RESETTING {
            return Err(self.down_error());
        }
        self.program()?;
        self.halted_code.store(0, Ordering::Relaxed);
        let _st = self.lock();
        self.health
            .compare_exchange(H_RESETTING, H_RUNNING, Ordering::AcqRel, Ordering::Acquire)
            .map(|_| ())
            .map_err(|_| self.down_error())
    }

    /// Ring a doorbell deferred by a batching submitter: every submitted
    /// job reaches the device within one watchdog tick (F3). Signalling
    /// path: a non-allocating register write.
    pub(crate) fn flush_deferred(&self) -> std::result::Result<(), RegFault> {
        let mut last = self.doorbell.lock().unwrap_or_else(|p| p.into_inner());
        let t = self.published_tail.load(Ordering::Acquire);
        if t == *last {
            return Ok(());
        }
        self.rung_tail.store(t, Ordering::Release);
        crate::mmio::doorbell_barrier();
        self.regs
            .write_nonalloc(ch_reg(self.index, &regs::CH_TAIL), t)?;
        *last = t;
        self.stats.doorbells.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Set interrupt or poll mode.
    pub fn set_mode(&self, mode: IrqMode) {
        self.mode.store(
            match mode {
                IrqMode::Interrupt => 0,
                IrqMode::Poll => 1,
            },
            Ordering::Relaxed,
        );
    }

    /// The current mode.
    pub fn mode(&self) -> IrqMode {
        if self.mode.load(Ordering::Relaxed) == 0 {
            IrqMode::Interrupt
        } else {
            IrqMode::Poll
        }
    }

    /// Interrupt moderation: raise the interrupt after `count` completions
    /// or `timer_cycles` device cycles after the first, whichever is first.
    pub fn set_moderation(&self, count: u16, timer_cycles: u32) -> Result<()> {
        let ch = self.index;
        self.regs
            .write(ch_reg(ch, &regs::CH_IRQ_COUNT), count as u32)?;
        self.regs
            .write(ch_reg(ch, &regs::CH_IRQ_TIMER), timer_cycles)?;
        Ok(())
    }
}
