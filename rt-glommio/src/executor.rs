//! One executor: a pinned thread running a glommio `LocalExecutor` with its own listeners,
//! accept loops, [`Gateway`] and sessions, and its part of a drain.
//!
//! ```text
//! serve:  bind every listener (SO_REUSEPORT) → report the addresses → one accept loop each
//!         → wait for the shutdown signal → start the local drain (accept loops end, their
//!           listeners close; sessions get handle_shutdown) → wait for the last session
//! accept: reserve a place under max_connections → accept → session task
//! ```

use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Sender;
use std::task::{Poll, Waker};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_core::{Accepted, Gateway, ListenerKind};
use egret_rt_common::ListenerSpec;
use glommio::net::{TcpListener, TcpStream};
use glommio::timer::Timer;
use glommio::{LocalExecutorBuilder, Placement};

use crate::preflight::IO_MEMORY;
use crate::shared::{Drain, First, Place, Shared, first};

/// How long an accept loop rests after a failed accept (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// What an executor reports once its listeners are bound: their addresses, or why not.
pub(crate) type Ready = Sender<io::Result<Vec<ListenerSpec>>>;

/// What the tasks of one executor share.
#[derive(Debug)]
pub(crate) struct Worker {
    pub(crate) shared: Arc<Shared>,
    pub(crate) drain: Rc<Drain>,
    gateway: RefCell<Gateway>,
    /// Sessions running on this executor.
    sessions: Cell<usize>,
    /// The executor's main task, waiting for its last session to end.
    last_session: RefCell<Option<Waker>>,
}

/// Counts a session while it runs.
#[derive(Debug)]
pub(crate) struct SessionGuard {
    worker: Rc<Worker>,
}

/// The start of one executor thread.
#[derive(Debug)]
pub(crate) struct Launch {
    pub(crate) index: usize,
    /// The CPU to pin the executor to, if any.
    pub(crate) cpu: Option<usize>,
    /// The listeners to bind; the first executor resolves port 0 for the others.
    pub(crate) listeners: Vec<ListenerSpec>,
    pub(crate) gateway: Gateway,
    pub(crate) shared: Arc<Shared>,
}

impl Launch {
    /// Starts the executor thread; it reports on `ready` once its listeners are bound.
    pub(crate) fn spawn(self, ready: Ready) -> io::Result<JoinHandle<()>> {
        std::thread::Builder::new()
            .name(format!("egret-glommio-{}", self.index))
            .spawn(move || {
                let placement = self.cpu.map_or(Placement::Unbound, Placement::Fixed);
                let built = LocalExecutorBuilder::new(placement)
                    .name(&format!("egret-glommio-{}", self.index))
                    .io_memory(IO_MEMORY)
                    .make();
                match built {
                    Ok(executor) => executor.run(serve(self, ready)),
                    Err(error) => {
                        let _ = ready.send(Err(io::Error::other(format!(
                            "cannot start glommio executor {}: {error}",
                            self.index
                        ))));
                    }
                }
            })
    }
}

impl Worker {
    /// Waits until no session runs on this executor.
    async fn last_session_ended(&self) {
        poll_fn(|cx| {
            if self.sessions.get() == 0 {
                return Poll::Ready(());
            }
            *self.last_session.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        })
        .await;
    }
}

impl SessionGuard {
    fn new(worker: &Rc<Worker>) -> SessionGuard {
        worker.sessions.set(worker.sessions.get() + 1);
        worker
            .shared
            .stats
            .active_sessions
            .fetch_add(1, Ordering::Relaxed);
        SessionGuard {
            worker: worker.clone(),
        }
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let worker = &self.worker;
        worker
            .shared
            .stats
            .active_sessions
            .fetch_sub(1, Ordering::Relaxed);
        worker.sessions.set(worker.sessions.get().saturating_sub(1));
        if worker.sessions.get() == 0 {
            if let Some(waker) = worker.last_session.borrow_mut().take() {
                waker.wake();
            }
        }
    }
}

/// The executor's main task.
async fn serve(launch: Launch, ready: Ready) {
    let Launch {
        index,
        listeners: specs,
        gateway,
        shared,
        ..
    } = launch;
    let mut listeners = Vec::with_capacity(specs.len());
    let mut bound = Vec::with_capacity(specs.len());
    for spec in &specs {
        match bind(*spec) {
            Ok((listener, spec)) => {
                listeners.push(listener);
                bound.push(spec);
            }
            Err(error) => {
                let _ = ready.send(Err(error));
                return;
            }
        }
    }
    let _ = ready.send(Ok(bound.clone()));
    let worker = Rc::new(Worker {
        shared: shared.clone(),
        drain: Rc::new(Drain::default()),
        gateway: RefCell::new(gateway),
        sessions: Cell::new(0),
        last_session: RefCell::new(None),
    });
    let loops: Vec<_> = listeners
        .into_iter()
        .zip(bound)
        .enumerate()
        .map(|(n, (listener, spec))| {
            let key = index * specs.len() + n;
            glommio::spawn_local(accept_loop(listener, spec, key, worker.clone()))
        })
        .collect();
    let deadline = shared.shutdown.wait().await;
    worker.drain.begin(deadline);
    for accept in loops {
        accept.await;
    }
    worker.last_session_ended().await;
}

/// Binds one `SO_REUSEPORT` listener. Not with glommio's `bind`, which leaves out
/// `SO_REUSEADDR`: a restart then failed with "address in use" for as long as the killed
/// process's connections stayed in TIME_WAIT (a minute), and IPv6 listeners took IPv4 too.
fn bind(spec: ListenerSpec) -> io::Result<(TcpListener, ListenerSpec)> {
    let socket = egret_rt_common::net::listener(spec.addr, true)?;
    // glommio's reactor drives the socket with io_uring: it must block (as glommio's own do).
    socket.set_nonblocking(false)?;
    let listener: TcpListener =
        egret_rt_common::sys::from_owned_fd(std::os::fd::OwnedFd::from(socket));
    let addr = listener.local_addr()?;
    Ok((
        listener,
        ListenerSpec {
            addr,
            kind: spec.kind,
        },
    ))
}

/// Accepts connections on one listener until the drain starts, then closes it.
async fn accept_loop(listener: TcpListener, spec: ListenerSpec, key: usize, worker: Rc<Worker>) {
    let shared = worker.shared.clone();
    let mut drain = worker.drain.watch();
    let mut last_warning: Option<Instant> = None;
    loop {
        let place = match first(shared.capacity.reserve(key), drain.wait()).await {
            First::Left(place) => place,
            First::Right(_) => break,
        };
        // Dropping a pending accept at the drain cancels it in the ring; the listener closes
        // once the cancellation completes.
        let accepted = match first(listener.accept(), drain.wait()).await {
            First::Left(accepted) => accepted,
            First::Right(_) => break,
        };
        match accepted {
            Ok(stream) => start_session(stream, spec, &worker, place),
            Err(error) => {
                // Out of descriptors or memory: back off instead of spinning, and say so at
                // most once a second.
                shared.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if last_warning.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                    tracing::warn!(listener = %spec.addr, %error, "accept failed");
                    last_warning = Some(now);
                }
                drop(place);
                if let First::Right(_) = first(Timer::new(ACCEPT_BACKOFF), drain.wait()).await {
                    break;
                }
            }
        }
    }
    shared.capacity.forget(key);
}

/// Turns an accepted connection into a session task.
fn start_session(client: TcpStream, spec: ListenerSpec, worker: &Rc<Worker>, place: Place) {
    let Ok(peer) = client.peer_addr() else {
        // The client is already gone.
        return;
    };
    if spec.addr.is_ipv6() && is_v4_mapped(peer) {
        // glommio's listeners are dual-stack; the other runtimes' IPv6 listeners serve IPv6
        // only, and so does this one.
        return;
    }
    let local = client.local_addr().unwrap_or(spec.addr);
    let transparent = match spec.kind {
        ListenerKind::Explicit => false,
        ListenerKind::TransparentHttp | ListenerKind::TransparentTls => true,
    };
    let original_dst =
        crate::fd::prepare_client(&client, worker.shared.keepalive, transparent, local);
    let _ = client.set_nodelay(true);
    let session = worker.gateway.borrow_mut().accept(
        Instant::now(),
        Accepted {
            client: peer,
            local,
            listener: spec.kind,
            original_dst,
        },
    );
    worker.shared.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let guard = SessionGuard::new(worker);
    glommio::spawn_local(crate::drive::drive(
        session,
        client,
        worker.clone(),
        guard,
        place,
    ))
    .detach();
}

fn is_v4_mapped(addr: SocketAddr) -> bool {
    match addr {
        SocketAddr::V4(_) => false,
        SocketAddr::V6(v6) => v6.ip().to_ipv4_mapped().is_some(),
    }
}

/// Returns the CPUs this process may run on, in order.
pub(crate) fn allowed_cpus() -> Vec<usize> {
    match rustix::thread::sched_getaffinity(None) {
        Ok(set) => (0..rustix::thread::CpuSet::MAX_CPU)
            .filter(|&cpu| set.is_set(cpu))
            .collect(),
        Err(_) => Vec::new(),
    }
}
