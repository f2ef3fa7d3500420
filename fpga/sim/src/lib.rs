//! # fdma-sim — the fdma card, simulated
//!
//! The card's real RTL (`fpga/rtl`) compiled by Verilator and clocked cycle
//! by cycle, with the bus a board would give it:
//!
//! * [`card::Card`] — the engine plus its host link model, card memory,
//!   interrupt delivery, fault log and simulator-only faults. Tests drive it
//!   in-process; the server drives it for a client.
//! * [`hostmem`] — the IOMMU between the engine and host memory (D3, D5).
//! * `server` — the vfio-user device server the `fdma-sim` binary runs, so
//!   the driver reaches the simulated card exactly as it reaches a board
//!   through kernel VFIO.
//!
//! Device time (contract D1) is the number of cycles clocked; the card is
//! clocked only while something is pending, so an idle simulator sleeps.

pub mod card;
pub mod cardmem;
pub mod cli;
pub mod faultlog;
pub mod hostmem;
pub mod modelrun;
pub mod rtl;
pub mod server;
