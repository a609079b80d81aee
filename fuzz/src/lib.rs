//! The bodies of Egret's fuzz targets: input formats, reference models, a session driver that
//! keeps the drive contract, and the invariants checked after every handler.
//!
//! This file is compiled twice: as the `egret-fuzz` library that the `cargo fuzz` targets in
//! `fuzz_targets/` call, and as a module of core's `tests/fuzz_corpus.rs`, which replays every
//! file of `fuzz/corpus/<target>/` through the same `run` functions on each `cargo test`. So
//! nothing here names `crate::`; modules reach each other through `super::`.
//!
//! Each target's `run(data)` panics when a check fails; every other input returns quietly.

pub mod allowlist;
pub mod drive;
pub mod hello;
pub mod preamble;
pub mod proxy;
pub mod session;

/// Returns `bytes` cut into the reads a runtime might have made, chosen by `seed`: one read
/// for 0; otherwise reads of pseudo-random sizes up to a bound the low bits pick.
#[must_use]
pub fn chunks(bytes: &[u8], seed: u8) -> Vec<&[u8]> {
    if seed == 0 || bytes.is_empty() {
        return vec![bytes];
    }
    const BOUNDS: [usize; 8] = [1, 2, 3, 5, 8, 17, 64, 700];
    let bound = BOUNDS[usize::from(seed & 7)];
    // xorshift32 seeded from the whole byte: the high bits vary the cut points.
    let mut state = u32::from(seed).wrapping_mul(0x9e37_79b9) | 1;
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        let size = 1 + state as usize % bound;
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}
