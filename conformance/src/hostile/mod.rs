//! Hostile cases, grouped by theme: inputs written to slip past an egress filter. Each theme
//! is one function returning cases whose names carry the theme's prefix; [`all`] joins them
//! and [`crate::cases::all`] includes them, so the simulated world and every live runtime
//! replay them.
//!
//! Every case states its outcome exactly (status and `X-Squid-Error`, the TLS alert and a
//! close, or a tunnel that echoes), and every deny or 400 names the access record it leaves.

mod host;
mod proxy;
mod smuggling;
mod ssrf;
mod tls;

use crate::case::{Case, LogExpect, Step};
use crate::cases::{case, log, reply, send};

/// A fatal `access_denied` alert record, what an inspected tunnel sends for a denied hello.
pub const ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];

/// Returns every theme: its name prefix and its cases.
#[must_use]
pub fn themes() -> Vec<(&'static str, Vec<Case>)> {
    vec![
        ("host_", host::cases()),
        ("smuggle_", smuggling::cases()),
        ("tls_", tls::cases()),
        ("proxy_", proxy::cases()),
        ("ssrf_", ssrf::cases()),
    ]
}

/// Returns every hostile case.
#[must_use]
pub fn all() -> Vec<Case> {
    themes().into_iter().flat_map(|(_, cases)| cases).collect()
}

/// What the access log must show for a step that refuses: `TCP_DENIED/403` for a 403 or a
/// TLS alert, a `…/400` record for a 400; `None` for a step that refuses nothing.
#[must_use]
pub fn refusal(step: &Step) -> Option<Refusal> {
    match step {
        Step::Response(want) if want.status == 403 => Some(Refusal::Denied),
        Step::Response(want) if want.status == 400 => Some(Refusal::Invalid),
        Step::ReceiveBytes(bytes) if bytes.ends_with(ALERT) => Some(Refusal::Denied),
        Step::Response(_)
        | Step::ReceiveBytes(_)
        | Step::Send(_)
        | Step::Wait(_)
        | Step::HalfClose
        | Step::Tunnel
        | Step::Echo(_)
        | Step::Receive(_)
        | Step::SendBytes(_)
        | Step::Closed
        | Step::Truncated => None,
    }
}

/// A refusal, by the access record it must leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// A 403 or a TLS alert: `TCP_DENIED/403`.
    Denied,
    /// A 400: a record whose status is 400.
    Invalid,
}

impl Refusal {
    /// Returns whether `record` is the access record this refusal leaves.
    #[must_use]
    pub fn logged_by(self, record: &LogExpect) -> bool {
        match self {
            Refusal::Denied => record.code == "TCP_DENIED/403",
            Refusal::Invalid => record.code.ends_with("/400"),
        }
    }
}

/// Returns a generated case name. Names are `&'static str` so that reports can hold them;
/// the table is built a few times per test process, so leaking them costs a few kilobytes.
fn name(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

/// Returns what the access log shows for a target: lowercase, without the trailing dot.
fn logged(target: &str) -> String {
    target.to_ascii_lowercase().replace(".:", ":")
}

/// A CONNECT to `target` that is refused with the 403.
fn connect_denied(name: &'static str, target: &str) -> Case {
    case(
        name,
        vec![
            send(&format!(
                "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
            )),
            reply(403, "ERR_ACCESS_DENIED"),
            Step::Closed,
        ],
        vec![log("TCP_DENIED/403", "CONNECT", &logged(target))],
    )
}

/// An absolute-form GET of `url` that is refused with the 403.
fn get_denied(name: &'static str, url: &str) -> Case {
    case(
        name,
        vec![
            send(&format!("GET {url} HTTP/1.1\r\n\r\n")),
            reply(403, "ERR_ACCESS_DENIED"),
            Step::Closed,
        ],
        vec![log("TCP_DENIED/403", "GET", &logged(url))],
    )
}

/// The record of a request refused with 400 before it was decided.
fn invalid_log() -> Vec<LogExpect> {
    vec![log("NONE_NONE/400", "NONE", "error:invalid-request")]
}

/// A request refused with 400 `ERR_INVALID_REQ` before any decision.
fn invalid(name: &'static str, request: &str) -> Case {
    case(
        name,
        vec![send(request), reply(400, "ERR_INVALID_REQ"), Step::Closed],
        invalid_log(),
    )
}

/// Raw bytes (no port placeholders) refused with 400 `ERR_INVALID_REQ` before any decision.
fn invalid_bytes(name: &'static str, request: Vec<u8>) -> Case {
    case(
        name,
        vec![
            Step::SendBytes(request),
            reply(400, "ERR_INVALID_REQ"),
            Step::Closed,
        ],
        invalid_log(),
    )
}
