//! Transcript tests of explicit mode: one behaviour each, explicit bytes, fake time, and the
//! exact actions, outbound bytes and events the session produces.

mod support;

use std::time::Duration;

use egret_core::format;
use egret_core::host::Host;
use egret_core::policy::{AddrClass, DenyReason, Mode, PolicySettings};
use egret_core::{
    Access, Closed, ConnectError, Limits, ListenerKind, Peer, Reason, ResolveError, SpliceEnd,
};

use support::{CLIENT_ADDR, Harness, bad_request, error_reply, forbidden, settings, sock, text};

const IP: &str = "151.101.0.223";
const IP2: &str = "151.101.64.223";
const IP6: &str = "2a04:4e42::223";
const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

// ---- CONNECT ----

#[test]
fn connect_allowed_resolves_connects_and_splices_once_both_buffers_drain() {
    let mut h = Harness::new(&["pypi.org"]);
    h.sleep(ms(5));
    let head = b"CONNECT pypi.org:443 HTTP/1.1\r\nHost: pypi.org:443\r\n\r\n";
    h.client(&[&head[..], b"early"].concat());
    assert_eq!(h.take_actions(), ["resolve pypi.org"]);
    assert!(
        h.take_events().is_empty(),
        "decided only once addresses are checked"
    );
    assert!(!h.session.interest().read_client);
    h.sleep(ms(20));
    h.resolve(&[IP]);
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:443"]);
    let decided = h.only_decided();
    assert_eq!(decided.session, h.session.id());
    assert_eq!(decided.seq, 1);
    assert_eq!(decided.at, h.wall_now());
    assert_eq!(decided.client, sock(CLIENT_ADDR));
    assert_eq!(decided.listener, ListenerKind::Explicit);
    assert_eq!(decided.host, name("pypi.org"));
    assert_eq!(decided.port, 443);
    assert_eq!(decided.access, Access::Allowed);
    assert_eq!(decided.rule.as_deref(), Some("pypi.org"));

    h.client(b" more");
    assert!(h.pending(Peer::Upstream).is_empty(), "held until connected");
    h.sleep(ms(10));
    h.connect_ok();
    assert!(
        h.take_actions().is_empty(),
        "no splice while bytes are queued"
    );
    assert_eq!(h.pending(Peer::Client), ESTABLISHED);
    assert_eq!(h.pending(Peer::Upstream), b"early more");
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert!(h.take_actions().is_empty(), "upstream bytes still queued");
    assert_eq!(h.written_to_upstream(), b"early more");
    assert_eq!(h.take_actions(), ["splice"]);

    h.sleep(Duration::from_secs(2));
    h.splice_progress(Peer::Client, 700);
    h.splice_progress(Peer::Upstream, 5000);
    h.splice_end(SpliceEnd::Finished);
    assert_eq!(h.take_actions(), ["close"]);
    let closed = h.only_closed();
    let want = Closed {
        session: h.session.id(),
        seq: 1,
        at: h.wall_now(),
        duration: h.elapsed() - ms(5),
        client: sock(CLIENT_ADDR),
        listener: ListenerKind::Explicit,
        original_dst: None,
        method: "CONNECT".into(),
        url: "pypi.org:443".into(),
        host: Some(name("pypi.org")),
        port: 443,
        status: 200,
        access: Some(Access::Allowed),
        rule: Some("pypi.org".into()),
        reason: Reason::Completed,
        detail: None,
        bytes_to_client: ESTABLISHED.len() as u64 + 5000,
        bytes_from_client: (head.len() + b"early more".len() + 700) as u64,
        upstream: Some(sock("151.101.0.223:443")),
        content_type: None,
        sni: None,
        ech: false,
        dst_mismatch: false,
        vpc_endpoint: None,
    };
    assert_eq!(closed, want);
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" TCP_TUNNEL/200 "), "{line}");
    assert!(line.contains(" HIER_DIRECT/151.101.0.223 "), "{line}");
}

#[test]
fn connect_splices_only_after_a_partial_write_completes() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.take_actions();
    assert_eq!(h.write_some(Peer::Client, 10), &ESTABLISHED[..10]);
    assert!(h.take_actions().is_empty());
    assert_eq!(h.written_to_client(), &ESTABLISHED[10..]);
    assert_eq!(h.take_actions(), ["splice"]);
}

#[test]
fn connect_with_nothing_pending_splices_as_soon_as_the_reply_is_written() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.0\r\n\r\n");
    h.open(IP);
    assert!(h.pending(Peer::Upstream).is_empty());
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(
        h.take_actions(),
        ["resolve pypi.org", "connect 151.101.0.223:443", "splice"]
    );
}

#[test]
fn upstream_bytes_before_the_splice_follow_the_connect_reply() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"SSH-2.0-banner\r\n");
    assert_eq!(
        h.written_to_client(),
        [ESTABLISHED, b"SSH-2.0-banner\r\n"].concat()
    );
    h.splice_end(SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(closed.bytes_to_client, ESTABLISHED.len() as u64 + 16);
}

#[test]
fn connect_denied_gets_the_exact_403_then_a_lingering_close() {
    let mut h = Harness::new(&["pypi.org"]);
    let head = b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n";
    h.client(head);
    assert!(h.take_actions().is_empty(), "the FIN waits for the reply");
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(h.take_actions(), ["shutdown"]);
    // Lingering: keep reading and discarding so the client sees the reply, not a reset.
    assert!(h.session.interest().read_client);
    h.client(b"more bytes the client had in flight");
    assert!(h.pending(Peer::Client).is_empty());
    assert!(h.pending(Peer::Upstream).is_empty());
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);

    let decided = h.only_decided();
    assert_eq!(decided.access, Access::Denied(DenyReason::NotAllowlisted));
    assert_eq!(decided.rule, None);
    assert_eq!(decided.host, name("evil.example"));
    let closed = h.only_closed();
    let want = Closed {
        session: h.session.id(),
        seq: 1,
        at: h.wall_now(),
        duration: Duration::ZERO,
        client: sock(CLIENT_ADDR),
        listener: ListenerKind::Explicit,
        original_dst: None,
        method: "CONNECT".into(),
        url: "evil.example:443".into(),
        host: Some(name("evil.example")),
        port: 443,
        status: 403,
        access: Some(Access::Denied(DenyReason::NotAllowlisted)),
        rule: None,
        reason: Reason::Denied,
        detail: Some("not_allowlisted"),
        bytes_to_client: forbidden().len() as u64,
        bytes_from_client: head.len() as u64,
        upstream: None,
        content_type: Some("text/html".into()),
        sni: None,
        ech: false,
        dst_mismatch: false,
        vpc_endpoint: None,
    };
    assert_eq!(closed, want);
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" TCP_DENIED/403 "), "{line}");
}

#[test]
fn lingering_close_ends_at_the_linger_timeout() {
    let mut h = Harness::new(&[]);
    h.client(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n");
    h.written_to_client();
    assert_eq!(h.take_actions(), ["shutdown"]);
    assert_eq!(h.session.poll_timeout(), Some(h.now + secs(2)));
    h.advance(ms(1999));
    assert!(h.take_actions().is_empty());
    h.advance(ms(1));
    assert_eq!(h.take_actions(), ["close"]);
    assert_eq!(h.closed().len(), 1);
}

#[test]
fn an_unwritten_reply_is_dropped_at_the_linger_timeout() {
    let mut h = Harness::new(&[]);
    h.client(b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n");
    h.advance(secs(2));
    assert_eq!(h.take_actions(), ["close"]);
    assert!(h.pending(Peer::Client).is_empty());
}

#[test]
fn connect_without_a_port_is_a_bad_request() {
    let mut h = Harness::new(&["pypi.org"]);
    let head = b"CONNECT pypi.org HTTP/1.1\r\n\r\n";
    h.client(head);
    assert_eq!(h.written_to_client(), bad_request("missing_port"));
    assert_eq!(h.take_actions(), ["shutdown"]);
    assert!(h.decided().is_empty());
    let closed = h.only_closed();
    assert_eq!(&*closed.method, "NONE");
    assert_eq!(closed.url, "error:invalid-request");
    assert_eq!(closed.status, 400);
    assert_eq!(closed.reason, Reason::InvalidRequest);
    assert_eq!(closed.detail, Some("missing_port"));
    assert_eq!(closed.access, None);
    assert_eq!(closed.host, None);
    assert_eq!(closed.bytes_from_client, head.len() as u64);
    assert_eq!(
        closed.bytes_to_client,
        bad_request("missing_port").len() as u64
    );
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" NONE_NONE/400 "), "{line}");
}

#[test]
fn connect_to_a_port_not_allowed_is_denied_naming_the_rule() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:8443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    let decided = h.only_decided();
    assert_eq!(decided.access, Access::Denied(DenyReason::PortNotAllowed));
    assert_eq!(decided.rule.as_deref(), Some("pypi.org"));
    assert_eq!(decided.port, 8443);
    assert_eq!(h.only_closed().detail, Some("port_not_allowed"));
}

#[test]
fn an_entry_with_a_port_admits_that_port_only() {
    let mut h = Harness::new(&["pypi.org:8443"]);
    h.client(b"CONNECT pypi.org:8443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["resolve pypi.org"]);
    h.resolve(&[IP]);
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:8443"]);
    assert_eq!(h.only_decided().rule.as_deref(), Some("pypi.org:8443"));

    let mut h = Harness::new(&["pypi.org:8443"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
}

#[test]
fn ip_literal_targets_are_denied_by_default_even_when_listed() {
    for target in ["151.101.0.223:443", "[2a04:4e42::223]:443"] {
        let mut h = Harness::new(&["151.101.0.223", "pypi.org"]);
        h.client(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert_eq!(h.written_to_client(), forbidden(), "{target}");
        assert_eq!(h.take_actions(), ["shutdown"], "{target}");
        let decided = h.only_decided();
        assert_eq!(decided.access, Access::Denied(DenyReason::IpLiteral));
        assert_eq!(h.only_closed().detail, Some("ip_literal"));
    }
}

#[test]
fn ip_literal_targets_connect_directly_when_allowed_and_listed() {
    let settings = PolicySettings {
        allow_ip_literals: true,
        ..settings()
    };
    let mut h = Harness::with_settings(&["151.101.0.223"], settings.clone());
    h.client(b"CONNECT 151.101.0.223:443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:443"]);
    let decided = h.only_decided();
    assert_eq!(decided.access, Access::Allowed);
    assert_eq!(decided.host, Host::Ip(IP.parse().unwrap()));
    h.connect_ok();
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(h.take_actions(), ["splice"]);

    let mut h = Harness::with_settings(&["151.101.0.223"], settings.clone());
    h.client(b"GET http://151.101.0.223/x HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:80"]);
    h.connect_ok();
    assert_eq!(
        h.written_to_upstream(),
        b"GET /x HTTP/1.1\r\nHost: 151.101.0.223\r\nVia: 1.1 egret\r\n\r\n"
    );

    // An address the list does not name is still denied.
    let mut h = Harness::with_settings(&["151.101.0.223"], settings);
    h.client(b"CONNECT 151.101.0.224:443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(
        h.only_decided().access,
        Access::Denied(DenyReason::IpLiteral)
    );
}

#[test]
fn listed_private_ip_literals_are_still_denied() {
    let settings = PolicySettings {
        allow_ip_literals: true,
        ..settings()
    };
    for (target, entry, class) in [
        ("10.0.0.7:443", "10.0.0.7", AddrClass::Private),
        ("169.254.169.254:80", "169.254.169.254", AddrClass::Metadata),
        ("127.0.0.1:443", "127.0.0.1", AddrClass::Loopback),
    ] {
        let mut h = Harness::with_settings(&[entry], settings.clone());
        h.client(format!("CONNECT {target} HTTP/1.1\r\n\r\n").as_bytes());
        assert!(!h.take_actions().iter().any(|a| a.starts_with("connect")));
        assert_eq!(h.written_to_client(), forbidden(), "{target}");
        let decided = h.only_decided();
        assert_eq!(
            decided.access,
            Access::Denied(DenyReason::PrivateAddress(class)),
            "{target}"
        );
        assert_eq!(h.only_closed().detail, Some(class.as_str()));
    }
}

// ---- addresses after DNS ----

#[test]
fn dns_answers_in_private_classes_are_denied() {
    let cases = [
        ("127.0.0.1", AddrClass::Loopback),
        ("::1", AddrClass::Loopback),
        ("10.1.2.3", AddrClass::Private),
        ("172.16.0.1", AddrClass::Private),
        ("192.168.1.1", AddrClass::Private),
        ("100.64.0.1", AddrClass::CarrierNat),
        ("169.254.1.1", AddrClass::LinkLocal),
        ("fe80::1", AddrClass::LinkLocal),
        ("169.254.169.254", AddrClass::Metadata),
        ("fd00:ec2::254", AddrClass::Metadata),
        ("fc00::1", AddrClass::UniqueLocal),
        ("fd12:3456::1", AddrClass::UniqueLocal),
        ("224.0.0.1", AddrClass::Multicast),
        ("ff02::1", AddrClass::Multicast),
        ("0.0.0.0", AddrClass::Unspecified),
        ("::", AddrClass::Unspecified),
        ("255.255.255.255", AddrClass::Broadcast),
        ("192.0.2.1", AddrClass::Reserved),
        ("::ffff:10.0.0.1", AddrClass::Private),
        ("::ffff:169.254.169.254", AddrClass::Metadata),
        ("64:ff9b::7f00:1", AddrClass::Loopback),
        ("64:ff9b::a9fe:a9fe", AddrClass::Metadata),
        ("2002:7f00:1::", AddrClass::Loopback),
        ("2002:a00:1::1", AddrClass::Private),
    ];
    for (ip, class) in cases {
        let mut h = Harness::new(&["pypi.org"]);
        h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
        h.resolve(&[ip]);
        assert_eq!(h.take_actions(), ["resolve pypi.org"], "{ip}");
        assert_eq!(h.written_to_client(), forbidden(), "{ip}");
        assert_eq!(h.take_actions(), ["shutdown"], "{ip}");
        let decided = h.only_decided();
        assert_eq!(
            decided.access,
            Access::Denied(DenyReason::PrivateAddress(class)),
            "{ip}"
        );
        assert_eq!(decided.rule.as_deref(), Some("pypi.org"), "{ip}");
        let closed = h.only_closed();
        assert_eq!(closed.reason, Reason::Denied, "{ip}");
        assert_eq!(closed.detail, Some(class.as_str()), "{ip}");
        assert_eq!(closed.status, 403, "{ip}");
    }
}

#[test]
fn mixed_answers_connect_only_to_public_addresses_in_order() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.take_actions();
    h.resolve(&[
        "10.0.0.1",
        IP,
        "169.254.169.254",
        IP6,
        "::ffff:127.0.0.1",
        IP2,
    ]);
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:443"]);
    assert_eq!(h.only_decided().access, Access::Allowed);
    h.connect_err(ConnectError::Refused);
    assert_eq!(h.take_actions(), ["connect [2a04:4e42::223]:443"]);
    h.connect_err(ConnectError::Unreachable);
    assert_eq!(h.take_actions(), ["connect 151.101.64.223:443"]);
    h.connect_ok();
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(h.take_actions(), ["splice"]);
    assert_eq!(h.decided().len(), 1);
    h.splice_end(SpliceEnd::Finished);
    assert_eq!(h.only_closed().upstream, Some(sock("151.101.64.223:443")));
}

#[test]
fn duplicate_answers_are_tried_once() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.take_actions();
    h.resolve(&[IP, IP, IP2]);
    h.connect_err(ConnectError::Refused);
    h.connect_err(ConnectError::Refused);
    assert_eq!(
        h.take_actions(),
        ["connect 151.101.0.223:443", "connect 151.101.64.223:443"]
    );
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_CONNECT_FAIL",
            111,
            Some("connection_refused")
        )
    );
}

#[test]
fn private_exceptions_admit_the_listed_networks() {
    let settings = PolicySettings {
        private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
        ..settings()
    };
    for (ip, addr) in [
        ("127.0.0.1", "127.0.0.1:443"),
        ("::ffff:127.0.0.2", "[::ffff:127.0.0.2]:443"),
    ] {
        let mut h = Harness::with_settings(&["origin.test"], settings.clone());
        h.client(b"CONNECT origin.test:443 HTTP/1.1\r\n\r\n");
        h.resolve(&[ip]);
        assert_eq!(
            h.take_actions(),
            ["resolve origin.test", format!("connect {addr}").as_str()]
        );
    }
    // Other classes stay denied.
    let mut h = Harness::with_settings(&["origin.test"], settings);
    h.client(b"CONNECT origin.test:443 HTTP/1.1\r\n\r\n");
    h.resolve(&["10.0.0.1"]);
    assert_eq!(h.written_to_client(), forbidden());
}

// ---- DNS and connect failures ----

#[test]
fn nxdomain_is_a_503_dns_fail() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.sleep(ms(40));
    h.resolve_err(ResolveError::NotFound);
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_DNS_FAIL",
            0,
            Some("nxdomain")
        )
    );
    assert_eq!(h.take_actions(), ["resolve pypi.org", "shutdown"]);
    assert_eq!(h.only_decided().access, Access::Allowed);
    let closed = h.only_closed();
    assert_eq!(closed.status, 503);
    assert_eq!(closed.reason, Reason::DnsFailed);
    assert_eq!(closed.detail, Some("nxdomain"));
    assert_eq!(closed.duration, ms(40));
    assert_eq!(closed.upstream, None);
}

#[test]
fn an_empty_answer_is_nxdomain_and_a_resolver_failure_is_reported_as_such() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"GET http://pypi.org/simple/ HTTP/1.1\r\n\r\n");
    h.resolve(&[]);
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_DNS_FAIL",
            0,
            Some("nxdomain")
        )
    );

    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"GET http://pypi.org/simple/ HTTP/1.1\r\n\r\n");
    h.resolve_err(ResolveError::Failed);
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_DNS_FAIL",
            0,
            Some("resolver_error")
        )
    );
    assert_eq!(h.only_closed().detail, Some("resolver_error"));
}

#[test]
fn dns_that_never_answers_times_out_with_a_503() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    let ticket = h.resolve_ticket();
    assert_eq!(h.session.poll_timeout(), Some(h.now + secs(10)));
    h.advance(ms(9999));
    assert!(h.pending(Peer::Client).is_empty());
    h.advance(ms(1));
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_DNS_FAIL",
            0,
            Some("dns_timeout")
        )
    );
    assert_eq!(h.take_actions(), ["resolve pypi.org", "shutdown"]);
    // The late answer is stale.
    let ips = [IP.parse().unwrap()];
    h.resolve_with(ticket, Ok(&ips));
    assert!(h.take_actions().is_empty());
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::DnsFailed);
    assert_eq!(closed.duration, secs(10));
}

#[test]
fn refused_addresses_are_tried_in_order_then_503() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.resolve(&[IP, IP2]);
    h.connect_err(ConnectError::Unreachable);
    h.connect_err(ConnectError::Refused);
    assert_eq!(
        h.take_actions(),
        [
            "resolve pypi.org",
            "connect 151.101.0.223:443",
            "connect 151.101.64.223:443"
        ]
    );
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "503 Service Unavailable",
            "ERR_CONNECT_FAIL",
            111,
            Some("connection_refused")
        )
    );
    assert_eq!(h.take_actions(), ["shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::ConnectFailed);
    assert_eq!(closed.status, 503);
    assert_eq!(closed.upstream, None);
    assert_eq!(h.decided().len(), 1);
}

#[test]
fn connect_errors_name_their_cause() {
    for (error, detail) in [
        (ConnectError::Unreachable, "unreachable"),
        (ConnectError::Other, "connect_error"),
    ] {
        let mut h = Harness::new(&["pypi.org"]);
        h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
        h.resolve(&[IP]);
        h.connect_err(error);
        assert_eq!(
            h.written_to_client(),
            error_reply(
                "503 Service Unavailable",
                "ERR_CONNECT_FAIL",
                111,
                Some(detail)
            )
        );
    }
}

#[test]
fn a_connect_slower_than_connect_timeout_is_a_504() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.resolve(&[IP]);
    h.take_actions();
    h.advance(ms(9999));
    assert!(h.take_actions().is_empty());
    h.advance(ms(1));
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "504 Gateway Timeout",
            "ERR_CONNECT_FAIL",
            110,
            Some("connect_timeout")
        )
    );
    assert_eq!(h.take_actions(), ["shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::ConnectTimeout);
    assert_eq!(closed.status, 504);
}

#[test]
fn a_timed_out_attempt_moves_on_and_its_late_result_is_ignored() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.resolve(&[IP, IP2]);
    let first = h.connect_ticket();
    h.advance(secs(10));
    assert_eq!(
        h.take_actions(),
        [
            "resolve pypi.org",
            "connect 151.101.0.223:443",
            "connect 151.101.64.223:443"
        ]
    );
    h.connect_with(first, Ok(()));
    assert!(h.take_actions().is_empty());
    assert!(
        h.pending(Peer::Client).is_empty(),
        "a stale success opens nothing"
    );
    h.connect_ok();
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(h.take_actions(), ["splice"]);
    h.splice_end(SpliceEnd::Finished);
    assert_eq!(h.only_closed().upstream, Some(sock("151.101.64.223:443")));
}

#[test]
fn stale_and_mismatched_tickets_are_ignored() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    let resolve = h.resolve_ticket();
    h.resolve(&[IP]);
    let connect = h.connect_ticket();
    h.take_actions();
    // The resolve ticket answers nothing now, and is no connect ticket.
    let ips = ["10.0.0.1".parse().unwrap()];
    h.resolve_with(resolve, Ok(&ips));
    h.connect_with(resolve, Ok(()));
    assert!(h.take_actions().is_empty());
    assert!(h.pending(Peer::Client).is_empty());
    h.connect_with(connect, Ok(()));
    assert_eq!(h.pending(Peer::Client), ESTABLISHED);
    // Once connected, the connect ticket is spent.
    h.connect_with(connect, Err(ConnectError::Refused));
    h.resolve_with(resolve, Err(ResolveError::NotFound));
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(h.take_actions(), ["splice"]);
    assert!(h.closed().is_empty());
}

// ---- forwarding ----

#[test]
fn absolute_form_is_forwarded_in_origin_form_with_hop_by_hop_headers_removed() {
    let mut h = Harness::new(&["example.com"]);
    let head = b"GET http://Example.COM/path/a?q=1&r=2 HTTP/1.1\r\n\
        Host: other.example\r\n\
        User-Agent: t/1\r\n\
        Proxy-Authorization: Basic Zm9vOmJhcg==\r\n\
        Proxy-Connection: keep-alive\r\n\
        Connection: keep-alive, X-Hop\r\n\
        X-Hop: secret\r\n\
        Keep-Alive: timeout=5\r\n\
        TE: trailers\r\n\
        Upgrade: websocket\r\n\
        Accept: */*\r\n\
        \r\n";
    h.client(head);
    assert_eq!(h.take_actions(), ["resolve example.com"]);
    h.open(IP);
    assert_eq!(h.take_actions(), ["connect 151.101.0.223:80"]);
    assert_eq!(
        text(&h.written_to_upstream()),
        "GET /path/a?q=1&r=2 HTTP/1.1\r\n\
         Host: example.com\r\n\
         User-Agent: t/1\r\n\
         Accept: */*\r\n\
         Via: 1.1 egret\r\n\
         \r\n"
    );
    h.sleep(ms(12));
    h.upstream(
        b"HTTP/1.1 200 OK\r\n\
          Content-Type: text/html; charset=utf-8\r\n\
          Content-Length: 5\r\n\
          Keep-Alive: timeout=5\r\n\
          Connection: keep-alive, X-Bar\r\n\
          X-Bar: 1\r\n\
          Proxy-Authenticate: Basic\r\n\
          \r\n\
          hello",
    );
    let response = b"HTTP/1.1 200 OK\r\n\
        Content-Type: text/html; charset=utf-8\r\n\
        Content-Length: 5\r\n\
        Via: 1.1 egret\r\n\
        \r\n\
        hello";
    assert_eq!(text(&h.written_to_client()), text(response));
    assert!(h.take_actions().is_empty(), "kept alive both ways");
    assert!(h.session.interest().read_client);

    assert_eq!(h.only_decided().host, name("example.com"));
    let closed = h.only_closed();
    let want = Closed {
        session: h.session.id(),
        seq: 1,
        at: h.wall_now(),
        duration: ms(12),
        client: sock(CLIENT_ADDR),
        listener: ListenerKind::Explicit,
        original_dst: None,
        method: "GET".into(),
        url: "http://example.com/path/a".into(),
        host: Some(name("example.com")),
        port: 80,
        status: 200,
        access: Some(Access::Allowed),
        rule: Some("example.com".into()),
        reason: Reason::Completed,
        detail: None,
        bytes_to_client: response.len() as u64,
        bytes_from_client: head.len() as u64,
        upstream: Some(sock("151.101.0.223:80")),
        content_type: Some("text/html".into()),
        sni: None,
        ech: false,
        dst_mismatch: false,
        vpc_endpoint: None,
    };
    assert_eq!(closed, want);
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert_eq!(
        line,
        format!(
            "1700000000.012     12 10.0.0.5 TCP_MISS/200 {} GET http://example.com/path/a - \
             HIER_DIRECT/151.101.0.223 text/html\n",
            response.len()
        )
    );
}

#[test]
fn the_host_header_comes_from_the_authority() {
    let settings = PolicySettings {
        ports: vec![80, 8080],
        ..settings()
    };
    let cases: [(&[u8], &str); 4] = [
        (
            b"GET http://a.example:8080/x HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "GET /x HTTP/1.1\r\nHost: a.example:8080\r\nVia: 1.1 egret\r\n\r\n",
        ),
        (
            b"GET http://a.example HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n",
        ),
        (
            b"GET http://a.example?q HTTP/1.1\r\n\r\n",
            "GET /?q HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n",
        ),
        (
            b"GET http://a.example:80/ HTTP/1.1\r\nhost: A.EXAMPLE:80\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n",
        ),
    ];
    for (request, forwarded) in cases {
        let mut h = Harness::with_settings(&["a.example"], settings.clone());
        h.client(request);
        h.open(IP);
        assert_eq!(text(&h.written_to_upstream()), forwarded);
    }
}

#[test]
fn an_absolute_url_on_a_port_not_allowed_is_denied() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example:8080/ HTTP/1.1\r\n\r\n");
    assert_eq!(h.written_to_client(), forbidden());
    let closed = h.only_closed();
    assert_eq!(closed.url, "http://a.example:8080/");
    assert_eq!(&*closed.method, "GET");
    assert_eq!(closed.detail, Some("port_not_allowed"));
}

#[test]
fn http10_requests_are_forwarded_as_http10_and_the_connection_closes() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.0\r\nConnection: keep-alive\r\nAccept: */*\r\n\r\n");
    h.open(IP);
    assert_eq!(
        text(&h.written_to_upstream()),
        "GET / HTTP/1.0\r\nHost: a.example\r\nAccept: */*\r\nVia: 1.0 egret\r\n\
         Connection: close\r\n\r\n"
    );
    h.upstream(b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi");
    assert_eq!(
        h.take_actions(),
        [
            "resolve a.example",
            "connect 151.101.0.223:80",
            "disconnect"
        ]
    );
    assert_eq!(
        text(&h.written_to_client()),
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.0 egret\r\nConnection: close\r\n\r\nhi"
    );
    assert_eq!(h.take_actions(), ["shutdown"]);
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);
    assert_eq!(h.only_closed().reason, Reason::Completed);
}

#[test]
fn http10_clients_get_no_interim_responses_and_no_chunked_ones() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"POST http://a.example/ HTTP/1.0\r\nContent-Length: 2\r\n\r\nhi");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert!(h.pending(Peer::Client).is_empty());
    h.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "502 Bad Gateway",
            "ERR_INVALID_RESP",
            0,
            Some("chunked_response_to_http10")
        )
    );
}

// ---- keep-alive ----

#[test]
fn a_second_request_to_the_same_host_reuses_the_upstream() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/1 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n1");
    h.written_to_client();
    assert_eq!(
        h.take_actions(),
        ["resolve a.example", "connect 151.101.0.223:80"]
    );

    h.sleep(secs(3));
    h.client(b"GET http://A.example/2 HTTP/1.1\r\n\r\n");
    assert!(h.take_actions().is_empty(), "no resolve, no connect");
    assert_eq!(
        h.written_to_upstream(),
        b"GET /2 HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n"
    );
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\n2");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nVia: 1.1 egret\r\n\r\n2"
    );
    let decided = h.decided();
    assert_eq!(decided.len(), 2);
    assert_eq!(
        (decided[0].seq, decided[1].seq, decided[1].access),
        (1, 2, Access::Allowed)
    );
    let closed = h.closed();
    assert_eq!(closed.len(), 2);
    assert_eq!(closed[1].seq, 2);
    assert_eq!(closed[1].url, "http://a.example/2");
    assert_eq!(closed[1].upstream, Some(sock("151.101.0.223:80")));
    assert!(!h.is_closed());
}

#[test]
fn a_second_request_to_another_host_opens_a_new_upstream() {
    let mut h = Harness::new(&["a.example", "b.example"]);
    exchange(&mut h, b"GET http://a.example/ HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"GET http://b.example/ HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect", "resolve b.example"]);
    assert!(h.pending(Peer::Upstream).is_empty());
    h.open(IP2);
    assert_eq!(h.take_actions(), ["connect 151.101.64.223:80"]);
    assert_eq!(
        h.written_to_upstream(),
        b"GET / HTTP/1.1\r\nHost: b.example\r\nVia: 1.1 egret\r\n\r\n"
    );
}

#[test]
fn a_second_request_to_another_port_opens_a_new_upstream() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/ HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"GET http://a.example:443/ HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect", "resolve a.example"]);
}

#[test]
fn a_second_request_to_a_denied_host_is_refused_and_never_reaches_the_upstream() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/ HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"GET http://evil.example/steal HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect"]);
    assert!(h.pending(Peer::Upstream).is_empty());
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(h.take_actions(), ["shutdown"]);
    let decided = h.decided();
    assert_eq!(decided.len(), 2);
    assert_eq!(
        decided[1].access,
        Access::Denied(DenyReason::NotAllowlisted)
    );
    assert_eq!(decided[1].seq, 2);
    assert_eq!(h.closed()[1].url, "http://evil.example/steal");
}

#[test]
fn a_connect_after_a_request_to_the_same_authority_opens_its_own_connection() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example:443/ HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"CONNECT a.example:443 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect", "resolve a.example"]);
}

#[test]
fn pipelined_requests_are_each_decided_on_their_own() {
    let mut h = Harness::new(&["a.example"]);
    h.client(
        b"GET http://a.example/1 HTTP/1.1\r\n\r\n\
          GET http://a.example/2 HTTP/1.1\r\n\r\n\
          GET http://evil.example/3 HTTP/1.1\r\n\r\n",
    );
    h.open(IP);
    assert_eq!(
        h.written_to_upstream(),
        b"GET /1 HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n",
        "the next request waits for this response"
    );
    h.upstream(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(
        h.written_to_upstream(),
        b"GET /2 HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n"
    );
    h.upstream(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert!(h.pending(Peer::Upstream).is_empty());
    let response = b"HTTP/1.1 204 No Content\r\nVia: 1.1 egret\r\n\r\n";
    assert_eq!(
        h.written_to_client(),
        [&response[..], response, &forbidden()].concat()
    );
    let access: Vec<_> = h.decided().iter().map(|d| (d.seq, d.access)).collect();
    assert_eq!(
        access,
        [
            (1, Access::Allowed),
            (2, Access::Allowed),
            (3, Access::Denied(DenyReason::NotAllowlisted))
        ]
    );
    assert_eq!(h.closed().len(), 3);
}

#[test]
fn a_reused_upstream_that_had_closed_is_retried_once_for_a_bodiless_request() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    let head2 = b"GET /2 HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n";
    assert_eq!(h.written_to_upstream(), head2);
    h.eof(Peer::Upstream);
    assert_eq!(h.take_actions(), ["disconnect", "connect 151.101.0.223:80"]);
    assert!(h.pending(Peer::Client).is_empty());
    h.connect_ok();
    assert_eq!(h.written_to_upstream(), head2);
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: 1.1 egret\r\n\r\n"
    );
    assert_eq!(h.decided().len(), 2, "a retry is no new decision");
    assert_eq!(h.closed()[1].reason, Reason::Completed);
}

#[test]
fn a_retried_request_is_sent_once_even_if_it_was_not_yet_written() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    // The runtime learns of the close before it could write the head.
    h.eof(Peer::Upstream);
    h.connect_ok();
    assert_eq!(
        h.written_to_upstream(),
        b"GET /2 HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n"
    );
}

#[test]
fn a_retried_request_whose_new_upstream_closes_too_is_a_502() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    h.written_to_upstream();
    h.eof(Peer::Upstream);
    h.connect_ok();
    h.written_to_upstream();
    h.eof(Peer::Upstream);
    assert_eq!(
        h.written_to_client(),
        error_reply("502 Bad Gateway", "ERR_ZERO_SIZE_OBJECT", 0, None)
    );
    assert_eq!(
        h.take_actions(),
        [
            "disconnect",
            "connect 151.101.0.223:80",
            "disconnect",
            "shutdown"
        ]
    );
}

#[test]
fn request_bytes_left_unwritten_for_one_upstream_never_reach_the_next() {
    let mut h = Harness::new(&["a.example", "b.example"]);
    h.client(b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello");
    h.open(IP);
    // The upstream answers before the runtime could write the request.
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    h.written_to_client();
    h.take_actions();
    h.client(b"GET http://b.example/ HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect", "resolve b.example"]);
    h.open(IP2);
    assert_eq!(
        h.written_to_upstream(),
        b"GET / HTTP/1.1\r\nHost: b.example\r\nVia: 1.1 egret\r\n\r\n"
    );
}

#[test]
fn a_reused_upstream_that_had_closed_is_not_retried_for_a_request_with_a_body() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.client(b"POST http://a.example/2 HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi");
    h.written_to_upstream();
    h.eof(Peer::Upstream);
    assert_eq!(
        h.written_to_client(),
        error_reply("502 Bad Gateway", "ERR_ZERO_SIZE_OBJECT", 0, None)
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
}

#[test]
fn an_upstream_closing_between_requests_is_dropped_and_the_next_request_reconnects() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.eof(Peer::Upstream);
    assert_eq!(h.take_actions(), ["disconnect"]);
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["resolve a.example"]);
}

#[test]
fn an_upstream_speaking_out_of_turn_is_dropped() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.upstream(b"HTTP/1.1 200 OK\r\n\r\n");
    assert_eq!(h.take_actions(), ["disconnect"]);
    assert!(h.pending(Peer::Client).is_empty());
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["resolve a.example"]);
}

#[test]
fn a_response_with_connection_close_ends_the_upstream_not_the_client() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/1 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nVia: 1.1 egret\r\n\r\n"
    );
    assert_eq!(
        h.take_actions(),
        [
            "resolve a.example",
            "connect 151.101.0.223:80",
            "disconnect"
        ]
    );
    h.client(b"GET http://a.example/2 HTTP/1.1\r\n\r\n");
    assert_eq!(h.take_actions(), ["resolve a.example"]);
}

// ---- bodies ----

#[test]
fn content_length_request_bodies_stream_through() {
    let mut h = Harness::new(&["a.example"]);
    let head = b"POST http://a.example/up HTTP/1.1\r\nContent-Length: 10\r\n\r\n";
    h.client(&[&head[..], b"hel"].concat());
    h.open(IP);
    assert_eq!(
        text(&h.written_to_upstream()),
        "POST /up HTTP/1.1\r\nHost: a.example\r\nContent-Length: 10\r\nVia: 1.1 egret\r\n\r\nhel"
    );
    assert!(h.session.interest().read_client);
    h.client(b"lo");
    assert_eq!(h.pending(Peer::Upstream), b"lo", "only what was fed");
    h.client(b"wor");
    assert_eq!(h.pending(Peer::Upstream), b"lowor");
    assert_eq!(h.written_to_upstream(), b"lowor");
    // Bytes past the body are the next request, not body.
    h.client(b"ldGET http://a.example/next HTTP/1.1\r\n\r\n");
    assert_eq!(h.written_to_upstream(), b"ld");
    assert!(!h.session.interest().read_client, "the body is complete");
    h.upstream(b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n");
    let closed = &h.closed()[0];
    assert_eq!(closed.bytes_from_client, head.len() as u64 + 10);
    assert_eq!(closed.status, 201);
    assert_eq!(
        h.written_to_upstream(),
        b"GET /next HTTP/1.1\r\nHost: a.example\r\nVia: 1.1 egret\r\n\r\n"
    );
}

#[test]
fn chunked_request_bodies_stream_through_with_chunk_lines_rewritten() {
    let mut h = Harness::new(&["a.example"]);
    let head = b"POST http://a.example/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n";
    h.client(head);
    h.open(IP);
    assert_eq!(
        text(&h.written_to_upstream()),
        "POST /up HTTP/1.1\r\nHost: a.example\r\nTransfer-Encoding: chunked\r\n\
         Via: 1.1 egret\r\n\r\n"
    );
    let pieces: [(&[u8], &[u8]); 5] = [
        (b"5;name=value\r\nhel", b"5\r\nhel"),
        (b"lo\r\n", b"lo\r\n"),
        (b"00A \t; x\r\n0123456789\r\n", b"a\r\n0123456789\r\n"),
        (b"0\r\nX-Checksum: 12\r\n", b"0\r\nX-Checksum: 12\r\n"),
        (b"\r\n", b"\r\n"),
    ];
    let mut fed = 0;
    for (input, forwarded) in pieces {
        h.client(input);
        fed += input.len();
        assert_eq!(h.written_to_upstream(), forwarded, "{}", text(input));
    }
    h.upstream(b"HTTP/1.1 204 No Content\r\n\r\n");
    assert_eq!(h.closed()[0].bytes_from_client, (head.len() + fed) as u64);
    assert!(!h.is_closed());
}

#[test]
fn a_malformed_chunk_is_a_bad_request_before_any_response() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.client(b"0x5\r\nhello\r\n");
    assert!(h.pending(Peer::Upstream).is_empty());
    assert_eq!(h.written_to_client(), bad_request("invalid_chunk_size"));
    assert_eq!(
        h.take_actions(),
        [
            "resolve a.example",
            "connect 151.101.0.223:80",
            "disconnect",
            "shutdown"
        ]
    );
    assert_eq!(h.only_closed().reason, Reason::InvalidRequest);
}

#[test]
fn a_request_trailer_that_frames_or_routes_is_a_bad_request() {
    // RFC 9110 §6.5.1: an origin that merged it into the head would frame or route by it.
    let mut h = Harness::new(&["a.example"]);
    h.client(b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.client(b"5\r\nhello\r\n0\r\nHost: denied.example\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        bad_request("routing_field_in_trailer")
    );
    assert_eq!(h.only_closed().reason, Reason::InvalidRequest);
}

#[test]
fn chunked_responses_with_trailers_are_forwarded_chunk_by_chunk() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\nTE: trailers\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n4;x\r\nwi");
    assert_eq!(
        text(&h.written_to_client()),
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\nVia: 1.1 egret\r\n\r\n4\r\nwi"
    );
    h.upstream(b"ki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n");
    assert_eq!(
        h.written_to_client(),
        b"ki\r\n5\r\npedia\r\n0\r\nX-Sum: 9\r\n"
    );
    assert!(h.closed().is_empty(), "not complete before the blank line");
    h.upstream(b"\r\n");
    assert_eq!(h.written_to_client(), b"\r\n");
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::Completed);
    assert!(
        h.take_actions().iter().all(|a| a != "disconnect"),
        "reusable"
    );
}

#[test]
fn a_malformed_chunk_in_a_started_response_resets() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwikiX");
    assert_eq!(
        h.take_actions(),
        ["resolve a.example", "connect 151.101.0.223:80", "reset"]
    );
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::InvalidResponse);
    assert_eq!(closed.detail, Some("missing_crlf_after_chunk"));
}

#[test]
fn close_delimited_responses_tell_the_client_connection_close() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nsome");
    assert_eq!(
        text(&h.written_to_client()),
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nVia: 1.1 egret\r\n\
         Connection: close\r\n\r\nsome"
    );
    h.upstream(b" more");
    assert_eq!(h.written_to_client(), b" more");
    h.take_actions();
    h.eof(Peer::Upstream);
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::Completed);
    assert_eq!(closed.content_type.as_deref(), Some("text/plain"));
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);
}

#[test]
fn head_responses_have_no_body_whatever_their_content_length() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"HEAD http://a.example/big HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\nVia: 1.1 egret\r\n\r\n"
    );
    assert_eq!(h.only_closed().reason, Reason::Completed);
    h.take_actions();
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    assert!(h.take_actions().is_empty(), "the upstream is reused");
}

#[test]
fn interim_responses_are_forwarded_before_the_final_one() {
    let mut h = Harness::new(&["a.example"]);
    h.client(
        b"PUT http://a.example/f HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\n",
    );
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 100 Continue\r\n\r\n");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 100 Continue\r\nVia: 1.1 egret\r\n\r\n"
    );
    h.client(b"data");
    assert_eq!(h.written_to_upstream(), b"data");
    h.upstream(
        b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n\
          HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    );
    let rest = "HTTP/1.1 103 Early Hints\r\nLink: </a>\r\nVia: 1.1 egret\r\n\r\n\
         HTTP/1.1 201 Created\r\nContent-Length: 2\r\nVia: 1.1 egret\r\n\r\nok";
    assert_eq!(text(&h.written_to_client()), rest);
    let closed = h.only_closed();
    assert_eq!(closed.status, 201);
    let continued = b"HTTP/1.1 100 Continue\r\nVia: 1.1 egret\r\n\r\n";
    assert_eq!(
        closed.bytes_to_client,
        (continued.len() + rest.len()) as u64
    );
}

#[test]
fn no_content_and_not_modified_have_no_body() {
    for (status, response) in [
        ("204", &b"HTTP/1.1 204 No Content\r\n\r\n"[..]),
        (
            "304",
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 100\r\n\r\n",
        ),
    ] {
        let mut h = Harness::new(&["a.example"]);
        h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
        h.open(IP);
        h.written_to_upstream();
        h.upstream(response);
        let forwarded = h.written_to_client();
        assert!(forwarded.ends_with(b"Via: 1.1 egret\r\n\r\n"), "{status}");
        let closed = h.only_closed();
        assert_eq!(closed.status.to_string(), status);
        assert_eq!(closed.reason, Reason::Completed);
        h.take_actions();
        h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
        assert!(h.take_actions().is_empty(), "{status}: reused");
    }
}

#[test]
fn bytes_after_a_complete_response_make_the_upstream_unusable() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 204 No Content\r\n\r\nsmuggled");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 204 No Content\r\nVia: 1.1 egret\r\n\r\n"
    );
    assert_eq!(
        h.take_actions(),
        [
            "resolve a.example",
            "connect 151.101.0.223:80",
            "disconnect"
        ]
    );
}

// ---- strict parsing ----

#[test]
fn ambiguous_framing_is_a_bad_request() {
    let cases = [
        (
            "HTTP/1.1",
            "Content-Length: 5\r\nTransfer-Encoding: chunked",
            "content_length_and_transfer_encoding",
        ),
        (
            "HTTP/1.1",
            "Content-Length: 5\r\nContent-Length: 5",
            "duplicate_content_length",
        ),
        ("HTTP/1.1", "Content-Length: +5", "invalid_content_length"),
        ("HTTP/1.1", "Content-Length: 5, 5", "invalid_content_length"),
        ("HTTP/1.1", "Content-Length: 0x5", "invalid_content_length"),
        (
            "HTTP/1.1",
            "Transfer-Encoding: identity",
            "unsupported_transfer_coding",
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked, gzip",
            "unsupported_transfer_coding",
        ),
        (
            "HTTP/1.1",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
            "unsupported_transfer_coding",
        ),
        (
            "HTTP/1.0",
            "Transfer-Encoding: chunked",
            "transfer_encoding_in_http10",
        ),
    ];
    for (version, fields, detail) in cases {
        let request = format!("POST http://a.example/ {version}\r\n{fields}\r\n\r\n");
        assert_bad_request(request.as_bytes(), detail);
    }
}

#[test]
fn a_request_that_cannot_start_with_a_method_is_refused_at_once() {
    // No line ending, no head end: without this check it waited for the header timeout.
    for start in [
        &[0x16, 0x03, 0x01, 0x00, 0x40, 0x01][..],
        b"\0GET",
        b" GET",
        b"\x80",
    ] {
        assert_bad_request(start, "invalid_request_line");
    }
}

#[test]
fn framing_fields_cannot_be_stripped_or_misspelt() {
    // Either would let the origin frame the body differently from the gateway, and read a
    // request in it that was never decided or logged.
    let cases = [
        (
            "Connection: Content-Length\r\nContent-Length: 5",
            "connection_names_framing_header",
        ),
        (
            "Connection: close, transfer-encoding\r\nTransfer-Encoding: chunked",
            "connection_names_framing_header",
        ),
        ("Content_Length: 5", "framing_header_with_underscore"),
        (
            "transfer_encoding: chunked",
            "framing_header_with_underscore",
        ),
    ];
    for (fields, detail) in cases {
        let request = format!("POST http://a.example/ HTTP/1.1\r\n{fields}\r\n\r\nhello");
        assert_bad_request(request.as_bytes(), detail);
    }
}

#[test]
fn a_response_whose_connection_names_its_framing_is_a_502() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nConnection: Content-Length\r\nContent-Length: 2\r\n\r\nok");
    let reply = text(&h.written_to_client());
    assert!(reply.starts_with("HTTP/1.1 502 Bad Gateway\r\n"), "{reply}");
    assert!(
        reply.contains("X-Egret-Reason: connection_names_framing_header\r\n"),
        "{reply}"
    );
}

#[test]
fn malformed_lines_are_a_bad_request() {
    let cases: [(&[u8], &str); 7] = [
        (
            b"GET http://a.example/ HTTP/1.1\r\nX-A: b\r\n folded\r\n\r\n",
            "invalid_header_name",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nX-A: b\rc\r\n\r\n",
            "bare_cr_or_lf",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\nX-A: b\r\n\r\n",
            "bare_cr_or_lf",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nX-A: b\nX-B: c\r\n\r\n",
            "bare_cr_or_lf",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nX A: b\r\n\r\n",
            "invalid_header_name",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nX-A: \x01\r\n\r\n",
            "invalid_header_value",
        ),
        (
            b"GET http://a.example/ HTTP/2.0\r\n\r\n",
            "unsupported_version",
        ),
    ];
    for (request, detail) in cases {
        assert_bad_request(request, detail);
    }
}

#[test]
fn a_head_ended_by_bare_lfs_alone_is_refused_at_once() {
    // Without CRLF CRLF the head would never end: the first bare LF is refused there and then.
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\nHost: a.example\n\n");
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "400 Bad Request",
            "ERR_INVALID_REQ",
            0,
            Some("bare_cr_or_lf")
        )
    );
    assert!(h.decided().is_empty());
    assert_eq!(h.take_actions(), ["shutdown"]);
}

#[test]
fn suspicious_hosts_are_a_bad_request() {
    let long_label = "a".repeat(64);
    let long_name = format!("{0}.{0}.{0}.{1}", "a".repeat(63), "b".repeat(62));
    assert_eq!(long_name.len(), 254);
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            b"GET http://a.example/ HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n".to_vec(),
            "multiple_host",
        ),
        (
            b"GET http://user@a.example/ HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_host_char",
        ),
        (
            b"GET http://a.example%2f@evil/ HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_host_char",
        ),
        (
            b"GET http://a.example\\@evil/ HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_host_char",
        ),
        (
            b"CONNECT a.example@evil:443 HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_host_char",
        ),
        (
            b"CONNECT a%2eexample:443 HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_host_char",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nHost: a example\r\n\r\n".to_vec(),
            "invalid_host_header",
        ),
        (
            b"GET http://a.example/ HTTP/1.1\r\nHost: a\x7fb\r\n\r\n".to_vec(),
            "invalid_header_value",
        ),
        (
            b"GET http://a\x01b/ HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_request_line",
        ),
        (
            "CONNECT bücher.example:443 HTTP/1.1\r\n\r\n"
                .as_bytes()
                .to_vec(),
            "invalid_target",
        ),
        (
            "GET http://a.example/ HTTP/1.1\r\nHost: bücher.example\r\n\r\n"
                .as_bytes()
                .to_vec(),
            "invalid_host_header",
        ),
        (
            b"CONNECT a..example:443 HTTP/1.1\r\n\r\n".to_vec(),
            "empty_label",
        ),
        (
            b"CONNECT .a.example:443 HTTP/1.1\r\n\r\n".to_vec(),
            "empty_label",
        ),
        (
            b"CONNECT a.example..:443 HTTP/1.1\r\n\r\n".to_vec(),
            "empty_label",
        ),
        (b"GET http:///x HTTP/1.1\r\n\r\n".to_vec(), "empty_host"),
        (
            format!("CONNECT {long_label}.example:443 HTTP/1.1\r\n\r\n").into_bytes(),
            "label_too_long",
        ),
        (
            format!("CONNECT {long_name}:443 HTTP/1.1\r\n\r\n").into_bytes(),
            "host_too_long",
        ),
        (
            b"CONNECT 0x7f.1:443 HTTP/1.1\r\n\r\n".to_vec(),
            "non_canonical_ipv4",
        ),
        (
            b"CONNECT 2130706433:443 HTTP/1.1\r\n\r\n".to_vec(),
            "non_canonical_ipv4",
        ),
        (
            b"CONNECT 017.0.0.1:443 HTTP/1.1\r\n\r\n".to_vec(),
            "non_canonical_ipv4",
        ),
        (
            b"GET http://127.1/ HTTP/1.1\r\n\r\n".to_vec(),
            "non_canonical_ipv4",
        ),
        (
            b"CONNECT [fe80::1%25eth0]:443 HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_ipv6",
        ),
        (
            b"CONNECT a.example:0443 HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_port",
        ),
        (
            b"CONNECT a.example:65536 HTTP/1.1\r\n\r\n".to_vec(),
            "invalid_port",
        ),
    ];
    for (request, detail) in cases {
        assert_bad_request(&request, detail);
    }
}

#[test]
fn targets_a_proxy_does_not_serve_are_a_bad_request() {
    let cases: [(&[u8], &str); 5] = [
        (
            b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "origin_form_to_proxy",
        ),
        (
            b"OPTIONS * HTTP/1.1\r\nHost: a.example\r\n\r\n",
            "origin_form_to_proxy",
        ),
        (
            b"GET https://a.example/ HTTP/1.1\r\n\r\n",
            "unsupported_scheme",
        ),
        (
            b"GET ftp://a.example/ HTTP/1.1\r\n\r\n",
            "unsupported_scheme",
        ),
        (b"GET a.example/x HTTP/1.1\r\n\r\n", "invalid_target"),
    ];
    for (request, detail) in cases {
        assert_bad_request(request, detail);
    }
}

#[test]
fn a_head_over_max_header_bytes_is_a_431() {
    let limits = Limits {
        max_header_bytes: 128,
        ..Limits::default()
    };
    let too_large = error_reply(
        "431 Request Header Fields Too Large",
        "ERR_TOO_BIG",
        0,
        None,
    );
    let head_of = |len: usize| {
        let start = b"GET http://a.example/ HTTP/1.1\r\nX-Pad: ";
        let pad = len - start.len() - 4;
        [&start[..], &vec![b'p'; pad], b"\r\n\r\n"].concat()
    };

    // Exactly at the limit is accepted.
    let mut h = Harness::with_limits(&["a.example"], limits);
    h.client(&head_of(128));
    assert_eq!(h.take_actions(), ["resolve a.example"]);

    // One byte over is not, in one read.
    let mut h = Harness::with_limits(&["a.example"], limits);
    let head = head_of(129);
    h.client(&head);
    assert_eq!(h.written_to_client(), too_large);
    assert_eq!(h.take_actions(), ["shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.status, 431);
    assert_eq!(closed.reason, Reason::HeaderTooLarge);
    assert_eq!(closed.url, "error:request-too-large");
    assert_eq!(closed.detail, None);

    // Nor in many reads that never finish the head.
    let mut h = Harness::with_limits(&["a.example"], limits);
    let endless = [&head[..head.len() - 4], &[b'p'; 64]].concat();
    let mut fed = 0;
    for piece in endless.chunks(7) {
        assert!(h.session.interest().read_client);
        h.client(piece);
        fed += piece.len();
        if !h.pending(Peer::Client).is_empty() {
            break;
        }
    }
    assert!(
        fed > 128 && fed <= 135,
        "rejected as soon as it is over: {fed}"
    );
    assert_eq!(h.written_to_client(), too_large);
    assert_eq!(h.only_closed().bytes_from_client, fed as u64);
}

#[test]
fn a_complete_head_over_the_limit_after_many_reads_is_a_431() {
    let limits = Limits {
        max_header_bytes: 128,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(&["a.example"], limits);
    let head = [
        &b"GET http://a.example/ HTTP/1.1\r\nX-Pad: "[..],
        &[b'p'; 86],
        b"\r\n\r\n",
    ]
    .concat();
    assert_eq!(head.len(), 129);
    h.client(&head[..128]);
    assert!(h.pending(Peer::Client).is_empty());
    h.client(&head[128..]);
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "431 Request Header Fields Too Large",
            "ERR_TOO_BIG",
            0,
            None
        )
    );
}

#[test]
fn an_oversized_head_with_an_early_bare_lf_is_a_400_however_it_is_read() {
    // Found by the http_preamble fuzz target: a head over the limit with a bare LF in its
    // first bytes was a 431 in one read and a 400 when its start came in a read of its own.
    let limits = Limits {
        max_header_bytes: 128,
        ..Limits::default()
    };
    let early = [
        &b"GET http://a.example/ HTTP/1.1\nX-Pad: "[..],
        &[b'p'; 120],
        b"\r\n\r\n",
    ]
    .concat();
    let bare = error_reply(
        "400 Bad Request",
        "ERR_INVALID_REQ",
        0,
        Some("bare_cr_or_lf"),
    );
    for reads in [early.len(), 64, 7] {
        let mut h = Harness::with_limits(&["a.example"], limits);
        for piece in early.chunks(reads) {
            if !h.is_closed() && h.pending(Peer::Client).is_empty() {
                h.client(piece);
            }
        }
        assert_eq!(
            text(&h.written_to_client()),
            text(&bare),
            "reads of {reads}"
        );
    }
    // A bare LF past the limit comes too late: the head was too large first.
    let late = [
        &b"GET http://a.example/ HTTP/1.1\r\nX-Pad: "[..],
        &[b'p'; 120],
        b"\nX: y\r\n\r\n",
    ]
    .concat();
    for reads in [late.len(), 7] {
        let mut h = Harness::with_limits(&["a.example"], limits);
        for piece in late.chunks(reads) {
            if !h.is_closed() && h.pending(Peer::Client).is_empty() {
                h.client(piece);
            }
        }
        assert_eq!(
            h.only_closed().reason,
            Reason::HeaderTooLarge,
            "reads of {reads}"
        );
    }
}

// ---- timers ----

#[test]
fn a_head_slower_than_header_timeout_is_a_408() {
    let mut h = Harness::new(&["a.example"]);
    assert_eq!(h.session.poll_timeout(), Some(h.start + secs(10)));
    h.sleep(secs(3));
    h.client(b"GET http://a.exa");
    // Trickling bytes does not extend the deadline.
    h.advance(secs(6));
    h.client(b"mple/ HTTP/1.1\r\n");
    h.advance(ms(999));
    assert!(h.take_actions().is_empty());
    h.advance(ms(1));
    assert_eq!(
        h.written_to_client(),
        error_reply("408 Request Timeout", "ERR_REQUEST_START_TIMEOUT", 0, None)
    );
    assert_eq!(h.take_actions(), ["shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.status, 408);
    assert_eq!(closed.reason, Reason::HeaderTimeout);
    assert_eq!(closed.url, "error:request-timeout");
    assert_eq!(closed.duration, secs(7), "from the first byte");
}

#[test]
fn a_silent_client_gets_a_408_at_header_timeout_after_accept() {
    let mut h = Harness::new(&["a.example"]);
    h.advance(secs(10));
    assert_eq!(
        h.written_to_client(),
        error_reply("408 Request Timeout", "ERR_REQUEST_START_TIMEOUT", 0, None)
    );
    assert_eq!(h.only_closed().reason, Reason::HeaderTimeout);
}

#[test]
fn the_header_timer_of_a_kept_alive_request_starts_at_its_first_byte() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    h.advance(secs(100));
    assert!(h.take_actions().is_empty(), "well within idle_timeout");
    h.client(b"GET http://a.example/2 HT");
    h.advance(ms(9999));
    assert!(h.pending(Peer::Client).is_empty());
    h.advance(ms(1));
    assert_eq!(
        h.written_to_client(),
        error_reply("408 Request Timeout", "ERR_REQUEST_START_TIMEOUT", 0, None)
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    let closed = h.closed();
    assert_eq!(closed.len(), 2);
    assert_eq!((closed[1].seq, closed[1].duration), (2, secs(10)));
}

#[test]
fn an_idle_kept_alive_connection_closes_quietly_at_idle_timeout() {
    let mut h = Harness::new(&["a.example"]);
    exchange(&mut h, b"GET http://a.example/1 HTTP/1.1\r\n\r\n", IP);
    h.take_actions();
    let events = h.events.len();
    h.advance(ms(299_999));
    assert!(h.take_actions().is_empty());
    h.advance(ms(1));
    assert!(h.pending(Peer::Client).is_empty(), "no reply");
    // The kept-alive upstream connection goes first.
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    assert_eq!(h.events.len(), events, "no event");
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);
}

#[test]
fn an_upstream_that_never_answers_is_a_504_read_timeout() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.advance(secs(1));
    h.written_to_upstream();
    h.take_actions();
    h.advance(ms(299_999));
    assert!(h.take_actions().is_empty());
    h.advance(ms(1));
    assert_eq!(
        h.written_to_client(),
        error_reply("504 Gateway Timeout", "ERR_READ_TIMEOUT", 0, None)
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::ReadTimeout);
    assert_eq!(closed.status, 504);
}

#[test]
fn a_response_that_stalls_midway_is_reset_at_idle_timeout() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc");
    h.written_to_client();
    h.take_actions();
    h.advance(secs(300));
    assert_eq!(h.take_actions(), ["reset"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::IdleTimeout);
    assert_eq!(closed.status, 200);
}

#[test]
fn an_idle_tunnel_is_closed_after_idle_timeout() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_client();
    h.take_actions();
    h.advance(secs(200));
    h.splice_progress(Peer::Upstream, 10);
    h.advance(secs(299));
    assert!(
        h.take_actions().is_empty(),
        "progress restarts the idle timer"
    );
    h.advance(secs(1));
    assert_eq!(h.take_actions(), ["close"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::IdleTimeout);
    assert_eq!(closed.status, 200);
    assert_eq!(closed.duration, secs(500));
}

#[test]
fn early_and_repeated_timeouts_are_harmless() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.resolve(&[IP]);
    for _ in 0..3 {
        h.advance(Duration::ZERO);
        h.advance(ms(1));
    }
    assert_eq!(
        h.take_actions(),
        ["resolve pypi.org", "connect 151.101.0.223:443"]
    );
    h.connect_ok();
    assert_eq!(h.written_to_client(), ESTABLISHED);
}

// ---- upstream failures ----

#[test]
fn a_malformed_response_is_a_502() {
    for (response, detail) in [
        (&b"HTTP/1.1 abc OK\r\n\r\n"[..], "malformed_response"),
        (b"HTTP/1.1 200 OK\r\nX: a\nY: b\r\n\r\n", "bare_cr_or_lf"),
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            "duplicate_content_length",
        ),
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: zstd-ish\r\n\r\n",
            "unsupported_transfer_coding",
        ),
        (
            b"HTTP/1.1 101 Switching Protocols\r\n\r\n",
            "unexpected_switching_protocols",
        ),
        (b"HTTP/1.1 600 Odd\r\n\r\n", "invalid_status"),
    ] {
        let mut h = Harness::new(&["a.example"]);
        h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
        h.open(IP);
        h.written_to_upstream();
        h.take_actions();
        h.upstream(response);
        assert_eq!(
            text(&h.written_to_client()),
            text(&error_reply(
                "502 Bad Gateway",
                "ERR_INVALID_RESP",
                0,
                Some(detail)
            ))
        );
        assert_eq!(h.take_actions(), ["disconnect", "shutdown"], "{detail}");
        let closed = h.only_closed();
        assert_eq!(closed.reason, Reason::InvalidResponse);
        assert_eq!(closed.status, 502);
    }
}

#[test]
fn an_oversized_response_head_is_a_502() {
    let limits = Limits {
        max_header_bytes: 128,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(&["a.example"], limits);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(&[&b"HTTP/1.1 200 OK\r\nX-Pad: "[..], &[b'p'; 200]].concat());
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "502 Bad Gateway",
            "ERR_INVALID_RESP",
            0,
            Some("response_head_too_large")
        )
    );
}

#[test]
fn an_upstream_closing_before_any_byte_is_a_502_zero_size_object() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.take_actions();
    h.eof(Peer::Upstream);
    assert_eq!(
        h.written_to_client(),
        error_reply("502 Bad Gateway", "ERR_ZERO_SIZE_OBJECT", 0, None)
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::EmptyResponse);
    assert_eq!(closed.status, 502);
}

#[test]
fn an_upstream_closing_inside_the_response_head_is_a_502() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Le");
    h.io_error(Peer::Upstream);
    assert_eq!(
        h.written_to_client(),
        error_reply(
            "502 Bad Gateway",
            "ERR_INVALID_RESP",
            0,
            Some("incomplete_response_head")
        )
    );
}

#[test]
fn a_truncated_response_body_closes_the_connection() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabcd");
    let head = b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\nVia: 1.1 egret\r\n\r\n";
    assert_eq!(h.written_to_client(), [&head[..], b"abcd"].concat());
    h.take_actions();
    h.eof(Peer::Upstream);
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    assert!(
        h.pending(Peer::Client).is_empty(),
        "no reply after a response began"
    );
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::UpstreamClosed);
    assert_eq!(closed.detail, Some("response_truncated"));
    assert_eq!(closed.bytes_to_client, head.len() as u64 + 4);
}

#[test]
fn an_upstream_closing_while_the_tunnel_opens_ends_it() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.take_actions();
    h.eof(Peer::Upstream);
    assert!(!h.take_actions().contains(&"splice".to_owned()));
    assert_eq!(h.written_to_client(), ESTABLISHED);
    assert_eq!(h.take_actions(), ["shutdown"]);
    assert_eq!(h.only_closed().reason, Reason::UpstreamClosed);
}

#[test]
fn a_failed_splice_resets_naming_the_side() {
    for (side, reason, detail) in [
        (Peer::Client, Reason::ClientClosed, "client_reset"),
        (Peer::Upstream, Reason::UpstreamClosed, "upstream_reset"),
    ] {
        let mut h = Harness::new(&["pypi.org"]);
        h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
        h.open(IP);
        h.written_to_client();
        h.take_actions();
        h.splice_end(SpliceEnd::Failed(side));
        assert_eq!(h.take_actions(), ["reset"]);
        let closed = h.only_closed();
        assert_eq!((closed.reason, closed.detail), (reason, Some(detail)));
    }
}

// ---- client end of stream ----

#[test]
fn client_eof_on_an_idle_connection_closes_at_once() {
    let mut h = Harness::new(&["a.example"]);
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["close"]);
    assert!(h.events.is_empty());
}

#[test]
fn client_eof_inside_a_head_is_a_bad_request_then_close() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\nAcc");
    h.eof(Peer::Client);
    assert!(h.take_actions().is_empty());
    assert_eq!(h.written_to_client(), bad_request("incomplete_head"));
    assert_eq!(
        h.take_actions(),
        ["close"],
        "no FIN to a client that sent one"
    );
    assert_eq!(h.only_closed().detail, Some("incomplete_head"));
}

#[test]
fn client_eof_after_a_complete_request_still_gets_the_response() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.eof(Peer::Client);
    h.open(IP);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 egret\r\nConnection: close\r\n\r\nok"
    );
    assert_eq!(
        h.take_actions(),
        [
            "resolve a.example",
            "connect 151.101.0.223:80",
            "disconnect",
            "close"
        ]
    );
    assert_eq!(h.only_closed().reason, Reason::Completed);
}

#[test]
fn client_eof_inside_a_request_body_resets() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 10\r\n\r\nabc");
    h.open(IP);
    h.take_actions();
    h.eof(Peer::Client);
    assert_eq!(h.take_actions(), ["reset"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::ClientClosed);
    assert_eq!(closed.detail, Some("request_truncated"));
}

#[test]
fn a_client_reset_mid_exchange_ends_the_session() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.take_actions();
    h.io_error(Peer::Client);
    assert_eq!(h.take_actions(), ["reset"]);
    let closed = h.only_closed();
    assert_eq!(
        (closed.reason, closed.detail),
        (Reason::ClientClosed, Some("client_reset"))
    );
}

#[test]
fn client_eof_while_lingering_closes() {
    let mut h = Harness::new(&[]);
    h.client(b"GET http://evil.example/ HTTP/1.1\r\n\r\n");
    h.eof(Peer::Client);
    assert!(h.take_actions().is_empty(), "the reply is still queued");
    h.written_to_client();
    assert_eq!(h.take_actions(), ["close"]);
}

#[test]
fn a_request_that_ends_before_its_addresses_are_checked_still_reports_its_decision() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.io_error(Peer::Client);
    assert_eq!(h.take_actions(), ["resolve a.example", "reset"]);
    assert_eq!(h.only_decided().access, Access::Allowed);
    assert_eq!(h.only_closed().reason, Reason::ClientClosed);
}

// ---- shutdown ----

#[test]
fn shutdown_closes_an_idle_connection_at_once() {
    let mut h = Harness::new(&["a.example"]);
    h.shutdown(secs(30));
    assert_eq!(h.take_actions(), ["shutdown"]);
    h.advance(secs(2));
    assert_eq!(h.take_actions(), ["close"]);
    assert!(h.events.is_empty());
}

#[test]
fn shutdown_lets_an_exchange_finish_with_connection_close() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_upstream();
    h.take_actions();
    h.shutdown(secs(30));
    assert!(h.take_actions().is_empty());
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
    assert_eq!(
        h.written_to_client(),
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nVia: 1.1 egret\r\nConnection: close\r\n\r\nok"
    );
    assert_eq!(h.take_actions(), ["disconnect", "shutdown"]);
    assert_eq!(h.only_closed().reason, Reason::Completed);
}

#[test]
fn shutdown_lets_a_head_in_progress_finish() {
    let mut h = Harness::new(&["a.example"]);
    h.client(b"GET http://a.example/ HTTP/1.1\r\n");
    h.shutdown(secs(30));
    assert!(h.take_actions().is_empty());
    h.client(b"\r\n");
    assert_eq!(h.take_actions(), ["resolve a.example"]);
}

#[test]
fn shutdown_closes_a_tunnel_at_the_deadline() {
    let mut h = Harness::new(&["pypi.org"]);
    h.client(b"CONNECT pypi.org:443 HTTP/1.1\r\n\r\n");
    h.open(IP);
    h.written_to_client();
    h.take_actions();
    h.shutdown(secs(30));
    h.advance(secs(29));
    h.splice_progress(Peer::Client, 1);
    assert!(h.take_actions().is_empty());
    h.advance(secs(1));
    assert_eq!(h.take_actions(), ["close"]);
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::Shutdown);
    assert_eq!(closed.status, 200);
}

// ---- audit mode ----

#[test]
fn audit_mode_lets_a_would_be_denied_request_through_and_marks_it() {
    let settings = PolicySettings {
        mode: Mode::Audit,
        ..settings()
    };
    let mut h = Harness::with_settings(&["pypi.org"], settings.clone());
    h.client(b"GET http://evil.example/x HTTP/1.1\r\n\r\n");
    h.open(IP);
    assert_eq!(
        h.take_actions(),
        ["resolve evil.example", "connect 151.101.0.223:80"]
    );
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
    let audited = Access::Audited(DenyReason::NotAllowlisted);
    assert_eq!(h.only_decided().access, audited);
    let closed = h.only_closed();
    assert_eq!(closed.access, Some(audited));
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" TCP_MISS_AUDIT/200 "), "{line}");
    assert!(!line.contains("TCP_DENIED"), "{line}");

    let mut h = Harness::with_settings(&["pypi.org"], settings);
    h.client(b"CONNECT evil.example:22 HTTP/1.1\r\n\r\n");
    h.open(IP);
    assert_eq!(h.written_to_client(), ESTABLISHED);
    h.splice_end(SpliceEnd::Finished);
    let closed = h.only_closed();
    assert_eq!(
        closed.access,
        Some(Access::Audited(DenyReason::NotAllowlisted))
    );
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" TCP_TUNNEL_AUDIT/200 "), "{line}");
}

#[test]
fn audit_mode_still_denies_private_addresses() {
    let settings = PolicySettings {
        mode: Mode::Audit,
        ..settings()
    };
    let mut h = Harness::with_settings(&[], settings);
    h.client(b"GET http://metadata.example/latest/ HTTP/1.1\r\n\r\n");
    h.resolve(&["169.254.169.254"]);
    assert_eq!(h.written_to_client(), forbidden());
    let denied = Access::Denied(DenyReason::PrivateAddress(AddrClass::Metadata));
    assert_eq!(h.only_decided().access, denied);
    let closed = h.only_closed();
    let mut line = String::new();
    format::squid(&closed, &mut line);
    assert!(line.contains(" TCP_DENIED/403 "), "{line}");
}

// ---- helpers ----

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn name(n: &str) -> Host {
    Host::Name(n.into())
}

/// Runs one bodiless request to completion on a fresh upstream at `ip`, answered with a
/// one-byte body.
fn exchange(h: &mut Harness, request: &[u8], ip: &str) {
    h.client(request);
    h.open(ip);
    h.written_to_upstream();
    h.upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx");
    h.written_to_client();
}

/// Checks that `request` alone gets exactly a 400 with `detail`, then a lingering close, and
/// that nothing was resolved or decided.
fn assert_bad_request(request: &[u8], detail: &str) {
    let mut h = Harness::new(&["a.example", "pypi.org"]);
    h.client(request);
    let what = text(request);
    assert_eq!(
        text(&h.written_to_client()),
        text(&bad_request(detail)),
        "{what:?}"
    );
    assert_eq!(h.take_actions(), ["shutdown"], "{what:?}");
    assert!(h.decided().is_empty(), "{what:?}");
    let closed = h.only_closed();
    assert_eq!(closed.reason, Reason::InvalidRequest, "{what:?}");
    assert_eq!(closed.detail, Some(detail), "{what:?}");
    assert_eq!(closed.status, 400, "{what:?}");
    assert_eq!(closed.bytes_from_client, request.len() as u64, "{what:?}");
}

#[test]
fn the_gateway_s_own_ports_are_never_a_destination_at_a_private_address() {
    let settings = egret_core::policy::PolicySettings {
        ports: vec![443, 9090],
        private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
        own_ports: vec![3128, 9090],
        ..settings()
    };
    let mut h = Harness::with_settings(&["admin.example"], settings.clone());
    h.client(b"GET http://admin.example:9090/metrics HTTP/1.1\r\n\r\n");
    h.resolve(&["127.0.0.1"]);
    assert_eq!(h.written_to_client(), forbidden());
    assert_eq!(h.only_closed().detail, Some("own_listener"));
    // The same port on a public address is somebody else's service.
    let mut h = Harness::with_settings(&["admin.example"], settings);
    h.client(b"GET http://admin.example:9090/metrics HTTP/1.1\r\n\r\n");
    h.resolve(&["151.101.0.223"]);
    assert_eq!(
        h.take_actions(),
        ["resolve admin.example", "connect 151.101.0.223:9090"]
    );
}
