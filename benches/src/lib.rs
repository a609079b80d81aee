//! Benchmarks of Egret: criterion benchmarks of the core (`benches/core.rs`) and shared
//! fixtures for them, and the load harness ([`load`], run by the `egret-load` binary) that
//! compares the runtimes with Squid, HAProxy and no proxy at all.

pub mod load;

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings};

/// A captured curl ClientHello naming `allowed.test` (517 bytes).
pub const HELLO_CLASSIC: &[u8] =
    include_bytes!("../../core/tests/fixtures/hello/curl-7.88-openssl-3.0.bin");
/// A captured Chromium ClientHello with a post-quantum key share (1786 bytes).
pub const HELLO_POST_QUANTUM: &[u8] =
    include_bytes!("../../core/tests/fixtures/hello/chromium-156-x25519mlkem768.bin");

/// Returns a policy of about `size` entries: half exact names, half domains, plus
/// `allowed.test` and `.amazonaws.com`.
#[must_use]
pub fn policy_of(size: usize, settings: PolicySettings) -> Policy {
    let mut entries = Vec::with_capacity(size + 2);
    for i in 0..size {
        let text = if i % 2 == 0 {
            format!("svc{i}.corp{}.example", i % 97)
        } else {
            format!(".team{i}.example")
        };
        entries.push(text);
    }
    entries.push("allowed.test".to_owned());
    entries.push(".amazonaws.com".to_owned());
    let parsed = entries
        .iter()
        .filter_map(|e| Entry::parse(e).ok())
        .map(|(entry, _)| entry);
    Policy::new(Allowlist::compile(parsed), settings)
}
