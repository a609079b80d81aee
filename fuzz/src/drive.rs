//! One session driven by hand under the drive contract (DESIGN.md §2), with the invariants a
//! runtime relies on checked after every handler.
//!
//! After each `handle_*` the driver drains `poll_action()` then `poll_event()`, as a runtime
//! must, and checks:
//! - `Close` comes at most once, last in its batch, with nothing emitted after it, and
//!   `is_finished` agrees; both outbound buffers are empty after it;
//! - `Splice` comes at most once, only with both outbound buffers empty;
//! - no byte is queued for the client after `Shutdown` (the FIN);
//! - `Resolve` names a valid lowercase host that an allowlist entry names (in enforce mode);
//! - `Connect` goes to an address the policy admits (`check_destination`), that a resolver
//!   answer or the request's IP literal supplied, on the decided port, after a `Decided` event
//!   that allowed (or audited) the destination as `Policy::decide` does, and never while an
//!   upstream connection is open without a `Disconnect` first;
//! - `Decided` and `Closed` come once per request, in order, and an `Allowed` decision is one
//!   that `Policy::decide` allows;
//! - a session that has not finished always has a timer (nothing a peer controls waits
//!   forever).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_core::host::Host;
use egret_core::policy::{
    Allowlist, DenyReason, Entry, Lookup, Mode, Policy, PolicySettings, PolicyStore, Verdict,
};
use egret_core::{
    Accepted, Access, Action, ConnectError, Event, Gateway, GatewayConfig, Limits, ListenerKind,
    Peer, ProxyProtocol, ResolveError, Session, SpliceEnd, Ticket, UnixMillis, WallClock,
};

/// The client's address when no PROXY header names another.
pub const CLIENT_ADDR: &str = "10.0.0.5:40000";
/// A public address answers resolve with.
pub const PUBLIC: &str = "151.101.0.223";
/// Wall time at the driver's start.
const START_UNIX_MS: u64 = 1_700_000_000_000;

/// Everything a session is built from.
#[derive(Clone, Debug)]
pub struct Setup {
    /// Allowlist entries, each valid.
    pub entries: Vec<&'static str>,
    /// Policy settings.
    pub settings: PolicySettings,
    /// Limits.
    pub limits: Limits,
    /// The listener the connection arrived on.
    pub listener: ListenerKind,
    /// The original destination (transparent listeners).
    pub original_dst: Option<SocketAddr>,
    /// Whether a PROXY header is expected.
    pub proxy_protocol: ProxyProtocol,
}

/// A session and everything it emitted, checked as it goes.
#[derive(Debug)]
pub struct Driver {
    /// The session under test.
    pub session: Session,
    /// The fake clock.
    pub now: Instant,
    /// The policy the session decides with.
    pub policy: Arc<Policy>,
    /// Every action, in order.
    pub actions: Vec<Action>,
    /// Every event, in order.
    pub events: Vec<Event>,
    /// Bytes reported written to the client and to the upstream.
    pub written: [Vec<u8>; 2],
    closed: bool,
    fin_sent: bool,
    splices: usize,
    splicing: bool,
    /// The last `Resolve`'s ticket.
    resolve: Option<Ticket>,
    /// The last `Connect` whose outcome has not been reported yet.
    connect: Option<(Ticket, SocketAddr)>,
    /// Every ticket issued.
    tickets: Vec<Ticket>,
    /// An upstream connection is open (as far as the runtime knows).
    upstream_open: bool,
    /// Every address handed over in a resolver answer.
    answered: Vec<IpAddr>,
    /// End of stream reported per peer.
    eof: [bool; 2],
    /// The highest request number with a `Closed` event.
    last_closed_seq: u32,
    /// The last `Decided` event's request number.
    last_decided_seq: u32,
}

impl Setup {
    /// Returns an explicit listener with `entries`, default settings and limits.
    #[must_use]
    pub fn explicit(entries: &[&'static str]) -> Setup {
        Setup {
            entries: entries.to_vec(),
            settings: PolicySettings::default(),
            limits: Limits::default(),
            listener: ListenerKind::Explicit,
            original_dst: None,
            proxy_protocol: ProxyProtocol::Off,
        }
    }
}

impl Driver {
    /// Returns a driver that has been given `pieces` as client reads, up to a close.
    #[must_use]
    pub fn fed(setup: &Setup, pieces: &[&[u8]]) -> Driver {
        let mut d = Driver::new(setup);
        for piece in pieces {
            if d.is_closed() {
                break;
            }
            d.client(piece);
        }
        d
    }

    /// Returns a driver whose session was just accepted.
    #[must_use]
    pub fn new(setup: &Setup) -> Driver {
        let list = Allowlist::compile(setup.entries.iter().map(|e| {
            let (entry, _warning) = Entry::parse(e).expect("a valid entry");
            entry
        }));
        let start = Instant::now();
        let config = GatewayConfig {
            limits: setup.limits,
            clock: WallClock {
                instant: start,
                unix: UnixMillis(START_UNIX_MS),
            },
            proxy_protocol: setup.proxy_protocol,
        };
        let store = PolicyStore::new(Policy::new(list, setup.settings.clone()));
        let mut gateway = Gateway::new(config, store, 0);
        let session = gateway.accept(
            start,
            Accepted {
                client: CLIENT_ADDR.parse().expect("an address"),
                local: "10.0.0.1:3128".parse().expect("an address"),
                listener: setup.listener,
                original_dst: setup.original_dst,
            },
        );
        let mut driver = Driver {
            session,
            now: start,
            policy: gateway.store().load(),
            actions: Vec::new(),
            events: Vec::new(),
            written: [Vec::new(), Vec::new()],
            closed: false,
            fin_sent: false,
            splices: 0,
            splicing: false,
            resolve: None,
            connect: None,
            tickets: Vec::new(),
            upstream_open: false,
            answered: Vec::new(),
            eof: [false, false],
            last_closed_seq: 0,
            last_decided_seq: 0,
        };
        driver.drain();
        driver
    }

    // ---- inputs, each followed by the drain ----

    /// Feeds bytes read from the client.
    pub fn client(&mut self, bytes: &[u8]) {
        self.session.handle_client_data(self.now, bytes);
        self.drain();
    }

    /// Feeds bytes read from the upstream.
    pub fn upstream(&mut self, bytes: &[u8]) {
        self.session.handle_upstream_data(self.now, bytes);
        self.drain();
    }

    /// Writes up to `n` bytes queued for `peer` and reports them; returns how many.
    pub fn write(&mut self, peer: Peer, n: usize) -> usize {
        let pending = self.session.outbound(peer);
        let n = n.min(pending.len());
        if n == 0 {
            return 0;
        }
        self.written[peer as usize].extend_from_slice(&pending[..n]);
        self.session.handle_written(self.now, peer, n);
        self.drain();
        n
    }

    /// Writes everything queued for `peer`; returns the bytes.
    pub fn write_all(&mut self, peer: Peer) -> Vec<u8> {
        let bytes = self.session.outbound(peer).to_vec();
        self.write(peer, bytes.len());
        bytes
    }

    /// Reports end of stream from `peer`.
    pub fn eof(&mut self, peer: Peer) {
        self.eof[peer as usize] = true;
        self.session.handle_eof(self.now, peer);
        self.drain();
    }

    /// Reports a failed read or write on `peer`.
    pub fn io_error(&mut self, peer: Peer) {
        self.eof[peer as usize] = true;
        self.session.handle_io_error(self.now, peer);
        self.drain();
    }

    /// Answers a `Resolve` by ticket.
    pub fn resolved(&mut self, ticket: Ticket, result: Result<&[IpAddr], ResolveError>) {
        if let Ok(ips) = result {
            self.answered.extend_from_slice(ips);
        }
        self.session.handle_resolved(self.now, ticket, result);
        self.drain();
    }

    /// Reports the outcome of a `Connect` by ticket.
    pub fn connected(&mut self, ticket: Ticket, result: Result<(), ConnectError>) {
        let current = self.connect.is_some_and(|(t, _)| t == ticket);
        if current {
            // A runtime reports a connect's outcome once: later reports of this ticket are
            // stale ones, and never open an upstream (which a Disconnect may have closed).
            self.connect = None;
        }
        if current && result.is_ok() {
            self.upstream_open = true;
            self.eof[Peer::Upstream as usize] = false;
        }
        self.session.handle_connected(self.now, ticket, result);
        self.drain();
    }

    /// Moves the clock by `by` and reports timer expiry.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// Moves the clock to the session's next deadline, if any, and reports timer expiry.
    pub fn advance_to_deadline(&mut self) {
        if let Some(at) = self.session.poll_timeout() {
            self.now = self.now.max(at);
        }
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// Reports splice progress.
    pub fn splice_progress(&mut self, from: Peer, bytes: u64) {
        self.session.handle_splice_progress(self.now, from, bytes);
        self.drain();
    }

    /// Reports the end of the splice.
    pub fn splice_end(&mut self, end: SpliceEnd) {
        self.splicing = false;
        self.session.handle_splice_end(self.now, end);
        self.drain();
    }

    /// Starts a graceful shutdown with `grace` to finish.
    pub fn shutdown(&mut self, grace: Duration) {
        self.session.handle_shutdown(self.now, self.now + grace);
        self.drain();
    }

    // ---- what a runtime knows ----

    /// Returns whether `Close` was emitted.
    #[must_use]
    pub fn is_closed(&self) -> bool {
        self.closed
    }

    /// Returns the last `Resolve`'s ticket.
    #[must_use]
    pub fn resolve_ticket(&self) -> Option<Ticket> {
        self.resolve
    }

    /// Returns the last `Connect`'s ticket.
    #[must_use]
    pub fn connect_ticket(&self) -> Option<Ticket> {
        self.connect.map(|(ticket, _)| ticket)
    }

    /// Returns one of the tickets issued so far, by index modulo their number.
    #[must_use]
    pub fn any_ticket(&self, pick: usize) -> Option<Ticket> {
        match self.tickets.len() {
            0 => None,
            n => Some(self.tickets[pick % n]),
        }
    }

    /// Returns whether the runtime holds an open upstream connection.
    #[must_use]
    pub fn upstream_open(&self) -> bool {
        self.upstream_open && !self.closed
    }

    /// Returns whether end of stream was reported for `peer`.
    #[must_use]
    pub fn saw_eof(&self, peer: Peer) -> bool {
        self.eof[peer as usize]
    }

    /// Returns whether a splice is in progress.
    #[must_use]
    pub fn splicing(&self) -> bool {
        self.splicing && !self.closed
    }

    /// Returns the `Closed` events.
    #[must_use]
    pub fn closed_events(&self) -> Vec<&egret_core::Closed> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Closed(c) => Some(c),
                Event::Decided(_) => None,
            })
            .collect()
    }

    /// Returns the `Decided` events.
    #[must_use]
    pub fn decided_events(&self) -> Vec<&egret_core::Decided> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Decided(d) => Some(d),
                Event::Closed(_) => None,
            })
            .collect()
    }

    // ---- the drive contract ----

    /// Drains actions, then events, checking every invariant.
    fn drain(&mut self) {
        let mut batch = Vec::new();
        while let Some(action) = self.session.poll_action() {
            batch.push(action);
        }
        let mut events = Vec::new();
        while let Some(event) = self.session.poll_event() {
            events.push(event);
        }
        assert!(
            !self.closed || (batch.is_empty() && events.is_empty()),
            "emitted after Close: {batch:?} {events:?}"
        );
        // Events first: a `Decided` emitted with a `Connect` precedes it in the session. A
        // `Closed` in the same batch may come after it (a late wake-up runs several timers:
        // a connect timeout starts the next attempt, then the drain deadline closes).
        let closed_before = self.last_closed_seq;
        for event in events {
            self.check_event(&event);
            self.events.push(event);
        }
        for (i, action) in batch.iter().enumerate() {
            self.check_action(action, closed_before);
            if let Action::Close(_) = action {
                assert_eq!(
                    i + 1,
                    batch.len(),
                    "Close is not the last action: {batch:?}"
                );
            }
        }
        assert_eq!(
            self.session.is_finished(),
            self.closed,
            "is_finished disagrees with Close"
        );
        let client_empty = self.session.outbound(Peer::Client).is_empty();
        let upstream_empty = self.session.outbound(Peer::Upstream).is_empty();
        assert!(
            !self.closed || (client_empty && upstream_empty),
            "bytes queued after Close"
        );
        assert!(
            !self.fin_sent || client_empty,
            "bytes queued for the client after Shutdown"
        );
        assert!(
            self.closed || self.session.poll_timeout().is_some(),
            "a live session without a timer: {:?}",
            self.actions.last()
        );
        self.actions.extend(batch);
    }

    fn check_action(&mut self, action: &Action, closed_before: u32) {
        match action {
            Action::Resolve { ticket, name } => {
                let host = Host::parse(name.as_bytes());
                assert_eq!(
                    host,
                    Ok(Host::Name(name.clone())),
                    "Resolve of a name that is not a valid lowercase host: {name:?}"
                );
                if self.policy.settings().mode == Mode::Enforce {
                    let host = Host::Name(name.clone());
                    let lookup = self.policy.allowlist().lookup(&host, 0, |_| true);
                    assert_ne!(
                        lookup,
                        Lookup::NoMatch,
                        "Resolve of a name no entry names: {name}"
                    );
                }
                self.resolve = Some(*ticket);
                self.tickets.push(*ticket);
            }
            Action::Connect { ticket, addr } => {
                self.check_connect(*addr, closed_before);
                self.connect = Some((*ticket, *addr));
                self.tickets.push(*ticket);
                self.upstream_open = false;
            }
            Action::Disconnect => {
                self.upstream_open = false;
                self.eof[Peer::Upstream as usize] = false;
            }
            Action::Shutdown => {
                assert!(!self.fin_sent, "Shutdown twice");
                self.fin_sent = true;
            }
            Action::Splice => {
                assert!(
                    self.session.outbound(Peer::Client).is_empty()
                        && self.session.outbound(Peer::Upstream).is_empty(),
                    "Splice with bytes still queued"
                );
                self.splices += 1;
                assert_eq!(self.splices, 1, "a second Splice");
                self.splicing = true;
            }
            Action::Close(_) => {
                assert!(!self.closed, "Close twice");
                self.closed = true;
            }
        }
    }

    fn check_connect(&self, addr: SocketAddr, closed_before: u32) {
        assert_eq!(
            self.policy.check_destination(addr),
            Ok(()),
            "Connect to an address the policy rejects: {addr}"
        );
        assert!(
            !self.upstream_open,
            "Connect while an upstream is open, without Disconnect"
        );
        let decided = self
            .decided_events()
            .last()
            .map(|d| (*d).clone())
            .expect("Connect without a Decided event");
        assert!(
            decided.seq > closed_before,
            "Connect for a request already closed: {decided:?}"
        );
        assert_eq!(decided.port, addr.port(), "Connect to another port");
        let literal = matches!(decided.host, Host::Ip(ip) if ip == addr.ip());
        assert!(
            literal || self.answered.contains(&addr.ip()),
            "Connect to an address nobody supplied: {addr}"
        );
        match decided.access {
            Access::Allowed | Access::Audited(_) => {}
            Access::Denied(reason) => panic!("Connect after a denial ({reason:?}): {addr}"),
        }
    }

    fn check_event(&mut self, event: &Event) {
        let mode = self.policy.settings().mode;
        match event {
            Event::Decided(d) => {
                assert_eq!(d.session, self.session.id());
                assert!(
                    d.seq > self.last_closed_seq && d.seq > self.last_decided_seq,
                    "Decided out of order: {d:?}"
                );
                self.last_decided_seq = d.seq;
                let verdict = self.policy.decide(&d.host, d.port).verdict;
                match d.access {
                    Access::Allowed => assert_eq!(
                        verdict,
                        Verdict::Allow,
                        "allowed what the policy denies: {d:?}"
                    ),
                    Access::Audited(_) => {
                        assert_eq!(mode, Mode::Audit, "audited in enforce mode: {d:?}");
                    }
                    Access::Denied(reason) => {
                        if mode == Mode::Audit {
                            // Audit mode trials the list; address rules and unreadable
                            // hellos stay enforced.
                            assert!(
                                matches!(
                                    reason,
                                    DenyReason::PrivateAddress(_)
                                        | DenyReason::NoSni
                                        | DenyReason::InvalidHello
                                ),
                                "denied in audit mode: {d:?}"
                            );
                        }
                    }
                }
            }
            Event::Closed(c) => {
                assert_eq!(c.session, self.session.id());
                assert!(c.seq > self.last_closed_seq, "Closed out of order: {c:?}");
                assert!(
                    c.seq >= self.last_decided_seq,
                    "Closed before the Decided of an earlier request: {c:?}"
                );
                self.last_closed_seq = c.seq;
                if let Some(Access::Allowed) = c.access {
                    if let Some(host) = &c.host {
                        // A tunnel's record is decided on the CONNECT target; an SNI inside
                        // it is checked separately and does not change the access.
                        let verdict = self.policy.decide(host, c.port).verdict;
                        assert_eq!(verdict, Verdict::Allow, "allowed record: {c:?}");
                    }
                }
            }
        }
    }
}

/// Returns the exact 403 of DESIGN.md §3, for a gateway whose `Server` is `server`.
#[must_use]
pub fn forbidden(server: &str) -> Vec<u8> {
    error_reply(server, "403 Forbidden", "ERR_ACCESS_DENIED", 0, None)
}

/// Returns an error reply in the Squid shape, with `detail` in `X-Egret-Reason`.
#[must_use]
pub fn error_reply(
    server: &str,
    status: &str,
    error: &str,
    errno: u32,
    detail: Option<&str>,
) -> Vec<u8> {
    let reason = detail.map_or(String::new(), |d| format!("X-Egret-Reason: {d}\r\n"));
    format!(
        "HTTP/1.1 {status}\r\n\
         Server: {server}\r\n\
         Content-Type: text/html;charset=utf-8\r\n\
         Content-Length: {}\r\n\
         X-Squid-Error: {error} {errno}\r\n\
         {reason}\
         Connection: close\r\n\
         \r\n\
         {error}\n",
        error.len() + 1,
    )
    .into_bytes()
}

/// Returns the `Server` header's value in a reply (`egret/<version>`), or `""`.
#[must_use]
pub fn server_of(reply: &[u8]) -> String {
    let text = String::from_utf8_lossy(reply);
    text.split("\r\n")
        .find_map(|line| line.strip_prefix("Server: "))
        .filter(|server| server.starts_with("egret/"))
        .unwrap_or_default()
        .to_owned()
}

/// Returns `events` with the client's byte count zeroed in the records `zero` picks: how many
/// bytes had arrived when a stream was refused depends on how it was split into reads.
#[must_use]
pub fn zero_client_counts(
    events: &[Event],
    zero: impl Fn(&egret_core::Closed) -> bool,
) -> Vec<Event> {
    events
        .iter()
        .cloned()
        .map(|event| match event {
            Event::Closed(mut c) if zero(&c) => {
                c.bytes_from_client = 0;
                Event::Closed(c)
            }
            Event::Closed(_) | Event::Decided(_) => event,
        })
        .collect()
}

/// What a transcript yields: the actions, the events, and the bytes written to each peer.
pub type Outcome = (Vec<Action>, Vec<Event>, [Vec<u8>; 2]);

/// Feeds `bytes` through `transcript` whole and cut into the reads `split` picks, and panics
/// unless both give the same actions, the same bytes written and the same events (the
/// client's byte counts aside).
pub fn same_however_split(
    setup: &Setup,
    bytes: &[u8],
    split: u8,
    transcript: fn(&Setup, &[&[u8]], &[u8]) -> Outcome,
) {
    let whole = transcript(setup, &[bytes], bytes);
    let pieces = super::chunks(bytes, split);
    if pieces.len() == 1 {
        return;
    }
    let split = transcript(setup, &pieces, bytes);
    assert_eq!(whole.0, split.0, "actions differ when split");
    assert_eq!(whole.2, split.2, "bytes written differ when split");
    assert_eq!(
        zero_client_counts(&whole.1, |_| true),
        zero_client_counts(&split.1, |_| true),
        "events differ when split"
    );
}
