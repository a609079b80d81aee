//! `http_preamble`: arbitrary bytes from a client of the explicit listener.
//!
//! Input: byte 0 picks options (bit 0: a 512-byte head limit instead of 16 KiB; bit 1:
//! `allow_ip_literals`; bit 2: audit mode), byte 1 how the rest is cut into reads
//! ([`super::chunks`]), and the rest is what the client sends.
//!
//! Checks, besides the driver's invariants: the bytes lead to exactly one of the documented
//! outcomes, and the same one whether they arrive in one read or in many:
//! - nothing yet: no action, no event, still reading;
//! - `Resolve` of the request's host (lowercase, in the bytes), which an entry names;
//! - `Connect` to an IP-literal target after a `Decided` that allowed it;
//! - an error reply, byte for byte: 400 with `ERR_INVALID_REQ` and the reason, 431, or the
//!   exact 403 after a `Decided` that denied what `Policy::decide` denies; then `Shutdown` once
//!   it is written, and `Close` at the client's end of stream.
//!
//! A head still incomplete is then ended by the client (a close, or a 400
//! `incomplete_head`), and a request that got through is answered by DNS and connect, so the
//! forwarded head or the 200 of a tunnel is compared between the two ways of reading too.

use std::net::{IpAddr, SocketAddr};

use egret_core::host::Host;
use egret_core::policy::{DenyReason, Mode, PolicySettings, Verdict};
use egret_core::{Access, Action, Closed, Event, Limits, Peer, Reason};

use super::drive::{self, Driver, PUBLIC, Setup};

/// The allowlist every preamble is judged against.
pub const ENTRIES: &[&str] = &[
    "allowed.test",
    ".wild.test",
    "porty.test:8443",
    "a.example",
    ".b.example",
    "151.101.0.223",
    "[2a04:4e42::223]",
];

/// Runs one input; panics when a check fails.
pub fn run(data: &[u8]) {
    let [options, split, ref bytes @ ..] = *data else {
        return;
    };
    let setup = setup(options);
    let whole = transcript(&setup, &[bytes], bytes);
    let pieces = super::chunks(bytes, split);
    if pieces.len() == 1 {
        return;
    }
    let split = transcript(&setup, &pieces, bytes);
    assert_eq!(whole.actions, split.actions, "actions differ when split");
    assert_eq!(whole.to_client, split.to_client, "client bytes differ");
    assert_eq!(
        whole.to_upstream, split.to_upstream,
        "upstream bytes differ"
    );
    assert_eq!(
        drive::zero_client_counts(&whole.events, refused_early),
        drive::zero_client_counts(&split.events, refused_early),
        "events differ when split"
    );
}

/// Returns the setup `options` picks.
#[must_use]
pub fn setup(options: u8) -> Setup {
    let mut setup = Setup::explicit(ENTRIES);
    if options & 1 != 0 {
        setup.limits = Limits {
            max_header_bytes: 512,
            ..Limits::default()
        };
    }
    setup.settings = PolicySettings {
        allow_ip_literals: options & 2 != 0,
        mode: if options & 4 != 0 {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        ..PolicySettings::default()
    };
    setup
}

/// What a session made of the bytes.
#[derive(Debug)]
struct Transcript {
    actions: Vec<Action>,
    events: Vec<Event>,
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
}

/// Feeds `pieces`, checks the outcome against `bytes` (all of them), then plays it out.
fn transcript(setup: &Setup, pieces: &[&[u8]], bytes: &[u8]) -> Transcript {
    let mut d = Driver::fed(setup, pieces);
    match outcome(&d, bytes) {
        Outcome::Waiting => {
            d.eof(Peer::Client);
            match (d.actions.as_slice(), d.events.as_slice()) {
                ([Action::Close(egret_core::Close::Graceful)], []) => {}
                ([], [Event::Closed(c)]) => {
                    assert_eq!(c.detail, Some("incomplete_head"), "{c:?}");
                    let reply = d.session.outbound(Peer::Client).to_vec();
                    let server = drive::server_of(&reply);
                    let want = drive::error_reply(
                        &server,
                        "400 Bad Request",
                        "ERR_INVALID_REQ",
                        0,
                        Some("incomplete_head"),
                    );
                    assert_eq!(text(&reply), text(&want));
                    d.write_all(Peer::Client);
                    assert!(matches!(
                        d.actions.last(),
                        Some(Action::Close(egret_core::Close::Graceful))
                    ));
                }
                (actions, events) => {
                    panic!("a client's end of stream led to {actions:?} {events:?}")
                }
            }
        }
        Outcome::Resolving => {
            let ticket = d.resolve_ticket().expect("a Resolve");
            let ips: Vec<IpAddr> = [PUBLIC, "10.0.0.1"]
                .iter()
                .map(|ip| ip.parse().expect("an address"))
                .collect();
            d.resolved(ticket, Ok(&ips));
            if let Some(ticket) = d.connect_ticket() {
                d.connected(ticket, Ok(()));
            }
        }
        Outcome::Connecting => {
            let ticket = d.connect_ticket().expect("a Connect");
            d.connected(ticket, Ok(()));
        }
        Outcome::Refused => {
            d.write_all(Peer::Client);
            assert!(
                matches!(d.actions.last(), Some(Action::Shutdown)),
                "no FIN after the reply: {:?}",
                d.actions
            );
            d.eof(Peer::Client);
            assert!(matches!(
                d.actions.last(),
                Some(Action::Close(egret_core::Close::Graceful))
            ));
        }
    }
    Transcript {
        to_client: d.session.outbound(Peer::Client).to_vec(),
        to_upstream: d.session.outbound(Peer::Upstream).to_vec(),
        actions: d.actions,
        events: d.events,
    }
}

/// The documented outcomes of a preamble.
enum Outcome {
    /// More bytes are needed.
    Waiting,
    /// The request's name is being resolved.
    Resolving,
    /// An IP-literal target is being connected to.
    Connecting,
    /// An error reply is queued.
    Refused,
}

/// Returns which documented outcome the session reached, or panics.
fn outcome(d: &Driver, bytes: &[u8]) -> Outcome {
    let to_client = d.session.outbound(Peer::Client);
    let to_upstream = d.session.outbound(Peer::Upstream);
    let audit = d.policy.settings().mode == Mode::Audit;
    match (d.actions.as_slice(), d.events.as_slice()) {
        ([], []) => {
            assert!(to_client.is_empty() && to_upstream.is_empty());
            assert!(d.session.interest().read_client, "waiting without reading");
            Outcome::Waiting
        }
        ([Action::Resolve { name, .. }], []) => {
            assert!(to_client.is_empty() && to_upstream.is_empty());
            let lower = bytes.to_ascii_lowercase();
            assert!(
                lower
                    .windows(name.len())
                    .any(|window| window == name.as_bytes()),
                "Resolve of a name the client did not send: {name}"
            );
            Outcome::Resolving
        }
        ([Action::Connect { addr, .. }], [Event::Decided(decided)]) => {
            assert_eq!(decided.host, Host::Ip(addr.ip()));
            assert!(d.policy.settings().allow_ip_literals || audit);
            Outcome::Connecting
        }
        ([], [Event::Closed(closed)]) => {
            refused(d, closed, None);
            Outcome::Refused
        }
        ([], [Event::Decided(decided), Event::Closed(closed)]) => {
            assert_eq!(decided.seq, closed.seq);
            assert_eq!(Some(decided.access), closed.access);
            assert_eq!(Some(&decided.host), closed.host.as_ref());
            refused(d, closed, Some(decided.access));
            Outcome::Refused
        }
        (actions, events) => panic!("an undocumented outcome: {actions:?} {events:?}"),
    }
}

/// Checks an error reply against its record.
fn refused(d: &Driver, closed: &Closed, access: Option<Access>) {
    let reply = d.session.outbound(Peer::Client);
    let server = drive::server_of(reply);
    assert!(
        d.session.outbound(Peer::Upstream).is_empty(),
        "bytes for an upstream that was refused"
    );
    let want = match (closed.reason, access) {
        (Reason::InvalidRequest, None) => {
            let detail = closed.detail.expect("a 400 says why");
            drive::error_reply(
                &server,
                "400 Bad Request",
                "ERR_INVALID_REQ",
                0,
                Some(detail),
            )
        }
        (Reason::HeaderTooLarge, None) => drive::error_reply(
            &server,
            "431 Request Header Fields Too Large",
            "ERR_TOO_BIG",
            0,
            None,
        ),
        (Reason::Denied, Some(Access::Denied(reason))) => {
            let host = closed.host.as_ref().expect("a denied host");
            match (reason, host) {
                // An IP-literal target is checked as an address at once.
                (DenyReason::PrivateAddress(class), Host::Ip(ip)) => {
                    let addr = SocketAddr::new(*ip, closed.port);
                    assert_eq!(d.policy.check_destination(addr), Err(class));
                }
                _ => {
                    let verdict = d.policy.decide(host, closed.port).verdict;
                    assert_eq!(verdict, Verdict::Deny(reason), "{closed:?}");
                }
            }
            drive::forbidden(&server)
        }
        (reason, access) => panic!("an undocumented refusal: {reason:?} {access:?} {closed:?}"),
    };
    assert_eq!(text(reply), text(&want), "the reply");
    let status: u16 = text(&want)[9..12].parse().expect("a status");
    assert_eq!(closed.status, status);
}

/// Returns whether a record is of a refused head, which counts every byte read by then: the
/// head and whatever came with it in the same reads.
fn refused_early(c: &Closed) -> bool {
    c.url.starts_with("error:")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
