//! Opening, inspecting, closing and forking: what a device handle does at
//! the edges of its life.

mod common;

use common::*;
use fdma::faults::OneShot;
use fdma::{Device, FenceError, Job};
use fdma_hw::regs::{self, channel_reg};

#[test]
fn bad_device_names_are_clear_errors() {
    for bad in ["", "sim:", "nonsense", "0000:01:00", "01:00.9"] {
        let e = Device::open(bad).unwrap_err();
        assert!(matches!(e, fdma::Error::DeviceName { .. }), "{bad}: {e}");
    }
    let e = Device::open("sim:/nonexistent/fdma.sock").unwrap_err();
    assert!(e.to_string().contains("/nonexistent/fdma.sock"), "{e}");
}

#[test]
fn close_with_jobs_in_flight_signals_every_fence() {
    let rig = rig();
    let dev = rig.dev;
    let fi = dev.faults().unwrap();
    let c = dev.channel(0).unwrap();
    let b = dev.alloc(4096).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    fi.stall(0, true).unwrap();
    let stalled: Vec<_> = (0..4).map(|_| c.submit(&j).unwrap()).collect();
    let ok = dev.channel(1).unwrap().submit(&j).unwrap();
    dev.close().unwrap();
    assert_eq!(wait(&ok), Ok(()));
    for f in &stalled {
        let s = wait(f);
        assert!(
            matches!(
                s,
                Err(FenceError::Hung { .. } | FenceError::Cancelled { .. })
            ),
            "{s:?}"
        );
    }
    // The handle outlives the device and reports it closed.
    assert!(matches!(
        c.submit(&j).unwrap_err(),
        fdma::Error::Closed { .. }
    ));
    // Buffers outlive the device too and can still be read.
    assert_eq!(b.read_vec(0, 4).unwrap().len(), 4);
}

/// Run by `inspect_open_shows_a_halt_instead_of_erasing_it` in a child
/// process: halt channel 2 and exit without closing, as a crashed tool would.
#[test]
#[ignore = "helper run by another test in a child process"]
fn helper_halt_and_exit() {
    let Ok(name) = std::env::var("FDMA_TEST_HALT_DEVICE") else {
        return;
    };
    let dev = Device::open_with(&name, &test_opts()).unwrap();
    let c = dev.channel(2).unwrap();
    let b = dev.alloc(64).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 64);
    dev.faults()
        .unwrap()
        .one_shot(2, OneShot::DescriptorError)
        .unwrap();
    assert!(wait(&c.submit(&j).unwrap()).is_err());
    std::process::exit(0);
}

#[test]
fn inspect_open_shows_a_halt_instead_of_erasing_it() {
    let Some(rig) = sim_rig("a second process on the device", &[], test_opts()) else {
        return;
    };
    let name = rig.dev.name().to_string();
    let sim = rig.sim;
    drop(rig.dev);
    let st = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "helper_halt_and_exit",
            "--ignored",
            "--nocapture",
        ])
        .env("FDMA_TEST_HALT_DEVICE", &name)
        .status()
        .unwrap();
    assert!(st.success());
    let _sim = sim;
    // The simulator notices the child's socket closing on its next poll;
    // until then it refuses a second client (EBUSY).
    let t0 = std::time::Instant::now();
    let dev = loop {
        match Device::inspect(&name) {
            Ok(d) => break d,
            Err(e) if t0.elapsed() < std::time::Duration::from_secs(10) => {
                eprintln!("retrying inspect open: {e}");
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
            Err(e) => panic!("inspect open: {e}"),
        }
    };
    assert!(dev.is_inspect());
    let status = dev.read_reg(channel_reg(2, &regs::CH_STATUS)).unwrap();
    assert_eq!(
        regs::CH_STATUS_STATE.decode(status),
        regs::state::HALTED,
        "inspect must not reset the engine"
    );
    assert_eq!(
        regs::CH_STATUS_ERR.decode(status) as u8,
        fdma_hw::desc::err::INJECTED
    );
    assert_eq!(
        regs::GCTRL_ENABLE.decode(dev.read_reg(regs::GCTRL.offset).unwrap()),
        1
    );
    // Guarded writes: harmless registers yes, DMA-starting ones no.
    dev.write_reg(regs::SCRATCH.offset, 0x5a5a).unwrap();
    assert_eq!(dev.read_reg(regs::SCRATCH.offset).unwrap(), 0x5a5a);
    assert!(dev.write_reg(channel_reg(0, &regs::CH_TAIL), 1).is_err());
    assert!(dev.write_reg(regs::ID.offset, 1).is_err());
    assert!(matches!(
        dev.channel(0).unwrap_err(),
        fdma::Error::InspectOnly { .. }
    ));
    assert!(dev.alloc(4096).is_err());
}

#[test]
fn c10_a_forked_child_gets_poisoned_handles_and_the_parent_carries_on() {
    let mut rig = Some(rig());
    let dev = &rig.as_ref().unwrap().dev;
    let c = dev.channel(0).unwrap();
    let b = dev.alloc(4096).unwrap();
    b.write_at(0, &pattern(1, 4096)).unwrap();
    let mut j = Job::new();
    j.h2c(&b, 0, 0, 4096);
    wait(&c.submit(&j).unwrap()).unwrap();
    // SAFETY: the child only calls fdma entry points that return at once
    // (no locks, no allocation on the error path), drops its handles (which
    // must do no I/O), and then _exits.
    match unsafe { libc::fork() } {
        0 => {
            let dev = &rig.as_ref().unwrap().dev;
            let ok = matches!(c.submit(&j), Err(fdma::Error::Forked))
                && matches!(dev.read_reg(0), Err(fdma::Error::Forked))
                && matches!(dev.cycles(), Err(fdma::Error::Forked))
                && matches!(dev.dma_space(), Err(fdma::Error::Forked))
                && matches!(dev.alloc(4096), Err(fdma::Error::Forked))
                && matches!(dev.card_read(0, &mut [0u8; 4]), Err(fdma::Error::Forked))
                && matches!(c.reset(), Err(fdma::Error::Forked))
                && matches!(b.read_vec(0, 1), Err(fdma::Error::Forked));
            drop(c);
            drop(b);
            drop(j);
            // Dropping the device in the child: no messages on the
            // parent's socket, no unmaps, no joins of threads it lacks.
            // (The simulator process is the parent's: forget, not kill.)
            let Rig { dev, sim } = rig.take().expect("rig");
            std::mem::forget(sim);
            drop(dev);
            // SAFETY: leaving the child without running the parent's
            // destructors or atexit handlers.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        pid if pid > 0 => {
            let mut status = 0;
            // SAFETY: waiting for our own child.
            assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
            assert!(libc::WIFEXITED(status), "child status {status:#x}");
            assert_eq!(libc::WEXITSTATUS(status), 0, "child saw usable handles");
        }
        _ => panic!("fork failed"),
    }
    // The parent's session, mappings and DMA are intact.
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut card = vec![0u8; 4096];
    dev.card_read(0, &mut card).unwrap();
    assert_same(&card, &pattern(1, 4096), "parent DMA after fork");
    assert_eq!(
        dev.read_reg(fdma_hw::regs::ID.offset).unwrap(),
        fdma_hw::id_value()
    );
}
