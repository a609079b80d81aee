//! Drives Egret sessions on glommio: one pinned io_uring executor per core, each with its own
//! `SO_REUSEPORT` listeners and its own sessions (Linux only).
//!
//! The adapter only does IO, following the drive contract of [`egret_core::Session`]. It never
//! parses a byte, chooses a status code, keeps a protocol timer or connects to a name: core
//! decides and hands it addresses.
//!
//! # What it does
//! - **Executors.** [`start`] runs one `glommio::LocalExecutor` per worker thread, pinned to a
//!   CPU the process may use. Each binds every configured listener with `SO_REUSEPORT` (a
//!   port-0 listener takes the port the first executor got), so the kernel spreads
//!   connections across executors, and owns an [`egret_core::Gateway`] whose worker id is the
//!   executor's index. Sessions are local tasks of the executor that accepted them.
//! - **Waiting.** A session task waits on one hand-polled future over its drain, deadline,
//!   lookup, connect, writes and reads, and hands the first thing ready to core; bytes a read
//!   returned are given to core before anything else is polled (see `drive`).
//! - **DNS and connects.** Static answers are given inline; other names go to a resolver
//!   thread pool shared by the executors, which wakes the asking task. Connects go to the
//!   `SocketAddr` core gives, through the ring.
//! - **Tunnels.** After core's `Splice`, bytes are copied both ways through a 64 KiB
//!   per-executor buffer, half-closes propagated (see `tunnel` for why not `splice(2)`).
//! - **Limits and drain.** `max_connections` holds across executors: at the limit accept
//!   loops wait, and resume when a session ends anywhere. [`Server::shutdown`] closes every
//!   listener and starts the drain of every session; executors end with their last session.
//! - **Socket options** glommio does not expose (keepalive, reset on close, the original
//!   destination) are set through a duplicated descriptor (see `fd`).
//!
//! # The drive loop, per session
//! ```text
//! loop {
//!     drain poll_action (perform; a Splice runs the tunnel until core closes)
//!     drain poll_event (forward)
//!     (wake, now) = first ready of: drain start, deadline, lookup, connect,
//!                   write outbound(peer), read (if interest)          // one clock read
//!     session.handle_…(now, wake)
//! }
//! ```
//!
//! Call [`preflight`] before [`start`]: glommio fails obscurely (or exits the process) where
//! io_uring or locked memory is missing, and the preflight says what to change instead.

#[cfg(target_os = "linux")]
mod drive;
#[cfg(target_os = "linux")]
mod executor;
#[cfg(target_os = "linux")]
mod fd;
#[cfg(target_os = "linux")]
mod preflight;
#[cfg(target_os = "linux")]
mod resolver;
#[cfg(target_os = "linux")]
mod shared;
#[cfg(target_os = "linux")]
mod tunnel;

use std::io;

use egret_rt_common::{Server, ServerConfig};

/// Checks what glommio needs from the host — a kernel with io_uring (Linux 5.8 or later) that
/// this process may use, and at least 512 KiB of locked memory — and returns a one-paragraph
/// explanation naming the fix for what is missing.
pub fn preflight() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    {
        preflight::check()
    }
    #[cfg(not(target_os = "linux"))]
    {
        Err(
            "the glommio runtime needs Linux (io_uring); choose another runtime \
             (`--runtime tokio`)."
                .to_owned(),
        )
    }
}

/// Binds one `SO_REUSEPORT` listener per executor and listener spec, and starts the
/// executors. Returns once every executor listens.
pub fn start(config: ServerConfig) -> io::Result<Box<dyn Server>> {
    #[cfg(target_os = "linux")]
    {
        linux::start(config)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = config;
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "the glommio runtime needs Linux",
        ))
    }
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::sync::Arc;
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::{Duration, Instant};

    use egret_core::{Gateway, ListenerKind};
    use egret_rt_common::{ListenerSpec, Server, ServerConfig};

    use crate::executor::{Launch, allowed_cpus};
    use crate::shared::Shared;
    use egret_rt_common::net::check_free;

    pub(super) fn start(config: ServerConfig) -> io::Result<Box<dyn Server>> {
        check_free(&config.listeners)?;
        let threads = egret_rt_common::worker_threads(config.threads);
        let cpus = allowed_cpus();
        let shared = Arc::new(Shared::new(&config));
        let transparent = config.listeners.iter().any(|spec| match spec.kind {
            ListenerKind::Explicit => false,
            ListenerKind::TransparentHttp | ListenerKind::TransparentTls => true,
        });
        if !crate::fd::available() {
            tracing::warn!(
                keepalive = config.tcp_keepalive.is_some(),
                transparent,
                "glommio runtime: socket options are out of reach here (pidfd_getfd is not \
                 permitted), so TCP keepalive, reset-on-close and original destinations are off"
            );
        }
        let mut bound = config.listeners.clone();
        let mut executors: Vec<JoinHandle<()>> = Vec::with_capacity(threads);
        for index in 0..threads {
            let launch = Launch {
                index,
                cpu: (!cpus.is_empty()).then(|| cpus[index % cpus.len()]),
                listeners: bound.clone(),
                gateway: Gateway::new(
                    config.gateway,
                    config.store.clone(),
                    u16::try_from(index).unwrap_or(u16::MAX),
                ),
                shared: shared.clone(),
            };
            match launch_and_wait(launch) {
                Ok((executor, listening)) => {
                    executors.push(executor);
                    bound = listening;
                }
                Err(error) => {
                    // The executors already running have no sessions yet: stop them.
                    shared.shutdown.begin(Instant::now());
                    for executor in executors {
                        let _ = executor.join();
                    }
                    shared.lookups.close();
                    return Err(error);
                }
            }
        }
        Ok(Box::new(GlommioServer {
            bound,
            shared,
            executors,
        }))
    }

    /// Starts one executor and waits until its listeners are bound.
    fn launch_and_wait(launch: Launch) -> io::Result<(JoinHandle<()>, Vec<ListenerSpec>)> {
        let index = launch.index;
        let (ready, listening) = mpsc::channel();
        let executor = launch.spawn(ready)?;
        match listening.recv() {
            Ok(Ok(bound)) => Ok((executor, bound)),
            Ok(Err(error)) => {
                let _ = executor.join();
                Err(error)
            }
            Err(_) => {
                let _ = executor.join();
                Err(io::Error::other(format!(
                    "glommio executor {index} stopped while starting"
                )))
            }
        }
    }

    struct GlommioServer {
        bound: Vec<ListenerSpec>,
        shared: Arc<Shared>,
        executors: Vec<JoinHandle<()>>,
    }

    impl Server for GlommioServer {
        fn local_addrs(&self) -> Vec<ListenerSpec> {
            self.bound.clone()
        }

        fn shutdown(&self, drain: Duration) {
            self.shared.shutdown.begin(Instant::now() + drain);
        }

        fn wait(self: Box<Self>) {
            let GlommioServer {
                shared, executors, ..
            } = *self;
            for executor in executors {
                if executor.join().is_err() {
                    tracing::error!("a glommio executor panicked");
                }
            }
            shared.lookups.close();
        }
    }
}
