//! The load harness (`egret_benches::load`, the `egret-load` binary) in smoke mode against this
//! build's `egret`: every workload on every runtime with tiny sizes and no peers, so that the
//! harness keeps working between the times someone runs it in full (see BENCHMARKS.md).
//!
//! The transparent-TLS workload builds network namespaces, so like `tests/transparent.rs` this
//! needs root, `ip` and `nft`; without them it fails and says what is missing.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::path::Path;

use egret_benches::load::{self, RUNTIMES, Status, Target, Workload};

#[test]
fn every_workload_runs_on_every_runtime() {
    let report = load::run_smoke(Path::new(env!("CARGO_BIN_EXE_egret")))
        .unwrap_or_else(|e| panic!("the harness could not start: {e}"));
    eprintln!("{}", report.table());
    let mut targets = vec![Target::Direct];
    targets.extend(RUNTIMES.map(|r| Target::Egret(r.to_owned())));
    let mut problems = Vec::new();
    for workload in Workload::ALL {
        for target in &targets {
            let name = format!("{} / {}", workload.label(), target.label());
            let Some(row) = report.row(workload, target) else {
                problems.push(format!("{name}: no row"));
                continue;
            };
            let m = match &row.status {
                Status::Ran(m) => m,
                Status::Skipped(why) => {
                    problems.push(format!("{name}: not run: {why}"));
                    continue;
                }
                Status::Failed(why) => {
                    problems.push(format!("{name}: failed: {why}"));
                    continue;
                }
            };
            if m.ops == 0 || m.rate(workload) <= 0.0 {
                problems.push(format!("{name}: nothing completed: {m:?}"));
            }
            if m.errors > 0 {
                problems.push(format!(
                    "{name}: {} operations failed, the first: {:?}",
                    m.errors, m.first_error
                ));
            }
            let proxied = matches!(target, Target::Egret(_));
            if proxied && (m.cpu.is_none() || m.peak_rss_kib.is_none()) {
                problems.push(format!("{name}: the proxy's /proc figures are missing"));
            }
            if proxied && workload == Workload::IdleTunnels && m.kib_per_tunnel.is_none() {
                problems.push(format!("{name}: no memory per tunnel"));
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the load harness's smoke run had problems:\n  {}\n\n{}",
        problems.join("\n  "),
        report.table()
    );
}
