//! Typed payloads of every command, and the [`Request`] and [`Reply`] enums
//! that decode a received payload by its header's command.
//!
//! Layouts follow the spec's tables field for field; offsets are from the end
//! of the header and values are in host endianness. Decoding is strict: the
//! payload length comes from the header's message size and must be what the
//! command's table allows ([`Error::PayloadLength`]); counts that describe
//! trailing data must agree with it ([`Error::BadField`]).

use crate::caps::Capabilities;
use crate::consts::{io_fd, irq, region};
use crate::error::{Error, Expected, Result};
use crate::header::Command;

mod dispatch;
pub use dispatch::{Reply, Request};

/// Little helper that reads fixed fields from a payload whose length was
/// checked beforehand.
struct Rd<'a>(&'a [u8], usize);

impl Rd<'_> {
    fn u16(&mut self) -> u16 {
        let v = u16::from_ne_bytes(self.0[self.1..self.1 + 2].try_into().expect("checked"));
        self.1 += 2;
        v
    }
    fn u32(&mut self) -> u32 {
        let v = u32::from_ne_bytes(self.0[self.1..self.1 + 4].try_into().expect("checked"));
        self.1 += 4;
        v
    }
    fn u64(&mut self) -> u64 {
        let v = u64::from_ne_bytes(self.0[self.1..self.1 + 8].try_into().expect("checked"));
        self.1 += 8;
        v
    }
    fn rest(&self) -> &[u8] {
        &self.0[self.1..]
    }
}

fn put16(o: &mut Vec<u8>, v: u16) {
    o.extend_from_slice(&v.to_ne_bytes());
}
fn put32(o: &mut Vec<u8>, v: u32) {
    o.extend_from_slice(&v.to_ne_bytes());
}
fn put64(o: &mut Vec<u8>, v: u64) {
    o.extend_from_slice(&v.to_ne_bytes());
}

/// Context for decode errors: which command, request or reply, which message.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    /// The command.
    pub command: Command,
    /// Whether the payload is a reply.
    pub reply: bool,
    /// Message ID.
    pub msg_id: u16,
}

impl Ctx {
    fn check(&self, actual: usize, expected: Expected) -> Result<()> {
        let ok = match expected {
            Expected::Exactly(n) => actual == n,
            Expected::AtLeast(n) => actual >= n,
        };
        if ok {
            Ok(())
        } else {
            Err(Error::PayloadLength {
                command: self.command,
                kind: if self.reply { "reply" } else { "request" },
                msg_id: self.msg_id,
                expected,
                actual,
            })
        }
    }
    fn bad(&self, field: &'static str, reason: impl Into<String>) -> Error {
        Error::BadField {
            command: self.command,
            msg_id: self.msg_id,
            field,
            reason: reason.into(),
        }
    }
}

/// VERSION request and reply: 2-byte major, 2-byte minor, optional JSON data.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Version {
    /// Protocol major version.
    pub major: u16,
    /// Protocol minor version.
    pub minor: u16,
    /// The capabilities object; `None` sends no version data (all defaults).
    pub caps: Option<Capabilities>,
}

impl Version {
    /// The capabilities, defaults applied for an absent object.
    pub fn capabilities(&self) -> Capabilities {
        self.caps.clone().unwrap_or_default()
    }
    fn encode(&self, o: &mut Vec<u8>) {
        put16(o, self.major);
        put16(o, self.minor);
        if let Some(c) = &self.caps {
            o.extend_from_slice(&c.to_version_data());
        }
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(4))?;
        let mut r = Rd(p, 0);
        let (major, minor) = (r.u16(), r.u16());
        let caps = if r.rest().is_empty() {
            None
        } else {
            Some(Capabilities::from_version_data(cx.msg_id, r.rest())?)
        };
        Ok(Version { major, minor, caps })
    }
}

/// DMA_MAP request (32 bytes). The reply has no payload.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaMap {
    /// [`crate::consts::dma`] flags: readable, writeable.
    pub flags: u32,
    /// Offset into the attached fd; zero when no fd is attached.
    pub offset: u64,
    /// Base DMA address (IOVA).
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
}

impl DmaMap {
    /// Payload size.
    pub const SIZE: usize = 32;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, Self::SIZE as u32);
        put32(o, self.flags);
        put64(o, self.offset);
        put64(o, self.address);
        put64(o, self.size);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 4);
        Ok(DmaMap {
            flags: r.u32(),
            offset: r.u64(),
            address: r.u64(),
            size: r.u64(),
        })
    }
}

/// DMA_UNMAP request and reply (24 bytes; the reply echoes the request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaUnmap {
    /// argsz: the largest reply payload the sender accepts.
    pub argsz: u32,
    /// Unused in this protocol version.
    pub flags: u32,
    /// Base DMA address of the mapping.
    pub address: u64,
    /// Size of the mapping.
    pub size: u64,
}

impl DmaUnmap {
    /// Payload size.
    pub const SIZE: usize = 24;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, self.argsz);
        put32(o, self.flags);
        put64(o, self.address);
        put64(o, self.size);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(DmaUnmap {
            argsz: r.u32(),
            flags: r.u32(),
            address: r.u64(),
            size: r.u64(),
        })
    }
}

/// DEVICE_GET_INFO request and reply (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Request: largest reply accepted; reply: size of the full reply.
    pub argsz: u32,
    /// [`crate::consts::device`] flags (zero in a request).
    pub flags: u32,
    /// Number of regions (zero in a request).
    pub num_regions: u32,
    /// Number of IRQ types (zero in a request).
    pub num_irqs: u32,
}

impl DeviceInfo {
    /// Payload size.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, self.argsz);
        put32(o, self.flags);
        put32(o, self.num_regions);
        put32(o, self.num_irqs);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(DeviceInfo {
            argsz: r.u32(),
            flags: r.u32(),
            num_regions: r.u32(),
            num_irqs: r.u32(),
        })
    }
}

/// One area of a sparse mmap capability.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SparseArea {
    /// Offset within the region (added to the region's mmap offset).
    pub offset: u64,
    /// Size of the area.
    pub size: u64,
}

/// A region capability from the reply's capability chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RegionCap {
    /// `VFIO_REGION_INFO_CAP_SPARSE_MMAP`: the mappable areas.
    SparseMmap(Vec<SparseArea>),
    /// Any other capability, kept raw (body after the 8-byte cap header).
    Other {
        /// Capability ID.
        id: u16,
        /// Capability version.
        version: u16,
        /// Body bytes.
        body: Vec<u8>,
    },
}

impl RegionCap {
    fn encoded_len(&self) -> usize {
        8 + match self {
            RegionCap::SparseMmap(a) => 8 + 16 * a.len(),
            RegionCap::Other { body, .. } => body.len(),
        }
    }
}

/// DEVICE_GET_REGION_INFO request (32 bytes; only argsz and index are used).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionInfoRequest {
    /// Largest reply payload accepted (32 plus room for capabilities).
    pub argsz: u32,
    /// Region index.
    pub index: u32,
}

impl RegionInfoRequest {
    /// Payload size.
    pub const SIZE: usize = region::INFO_SIZE;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, self.argsz);
        put32(o, 0);
        put32(o, self.index);
        put32(o, 0);
        put64(o, 0);
        put64(o, 0);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        let argsz = r.u32();
        r.u32();
        Ok(RegionInfoRequest {
            argsz,
            index: r.u32(),
        })
    }
}

/// DEVICE_GET_REGION_INFO reply: the 32-byte region info and its capability
/// chain. For a region with [`region::FLAG_MMAP`] the reply carries an fd.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionInfo {
    /// Size of the full reply (fixed part plus capabilities). On encode this
    /// is computed; see [`RegionInfo::truncated_to`].
    pub argsz: u32,
    /// [`region`] flags. `FLAG_CAPS` is set on encode when `caps` is non-empty.
    pub flags: u32,
    /// Region index.
    pub index: u32,
    /// Offset of the first capability from the start of the payload (0: none).
    /// Computed on encode.
    pub cap_offset: u32,
    /// Region size.
    pub size: u64,
    /// mmap offset for the attached fd.
    pub offset: u64,
    /// Capabilities, in chain order.
    pub caps: Vec<RegionCap>,
}

impl RegionInfo {
    /// Payload size of the full reply including capabilities.
    pub fn full_size(&self) -> usize {
        region::INFO_SIZE + self.caps.iter().map(RegionCap::encoded_len).sum::<usize>()
    }

    /// The reply to send to a request whose argsz was `max`: if the full
    /// reply does not fit, only the fixed part is sent, with argsz set to the
    /// size needed, the CAPS flag set and no capabilities (the client retries
    /// with a larger argsz), as VFIO does.
    pub fn truncated_to(&self, max: u32) -> RegionInfo {
        let full = self.full_size() as u32;
        let mut r = self.clone();
        r.argsz = full;
        if full > max && !self.caps.is_empty() {
            r.caps.clear();
            r.flags |= region::FLAG_CAPS;
            r.cap_offset = 0;
        }
        r
    }

    fn encode(&self, o: &mut Vec<u8>) {
        let full = self.full_size() as u32;
        let argsz = self.argsz.max(full);
        let mut flags = self.flags;
        let cap_offset = if self.caps.is_empty() {
            0
        } else {
            flags |= region::FLAG_CAPS;
            region::INFO_SIZE as u32
        };
        put32(o, argsz);
        put32(o, flags);
        put32(o, self.index);
        put32(o, cap_offset);
        put64(o, self.size);
        put64(o, self.offset);
        let mut pos = region::INFO_SIZE;
        for (i, c) in self.caps.iter().enumerate() {
            let next = if i + 1 == self.caps.len() {
                0
            } else {
                pos + c.encoded_len()
            };
            match c {
                RegionCap::SparseMmap(areas) => {
                    put16(o, region::CAP_SPARSE_MMAP);
                    put16(o, region::CAP_SPARSE_MMAP_VERSION);
                    put32(o, next as u32);
                    put32(o, areas.len() as u32);
                    put32(o, 0);
                    for a in areas {
                        put64(o, a.offset);
                        put64(o, a.size);
                    }
                }
                RegionCap::Other { id, version, body } => {
                    put16(o, *id);
                    put16(o, *version);
                    put32(o, next as u32);
                    o.extend_from_slice(body);
                }
            }
            pos += c.encoded_len();
        }
    }

    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(region::INFO_SIZE))?;
        let mut r = Rd(p, 0);
        let mut info = RegionInfo {
            argsz: r.u32(),
            flags: r.u32(),
            index: r.u32(),
            cap_offset: r.u32(),
            size: r.u64(),
            offset: r.u64(),
            caps: Vec::new(),
        };
        let mut next = info.cap_offset as usize;
        // Every capability lies after the fixed part and after the previous
        // one, so the chain is finite and stays inside the payload.
        let mut min = region::INFO_SIZE;
        let mut end_of_caps = region::INFO_SIZE;
        if info.cap_offset != 0 && info.flags & region::FLAG_CAPS == 0 {
            return Err(cx.bad("cap_offset", "set without FLAG_CAPS"));
        }
        while next != 0 {
            if next < min || next + 8 > p.len() {
                return Err(cx.bad(
                    "cap_offset",
                    format!("capability at {next} outside [{min}, {})", p.len()),
                ));
            }
            let mut h = Rd(p, next);
            let (id, version, nx) = (h.u16(), h.u16(), h.u32() as usize);
            let body_end = if nx == 0 { p.len() } else { nx };
            if body_end < next + 8 || body_end > p.len() {
                return Err(cx.bad("next", format!("next capability at {nx} is out of order")));
            }
            let body = &p[next + 8..body_end];
            let cap = if id == region::CAP_SPARSE_MMAP {
                if body.len() < 8 {
                    return Err(cx.bad("sparse mmap", "capability shorter than its header"));
                }
                let mut b = Rd(body, 0);
                let n = b.u32() as usize;
                b.u32();
                let need = n
                    .checked_mul(16)
                    .and_then(|x| x.checked_add(8))
                    .ok_or_else(|| cx.bad("nr_areas", "too large"))?;
                if body.len() < need {
                    return Err(cx.bad(
                        "nr_areas",
                        format!("{n} areas need {need} bytes, capability has {}", body.len()),
                    ));
                }
                let areas = (0..n)
                    .map(|_| SparseArea {
                        offset: b.u64(),
                        size: b.u64(),
                    })
                    .collect();
                end_of_caps = end_of_caps.max(next + 8 + need);
                RegionCap::SparseMmap(areas)
            } else {
                end_of_caps = end_of_caps.max(body_end);
                RegionCap::Other {
                    id,
                    version,
                    body: body.to_vec(),
                }
            };
            info.caps.push(cap);
            min = next + 8;
            next = nx;
        }
        if info.cap_offset == 0 {
            cx.check(p.len(), Expected::Exactly(region::INFO_SIZE))?;
        } else if end_of_caps != p.len() {
            cx.check(p.len(), Expected::Exactly(end_of_caps))?;
        }
        Ok(info)
    }
}

/// DEVICE_GET_REGION_IO_FDS request (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionIoFdsRequest {
    /// Largest reply payload accepted.
    pub argsz: u32,
    /// Region index.
    pub index: u32,
}

impl RegionIoFdsRequest {
    /// Payload size.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, self.argsz);
        put32(o, 0);
        put32(o, self.index);
        put32(o, 0);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        let argsz = r.u32();
        r.u32();
        Ok(RegionIoFdsRequest {
            argsz,
            index: r.u32(),
        })
    }
}

/// One sub-region of a REGION_IO_FDS reply (40 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SubRegionIoFd {
    /// Offset of the sub-region within the region.
    pub offset: u64,
    /// Size of the sub-region.
    pub size: u64,
    /// Index of the fd in the reply's fd array.
    pub fd_index: u32,
    /// [`io_fd`] type.
    pub kind: u32,
    /// Type-specific flags.
    pub flags: u32,
    /// datamatch (ioeventfd) or user_data (ioregionfd).
    pub data: u64,
}

/// DEVICE_GET_REGION_IO_FDS reply.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionIoFds {
    /// Size of the full reply; computed on encode.
    pub argsz: u32,
    /// Region index.
    pub index: u32,
    /// The sub-regions.
    pub subregions: Vec<SubRegionIoFd>,
}

impl RegionIoFds {
    fn encode(&self, o: &mut Vec<u8>) {
        put32(
            o,
            (16 + io_fd::SUBREGION_SIZE * self.subregions.len()) as u32,
        );
        put32(o, 0);
        put32(o, self.index);
        put32(o, self.subregions.len() as u32);
        for s in &self.subregions {
            put64(o, s.offset);
            put64(o, s.size);
            put32(o, s.fd_index);
            put32(o, s.kind);
            put32(o, s.flags);
            put32(o, 0);
            put64(o, s.data);
        }
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(16))?;
        let mut r = Rd(p, 0);
        let argsz = r.u32();
        r.u32();
        let index = r.u32();
        let count = r.u32() as usize;
        if count == 0 {
            cx.check(p.len(), Expected::Exactly(16))?;
        }
        let body = p.len() - 16;
        if count != 0 && (body % count != 0 || body / count < io_fd::SUBREGION_SIZE) {
            return Err(cx.bad("count", format!("{count} sub-regions in {body} bytes")));
        }
        let stride = body.checked_div(count).unwrap_or(0);
        let subregions = (0..count)
            .map(|i| {
                let mut s = Rd(p, 16 + i * stride);
                let (offset, size, fd_index, kind, flags) =
                    (s.u64(), s.u64(), s.u32(), s.u32(), s.u32());
                s.u32();
                SubRegionIoFd {
                    offset,
                    size,
                    fd_index,
                    kind,
                    flags,
                    data: s.u64(),
                }
            })
            .collect();
        Ok(RegionIoFds {
            argsz,
            index,
            subregions,
        })
    }
}

/// DEVICE_GET_IRQ_INFO request and reply (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IrqInfo {
    /// Request: largest reply accepted; reply: full reply size (16).
    pub argsz: u32,
    /// [`irq`] info flags (zero in a request).
    pub flags: u32,
    /// IRQ index (e.g. [`irq::PCI_MSIX`]).
    pub index: u32,
    /// Number of interrupts of this type (zero in a request).
    pub count: u32,
}

impl IrqInfo {
    /// Payload size.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, self.argsz);
        put32(o, self.flags);
        put32(o, self.index);
        put32(o, self.count);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(IrqInfo {
            argsz: r.u32(),
            flags: r.u32(),
            index: r.u32(),
            count: r.u32(),
        })
    }
}

/// DEVICE_SET_IRQS request (20 bytes, plus `count` bool bytes with
/// [`irq::SET_DATA_BOOL`]). Eventfds for [`irq::SET_DATA_EVENTFD`] travel as
/// the message's fds. The reply has no payload.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IrqSet {
    /// One data-type and one action flag ([`irq`]).
    pub flags: u32,
    /// IRQ index.
    pub index: u32,
    /// First sub-index.
    pub start: u32,
    /// Number of sub-indexes.
    pub count: u32,
    /// With DATA_BOOL: one byte per sub-index; empty otherwise.
    pub bools: Vec<u8>,
}

impl IrqSet {
    /// Size of the fixed part.
    pub const SIZE: usize = 20;
    fn encode(&self, o: &mut Vec<u8>) {
        put32(o, (Self::SIZE + self.bools.len()) as u32);
        put32(o, self.flags);
        put32(o, self.index);
        put32(o, self.start);
        put32(o, self.count);
        o.extend_from_slice(&self.bools);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(Self::SIZE))?;
        let mut r = Rd(p, 4);
        let (flags, index, start, count) = (r.u32(), r.u32(), r.u32(), r.u32());
        let data = flags & irq::SET_DATA_TYPE_MASK;
        let action = flags & irq::SET_ACTION_TYPE_MASK;
        if data.count_ones() != 1 || action.count_ones() != 1 {
            return Err(cx.bad(
                "flags",
                format!("{flags:#x}: need exactly one data type and one action"),
            ));
        }
        if flags & !(irq::SET_DATA_TYPE_MASK | irq::SET_ACTION_TYPE_MASK) != 0 {
            return Err(cx.bad("flags", format!("{flags:#x}: unknown bits")));
        }
        let want = if data == irq::SET_DATA_BOOL {
            Self::SIZE + count as usize
        } else {
            Self::SIZE
        };
        cx.check(p.len(), Expected::Exactly(want))?;
        Ok(IrqSet {
            flags,
            index,
            start,
            count,
            bools: r.rest().to_vec(),
        })
    }
}

/// REGION_READ request and REGION_WRITE reply (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegionAccess {
    /// Offset into the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// Bytes transferred.
    pub count: u32,
}

impl RegionAccess {
    /// Payload size.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put64(o, self.offset);
        put32(o, self.region);
        put32(o, self.count);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(RegionAccess {
            offset: r.u64(),
            region: r.u32(),
            count: r.u32(),
        })
    }
}

/// REGION_READ reply and REGION_WRITE request: 16 bytes plus `count` bytes
/// of data. `count` is the data's length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RegionData {
    /// Offset into the region.
    pub offset: u64,
    /// Region index.
    pub region: u32,
    /// The data.
    pub data: Vec<u8>,
}

impl RegionData {
    /// Size of the fixed part.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put64(o, self.offset);
        put32(o, self.region);
        put32(o, self.data.len() as u32);
        o.extend_from_slice(&self.data);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(Self::SIZE))?;
        let mut r = Rd(p, 0);
        let (offset, region, count) = (r.u64(), r.u32(), r.u32() as usize);
        cx.check(p.len(), Expected::Exactly(Self::SIZE + count))?;
        Ok(RegionData {
            offset,
            region,
            data: r.rest().to_vec(),
        })
    }
}

/// DMA_READ request (16 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaAccess {
    /// Client DMA address.
    pub address: u64,
    /// Bytes to read.
    pub count: u64,
}

impl DmaAccess {
    /// Payload size.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put64(o, self.address);
        put64(o, self.count);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(DmaAccess {
            address: r.u64(),
            count: r.u64(),
        })
    }
}

/// DMA_READ reply and DMA_WRITE request: 8-byte address, 8-byte count, data.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DmaData {
    /// Client DMA address.
    pub address: u64,
    /// The data (`count` is its length).
    pub data: Vec<u8>,
}

impl DmaData {
    /// Size of the fixed part.
    pub const SIZE: usize = 16;
    fn encode(&self, o: &mut Vec<u8>) {
        put64(o, self.address);
        put64(o, self.data.len() as u64);
        o.extend_from_slice(&self.data);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::AtLeast(Self::SIZE))?;
        let mut r = Rd(p, 0);
        let address = r.u64();
        let count = r.u64();
        let want = usize::try_from(count)
            .ok()
            .and_then(|c| c.checked_add(Self::SIZE))
            .ok_or_else(|| cx.bad("count", format!("{count} is too large")))?;
        cx.check(p.len(), Expected::Exactly(want))?;
        Ok(DmaData {
            address,
            data: r.rest().to_vec(),
        })
    }
}

/// DMA_WRITE reply: 8-byte address and a **4-byte** count (12 bytes), as the
/// spec's table has it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DmaWriteReply {
    /// Client DMA address.
    pub address: u64,
    /// Bytes written.
    pub count: u32,
}

impl DmaWriteReply {
    /// Payload size.
    pub const SIZE: usize = 12;
    fn encode(&self, o: &mut Vec<u8>) {
        put64(o, self.address);
        put32(o, self.count);
    }
    fn decode(cx: Ctx, p: &[u8]) -> Result<Self> {
        cx.check(p.len(), Expected::Exactly(Self::SIZE))?;
        let mut r = Rd(p, 0);
        Ok(DmaWriteReply {
            address: r.u64(),
            count: r.u32(),
        })
    }
}
