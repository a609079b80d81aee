//! What every Egret runtime shares, so that the adapters stay thin and behave alike: the
//! syscall helpers ([`sys`]), the resolver, the bounded event sink, and the interface through
//! which the gateway binary starts, drains and stops a runtime.
//!
//! Nothing here parses a byte or makes a policy decision; that is `egret-core`'s job.

pub mod net;
pub mod sys;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::time::Duration;

use egret_core::policy::PolicyStore;
use egret_core::{Event, GatewayConfig, ListenerKind, ResolveError};

/// One address to listen on and what arrives there.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListenerSpec {
    /// Where to listen.
    pub addr: SocketAddr,
    /// What arrives there.
    pub kind: ListenerKind,
}

/// Everything a runtime needs to serve.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The listeners.
    pub listeners: Vec<ListenerSpec>,
    /// Worker threads; 0 means one per CPU.
    pub threads: usize,
    /// Limits and the wall clock for sessions.
    pub gateway: GatewayConfig,
    /// The policy sessions decide from.
    pub store: PolicyStore,
    /// Name resolution.
    pub resolver: Arc<Resolver>,
    /// Where session events go.
    pub events: EventSink,
    /// The most client connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// TCP keepalive idle time on both connections of a session, or `None` for off.
    pub tcp_keepalive: Option<Duration>,
    /// Live counters shared with the gateway.
    pub stats: Arc<RuntimeStats>,
}

/// Counters a runtime maintains for the gateway's health and metrics.
#[derive(Debug, Default)]
pub struct RuntimeStats {
    /// Sessions currently open.
    pub active_sessions: AtomicUsize,
    /// Sessions accepted since start.
    pub accepted: AtomicU64,
    /// Accept failures (such as running out of file descriptors).
    pub accept_errors: AtomicU64,
}

/// A running runtime, as the gateway binary controls it.
pub trait Server: Send {
    /// Returns the bound listeners (port 0 resolved to the real port).
    fn local_addrs(&self) -> Vec<ListenerSpec>;
    /// Stops accepting and tells every session to finish within `drain`; returns at once.
    fn shutdown(&self, drain: Duration);
    /// Blocks until every session has ended after [`shutdown`](Self::shutdown).
    fn wait(self: Box<Self>);
}

/// Answers DNS questions: static answers from `[resolver] hosts` first, then the system
/// resolver.
#[derive(Debug, Default)]
pub struct Resolver {
    hosts: HashMap<String, Vec<IpAddr>>,
}

impl Resolver {
    /// Returns a resolver with static answers. Names are matched case-insensitively and
    /// without a trailing dot; an empty answer list means the name does not exist.
    #[must_use]
    pub fn new(hosts: HashMap<String, Vec<IpAddr>>) -> Resolver {
        let hosts = hosts
            .into_iter()
            .map(|(name, addrs)| (name.trim_end_matches('.').to_ascii_lowercase(), addrs))
            .collect();
        Resolver { hosts }
    }

    /// Returns the static answer for `name`, if there is one; never blocks.
    #[must_use]
    pub fn lookup_static(&self, name: &str) -> Option<Result<Vec<IpAddr>, ResolveError>> {
        self.hosts.get(name).map(|addrs| match addrs.is_empty() {
            true => Err(ResolveError::NotFound),
            false => Ok(addrs.clone()),
        })
    }

    /// Resolves `name`: the static answer, or the system resolver. May block.
    pub fn lookup(&self, name: &str) -> Result<Vec<IpAddr>, ResolveError> {
        match self.lookup_static(name) {
            Some(answer) => answer,
            None => sys::getaddrinfo(name),
        }
    }
}

/// The sending side of the bounded event channel. Sending never blocks: when the channel is
/// full the event is dropped and counted.
#[derive(Clone, Debug)]
pub struct EventSink {
    tx: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
}

impl EventSink {
    /// Returns a sink and the receiver for a channel holding up to `capacity` events.
    #[must_use]
    pub fn channel(capacity: usize) -> (EventSink, Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(capacity);
        (
            EventSink {
                tx,
                dropped: Arc::new(AtomicU64::new(0)),
            },
            rx,
        )
    }

    /// Sends an event, or counts it as dropped if the channel is full or closed.
    pub fn send(&self, event: Event) {
        match self.tx.try_send(event) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Returns how many events were dropped since start.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Returns a reader of the drop count that, unlike a clone of the sink, does not keep the
    /// channel open: the receiver still sees the end once every sink is gone.
    #[must_use]
    pub fn drop_count(&self) -> DropCount {
        DropCount(self.dropped.clone())
    }
}

/// How many events an [`EventSink`] dropped, readable without holding the channel open.
#[derive(Clone, Debug)]
pub struct DropCount(Arc<AtomicU64>);

impl DropCount {
    /// Returns how many events were dropped since start.
    #[must_use]
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Returns where an intercepted connection was going before it was redirected to `local`,
/// or `None` when it was not redirected (a client that connected to the listener directly)
/// or the platform cannot tell.
#[must_use]
pub fn original_dst<S: std::os::fd::AsFd>(socket: &S, local: SocketAddr) -> Option<SocketAddr> {
    #[cfg(target_os = "linux")]
    {
        sys::original_dst(socket, local.is_ipv6()).ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = (socket, local);
        None
    }
}

/// Returns the number of worker threads for a configured value (0 = one per CPU).
#[must_use]
pub fn worker_threads(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism().map_or(1, usize::from),
        n => n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_answers_come_first_and_empty_means_not_found() {
        let mut hosts = HashMap::new();
        hosts.insert(
            "Origin.Test.".to_owned(),
            vec!["127.0.0.1".parse().unwrap()],
        );
        hosts.insert("nx.test".to_owned(), vec![]);
        let resolver = Resolver::new(hosts);
        assert_eq!(
            resolver.lookup("origin.test"),
            Ok(vec!["127.0.0.1".parse().unwrap()])
        );
        assert_eq!(resolver.lookup("nx.test"), Err(ResolveError::NotFound));
        assert_eq!(resolver.lookup_static("other.test"), None);
    }

    #[test]
    fn a_full_sink_drops_and_counts() {
        let (sink, rx) = EventSink::channel(1);
        let event = || {
            Event::Decided(egret_core::Decided {
                session: 1,
                seq: 1,
                at: egret_core::UnixMillis(0),
                client: "127.0.0.1:1".parse().unwrap(),
                listener: ListenerKind::Explicit,
                host: egret_core::host::Host::Name("a.test".into()),
                port: 443,
                access: egret_core::Access::Allowed,
                rule: None,
            })
        };
        sink.send(event());
        sink.send(event());
        assert_eq!(sink.dropped(), 1);
        assert!(rx.try_recv().is_ok());
    }
}
