//! The reactor: one thread on `mio` that turns interrupts into fences and
//! runs the watchdog; and the reclaim thread that frees what completed jobs
//! held.
//!
//! [`Reactor`] is the generic part: a thread waiting on an [`IrqHandler`]'s
//! eventfds with a periodic tick. A device's handler waits on every
//! channel's interrupt eventfd, the error vector's eventfd and, on kernel
//! VFIO, the device-request eventfd (the kernel wants the device back:
//! every fence fails with `DeviceLost` and the transport releases it). An interrupt is a hint (D6): the channel's
//! writeback is read and every job it reports is signalled. Every `tick` the
//! watchdog looks at channels with work in flight (F3, D1): it reads the
//! device cycle counter, processes completions (so a lost interrupt costs one
//! tick), and declares a channel hung when neither its head nor its byte
//! counter has moved for `stall_cycles` device cycles. When the cycle
//! counter itself stops for `backstop` of wall-clock time while work is
//! pending, or the transport reports the device gone, the device is lost and
//! every fence signals `DeviceLost`.
//!
//! Both the interrupt path and the watchdog are signalling paths (F10). They
//! never free what a job held: completed jobs go to their channel's done
//! queue, and the reclaim thread, woken through a `ReclaimSignal`, drops them.

use crate::backend::RegFault;
use crate::channel::IrqMode;
use crate::device::Shared;
use crate::sync::SignallingSection;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Wakes the reclaim thread. `notify` neither allocates nor blocks beyond
/// a short uncontended lock, so the signalling path may call it.
#[derive(Debug, Default)]
pub(crate) struct ReclaimSignal {
    pending: Mutex<bool>,
    cv: Condvar,
}

impl ReclaimSignal {
    pub fn notify(&self) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        *p = true;
        self.cv.notify_one();
    }

    fn wait(&self, timeout: Duration) {
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        if !*p {
            p = self
                .cv
                .wait_timeout(p, timeout)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *p = false;
    }
}

/// A non-blocking, close-on-exec eventfd for an interrupt vector (C10).
pub(crate) fn eventfd() -> crate::Result<nix::sys::eventfd::EventFd> {
    use nix::sys::eventfd::{EfdFlags, EventFd};
    EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).map_err(|e| {
        crate::Error::Sys {
            op: "eventfd",
            source: e.into(),
        }
    })
}

fn drain(fd: &i32) -> u64 {
    let mut v = 0u64;
    // SAFETY: reading 8 bytes from a non-blocking eventfd into a local u64.
    let n = unsafe { libc::read(*fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

/// What a [`Reactor`] serves: a set of interrupt eventfds and a periodic
/// tick. The device's channels are one such handler; a test tool driving
/// some other device through a [`crate::backend::Backend`] can be another,
/// and gets the same reactor.
///
/// Both calls run on the reactor thread, which is a signalling path
/// (F10): they must not block on fences, and should not allocate.
pub trait IrqHandler: Send + Sync + 'static {
    /// The eventfds to wait on; vector `i` is the `i`-th. Asked once, when
    /// the reactor starts; they must stay open while it runs (they are
    /// normally fields of the handler itself).
    fn irq_fds(&self) -> Vec<BorrowedFd<'_>>;

    /// Vector `vector` fired `count` times since it was last served. The
    /// eventfd is already drained. An interrupt is a hint (D6): read the
    /// device's state to find out what happened.
    fn on_irq(&self, vector: usize, count: u64);

    /// Called every tick, whether or not anything fired: the watchdog.
    fn on_tick(&self) {}

    /// Waiting failed; the reactor stops after this call. Fail everything.
    fn on_failure(&self, _error: &std::io::Error) {}
}

/// One thread on `mio` waiting on a handler's interrupt eventfds. Stops
/// (and joins) on [`Reactor::stop`] or drop.
#[derive(Debug)]
pub struct Reactor {
    thread: Option<JoinHandle<()>>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl Reactor {
    /// Start a thread called `name` serving `handler`, calling
    /// [`IrqHandler::on_tick`] every `tick`.
    pub fn start(
        name: &str,
        handler: Arc<dyn IrqHandler>,
        tick: Duration,
    ) -> std::io::Result<Reactor> {
        let poll = Poll::new()?;
        let n = {
            let fds = handler.irq_fds();
            for (i, fd) in fds.iter().enumerate() {
                poll.registry().register(
                    &mut SourceFd(&fd.as_raw_fd()),
                    Token(i),
                    Interest::READABLE,
                )?;
            }
            fds.len()
        };
        let waker = Arc::new(Waker::new(poll.registry(), Token(n))?);
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || reactor_loop(&*handler, poll, n, tick, &st))?;
        Ok(Reactor {
            thread: Some(thread),
            waker,
            stop,
        })
    }

    /// Stop the thread and wait for it, unless called from the thread
    /// itself (a handler dropping the last handle): then it ends by itself
    /// after the current call.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        if let Some(h) = self.thread.take() {
            if h.thread().id() != std::thread::current().id() && h.join().is_err() {
                log::error!("the reactor thread panicked");
            }
        }
    }
}

impl Drop for Reactor {
    fn drop(&mut self) {
        self.stop();
    }
}

fn reactor_loop(
    handler: &dyn IrqHandler,
    mut poll: Poll,
    vectors: usize,
    tick: Duration,
    stop: &AtomicBool,
) {
    let mut events = Events::with_capacity(64);
    let fds: Vec<i32> = handler.irq_fds().iter().map(|f| f.as_raw_fd()).collect();
    let mut last_tick = Instant::now();
    while !stop.load(Ordering::Acquire) {
        let timeout = tick.saturating_sub(last_tick.elapsed());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            handler.on_failure(&e);
            return;
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t < vectors {
                let count = drain(&fds[t]);
                handler.on_irq(t, count);
            }
        }
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            handler.on_tick();
        }
    }
}

/// The device's side of the reactor: vectors `0..channels` are the
/// channels' completion interrupts, then the error vector, then (on kernel
/// VFIO) the device-request interrupt.
struct DeviceIrqs {
    shared: Arc<Shared>,
    /// The watchdog's last cycle-counter reading and when it was first
    /// seen (nanoseconds after `base`, plus one; 0 = none). Atomics, not a
    /// lock: only the reactor thread uses them, and it is a signalling
    /// path (F10).
    cycles: AtomicU64,
    cycles_since: AtomicU64,
    base: Instant,
}

impl IrqHandler for DeviceIrqs {
    fn irq_fds(&self) -> Vec<BorrowedFd<'_>> {
        let s = &self.shared;
        let mut fds: Vec<_> = s.channels.iter().map(|c| c.irq.as_fd()).collect();
        fds.extend(s.err_irq.as_ref().map(|e| e.as_fd()));
        fds.extend(s.req_irq.as_ref().map(|e| e.as_fd()));
        fds
    }

    fn on_irq(&self, vector: usize, _count: u64) {
        let s = &self.shared;
        let n = s.channels.len();
        if vector < n {
            let c = &s.channels[vector];
            c.stats.irqs.fetch_add(1, Ordering::Relaxed);
            if c.mode() == IrqMode::Interrupt && c.process() == 0 {
                c.stats.empty_irqs.fetch_add(1, Ordering::Relaxed);
            }
        } else if vector == n && s.err_irq.is_some() {
            for c in &s.channels {
                c.process();
            }
        } else {
            // The device-request interrupt: the kernel wants the device
            // back (unbind, hot unplug). Fail every fence here; letting go
            // (munmap, close, a log line) is the reclaim thread's job, off
            // the signalling path (F10). The unbind finishes after it.
            {
                let _s = SignallingSection::enter();
                s.fail_lost();
            }
            s.release_requested.store(true, Ordering::Release);
            s.reclaim.notify();
        }
    }

    fn on_tick(&self) {
        let mut seen = match self.cycles_since.load(Ordering::Relaxed) {
            0 => None,
            n => Some((
                self.cycles.load(Ordering::Relaxed),
                self.base + Duration::from_nanos(n - 1),
            )),
        };
        watchdog_tick(&self.shared, &mut seen);
        match seen {
            None => self.cycles_since.store(0, Ordering::Relaxed),
            Some((c, at)) => {
                self.cycles.store(c, Ordering::Relaxed);
                let ns = at.saturating_duration_since(self.base).as_nanos() as u64;
                self.cycles_since.store(ns + 1, Ordering::Relaxed);
            }
        }
    }

    fn on_failure(&self, e: &std::io::Error) {
        log::error!("{}: reactor poll failed: {e}", self.shared.name);
        self.shared.fail_lost();
    }
}

/// The threads of a fully opened device.
#[derive(Debug)]
pub(crate) struct Threads {
    reactor: Reactor,
    reclaim: Option<JoinHandle<()>>,
}

impl Threads {
    /// Start the reactor and the reclaim thread.
    pub fn start(shared: &Arc<Shared>) -> std::io::Result<Threads> {
        let handler = Arc::new(DeviceIrqs {
            shared: shared.clone(),
            cycles: AtomicU64::new(0),
            cycles_since: AtomicU64::new(0),
            base: Instant::now(),
        });
        let reactor = Reactor::start("fdma-reactor", handler, shared.watchdog.tick)?;
        let s = shared.clone();
        let reclaim = std::thread::Builder::new()
            .name("fdma-reclaim".into())
            .spawn(move || reclaim_loop(&s))?;
        Ok(Threads {
            reactor,
            reclaim: Some(reclaim),
        })
    }

    /// Stop and join both threads.
    pub fn stop(&mut self, shared: &Shared) {
        shared.stop.store(true, Ordering::Release);
        self.reactor.stop();
        shared.reclaim.notify();
        if let Some(h) = self.reclaim.take() {
            if h.thread().id() == std::thread::current().id() {
                // Closed from its own thread (the last handle dropped in a
                // callback): it ends by itself once it sees `stop`.
                return;
            }
            if h.join().is_err() {
                log::error!("{}: the reclaim thread panicked", shared.name);
            }
        }
    }
}

/// What a watchdog pass found, reported after its signalling section (the
/// log allocates).
enum Finding {
    Nothing,
    Hung(u64),
    Stuck(u64, Duration),
    Lost,
}

/// One watchdog pass over every channel (F3, D1). A signalling path: the
/// pass itself neither allocates nor logs; what it found is logged after.
fn watchdog_tick(shared: &Shared, cycles_seen: &mut Option<(u64, Instant)>) {
    let finding = {
        let _s = SignallingSection::enter();
        watchdog_pass(shared, cycles_seen)
    };
    match finding {
        Finding::Nothing => {}
        Finding::Hung(mask) => {
            for c in shared
                .channels
                .iter()
                .filter(|c| mask & (1 << c.index) != 0)
            {
                log::error!(
                    "{}: channel {} hung (no progress for {} device cycles); reset it to restore service",
                    shared.name,
                    c.index,
                    shared.watchdog.stall_cycles
                );
            }
        }
        Finding::Stuck(at, for_) => log::error!(
            "{}: device cycle counter stuck at {at:#x} for {for_:?} with work pending; device lost",
            shared.name
        ),
        Finding::Lost => log::error!("{}: device stopped answering; device lost", shared.name),
    }
}

fn watchdog_pass(shared: &Shared, cycles_seen: &mut Option<(u64, Instant)>) -> Finding {
    if shared.is_lost() {
        return Finding::Nothing;
    }
    if shared.regs.backend().is_lost() {
        shared.fail_lost();
        return Finding::Lost;
    }
    if !shared.channels.iter().any(|c| c.in_flight() > 0) {
        *cycles_seen = None;
        return Finding::Nothing;
    }
    let now = match shared.regs.cycles_nonalloc() {
        Ok(c) => c,
        Err(RegFault::Lost) => {
            shared.fail_lost();
            return Finding::Lost;
        }
        // Refused or forked: try again next tick; the backstop still runs.
        Err(_) => return Finding::Nothing,
    };
    // All ones is what a read returns when the link is down (D2): the
    // device is not answering, so no channel can be judged; only the
    // backstop below runs.
    let dead_link = now == u64::MAX;
    match cycles_seen {
        Some((c, since)) if *c == now => {
            if since.elapsed() > shared.watchdog.backstop {
                let waited = since.elapsed();
                shared.fail_lost();
                return Finding::Stuck(now, waited);
            }
        }
        _ => *cycles_seen = Some((now, Instant::now())),
    }
    if dead_link {
        return Finding::Nothing;
    }
    let mut hung = 0u64;
    for c in &shared.channels {
        match c.watchdog(now) {
            Ok(true) => hung |= 1 << c.index,
            Ok(false) => {}
            Err(RegFault::Lost) => {
                shared.fail_lost();
                return Finding::Lost;
            }
            Err(_) => {}
        }
    }
    if hung != 0 {
        Finding::Hung(hung)
    } else {
        Finding::Nothing
    }
}

fn reclaim_loop(shared: &Arc<Shared>) {
    loop {
        if shared.release_requested.swap(false, Ordering::AcqRel) {
            log::error!(
                "{}: the kernel asked for the device back (unbind or unplug); all jobs failed, device released",
                shared.name
            );
            shared.regs.backend().release();
        }
        let stopping = shared.stop.load(Ordering::Acquire);
        for c in &shared.channels {
            c.reclaim();
        }
        if stopping {
            return;
        }
        shared.reclaim.wait(Duration::from_secs(1));
    }
}
