//! Replays the fuzz corpora through the fuzz targets' own bodies, so that `cargo test` checks
//! every input cargo-fuzz kept (`fuzz/corpus/<target>/`) and every crash fixed since
//! (`fuzz/regressions/<target>/`), with no extra tool. `fuzz/README.md` says what each target
//! checks and how to fuzz for longer.

// The targets' bodies are one library shared with the `egret-fuzz` crate, whose items are
// public for its fuzz targets.
#[allow(unreachable_pub, dead_code)]
#[path = "../../fuzz/src/lib.rs"]
mod fuzz_driver;

use std::any::Any;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};

#[test]
fn http_preamble_corpus_passes() {
    replay("http_preamble", fuzz_driver::preamble::run);
}

#[test]
fn tls_hello_corpus_passes() {
    replay("tls_hello", fuzz_driver::hello::run);
}

#[test]
fn proxy_protocol_corpus_passes() {
    replay("proxy_protocol", fuzz_driver::proxy::run);
}

#[test]
fn allowlist_corpus_passes() {
    replay("allowlist", fuzz_driver::allowlist::run);
}

#[test]
fn session_corpus_passes() {
    replay("session", fuzz_driver::session::run);
}

/// Runs every file of the target's corpus and regressions, naming the first that fails.
fn replay(target: &str, run: fn(&[u8])) {
    let files = inputs(target);
    assert!(
        !files.is_empty(),
        "fuzz/corpus/{target} is empty; is the corpus missing?"
    );
    for path in files {
        let data = std::fs::read(&path).expect("a readable corpus file");
        if let Err(panic) = panic::catch_unwind(AssertUnwindSafe(|| run(&data))) {
            panic!(
                "{target}: {} fails: {}",
                path.display(),
                message(panic.as_ref())
            );
        }
    }
}

/// Returns the target's corpus and regression inputs, in name order.
fn inputs(target: &str) -> Vec<PathBuf> {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut files = Vec::new();
    for kind in ["corpus", "regressions"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(kind).join(target)) else {
            continue;
        };
        for entry in dir {
            let path = entry.expect("a directory entry").path();
            if path.is_file() {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

fn message(panic: &(dyn Any + Send)) -> String {
    match (panic.downcast_ref::<&str>(), panic.downcast_ref::<String>()) {
        (Some(text), _) => (*text).to_owned(),
        (None, Some(text)) => text.clone(),
        (None, None) => "a panic".to_owned(),
    }
}
