//! The reactor: one thread on `mio` that turns interrupts into fences and
//! runs the watchdog; and the reclaim thread that frees what completed jobs
//! held.
//!
//! The reactor waits on every channel's interrupt eventfd, the error
//! vector's eventfd and a waker. An interrupt is a hint (D6): the channel's
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
//! queue, and the reclaim thread, woken through [`ReclaimSignal`], drops them.

use crate::backend::RegFault;
use crate::channel::IrqMode;
use crate::device::Shared;
use crate::sync::SignallingSection;
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token, Waker};
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
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

fn drain(fd: &impl AsRawFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: reading 8 bytes from a non-blocking eventfd into a local u64.
    let n = unsafe { libc::read(fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

/// The threads of a fully opened device.
#[derive(Debug)]
pub(crate) struct Threads {
    reactor: Option<JoinHandle<()>>,
    reclaim: Option<JoinHandle<()>>,
    waker: Arc<Waker>,
}

impl Threads {
    /// Start the reactor and the reclaim thread.
    pub fn start(shared: &Arc<Shared>) -> std::io::Result<Threads> {
        let poll = Poll::new()?;
        let n = shared.channels.len();
        for (i, c) in shared.channels.iter().enumerate() {
            poll.registry().register(
                &mut SourceFd(&c.irq.as_raw_fd()),
                Token(i),
                Interest::READABLE,
            )?;
        }
        if let Some(e) = &shared.err_irq {
            poll.registry().register(
                &mut SourceFd(&e.as_raw_fd()),
                Token(n),
                Interest::READABLE,
            )?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), Token(n + 1))?);
        let s = shared.clone();
        let reactor = std::thread::Builder::new()
            .name("fdma-reactor".into())
            .spawn(move || reactor_loop(&s, poll))?;
        let s = shared.clone();
        let reclaim = std::thread::Builder::new()
            .name("fdma-reclaim".into())
            .spawn(move || reclaim_loop(&s))?;
        Ok(Threads {
            reactor: Some(reactor),
            reclaim: Some(reclaim),
            waker,
        })
    }

    /// Stop and join both threads.
    pub fn stop(&mut self, shared: &Shared) {
        shared.stop.store(true, Ordering::Release);
        let _ = self.waker.wake();
        shared.reclaim.notify();
        for h in [self.reactor.take(), self.reclaim.take()]
            .into_iter()
            .flatten()
        {
            if h.thread().id() == std::thread::current().id() {
                // Closed from one of its own threads (the last handle
                // dropped in a callback): that thread ends by itself once
                // it sees `stop`; joining it here would wait for ever.
                continue;
            }
            if h.join().is_err() {
                log::error!("{}: an fdma thread panicked", shared.name);
            }
        }
    }
}

fn reactor_loop(shared: &Arc<Shared>, mut poll: Poll) {
    let mut events = Events::with_capacity(64);
    let n = shared.channels.len();
    let tick = shared.watchdog.tick;
    let mut last_tick = Instant::now();
    let mut cycles_seen: Option<(u64, Instant)> = None;
    while !shared.stop.load(Ordering::Acquire) {
        let timeout = tick.saturating_sub(last_tick.elapsed());
        if let Err(e) = poll.poll(&mut events, Some(timeout)) {
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            log::error!("{}: reactor poll failed: {e}", shared.name);
            shared.fail_lost();
            return;
        }
        for ev in events.iter() {
            let t = ev.token().0;
            if t < n {
                let c = &shared.channels[t];
                drain(&c.irq);
                c.stats.irqs.fetch_add(1, Ordering::Relaxed);
                if c.mode() == IrqMode::Interrupt && c.process() == 0 {
                    c.stats.empty_irqs.fetch_add(1, Ordering::Relaxed);
                }
            } else if t == n {
                if let Some(e) = &shared.err_irq {
                    drain(e);
                }
                for c in &shared.channels {
                    c.process();
                }
            }
        }
        if last_tick.elapsed() >= tick {
            last_tick = Instant::now();
            watchdog_tick(shared, &mut cycles_seen);
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
