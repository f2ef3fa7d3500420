//! An event loop on the channel's pollable fd (F8): arm the fd for a fence,
//! wait for it with poll(2) alongside the loop's other fds, then take the
//! status. The fd is readable only once the armed fence has signalled.
//!
//! ```sh
//! FDMA_DEVICE=sim:/tmp/fdma.sock cargo run -p fdma --example event_loop
//! ```

use fdma::{Device, Job, OpenOptions};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let dev = Device::open_default(&OpenOptions::default())?;
    let ch = dev.channel(2)?;
    let buf = dev.alloc(4096)?;
    let mut job = Job::new();
    job.h2c(&buf, 0, 0x1000, 4096);

    for round in 0..10 {
        let fence = ch.submit(&job)?;
        ch.arm(&fence)?;
        let mut fds = [PollFd::new(ch.fd(), PollFlags::POLLIN)];
        // A real loop would poll its sockets and timers here too.
        let n = poll(&mut fds, PollTimeout::from(10_000u16))?;
        if n == 0 {
            return Err(format!("round {round}: no completion within 10 s").into());
        }
        let status = fence.status().expect("readable means signalled");
        println!("round {round}: job {} -> {:?}", fence.seqno(), status);
        status?;
    }
    Ok(())
}
