//! Properties of the core: segmentation does not change a transcript (request heads, and
//! ClientHellos split at any byte and across any number of TLS records), the compiled
//! allowlist agrees with a naive matcher, and no sequence of inputs breaks the drive contract.

mod support;

use std::net::IpAddr;

use egret_core::host::Host;
use egret_core::policy::{
    Allowlist, DenyReason, Entry, EntryKind, Mode, Policy, PolicySettings, Verdict,
};
use egret_core::{
    Action, ConnectError, Event, Limits, Peer, Reason, ResolveError, SpliceEnd, Ticket,
};
use proptest::prelude::*;

use support::Harness;
use support::hello;

const PUBLIC: &str = "151.101.0.223";
/// The head size limit of the segmentation property.
const MAX_HEADER_BYTES: usize = 512;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// A captured ClientHello re-framed into handshake records of any size and delivered in
    /// any number of TCP segments is judged alike, and exactly its bytes reach the upstream.
    #[test]
    fn a_hello_is_judged_alike_however_it_is_framed_and_segmented(
        which in 0usize..4,
        record in 1usize..2000,
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..12),
        listed in any::<bool>(),
    ) {
        let captured = [hello::CURL, hello::OPENSSL, hello::NO_SNI, hello::CHROMIUM][which];
        let bytes = hello::records(&hello::handshake_of(captured), record);
        let entries: &[&str] = if listed { &["allowed.test"] } else { &["other.test"] };
        let settings = PolicySettings {
            ech: egret_core::policy::EchPolicy::Allow,
            ..support::settings()
        };
        let original = support::sock("151.101.0.223:443");
        let mut h = Harness::transparent(
            entries,
            settings,
            egret_core::ListenerKind::TransparentTls,
            original,
        );
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len())).collect();
        points.sort_unstable();
        let mut start = 0;
        for point in points {
            h.client(&bytes[start..point]);
            start = point;
        }
        h.client(&bytes[start..]);
        let has_sni = which != 2;
        if has_sni && listed {
            prop_assert_eq!(h.take_actions(), vec!["resolve allowed.test".to_owned()]);
            h.open(PUBLIC);
            prop_assert_eq!(h.written_to_upstream(), bytes);
        } else {
            prop_assert_eq!(h.written_to_client(), vec![0x15, 3, 3, 0, 2, 2, 0x31]);
            let reason = if has_sni { DenyReason::NotAllowlisted } else { DenyReason::NoSni };
            prop_assert_eq!(h.only_closed().access, Some(egret_core::Access::Denied(reason)));
        }
    }

    /// A request preamble gives the same transcript whole or split at any points.
    #[test]
    fn a_preamble_gives_the_same_transcript_however_it_is_split(
        preamble in preamble(),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let whole = transcript(&[&preamble[..]]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(preamble.len() + 1)).collect();
        at.sort_unstable();
        at.dedup();
        let mut pieces = Vec::new();
        let mut start = 0;
        for cut in at {
            pieces.push(&preamble[start..cut]);
            start = cut;
        }
        pieces.push(&preamble[start..]);
        let split = transcript(&pieces);
        prop_assert_eq!(&whole.actions, &split.actions, "{}", String::from_utf8_lossy(&preamble));
        prop_assert_eq!(&whole.to_client, &split.to_client);
        prop_assert_eq!(&whole.to_upstream, &split.to_upstream);
        // One field may differ, and only for a head refused before it was complete (too
        // large, or with a bare line ending): its record counts the bytes read by then.
        let (whole_events, split_events) = (whole.events, split.events);
        prop_assert_eq!(
            without_oversize_count(&whole_events),
            without_oversize_count(&split_events)
        );
        for event in &split_events {
            if let Event::Closed(c) = event {
                if c.reason == Reason::HeaderTooLarge {
                    prop_assert!(c.bytes_from_client > MAX_HEADER_BYTES as u64);
                }
                if refused_early(c) {
                    prop_assert!(c.bytes_from_client <= preamble.len() as u64);
                }
            }
        }
    }

    /// `Policy::decide` agrees with a linear scan that checks suffixes on label boundaries.
    #[test]
    fn decide_agrees_with_a_naive_matcher(
        entries in prop::collection::vec(entry(), 0..8),
        ports in prop::sample::subsequence(vec![22, 80, 443, 8443], 0..=4),
        allow_ip_literals in any::<bool>(),
        host in host(),
        port in prop::sample::select(vec![22u16, 80, 443, 8443]),
    ) {
        let settings = PolicySettings {
            ports: ports.clone(),
            allow_ip_literals,
            ..PolicySettings::default()
        };
        let policy = Policy::new(Allowlist::compile(entries.clone()), settings);
        let decision = policy.decide(&host, port);
        let (verdict, rule) = reference_decide(&entries, &ports, allow_ip_literals, &host, port);
        prop_assert_eq!(decision.verdict, verdict);
        prop_assert_eq!(decision.rule.as_deref(), rule.as_deref());
    }

    /// Under any sequence of inputs, handlers never panic, `Close` comes last and at most
    /// once with nothing after it, `Splice` only with both buffers empty, and `Connect` only
    /// to admitted addresses (the harness checks these after every handler).
    #[test]
    fn no_sequence_of_inputs_breaks_the_drive_contract(
        audit in any::<bool>(),
        allow_ip_literals in any::<bool>(),
        inspect_tunnels in any::<bool>(),
        proxy_protocol in prop::sample::select(vec![
            egret_core::ProxyProtocol::Off,
            egret_core::ProxyProtocol::Off,
            egret_core::ProxyProtocol::Optional,
            egret_core::ProxyProtocol::Required,
        ]),
        listener in prop::sample::select(vec![
            egret_core::ListenerKind::Explicit,
            egret_core::ListenerKind::Explicit,
            egret_core::ListenerKind::TransparentHttp,
            egret_core::ListenerKind::TransparentTls,
        ]),
        first in prop_oneof![1 => 0..2usize, 2 => 2..REQUESTS],
        ops in prop::collection::vec(op(), 1..48),
    ) {
        let settings = PolicySettings {
            mode: if audit { Mode::Audit } else { Mode::Enforce },
            allow_ip_literals,
            inspect_tunnels,
            ech: egret_core::policy::EchPolicy::Allow,
            ..PolicySettings::default()
        };
        let limits = Limits {
            max_header_bytes: 4096,
            ..Limits::default()
        };
        let entries = ["a.example", ".b.example", "10.0.0.1", "151.101.0.223", "allowed.test"];
        let list = Allowlist::compile(entries.iter().map(|e| Entry::parse(e).expect("entry").0));
        let original = match listener {
            egret_core::ListenerKind::Explicit => None,
            egret_core::ListenerKind::TransparentHttp => Some(support::sock("151.101.0.223:80")),
            egret_core::ListenerKind::TransparentTls => Some(support::sock("151.101.0.223:443")),
        };
        let policy = Policy::new(list, settings);
        let mut h = Harness::full(policy, limits, listener, original, proxy_protocol);
        apply(&mut h, Op::Client(first));
        for op in ops {
            apply(&mut h, op);
        }
        let closes = h.actions.iter().filter(|a| matches!(a, Action::Close(_))).count();
        prop_assert!(closes <= 1);
        prop_assert_eq!(h.session.is_finished(), closes == 1);
        if closes == 1 {
            prop_assert!(matches!(h.actions.last(), Some(Action::Close(_))));
        }
    }
}

// ---- property 1: segmentation ----

/// What a session produced.
#[derive(Debug)]
struct Transcript {
    actions: Vec<Action>,
    to_client: Vec<u8>,
    to_upstream: Vec<u8>,
    events: Vec<Event>,
}

/// Feeds `pieces` at one instant, then answers DNS and connect, and returns what came out.
fn transcript(pieces: &[&[u8]]) -> Transcript {
    let limits = Limits {
        max_header_bytes: MAX_HEADER_BYTES,
        ..Limits::default()
    };
    let mut h = Harness::with_limits(&["a.example", ".b.example", "a.example:8080"], limits);
    for piece in pieces {
        h.client(piece);
    }
    if matches!(h.actions.last(), Some(Action::Resolve { .. })) {
        h.resolve(&[PUBLIC, "10.0.0.1"]);
    }
    if matches!(h.actions.last(), Some(Action::Connect { .. })) {
        h.connect_ok();
    }
    Transcript {
        actions: h.actions.clone(),
        to_client: h.pending(Peer::Client),
        to_upstream: h.pending(Peer::Upstream),
        events: h.events.clone(),
    }
}

/// Returns whether a record is of a head refused before it was complete.
fn refused_early(c: &egret_core::Closed) -> bool {
    c.reason == Reason::HeaderTooLarge
        || (c.reason == Reason::InvalidRequest && c.detail == Some("bare_cr_or_lf"))
}

/// Returns `events` with the byte count of early refusals zeroed.
fn without_oversize_count(events: &[Event]) -> Vec<Event> {
    events
        .iter()
        .cloned()
        .map(|event| match event {
            Event::Closed(mut c) if refused_early(&c) => {
                c.bytes_from_client = 0;
                Event::Closed(c)
            }
            Event::Closed(_) | Event::Decided(_) => event,
        })
        .collect()
}

/// A request head: mostly valid CONNECT and absolute-form ones, some broken.
fn preamble() -> impl Strategy<Value = Vec<u8>> {
    let host = prop::sample::select(vec![
        "a.example",
        "A.Example.",
        "www.b.example",
        "b.example",
        "evil.example",
        "151.101.0.223",
        "[2a04:4e42::223]",
    ]);
    let port = prop::sample::select(vec![None, Some(80u16), Some(443), Some(8080)]);
    let method = prop::sample::select(vec!["GET", "POST", "HEAD", "PUT", "OPTIONS", "CONNECT"]);
    let path = prop::sample::select(vec!["", "/", "/x/y", "/p?q=1", "?q"]);
    let version = prop::sample::select(vec!["HTTP/1.1", "HTTP/1.0"]);
    let headers = prop::collection::vec(header(), 0..8);
    let fault = prop::sample::select(vec![
        Fault::None,
        Fault::None,
        Fault::None,
        Fault::BareLf,
        Fault::BareCr,
        Fault::ObsFold,
        Fault::DuplicateLength,
        Fault::UserInfo,
        Fault::TooLarge,
    ]);
    (method, host, port, path, version, headers, fault).prop_map(
        |(method, host, port, path, version, headers, fault)| {
            let host = match fault {
                Fault::UserInfo => format!("user@{host}"),
                Fault::None
                | Fault::BareLf
                | Fault::BareCr
                | Fault::ObsFold
                | Fault::DuplicateLength
                | Fault::TooLarge => host.to_owned(),
            };
            let authority = match port {
                Some(port) => format!("{host}:{port}"),
                None => host,
            };
            let target = match method {
                "CONNECT" => authority,
                _ => format!("http://{authority}{path}"),
            };
            let mut head = format!("{method} {target} {version}\r\n");
            for (name, value) in headers {
                head.push_str(&format!("{name}: {value}\r\n"));
            }
            match fault {
                Fault::None | Fault::UserInfo => {}
                Fault::BareLf => head.push_str("X-Lf: a\nX-After: b\r\n"),
                Fault::BareCr => head.push_str("X-Cr: a\rb\r\n"),
                Fault::ObsFold => head.push_str("X-Fold: a\r\n folded\r\n"),
                Fault::DuplicateLength => {
                    head.push_str("Content-Length: 3\r\nContent-Length: 4\r\n");
                }
                Fault::TooLarge => head.push_str(&format!("X-Pad: {}\r\n", "p".repeat(600))),
            }
            head.push_str("\r\n");
            head.into_bytes()
        },
    )
}

#[derive(Clone, Copy, Debug)]
enum Fault {
    None,
    BareLf,
    BareCr,
    ObsFold,
    DuplicateLength,
    UserInfo,
    TooLarge,
}

fn header() -> impl Strategy<Value = (String, String)> {
    let token = "[A-Za-z0-9._~-]{0,12}";
    prop_oneof![
        token.prop_map(|v| ("User-Agent".to_owned(), v)),
        Just(("Accept".to_owned(), "*/*".to_owned())),
        token.prop_map(|v| ("X-Custom".to_owned(), v)),
        prop::sample::select(vec!["keep-alive", "close", "X-Custom", "Upgrade, X-Other"])
            .prop_map(|v| ("Connection".to_owned(), v.to_owned())),
        Just(("Proxy-Connection".to_owned(), "keep-alive".to_owned())),
        Just((
            "Proxy-Authorization".to_owned(),
            "Basic Zm9vOmJhcg==".to_owned()
        )),
        Just(("Keep-Alive".to_owned(), "timeout=5".to_owned())),
        Just(("TE".to_owned(), "trailers".to_owned())),
        prop::sample::select(vec!["a.example", "other.example:8080", "bad host"])
            .prop_map(|v| ("Host".to_owned(), v.to_owned())),
        prop::sample::select(vec!["0", "5", "x"])
            .prop_map(|v| ("Content-Length".to_owned(), v.to_owned())),
        prop::sample::select(vec!["chunked", "gzip, chunked", "gzip"])
            .prop_map(|v| ("Transfer-Encoding".to_owned(), v.to_owned())),
    ]
}

// ---- property 2: the allowlist ----

fn label() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["a", "b", "c", "ab"])
}

fn name(max_labels: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(label(), 1..=max_labels).prop_map(|labels| labels.join("."))
}

fn entry() -> impl Strategy<Value = Entry> {
    let port = prop::sample::select(vec![None, Some(80u16), Some(443), Some(8443)]);
    let ip = prop::sample::select(vec!["151.101.0.223", "10.0.0.1"]);
    prop_oneof![
        4 => (name(3), port.clone()).prop_map(|(name, port)| Entry {
            kind: EntryKind::Exact,
            name: name.into(),
            port,
        }),
        4 => (name(3), port.clone()).prop_map(|(name, port)| Entry {
            kind: EntryKind::Domain,
            name: name.into(),
            port,
        }),
        1 => (ip, port).prop_map(|(ip, port)| Entry {
            kind: EntryKind::Ip,
            name: ip.into(),
            port,
        }),
    ]
}

fn host() -> impl Strategy<Value = Host> {
    prop_oneof![
        8 => name(4).prop_map(|n| Host::Name(n.into())),
        1 => prop::sample::select(vec!["151.101.0.223", "10.0.0.1", "151.101.0.224"])
            .prop_map(|ip| Host::Ip(ip.parse().expect("ip"))),
    ]
}

/// Decides by scanning every entry: what a reader of DESIGN.md §3 would write.
fn reference_decide(
    entries: &[Entry],
    ports: &[u16],
    allow_ip_literals: bool,
    host: &Host,
    port: u16,
) -> (Verdict, Option<String>) {
    let is_ip = matches!(host, Host::Ip(_));
    if is_ip && !allow_ip_literals {
        return (Verdict::Deny(DenyReason::IpLiteral), None);
    }
    let names = |e: &Entry| match (e.kind, host) {
        (EntryKind::Exact, Host::Name(n)) => *e.name == **n,
        (EntryKind::Domain, Host::Name(n)) => {
            **n == *e.name || n.ends_with(&format!(".{}", e.name))
        }
        (EntryKind::Ip, Host::Ip(ip)) => e.name.parse::<IpAddr>().ok() == Some(*ip),
        (EntryKind::Exact | EntryKind::Domain, Host::Ip(_)) | (EntryKind::Ip, Host::Name(_)) => {
            false
        }
    };
    let admits = |e: &Entry| match e.port {
        Some(p) => p == port,
        None => ports.contains(&port),
    };
    // Precedence: the exact name first, then domains from the longest suffix; within one
    // name, an entry for this very port before the global one.
    let mut named: Vec<&Entry> = entries.iter().filter(|e| names(e)).collect();
    named.sort_by_key(|e| {
        (
            e.kind == EntryKind::Domain,
            std::cmp::Reverse(e.name.len()),
            e.port.is_none(),
            e.port,
        )
    });
    if let Some(e) = named.iter().find(|e| admits(e)) {
        return (Verdict::Allow, Some(text_of(e)));
    }
    let Some(first) = named.first() else {
        let reason = if is_ip {
            DenyReason::IpLiteral
        } else {
            DenyReason::NotAllowlisted
        };
        return (Verdict::Deny(reason), None);
    };
    // The rule reported is the first named one's: its global entry, or its lowest port.
    let same_name: Vec<&&Entry> = named
        .iter()
        .filter(|e| e.kind == first.kind && e.name == first.name)
        .collect();
    let shown = same_name
        .iter()
        .find(|e| e.port.is_none())
        .or_else(|| same_name.iter().min_by_key(|e| e.port))
        .map(|e| text_of(e));
    (Verdict::Deny(DenyReason::PortNotAllowed), shown)
}

fn text_of(e: &Entry) -> String {
    let dot = if e.kind == EntryKind::Domain { "." } else { "" };
    match e.port {
        Some(port) => format!("{dot}{}:{port}", e.name),
        None => format!("{dot}{}", e.name),
    }
}

// ---- property 3: random operations ----

#[derive(Clone, Debug)]
enum Op {
    Client(usize),
    Upstream(usize),
    Written(Peer, u8),
    Flush,
    Eof(Peer),
    IoError(Peer),
    Resolve {
        current: bool,
        pick: usize,
        answer: usize,
    },
    Connect {
        current: bool,
        pick: usize,
        result: usize,
    },
    Advance(u64),
    SpliceProgress(Peer, u64),
    SpliceEnd(usize),
    Shutdown(u64),
}

/// Client bytes: requests, bodies, tunnel data, and a few broken heads (the last ones).
const CLIENT_CHUNKS: &[&[u8]] = &[
    b"CONNECT a.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT www.b.example:443 HTTP/1.1\r\n\r\nearly",
    b"GET http://a.example/ HTTP/1.1\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\r\n\r\n",
    b"GET http://www.b.example/x HTTP/1.1\r\n\r\n",
    b"GET http://www.b.example/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET http://a.example/ HTTP/1.0\r\n\r\n",
    b"HEAD http://a.example/ HTTP/1.1\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"GET http://a.exa",
    b"mple/ HTTP/1.1\r\n\r\n",
    b"\r\n",
    b"\x16\x03\x01\x00\x05hello",
    hello::CURL,
    hello::CHROMIUM,
    b"PROXY TCP4 10.9.8.7 10.0.0.1 51234 3128\r\n",
    b"GET http://151.101.0.223/ HTTP/1.1\r\n\r\n",
    b"CONNECT 10.0.0.1:443 HTTP/1.1\r\n\r\n",
    b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n",
    b"GET http://evil.example/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\nX: y\r\n\r\n",
];
/// How many of [`CLIENT_CHUNKS`] are whole request heads, at the start (CONNECT first).
const REQUESTS: usize = 10;
/// How many of [`CLIENT_CHUNKS`] lead somewhere other than an immediate refusal.
const CLIENT_GOOD: usize = 20;

/// Upstream bytes: responses whole and in pieces, and a few broken ones (the last ones).
const UPSTREAM_CHUNKS: &[&[u8]] = &[
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhe",
    b"llo",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"5\r\nhello\r\n0\r\n\r\n",
    b"0\r\n\r\n",
    b"HTTP/1.1 100 Continue\r\n\r\n",
    b"HTTP/1.1 204 No Content\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n\r\nuntil close",
    b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    b"HTTP/1.1 20",
    b"garbage\r\n\r\n",
];

/// DNS answers; past the end, [`ResolveError::NotFound`] then [`ResolveError::Failed`].
const ANSWERS: &[&[&str]] = &[
    &["151.101.0.223"],
    &["151.101.0.223", "151.101.64.223"],
    &["10.0.0.1", "151.101.0.223", "2a04:4e42::223"],
    &["10.0.0.1"],
    &["::ffff:127.0.0.1", "169.254.169.254"],
    &[],
];

const ADVANCES_MS: &[u64] = &[1, 500, 2_000, 9_999, 10_000, 60_000, 300_000];

fn op() -> impl Strategy<Value = Op> {
    let peer = prop::sample::select(vec![Peer::Client, Peer::Upstream]);
    let current = prop::bool::weighted(0.85);
    prop_oneof![
        10 => (0..CLIENT_GOOD).prop_map(Op::Client),
        1 => (CLIENT_GOOD..CLIENT_CHUNKS.len()).prop_map(Op::Client),
        8 => (0..UPSTREAM_CHUNKS.len()).prop_map(Op::Upstream),
        8 => (peer.clone(), prop_oneof![3 => Just(4u8), 1 => 1..4u8])
            .prop_map(|(p, k)| Op::Written(p, k)),
        4 => Just(Op::Flush),
        1 => peer.clone().prop_map(Op::Eof),
        1 => peer.clone().prop_map(Op::IoError),
        6 => (current, 0..8usize, prop_oneof![6 => 0..2usize, 1 => 2..ANSWERS.len() + 2])
            .prop_map(|(current, pick, answer)| Op::Resolve { current, pick, answer }),
        6 => (current, 0..8usize, prop_oneof![4 => Just(0usize), 1 => 1..4usize]).prop_map(
            |(current, pick, result)| Op::Connect { current, pick, result }
        ),
        3 => prop_oneof![6 => 0..3usize, 1 => 3..ADVANCES_MS.len()]
            .prop_map(|i| Op::Advance(ADVANCES_MS[i])),
        2 => (peer, 0..10_000u64).prop_map(|(p, n)| Op::SpliceProgress(p, n)),
        1 => (0..3usize).prop_map(Op::SpliceEnd),
        1 => (0..60_000u64).prop_map(Op::Shutdown),
    ]
}

fn apply(h: &mut Harness, op: Op) {
    match op {
        Op::Client(i) => h.client(CLIENT_CHUNKS[i]),
        Op::Upstream(i) => h.upstream(UPSTREAM_CHUNKS[i]),
        Op::Written(peer, k) => {
            let pending = h.session.outbound(peer).len();
            let n = pending * usize::from(k) / 4;
            if n > 0 {
                h.write_some(peer, n);
            }
        }
        Op::Flush => {
            h.written_to_client();
            h.written_to_upstream();
        }
        Op::Eof(peer) => h.eof(peer),
        Op::IoError(peer) => h.io_error(peer),
        Op::Resolve {
            current,
            pick,
            answer,
        } => {
            let Some(ticket) = ticket(h, current, pick, true) else {
                return;
            };
            let result = match ANSWERS.get(answer) {
                Some(ips) => Ok(ips
                    .iter()
                    .map(|ip| ip.parse().expect("ip"))
                    .collect::<Vec<IpAddr>>()),
                None if answer == ANSWERS.len() => Err(ResolveError::NotFound),
                None => Err(ResolveError::Failed),
            };
            match &result {
                Ok(ips) => h.resolve_with(ticket, Ok(ips)),
                Err(e) => h.resolve_with(ticket, Err(*e)),
            }
        }
        Op::Connect {
            current,
            pick,
            result,
        } => {
            let Some(ticket) = ticket(h, current, pick, false) else {
                return;
            };
            let result = match result {
                0 => Ok(()),
                1 => Err(ConnectError::Refused),
                2 => Err(ConnectError::Unreachable),
                _ => Err(ConnectError::Other),
            };
            h.connect_with(ticket, result);
        }
        Op::Advance(ms) => h.advance(std::time::Duration::from_millis(ms)),
        Op::SpliceProgress(peer, n) => h.splice_progress(peer, n),
        Op::SpliceEnd(i) => h.splice_end(match i {
            0 => SpliceEnd::Finished,
            1 => SpliceEnd::Failed(Peer::Client),
            _ => SpliceEnd::Failed(Peer::Upstream),
        }),
        Op::Shutdown(ms) => h.shutdown(std::time::Duration::from_millis(ms)),
    }
}

/// Returns the current resolve (or connect) ticket, or any ticket issued so far.
fn ticket(h: &Harness, current: bool, pick: usize, resolve: bool) -> Option<Ticket> {
    let issued: Vec<Ticket> = h
        .actions
        .iter()
        .filter_map(|a| match a {
            Action::Resolve { ticket, .. } | Action::Connect { ticket, .. } => Some(*ticket),
            Action::Disconnect | Action::Shutdown | Action::Splice | Action::Close(_) => None,
        })
        .collect();
    if issued.is_empty() {
        return None;
    }
    if !current {
        return Some(issued[pick % issued.len()]);
    }
    h.actions.iter().rev().find_map(|a| match a {
        Action::Resolve { ticket, .. } if resolve => Some(*ticket),
        Action::Connect { ticket, .. } if !resolve => Some(*ticket),
        Action::Resolve { .. }
        | Action::Connect { .. }
        | Action::Disconnect
        | Action::Shutdown
        | Action::Splice
        | Action::Close(_) => None,
    })
}
