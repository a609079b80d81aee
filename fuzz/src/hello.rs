//! `tls_hello`: arbitrary bytes from a client of the transparent-TLS listener, where a
//! ClientHello is reassembled across reads and TLS records and judged on its SNI.
//!
//! Input: byte 0 picks options (bit 0: `ech = "allow"`; bit 1: `tls_deny = "reset"`; bit 2: a
//! 2 KiB limit instead of 16 KiB; bit 3: audit mode), byte 1 how the rest is cut into reads
//! ([`super::chunks`]), and the rest is what the client sends.
//!
//! Checks, besides the driver's invariants:
//! - the outcome is one of: nothing yet (still reading); `Resolve` of the SNI; or a denial,
//!   that is the exact `access_denied` alert then a close (or a reset, as configured) with a
//!   `Decided` and a `Closed` record saying why; never an HTTP byte;
//! - a name resolved is the one an independent reading of the hello finds (its own record
//!   reassembly, and tls-parser over the whole extension list) whenever that reading can
//!   parse the hello;
//! - once connected, the upstream receives exactly the client's bytes, unchanged;
//! - one read or many give the same transcript (byte counts of refusals aside).

use std::net::IpAddr;

use egret_core::host::Host;
use egret_core::policy::{DenyReason, EchPolicy, Mode, PolicySettings, TlsDeny};
use egret_core::{Access, Action, Close, Limits, ListenerKind, Peer, ProxyProtocol, Reason};
use tls_parser::{TlsExtension, TlsMessage, TlsMessageHandshake};

use super::drive::{self, Driver, PUBLIC, Setup};

/// The allowlist hellos are judged against.
pub const ENTRIES: &[&str] = &["allowed.test", ".wild.test", "a.example"];
/// The fatal `access_denied` alert record.
pub const ALERT: &[u8] = &[0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x31];
/// Where intercepted connections were going.
pub const ORIGINAL_DST: &str = "151.101.0.223:443";

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
    let settings = PolicySettings {
        ech: if options & 1 != 0 {
            EchPolicy::Allow
        } else {
            EchPolicy::Deny
        },
        tls_deny: if options & 2 != 0 {
            TlsDeny::Reset
        } else {
            TlsDeny::Alert
        },
        mode: if options & 8 != 0 {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        ..PolicySettings::default()
    };
    let limits = Limits {
        max_header_bytes: if options & 4 != 0 { 2048 } else { 16 * 1024 },
        ..Limits::default()
    };
    Setup {
        entries: ENTRIES.to_vec(),
        settings,
        limits,
        listener: ListenerKind::TransparentTls,
        original_dst: Some(ORIGINAL_DST.parse().expect("an address")),
        proxy_protocol: ProxyProtocol::Off,
    }
}

/// Feeds `pieces`, checks the outcome, plays it out; returns actions, events and the bytes
/// written to each peer.
fn transcript(setup: &Setup, pieces: &[&[u8]], bytes: &[u8]) -> drive::Outcome {
    let mut d = Driver::fed(setup, pieces);
    let reading = reference(bytes, setup.limits.max_header_bytes);
    match (d.actions.as_slice(), d.events.as_slice()) {
        ([], []) => {
            assert!(d.session.outbound(Peer::Client).is_empty());
            assert!(d.session.interest().read_client, "waiting without reading");
            d.eof(Peer::Client);
            denied(&d, setup, bytes.is_empty());
        }
        ([Action::Resolve { name, .. }], []) => {
            if let Reading::Hello { sni: Some(sni), .. } = &reading {
                assert_eq!(**name, **sni, "the name resolved is not the SNI");
            }
            assert!(
                !matches!(reading, Reading::Hello { sni: None, .. }),
                "resolved {name} for a hello without a usable SNI"
            );
            let ticket = d.resolve_ticket().expect("a Resolve");
            let ip: IpAddr = PUBLIC.parse().expect("an address");
            d.resolved(ticket, Ok(&[ip]));
            let ticket = d.connect_ticket().expect("a Connect after an answer");
            d.connected(ticket, Ok(()));
            d.write_all(Peer::Upstream);
            assert_eq!(
                d.written[Peer::Upstream as usize],
                bytes,
                "the stream changed"
            );
            assert!(matches!(d.actions.last(), Some(Action::Splice)));
        }
        _ => denied(&d, setup, false),
    }
    (d.actions, d.events, d.written)
}

/// Checks a denial: the alert or a reset, and records that say why.
fn denied(d: &Driver, setup: &Setup, empty: bool) {
    let Some(closed) = d.closed_events().first().map(|c| (*c).clone()) else {
        assert!(empty, "an undocumented outcome: {:?}", d.actions);
        // An empty stream ends without a record.
        assert_eq!(d.actions.as_slice(), [Action::Close(Close::Graceful)]);
        return;
    };
    assert_eq!(d.closed_events().len(), 1);
    let decided = d.decided_events();
    assert_eq!(
        decided.len(),
        usize::from(closed.host.is_some()),
        "{:?}",
        d.events
    );
    assert_eq!(closed.reason, Reason::Denied, "{closed:?}");
    assert_eq!(closed.status, 403);
    let Some(Access::Denied(reason)) = closed.access else {
        panic!("a denial without a denied access: {closed:?}");
    };
    match reason {
        DenyReason::NoSni | DenyReason::InvalidHello => {}
        DenyReason::EncryptedClientHello => {
            assert_eq!(d.policy.settings().mode, Mode::Enforce);
            assert_eq!(d.policy.settings().ech, EchPolicy::Deny);
            assert!(closed.ech);
        }
        DenyReason::NotAllowlisted | DenyReason::PortNotAllowed => {
            assert_eq!(d.policy.settings().mode, Mode::Enforce);
        }
        DenyReason::IpLiteral | DenyReason::PrivateAddress(_) | DenyReason::SniNotAllowed => {
            panic!("an intercepted hello denied as {reason:?}")
        }
    }
    match setup.settings.tls_deny {
        TlsDeny::Alert => {
            let pending = d.session.outbound(Peer::Client);
            let sent = &d.written[Peer::Client as usize];
            assert!(
                pending == ALERT || (pending.is_empty() && sent == ALERT),
                "not the alert: {pending:?}"
            );
        }
        TlsDeny::Reset => {
            assert_eq!(d.actions.last(), Some(&Action::Close(Close::Reset)));
        }
    }
}

/// What an independent reading of the stream finds.
#[derive(Debug)]
pub enum Reading {
    /// The stream is not a hello this reading can parse (or not yet a whole one).
    Unknown,
    /// A whole ClientHello.
    Hello {
        /// The one `host_name` it carries, when it carries exactly one valid name.
        sni: Option<Box<str>>,
    },
}

/// Reassembles the handshake records at the start of `bytes` and parses the ClientHello with
/// tls-parser, extensions included.
#[must_use]
pub fn reference(bytes: &[u8], max: usize) -> Reading {
    let mut handshake = Vec::new();
    let mut rest = bytes;
    let mut taken = 0;
    let whole = loop {
        let [0x16, 3, _, hi, lo, ..] = *rest else {
            return Reading::Unknown;
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let Some(payload) = rest.get(5..5 + len) else {
            return Reading::Unknown;
        };
        taken += 5 + len;
        if taken > max {
            return Reading::Unknown;
        }
        handshake.extend_from_slice(payload);
        rest = &rest[5 + len..];
        match *handshake {
            [1, a, b, c, ..] => {
                let whole = 4 + usize::from(a) * 65536 + usize::from(b) * 256 + usize::from(c);
                if handshake.len() >= whole {
                    break whole;
                }
            }
            [1, ..] | [] => {}
            [_, ..] => return Reading::Unknown,
        }
    };
    if handshake.len() != whole {
        return Reading::Unknown;
    }
    let Ok(([], TlsMessage::Handshake(TlsMessageHandshake::ClientHello(hello)))) =
        tls_parser::parse_tls_message_handshake(&handshake)
    else {
        return Reading::Unknown;
    };
    let Some(raw) = hello.ext else {
        return Reading::Hello { sni: None };
    };
    let Ok(([], extensions)) = tls_parser::parse_tls_extensions(raw) else {
        return Reading::Unknown;
    };
    let mut names = Vec::new();
    for extension in &extensions {
        if let TlsExtension::SNI(list) = extension {
            names.extend(list.iter().filter(|(kind, _)| kind.0 == 0).map(|(_, n)| *n));
        }
    }
    let sni = match names.as_slice() {
        [name] => match Host::parse(name) {
            Ok(Host::Name(name)) => Some(name),
            Ok(Host::Ip(_)) | Err(_) => None,
        },
        _ => None,
    };
    Reading::Hello { sni }
}
