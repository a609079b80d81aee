//! A transcript harness for one explicit-listener session: explicit bytes in, fake time, and
//! every action and event recorded after each handler, exactly as the drive contract says.
//!
//! Each handler call is followed by a drain of `poll_action()` then `poll_event()`, and by
//! checks of the invariants every runtime relies on: `Close` is the last action and comes at
//! most once, nothing is emitted after it, `Splice` comes only when both outbound buffers are
//! empty, and every `Connect` targets an address the policy admits.

// Each test crate uses part of the harness.
#![allow(dead_code)]

pub(crate) mod hello;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings, PolicyStore};
use egret_core::{
    Accepted, Action, Close, Closed, ConnectError, Decided, Event, Gateway, GatewayConfig, Limits,
    ListenerKind, Peer, ResolveError, Session, SpliceEnd, Ticket, UnixMillis, WallClock,
};

/// The client's address in every harness session.
pub(crate) const CLIENT_ADDR: &str = "10.0.0.5:40000";
/// Wall time at the harness's start instant.
pub(crate) const START_UNIX_MS: u64 = 1_700_000_000_000;

/// One session driven by hand, with everything it emitted.
#[derive(Debug)]
pub(crate) struct Harness {
    pub(crate) session: Session,
    /// The fake clock.
    pub(crate) now: Instant,
    /// When the session was accepted.
    pub(crate) start: Instant,
    gateway: Gateway,
    policy: Arc<Policy>,
    /// Every action emitted, in order.
    pub(crate) actions: Vec<Action>,
    /// Every event emitted, in order.
    pub(crate) events: Vec<Event>,
    actions_taken: usize,
    events_taken: usize,
    resolve_ticket: Option<Ticket>,
    connect_ticket: Option<Ticket>,
    closed: bool,
}

impl Harness {
    /// Returns a harness whose policy admits `entries` with default settings and limits.
    pub(crate) fn new(entries: &[&str]) -> Harness {
        Harness::build(entries, settings(), Limits::default())
    }

    /// Returns a harness with the given policy settings and default limits.
    pub(crate) fn with_settings(entries: &[&str], settings: PolicySettings) -> Harness {
        Harness::build(entries, settings, Limits::default())
    }

    /// Returns a harness with default policy settings and the given limits.
    pub(crate) fn with_limits(entries: &[&str], limits: Limits) -> Harness {
        Harness::build(entries, settings(), limits)
    }

    /// Returns a harness on a listener of `kind` with an original destination, and accepts
    /// its one session.
    pub(crate) fn transparent(
        entries: &[&str],
        settings: PolicySettings,
        kind: ListenerKind,
        original_dst: SocketAddr,
    ) -> Harness {
        let list = Allowlist::compile(entries.iter().map(|e| {
            let (entry, _warning) = Entry::parse(e).expect("valid entry");
            entry
        }));
        Harness::accepting(
            Policy::new(list, settings),
            Limits::default(),
            kind,
            Some(original_dst),
        )
    }

    /// Returns a harness with everything chosen, and accepts its one session.
    pub(crate) fn build(entries: &[&str], settings: PolicySettings, limits: Limits) -> Harness {
        let list = Allowlist::compile(entries.iter().map(|e| {
            let (entry, _warning) = Entry::parse(e).expect("valid entry");
            entry
        }));
        Harness::from_policy(Policy::new(list, settings), limits)
    }

    /// Returns a harness deciding with `policy`.
    pub(crate) fn from_policy(policy: Policy, limits: Limits) -> Harness {
        Harness::accepting(policy, limits, ListenerKind::Explicit, None)
    }

    /// Returns a harness that accepted its one session on a listener of `kind`.
    pub(crate) fn accepting(
        policy: Policy,
        limits: Limits,
        listener: ListenerKind,
        original_dst: Option<SocketAddr>,
    ) -> Harness {
        Harness::full(
            policy,
            limits,
            listener,
            original_dst,
            egret_core::ProxyProtocol::Off,
        )
    }

    /// Returns a harness whose explicit listener expects PROXY protocol headers as told.
    pub(crate) fn with_proxy_protocol(
        policy: Policy,
        proxy_protocol: egret_core::ProxyProtocol,
    ) -> Harness {
        Harness::full(
            policy,
            Limits::default(),
            ListenerKind::Explicit,
            None,
            proxy_protocol,
        )
    }

    /// Returns a harness with every choice made, and accepts its one session.
    pub(crate) fn full(
        policy: Policy,
        limits: Limits,
        listener: ListenerKind,
        original_dst: Option<SocketAddr>,
        proxy_protocol: egret_core::ProxyProtocol,
    ) -> Harness {
        let start = Instant::now();
        let clock = WallClock {
            instant: start,
            unix: UnixMillis(START_UNIX_MS),
        };
        let store = PolicyStore::new(policy);
        let config = GatewayConfig {
            limits,
            clock,
            proxy_protocol,
        };
        let mut gateway = Gateway::new(config, store, 0);
        let session = gateway.accept(
            start,
            Accepted {
                client: CLIENT_ADDR.parse().expect("address"),
                local: "10.0.0.1:3128".parse().expect("address"),
                listener,
                original_dst,
            },
        );
        let policy = gateway.store().load();
        let mut harness = Harness {
            session,
            now: start,
            start,
            gateway,
            policy,
            actions: Vec::new(),
            events: Vec::new(),
            actions_taken: 0,
            events_taken: 0,
            resolve_ticket: None,
            connect_ticket: None,
            closed: false,
        };
        harness.drain();
        harness
    }

    // ---- inputs ----

    /// Feeds bytes read from the client.
    pub(crate) fn client(&mut self, bytes: &[u8]) {
        self.session.handle_client_data(self.now, bytes);
        self.drain();
    }

    /// Feeds bytes read from the upstream.
    pub(crate) fn upstream(&mut self, bytes: &[u8]) {
        self.session.handle_upstream_data(self.now, bytes);
        self.drain();
    }

    /// Takes everything queued for the client, reports it written, and returns it.
    pub(crate) fn written_to_client(&mut self) -> Vec<u8> {
        self.write_all(Peer::Client)
    }

    /// Takes everything queued for the upstream, reports it written, and returns it.
    pub(crate) fn written_to_upstream(&mut self) -> Vec<u8> {
        self.write_all(Peer::Upstream)
    }

    /// Reports the first `n` bytes queued for `peer` written, and returns them.
    pub(crate) fn write_some(&mut self, peer: Peer, n: usize) -> Vec<u8> {
        let bytes = self.session.outbound(peer)[..n].to_vec();
        self.session.handle_written(self.now, peer, n);
        self.drain();
        bytes
    }

    /// Reports end of stream from `peer`.
    pub(crate) fn eof(&mut self, peer: Peer) {
        self.session.handle_eof(self.now, peer);
        self.drain();
    }

    /// Reports a failed read or write on `peer`.
    pub(crate) fn io_error(&mut self, peer: Peer) {
        self.session.handle_io_error(self.now, peer);
        self.drain();
    }

    /// Answers the last `Resolve` with `ips`.
    pub(crate) fn resolve(&mut self, ips: &[&str]) {
        let ticket = self.resolve_ticket();
        let ips: Vec<IpAddr> = ips.iter().map(|ip| ip.parse().expect("ip")).collect();
        self.resolve_with(ticket, Ok(&ips));
    }

    /// Answers the last `Resolve` with an error.
    pub(crate) fn resolve_err(&mut self, error: ResolveError) {
        let ticket = self.resolve_ticket();
        self.resolve_with(ticket, Err(error));
    }

    /// Answers a `Resolve` by ticket, current or stale.
    pub(crate) fn resolve_with(&mut self, ticket: Ticket, result: Result<&[IpAddr], ResolveError>) {
        self.session.handle_resolved(self.now, ticket, result);
        self.drain();
    }

    /// Reports the last `Connect` successful.
    pub(crate) fn connect_ok(&mut self) {
        let ticket = self.connect_ticket();
        self.connect_with(ticket, Ok(()));
    }

    /// Reports the last `Connect` failed.
    pub(crate) fn connect_err(&mut self, error: ConnectError) {
        let ticket = self.connect_ticket();
        self.connect_with(ticket, Err(error));
    }

    /// Reports the outcome of a `Connect` by ticket, current or stale.
    pub(crate) fn connect_with(&mut self, ticket: Ticket, result: Result<(), ConnectError>) {
        self.session.handle_connected(self.now, ticket, result);
        self.drain();
    }

    /// Moves the clock forward by `by`, then reports timer expiry.
    pub(crate) fn advance(&mut self, by: Duration) {
        self.now += by;
        self.session.handle_timeout(self.now);
        self.drain();
    }

    /// Moves the clock forward by `by` without waking the session.
    pub(crate) fn sleep(&mut self, by: Duration) {
        self.now += by;
    }

    /// Reports splice progress.
    pub(crate) fn splice_progress(&mut self, from: Peer, bytes: u64) {
        self.session.handle_splice_progress(self.now, from, bytes);
        self.drain();
    }

    /// Reports the end of the splice.
    pub(crate) fn splice_end(&mut self, end: SpliceEnd) {
        self.session.handle_splice_end(self.now, end);
        self.drain();
    }

    /// Starts a graceful shutdown whose deadline is `grace` from now.
    pub(crate) fn shutdown(&mut self, grace: Duration) {
        self.session.handle_shutdown(self.now, self.now + grace);
        self.drain();
    }

    // ---- compound steps ----

    /// Answers the last `Resolve` with `ip` and the `Connect` that follows with success.
    pub(crate) fn open(&mut self, ip: &str) {
        self.resolve(&[ip]);
        self.connect_ok();
    }

    // ---- observations ----

    /// Returns the actions emitted since the last call, as transcript lines.
    pub(crate) fn take_actions(&mut self) -> Vec<String> {
        let new = self.actions[self.actions_taken..]
            .iter()
            .map(describe)
            .collect();
        self.actions_taken = self.actions.len();
        new
    }

    /// Returns the events emitted since the last call.
    pub(crate) fn take_events(&mut self) -> Vec<Event> {
        let new = self.events[self.events_taken..].to_vec();
        self.events_taken = self.events.len();
        new
    }

    /// Returns every `Decided` event so far.
    pub(crate) fn decided(&self) -> Vec<Decided> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Decided(d) => Some(d.clone()),
                Event::Closed(_) => None,
            })
            .collect()
    }

    /// Returns every `Closed` event so far.
    pub(crate) fn closed(&self) -> Vec<Closed> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Closed(c) => Some(c.clone()),
                Event::Decided(_) => None,
            })
            .collect()
    }

    /// Returns the only `Closed` event, failing when there is not exactly one.
    pub(crate) fn only_closed(&self) -> Closed {
        let closed = self.closed();
        assert_eq!(closed.len(), 1, "Closed events: {closed:#?}");
        closed.into_iter().next().expect("one")
    }

    /// Returns the only `Decided` event, failing when there is not exactly one.
    pub(crate) fn only_decided(&self) -> Decided {
        let decided = self.decided();
        assert_eq!(decided.len(), 1, "Decided events: {decided:#?}");
        decided.into_iter().next().expect("one")
    }

    /// Returns the bytes queued for `peer` without writing them.
    pub(crate) fn pending(&self, peer: Peer) -> Vec<u8> {
        self.session.outbound(peer).to_vec()
    }

    /// Returns whether `Close` was emitted.
    pub(crate) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Returns the ticket of the last `Resolve`.
    pub(crate) fn resolve_ticket(&self) -> Ticket {
        self.resolve_ticket.expect("a Resolve was emitted")
    }

    /// Returns the ticket of the last `Connect`.
    pub(crate) fn connect_ticket(&self) -> Ticket {
        self.connect_ticket.expect("a Connect was emitted")
    }

    /// Returns the time elapsed since accept.
    pub(crate) fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// Returns the wall time the harness's clock shows now.
    pub(crate) fn wall_now(&self) -> UnixMillis {
        let millis = u64::try_from(self.elapsed().as_millis()).expect("small");
        UnixMillis(START_UNIX_MS + millis)
    }

    /// Returns the policy sessions decide with.
    pub(crate) fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Returns the gateway.
    pub(crate) fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    // ---- the drive contract ----

    fn write_all(&mut self, peer: Peer) -> Vec<u8> {
        let bytes = self.session.outbound(peer).to_vec();
        if !bytes.is_empty() {
            self.session.handle_written(self.now, peer, bytes.len());
            self.drain();
        }
        bytes
    }

    /// Drains actions, then events, checking the invariants of the drive contract.
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
        for (i, action) in batch.iter().enumerate() {
            match action {
                Action::Resolve { ticket, .. } => self.resolve_ticket = Some(*ticket),
                Action::Connect { ticket, addr } => {
                    assert_eq!(
                        self.policy.check_addr(addr.ip()),
                        Ok(()),
                        "Connect to an address the policy rejects: {addr}"
                    );
                    self.connect_ticket = Some(*ticket);
                }
                Action::Splice => {
                    assert!(
                        self.session.outbound(Peer::Client).is_empty()
                            && self.session.outbound(Peer::Upstream).is_empty(),
                        "Splice with bytes still queued"
                    );
                }
                Action::Close(_) => {
                    assert_eq!(
                        i + 1,
                        batch.len(),
                        "Close is not the last action: {batch:?}"
                    );
                    self.closed = true;
                }
                Action::Disconnect | Action::Shutdown => {}
            }
        }
        assert_eq!(
            self.session.is_finished(),
            self.closed,
            "is_finished disagrees with Close"
        );
        assert!(
            !self.closed
                || (self.session.outbound(Peer::Client).is_empty()
                    && self.session.outbound(Peer::Upstream).is_empty()),
            "bytes queued after Close"
        );
        self.actions.extend(batch);
        self.events.extend(events);
    }
}

/// Returns an action as a transcript line; tickets are left out.
pub(crate) fn describe(action: &Action) -> String {
    match action {
        Action::Resolve { name, .. } => format!("resolve {name}"),
        Action::Connect { addr, .. } => format!("connect {addr}"),
        Action::Disconnect => "disconnect".to_owned(),
        Action::Shutdown => "shutdown".to_owned(),
        Action::Splice => "splice".to_owned(),
        Action::Close(Close::Graceful) => "close".to_owned(),
        Action::Close(Close::Reset) => "reset".to_owned(),
    }
}

/// Returns the exact 403 of DESIGN.md §3.
pub(crate) fn forbidden() -> Vec<u8> {
    format!(
        "HTTP/1.1 403 Forbidden\r\n\
         Server: egret/{}\r\n\
         Content-Type: text/html;charset=utf-8\r\n\
         Content-Length: 18\r\n\
         X-Squid-Error: ERR_ACCESS_DENIED 0\r\n\
         Connection: close\r\n\
         \r\n\
         ERR_ACCESS_DENIED\n",
        env!("CARGO_PKG_VERSION")
    )
    .into_bytes()
}

/// Returns an error reply in the Squid shape: `status` is the status line's code and phrase,
/// `error` the Squid error name, `detail` the `X-Egret-Reason`.
pub(crate) fn error_reply(status: &str, error: &str, errno: u32, detail: Option<&str>) -> Vec<u8> {
    let reason = detail.map_or(String::new(), |d| format!("X-Egret-Reason: {d}\r\n"));
    format!(
        "HTTP/1.1 {status}\r\n\
         Server: egret/{}\r\n\
         Content-Type: text/html;charset=utf-8\r\n\
         Content-Length: {}\r\n\
         X-Squid-Error: {error} {errno}\r\n\
         {reason}\
         Connection: close\r\n\
         \r\n\
         {error}\n",
        env!("CARGO_PKG_VERSION"),
        error.len() + 1,
    )
    .into_bytes()
}

/// Returns a 400 with its reason.
pub(crate) fn bad_request(detail: &str) -> Vec<u8> {
    error_reply("400 Bad Request", "ERR_INVALID_REQ", 0, Some(detail))
}

/// Returns `addr` parsed.
pub(crate) fn sock(addr: &str) -> SocketAddr {
    addr.parse().expect("socket address")
}

/// Returns bytes as text for assertion messages, escaping what is not printable.
pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Returns the default policy settings without tunnel inspection: most tunnel transcripts are
/// about the splice hand-off; inspection has tests of its own.
pub(crate) fn settings() -> PolicySettings {
    PolicySettings {
        inspect_tunnels: false,
        ..PolicySettings::default()
    }
}
