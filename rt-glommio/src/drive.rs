//! One task per session, following the drive contract: handle, drain actions, drain events,
//! write, wait.
//!
//! # Waiting without losing bytes
//! Each wake-up is one future, [`wait`], polled by hand over everything the session waits on:
//! the drain, its deadline, a lookup, a connect, writes of core's outbound bytes, and the
//! reads core asks for. It completes with the first of them that is ready, carrying what
//! happened, and the drive loop hands that to core before anything else is polled.
//!
//! glommio's streams are readiness-based underneath: `poll_read` either copies bytes that
//! are already in the socket into the buffer it is given and returns their count, or arms a
//! readability poll in the ring and returns `Pending` having taken nothing; `poll_write`
//! likewise sends or arms a writability poll. A read therefore completes inside one call to
//! `poll`, into a per-executor scratch buffer, and [`wait`] returns at once with its length;
//! no `await` separates that from `handle_client_data`/`handle_upstream_data`, so no other
//! task can touch the buffer in between. When [`wait`] is dropped after something else
//! completed first, what is dropped is a registration, never bytes. One read per side is
//! outstanding at most (glommio keeps one readability poll per stream).

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr};
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use egret_core::{Action, Close, Interest, Peer, ResolveError, Session, SpliceEnd, Ticket};
use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::executor::{SessionGuard, Worker};
use crate::resolver::Lookup;
use crate::shared::{Alarm, Budget, DrainWatch, Place, Shared};

/// Bytes read per wake-up; core stops asking for more long before its buffers grow large.
const READ_CHUNK: usize = 16 * 1024;
/// The scratch buffer: a tunnel moves up to this much per read.
pub(crate) const SCRATCH_LEN: usize = 64 * 1024;

thread_local! {
    /// A buffer per executor thread, so an idle session holds none.
    static SCRATCH: RefCell<Box<[u8]>> = RefCell::new(vec![0; SCRATCH_LEN].into_boxed_slice());
}

/// Runs `f` on the executor's scratch buffer.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut [u8]) -> R) -> R {
    SCRATCH.with(|buf| f(&mut buf.borrow_mut()))
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>>>>;

/// The IO side of one session.
pub(crate) struct Io {
    pub(crate) client: TcpStream,
    pub(crate) upstream: Option<TcpStream>,
    resolving: Option<(Ticket, Lookup)>,
    connecting: Option<(Ticket, Connecting)>,
    pub(crate) alarm: Alarm,
    pub(crate) drain: DrainWatch,
    /// Whether core has been told of the drain.
    pub(crate) draining: bool,
    /// Which side's read is polled first, alternating for fairness.
    upstream_first: bool,
}

/// What woke the session up.
enum Wake {
    /// Bytes from `peer` wait in the scratch buffer.
    Data(Peer, usize),
    Eof(Peer),
    /// A read or write on `peer` failed.
    Failed(Peer),
    Written(Peer, usize),
    Resolved(Ticket, Result<Vec<IpAddr>, ResolveError>),
    Connected(Ticket, io::Result<TcpStream>),
    Timeout,
    Shutdown(Instant),
}

/// Runs a session to completion.
pub(crate) async fn drive(
    mut session: Session,
    client: TcpStream,
    worker: Rc<Worker>,
    guard: SessionGuard,
    place: Place,
) {
    let shared = &worker.shared;
    let mut io = Io {
        client,
        upstream: None,
        resolving: None,
        connecting: None,
        alarm: Alarm::default(),
        drain: worker.drain.watch(),
        draining: false,
        upstream_first: false,
    };
    let mut now = Instant::now();
    if let Some(deadline) = worker.drain.deadline() {
        session.handle_shutdown(now, deadline);
        io.draining = true;
    }
    let mut budget = Budget::default();
    let mut suspended = true;
    loop {
        if let Some(how) = perform_actions(&mut session, &mut io, shared).await {
            forward_events(&mut session, shared);
            if how == Close::Reset {
                crate::fd::set_reset_on_close(&io.client);
            }
            break;
        }
        forward_events(&mut session, shared);
        budget.spend(suspended).await;
        io.alarm.set(session.poll_timeout(), now);
        let (wake, at, waited) = wait(&session, &mut io).await;
        (now, suspended) = (at, waited);
        handle(&mut session, &mut io, wake, now);
    }
    // Closing happens here, when the streams drop: a FIN, or the reset set up above.
    drop(io);
    drop(guard);
    drop(place);
}

/// Performs every pending action; returns how to close when the session has ended.
async fn perform_actions(session: &mut Session, io: &mut Io, shared: &Shared) -> Option<Close> {
    while let Some(action) = session.poll_action() {
        match action {
            Action::Resolve { ticket, name } => match shared.resolver.lookup_static(&name) {
                Some(answer) => {
                    let now = Instant::now();
                    session.handle_resolved(now, ticket, answer.as_deref().map_err(|e| *e));
                }
                None => io.resolving = Some((ticket, shared.lookups.lookup(name))),
            },
            Action::Connect { ticket, addr } => {
                io.connecting = Some((ticket, Box::pin(connect(addr, shared.keepalive))));
            }
            Action::Disconnect => io.upstream = None,
            Action::Shutdown => {
                let _ = io.client.shutdown(Shutdown::Write).await;
            }
            Action::Splice => {
                let Some(upstream) = io.upstream.as_mut() else {
                    session.handle_splice_end(Instant::now(), SpliceEnd::Failed(Peer::Upstream));
                    continue;
                };
                let sides = crate::tunnel::Sides {
                    client: &mut io.client,
                    upstream,
                    alarm: &mut io.alarm,
                    drain: &mut io.drain,
                    draining: &mut io.draining,
                };
                crate::tunnel::run(session, sides, shared).await;
            }
            Action::Close(how) => return Some(how),
        }
    }
    None
}

fn forward_events(session: &mut Session, shared: &Shared) {
    while let Some(event) = session.poll_event() {
        shared.events.send(event);
    }
}

/// Waits for the next thing to happen; returns it with the clock read for it and whether
/// the task had to suspend.
async fn wait(session: &Session, io: &mut Io) -> (Wake, Instant, bool) {
    let interest = session.interest();
    let deadline = session.poll_timeout();
    io.upstream_first = !io.upstream_first;
    let mut polls = 0u32;
    poll_fn(|cx| {
        polls += 1;
        let now = Instant::now();
        poll_wake(session, io, interest, deadline, now, cx).map(|wake| (wake, now, polls > 1))
    })
    .await
}

/// Polls everything once, in a fixed order; the first thing ready wins.
fn poll_wake(
    session: &Session,
    io: &mut Io,
    interest: Interest,
    deadline: Option<Instant>,
    now: Instant,
    cx: &mut Context<'_>,
) -> Poll<Wake> {
    if !io.draining {
        if let Poll::Ready(deadline) = io.drain.poll(cx) {
            return Poll::Ready(Wake::Shutdown(deadline));
        }
    }
    if deadline.is_some_and(|at| at <= now) {
        return Poll::Ready(Wake::Timeout);
    }
    if let Some((ticket, lookup)) = &mut io.resolving {
        if let Poll::Ready(answer) = lookup.poll(cx) {
            return Poll::Ready(Wake::Resolved(*ticket, answer));
        }
    }
    if let Some((ticket, connecting)) = &mut io.connecting {
        if let Poll::Ready(result) = connecting.as_mut().poll(cx) {
            return Poll::Ready(Wake::Connected(*ticket, result));
        }
    }
    for peer in [Peer::Client, Peer::Upstream] {
        let pending = session.outbound(peer);
        if pending.is_empty() {
            continue;
        }
        let Some(stream) = io.stream(peer) else {
            continue;
        };
        match Pin::new(stream).poll_write(cx, pending) {
            Poll::Ready(Ok(n)) => return Poll::Ready(Wake::Written(peer, n)),
            Poll::Ready(Err(_)) => return Poll::Ready(Wake::Failed(peer)),
            Poll::Pending => {}
        }
    }
    let reads = match io.upstream_first {
        true => [Peer::Upstream, Peer::Client],
        false => [Peer::Client, Peer::Upstream],
    };
    for peer in reads {
        let wanted = match peer {
            Peer::Client => interest.read_client,
            Peer::Upstream => interest.read_upstream,
        };
        if !wanted {
            continue;
        }
        let Some(stream) = io.stream(peer) else {
            continue;
        };
        let read = with_scratch(|buf| Pin::new(stream).poll_read(cx, &mut buf[..READ_CHUNK]));
        match read {
            Poll::Ready(Ok(0)) => return Poll::Ready(Wake::Eof(peer)),
            Poll::Ready(Ok(n)) => return Poll::Ready(Wake::Data(peer, n)),
            Poll::Ready(Err(_)) => return Poll::Ready(Wake::Failed(peer)),
            Poll::Pending => {}
        }
    }
    match io.alarm.poll(cx) {
        Poll::Ready(()) => Poll::Ready(Wake::Timeout),
        Poll::Pending => Poll::Pending,
    }
}

/// Hands what happened to core.
fn handle(session: &mut Session, io: &mut Io, wake: Wake, now: Instant) {
    match wake {
        Wake::Data(peer, n) => with_scratch(|buf| match peer {
            Peer::Client => session.handle_client_data(now, &buf[..n]),
            Peer::Upstream => session.handle_upstream_data(now, &buf[..n]),
        }),
        Wake::Eof(peer) => session.handle_eof(now, peer),
        Wake::Failed(peer) => session.handle_io_error(now, peer),
        Wake::Written(peer, n) => session.handle_written(now, peer, n),
        Wake::Resolved(ticket, answer) => {
            io.resolving = None;
            session.handle_resolved(now, ticket, answer.as_deref().map_err(|e| *e));
        }
        Wake::Connected(ticket, result) => {
            io.connecting = None;
            match result {
                Ok(stream) => {
                    io.upstream = Some(stream);
                    session.handle_connected(now, ticket, Ok(()));
                }
                Err(error) => session.handle_connected(
                    now,
                    ticket,
                    Err(egret_rt_common::net::connect_error(&error)),
                ),
            }
        }
        Wake::Timeout => session.handle_timeout(now),
        Wake::Shutdown(deadline) => {
            io.draining = true;
            session.handle_shutdown(now, deadline);
        }
    }
}

impl Io {
    fn stream(&mut self, peer: Peer) -> Option<&mut TcpStream> {
        match peer {
            Peer::Client => Some(&mut self.client),
            Peer::Upstream => self.upstream.as_mut(),
        }
    }
}

/// Connects to `addr`, an address core checked: no name is looked up here.
async fn connect(addr: SocketAddr, keepalive: Option<Duration>) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(addr).await?;
    let _ = stream.set_nodelay(true);
    if let Some(idle) = keepalive {
        crate::fd::set_keepalive(&stream, idle);
    }
    Ok(stream)
}
