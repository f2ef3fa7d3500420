//! The locked-memory limit that VFIO's DMA mappings count against.
//!
//! VFIO's type1 IOMMU driver pins every page mapped for the device and
//! charges it to the process's `RLIMIT_MEMLOCK`, unless the process has
//! `CAP_IPC_LOCK` (root has). A limit below the driver's DMA buffers makes
//! mapping fail with `ENOMEM` in the middle of a run; checking it up front
//! gives a message that says how to raise it.

use std::fs;

use nix::sys::resource::{getrlimit, Resource, RLIM_INFINITY};

use super::PciError;

/// The bit of `CAP_IPC_LOCK` in the capability sets.
const CAP_IPC_LOCK: u32 = 14;

/// This process's `RLIMIT_MEMLOCK` as `(soft, hard)` in bytes; `None` is
/// unlimited.
pub fn memlock_limit() -> Result<(Option<u64>, Option<u64>), PciError> {
    let (soft, hard) =
        getrlimit(Resource::RLIMIT_MEMLOCK).map_err(|e| PciError::Rlimit { source: e.into() })?;
    let finite = |v| (v != RLIM_INFINITY).then_some(v);
    Ok((finite(soft), finite(hard)))
}

/// Whether this process has `CAP_IPC_LOCK` in its effective set (from
/// `CapEff` in `/proc/self/status`); `false` when that cannot be read.
pub fn has_cap_ipc_lock() -> bool {
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| cap_eff(&s))
        .is_some_and(|caps| caps & (1 << CAP_IPC_LOCK) != 0)
}

/// Check that this process may lock `need_bytes` of memory for DMA: it has
/// `CAP_IPC_LOCK`, or its soft `RLIMIT_MEMLOCK` is unlimited or at least
/// `need_bytes`. Otherwise [`PciError::MemlockTooLow`] says how to raise it.
pub fn check_memlock(need_bytes: u64) -> Result<(), PciError> {
    if has_cap_ipc_lock() {
        return Ok(());
    }
    let (soft, _) = memlock_limit()?;
    decide(soft, need_bytes)
}

fn decide(soft: Option<u64>, need: u64) -> Result<(), PciError> {
    match soft {
        Some(have) if have < need => Err(PciError::MemlockTooLow { have, need }),
        _ => Ok(()),
    }
}

/// The `CapEff:` line of a `/proc/PID/status`, as a bit set.
fn cap_eff(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_limits_capeff_bit_14_is_ipc_lock() {
        let status = "Name:\tfdma\nCapInh:\t0000000000000000\nCapEff:\t0000000000004000\n";
        assert_eq!(cap_eff(status), Some(1 << CAP_IPC_LOCK));
        assert_eq!(
            cap_eff("CapEff:\t000001ffffffffff\n"),
            Some(0x1ff_ffff_ffff)
        );
        assert_eq!(cap_eff("CapPrm:\t0000000000004000\n"), None);
        assert_eq!(cap_eff("CapEff:\tnonsense\n"), None);
        // What this process reports must agree with its own status file.
        let own = fs::read_to_string("/proc/self/status").unwrap();
        let bit = cap_eff(&own).unwrap() & (1 << CAP_IPC_LOCK) != 0;
        assert_eq!(has_cap_ipc_lock(), bit);
    }

    #[test]
    fn pci_limits_memlock_decision_and_advice() {
        assert!(decide(None, u64::MAX).is_ok());
        assert!(decide(Some(256 << 20), 256 << 20).is_ok());
        let e = decide(Some(8 << 20), 256 << 20).unwrap_err();
        assert!(matches!(
            e,
            PciError::MemlockTooLow {
                have: 0x80_0000,
                need: 0x1000_0000
            }
        ));
        let msg = e.to_string();
        for want in ["ulimit -l 262144", "USER - memlock 262144", "limits.conf"] {
            assert!(msg.contains(want), "{want:?} not in {msg}");
        }
        // Partial KiB round up, so the advice is always enough.
        assert!(decide(Some(0), 1025)
            .unwrap_err()
            .to_string()
            .contains("memlock 2`"));
    }

    #[test]
    fn pci_limits_of_this_process_are_readable() {
        let (soft, hard) = memlock_limit().unwrap();
        if let (Some(s), Some(h)) = (soft, hard) {
            assert!(s <= h);
        }
        assert!(check_memlock(0).is_ok());
    }
}
