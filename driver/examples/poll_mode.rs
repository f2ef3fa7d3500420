//! Poll mode: no interrupts; the caller drives completion, and callbacks run
//! in the caller's thread.
//!
//! ```sh
//! FDMA_DEVICE=sim:/tmp/fdma.sock cargo run -p fdma --example poll_mode
//! ```

use fdma::{Device, IrqMode, Job, OpenOptions};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    env_logger::init();
    let dev = Device::open_default(&OpenOptions::default())?;
    let ch = dev.channel(1)?;
    ch.set_mode(IrqMode::Poll);

    let buf = dev.alloc(64 * 1024)?;
    let done = Arc::new(AtomicU64::new(0));
    let mut job = Job::new();
    job.h2c(&buf, 0, 0, 64 * 1024);
    let mut last = None;
    for _ in 0..100 {
        let f = ch.submit(&job)?;
        let d = done.clone();
        // Callbacks must not block; here one counts completions.
        let _ = f.on_signal(Box::new(move |st| {
            if st.is_ok() {
                d.fetch_add(1, Ordering::Relaxed);
            }
        }));
        last = Some(f);
    }
    let last = last.expect("submitted");
    while !last.is_signalled() {
        ch.poll()?;
    }
    last.wait()?;
    println!(
        "{}: {} jobs completed in poll mode",
        dev.name(),
        done.load(Ordering::Relaxed)
    );
    Ok(())
}
