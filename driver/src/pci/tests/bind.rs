//! Binding and unbinding: what is written where, in which order, and the
//! errors. A [`FakeHost::kernel`] thread plays the kernel's part where a
//! test needs the driver link to change in the middle of the sequence.

use std::io;
use std::os::unix::fs::MetadataExt;

use super::fake::{a, relink, within, FakeHost, FDMA, NIC};
use crate::pci::{BindReport, PciError, UnbindReport};

const ADDR: &str = "0000:01:00.0";

/// The card on a host driver, alone in group 7, vfio-pci loaded.
fn host() -> FakeHost {
    let h = FakeHost::new();
    h.driver("vfio-pci")
        .add(ADDR, FDMA, Some("fdma_kmod"), Some(7));
    h
}

const OVERRIDE: &str = "sys/bus/pci/devices/0000:01:00.0/driver_override";
const PROBE: &str = "sys/bus/pci/drivers_probe";

#[test]
fn pci_bind_overrides_unbinds_and_probes_in_order() {
    let h = host();
    // The override comes first, or the old driver could take the device
    // straight back when it is probed.
    let unbind = "sys/bus/pci/drivers/fdma_kmod/unbind";
    let kernel = h.kernel(&[OVERRIDE, unbind, PROBE], move |file, sys| {
        if file == unbind {
            relink(sys, ADDR, None);
        } else if file == PROBE {
            relink(sys, ADDR, Some("vfio-pci"));
        }
    });
    let sys = h.sysfs();
    let report = within(move || sys.bind_vfio(&a(ADDR))).unwrap();
    assert_eq!(
        report,
        BindReport {
            address: a(ADDR),
            previous_driver: Some("fdma_kmod".into()),
            already_bound: false
        }
    );
    assert_eq!(kernel.finish(), ["vfio-pci", ADDR, ADDR]);
    assert_eq!(
        h.sysfs().device(&a(ADDR)).unwrap().driver.as_deref(),
        Some("vfio-pci")
    );
}

#[test]
fn pci_bind_of_an_unbound_device_only_overrides_and_probes() {
    let h = FakeHost::new();
    h.driver("vfio-pci").add(ADDR, FDMA, None, Some(7));
    let kernel = h.kernel(&[OVERRIDE, PROBE], |file, sys| {
        if file == PROBE {
            relink(sys, ADDR, Some("vfio-pci"));
        }
    });
    let sys = h.sysfs();
    let r = within(move || sys.bind_vfio(&a(ADDR))).unwrap();
    assert_eq!((r.previous_driver, r.already_bound), (None, false));
    assert_eq!(kernel.finish(), ["vfio-pci", ADDR]);
}

#[test]
fn pci_bind_when_already_bound_writes_nothing() {
    let h = FakeHost::new();
    h.add(ADDR, FDMA, Some("vfio-pci"), Some(7));
    let r = h.sysfs().bind_vfio(&a(ADDR)).unwrap();
    assert!(r.already_bound);
    assert_eq!(r.previous_driver.as_deref(), Some("vfio-pci"));
    assert_eq!(h.read("sys/bus/pci/drivers_probe"), "");
    assert_eq!(h.read(OVERRIDE), "(null)\n");
}

#[test]
fn pci_bind_refuses_without_vfio_pci_or_iommu_and_touches_nothing() {
    let h = FakeHost::new();
    h.add(ADDR, FDMA, Some("fdma_kmod"), Some(7));
    let e = h.sysfs().bind_vfio(&a(ADDR)).unwrap_err();
    assert!(matches!(e, PciError::VfioPciNotLoaded { .. }), "{e}");
    assert!(e.to_string().contains("modprobe vfio-pci"), "{e}");

    let h = FakeHost::new();
    h.driver("vfio-pci")
        .add(ADDR, FDMA, Some("fdma_kmod"), None);
    let e = h.sysfs().bind_vfio(&a(ADDR)).unwrap_err();
    assert!(matches!(e, PciError::IommuOff { .. }), "{e}");
    assert_eq!(h.read("sys/bus/pci/drivers/fdma_kmod/unbind"), "");
    assert_eq!(h.read("sys/bus/pci/drivers_probe"), "");
    let e = FakeHost::new().sysfs().bind_vfio(&a(ADDR)).unwrap_err();
    assert!(matches!(e, PciError::NoDevice { .. }), "{e}");
}

#[test]
fn pci_bind_that_does_not_take_is_reported_and_undone() {
    // Plain files: the writes land but nothing rebinds, as when vfio-pci
    // refuses the device.
    let h = host();
    let e = h.sysfs().bind_vfio(&a(ADDR)).unwrap_err();
    assert!(
        matches!(&e, PciError::BindFailed { driver: Some(d), .. } if d == "fdma_kmod"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("did not bind to vfio-pci") && msg.contains("fdma_kmod"),
        "{msg}"
    );
    assert!(msg.contains("dmesg"), "{msg}");
    assert_eq!(h.read("sys/bus/pci/drivers/fdma_kmod/unbind"), ADDR);
    assert_eq!(h.read("sys/bus/pci/drivers_probe"), ADDR);
    // The override was cleared again so the old driver can have it back.
    assert_eq!(h.read(OVERRIDE), "\n");
}

#[test]
fn pci_permission_refusals_name_the_file_and_ask_for_root() {
    let p = std::path::PathBuf::from("/sys/bus/pci/drivers_probe");
    for errno in [libc::EACCES, libc::EPERM] {
        let e = PciError::write(p.clone(), io::Error::from_raw_os_error(errno));
        assert!(matches!(e, PciError::NotRoot { .. }), "{e}");
        assert!(e.to_string().contains("/sys/bus/pci/drivers_probe"), "{e}");
        assert!(e.to_string().contains("root"), "{e}");
    }
    let e = PciError::write(p, io::Error::from_raw_os_error(libc::ENODEV));
    assert!(matches!(e, PciError::Write { .. }), "{e}");

    if !nix::unistd::geteuid().is_root() {
        let h = host();
        use std::os::unix::fs::PermissionsExt;
        let f = h.path(OVERRIDE);
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o444)).unwrap();
        let e = h.sysfs().bind_vfio(&a(ADDR)).unwrap_err();
        assert!(matches!(e, PciError::NotRoot { .. }), "{e}");
    }
}

#[test]
fn pci_unbind_releases_clears_the_override_and_reprobes() {
    let h = FakeHost::new();
    h.driver("fdma_kmod")
        .add(ADDR, FDMA, Some("vfio-pci"), Some(7));
    h.write(OVERRIDE, "vfio-pci\n");
    let unbind = "sys/bus/pci/drivers/vfio-pci/unbind";
    let kernel = h.kernel(&[unbind, PROBE], move |file, sys| {
        if file == unbind {
            relink(sys, ADDR, None);
        } else {
            relink(sys, ADDR, Some("fdma_kmod"));
        }
    });
    let sys = h.sysfs();
    let r = within(move || sys.unbind_vfio(&a(ADDR))).unwrap();
    assert_eq!(
        r,
        UnbindReport {
            address: a(ADDR),
            was_bound: true,
            driver: Some("fdma_kmod".into())
        }
    );
    assert_eq!(kernel.finish(), [ADDR, ADDR]);
    // Cleared, or vfio-pci would take the device again at the next probe.
    assert_eq!(h.read(OVERRIDE), "\n");
}

#[test]
fn pci_unbind_of_a_device_not_on_vfio_pci_changes_nothing() {
    let h = FakeHost::new();
    h.add("0000:03:00.0", NIC, Some("ixgbe"), Some(3));
    let r = h.sysfs().unbind_vfio(&a("03:00.0")).unwrap();
    assert!(!r.was_bound);
    assert_eq!(r.driver.as_deref(), Some("ixgbe"));
    assert_eq!(h.read("sys/bus/pci/drivers/ixgbe/unbind"), "");
    assert_eq!(h.read("sys/bus/pci/drivers_probe"), "");
}

#[test]
fn pci_give_to_user_chowns_the_group_node() {
    let h = FakeHost::new();
    h.add(ADDR, FDMA, Some("vfio-pci"), Some(7));
    let r = h.sysfs().give_to_user(&a(ADDR), 4321, 8765);
    if nix::unistd::geteuid().is_root() {
        let info = r.unwrap();
        assert_eq!(
            (info.group, info.dev_path.clone()),
            (7, h.path("dev/vfio/7"))
        );
        let m = std::fs::metadata(&info.dev_path).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 8765));
    } else {
        let e = r.unwrap_err();
        assert!(matches!(e, PciError::NotRoot { .. }), "{e}");
    }

    // Not on vfio-pci: there is no node to hand over yet.
    let h = FakeHost::new();
    h.add(ADDR, FDMA, Some("fdma_kmod"), Some(7));
    let e = h.sysfs().give_to_user(&a(ADDR), 4321, 8765).unwrap_err();
    assert!(matches!(e, PciError::NotBoundToVfio { .. }), "{e}");
    h.set_driver(ADDR, Some("vfio-pci"));
    std::fs::remove_file(h.path("dev/vfio/7")).unwrap();
    let e = h.sysfs().give_to_user(&a(ADDR), 4321, 8765).unwrap_err();
    assert!(
        matches!(e, PciError::GroupNodeMissing { group: 7, .. }),
        "{e}"
    );
}
