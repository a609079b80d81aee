//! `proxy_protocol`: arbitrary bytes at the start of a connection on a listener whose
//! `proxy_protocol` is optional or required, as an AWS Network Load Balancer would send them.
//!
//! Input: byte 0 picks options (bit 0: required, else optional; bits 1-2: the listener:
//! explicit, transparent HTTP, transparent TLS, explicit), byte 1 how the rest is cut into
//! reads ([`super::chunks`]), and the rest is what arrives.
//!
//! A reference reading (its own framing, the `ppp` crate for the header's fields) says what
//! the bytes start with, and the session must agree:
//! - a header still incomplete: nothing happens; the client's end of stream then closes (a
//!   reset with `incomplete_proxy_header` once any byte came);
//! - a broken or oversized header, or none where one is required: a reset with nothing sent
//!   and a record of why;
//! - a v2 LOCAL command (a health check): a graceful close without a record;
//! - a whole header (or none, where optional): from then on the session behaves exactly as
//!   one without PROXY protocol fed the bytes after the header, except that its records name
//!   the header's source as the client (and the VPC endpoint of the AWS TLV).
//!
//! One read or many give the same transcript (byte counts of refusals aside).

use std::net::{IpAddr, SocketAddr};

use egret_core::{Action, Close, Event, ListenerKind, Peer, ProxyProtocol, Reason};

use super::drive::{self, CLIENT_ADDR, Driver, Setup};

/// The v2 signature.
const V2_SIGNATURE: &[u8] = b"\r\n\r\n\0\r\nQUIT\n";
/// The start of a v1 header, and its longest form.
const V1_PREFIX: &[u8] = b"PROXY ";
const V1_MAX: usize = 107;

/// Runs one input; panics when a check fails.
pub fn run(data: &[u8]) {
    let [options, split, ref bytes @ ..] = *data else {
        return;
    };
    drive::same_however_split(&setup(options), bytes, split, transcript);
}

/// Returns the setup `options` picks.
#[must_use]
pub fn setup(options: u8) -> Setup {
    let mut setup = Setup::explicit(super::preamble::ENTRIES);
    setup.proxy_protocol = if options & 1 != 0 {
        ProxyProtocol::Required
    } else {
        ProxyProtocol::Optional
    };
    let (listener, original_dst) = match (options >> 1) & 3 {
        1 => (ListenerKind::TransparentHttp, Some("151.101.0.223:80")),
        2 => (ListenerKind::TransparentTls, Some("151.101.0.223:443")),
        _ => (ListenerKind::Explicit, None),
    };
    setup.listener = listener;
    setup.original_dst = original_dst.map(|a| a.parse().expect("an address"));
    setup
}

/// What the bytes start with, read independently of the session.
#[derive(Debug, PartialEq, Eq)]
pub enum Expect {
    /// A prefix of a header: more bytes are needed.
    Partial,
    /// Not a header.
    Absent,
    /// A header that cannot be used.
    Invalid,
    /// A v2 LOCAL command.
    Local,
    /// A whole header.
    Header {
        /// Its length.
        len: usize,
        /// The client it names.
        source: Option<SocketAddr>,
        /// The VPC endpoint of the AWS TLV.
        vpc_endpoint: Option<String>,
    },
}

/// Feeds `pieces` and checks the outcome against the reference reading; returns actions,
/// events and the bytes written to each peer.
fn transcript(setup: &Setup, pieces: &[&[u8]], bytes: &[u8]) -> drive::Outcome {
    let mut d = Driver::fed(setup, pieces);
    let expect = reference(bytes, setup.limits.max_header_bytes);
    let required = setup.proxy_protocol == ProxyProtocol::Required;
    match expect {
        Expect::Partial => {
            assert!(
                d.actions.is_empty() && d.events.is_empty(),
                "{:?}",
                d.actions
            );
            d.eof(Peer::Client);
            if bytes.is_empty() {
                assert_eq!(d.actions, [Action::Close(Close::Graceful)]);
                assert!(d.events.is_empty());
            } else {
                refused(&d, &["incomplete_proxy_header"]);
            }
        }
        Expect::Absent if required => refused(&d, &["proxy_header_missing"]),
        Expect::Invalid => refused(
            &d,
            &[
                "invalid_proxy_header",
                "proxy_header_too_large",
                "invalid_vpc_endpoint_id",
            ],
        ),
        Expect::Local => {
            assert_eq!(d.actions, [Action::Close(Close::Graceful)]);
            assert!(d.events.is_empty());
        }
        Expect::Absent => same_as_without(&mut d, setup, pieces, 0, None, None),
        Expect::Header {
            len,
            source,
            vpc_endpoint,
        } => same_as_without(&mut d, setup, pieces, len, source, vpc_endpoint),
    }
    (d.actions, d.events, d.written)
}

/// Checks a refused connection: a reset, nothing sent, and a record with one of `details`.
fn refused(d: &Driver, details: &[&str]) {
    assert_eq!(d.actions, [Action::Close(Close::Reset)]);
    assert!(d.written[Peer::Client as usize].is_empty());
    let closed = d.closed_events();
    let [closed] = closed.as_slice() else {
        panic!("records of a refusal: {:?}", d.events);
    };
    assert_eq!(closed.reason, Reason::InvalidRequest);
    assert_eq!(closed.url, "error:invalid-proxy-header");
    assert!(
        closed
            .detail
            .is_some_and(|detail| details.contains(&detail)),
        "{:?} is not one of {details:?}",
        closed.detail
    );
}

/// Checks that the session behaves as one without PROXY protocol fed the same reads less the
/// header's `len` bytes, with the header's client and VPC endpoint in its records; then ends
/// both with the client's EOF.
fn same_as_without(
    d: &mut Driver,
    setup: &Setup,
    pieces: &[&[u8]],
    len: usize,
    source: Option<SocketAddr>,
    vpc_endpoint: Option<String>,
) {
    let plain_setup = Setup {
        proxy_protocol: ProxyProtocol::Off,
        ..setup.clone()
    };
    let mut plain = Driver::new(&plain_setup);
    let mut skip = len;
    for piece in pieces {
        let rest = &piece[skip.min(piece.len())..];
        skip -= piece.len() - rest.len();
        if !rest.is_empty() && !plain.is_closed() {
            plain.client(rest);
        }
    }
    let client = source.unwrap_or_else(|| CLIENT_ADDR.parse().expect("an address"));
    compare(d, &plain, client, vpc_endpoint.as_deref());
    if !d.is_closed() {
        d.eof(Peer::Client);
        plain.eof(Peer::Client);
        compare(d, &plain, client, vpc_endpoint.as_deref());
    }
}

fn compare(d: &Driver, plain: &Driver, client: SocketAddr, vpc_endpoint: Option<&str>) {
    assert_eq!(
        d.actions, plain.actions,
        "actions differ from a plain session"
    );
    for peer in [Peer::Client, Peer::Upstream] {
        assert_eq!(d.session.outbound(peer), plain.session.outbound(peer));
    }
    let peer: SocketAddr = CLIENT_ADDR.parse().expect("an address");
    let events: Vec<Event> = d
        .events
        .iter()
        .cloned()
        .map(|event| match event {
            Event::Decided(mut e) => {
                assert_eq!(e.client, client);
                e.client = peer;
                Event::Decided(e)
            }
            Event::Closed(mut e) => {
                assert_eq!(e.client, client);
                assert_eq!(e.vpc_endpoint.as_deref(), vpc_endpoint);
                e.client = peer;
                e.vpc_endpoint = None;
                Event::Closed(e)
            }
        })
        .collect();
    // A stream refused before any upstream counts the bytes read by then, and a session
    // waiting for a PROXY header may have read more of it (`PR` could start `PROXY `).
    let unconnected = |c: &egret_core::Closed| c.upstream.is_none();
    assert_eq!(
        drive::zero_client_counts(&events, unconnected),
        drive::zero_client_counts(&plain.events, unconnected),
        "records differ from a plain session"
    );
}

/// Reads what `bytes` start with, as DESIGN.md and the PROXY protocol spec describe.
#[must_use]
pub fn reference(bytes: &[u8], max: usize) -> Expect {
    if bytes.starts_with(V2_SIGNATURE) {
        let Some(&[.., version_command, family_protocol, hi, lo]) = bytes.get(..16) else {
            return Expect::Partial;
        };
        // The fixed part alone can be wrong: version 2, command LOCAL or PROXY, a known
        // address family and transport protocol (a parser may refuse it at once).
        let known = version_command >> 4 == 2
            && version_command & 15 <= 1
            && family_protocol >> 4 <= 3
            && family_protocol & 15 <= 2;
        if !known {
            return Expect::Invalid;
        }
        let len = 16 + usize::from(u16::from_be_bytes([hi, lo]));
        // Nor can a length too short for the family's addresses grow right.
        let addresses = match family_protocol >> 4 {
            1 => 12,
            2 => 36,
            3 => 216,
            _ => 0,
        };
        if len - 16 < addresses {
            return Expect::Invalid;
        }
        if len > max {
            return Expect::Invalid;
        }
        let Some(header) = bytes.get(..len) else {
            return Expect::Partial;
        };
        return v2(header);
    }
    if bytes.starts_with(V1_PREFIX) {
        let window = &bytes[..bytes.len().min(V1_MAX)];
        let Some(lf) = window.iter().position(|&b| b == b'\n') else {
            return if bytes.len() >= V1_MAX {
                Expect::Invalid
            } else {
                Expect::Partial
            };
        };
        let Ok(header) = ppp::v1::Header::try_from(&bytes[..=lf]) else {
            return Expect::Invalid;
        };
        let source = match header.addresses {
            ppp::v1::Addresses::Tcp4(a) => {
                Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
            }
            ppp::v1::Addresses::Tcp6(a) => {
                Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
            }
            ppp::v1::Addresses::Unknown => None,
        };
        return Expect::Header {
            len: lf + 1,
            source,
            vpc_endpoint: None,
        };
    }
    if V2_SIGNATURE.starts_with(bytes) || V1_PREFIX.starts_with(bytes) {
        return Expect::Partial;
    }
    Expect::Absent
}

/// Reads a whole v2 header (exactly its bytes).
fn v2(header: &[u8]) -> Expect {
    let Ok(parsed) = ppp::v2::Header::try_from(header) else {
        return Expect::Invalid;
    };
    let mut vpc_endpoint = None;
    for tlv in parsed.tlvs() {
        let Ok(tlv) = tlv else {
            return Expect::Invalid;
        };
        if let (0xEA, [0x01, id @ ..]) = (tlv.kind, &*tlv.value) {
            let printable = (1..=64).contains(&id.len()) && id.iter().all(u8::is_ascii_graphic);
            if !printable {
                return Expect::Invalid;
            }
            vpc_endpoint = Some(String::from_utf8_lossy(id).into_owned());
        }
    }
    if parsed.command == ppp::v2::Command::Local {
        return Expect::Local;
    }
    let source = match parsed.addresses {
        ppp::v2::Addresses::IPv4(a) => {
            Some(SocketAddr::new(IpAddr::V4(a.source_address), a.source_port))
        }
        ppp::v2::Addresses::IPv6(a) => {
            Some(SocketAddr::new(IpAddr::V6(a.source_address), a.source_port))
        }
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    };
    Expect::Header {
        len: header.len(),
        source,
        vpc_endpoint,
    }
}
