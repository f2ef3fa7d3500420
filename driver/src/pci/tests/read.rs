//! Reading devices and groups, and `check_vfio_ready`'s verdicts.

use std::io;

use super::fake::{a, FakeHost, BRIDGE, FDMA, NIC};
use crate::pci::{PciError, VfioGroupInfo};

/// A lab host: the card on vfio-pci alone in group 12, a two-port NIC in
/// group 13, a root port in group 0, and a second card still unbound.
fn lab() -> FakeHost {
    let h = FakeHost::new();
    h.add("0000:00:01.0", BRIDGE, Some("pcieport"), Some(0))
        .add("0000:03:00.1", NIC, Some("ixgbe"), Some(13))
        .add("0000:03:00.0", NIC, Some("ixgbe"), Some(13))
        .add("0000:01:00.0", FDMA, Some("vfio-pci"), Some(12))
        .add("0000:02:00.0", FDMA, None, Some(14));
    h.write("sys/bus/pci/devices/0000:01:00.0/numa_node", "1\n");
    h
}

#[test]
fn pci_device_is_read_from_sysfs_files_and_links() {
    let h = lab();
    let d = h.sysfs().device(&a("01:00.0")).unwrap();
    assert_eq!(d.address, a("0000:01:00.0"));
    assert_eq!((d.vendor, d.device, d.class), FDMA);
    assert_eq!(d.driver.as_deref(), Some("vfio-pci"));
    assert_eq!(d.iommu_group, Some(12));
    assert_eq!(d.numa_node, Some(1));
    assert!(d.is_vfio() && !d.is_bridge() && !d.blocks_group());

    let d = h.sysfs().device(&a("0000:02:00.0")).unwrap();
    assert_eq!((d.driver, d.numa_node), (None, None));
    assert!(h.sysfs().device(&a("0000:00:01.0")).unwrap().is_bridge());
}

#[test]
fn pci_list_filters_by_id_and_sorts_by_address() {
    let h = lab();
    let s = h.sysfs();
    let addrs = |f| -> Vec<String> {
        s.list(f)
            .unwrap()
            .iter()
            .map(|d| d.address.to_string())
            .collect()
    };
    assert_eq!(
        addrs(None),
        [
            "0000:00:01.0",
            "0000:01:00.0",
            "0000:02:00.0",
            "0000:03:00.0",
            "0000:03:00.1"
        ]
    );
    assert_eq!(
        addrs(Some((FDMA.0, Some(FDMA.1)))),
        ["0000:01:00.0", "0000:02:00.0"]
    );
    assert_eq!(addrs(Some((0x8086, None))).len(), 3);
    assert_eq!(addrs(Some((0x8086, Some(0x10fb)))).len(), 2);
    assert!(addrs(Some((0xdead, None))).is_empty());
    // Entries that are not addresses are skipped.
    h.write("sys/bus/pci/devices/README", "");
    assert_eq!(addrs(None).len(), 5);
}

#[test]
fn pci_group_members_and_iommu_state() {
    let h = lab();
    let s = h.sysfs();
    assert!(s.iommu_enabled());
    let g: Vec<_> = s
        .group_members(13)
        .unwrap()
        .into_iter()
        .map(|d| d.address)
        .collect();
    assert_eq!(g, [a("03:00.0"), a("03:00.1")]);
    assert!(matches!(s.group_members(99), Err(PciError::Read { .. })));
    assert!(!FakeHost::new().sysfs().iommu_enabled());
}

#[test]
fn pci_ready_device_gives_its_group_node() {
    let h = lab();
    let info = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap();
    assert_eq!(
        info,
        VfioGroupInfo {
            group: 12,
            dev_path: h.path("dev/vfio/12")
        }
    );
}

#[test]
fn pci_missing_device_and_malformed_files_are_typed_errors() {
    let h = lab();
    let e = h.sysfs().check_vfio_ready(&a("0000:09:00.0")).unwrap_err();
    assert!(matches!(&e, PciError::NoDevice { address, .. } if *address == a("09:00.0")));
    assert!(e.to_string().contains("fdma list --all"), "{e}");

    h.write("sys/bus/pci/devices/0000:02:00.0/vendor", "1234\n");
    let e = h.sysfs().device(&a("02:00.0")).unwrap_err();
    assert!(matches!(e, PciError::Malformed { .. }), "{e}");
    assert!(e.to_string().contains("/vendor"), "{e}");
    h.write("sys/bus/pci/devices/0000:02:00.0/vendor", "0x12345\n");
    assert!(h.sysfs().device(&a("02:00.0")).is_err());
    // One bad device makes the whole listing fail rather than vanish.
    assert!(h.sysfs().list(None).is_err());
}

#[test]
fn pci_iommu_off_says_how_to_turn_it_on() {
    let h = FakeHost::new();
    h.add("0000:01:00.0", FDMA, Some("vfio-pci"), None);
    let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
    assert!(matches!(e, PciError::IommuOff { .. }), "{e}");
    for want in ["0000:01:00.0", "intel_iommu=on", "amd_iommu=on", "iommu=pt"] {
        assert!(e.to_string().contains(want), "{want} not in {e}");
    }
    // With groups for others, a device without one is a different problem.
    h.add("0000:00:01.0", BRIDGE, Some("pcieport"), Some(0));
    let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
    assert!(matches!(e, PciError::NoIommuGroup { .. }), "{e}");
    assert!(e.to_string().contains("dmesg"), "{e}");
}

#[test]
fn pci_wrong_driver_names_it_and_suggests_fdma_bind() {
    let h = lab();
    h.set_driver("0000:01:00.0", Some("fdma_kmod"));
    let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
    assert!(
        matches!(&e, PciError::NotBoundToVfio { driver: Some(d), .. } if d == "fdma_kmod"),
        "{e}"
    );
    let msg = e.to_string();
    assert!(msg.contains("bound to fdma_kmod"), "{msg}");
    assert!(msg.contains("fdma bind 0000:01:00.0"), "{msg}");

    let e = h.sysfs().check_vfio_ready(&a("02:00.0")).unwrap_err();
    assert!(matches!(e, PciError::NotBoundToVfio { driver: None, .. }));
    assert!(e.to_string().contains("no driver"), "{e}");
}

#[test]
fn pci_group_viability_follows_the_kernels_rules() {
    let h = FakeHost::new();
    // Only the NIC function on a host driver blocks: the stubbed, the
    // unbound, the other vfio-pci function and the bridge are tolerated.
    h.add("0000:01:00.0", FDMA, Some("vfio-pci"), Some(5))
        .add("0000:01:00.1", NIC, Some("ixgbe"), Some(5))
        .add("0000:01:00.2", NIC, Some("pci-stub"), Some(5))
        .add("0000:01:00.3", NIC, None, Some(5))
        .add("0000:01:00.4", FDMA, Some("vfio-pci"), Some(5))
        .add("0000:00:1c.0", BRIDGE, Some("pcieport"), Some(5));
    let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
    let PciError::GroupNotViable {
        address,
        group,
        blockers,
    } = &e
    else {
        panic!("{e}")
    };
    assert_eq!((*address, *group), (a("01:00.0"), 5));
    let b: Vec<_> = blockers.iter().map(|d| d.address).collect();
    assert_eq!(b, [a("01:00.1")]);
    let msg = e.to_string();
    assert!(msg.contains("IOMMU group 5"), "{msg}");
    assert!(msg.contains("0000:01:00.1 is bound to ixgbe"), "{msg}");
    assert!(
        !msg.contains("01:00.2") && !msg.contains("00:1c.0"),
        "{msg}"
    );

    h.set_driver("0000:01:00.1", None);
    assert_eq!(h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap().group, 5);
}

#[test]
fn pci_missing_group_node_and_access_refusal() {
    let h = lab();
    std::fs::remove_file(h.path("dev/vfio/12")).unwrap();
    let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
    assert!(
        matches!(&e, PciError::GroupNodeMissing { group: 12, path, .. } if path.ends_with("dev/vfio/12")),
        "{e}"
    );
    assert!(e.to_string().contains("--device"), "{e}");

    // Root passes any mode check, so the refusal itself can only be seen
    // unprivileged; its message is checked either way.
    h.write("dev/vfio/12", "");
    let node = h.path("dev/vfio/12");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o600)).unwrap();
    if !nix::unistd::geteuid().is_root() {
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o000)).unwrap();
        let e = h.sysfs().check_vfio_ready(&a("01:00.0")).unwrap_err();
        assert!(matches!(e, PciError::NoPermission { .. }), "{e}");
    }
    let e = PciError::NoPermission {
        address: a("01:00.0"),
        group: 12,
        path: node,
        source: io::Error::from_raw_os_error(libc::EACCES),
    };
    let msg = e.to_string();
    assert!(
        msg.contains("dev/vfio/12") && msg.contains("group 12"),
        "{msg}"
    );
    assert!(msg.contains("fdma bind 0000:01:00.0 --user"), "{msg}");
    // The cause is the source, not repeated in the message.
    assert!(!msg.contains("ermission denied"), "{msg}");
    assert!(std::error::Error::source(&e).is_some());
}
