//! One client's session: VERSION negotiation and the handling of each
//! client command.

use std::collections::VecDeque;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::{Arc, Mutex};

use fdma_hw::pci;
use fdma_vfio_user::consts::{self, device, dma, irq, region};
use fdma_vfio_user::{
    Capabilities, Connection, DeviceInfo, DmaUnmap, IrqInfo, Limits, Message, RegionAccess,
    RegionCap, RegionData, RegionInfo, RegionIoFds, Reply, Request, SparseArea, TwinSocket,
    Version,
};

use super::dma::{DmaLink, MmapBacking, MsgBacking};
use super::error::ServerError;
use super::Core;
use crate::hostmem::Prot;

/// Most fds the server accepts in one message.
pub const MAX_MSG_FDS: u32 = 16;

/// What a handled command answers.
struct Answer {
    reply: Reply,
    /// Fds to pass with the reply.
    fds: Vec<OwnedFd>,
    /// Pass the card-memory fd (BAR2 region info).
    card_fd: bool,
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer {
            reply,
            fds: Vec::new(),
            card_fd: false,
        }
    }
}

/// A connected client.
#[derive(Debug)]
pub struct Session {
    /// The main socket.
    pub conn: Arc<Connection>,
    /// The server-to-client socket, when twin-socket mode was negotiated.
    pub twin: Option<Arc<Connection>>,
    /// Commands received while a DMA reply was awaited on the main socket.
    pub pending: Arc<Mutex<VecDeque<Message>>>,
    link: Option<Arc<DmaLink>>,
}

impl Session {
    /// A session on a freshly accepted socket.
    pub fn new(conn: Connection) -> Self {
        Session {
            conn: Arc::new(conn),
            twin: None,
            pending: Arc::new(Mutex::new(VecDeque::new())),
            link: None,
        }
    }

    /// The next queued command, if any.
    pub fn next_pending(&self) -> Option<Message> {
        self.pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    /// Handle one message from the client. `Err` ends the session.
    pub fn handle(&mut self, core: &mut Core, m: Message) -> Result<(), ServerError> {
        let h = m.header;
        if !h.is_command() {
            log::warn!("ignoring unsolicited {}", m.describe());
            return Ok(());
        }
        log::debug!("<- {}", m.describe());
        let req = match m.request() {
            Ok(r) => r,
            Err(e) => {
                log::warn!("bad message from client: {e}");
                if !h.no_reply() {
                    self.conn.send_error(h.msg_id, h.command, e.errno())?;
                }
                return Ok(());
            }
        };
        if self.link.is_none() && !matches!(req, Request::Version(_)) {
            log::warn!("{} before VERSION", m.describe());
            if !h.no_reply() {
                self.conn.send_error(h.msg_id, h.command, libc::EINVAL)?;
            }
            return Ok(());
        }
        let result = self.dispatch(core, req, m.fds);
        if h.no_reply() {
            if let Err(errno) = result {
                log::warn!("no-reply command {} failed: errno {errno}", h.command);
            }
            return Ok(());
        }
        match result {
            Ok(a) => {
                let mut fds: Vec<_> = a.fds.iter().map(|f| f.as_fd()).collect();
                if a.card_fd {
                    fds.push(core.card.card_memory_fd());
                }
                self.conn.send_reply(h.msg_id, &a.reply, &fds)?;
            }
            Err(errno) => {
                log::debug!("-> error {errno} for command {} id {}", h.command, h.msg_id);
                self.conn.send_error(h.msg_id, h.command, errno)?;
            }
        }
        Ok(())
    }

    fn dispatch(
        &mut self,
        core: &mut Core,
        req: Request,
        fds: Vec<OwnedFd>,
    ) -> Result<Answer, i32> {
        let no_fds = |fds: &Vec<OwnedFd>| {
            if fds.is_empty() {
                Ok(())
            } else {
                Err(libc::EINVAL)
            }
        };
        match req {
            Request::Version(v) => self.version(core, v, fds),
            Request::DmaMap(m) => {
                let prot = Prot {
                    read: m.flags & dma::FLAG_READ != 0,
                    write: m.flags & dma::FLAG_WRITE != 0,
                };
                if m.flags & !(dma::FLAG_READ | dma::FLAG_WRITE) != 0 || fds.len() > 1 {
                    return Err(libc::EINVAL);
                }
                let backing: Box<dyn crate::hostmem::Backing> = match fds.into_iter().next() {
                    Some(fd) => {
                        Box::new(MmapBacking::new(fd, m.offset, m.size, prot).map_err(|e| {
                            log::warn!(
                                "cannot mmap DMA_MAP fd at {:#x}+{:#x}: {e}",
                                m.offset,
                                m.size
                            );
                            e.raw_os_error().unwrap_or(libc::EINVAL)
                        })?)
                    }
                    None => Box::new(MsgBacking::new(
                        self.link.clone().expect("negotiated"),
                        m.address,
                    )),
                };
                core.iommu
                    .map(m.address, m.size, prot, backing)
                    .map_err(|e| {
                        log::debug!("DMA_MAP refused: {e}");
                        e.errno()
                    })?;
                log::debug!("mapped [{:#x}, +{:#x}) {prot}", m.address, m.size);
                Ok(Reply::DmaMap.into())
            }
            Request::DmaUnmap(u) => {
                no_fds(&fds)?;
                // Accesses are synchronous inside the card's run(), so none is
                // in flight here (module docs of `dma`).
                core.iommu.unmap(u.address, u.size).map_err(|e| e.errno())?;
                Ok(Reply::DmaUnmap(DmaUnmap {
                    argsz: DmaUnmap::SIZE as u32,
                    ..u
                })
                .into())
            }
            Request::DeviceGetInfo(_) => Ok(Reply::DeviceGetInfo(DeviceInfo {
                argsz: DeviceInfo::SIZE as u32,
                flags: device::FLAG_PCI | device::FLAG_RESET,
                num_regions: region::PCI_NUM_REGIONS,
                num_irqs: irq::PCI_NUM_IRQS,
            })
            .into()),
            Request::DeviceGetRegionInfo(r) => {
                if r.index >= region::PCI_NUM_REGIONS {
                    return Err(libc::EINVAL);
                }
                let size = core.device.region_size(r.index);
                let rw = if size > 0 {
                    region::FLAG_READ | region::FLAG_WRITE
                } else {
                    0
                };
                let mut info = RegionInfo {
                    flags: rw,
                    index: r.index,
                    size,
                    ..Default::default()
                };
                let mmap = r.index == pci::BAR_CARD_MEM;
                if mmap {
                    info.flags |= region::FLAG_MMAP;
                    info.caps = vec![RegionCap::SparseMmap(vec![SparseArea { offset: 0, size }])];
                }
                Ok(Answer {
                    reply: Reply::DeviceGetRegionInfo(info.truncated_to(r.argsz)),
                    fds: Vec::new(),
                    card_fd: mmap,
                })
            }
            Request::DeviceGetRegionIoFds(r) => {
                if r.index >= region::PCI_NUM_REGIONS {
                    return Err(libc::EINVAL);
                }
                // No sub-region is served through ioeventfds.
                Ok(Reply::DeviceGetRegionIoFds(RegionIoFds {
                    argsz: 16,
                    index: r.index,
                    subregions: vec![],
                })
                .into())
            }
            Request::DeviceGetIrqInfo(i) => {
                let (flags, count) = match i.index {
                    irq::PCI_MSIX => (
                        irq::INFO_EVENTFD | irq::INFO_MASKABLE,
                        core.device.msix.vectors() as u32,
                    ),
                    irq::PCI_INTX | irq::PCI_MSI | irq::PCI_ERR | irq::PCI_REQ => {
                        (irq::INFO_EVENTFD, 0)
                    }
                    _ => return Err(libc::EINVAL),
                };
                Ok(Reply::DeviceGetIrqInfo(IrqInfo {
                    argsz: IrqInfo::SIZE as u32,
                    flags,
                    index: i.index,
                    count,
                })
                .into())
            }
            Request::DeviceSetIrqs(s) => {
                if s.index != irq::PCI_MSIX {
                    // Other indexes have no interrupts; only "disable all" is accepted.
                    return if s.count == 0 && s.flags & irq::SET_DATA_NONE != 0 {
                        Ok(Reply::DeviceSetIrqs.into())
                    } else {
                        Err(libc::EINVAL)
                    };
                }
                if s.flags & irq::SET_DATA_EVENTFD == 0 {
                    no_fds(&fds)?;
                }
                let g = core.device.gate();
                core.device.msix.set_irqs(&s, fds, g)?;
                Ok(Reply::DeviceSetIrqs.into())
            }
            Request::RegionRead(a) => {
                no_fds(&fds)?;
                if a.count as u64 > core.opts.max_data_xfer_size {
                    return Err(libc::E2BIG);
                }
                let data = core.device.read(
                    &mut core.card,
                    &mut core.iommu,
                    a.region,
                    a.offset,
                    a.count as usize,
                )?;
                Ok(Reply::RegionRead(RegionData {
                    offset: a.offset,
                    region: a.region,
                    data,
                })
                .into())
            }
            Request::RegionWrite(w) => {
                no_fds(&fds)?;
                core.device
                    .write(&mut core.card, &mut core.iommu, w.region, w.offset, &w.data)?;
                Ok(Reply::RegionWrite(RegionAccess {
                    offset: w.offset,
                    region: w.region,
                    count: w.data.len() as u32,
                })
                .into())
            }
            Request::DeviceReset => {
                let e = *core.card.engine();
                core.device.reset(&mut core.card, &e);
                Ok(Reply::DeviceReset.into())
            }
            // DMA_READ/WRITE go server to client; a client sending them is wrong.
            Request::DmaRead(_) | Request::DmaWrite(_) => Err(libc::EINVAL),
            Request::Unsupported { command } => {
                log::debug!("unsupported command {command}");
                Err(libc::ENOSYS)
            }
        }
    }

    fn version(&mut self, core: &mut Core, v: Version, fds: Vec<OwnedFd>) -> Result<Answer, i32> {
        if self.link.is_some() {
            return Err(libc::EINVAL);
        }
        if v.major != consts::VERSION_MAJOR || !fds.is_empty() {
            return Err(libc::ENOTSUP);
        }
        let c = v.capabilities();
        let mut caps = Capabilities {
            max_msg_fds: Some(MAX_MSG_FDS),
            max_data_xfer_size: Some(core.opts.max_data_xfer_size),
            max_dma_maps: Some(fdma_vfio_user::caps::DEFAULT_MAX_DMA_MAPS),
            pgsizes: Some(fdma_vfio_user::caps::DEFAULT_PGSIZES),
            ..Default::default()
        };
        let mut out_fds = Vec::new();
        // Replies from the client to DMA requests carry up to its max_data_xfer_size of data.
        let limits = Limits::for_data_xfer(
            core.opts.max_data_xfer_size.max(c.max_data_xfer_size()),
            MAX_MSG_FDS as usize,
        );
        let (link_conn, twin) = if c.twin_socket_supported() {
            let (ours, theirs) = std::os::unix::net::UnixStream::pair()
                .map_err(|e| e.raw_os_error().unwrap_or(libc::EIO))?;
            let ours = Arc::new(Connection::new(ours, limits).map_err(|e| e.errno())?);
            out_fds.push(OwnedFd::from(theirs));
            caps.twin_socket = Some(TwinSocket {
                supported: Some(true),
                fd_index: Some(0),
            });
            self.twin = Some(ours.clone());
            (ours, true)
        } else {
            (self.conn.clone(), false)
        };
        self.link = Some(Arc::new(DmaLink::new(
            link_conn,
            twin,
            self.pending.clone(),
            c.max_data_xfer_size(),
            core.opts.dma_reply_timeout,
            core.dma_faults.clone(),
        )));
        log::info!(
            "client speaks {}.{}, max_data_xfer_size {}, twin socket {}",
            v.major,
            v.minor,
            c.max_data_xfer_size(),
            twin
        );
        Ok(Answer {
            reply: Reply::Version(Version {
                major: consts::VERSION_MAJOR,
                minor: v.minor.min(consts::VERSION_MINOR),
                caps: Some(caps),
            }),
            fds: out_fds,
            card_fd: false,
        })
    }

    /// Limits to apply to the main socket once VERSION is done.
    pub fn negotiated_limits(core: &Core) -> Limits {
        Limits::for_data_xfer(core.opts.max_data_xfer_size, MAX_MSG_FDS as usize)
    }

    /// Whether VERSION has been negotiated.
    pub fn negotiated(&self) -> bool {
        self.link.is_some()
    }
}
