//! The backend conformance suite over vfio-user, against the simulated
//! card: each check of `fdma_host_tests::conformance` on a simulator of its
//! own. The same checks run over kernel VFIO against `edu` in the guest
//! stage (`kernel_vfio.rs`).

mod common;

use common::{start_sim, SimProc};
use fdma_host_tests::conformance::{self, fdma_card::FdmaCard, Adapter};
use std::sync::Arc;

fn adapter(sim: &SimProc) -> Arc<dyn Adapter> {
    common::init_log();
    let backend = fdma::device::connect(&sim.name(), &fdma::OpenOptions::default())
        .expect("connect to the simulator");
    Arc::new(FdmaCard::new(backend, Some(sim.socket.clone())).expect("take the card"))
}

fdma_host_tests::conformance_tests!(
    setup = {
        let sim = start_sim(&[]);
        let a = adapter(&sim);
        (sim, a)
    }
);

/// The negative control for D5: on a connection that serves DMA from the
/// live address instead of pinned pages (what the vfio-user backend falls
/// back to without io_uring), the check must fail, by seeing the new pages.
#[test]
fn map_pins_pages_fails_without_pinning() {
    common::init_log();
    let sim = start_sim(&[]);
    let backend = fdma::backend::vfio_user::VfioUserBackend::connect_unpinned(
        &sim.socket,
        &Default::default(),
    )
    .expect("connect");
    let a: Arc<dyn Adapter> =
        Arc::new(FdmaCard::new(Arc::new(backend), Some(sim.socket.clone())).unwrap());
    match conformance::map_pins_pages(&*a) {
        Err(e) => assert!(
            format!("{e:#}").contains("it read the new pages"),
            "failed for another reason: {e:#}"
        ),
        Ok(()) => panic!("map_pins_pages passed on a backend that does not pin"),
    }
}
