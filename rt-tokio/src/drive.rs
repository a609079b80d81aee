//! One task per session, following the drive contract: handle, drain actions, drain events,
//! write, wait.

use std::cell::RefCell;
use std::future::{Future, pending};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use egret_core::{Action, Close, Peer, ResolveError, Session, Ticket};
use egret_rt_common::sys;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::OwnedSemaphorePermit;
use tokio::task::JoinHandle;

use crate::{Context, ShutdownSignal};

/// Bytes read per wake-up; core stops asking for more long before its buffers grow large.
const READ_CHUNK: usize = 16 * 1024;

thread_local! {
    /// A read buffer per worker thread, so an idle session holds none.
    static READ_BUF: RefCell<Box<[u8]>> = RefCell::new(vec![0; READ_CHUNK].into_boxed_slice());
}

type Connecting = Pin<Box<dyn Future<Output = io::Result<TcpStream>> + Send>>;
type Resolving = JoinHandle<Result<Vec<IpAddr>, ResolveError>>;

/// The IO side of one session.
struct Io {
    client: TcpStream,
    upstream: Option<TcpStream>,
    resolving: Option<(Ticket, Resolving)>,
    connecting: Option<(Ticket, Connecting)>,
    /// Writes to these peers hit `WouldBlock`: wait for writability.
    blocked: [bool; 2],
}

/// What woke the session up.
enum Wake {
    Readable(Peer),
    Writable(Peer),
    Resolved(Ticket, Result<Vec<IpAddr>, ResolveError>),
    Connected(Ticket, io::Result<TcpStream>),
    Timeout,
    Shutdown,
}

/// Runs a session to completion.
pub(crate) async fn drive(
    mut session: Session,
    client: TcpStream,
    ctx: Arc<Context>,
    mut shutdown: ShutdownSignal,
    permit: OwnedSemaphorePermit,
) {
    ctx.stats.active_sessions.fetch_add(1, Ordering::Relaxed);
    let _ = sys::set_nodelay(&client);
    if let Some(idle) = ctx.keepalive {
        let _ = sys::set_keepalive(&client, idle);
    }
    let mut io = Io {
        client,
        upstream: None,
        resolving: None,
        connecting: None,
        blocked: [false; 2],
    };
    let mut shutdown_seen = false;
    if let Some(deadline) = *shutdown.borrow_and_update() {
        session.handle_shutdown(Instant::now(), deadline);
        shutdown_seen = true;
    }
    loop {
        if let Some(how) = perform_actions(&mut session, &mut io, &ctx, &mut shutdown).await {
            forward_events(&mut session, &ctx);
            if how == Close::Reset {
                let _ = sys::set_reset_on_close(&io.client);
            }
            break;
        }
        forward_events(&mut session, &ctx);
        if flush(&mut session, &mut io) {
            continue;
        }
        let wake = wait(&session, &mut io, &mut shutdown, shutdown_seen).await;
        let now = Instant::now();
        match wake {
            Wake::Readable(peer) => read(&mut session, &io, peer, now),
            Wake::Writable(peer) => io.blocked[peer as usize] = false,
            Wake::Resolved(ticket, result) => {
                io.resolving = None;
                session.handle_resolved(now, ticket, result.as_deref().map_err(|e| *e));
            }
            Wake::Connected(ticket, result) => {
                io.connecting = None;
                match result {
                    Ok(stream) => {
                        io.upstream = Some(stream);
                        io.blocked[Peer::Upstream as usize] = false;
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
            Wake::Shutdown => {
                shutdown_seen = true;
                if let Some(deadline) = *shutdown.borrow_and_update() {
                    session.handle_shutdown(now, deadline);
                }
            }
        }
    }
    ctx.stats.active_sessions.fetch_sub(1, Ordering::Relaxed);
    drop(permit);
}

/// Performs every pending action; returns how to close when the session has ended.
async fn perform_actions(
    session: &mut Session,
    io: &mut Io,
    ctx: &Context,
    shutdown: &mut ShutdownSignal,
) -> Option<Close> {
    while let Some(action) = session.poll_action() {
        match action {
            Action::Resolve { ticket, name } => match ctx.resolver.lookup_static(&name) {
                Some(answer) => {
                    let now = Instant::now();
                    session.handle_resolved(now, ticket, answer.as_deref().map_err(|e| *e));
                }
                None => {
                    let resolver = ctx.resolver.clone();
                    let lookup = tokio::task::spawn_blocking(move || resolver.lookup(&name));
                    io.resolving = Some((ticket, lookup));
                }
            },
            Action::Connect { ticket, addr } => {
                io.connecting = Some((ticket, Box::pin(connect(addr, ctx.keepalive))));
            }
            Action::Disconnect => io.upstream = None,
            Action::Shutdown => {
                let _ = socket2::SockRef::from(&io.client).shutdown(std::net::Shutdown::Write);
            }
            Action::Splice => {
                let Some(upstream) = io.upstream.as_ref() else {
                    session.handle_splice_end(
                        Instant::now(),
                        egret_core::SpliceEnd::Failed(Peer::Upstream),
                    );
                    continue;
                };
                crate::splice::run(session, &io.client, upstream, ctx, shutdown).await;
            }
            Action::Close(how) => return Some(how),
        }
    }
    None
}

fn forward_events(session: &mut Session, ctx: &Context) {
    while let Some(event) = session.poll_event() {
        ctx.events.send(event);
    }
}

/// Writes what core has queued until done or blocked; returns whether anything was written
/// (new actions may then be pending).
fn flush(session: &mut Session, io: &mut Io) -> bool {
    let mut progress = false;
    for peer in [Peer::Client, Peer::Upstream] {
        let stream = match peer {
            Peer::Client => &io.client,
            Peer::Upstream => match &io.upstream {
                Some(stream) => stream,
                None => continue,
            },
        };
        while !io.blocked[peer as usize] {
            let pending = session.outbound(peer);
            if pending.is_empty() {
                break;
            }
            match stream.try_write(pending) {
                Ok(n) => {
                    session.handle_written(Instant::now(), peer, n);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => io.blocked[peer as usize] = true,
                Err(_) => {
                    session.handle_io_error(Instant::now(), peer);
                    return true;
                }
            }
        }
    }
    progress
}

async fn wait(
    session: &Session,
    io: &mut Io,
    shutdown: &mut ShutdownSignal,
    shutdown_seen: bool,
) -> Wake {
    let interest = session.interest();
    let deadline = session.poll_timeout();
    let write_client = io.blocked[0] && !session.outbound(Peer::Client).is_empty();
    let write_upstream = io.blocked[1] && !session.outbound(Peer::Upstream).is_empty();
    let upstream = io.upstream.as_ref();
    tokio::select! {
        r = io.client.readable(), if interest.read_client => match r {
            Ok(()) => Wake::Readable(Peer::Client),
            Err(_) => Wake::Readable(Peer::Client),
        },
        _ = io.client.writable(), if write_client => Wake::Writable(Peer::Client),
        _ = ready(upstream, true), if interest.read_upstream && upstream.is_some() => {
            Wake::Readable(Peer::Upstream)
        }
        _ = ready(upstream, false), if write_upstream && upstream.is_some() => {
            Wake::Writable(Peer::Upstream)
        }
        result = resolved(&mut io.resolving), if io.resolving.is_some() => result,
        result = connected(&mut io.connecting), if io.connecting.is_some() => result,
        _ = crate::sleep_until(deadline), if deadline.is_some() => Wake::Timeout,
        _ = shutdown.changed(), if !shutdown_seen => Wake::Shutdown,
    }
}

async fn ready(stream: Option<&TcpStream>, read: bool) {
    match (stream, read) {
        (Some(stream), true) => {
            let _ = stream.readable().await;
        }
        (Some(stream), false) => {
            let _ = stream.writable().await;
        }
        (None, _) => pending().await,
    }
}

async fn resolved(resolving: &mut Option<(Ticket, Resolving)>) -> Wake {
    let Some((ticket, handle)) = resolving else {
        return pending().await;
    };
    let result = handle.await.unwrap_or(Err(ResolveError::Failed));
    Wake::Resolved(*ticket, result)
}

async fn connected(connecting: &mut Option<(Ticket, Connecting)>) -> Wake {
    let Some((ticket, future)) = connecting else {
        return pending().await;
    };
    let result = future.await;
    Wake::Connected(*ticket, result)
}

/// Reads once from `peer` and hands the bytes, the end of stream or the error to core.
fn read(session: &mut Session, io: &Io, peer: Peer, now: Instant) {
    let stream = match peer {
        Peer::Client => &io.client,
        Peer::Upstream => match &io.upstream {
            Some(stream) => stream,
            None => return,
        },
    };
    READ_BUF.with(|buf| {
        let mut buf = buf.borrow_mut();
        match stream.try_read(&mut buf) {
            Ok(0) => session.handle_eof(now, peer),
            Ok(n) => match peer {
                Peer::Client => session.handle_client_data(now, &buf[..n]),
                Peer::Upstream => session.handle_upstream_data(now, &buf[..n]),
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(_) => session.handle_io_error(now, peer),
        }
    });
}

async fn connect(
    addr: SocketAddr,
    keepalive: Option<std::time::Duration>,
) -> io::Result<TcpStream> {
    let socket = match addr {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.set_nodelay(true)?;
    let stream = socket.connect(addr).await?;
    if let Some(idle) = keepalive {
        let _ = sys::set_keepalive(&stream, idle);
    }
    Ok(stream)
}
