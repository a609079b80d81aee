//! The denied-requests metric: counts of `Closed` records by listener mode, written as
//! CloudWatch Embedded Metric Format (EMF) events into the log stream, from which CloudWatch
//! extracts `Requests`, `Denied` and `Errors` in the configured namespace with the dimension
//! `Mode`.
//!
//! The access-log thread counts each record with [`Counts::record`] (three relaxed atomic
//! additions at most); the shipper takes the counts every interval with [`Counts::take`] and
//! turns them into events with [`emf`].

use std::sync::atomic::{AtomicU64, Ordering};

use egret_core::{Access, Closed, ListenerKind, Reason, UnixMillis};
use serde_json::json;

/// Counts for the current interval, one set per listener mode.
#[derive(Debug, Default)]
pub struct Counts {
    modes: [ModeCounts; 3],
}

/// The counts of one mode over one interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    /// Records (requests and tunnels) that ended.
    pub requests: u64,
    /// Records the policy denied (audit findings are not denials).
    pub denied: u64,
    /// Records that failed on the gateway's or the upstream's side.
    pub errors: u64,
}

#[derive(Debug, Default)]
struct ModeCounts {
    requests: AtomicU64,
    denied: AtomicU64,
    errors: AtomicU64,
}

/// Every listener mode, in the order [`Counts::take`] returns them.
pub const MODES: [ListenerKind; 3] = [
    ListenerKind::Explicit,
    ListenerKind::TransparentHttp,
    ListenerKind::TransparentTls,
];

impl Counts {
    /// Counts one record.
    pub fn record(&self, record: &Closed) {
        let counts = &self.modes[index(record.listener)];
        counts.requests.fetch_add(1, Ordering::Relaxed);
        if matches!(record.access, Some(Access::Denied(_))) {
            counts.denied.fetch_add(1, Ordering::Relaxed);
        }
        if is_error(record) {
            counts.errors.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns the counts since the last take, by mode in [`MODES`] order, and starts over.
    pub fn take(&self) -> [Tally; 3] {
        self.modes.each_ref().map(|counts| Tally {
            requests: counts.requests.swap(0, Ordering::Relaxed),
            denied: counts.denied.swap(0, Ordering::Relaxed),
            errors: counts.errors.swap(0, Ordering::Relaxed),
        })
    }
}

impl Tally {
    /// Returns whether nothing was counted.
    #[must_use]
    pub fn is_zero(&self) -> bool {
        *self == Tally::default()
    }
}

/// Returns whether a record is an error: a 5xx reply, or a failure to reach or hear from the
/// upstream (a truncated response or a reset tunnel has no 5xx to show for it).
#[must_use]
pub fn is_error(record: &Closed) -> bool {
    let failed = match record.reason {
        Reason::DnsFailed
        | Reason::ConnectFailed
        | Reason::ConnectTimeout
        | Reason::ReadTimeout
        | Reason::InvalidResponse
        | Reason::EmptyResponse
        | Reason::UpstreamClosed => true,
        Reason::Completed
        | Reason::Denied
        | Reason::InvalidRequest
        | Reason::HeaderTooLarge
        | Reason::HeaderTimeout
        | Reason::ClientClosed
        | Reason::IdleTimeout
        | Reason::Shutdown => false,
    };
    failed || record.status >= 500
}

/// Returns the EMF event (one JSON line) carrying one mode's counts at `at`.
#[must_use]
pub fn emf(namespace: &str, mode: ListenerKind, tally: Tally, at: UnixMillis) -> String {
    json!({
        "_aws": {
            "Timestamp": at.0,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["Mode"]],
                "Metrics": [
                    {"Name": "Requests", "Unit": "Count"},
                    {"Name": "Denied", "Unit": "Count"},
                    {"Name": "Errors", "Unit": "Count"},
                ],
            }],
        },
        "Mode": mode.as_str(),
        "Requests": tally.requests,
        "Denied": tally.denied,
        "Errors": tally.errors,
    })
    .to_string()
}

/// Returns the EMF events for one interval: one for each mode in `modes` (those with
/// listeners), and one for any other mode that counted something.
#[must_use]
pub fn events(
    namespace: &str,
    modes: &[ListenerKind],
    tallies: [Tally; 3],
    at: UnixMillis,
) -> Vec<String> {
    MODES
        .into_iter()
        .zip(tallies)
        .filter(|(mode, tally)| modes.contains(mode) || !tally.is_zero())
        .map(|(mode, tally)| emf(namespace, mode, tally, at))
        .collect()
}

fn index(mode: ListenerKind) -> usize {
    match mode {
        ListenerKind::Explicit => 0,
        ListenerKind::TransparentHttp => 1,
        ListenerKind::TransparentTls => 2,
    }
}

#[cfg(test)]
pub(super) mod tests {
    use std::time::Duration;

    use egret_core::policy::DenyReason;

    use super::*;

    #[test]
    fn records_are_counted_by_mode_and_taken_once() {
        let counts = Counts::default();
        counts.record(&record(ListenerKind::Explicit, 200, Some(Access::Allowed)));
        let denied = Some(Access::Denied(DenyReason::NotAllowlisted));
        counts.record(&record(ListenerKind::Explicit, 403, denied));
        counts.record(&record(ListenerKind::TransparentTls, 403, denied));
        let audited = Some(Access::Audited(DenyReason::NotAllowlisted));
        counts.record(&record(ListenerKind::TransparentHttp, 200, audited));
        let mut failed = record(ListenerKind::Explicit, 503, Some(Access::Allowed));
        failed.reason = Reason::DnsFailed;
        counts.record(&failed);
        let [explicit, http, tls] = counts.take();
        assert_eq!(
            explicit,
            Tally {
                requests: 3,
                denied: 1,
                errors: 1
            }
        );
        assert_eq!(
            http,
            Tally {
                requests: 1,
                denied: 0,
                errors: 0
            }
        );
        assert_eq!(
            tls,
            Tally {
                requests: 1,
                denied: 1,
                errors: 0
            }
        );
        assert!(counts.take().iter().all(Tally::is_zero));
    }

    #[test]
    fn errors_are_5xx_replies_and_upstream_failures() {
        let mut truncated = record(ListenerKind::Explicit, 200, Some(Access::Allowed));
        truncated.reason = Reason::UpstreamClosed;
        assert!(is_error(&truncated));
        let mut reset_by_client = truncated.clone();
        reset_by_client.reason = Reason::ClientClosed;
        assert!(!is_error(&reset_by_client));
        let mut bad_request = truncated.clone();
        bad_request.reason = Reason::InvalidRequest;
        bad_request.status = 400;
        assert!(!is_error(&bad_request));
        let mut gateway_timeout = truncated;
        gateway_timeout.reason = Reason::Completed;
        gateway_timeout.status = 504;
        assert!(is_error(&gateway_timeout));
    }

    #[test]
    fn the_emf_event_declares_three_counts_with_the_mode_dimension() {
        let tally = Tally {
            requests: 7,
            denied: 2,
            errors: 1,
        };
        let line = emf(
            "Egret",
            ListenerKind::TransparentTls,
            tally,
            UnixMillis(1_732_540_800_000),
        );
        assert!(!line.contains('\n'));
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["_aws"]["Timestamp"], 1_732_540_800_000u64);
        let directive = &value["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Egret");
        assert_eq!(directive["Dimensions"], json!([["Mode"]]));
        let names: Vec<&str> = directive["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Requests", "Denied", "Errors"]);
        assert_eq!(value["Mode"], "transparent_tls");
        assert_eq!(value["Requests"], 7);
        assert_eq!(value["Denied"], 2);
        assert_eq!(value["Errors"], 1);
    }

    #[test]
    fn modes_with_listeners_report_zeros_and_others_only_counts() {
        let mut tallies = [Tally::default(); 3];
        let at = UnixMillis(1);
        assert_eq!(
            events("Egret", &[ListenerKind::Explicit], tallies, at).len(),
            1
        );
        tallies[2].requests = 1;
        let lines = events("Egret", &[ListenerKind::Explicit], tallies, at);
        assert_eq!(lines.len(), 2);
        assert!(lines[1].contains("\"transparent_tls\""), "{}", lines[1]);
        assert!(events("Egret", &[], [Tally::default(); 3], at).is_empty());
    }

    /// Returns a record of a request on `listener` answered with `status`.
    pub(crate) fn record(listener: ListenerKind, status: u16, access: Option<Access>) -> Closed {
        Closed {
            session: 1,
            seq: 1,
            at: UnixMillis(1_732_540_800_123),
            duration: Duration::ZERO,
            client: "10.0.1.17:40000".parse().unwrap(),
            listener,
            original_dst: None,
            method: "GET".into(),
            url: "http://example.com/".into(),
            host: None,
            port: 80,
            status,
            access,
            rule: None,
            reason: Reason::Completed,
            detail: None,
            bytes_to_client: 0,
            bytes_from_client: 0,
            upstream: None,
            content_type: None,
            sni: None,
            ech: false,
            dst_mismatch: false,
            vpc_endpoint: None,
        }
    }
}
