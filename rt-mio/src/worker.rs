//! One worker: an event loop over its own listeners and sessions.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use egret_core::{Accepted, Gateway, ListenerKind, Peer};
use egret_rt_common::{ListenerSpec, sys};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll};
use slab::Slab;

use crate::Shared;
use crate::conn::{Conn, Ctx, Drive};
use crate::resolver::{Mailbox, ResolverHandle};
use crate::splice::PipePool;
use crate::token::{self, Target};

/// Bytes read per read call; core stops asking for more long before its buffers grow large.
const READ_CHUNK: usize = 16 * 1024;
/// Connections accepted per listener per wake-up before the worker serves its sessions.
const ACCEPT_BUDGET: usize = 64;
/// How long to stop accepting after an accept failure (such as running out of descriptors).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Readiness events taken per poll.
const EVENTS: usize = 1024;

/// A worker's state; [`run`](Self::run) is its thread.
#[derive(Debug)]
pub(crate) struct Worker {
    index: usize,
    poll: Poll,
    gateway: Gateway,
    listeners: Vec<Listener>,
    conns: Slab<Conn>,
    /// Session deadlines, earliest first: `(at, slot, generation)`. An entry whose session
    /// has since moved its deadline is skipped when it comes up.
    deadlines: BinaryHeap<Reverse<(Instant, usize, usize)>>,
    /// Sessions that stopped on their IO budget, to drive again before waiting.
    ready: Vec<(usize, usize)>,
    shared: Arc<Shared>,
    resolver: ResolverHandle,
    mailbox: Arc<Mailbox>,
    buf: Box<[u8]>,
    pipes: PipePool,
    next_generation: usize,
    /// A shutdown was seen: the listeners are closed and sessions are draining.
    draining: bool,
    /// The connection limit was reached this wake-up; a freed place wakes the worker.
    paused: bool,
    /// No accepting until then, after an accept failure.
    backoff_until: Option<Instant>,
    last_accept_warning: Option<Instant>,
}

/// One of the worker's listening sockets.
#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    spec: ListenerSpec,
    /// No accept has hit `WouldBlock` since the last readable edge.
    ready: bool,
}

impl Worker {
    /// Returns worker `index` with its listeners registered on `poll`.
    pub(crate) fn new(
        index: usize,
        poll: Poll,
        listeners: Vec<(std::net::TcpListener, ListenerSpec)>,
        gateway: Gateway,
        shared: Arc<Shared>,
        resolver: ResolverHandle,
        mailbox: Arc<Mailbox>,
    ) -> io::Result<Worker> {
        let mut registered = Vec::with_capacity(listeners.len());
        for (position, (socket, spec)) in listeners.into_iter().enumerate() {
            let mut socket = TcpListener::from_std(socket);
            let token = token::listener(position);
            poll.registry()
                .register(&mut socket, token, Interest::READABLE)?;
            registered.push(Listener {
                socket,
                spec,
                ready: true,
            });
        }
        Ok(Worker {
            index,
            poll,
            gateway,
            listeners: registered,
            conns: Slab::new(),
            deadlines: BinaryHeap::new(),
            ready: Vec::new(),
            shared,
            resolver,
            mailbox,
            buf: vec![0; READ_CHUNK].into_boxed_slice(),
            pipes: PipePool::new(),
            next_generation: 0,
            draining: false,
            paused: false,
            backoff_until: None,
            last_accept_warning: None,
        })
    }

    /// Serves until a shutdown has been seen and the last session has ended.
    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(EVENTS);
        loop {
            let timeout = self.poll_timeout(Instant::now());
            if let Err(error) = self.poll.poll(&mut events, timeout) {
                if error.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                tracing::error!(worker = self.index, %error, "poll failed; worker stops");
                return;
            }
            let now = Instant::now();
            let mut woken = false;
            for event in &events {
                match token::decode(event.token()) {
                    Target::Waker => woken = true,
                    Target::Listener(position) => {
                        if let Some(listener) = self.listeners.get_mut(position) {
                            listener.ready = true;
                        }
                    }
                    Target::Session {
                        slot,
                        generation,
                        peer,
                    } => self.with_conn(slot, generation, now, |conn, ctx| {
                        conn.on_ready(ctx, peer, event);
                    }),
                }
            }
            if woken {
                self.on_wake(now);
            }
            self.expire(now);
            self.revisit(now);
            self.accept(now);
            if self.draining && self.conns.is_empty() {
                return;
            }
        }
    }

    /// Returns how long to wait: not at all while there is work left over, else until the
    /// earliest session deadline or the end of an accept back-off.
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        let accept_ready = !self.paused && self.listeners.iter().any(|l| l.ready);
        let backoff = self.backoff_until.filter(|_| accept_ready);
        if !self.ready.is_empty() || (accept_ready && backoff.is_none()) {
            return Some(Duration::ZERO);
        }
        let next = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
        [next, backoff]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    /// Handles the waker: resolver answers, and the start of a shutdown.
    fn on_wake(&mut self, now: Instant) {
        for answer in self.mailbox.take() {
            let (slot, generation) = (answer.slot, answer.generation);
            self.with_conn(slot, generation, now, |conn, ctx| {
                conn.on_resolved(ctx, answer);
            });
        }
        if self.draining {
            return;
        }
        let Some(&deadline) = self.shared.shutdown.get() else {
            return;
        };
        self.draining = true;
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        let open: Vec<(usize, usize)> = self
            .conns
            .iter()
            .map(|(slot, conn)| (slot, conn.generation))
            .collect();
        for (slot, generation) in open {
            self.with_conn(slot, generation, now, |conn, ctx| {
                conn.session.handle_shutdown(ctx.now, deadline);
            });
        }
    }

    /// Calls `handle_timeout` on every session whose deadline has come.
    fn expire(&mut self, now: Instant) {
        let mut due = Vec::new();
        while let Some(&Reverse(entry)) = self.deadlines.peek() {
            if entry.0 > now {
                break;
            }
            self.deadlines.pop();
            due.push(entry);
        }
        for (at, slot, generation) in due {
            let Some(conn) = self
                .conns
                .get_mut(slot)
                .filter(|conn| conn.generation == generation)
            else {
                continue;
            };
            if conn.scheduled == Some(at) {
                conn.scheduled = None;
            }
            if conn.session.poll_timeout().is_some_and(|t| t <= now) {
                self.with_conn(slot, generation, now, |conn, ctx| {
                    conn.session.handle_timeout(ctx.now);
                });
            } else {
                // The deadline moved later: wait for the new one.
                schedule(&mut self.deadlines, conn);
            }
        }
    }

    /// Drives the sessions that stopped on their IO budget.
    fn revisit(&mut self, now: Instant) {
        for (slot, generation) in std::mem::take(&mut self.ready) {
            if let Some(conn) = self.conn_mut(slot, generation) {
                conn.queued = false;
                self.with_conn(slot, generation, now, |_, _| {});
            }
        }
    }

    /// Accepts while below the connection limit. At the limit, connections wait in the
    /// backlog; the edge that announced them has passed, so accepting resumes when a freed
    /// place wakes the worker rather than on a new edge.
    fn accept(&mut self, now: Instant) {
        self.paused = false;
        if self.draining || self.backoff_until.is_some_and(|until| now < until) {
            return;
        }
        self.backoff_until = None;
        for position in 0..self.listeners.len() {
            let mut budget = ACCEPT_BUDGET;
            while self.listeners[position].ready && budget > 0 {
                if !self.shared.capacity.reserve(self.index) {
                    self.paused = true;
                    return;
                }
                match self.listeners[position].socket.accept() {
                    Ok((stream, client)) => {
                        budget -= 1;
                        self.admit(position, stream, client, now);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        self.shared.capacity.release();
                        self.listeners[position].ready = false;
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                        self.shared.capacity.release();
                    }
                    Err(error) => {
                        self.shared.capacity.release();
                        self.accept_failed(position, &error, now);
                        return;
                    }
                }
            }
        }
    }

    /// Starts a session for an accepted connection that holds a place under the limit.
    fn admit(&mut self, position: usize, mut stream: TcpStream, client: SocketAddr, now: Instant) {
        let spec = self.listeners[position].spec;
        let local = stream.local_addr().unwrap_or(spec.addr);
        let original_dst = match spec.kind {
            ListenerKind::Explicit => None,
            ListenerKind::TransparentHttp | ListenerKind::TransparentTls => {
                egret_rt_common::original_dst(&stream, local)
            }
        };
        let _ = sys::set_nodelay(&stream);
        if let Some(idle) = self.shared.keepalive {
            let _ = sys::set_keepalive(&stream, idle);
        }
        let slot = self.conns.vacant_key();
        let generation = self.next_generation;
        let registered = match slot < token::MAX_SLOTS {
            true => self.poll.registry().register(
                &mut stream,
                token::session(slot, generation, Peer::Client),
                Interest::READABLE | Interest::WRITABLE,
            ),
            false => Err(io::Error::other("too many sessions on one worker")),
        };
        if let Err(error) = registered {
            self.shared.capacity.release();
            self.accept_failed(position, &error, now);
            return;
        }
        self.next_generation = token::next_generation(generation);
        let session = self.gateway.accept(
            now,
            Accepted {
                client,
                local,
                listener: spec.kind,
                original_dst,
            },
        );
        let inserted = self
            .conns
            .insert(Conn::new(session, stream, slot, generation));
        debug_assert_eq!(inserted, slot);
        self.shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.shared
            .stats
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        self.with_conn(slot, generation, now, |_, _| {});
    }

    /// Counts an accept failure, says so at most once a second, and backs off briefly rather
    /// than spinning on a condition (out of descriptors) that persists.
    fn accept_failed(&mut self, position: usize, error: &io::Error, now: Instant) {
        self.shared
            .stats
            .accept_errors
            .fetch_add(1, Ordering::Relaxed);
        let quiet = self
            .last_accept_warning
            .is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1));
        if !quiet {
            let listener = self.listeners.get(position).map(|l| l.spec.addr);
            tracing::warn!(worker = self.index, ?listener, %error, "accept failed");
            self.last_accept_warning = Some(now);
        }
        self.backoff_until = Some(now + ACCEPT_BACKOFF);
    }

    /// Feeds one input to a live session (stale `generation`: ignored), then drives it and
    /// files the outcome: removal, a deadline, a revisit.
    fn with_conn(
        &mut self,
        slot: usize,
        generation: usize,
        now: Instant,
        input: impl FnOnce(&mut Conn, &mut Ctx<'_>),
    ) {
        let Some(conn) = self
            .conns
            .get_mut(slot)
            .filter(|conn| conn.generation == generation)
        else {
            return;
        };
        let mut ctx = Ctx {
            now,
            registry: self.poll.registry(),
            shared: &self.shared,
            resolver: &self.resolver,
            mailbox: &self.mailbox,
            buf: &mut self.buf,
            pipes: &mut self.pipes,
        };
        input(conn, &mut ctx);
        match conn.drive(&mut ctx) {
            Drive::Open { more } => {
                schedule(&mut self.deadlines, conn);
                if more && !conn.queued {
                    conn.queued = true;
                    self.ready.push((slot, generation));
                }
            }
            Drive::Closed => {
                // Dropping the entry closes its sockets and any pipe still holding bytes.
                self.conns.remove(slot);
                self.shared
                    .stats
                    .active_sessions
                    .fetch_sub(1, Ordering::Relaxed);
                self.shared.capacity.release();
                self.compact_deadlines();
            }
        }
    }

    /// Drops the heap entries of sessions that have ended once they outnumber the live ones:
    /// short sessions would otherwise leave an entry each until their last deadline passed.
    fn compact_deadlines(&mut self) {
        if self.deadlines.len() <= 2 * self.conns.len() + 1024 {
            return;
        }
        let conns = &self.conns;
        self.deadlines.retain(|Reverse((at, slot, generation))| {
            conns
                .get(*slot)
                .is_some_and(|conn| conn.generation == *generation && conn.scheduled == Some(*at))
        });
    }

    fn conn_mut(&mut self, slot: usize, generation: usize) -> Option<&mut Conn> {
        self.conns
            .get_mut(slot)
            .filter(|conn| conn.generation == generation)
    }
}

/// Puts the session's deadline in the heap unless an entry at or before it is there already
/// (that entry, when it comes up, files the later one). One live entry per session keeps the
/// heap small although every tunnel read moves the idle deadline.
fn schedule(deadlines: &mut BinaryHeap<Reverse<(Instant, usize, usize)>>, conn: &mut Conn) {
    let Some(at) = conn.session.poll_timeout() else {
        return;
    };
    if conn.scheduled.is_some_and(|scheduled| scheduled <= at) {
        return;
    }
    deadlines.push(Reverse((at, conn.slot, conn.generation)));
    conn.scheduled = Some(at);
}
