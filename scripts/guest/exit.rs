//! `guest-exit VALUE`: ends the test guest by writing VALUE to QEMU's
//! isa-debug-exit port (0xf4), which makes QEMU exit with `(VALUE << 1) | 1`.
//!
//! A separate program because busybox has no `outb` and Debian's cloud kernel
//! is built without /dev/port (CONFIG_DEVPORT is not set). Built by
//! scripts/guest-test with plain `rustc` as a static binary; no dependencies.

use std::process::exit;

const PORT: u16 = 0xf4;

extern "C" {
    // glibc's ioperm(2) wrapper; std links glibc already.
    fn ioperm(from: std::ffi::c_ulong, num: std::ffi::c_ulong, turn_on: std::ffi::c_int) -> std::ffi::c_int;
}

fn main() {
    let arg = std::env::args().nth(1).unwrap_or_default();
    let value = match arg.strip_prefix("0x") {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => arg.parse::<u8>(),
    };
    let Ok(value) = value else {
        eprintln!("usage: guest-exit VALUE (0..=255; QEMU exits with VALUE*2+1)");
        exit(2);
    };
    // SAFETY: ioperm only changes this process's I/O permission bitmap.
    if unsafe { ioperm(PORT.into(), 1, 1) } != 0 {
        eprintln!("guest-exit: ioperm(0x{PORT:x}): {}", std::io::Error::last_os_error());
        exit(1);
    }
    // SAFETY: the port is isa-debug-exit's: the write ends the VM and touches
    // no memory; ioperm above granted access.
    unsafe { std::arch::asm!("out dx, al", in("dx") PORT, in("al") value, options(nomem, nostack)) };
    // Not reached in QEMU with isa-debug-exit; elsewhere say so.
    eprintln!("guest-exit: still running after the write to port 0x{PORT:x} (no isa-debug-exit device?)");
    exit(1);
}
