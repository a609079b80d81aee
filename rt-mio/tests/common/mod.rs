//! A gateway on loopback and an echo origin, for the integration tests.
#![allow(clippy::unwrap_used, dead_code, unreachable_pub)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::thread;
use std::time::{Duration, Instant};

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings, PolicyStore};
use egret_core::{Event, GatewayConfig, Limits, ListenerKind, UnixMillis, WallClock};
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};

/// Starts the mio runtime on 127.0.0.1 with `threads` workers, allowing `entries` on `port`.
pub fn start(entries: &[&str], port: u16, threads: usize) -> (Box<dyn Server>, Receiver<Event>) {
    start_with_limit(entries, port, threads, 1000)
}

/// Like [`start`], serving at most `max_connections` clients at once.
pub fn start_with_limit(
    entries: &[&str],
    port: u16,
    threads: usize,
    max_connections: usize,
) -> (Box<dyn Server>, Receiver<Event>) {
    let listen = "127.0.0.1:0".parse().unwrap();
    let (config, rx) = config(entries, port, threads, max_connections, listen);
    (egret_rt_mio::start(config).unwrap(), rx)
}

/// Returns a configuration listening on `listen` and the receiver of its events.
pub fn config(
    entries: &[&str],
    port: u16,
    threads: usize,
    max_connections: usize,
    listen: SocketAddr,
) -> (ServerConfig, Receiver<Event>) {
    let list = Allowlist::compile(entries.iter().map(|e| Entry::parse(e).unwrap().0));
    let settings = PolicySettings {
        ports: vec![port, 443],
        private_exceptions: vec!["127.0.0.0/8".parse().unwrap()],
        ..PolicySettings::default()
    };
    let mut hosts = HashMap::new();
    hosts.insert("origin.test".to_owned(), vec!["127.0.0.1".parse().unwrap()]);
    let (events, rx) = EventSink::channel(4096);
    let config = ServerConfig {
        listeners: vec![ListenerSpec {
            addr: listen,
            kind: ListenerKind::Explicit,
        }],
        threads,
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
        max_connections,
        tcp_keepalive: Some(Duration::from_secs(60)),
        stats: Arc::new(RuntimeStats::default()),
    };
    (config, rx)
}

/// Connects a client to the gateway's first listener.
pub fn connect(server: &dyn Server) -> TcpStream {
    let addr = server.local_addrs()[0].addr;
    let stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    stream
}

/// Opens a CONNECT tunnel to the echo origin on `port` and reads the 200.
pub fn open_tunnel(server: &dyn Server, port: u16) -> TcpStream {
    let mut client = connect(server);
    write!(client, "CONNECT origin.test:{port} HTTP/1.1\r\n\r\n").unwrap();
    let head = read_until(&mut client, b"\r\n\r\n");
    assert_eq!(head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    client
}

/// Returns the next `Closed` record.
pub fn wait_closed(events: &Receiver<Event>) -> egret_core::Closed {
    loop {
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Closed(closed) => return closed,
            Event::Decided(_) => {}
        }
    }
}

/// Reads byte by byte up to and including `end`.
pub fn read_until(stream: &mut TcpStream, end: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut byte = [0u8; 1];
    while !out.ends_with(end) {
        assert_eq!(stream.read(&mut byte).unwrap(), 1);
        out.push(byte[0]);
    }
    out
}

/// An origin that echoes every connection back, then half-closes.
pub struct Echo(SocketAddr);

impl Echo {
    pub fn port(&self) -> u16 {
        self.0.port()
    }
}

/// Starts an echo origin: a thread per connection copying through a buffer (no pipes, so
/// that pipe counts in this process are the gateway's).
pub fn echo_server() -> Echo {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = [0u8; 16 * 1024];
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
                let _ = stream.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    Echo(addr)
}
