//! Driver benchmarks, each next to its baseline measured in the same run
//! (these machines are shared and noisy: compare rows, not runs):
//!
//! * fence wake latency — from the channel's interrupt eventfd being written
//!   to the waiter returning from `Fence::wait`, p50/p99 — next to a raw
//!   eventfd + epoll wake of a thread;
//! * jobs per second, MB/s and the driver process's CPU time per job
//!   (getrusage: the simulator is another process) for small and large jobs
//!   in interrupt and poll mode — next to the model alone, in-process, with
//!   no server and no driver.
//!
//! Run: `cargo bench -p fdma-host-tests --bench driver` (`-- --quick` for a
//! short run). Starts its own simulator.

use fdma::faults::OneShot;
use fdma::{Device, IrqMode, Job, OpenOptions, WatchdogConfig};
use fdma_hw::desc::Direction;
use fdma_hw::regs::{self, channel_reg};
use fdma_sim::card::LinkModel;
use std::os::fd::{AsFd, AsRawFd};
use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

fn start_sim() -> fdma_host_tests::sim::SimProc {
    fdma_host_tests::sim::SimProc::start(Path::new(env!("CARGO_BIN_EXE_fdma-host-sim")), &[])
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn write_eventfd(fd: i32) {
    let one = 1u64.to_ne_bytes();
    // SAFETY: an 8-byte write to an eventfd we hold.
    let n = unsafe { libc::write(fd, one.as_ptr().cast(), 8) };
    assert_eq!(n, 8);
}

/// Raw baseline: one thread blocked in epoll_wait on an eventfd, woken by a
/// write from another. Returns one-way wake latencies in microseconds.
fn raw_eventfd_wakes(samples: usize) -> Vec<f64> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).unwrap();
    let raw = efd.as_raw_fd();
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (t_tx, t_rx) = mpsc::channel::<Instant>();
    let waiter = std::thread::spawn(move || {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        ep.add(efd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let mut evs = [EpollEvent::empty(); 1];
        for _ in 0..samples {
            ready_tx.send(()).unwrap();
            ep.wait(&mut evs, EpollTimeout::NONE).unwrap();
            let woke = Instant::now();
            let _ = efd.read();
            t_tx.send(woke).unwrap();
        }
    });
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        ready_rx.recv().unwrap();
        // Let the waiter block in epoll_wait.
        std::thread::sleep(Duration::from_micros(200));
        let t0 = Instant::now();
        write_eventfd(raw);
        let woke = t_rx.recv().unwrap();
        out.push(woke.duration_since(t0).as_secs_f64() * 1e6);
    }
    waiter.join().unwrap();
    out
}

/// Raw two-hop baseline, the shape of a fence wake: a thread blocked in
/// epoll_wait on an eventfd is woken by a write, and wakes a second thread
/// blocked on a condition variable. One-way latencies in microseconds.
fn raw_two_hop_wakes(samples: usize) -> Vec<f64> {
    use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
    use nix::sys::eventfd::{EfdFlags, EventFd};
    use std::sync::{Arc, Condvar, Mutex};
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).unwrap();
    let raw = efd.as_raw_fd();
    let flag = Arc::new((Mutex::new(0u64), Condvar::new()));
    let f2 = flag.clone();
    let relay = std::thread::spawn(move || {
        let ep = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap();
        ep.add(efd.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, 0))
            .unwrap();
        let mut evs = [EpollEvent::empty(); 1];
        for _ in 0..samples {
            ep.wait(&mut evs, EpollTimeout::NONE).unwrap();
            let _ = efd.read();
            let (m, cv) = &*f2;
            *m.lock().unwrap() += 1;
            cv.notify_all();
        }
    });
    let (ready_tx, ready_rx) = mpsc::channel::<()>();
    let (t_tx, t_rx) = mpsc::channel::<Instant>();
    let f3 = flag.clone();
    let waiter = std::thread::spawn(move || {
        for i in 0..samples as u64 {
            let (m, cv) = &*f3;
            let mut g = m.lock().unwrap();
            ready_tx.send(()).unwrap();
            while *g <= i {
                g = cv.wait(g).unwrap();
            }
            t_tx.send(Instant::now()).unwrap();
        }
    });
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        ready_rx.recv().unwrap();
        std::thread::sleep(Duration::from_micros(200));
        let t0 = Instant::now();
        write_eventfd(raw);
        let woke = t_rx.recv().unwrap();
        out.push(woke.duration_since(t0).as_secs_f64() * 1e6);
    }
    relay.join().unwrap();
    waiter.join().unwrap();
    out
}

/// Fence wake latency: the device completes a job but its interrupt is
/// dropped (fault injection); once the completion is in the writeback, the
/// bench writes the channel's interrupt eventfd itself, as the MSI would,
/// and times until the waiter blocked in `Fence::wait` returns.
fn fence_wakes(dev: &Device, samples: usize) -> Vec<f64> {
    let ch = dev.channel(0).unwrap();
    let fi = dev.faults().unwrap();
    let buf = dev.alloc(64).unwrap();
    let mut job = Job::new();
    job.h2c(&buf, 0, 0, 64);
    let irq = ch.irq_fd().as_raw_fd();
    let mut out = Vec::with_capacity(samples);
    for _ in 0..samples {
        fi.one_shot(0, OneShot::DropIrq).unwrap();
        let f = ch.submit(&job).unwrap();
        // Wait until the engine has completed it (HEAD == TAIL).
        let t0 = Instant::now();
        loop {
            let h = dev.read_reg(channel_reg(0, &regs::CH_HEAD)).unwrap();
            let t = dev.read_reg(channel_reg(0, &regs::CH_TAIL)).unwrap();
            if h == t {
                break;
            }
            assert!(t0.elapsed() < Duration::from_secs(10));
        }
        let f2 = f.clone();
        let (tx, rx) = mpsc::channel();
        let waiter = std::thread::spawn(move || {
            f2.wait().unwrap();
            tx.send(Instant::now()).unwrap();
        });
        std::thread::sleep(Duration::from_micros(300));
        if f.is_signalled() {
            // The watchdog got there first; not a sample.
            waiter.join().unwrap();
            continue;
        }
        let t0 = Instant::now();
        write_eventfd(irq);
        let woke = rx.recv().unwrap();
        waiter.join().unwrap();
        out.push(woke.duration_since(t0).as_secs_f64() * 1e6);
    }
    out
}

fn cpu_secs() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

struct Rate {
    jobs_s: f64,
    mb_s: f64,
    cpu_us_job: f64,
}

/// `jobs` host-to-card jobs of `len` bytes with up to `depth` in flight.
fn throughput(dev: &Device, mode: IrqMode, len: usize, jobs: u32, depth: usize) -> Rate {
    let ch = dev.channel(1).unwrap();
    ch.set_mode(mode);
    let buf = dev.alloc(len).unwrap();
    let mut job = Job::new();
    job.h2c(&buf, 0, 0, len);
    let opts = fdma::SubmitOptions {
        implicit_sync: false,
        ..Default::default()
    };
    let cpu0 = cpu_secs();
    let t0 = Instant::now();
    let mut inflight = std::collections::VecDeque::new();
    for _ in 0..jobs {
        if inflight.len() >= depth {
            let f: fdma::Fence = inflight.pop_front().unwrap();
            if mode == IrqMode::Poll {
                while !f.is_signalled() {
                    ch.poll().unwrap();
                }
            }
            f.wait().unwrap();
        }
        inflight.push_back(ch.submit_with(&job, opts).unwrap());
    }
    for f in inflight {
        if mode == IrqMode::Poll {
            while !f.is_signalled() {
                ch.poll().unwrap();
            }
        }
        f.wait().unwrap();
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_secs() - cpu0;
    ch.set_mode(IrqMode::Interrupt);
    Rate {
        jobs_s: jobs as f64 / secs,
        mb_s: len as f64 * jobs as f64 / secs / 1e6,
        cpu_us_job: cpu / jobs as f64 * 1e6,
    }
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let sim = start_sim();
    let opts = OpenOptions {
        watchdog: WatchdogConfig {
            // Long ticks, so that the wake measurement is not pre-empted by
            // the watchdog finding the completion first.
            tick: Duration::from_secs(2),
            ..Default::default()
        },
        ..Default::default()
    };
    let dev = Device::open_with(&sim.name(), &opts).expect("open the simulator");

    let n = if quick { 100 } else { 400 };
    let mut raw = raw_eventfd_wakes(n);
    let mut two_hop = raw_two_hop_wakes(n);
    let mut fence = fence_wakes(&dev, n);
    println!("fence wake latency (interrupt eventfd written -> waiter returns), {n} samples");
    println!("{:<34} {:>10} {:>10}", "", "p50 us", "p99 us");
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "raw eventfd + epoll thread wake",
        pct(&mut raw, 0.5),
        pct(&mut raw, 0.99)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}",
        "raw eventfd -> epoll -> condvar",
        pct(&mut two_hop, 0.5),
        pct(&mut two_hop, 0.99)
    );
    println!(
        "{:<34} {:>10.1} {:>10.1}   ({} samples)",
        "fdma fence (reactor -> waiter)",
        pct(&mut fence, 0.5),
        pct(&mut fence, 0.99),
        fence.len()
    );
    println!();

    let cases: &[(&str, usize, u32)] = if quick {
        &[("4 KiB", 4096, 200), ("4 MiB", 4 << 20, 4)]
    } else {
        &[("4 KiB", 4096, 2000), ("4 MiB", 4 << 20, 16)]
    };
    println!("host-to-card throughput through the simulator (link model on), 16 jobs in flight");
    println!(
        "{:<8} {:<22} {:>10} {:>10} {:>14}",
        "job", "path", "jobs/s", "MB/s", "CPU us/job"
    );
    for &(name, len, jobs) in cases {
        let m = fdma_sim::modelrun::copy(
            LinkModel::default(),
            Direction::HostToCard,
            len as u32,
            jobs,
        )
        .expect("model run");
        println!(
            "{:<8} {:<22} {:>10.0} {:>10.1} {:>14}",
            name,
            "model alone",
            m.jobs as f64 / m.secs,
            m.bytes as f64 / m.secs / 1e6,
            "-"
        );
        for mode in [IrqMode::Interrupt, IrqMode::Poll] {
            let r = throughput(&dev, mode, len, jobs, 16);
            println!(
                "{:<8} {:<22} {:>10.0} {:>10.1} {:>14.1}",
                name,
                format!(
                    "driver, {}",
                    if mode == IrqMode::Poll {
                        "poll"
                    } else {
                        "interrupt"
                    }
                ),
                r.jobs_s,
                r.mb_s,
                r.cpu_us_job
            );
        }
    }
    dev.close().unwrap();
}
