//! The `fdma-sim` server driven over vfio-user by a client built on the
//! project's protocol crate: negotiation, device description, DMA through
//! fd-backed and client-served mappings, interrupts, and the faults of
//! contracts D3 and D5.

mod client;
use client::*;

/// The server binary of this package, without the link model (fast tests).
fn start() -> Sim {
    start_bin(
        std::path::Path::new(env!("CARGO_BIN_EXE_fdma-sim")),
        &["--no-link-model"],
    )
}
use fdma_hw::desc::{err, Descriptor, Direction, WB_BYTES};
use fdma_hw::regs::{self, channel_reg, state};
use fdma_vfio_user::consts::dma;
use fdma_vfio_user::*;
use std::os::fd::AsFd;

#[test]
fn dma_through_both_kinds_of_mapping() {
    let sim = start();
    let mut c = connect(&sim);
    let ring = FD_IOVA;
    let wb = FD_IOVA + 0x1000;
    c.setup_channel(0, ring, wb);

    // H2H: fd-backed memory -> client-served memory.
    let a = pattern(4096, 1);
    c.fd_write(FD_IOVA + 0x2000, &a);
    submit(
        &mut c,
        0,
        ring,
        0,
        Descriptor::new(
            Direction::HostToHost,
            FD_IOVA + 0x2000,
            MSG_IOVA + 0x100,
            4096,
            true,
            true,
            1,
        ),
    );
    c.set(channel_reg(0, &regs::CH_TAIL), 1);
    // No register polling: the doorbell alone must get the card clocked
    // until the interrupt arrives.
    assert!(
        wait_fd(c.events[0].as_fd(), T).unwrap(),
        "MSI-X vector 0 never fired: {:?}",
        sim.ctl("status")
    );
    assert!(c.events[0].read().unwrap() >= 1);
    assert_eq!(&c.mem.lock().unwrap()[0x100..0x100 + 4096], &a[..]);
    let wbb: [u8; WB_BYTES] = c.fd_read(wb, WB_BYTES).try_into().unwrap();
    assert_eq!(fdma_hw::desc::Writeback::from_bytes(&wbb).head, 1);

    // H2C from client-served memory into card memory, then C2H back out to fd memory.
    let b = pattern(8192, 7);
    c.mem.lock().unwrap()[0x2000..0x4000].copy_from_slice(&b);
    submit(
        &mut c,
        0,
        ring,
        1,
        Descriptor::new(
            Direction::HostToCard,
            MSG_IOVA + 0x2000,
            0x4000,
            8192,
            false,
            true,
            2,
        ),
    );
    // Descriptors of a channel complete in order, but the engine pipelines:
    // a later descriptor's reads may pass an earlier one's writes. A copy
    // that reads what another wrote waits for that job first.
    c.set(channel_reg(0, &regs::CH_TAIL), 2);
    c.wait_reg(channel_reg(0, &regs::CH_HEAD), "HEAD 2", |h| h == 2);
    submit(
        &mut c,
        0,
        ring,
        2,
        Descriptor::new(
            Direction::CardToHost,
            0x4000,
            FD_IOVA + 0x8000,
            8192,
            true,
            true,
            3,
        ),
    );
    c.set(channel_reg(0, &regs::CH_TAIL), 3);
    c.wait_reg(channel_reg(0, &regs::CH_HEAD), "HEAD 3", |h| h == 3);
    let st = c.reg(channel_reg(0, &regs::CH_STATUS));
    assert_eq!(regs::CH_STATUS_STATE.decode(st), state::RUNNING);
    assert_eq!(regs::CH_STATUS_ERR.decode(st), 0);
    let card_now: Vec<u8> = (0..2)
        .flat_map(|i| c.read(2, 0x4000 + i * 4096, 4096))
        .collect();
    assert_same(&card_now, &b, "card memory after H2C");
    assert_same(
        &c.fd_read(FD_IOVA + 0x8000, 8192),
        &b,
        "host memory after C2H",
    );
    // The card memory is visible through BAR2, by REGION_READ and by mmap.
    assert_eq!(c.read(2, 0x4000, 64), &b[..64]);
    let card = std::fs::File::from(c.card_fd.take().unwrap());
    let map = memmap2::MmapOptions::new()
        .offset(0)
        .len(0x10000)
        .map_raw_read_only(&card)
        .unwrap();
    let mut seen = vec![0u8; 8192];
    // SAFETY: [0x4000, +8192) is inside the 64 KiB mapping; raw copy because
    // the server's process shares the pages.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr().add(0x4000), seen.as_mut_ptr(), 8192) };
    assert_eq!(seen, b);
    // And a BAR2 REGION_WRITE is visible through the mapping.
    c.write(2, 0x100, &[9, 8, 7, 6]);
    let mut four = [0u8; 4];
    // SAFETY: in range, raw copy as above.
    unsafe { std::ptr::copy_nonoverlapping(map.as_ptr().add(0x100), four.as_mut_ptr(), 4) };
    assert_eq!(four, [9, 8, 7, 6]);

    // DMA_UNMAP must match exactly, and echoes the request.
    let bad = DmaUnmap {
        argsz: 24,
        flags: 0,
        address: MSG_IOVA,
        size: 0x1000,
    };
    assert!(
        matches!(c.call(Request::DmaUnmap(bad), &[]), Err(Error::Remote { errno, .. }) if errno == libc::ENOENT as u32)
    );
    let ok = DmaUnmap {
        argsz: 24,
        flags: 0,
        address: MSG_IOVA,
        size: MSG_SIZE as u64,
    };
    assert_eq!(
        c.call(Request::DmaUnmap(ok), &[]).unwrap().0,
        Reply::DmaUnmap(ok)
    );
}

fn halted_with(c: &mut Client, ch: usize, code: u8) {
    let st = c.wait_reg(channel_reg(ch, &regs::CH_STATUS), "halt", |s| {
        regs::CH_STATUS_STATE.decode(s) == state::HALTED
    });
    assert_eq!(
        regs::CH_STATUS_ERR.decode(st),
        code as u32,
        "channel {ch} error code"
    );
}

#[test]
fn iommu_faults_and_protocol_errors() {
    let sim = start();
    let mut c = connect(&sim);

    // A descriptor fetch from an unmapped IOVA halts the channel with FETCH_FAULT.
    c.setup_channel(1, 0xdead_0000, FD_IOVA + 0x1100);
    c.set(channel_reg(1, &regs::CH_TAIL), 1);
    halted_with(&mut c, 1, err::FETCH_FAULT);

    // A host source at an unmapped IOVA halts it with READ_FAULT.
    let ring2 = FD_IOVA + 0x4000;
    c.setup_channel(2, ring2, FD_IOVA + 0x1200);
    submit(
        &mut c,
        2,
        ring2,
        0,
        Descriptor::new(Direction::HostToCard, 0x7000_0000, 0, 256, false, true, 0),
    );
    c.set(channel_reg(2, &regs::CH_TAIL), 1);
    halted_with(&mut c, 2, err::READ_FAULT);

    // A C2H write to an unmapped IOVA is dropped: the job completes, memory
    // elsewhere is untouched, and the fault log has the record.
    let ring3 = FD_IOVA + 0x5000;
    c.setup_channel(3, ring3, FD_IOVA + 0x1300);
    let before = c.fd_read(FD_IOVA + 0x9000, 256);
    submit(
        &mut c,
        3,
        ring3,
        0,
        Descriptor::new(Direction::CardToHost, 0, 0x7100_0000, 256, false, true, 0),
    );
    c.set(channel_reg(3, &regs::CH_TAIL), 1);
    c.wait_reg(channel_reg(3, &regs::CH_HEAD), "HEAD 1", |h| h == 1);
    assert_eq!(
        regs::CH_STATUS_ERR.decode(c.reg(channel_reg(3, &regs::CH_STATUS))),
        0
    );
    assert_eq!(c.fd_read(FD_IOVA + 0x9000, 256), before);
    let log = sim.ctl("fault-log");
    assert!(
        log.iter()
            .any(|l| l.contains("write") && l.contains("0x71000000")),
        "fault log: {log:?}"
    );
    assert!(
        log.iter()
            .any(|l| l.contains("read") && l.contains("0x70000000")),
        "fault log: {log:?}"
    );
    let status = sim.ctl("status");
    assert!(status[0].contains("client 1"), "{status:?}");

    // Overlapping DMA_MAP: EEXIST.
    let over = DmaMap {
        flags: dma::FLAG_READ,
        offset: 0,
        address: FD_IOVA + 0x1000,
        size: 0x1000,
    };
    assert!(
        matches!(c.call(Request::DmaMap(over), &[]), Err(Error::Remote { errno, .. }) if errno == libc::EEXIST as u32)
    );

    // A posted REGION_WRITE (no reply) is applied in order before the next read.
    let w = Request::RegionWrite(RegionData {
        offset: regs::SCRATCH.offset as u64,
        region: 0,
        data: 0x5a5a_1234u32.to_le_bytes().to_vec(),
    });
    c.conn.send_request(900, &w, &[], true).unwrap();
    assert_eq!(c.reg(regs::SCRATCH.offset), 0x5a5a_1234);

    // An unknown command gets an error reply and the session goes on.
    let h = Header {
        msg_id: 901,
        command: 99,
        msg_size: 20,
        flags: 0,
        error: 0,
    };
    c.conn.send_raw(&h, &[1, 2, 3, 4], &[]).unwrap();
    let m = c.conn.recv(T).unwrap();
    assert!(m.header.is_reply() && m.header.is_error());
    assert_eq!(
        (m.header.msg_id, m.header.error),
        (901, libc::ENOSYS as u32)
    );
    assert_eq!(c.reg(regs::ID.offset), fdma_hw::id_value());

    // A second client gets EBUSY.
    let c2 = Connection::connect(&sim.sock, Limits::default()).unwrap();
    let v = Request::Version(Version {
        major: 0,
        minor: 1,
        caps: None,
    });
    assert!(
        matches!(c2.call(1, &v, &[], T), Err(Error::Remote { errno, .. }) if errno == libc::EBUSY as u32)
    );

    // Control socket faults round trip.
    sim.ctl("fault dma-reply-fail-after 3");
    assert!(sim.ctl("faults")[0].contains("dma-reply-fail-after 3"));
    sim.ctl("fault dma-reply-fail-after off");
}

#[test]
fn disconnect_unmaps_everything_and_keeps_device_state() {
    let sim = start();
    let status = |sim: &Sim| sim.ctl("status").join(" ");
    {
        let mut c = connect(&sim);
        c.set(regs::SCRATCH.offset, 0x1234_5678);
        assert!(status(&sim).contains("client 1"), "{}", status(&sim));
        assert!(status(&sim).contains("mappings 2"), "{}", status(&sim));
    }
    // The server notices the closed socket and cleans up (bounded wait).
    let t0 = std::time::Instant::now();
    while !status(&sim).contains("client 0") {
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "{}",
            status(&sim)
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        status(&sim).contains("mappings 0"),
        "DMA unmapped on disconnect: {}",
        status(&sim)
    );
    // A new client is served, and the device kept its state (per the spec).
    let mut c = connect(&sim);
    assert_eq!(c.reg(regs::SCRATCH.offset), 0x1234_5678);
}

/// A second client that connects and says nothing neither holds up the
/// served client nor stays connected: it is closed after a second. The
/// binary announces itself with the served client's pid.
#[test]
fn a_silent_second_client_does_not_hold_up_the_served_one() {
    let sim = start();
    let mut c = connect(&sim);
    let silent = Connection::connect(&sim.sock, Limits::default()).unwrap();
    let t0 = std::time::Instant::now();
    for _ in 0..20 {
        assert_eq!(c.reg(regs::ID.offset), fdma_hw::id_value());
    }
    assert!(
        t0.elapsed() < std::time::Duration::from_millis(900),
        "the served client waited {:?}",
        t0.elapsed()
    );
    assert!(matches!(
        silent.recv(Some(std::time::Duration::from_secs(10))),
        Err(Error::Closed)
    ));
    assert_eq!(c.reg(regs::ID.offset), fdma_hw::id_value());

    let anns = fdma_vfio_user::announce::list_in(&sim._dir.path().join("fdma")).unwrap();
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert_eq!(anns[0].socket, sim.sock);
    assert_eq!(anns[0].pid, sim.child.id());
    assert!(anns[0].busy);
    assert_eq!(anns[0].client_pid, Some(std::process::id()));
    assert_eq!(
        anns[0].options,
        ["no-link-model", "dma-reply-timeout-ms 3000"]
    );
}

/// The server is announced before its control socket appears, so a script
/// that waits for the control socket finds it in `fdma list`.
#[test]
fn announced_before_the_control_socket_appears() {
    let sim = start(); // returns as soon as the control socket exists
    let anns = fdma_vfio_user::announce::list_in(&sim._dir.path().join("fdma")).unwrap();
    assert_eq!(anns.len(), 1, "{anns:?}");
    assert_eq!(anns[0].socket, sim.sock);
    assert_eq!(anns[0].pid, sim.child.id());
    assert!(!anns[0].busy);
}

/// A client that exits and the next one that connects at once, both
/// pending when the server next looks (here: connected while the server is
/// stopped, as a loaded CI machine might leave it): the first one's posted
/// write lands, and the second is served rather than refused as a second
/// client.
#[test]
fn a_client_connecting_as_the_last_one_leaves_is_served() {
    use nix::sys::signal::{kill, Signal};
    let sim = start();
    let first = connect(&sim);
    let pid = nix::unistd::Pid::from_raw(sim.child.id() as i32);
    kill(pid, Signal::SIGSTOP).unwrap();
    let resume = scopeguard(pid);
    let posted = Request::RegionWrite(RegionData {
        offset: regs::SCRATCH.offset as u64,
        region: 0,
        data: 0x5a5a_0001u32.to_le_bytes().to_vec(),
    });
    first
        .conn
        .send_request(first.id.wrapping_add(1), &posted, &[], true)
        .unwrap();
    drop(first);
    let next = Connection::connect(&sim.sock, Limits::default()).unwrap();
    let version = Request::Version(Version {
        major: 0,
        minor: 1,
        caps: None,
    });
    next.send_request(1, &version, &[], false).unwrap();
    drop(resume);

    let m = next.recv(T).expect("an answer to VERSION");
    assert!(
        !m.header.is_error(),
        "the next client was refused (errno {})",
        m.header.error
    );
    assert!(matches!(m.reply().unwrap(), Reply::Version(_)));
    let read = Request::RegionRead(RegionAccess {
        offset: regs::SCRATCH.offset as u64,
        region: 0,
        count: 4,
    });
    let Reply::RegionRead(d) = next.call(2, &read, &[], T).unwrap().0 else {
        panic!("not a region read reply")
    };
    assert_eq!(
        d.data,
        0x5a5a_0001u32.to_le_bytes(),
        "the posted write landed"
    );
}

/// Sends SIGCONT to `pid` when dropped, so that a failing test does not
/// leave the server stopped.
fn scopeguard(pid: nix::unistd::Pid) -> impl Drop {
    struct Cont(nix::unistd::Pid);
    impl Drop for Cont {
        fn drop(&mut self) {
            let _ = nix::sys::signal::kill(self.0, nix::sys::signal::Signal::SIGCONT);
        }
    }
    Cont(pid)
}
