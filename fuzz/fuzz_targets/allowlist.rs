//! `cargo fuzz run allowlist`: see `egret_fuzz::allowlist` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egret_fuzz::allowlist::run(data));
