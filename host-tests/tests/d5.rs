//! D5 conformance: a DMA mapping captures the pages behind a range at map
//! time, on every transport. Re-backing the address afterwards does not
//! change what the device reaches until the range is unmapped — exactly the
//! behaviour that makes a registration cache necessary (and dangerous).

mod common;

use common::*;
use fdma::backend::{DmaProt, DmaSource};
use fdma::{Endpoint, Job};

fn anon(len: usize, at: Option<*mut u8>) -> *mut u8 {
    let (addr, flags) = match at {
        Some(p) => (p.cast(), libc::MAP_FIXED),
        None => (std::ptr::null_mut(), 0),
    };
    // SAFETY: a private anonymous mapping; with MAP_FIXED it replaces our
    // own earlier mapping of the same range, which nothing references.
    let p = unsafe {
        libc::mmap(
            addr,
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | flags,
            -1,
            0,
        )
    };
    assert_ne!(p, libc::MAP_FAILED);
    p.cast()
}

fn fill(p: *mut u8, data: &[u8]) {
    // SAFETY: `p` is our own mapping of at least `data.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), p, data.len()) };
}

#[test]
fn d5_device_reaches_the_pages_captured_at_map_time() {
    let rig = rig();
    let dev = &rig.dev;
    let backend = dev.backend();
    if !backend.dma_limits().vaddr_pinned {
        panic!(
            "{}: mappings by address are not pinned on this host (no io_uring); \
             D5 cannot hold",
            dev.name()
        );
    }
    let len = 64 * 1024;
    let p = anon(len, None);
    let old = pattern(0xD5, len);
    fill(p, &old);
    let space = dev.dma_space().unwrap();
    let iova = space.alloc_iova(len as u64, 4096).unwrap();
    backend
        .dma_map(iova, len as u64, DmaSource::Vaddr(p), DmaProt::RW)
        .unwrap();

    // Re-back the address: same virtual range, new pages, new content.
    let p2 = anon(len, Some(p));
    assert_eq!(p2, p);
    let new = pattern(0xBAD, len);
    fill(p, &new);

    let c = dev.channel(0).unwrap();
    let mut j = Job::new();
    j.push(Endpoint::Iova(iova), Endpoint::Card(0x40_0000), len as u64);
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut card = vec![0u8; len];
    dev.card_read(0x40_0000, &mut card).unwrap();
    assert_same(&card, &old, "device read after re-backing the address");

    // Device writes land in the old pages too: the process does not see them.
    dev.card_write(0x50_0000, &pattern(7, len)).unwrap();
    let mut j = Job::new();
    j.push(Endpoint::Card(0x50_0000), Endpoint::Iova(iova), len as u64);
    wait(&c.submit(&j).unwrap()).unwrap();
    let mut now = vec![0u8; len];
    // SAFETY: reading our own mapping.
    unsafe { std::ptr::copy_nonoverlapping(p, now.as_mut_ptr(), len) };
    assert_same(&now, &new, "the process's new pages are untouched");

    // Unmap rules: exact match only, then the range is gone for the device.
    assert!(backend.dma_unmap(iova, 4096).is_err());
    backend.dma_unmap(iova, len as u64).unwrap();
    let mut read = Job::new();
    read.push(Endpoint::Iova(iova), Endpoint::Card(0), len as u64);
    let s = wait(&c.submit(&read).unwrap());
    assert!(
        matches!(s, Err(fdma::FenceError::IommuFault { .. })),
        "a device read after unmap must fault: {s:?}"
    );
    space.free_iova(iova, len as u64);
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(p.cast(), len) };
}

#[test]
fn d5_overlapping_maps_are_refused() {
    let rig = rig();
    let dev = &rig.dev;
    let backend = dev.backend();
    let len = 16 * 1024;
    let p = anon(len, None);
    let space = dev.dma_space().unwrap();
    let iova = space.alloc_iova(len as u64 * 2, 4096).unwrap();
    backend
        .dma_map(iova, len as u64, DmaSource::Vaddr(p), DmaProt::READ)
        .unwrap();
    let e = backend
        .dma_map(iova + 4096, len as u64, DmaSource::Vaddr(p), DmaProt::READ)
        .unwrap_err();
    assert!(
        e.to_string().contains("refused") || e.to_string().contains("EEXIST"),
        "{e}"
    );
    backend.dma_unmap(iova, len as u64).unwrap();
    space.free_iova(iova, len as u64 * 2);
    // SAFETY: unmapping our own mapping.
    unsafe { libc::munmap(p.cast(), len) };
}
