//! The driver's error types: [`Error`] for calls, [`FenceError`] for the
//! final status of a fence (F2), [`BackendError`] for the transport layer.

use std::io;

/// What a transport (kernel VFIO or vfio-user) reports.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The device named cannot be opened: no such socket, PCI device, group.
    #[error("cannot open {device}")]
    Open {
        /// The device as named by the caller (`sim:PATH` or a PCI address).
        device: String,
        /// What failed.
        #[source]
        source: io::Error,
    },
    /// The peer answered a request with an error reply.
    #[error("{device}: {op} refused by the device (errno {errno})")]
    Refused {
        /// The device.
        device: String,
        /// The operation, e.g. `DMA_MAP iova 0x1000 size 0x2000`.
        op: String,
        /// The errno of the error reply.
        errno: i32,
    },
    /// The transport broke: the simulator died, the socket closed, the
    /// device stopped answering. Every later call fails the same way.
    #[error("{device}: device lost during {op}")]
    Lost {
        /// The device.
        device: String,
        /// The operation that found it lost.
        op: String,
        /// The cause, when there is one.
        #[source]
        source: Option<io::Error>,
    },
    /// A protocol violation by the peer.
    #[error("{device}: protocol error during {op}")]
    Protocol {
        /// The device.
        device: String,
        /// The operation.
        op: String,
        /// The decoding error.
        #[source]
        source: fdma_vfio_user::Error,
    },
    /// Arguments the transport cannot carry out (range, alignment, limits).
    #[error("{device}: invalid {op}: {why}")]
    Invalid {
        /// The device.
        device: String,
        /// The operation.
        op: String,
        /// Why it is invalid.
        why: String,
    },
    /// The device offers no reset of this kind (D4).
    #[error("{device}: reset unsupported")]
    ResetUnsupported {
        /// The device.
        device: String,
    },
    /// A system call of the transport failed.
    #[error("{device}: {op} failed")]
    Sys {
        /// The device.
        device: String,
        /// The operation.
        op: String,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The handle is used in a forked child (C10).
    #[error("{device}: handle used in a forked child process")]
    Forked {
        /// The device.
        device: String,
    },
    /// The lab host is not ready for VFIO on this device: IOMMU off, wrong
    /// driver, group not viable, no permission. The source says which and
    /// what to do.
    #[error("{device}: not ready for VFIO")]
    Preflight {
        /// The PCI address.
        device: String,
        /// What is wrong.
        #[source]
        source: crate::pci::PciError,
    },
    /// Another process (or another container of this one) has the device
    /// or its IOMMU group open, or the simulator serves another client.
    #[error("{device}: in use by another process")]
    Busy {
        /// The PCI address, or `sim:PATH`.
        device: String,
        /// The kernel's answer, or the simulator's refusal naming the
        /// client it serves when it can tell.
        #[source]
        source: io::Error,
    },
    /// Pinning for DMA would exceed the locked-memory limit: the process
    /// lacks CAP_IPC_LOCK and RLIMIT_MEMLOCK is too low (D5, C6).
    #[error(
        "{device}: cannot pin {bytes} more bytes for DMA: RLIMIT_MEMLOCK is {limit} bytes \
         (raise it with `ulimit -l` or limits.conf, or see `fdma bind --user`)"
    )]
    Memlock {
        /// The device.
        device: String,
        /// Bytes the refused mapping needed.
        bytes: u64,
        /// The soft limit in bytes.
        limit: u64,
    },
}

impl BackendError {
    /// Whether this error means the device is gone for good.
    pub fn is_lost(&self) -> bool {
        matches!(self, BackendError::Lost { .. })
    }
}

/// The error status a fence signals with (F2). Copy, so that signalling
/// never allocates (F10).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FenceError {
    /// The engine halted on a descriptor of this job with an error code
    /// (`fdma_hw::desc::err`), other than a read fault.
    #[error("channel {channel} seqno {seqno}: device error {code} ({name}) at descriptor {index}", name = fdma_hw::desc::err::name(*code))]
    Device {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
        /// `STATUS.ERR` code.
        code: u8,
        /// Free-running descriptor index that failed.
        index: u32,
    },
    /// A host read of this job hit an unmapped or read-protected IOVA (D3, F4).
    #[error("channel {channel} seqno {seqno}: IOMMU fault (read) at descriptor {index}")]
    IommuFault {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
        /// Free-running descriptor index that failed.
        index: u32,
    },
    /// The watchdog found the channel making no progress (F3, D1).
    #[error(
        "channel {channel} seqno {seqno}: channel hung (no progress for {cycles} device cycles)"
    )]
    Hung {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
        /// Device cycles without progress.
        cycles: u64,
    },
    /// The job was cancelled before it completed: an earlier job of the
    /// channel failed, the channel was reset, or the device was closed.
    #[error("channel {channel} seqno {seqno}: cancelled")]
    Cancelled {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
    },
    /// The device was lost (simulator killed, link down, device removed).
    #[error("channel {channel} seqno {seqno}: device lost")]
    DeviceLost {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
    },
    /// The memory of the job was invalidated while it ran (C3).
    #[error("channel {channel} seqno {seqno}: memory invalidated during DMA")]
    StaleMemory {
        /// Channel.
        channel: u8,
        /// Job seqno.
        seqno: u64,
    },
}

impl FenceError {
    /// The channel of the failed job.
    pub fn channel(&self) -> u8 {
        match *self {
            FenceError::Device { channel, .. }
            | FenceError::IommuFault { channel, .. }
            | FenceError::Hung { channel, .. }
            | FenceError::Cancelled { channel, .. }
            | FenceError::DeviceLost { channel, .. }
            | FenceError::StaleMemory { channel, .. } => channel,
        }
    }

    /// The seqno of the failed job.
    pub fn seqno(&self) -> u64 {
        match *self {
            FenceError::Device { seqno, .. }
            | FenceError::IommuFault { seqno, .. }
            | FenceError::Hung { seqno, .. }
            | FenceError::Cancelled { seqno, .. }
            | FenceError::DeviceLost { seqno, .. }
            | FenceError::StaleMemory { seqno, .. } => seqno,
        }
    }
}

/// Errors of the driver's API.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The transport failed.
    #[error(transparent)]
    Backend(#[from] BackendError),
    /// The device string names nothing fdma can open.
    #[error("bad device name {name:?}: {why}")]
    DeviceName {
        /// The name given.
        name: String,
        /// What is expected.
        why: &'static str,
    },
    /// The device is not an fdma engine this driver supports.
    #[error("{device}: {why}")]
    Identity {
        /// The device.
        device: String,
        /// What did not match.
        why: String,
    },
    /// A device operation did not finish within its device-time bound (D1).
    #[error("{device}: {what} did not finish within {cycles} device cycles")]
    DeviceTimeout {
        /// The device.
        device: String,
        /// What was waited for.
        what: &'static str,
        /// The bound.
        cycles: u64,
    },
    /// The device is lost; every later call fails the same way.
    #[error("{device}: device lost")]
    DeviceLost {
        /// The device.
        device: String,
    },
    /// The device was closed.
    #[error("{device}: device closed")]
    Closed {
        /// The device.
        device: String,
    },
    /// Invalid arguments; nothing was changed.
    #[error("invalid argument: {0}")]
    Invalid(String),
    /// The channel is halted or hung; reset it to restore service (D4).
    #[error("channel {channel} is {state}; reset it to restore service")]
    ChannelDown {
        /// Channel.
        channel: u8,
        /// `halted (error N)`, `hung`, `lost`.
        state: String,
    },
    /// The ring is full and the caller asked not to wait.
    #[error("channel {channel}: ring full ({in_flight} descriptors in flight)")]
    RingFull {
        /// Channel.
        channel: u8,
        /// Descriptors in flight.
        in_flight: u32,
    },
    /// Out of IOVA space or DMA memory.
    #[error("out of {what}: {requested} bytes requested")]
    OutOfSpace {
        /// `IOVA space`, `DMA memory`.
        what: &'static str,
        /// Bytes asked for.
        requested: u64,
    },
    /// The registration cache cannot take a registration without going
    /// over a limit (C6), even after evicting what it could.
    #[error("registration refused: {requested} {what} requested, the limit is {limit}")]
    CacheLimit {
        /// Which limit.
        what: &'static str,
        /// The limit.
        limit: u64,
        /// What the registration would have needed.
        requested: u64,
    },
    /// An explicit registration used by a job was deregistered or
    /// invalidated (C2, R4).
    #[error("registration {addr:#x}+{len:#x} is no longer valid (deregistered or invalidated)")]
    StaleRegistration {
        /// Start of the registered range.
        addr: u64,
        /// Its length.
        len: u64,
    },
    /// The handle is used in a forked child (C10).
    #[error("fdma handle used in a forked child process")]
    Forked,
    /// The device was opened for inspection only.
    #[error("{device}: opened for inspection only; {what} needs a full open")]
    InspectOnly {
        /// The device.
        device: String,
        /// What was attempted.
        what: &'static str,
    },
    /// The register is read-only, or the write is not allowed in an
    /// inspection session.
    #[error("register {name}: {why}")]
    Register {
        /// Register name.
        name: String,
        /// Why the access is refused.
        why: &'static str,
    },
    /// A wait timed out (the fence is unchanged, F5).
    #[error("timed out after {0:?}")]
    Timeout(std::time::Duration),
    /// A fence signalled an error.
    #[error(transparent)]
    Fence(#[from] FenceError),
    /// A system call failed.
    #[error("{op} failed")]
    Sys {
        /// The operation.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
}

/// Result of the driver's API.
pub type Result<T, E = Error> = std::result::Result<T, E>;
