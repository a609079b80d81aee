//! Drives Egret sessions on a multi-thread tokio runtime: the production default.
//!
//! The adapter only does IO. It accepts connections (bounded by `max_connections`), runs one
//! task per session following the drive contract of [`egret_core::Session`], resolves names
//! off the async threads, connects to the addresses core hands it, and splices tunnels with
//! `splice(2)` through pooled pipes. It never parses a byte or chooses a status code.

mod drive;
mod splice;

use std::io;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use egret_core::{Gateway, ListenerKind};
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Binds the listeners and starts serving on a new tokio runtime.
pub fn start(config: ServerConfig) -> io::Result<Box<dyn Server>> {
    let threads = egret_rt_common::worker_threads(config.threads);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .thread_name("egret-worker")
        .enable_all()
        .build()?;
    let max_connections = config.max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let ctx = Arc::new(Context {
        resolver: config.resolver.clone(),
        events: config.events.clone(),
        keepalive: config.tcp_keepalive,
        stats: config.stats.clone(),
        permits: Arc::new(Semaphore::new(max_connections)),
    });
    let (shutdown_tx, shutdown_rx) = watch::channel(None);
    let mut bound = Vec::new();
    let mut accept_tasks = Vec::new();
    for (worker, spec) in config.listeners.iter().enumerate() {
        let std_listener = egret_rt_common::net::listener(spec.addr, false)?;
        let local = std_listener.local_addr()?;
        let listener = {
            let _guard = runtime.enter();
            TcpListener::from_std(std_listener)?
        };
        bound.push(ListenerSpec {
            addr: local,
            kind: spec.kind,
        });
        let gateway = Gateway::new(
            config.gateway,
            config.store.clone(),
            u16::try_from(worker).unwrap_or(u16::MAX),
        );
        accept_tasks.push(runtime.spawn(accept_loop(
            listener,
            *spec,
            gateway,
            ctx.clone(),
            shutdown_rx.clone(),
        )));
    }
    Ok(Box::new(TokioServer {
        runtime,
        bound,
        shutdown: shutdown_tx,
        ctx,
        max_connections,
        accept_tasks,
    }))
}

/// What every session task shares.
#[derive(Debug)]
pub(crate) struct Context {
    pub(crate) resolver: Arc<Resolver>,
    pub(crate) events: EventSink,
    pub(crate) keepalive: Option<Duration>,
    pub(crate) stats: Arc<RuntimeStats>,
    /// One permit per open session, `max_connections` in all.
    permits: Arc<Semaphore>,
}

/// The shutdown deadline, once a drain has begun.
pub(crate) type ShutdownSignal = watch::Receiver<Option<Instant>>;

struct TokioServer {
    runtime: tokio::runtime::Runtime,
    bound: Vec<ListenerSpec>,
    shutdown: watch::Sender<Option<Instant>>,
    ctx: Arc<Context>,
    max_connections: usize,
    accept_tasks: Vec<JoinHandle<()>>,
}

impl Server for TokioServer {
    fn local_addrs(&self) -> Vec<ListenerSpec> {
        self.bound.clone()
    }

    fn shutdown(&self, drain: Duration) {
        self.shutdown.send_replace(Some(Instant::now() + drain));
    }

    fn wait(self: Box<Self>) {
        let TokioServer {
            runtime,
            ctx,
            max_connections,
            accept_tasks,
            ..
        } = *self;
        runtime.block_on(async move {
            for task in accept_tasks {
                let _ = task.await;
            }
            // Every open session holds a permit: all of them back means all sessions ended.
            let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
            let _ = ctx.permits.acquire_many(all).await;
        });
        runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Sleeps until `deadline`, or forever without one.
pub(crate) async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

async fn accept_loop(
    listener: TcpListener,
    spec: ListenerSpec,
    mut gateway: Gateway,
    ctx: Arc<Context>,
    mut shutdown: ShutdownSignal,
) {
    let mut last_warning: Option<Instant> = None;
    loop {
        if shutdown.borrow().is_some() {
            return;
        }
        let permit = tokio::select! {
            permit = ctx.permits.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.changed() => return,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => accepted,
            Err(error) => {
                // Out of file descriptors or memory: back off instead of spinning, and say so
                // at most once a second.
                ctx.stats.accept_errors.fetch_add(1, Ordering::Relaxed);
                let now = Instant::now();
                if last_warning.is_none_or(|at| now - at >= Duration::from_secs(1)) {
                    tracing::warn!(listener = %spec.addr, %error, "accept failed");
                    last_warning = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let local = stream.local_addr().unwrap_or(spec.addr);
        let original_dst = match spec.kind {
            ListenerKind::Explicit => None,
            ListenerKind::TransparentHttp | ListenerKind::TransparentTls => {
                egret_rt_common::original_dst(&stream, local)
            }
        };
        let now = Instant::now();
        let session = gateway.accept(
            now,
            egret_core::Accepted {
                client,
                local,
                listener: spec.kind,
                original_dst,
            },
        );
        ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(drive::drive(
            session,
            stream,
            ctx.clone(),
            shutdown.clone(),
            permit,
        ));
    }
}
