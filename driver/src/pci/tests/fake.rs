//! A fake host: a temporary directory laid out like the kernel's sysfs and
//! `/dev`, with the same files and symlinks, and no kernel behind it.

use std::fs;
use std::io::Read;
use std::os::unix::fs::symlink;
use std::panic::{self, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

use tempfile::TempDir;

use crate::pci::{PciAddress, Sysfs};

/// The fdma card's IDs and class (other "signal processing controller").
pub const FDMA: (u16, u16, u32) = (fdma_hw::pci::VENDOR_ID, fdma_hw::pci::DEVICE_ID, 0x118000);
/// A network card.
pub const NIC: (u16, u16, u32) = (0x8086, 0x10fb, 0x020000);
/// A PCIe root port or switch port.
pub const BRIDGE: (u16, u16, u32) = (0x8086, 0x1901, 0x060400);

pub struct FakeHost {
    dir: TempDir,
}

impl FakeHost {
    /// An empty host: the PCI bus and `/dev/vfio/vfio`, no devices, no
    /// drivers, no IOMMU groups (the IOMMU is off).
    pub fn new() -> FakeHost {
        let dir = tempfile::tempdir().unwrap();
        let h = FakeHost { dir };
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/devices/pci0000:00",
            "dev/vfio",
        ] {
            fs::create_dir_all(h.path(d)).unwrap();
        }
        h.write("sys/bus/pci/drivers_probe", "");
        h.write("dev/vfio/vfio", "");
        h
    }

    pub fn sysfs(&self) -> Sysfs {
        Sysfs::at(self.dir.path().to_path_buf())
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn write(&self, rel: &str, contents: &str) {
        fs::write(self.path(rel), contents).unwrap();
    }

    pub fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap()
    }

    /// A loaded PCI driver, with its `bind` and `unbind` files.
    pub fn driver(&self, name: &str) -> &Self {
        let d = format!("sys/bus/pci/drivers/{name}");
        fs::create_dir_all(self.path(&d)).unwrap();
        self.write(&format!("{d}/bind"), "");
        self.write(&format!("{d}/unbind"), "");
        self
    }

    /// An IOMMU group (turns the IOMMU on).
    pub fn group(&self, n: u32) -> &Self {
        fs::create_dir_all(self.path(&format!("sys/kernel/iommu_groups/{n}/devices"))).unwrap();
        self
    }

    /// A PCI function; its driver (loaded first if needed) and group are
    /// linked the way the kernel links them. Binding a member to vfio-pci
    /// creates the group's `/dev/vfio/N`.
    pub fn add(
        &self,
        addr: &str,
        (vendor, device, class): (u16, u16, u32),
        driver: Option<&str>,
        group: Option<u32>,
    ) -> &Self {
        // The real directory sits under its host bridge; the bus lists it
        // through a symlink, as in the kernel.
        let real = format!("sys/devices/pci0000:00/{addr}");
        fs::create_dir_all(self.path(&real)).unwrap();
        self.write(&format!("{real}/vendor"), &format!("0x{vendor:04x}\n"));
        self.write(&format!("{real}/device"), &format!("0x{device:04x}\n"));
        self.write(&format!("{real}/class"), &format!("0x{class:06x}\n"));
        self.write(&format!("{real}/numa_node"), "-1\n");
        self.write(&format!("{real}/driver_override"), "(null)\n");
        symlink(
            format!("../../../devices/pci0000:00/{addr}"),
            self.path(&format!("sys/bus/pci/devices/{addr}")),
        )
        .unwrap();
        if let Some(g) = group {
            self.group(g);
            symlink(
                format!("../../../kernel/iommu_groups/{g}"),
                self.path(&format!("{real}/iommu_group")),
            )
            .unwrap();
            symlink(
                format!("../../../../devices/pci0000:00/{addr}"),
                self.path(&format!("sys/kernel/iommu_groups/{g}/devices/{addr}")),
            )
            .unwrap();
        }
        self.set_driver(addr, driver);
        self
    }

    /// Point the device's `driver` link at `driver` (or remove it), as the
    /// kernel does when a driver binds or unbinds.
    pub fn set_driver(&self, addr: &str, driver: Option<&str>) {
        let link = self.path(&format!("sys/devices/pci0000:00/{addr}/driver"));
        let _ = fs::remove_file(&link);
        if let Some(d) = driver {
            self.driver(d);
            symlink(format!("../../../bus/pci/drivers/{d}"), link).unwrap();
            if d == "vfio-pci" {
                if let Some(g) = self.sysfs().device(&a(addr)).unwrap().iommu_group {
                    self.write(&format!("dev/vfio/{g}"), "");
                }
            }
        }
    }

    /// Replace a sysfs file by a FIFO, so that a [`FakeHost::kernel`] thread
    /// sees the moment it is written.
    pub fn fifo(&self, rel: &str) {
        let p = self.path(rel);
        let _ = fs::remove_file(&p);
        nix::unistd::mkfifo(&p, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    }

    /// Play the kernel for a driver change: expect `files` to be written
    /// in this order, each by one open-write-close. The files become FIFOs,
    /// whose opens block until both ends arrive, so the code under test
    /// cannot write them in another order: it blocks instead (run it with
    /// [`within`] so that this fails the test).
    ///
    /// `effect(file, sysfs)` makes the change the kernel makes when `file`
    /// is written (e.g. relinks `driver` for `unbind`). It runs just before
    /// this thread opens `file`, while the writer is at most blocked in its
    /// own open of it, so the writer sees the change in whatever it reads
    /// after the write — and, since the code under test reads nothing
    /// between its writes, not before. The first file is the exception:
    /// its effect waits for the writer to open it, after the reads that
    /// decide what to write.
    /// [`Kernel::finish`] returns what was written to each file.
    pub fn kernel(
        &self,
        files: &[&str],
        mut effect: impl FnMut(&str, &Sysfs) + Send + 'static,
    ) -> Kernel {
        let files: Vec<(String, PathBuf)> = files
            .iter()
            .map(|f| {
                self.fifo(f);
                (f.to_string(), self.path(f))
            })
            .collect();
        let sys = self.sysfs();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut written = Vec::new();
            for (i, (name, path)) in files.into_iter().enumerate() {
                let first = (i == 0).then(|| fs::File::open(&path).unwrap());
                if panic::catch_unwind(AssertUnwindSafe(|| effect(&name, &sys))).is_err() {
                    return;
                }
                let mut f = first.unwrap_or_else(|| fs::File::open(&path).unwrap());
                let mut s = String::new();
                f.read_to_string(&mut s).unwrap();
                written.push(s);
            }
            let _ = tx.send(written);
        });
        Kernel { rx }
    }
}

/// A [`FakeHost::kernel`] thread.
pub struct Kernel {
    rx: mpsc::Receiver<Vec<String>>,
}

impl Kernel {
    /// What was written to each file, in order.
    pub fn finish(self) -> Vec<String> {
        self.rx
            .recv_timeout(Duration::from_secs(10))
            .expect("fake kernel: not every file was written, or a check failed (see above)")
    }
}

/// Run `f` on a thread and return its result, failing the test instead of
/// hanging it when `f` blocks on a [`FakeHost::kernel`] FIFO for good.
pub fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("blocked: a fake sysfs file was not written in the expected order")
}

/// Point a device's `driver` link below a bare [`Sysfs`] root (for
/// [`FakeHost::kernel`] closures).
pub fn relink(sys: &Sysfs, addr: &str, driver: Option<&str>) {
    let link = sys
        .root()
        .join(format!("sys/devices/pci0000:00/{addr}/driver"));
    let _ = fs::remove_file(&link);
    if let Some(d) = driver {
        symlink(format!("../../../bus/pci/drivers/{d}"), link).unwrap();
    }
}

pub fn a(s: &str) -> PciAddress {
    s.parse().unwrap()
}
