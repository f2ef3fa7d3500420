//! MSI-X: the table and pending-bit array the card presents in BAR0, the
//! client's eventfds (SET_IRQS on the MSI-X index) and delivery.
//!
//! When the card raises vector `v`, the server writes `v`'s eventfd if bus
//! mastering is on, MSI-X is enabled and not function-masked, the vector is
//! masked neither in its table entry nor through SET_IRQS, and an eventfd is
//! set. Otherwise `v`'s PBA bit is set, and the interrupt is delivered when
//! the last of those conditions clears (unmask, enable, eventfd assigned).

use std::os::fd::OwnedFd;

use fdma_hw::pci::{MSIX_ENTRY_BYTES, MSIX_ENTRY_CTRL_MASKED};
use fdma_vfio_user::consts::irq;
use fdma_vfio_user::IrqSet;

/// The conditions outside MSI-X's own state that gate delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Gate {
    /// Bus mastering is on (config-space command register).
    pub bus_master: bool,
    /// MSI-X enable bit of the capability's message control.
    pub enabled: bool,
    /// Function-mask bit of the capability's message control.
    pub function_masked: bool,
}

impl Gate {
    fn open(&self) -> bool {
        self.bus_master && self.enabled && !self.function_masked
    }
}

/// MSI-X state of the device.
#[derive(Debug)]
pub struct Msix {
    table: Vec<[u32; 4]>,
    pending: Vec<bool>,
    irq_masked: Vec<bool>,
    eventfds: Vec<Option<OwnedFd>>,
    /// Interrupts written to eventfds, for status reports.
    pub delivered: u64,
}

impl Msix {
    /// `vectors` vectors, every table entry masked (the PCI reset state).
    pub fn new(vectors: usize) -> Self {
        Msix {
            table: vec![[0, 0, 0, MSIX_ENTRY_CTRL_MASKED]; vectors],
            pending: vec![false; vectors],
            irq_masked: vec![false; vectors],
            eventfds: (0..vectors).map(|_| None).collect(),
            delivered: 0,
        }
    }

    /// Number of vectors.
    pub fn vectors(&self) -> usize {
        self.table.len()
    }

    /// Device reset: table back to masked, pending bits cleared. Eventfds and
    /// SET_IRQS masks belong to the client's session and are kept.
    pub fn reset(&mut self) {
        for e in &mut self.table {
            *e = [0, 0, 0, MSIX_ENTRY_CTRL_MASKED];
        }
        self.pending.iter_mut().for_each(|p| *p = false);
    }

    /// Client disconnect: close every eventfd and forget SET_IRQS masks.
    pub fn disconnect(&mut self) {
        self.eventfds.iter_mut().for_each(|e| *e = None);
        self.irq_masked.iter_mut().for_each(|m| *m = false);
    }

    /// Read the table dword at byte offset `off` within the table region.
    pub fn table_read(&self, off: u32) -> u32 {
        let (v, w) = (
            (off / MSIX_ENTRY_BYTES) as usize,
            (off % MSIX_ENTRY_BYTES / 4) as usize,
        );
        self.table.get(v).map_or(0, |e| e[w])
    }

    /// Write the table dword at byte offset `off`; may deliver a pending
    /// interrupt when the entry is unmasked.
    pub fn table_write(&mut self, off: u32, value: u32, gate: Gate) {
        let (v, w) = (
            (off / MSIX_ENTRY_BYTES) as usize,
            (off % MSIX_ENTRY_BYTES / 4) as usize,
        );
        if let Some(e) = self.table.get_mut(v) {
            // Only the mask bit of vector control is writable.
            e[w] = if w == 3 {
                value & MSIX_ENTRY_CTRL_MASKED
            } else {
                value
            };
            self.flush(gate);
        }
    }

    /// Read the PBA dword at byte offset `off` within the PBA region.
    pub fn pba_read(&self, off: u32) -> u32 {
        let base = (off / 4 * 32) as usize;
        (0..32)
            .filter(|b| self.pending.get(base + b).copied().unwrap_or(false))
            .fold(0, |acc, b| acc | 1 << b)
    }

    fn deliverable(&self, v: usize, gate: Gate) -> bool {
        gate.open()
            && self.table[v][3] & MSIX_ENTRY_CTRL_MASKED == 0
            && !self.irq_masked[v]
            && self.eventfds[v].is_some()
    }

    fn signal(&mut self, v: usize) {
        if let Some(fd) = &self.eventfds[v] {
            match nix::unistd::write(fd, &1u64.to_ne_bytes()) {
                Ok(_) => self.delivered += 1,
                Err(e) => log::warn!("writing MSI-X vector {v}'s eventfd: {e}"),
            }
        }
    }

    /// The card raised vector `v`.
    pub fn raise(&mut self, v: u16, gate: Gate) {
        let v = v as usize;
        if v >= self.vectors() {
            log::warn!(
                "card raised MSI-X vector {v}, beyond the {} implemented",
                self.vectors()
            );
            return;
        }
        if self.deliverable(v, gate) {
            self.signal(v);
        } else {
            log::trace!("MSI-X vector {v} pending");
            self.pending[v] = true;
        }
    }

    /// Deliver every pending vector that is now deliverable.
    pub fn flush(&mut self, gate: Gate) {
        for v in 0..self.vectors() {
            if self.pending[v] && self.deliverable(v, gate) {
                self.pending[v] = false;
                self.signal(v);
            }
        }
    }

    /// Apply a SET_IRQS request for the MSI-X index. Returns an errno on
    /// refusal.
    pub fn set_irqs(&mut self, s: &IrqSet, fds: Vec<OwnedFd>, gate: Gate) -> Result<(), i32> {
        let n = self.vectors();
        let data = s.flags & irq::SET_DATA_TYPE_MASK;
        let action = s.flags & irq::SET_ACTION_TYPE_MASK;
        // count 0 with DATA_NONE: disable every interrupt of the index.
        if s.count == 0 {
            if data == irq::SET_DATA_NONE && action == irq::SET_ACTION_TRIGGER {
                self.eventfds.iter_mut().for_each(|e| *e = None);
                return Ok(());
            }
            return if data == irq::SET_DATA_NONE {
                Ok(())
            } else {
                Err(libc::EINVAL)
            };
        }
        let (start, count) = (s.start as usize, s.count as usize);
        if start.checked_add(count).map_or(true, |e| e > n) {
            return Err(libc::EINVAL);
        }
        let selected: Vec<usize> = match data {
            irq::SET_DATA_BOOL => (0..count)
                .filter(|i| s.bools[*i] != 0)
                .map(|i| start + i)
                .collect(),
            _ => (start..start + count).collect(),
        };
        match (data, action) {
            (irq::SET_DATA_EVENTFD, irq::SET_ACTION_TRIGGER) => {
                if fds.is_empty() {
                    (start..start + count).for_each(|v| self.eventfds[v] = None);
                } else if fds.len() == count {
                    for (i, fd) in fds.into_iter().enumerate() {
                        self.eventfds[start + i] = Some(fd);
                    }
                    self.flush(gate);
                } else {
                    return Err(libc::EINVAL);
                }
            }
            (irq::SET_DATA_EVENTFD, _) => return Err(libc::ENOTSUP),
            (_, irq::SET_ACTION_MASK) => selected.iter().for_each(|&v| self.irq_masked[v] = true),
            (_, irq::SET_ACTION_UNMASK) => {
                selected.iter().for_each(|&v| self.irq_masked[v] = false);
                self.flush(gate);
            }
            (_, irq::SET_ACTION_TRIGGER) => {
                // The client triggers the interrupt itself (loopback).
                for v in selected {
                    if self.eventfds[v].is_some() {
                        self.signal(v);
                    }
                }
            }
            _ => return Err(libc::EINVAL),
        }
        Ok(())
    }
}
