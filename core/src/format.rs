//! Access-log lines: Squid's native format and JSON, as pure functions of a [`Closed`] record.
//!
//! Squid's `logformat squid` is
//! `%ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru %[un %Sh/%<a %mt`. Denied lines always contain
//! `TCP_DENIED`, which metric filters count; audit findings are tagged `_AUDIT` so that they
//! stand out without being counted as denials.

use std::fmt::Write as _;

use serde::Serialize;

use crate::event::{Access, Closed};

/// Returns Squid's result code for a record: `TCP_TUNNEL`, `TCP_MISS`, `TCP_DENIED`,
/// `NONE_NONE`, or `TCP_TUNNEL_AUDIT` / `TCP_MISS_AUDIT` for audit findings.
#[must_use]
pub fn squid_code(record: &Closed) -> &'static str {
    let tunnel = &*record.method == "CONNECT";
    match (record.access, tunnel) {
        (None, _) => "NONE_NONE",
        (Some(Access::Denied(_)), _) => "TCP_DENIED",
        (Some(Access::Allowed), true) => "TCP_TUNNEL",
        (Some(Access::Allowed), false) => "TCP_MISS",
        (Some(Access::Audited(_)), true) => "TCP_TUNNEL_AUDIT",
        (Some(Access::Audited(_)), false) => "TCP_MISS_AUDIT",
    }
}

/// Appends one Squid native access-log line (with its newline) to `out`.
pub fn squid(record: &Closed, out: &mut String) {
    let secs = record.at.0 / 1000;
    let millis = record.at.0 % 1000;
    let elapsed = record.duration.as_millis();
    let hierarchy = match record.upstream {
        Some(addr) => format!("HIER_DIRECT/{}", addr.ip()),
        None => "HIER_NONE/-".to_owned(),
    };
    let _ = writeln!(
        out,
        "{secs}.{millis:03} {elapsed:>6} {client} {code}/{status:03} {bytes} {method} {url} - \
         {hierarchy} {ctype}",
        client = record.client.ip(),
        code = squid_code(record),
        status = record.status,
        bytes = record.bytes_to_client,
        method = record.method,
        url = record.url,
        ctype = record.content_type.as_deref().unwrap_or("-"),
    );
}

/// Appends one JSON access-log line (with its newline) to `out`: the Squid facts plus mode,
/// decision, rule, reason, bytes each way and addresses.
pub fn json(record: &Closed, out: &mut String) {
    let line = JsonLine {
        ts: record.at.0 as f64 / 1000.0,
        session: record.session,
        seq: record.seq,
        duration_ms: record.duration.as_millis() as u64,
        client: record.client.to_string(),
        mode: record.listener.as_str(),
        method: &record.method,
        url: &record.url,
        host: record.host.as_ref().map(ToString::to_string),
        port: record.port,
        status: record.status,
        code: squid_code(record),
        decision: record.access.map(Access::as_str),
        deny_reason: record
            .access
            .and_then(Access::deny_reason)
            .map(|r| r.as_str()),
        rule: record.rule.as_deref(),
        reason: record.reason.as_str(),
        detail: record.detail,
        bytes_to_client: record.bytes_to_client,
        bytes_from_client: record.bytes_from_client,
        upstream: record.upstream.map(|a| a.to_string()),
        original_dst: record.original_dst.map(|a| a.to_string()),
        content_type: record.content_type.as_deref(),
        sni: record.sni.as_ref().map(ToString::to_string),
        ech: record.ech,
        dst_mismatch: record.dst_mismatch,
        vpc_endpoint_id: record.vpc_endpoint.as_deref(),
    };
    if let Ok(text) = serde_json::to_string(&line) {
        out.push_str(&text);
        out.push('\n');
    }
}

#[derive(Serialize)]
struct JsonLine<'a> {
    ts: f64,
    session: u64,
    seq: u32,
    duration_ms: u64,
    client: String,
    mode: &'static str,
    method: &'a str,
    url: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    host: Option<String>,
    port: u16,
    status: u16,
    code: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    deny_reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rule: Option<&'a str>,
    reason: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<&'static str>,
    bytes_to_client: u64,
    bytes_from_client: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    upstream: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    original_dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content_type: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    sni: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    ech: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    dst_mismatch: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    vpc_endpoint_id: Option<&'a str>,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::event::{Reason, UnixMillis};
    use crate::gateway::ListenerKind;
    use crate::host::Host;
    use crate::policy::DenyReason;

    #[test]
    fn squid_lines_match_squids_native_format() {
        let mut out = String::new();
        squid(&tunnel(), &mut out);
        assert_eq!(
            out,
            "1732540800.123    245 10.0.1.17 TCP_TUNNEL/200 5120 CONNECT pypi.org:443 - \
             HIER_DIRECT/151.101.0.223 -\n"
        );
        out.clear();
        squid(&denied(), &mut out);
        assert_eq!(
            out,
            "1732540801.002      0 10.0.1.17 TCP_DENIED/403 145 CONNECT evil.example:443 - \
             HIER_NONE/- text/html\n"
        );
    }

    #[test]
    fn audit_findings_stand_out_without_counting_as_denials() {
        let mut record = tunnel();
        record.access = Some(Access::Audited(DenyReason::NotAllowlisted));
        let mut out = String::new();
        squid(&record, &mut out);
        assert!(out.contains(" TCP_TUNNEL_AUDIT/200 "), "{out}");
        assert!(!out.contains("TCP_DENIED"));
    }

    #[test]
    fn json_lines_carry_the_decision() {
        let mut out = String::new();
        json(&denied(), &mut out);
        let value: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(value["code"], "TCP_DENIED");
        assert_eq!(value["decision"], "denied");
        assert_eq!(value["deny_reason"], "not_allowlisted");
        assert_eq!(value["mode"], "explicit");
        assert_eq!(value["client"], "10.0.1.17:40000");
        assert_eq!(value["ts"], 1732540801.002);
        assert!(out.ends_with("}\n"));
    }

    fn tunnel() -> Closed {
        Closed {
            session: 1,
            seq: 1,
            at: UnixMillis(1_732_540_800_123),
            duration: Duration::from_millis(245),
            client: "10.0.1.17:40000".parse().unwrap(),
            listener: ListenerKind::Explicit,
            original_dst: None,
            method: "CONNECT".into(),
            url: "pypi.org:443".into(),
            host: Some(Host::Name("pypi.org".into())),
            port: 443,
            status: 200,
            access: Some(Access::Allowed),
            rule: Some("pypi.org".into()),
            reason: Reason::Completed,
            detail: None,
            bytes_to_client: 5120,
            bytes_from_client: 900,
            upstream: Some("151.101.0.223:443".parse().unwrap()),
            content_type: None,
            sni: None,
            ech: false,
            dst_mismatch: false,
            vpc_endpoint: None,
        }
    }

    fn denied() -> Closed {
        Closed {
            at: UnixMillis(1_732_540_801_002),
            duration: Duration::ZERO,
            url: "evil.example:443".into(),
            host: Some(Host::Name("evil.example".into())),
            status: 403,
            access: Some(Access::Denied(DenyReason::NotAllowlisted)),
            rule: None,
            reason: Reason::Denied,
            detail: Some("not_allowlisted"),
            bytes_to_client: 145,
            upstream: None,
            content_type: Some("text/html".into()),
            ..tunnel()
        }
    }
}
