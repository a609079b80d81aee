//! Egret's protocol and policy core: a pure state machine that filters egress HTTP and HTTPS by
//! destination hostname. It does no IO and reads no clock.
//!
//! # In scope
//! - Explicit proxying: `CONNECT host:port` tunnels and absolute-form HTTP/1.x requests, each
//!   request on a kept-alive connection parsed and decided on its own, bodies streamed with
//!   their framing (Content-Length, chunked with trailers, read-until-close).
//! - Policy: the allowlist ([`policy::Allowlist`]), ports, IP literals, and the address classes
//!   that DNS answers are checked against before anything connects.
//! - The replies the gateway originates (Squid-compatible 403 and friends), timers for every
//!   phase a peer controls, and access events ([`Event`]) with pure log formatting
//!   ([`format`]).
//!
//! # Out of scope
//! Sockets, DNS, clocks, threads, files and logging: a runtime adapter (`egret-rt-*`) does the
//! IO and follows the drive contract documented on [`Session`].
//!
//! # Driving a session
//! ```
//! use std::time::{Duration, Instant};
//! use egret_core::{Accepted, Action, Gateway, GatewayConfig, Limits, ListenerKind, Peer,
//!     UnixMillis, WallClock};
//! use egret_core::policy::{Allowlist, Policy, PolicySettings, PolicyStore};
//!
//! let now = Instant::now();
//! let clock = WallClock { instant: now, unix: UnixMillis(1_700_000_000_000) };
//! let config = GatewayConfig { limits: Limits::default(), clock };
//! let store = PolicyStore::new(Policy::new(Allowlist::default(), PolicySettings::default()));
//! let mut gateway = Gateway::new(config, store, 0);
//! let mut session = gateway.accept(now, Accepted {
//!     client: "10.0.0.5:40000".parse().unwrap(),
//!     local: "10.0.0.1:3128".parse().unwrap(),
//!     listener: ListenerKind::Explicit,
//!     original_dst: None,
//! });
//! session.handle_client_data(now, b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n");
//! assert!(session.outbound(Peer::Client).starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
//! let written = session.outbound(Peer::Client).len();
//! session.handle_written(now, Peer::Client, written);
//! assert_eq!(session.poll_action(), Some(Action::Shutdown));
//! ```

pub mod event;
pub mod format;
mod gateway;
pub mod host;
mod http;
pub mod policy;
mod reply;
mod session;
mod tls;

pub use event::{Access, Closed, Decided, Event, Reason, UnixMillis};
pub use gateway::{Accepted, Gateway, GatewayConfig, Limits, ListenerKind, WallClock};
pub use session::{
    Action, Close, ConnectError, Interest, Peer, ResolveError, Session, SpliceEnd, Ticket,
};
