//! Page-aligned anonymous memory for tests and benchmarks that re-back it
//! the ways an application does, with no Rust reference into it (the device
//! writes it behind the compiler's back).

/// A private anonymous mapping of `len` bytes (whole pages) at `addr`
/// (null: where the kernel likes) with extra mmap `flags`
/// (`MAP_FIXED_NOREPLACE`, `MAP_FIXED`). Panics with the OS error.
pub fn map_anon(addr: *mut u8, len: usize, flags: libc::c_int) -> *mut u8 {
    // SAFETY: anonymous memory; at a fixed address only with the flag the
    // caller chose for a range it owns (or NOREPLACE, which fails instead
    // of replacing another mapping).
    let p = unsafe {
        libc::mmap(
            addr.cast(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    assert_ne!(
        p,
        libc::MAP_FAILED,
        "mmap {len} bytes at {addr:p}: {}",
        std::io::Error::last_os_error()
    );
    p.cast()
}

/// munmap `[p, p + len)`. Panics with the OS error.
pub fn unmap(p: *mut u8, len: usize) {
    // SAFETY: the caller's own mapping, with no reference into it.
    let rc = unsafe { libc::munmap(p.cast(), len) };
    assert_eq!(rc, 0, "munmap: {}", std::io::Error::last_os_error());
}

/// How to put new pages behind an address.
#[derive(Debug, Clone, Copy)]
pub enum Reback {
    /// mmap(MAP_FIXED) over the live mapping.
    MapFixed,
    /// munmap, then mmap again at the same address (`MAP_FIXED_NOREPLACE`).
    UnmapThenMap,
}

/// Anonymous memory, unmapped on drop.
pub struct Anon {
    /// First byte.
    pub p: *mut u8,
    /// Length (whole pages).
    pub len: usize,
}

impl Anon {
    /// `len` bytes, rounded up to whole pages, zeroed.
    pub fn new(len: usize) -> Anon {
        let len = len.next_multiple_of(4096);
        Anon {
            p: map_anon(std::ptr::null_mut(), len, 0),
            len,
        }
    }

    /// New zeroed pages at the same address.
    pub fn reback(&self, how: Reback) {
        let flags = match how {
            Reback::MapFixed => libc::MAP_FIXED,
            Reback::UnmapThenMap => {
                unmap(self.p, self.len);
                libc::MAP_FIXED_NOREPLACE
            }
        };
        let q = map_anon(self.p, self.len, flags);
        assert_eq!(q, self.p, "re-back {how:?} at the same address");
    }

    /// Copy `data` to the start.
    pub fn write(&self, data: &[u8]) {
        assert!(data.len() <= self.len);
        // SAFETY: inside our mapping; no reference is formed, and callers
        // write only while no job reads it.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.p, data.len()) };
    }

    /// The first `len` bytes.
    pub fn read_len(&self, len: usize) -> Vec<u8> {
        assert!(len <= self.len);
        let mut v = vec![0u8; len];
        // SAFETY: as in `write`; callers read only after the jobs writing
        // it have signalled.
        unsafe { std::ptr::copy_nonoverlapping(self.p, v.as_mut_ptr(), len) };
        v
    }

    /// All of it.
    pub fn read(&self) -> Vec<u8> {
        self.read_len(self.len)
    }

    /// The memory as a slice for a device read (`Job::h2c_user`).
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: mapped for our lifetime; nothing writes it while a job
        // reads it in these tests.
        unsafe { std::slice::from_raw_parts(self.p, self.len) }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: our own mapping (the one a re-back put there, if any).
        unsafe { libc::munmap(self.p.cast(), self.len) };
    }
}
