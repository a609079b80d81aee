//! Egret's conformance suite: one table of cases (listener, policy, DNS answers, bytes the
//! client sends, expected outcome) replayed two ways — against `egret-core` in a simulated
//! world ([`sim`]) and against a live `egret` process on loopback ([`live`]), for every
//! runtime.
//!
//! A case passes only if both the client's view (status, `X-Squid-Error`, bodies, tunnels,
//! closes) and the access log match. The hostile inputs (host tricks, smuggling, TLS tricks,
//! PROXY spoofing, SSRF) are grouped by theme in [`hostile`].

pub mod case;
pub mod cases;
pub mod client;
pub mod hello;
pub mod hostile;
pub mod live;
pub mod netns;
pub mod origin;
pub mod sim;

use std::fmt;

use egret_core::Closed;

use case::{LogExpect, Ports};

/// The reply to an accepted CONNECT.
pub const CONNECT_ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

/// Why a case failed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Failure {
    /// The index of the step that failed, or `None` for the log and invariant checks.
    pub step: Option<usize>,
    /// What went wrong.
    pub message: String,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.step {
            Some(step) => write!(f, "step {step}: {}", self.message),
            None => write!(f, "{}", self.message),
        }
    }
}

/// The columns of an access-log line that cases check.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// `code/status`, e.g. `TCP_TUNNEL/200`.
    pub code: String,
    /// The method column.
    pub method: String,
    /// The URL column.
    pub url: String,
}

/// Returns the checked columns of a core record, as the Squid formatter writes them.
#[must_use]
pub fn squid_fields(record: &Closed) -> LogRecord {
    LogRecord {
        code: format!(
            "{}/{:03}",
            egret_core::format::squid_code(record),
            record.status
        ),
        method: record.method.to_string(),
        url: record.url.clone(),
    }
}

/// Checks that every expected record is among `records`.
pub fn check_log(
    expected: &[LogExpect],
    ports: &Ports,
    records: &[LogRecord],
) -> Result<(), String> {
    for want in expected {
        let url = ports.fill(&want.url);
        let found = records
            .iter()
            .any(|r| r.code == want.code && r.method == want.method && r.url == url);
        if !found {
            return Err(format!(
                "no access record {} {} {url}; records: {records:?}",
                want.code, want.method
            ));
        }
    }
    Ok(())
}
