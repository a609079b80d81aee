//! `cargo fuzz run tls_hello`: see `egret_fuzz::hello` for the input format and the checks.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| egret_fuzz::hello::run(data));
