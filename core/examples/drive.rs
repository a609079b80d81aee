//! Drives one session by hand, the way a runtime adapter does: a client asks for a tunnel to a
//! name that is not on the allowlist and gets the 403, then the lingering close.
// Printing the access line is what this example is for.
#![allow(clippy::print_stdout)]

use std::time::Instant;

use egret_core::policy::{Allowlist, Policy, PolicySettings, PolicyStore};
use egret_core::{
    Accepted, Action, Event, Gateway, GatewayConfig, Limits, ListenerKind, Peer, UnixMillis,
    WallClock,
};

fn main() {
    let now = Instant::now();
    let clock = WallClock {
        instant: now,
        unix: UnixMillis(1_700_000_000_000),
    };
    let config = GatewayConfig {
        limits: Limits::default(),
        clock,
        proxy_protocol: egret_core::ProxyProtocol::Off,
    };
    let store = PolicyStore::new(Policy::new(Allowlist::default(), PolicySettings::default()));
    let mut gateway = Gateway::new(config, store, 0);
    let mut session = gateway.accept(
        now,
        Accepted {
            client: "10.0.0.5:40000".parse().expect("address"),
            local: "10.0.0.1:3128".parse().expect("address"),
            listener: ListenerKind::Explicit,
            original_dst: None,
        },
    );

    // What happened: bytes from the client.
    session.handle_client_data(now, b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n");
    // Drain actions, then events, then write what core queued for each peer.
    assert_eq!(
        session.poll_action(),
        None,
        "nothing to do before the reply is written"
    );
    while let Some(event) = session.poll_event() {
        if let Event::Closed(record) = event {
            let mut line = String::new();
            egret_core::format::squid(&record, &mut line);
            print!("access log: {line}");
        }
    }
    let reply = session.outbound(Peer::Client).to_vec();
    assert!(reply.starts_with(b"HTTP/1.1 403 Forbidden\r\n"));
    session.handle_written(now, Peer::Client, reply.len());
    // The reply is out: half-close, then read until the client closes or the linger timer.
    assert_eq!(session.poll_action(), Some(Action::Shutdown));
    session.handle_eof(now, Peer::Client);
    assert_eq!(
        session.poll_action(),
        Some(Action::Close(egret_core::Close::Graceful))
    );
    assert!(session.is_finished());
}
