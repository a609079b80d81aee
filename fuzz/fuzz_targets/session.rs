//! `cargo fuzz run session`: see `egret_fuzz::session` for the input and the checks. The input
//! is decoded as `session::run` decodes it, so `cargo fuzz fmt session FILE` shows it.
#![no_main]

libfuzzer_sys::fuzz_target!(|input: egret_fuzz::session::Input| {
    egret_fuzz::session::play(&input);
});
