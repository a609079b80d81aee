//! SSRF targets: allowlisted names whose answers are in every non-public address class (see
//! `egret_core::policy::addr`), mixed public and private answers, and the gateway's own
//! listeners. The world exempts 127.0.0.0/8, which stands in for the public Internet; the
//! simulated world also fails any case in which core connects to a forbidden address.

use crate::case::{Case, ResponseExpect, Step, World};
use crate::cases::{case, echo, log, ok, send};

use super::{connect_denied, get_denied, name};

/// Returns the SSRF cases.
pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(private_answers());
    cases.extend(mixed_answers());
    cases.extend(own_listeners());
    cases.extend(audit_keeps_the_address_rules());
    cases
}

/// Audit mode trials an allowlist, not SSRF: address classes stay enforced.
fn audit_keeps_the_address_rules() -> Vec<Case> {
    [
        "metadata-v6",
        "cgnat",
        "6to4-metadata",
        "loopback-v6",
        "rfc1918-192",
    ]
    .iter()
    .map(|class| {
        let target = format!("{class}.ssrf.test:{{echo}}");
        let mut case = connect_denied(
            name(format!(
                "ssrf_audit_still_denies_{}",
                class.replace('-', "_")
            )),
            &target,
        );
        case.world = World::Audit;
        case
    })
    .collect()
}

/// Names (under the `.ssrf.test` entry) whose only answers are non-public: 403 for CONNECT and
/// for absolute form.
fn private_answers() -> Vec<Case> {
    const CLASSES: &[&str] = &[
        "rfc1918-10",
        "rfc1918-172",
        "rfc1918-172-top",
        "rfc1918-192",
        "loopback-v6",
        "link-local",
        "link-local-v6",
        "metadata",
        "metadata-v6",
        "metadata-alibaba",
        "cgnat",
        "unspecified",
        "this-network",
        "unspecified-v6",
        "broadcast",
        "multicast",
        "multicast-v6",
        "reserved-240",
        "ietf-protocol",
        "benchmarking",
        "documentation-1",
        "documentation-2",
        "documentation-3",
        "documentation-v6",
        "teredo",
        "discard-v6",
        "nat64-local",
        "unique-local",
        "unique-local-fc",
        "site-local",
        "mapped-private",
        "mapped-metadata",
        "compatible-private",
        "nat64-private",
        "6to4-private",
        "6to4-metadata",
        "all-private",
    ];
    CLASSES
        .iter()
        .flat_map(|class| {
            let slug = class.replace('-', "_");
            let host = format!("{class}.ssrf.test");
            [
                connect_denied(
                    name(format!("ssrf_{slug}_connect")),
                    &format!("{host}:{{echo}}"),
                ),
                get_denied(
                    name(format!("ssrf_{slug}_get")),
                    &format!("http://{host}:{{http}}/latest/meta-data/"),
                ),
            ]
        })
        .collect()
}

/// Names with public and private answers: only the public one is connected to.
fn mixed_answers() -> Vec<Case> {
    const NAMES: &[&str] = &[
        "mixed-metadata-first",
        "mixed-public-first",
        "mixed-v6-private",
    ];
    NAMES
        .iter()
        .flat_map(|mixed| {
            let slug = mixed.replace('-', "_");
            let host = format!("{mixed}.ssrf.test");
            [
                case(
                    name(format!("ssrf_{slug}_connect_uses_the_public_answer")),
                    vec![
                        send(&format!("CONNECT {host}:{{echo}} HTTP/1.1\r\n\r\n")),
                        Step::Tunnel,
                        echo("public"),
                    ],
                    vec![log(
                        "TCP_TUNNEL/200",
                        "CONNECT",
                        &format!("{host}:{{echo}}"),
                    )],
                ),
                case(
                    name(format!("ssrf_{slug}_get_uses_the_public_answer")),
                    vec![
                        send(&format!("GET http://{host}:{{http}}/m HTTP/1.1\r\n\r\n")),
                        ok(&["origin: GET /m\n"]),
                    ],
                    vec![log(
                        "TCP_MISS/200",
                        "GET",
                        &format!("http://{host}:{{http}}/m"),
                    )],
                ),
            ]
        })
        .collect()
}

/// The gateway's own proxy and admin ports, reached through allowed names: denied by the
/// own-listener rule (both ports are in the allowed port list, and 127.0.0.0/8 is exempt
/// from the address classes, so no other rule would).
fn own_listeners() -> Vec<Case> {
    vec![
        connect_denied("ssrf_connect_to_the_proxy_port", "allowed.test:{proxy}"),
        connect_denied("ssrf_connect_to_the_admin_port", "allowed.test:{admin}"),
        connect_denied(
            "ssrf_connect_to_the_admin_port_by_wildcard",
            "sub.wild.test:{admin}",
        ),
        connect_denied(
            "ssrf_connect_to_the_admin_port_mixed_answers",
            "mixed.test:{admin}",
        ),
        connect_denied(
            "ssrf_connect_to_the_admin_port_second_answer",
            "twoaddr.test:{admin}",
        ),
        connect_denied(
            "ssrf_connect_to_the_admin_port_by_literal",
            "127.0.0.1:{admin}",
        ),
        connect_denied(
            "ssrf_connect_to_the_admin_port_by_ipv6_literal",
            "[::1]:{admin}",
        ),
        connect_denied(
            "ssrf_connect_to_the_admin_port_by_localhost",
            "localhost:{admin}",
        ),
        get_denied(
            "ssrf_get_admin_metrics",
            "http://allowed.test:{admin}/metrics",
        ),
        get_denied(
            "ssrf_get_admin_healthz",
            "http://sub.wild.test:{admin}/healthz",
        ),
        get_denied(
            "ssrf_get_through_the_proxy_port_loops",
            "http://allowed.test:{proxy}/",
        ),
        case(
            "ssrf_host_header_naming_the_admin_port_is_replaced",
            vec![
                send(
                    "GET http://allowed.test:{http}/a HTTP/1.1\r\nHost: 127.0.0.1:{admin}\r\n\r\n",
                ),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_has: vec!["host: allowed.test:{http}\n".into()],
                    body_lacks: vec!["127.0.0.1:{admin}".into()],
                    ..ResponseExpect::default()
                }),
            ],
            vec![log("TCP_MISS/200", "GET", "http://allowed.test:{http}/a")],
        ),
    ]
}
