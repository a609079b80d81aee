//! The glommio runtime on real loopback sockets: tunnels copied end to end, denials, the
//! drain, many tunnels across executors under `max_connections`, and the preflight.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeSet, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings, PolicyStore, TlsDeny};
use egret_core::{Event, GatewayConfig, Limits, ListenerKind, UnixMillis, WallClock};
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};

#[test]
fn the_preflight_passes_here() {
    assert_eq!(egret_rt_glommio::preflight(), Ok(()));
}

#[test]
fn a_connect_tunnel_carries_bytes_both_ways_and_is_logged() {
    let echo = echo_server();
    let gateway = Gateway::start(Setup::new(&["origin.test"], echo.port()));
    let mut client = gateway.connect();
    let head = format!(
        "CONNECT origin.test:{} HTTP/1.1\r\nHost: origin.test\r\n\r\n",
        echo.port()
    );
    client.write_all(head.as_bytes()).unwrap();
    let reply = read_until(&mut client, b"\r\n\r\n");
    assert_eq!(reply, b"HTTP/1.1 200 Connection established\r\n\r\n");
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
    let closed = gateway.wait_closed();
    assert_eq!(closed.status, 200);
    assert_eq!(closed.bytes_from_client, head.len() as u64 + 200_000);
    assert_eq!(closed.bytes_to_client, 39 + 200_000);
    gateway.stop(Duration::from_secs(1));
}

#[test]
fn a_denied_connect_gets_the_403_and_a_clean_close() {
    let gateway = Gateway::start(Setup::new(&["origin.test"], 443));
    let mut client = gateway.connect();
    client
        .write_all(b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n")
        .unwrap();
    let mut reply = Vec::new();
    client.read_to_end(&mut reply).unwrap();
    let text = String::from_utf8(reply).unwrap();
    assert!(text.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{text}");
    assert!(text.ends_with("\r\n\r\nERR_ACCESS_DENIED\n"), "{text}");
    assert_eq!(gateway.wait_closed().status, 403);
    gateway.stop(Duration::from_secs(1));
}

#[test]
fn shutdown_stops_accepting_and_closes_open_tunnels_at_the_deadline() {
    let echo = echo_server();
    let gateway = Gateway::start(Setup::new(&["origin.test"], echo.port()));
    let addr = gateway.addr();
    let mut client = gateway.connect();
    write!(
        client,
        "CONNECT origin.test:{} HTTP/1.1\r\n\r\n",
        echo.port()
    )
    .unwrap();
    read_until(&mut client, b"\r\n\r\n");
    let started = Instant::now();
    gateway.server.shutdown(Duration::from_millis(800));
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
    let closed = gateway.wait_closed();
    assert_eq!(closed.reason, egret_core::Reason::Shutdown);
    gateway.server.wait();
}

#[test]
fn many_tunnels_run_across_executors_within_max_connections() {
    const TUNNELS: usize = 200;
    const MAX: usize = 64;
    let echo = echo_server();
    let mut setup = Setup::new(&["origin.test"], echo.port());
    setup.max_connections = MAX;
    let gateway = Gateway::start(setup);
    let addr = gateway.addr();
    let port = echo.port();
    let clients: Vec<_> = (0..TUNNELS)
        .map(|n| {
            thread::spawn(move || {
                let mut client = TcpStream::connect(addr).unwrap();
                client
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                write!(client, "CONNECT origin.test:{port} HTTP/1.1\r\n\r\n").unwrap();
                read_until(&mut client, b"\r\n\r\n");
                // Text first: a first byte of 0x16 would look like a TLS ClientHello, which
                // core inspects inside tunnels.
                let mut payload = format!("tunnel {n:03}:").into_bytes();
                payload.extend((payload.len()..20_000).map(|i| ((i + n) % 253) as u8));
                client.write_all(&payload).unwrap();
                client.shutdown(std::net::Shutdown::Write).unwrap();
                let mut echoed = Vec::new();
                client.read_to_end(&mut echoed).unwrap();
                let diverge = echoed.iter().zip(&payload).position(|(a, b)| a != b);
                assert!(
                    echoed == payload,
                    "tunnel {n} corrupted the stream: {} bytes back, first difference at {diverge:?}",
                    echoed.len()
                );
            })
        })
        .collect();
    let mut peak = 0;
    while clients.iter().any(|client| !client.is_finished()) {
        peak = peak.max(gateway.stats.active_sessions.load(Ordering::Relaxed));
        thread::sleep(Duration::from_millis(1));
    }
    for client in clients {
        client.join().unwrap();
    }
    assert!(peak <= MAX, "{peak} sessions open at once, limit {MAX}");
    let mut workers = BTreeSet::new();
    for _ in 0..TUNNELS {
        let closed = gateway.wait_closed();
        assert_eq!(closed.status, 200);
        assert_eq!(closed.bytes_to_client, 39 + 20_000);
        workers.insert(closed.session >> 48);
    }
    assert_eq!(workers.len(), 2, "both executors served: {workers:?}");
    assert_eq!(
        gateway.stats.accepted.load(Ordering::Relaxed),
        TUNNELS as u64
    );
    gateway.stop(Duration::from_secs(1));
}

#[test]
fn a_tls_denial_in_reset_mode_resets_the_client() {
    let mut setup = Setup::new(&["origin.test"], 443);
    setup.kind = ListenerKind::TransparentTls;
    setup.tls_deny = TlsDeny::Reset;
    let gateway = Gateway::start(setup);
    let mut client = gateway.connect();
    client.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    let mut reply = Vec::new();
    let error = client.read_to_end(&mut reply).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::ConnectionReset, "{reply:?}");
    assert_eq!(gateway.wait_closed().status, 403);
    gateway.stop(Duration::from_secs(1));
}

#[test]
fn an_ipv6_listener_serves_ipv6_only() {
    if TcpListener::bind("[::1]:0").is_err() {
        return; // no IPv6 on this host
    }
    let mut setup = Setup::new(&["origin.test"], 443);
    setup.addr = "[::]:0".parse().unwrap();
    let gateway = Gateway::start(setup);
    let port = gateway.addr().port();
    let denied = b"CONNECT evil.test:443 HTTP/1.1\r\n\r\n";
    let mut v6 = TcpStream::connect(("::1", port)).unwrap();
    v6.write_all(denied).unwrap();
    let mut reply = Vec::new();
    v6.read_to_end(&mut reply).unwrap();
    assert!(reply.starts_with(b"HTTP/1.1 403"), "{reply:?}");
    if let Ok(mut v4) = TcpStream::connect(("127.0.0.1", port)) {
        v4.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let _ = v4.write_all(denied);
        let mut reply = Vec::new();
        let _ = v4.read_to_end(&mut reply);
        assert!(reply.is_empty(), "an IPv4 client was served: {reply:?}");
    }
    assert_eq!(gateway.stats.accepted.load(Ordering::Relaxed), 1);
    gateway.stop(Duration::from_secs(1));
}

#[test]
fn a_listener_address_in_use_fails_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut setup = Setup::new(&["origin.test"], 443);
    setup.addr = taken.local_addr().unwrap();
    let (config, _, _) = setup.config();
    let Err(error) = egret_rt_glommio::start(config) else {
        panic!("started on a port another socket listens on");
    };
    assert_eq!(error.kind(), ErrorKind::AddrInUse, "{error}");
}

/// What a test gateway is started with.
struct Setup {
    entries: Vec<&'static str>,
    port: u16,
    addr: SocketAddr,
    kind: ListenerKind,
    tls_deny: TlsDeny,
    max_connections: usize,
}

impl Setup {
    fn new(entries: &[&'static str], port: u16) -> Setup {
        Setup {
            entries: entries.to_vec(),
            port,
            addr: "127.0.0.1:0".parse().unwrap(),
            kind: ListenerKind::Explicit,
            tls_deny: TlsDeny::Alert,
            max_connections: 100,
        }
    }

    fn config(self) -> (ServerConfig, Receiver<Event>, Arc<RuntimeStats>) {
        let list = Allowlist::compile(self.entries.iter().map(|e| Entry::parse(e).unwrap().0));
        let settings = PolicySettings {
            ports: vec![self.port, 443],
            private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
            tls_deny: self.tls_deny,
            ..PolicySettings::default()
        };
        let mut hosts = HashMap::new();
        hosts.insert("origin.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]);
        let (events, rx) = EventSink::channel(1024);
        let stats = Arc::new(RuntimeStats::default());
        let config = ServerConfig {
            listeners: vec![ListenerSpec {
                addr: self.addr,
                kind: self.kind,
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
            max_connections: self.max_connections,
            tcp_keepalive: Some(Duration::from_secs(60)),
            stats: stats.clone(),
        };
        (config, rx, stats)
    }
}

struct Gateway {
    server: Box<dyn Server>,
    events: Receiver<Event>,
    stats: Arc<RuntimeStats>,
}

impl Gateway {
    fn start(setup: Setup) -> Gateway {
        let (config, events, stats) = setup.config();
        let server = egret_rt_glommio::start(config).unwrap();
        Gateway {
            server,
            events,
            stats,
        }
    }

    fn addr(&self) -> SocketAddr {
        let addr = self.server.local_addrs()[0].addr;
        assert_ne!(addr.port(), 0, "the real port is reported");
        addr
    }

    fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr()).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn wait_closed(&self) -> egret_core::Closed {
        loop {
            match self.events.recv_timeout(Duration::from_secs(10)).unwrap() {
                Event::Closed(closed) => return closed,
                Event::Decided(_) => {}
            }
        }
    }

    fn stop(self, drain: Duration) {
        self.server.shutdown(drain);
        self.server.wait();
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
