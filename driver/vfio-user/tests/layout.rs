//! Byte-layout tests built from the spec's tables, round trips, and
//! rejection of payloads of the wrong length.

use fdma_vfio_user::consts::{dma, irq, region};
use fdma_vfio_user::*;

fn ne16(v: u16) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn ne32(v: u32) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn ne64(v: u64) -> Vec<u8> {
    v.to_ne_bytes().to_vec()
}
fn cat(parts: &[Vec<u8>]) -> Vec<u8> {
    parts.concat()
}

fn hdr(command: Command, id: u16, payload: usize, reply: bool) -> Header {
    if reply {
        Header::reply(id, command as u16, payload)
    } else {
        Header::command(id, command, payload, false)
    }
}

fn req_round_trip(r: Request) -> Vec<u8> {
    let p = r.encode_payload();
    let h = hdr(r.command().unwrap(), 7, p.len(), false);
    assert_eq!(Request::decode(&h, &p).unwrap(), r);
    p
}

fn reply_round_trip(r: Reply) -> Vec<u8> {
    let p = r.encode_payload();
    let h = hdr(r.command(), 7, p.len(), true);
    assert_eq!(Reply::decode(&h, &p).unwrap(), r);
    p
}

fn assert_len_error(res: Result<impl std::fmt::Debug>, actual: usize) {
    match res {
        Err(Error::PayloadLength { actual: a, .. }) => assert_eq!(a, actual),
        other => panic!("expected a payload length error, got {other:?}"),
    }
}

#[test]
fn header_bytes() {
    let h = Header {
        msg_id: 0x1234,
        command: 9,
        msg_size: 32,
        flags: flags::TYPE_REPLY | flags::ERROR,
        error: 22,
    };
    let b = h.to_bytes();
    let want = cat(&[ne16(0x1234), ne16(9), ne32(32), ne32(0x21), ne32(22)]);
    assert_eq!(b.to_vec(), want);
    assert_eq!(Header::from_bytes(&b).unwrap(), h);
    assert!(h.is_reply() && h.is_error() && !h.no_reply());
    let c = Header::command(1, Command::RegionWrite, 20, true);
    assert_eq!(c.flags, flags::NO_REPLY);
    assert_eq!(c.msg_size, 36);
    // Size below the header, and a type that is neither command nor reply.
    let mut bad = b;
    bad[4..8].copy_from_slice(&15u32.to_ne_bytes());
    assert!(matches!(
        Header::from_bytes(&bad),
        Err(Error::BadHeader { .. })
    ));
    let mut bad = b;
    bad[8..12].copy_from_slice(&2u32.to_ne_bytes());
    assert!(matches!(
        Header::from_bytes(&bad),
        Err(Error::BadHeader { .. })
    ));
    let e = Header::error_reply(5, 2, libc::EEXIST);
    assert_eq!(e.msg_size, 16);
    assert_eq!(e.error, libc::EEXIST as u32);
}

#[test]
fn command_numbers() {
    let want = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 15, 16, 17, 18];
    for (c, n) in Command::ALL.iter().zip(want) {
        assert_eq!(*c as u16, n);
        assert_eq!(Command::from_u16(n), Some(*c));
    }
    assert_eq!(Command::from_u16(14), None);
}

#[test]
fn dma_map_and_unmap_layout() {
    let m = DmaMap {
        flags: dma::FLAG_READ | dma::FLAG_WRITE,
        offset: 0x1000,
        address: 0xdead_0000,
        size: 0x20_0000,
    };
    let p = req_round_trip(Request::DmaMap(m));
    assert_eq!(
        p,
        cat(&[
            ne32(32),
            ne32(3),
            ne64(0x1000),
            ne64(0xdead_0000),
            ne64(0x20_0000)
        ])
    );
    assert_eq!(reply_round_trip(Reply::DmaMap), Vec::<u8>::new());
    let u = DmaUnmap {
        argsz: 24,
        flags: 0,
        address: 0xdead_0000,
        size: 0x20_0000,
    };
    let p = req_round_trip(Request::DmaUnmap(u));
    assert_eq!(
        p,
        cat(&[ne32(24), ne32(0), ne64(0xdead_0000), ne64(0x20_0000)])
    );
    assert_eq!(reply_round_trip(Reply::DmaUnmap(u)), p);
    // Short and long payloads are rejected.
    let h = hdr(Command::DmaMap, 1, 31, false);
    assert_len_error(Request::decode(&h, &[0; 31]), 31);
    assert_len_error(Request::decode(&h, &[0; 33]), 33);
    assert_len_error(Request::decode(&h, &[0; 23]), 23);
    let h = hdr(Command::DmaUnmap, 1, 25, false);
    assert_len_error(Request::decode(&h, &[0; 25]), 25);
    let h = hdr(Command::DmaMap, 1, 4, true);
    assert_len_error(Reply::decode(&h, &[0; 4]), 4);
}

#[test]
fn region_read_write_layout() {
    let rd = RegionAccess {
        offset: 0x1000c,
        region: 0,
        count: 4,
    };
    let p = req_round_trip(Request::RegionRead(rd));
    assert_eq!(p, cat(&[ne64(0x1000c), ne32(0), ne32(4)]));
    let data = RegionData {
        offset: 0x1000c,
        region: 0,
        data: vec![1, 2, 3, 4],
    };
    let p = reply_round_trip(Reply::RegionRead(data.clone()));
    assert_eq!(p, cat(&[ne64(0x1000c), ne32(0), ne32(4), vec![1, 2, 3, 4]]));
    assert_eq!(req_round_trip(Request::RegionWrite(data)), p);
    assert_eq!(
        reply_round_trip(Reply::RegionWrite(rd)),
        cat(&[ne64(0x1000c), ne32(0), ne32(4)])
    );
    // count disagreeing with the data is a length error.
    let mut bad = p.clone();
    bad.push(9);
    let h = hdr(Command::RegionWrite, 3, bad.len(), false);
    assert_len_error(Request::decode(&h, &bad), 21);
    let h = hdr(Command::RegionRead, 3, 15, false);
    assert_len_error(Request::decode(&h, &p[..15]), 15);
    let h = hdr(Command::RegionRead, 3, 17, false);
    assert_len_error(Request::decode(&h, &[0; 17]), 17);
}

#[test]
fn dma_read_write_layout() {
    let p = req_round_trip(Request::DmaRead(DmaAccess {
        address: 0x4000,
        count: 3,
    }));
    assert_eq!(p, cat(&[ne64(0x4000), ne64(3)]));
    let d = DmaData {
        address: 0x4000,
        data: vec![7, 8, 9],
    };
    let p = reply_round_trip(Reply::DmaRead(d.clone()));
    assert_eq!(p, cat(&[ne64(0x4000), ne64(3), vec![7, 8, 9]]));
    assert_eq!(req_round_trip(Request::DmaWrite(d)), p);
    // The DMA_WRITE reply's count is 4 bytes: 12 bytes in all.
    let p = reply_round_trip(Reply::DmaWrite(DmaWriteReply {
        address: 0x4000,
        count: 3,
    }));
    assert_eq!(p, cat(&[ne64(0x4000), ne32(3)]));
    assert_eq!(p.len(), 12);
    let h = hdr(Command::DmaWrite, 1, 16, true);
    assert_len_error(Reply::decode(&h, &[0; 16]), 16);
    let h = hdr(Command::DmaRead, 1, 18, true);
    let mut short = cat(&[ne64(0x4000), ne64(3), vec![1, 2]]);
    assert_len_error(Reply::decode(&h, &short), 18);
    short.extend([3, 4]);
    assert_len_error(Reply::decode(&h, &short), 20);
}

#[test]
fn set_irqs_layout() {
    let s = IrqSet {
        flags: irq::SET_DATA_EVENTFD | irq::SET_ACTION_TRIGGER,
        index: irq::PCI_MSIX,
        start: 0,
        count: 5,
        bools: vec![],
    };
    let p = req_round_trip(Request::DeviceSetIrqs(s));
    assert_eq!(p, cat(&[ne32(20), ne32(0x24), ne32(2), ne32(0), ne32(5)]));
    let b = IrqSet {
        flags: irq::SET_DATA_BOOL | irq::SET_ACTION_MASK,
        index: irq::PCI_MSIX,
        start: 1,
        count: 2,
        bools: vec![1, 0],
    };
    let p = req_round_trip(Request::DeviceSetIrqs(b));
    assert_eq!(
        p,
        cat(&[ne32(22), ne32(0xa), ne32(2), ne32(1), ne32(2), vec![1, 0]])
    );
    let h = hdr(Command::DeviceSetIrqs, 1, 21, false);
    assert_len_error(Request::decode(&h, &p[..21]), 21);
    // Two data types at once is a field error.
    let mut two = p.clone();
    two[4..8].copy_from_slice(&(irq::SET_DATA_BOOL | irq::SET_DATA_NONE | 8).to_ne_bytes());
    assert!(matches!(
        Request::decode(&h, &two),
        Err(Error::BadField { field: "flags", .. })
    ));
    assert_eq!(reply_round_trip(Reply::DeviceSetIrqs), Vec::<u8>::new());
    let i = IrqInfo {
        argsz: 16,
        flags: irq::INFO_EVENTFD | irq::INFO_MASKABLE,
        index: irq::PCI_MSIX,
        count: 5,
    };
    assert_eq!(
        reply_round_trip(Reply::DeviceGetIrqInfo(i)),
        cat(&[ne32(16), ne32(3), ne32(2), ne32(5)])
    );
}

#[test]
fn region_info_with_sparse_mmap() {
    let req = req_round_trip(Request::DeviceGetRegionInfo(RegionInfoRequest {
        argsz: 64,
        index: 2,
    }));
    assert_eq!(
        req,
        cat(&[ne32(64), ne32(0), ne32(2), ne32(0), ne64(0), ne64(0)])
    );
    let info = RegionInfo {
        argsz: 0,
        flags: region::FLAG_READ | region::FLAG_WRITE | region::FLAG_MMAP,
        index: 2,
        cap_offset: 0,
        size: 1 << 28,
        offset: 0,
        caps: vec![RegionCap::SparseMmap(vec![SparseArea {
            offset: 0,
            size: 1 << 28,
        }])],
    };
    let p = info.encode_reply();
    let want = cat(&[
        ne32(64),
        ne32(0xf),
        ne32(2),
        ne32(32),
        ne64(1 << 28),
        ne64(0),
        // cap header: id 1 (sparse mmap), version 1, next 0
        ne16(1),
        ne16(1),
        ne32(0),
        // nr_areas, reserved, one area
        ne32(1),
        ne32(0),
        ne64(0),
        ne64(1 << 28),
    ]);
    assert_eq!(p, want);
    let h = hdr(Command::DeviceGetRegionInfo, 2, p.len(), true);
    let Reply::DeviceGetRegionInfo(back) = Reply::decode(&h, &p).unwrap() else {
        panic!()
    };
    assert_eq!(back.caps, info.caps);
    assert_eq!(back.cap_offset, 32);
    assert_eq!(back.argsz, 64);
    // A too-small argsz gets the fixed part with the size needed.
    let t = info.truncated_to(32);
    let p = Reply::DeviceGetRegionInfo(t).encode_payload();
    assert_eq!(p.len(), 32);
    assert_eq!(&p[0..4], &ne32(64)[..]);
    // A chain pointing outside the payload is rejected.
    let mut bad = want.clone();
    bad[12..16].copy_from_slice(&100u32.to_ne_bytes());
    assert!(matches!(
        Reply::decode(&h, &bad),
        Err(Error::BadField { .. })
    ));
    // nr_areas larger than the capability.
    let mut bad = want.clone();
    bad[40..44].copy_from_slice(&2u32.to_ne_bytes());
    assert!(Reply::decode(&h, &bad).is_err());
    let h = hdr(Command::DeviceGetRegionInfo, 2, 31, false);
    assert_len_error(Request::decode(&h, &req[..31]), 31);
}

trait EncodeReply {
    fn encode_reply(&self) -> Vec<u8>;
}
impl EncodeReply for RegionInfo {
    fn encode_reply(&self) -> Vec<u8> {
        Reply::DeviceGetRegionInfo(self.clone()).encode_payload()
    }
}

#[test]
fn device_info_and_reset() {
    let d = DeviceInfo {
        argsz: 16,
        flags: consts::device::FLAG_RESET | consts::device::FLAG_PCI,
        num_regions: 9,
        num_irqs: 5,
    };
    assert_eq!(
        reply_round_trip(Reply::DeviceGetInfo(d)),
        cat(&[ne32(16), ne32(3), ne32(9), ne32(5)])
    );
    assert_eq!(req_round_trip(Request::DeviceReset), Vec::<u8>::new());
    let h = hdr(Command::DeviceReset, 1, 1, false);
    assert_len_error(Request::decode(&h, &[0]), 1);
    let h = hdr(Command::DeviceGetInfo, 1, 12, false);
    assert_len_error(Request::decode(&h, &[0; 12]), 12);
}

#[test]
fn region_io_fds_round_trip() {
    req_round_trip(Request::DeviceGetRegionIoFds(RegionIoFdsRequest {
        argsz: 256,
        index: 0,
    }));
    let r = RegionIoFds {
        argsz: 56,
        index: 0,
        subregions: vec![SubRegionIoFd {
            offset: 0x100c,
            size: 4,
            fd_index: 0,
            kind: consts::io_fd::TYPE_IOEVENTFD,
            flags: 1,
            data: 5,
        }],
    };
    let p = reply_round_trip(Reply::DeviceGetRegionIoFds(r));
    assert_eq!(p.len(), 16 + 40);
}

#[test]
fn version_json_and_defaults() {
    // No version data at all: every default.
    let p = cat(&[ne16(0), ne16(1)]);
    let h = hdr(Command::Version, 0, 4, false);
    let Request::Version(v) = Request::decode(&h, &p).unwrap() else {
        panic!()
    };
    assert_eq!((v.major, v.minor), (0, 1));
    let c = v.capabilities();
    assert_eq!(c.max_msg_fds(), 1);
    assert_eq!(c.max_data_xfer_size(), 1 << 20);
    assert_eq!(c.max_dma_maps(), 65535);
    assert_eq!(c.pgsizes(), 4096);
    assert!(!c.twin_socket_supported());

    // Explicit JSON with a NUL terminator, an unknown capability and no max_msg_fds.
    let json = br#"{"capabilities":{"max_data_xfer_size":4096,"pgsizes":4096,"twin_socket":{"supported":true},"migration":{"pgsize":4096}}}"#;
    let p = cat(&[ne16(0), ne16(1), json.to_vec(), vec![0]]);
    let h = hdr(Command::Version, 0, p.len(), false);
    let Request::Version(v) = Request::decode(&h, &p).unwrap() else {
        panic!()
    };
    let c = v.capabilities();
    assert_eq!(c.max_msg_fds(), 1, "omitted max_msg_fds defaults to 1");
    assert_eq!(c.max_data_xfer_size(), 4096);
    assert!(c.twin_socket_supported());
    assert_eq!(c.twin_socket_fd_index(), None);
    assert!(c.other.contains_key("migration"));

    // Encoding: the capabilities object, NUL-terminated, and round trip.
    let caps = Capabilities {
        max_msg_fds: Some(8),
        twin_socket: Some(TwinSocket {
            supported: Some(true),
            fd_index: Some(0),
        }),
        ..Default::default()
    };
    let p = req_round_trip(Request::Version(Version {
        major: 0,
        minor: 1,
        caps: Some(caps.clone()),
    }));
    assert_eq!(*p.last().unwrap(), 0);
    let text = std::str::from_utf8(&p[4..p.len() - 1]).unwrap();
    let j: serde_json::Value = serde_json::from_str(text).unwrap();
    assert_eq!(j["capabilities"]["max_msg_fds"], 8);
    assert_eq!(j["capabilities"]["twin_socket"]["fd_index"], 0);
    assert_eq!(caps.twin_socket_fd_index(), Some(0));

    // Garbage JSON and short payloads are rejected.
    let p = cat(&[ne16(0), ne16(1), b"{nope".to_vec(), vec![0]]);
    let h = hdr(Command::Version, 0, p.len(), false);
    assert!(matches!(Request::decode(&h, &p), Err(Error::Json { .. })));
    let h = hdr(Command::Version, 0, 3, false);
    assert_len_error(Request::decode(&h, &[0; 3]), 3);
}

#[test]
fn unknown_and_unsupported_commands() {
    let h = Header {
        msg_id: 9,
        command: 99,
        msg_size: 20,
        flags: 0,
        error: 0,
    };
    assert_eq!(
        Request::decode(&h, &[1, 2, 3, 4]).unwrap(),
        Request::Unsupported { command: 99 }
    );
    let h = Header::command(9, Command::DeviceFeature, 8, false);
    assert_eq!(
        Request::decode(&h, &[0; 8]).unwrap(),
        Request::Unsupported { command: 16 }
    );
}

#[test]
fn error_replies() {
    let h = Header::error_reply(4, Command::DmaMap as u16, libc::EEXIST);
    match Reply::decode(&h, &[]) {
        Err(e @ Error::Remote { errno, .. }) => {
            assert_eq!(errno, libc::EEXIST as u32);
            assert_eq!(e.errno(), libc::EEXIST);
        }
        other => panic!("{other:?}"),
    }
    // An error reply must be the header alone.
    let mut h2 = h;
    h2.msg_size = 20;
    assert_len_error(Reply::decode(&h2, &[0; 4]), 4);
}
