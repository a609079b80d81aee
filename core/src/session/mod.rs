//! One client connection, from accept to close, as a state machine driven by its runtime.

mod machine;
mod timer;

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::event::Event;
use crate::gateway::{Accepted, GatewayConfig};
use crate::policy::PolicyStore;

pub(crate) use machine::State;
use machine::{Txn, UpstreamLink};
use timer::Timers;

/// One of the two sides of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The connection the session was accepted on.
    Client,
    /// The connection the session opened towards the destination.
    Upstream,
}

/// Identifies one resolve or connect request; a result carrying a stale ticket is ignored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Ticket(pub(crate) u64);

/// What the runtime should read. Writing is wanted whenever [`Session::outbound`] is not
/// empty.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Read from the client and pass the bytes to [`Session::handle_client_data`].
    pub read_client: bool,
    /// Read from the upstream and pass the bytes to [`Session::handle_upstream_data`].
    pub read_upstream: bool,
}

/// How a session's connections end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Close {
    /// Close both connections normally (FIN).
    Graceful,
    /// Reset the client connection (`SO_LINGER` 0) and close the upstream.
    Reset,
}

/// Something the runtime must do for a session.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Resolve `name` to addresses and report them with [`Session::handle_resolved`]. A new
    /// `Resolve` replaces any lookup in progress.
    Resolve {
        /// Returned with the result.
        ticket: Ticket,
        /// A validated lowercase host name.
        name: Box<str>,
    },
    /// Open a TCP connection to `addr` (an address core has checked) and report the outcome
    /// with [`Session::handle_connected`]. A new `Connect` cancels any attempt in progress;
    /// core emits [`Action::Disconnect`] first when an upstream connection is open.
    Connect {
        /// Returned with the result.
        ticket: Ticket,
        /// Where to connect.
        addr: SocketAddr,
    },
    /// Close the upstream connection; the session goes on with the client.
    Disconnect,
    /// Half-close the client connection (send FIN) now that [`Session::outbound`] for the
    /// client is empty; keep reading from it.
    Shutdown,
    /// Both outbound buffers are empty: copy bytes both ways between client and upstream with
    /// the fastest mechanism available, propagating half-closes, and report progress with
    /// [`Session::handle_splice_progress`] and the end with [`Session::handle_splice_end`].
    Splice,
    /// Close the session's connections. Always the last action, emitted exactly once.
    Close(Close),
}

/// Why a name could not be resolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolveError {
    /// The name does not exist or has no addresses.
    NotFound,
    /// The resolver failed.
    Failed,
}

/// Why a connect attempt failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectError {
    /// The destination refused the connection.
    Refused,
    /// The destination network or host is unreachable.
    Unreachable,
    /// Any other failure.
    Other,
}

/// How a splice ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpliceEnd {
    /// Both directions reached end of stream.
    Finished,
    /// A connection failed (reset or error) on this side.
    Failed(Peer),
}

/// A client connection's protocol state: bytes and events in, actions out.
///
/// # API
///
/// The methods come in three kinds:
/// - getters take `&self`: [`interest`](Self::interest), [`outbound`](Self::outbound),
///   [`is_finished`](Self::is_finished), [`poll_timeout`](Self::poll_timeout);
/// - handlers, `handle_*(now, …)`, report what happened: bytes read, bytes written, end of
///   stream, errors, DNS and connect results (with their [`Ticket`]), splice progress, timer
///   expiry, shutdown;
/// - polls, `poll_action` and `poll_event`, hand out what the session wants done and what it
///   observed.
///
/// # Drive contract
///
/// ```text
/// loop {
///     now = clock()                          // once per wake-up
///     session.handle_…(now, …)               // what woke us
///     while let Some(a) = session.poll_action() { perform(a) }   // may call handle_written…
///     while let Some(e) = session.poll_event()  { forward(e) }
///     write session.outbound(peer) for each peer; report with handle_written
///     wait for: session.interest() reads, writability while outbound is non-empty,
///               pending resolve/connect results, and session.poll_timeout()
/// }
/// ```
///
/// Calling [`handle_timeout`](Self::handle_timeout) early or twice is harmless. After
/// [`Action::Close`] the session is finished and every handler is a no-op.
#[derive(Debug)]
pub struct Session {
    id: u64,
    config: Arc<GatewayConfig>,
    store: PolicyStore,
    accepted: Accepted,
    state: State,
    timers: Timers,
    /// Client bytes not yet consumed: a request head in progress, or pipelined requests.
    inbox: Vec<u8>,
    /// How much of `inbox` was searched for the end of a head.
    inbox_searched: usize,
    /// Upstream bytes of a response head in progress.
    upstream_inbox: Vec<u8>,
    upstream_searched: usize,
    /// Bytes for the client and for the upstream, with how much was written.
    out: [Outbound; 2],
    actions: VecDeque<Action>,
    events: VecDeque<Event>,
    next_ticket: u64,
    /// The upstream connection, open or kept for the next request.
    upstream: Option<UpstreamLink>,
    /// The request or tunnel in progress.
    txn: Option<Box<Txn>>,
    /// Requests started on this connection.
    seq: u32,
    /// When the first byte of the request in progress arrived.
    request_started: Option<Instant>,
    client_eof: bool,
    draining: bool,
    /// Reassembles a ClientHello (transparent TLS, or the start of a CONNECT tunnel).
    hello: crate::tls::HelloReader,
    /// The client as logged: the peer address, or the one a PROXY header names.
    client: SocketAddr,
    /// The VPC endpoint a PROXY v2 header names (PrivateLink).
    vpc_endpoint: Option<Box<str>>,
}

/// Bytes waiting to be written to one peer.
#[derive(Debug, Default)]
struct Outbound {
    buf: Vec<u8>,
    written: usize,
}

impl Session {
    pub(crate) fn new(
        id: u64,
        now: Instant,
        config: Arc<GatewayConfig>,
        store: PolicyStore,
        accepted: Accepted,
    ) -> Session {
        let mut session = Session {
            id,
            config,
            store,
            accepted,
            state: State::AwaitRequest,
            timers: Timers::default(),
            inbox: Vec::new(),
            inbox_searched: 0,
            upstream_inbox: Vec::new(),
            upstream_searched: 0,
            out: [Outbound::default(), Outbound::default()],
            actions: VecDeque::new(),
            events: VecDeque::new(),
            next_ticket: 0,
            upstream: None,
            txn: None,
            seq: 0,
            request_started: None,
            client_eof: false,
            draining: false,
            hello: crate::tls::HelloReader::default(),
            client: accepted.client,
            vpc_endpoint: None,
        };
        session.on_accept(now);
        session
    }

    /// Returns the session's id, unique within the process.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Returns what the runtime should read. Changes after any handler.
    #[must_use]
    pub fn interest(&self) -> Interest {
        self.derive_interest()
    }

    /// Returns the bytes waiting to be written to `peer`. Changes after any handler.
    #[must_use]
    pub fn outbound(&self, peer: Peer) -> &[u8] {
        self.out[peer as usize].pending()
    }

    /// Returns whether the session has ended ([`Action::Close`] was emitted).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        matches!(self.state, State::Finished)
    }

    /// Returns when [`handle_timeout`](Self::handle_timeout) should next be called. Changes
    /// after any handler.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next()
    }

    /// Returns the next action to perform. Fills after any handler.
    #[must_use]
    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Returns the next event to forward. Fills after any handler.
    #[must_use]
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Handles bytes read from the client.
    pub fn handle_client_data(&mut self, now: Instant, data: &[u8]) {
        self.on_client_data(now, data);
    }

    /// Handles bytes read from the upstream.
    pub fn handle_upstream_data(&mut self, now: Instant, data: &[u8]) {
        self.on_upstream_data(now, data);
    }

    /// Handles `n` bytes of [`outbound`](Self::outbound) for `peer` having been written.
    pub fn handle_written(&mut self, now: Instant, peer: Peer, n: usize) {
        self.out[peer as usize].consume(n);
        self.on_written(now);
    }

    /// Handles end of stream from `peer`.
    pub fn handle_eof(&mut self, now: Instant, peer: Peer) {
        self.on_eof(now, peer);
    }

    /// Handles a failed read or write on `peer` (a reset, a broken pipe).
    pub fn handle_io_error(&mut self, now: Instant, peer: Peer) {
        self.on_io_error(now, peer);
    }

    /// Handles the answer to [`Action::Resolve`].
    pub fn handle_resolved(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: Result<&[IpAddr], ResolveError>,
    ) {
        self.on_resolved(now, ticket, result);
    }

    /// Handles the outcome of [`Action::Connect`].
    pub fn handle_connected(
        &mut self,
        now: Instant,
        ticket: Ticket,
        result: Result<(), ConnectError>,
    ) {
        self.on_connected(now, ticket, result);
    }

    /// Handles `bytes` copied from `from` to the other side during a splice.
    pub fn handle_splice_progress(&mut self, now: Instant, from: Peer, bytes: u64) {
        self.on_splice_progress(now, from, bytes);
    }

    /// Handles the end of a splice.
    pub fn handle_splice_end(&mut self, now: Instant, end: SpliceEnd) {
        self.on_splice_end(now, end);
    }

    /// Handles timer expiry; harmless when nothing is due.
    pub fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_expired(now) {
            self.on_timer(now, timer);
        }
    }

    /// Handles the start of a graceful shutdown: finish the request in progress, accept no
    /// further requests on this connection, and close whatever is left at `deadline`.
    pub fn handle_shutdown(&mut self, now: Instant, deadline: Instant) {
        self.on_shutdown(now, deadline);
    }
}

impl Outbound {
    fn pending(&self) -> &[u8] {
        &self.buf[self.written..]
    }

    fn len(&self) -> usize {
        self.buf.len() - self.written
    }

    fn is_empty(&self) -> bool {
        self.written == self.buf.len()
    }

    fn consume(&mut self, n: usize) {
        self.written = (self.written + n).min(self.buf.len());
        if self.written == self.buf.len() {
            self.buf.clear();
            self.written = 0;
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.written > 0 && self.written >= self.buf.len() / 2 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the buffer to append to directly (compacted first).
    fn buf_mut(&mut self) -> &mut Vec<u8> {
        if self.written > 0 {
            self.buf.drain(..self.written);
            self.written = 0;
        }
        &mut self.buf
    }

    fn clear(&mut self) {
        self.buf = Vec::new();
        self.written = 0;
    }
}
