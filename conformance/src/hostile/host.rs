//! Host tricks: names one parser reads differently from another. Allowlist matching is
//! exact on labels (suffix boundaries), case-insensitive, ignores one trailing dot and works
//! on punycode; anything that is not a plain host (escapes, userinfo, Unicode, control bytes,
//! legacy IPv4 spellings, zone ids, over-long names) is a 400, never normalised.

use crate::case::{Case, ResponseExpect, Step, World};
use crate::cases::{case, echo, log, ok, reply, send};

use super::{connect_denied, get_denied, invalid, logged, name};

/// Returns the host-trick cases.
pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(denied_names());
    cases.extend(normalised_names());
    cases.extend(malformed_hosts());
    cases.extend(ip_literals());
    cases.extend(host_header_and_scheme());
    cases
}

/// Well-formed names the allowlist does not admit: 403 in CONNECT and absolute form.
fn denied_names() -> Vec<Case> {
    const NAMES: &[(&str, &str)] = &[
        ("suffix_without_label_boundary", "xwild.test"),
        (
            "allowed_name_under_a_denied_one",
            "allowed.test.denied.test",
        ),
        ("wildcard_apex_under_a_denied_one", "wild.test.evil.test"),
        ("allowed_name_with_a_longer_tld", "allowed.testing"),
        ("allowed_name_with_a_prefix", "aallowed.test"),
        ("dash_for_the_dot", "allowed-test"),
        ("underscore_for_the_dot", "allowed_test"),
        ("wildcard_with_a_shorter_tld", "wild.tes"),
        ("deep_subdomain_of_an_exact_entry", "deep.www.allowed.test"),
        ("punycode_look_alike", "xn--llowed-4ve.test"),
        ("punycode_label_of_the_allowed_name", "xn--allowed.test"),
        (
            "punycode_under_the_wildcard_look_alike",
            "sub.xn--wld-tma.test",
        ),
        ("uppercase_denied_name", "DENIED.TEST"),
        ("trailing_dot_denied_name", "denied.test."),
        ("mixed_case_suffix_without_boundary", "EvilWild.Test."),
        ("name_embedding_an_ip", "127.0.0.1.nip.io"),
        ("localhost", "localhost"),
        (
            "entry_with_port_under_a_denied_name",
            "porty.test.evil.test",
        ),
    ];
    NAMES
        .iter()
        .flat_map(|(slug, host)| {
            [
                connect_denied(
                    name(format!("host_{slug}_connect")),
                    &format!("{host}:{{echo}}"),
                ),
                get_denied(
                    name(format!("host_{slug}_get")),
                    &format!("http://{host}:{{http}}/"),
                ),
            ]
        })
        .collect()
}

/// Spellings of allowed names that must match: case, one trailing dot, punycode entries.
fn normalised_names() -> Vec<Case> {
    const NAMES: &[(&str, &str)] = &[
        ("uppercase_allowed_name", "ALLOWED.TEST"),
        ("mixed_case_wildcard_subdomain", "Sub.Wild.TEST"),
        ("trailing_dot_wildcard_subdomain", "sub.wild.test."),
        ("uppercase_with_trailing_dot", "ALLOWED.TEST."),
        ("punycode_entry", "xn--bcher-kva.test"),
        ("uppercase_punycode_entry", "XN--BCHER-KVA.TEST"),
    ];
    NAMES
        .iter()
        .flat_map(|(slug, host)| {
            let target = format!("{host}:{{echo}}");
            let url = format!("http://{host}:{{http}}/n");
            let host_header = format!("host: {}\n", logged(&format!("{host}:{{http}}")));
            [
                case(
                    name(format!("host_{slug}_connect")),
                    vec![
                        send(&format!("CONNECT {target} HTTP/1.1\r\n\r\n")),
                        Step::Tunnel,
                        echo("ping"),
                    ],
                    vec![log("TCP_TUNNEL/200", "CONNECT", &logged(&target))],
                ),
                case(
                    name(format!("host_{slug}_get")),
                    vec![
                        send(&format!("GET {url} HTTP/1.1\r\n\r\n")),
                        ok(&["origin: GET /n\n", host_header.as_str()]),
                    ],
                    vec![log("TCP_MISS/200", "GET", &logged(&url))],
                ),
            ]
        })
        .collect()
}

/// Hosts that are not plain names or canonical addresses: 400 in CONNECT and absolute form.
fn malformed_hosts() -> Vec<Case> {
    let long_label = format!("{}.test", "a".repeat(64));
    let long_name = format!("{}.test", vec!["b".repeat(60); 5].join("."));
    let hosts: Vec<(&str, &str)> = vec![
        ("empty_label", "allowed..test"),
        ("leading_dot", ".allowed.test"),
        ("two_trailing_dots", "allowed.test.."),
        ("percent_encoded_dot", "allowed%2etest"),
        ("percent_encoded_letter", "%61llowed.test"),
        ("percent_encoded_nul", "allowed.test%00.denied.test"),
        ("backslash", "allowed.test\\.denied.test"),
        ("trailing_backslash", "allowed.test\\"),
        ("cyrillic_a_look_alike", "\u{430}llowed.test"),
        ("cyrillic_e_in_the_tld", "allowed.t\u{435}st"),
        ("fullwidth_dot", "allowed\u{ff0e}test"),
        ("ideographic_dot", "allowed\u{3002}test"),
        ("zero_width_space", "allo\u{200b}wed.test"),
        ("zero_width_joiner_under_wildcard", "sub.wi\u{200d}ld.test"),
        ("unicode_name_of_a_punycode_entry", "b\u{fc}cher.test"),
        ("asterisk_label", "*.wild.test"),
        ("comma_list", "allowed.test,denied.test"),
        ("semicolon", "allowed.test;denied.test"),
        ("trailing_nul", "allowed.test\0"),
        ("nul_inside", "allowed\0.test"),
        ("control_byte", "allowed\x01.test"),
        ("escape_byte", "allowed.test\x1b"),
        ("delete_byte", "\x7fallowed.test"),
        ("tab", "allowed.test\t"),
        ("space", "allowed .test"),
        ("label_over_63", long_label.as_str()),
        ("name_over_253", long_name.as_str()),
        ("userinfo", "user@allowed.test"),
        ("userinfo_with_password", "user:pass@allowed.test"),
        ("empty_userinfo", "@allowed.test"),
        (
            "allowed_userinfo_at_a_denied_host",
            "allowed.test@denied.test",
        ),
        (
            "denied_userinfo_at_an_allowed_host",
            "denied.test@allowed.test",
        ),
        ("ipv6_zone_id", "[fe80::1%25eth0]"),
        ("ipv6_raw_zone_id", "[fe80::1%eth0]"),
        ("ipv6_numeric_zone_id", "[::1%251]"),
        ("ipv6_without_brackets", "::1"),
        ("ipv6_unclosed_bracket", "[::1"),
        ("ipv6_future_literal", "[v1.fe80::1]"),
        ("ipv6_nine_groups", "[1:2:3:4:5:6:7:8:9]"),
        ("ipv6_short_embedded_ipv4", "[::ffff:127.1]"),
        ("ipv4_hex", "0x7f.1"),
        ("ipv4_integer", "2130706433"),
        ("ipv4_octal", "017.0.0.1"),
        ("ipv4_short", "127.1"),
        ("ipv4_hex_integer", "0x7f000001"),
        ("ipv4_uppercase_hex", "0X7F.0.0.1"),
        ("ipv4_octal_padding", "0177.0000.0000.0001"),
        ("ipv4_padded_octet", "127.0.0.01"),
        ("ipv4_hex_octets", "0x7f.0x0.0x0.0x1"),
        ("ipv4_octet_over_255", "256.0.0.1"),
        ("ipv4_five_octets", "127.0.0.0.1"),
        ("ipv4_metadata_as_integer", "2852039166"),
        ("ipv4_metadata_as_hex", "0xa9fea9fe"),
        ("ipv4_metadata_with_a_16_bit_tail", "169.254.43518"),
        ("ipv4_single_zero", "0"),
        ("numeric_tld", "allowed.123"),
    ];
    hosts
        .iter()
        .flat_map(|(slug, host)| {
            [
                invalid(
                    name(format!("host_{slug}_connect")),
                    &format!("CONNECT {host}:{{echo}} HTTP/1.1\r\n\r\n"),
                ),
                invalid(
                    name(format!("host_{slug}_get")),
                    &format!("GET http://{host}:{{http}}/ HTTP/1.1\r\n\r\n"),
                ),
            ]
        })
        .collect()
}

/// Canonical IP literals: refused as literals in the standard world, and by address class
/// (or for lack of an entry) where literals are switched on.
fn ip_literals() -> Vec<Case> {
    // (slug, literal, how the log writes it, admitted where literals are on)
    const LITERALS: &[(&str, &str, &str, bool)] = &[
        ("ipv4_loopback", "127.0.0.1", "127.0.0.1", true),
        ("ipv4_trailing_dot", "127.0.0.1.", "127.0.0.1", true),
        ("ipv4_unspecified", "0.0.0.0", "0.0.0.0", false),
        ("ipv4_private_listed", "10.0.0.1", "10.0.0.1", false),
        (
            "ipv4_metadata_listed",
            "169.254.169.254",
            "169.254.169.254",
            false,
        ),
        (
            "ipv4_broadcast",
            "255.255.255.255",
            "255.255.255.255",
            false,
        ),
        ("ipv6_loopback", "[::1]", "[::1]", false),
        (
            "ipv6_loopback_uncompressed",
            "[0:0:0:0:0:0:0:1]",
            "[::1]",
            false,
        ),
        (
            "ipv6_mapped_loopback",
            "[::ffff:127.0.0.1]",
            "[::ffff:127.0.0.1]",
            false,
        ),
        (
            "ipv6_mapped_loopback_hex",
            "[::ffff:7f00:1]",
            "[::ffff:127.0.0.1]",
            false,
        ),
        (
            "ipv6_compatible_loopback",
            "[::127.0.0.1]",
            "[::7f00:1]",
            false,
        ),
        ("ipv6_metadata", "[fd00:ec2::254]", "[fd00:ec2::254]", false),
        (
            "ipv6_metadata_uppercase",
            "[FD00:EC2::254]",
            "[fd00:ec2::254]",
            false,
        ),
        (
            "ipv6_nat64_metadata",
            "[64:ff9b::169.254.169.254]",
            "[64:ff9b::a9fe:a9fe]",
            false,
        ),
        (
            "ipv6_6to4_metadata",
            "[2002:a9fe:a9fe::]",
            "[2002:a9fe:a9fe::]",
            false,
        ),
        ("ipv6_unspecified", "[::]", "[::]", false),
    ];
    let mut cases = Vec::new();
    for &(slug, literal, shown, admitted) in LITERALS {
        let target = format!("{literal}:{{echo}}");
        let logged_target = format!("{shown}:{{echo}}");
        let url = format!("http://{literal}:{{http}}/");
        let mut connect = connect_denied(name(format!("host_literal_{slug}_connect")), &target);
        connect.log = vec![log("TCP_DENIED/403", "CONNECT", &logged_target)];
        cases.push(connect);
        let mut get = get_denied(name(format!("host_literal_{slug}_get")), &url);
        get.log = vec![log(
            "TCP_DENIED/403",
            "GET",
            &format!("http://{shown}:{{http}}/"),
        )];
        cases.push(get);
        let with_literals = if admitted {
            Case {
                name: name(format!("host_literal_{slug}_listed_and_switched_on")),
                world: World::IpLiterals,
                steps: vec![
                    send(&format!("CONNECT {target} HTTP/1.1\r\n\r\n")),
                    Step::Tunnel,
                    echo("literal"),
                ],
                log: vec![log("TCP_TUNNEL/200", "CONNECT", &logged_target)],
            }
        } else {
            Case {
                name: name(format!("host_literal_{slug}_switched_on_still_denied")),
                world: World::IpLiterals,
                steps: vec![
                    send(&format!("CONNECT {target} HTTP/1.1\r\n\r\n")),
                    reply(403, "ERR_ACCESS_DENIED"),
                    Step::Closed,
                ],
                log: vec![log("TCP_DENIED/403", "CONNECT", &logged_target)],
            }
        };
        cases.push(with_literals);
    }
    cases
}

/// The `Host` header against the absolute-form target, and the target's scheme.
fn host_header_and_scheme() -> Vec<Case> {
    let with_host =
        |host: &str| format!("GET http://allowed.test:{{http}}/h HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let miss = |path: &str| {
        log(
            "TCP_MISS/200",
            "GET",
            &format!("http://allowed.test:{{http}}{path}"),
        )
    };
    vec![
        get_denied_with_host(),
        case(
            "host_header_naming_metadata_is_replaced",
            vec![
                send(&with_host("169.254.169.254")),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_has: vec!["host: allowed.test:{http}\n".into()],
                    body_lacks: vec!["169.254".into()],
                    ..ResponseExpect::default()
                }),
            ],
            vec![miss("/h")],
        ),
        invalid("host_header_empty", &with_host("")),
        invalid("host_header_port_zero", &with_host("allowed.test:0")),
        invalid("host_header_two_ports", &with_host("allowed.test:80:80")),
        invalid(
            "host_header_userinfo",
            &with_host("allowed.test@denied.test"),
        ),
        invalid(
            "host_header_comma_list",
            &with_host("allowed.test, denied.test"),
        ),
        invalid("host_header_percent_escape", &with_host("allowed%2etest")),
        invalid(
            "host_header_backslash",
            &with_host("allowed.test\\denied.test"),
        ),
        invalid("host_header_unicode", &with_host("\u{430}llowed.test")),
        invalid("host_header_nul", &with_host("allowed.test\0")),
        invalid("host_header_space_inside", &with_host("allowed .test")),
        invalid("host_header_ipv6_zone_id", &with_host("[fe80::1%25eth0]")),
        invalid(
            "host_header_twice_with_the_same_value",
            "GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: allowed.test:{http}\r\nHost: allowed.test:{http}\r\n\r\n",
        ),
        invalid(
            "host_header_twice_in_different_case",
            "GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: allowed.test:{http}\r\nhOST: denied.test\r\n\r\n",
        ),
        invalid(
            "host_header_twice_denied_first",
            "GET http://allowed.test:{http}/ HTTP/1.1\r\nHost: denied.test\r\nHost: allowed.test:{http}\r\n\r\n",
        ),
        case(
            "host_uppercase_scheme_is_http",
            vec![
                send("GET HTTP://allowed.test:{http}/up HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /up\n"]),
            ],
            vec![miss("/up")],
        ),
        invalid(
            "host_scheme_with_one_slash",
            "GET http:/allowed.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_scheme_with_backslashes",
            "GET http:\\\\allowed.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_scheme_ftp",
            "GET ftp://allowed.test/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_scheme_websocket",
            "GET ws://allowed.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_fragment_right_after_the_authority",
            "GET http://allowed.test:{http}#@denied.test/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_two_ports_in_the_target",
            "GET http://allowed.test:{http}:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_empty_port_in_the_target",
            "GET http://allowed.test:/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_port_with_a_leading_zero_in_the_target",
            "GET http://allowed.test:0{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_port_with_a_plus_sign_in_the_target",
            "GET http://allowed.test:+{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_two_ports_in_a_connect",
            "CONNECT allowed.test:{echo}:{echo} HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_port_over_65535_in_a_connect",
            "CONNECT allowed.test:99999 HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "host_port_then_userinfo",
            "GET http://allowed.test:{http}@denied.test/ HTTP/1.1\r\n\r\n",
        ),
        case(
            "host_query_right_after_the_authority_stays_a_query",
            vec![
                send("GET http://allowed.test:{http}?@denied.test HTTP/1.1\r\n\r\n"),
                ok(&[
                    "origin: GET /?@denied.test\n",
                    "host: allowed.test:{http}\n",
                ]),
            ],
            vec![miss("/")],
        ),
        case(
            "host_at_sign_in_the_path_stays_a_path",
            vec![
                send("GET http://allowed.test:{http}/@denied.test HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /@denied.test\n", "host: allowed.test:{http}\n"]),
            ],
            vec![miss("/@denied.test")],
        ),
    ]
}

/// An absolute-form target naming a denied host, with a `Host` header naming an allowed one:
/// the target decides.
fn get_denied_with_host() -> Case {
    case(
        "host_denied_target_allowed_host_header",
        vec![
            send("GET http://denied.test:{http}/ HTTP/1.1\r\nHost: allowed.test:{http}\r\n\r\n"),
            reply(403, "ERR_ACCESS_DENIED"),
            Step::Closed,
        ],
        vec![log("TCP_DENIED/403", "GET", "http://denied.test:{http}/")],
    )
}
