//! The conformance table, live: the `egret` binary on loopback with real origin servers.

use std::path::Path;

#[test]
fn every_case_passes_on_tokio() {
    let cases = egret_conformance::cases::all();
    let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
    let report =
        egret_conformance::live::run_all(bin, "tokio", &cases).expect("start the live world");
    assert!(report.failures.is_empty(), "{report}");
    assert_eq!(report.ran, cases.len());
}
