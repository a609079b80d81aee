//! Access events: every observable fact a session produces, as values.
//!
//! Core has no logging dependency. A runtime drains events with `Session::poll_event` and
//! forwards them; the gateway turns [`Closed`] records into access-log lines with
//! [`crate::format`].

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::gateway::ListenerKind;
use crate::host::Host;
use crate::policy::DenyReason;

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixMillis(pub u64);

/// Something a session reports.
// Every request yields one `Decided` and one `Closed`, so boxing `Closed` would add an
// allocation per request and save no memory in the event queue.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A policy decision on one request or tunnel.
    Decided(Decided),
    /// One request or tunnel has ended; carries everything its access-log line needs.
    Closed(Closed),
}

/// The access a decision granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Admitted by the allowlist.
    Allowed,
    /// Denied.
    Denied(DenyReason),
    /// Would have been denied, let through because the policy is in audit mode.
    Audited(DenyReason),
}

/// A policy decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decided {
    /// The session's id.
    pub session: u64,
    /// The request's number on its connection, from 1.
    pub seq: u32,
    /// When the decision was made.
    pub at: UnixMillis,
    /// The client's address.
    pub client: SocketAddr,
    /// The listener the client came in on.
    pub listener: ListenerKind,
    /// The destination host.
    pub host: Host,
    /// The destination port.
    pub port: u16,
    /// The access granted.
    pub access: Access,
    /// The entry that decided, when one named the host.
    pub rule: Option<Arc<str>>,
}

/// Why a request or tunnel ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason {
    /// The exchange or tunnel completed normally.
    Completed,
    /// The policy denied the destination.
    Denied,
    /// The request was malformed (400); see the detail.
    InvalidRequest,
    /// The request head exceeded `max_header_bytes` (431).
    HeaderTooLarge,
    /// The request head did not arrive within `header_timeout` (408).
    HeaderTimeout,
    /// The name did not resolve (503).
    DnsFailed,
    /// No address accepted the connection (503).
    ConnectFailed,
    /// No address answered within `connect_timeout` (504).
    ConnectTimeout,
    /// The upstream sent no response within `idle_timeout` (504).
    ReadTimeout,
    /// The upstream's response was malformed (502).
    InvalidResponse,
    /// The upstream closed without a response (502).
    EmptyResponse,
    /// The client closed or reset the connection before the end.
    ClientClosed,
    /// The upstream closed or reset the connection before the end.
    UpstreamClosed,
    /// Nothing moved for `idle_timeout`.
    IdleTimeout,
    /// The gateway shut down before the end.
    Shutdown,
}

/// A request or tunnel that has ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Closed {
    /// The session's id.
    pub session: u64,
    /// The request's number on its connection, from 1.
    pub seq: u32,
    /// When it ended.
    pub at: UnixMillis,
    /// How long it took from its first byte.
    pub duration: Duration,
    /// The client's address (the one a PROXY protocol header names, when there is one).
    pub client: SocketAddr,
    /// The listener the client came in on.
    pub listener: ListenerKind,
    /// The original destination of an intercepted connection.
    pub original_dst: Option<SocketAddr>,
    /// The method (`CONNECT` for tunnels, `NONE` when the head could not be read).
    pub method: Cow<'static, str>,
    /// The URL (`http://host/path`, query removed), `host:port` for tunnels, or
    /// `error:<kind>` when the head could not be read.
    pub url: String,
    /// The destination host, when the head named one.
    pub host: Option<Host>,
    /// The destination port (0 when unknown).
    pub port: u16,
    /// The HTTP status sent to the client (0 when none was).
    pub status: u16,
    /// The access decision, if one was made.
    pub access: Option<Access>,
    /// The entry that decided, when one named the host.
    pub rule: Option<Arc<str>>,
    /// Why it ended.
    pub reason: Reason,
    /// A snake_case detail: the parse fault, the address class, the DNS or connect error.
    pub detail: Option<&'static str>,
    /// Bytes sent to the client, headers included.
    pub bytes_to_client: u64,
    /// Bytes received from the client, headers included.
    pub bytes_from_client: u64,
    /// The upstream address connected to.
    pub upstream: Option<SocketAddr>,
    /// The response's media type.
    pub content_type: Option<Box<str>>,
    /// The SNI of the ClientHello the decision looked at (transparent TLS, or inside a
    /// CONNECT tunnel).
    pub sni: Option<Host>,
    /// The ClientHello carried an Encrypted Client Hello extension.
    pub ech: bool,
    /// An intercepted connection's original destination is not among the addresses its name
    /// resolved to (the gateway connected to the name's addresses, not to it).
    pub dst_mismatch: bool,
    /// The VPC endpoint the client came through, from a PROXY v2 header (PrivateLink).
    pub vpc_endpoint: Option<Box<str>>,
}

impl Reason {
    /// Returns the snake_case name used in logs.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Completed => "completed",
            Reason::Denied => "denied",
            Reason::InvalidRequest => "invalid_request",
            Reason::HeaderTooLarge => "header_too_large",
            Reason::HeaderTimeout => "header_timeout",
            Reason::DnsFailed => "dns_failed",
            Reason::ConnectFailed => "connect_failed",
            Reason::ConnectTimeout => "connect_timeout",
            Reason::ReadTimeout => "read_timeout",
            Reason::InvalidResponse => "invalid_response",
            Reason::EmptyResponse => "empty_response",
            Reason::ClientClosed => "client_closed",
            Reason::UpstreamClosed => "upstream_closed",
            Reason::IdleTimeout => "idle_timeout",
            Reason::Shutdown => "shutdown",
        }
    }
}

impl Access {
    /// Returns `allowed`, `denied` or `audited`.
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Access::Allowed => "allowed",
            Access::Denied(_) => "denied",
            Access::Audited(_) => "audited",
        }
    }

    /// Returns the deny reason of a denied or audited decision.
    #[must_use]
    pub fn deny_reason(self) -> Option<DenyReason> {
        match self {
            Access::Allowed => None,
            Access::Denied(reason) | Access::Audited(reason) => Some(reason),
        }
    }
}
