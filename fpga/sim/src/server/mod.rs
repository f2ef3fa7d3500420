//! The vfio-user device server: the simulated card presented to one client
//! at a time over a UNIX socket, as a PCI device with
//!
//! * region 7, configuration space (256 bytes, emulated: see [`regions`]);
//! * region 0, BAR0: registers trapped to the card's RTL, then the MSI-X
//!   table and PBA (no mmap);
//! * region 2, BAR2: card memory, readable, writable and mmappable (the
//!   card's memfd, with a sparse-mmap capability covering the whole BAR);
//! * the MSI-X IRQ index with one vector per channel plus the error vector,
//!   signalled through eventfds ([`irqs`]).
//!
//! DMA mappings go into the IOMMU the card reaches host memory through
//! ([`dma`]). A second client connecting while one is served gets an EBUSY
//! error reply to its first message and is disconnected (it has a second to
//! send that message; waiting for it never holds up the served client).
//! A client that connects while the served one has already hung up is not
//! a second client: the old session is finished first (what it sent before
//! closing, posted writes included, is handled), so commands run one after
//! another against one simulator never see EBUSY.
//! The served client's pid is known from `SO_PEERCRED`; a server that
//! [announces itself](Server::announce) records it in its announcement, so
//! that the refused client can name who holds the simulator. When the client
//! disconnects, every DMA mapping is removed and every eventfd closed; the
//! device state (registers, card memory) stays, as the spec asks.
//!
//! # Main loop
//!
//! One thread polls the listening socket, the client's socket, the control
//! socket and its clients. While the card has work (not quiescent) it is
//! clocked in slices of [`ServerConfig::slice_cycles`] between polls with a
//! zero poll timeout, and the interrupts it raised are delivered after each
//! slice; when it is quiescent the loop blocks in poll and costs no CPU.
//!
//! # Control socket
//!
//! `<socket>.ctl`, mode 0600, takes one command per line. Each answer is
//! zero or more data lines followed by `ok`, or a single `err <reason>`:
//!
//! | command                                | effect                                           |
//! |----------------------------------------|--------------------------------------------------|
//! | `status`                               | `cycles N quiescent 0/1 dead 0/1 client 0/1 bus_master 0/1 mappings N irqs N faults N` |
//! | `faults`                               | the simulator faults now set                     |
//! | `fault link-down on\|off`              | link down: reads all ones, writes and DMA dropped |
//! | `fault die-after N\|off`               | the device dies N cycles from now                 |
//! | `fault corrupt-host-writes N`          | flip a byte in each of the next N host DMA writes |
//! | `fault dma-reply-delay MS`             | delay every client-served DMA request by MS ms    |
//! | `fault dma-reply-fail-after N\|off`    | fail every client-served DMA request after N more |
//! | `fault-log`                            | one line per fault record, oldest first           |
//! | `fault-log clear`                      | empty the fault log                               |

pub mod control;
pub mod dma;
pub mod error;
pub mod irqs;
pub mod regions;
pub mod session;

use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fdma_vfio_user::announce::{AnnounceError, Announcement, Announcer};
use fdma_vfio_user::{Connection, Error as ProtoError, Limits};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::card::{Card, RunOutcome, SimConfig};
use crate::hostmem::Iommu;
use control::CtlConn;
pub use dma::DmaFaults;
pub use error::ServerError;
use regions::Device;
use session::Session;

/// How to run the server.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Path of the vfio-user socket; the control socket is this plus `.ctl`.
    pub socket: PathBuf,
    /// Largest data transfer the server accepts and announces.
    pub max_data_xfer_size: u64,
    /// Wall-clock limit for a client's DMA reply (contract D1).
    pub dma_reply_timeout: Duration,
    /// Cycles the card is clocked between polls while busy.
    pub slice_cycles: u64,
    /// Faults injected into client-served DMA replies from the start (D7).
    pub dma_faults: DmaFaults,
    /// Announce the server (see [`Server::announce`]) with these option
    /// summaries as it starts: after the vfio-user socket is bound and
    /// before the control socket is, so that a script that waits for the
    /// control socket finds the server in `fdma list`. A runtime directory
    /// that cannot be used costs a warning.
    pub announce: Option<Vec<String>>,
}

impl ServerConfig {
    /// Defaults for `socket`: 1 MiB transfers, 5 s DMA reply limit,
    /// 10,000-cycle slices.
    pub fn new(socket: impl Into<PathBuf>) -> Self {
        ServerConfig {
            socket: socket.into(),
            max_data_xfer_size: 1 << 20,
            dma_reply_timeout: Duration::from_secs(5),
            slice_cycles: 10_000,
            dma_faults: DmaFaults::default(),
            announce: None,
        }
    }
}

/// Options sessions need.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Largest data transfer accepted.
    pub max_data_xfer_size: u64,
    /// DMA reply limit.
    pub dma_reply_timeout: Duration,
}

/// The device side shared by sessions and the control socket.
pub struct Core {
    /// The simulated card.
    pub card: Card,
    /// The client's DMA mappings.
    pub iommu: Iommu,
    /// Configuration space and MSI-X.
    pub device: Device,
    /// Client-served DMA faults (kept in step with the card's `SimFaults`).
    pub dma_faults: Arc<Mutex<DmaFaults>>,
    /// Session options.
    pub opts: Options,
}

impl Core {
    /// Deliver the interrupts the card raised.
    pub fn deliver_irqs(&mut self, scratch: &mut Vec<u16>) {
        self.card.drain_irqs(scratch);
        let g = self.device.gate();
        for v in scratch.drain(..) {
            self.device.msix.raise(v, g);
        }
    }
}

/// The server.
pub struct Server {
    cfg: ServerConfig,
    ctl_path: PathBuf,
    core: Core,
    listener: UnixListener,
    ctl: UnixListener,
    ctl_conns: Vec<CtlConn>,
    session: Option<Session>,
    /// The connected client's pid (`SO_PEERCRED`), when known.
    client_pid: Option<u32>,
    /// Second clients waiting for their EBUSY reply, with their deadline.
    rejects: Vec<(Connection, Instant)>,
    announcer: Option<Announcer>,
    irq_scratch: Vec<u16>,
}

/// Most second clients waiting for their EBUSY reply at once; more are
/// closed at once.
const MAX_REJECTS: usize = 16;
/// How long a second client has to send its first message.
const REJECT_WAIT: Duration = Duration::from_secs(1);

fn bind(path: &Path) -> Result<UnixListener, ServerError> {
    match std::fs::remove_file(path) {
        Ok(()) => log::info!("removed stale socket {}", path.display()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(ServerError::io("remove", path.display(), e)),
    }
    // Create the socket with no access for others from the start.
    let old = nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o177));
    let l = UnixListener::bind(path);
    nix::sys::stat::umask(old);
    let l = l.map_err(|e| ServerError::io("bind", path.display(), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| ServerError::io("chmod", path.display(), e))?;
    Ok(l)
}

impl Server {
    /// Build the card and bind the sockets.
    pub fn new(cfg: ServerConfig, sim: SimConfig) -> Result<Server, ServerError> {
        let faults = cfg.dma_faults;
        let card = Card::new(sim)?;
        let device = Device::new(card.engine());
        let listener = bind(&cfg.socket)?;
        let announcer = cfg.announce.clone().and_then(|options| {
            let ann =
                Announcement::for_this_process(&cfg.socket, card.engine().channels as u32, options);
            Announcer::create(ann)
                .inspect(|a| log::info!("announced in {}", a.path().display()))
                .inspect_err(|e| {
                    log::warn!("not announced (fdma list will not show this simulator): {e}")
                })
                .ok()
        });
        let mut ctl_path = cfg.socket.clone().into_os_string();
        ctl_path.push(".ctl");
        let ctl_path = PathBuf::from(ctl_path);
        let ctl = bind(&ctl_path)?;
        let opts = Options {
            max_data_xfer_size: cfg.max_data_xfer_size,
            dma_reply_timeout: cfg.dma_reply_timeout,
        };
        Ok(Server {
            ctl_path,
            core: Core {
                card,
                iommu: Iommu::new(),
                device,
                dma_faults: Arc::new(Mutex::new(faults)),
                opts,
            },
            listener,
            ctl,
            ctl_conns: Vec::new(),
            session: None,
            client_pid: None,
            rejects: Vec::new(),
            announcer,
            irq_scratch: Vec::new(),
            cfg,
        })
    }

    /// The card and the state around it.
    pub fn core(&mut self) -> &mut Core {
        &mut self.core
    }

    /// Announce this server in the user's runtime directory (see
    /// [`fdma_vfio_user::announce`]) until it is dropped, with `options`
    /// summarizing how it differs from the defaults.
    pub fn announce(&mut self, options: Vec<String>) -> Result<(), AnnounceError> {
        let channels = self.core.card.engine().channels as u32;
        let ann = Announcement::for_this_process(&self.cfg.socket, channels, options);
        let mut a = Announcer::create(ann)?;
        if self.session.is_some() {
            a.set_client(Some(self.client_pid))?;
        }
        log::info!("announced in {}", a.path().display());
        self.announcer = Some(a);
        Ok(())
    }

    /// The announcement file, if the server announced itself.
    pub fn announcement_path(&self) -> Option<&Path> {
        self.announcer.as_ref().map(|a| a.path())
    }

    fn announce_client(&mut self) {
        let client = self.session.as_ref().map(|_| self.client_pid);
        if let Some(a) = self.announcer.as_mut() {
            if let Err(e) = a.set_client(client) {
                log::warn!("cannot update the announcement: {e}");
            }
        }
    }

    fn end_session(&mut self, why: &str) {
        if self.session.take().is_some() {
            let maps = self.core.iommu.unmap_all();
            self.core.device.msix.disconnect();
            log::info!(
                "client disconnected ({why}); removed {} DMA mappings",
                maps.len()
            );
            self.client_pid = None;
            self.announce_client();
        }
    }

    fn accept(&mut self) {
        let (sock, _) = match self.listener.accept() {
            Ok(s) => s,
            Err(e) => {
                log::warn!("accept: {e}");
                return;
            }
        };
        // A client that exits and a next one that connects at once (a CI
        // script running one command after another) can both be pending
        // in one poll: finish the one that hung up first, requests it sent
        // before closing included (posted writes land), so the newcomer
        // is served rather than refused as a second client.
        if self.session_hung_up() {
            while self.session.is_some() {
                self.drain_pending();
                if self.session.is_some() {
                    self.serve_client();
                }
            }
        }
        if self.session.is_some() {
            if self.rejects.len() >= MAX_REJECTS {
                log::info!("closing a further client at once (busy)");
                return;
            }
            match Connection::new(sock, Limits::default()) {
                Ok(c) => self.rejects.push((c, Instant::now() + REJECT_WAIT)),
                Err(e) => log::info!("cannot set up the second client's connection: {e}"),
            }
            return;
        }
        let pid = peer_pid(&sock);
        match Connection::new(sock, Session::negotiated_limits(&self.core)) {
            Ok(c) => {
                match pid {
                    Some(p) => log::info!("client connected (pid {p})"),
                    None => log::info!("client connected"),
                }
                self.session = Some(Session::new(c));
                self.client_pid = pid;
                self.announce_client();
            }
            Err(e) => log::warn!("cannot set up client connection: {e}"),
        }
    }

    /// Whether the served client has closed its end of the socket (what
    /// it sent before is still to be read).
    fn session_hung_up(&self) -> bool {
        let Some(s) = self.session.as_ref() else {
            return false;
        };
        // The kernel reports RDHUP for a Unix stream socket whose peer
        // closed or shut down writing; nix's poll() cannot return that
        // flag, its epoll can. A rare path (a client arriving while one is
        // served), so a one-off epoll instance is fine.
        use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags};
        let hup = EpollFlags::EPOLLRDHUP | EpollFlags::EPOLLHUP;
        let Ok(ep) = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) else {
            return false;
        };
        if ep.add(s.conn.as_fd(), EpollEvent::new(hup, 0)).is_err() {
            return false;
        }
        let mut ev = [EpollEvent::empty()];
        matches!(ep.wait(&mut ev, PollTimeout::ZERO), Ok(1)) && ev[0].events().intersects(hup)
    }

    /// Answer the second clients whose first message has come (`ready`
    /// flags them, in order) with EBUSY, and drop those whose time is up.
    fn serve_rejects(&mut self, ready: &[bool]) {
        let now = Instant::now();
        let holder = self.client_pid;
        let mut keep = Vec::with_capacity(self.rejects.len());
        for (i, (c, deadline)) in std::mem::take(&mut self.rejects).into_iter().enumerate() {
            if ready.get(i).copied().unwrap_or(false) {
                match c.recv(Some(Duration::from_millis(100))) {
                    Ok(m) => {
                        match holder {
                            Some(p) => {
                                log::info!("refusing a second client (EBUSY; pid {p} is connected)")
                            }
                            None => log::info!("refusing a second client (EBUSY)"),
                        }
                        let _ = c.send_error(m.header.msg_id, m.header.command, libc::EBUSY);
                    }
                    Err(e) => log::info!("second client sent nothing usable: {e}"),
                }
            } else if now < deadline {
                keep.push((c, deadline));
            } else {
                log::info!("second client sent nothing within {REJECT_WAIT:?}; closed");
            }
        }
        self.rejects = keep;
    }

    fn serve_client(&mut self) {
        let Some(s) = self.session.as_mut() else {
            return;
        };
        let r = match s.conn.recv(Some(Duration::from_secs(5))) {
            Ok(m) => s.handle(&mut self.core, m),
            Err(ProtoError::Closed) => {
                self.end_session("closed");
                return;
            }
            Err(e) => match e.reply_target() {
                Some((id, cmd)) => s
                    .conn
                    .send_error(id, cmd, e.errno())
                    .map_err(ServerError::from),
                None => Err(e.into()),
            },
        };
        if let Err(e) = r {
            log::warn!("ending session: {e}: {}", error_chain(&e));
            self.end_session("error");
        }
    }

    fn drain_pending(&mut self) {
        while let Some(s) = self.session.as_mut() {
            let Some(m) = s.next_pending() else { break };
            if let Err(e) = s.handle(&mut self.core, m) {
                log::warn!("ending session: {e}");
                self.end_session("error");
            }
            self.core.deliver_irqs(&mut self.irq_scratch);
        }
    }

    /// Serve until `stop` becomes readable (e.g. a signalfd for SIGTERM).
    pub fn run(&mut self, stop: Option<BorrowedFd<'_>>) -> Result<(), ServerError> {
        log::info!(
            "serving {} (control {})",
            self.cfg.socket.display(),
            self.ctl_path.display()
        );
        loop {
            self.drain_pending();
            let busy = !self.core.card.is_quiescent() && !self.core.card.is_dead();
            let (lst, ctl, sess, stp, ctls, rejs) = {
                let mut fds = vec![
                    PollFd::new(self.listener.as_fd(), PollFlags::POLLIN),
                    PollFd::new(self.ctl.as_fd(), PollFlags::POLLIN),
                ];
                let sess = self.session.as_ref().map(|s| {
                    fds.push(PollFd::new(s.conn.as_fd(), PollFlags::POLLIN));
                    fds.len() - 1
                });
                let stp = stop.map(|f| {
                    fds.push(PollFd::new(f, PollFlags::POLLIN));
                    fds.len() - 1
                });
                let base = fds.len();
                for c in &self.ctl_conns {
                    fds.push(PollFd::new(c.sock.as_fd(), PollFlags::POLLIN));
                }
                let rbase = fds.len();
                for (c, _) in &self.rejects {
                    fds.push(PollFd::new(c.as_fd(), PollFlags::POLLIN));
                }
                let timeout = if busy {
                    PollTimeout::ZERO
                } else if !self.rejects.is_empty() {
                    // Wake up to close second clients that never speak.
                    PollTimeout::from(100u8)
                } else {
                    PollTimeout::NONE
                };
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(ServerError::io("poll", "server sockets", e.into())),
                }
                let ready = |i: usize| fds[i].revents().is_some_and(|r| !r.is_empty());
                let ctls: Vec<bool> = (0..self.ctl_conns.len()).map(|i| ready(base + i)).collect();
                let rejs: Vec<bool> = (0..self.rejects.len()).map(|i| ready(rbase + i)).collect();
                (
                    ready(0),
                    ready(1),
                    sess.is_some_and(ready),
                    stp.is_some_and(ready),
                    ctls,
                    rejs,
                )
            };
            if stp {
                log::info!("stop requested");
                break;
            }
            if !self.rejects.is_empty() {
                self.serve_rejects(&rejs);
            }
            if lst {
                self.accept();
            }
            if ctl {
                match self.ctl.accept().and_then(|(s, _)| CtlConn::new(s)) {
                    Ok(c) => self.ctl_conns.push(c),
                    Err(e) => log::warn!("control accept: {e}"),
                }
            }
            let client = self.session.is_some();
            let mut keep = Vec::with_capacity(self.ctl_conns.len());
            for (i, mut c) in std::mem::take(&mut self.ctl_conns).into_iter().enumerate() {
                if !ctls.get(i).copied().unwrap_or(false) || c.service(&mut self.core, client) {
                    keep.push(c);
                }
            }
            self.ctl_conns = keep;
            if sess {
                self.serve_client();
            }
            self.core.deliver_irqs(&mut self.irq_scratch);
            if !self.core.card.is_quiescent() && !self.core.card.is_dead() {
                let slice = self.cfg.slice_cycles;
                if self.core.card.run(&mut self.core.iommu, slice) == RunOutcome::Dead {
                    log::warn!("the device died at cycle {}", self.core.card.cycles());
                }
                self.core.deliver_irqs(&mut self.irq_scratch);
            }
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.cfg.socket);
        let _ = std::fs::remove_file(&self.ctl_path);
    }
}

/// The pid of the process at the other end of `sock` (`SO_PEERCRED`).
fn peer_pid(sock: &UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(sock, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .and_then(|c| u32::try_from(c.pid()).ok())
        .filter(|&p| p != 0)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = String::new();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(&c.to_string());
        s.push_str("; ");
        cur = c.source();
    }
    s
}
