//! The conformance table, live: the `egret` binary on loopback with real origin servers, once
//! per runtime.

use std::path::Path;

fn every_case_passes_on(runtime: &str) {
    let cases = egret_conformance::cases::all();
    let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
    let report =
        egret_conformance::live::run_all(bin, runtime, &cases).expect("start the live world");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.ran, cases.len());
}

#[test]
fn every_case_passes_on_tokio() {
    every_case_passes_on("tokio");
}

#[test]
fn every_case_passes_on_mio() {
    every_case_passes_on("mio");
}

#[test]
fn every_case_passes_on_glommio() {
    every_case_passes_on("glommio");
}
