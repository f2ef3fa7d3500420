//! A small vfio-user client for the simulator, built on the protocol crate:
//! shared by the server's tests and the protocol-level demo
//! (`examples/demo.rs` includes this file).
#![allow(dead_code)]

use fdma_hw::desc::Descriptor;
use fdma_hw::pci::{self, cfg, MSIX_CAP_OFFSET, MSIX_TABLE_OFFSET};
use fdma_hw::regs::{self, channel_reg};
use fdma_vfio_user::consts::{device, dma, irq, region};
use fdma_vfio_user::*;
use nix::sys::eventfd::{EfdFlags, EventFd};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command as Proc};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const T: Option<Duration> = Some(Duration::from_secs(30));
pub const FD_IOVA: u64 = 0x10_0000;
pub const FD_SIZE: u64 = 0x10_0000;
pub const MSG_IOVA: u64 = 0x100_0000;
pub const MSG_SIZE: usize = 0x1_0000;

pub struct Sim {
    pub child: Child,
    pub sock: PathBuf,
    pub _dir: tempfile::TempDir,
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Start the server binary `bin` on a fresh socket with extra arguments.
pub fn start_bin(bin: &Path, args: &[&str]) -> Sim {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("fdma.sock");
    let child = Proc::new(bin)
        .arg("--socket")
        .arg(&sock)
        .args(args)
        .arg("--dma-reply-timeout-ms")
        .arg("3000")
        // Its announcement goes to the test's directory, removed with it.
        .env("XDG_RUNTIME_DIR", dir.path())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while !Path::new(&format!("{}.ctl", sock.display())).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Sim {
        child,
        sock,
        _dir: dir,
    }
}

impl Sim {
    pub fn ctl(&self, cmd: &str) -> Vec<String> {
        fdma_sim::server::control::request(&self.sock, cmd)
            .expect("control socket")
            .unwrap_or_else(|e| panic!("{cmd}: err {e}"))
    }
}

pub struct Client {
    pub conn: Connection,
    pub id: u16,
    /// The client-served memory at MSG_IOVA.
    pub mem: Arc<Mutex<Vec<u8>>>,
    pub fdmem: std::fs::File,
    pub card_fd: Option<OwnedFd>,
    pub events: Vec<EventFd>,
}

impl Client {
    pub fn call(
        &mut self,
        req: Request,
        fds: &[std::os::fd::BorrowedFd<'_>],
    ) -> Result<(Reply, Vec<OwnedFd>)> {
        self.id = self.id.wrapping_add(1);
        self.conn.call(self.id, &req, fds, T)
    }
    pub fn read(&mut self, index: u32, offset: u64, count: u32) -> Vec<u8> {
        match self
            .call(
                Request::RegionRead(RegionAccess {
                    offset,
                    region: index,
                    count,
                }),
                &[],
            )
            .unwrap()
            .0
        {
            Reply::RegionRead(d) => {
                assert_eq!(
                    (d.offset, d.region, d.data.len()),
                    (offset, index, count as usize)
                );
                d.data
            }
            r => panic!("{r:?}"),
        }
    }
    pub fn write(&mut self, index: u32, offset: u64, data: &[u8]) {
        let r = self.call(
            Request::RegionWrite(RegionData {
                offset,
                region: index,
                data: data.to_vec(),
            }),
            &[],
        );
        assert!(matches!(r.unwrap().0, Reply::RegionWrite(a) if a.count as usize == data.len()));
    }
    pub fn reg(&mut self, off: u32) -> u32 {
        u32::from_le_bytes(self.read(0, off as u64, 4).try_into().unwrap())
    }
    pub fn set(&mut self, off: u32, v: u32) {
        self.write(0, off as u64, &v.to_le_bytes());
    }
    pub fn wait_reg(&mut self, off: u32, what: &str, ok: impl Fn(u32) -> bool) -> u32 {
        let t0 = Instant::now();
        loop {
            let v = self.reg(off);
            if ok(v) {
                return v;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "timed out waiting for {what} (last {v:#x})"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
    }
    pub fn fd_write(&self, iova: u64, data: &[u8]) {
        self.fdmem.write_all_at(data, iova - FD_IOVA).unwrap();
    }
    pub fn fd_read(&self, iova: u64, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        self.fdmem.read_exact_at(&mut b, iova - FD_IOVA).unwrap();
        b
    }
    /// Program channel `ch` with a ring of 16 at `ring` and writeback at `wb`.
    pub fn setup_channel(&mut self, ch: usize, ring: u64, wb: u64) {
        self.set(channel_reg(ch, &regs::CH_RING_LO), ring as u32);
        self.set(channel_reg(ch, &regs::CH_RING_HI), (ring >> 32) as u32);
        self.set(channel_reg(ch, &regs::CH_RING_SIZE), 16);
        self.set(channel_reg(ch, &regs::CH_WB_LO), wb as u32);
        self.set(channel_reg(ch, &regs::CH_WB_HI), (wb >> 32) as u32);
        self.set(channel_reg(ch, &regs::CH_CTRL), regs::CH_CTRL_RUN.encode(1));
        self.set(regs::GCTRL.offset, regs::GCTRL_ENABLE.encode(1));
    }
}

/// Serve DMA_READ / DMA_WRITE for [MSG_IOVA, +MSG_SIZE) from `mem`.
pub fn serve_dma(twin: Connection, mem: Arc<Mutex<Vec<u8>>>) {
    loop {
        let m = match twin.recv(None) {
            Ok(m) => m,
            Err(_) => return,
        };
        let id = m.header.msg_id;
        let r = match m.request().unwrap() {
            Request::DmaRead(a) => {
                let o = (a.address - MSG_IOVA) as usize;
                let data = mem.lock().unwrap()[o..o + a.count as usize].to_vec();
                twin.send_reply(
                    id,
                    &Reply::DmaRead(DmaData {
                        address: a.address,
                        data,
                    }),
                    &[],
                )
            }
            Request::DmaWrite(d) => {
                let o = (d.address - MSG_IOVA) as usize;
                mem.lock().unwrap()[o..o + d.data.len()].copy_from_slice(&d.data);
                let r = DmaWriteReply {
                    address: d.address,
                    count: d.data.len() as u32,
                };
                twin.send_reply(id, &Reply::DmaWrite(r), &[])
            }
            other => panic!("unexpected server request {other:?}"),
        };
        if r.is_err() {
            return;
        }
    }
}

/// Connect, negotiate with a twin socket, check the device description, turn
/// on bus mastering and MSI-X, register eventfds and map both kinds of memory.
pub fn connect(sim: &Sim) -> Client {
    let conn = Connection::connect(&sim.sock, Limits::default()).unwrap();
    let caps = Capabilities {
        max_msg_fds: Some(8),
        max_data_xfer_size: Some(4096),
        twin_socket: Some(TwinSocket {
            supported: Some(true),
            fd_index: None,
        }),
        ..Default::default()
    };
    let v = Request::Version(Version {
        major: 0,
        minor: 1,
        caps: Some(caps),
    });
    let (r, mut fds) = conn.call(1, &v, &[], T).unwrap();
    let Reply::Version(v) = r else {
        panic!("{r:?}")
    };
    assert_eq!((v.major, v.minor), (0, 1));
    let sc = v.capabilities();
    assert!(sc.max_msg_fds() >= 8);
    assert!(sc.max_data_xfer_size() >= 4096);
    assert_eq!(sc.pgsizes() & 4096, 4096);
    let idx = sc.twin_socket_fd_index().expect("twin socket enabled") as usize;
    assert_eq!(fds.len(), 1);
    let twin = Connection::from_fd(fds.remove(idx), Limits::default()).unwrap();
    let mem = Arc::new(Mutex::new(vec![0u8; MSG_SIZE]));
    let m2 = mem.clone();
    std::thread::spawn(move || serve_dma(twin, m2));

    let memfd =
        nix::sys::memfd::memfd_create(c"fdma-test", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .unwrap();
    let fdmem = std::fs::File::from(memfd);
    fdmem.set_len(FD_SIZE).unwrap();
    let mut c = Client {
        conn,
        id: 1,
        mem,
        fdmem,
        card_fd: None,
        events: Vec::new(),
    };

    let (r, _) = c
        .call(
            Request::DeviceGetInfo(DeviceInfo {
                argsz: 16,
                ..Default::default()
            }),
            &[],
        )
        .unwrap();
    assert_eq!(
        r,
        Reply::DeviceGetInfo(DeviceInfo {
            argsz: 16,
            flags: device::FLAG_PCI | device::FLAG_RESET,
            num_regions: 9,
            num_irqs: 5
        })
    );
    let engine = fdma_hw::EngineConfig::DEFAULT;
    for (index, size, mmap) in [
        (0, regs::BAR0_SIZE, false),
        (1, 0, false),
        (2, engine.card_mem_bytes(), true),
        (7, 256, false),
    ] {
        let (r, mut fds) = c
            .call(
                Request::DeviceGetRegionInfo(RegionInfoRequest { argsz: 256, index }),
                &[],
            )
            .unwrap();
        let Reply::DeviceGetRegionInfo(info) = r else {
            panic!("{r:?}")
        };
        assert_eq!((info.index, info.size), (index, size), "region {index}");
        assert_eq!(info.flags & region::FLAG_MMAP != 0, mmap, "region {index}");
        if size > 0 {
            assert_eq!(info.flags & (region::FLAG_READ | region::FLAG_WRITE), 3);
        }
        if mmap {
            assert_eq!(
                info.caps,
                vec![RegionCap::SparseMmap(vec![SparseArea { offset: 0, size }])]
            );
            assert_eq!(fds.len(), 1);
            c.card_fd = fds.pop();
        } else {
            assert!(fds.is_empty());
        }
    }
    let (r, _) = c
        .call(
            Request::DeviceGetIrqInfo(IrqInfo {
                argsz: 16,
                index: irq::PCI_MSIX,
                ..Default::default()
            }),
            &[],
        )
        .unwrap();
    let Reply::DeviceGetIrqInfo(i) = r else {
        panic!()
    };
    assert_eq!(i.count, engine.msix_vectors() as u32);
    assert_ne!(i.flags & irq::INFO_EVENTFD, 0);

    // Identity, bus master on, MSI-X enabled, every table entry unmasked.
    let id = c.read(7, 0, 4);
    assert_eq!(u16::from_le_bytes([id[0], id[1]]), pci::VENDOR_ID);
    assert_eq!(u16::from_le_bytes([id[2], id[3]]), pci::DEVICE_ID);
    c.write(
        7,
        cfg::COMMAND as u64,
        &(cfg::COMMAND_MEMORY | cfg::COMMAND_BUS_MASTER).to_le_bytes(),
    );
    assert_eq!(
        c.read(7, cfg::COMMAND as u64, 2),
        (cfg::COMMAND_MEMORY | cfg::COMMAND_BUS_MASTER).to_le_bytes()
    );
    // BAR sizing: all ones reads back the size mask.
    c.write(7, cfg::BAR0 as u64, &[0xff; 4]);
    assert_eq!(
        u32::from_le_bytes(c.read(7, cfg::BAR0 as u64, 4).try_into().unwrap()),
        !(regs::BAR0_SIZE as u32 - 1) | 4
    );
    let ctrl = (MSIX_CAP_OFFSET + 2) as u64;
    let old = u16::from_le_bytes(c.read(7, ctrl, 2).try_into().unwrap());
    c.write(7, ctrl, &(old | cfg::MSIX_CTRL_ENABLE).to_le_bytes());
    for v in 0..engine.msix_vectors() as u32 {
        c.set(MSIX_TABLE_OFFSET + v * 16 + 12, 0);
    }
    let n = engine.msix_vectors() as usize;
    c.events = (0..n)
        .map(|_| EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).unwrap())
        .collect();
    let fds: Vec<_> = c.events.iter().map(|e| e.as_fd()).collect();
    let set = IrqSet {
        flags: irq::SET_DATA_EVENTFD | irq::SET_ACTION_TRIGGER,
        index: irq::PCI_MSIX,
        start: 0,
        count: n as u32,
        bools: vec![],
    };
    let conn_fds: Vec<_> = fds.clone();
    c.id += 1;
    let r = c
        .conn
        .call(c.id, &Request::DeviceSetIrqs(set), &conn_fds, T)
        .unwrap()
        .0;
    assert_eq!(r, Reply::DeviceSetIrqs);

    let fdmap = DmaMap {
        flags: dma::FLAG_READ | dma::FLAG_WRITE,
        offset: 0,
        address: FD_IOVA,
        size: FD_SIZE,
    };
    let f = c.fdmem.try_clone().unwrap();
    assert_eq!(
        c.call(Request::DmaMap(fdmap), &[f.as_fd()]).unwrap().0,
        Reply::DmaMap
    );
    let msgmap = DmaMap {
        flags: dma::FLAG_READ | dma::FLAG_WRITE,
        offset: 0,
        address: MSG_IOVA,
        size: MSG_SIZE as u64,
    };
    assert_eq!(
        c.call(Request::DmaMap(msgmap), &[]).unwrap().0,
        Reply::DmaMap
    );
    c
}

pub fn assert_same(got: &[u8], want: &[u8], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        panic!("{what}: first difference at byte {i} of {}", want.len());
    }
}

pub fn pattern(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

pub fn submit(c: &mut Client, _ch: usize, ring: u64, slot: u64, d: Descriptor) {
    c.fd_write(ring + slot * 32, &d.to_bytes());
}
