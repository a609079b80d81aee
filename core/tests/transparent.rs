//! Transparent mode and tunnel inspection, as transcripts: intercepted TLS decided on the
//! ClientHello's SNI, intercepted HTTP decided on Host, and the ClientHello at the start of a
//! CONNECT tunnel.

mod support;

use std::time::Duration;

use egret_core::format;
use egret_core::policy::{DenyReason, EchPolicy, Mode, PolicySettings, TlsDeny};
use egret_core::{Access, ListenerKind, Peer, Reason};
use support::hello::{self, CHROMIUM, CURL, NO_SNI, OPENSSL};
use support::{Harness, bad_request, forbidden, settings, sock, text};

const ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];
const ORIGINAL: &str = "151.101.0.223:443";
const IP: &str = "151.101.0.223";

fn tls(entries: &[&str], settings: PolicySettings) -> Harness {
    Harness::transparent(
        entries,
        settings,
        ListenerKind::TransparentTls,
        sock(ORIGINAL),
    )
}

fn http(entries: &[&str]) -> Harness {
    let original = sock("151.101.0.223:80");
    Harness::transparent(entries, settings(), ListenerKind::TransparentHttp, original)
}

fn inspecting(entries: &[&str], settings: PolicySettings) -> Harness {
    let mut h = Harness::with_settings(entries, settings);
    h.client(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 Connection established\r\n\r\n"
    );
    h.take_actions();
    h
}

fn inspect() -> PolicySettings {
    PolicySettings {
        inspect_tunnels: true,
        ..settings()
    }
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

// ---- intercepted TLS ----

#[test]
fn an_allowed_sni_is_resolved_connected_and_its_hello_forwarded_exactly() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(CURL);
    assert_eq!(h.take_actions(), ["resolve allowed.test"]);
    h.resolve(&[IP]);
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:443"]);
    h.connect_ok();
    assert_eq!(
        h.written_to_upstream(),
        CURL,
        "the exact hello, nothing else"
    );
    assert!(
        h.pending(Peer::Client).is_empty(),
        "no CONNECT reply in transparent mode"
    );
    assert_eq!(h.take_actions(), ["splice"]);
    h.splice_progress(Peer::Upstream, 4000);
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(closed.listener, ListenerKind::TransparentTls);
    assert_eq!(
        (&*closed.method, closed.url.as_str()),
        ("CONNECT", "allowed.test:443")
    );
    assert_eq!(
        closed.sni.as_ref().map(ToString::to_string).as_deref(),
        Some("allowed.test")
    );
    assert_eq!(closed.original_dst, Some(sock(ORIGINAL)));
    assert!(!closed.dst_mismatch);
    assert_eq!(closed.bytes_from_client, CURL.len() as u64);
    assert_eq!(closed.bytes_to_client, 4000);
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(
        line.contains(" TCP_TUNNEL/200 4000 CONNECT allowed.test:443 - HIER_DIRECT/151.101.0.223 "),
        "{line}"
    );
}

#[test]
fn the_hello_is_judged_the_same_at_every_split() {
    for cut in 1..CURL.len() {
        let mut h = tls(&["allowed.test"], settings());
        h.client(&CURL[..cut]);
        assert!(
            h.take_actions().is_empty(),
            "nothing is decided on {cut} bytes"
        );
        h.client(&CURL[cut..]);
        assert_eq!(h.take_actions(), ["resolve allowed.test"], "split at {cut}");
        h.open(IP);
        assert_eq!(h.written_to_upstream(), CURL);
    }
}

#[test]
fn a_hello_split_across_handshake_records_is_joined() {
    let handshake = hello::handshake_of(CHROMIUM);
    for size in [1, 7, 100, 512, 1000] {
        let reframed = hello::records(&handshake, size);
        let settings = PolicySettings {
            ech: EchPolicy::Allow,
            ..settings()
        };
        let mut h = tls(&["allowed.test"], settings);
        h.client(&reframed);
        assert_eq!(
            h.take_actions(),
            ["resolve allowed.test"],
            "records of {size}"
        );
        h.open(IP);
        assert_eq!(
            h.written_to_upstream(),
            reframed,
            "the records are forwarded as they came"
        );
    }
}

#[test]
fn a_post_quantum_hello_over_one_and_a_half_kilobytes_passes_when_ech_is_allowed() {
    assert!(CHROMIUM.len() > 1536);
    let settings = PolicySettings {
        ech: EchPolicy::Allow,
        ..settings()
    };
    let mut h = tls(&["allowed.test"], settings);
    h.client(CHROMIUM);
    h.open(IP);
    assert_eq!(h.written_to_upstream(), CHROMIUM);
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert!(closed.ech, "the log says ECH was present");
    let mut line = String::new();
    format::json(&closed, &mut line);
    assert!(line.contains("\"ech\":true"), "{line}");
}

#[test]
fn encrypted_client_hello_is_denied_by_default() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(CHROMIUM);
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.take_actions(), ["shutdown"]);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::EncryptedClientHello))
    );
    assert_eq!(closed.status, 403);
    assert_eq!(format::squid_code(&closed), "TCP_DENIED");
}

#[test]
fn a_name_not_on_the_list_gets_the_alert() {
    let mut h = tls(&["other.test"], settings());
    h.client(OPENSSL);
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.take_actions(), ["shutdown"]);
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::NotAllowlisted))
    );
    assert_eq!(closed.url, "allowed.test:443");
    assert_eq!(closed.bytes_to_client, 7);
    assert_eq!(h.decided().len(), 1);
}

#[test]
fn tls_deny_reset_resets_instead() {
    let settings = PolicySettings {
        tls_deny: TlsDeny::Reset,
        ..settings()
    };
    let mut h = tls(&["other.test"], settings);
    h.client(CURL);
    assert!(h.pending(Peer::Client).is_empty());
    assert_eq!(h.take_actions(), ["reset"]);
    assert_eq!(h.only_closed().status, 403);
}

#[test]
fn a_hello_without_sni_is_denied_and_logged_by_its_original_destination() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(NO_SNI);
    assert_eq!(h.written_to_client(), ALERT);
    let closed = h.only_closed();
    assert_eq!(closed.access, Some(Access::Denied(DenyReason::NoSni)));
    assert_eq!(closed.url, ORIGINAL);
    assert_eq!(
        closed.bytes_from_client,
        NO_SNI.len() as u64,
        "the hello was read"
    );
}

#[test]
fn malformed_names_in_sni_are_denied() {
    let cases: [(&[&str], &str); 5] = [
        (&["allowed.test", "other.test"], "multiple_sni"),
        (&["127.0.0.1"], "invalid_sni"),
        (&["allowed..test"], "invalid_sni"),
        (&["allowed test"], "invalid_sni"),
        (&[""], "invalid_sni"),
    ];
    for (names, detail) in cases {
        let mut h = tls(&["allowed.test", "other.test"], settings());
        h.client(&hello::hello_for(names));
        assert_eq!(h.written_to_client(), ALERT, "{names:?}");
        let closed = h.only_closed();
        assert_eq!(
            closed.access,
            Some(Access::Denied(DenyReason::InvalidHello)),
            "{names:?}"
        );
        assert_eq!(closed.detail, Some(detail), "{names:?}");
    }
}

#[test]
fn an_sni_with_one_trailing_dot_is_the_same_name() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(&hello::hello_for(&["Allowed.Test."]));
    assert_eq!(h.take_actions(), ["resolve allowed.test"]);
}

#[test]
fn not_a_client_hello_is_denied() {
    let two_sni = hello::records(
        &hello::client_hello(&[hello::sni(&["allowed.test"]), hello::sni(&["allowed.test"])]),
        16384,
    );
    let cases: [(&[u8], &str); 5] = [
        (b"GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n", "not_tls"),
        (&[0x80, 0x2e, 0x01, 0x00, 0x02], "sslv2_hello"),
        (
            &[0x16, 0x03, 0x01, 0x00, 0x04, 0x02, 0x00, 0x00, 0x00],
            "not_client_hello",
        ),
        (&[0x17, 0x03, 0x03, 0x00, 0x01, 0x00], "not_tls"),
        (&two_sni, "duplicate_extension"),
    ];
    for (bytes, detail) in cases {
        let mut h = tls(&["allowed.test"], settings());
        h.client(bytes);
        assert_eq!(h.written_to_client(), ALERT, "{detail}");
        denied_as_invalid(&h.only_closed(), detail);
    }
}

#[test]
fn a_hello_larger_than_the_head_limit_is_denied() {
    let padding = (21, vec![0u8; 20_000]);
    let big = hello::records(
        &hello::client_hello(&[hello::sni(&["allowed.test"]), padding]),
        16384,
    );
    let mut h = tls(&["allowed.test"], settings());
    h.client(&big);
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.only_closed().detail, Some("hello_too_large"));
}

#[test]
fn a_hello_slower_than_the_header_timeout_is_denied() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(&CURL[..100]);
    h.advance(Duration::from_millis(9_999));
    assert!(h.pending(Peer::Client).is_empty());
    h.advance(Duration::from_millis(1));
    assert_eq!(h.written_to_client(), ALERT);
    let closed = h.only_closed();
    assert_eq!(closed.detail, Some("hello_timeout"));
    assert_eq!(closed.duration, secs(10), "from accept");
    assert_eq!(closed.bytes_from_client, 100);
}

#[test]
fn the_original_destination_port_is_used_and_must_be_allowed() {
    let original = sock("151.101.0.223:8443");
    let mut h = Harness::transparent(
        &["allowed.test"],
        settings(),
        ListenerKind::TransparentTls,
        original,
    );
    h.client(CURL);
    assert_eq!(h.written_to_client(), ALERT);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::PortNotAllowed))
    );
    assert_eq!(closed.url, "allowed.test:8443");
}

#[test]
fn a_spoofed_destination_is_not_followed_and_is_logged() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(CURL);
    h.take_actions();
    // allowed.test really lives elsewhere; the client was sent to 151.101.0.223.
    h.resolve(&["93.184.216.34"]);
    assert_eq!(h.take_actions(), ["connect 93.184.216.34:443"]);
    h.connect_ok();
    h.written_to_upstream();
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert!(closed.dst_mismatch);
    assert_eq!(closed.original_dst, Some(sock(ORIGINAL)));
    let mut line = String::new();
    format::json(&closed, &mut line);
    assert!(line.contains("\"dst_mismatch\":true"), "{line}");
    assert!(
        line.contains("\"original_dst\":\"151.101.0.223:443\""),
        "{line}"
    );
}

#[test]
fn a_name_resolving_to_private_addresses_is_denied_in_transparent_mode_too() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(CURL);
    h.resolve(&["169.254.169.254"]);
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.take_actions(), ["resolve allowed.test", "shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.detail, Some("metadata"));
    assert_eq!(closed.status, 403);
}

#[test]
fn audit_mode_lets_an_unlisted_sni_through() {
    let settings = PolicySettings {
        mode: Mode::Audit,
        ..settings()
    };
    let mut h = tls(&["other.test"], settings);
    h.client(CURL);
    h.open(IP);
    assert_eq!(h.written_to_upstream(), CURL);
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Audited(DenyReason::NotAllowlisted))
    );
    assert_eq!(format::squid_code(&closed), "TCP_TUNNEL_AUDIT");
}

#[test]
fn an_intercepted_connection_that_cannot_be_served_is_reset_not_answered_in_http() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(CURL);
    h.resolve_err(egret_core::ResolveError::NotFound);
    assert!(
        h.pending(Peer::Client).is_empty(),
        "no HTTP bytes to a TLS client"
    );
    assert_eq!(h.take_actions(), ["resolve allowed.test", "reset"]);
    let closed = h.only_closed();
    assert_eq!((closed.status, closed.reason), (503, Reason::DnsFailed));
}

#[test]
fn without_an_original_destination_nothing_is_decided() {
    let mut h = Harness::accepting(
        h_policy(),
        egret_core::Limits::default(),
        ListenerKind::TransparentTls,
        None,
    );
    h.client(CURL);
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.only_closed().detail, Some("no_original_destination"));
}

// ---- intercepted HTTP ----

#[test]
fn intercepted_http_is_decided_on_host_and_forwarded() {
    let mut h = http(&["allowed.test"]);
    h.client(b"GET /simple/ HTTP/1.1\r\nHost: allowed.test\r\nUser-Agent: pip\r\n\r\n");
    assert_eq!(h.take_actions(), ["resolve allowed.test"]);
    h.open(IP);
    assert_eq!(
        text(&h.written_to_upstream()),
        "GET /simple/ HTTP/1.1\r\nHost: allowed.test\r\nUser-Agent: pip\r\nVia: 1.1 egret\r\n\r\n"
    );
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert!(text(&h.written_to_client()).ends_with("\r\n\r\nok"));
    let closed = h.only_closed();
    assert_eq!(closed.listener, ListenerKind::TransparentHttp);
    assert_eq!(closed.url, "http://allowed.test/simple/");
    assert_eq!(closed.status, 200);
}

#[test]
fn intercepted_http_denials_get_the_same_403() {
    let mut h = http(&["allowed.test"]);
    h.client(b"GET / HTTP/1.1\r\nHost: denied.test\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(h.only_closed().url, "http://denied.test/");
}

#[test]
fn intercepted_http_without_host_is_a_bad_request() {
    let mut h = http(&["allowed.test"]);
    h.client(b"GET / HTTP/1.0\r\n\r\n");
    assert_eq!(h.written_to_client(), bad_request("missing_host"));
}

#[test]
fn intercepted_http_takes_the_port_from_the_original_destination() {
    let original = sock("151.101.0.223:8080");
    let mut h = Harness::transparent(
        &["allowed.test"],
        settings(),
        ListenerKind::TransparentHttp,
        original,
    );
    // The Host header claims port 80; the connection was going to 8080, which is not allowed.
    h.client(b"GET / HTTP/1.1\r\nHost: allowed.test:80\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(
        h.only_closed().access,
        Some(Access::Denied(DenyReason::PortNotAllowed))
    );
}

#[test]
fn intercepted_http_decides_every_request_on_its_own() {
    let mut h = http(&["allowed.test"]);
    h.client(b"GET /a HTTP/1.1\r\nHost: allowed.test\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.written_to_client();
    h.client(b"GET /b HTTP/1.1\r\nHost: denied.test\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(h.closed().len(), 2);
}

#[test]
fn intercepted_http_rejects_proxy_forms() {
    for request in [
        &b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n"[..],
        b"GET http://allowed.test/ HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
    ] {
        let mut h = http(&["allowed.test"]);
        h.client(request);
        assert!(text(&h.written_to_client()).starts_with("HTTP/1.1 400 Bad Request\r\n"));
    }
}

// ---- ClientHellos inside CONNECT tunnels ----

#[test]
fn a_tunnel_whose_hello_names_an_allowed_host_is_spliced() {
    let mut h = inspecting(&["allowed.test"], inspect());
    assert!(h.take_actions().is_empty(), "waiting for the first bytes");
    h.client(&CURL[..200]);
    assert!(h.take_actions().is_empty());
    h.client(&CURL[200..]);
    assert_eq!(h.written_to_upstream(), CURL);
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_tunnel_whose_hello_names_another_host_is_closed_with_the_alert() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(&hello::hello_for(&["denied.test"]));
    assert_eq!(h.written_to_client(), ALERT);
    assert!(
        h.pending(Peer::Upstream).is_empty(),
        "nothing reached the upstream"
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::SniNotAllowed))
    );
    assert_eq!(closed.url, "allowed.test:443");
    assert_eq!(
        closed.sni.as_ref().map(ToString::to_string).as_deref(),
        Some("denied.test")
    );
    assert_eq!(format::squid_code(&closed), "TCP_DENIED");
    assert_eq!(closed.status, 403);
}

#[test]
fn a_tunnel_that_does_not_start_with_tls_is_spliced_untouched() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(h.written_to_upstream(), b"SSH-2.0-OpenSSH_9.2\r\n");
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_tunnel_starting_with_another_tls_record_is_closed_with_the_alert() {
    // A lenient server may drop a change_cipher_spec record and take the hello behind it.
    for first in [
        &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01][..],
        &[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00],
        &[0x17, 0x03, 0x03, 0x00, 0x01, 0xaa],
    ] {
        let mut h = inspecting(&["allowed.test"], inspect());
        h.client(&first[..1]);
        assert!(h.take_actions().is_empty(), "one byte cannot tell");
        let rest = [&first[1..], hello::hello_for(&["denied.test"]).as_slice()].concat();
        h.client(&rest);
        assert_eq!(h.written_to_client(), ALERT, "{first:?}");
        assert!(h.pending(Peer::Upstream).is_empty(), "{first:?}");
        denied_as_invalid(&h.only_closed(), "unexpected_record");
    }
}

#[test]
fn a_tunnel_whose_server_speaks_first_is_spliced() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.upstream(b"220 smtp ready\r\n");
    assert_eq!(h.written_to_client(), b"220 smtp ready\r\n");
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_hello_without_sni_inside_a_tunnel_goes_to_the_connect_target() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(NO_SNI);
    assert_eq!(h.written_to_upstream(), NO_SNI);
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_hello_with_ech_but_no_sni_inside_a_tunnel_is_denied() {
    // The encrypted inner hello may name any host the CONNECT target serves.
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(&hello::records(
        &hello::client_hello(&[(hello::ECH, vec![0; 32])]),
        16384,
    ));
    assert_eq!(h.written_to_client(), ALERT);
    assert!(
        h.pending(Peer::Upstream).is_empty(),
        "nothing reached the upstream"
    );
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::EncryptedClientHello))
    );
    assert_eq!(format::squid_code(&closed), "TCP_DENIED");
}

#[test]
fn a_hello_with_ech_but_no_sni_inside_a_tunnel_passes_when_ech_is_allowed() {
    let settings = PolicySettings {
        ech: EchPolicy::Allow,
        ..inspect()
    };
    let mut h = inspecting(&["allowed.test"], settings);
    let bytes = hello::records(&hello::client_hello(&[(hello::ECH, vec![0; 32])]), 16384);
    h.client(&bytes);
    assert_eq!(h.written_to_upstream(), bytes);
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_partial_hello_then_a_half_close_inside_a_tunnel_is_denied() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(&hello::hello_for(&["denied.test"])[..40]);
    h.eof(Peer::Client);
    assert_eq!(h.written_to_client(), ALERT);
    assert!(
        h.pending(Peer::Upstream).is_empty(),
        "no byte of the unjudged hello reached the upstream"
    );
    denied_as_invalid(&h.only_closed(), "incomplete_hello");
}

#[test]
fn a_hello_with_an_empty_server_name_list_inside_a_tunnel_is_denied() {
    // An empty list is malformed (RFC 6066 §3), not the absence of SNI.
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(&hello::records(
        &hello::client_hello(&[(hello::SNI, vec![0, 0])]),
        16384,
    ));
    assert_eq!(h.written_to_client(), ALERT);
    assert!(h.pending(Peer::Upstream).is_empty());
    denied_as_invalid(&h.only_closed(), "empty_sni_list");
}

#[test]
fn an_intercepted_hello_with_an_empty_server_name_list_is_denied_as_invalid() {
    let mut h = tls(&["allowed.test"], settings());
    h.client(&hello::records(
        &hello::client_hello(&[(hello::SNI, vec![0, 0])]),
        16384,
    ));
    assert_eq!(h.written_to_client(), ALERT);
    denied_as_invalid(&h.only_closed(), "empty_sni_list");
}

#[test]
fn a_half_close_before_any_tunnel_byte_is_carried_on() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn a_stalled_hello_inside_a_tunnel_is_closed_at_the_header_timeout() {
    let mut h = inspecting(&["allowed.test"], inspect());
    h.client(&CURL[..10]);
    h.advance(secs(10));
    assert_eq!(h.written_to_client(), ALERT);
    assert_eq!(h.only_closed().detail, Some("hello_timeout"));
}

#[test]
fn audit_mode_lets_a_fronted_hello_through_and_marks_it() {
    let settings = PolicySettings {
        mode: Mode::Audit,
        ..inspect()
    };
    let mut h = inspecting(&["allowed.test"], settings);
    h.client(&hello::hello_for(&["denied.test"]));
    h.written_to_upstream();
    assert_eq!(h.take_actions(), ["splice"]);
    h.splice_end(egret_core::SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Audited(DenyReason::SniNotAllowed))
    );
    assert_eq!(closed.reason, Reason::Completed);
}

#[test]
fn inspection_is_a_policy_switch() {
    let settings = PolicySettings {
        inspect_tunnels: false,
        ..settings()
    };
    let mut h = Harness::with_settings(&["allowed.test"], settings);
    h.client(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.take_actions();
    h.written_to_client();
    assert_eq!(
        h.take_actions(),
        ["splice"],
        "spliced before any client byte"
    );
}

fn h_policy() -> egret_core::policy::Policy {
    let list = egret_core::policy::Allowlist::compile(
        ["allowed.test"]
            .iter()
            .map(|e| egret_core::policy::Entry::parse(e).expect("entry").0),
    );
    egret_core::policy::Policy::new(list, settings())
}

/// Checks that a session was denied as an invalid hello, for `detail`.
fn denied_as_invalid(closed: &egret_core::Closed, detail: &str) {
    assert_eq!(closed.detail, Some(detail));
    assert_eq!(
        closed.access,
        Some(Access::Denied(DenyReason::InvalidHello))
    );
}
