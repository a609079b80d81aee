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
//! [`Session`] documents the drive contract; `examples/drive.rs` drives one session by hand,
//! and the `rt-*` crates are complete adapters.

pub mod event;
pub mod format;
mod gateway;
pub mod host;
mod http;
pub mod policy;
mod proxy;
mod reply;
mod session;
mod tls;

pub use event::{Access, Closed, Decided, Event, Reason, UnixMillis};
pub use gateway::{Accepted, Gateway, GatewayConfig, Limits, ListenerKind, WallClock};
pub use proxy::ProxyProtocol;
pub use session::{
    Action, Close, ConnectError, Interest, Peer, ResolveError, Session, SpliceEnd, Ticket,
};
