//! # fdma-host-tests
//!
//! The integration suite of fdma. Every test goes through the driver's
//! public API to a device: by default a simulator process of its own on a
//! temporary socket (the `fdma-host-sim` binary of this package, which is
//! the `fdma-sim` server), or the card `FDMA_DEVICE` names. Faults enter at
//! the device boundary only (contract D7): the card's fault-injection
//! registers, and on the simulator its control socket (link down, killed
//! device, slow DMA replies).
//!
//! Tests that need a simulator-only fault say so and are skipped, loudly,
//! on a card. A test asked to run on a card that cannot be opened fails.
