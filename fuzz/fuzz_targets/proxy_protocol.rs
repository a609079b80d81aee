//! `cargo fuzz run proxy_protocol`: see `egret_fuzz::proxy` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egret_fuzz::proxy::run(data));
