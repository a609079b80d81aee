//! The shape of the hostile table: large enough, every theme present, names unique and
//! prefixed by their theme, and every refusal checked in the access log.

use std::collections::HashSet;

use egret_conformance::hostile;

#[test]
fn the_hostile_table_has_at_least_200_cases() {
    let count = hostile::all().len();
    assert!(count >= 200, "{count} hostile cases");
}

#[test]
fn every_theme_has_cases_named_after_it() {
    for (prefix, cases) in hostile::themes() {
        assert!(!cases.is_empty(), "theme {prefix} is empty");
        for case in &cases {
            assert!(
                case.name.starts_with(prefix),
                "{} is not named {prefix}…",
                case.name
            );
        }
    }
}

#[test]
fn names_are_unique_across_the_whole_table() {
    let cases = egret_conformance::cases::all();
    let mut seen = HashSet::new();
    let duplicates: Vec<_> = cases.iter().filter(|c| !seen.insert(c.name)).collect();
    assert!(duplicates.is_empty(), "duplicate names: {duplicates:?}");
}

#[test]
fn every_refusal_is_checked_in_the_access_log() {
    let mut refusals = 0;
    for case in hostile::all() {
        for refusal in case.steps.iter().filter_map(hostile::refusal) {
            refusals += 1;
            assert!(
                case.log.iter().any(|record| refusal.logged_by(record)),
                "{}: a {refusal:?} refusal without its access record: {:?}",
                case.name,
                case.log
            );
        }
    }
    assert!(refusals >= 150, "only {refusals} refusals");
}

#[test]
fn the_whole_table_is_included_in_the_case_table() {
    let table: HashSet<_> = egret_conformance::cases::all()
        .into_iter()
        .map(|c| c.name)
        .collect();
    for case in hostile::all() {
        assert!(
            table.contains(case.name),
            "{} is not in cases::all()",
            case.name
        );
    }
}
