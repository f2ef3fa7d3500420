//! A simulator serves one client at a time: a second client gets
//! [`BackendError::Busy`] naming the socket and, when the simulator
//! announces itself, the pid of the client it serves; the first client is
//! not disturbed, and once it leaves the simulator is free again.

mod common;

use common::Sim;
use std::time::Duration;

use fdma::backend::vfio_user::{VfioUserBackend, VfioUserOptions};
use fdma::backend::Backend;
use fdma::BackendError;
use fdma_sim::card::{LinkModel, SimConfig};

/// A server on a thread of this process, announced (or not).
fn start(announce: bool) -> Sim {
    let sim = SimConfig {
        link: LinkModel::OFF,
        ..SimConfig::default()
    };
    common::start_with(sim, announce)
}

fn second_client_error(sim: &Sim) -> BackendError {
    match VfioUserBackend::connect(&sim.sock, &VfioUserOptions::default()) {
        Ok(_) => panic!("a second client was accepted"),
        Err(e) => e,
    }
}

/// The error with its causes, as the tools print it.
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s += ": ";
        s += &c.to_string();
        cur = c.source();
    }
    s
}

#[test]
fn a_second_client_is_refused_as_busy_and_told_who_holds_the_simulator() {
    let _ = env_logger::builder().is_test(true).try_init();
    // Announcements go to a runtime directory of this test's own.
    let rt = tempfile::tempdir().unwrap();
    std::env::set_var("XDG_RUNTIME_DIR", rt.path());

    // Not announced: busy, without a pid.
    let sim = start(false);
    let first = VfioUserBackend::connect(&sim.sock, &VfioUserOptions::default()).unwrap();
    let e = second_client_error(&sim);
    let text = chain(&e);
    match &e {
        BackendError::Busy { device, .. } => {
            assert_eq!(device, &format!("sim:{}", sim.sock.display()))
        }
        e => panic!("expected Busy, got {e:?}"),
    }
    assert!(text.contains("in use by another process"), "{text}");
    assert!(text.contains("serves one client at a time"), "{text}");
    assert!(text.contains(&sim.sock.display().to_string()), "{text}");
    assert!(text.contains("another client is connected"), "{text}");
    // The first client carries on.
    let mut id = [0u8; 4];
    first.region_read(0, 0, &mut id).unwrap();
    assert_eq!(u32::from_le_bytes(id), fdma_hw::id_value());
    drop(first);
    drop(sim);

    // Announced: the simulator knows the client's pid and says so.
    let sim = start(true);
    let first = VfioUserBackend::connect(&sim.sock, &VfioUserOptions::default()).unwrap();
    let text = chain(&second_client_error(&sim));
    assert!(
        text.contains(&format!("process {} (", std::process::id())),
        "{text}"
    );
    let anns = fdma_vfio_user::announce::list().unwrap();
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert!(anns[0].busy);
    assert_eq!(anns[0].client_pid, Some(std::process::id()));
    assert_eq!(anns[0].options, vec!["test".to_string()]);

    // Once the first client leaves, the simulator takes a new one.
    drop(first);
    let t0 = std::time::Instant::now();
    let again = loop {
        match VfioUserBackend::connect(&sim.sock, &VfioUserOptions::default()) {
            Ok(b) => break b,
            Err(BackendError::Busy { .. }) if t0.elapsed() < Duration::from_secs(10) => {
                std::thread::sleep(Duration::from_millis(20))
            }
            Err(e) => panic!("reconnect: {e:?}"),
        }
    };
    drop(again);
    drop(sim);
    assert!(
        fdma_vfio_user::announce::list().unwrap().is_empty(),
        "the announcement outlived its server"
    );
}
