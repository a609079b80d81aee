//! TLS tricks inside an allowed CONNECT tunnel (`inspect_tunnels` is on): a ClientHello must
//! name an allowed host, else the gateway sends the fatal `access_denied` alert and closes,
//! logging `TCP_DENIED/403`. A hello without SNI (or a stream that is not TLS) follows the
//! CONNECT target. Whatever the gateway cannot judge — several names, an invalid name,
//! Encrypted Client Hello, an oversized or malformed hello — is denied.

use std::time::Duration;

use crate::case::{Case, LogExpect, Step};
use crate::cases::{case, log, reply, send};

use super::{ALERT, name};
use crate::case::MAX_HEADER_BYTES;
use crate::hello::{ECH, PADDING, SNI, client_hello, hello_for, records, sni, sni_typed};

/// A ClientHello from curl naming `allowed.test`.
const CURL_ALLOWED: &[u8] =
    include_bytes!("../../../core/tests/fixtures/hello/curl-7.88-openssl-3.0.bin");
/// A ClientHello from curl naming `denied.test`.
const CURL_DENIED: &[u8] =
    include_bytes!("../../../core/tests/fixtures/hello/curl-7.88-openssl-3.0-denied.bin");
/// `openssl s_client` naming `allowed.test`.
const OPENSSL: &[u8] =
    include_bytes!("../../../core/tests/fixtures/hello/openssl-3.0-s_client.bin");
/// `openssl s_client -noservername`: no SNI.
const NO_SNI: &[u8] =
    include_bytes!("../../../core/tests/fixtures/hello/openssl-3.0-noservername.bin");
/// Chromium 156: SNI `allowed.test` and a GREASE Encrypted Client Hello extension.
const CHROMIUM: &[u8] =
    include_bytes!("../../../core/tests/fixtures/hello/chromium-156-x25519mlkem768.bin");

/// Returns the TLS cases.
pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(captured());
    cases.extend(record_splits());
    cases.extend(segment_splits());
    cases.extend(names());
    cases.extend(malformed());
    cases
}

/// Captured first flights from real clients.
fn captured() -> Vec<Case> {
    vec![
        passes(
            "tls_curl_hello_naming_an_allowed_host",
            vec![CURL_ALLOWED.to_vec()],
        ),
        passes(
            "tls_openssl_hello_naming_an_allowed_host",
            vec![OPENSSL.to_vec()],
        ),
        denied(
            "tls_curl_hello_naming_a_denied_host_is_domain_fronting",
            vec![CURL_DENIED.to_vec()],
        ),
        passes(
            "tls_hello_without_sni_follows_the_connect_target",
            vec![NO_SNI.to_vec()],
        ),
        denied(
            "tls_chromium_hello_with_grease_ech_is_denied",
            vec![CHROMIUM.to_vec()],
        ),
        passes(
            "tls_curl_hello_split_in_three_segments",
            vec![
                CURL_ALLOWED[..3].to_vec(),
                CURL_ALLOWED[3..300].to_vec(),
                CURL_ALLOWED[300..].to_vec(),
            ],
        ),
        case(
            "tls_stalled_hello_is_closed",
            vec![
                connect(),
                Step::Tunnel,
                Step::SendBytes(CURL_DENIED[..50].to_vec()),
                Step::Wait(Duration::from_millis(1500)),
                Step::ReceiveBytes(ALERT.to_vec()),
                Step::Closed,
            ],
            denied_log(),
        ),
    ]
}

/// One hello framed in handshake records of every size: reassembled, then judged.
fn record_splits() -> Vec<Case> {
    let mut cases = Vec::new();
    for size in [1, 2, 5, 64, 16384] {
        let allowed = records(&client_hello(&[sni(&["allowed.test"])]), size);
        let denied_hello = records(&client_hello(&[sni(&["denied.test"])]), size);
        cases.push(passes(
            name(format!("tls_records_of_{size}_bytes_allowed")),
            vec![allowed],
        ));
        cases.push(denied(
            name(format!("tls_records_of_{size}_bytes_denied")),
            vec![denied_hello],
        ));
    }
    cases
}

/// One hello cut into TCP segments at awkward places.
fn segment_splits() -> Vec<Case> {
    let allowed = hello_for(&["allowed.test"]);
    let denied_hello = hello_for(&["denied.test"]);
    let bytes = |hello: &[u8]| hello.iter().map(|b| vec![*b]).collect::<Vec<_>>();
    // The SNI name is the last thing in the built hello: cut in its middle.
    let cut = |hello: &[u8]| {
        let at = hello.len() - 5;
        vec![hello[..at].to_vec(), hello[at..].to_vec()]
    };
    // The hello right behind the CONNECT head: it may arrive while the name is still being
    // resolved or connected, and is judged all the same.
    let behind_connect = |hello: Vec<u8>, last: Vec<Step>| {
        let mut steps = vec![connect(), Step::SendBytes(hello), Step::Tunnel];
        steps.extend(last);
        steps
    };
    vec![
        case(
            "tls_hello_right_behind_the_connect_allowed",
            behind_connect(allowed.clone(), vec![Step::ReceiveBytes(allowed.clone())]),
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
        case(
            "tls_hello_right_behind_the_connect_denied",
            behind_connect(
                denied_hello.clone(),
                vec![Step::ReceiveBytes(ALERT.to_vec()), Step::Closed],
            ),
            denied_log(),
        ),
        passes("tls_hello_one_byte_per_segment_allowed", bytes(&allowed)),
        denied(
            "tls_hello_one_byte_per_segment_denied",
            bytes(&denied_hello),
        ),
        passes("tls_hello_cut_inside_the_sni_allowed", cut(&allowed)),
        denied("tls_hello_cut_inside_the_sni_denied", cut(&denied_hello)),
        passes(
            "tls_hello_record_header_alone_first",
            vec![allowed[..5].to_vec(), allowed[5..].to_vec()],
        ),
    ]
}

/// What the SNI says: one allowed name, several names, odd names, ECH.
fn names() -> Vec<Case> {
    let hello = |extensions: &[(u16, Vec<u8>)]| records(&client_hello(extensions), 16384);
    let long_label = format!("{}.test", "a".repeat(64));
    let long_name = format!("{}.test", vec!["b".repeat(60); 5].join("."));
    let mut cases = vec![
        passes("tls_sni_uppercase", vec![hello_for(&["ALLOWED.TEST"])]),
        passes("tls_sni_trailing_dot", vec![hello_for(&["allowed.test."])]),
        passes(
            "tls_sni_wildcard_subdomain",
            vec![hello_for(&["sub.wild.test"])],
        ),
        passes(
            "tls_sni_punycode_entry",
            vec![hello_for(&["xn--bcher-kva.test"])],
        ),
        passes(
            "tls_sni_entry_with_the_tunnel_port",
            vec![hello_for(&["porty.test"])],
        ),
        // The SNI is judged by name; the bytes still go only to the checked CONNECT target.
        passes(
            "tls_sni_allowed_name_with_a_private_answer",
            vec![hello_for(&["metadata.test"])],
        ),
        denied(
            "tls_sni_denied_with_trailing_dot",
            vec![hello_for(&["denied.test."])],
        ),
        denied(
            "tls_sni_suffix_without_label_boundary",
            vec![hello_for(&["evilwild.test"])],
        ),
        denied_via(
            "tls_sni_entry_with_another_port",
            "allowed.test:{http}",
            vec![hello_for(&["porty.test"])],
        ),
        denied(
            "tls_sni_two_names_allowed_first",
            vec![hello_for(&["allowed.test", "denied.test"])],
        ),
        denied(
            "tls_sni_two_names_denied_first",
            vec![hello_for(&["denied.test", "allowed.test"])],
        ),
        denied(
            "tls_sni_same_name_twice",
            vec![hello_for(&["allowed.test", "allowed.test"])],
        ),
        denied(
            "tls_sni_extension_twice",
            vec![hello(&[sni(&["allowed.test"]), sni(&["denied.test"])])],
        ),
        denied("tls_sni_empty_name", vec![hello_for(&[""])]),
        denied("tls_sni_empty_list", vec![hello(&[sni_typed(&[])])]),
        // RFC 6066 §3: a server ignores name types it does not know; the host_name decides.
        passes(
            "tls_sni_unknown_name_type_beside_an_allowed_name",
            vec![hello(&[sni_typed(&[
                (0, b"allowed.test"),
                (1, b"denied.test"),
            ])])],
        ),
        denied(
            "tls_sni_unknown_name_type_beside_a_denied_name",
            vec![hello(&[sni_typed(&[
                (1, b"allowed.test"),
                (0, b"denied.test"),
            ])])],
        ),
        denied(
            "tls_ech_with_an_allowed_sni",
            vec![hello(&[sni(&["allowed.test"]), (ECH, vec![0; 32])])],
        ),
        denied(
            "tls_ech_with_a_denied_sni",
            vec![hello(&[sni(&["denied.test"]), (ECH, vec![0; 32])])],
        ),
        denied("tls_ech_without_sni", vec![hello(&[(ECH, vec![0; 32])])]),
    ];
    let invalid_names: Vec<(&str, &str)> = vec![
        ("nul", "allowed.test\0"),
        ("space", "allowed .test"),
        ("slash", "allowed.test/"),
        ("colon_port", "allowed.test:443"),
        ("asterisk", "*.wild.test"),
        ("empty_label", "allowed..test"),
        ("two_trailing_dots", "allowed.test.."),
        ("percent_escape", "allowed%2etest"),
        ("backslash", "allowed.test\\"),
        ("utf8_umlaut", "b\u{fc}cher.test"),
        ("cyrillic_look_alike", "\u{430}llowed.test"),
        ("ipv4_literal", "127.0.0.1"),
        ("ipv6_literal", "[::1]"),
        ("bare_ipv6", "::1"),
        ("legacy_ipv4", "0x7f.1"),
        ("label_over_63", long_label.as_str()),
        ("name_over_253", long_name.as_str()),
    ];
    for (slug, sni_name) in invalid_names {
        cases.push(denied(
            name(format!("tls_sni_invalid_{slug}")),
            vec![hello_for(&[sni_name])],
        ));
    }
    cases
}

/// Hellos that are not hellos, too large, or followed by more.
fn malformed() -> Vec<Case> {
    let allowed = hello_for(&["allowed.test"]);
    let padded = |total: usize| {
        let base = hello_for(&["allowed.test"]).len() + 4;
        let pad = total.saturating_sub(base);
        records(
            &client_hello(&[sni(&["allowed.test"]), (PADDING, vec![0; pad])]),
            16384,
        )
    };
    let handshake = client_hello(&[sni(&["allowed.test"])]);
    let mut oversized_claim = vec![0x16, 0x03, 0x01, 0x00, 0x08, 0x01, 0x01, 0x86, 0xa0];
    oversized_claim.extend_from_slice(&[0x03, 0x03, 0, 0]);
    let mut second_record_not_handshake = records(&handshake[..20], 16384);
    second_record_not_handshake.extend_from_slice(&[0x17, 0x03, 0x03, 0x00, 0x02, 0xaa, 0xbb]);
    let sslv2 = vec![
        0x80, 0x2e, 0x01, 0x00, 0x02, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10, 0x05, 0x00, 0x80, 0x03,
        0x00, 0x80, 0x01, 0x00, 0x80, 0x07, 0x00, 0xc0, 0x06, 0x00, 0x40, 0x02, 0x00, 0x80, 0x04,
        0x00, 0x80, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00,
    ];
    vec![
        passes(
            "tls_hello_exactly_at_the_size_limit",
            vec![padded(MAX_HEADER_BYTES)],
        ),
        denied(
            "tls_hello_one_byte_over_the_size_limit",
            vec![padded(MAX_HEADER_BYTES + 1)],
        ),
        denied("tls_hello_far_over_the_size_limit", vec![padded(12_000)]),
        denied(
            "tls_hello_length_claiming_100000_bytes",
            vec![oversized_claim],
        ),
        denied(
            "tls_record_over_16384_bytes",
            vec![vec![0x16, 0x03, 0x01, 0x40, 0x01, 0x01, 0x00]],
        ),
        denied(
            "tls_record_version_2",
            vec![vec![0x16, 0x02, 0x00, 0x00, 0x04]],
        ),
        denied("tls_empty_record", vec![vec![0x16, 0x03, 0x01, 0x00, 0x00]]),
        denied(
            "tls_server_hello_from_the_client",
            vec![records(&[0x02, 0x00, 0x00, 0x02, 0x03, 0x03], 16384)],
        ),
        denied(
            "tls_hello_continued_by_a_non_handshake_record",
            vec![second_record_not_handshake],
        ),
        denied(
            "tls_garbage_inside_the_hello_record",
            vec![records(&[handshake.as_slice(), b"junk"].concat(), 16384)],
        ),
        denied(
            "tls_malformed_extension_list",
            vec![records(
                &client_hello(&[(SNI, vec![0x00, 0x10, 0x00])]),
                16384,
            )],
        ),
        passes(
            "tls_garbage_after_the_hello_reaches_the_target",
            vec![[allowed.as_slice(), b"garbage after the hello"].concat()],
        ),
        denied(
            "tls_garbage_after_a_denied_hello",
            vec![[hello_for(&["denied.test"]).as_slice(), b"garbage"].concat()],
        ),
        // An SSLv2-compatible hello cannot carry SNI: like any non-TLS stream it follows the
        // CONNECT target (and no current server accepts it).
        passes("tls_sslv2_hello_follows_the_connect_target", vec![sslv2]),
        denied(
            "tls_application_data_before_the_hello",
            vec![vec![0x17, 0x03, 0x03, 0x00, 0x03, 1, 2, 3]],
        ),
        // A lenient server may drop the change_cipher_spec and take the hello behind it.
        denied(
            "tls_change_cipher_spec_before_a_denied_hello",
            vec![
                [
                    &[0x14, 0x03, 0x03, 0x00, 0x01, 0x01][..],
                    &hello_for(&["denied.test"]),
                ]
                .concat(),
            ],
        ),
        denied(
            "tls_alert_record_before_a_denied_hello",
            vec![
                [
                    &[0x15, 0x03, 0x03, 0x00, 0x02, 0x01, 0x00][..],
                    &hello_for(&["denied.test"]),
                ]
                .concat(),
            ],
        ),
        passes(
            "tls_ssh_banner_is_not_tls",
            vec![b"SSH-2.0-OpenSSH_9.2\r\n".to_vec()],
        ),
        case(
            "tls_hello_sent_to_the_proxy_port_is_a_bad_request",
            vec![
                Step::SendBytes(CURL_DENIED.to_vec()),
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/400", "NONE", "error:invalid-request")],
        ),
        case(
            "tls_hello_without_line_feeds_sent_to_the_proxy_port_is_a_bad_request",
            vec![
                Step::SendBytes(hello_for(&["allowed.test"])),
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            vec![log("NONE_NONE/400", "NONE", "error:invalid-request")],
        ),
        case(
            "tls_partial_hello_then_half_close_is_denied",
            vec![
                connect(),
                Step::Tunnel,
                Step::SendBytes(hello_for(&["denied.test"])[..40].to_vec()),
                Step::HalfClose,
                Step::ReceiveBytes(ALERT.to_vec()),
                Step::Closed,
            ],
            denied_log(),
        ),
    ]
}

fn connect() -> Step {
    send("CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n")
}

fn denied_log() -> Vec<LogExpect> {
    vec![log("TCP_DENIED/403", "CONNECT", "allowed.test:{echo}")]
}

/// A tunnel whose first bytes, sent in these segments, reach the origin and come back.
fn passes(name: &'static str, segments: Vec<Vec<u8>>) -> Case {
    let all = segments.concat();
    let mut steps = vec![connect(), Step::Tunnel];
    steps.extend(segments.into_iter().map(Step::SendBytes));
    steps.push(Step::ReceiveBytes(all));
    case(
        name,
        steps,
        vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
    )
}

/// A tunnel whose first bytes, sent in these segments, get the alert and a close.
fn denied(name: &'static str, segments: Vec<Vec<u8>>) -> Case {
    denied_via(name, "allowed.test:{echo}", segments)
}

/// A tunnel to `target` whose first bytes, sent in these segments, get the alert and a close.
fn denied_via(name: &'static str, target: &str, segments: Vec<Vec<u8>>) -> Case {
    let mut steps = vec![
        send(&format!("CONNECT {target} HTTP/1.1\r\n\r\n")),
        Step::Tunnel,
    ];
    steps.extend(segments.into_iter().map(Step::SendBytes));
    steps.push(Step::ReceiveBytes(ALERT.to_vec()));
    steps.push(Step::Closed);
    case(name, steps, vec![log("TCP_DENIED/403", "CONNECT", target)])
}
