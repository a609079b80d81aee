//! Drives Egret sessions on raw mio: one thread per core, each with its own event loop, its own
//! `SO_REUSEPORT` listeners and its own sessions, sharing nothing on the data path.
//!
//! The adapter only does IO, following the drive contract of [`egret_core::Session`]. It never
//! parses a byte, chooses a status code, keeps a protocol timer or connects to a name: core
//! decides and hands it addresses.
//!
//! # What it does
//! - **Workers.** [`start`] binds, for every configured listener, one `SO_REUSEPORT` socket per
//!   worker (a port-0 listener takes the port the first worker got), so the kernel spreads
//!   connections across workers. Each worker owns a `mio::Poll`, an [`egret_core::Gateway`]
//!   (its index is the gateway's worker id) and a slab of sessions.
//! - **Readiness.** Sockets are registered once for reading and writing, edge-triggered. A
//!   worker keeps per-socket readiness flags, reads and writes until `WouldBlock`, and reads
//!   again on its own when core asks for bytes that arrived while it was not asking: no new
//!   edge would come for them.
//! - **Timers.** A per-worker heap of session deadlines gives the poll timeout; entries made
//!   stale by a session's newer deadline are skipped when they come up.
//! - **DNS and connects.** Static answers are given inline; other names go to a small resolver
//!   pool that posts answers back to the asking worker's mailbox and wakes it. Connects are
//!   non-blocking and complete on writability.
//! - **Tunnels.** After core's `Splice`, bytes move socket → pipe → socket with `splice(2)`
//!   (a user-space copy where splice is unsupported); pipes come from a per-worker pool only
//!   while bytes are in flight.
//! - **Limits and drain.** `max_connections` holds across workers: at the limit workers leave
//!   connections in the backlog and resume when a session ends anywhere. [`Server::shutdown`]
//!   closes every listener and starts the drain of every session; workers exit once their
//!   last session has ended.
//!
//! # The drive loop, per wake-up
//! ```text
//! poll(timeout = earliest session deadline)       // then read the clock once
//! for each event: set readiness flags, complete connects, then drive that session
//! resolver answers → handle_resolved; shutdown → handle_shutdown on every session
//! due deadlines → handle_timeout; accept while below the limit
//! drive(session):
//!     loop { drain poll_action (perform), drain poll_event (forward),
//!            write outbound once → handle_written, or else read / splice once → handle_* }
//!     until nothing can move (or the per-wake-up budget is spent: the session is revisited)
//! ```

mod conn;
mod resolver;
mod splice;
mod token;
mod worker;

use std::io;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_core::Gateway;
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};
use mio::{Poll, Waker};

use crate::resolver::{Mailbox, ResolverPool};
use crate::worker::Worker;

/// Binds one `SO_REUSEPORT` listener per worker and listener spec, and starts the workers.
pub fn start(config: ServerConfig) -> io::Result<Box<dyn Server>> {
    let threads = egret_rt_common::worker_threads(config.threads);
    let mut polls = Vec::with_capacity(threads);
    let mut wakers = Vec::with_capacity(threads);
    for _ in 0..threads {
        let poll = Poll::new()?;
        wakers.push(Arc::new(Waker::new(poll.registry(), token::WAKER)?));
        polls.push(poll);
    }
    let (bound, mut sockets) = bind_all(&config.listeners, threads)?;
    let (resolver, resolver_handle) = ResolverPool::start(config.resolver.clone())?;
    let shared = Arc::new(Shared {
        resolver: config.resolver.clone(),
        events: config.events.clone(),
        keepalive: config.tcp_keepalive,
        stats: config.stats.clone(),
        capacity: Capacity::new(config.max_connections, wakers.clone()),
        shutdown: OnceLock::new(),
    });
    let mut workers = Vec::with_capacity(threads);
    for (index, poll) in polls.into_iter().enumerate() {
        let listeners = std::mem::take(&mut sockets[index]);
        let gateway = Gateway::new(
            config.gateway,
            config.store.clone(),
            u16::try_from(index).unwrap_or(u16::MAX),
        );
        let mailbox = Arc::new(Mailbox::new(wakers[index].clone()));
        let spawned = Worker::new(
            index,
            poll,
            listeners.into_iter().zip(bound.iter().copied()).collect(),
            gateway,
            shared.clone(),
            resolver_handle.clone(),
            mailbox,
        )
        .and_then(|worker| {
            std::thread::Builder::new()
                .name(format!("egret-mio-{index}"))
                .spawn(move || worker.run())
        });
        match spawned {
            Ok(thread) => workers.push(thread),
            Err(error) => {
                // The workers already running have no sessions yet: stop them.
                shared.begin_shutdown(Instant::now());
                return Err(error);
            }
        }
    }
    Ok(Box::new(MioServer {
        bound,
        shared,
        workers,
        resolver,
    }))
}

/// What every worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) events: EventSink,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) stats: Arc<RuntimeStats>,
    pub(crate) capacity: Capacity,
    /// The drain deadline, once a shutdown has begun.
    pub(crate) shutdown: OnceLock<Instant>,
}

impl Shared {
    /// Sets the drain deadline (the first one wins) and wakes every worker to see it.
    fn begin_shutdown(&self, deadline: Instant) {
        let _ = self.shutdown.set(deadline);
        for waker in &self.capacity.wakers {
            let _ = waker.wake();
        }
    }
}

/// `max_connections` across all workers, with a way to wake the workers that stopped
/// accepting at the limit.
#[derive(Debug)]
pub(crate) struct Capacity {
    open: AtomicUsize,
    max: usize,
    /// Per worker: it found the limit reached and waits to be woken.
    paused: Vec<AtomicBool>,
    wakers: Vec<Arc<Waker>>,
}

impl Capacity {
    fn new(max: usize, wakers: Vec<Arc<Waker>>) -> Capacity {
        Capacity {
            open: AtomicUsize::new(0),
            max: max.max(1),
            paused: wakers.iter().map(|_| AtomicBool::new(false)).collect(),
            wakers,
        }
    }

    /// Takes a place for one more session; returns false at the limit, after which `worker`
    /// is woken when a place frees up.
    pub(crate) fn reserve(&self, worker: usize) -> bool {
        if self.try_reserve() {
            return true;
        }
        // Announce the pause before looking again: a session ending in between either sees
        // the flag and wakes us, or its place is found by the second look.
        if let Some(paused) = self.paused.get(worker) {
            paused.store(true, Ordering::SeqCst);
        }
        if self.try_reserve() {
            if let Some(paused) = self.paused.get(worker) {
                paused.store(false, Ordering::SeqCst);
            }
            return true;
        }
        false
    }

    /// Gives a place back and wakes the workers waiting for one.
    pub(crate) fn release(&self) {
        self.open.fetch_sub(1, Ordering::SeqCst);
        for (paused, waker) in self.paused.iter().zip(&self.wakers) {
            if paused.swap(false, Ordering::SeqCst) {
                let _ = waker.wake();
            }
        }
    }

    fn try_reserve(&self) -> bool {
        self.open
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |open| {
                (open < self.max).then_some(open + 1)
            })
            .is_ok()
    }
}

struct MioServer {
    bound: Vec<ListenerSpec>,
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
    resolver: ResolverPool,
}

impl Server for MioServer {
    fn local_addrs(&self) -> Vec<ListenerSpec> {
        self.bound.clone()
    }

    fn shutdown(&self, drain: Duration) {
        self.shared.begin_shutdown(Instant::now() + drain);
    }

    fn wait(self: Box<Self>) {
        let MioServer {
            workers, resolver, ..
        } = *self;
        for worker in workers {
            if worker.join().is_err() {
                tracing::error!("a mio worker panicked");
            }
        }
        resolver.join();
    }
}

/// Binds every listener once per worker; returns the bound addresses and each worker's
/// sockets, in listener order.
fn bind_all(
    specs: &[ListenerSpec],
    workers: usize,
) -> io::Result<(Vec<ListenerSpec>, Vec<Vec<std::net::TcpListener>>)> {
    let mut sockets: Vec<Vec<std::net::TcpListener>> = (0..workers).map(|_| Vec::new()).collect();
    let mut bound = Vec::with_capacity(specs.len());
    egret_rt_common::net::check_free(specs)?;
    for spec in specs {
        let mut local = None;
        for worker in &mut sockets {
            let socket = egret_rt_common::net::listener(local.unwrap_or(spec.addr), true)?;
            if local.is_none() {
                local = Some(socket.local_addr()?);
            }
            worker.push(socket);
        }
        bound.push(ListenerSpec {
            addr: local.unwrap_or(spec.addr),
            kind: spec.kind,
        });
    }
    Ok((bound, sockets))
}
