//! `fdma dma --input/--output` and the argument errors of `fdma dma`,
//! against the built-in simulator.

mod common;

use common::*;

/// Reproducible pseudo-random bytes (xorshift).
fn random_bytes(len: usize, mut x: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(len);
    v
}

#[test]
fn input_file_round_trips_to_the_output_file() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    let output = dir.path().join("out.bin");
    // An odd size, not a multiple of any burst or word.
    let data = random_bytes(100_003, 0x1234_5678_9abc_def1);
    std::fs::write(&input, &data).unwrap();
    let o = fdma(&[
        "dma",
        "--dir",
        "h2c,c2h",
        "--count",
        "2",
        "--input",
        input.to_str().unwrap(),
        "--output",
        output.to_str().unwrap(),
    ]);
    let (out, err) = text(&o);
    assert!(o.status.success(), "stdout:\n{out}\nstderr:\n{err}");
    for d in ["h2c", "c2h"] {
        assert!(
            out.lines()
                .any(|l| l.trim_start().starts_with(d) && l.ends_with("ok")),
            "{d} not verified:\n{out}"
        );
    }
    let got = std::fs::read(&output).unwrap();
    assert_eq!(got.len(), data.len());
    assert!(got == data, "the output file differs from the input file");
}

#[test]
fn size_zero_is_a_clear_error() {
    fails_with(&["dma", "--size", "0"], "--size 0");
}

#[test]
fn card_range_beyond_card_memory_names_its_size() {
    // The simulated card has 256 MiB of card memory.
    fails_with(
        &[
            "dma",
            "--dir",
            "h2c",
            "--size",
            "4k",
            "--card-offset",
            "256M",
        ],
        "card memory of 256 MiB",
    );
    fails_with(
        &[
            "dma",
            "--dir",
            "c2h",
            "--size",
            "8k",
            "--card-offset",
            "0xffff000",
        ],
        "card memory of 256 MiB",
    );
}

#[test]
fn missing_or_empty_input_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-file.bin");
    fails_with(
        &["dma", "--input", missing.to_str().unwrap()],
        missing.to_str().unwrap(),
    );
    let empty = dir.path().join("empty.bin");
    std::fs::write(&empty, b"").unwrap();
    fails_with(&["dma", "--input", empty.to_str().unwrap()], "is empty");
    let small = dir.path().join("small.bin");
    std::fs::write(&small, [7u8; 100]).unwrap();
    fails_with(
        &["dma", "--input", small.to_str().unwrap(), "--size", "4k"],
        "larger than the input file",
    );
}

/// Mismatched data: a simulator that silently corrupts a byte of a DMA
/// write to host memory (no status reports it) makes `fdma dma` fail with
/// the first differing offset, and `--output` keeps what came back.
#[test]
fn a_corrupted_transfer_fails_with_the_first_differing_offset() {
    let sim = SimProc::start_private(&["--corrupt-host-writes", "1"]);
    let o = fdma(&[
        "--device",
        &sim.name(),
        "dma",
        "--dir",
        "c2h",
        "--size",
        "64K",
        "--count",
        "1",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(1), "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("data mismatch at byte"), "{err}");
    // The middle byte of the device's first write: one 256-byte payload
    // (the card's max payload), so byte 128 of the copy.
    assert!(err.contains("at byte 128 of 65536"), "{err}");
}
