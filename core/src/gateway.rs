//! The session factory: one [`Gateway`] per worker, holding the configuration and the shared
//! policy store.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::event::UnixMillis;
use crate::policy::PolicyStore;
use crate::proxy::ProxyProtocol;
use crate::session::Session;

/// The kind of listener a connection arrived on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ListenerKind {
    /// A forward proxy: `CONNECT` and absolute-form requests (port 3128).
    Explicit,
    /// Intercepted HTTP (port 80 redirected here): origin-form requests decided on `Host`.
    TransparentHttp,
    /// Intercepted TLS (port 443 redirected here): decided on the ClientHello's SNI.
    TransparentTls,
}

/// What a runtime knows about a connection it accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The client's address.
    pub client: SocketAddr,
    /// The local address the connection arrived on.
    pub local: SocketAddr,
    /// The listener's kind.
    pub listener: ListenerKind,
    /// The destination the client was really going to (transparent listeners).
    pub original_dst: Option<SocketAddr>,
}

/// Bounds on everything a peer controls.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// The largest request or response head, and the largest trailer section.
    pub max_header_bytes: usize,
    /// How long a client may take to send a request head (from accept, or from the first
    /// byte of a later request on a kept-alive connection).
    pub header_timeout: Duration,
    /// How long to wait for DNS, and for each connect attempt.
    pub connect_timeout: Duration,
    /// How long a connection may see no traffic either way.
    pub idle_timeout: Duration,
    /// How long to keep reading (and discarding) after an error reply, so that the client
    /// reads the reply before the connection closes.
    pub linger_timeout: Duration,
}

/// A mapping from the monotonic clock to wall time, fixed when the gateway starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WallClock {
    /// A monotonic instant.
    pub instant: Instant,
    /// The wall time at `instant`.
    pub unix: UnixMillis,
}

/// The configuration every session of a gateway shares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GatewayConfig {
    /// Bounds on peers.
    pub limits: Limits,
    /// Wall time for events.
    pub clock: WallClock,
    /// Whether connections start with a PROXY protocol header.
    pub proxy_protocol: ProxyProtocol,
}

/// Creates sessions; one per worker.
#[derive(Debug)]
pub struct Gateway {
    config: Arc<GatewayConfig>,
    store: PolicyStore,
    worker: u16,
    accepted: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_header_bytes: 16 * 1024,
            header_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            linger_timeout: Duration::from_secs(2),
        }
    }
}

impl WallClock {
    /// Returns the wall time at `now`.
    #[must_use]
    pub fn at(&self, now: Instant) -> UnixMillis {
        let since = now.saturating_duration_since(self.instant);
        UnixMillis(self.unix.0 + u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

impl ListenerKind {
    /// Returns the snake_case name used in logs and configuration.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            ListenerKind::Explicit => "explicit",
            ListenerKind::TransparentHttp => "transparent_http",
            ListenerKind::TransparentTls => "transparent_tls",
        }
    }
}

impl fmt::Display for ListenerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Gateway {
    /// Returns a gateway for worker number `worker`; session ids carry it, so ids from
    /// different workers never collide.
    #[must_use]
    pub fn new(config: GatewayConfig, store: PolicyStore, worker: u16) -> Gateway {
        Gateway {
            config: Arc::new(config),
            store,
            worker,
            accepted: 0,
        }
    }

    /// Returns the policy store sessions decide from.
    #[must_use]
    pub fn store(&self) -> &PolicyStore {
        &self.store
    }

    /// Returns a session for a connection accepted at `now`.
    pub fn accept(&mut self, now: Instant, accepted: Accepted) -> Session {
        self.accepted += 1;
        let id = (u64::from(self.worker) << 48) | (self.accepted & 0xffff_ffff_ffff);
        Session::new(id, now, self.config.clone(), self.store.clone(), accepted)
    }
}
