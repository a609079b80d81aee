//! The tokio runtime on real loopback sockets: tunnels spliced end to end, denials.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings, PolicyStore};
use egret_core::{Event, GatewayConfig, Limits, ListenerKind, UnixMillis, WallClock};
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};

#[test]
fn a_connect_tunnel_carries_bytes_both_ways_and_is_logged() {
    let echo = echo_server();
    let (server, events) = start(&["origin.test"], echo.port());
    let mut client = connect(server.as_ref());
    write!(
        client,
        "CONNECT origin.test:{} HTTP/1.1\r\nHost: origin.test\r\n\r\n",
        echo.port()
    )
    .unwrap();
    let head = read_until(&mut client, b"\r\n\r\n");
    assert_eq!(head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    let payload: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let writer = {
        let mut client = client.try_clone().unwrap();
        let payload = payload.clone();
        thread::spawn(move || {
            client.write_all(&payload).unwrap();
            client.shutdown(std::net::Shutdown::Write).unwrap();
        })
    };
    let mut echoed = Vec::new();
    client.read_to_end(&mut echoed).unwrap();
    writer.join().unwrap();
    assert_eq!(echoed.len(), payload.len());
    assert!(echoed == payload, "tunnel corrupted the stream");
    let closed = wait_closed(&events);
    assert_eq!(closed.status, 200);
    let head_len = format!(
        "CONNECT origin.test:{} HTTP/1.1\r\nHost: origin.test\r\n\r\n",
        echo.port()
    )
    .len();
    assert_eq!(closed.bytes_from_client, head_len as u64 + 200_000);
    assert_eq!(closed.bytes_to_client, 39 + 200_000);
    server.shutdown(Duration::from_secs(1));
    server.wait();
}

#[test]
fn a_denied_connect_gets_the_403_and_a_clean_close() {
    let (server, events) = start(&["origin.test"], 443);
    let mut client = connect(server.as_ref());
    client
        .write_all(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nERR_ACCESS_DENIED\n"), "{text}");
    assert_eq!(wait_closed(&events).status, 403);
    server.shutdown(Duration::from_secs(1));
    server.wait();
}

#[test]
fn shutdown_stops_accepting_and_closes_open_tunnels_at_the_deadline() {
    let echo = echo_server();
    let (server, events) = start(&["origin.test"], echo.port());
    let addr = server.local_addrs()[0].addr;
    let mut client = connect(server.as_ref());
    write!(
        client,
        "CONNECT origin.test:{} HTTP/1.1\r\n\r\n",
        echo.port()
    )
    .unwrap();
    read_until(&mut client, b"\r\n\r\n");
    let started = Instant::now();
    server.shutdown(Duration::from_millis(800));
    // The open tunnel keeps working during the drain...
    client.write_all(b"still here").unwrap();
    let mut buf = [0u8; 10];
    client.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"still here");
    // ...no new connection is accepted...
    thread::sleep(Duration::from_millis(100));
    assert!(TcpStream::connect(addr).is_err(), "the listener is closed");
    // ...and at the deadline the tunnel is closed and logged.
    let mut rest = Vec::new();
    let _ = client.read_to_end(&mut rest);
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "{:?}",
        started.elapsed()
    );
    let closed = wait_closed(&events);
    assert_eq!(closed.reason, egret_core::Reason::Shutdown);
    server.wait();
}

/// A drain that begins while the session is turning its first tunnel bytes into a splice
/// must still close the tunnel at the deadline (it once slipped between the two and the tunnel
/// stayed open until its idle timeout). The race is narrow, so it is run many times.
#[test]
fn a_drain_racing_the_start_of_a_splice_still_closes_the_tunnel_at_the_deadline() {
    let echo = echo_server();
    for round in 0..40 {
        let (server, events) = start(&["origin.test"], echo.port());
        let mut client = connect(server.as_ref());
        client
            .set_read_timeout(Some(Duration::from_secs(3)))
            .unwrap();
        write!(
            client,
            "CONNECT origin.test:{} HTTP/1.1\r\n\r\n",
            echo.port()
        )
        .unwrap();
        read_until(&mut client, b"\r\n\r\n");
        // Non-TLS bytes: the session splices them; the drain starts at the same moment.
        client.write_all(b"x").unwrap();
        server.shutdown(Duration::from_millis(20));
        let mut rest = Vec::new();
        let ended = client.read_to_end(&mut rest);
        assert!(
            ended.is_ok(),
            "round {round}: the tunnel outlived the drain deadline: {ended:?}"
        );
        let closed = wait_closed(&events);
        assert_eq!(closed.reason, egret_core::Reason::Shutdown, "round {round}");
        server.wait();
    }
}

fn start(entries: &[&str], port: u16) -> (Box<dyn Server>, std::sync::mpsc::Receiver<Event>) {
    let list = Allowlist::compile(entries.iter().map(|e| Entry::parse(e).unwrap().0));
    let settings = PolicySettings {
        ports: vec![port, 443],
        private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
        ..PolicySettings::default()
    };
    let mut hosts = HashMap::new();
    hosts.insert("origin.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]);
    let (events, rx) = EventSink::channel(1024);
    let config = ServerConfig {
        listeners: vec![ListenerSpec {
            addr: "127.0.0.1:0".parse().unwrap(),
            kind: ListenerKind::Explicit,
        }],
        threads: 2,
        gateway: GatewayConfig {
            limits: Limits::default(),
            clock: WallClock {
                instant: Instant::now(),
                unix: UnixMillis(0),
            },
            proxy_protocol: egret_core::ProxyProtocol::Off,
        },
        store: PolicyStore::new(Policy::new(list, settings)),
        resolver: Arc::new(Resolver::new(hosts)),
        events,
        max_connections: 100,
        tcp_keepalive: Some(Duration::from_secs(60)),
        stats: Arc::new(RuntimeStats::default()),
    };
    (egret_rt_tokio::start(config).unwrap(), rx)
}

fn connect(server: &dyn Server) -> TcpStream {
    let addr = server.local_addrs()[0].addr;
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

fn wait_closed(events: &std::sync::mpsc::Receiver<Event>) -> egret_core::Closed {
    loop {
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Closed(closed) => return closed,
            Event::Decided(_) => {}
        }
    }
}

fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(end) {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        out.push(byte[0]);
    }
    out
}

struct Echo(SocketAddr);

impl Echo {
    fn port(&self) -> u16 {
        self.0.port()
    }
}

fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut reader = stream.try_clone().unwrap();
                let _ = std::io::copy(&mut reader, &mut stream);
                let _ = stream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Echo(addr)
}
