//! `session`: whole sessions driven by arbitrary sequences of what a runtime reports, following
//! the drive contract.
//!
//! Input: an [`Input`] read with `arbitrary`: a setup (listener kind, PROXY protocol, policy
//! switches) and up to [`MAX_OPS`] operations: client and upstream bytes (canned requests,
//! responses, hellos and PROXY headers, or raw bytes), partial and whole writes, ends of
//! stream, errors, resolver answers with arbitrary addresses (private, metadata, mapped and
//! NAT64 ones included) for current or stale tickets, connect results, time passing, timer
//! deadlines, splice reports and shutdown.
//!
//! The driver ([`super::drive`]) checks every invariant after every handler: never a `Connect`
//! to an address the policy denies or for a destination it denies, never a `Resolve` of a name
//! no entry names, `Close` at most once and last, `Splice` only with empty outbound buffers.
//! As a runtime does, the driver reads only what `interest()` asks for, writes only what is
//! queued, talks to an upstream only while one is open, and reports splices only during one.
//! At the end the peers fall silent and time runs on: the session must then finish within a
//! few timer deadlines.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use egret_core::policy::{EchPolicy, Mode, PolicySettings, TlsDeny};
use egret_core::{
    ConnectError, Limits, ListenerKind, Peer, ProxyProtocol, ResolveError, SpliceEnd,
};

use super::drive::{Driver, Setup};

/// The most operations one input runs.
pub const MAX_OPS: usize = 256;
/// How many timer deadlines a silent session may take to finish.
const MAX_DEADLINES: usize = 32;

/// The allowlist of every session.
pub const ENTRIES: &[&str] = &[
    "a.example",
    ".b.example",
    "allowed.test",
    "porty.test:8443",
    "10.0.0.1",
    "127.0.0.1",
    "151.101.0.223",
    "[2a04:4e42::223]",
];

/// A whole fuzz input.
#[derive(Arbitrary, Debug)]
pub struct Input {
    /// How the session is set up.
    pub setup: SetupInput,
    /// What happens, in order.
    pub ops: Vec<Op>,
}

/// The choices a session is built from.
#[derive(Arbitrary, Debug)]
pub struct SetupInput {
    listener: ListenerChoice,
    proxy_protocol: ProxyChoice,
    audit: bool,
    allow_ip_literals: bool,
    inspect_tunnels: bool,
    ech_allow: bool,
    tls_reset: bool,
    small_heads: bool,
    loopback_exception: bool,
    own_ports: bool,
    original_dst: Addr,
}

/// A listener kind.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ListenerChoice {
    /// Explicit proxy.
    Explicit,
    /// Transparent HTTP.
    TransparentHttp,
    /// Transparent TLS.
    TransparentTls,
}

/// A PROXY protocol setting.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ProxyChoice {
    /// Off.
    Off,
    /// Optional.
    Optional,
    /// Required.
    Required,
}

/// Either side.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Side {
    /// The client.
    Client,
    /// The upstream.
    Upstream,
}

/// Bytes: one of a table of meaningful ones, or raw.
#[derive(Arbitrary, Debug)]
pub enum Bytes {
    /// An index into the table.
    Canned(u8),
    /// Anything.
    Raw(Vec<u8>),
}

/// Which ticket a result carries.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum TicketChoice {
    /// The last one issued of the kind.
    Current,
    /// Any issued so far (stale ones included).
    Any(u8),
}

/// An address in a resolver answer.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum Addr {
    /// One of [`ADDRS`].
    Table(u8),
    /// Any IPv4 address.
    V4([u8; 4]),
    /// Any IPv6 address.
    V6([u16; 8]),
}

/// A resolver's answer.
#[derive(Arbitrary, Debug)]
pub enum Answer {
    /// Addresses (perhaps none).
    Addrs(Vec<Addr>),
    /// NXDOMAIN.
    NotFound,
    /// A resolver failure.
    Failed,
}

/// A connect attempt's outcome.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum ConnectResult {
    /// Connected.
    Ok,
    /// Refused.
    Refused,
    /// Unreachable.
    Unreachable,
    /// Another failure.
    Other,
}

/// How a splice ended.
#[derive(Arbitrary, Clone, Copy, Debug)]
pub enum SpliceResult {
    /// Both directions ended.
    Finished,
    /// A side failed.
    Failed(Side),
}

/// One thing that happens to a session.
#[derive(Arbitrary, Debug)]
pub enum Op {
    /// Bytes read from a peer.
    Read(Side, Bytes),
    /// A quarter-multiple (1 to 4) of what is queued for a peer written.
    Write(Side, u8),
    /// Everything queued written.
    Flush,
    /// End of stream from a peer.
    Eof(Side),
    /// A failed read or write on a peer.
    IoError(Side),
    /// A resolver answer.
    Resolved(TicketChoice, Answer),
    /// A connect outcome.
    Connected(TicketChoice, ConnectResult),
    /// Milliseconds pass, then timers are checked.
    Advance(u32),
    /// The clock jumps to the next deadline.
    Deadline,
    /// Bytes spliced from a peer.
    SpliceProgress(Side, u32),
    /// The splice ended.
    SpliceEnd(SpliceResult),
    /// A graceful shutdown with this many milliseconds of grace.
    Shutdown(u16),
}

/// Addresses worth answering with: public, each denied class, embedded forms, the gateway's
/// own ports' hosts.
pub const ADDRS: &[&str] = &[
    "151.101.0.223",
    "151.101.64.223",
    "2a04:4e42::223",
    "10.0.0.1",
    "127.0.0.1",
    "169.254.169.254",
    "::ffff:127.0.0.1",
    "::ffff:151.101.0.223",
    "64:ff9b::a9fe:a9fe",
    "2002:7f00:1::",
    "fd00:ec2::254",
    "0.0.0.0",
    "100.64.0.1",
    "192.168.1.1",
    "::1",
    "fe80::1",
    "255.255.255.255",
    "224.0.0.1",
    "::",
    "203.0.113.7",
];

/// Client bytes worth sending: requests, bodies, hellos, PROXY headers, broken heads.
pub const CLIENT_CHUNKS: &[&[u8]] = &[
    b"CONNECT a.example:443 HTTP/1.1\r\n\r\n",
    b"CONNECT www.b.example:443 HTTP/1.1\r\n\r\nearly",
    b"CONNECT porty.test:8443 HTTP/1.1\r\n\r\n",
    b"CONNECT allowed.test:3128 HTTP/1.1\r\n\r\n",
    b"CONNECT 127.0.0.1:443 HTTP/1.1\r\n\r\n",
    b"CONNECT [2a04:4e42::223]:443 HTTP/1.1\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\r\n\r\n",
    b"GET http://www.b.example/x HTTP/1.1\r\nConnection: close\r\n\r\n",
    b"GET http://a.example/ HTTP/1.0\r\n\r\n",
    b"HEAD http://a.example/ HTTP/1.1\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
    b"POST http://a.example/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
    b"GET http://151.101.0.223/ HTTP/1.1\r\n\r\n",
    b"GET http://10.0.0.1/ HTTP/1.1\r\n\r\n",
    b"GET http://evil.example/ HTTP/1.1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n",
    b"hello",
    b"5\r\nhello\r\n",
    b"0\r\n\r\n",
    b"\r\n",
    b"GET http://a.exa",
    b"mple/ HTTP/1.1\r\n\r\n",
    b"PROXY TCP4 10.9.8.7 10.0.0.1 51234 3128\r\n",
    b"PROXY UNKNOWN\r\n",
    b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c\x0a\x09\x08\x07\x0a\x00\x00\x01\xc8\x22\x0c\x38",
    b"\r\n\r\n\0\r\nQUIT\n\x20\x00\x00\x00",
    b"\x16\x03\x01\x00\x05hello",
    include_bytes!("../../core/tests/fixtures/hello/curl-7.88-openssl-3.0.bin"),
    include_bytes!("../../core/tests/fixtures/hello/curl-7.88-openssl-3.0-denied.bin"),
    include_bytes!("../../core/tests/fixtures/hello/openssl-3.0-noservername.bin"),
    include_bytes!("../../core/tests/fixtures/hello/chromium-156-x25519mlkem768.bin"),
    b"GET http://a.example/ HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
    b"GET http://a.example/ HTTP/1.1\nX: y\r\n\r\n",
];

/// Upstream bytes worth sending: responses whole and in pieces, broken ones.
pub const UPSTREAM_CHUNKS: &[&[u8]] = &[
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
    b"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    b"HTTP/1.1 20",
    b"garbage\r\n\r\n",
    b"SSH-2.0-OpenSSH_9.2\r\n",
];

/// Runs one input; panics when a check fails.
pub fn run(data: &[u8]) {
    if let Ok(input) = Input::arbitrary_take_rest(Unstructured::new(data)) {
        play(&input);
    }
}

/// Plays one input, checking as it goes; returns the driver with what the session emitted.
pub fn play(input: &Input) -> Driver {
    let setup = setup(&input.setup);
    let mut d = Driver::new(&setup);
    for op in input.ops.iter().take(MAX_OPS) {
        if d.is_closed() {
            break;
        }
        apply(&mut d, op);
    }
    // The peers fall silent: every phase has a deadline, so the session ends.
    for _ in 0..MAX_DEADLINES {
        if d.is_closed() {
            break;
        }
        d.advance_to_deadline();
    }
    assert!(
        d.is_closed(),
        "a silent session outlived {MAX_DEADLINES} deadlines"
    );
    d
}

/// Returns the setup `input` describes.
#[must_use]
pub fn setup(input: &SetupInput) -> Setup {
    let settings = PolicySettings {
        mode: if input.audit {
            Mode::Audit
        } else {
            Mode::Enforce
        },
        allow_ip_literals: input.allow_ip_literals,
        inspect_tunnels: input.inspect_tunnels,
        ech: if input.ech_allow {
            EchPolicy::Allow
        } else {
            EchPolicy::Deny
        },
        tls_deny: if input.tls_reset {
            TlsDeny::Reset
        } else {
            TlsDeny::Alert
        },
        private_exceptions: if input.loopback_exception {
            vec!["127.0.0.0/8".parse().expect("a network")]
        } else {
            Vec::new()
        },
        own_ports: if input.own_ports {
            vec![3128, 9090]
        } else {
            Vec::new()
        },
        ..PolicySettings::default()
    };
    let limits = Limits {
        max_header_bytes: if input.small_heads { 1024 } else { 16 * 1024 },
        ..Limits::default()
    };
    let (listener, port) = match input.listener {
        ListenerChoice::Explicit => (ListenerKind::Explicit, None),
        ListenerChoice::TransparentHttp => (ListenerKind::TransparentHttp, Some(80)),
        ListenerChoice::TransparentTls => (ListenerKind::TransparentTls, Some(443)),
    };
    Setup {
        entries: ENTRIES.to_vec(),
        settings,
        limits,
        listener,
        original_dst: port.map(|port| (ip(input.original_dst), port).into()),
        proxy_protocol: match input.proxy_protocol {
            ProxyChoice::Off => ProxyProtocol::Off,
            ProxyChoice::Optional => ProxyProtocol::Optional,
            ProxyChoice::Required => ProxyProtocol::Required,
        },
    }
}

/// Performs one operation as a runtime following the drive contract would, or nothing when
/// a runtime could not see it happen now.
fn apply(d: &mut Driver, op: &Op) {
    let interest = d.session.interest();
    match op {
        Op::Read(Side::Client, bytes) => {
            if interest.read_client && !d.saw_eof(Peer::Client) && !d.splicing() {
                d.client(bytes_of(bytes, CLIENT_CHUNKS));
            }
        }
        Op::Read(Side::Upstream, bytes) => {
            if interest.read_upstream && upstream_readable(d) {
                d.upstream(bytes_of(bytes, UPSTREAM_CHUNKS));
            }
        }
        Op::Write(side, quarters) => {
            let peer = peer(*side);
            if peer == Peer::Client || d.upstream_open() {
                let n = d.session.outbound(peer).len() * usize::from(quarters % 4 + 1) / 4;
                d.write(peer, n);
            }
        }
        Op::Flush => {
            d.write_all(Peer::Client);
            if d.upstream_open() {
                d.write_all(Peer::Upstream);
            }
        }
        Op::Eof(Side::Client) => {
            if !d.saw_eof(Peer::Client) && !d.splicing() {
                d.eof(Peer::Client);
            }
        }
        Op::Eof(Side::Upstream) => {
            if upstream_readable(d) {
                d.eof(Peer::Upstream);
            }
        }
        Op::IoError(Side::Client) => {
            if !d.saw_eof(Peer::Client) && !d.splicing() {
                d.io_error(Peer::Client);
            }
        }
        Op::IoError(Side::Upstream) => {
            if upstream_readable(d) {
                d.io_error(Peer::Upstream);
            }
        }
        Op::Resolved(choice, answer) => {
            let ticket = match choice {
                TicketChoice::Current => d.resolve_ticket(),
                TicketChoice::Any(pick) => d.any_ticket(usize::from(*pick)),
            };
            let Some(ticket) = ticket else {
                return;
            };
            match answer {
                Answer::Addrs(addrs) => {
                    let ips: Vec<IpAddr> = addrs.iter().take(16).map(|a| ip(*a)).collect();
                    d.resolved(ticket, Ok(&ips));
                }
                Answer::NotFound => d.resolved(ticket, Err(ResolveError::NotFound)),
                Answer::Failed => d.resolved(ticket, Err(ResolveError::Failed)),
            }
        }
        Op::Connected(choice, result) => {
            let ticket = match choice {
                TicketChoice::Current => d.connect_ticket(),
                TicketChoice::Any(pick) => d.any_ticket(usize::from(*pick)),
            };
            let Some(ticket) = ticket else {
                return;
            };
            let result = match result {
                ConnectResult::Ok => Ok(()),
                ConnectResult::Refused => Err(ConnectError::Refused),
                ConnectResult::Unreachable => Err(ConnectError::Unreachable),
                ConnectResult::Other => Err(ConnectError::Other),
            };
            d.connected(ticket, result);
        }
        Op::Advance(ms) => d.advance(Duration::from_millis(u64::from(*ms % 1_000_000))),
        Op::Deadline => d.advance_to_deadline(),
        Op::SpliceProgress(side, bytes) => {
            if d.splicing() {
                d.splice_progress(peer(*side), u64::from(*bytes));
            }
        }
        Op::SpliceEnd(end) => {
            if d.splicing() {
                d.splice_end(match end {
                    SpliceResult::Finished => SpliceEnd::Finished,
                    SpliceResult::Failed(side) => SpliceEnd::Failed(peer(*side)),
                });
            }
        }
        Op::Shutdown(grace) => d.shutdown(Duration::from_millis(u64::from(*grace))),
    }
}

/// Returns whether the runtime has an upstream it could read from (open, not ended, not
/// handed to a splice).
fn upstream_readable(d: &Driver) -> bool {
    d.upstream_open() && !d.saw_eof(Peer::Upstream) && !d.splicing()
}

fn peer(side: Side) -> Peer {
    match side {
        Side::Client => Peer::Client,
        Side::Upstream => Peer::Upstream,
    }
}

fn bytes_of<'a>(bytes: &'a Bytes, table: &[&'a [u8]]) -> &'a [u8] {
    match bytes {
        Bytes::Canned(i) => table[usize::from(*i) % table.len()],
        Bytes::Raw(raw) => raw,
    }
}

fn ip(addr: Addr) -> IpAddr {
    match addr {
        Addr::Table(i) => ADDRS[usize::from(i) % ADDRS.len()]
            .parse()
            .expect("an address"),
        Addr::V4(octets) => IpAddr::V4(Ipv4Addr::from(octets)),
        Addr::V6(segments) => IpAddr::V6(Ipv6Addr::from(segments)),
    }
}
