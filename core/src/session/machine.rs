//! Every state transition of a session, in one file.
//!
//! ```text
//!                 accept (header timer)
//!                    │
//!      ┌──────────► AwaitRequest ──── bad head 400/431, 408, denied 403 ────────┐
//!      │   keep-     │ head parsed, name allowed                                 │
//!      │   alive     ├───────── same destination, kept-alive upstream ───┐       │
//!      │             ▼                                                   │       │
//!      │         Resolving ─── NXDOMAIN/timeout 503, only private 403 ───┼───────┤
//!      │             │ checked addresses                                 │       │
//!      │             ▼                                                   │       │
//!      │         Connecting ── next address … all failed 503 / 504 ──────┼───────┤
//!      │             │ connected                                         │       │
//!      │     CONNECT ├──► TunnelOpening ──► Tunnel ──► Finished          │       │
//!      │             ▼     (200 queued)     (Splice)                     │       ▼
//!      └──────── Exchange ◄──────────────────────────────────────────────┘    Closing
//!         response    │ close after (HTTP/1.0, Connection: close,            (reply flushed,
//!         complete    │ read-to-close body, shutdown)                         FIN, linger)
//!                     └───────────────────────────────────────────────────────► │
//!                                                                               ▼
//!                                                                            Finished
//! ```
//!
//! | state          | reads              | leaves on                                   |
//! |----------------|--------------------|---------------------------------------------|
//! | AwaitRequest   | client (head)      | head parsed / rejected, EOF, idle, shutdown |
//! | Resolving      | —                  | answer, resolve timer                       |
//! | Connecting     | —                  | connected, refused, connect timer           |
//! | Exchange       | client body, upstream response | response complete, errors, idle |
//! | TunnelOpening  | —                  | both outbound buffers empty → Splice        |
//! | Tunnel         | (runtime splices)  | splice end, idle, drain deadline            |
//! | Closing        | client (discarded) | client EOF, linger timer                    |
//! | Finished       | —                  | —                                           |
//!
//! Errors become replies while nothing of a response has reached the client. Once something
//! has, a reply is impossible (the client could not tell it from the response): a protocol
//! violation resets the connection, and a response cut short by the upstream is flushed as far
//! as it got and closed, which its framing lets the client detect.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use smallvec::{SmallVec, smallvec};

use super::Interest;
use super::timer::Timer;
use super::{Action, Close, ConnectError, Peer, ResolveError, Session, SpliceEnd, Ticket};
use crate::event::{Access, Closed, Decided, Event, Reason};
use crate::gateway::ListenerKind;
use crate::host::Host;
use crate::http::body::{BodyError, BodyReader};
use crate::http::request::{self, Form, Framing, Kind, Rejection, Request};
use crate::http::response::{self, Body};
use crate::http::{find_head_end, has_bare_line_ending, is_token_byte, push_header};
use crate::policy::{DenyReason, EchPolicy, Mode, Policy, TlsDeny, Verdict};
use crate::proxy::{self, ProxyProtocol, ProxyStatus};
use crate::reply::{CONNECT_ESTABLISHED, Reply};
use crate::tls::{self, ACCESS_DENIED_ALERT, Hello, HelloStatus};

/// Above this many bytes waiting for a peer, the session stops reading from the other one.
const HIGH_WATER: usize = 64 * 1024;
/// The most addresses tried for one destination.
const MAX_CANDIDATES: usize = 8;

const CLIENT: usize = Peer::Client as usize;
const UPSTREAM: usize = Peer::Upstream as usize;

/// Where a session is in its life; see the module diagram.
#[derive(Clone, Debug)]
pub(crate) enum State {
    /// Reading a request head (the first, or the next on a kept-alive connection).
    AwaitRequest,
    /// Reading a PROXY protocol header (`proxy_protocol` optional or required).
    AwaitProxy,
    /// Reading an intercepted ClientHello (transparent TLS).
    AwaitHello,
    /// Waiting for DNS.
    Resolving { ticket: Ticket },
    /// Trying checked addresses in order.
    Connecting {
        ticket: Ticket,
        candidates: SmallVec<[SocketAddr; 4]>,
        /// The index of the address being tried.
        current: usize,
    },
    /// Forwarding one HTTP request and its response.
    Exchange,
    /// The CONNECT reply is queued; the tunnel's first bytes are awaited: a ClientHello must
    /// name an allowed host too, anything else (or an upstream that speaks first) is spliced.
    Inspecting,
    /// The stream's first bytes are queued for the upstream; splice once both outbound
    /// buffers are empty.
    TunnelOpening,
    /// Spliced by the runtime.
    Tunnel,
    /// An error reply or the last response is being flushed; then FIN, then lingering reads.
    Closing { fin_sent: bool },
    /// Closed.
    Finished,
}

/// The upstream connection and what it was opened for.
#[derive(Clone, Debug)]
pub(crate) struct UpstreamLink {
    host: Host,
    port: u16,
    addr: SocketAddr,
}

/// Progress of a response.
#[derive(Clone, Debug)]
enum ResponsePhase {
    AwaitHead,
    Body(BodyReader),
    Done,
}

/// The request or tunnel in progress: what the access log needs, and forwarding state.
#[derive(Debug)]
pub(crate) struct Txn {
    seq: u32,
    started: Instant,
    method: Cow<'static, str>,
    url: String,
    host: Option<Host>,
    port: u16,
    kind: Kind,
    access: Option<Access>,
    /// A `Decided` event was emitted for this request.
    decided: bool,
    rule: Option<Arc<str>>,
    /// The policy that decided; addresses are checked against the same one.
    policy: Option<Arc<Policy>>,
    status: u16,
    content_type: Option<Box<str>>,
    bytes_to_client: u64,
    bytes_from_client: u64,
    upstream_addr: Option<SocketAddr>,
    version: u8,
    keep_alive: bool,
    is_head: bool,
    framing: Framing,
    /// The head for the upstream, kept while a retry on a fresh connection is possible.
    forward_head: Vec<u8>,
    /// The request rides a reused connection and has no body: if that connection turns out
    /// to be closed before any response byte, it is sent again on a new one.
    retryable: bool,
    request_body: BodyReader,
    response: ResponsePhase,
    /// Part of a final response has been queued for the client.
    response_started: bool,
    /// The client connection closes after this exchange.
    close_after: bool,
    /// The upstream connection may carry the next request.
    upstream_reusable: bool,
    /// The SNI of the ClientHello judged, if any.
    sni: Option<Host>,
    /// The ClientHello carried Encrypted Client Hello.
    ech: bool,
    /// The original destination is not among the name's addresses.
    dst_mismatch: bool,
}

impl Txn {
    /// Returns the record of request number `seq`, begun at `started`, with nothing decided
    /// yet; it closes the connection when it ends unless told otherwise.
    fn new(seq: u32, started: Instant, method: Cow<'static, str>, url: String) -> Txn {
        Txn {
            seq,
            started,
            method,
            url,
            host: None,
            port: 0,
            kind: Kind::Forward,
            access: None,
            decided: false,
            rule: None,
            policy: None,
            status: 0,
            content_type: None,
            bytes_to_client: 0,
            bytes_from_client: 0,
            upstream_addr: None,
            version: 1,
            keep_alive: false,
            is_head: false,
            framing: Framing::None,
            forward_head: Vec::new(),
            retryable: false,
            request_body: BodyReader::Done,
            response: ResponsePhase::AwaitHead,
            response_started: false,
            close_after: true,
            upstream_reusable: false,
            sni: None,
            ech: false,
            dst_mismatch: false,
        }
    }
}

impl Session {
    pub(super) fn on_accept(&mut self, now: Instant) {
        self.timers
            .set(Timer::Header, now + self.config.limits.header_timeout);
        if self.accepted.listener == ListenerKind::TransparentTls {
            // The connection exists only to carry its hello: its record starts now.
            self.request_started = Some(now);
        }
        self.state = match self.config.proxy_protocol {
            ProxyProtocol::Off => self.listener_state(),
            ProxyProtocol::Optional | ProxyProtocol::Required => State::AwaitProxy,
        };
    }

    /// Returns the state a connection of this listener starts in, after any PROXY header.
    fn listener_state(&self) -> State {
        match self.accepted.listener {
            ListenerKind::Explicit | ListenerKind::TransparentHttp => State::AwaitRequest,
            ListenerKind::TransparentTls => State::AwaitHello,
        }
    }

    pub(super) fn derive_interest(&self) -> Interest {
        let limits = &self.config.limits;
        let read_client = !self.client_eof
            && match &self.state {
                State::AwaitRequest | State::AwaitProxy | State::AwaitHello | State::Inspecting => {
                    self.inbox.len() <= limits.max_header_bytes
                }
                State::Exchange => {
                    self.txn.as_ref().is_some_and(|t| !t.request_body.is_done())
                        && self.out[UPSTREAM].len() < HIGH_WATER
                }
                State::Closing { .. } => true,
                State::Resolving { .. }
                | State::Connecting { .. }
                | State::TunnelOpening
                | State::Tunnel
                | State::Finished => false,
            };
        let read_upstream = match &self.state {
            State::AwaitRequest => self.upstream.is_some(),
            State::Exchange => self.out[CLIENT].len() < HIGH_WATER,
            // An upstream that speaks first is not carrying TLS.
            State::Inspecting => self.inbox.is_empty(),
            State::AwaitProxy
            | State::AwaitHello
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::TunnelOpening
            | State::Tunnel
            | State::Closing { .. }
            | State::Finished => false,
        };
        Interest {
            read_client,
            read_upstream,
        }
    }

    pub(super) fn on_client_data(&mut self, now: Instant, data: &[u8]) {
        match self.state {
            State::AwaitRequest => {
                self.inbox.extend_from_slice(data);
                self.advance_request(now);
            }
            State::AwaitProxy => {
                self.inbox.extend_from_slice(data);
                self.advance_proxy(now);
            }
            State::AwaitHello => {
                self.inbox.extend_from_slice(data);
                self.advance_hello(now);
            }
            State::Inspecting => {
                self.inbox.extend_from_slice(data);
                self.advance_inspection(now);
            }
            State::Exchange => self.forward_request_body(now, data),
            State::Resolving { .. } | State::Connecting { .. } => {
                // Held until the upstream is open: a body, pipelined bytes, or the start of a
                // tunnel's stream.
                self.inbox.extend_from_slice(data);
            }
            State::TunnelOpening => {
                self.out[UPSTREAM].push(data);
                if let Some(txn) = self.txn.as_mut() {
                    txn.bytes_from_client += data.len() as u64;
                }
            }
            // Lingering close: read and discard so the reply is not lost to a reset.
            State::Closing { .. } | State::Tunnel | State::Finished => {}
        }
    }

    pub(super) fn on_upstream_data(&mut self, now: Instant, data: &[u8]) {
        match self.state {
            State::Exchange => self.on_response_data(now, data),
            // A kept-alive upstream that speaks out of turn cannot be trusted with a request.
            State::AwaitRequest => self.drop_upstream(),
            State::Inspecting => {
                // A server-first protocol (SSH, SMTP): not TLS, nothing to inspect.
                self.out[CLIENT].push(data);
                if let Some(txn) = self.txn.as_mut() {
                    txn.bytes_to_client += data.len() as u64;
                }
                self.end_inspection(now);
            }
            State::TunnelOpening => {
                self.out[CLIENT].push(data);
                if let Some(txn) = self.txn.as_mut() {
                    txn.bytes_to_client += data.len() as u64;
                }
            }
            State::AwaitProxy
            | State::AwaitHello
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::Tunnel
            | State::Closing { .. }
            | State::Finished => {}
        }
    }

    pub(super) fn on_written(&mut self, now: Instant) {
        match self.state {
            State::TunnelOpening => self.maybe_splice(now),
            State::Closing { fin_sent: false } => self.maybe_fin(now),
            State::Exchange => self.touch(now),
            State::AwaitRequest
            | State::AwaitProxy
            | State::AwaitHello
            | State::Inspecting
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::Tunnel
            | State::Closing { fin_sent: true }
            | State::Finished => {}
        }
    }

    pub(super) fn on_eof(&mut self, now: Instant, peer: Peer) {
        match peer {
            Peer::Client => self.on_client_eof(now),
            Peer::Upstream => self.on_upstream_gone(now),
        }
    }

    pub(super) fn on_io_error(&mut self, now: Instant, peer: Peer) {
        match peer {
            Peer::Client => {
                self.client_eof = true;
                self.abort(now, Reason::ClientClosed, Some("client_reset"));
            }
            Peer::Upstream => self.on_upstream_gone(now),
        }
    }

    pub(super) fn on_resolved(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: Result<&[IpAddr], ResolveError>,
    ) {
        let State::Resolving { ticket: expected } = self.state else {
            return;
        };
        if expected != ticket {
            return;
        }
        self.timers.clear(Timer::Resolve);
        match result {
            Ok([]) | Err(ResolveError::NotFound) => {
                self.fail(now, Reply::DnsFail, Reason::DnsFailed, Some("nxdomain"));
            }
            Err(ResolveError::Failed) => {
                self.fail(
                    now,
                    Reply::DnsFail,
                    Reason::DnsFailed,
                    Some("resolver_error"),
                );
            }
            Ok(addrs) => self.connect_checked(now, addrs),
        }
    }

    pub(super) fn on_connected(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: Result<(), ConnectError>,
    ) {
        let State::Connecting {
            ticket: expected,
            ref candidates,
            current,
        } = self.state
        else {
            return;
        };
        if expected != ticket {
            return;
        }
        self.timers.clear(Timer::Connect);
        let addr = candidates[current];
        match result {
            Ok(()) => {
                let Some(txn) = self.txn.as_mut() else {
                    return self.close(Close::Reset);
                };
                let (Some(host), port) = (txn.host.clone(), txn.port) else {
                    return self.close(Close::Reset);
                };
                txn.upstream_addr = Some(addr);
                self.upstream = Some(UpstreamLink { host, port, addr });
                match txn.kind {
                    Kind::Connect => self.open_tunnel(now),
                    Kind::Forward => self.begin_exchange(now),
                    Kind::Passthrough => {
                        txn.status = 200;
                        self.end_inspection(now);
                    }
                }
            }
            Err(error) => {
                let detail = match error {
                    ConnectError::Refused => "connection_refused",
                    ConnectError::Unreachable => "unreachable",
                    ConnectError::Other => "connect_error",
                };
                self.next_attempt(now, Reply::ConnectFail, Reason::ConnectFailed, detail);
            }
        }
    }

    pub(super) fn on_splice_progress(&mut self, now: Instant, from: Peer, bytes: u64) {
        if !matches!(self.state, State::Tunnel) {
            return;
        }
        if let Some(txn) = self.txn.as_mut() {
            match from {
                Peer::Client => txn.bytes_from_client += bytes,
                Peer::Upstream => txn.bytes_to_client += bytes,
            }
        }
        self.touch(now);
    }

    pub(super) fn on_splice_end(&mut self, now: Instant, end: SpliceEnd) {
        if !matches!(self.state, State::Tunnel) {
            return;
        }
        match end {
            SpliceEnd::Finished => {
                self.finish_txn(now, Reason::Completed, None);
                self.close(Close::Graceful);
            }
            SpliceEnd::Failed(Peer::Client) => {
                self.abort(now, Reason::ClientClosed, Some("client_reset"));
            }
            SpliceEnd::Failed(Peer::Upstream) => {
                self.abort(now, Reason::UpstreamClosed, Some("upstream_reset"));
            }
        }
    }

    pub(super) fn on_timer(&mut self, now: Instant, timer: Timer) {
        match timer {
            Timer::Header => match self.state {
                State::AwaitRequest => {
                    self.open_error_txn(now, "error:request-timeout");
                    self.fail(now, Reply::RequestTimeout, Reason::HeaderTimeout, None);
                }
                State::AwaitProxy => self.refuse_proxy(now, "proxy_header_timeout"),
                State::AwaitHello => {
                    self.open_hello_txn(now, None);
                    self.deny_tls(now, DenyReason::InvalidHello, Some("hello_timeout"));
                }
                State::Inspecting => {
                    self.deny_tls(now, DenyReason::InvalidHello, Some("hello_timeout"));
                }
                State::Resolving { .. }
                | State::Connecting { .. }
                | State::Exchange
                | State::TunnelOpening
                | State::Tunnel
                | State::Closing { .. }
                | State::Finished => {}
            },
            Timer::Idle => self.on_idle(now),
            Timer::Resolve => {
                if matches!(self.state, State::Resolving { .. }) {
                    self.fail(now, Reply::DnsFail, Reason::DnsFailed, Some("dns_timeout"));
                }
            }
            Timer::Connect => {
                if matches!(self.state, State::Connecting { .. }) {
                    self.next_attempt(
                        now,
                        Reply::ConnectTimeout,
                        Reason::ConnectTimeout,
                        "connect_timeout",
                    );
                }
            }
            Timer::Linger => {
                if matches!(self.state, State::Closing { .. }) {
                    self.close(Close::Graceful);
                }
            }
            Timer::Drain => {
                self.finish_txn(now, Reason::Shutdown, None);
                self.close(Close::Graceful);
            }
        }
    }

    pub(super) fn on_shutdown(&mut self, now: Instant, deadline: Instant) {
        if matches!(self.state, State::Finished) {
            return;
        }
        self.draining = true;
        self.timers.set(Timer::Drain, deadline);
        if matches!(self.state, State::AwaitRequest) && self.request_started.is_none() {
            self.start_closing(now);
        }
    }

    // ---- PROXY protocol ----

    fn advance_proxy(&mut self, now: Instant) {
        match proxy::read(&self.inbox, self.config.limits.max_header_bytes) {
            ProxyStatus::Partial => {}
            ProxyStatus::Absent if self.config.proxy_protocol == ProxyProtocol::Required => {
                self.refuse_proxy(now, "proxy_header_missing");
            }
            ProxyStatus::Absent => self.enter_listener_state(now),
            ProxyStatus::Invalid(detail) => self.refuse_proxy(now, detail),
            ProxyStatus::Header(header) => {
                self.inbox.drain(..header.len);
                // A LOCAL command is the load balancer checking that something listens.
                if header.local {
                    return self.close(Close::Graceful);
                }
                if let Some(source) = header.source {
                    self.client = source;
                }
                self.vpc_endpoint = header.vpc_endpoint;
                self.enter_listener_state(now);
            }
        }
    }

    /// Starts reading what the listener expects, with the bytes that followed the header.
    fn enter_listener_state(&mut self, now: Instant) {
        self.state = self.listener_state();
        if self.inbox.is_empty() {
            return;
        }
        match self.state {
            State::AwaitHello => self.advance_hello(now),
            State::AwaitRequest
            | State::AwaitProxy
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::Exchange
            | State::Inspecting
            | State::TunnelOpening
            | State::Tunnel
            | State::Closing { .. }
            | State::Finished => self.advance_request(now),
        }
    }

    /// Closes a connection whose PROXY header is missing (when required), broken or slow.
    fn refuse_proxy(&mut self, now: Instant, detail: &'static str) {
        self.open_error_txn(now, "error:invalid-proxy-header");
        if let Some(txn) = self.txn.as_mut() {
            txn.bytes_from_client = self.inbox.len() as u64;
        }
        self.abort(now, Reason::InvalidRequest, Some(detail));
    }

    // ---- requests ----

    fn advance_request(&mut self, now: Instant) {
        // RFC 9112 §2.2: empty lines before a request line are ignored.
        let blank = self
            .inbox
            .chunks(2)
            .take_while(|pair| *pair == b"\r\n")
            .count()
            * 2;
        if blank > 0 {
            self.inbox.drain(..blank);
        }
        let Some(&first) = self.inbox.first() else {
            return;
        };
        // RFC 9112 §3: a request line starts with a method token. Anything else (a TLS
        // ClientHello sent to the proxy port, binary junk) is refused at once rather than
        // held until the header timeout; CR and LF are judged as line endings below.
        if !is_token_byte(first) && first != b'\r' && first != b'\n' {
            return self.reject_head(now, Rejection::Invalid("invalid_request_line"));
        }
        if self.request_started.is_none() {
            self.request_started = Some(now);
            self.timers.clear(Timer::Idle);
            if !self.timers.is_set(Timer::Header) {
                self.timers
                    .set(Timer::Header, now + self.config.limits.header_timeout);
            }
        }
        let max = self.config.limits.max_header_bytes;
        let Some(end) = find_head_end(&self.inbox, self.inbox_searched) else {
            if self.inbox.len() > max {
                return self.reject_oversized_head(now, self.inbox_searched);
            }
            // A head with bare LFs would never end with CRLF CRLF: refuse it now rather than
            // at the header timeout.
            if has_bare_line_ending(&self.inbox, self.inbox_searched.saturating_sub(1)) {
                return self.reject_head(now, Rejection::Invalid("bare_cr_or_lf"));
            }
            self.inbox_searched = self.inbox.len();
            return;
        };
        let searched = std::mem::take(&mut self.inbox_searched);
        if end > max {
            return self.reject_oversized_head(now, searched);
        }
        self.timers.clear(Timer::Header);
        let form = match (self.accepted.listener, self.accepted.original_dst) {
            (ListenerKind::Explicit, _) => Form::Proxy,
            (ListenerKind::TransparentHttp, Some(dst)) => Form::Intercepted { port: dst.port() },
            (ListenerKind::TransparentHttp | ListenerKind::TransparentTls, _) => {
                return self.reject_head(now, Rejection::Invalid("no_original_destination"));
            }
        };
        match request::parse(&self.inbox, end, form) {
            Ok(request) => {
                self.inbox.drain(..end);
                self.start_request(now, request);
            }
            Err(rejection) => self.reject_head(now, rejection),
        }
    }

    /// Refuses a head over `max_header_bytes` (of which `searched` bytes were searched
    /// before) as if it had arrived a byte at a time, so that the verdict does not depend on
    /// how it was split into reads: a bare CR or LF within the first `max_header_bytes`
    /// would have been refused before the head grew too large.
    fn reject_oversized_head(&mut self, now: Instant, searched: usize) {
        let max = self.config.limits.max_header_bytes;
        let first = &self.inbox[..max.min(self.inbox.len())];
        let rejection = match has_bare_line_ending(first, searched.saturating_sub(1)) {
            true => Rejection::Invalid("bare_cr_or_lf"),
            false => Rejection::TooLarge,
        };
        self.reject_head(now, rejection);
    }

    fn reject_head(&mut self, now: Instant, rejection: Rejection) {
        let (url, reply, reason, detail) = match rejection {
            Rejection::TooLarge => (
                "error:request-too-large",
                Reply::HeaderTooLarge,
                Reason::HeaderTooLarge,
                None,
            ),
            Rejection::Invalid(detail) => (
                "error:invalid-request",
                Reply::InvalidRequest,
                Reason::InvalidRequest,
                Some(detail),
            ),
        };
        self.open_error_txn(now, url);
        if let Some(txn) = self.txn.as_mut() {
            txn.bytes_from_client = self.inbox.len() as u64;
        }
        self.fail(now, reply, reason, detail);
    }

    fn start_request(&mut self, now: Instant, request: Request) {
        self.seq += 1;
        let started = self.request_started.take().unwrap_or(now);
        let policy = self.store.load();
        let decision = policy.decide(&request.host, request.port);
        let access = match decision.verdict {
            Verdict::Allow => Access::Allowed,
            Verdict::Deny(reason) if policy.settings().mode == Mode::Audit => {
                Access::Audited(reason)
            }
            Verdict::Deny(reason) => Access::Denied(reason),
        };
        let is_head = request.is_head();
        let mut txn = Txn::new(self.seq, started, request.method, request.url);
        txn.is_head = is_head;
        txn.host = Some(request.host);
        txn.port = request.port;
        txn.kind = request.kind;
        txn.access = Some(access);
        txn.rule = decision.rule;
        txn.policy = Some(policy);
        txn.bytes_from_client = request.head_len as u64;
        txn.version = request.version;
        txn.keep_alive = request.keep_alive;
        txn.framing = request.body;
        txn.forward_head = request.forward_head;
        txn.close_after = false;
        self.txn = Some(Box::new(txn));
        if let Access::Denied(reason) = access {
            return self.deny(now, reason, reason.as_str());
        }
        self.open_upstream(now);
    }

    /// Reuses the kept-alive upstream when it goes to the same destination, or resolves.
    fn open_upstream(&mut self, now: Instant) {
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        let (Some(host), Some(policy)) = (txn.host.clone(), txn.policy.clone()) else {
            return self.close(Close::Reset);
        };
        if let Some(link) = &self.upstream {
            let same = txn.kind == Kind::Forward && link.host == host && link.port == txn.port;
            if same && policy.check_destination(link.addr).is_ok() {
                txn.upstream_addr = Some(link.addr);
                txn.retryable = txn.framing == Framing::None;
                self.emit_decided(now);
                return self.begin_exchange(now);
            }
        }
        self.drop_upstream();
        match host {
            Host::Ip(ip) => self.connect_checked(now, &[ip]),
            Host::Name(name) => {
                let ticket = self.ticket();
                self.actions.push_back(Action::Resolve { ticket, name });
                self.timers
                    .set(Timer::Resolve, now + self.config.limits.connect_timeout);
                self.state = State::Resolving { ticket };
            }
        }
    }

    /// Checks resolved addresses against the address classes and connects to the first
    /// admitted one; a name whose every address is denied is denied.
    fn connect_checked(&mut self, now: Instant, addrs: &[IpAddr]) {
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        let Some(policy) = txn.policy.clone() else {
            return self.close(Close::Reset);
        };
        let mut candidates: SmallVec<[SocketAddr; 4]> = SmallVec::new();
        let mut denied = None;
        for &ip in addrs {
            let addr = SocketAddr::new(ip, txn.port);
            match policy.check_destination(addr) {
                Ok(()) => {
                    if !candidates.contains(&addr) && candidates.len() < MAX_CANDIDATES {
                        candidates.push(addr);
                    }
                }
                Err(class) => {
                    denied.get_or_insert(class);
                }
            }
        }
        if let (ListenerKind::TransparentHttp | ListenerKind::TransparentTls, Some(dst)) =
            (self.accepted.listener, self.accepted.original_dst)
        {
            // The connection goes to the name's own addresses; a client that was going
            // somewhere else (spoofed Host or SNI, stale DNS) is noted, never followed.
            txn.dst_mismatch = !addrs.contains(&dst.ip());
        }
        if candidates.is_empty() {
            let class = denied.unwrap_or(crate::policy::AddrClass::Unspecified);
            return self.deny(now, DenyReason::PrivateAddress(class), class.as_str());
        }
        self.emit_decided(now);
        self.attempt(now, candidates, 0);
    }

    fn attempt(&mut self, now: Instant, candidates: SmallVec<[SocketAddr; 4]>, current: usize) {
        let ticket = self.ticket();
        self.actions.push_back(Action::Connect {
            ticket,
            addr: candidates[current],
        });
        self.timers
            .set(Timer::Connect, now + self.config.limits.connect_timeout);
        self.state = State::Connecting {
            ticket,
            candidates,
            current,
        };
    }

    /// Tries the next address after a failed attempt, or replies with `reply`.
    fn next_attempt(&mut self, now: Instant, reply: Reply, reason: Reason, detail: &'static str) {
        let State::Connecting {
            ref mut candidates,
            current,
            ..
        } = self.state
        else {
            return;
        };
        if current + 1 < candidates.len() {
            let candidates = std::mem::take(candidates);
            return self.attempt(now, candidates, current + 1);
        }
        self.fail(now, reply, reason, Some(detail));
    }

    // ---- tunnels ----

    fn open_tunnel(&mut self, now: Instant) {
        self.out[CLIENT].push(CONNECT_ESTABLISHED);
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        txn.status = 200;
        txn.bytes_to_client += CONNECT_ESTABLISHED.len() as u64;
        let inspect = txn
            .policy
            .as_ref()
            .is_some_and(|p| p.settings().inspect_tunnels);
        self.touch(now);
        if !inspect {
            return self.end_inspection(now);
        }
        self.state = State::Inspecting;
        self.hello = tls::HelloReader::default();
        self.advance_inspection(now);
    }

    /// Judges the first bytes of a tunnel: a ClientHello's SNI must be allowed too.
    fn advance_inspection(&mut self, now: Instant) {
        let Some(&first) = self.inbox.first() else {
            return;
        };
        if !tls::starts_handshake(first) {
            return match tls::other_start(&self.inbox) {
                tls::OtherStart::Partial => {
                    if !self.timers.is_set(Timer::Header) {
                        self.timers
                            .set(Timer::Header, now + self.config.limits.header_timeout);
                    }
                }
                tls::OtherStart::TlsRecord => {
                    self.deny_tls(now, DenyReason::InvalidHello, Some("unexpected_record"));
                }
                tls::OtherStart::NotTls => self.end_inspection(now),
            };
        }
        if !self.timers.is_set(Timer::Header) {
            self.timers
                .set(Timer::Header, now + self.config.limits.header_timeout);
        }
        match self
            .hello
            .feed(&self.inbox, self.config.limits.max_header_bytes)
        {
            HelloStatus::Partial => {}
            HelloStatus::Invalid(detail) => {
                self.deny_tls(now, DenyReason::InvalidHello, Some(detail));
            }
            HelloStatus::Complete(hello) => {
                self.timers.clear(Timer::Header);
                match self.judge_hello(&hello, true) {
                    Ok(()) => self.end_inspection(now),
                    Err((reason, detail)) => self.deny_tls(now, reason, detail),
                }
            }
        }
    }

    /// Queues the stream's first bytes for the upstream and hands the tunnel to the runtime
    /// once they and the CONNECT reply are written.
    fn end_inspection(&mut self, now: Instant) {
        self.timers.clear(Timer::Header);
        let pending = std::mem::take(&mut self.inbox);
        if !pending.is_empty() {
            self.out[UPSTREAM].push(&pending);
            if let Some(txn) = self.txn.as_mut() {
                txn.bytes_from_client += pending.len() as u64;
            }
        }
        self.state = State::TunnelOpening;
        self.touch(now);
        self.maybe_splice(now);
    }

    // ---- intercepted TLS ----

    fn advance_hello(&mut self, now: Instant) {
        if self.accepted.original_dst.is_none() {
            self.open_hello_txn(now, None);
            return self.deny_tls(
                now,
                DenyReason::InvalidHello,
                Some("no_original_destination"),
            );
        }
        match self
            .hello
            .feed(&self.inbox, self.config.limits.max_header_bytes)
        {
            HelloStatus::Partial => {}
            HelloStatus::Invalid(detail) => {
                self.open_hello_txn(now, None);
                self.deny_tls(now, DenyReason::InvalidHello, Some(detail));
            }
            HelloStatus::Complete(hello) => {
                self.timers.clear(Timer::Header);
                self.open_hello_txn(now, Some(&hello));
                match self.judge_hello(&hello, false) {
                    Ok(()) => self.open_upstream(now),
                    Err((reason, detail)) => self.deny_tls(now, reason, detail),
                }
            }
        }
    }

    /// Opens the record of an intercepted TLS connection: `CONNECT sni:port`, or the original
    /// destination when the hello names no usable host.
    fn open_hello_txn(&mut self, now: Instant, hello: Option<&Hello>) {
        let port = self.accepted.original_dst.map_or(0, |d| d.port());
        let sni = hello.and_then(|h| h.sni.as_ref().ok()).cloned();
        let url = match (&sni, self.accepted.original_dst) {
            (Some(host), _) => host.authority(port),
            (None, Some(dst)) => dst.to_string(),
            (None, None) => "error:invalid-client-hello".to_owned(),
        };
        self.open_error_txn(now, &url);
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        txn.method = Cow::Borrowed("CONNECT");
        txn.kind = Kind::Passthrough;
        txn.port = port;
        txn.host.clone_from(&sni);
        txn.sni = sni;
        txn.ech = hello.is_some_and(|h| h.ech);
        txn.policy = Some(self.store.load());
        txn.close_after = false;
    }

    /// Decides on a ClientHello: its SNI on the session's port, and ECH. `in_tunnel` marks a
    /// hello inside an allowed CONNECT, where the CONNECT target already decided where bytes
    /// go and the SNI must not contradict it. Sets the request's access; returns the denial.
    fn judge_hello(
        &mut self,
        hello: &Hello,
        in_tunnel: bool,
    ) -> Result<(), (DenyReason, Option<&'static str>)> {
        let Some(txn) = self.txn.as_mut() else {
            return Err((DenyReason::InvalidHello, None));
        };
        let policy = txn.policy.clone().unwrap_or_else(|| self.store.load());
        txn.sni = hello.sni.as_ref().ok().cloned();
        txn.ech = hello.ech;
        let audit = policy.settings().mode == Mode::Audit;
        let ech_denied = hello.ech && policy.settings().ech == EchPolicy::Deny;
        let host = match (&hello.sni, in_tunnel) {
            (Ok(host), _) => Some(host),
            // Without SNI a TLS server cannot be steered away from the CONNECT target, unless
            // an encrypted inner hello names another host: that is judged as ECH.
            (Err("no_sni"), true) if ech_denied => None,
            (Err("no_sni"), true) => return Ok(()),
            (Err("no_sni"), false) => return Err((DenyReason::NoSni, None)),
            (Err(detail), _) => return Err((DenyReason::InvalidHello, Some(*detail))),
        };
        let mut verdict = Verdict::Allow;
        let mut rule = None;
        if ech_denied {
            verdict = Verdict::Deny(DenyReason::EncryptedClientHello);
        } else if let Some(host) = host {
            let decision = policy.decide(host, txn.port);
            rule = decision.rule;
            if let Verdict::Deny(reason) = decision.verdict {
                let reason = if in_tunnel {
                    DenyReason::SniNotAllowed
                } else {
                    reason
                };
                verdict = Verdict::Deny(reason);
            }
        }
        let access = match verdict {
            Verdict::Allow => Access::Allowed,
            Verdict::Deny(reason) if audit => Access::Audited(reason),
            Verdict::Deny(reason) => Access::Denied(reason),
        };
        if !in_tunnel {
            txn.rule = rule;
            txn.access = Some(access);
        } else if let Access::Audited(_) = access {
            txn.access = Some(access);
        }
        match access {
            Access::Allowed | Access::Audited(_) => Ok(()),
            Access::Denied(reason) => Err((reason, Some(reason.as_str()))),
        }
    }

    /// Denies a TLS stream: a fatal `access_denied` alert and a close, or a reset, as the
    /// policy says. Logged as `TCP_DENIED/403`.
    fn deny_tls(&mut self, now: Instant, reason: DenyReason, detail: Option<&'static str>) {
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        let policy = txn.policy.clone().unwrap_or_else(|| self.store.load());
        txn.access = Some(Access::Denied(reason));
        txn.status = 403;
        // The hello (or what arrived of it) was read but goes nowhere.
        txn.bytes_from_client += self.inbox.len() as u64;
        self.emit_decided(now);
        self.drop_upstream();
        self.out[UPSTREAM].clear();
        match policy.settings().tls_deny {
            TlsDeny::Alert => {
                self.out[CLIENT].push(ACCESS_DENIED_ALERT);
                if let Some(txn) = self.txn.as_mut() {
                    txn.bytes_to_client += ACCESS_DENIED_ALERT.len() as u64;
                }
                self.finish_txn(now, Reason::Denied, detail);
                self.start_closing(now);
            }
            TlsDeny::Reset => self.abort(now, Reason::Denied, detail),
        }
    }

    fn maybe_splice(&mut self, now: Instant) {
        if self.out[CLIENT].is_empty() && self.out[UPSTREAM].is_empty() {
            self.actions.push_back(Action::Splice);
            self.state = State::Tunnel;
            self.touch(now);
        }
    }

    // ---- HTTP exchanges ----

    fn begin_exchange(&mut self, now: Instant) {
        let max_trailer = self.config.limits.max_header_bytes;
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        self.out[UPSTREAM].push(&txn.forward_head);
        if !txn.retryable {
            txn.forward_head = Vec::new();
        }
        txn.request_body = match txn.framing {
            Framing::None => BodyReader::Done,
            Framing::Length(n) => BodyReader::Length(n),
            Framing::Chunked => BodyReader::chunked_request(max_trailer),
        };
        txn.response = ResponsePhase::AwaitHead;
        self.upstream_inbox.clear();
        self.upstream_searched = 0;
        self.state = State::Exchange;
        self.touch(now);
        if !self.inbox.is_empty() {
            let pending = std::mem::take(&mut self.inbox);
            self.forward_request_body(now, &pending);
        }
    }

    fn forward_request_body(&mut self, now: Instant, data: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if txn.request_body.is_done() {
            // Pipelined: the next request waits for this exchange to end.
            self.inbox.extend_from_slice(data);
            return;
        }
        match txn.request_body.feed(data, self.out[UPSTREAM].buf_mut()) {
            Ok(used) => {
                txn.bytes_from_client += used as u64;
                self.inbox.extend_from_slice(&data[used..]);
                self.touch(now);
            }
            Err(BodyError(detail)) => {
                self.fail(
                    now,
                    Reply::InvalidRequest,
                    Reason::InvalidRequest,
                    Some(detail),
                );
            }
        }
    }

    fn on_response_data(&mut self, now: Instant, data: &[u8]) {
        self.touch(now);
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        match txn.response {
            ResponsePhase::AwaitHead => {
                self.upstream_inbox.extend_from_slice(data);
                self.advance_response(now);
            }
            ResponsePhase::Body(_) => self.forward_response_body(now, data),
            ResponsePhase::Done => txn.upstream_reusable = false,
        }
    }

    fn advance_response(&mut self, now: Instant) {
        let max = self.config.limits.max_header_bytes;
        loop {
            let Some(txn) = self.txn.as_mut() else {
                return;
            };
            let Some(end) = find_head_end(&self.upstream_inbox, self.upstream_searched) else {
                if self.upstream_inbox.len() > max {
                    let detail = Some("response_head_too_large");
                    return self.fail(now, Reply::InvalidResponse, Reason::InvalidResponse, detail);
                }
                self.upstream_searched = self.upstream_inbox.len();
                return;
            };
            self.upstream_searched = 0;
            let parsed = match end > max {
                true => Err(Rejection::TooLarge),
                false => response::parse(&self.upstream_inbox, end, txn.is_head),
            };
            let response = match parsed {
                Ok(response) => response,
                Err(rejection) => {
                    let detail = match rejection {
                        Rejection::TooLarge => "response_head_too_large",
                        Rejection::Invalid(detail) => detail,
                    };
                    let reason = Reason::InvalidResponse;
                    return self.fail(now, Reply::InvalidResponse, reason, Some(detail));
                }
            };
            self.upstream_inbox.drain(..end);
            if response.is_interim() {
                // RFC 9110 §15.2: no 1xx to an HTTP/1.0 client.
                if txn.version == 1 {
                    let out = &mut self.out[CLIENT];
                    out.push(&response.forward_head);
                    out.push(b"\r\n");
                    txn.bytes_to_client += response.forward_head.len() as u64 + 2;
                }
                continue;
            }
            if response.body == Body::Chunked && txn.version == 0 {
                let detail = Some("chunked_response_to_http10");
                return self.fail(now, Reply::InvalidResponse, Reason::InvalidResponse, detail);
            }
            txn.status = response.status;
            txn.content_type = response.content_type;
            txn.upstream_reusable = response.reusable;
            // An answer that arrives before the request body has ended (an early 413, say)
            // leaves the rest of that body nowhere to go: the connection closes after it.
            txn.close_after |= !txn.keep_alive
                || self.draining
                || self.client_eof
                || !txn.request_body.is_done()
                || response.body == Body::UntilClose;
            txn.response_started = true;
            txn.forward_head = Vec::new();
            let mut head = response.forward_head;
            if txn.close_after {
                push_header(&mut head, b"Connection", b"close");
            }
            head.extend_from_slice(b"\r\n");
            self.out[CLIENT].push(&head);
            txn.bytes_to_client += head.len() as u64;
            txn.response = ResponsePhase::Body(match response.body {
                Body::None => BodyReader::Done,
                Body::Length(n) => BodyReader::Length(n),
                Body::Chunked => BodyReader::chunked(max),
                Body::UntilClose => BodyReader::UntilClose,
            });
            let rest = std::mem::take(&mut self.upstream_inbox);
            return self.forward_response_body(now, &rest);
        }
    }

    fn forward_response_body(&mut self, now: Instant, data: &[u8]) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let ResponsePhase::Body(reader) = &mut txn.response else {
            return;
        };
        let out = self.out[CLIENT].buf_mut();
        let before = out.len();
        match reader.feed(data, out) {
            Ok(used) => {
                txn.bytes_to_client += (out.len() - before) as u64;
                if used < data.len() {
                    // Bytes after the end of a response: the connection is out of step.
                    txn.upstream_reusable = false;
                }
                if reader.is_done() {
                    txn.response = ResponsePhase::Done;
                    self.complete_exchange(now);
                }
            }
            Err(BodyError(detail)) => self.abort(now, Reason::InvalidResponse, Some(detail)),
        }
    }

    /// Ends an exchange whose response is complete: next request, or close.
    fn complete_exchange(&mut self, now: Instant) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        if !txn.request_body.is_done() {
            // The upstream answered before the request body ended (an early 413, say): the
            // rest of the body has nowhere to go.
            txn.close_after = true;
            txn.upstream_reusable = false;
        }
        let close = txn.close_after || self.client_eof || self.draining;
        let reusable = txn.upstream_reusable;
        self.finish_txn(now, Reason::Completed, None);
        if !reusable || close {
            self.drop_upstream();
        }
        if close {
            return self.start_closing(now);
        }
        self.state = State::AwaitRequest;
        self.touch(now);
        if !self.inbox.is_empty() {
            self.advance_request(now);
        }
    }

    // ---- ends ----

    fn on_client_eof(&mut self, now: Instant) {
        self.client_eof = true;
        match self.state {
            State::AwaitRequest if self.inbox.is_empty() => self.start_closing(now),
            State::AwaitRequest => self.reject_head(now, Rejection::Invalid("incomplete_head")),
            State::Exchange if self.txn.as_ref().is_some_and(|t| !t.request_body.is_done()) => {
                self.abort(now, Reason::ClientClosed, Some("request_truncated"));
            }
            State::Closing { .. } if self.out[CLIENT].is_empty() => self.close(Close::Graceful),
            State::AwaitHello | State::AwaitProxy if self.inbox.is_empty() => {
                self.start_closing(now);
            }
            State::AwaitProxy => self.refuse_proxy(now, "incomplete_proxy_header"),
            State::AwaitHello => {
                self.open_hello_txn(now, None);
                self.deny_tls(now, DenyReason::InvalidHello, Some("incomplete_hello"));
            }
            // A hello cut short by the client's close was never judged: none of it goes on.
            State::Inspecting if !self.inbox.is_empty() => {
                self.deny_tls(now, DenyReason::InvalidHello, Some("incomplete_hello"));
            }
            // A client that half-closes an open tunnel: the runtime carries the close on.
            State::Inspecting => self.end_inspection(now),
            // A half-close after a complete request: the response is still delivered.
            State::Exchange
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::TunnelOpening
            | State::Tunnel
            | State::Closing { .. }
            | State::Finished => {}
        }
    }

    fn on_upstream_gone(&mut self, now: Instant) {
        match self.state {
            State::AwaitRequest => self.drop_upstream(),
            State::Exchange => self.upstream_ended(now),
            State::TunnelOpening | State::Inspecting => {
                self.finish_txn(now, Reason::UpstreamClosed, None);
                self.drop_upstream();
                self.start_closing(now);
            }
            State::AwaitProxy
            | State::AwaitHello
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::Tunnel
            | State::Closing { .. }
            | State::Finished => {}
        }
    }

    fn upstream_ended(&mut self, now: Instant) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        match &txn.response {
            ResponsePhase::AwaitHead => {
                let untouched = self.upstream_inbox.is_empty();
                if txn.retryable && untouched && txn.request_body.is_done() {
                    // A kept-alive connection the upstream had closed: send again, once.
                    txn.retryable = false;
                    let addr = txn.upstream_addr;
                    self.drop_upstream();
                    if let Some(addr) = addr {
                        return self.attempt(now, smallvec![addr], 0);
                    }
                }
                if untouched {
                    self.fail(now, Reply::EmptyResponse, Reason::EmptyResponse, None);
                } else {
                    let detail = Some("incomplete_response_head");
                    self.fail(now, Reply::InvalidResponse, Reason::InvalidResponse, detail);
                }
            }
            ResponsePhase::Body(BodyReader::UntilClose) => {
                txn.response = ResponsePhase::Done;
                txn.upstream_reusable = false;
                self.complete_exchange(now);
            }
            ResponsePhase::Body(_) | ResponsePhase::Done => {
                self.finish_txn(now, Reason::UpstreamClosed, Some("response_truncated"));
                self.drop_upstream();
                self.start_closing(now);
            }
        }
    }

    fn on_idle(&mut self, now: Instant) {
        match self.state {
            State::AwaitRequest => self.start_closing(now),
            State::Exchange => {
                if self.txn.as_ref().is_some_and(|t| t.response_started) {
                    self.abort(now, Reason::IdleTimeout, None);
                } else {
                    self.fail(now, Reply::ReadTimeout, Reason::ReadTimeout, None);
                }
            }
            State::Inspecting | State::TunnelOpening | State::Tunnel => {
                self.finish_txn(now, Reason::IdleTimeout, None);
                self.close(Close::Graceful);
            }
            State::AwaitProxy
            | State::AwaitHello
            | State::Resolving { .. }
            | State::Connecting { .. }
            | State::Closing { .. }
            | State::Finished => {}
        }
    }

    /// Denies the request in progress: the 403 for HTTP and CONNECT, the TLS denial for an
    /// intercepted hello.
    fn deny(&mut self, now: Instant, reason: DenyReason, detail: &'static str) {
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        if txn.kind == Kind::Passthrough {
            return self.deny_tls(now, reason, Some(detail));
        }
        txn.access = Some(Access::Denied(reason));
        self.emit_decided(now);
        self.fail(now, Reply::AccessDenied, Reason::Denied, Some(detail));
    }

    /// Replies with an error and closes, or resets when a response has already begun or the
    /// client speaks TLS.
    fn fail(&mut self, now: Instant, reply: Reply, reason: Reason, detail: Option<&'static str>) {
        let Some(txn) = self.txn.as_mut() else {
            return self.close(Close::Reset);
        };
        // A client that speaks TLS cannot read an HTTP reply: an intercepted connection that
        // cannot be served is reset, as a server that refused it would be.
        if txn.kind == Kind::Passthrough {
            txn.status = reply.status();
            return self.abort(now, reason, detail);
        }
        if txn.response_started {
            return self.abort(now, reason, detail);
        }
        let mut bytes = Vec::with_capacity(256);
        reply.write(detail, &mut bytes);
        txn.status = reply.status();
        txn.content_type = Some("text/html".into());
        txn.bytes_to_client += bytes.len() as u64;
        self.drop_upstream();
        self.out[UPSTREAM].clear();
        self.out[CLIENT].push(&bytes);
        self.finish_txn(now, reason, detail);
        self.start_closing(now);
    }

    /// Ends the session at once with a reset.
    fn abort(&mut self, now: Instant, reason: Reason, detail: Option<&'static str>) {
        self.finish_txn(now, reason, detail);
        self.close(Close::Reset);
    }

    /// Flushes what is queued for the client, then half-closes and lingers.
    fn start_closing(&mut self, now: Instant) {
        self.drop_upstream();
        self.inbox = Vec::new();
        self.upstream_inbox = Vec::new();
        self.timers.clear_all();
        self.timers
            .set(Timer::Linger, now + self.config.limits.linger_timeout);
        self.state = State::Closing { fin_sent: false };
        self.maybe_fin(now);
    }

    fn maybe_fin(&mut self, now: Instant) {
        if !self.out[CLIENT].is_empty() {
            return;
        }
        if self.client_eof {
            return self.close(Close::Graceful);
        }
        self.actions.push_back(Action::Shutdown);
        self.state = State::Closing { fin_sent: true };
        self.timers
            .set(Timer::Linger, now + self.config.limits.linger_timeout);
    }

    fn close(&mut self, how: Close) {
        if matches!(self.state, State::Finished) {
            return;
        }
        self.upstream = None;
        self.timers.clear_all();
        self.out[CLIENT].clear();
        self.out[UPSTREAM].clear();
        self.inbox = Vec::new();
        self.upstream_inbox = Vec::new();
        self.actions.push_back(Action::Close(how));
        self.state = State::Finished;
    }

    // ---- helpers ----

    fn drop_upstream(&mut self) {
        // Bytes queued for a connection being closed belong to no other.
        self.out[UPSTREAM].clear();
        if self.upstream.take().is_some() {
            self.actions.push_back(Action::Disconnect);
        }
    }

    fn touch(&mut self, now: Instant) {
        self.timers
            .set(Timer::Idle, now + self.config.limits.idle_timeout);
    }

    fn ticket(&mut self) -> Ticket {
        self.next_ticket += 1;
        Ticket(self.next_ticket)
    }

    fn open_error_txn(&mut self, now: Instant, url: &str) {
        self.seq += 1;
        let started = self.request_started.take().unwrap_or(now);
        self.txn = Some(Box::new(Txn::new(
            self.seq,
            started,
            "NONE".into(),
            url.to_owned(),
        )));
    }

    /// Emits the `Decided` event of the request in progress, once.
    fn emit_decided(&mut self, now: Instant) {
        let Some(txn) = self.txn.as_mut() else {
            return;
        };
        let (Some(host), Some(access), false) = (txn.host.clone(), txn.access, txn.decided) else {
            return;
        };
        txn.decided = true;
        self.events.push_back(Event::Decided(Decided {
            session: self.id,
            seq: txn.seq,
            at: self.config.clock.at(now),
            client: self.client,
            listener: self.accepted.listener,
            host,
            port: txn.port,
            access,
            rule: txn.rule.clone(),
        }));
    }

    /// Emits the access record of the request or tunnel in progress, if any.
    fn finish_txn(&mut self, now: Instant, reason: Reason, detail: Option<&'static str>) {
        // A request that ends before its addresses were checked (DNS failed, the client left)
        // still reports its decision.
        self.emit_decided(now);
        let Some(txn) = self.txn.take() else {
            return;
        };
        let txn = *txn;
        self.events.push_back(Event::Closed(Closed {
            session: self.id,
            seq: txn.seq,
            at: self.config.clock.at(now),
            duration: now.saturating_duration_since(txn.started),
            client: self.client,
            listener: self.accepted.listener,
            original_dst: self.accepted.original_dst,
            method: txn.method,
            url: txn.url,
            host: txn.host,
            port: txn.port,
            status: txn.status,
            access: txn.access,
            rule: txn.rule,
            reason,
            detail,
            bytes_to_client: txn.bytes_to_client,
            bytes_from_client: txn.bytes_from_client,
            upstream: txn.upstream_addr,
            content_type: txn.content_type,
            sni: txn.sni,
            ech: txn.ech,
            vpc_endpoint: self.vpc_endpoint.clone(),
            dst_mismatch: txn.dst_mismatch,
        }));
    }
}
