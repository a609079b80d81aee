//! The whole case table against core in the simulated world.

#[test]
fn every_case_passes_against_core() {
    let cases = egret_conformance::cases::all();
    let mut failures = Vec::new();
    for case in &cases {
        if let Err(failure) = egret_conformance::sim::run(case) {
            failures.push(format!("  {}: {failure}", case.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}
