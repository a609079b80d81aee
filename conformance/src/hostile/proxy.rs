//! PROXY protocol spoofing on a listener that does not expect it (`proxy_protocol = "off"`):
//! a header is just a malformed request, refused with 400 and never believed. The live run
//! finds each case's records by the client's real port, so a gateway that took the spoofed
//! source for the client would fail the log check too.

use crate::case::{Case, Step};
use crate::cases::{case, echo, log, ok, reply, send};

use super::{invalid, invalid_bytes, invalid_log};

/// The PROXY protocol v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";

/// Returns the PROXY protocol cases.
pub(super) fn cases() -> Vec<Case> {
    let v2 = |command: u8, family: u8, body: &[u8]| {
        let mut header = V2_SIGNATURE.to_vec();
        header.extend_from_slice(&[command, family]);
        header.extend_from_slice(&u16::try_from(body.len()).unwrap_or(0).to_be_bytes());
        header.extend_from_slice(body);
        header.extend_from_slice(b"CONNECT allowed.test:443 HTTP/1.1\r\n\r\n");
        header
    };
    // TCP over IPv4: 10.0.0.1:40000 -> 127.0.0.1:3128.
    let inet = [10, 0, 0, 1, 127, 0, 0, 1, 0x9c, 0x40, 0x0c, 0x38];
    let mut with_aws_tlv = inet.to_vec();
    with_aws_tlv.extend_from_slice(&[0xea, 0x00, 0x0e, 0x01]);
    with_aws_tlv.extend_from_slice(b"vpce-12345678");
    vec![
        invalid(
            "proxy_v1_tcp4_before_connect",
            "PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\nCONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "proxy_v1_tcp6_before_get",
            "PROXY TCP6 fd00::1 ::1 40000 3128\r\nGET http://allowed.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "proxy_v1_unknown_before_get",
            "PROXY UNKNOWN\r\nGET http://allowed.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "proxy_v1_before_a_denied_request",
            "PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\nGET http://denied.test:{http}/ HTTP/1.1\r\n\r\n",
        ),
        invalid(
            "proxy_v1_with_a_bare_lf",
            "PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\nCONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n",
        ),
        case(
            "proxy_v1_split_across_segments",
            vec![
                send("PRO"),
                send("XY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\n"),
                send("CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n"),
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            invalid_log(),
        ),
        case(
            "proxy_v1_alone_then_half_close",
            vec![
                send("PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\n"),
                Step::HalfClose,
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            invalid_log(),
        ),
        invalid_bytes("proxy_v2_proxy_command", v2(0x21, 0x11, &inet)),
        invalid_bytes("proxy_v2_local_command", v2(0x20, 0x00, &[])),
        invalid_bytes(
            "proxy_v2_with_an_aws_vpce_tlv",
            v2(0x21, 0x11, &with_aws_tlv),
        ),
        invalid_bytes("proxy_v2_signature_alone", V2_SIGNATURE.to_vec()),
        case(
            "proxy_v1_after_a_request_on_a_kept_alive_connection",
            vec![
                send("GET http://allowed.test:{http}/first HTTP/1.1\r\n\r\n"),
                ok(&["origin: GET /first\n"]),
                send(
                    "PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\nGET http://denied.test:{http}/ HTTP/1.1\r\n\r\n",
                ),
                reply(400, "ERR_INVALID_REQ"),
                Step::Closed,
            ],
            vec![
                log("TCP_MISS/200", "GET", "http://allowed.test:{http}/first"),
                log("NONE_NONE/400", "NONE", "error:invalid-request"),
            ],
        ),
        case(
            "proxy_v1_inside_a_tunnel_is_spliced_untouched",
            vec![
                send("CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n"),
                Step::Tunnel,
                echo("PROXY TCP4 10.0.0.1 127.0.0.1 40000 3128\r\n"),
            ],
            vec![log("TCP_TUNNEL/200", "CONNECT", "allowed.test:{echo}")],
        ),
        case(
            "proxy_as_a_method_is_just_a_method",
            vec![
                send("PROXY http://allowed.test:{http}/p HTTP/1.1\r\n\r\n"),
                ok(&["origin: PROXY /p\n"]),
            ],
            vec![log("TCP_MISS/200", "PROXY", "http://allowed.test:{http}/p")],
        ),
        case(
            "proxy_as_a_method_to_a_denied_name",
            vec![
                send("PROXY http://denied.test:{http}/p HTTP/1.1\r\n\r\n"),
                reply(403, "ERR_ACCESS_DENIED"),
                Step::Closed,
            ],
            vec![log(
                "TCP_DENIED/403",
                "PROXY",
                "http://denied.test:{http}/p",
            )],
        ),
    ]
}
