//! `cargo fuzz run http_preamble`: see `egret_fuzz::preamble` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egret_fuzz::preamble::run(data));
