//! The scenarios of `shim.rs` that are more than one re-backing.

use super::*;
use fdma::FenceError;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use fdma_host_tests::anon::{map_anon as mmap_at, unmap as munmap};

fn madvise(p: *mut u8, len: usize, advice: libc::c_int) {
    // SAFETY: the scenario's own mapping.
    let rc = unsafe { libc::madvise(p.cast(), len, advice) };
    assert_eq!(rc, 0, "madvise: {}", std::io::Error::last_os_error());
}

const PAGE: usize = 4096;

/// Memory of one re-backing scenario.
pub struct Memory {
    how: String,
    p: *mut u8,
    len: usize,
    /// What to release at the end: (pointer, length) of mappings, the brk
    /// to return to, or the malloc'd block.
    extra: Vec<(*mut u8, usize)>,
    brk_base: Option<*mut libc::c_void>,
    malloced: bool,
}

impl Memory {
    pub fn new(how: &str, len: usize) -> Memory {
        let mut m = Memory {
            how: how.to_string(),
            p: std::ptr::null_mut(),
            len,
            extra: vec![],
            brk_base: None,
            malloced: false,
        };
        match how {
            "munmap-mmap" | "map-fixed" | "mremap" | "dontneed" | "free" => {
                m.p = mmap_at(std::ptr::null_mut(), len, 0);
            }
            "brk" => {
                // SAFETY: sbrk(0) reads the break.
                let base = unsafe { libc::sbrk(0) };
                let aligned = (base as usize).next_multiple_of(PAGE);
                let grow = aligned - base as usize + len;
                // SAFETY: grows the heap by `grow` bytes that only this
                // scenario uses (glibc gives threads other than the main
                // one their own arenas, and the main thread waits).
                let old = unsafe { libc::sbrk(grow as libc::intptr_t) };
                assert_eq!(old, base, "sbrk");
                m.brk_base = Some(base);
                m.p = aligned as *mut u8;
            }
            "malloc" => {
                // Pin glibc's mmap threshold (this also stops it adapting),
                // so that a 1 MiB block is its own mapping, unmapped by free.
                // SAFETY: mallopt changes allocator settings only.
                let ok = unsafe { libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024) };
                assert_eq!(ok, 1, "mallopt(M_MMAP_THRESHOLD)");
                // SAFETY: a plain allocation, freed in `reback`/`drop`.
                m.p = unsafe { libc::malloc(1 << 20) }.cast();
                assert!(!m.p.is_null());
                m.malloced = true;
            }
            other => panic!("unknown scenario {other}"),
        }
        m
    }

    pub fn ptr(&self) -> *mut u8 {
        self.p
    }

    /// New pages behind the same address, the scenario's way.
    pub fn reback(&mut self) {
        let (p, len) = (self.p, self.len);
        match self.how.as_str() {
            "munmap-mmap" => {
                munmap(p, len);
                mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
            }
            "map-fixed" => {
                mmap_at(p, len, libc::MAP_FIXED);
            }
            "mremap" => {
                let q = mmap_at(std::ptr::null_mut(), len, 0);
                // SAFETY: moves our own mapping onto our own reservation.
                let moved = unsafe {
                    libc::mremap(
                        p.cast(),
                        len,
                        len,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        q.cast::<libc::c_void>(),
                    )
                };
                assert_eq!(moved.cast::<u8>(), q, "mremap");
                self.extra.push((q, len));
                mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
            }
            "dontneed" => madvise(p, len, libc::MADV_DONTNEED),
            "free" => madvise(p, len, libc::MADV_FREE),
            "brk" => {
                let top = p as usize + len;
                // SAFETY: sbrk(0) reads the break.
                let now = unsafe { libc::sbrk(0) } as usize;
                assert_eq!(
                    now, top,
                    "the break moved under the scenario (another thread's malloc?)"
                );
                // SAFETY: shrinks and regrows only the scenario's own part.
                assert_eq!(unsafe { libc::brk(p.cast()) }, 0, "brk shrink");
                // SAFETY: as above.
                let rc = unsafe { libc::brk(top as *mut libc::c_void) };
                assert_eq!(rc, 0, "brk regrow");
            }
            "malloc" => {
                // SAFETY: the block from `new`; no reference into it.
                unsafe { libc::free(p.cast()) };
                // SAFETY: a plain allocation.
                let again: *mut u8 = unsafe { libc::malloc(1 << 20) }.cast();
                assert!(
                    again == p,
                    "malloc returned {again:?} after free({p:?}): the allocator did not reuse \
                     the address, so this scenario cannot test re-backing"
                );
            }
            other => panic!("unknown scenario {other}"),
        }
    }
}

impl Drop for Memory {
    fn drop(&mut self) {
        for (p, len) in self.extra.drain(..) {
            munmap(p, len);
        }
        if self.malloced {
            // SAFETY: the block from `new` or `reback`.
            unsafe { libc::free(self.p.cast()) };
        } else if let Some(base) = self.brk_base {
            // SAFETY: back to where the scenario found the break.
            unsafe { libc::brk(base) };
        } else {
            munmap(self.p, self.len);
        }
    }
}

/// Threads re-map slots while others submit jobs on them and check what
/// the device read; some hold an application lock while they munmap.
pub fn stress(r: &Rig, on: bool) {
    const SLOTS: usize = 4;
    const ROUNDS: u64 = 100;
    let len = 16 * KIB;
    let app_lock = Mutex::new(());
    let stale = AtomicU64::new(0);
    struct Slot {
        lock: Mutex<u64>,
        p: usize,
    }
    let slots: Vec<Slot> = (0..SLOTS)
        .map(|i| Slot {
            lock: Mutex::new(i as u64 * 1000),
            // Far below every other mapping: the kernel hands out the
            // highest free gap first, so no other thread's mmap lands in a
            // slot between its munmap and its mmap.
            p: mmap_at(
                (0x2000_0000_0000 + i * 2 * len) as *mut u8,
                len,
                libc::MAP_FIXED_NOREPLACE,
            ) as usize,
        })
        .collect();
    for (i, s) in slots.iter().enumerate() {
        write(s.p as *mut u8, &pattern(i as u64 * 1000, len));
    }
    let channels = r.dev.channels();
    std::thread::scope(|sc| {
        for (i, s) in slots.iter().enumerate() {
            let app_lock = &app_lock;
            sc.spawn(move || {
                for round in 1..=ROUNDS {
                    let mut seed = s.lock.lock().unwrap();
                    let _app = (round % 2 == 0).then(|| app_lock.lock().unwrap());
                    munmap(s.p as *mut u8, len);
                    mmap_at(s.p as *mut u8, len, libc::MAP_FIXED_NOREPLACE);
                    *seed = i as u64 * 1000 + round;
                    write(s.p as *mut u8, &pattern(*seed, len));
                    drop(seed);
                    std::thread::yield_now();
                }
            });
            let stale = &stale;
            sc.spawn(move || {
                let at = 0x40_0000 + (i * len) as u64;
                for round in 0..ROUNDS {
                    let seed = s.lock.lock().unwrap();
                    let _app = (round % 3 == 0).then(|| app_lock.lock().unwrap());
                    let st = try_h2c(r, i % channels, s.p as *const u8, len, at);
                    assert_eq!(st, Ok(()), "slot {i} round {round}");
                    if card(r, at, len) != pattern(*seed, len) {
                        stale.fetch_add(1, Ordering::Relaxed);
                    }
                    drop(seed);
                    std::thread::yield_now();
                }
            });
        }
    });
    let s = stats(r);
    let stale = stale.load(Ordering::Relaxed);
    if on {
        assert_eq!(
            stale,
            0,
            "stale DMAs out of {}: {s:?}",
            SLOTS as u64 * ROUNDS
        );
        assert!(s.invalidations_shim >= SLOTS as u64, "{s:?}");
    } else {
        // Negative control: without the shim the cache serves the first
        // registration of each slot for ever.
        assert!(stale > 0, "shim off, yet no stale DMA: {s:?}");
    }
    println!("stress: {stale} stale DMAs of {}", SLOTS as u64 * ROUNDS);
    for sl in &slots {
        munmap(sl.p as *mut u8, len);
    }
}

/// C3 with a job in flight on a range that is unmapped.
pub fn inflight(r: &Rig) {
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    write(p, &pattern(7, len));
    assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
    let fi = r.dev.faults().unwrap();
    let c0 = r.dev.channel(0).unwrap();
    fi.stall(0, true).unwrap();
    let mut j = Job::new();
    j.h2c_user(bytes(p, len), 0x10_0000);
    let f = c0.submit(&j).unwrap();
    let before = stats(r);
    // The munmap returns once the monitor has read the event: it does not
    // wait for the device.
    let t0 = Instant::now();
    munmap(p, len);
    let took = t0.elapsed();
    poll_until(
        "the shim publishes the munmap and retires the entry",
        || {
            let s = stats(r);
            s.invalidations_shim > before.invalidations_shim && s.entries == 0
        },
    );
    let s = stats(r);
    assert!(!f.is_signalled(), "the job is still stalled");
    assert_eq!(s.retired_pending, 1, "the entry waits for its job: {s:?}");
    assert_eq!(
        s.pinned_bytes, len as u64,
        "still pinned while the job runs: {s:?}"
    );
    fi.stall(0, false).unwrap();
    let st = common::wait(&f);
    assert!(
        matches!(st, Err(FenceError::StaleMemory { channel: 0, .. })),
        "a job completed after its memory was unmapped reports StaleMemory: {st:?}"
    );
    poll_until("the entry is unmapped once its job has signalled", || {
        let s = stats(r);
        s.retired_pending == 0 && s.pinned_bytes == 0
    });
    println!("munmap under a job in flight returned in {took:?}");
}

/// C10: fork while the shim watches registered memory.
pub fn fork(r: &Rig) {
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    write(p, &pattern(8, len));
    assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
    let ch = r.dev.channel(0).unwrap();
    // SAFETY: the child only unmaps, tries one submit and exits with
    // _exit (no destructors, no I/O on the parent's sessions).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork");
    if pid == 0 {
        // The child: its copy of the range is not subscribed (no
        // EVENT_FORK), so this munmap must not wait for the parent's
        // monitor.
        // SAFETY: the child's copy of the mapping.
        let rc = unsafe { libc::munmap(p.cast(), len) };
        let other = [0u8; 64];
        let mut j = Job::new();
        j.h2c_user(&other, 0);
        let forked = matches!(ch.submit(&j), Err(fdma::Error::Forked));
        // SAFETY: leaves the child without running anything else.
        unsafe { libc::_exit(if rc == 0 && forked { 0 } else { 3 }) };
    }
    let t0 = Instant::now();
    let mut status = 0;
    loop {
        // SAFETY: waits for our own child.
        let w = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if w == pid {
            break;
        }
        if t0.elapsed() > Duration::from_secs(20) {
            // SAFETY: our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked child is stuck (in munmap?)");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child: munmap or the Forked error failed (status {status:#x})"
    );
    // The parent's registration is intact and still watched.
    let before = stats(r);
    h2c_expect(r, p, len, 0x10_0000, &pattern(8, len), "parent after fork");
    assert_eq!(stats(r).hits, before.hits + 1, "{:?}", stats(r));
    munmap(p, len);
    mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
    write(p, &pattern(9, len));
    h2c_expect(
        r,
        p,
        len,
        0x20_0000,
        &pattern(9, len),
        "parent re-backed after fork",
    );
    munmap(p, len);
}

/// C9: a range another userfaultfd owns cannot be subscribed (EBUSY): it
/// is served uncached, and correctly.
pub fn ebusy(r: &Rig) {
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    let _theirs = own_userfaultfd(p, len);
    let before = stats(r);
    for round in 0..3u64 {
        write(p, &pattern(20 + round, len));
        h2c_expect(r, p, len, 0, &pattern(20 + round, len), "uncached round");
        munmap(p, len);
        mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
        // The new mapping is not the other userfaultfd's: own it again.
        std::mem::forget(own_userfaultfd(p, len));
    }
    poll_until("uncached mappings are gone after their jobs", || {
        let s = stats(r);
        s.retired_pending == 0 && s.pinned_bytes == 0
    });
    let s = stats(r);
    assert_eq!(s.uncached - before.uncached, 3, "{s:?}");
    assert_eq!(
        (s.hits, s.entries, s.subscriptions),
        (before.hits, 0, 0),
        "{s:?}"
    );
    munmap(p, len);
}

/// An application's own userfaultfd registered (write-protect mode) on
/// `[p, p + len)`; closed on drop.
fn own_userfaultfd(p: *mut u8, len: usize) -> std::os::fd::OwnedFd {
    use std::os::fd::{AsRawFd, FromRawFd};
    #[repr(C)]
    struct Api {
        api: u64,
        features: u64,
        ioctls: u64,
    }
    #[repr(C)]
    struct Register {
        start: u64,
        len: u64,
        mode: u64,
        ioctls: u64,
    }
    const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
    const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
    // SAFETY: userfaultfd(2) with user-mode-only faults.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | 1) };
    assert!(fd >= 0, "userfaultfd: {}", std::io::Error::last_os_error());
    // SAFETY: a new fd nobody else owns.
    let fd = unsafe { std::os::fd::OwnedFd::from_raw_fd(fd as i32) };
    let mut api = Api {
        api: 0xaa,
        features: 0,
        ioctls: 0,
    };
    // SAFETY: UFFDIO_API on our fd with our struct.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api) };
    assert_eq!(rc, 0, "UFFDIO_API");
    let mut reg = Register {
        start: p as u64,
        len: len as u64,
        mode: 2,
        ioctls: 0,
    };
    // SAFETY: registers our own range; write-protect mode traps nothing
    // until a page is write-protected, which never happens here.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_REGISTER, &mut reg) };
    assert_eq!(
        rc,
        0,
        "UFFDIO_REGISTER: {}",
        std::io::Error::last_os_error()
    );
    fd
}

/// A blind spot, as documented: a hole punched through a memfd's fd
/// re-backs a shared mapping without any event, so the registration stays
/// (the device reads the old page) until the application calls
/// `invalidate()`, after which the device reads the new data.
pub fn blind_memfd(r: &Rig) {
    use std::os::fd::AsRawFd;
    let len = 64 * KIB;
    let fd =
        nix::sys::memfd::memfd_create(c"fdma-blind", nix::sys::memfd::MemFdCreateFlag::MFD_CLOEXEC)
            .expect("memfd_create");
    nix::unistd::ftruncate(&fd, len as i64).expect("ftruncate");
    // SAFETY: a shared mapping of our own memfd.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            fd.as_raw_fd(),
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    let p = p.cast::<u8>();
    write(p, &pattern(30, len));
    assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
    let before = stats(r);
    assert_eq!(before.subscriptions, 1, "shmem is watchable: {before:?}");
    // SAFETY: punches a hole in our own memfd.
    let rc = unsafe {
        libc::fallocate(
            fd.as_raw_fd(),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            0,
            len as libc::off_t,
        )
    };
    assert_eq!(rc, 0, "fallocate: {}", std::io::Error::last_os_error());
    write(p, &pattern(31, len));
    h2c_expect(
        r,
        p,
        len,
        0x10_0000,
        &pattern(30, len),
        "blind spot: after PUNCH_HOLE the device still reads the old page",
    );
    let s = stats(r);
    assert_eq!(
        s.invalidations_shim, before.invalidations_shim,
        "no event: {s:?}"
    );
    // The documented remedy.
    r.dev.cache().unwrap().invalidate(p, len).unwrap();
    h2c_expect(
        r,
        p,
        len,
        0x20_0000,
        &pattern(31, len),
        "after invalidate()",
    );
    munmap(p, len);
}

/// A blind spot, as documented: SysV shared memory cannot be subscribed
/// in write-protect mode (and `shmdt` sends no event), so it is served
/// uncached: correct, counted, never a hit.
pub fn sysv(r: &Rig) {
    let len = 64 * KIB;
    // SAFETY: a private SysV segment, removed below.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, len, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget: {}", std::io::Error::last_os_error());
    // SAFETY: attaches the segment anywhere.
    let p = unsafe { libc::shmat(id, std::ptr::null(), 0) };
    assert_ne!(p as isize, -1, "shmat");
    let p = p.cast::<u8>();
    let before = stats(r);
    for round in 0..2u64 {
        write(p, &pattern(40 + round, len));
        assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
        assert_same(&card(r, 0, len), &pattern(40 + round, len), "SysV shm");
    }
    let s = stats(r);
    assert_eq!(s.uncached - before.uncached, 2, "served uncached: {s:?}");
    assert_eq!(s.hits, before.hits, "{s:?}");
    // SAFETY: detaches and removes our own segment.
    unsafe {
        libc::shmdt(p.cast());
        libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut());
    }
}

/// The frame check with the shim off: re-back, and the next hit is refused.
pub fn frames(r: &Rig) {
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    write(p, &pattern(50, len));
    assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
    assert_eq!(try_h2c(r, 0, p, len, 0), Ok(()));
    let before = stats(r);
    assert_eq!((before.hits, before.frame_mismatches), (1, 0), "{before:?}");
    munmap(p, len);
    mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
    write(p, &pattern(51, len));
    assert_eq!(try_h2c(r, 0, p, len, 0x10_0000), Ok(()));
    assert_same(&card(r, 0x10_0000, len), &pattern(51, len), "frame check");
    let s = stats(r);
    assert_eq!(s.frame_mismatches, 1, "{s:?}");
    assert_eq!(s.hits, before.hits, "{s:?}");
    munmap(p, len);
}

/// C3 and F3: the job on unmapped memory is wedged (its channel stalled
/// for good); the watchdog errors it, and the invalidation then unmaps.
pub fn wedged(r: &Rig) {
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    write(p, &pattern(60, len));
    assert_eq!(try_h2c(r, 2, p, len, 0), Ok(()));
    let fi = r.dev.faults().unwrap();
    fi.stall(2, true).unwrap();
    let mut j = Job::new();
    j.h2c_user(bytes(p, len), 0x10_0000);
    let f = r.dev.channel(2).unwrap().submit(&j).unwrap();
    munmap(p, len);
    poll_until("the shim retires the entry", || stats(r).entries == 0);
    let s = stats(r);
    assert_eq!(
        (s.retired_pending, s.pinned_bytes),
        (1, len as u64),
        "the invalidation waits for the wedged job: {s:?}"
    );
    let st = common::wait(&f);
    assert!(
        matches!(st, Err(FenceError::Hung { channel: 2, .. })),
        "the watchdog errors the wedged job: {st:?}"
    );
    poll_until("the invalidation finishes once the job has failed", || {
        let s = stats(r);
        s.retired_pending == 0 && s.pinned_bytes == 0
    });
    fi.stall(2, false).unwrap();
    r.dev.channel(2).unwrap().reset().unwrap();
}

/// Two devices in one process on the same memory (the second one always a
/// simulator of the scenario's own): the process's one shim watches the
/// range once and both caches keep it (nothing served uncached); an
/// munmap and mmap at the same address reach both caches, so each device
/// reads the new pages.
pub fn two_devices(r: &Rig, opts: &fdma::OpenOptions) {
    let sim = common::start_sim(&[]);
    let dev = fdma::Device::open_with(&sim.name(), opts).expect("open a second simulator");
    let r2 = Rig {
        dev,
        sim: Some(sim),
    };
    assert!(r2.dev.cache().unwrap().shim_active());
    let len = 64 * KIB;
    let p = mmap_at(std::ptr::null_mut(), len, 0);
    let (b1, b2) = (stats(r), stats(&r2));
    for round in 0..3u64 {
        let data = pattern(40 + round, len);
        write(p, &data);
        for rig in [r, &r2] {
            // A miss, then a hit, on each device.
            for card_at in [0, 0x10_0000] {
                h2c_expect(
                    rig,
                    p,
                    len,
                    card_at,
                    &data,
                    &format!("{}: round {round}", rig.dev.name()),
                );
            }
        }
        munmap(p, len);
        mmap_at(p, len, libc::MAP_FIXED_NOREPLACE);
    }
    for (rig, before) in [(r, b1), (&r2, b2)] {
        poll_until("the last round's entries are invalidated", || {
            stats(rig).entries == before.entries
        });
        let s = stats(rig);
        let name = rig.dev.name();
        assert_eq!(s.uncached, before.uncached, "{name}: {s:?}");
        assert_eq!(s.misses - before.misses, 3, "{name}: {s:?}");
        assert_eq!(s.hits - before.hits, 3, "{name}: {s:?}");
        assert!(
            s.invalidations_shim - before.invalidations_shim >= 3,
            "{name}: every munmap reached this cache: {s:?}"
        );
    }
    r2.dev.close().unwrap();
    munmap(p, len);
}
