//! Completion processing, failure paths and the watchdog of one channel:
//! the signalling path (F10). Nothing here allocates, frees, logs or takes
//! a reservation lock; completed jobs move to the channel's done queue and
//! are dropped by [`ChannelCore::reclaim`], off the signalling path.

use super::*;

impl ChannelCore {
    /// Read the writeback and signal every job it reports complete or
    /// failed. Signalling path (F10): no allocation, no logging. Returns
    /// the number of jobs signalled.
    pub fn process(&self) -> usize {
        let _s = SignallingSection::enter();
        let mut st = self.lock();
        self.process_locked(&mut st)
    }

    pub(super) fn process_locked(&self, st: &mut State) -> usize {
        if st.inflight.is_empty() {
            return 0;
        }
        let wb = self.mem.read_wb();
        let mut n = 0;
        let head_ok = self.advance_to(st, wb.head, &mut n);
        if !head_ok {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        let s = wb.status;
        if regs::CH_STATUS_STATE.decode(s) == state::HALTED {
            let code = regs::CH_STATUS_ERR.decode(s) as u8;
            if code != err::NONE {
                n += self.halt(st, code, wb.err_index);
            }
        }
        if n > 0 {
            self.room.notify_all();
            self.reclaim.notify();
        }
        n
    }

    /// Descriptors the device has been told about and not yet completed:
    /// the window every device-reported index must fall in (D2).
    fn window(&self, st: &State) -> u32 {
        let rung = self.rung_tail.load(Ordering::Acquire);
        let out = st.tail.wrapping_sub(st.head);
        rung.wrapping_sub(st.head).min(out)
    }

    /// Complete every job that ends at or before `head`, if `head` is
    /// within `[st.head, rung tail]` (D2): a device cannot complete what it
    /// was never told about. Returns false if it is not.
    fn advance_to(&self, st: &mut State, head: u32, n: &mut usize) -> bool {
        let out = self.window(st);
        let adv = head.wrapping_sub(st.head);
        if adv > out {
            return false;
        }
        let old = st.head;
        while let Some(j) = st.inflight.front() {
            if j.end.wrapping_sub(old) > adv {
                break;
            }
            let j = st.inflight.pop_front().expect("front");
            // Counters before the signal: a woken waiter sees them current.
            self.stats.completed.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes.fetch_add(j.bytes, Ordering::Relaxed);
            // C3: the shim published an unmap or re-backing of this job's
            // process memory before its completion was processed: its data
            // may be the old pages'. One atomic load per registration.
            let status = if j.entries.iter().any(|e| e.stale_event()) {
                Err(FenceError::StaleMemory {
                    channel: self.index,
                    seqno: j.sig.seqno(),
                })
            } else {
                Ok(())
            };
            let _ = j.sig.signal(status);
            st.done.push_back(j);
            *n += 1;
        }
        st.head = head;
        true
    }

    /// The channel halted with `code` at descriptor `index`: the job that
    /// holds it fails (F4), later jobs are cancelled, the channel refuses
    /// jobs until reset (D4).
    fn halt(&self, st: &mut State, code: u8, index: u32) -> usize {
        let ch = self.index;
        let rel = index.wrapping_sub(st.head);
        let valid = rel < self.window(st);
        if !valid {
            self.stats.rejected.fetch_add(1, Ordering::Relaxed);
        }
        self.halted_code.store(code, Ordering::Relaxed);
        let _ =
            self.health
                .compare_exchange(H_RUNNING, H_HALTED, Ordering::AcqRel, Ordering::Acquire);
        let mut n = 0;
        let mut failed = false;
        while let Some(j) = st.inflight.pop_front() {
            let seqno = j.sig.seqno();
            let holds = !failed && (!valid || j.end.wrapping_sub(st.head) > rel);
            let e = if holds {
                failed = true;
                if code == err::READ_FAULT || code == err::FETCH_FAULT {
                    FenceError::IommuFault {
                        channel: ch,
                        seqno,
                        index,
                    }
                } else {
                    FenceError::Device {
                        channel: ch,
                        seqno,
                        code,
                        index,
                    }
                }
            } else {
                FenceError::Cancelled { channel: ch, seqno }
            };
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = j.sig.signal(Err(e));
            // Halted, not reset: the memory stays until the channel is.
            st.held.push_back(j);
            n += 1;
        }
        n
    }

    /// Signal every in-flight job with `make(seqno)` and set `health`.
    /// `hold` keeps the jobs' memory (the engine may still touch it) until
    /// the channel is stopped in the device. Signalling path.
    pub(super) fn fail_all(
        &self,
        st: &mut State,
        health: u8,
        hold: bool,
        make: impl Fn(u64) -> FenceError,
    ) -> usize {
        // Health first: a woken waiter must see why its job failed.
        if health != H_RUNNING {
            self.health.store(health, Ordering::Release);
        }
        let mut n = 0;
        while let Some(j) = st.inflight.pop_front() {
            self.stats.failed.fetch_add(1, Ordering::Relaxed);
            let _ = j.sig.signal(Err(make(j.sig.seqno())));
            if hold {
                st.held.push_back(j);
            } else {
                st.done.push_back(j);
            }
            n += 1;
        }
        self.room.notify_all();
        self.reclaim.notify();
        n
    }

    /// The device is lost: error everything, refuse everything (F3).
    pub fn mark_lost(&self) {
        let _s = SignallingSection::enter();
        let ch = self.index;
        let mut st = self.lock();
        // A lost device reaches no memory any more.
        self.fail_all(&mut st, H_LOST, false, |seqno| FenceError::DeviceLost {
            channel: ch,
            seqno,
        });
        st.release_held();
    }

    /// The device is closing: refuse new jobs (under the state lock, so no
    /// submit and no reset completes against a closed channel).
    pub fn mark_closed(&self) {
        let _st = self.lock();
        let h = self.health.load(Ordering::Acquire);
        if h != H_LOST {
            self.health.store(H_CLOSED, Ordering::Release);
        }
        self.room.notify_all();
    }

    /// Cancel whatever is still in flight (close). `stopped`: the channel
    /// was stopped in the device, so held memory may go.
    pub fn cancel_all(&self, stopped: bool) {
        let _s = SignallingSection::enter();
        let ch = self.index;
        let mut st = self.lock();
        self.fail_all(&mut st, H_RUNNING, !stopped, |seqno| {
            FenceError::Cancelled { channel: ch, seqno }
        });
        if stopped {
            st.release_held();
        }
    }

    /// One watchdog look (F3, D1), at device time `now` (cycles). Rings a
    /// deferred doorbell, processes completions (a lost interrupt costs one
    /// tick), falls back to the `HEAD` register when the writeback is
    /// unusable (D6), and declares the channel hung when its validated head
    /// and byte counter have not moved for `stall_cycles` device cycles, or
    /// for the wall-clock backstop (a device that stops clocking with work
    /// pending). Signalling path: register access through the
    /// non-allocating calls only. Returns whether the channel was declared
    /// hung; `Err` only when the device is lost.
    pub fn watchdog(&self, now: u64) -> std::result::Result<bool, RegFault> {
        let _s = SignallingSection::enter();
        if let Err(RegFault::Lost) = self.flush_deferred() {
            return Err(RegFault::Lost);
        }
        let mut st = self.lock();
        let h = self.health.load(Ordering::Acquire);
        if st.inflight.is_empty() || (h != H_RUNNING && h != H_CLOSED) {
            st.progress = None;
            return Ok(false);
        }
        let before = st.inflight.len();
        self.process_locked(&mut st);
        let ch = self.index;
        let mut seen = st.progress.map(|p| p.0);
        if !st.inflight.is_empty() {
            // Progress counts only on values that pass the range checks; a
            // refused read is no progress (D2).
            let head = match self.regs.read_nonalloc(ch_reg(ch, &regs::CH_HEAD)) {
                Err(RegFault::Lost) => return Err(RegFault::Lost),
                r => r.ok(),
            };
            let bytes = match self.regs.channel_bytes_nonalloc(ch as usize) {
                Err(RegFault::Lost) => return Err(RegFault::Lost),
                r => r.ok().filter(|&b| b != u64::MAX),
            };
            let mut m = 0;
            let head = head.filter(|&h| h == st.head || self.advance_to(&mut st, h, &mut m));
            if head.is_none() {
                self.stats.rejected.fetch_add(1, Ordering::Relaxed);
            }
            if m > 0 {
                self.room.notify_all();
                self.reclaim.notify();
            }
            if let (Some(hd), Some(by)) = (head, bytes) {
                seen = Some((hd, by));
            }
        }
        let found = before - st.inflight.len();
        if found > 0 {
            self.stats
                .watchdog_completions
                .fetch_add(found as u64, Ordering::Relaxed);
        }
        if st.inflight.is_empty() {
            st.progress = None;
            return Ok(false);
        }
        match (st.progress, seen) {
            (Some((last, _, _)), Some(s)) if last == s => {}
            (Some(_), None) => {}
            (_, Some(s)) => st.progress = Some((s, now, Instant::now())),
            (None, None) => st.progress = Some(((st.head, 0), now, Instant::now())),
        }
        let (_, since, since_wall) = st.progress.expect("set above");
        let stalled = now.wrapping_sub(since);
        if stalled <= self.watchdog.stall_cycles && since_wall.elapsed() <= self.watchdog.backstop {
            return Ok(false);
        }
        // Stop the engine's work on this channel; reset restores it. The
        // jobs' memory is held until then: the engine may yet touch it.
        let _ = self.regs.write_nonalloc(ch_reg(ch, &regs::CH_CTRL), 0);
        self.fail_all(&mut st, H_HUNG, true, |seqno| FenceError::Hung {
            channel: ch,
            seqno,
            cycles: stalled,
        });
        Ok(true)
    }

    /// Drop the resources of reclaimed jobs. Not a signalling path.
    pub fn reclaim(&self) -> usize {
        let mut n = 0;
        loop {
            let j = self.lock().done.pop_front();
            match j {
                Some(j) => {
                    log::trace!("channel {}: job {} reclaimed", self.index, j.sig.seqno());
                    drop(j);
                    n += 1;
                }
                None => return n,
            }
        }
    }
}
