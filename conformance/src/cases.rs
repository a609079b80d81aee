//! The case table. Every deny and every 400 path of explicit mode is here, with the access
//! record it must leave; the hostile inputs, grouped by theme, are in [`crate::hostile`].

use std::time::Duration;

use crate::case::{Case, LogExpect, ResponseExpect, Step, World};

/// Returns every case.
#[must_use]
pub fn all() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(connect_cases());
    cases.extend(forward_cases());
    cases.extend(invalid_cases());
    cases.extend(limit_cases());
    cases.extend(audit_and_literal_cases());
    cases.extend(crate::hostile::all());
    cases
}

fn connect_cases() -> Vec<Case> {
    let tunnel = |name, target: &str| {
        case(
            name,
            vec![
                send(&format!(
                    "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n"
                )),
                Step::Tunnel,
                echo("ping"),
                echo("pong"),
            ],
            vec![log(
                "TCP_TUNNEL/200",
                "CONNECT",
                &target.to_ascii_lowercase().replace(".:", ":"),
            )],
        )
    };
    let denied = |name, target: &str| {
        case(
            name,
            vec![
                send(&format!("CONNECT {target} HTTP/1.1\r\n\r\n")),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "CONNECT", target)],
        )
    };
    vec![
        tunnel("connect_exact_entry", "allowed.test:{echo}"),
        tunnel("connect_domain_entry_apex", "wild.test:{echo}"),
        tunnel("connect_domain_entry_subdomain", "sub.wild.test:{echo}"),
        tunnel(
            "connect_domain_entry_deep_subdomain",
            "a.b.wild.test:{echo}",
        ),
        tunnel("connect_case_insensitive", "ALLOWED.Test:{echo}"),
        tunnel("connect_trailing_dot", "allowed.test.:{echo}"),
        tunnel("connect_entry_with_port", "porty.test:{echo}"),
        tunnel(
            "connect_mixed_answers_use_the_public_one",
            "mixed.test:{echo}",
        ),
        tunnel("connect_tries_the_next_address", "twoaddr.test:{echo}"),
        denied("connect_not_allowlisted", "denied.test:{echo}"),
        denied(
            "connect_suffix_needs_a_label_boundary",
            "evilwild.test:{echo}",
        ),
        denied(
            "connect_exact_entry_admits_no_subdomain",
            "www.allowed.test:{echo}",
        ),
        denied("connect_port_not_allowed", "allowed.test:25"),
        denied("connect_entry_port_only", "porty.test:{http}"),
        denied("connect_ip_literal", "127.0.0.1:{echo}"),
        denied("connect_ipv6_literal", "[::1]:{echo}"),
        denied("connect_private_answer", "private.test:{echo}"),
        denied("connect_metadata_answer", "metadata.test:{echo}"),
        denied("connect_ipv6_metadata_answer", "v6meta.test:{echo}"),
        denied("connect_mapped_private_answer", "mapped.test:{echo}"),
        denied("connect_nat64_metadata_answer", "nat64.test:{echo}"),
        case(
            "connect_nxdomain",
            vec![
                send("CONNECT nx.test:{echo} HTTP/1.1\r\n\r\n"),
                reply(503, "ERR_DNS_FAIL"),
                Step::Closed,
            ],
            vec![log("TCP_TUNNEL/503", "CONNECT", "nx.test:{echo}")],
        ),
        case(
            "connect_refused",
            vec![
                send("CONNECT allowed.test:{refused} HTTP/1.1\r\n\r\n"),
                reply(503, "ERR_CONNECT_FAIL"),
                Step::Closed,
            ],
            vec![log("TCP_TUNNEL/503", "CONNECT", "allowed.test:{refused}")],
        ),
        case(
            "connect_timeout",
            vec![
                send("CONNECT blackhole.test:{blackhole} HTTP/1.1\r\n\r\n"),
                Step::Wait(Duration::from_millis(1500)),
                reply(504, "ERR_CONNECT_FAIL"),
                Step::Closed,
            ],
            vec![log(
                "TCP_TUNNEL/504",
                "CONNECT",
                "blackhole.test:{blackhole}",
            )],
        ),
        case(
            "connect_bytes_after_the_head_reach_the_upstream",
            vec![
                send("CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\nearly"),
                Step::Tunnel,
                Step::Receive("early".into()),
                echo("more"),
            ],
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
        case(
            "connect_head_split_across_segments",
            vec![
                send("CONN"),
                send("ECT allowed.te"),
                send("st:{echo} HTTP/1.1\r"),
                send("\n\r\n"),
                Step::Tunnel,
                echo("x"),
            ],
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
        case(
            "connect_idle_tunnel_is_closed",
            vec![
                send("CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n"),
                Step::Tunnel,
                Step::Wait(Duration::from_millis(2600)),
                Step::Closed,
            ],
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
        invalid(
            "connect_without_port",
            "CONNECT allowed.test HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "connect_with_a_body",
            "CONNECT allowed.test:{echo} HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
        ),
        invalid(
            "connect_origin_form",
            "CONNECT / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        ),
    ]
}

fn forward_cases() -> Vec<Case> {
    let get = |path: &str| {
        format!(
            "GET http://allowed.test:{{http}}{path} HTTP/1.1\r\nHost: allowed.test:{{http}}\r\n\r\n"
        )
    };
    let miss = |path: &str| {
        log(
            "TCP_MISS/200",
            "GET",
            &format!("http://allowed.test:{{http}}{path}"),
        )
    };
    vec![
        case(
            "get_forwarded_in_origin_form",
            vec![
                send(&get("/hello?token=secret")),
                ok(&[
                    "origin: GET /hello?token=secret\n",
                    "host: allowed.test:{http}\n",
                    "via: 1.1 egret\n",
                ]),
            ],
            vec![miss("/hello")],
        ),
        case(
            "get_not_allowlisted",
            vec![
                send("GET http://denied.test:{http}/ HTTP/1.1\r\nHost: denied.test:{http}\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "GET", "http://denied.test:{http}/")],
        ),
        case(
            "get_private_answer",
            vec![
                send("GET http://metadata.test:{http}/latest/meta-data/ HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log(
                "TCP_DENIED/403",
                "GET",
                "http://metadata.test:{http}/latest/meta-data/",
            )],
        ),
        case(
            "get_hop_by_hop_and_proxy_headers_removed",
            vec![
                send(
                    "GET http://allowed.test:{http}/h HTTP/1.1\r\nHost: allowed.test:{http}\r\nConnection: keep-alive, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nTE: trailers\r\nUpgrade: websocket\r\nX-Kept: yes\r\n\r\n",
                ),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_has: vec!["x-kept: yes\n".into()],
                    body_lacks: [
                        "x-secret",
                        "keep-alive",
                        "proxy-",
                        "\nte:",
                        "upgrade",
                        "\nconnection:",
                    ]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                    ..ResponseExpect::default()
                }),
            ],
            vec![miss("/h")],
        ),
        case(
            "get_host_taken_from_the_authority",
            vec![
                send("GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: denied.test\r\n\r\n"),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_has: vec!["host: allowed.test:{http}\n".into()],
                    body_lacks: vec!["denied.test".into()],
                    ..ResponseExpect::default()
                }),
            ],
            vec![miss("/")],
        ),
        case(
            "get_without_host_header",
            vec![
                send("GET http://allowed.test:{http}/nohost HTTP/1.1\r\n\r\n"),
                ok(&["host: allowed.test:{http}\n"]),
            ],
            vec![miss("/nohost")],
        ),
        case(
            "keepalive_same_host_twice",
            vec![
                send(&get("/one")),
                ok(&["origin: GET /one\n"]),
                send(&get("/two")),
                ok(&["origin: GET /two\n"]),
            ],
            vec![miss("/one"), miss("/two")],
        ),
        case(
            "keepalive_second_host_is_decided_on_its_own",
            vec![
                send(&get("/first")),
                ok(&["origin: GET /first\n"]),
                send(
                    "GET http://sub.wild.test:{http}/second HTTP/1.1\r\nHost: sub.wild.test:{http}\r\n\r\n",
                ),
                ok(&["origin: GET /second\n", "host: sub.wild.test:{http}\n"]),
            ],
            vec![
                miss("/first"),
                log("TCP_MISS/200", "GET", "http://sub.wild.test:{http}/second"),
            ],
        ),
        case(
            "keepalive_allowed_then_denied",
            vec![
                send(&get("/ok")),
                ok(&["origin: GET /ok\n"]),
                send("GET http://denied.test:{http}/ HTTP/1.1\r\nHost: denied.test:{http}\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                miss("/ok"),
                log("TCP_DENIED/403", "GET", "http://denied.test:{http}/"),
            ],
        ),
        case(
            "pipelined_requests_answered_in_order",
            vec![
                send(&(get("/p1") + &get("/p2"))),
                ok(&["origin: GET /p1\n"]),
                ok(&["origin: GET /p2\n"]),
            ],
            vec![miss("/p1"), miss("/p2")],
        ),
        case(
            "pipelined_allowed_then_denied",
            vec![
                send(&(get("/p1") + "GET http://denied.test:{http}/x HTTP/1.1\r\n\r\n")),
                ok(&["origin: GET /p1\n"]),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                miss("/p1"),
                log("TCP_DENIED/403", "GET", "http://denied.test:{http}/x"),
            ],
        ),
        case(
            "post_with_content_length",
            vec![
                send(
                    "POST http://allowed.test:{http}/form HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello world",
                ),
                ok(&["origin: POST /form\n", "body: 11\n"]),
            ],
            vec![log(
                "TCP_MISS/200",
                "POST",
                "http://allowed.test:{http}/form",
            )],
        ),
        case(
            "post_body_in_pieces",
            vec![
                send(
                    "POST http://allowed.test:{http}/form HTTP/1.1\r\nContent-Length: 10\r\n\r\n01234",
                ),
                send("56789"),
                ok(&["body: 10\n"]),
            ],
            vec![log(
                "TCP_MISS/200",
                "POST",
                "http://allowed.test:{http}/form",
            )],
        ),
        case(
            "post_chunked_with_extensions_and_trailers",
            vec![
                send(
                    "POST http://allowed.test:{http}/up HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Checksum: 1\r\n\r\n",
                ),
                ok(&[
                    "origin: POST /up\n",
                    "body: 11\n",
                    "transfer-encoding: chunked\n",
                ]),
            ],
            vec![log("TCP_MISS/200", "POST", "http://allowed.test:{http}/up")],
        ),
        case(
            "response_chunked_with_trailer",
            vec![
                send(&get("/chunked")),
                Step::Response(ResponseExpect {
                    status: 200,
                    body: Some("hello chunked".into()),
                    headers: vec!["transfer-encoding: chunked"],
                    ..ResponseExpect::default()
                }),
            ],
            vec![miss("/chunked")],
        ),
        case(
            "response_close_delimited",
            vec![
                send(&get("/close")),
                Step::Response(ResponseExpect {
                    status: 200,
                    body: Some("close-delimited".into()),
                    headers: vec!["connection: close"],
                    ..ResponseExpect::default()
                }),
                Step::Closed,
            ],
            vec![miss("/close")],
        ),
        case(
            "head_has_no_body",
            vec![
                send("HEAD http://allowed.test:{http}/big HTTP/1.1\r\n\r\n"),
                Step::Response(ResponseExpect {
                    status: 200,
                    headers: vec!["content-length: 100000"],
                    to_head: true,
                    body_len: Some(0),
                    ..ResponseExpect::default()
                }),
                send(&get("/after-head")),
                ok(&["origin: GET /after-head\n"]),
            ],
            vec![
                log("TCP_MISS/200", "HEAD", "http://allowed.test:{http}/big"),
                miss("/after-head"),
            ],
        ),
        case(
            "response_204_then_next_request",
            vec![
                send(&get("/204")),
                Step::Response(ResponseExpect {
                    status: 204,
                    headers: vec!["x-origin: yes"],
                    ..ResponseExpect::default()
                }),
                send(&get("/n")),
                ok(&["origin: GET /n\n"]),
            ],
            vec![log("TCP_MISS/204", "GET", "http://allowed.test:{http}/204")],
        ),
        case(
            "response_304",
            vec![
                send(&get("/304")),
                Step::Response(ResponseExpect {
                    status: 304,
                    headers: vec!["etag: \"v1\""],
                    ..ResponseExpect::default()
                }),
            ],
            vec![log("TCP_MISS/304", "GET", "http://allowed.test:{http}/304")],
        ),
        case(
            "expect_100_continue",
            vec![
                send(
                    "POST http://allowed.test:{http}/continue HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                ),
                Step::Response(ResponseExpect {
                    status: 100,
                    ..ResponseExpect::default()
                }),
                send("hello"),
                ok(&["body: 5\n"]),
            ],
            vec![log(
                "TCP_MISS/200",
                "POST",
                "http://allowed.test:{http}/continue",
            )],
        ),
        case(
            "http10_request_closes_after_the_response",
            vec![
                send("GET http://allowed.test:{http}/ten HTTP/1.0\r\n\r\n"),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_has: vec!["origin: GET /ten\n".into()],
                    headers: vec!["connection: close"],
                    ..ResponseExpect::default()
                }),
                Step::Closed,
            ],
            vec![miss("/ten")],
        ),
        case(
            "large_response_streams_through",
            vec![
                send(&get("/big")),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_len: Some(100_000),
                    ..ResponseExpect::default()
                }),
            ],
            vec![miss("/big")],
        ),
        case(
            "malformed_response",
            vec![
                send(&get("/bad")),
                reply(502, "ERR_INVALID_RESP"),
                Step::Closed,
            ],
            vec![log("TCP_MISS/502", "GET", "http://allowed.test:{http}/bad")],
        ),
        case(
            "empty_response",
            vec![
                send(&get("/empty")),
                reply(502, "ERR_ZERO_SIZE_OBJECT"),
                Step::Closed,
            ],
            vec![log(
                "TCP_MISS/502",
                "GET",
                "http://allowed.test:{http}/empty",
            )],
        ),
        case(
            "silent_origin_times_out",
            vec![
                send(&get("/silent")),
                Step::Wait(Duration::from_millis(2600)),
                reply(504, "ERR_READ_TIMEOUT"),
                Step::Closed,
            ],
            vec![log(
                "TCP_MISS/504",
                "GET",
                "http://allowed.test:{http}/silent",
            )],
        ),
        case(
            "truncated_response_closes",
            vec![send(&get("/truncated")), Step::Truncated],
            vec![],
        ),
        case(
            "get_nxdomain",
            vec![
                send("GET http://nx.test:{http}/ HTTP/1.1\r\n\r\n"),
                reply(503, "ERR_DNS_FAIL"),
                Step::Closed,
            ],
            vec![log("TCP_MISS/503", "GET", "http://nx.test:{http}/")],
        ),
        case(
            "get_refused",
            vec![
                send("GET http://allowed.test:{refused}/ HTTP/1.1\r\n\r\n"),
                reply(503, "ERR_CONNECT_FAIL"),
                Step::Closed,
            ],
            vec![log("TCP_MISS/503", "GET", "http://allowed.test:{refused}/")],
        ),
        case(
            "post_to_denied_host_gets_the_403",
            vec![
                send("POST http://denied.test:{http}/x HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "POST", "http://denied.test:{http}/x")],
        ),
        case(
            "empty_lines_before_a_request_are_ignored",
            vec![
                send(&format!("\r\n\r\n{}", get("/after-blank"))),
                ok(&["origin: GET /after-blank\n"]),
            ],
            vec![miss("/after-blank")],
        ),
    ]
}

fn invalid_cases() -> Vec<Case> {
    vec![
        invalid(
            "port_with_leading_zero",
            "CONNECT allowed.test:0443 HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "port_out_of_range",
            "CONNECT allowed.test:65536 HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "origin_form_to_the_proxy",
            "GET / HTTP/1.1\r\nHost: allowed.test\r\n\r\n",
        ),
        invalid(
            "https_absolute_form",
            "GET https://allowed.test/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "unsupported_version",
            "GET http://allowed.test:{http}/ HTTP/1.2\r\n\r\n",
        ),
        case(
            "incomplete_head_then_half_close",
            vec![
                send("GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: a"),
                Step::HalfClose,
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/400", "NONE", "error:invalid-request")],
        ),
        case(
            "half_close_after_a_request_still_gets_the_response",
            vec![
                send("GET http://allowed.test:{http}/hc HTTP/1.1\r\n\r\n"),
                Step::HalfClose,
                ok(&["origin: GET /hc\n"]),
                Step::Closed,
            ],
            vec![log("TCP_MISS/200", "GET", "http://allowed.test:{http}/hc")],
        ),
    ]
}

fn limit_cases() -> Vec<Case> {
    let big = format!(
        "GET http://allowed.test:{{http}}/ HTTP/1.1\r\nX-Big: {}\r\n\r\n",
        "a".repeat(5000)
    );
    vec![
        case(
            "head_over_max_header_bytes",
            vec![send(&big), reply(431, "ERR_TOO_BIG"), Step::Closed],
            vec![log("NONE_NONE/431", "NONE", "error:request-too-large")],
        ),
        case(
            "endless_head_without_end",
            vec![
                send(&format!(
                    "GET http://allowed.test:{{http}}/ HTTP/1.1\r\n{}",
                    "X-A: b\r\n".repeat(600)
                )),
                reply(431, "ERR_TOO_BIG"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/431", "NONE", "error:request-too-large")],
        ),
        case(
            "slow_head_times_out",
            vec![
                send("GET http://allowed.test:{http}/ HTTP/1.1\r\n"),
                Step::Wait(Duration::from_millis(1500)),
                reply(408, "ERR_REQUEST_START_TIMEOUT"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/408", "NONE", "error:request-timeout")],
        ),
        case(
            "silent_client_times_out",
            vec![
                Step::Wait(Duration::from_millis(1500)),
                reply(408, "ERR_REQUEST_START_TIMEOUT"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/408", "NONE", "error:request-timeout")],
        ),
        case(
            "idle_keepalive_closes_quietly",
            vec![
                send("GET http://allowed.test:{http}/k HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /k\n"]),
                Step::Wait(Duration::from_millis(2600)),
                Step::Closed,
            ],
            vec![log("TCP_MISS/200", "GET", "http://allowed.test:{http}/k")],
        ),
    ]
}

fn audit_and_literal_cases() -> Vec<Case> {
    vec![
        Case {
            name: "audit_lets_a_would_be_denied_tunnel_through",
            world: World::Audit,
            steps: vec![
                send("CONNECT denied.test:{echo} HTTP/1.1\r\n\r\n"),
                Step::Tunnel,
                echo("audited"),
            ],
            log: vec![log("TCP_TUNNEL_AUDIT/200", "CONNECT", "denied.test:{echo}")],
        },
        Case {
            name: "audit_lets_a_would_be_denied_request_through",
            world: World::Audit,
            steps: vec![
                send("GET http://denied.test:{http}/a HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /a\n"]),
            ],
            log: vec![log(
                "TCP_MISS_AUDIT/200",
                "GET",
                "http://denied.test:{http}/a",
            )],
        },
        Case {
            name: "audit_still_denies_private_addresses",
            world: World::Audit,
            steps: vec![
                send("CONNECT metadata.test:{echo} HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            log: vec![log("TCP_DENIED/403", "CONNECT", "metadata.test:{echo}")],
        },
        Case {
            name: "ip_literal_listed_and_switched_on",
            world: World::IpLiterals,
            steps: vec![
                send("CONNECT 127.0.0.1:{echo} HTTP/1.1\r\n\r\n"),
                Step::Tunnel,
                echo("literal"),
            ],
            log: vec![log("TCP_TUNNEL/200", "CONNECT", "127.0.0.1:{echo}")],
        },
        Case {
            name: "ip_literal_not_listed",
            world: World::IpLiterals,
            steps: vec![
                send("CONNECT 127.0.0.2:{echo} HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            log: vec![log("TCP_DENIED/403", "CONNECT", "127.0.0.2:{echo}")],
        },
        Case {
            name: "ip_literal_get_listed",
            world: World::IpLiterals,
            steps: vec![
                send("GET http://127.0.0.1:{http}/lit HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /lit\n", "host: 127.0.0.1:{http}\n"]),
            ],
            log: vec![log("TCP_MISS/200", "GET", "http://127.0.0.1:{http}/lit")],
        },
    ]
}

pub(crate) fn case(name: &'static str, steps: Vec<Step>, log: Vec<LogExpect>) -> Case {
    Case {
        name,
        world: World::Standard,
        steps,
        log,
    }
}

pub(crate) fn invalid(name: &'static str, request: &str) -> Case {
    case(
        name,
        vec![send(request), reply(400, "ERR_INVALID_REQ"), Step::Closed],
        vec![log("NONE_NONE/400", "NONE", "error:invalid-request")],
    )
}

pub(crate) fn send(text: &str) -> Step {
    Step::Send(text.to_owned())
}

pub(crate) fn echo(text: &str) -> Step {
    Step::Echo(text.to_owned())
}

pub(crate) fn reply(status: u16, error: &'static str) -> Step {
    Step::Response(ResponseExpect {
        status,
        squid_error: Some(error),
        ..ResponseExpect::default()
    })
}

pub(crate) fn ok(body_has: &[&str]) -> Step {
    Step::Response(ResponseExpect {
        status: 200,
        body_has: body_has.iter().map(|s| (*s).to_owned()).collect(),
        ..ResponseExpect::default()
    })
}

pub(crate) fn log(code: &str, method: &'static str, url: &str) -> LogExpect {
    LogExpect {
        code: code.to_owned(),
        method,
        url: url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn names_are_unique_and_the_table_is_large_enough() {
        let cases = super::all();
        let names: HashSet<_> = cases.iter().map(|c| c.name).collect();
        assert_eq!(names.len(), cases.len());
        assert!(cases.len() >= 60, "{} cases", cases.len());
    }
}
