//! Request smuggling: framing that two parsers could read differently, protocol switches, and
//! requests hidden behind others. Ambiguous framing is a 400; a request is decided on its
//! own wherever it sits on the connection; an upgrade never switches the connection.

use crate::case::{Case, ResponseExpect, Step};
use crate::cases::{case, log, ok, reply, send};

use super::{invalid, invalid_bytes, name};

/// A request that travels as another request's body (no port placeholder, so its length
/// does not depend on the world's ports).
const HIDDEN: &str = "GET http://denied.test/inner HTTP/1.1\r\nHost: denied.test\r\n\r\n";

/// Returns the smuggling cases.
pub(super) fn cases() -> Vec<Case> {
    let mut cases = Vec::new();
    cases.extend(ambiguous_heads());
    cases.extend(chunk_tricks());
    cases.extend(canonical_chunks());
    cases.extend(other_protocols());
    cases.extend(upgrades_and_expect());
    cases.extend(pipelines());
    cases
}

/// Heads whose framing or syntax is ambiguous: 400 before any decision.
fn ambiguous_heads() -> Vec<Case> {
    const HEADERS: &[(&str, &str)] = &[
        (
            "cl_then_te",
            "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "te_then_cl",
            "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        ),
        (
            "te_with_zero_cl",
            "Transfer-Encoding: chunked\r\nContent-Length: 0\r\n",
        ),
        ("te_space_before_colon", "Transfer-Encoding : chunked\r\n"),
        ("te_unknown_coding", "Transfer-Encoding: xchunked\r\n"),
        (
            "te_coding_with_parameter",
            "Transfer-Encoding: chunked;q=1\r\n",
        ),
        ("te_quoted", "Transfer-Encoding: \"chunked\"\r\n"),
        ("te_identity", "Transfer-Encoding: identity\r\n"),
        (
            "te_chunked_not_last",
            "Transfer-Encoding: chunked, gzip\r\n",
        ),
        ("te_gzip_only", "Transfer-Encoding: gzip\r\n"),
        (
            "te_chunked_twice_in_a_list",
            "Transfer-Encoding: chunked, chunked\r\n",
        ),
        (
            "te_chunked_in_two_fields",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
        ),
        (
            "te_second_field_not_chunked",
            "Transfer-Encoding: chunked\r\nTransfer-Encoding: gzip\r\n",
        ),
        ("te_empty", "Transfer-Encoding:\r\n"),
        ("te_obs_folded", "Transfer-Encoding:\r\n chunked\r\n"),
        (
            "cl_duplicate_equal",
            "Content-Length: 5\r\nContent-Length: 5\r\n",
        ),
        (
            "cl_duplicate_different",
            "Content-Length: 5\r\nContent-Length: 6\r\n",
        ),
        (
            "cl_duplicate_other_case",
            "content-length: 5\r\nCONTENT-LENGTH: 5\r\n",
        ),
        ("cl_list", "Content-Length: 5, 5\r\n"),
        ("cl_plus_sign", "Content-Length: +5\r\n"),
        ("cl_minus_sign", "Content-Length: -5\r\n"),
        ("cl_hex", "Content-Length: 0x5\r\n"),
        ("cl_decimal_point", "Content-Length: 5.0\r\n"),
        ("cl_exponent", "Content-Length: 5e0\r\n"),
        ("cl_empty", "Content-Length:\r\n"),
        ("cl_two_numbers", "Content-Length: 5 5\r\n"),
        (
            "cl_over_18_digits",
            "Content-Length: 9999999999999999999\r\n",
        ),
        ("obs_fold", "X-Long: a\r\n  folded\r\n"),
        ("obs_fold_with_tab", "X-Long: a\r\n\tfolded\r\n"),
        ("obs_fold_into_host", "X-A: b\r\n Host: denied.test\r\n"),
        ("bare_cr_in_a_value", "X-A: b\rc\r\n"),
        ("bare_cr_line_end", "X-A: b\r\r\n"),
        ("nul_in_a_value", "X-A: b\0c\r\n"),
        ("space_in_a_header_name", "X A: b\r\n"),
        ("empty_header_name", ": b\r\n"),
        ("header_without_colon", "X-A\r\n"),
        ("at_sign_in_a_header_name", "X@A: b\r\n"),
        // Connection may not strip the framing the gateway judged the body by: the body would
        // reach the origin as requests the gateway never saw.
        (
            "connection_naming_content_length",
            "Connection: Content-Length\r\nContent-Length: 5\r\n",
        ),
        (
            "connection_naming_transfer_encoding",
            "Connection: close, Transfer-Encoding\r\nTransfer-Encoding: chunked\r\n",
        ),
        // Some back ends read `_` as `-` (CGI turns both into HTTP_CONTENT_LENGTH).
        ("underscore_content_length", "Content_Length: 5\r\n"),
        (
            "underscore_transfer_encoding",
            "Transfer_Encoding: chunked\r\n",
        ),
    ];
    let mut cases: Vec<Case> = HEADERS
        .iter()
        .map(|(slug, extra)| {
            invalid(
                name(format!("smuggle_{slug}")),
                &format!(
                    "POST http://allowed.test:{{http}}/ HTTP/1.1\r\nHost: allowed.test:{{http}}\r\n{extra}\r\nhello"
                ),
            )
        })
        .collect();
    cases.extend([
        invalid(
            "smuggle_te_in_http10",
            "POST http://allowed.test:{http}/ HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ),
        invalid(
            "smuggle_bare_lf_after_the_request_line",
            "GET http://allowed.test:{http}/ HTTP/1.1\nHost: allowed.test\r\n\r\n",
        ),
        invalid(
            "smuggle_bare_lf_everywhere",
            "GET http://allowed.test:{http}/ HTTP/1.1\nHost: allowed.test\n\n",
        ),
        invalid(
            "smuggle_bare_cr_in_the_request_line",
            "GET http://allowed.test:{http}/ HTTP/1.1\rX: y\r\n\r\n",
        ),
        invalid(
            "smuggle_bare_lf_hiding_a_denied_request",
            "GET http://allowed.test:{http}/ HTTP/1.1\n\nGET http://denied.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
    ]);
    cases
}

/// Chunk-size tricks in an allowed request's body: the request was decided and sent, so the
/// 400 is logged against it.
fn chunk_tricks() -> Vec<Case> {
    let long_extension = format!("5;{}\r\nhello\r\n0\r\n\r\n", "x".repeat(2000));
    let bodies: Vec<(&str, &str)> = vec![
        ("hex_prefix", "0x5\r\nhello\r\n0\r\n\r\n"),
        ("plus_sign", "+5\r\nhello\r\n0\r\n\r\n"),
        ("minus_sign", "-5\r\nhello\r\n0\r\n\r\n"),
        ("leading_space", " 5\r\nhello\r\n0\r\n\r\n"),
        ("space_before_crlf", "5 \r\nhello\r\n0\r\n\r\n"),
        ("empty_size", "\r\nhello\r\n0\r\n\r\n"),
        ("bare_lf_after_size", "5\nhello\r\n0\r\n\r\n"),
        ("bare_cr_after_size", "5\rhello\r\n0\r\n\r\n"),
        ("data_longer_than_size", "5\r\nhelloX\r\n0\r\n\r\n"),
        ("bare_lf_after_data", "5\r\nhello\n0\r\n\r\n"),
        (
            "size_over_60_bits",
            "1000000000000000\r\nhello\r\n0\r\n\r\n",
        ),
        (
            "size_over_64_bits",
            "fffffffffffffffff\r\nhello\r\n0\r\n\r\n",
        ),
        ("extension_over_the_line_limit", long_extension.as_str()),
        (
            "folded_trailer",
            "5\r\nhello\r\n0\r\nX-T: 1\r\n folded\r\n\r\n",
        ),
        ("nul_in_a_trailer", "5\r\nhello\r\n0\r\nX-T: \0\r\n\r\n"),
        (
            "bare_cr_in_a_trailer",
            "5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n",
        ),
        ("underscore_in_size", "5_0\r\nhello\r\n0\r\n\r\n"),
        (
            "host_trailer",
            "5\r\nhello\r\n0\r\nHost: denied.test\r\n\r\n",
        ),
        (
            "content_length_trailer",
            "5\r\nhello\r\n0\r\nContent-Length: 0\r\n\r\n",
        ),
        (
            "transfer_encoding_trailer",
            "5\r\nhello\r\n0\r\ntransfer-encoding: chunked\r\n\r\n",
        ),
    ];
    bodies
        .iter()
        .map(|(slug, body)| {
            case(
                name(format!("smuggle_chunk_{slug}")),
                vec![
                    send(&format!(
                        "POST http://allowed.test:{{http}}/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                    )),
                    reply(400, "ERR_INVALID_REQ"),
                    Step::Closed,
                ],
                vec![log("TCP_MISS/400", "POST", "http://allowed.test:{http}/c")],
            )
        })
        .collect()
}

/// Legal chunk syntax that parsers disagree on less often: forwarded re-framed, with the
/// body length the origin counts.
fn canonical_chunks() -> Vec<Case> {
    const BODIES: &[(&str, &str, &str)] = &[
        ("leading_zeros", "0005\r\nhello\r\n0\r\n\r\n", "body: 5\n"),
        (
            "uppercase_hex",
            "A\r\n0123456789\r\n0\r\n\r\n",
            "body: 10\n",
        ),
        (
            "extension_after_whitespace",
            "5 ;a=b\r\nhello\r\n0\r\n\r\n",
            "body: 5\n",
        ),
        (
            "quoted_extension",
            "5;a=\"x;y\"\r\nhello\r\n0\r\n\r\n",
            "body: 5\n",
        ),
        (
            "several_extensions",
            "5;a;b=c;d\r\nhello\r\n000;e\r\n\r\n",
            "body: 5\n",
        ),
    ];
    BODIES
        .iter()
        .map(|(slug, body, seen)| {
            case(
                name(format!("smuggle_chunk_{slug}_is_reframed")),
                vec![
                    send(&format!(
                        "POST http://allowed.test:{{http}}/c HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
                    )),
                    ok(&["origin: POST /c\n", seen]),
                ],
                vec![log("TCP_MISS/200", "POST", "http://allowed.test:{http}/c")],
            )
        })
        .collect()
}

/// HTTP/0.9, HTTP/2 and other versions on an HTTP/1.1 proxy port: 400.
fn other_protocols() -> Vec<Case> {
    let mut h2_preface = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // An empty SETTINGS frame, as a client sends right after the preface.
    h2_preface.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0, 0]);
    vec![
        invalid(
            "smuggle_http09_absolute_form",
            "GET http://allowed.test:{http}/\r\n\r\n",
        ),
        invalid("smuggle_http09_origin_form", "GET /\r\n\r\n"),
        case(
            "smuggle_http09_then_half_close",
            vec![
                send("GET http://denied.test:{http}/\r\n"),
                Step::HalfClose,
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            super::invalid_log(),
        ),
        invalid(
            "smuggle_version_09",
            "GET http://allowed.test:{http}/ HTTP/0.9\r\n\r\n",
        ),
        invalid(
            "smuggle_version_20",
            "GET http://allowed.test:{http}/ HTTP/2.0\r\n\r\n",
        ),
        invalid(
            "smuggle_version_lowercase",
            "GET http://allowed.test:{http}/ http/1.1\r\n\r\n",
        ),
        invalid(
            "smuggle_version_110",
            "GET http://allowed.test:{http}/ HTTP/1.10\r\n\r\n",
        ),
        invalid("smuggle_http2_preface", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
        invalid_bytes("smuggle_http2_preface_and_settings", h2_preface),
        invalid(
            "smuggle_http2_pseudo_header",
            "GET http://allowed.test:{http}/ HTTP/1.1\r\n:authority: denied.test\r\n\r\n",
        ),
        invalid(
            "smuggle_connect_with_a_chunked_body",
            "CONNECT allowed.test:{echo} HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        ),
        invalid(
            "smuggle_whitespace_before_the_request_line",
            " GET http://denied.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "smuggle_nul_in_the_target",
            "GET http://allowed.test:{http}/\0 HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "smuggle_delete_byte_in_the_target",
            "GET http://allowed.test:{http}/\x7f HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "smuggle_two_spaces_in_the_request_line",
            "GET  http://denied.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "smuggle_connect_with_an_absolute_uri",
            "CONNECT http://allowed.test:{echo}/ HTTP/1.1\r\n\r\n",
        ),
        case(
            "smuggle_lowercase_connect_is_decided_as_connect",
            vec![
                send("connect denied.test:{echo} HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "CONNECT", "denied.test:{echo}")],
        ),
        case(
            "smuggle_connect_host_header_is_not_the_target",
            vec![
                send("CONNECT denied.test:{echo} HTTP/1.1\r\nHost: allowed.test:{echo}\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "CONNECT", "denied.test:{echo}")],
        ),
        invalid(
            "smuggle_tab_in_the_request_line",
            "GET\thttp://denied.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
    ]
}

/// h2c and WebSocket upgrades and `Expect: 100-continue`: decided like any request, and an
/// upgrade's headers never reach the origin.
fn upgrades_and_expect() -> Vec<Case> {
    const H2C: &str = "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n";
    const WEBSOCKET: &str = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let denied = |slug: &str, host: &str, headers: &str| {
        case(
            name(format!("smuggle_{slug}")),
            vec![
                send(&format!(
                    "GET http://{host}:{{http}}/ HTTP/1.1\r\nHost: {host}:{{http}}\r\n{headers}\r\n"
                )),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log(
                "TCP_DENIED/403",
                "GET",
                &format!("http://{host}:{{http}}/"),
            )],
        )
    };
    let stripped = |slug: &str, headers: &str| {
        case(
            name(format!("smuggle_{slug}")),
            vec![
                send(&format!(
                    "GET http://allowed.test:{{http}}/u HTTP/1.1\r\n{headers}\r\n"
                )),
                Step::Response(ResponseExpect {
                    status: 200,
                    body_lacks: vec![
                        "upgrade".into(),
                        "http2-settings".into(),
                        "\nconnection:".into(),
                    ],
                    ..ResponseExpect::default()
                }),
                // The connection did not switch protocols: the next request is decided too.
                send("GET http://denied.test:{http}/after HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                log("TCP_MISS/200", "GET", "http://allowed.test:{http}/u"),
                log("TCP_DENIED/403", "GET", "http://denied.test:{http}/after"),
            ],
        )
    };
    vec![
        denied("h2c_upgrade_to_a_denied_name", "denied.test", H2C),
        denied("h2c_upgrade_to_a_metadata_answer", "metadata.test", H2C),
        denied(
            "websocket_upgrade_to_a_denied_name",
            "denied.test",
            WEBSOCKET,
        ),
        denied(
            "websocket_upgrade_to_a_private_answer",
            "private.test",
            WEBSOCKET,
        ),
        stripped("h2c_upgrade_to_an_allowed_name_is_not_switched", H2C),
        stripped(
            "websocket_upgrade_to_an_allowed_name_is_not_switched",
            WEBSOCKET,
        ),
        case(
            "smuggle_connect_with_an_upgrade_to_a_denied_name",
            vec![
                send(&format!(
                    "CONNECT denied.test:{{echo}} HTTP/1.1\r\n{WEBSOCKET}\r\n"
                )),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "CONNECT", "denied.test:{echo}")],
        ),
        case(
            "smuggle_expect_continue_to_a_denied_name_gets_no_100",
            vec![
                send(
                    "POST http://denied.test:{http}/continue HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                ),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log(
                "TCP_DENIED/403",
                "POST",
                "http://denied.test:{http}/continue",
            )],
        ),
        case(
            "smuggle_expect_continue_to_a_metadata_answer_gets_no_100",
            vec![
                send(
                    "POST http://metadata.test:{http}/continue HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n",
                ),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log(
                "TCP_DENIED/403",
                "POST",
                "http://metadata.test:{http}/continue",
            )],
        ),
        case(
            "smuggle_expect_continue_denied_body_sent_anyway",
            vec![
                send(
                    "PUT http://denied.test:{http}/x HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\nhello",
                ),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "PUT", "http://denied.test:{http}/x")],
        ),
        case(
            "smuggle_expect_continue_with_a_denied_request_as_body",
            vec![
                send(&format!(
                    "POST http://allowed.test:{{http}}/continue HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                    HIDDEN.len()
                )),
                Step::Response(ResponseExpect {
                    status: 100,
                    ..ResponseExpect::default()
                }),
                send(HIDDEN),
                ok(&[
                    "origin: POST /continue\n",
                    &format!("body: {}\n", HIDDEN.len()),
                ]),
            ],
            vec![log(
                "TCP_MISS/200",
                "POST",
                "http://allowed.test:{http}/continue",
            )],
        ),
    ]
}

/// Several requests on one connection, to different hosts: each is decided on its own, and a
/// request inside a body stays a body.
fn pipelines() -> Vec<Case> {
    let get = |host: &str, path: &str| {
        format!("GET http://{host}:{{http}}{path} HTTP/1.1\r\nHost: {host}:{{http}}\r\n\r\n")
    };
    let inner = HIDDEN;
    let inner_len = HIDDEN.len();
    vec![
        case(
            "smuggle_pipelined_denied_then_allowed",
            vec![
                send(&(get("denied.test", "/d") + &get("allowed.test", "/a"))),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log("TCP_DENIED/403", "GET", "http://denied.test:{http}/d")],
        ),
        case(
            "smuggle_pipelined_allowed_then_metadata",
            vec![
                send(&(get("allowed.test", "/a") + &get("metadata.test", "/m"))),
                ok(&["origin: GET /a\n"]),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                log("TCP_MISS/200", "GET", "http://allowed.test:{http}/a"),
                log("TCP_DENIED/403", "GET", "http://metadata.test:{http}/m"),
            ],
        ),
        case(
            "smuggle_pipelined_allowed_then_denied_connect",
            vec![
                send(&(get("allowed.test", "/a") + "CONNECT denied.test:{echo} HTTP/1.1\r\n\r\n")),
                ok(&["origin: GET /a\n"]),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                log("TCP_MISS/200", "GET", "http://allowed.test:{http}/a"),
                log("TCP_DENIED/403", "CONNECT", "denied.test:{echo}"),
            ],
        ),
        case(
            "smuggle_pipelined_two_allowed_hosts",
            vec![
                send(&(get("allowed.test", "/a") + &get("sub.wild.test", "/w"))),
                ok(&["origin: GET /a\n", "host: allowed.test:{http}\n"]),
                ok(&["origin: GET /w\n", "host: sub.wild.test:{http}\n"]),
            ],
            vec![
                log("TCP_MISS/200", "GET", "http://allowed.test:{http}/a"),
                log("TCP_MISS/200", "GET", "http://sub.wild.test:{http}/w"),
            ],
        ),
        case(
            "smuggle_pipelined_after_a_zero_length_body",
            vec![
                send(
                    &(format!(
                        "POST http://allowed.test:{{http}}/z HTTP/1.1\r\nContent-Length: 0\r\n\r\n{}",
                        get("denied.test", "/z")
                    )),
                ),
                ok(&["origin: POST /z\n", "body: 0\n"]),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![
                log("TCP_MISS/200", "POST", "http://allowed.test:{http}/z"),
                log("TCP_DENIED/403", "GET", "http://denied.test:{http}/z"),
            ],
        ),
        case(
            "smuggle_request_in_a_length_body_stays_a_body",
            vec![
                send(&format!(
                    "POST http://allowed.test:{{http}}/b HTTP/1.1\r\nContent-Length: {inner_len}\r\n\r\n{inner}"
                )),
                ok(&["origin: POST /b\n", &format!("body: {inner_len}\n")]),
            ],
            vec![log("TCP_MISS/200", "POST", "http://allowed.test:{http}/b")],
        ),
        case(
            "smuggle_request_in_a_chunked_body_stays_a_body",
            vec![
                send(&format!(
                    "POST http://allowed.test:{{http}}/b HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n{inner_len:x}\r\n{inner}\r\n0\r\n\r\n"
                )),
                ok(&["origin: POST /b\n", &format!("body: {inner_len}\n")]),
            ],
            vec![log("TCP_MISS/200", "POST", "http://allowed.test:{http}/b")],
        ),
        case(
            "smuggle_request_in_a_get_body_stays_a_body",
            vec![
                send(&format!(
                    "GET http://allowed.test:{{http}}/g HTTP/1.1\r\nContent-Length: {inner_len}\r\n\r\n{inner}"
                )),
                ok(&["origin: GET /g\n", &format!("body: {inner_len}\n")]),
            ],
            vec![log("TCP_MISS/200", "GET", "http://allowed.test:{http}/g")],
        ),
        case(
            "smuggle_request_after_connect_goes_into_the_tunnel",
            vec![
                send(&format!(
                    "CONNECT allowed.test:{{echo}} HTTP/1.1\r\n\r\n{inner}"
                )),
                Step::Tunnel,
                Step::Receive(inner.to_owned()),
            ],
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
    ]
}
