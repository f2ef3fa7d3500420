//! The public handle on a channel.

use super::*;

/// A handle on one channel of an open device. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Channel {
    pub(crate) core: Arc<ChannelCore>,
    pub(crate) dev: Arc<crate::device::Shared>,
}

impl Channel {
    /// Channel index.
    pub fn index(&self) -> u8 {
        self.core.index
    }

    /// Descriptors the ring holds.
    pub fn ring_size(&self) -> u32 {
        self.core.mem.size
    }

    /// Submit a job, waiting for ring room if needed; returns its fence.
    pub fn submit(&self, job: &Job) -> Result<Fence> {
        self.submit_with(job, SubmitOptions::default())
    }

    /// Submit with options (full-ring behaviour, batched doorbells).
    pub fn submit_with(&self, job: &Job, opts: SubmitOptions) -> Result<Fence> {
        self.dev.check_usable()?;
        let r = self.core.submit(job, opts);
        if let Err(Error::Backend(b)) = &r {
            if b.is_lost() {
                self.dev.mark_lost();
            }
        }
        r
    }

    /// Ring the doorbell for jobs submitted with `doorbell: false`.
    pub fn flush(&self) -> Result<()> {
        self.dev.check_usable()?;
        self.core.ring_doorbell()
    }

    /// Poll mode: process completions now, in the calling thread. Returns
    /// the number of jobs signalled. Callbacks run here (F9).
    pub fn poll(&self) -> Result<usize> {
        self.dev.check_usable()?;
        Ok(self.core.process())
    }

    /// Switch between interrupt and poll mode. Jobs already submitted keep
    /// the interrupt flag they were written with.
    pub fn set_mode(&self, mode: IrqMode) {
        self.core.set_mode(mode)
    }

    /// The current mode.
    pub fn mode(&self) -> IrqMode {
        self.core.mode()
    }

    /// Interrupt moderation (see the `IRQ_COUNT` and `IRQ_TIMER` registers).
    pub fn set_moderation(&self, count: u16, timer_cycles: u32) -> Result<()> {
        self.dev.check_usable()?;
        self.core.set_moderation(count, timer_cycles)
    }

    /// Reset the channel to restore service after an error or a hang (D4).
    pub fn reset(&self) -> Result<()> {
        self.dev.check_usable()?;
        self.core.reset()
    }

    /// Health.
    pub fn health(&self) -> Health {
        self.core.health()
    }

    /// Jobs in flight.
    pub fn in_flight(&self) -> usize {
        self.core.in_flight()
    }

    /// Counters.
    pub fn stats(&self) -> &ChannelStats {
        &self.core.stats
    }

    /// The channel's timeline: seqnos, the completed counter and the
    /// pollable fd (F7, F8).
    pub fn timeline(&self) -> &Timeline {
        &self.core.timeline
    }

    /// The pollable fd of the timeline (F8): readable once the fence armed
    /// with [`Channel::arm`] has signalled. For callers' event loops.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.core.timeline.fd()
    }

    /// Arm [`Channel::fd`] for `fence`.
    pub fn arm(&self, fence: &Fence) -> Result<()> {
        if fence.channel() != self.core.index {
            return Err(Error::Invalid(format!(
                "fence of channel {} armed on channel {}",
                fence.channel(),
                self.core.index
            )));
        }
        self.core.timeline.arm(fence.seqno());
        Ok(())
    }

    /// The interrupt eventfd of the channel (for diagnostics).
    pub fn irq_fd(&self) -> BorrowedFd<'_> {
        self.core.irq.as_fd()
    }
}
