//! Connection tests over a socketpair: fds, limits, timeouts, partial I/O.

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::time::Duration;

use fdma_vfio_user::consts::dma;
use fdma_vfio_user::*;

fn tmpfile(content: &[u8]) -> std::fs::File {
    let fd = nix::sys::memfd::memfd_create(
        c"vfio-user-test",
        nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC,
    )
    .unwrap();
    let mut f = std::fs::File::from(fd);
    f.write_all(content).unwrap();
    f
}

fn is_cloexec(fd: &OwnedFd) -> bool {
    let fl = nix::fcntl::fcntl(
        std::os::fd::AsRawFd::as_raw_fd(fd),
        nix::fcntl::FcntlArg::F_GETFD,
    )
    .unwrap();
    nix::fcntl::FdFlag::from_bits_truncate(fl).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
}

#[test]
fn fds_travel_with_the_message() {
    let (a, b) = Connection::pair(Limits::default()).unwrap();
    let f1 = tmpfile(b"first");
    let f2 = tmpfile(b"second");
    let req = Request::DmaMap(DmaMap {
        flags: dma::FLAG_READ,
        offset: 0,
        address: 0x1000,
        size: 0x1000,
    });
    a.send_request(3, &req, &[f1.as_fd(), f2.as_fd()], false)
        .unwrap();
    let m = b.recv(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(m.header.msg_id, 3);
    assert_eq!(m.request().unwrap(), req);
    assert_eq!(m.fds.len(), 2);
    for (fd, want) in m.fds.into_iter().zip([&b"first"[..], b"second"]) {
        assert!(is_cloexec(&fd));
        let mut f = std::fs::File::from(fd);
        f.seek(SeekFrom::Start(0)).unwrap();
        let mut s = Vec::new();
        f.read_to_end(&mut s).unwrap();
        assert_eq!(s, want);
    }
}

#[test]
fn too_many_fds_consumes_the_message() {
    let (a, b) = Connection::pair(Limits {
        max_msg_size: 4096,
        max_fds: 1,
    })
    .unwrap();
    let f = tmpfile(b"x");
    a.send_request(1, &Request::DeviceReset, &[f.as_fd(), f.as_fd()], false)
        .unwrap();
    a.send_request(2, &Request::DeviceReset, &[], false)
        .unwrap();
    let e = b.recv(Some(Duration::from_secs(5))).unwrap_err();
    assert!(
        matches!(e, Error::TooManyFds { got: 2, max: 1, .. }),
        "{e:?}"
    );
    assert_eq!(e.reply_target(), Some((1, Command::DeviceReset as u16)));
    // The connection is still in step.
    let m = b.recv(Some(Duration::from_secs(5))).unwrap();
    assert_eq!(m.header.msg_id, 2);
}

#[test]
fn oversized_message_is_refused() {
    let (a, b) = Connection::pair(Limits {
        max_msg_size: 64,
        max_fds: 1,
    })
    .unwrap();
    let w = Request::RegionWrite(RegionData {
        offset: 0,
        region: 2,
        data: vec![0; 100],
    });
    a.send_request(1, &w, &[], true).unwrap();
    assert!(matches!(
        b.recv(Some(Duration::from_secs(5))),
        Err(Error::TooLarge { size: 132, .. })
    ));
}

#[test]
fn timeout_and_close() {
    let (a, b) = Connection::pair(Limits::default()).unwrap();
    assert!(matches!(
        b.recv(Some(Duration::from_millis(50))),
        Err(Error::Timeout { .. })
    ));
    // Half a header, then close: truncated.
    use std::io::Write as _;
    a.socket().write_all(&[1, 2, 3]).unwrap();
    drop(a);
    assert!(matches!(
        b.recv(Some(Duration::from_secs(5))),
        Err(Error::Truncated { got: 3, want: 16 })
    ));
    let (a, b) = Connection::pair(Limits::default()).unwrap();
    drop(a);
    assert!(matches!(b.recv(None), Err(Error::Closed)));
}

#[test]
fn large_message_crosses_partial_reads_and_writes() {
    let (a, b) = Connection::pair(Limits::default()).unwrap();
    let data: Vec<u8> = (0..(1 << 20)).map(|i| (i * 7 % 251) as u8).collect();
    let d = DmaData {
        address: 0x10_0000,
        data: data.clone(),
    };
    let t = std::thread::spawn(move || {
        a.send_reply(5, &Reply::DmaRead(d), &[]).unwrap();
        a
    });
    let m = b.recv(Some(Duration::from_secs(10))).unwrap();
    let Reply::DmaRead(back) = m.reply().unwrap() else {
        panic!()
    };
    assert_eq!(back.data, data);
    t.join().unwrap();
}

#[test]
fn call_matches_the_reply_and_reports_errors() {
    let (a, b) = Connection::pair(Limits::default()).unwrap();
    let server = std::thread::spawn(move || {
        let m = b.recv(None).unwrap();
        assert!(matches!(m.request().unwrap(), Request::DeviceGetInfo(_)));
        b.send_reply(
            m.header.msg_id,
            &Reply::DeviceGetInfo(DeviceInfo {
                argsz: 16,
                flags: 3,
                num_regions: 9,
                num_irqs: 5,
            }),
            &[],
        )
        .unwrap();
        let m = b.recv(None).unwrap();
        b.send_error(m.header.msg_id, m.header.command, libc::ENOSYS)
            .unwrap();
    });
    let (r, fds) = a
        .call(
            1,
            &Request::DeviceGetInfo(DeviceInfo {
                argsz: 16,
                ..Default::default()
            }),
            &[],
            Some(Duration::from_secs(5)),
        )
        .unwrap();
    assert!(fds.is_empty());
    assert!(matches!(
        r,
        Reply::DeviceGetInfo(DeviceInfo { num_regions: 9, .. })
    ));
    let e = a
        .call(2, &Request::DeviceReset, &[], Some(Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(e, Error::Remote { errno, .. } if errno == libc::ENOSYS as u32));
    server.join().unwrap();
}
