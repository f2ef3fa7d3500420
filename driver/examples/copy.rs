//! Open a device, copy a buffer to card memory and back, wait on the fences.
//!
//! ```sh
//! fdma sim --socket /tmp/fdma.sock &        # or a card: FDMA_DEVICE=0000:01:00.0
//! FDMA_DEVICE=sim:/tmp/fdma.sock cargo run -p fdma --example copy
//! ```

use fdma::{Device, Job, OpenOptions};
use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    // FDMA_DEVICE names the device: sim:SOCKET or a PCI address.
    let dev = Device::open_default(&OpenOptions::default())?;
    let ch = dev.channel(0)?;

    let src = dev.alloc(1 << 20)?;
    let dst = dev.alloc(1 << 20)?;
    let data: Vec<u8> = (0..1 << 20).map(|i| (i * 7 % 251) as u8).collect();
    src.write_at(0, &data)?;

    // Host to card, then card to host: two jobs, because a later job may
    // read card memory only after the job that wrote it has completed.
    let mut up = Job::new();
    up.h2c(&src, 0, 0, data.len());
    ch.submit(&up)?.wait()?;

    let mut down = Job::new();
    down.c2h(0, &dst, 0, data.len());
    let fence = ch.submit(&down)?;
    match fence.wait_timeout(Duration::from_secs(10)) {
        fdma::Wait::Signalled(status) => status?,
        fdma::Wait::TimedOut => return Err("copy did not finish in 10 s".into()),
    }
    // Reading the buffer waits for the fences that write it (R2).
    assert_eq!(dst.read_vec(0, data.len())?, data);
    println!(
        "{}: 1 MiB round trip through card memory verified",
        dev.name()
    );
    Ok(())
}
