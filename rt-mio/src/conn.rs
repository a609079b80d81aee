//! The IO side of one session: its sockets, their readiness, and the drive loop of the
//! contract (handle, drain actions, drain events, write, read).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use egret_core::{Action, Close, Peer, ResolveError, Session, SpliceEnd, Ticket};
use egret_rt_common::sys;
use mio::event::Event;
use mio::net::TcpStream;
use mio::{Interest, Registry};

use crate::Shared;
use crate::resolver::{Answer, Job, Mailbox, ResolverHandle};
use crate::splice::{PipePool, Step, Tunnel};
use crate::token;

/// Reads, writes and splice batches per session per wake-up, so that one busy session cannot
/// starve the others on its worker; a session with more to do is revisited at once.
const IO_BUDGET: usize = 32;

/// What a session's handlers may use, borrowed from its worker for one call.
pub(crate) struct Ctx<'a> {
    /// The clock, read once per wake-up.
    pub(crate) now: Instant,
    pub(crate) registry: &'a Registry,
    pub(crate) shared: &'a Shared,
    pub(crate) resolver: &'a ResolverHandle,
    pub(crate) mailbox: &'a Arc<Mailbox>,
    /// The worker's read buffer.
    pub(crate) buf: &'a mut [u8],
    pub(crate) pipes: &'a mut PipePool,
}

/// One connected socket and what is known about its readiness.
#[derive(Debug)]
pub(crate) struct Side {
    pub(crate) stream: TcpStream,
    /// No read has hit `WouldBlock` since the last readable edge.
    pub(crate) readable: bool,
    /// No write has hit `WouldBlock` since the last writable edge.
    pub(crate) writable: bool,
    /// A read returned end of stream.
    eof: bool,
    /// A read or write failed.
    failed: bool,
}

/// A connect attempt in progress.
#[derive(Debug)]
struct Connecting {
    ticket: Ticket,
    stream: TcpStream,
}

/// A session and its sockets, as kept in a worker's slab.
#[derive(Debug)]
pub(crate) struct Conn {
    pub(crate) session: Session,
    pub(crate) slot: usize,
    pub(crate) generation: usize,
    client: Side,
    upstream: Option<Side>,
    connecting: Option<Connecting>,
    resolving: Option<Ticket>,
    tunnel: Option<Tunnel>,
    /// `Action::Close` was performed.
    closed: bool,
    /// The earliest deadline of this session in the worker's heap.
    pub(crate) scheduled: Option<Instant>,
    /// The session is in the worker's list of sessions to revisit.
    pub(crate) queued: bool,
    /// Which side to read first next time, alternated for fairness.
    upstream_first: bool,
}

/// Where a session stands after [`Conn::drive`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Drive {
    /// The session waits; `more` when it stopped on its budget rather than on readiness.
    Open { more: bool },
    /// The session closed: remove it.
    Closed,
}

impl Conn {
    /// Returns the IO side of a session accepted on `client` (already registered).
    pub(crate) fn new(session: Session, client: TcpStream, slot: usize, generation: usize) -> Conn {
        Conn {
            session,
            slot,
            generation,
            client: Side::new(client),
            upstream: None,
            connecting: None,
            resolving: None,
            tunnel: None,
            closed: false,
            scheduled: None,
            queued: false,
            upstream_first: false,
        }
    }

    /// Handles readiness of `peer`'s socket: records it, or completes a connect attempt.
    pub(crate) fn on_ready(&mut self, ctx: &mut Ctx<'_>, peer: Peer, event: &Event) {
        match peer {
            Peer::Client => self.client.on_event(event),
            Peer::Upstream => {
                if self.connecting.is_some() {
                    self.finish_connect(ctx.now);
                } else if let Some(upstream) = self.upstream.as_mut() {
                    upstream.on_event(event);
                }
            }
        }
    }

    /// Handles a resolver answer; one for a lookup since replaced is ignored.
    pub(crate) fn on_resolved(&mut self, ctx: &mut Ctx<'_>, answer: Answer) {
        if self.resolving != Some(answer.ticket) {
            return;
        }
        self.resolving = None;
        let result = answer.result.as_deref().map_err(|e| *e);
        self.session.handle_resolved(ctx.now, answer.ticket, result);
    }

    /// Runs the drive contract until nothing can move: performs every action, forwards every
    /// event, writes what core queued, and reads or splices what is ready, handing each
    /// result to core.
    pub(crate) fn drive(&mut self, ctx: &mut Ctx<'_>) -> Drive {
        let mut budget = IO_BUDGET;
        loop {
            while let Some(action) = self.session.poll_action() {
                self.perform(ctx, action);
            }
            while let Some(event) = self.session.poll_event() {
                ctx.shared.events.send(event);
            }
            if self.closed {
                return Drive::Closed;
            }
            if self.flush(ctx.now) {
                continue;
            }
            if budget == 0 {
                return Drive::Open { more: true };
            }
            budget -= 1;
            if !self.step(ctx) {
                return Drive::Open { more: false };
            }
        }
    }

    fn perform(&mut self, ctx: &mut Ctx<'_>, action: Action) {
        let now = ctx.now;
        match action {
            Action::Resolve { ticket, name } => self.resolve(ctx, ticket, name),
            Action::Connect { ticket, addr } => self.connect(ctx, ticket, addr),
            Action::Disconnect => self.upstream = None,
            Action::Shutdown => {
                let _ = self.client.stream.shutdown(Shutdown::Write);
            }
            Action::Splice => match self.upstream {
                Some(_) => self.tunnel = Some(Tunnel::new()),
                None => self
                    .session
                    .handle_splice_end(now, SpliceEnd::Failed(Peer::Upstream)),
            },
            Action::Close(how) => {
                match how {
                    Close::Reset => {
                        let _ = sys::set_reset_on_close(&self.client.stream);
                    }
                    Close::Graceful => {}
                }
                // Pipes still holding bytes close with the tunnel; empty ones are already
                // back in the pool.
                self.tunnel = None;
                self.upstream = None;
                self.connecting = None;
                self.resolving = None;
                self.closed = true;
            }
        }
    }

    fn resolve(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, name: Box<str>) {
        if let Some(answer) = ctx.shared.resolver.lookup_static(&name) {
            self.resolving = None;
            let result = answer.as_deref().map_err(|e| *e);
            self.session.handle_resolved(ctx.now, ticket, result);
            return;
        }
        self.resolving = Some(ticket);
        let job = Job {
            name,
            slot: self.slot,
            generation: self.generation,
            ticket,
            mailbox: ctx.mailbox.clone(),
        };
        if ctx.resolver.submit(job).is_err() {
            tracing::debug!("resolver queue full");
            self.resolving = None;
            let failed = Err(ResolveError::Failed);
            self.session.handle_resolved(ctx.now, ticket, failed);
        }
    }

    /// Starts a connect attempt, replacing any in progress and any leftover upstream (core
    /// emits `Disconnect` first for one it knows about).
    fn connect(&mut self, ctx: &mut Ctx<'_>, ticket: Ticket, addr: SocketAddr) {
        self.connecting = None;
        self.upstream = None;
        let token = token::session(self.slot, self.generation, Peer::Upstream);
        let opened = TcpStream::connect(addr).and_then(|mut stream| {
            let _ = sys::set_nodelay(&stream);
            if let Some(idle) = ctx.shared.keepalive {
                let _ = sys::set_keepalive(&stream, idle);
            }
            // Completion is signalled as writability.
            let interest = Interest::READABLE | Interest::WRITABLE;
            ctx.registry.register(&mut stream, token, interest)?;
            Ok(stream)
        });
        match opened {
            Ok(stream) => self.connecting = Some(Connecting { ticket, stream }),
            Err(error) => {
                let failed = Err(egret_rt_common::net::connect_error(&error));
                self.session.handle_connected(ctx.now, ticket, failed);
            }
        }
    }

    /// Reports the outcome of the connect attempt once it has one; a wake-up before the
    /// handshake ended (`peer_addr` says not connected, without an error) is ignored.
    fn finish_connect(&mut self, now: Instant) {
        let Some(connecting) = self.connecting.as_ref() else {
            return;
        };
        let outcome = match connecting.stream.take_error() {
            Ok(Some(error)) | Err(error) => Err(egret_rt_common::net::connect_error(&error)),
            Ok(None) => match connecting.stream.peer_addr() {
                Ok(_) => Ok(()),
                Err(error) if error.kind() == io::ErrorKind::NotConnected => return,
                Err(error) => Err(egret_rt_common::net::connect_error(&error)),
            },
        };
        let Some(Connecting { ticket, stream }) = self.connecting.take() else {
            return;
        };
        if outcome.is_ok() {
            self.upstream = Some(Side::new(stream));
        }
        self.session.handle_connected(now, ticket, outcome);
    }

    /// Writes what core queued for one peer, once; returns whether core heard of it.
    fn flush(&mut self, now: Instant) -> bool {
        for peer in [Peer::Client, Peer::Upstream] {
            let side = match peer {
                Peer::Client => &mut self.client,
                Peer::Upstream => match self.upstream.as_mut() {
                    Some(side) => side,
                    None => continue,
                },
            };
            if !side.writable || side.failed {
                continue;
            }
            let pending = self.session.outbound(peer);
            if pending.is_empty() {
                continue;
            }
            match (&side.stream).write(pending) {
                Ok(n) if n > 0 => {
                    self.session.handle_written(now, peer, n);
                    return true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => side.writable = false,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => return true,
                Ok(_) | Err(_) => {
                    side.failed = true;
                    self.session.handle_io_error(now, peer);
                    return true;
                }
            }
        }
        false
    }

    /// Moves one batch: a tunnel step, or a read core asked for. Returns whether anything
    /// happened.
    fn step(&mut self, ctx: &mut Ctx<'_>) -> bool {
        if let Some(tunnel) = self.tunnel.as_mut() {
            let now = ctx.now;
            let step = match self.upstream.as_mut() {
                Some(upstream) => tunnel.step(&mut self.client, upstream, ctx.pipes, ctx.buf),
                None => Step::End(SpliceEnd::Failed(Peer::Upstream)),
            };
            return match step {
                Step::Idle => false,
                Step::Changed => true,
                Step::Moved(from, n) => {
                    self.session.handle_splice_progress(now, from, n as u64);
                    true
                }
                Step::End(end) => {
                    self.tunnel = None;
                    self.session.handle_splice_end(now, end);
                    true
                }
            };
        }
        // Bytes that arrived while core was not asking are read as soon as it asks: their edge
        // has passed and no other will come.
        let interest = self.session.interest();
        let client = interest.read_client && self.client.can_read();
        let upstream = interest.read_upstream && self.upstream.as_ref().is_some_and(Side::can_read);
        self.upstream_first = !self.upstream_first;
        let order = match self.upstream_first {
            true => [(Peer::Upstream, upstream), (Peer::Client, client)],
            false => [(Peer::Client, client), (Peer::Upstream, upstream)],
        };
        order
            .into_iter()
            .any(|(peer, wanted)| wanted && self.read(ctx, peer))
    }

    /// Reads once from `peer` and hands core the bytes, the end of stream or the error;
    /// returns false when there was nothing to read.
    fn read(&mut self, ctx: &mut Ctx<'_>, peer: Peer) -> bool {
        let now = ctx.now;
        let side = match peer {
            Peer::Client => &mut self.client,
            Peer::Upstream => match self.upstream.as_mut() {
                Some(side) => side,
                None => return false,
            },
        };
        let n = loop {
            match (&side.stream).read(ctx.buf) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    side.readable = false;
                    return false;
                }
                Err(_) => {
                    side.failed = true;
                    self.session.handle_io_error(now, peer);
                    return true;
                }
            }
        };
        if n == 0 {
            side.eof = true;
            self.session.handle_eof(now, peer);
            return true;
        }
        let data = &ctx.buf[..n];
        match peer {
            Peer::Client => self.session.handle_client_data(now, data),
            Peer::Upstream => self.session.handle_upstream_data(now, data),
        }
        true
    }
}

impl Side {
    pub(crate) fn new(stream: TcpStream) -> Side {
        // Optimistic: an accepted client has usually sent its request already, and trying
        // costs one `WouldBlock` where it has not.
        Side {
            stream,
            readable: true,
            writable: true,
            eof: false,
            failed: false,
        }
    }

    fn on_event(&mut self, event: &Event) {
        // Errors and hang-ups surface through the next read or write.
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
    }

    /// Returns whether a read may find something: readiness not used up, and no end of stream
    /// or error already reported (reading again would only repeat it).
    fn can_read(&self) -> bool {
        self.readable && !self.eof && !self.failed
    }

    /// Half-closes the socket for writing; a peer that is already gone is not an error here.
    pub(crate) fn shutdown_write(&self) {
        let _ = self.stream.shutdown(Shutdown::Write);
    }
}
