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
//!
//! The [`conformance`] module is the transport-level suite: the same
//! checks over vfio-user against the simulated card and over kernel VFIO
//! against QEMU's `edu` device in the guest stage.

pub mod anon;
pub mod conformance;
#[cfg(feature = "sim")]
pub mod sim;

/// A reproducible pseudo-random pattern.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Where two byte strings first differ, for a failure message that does
/// not dump them.
pub fn first_diff(got: &[u8], want: &[u8]) -> String {
    if got.len() != want.len() {
        return format!("length {} instead of {}", got.len(), want.len());
    }
    match got.iter().zip(want).position(|(a, b)| a != b) {
        Some(i) => format!(
            "first difference at byte {i} of {}: got {:#04x}, want {:#04x}",
            want.len(),
            got[i],
            want[i]
        ),
        None => "equal".into(),
    }
}
