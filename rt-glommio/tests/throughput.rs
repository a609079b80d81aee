//! A bounded bulk transfer through a CONNECT tunnel, timed side by side on loopback: no
//! gateway, the tokio runtime (`splice(2)` through pipes) and this runtime (a user-space copy).
//! Ignored by default; run with
//! `cargo test --release -p egret-rt-glommio --test throughput -- --ignored --nocapture`.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use egret_core::policy::{Allowlist, Entry, Policy, PolicySettings, PolicyStore};
use egret_core::{GatewayConfig, Limits, ListenerKind, UnixMillis, WallClock};
use egret_rt_common::{EventSink, ListenerSpec, Resolver, RuntimeStats, Server, ServerConfig};

/// Bytes moved per transfer.
const BYTES: u64 = 512 << 20;
/// Transfers per path; the best is reported.
const ROUNDS: usize = 3;

#[test]
#[ignore = "a measurement, not a check"]
fn bulk_transfer_through_a_tunnel() {
    let sink = sink_server();
    let (tokio, _tokio_events) = start(egret_rt_tokio::start, sink.port());
    let (glommio, _glommio_events) = start(egret_rt_glommio::start, sink.port());
    let mut best = [Duration::MAX; 3];
    for _ in 0..ROUNDS {
        best[0] = best[0].min(transfer(sink, None));
        best[1] = best[1].min(transfer(sink, Some(tokio.local_addrs()[0].addr)));
        best[2] = best[2].min(transfer(sink, Some(glommio.local_addrs()[0].addr)));
    }
    for (name, took) in ["direct", "tokio (splice)", "glommio (copy)"]
        .iter()
        .zip(best)
    {
        let rate = BYTES as f64 / took.as_secs_f64() / f64::from(1u32 << 20);
        eprintln!(
            "{name:>16}: {} MiB in {took:?}, {rate:.0} MiB/s",
            BYTES >> 20
        );
    }
    for server in [tokio, glommio] {
        server.shutdown(Duration::from_secs(1));
        server.wait();
    }
}

/// Sends `BYTES` to the sink, through a tunnel when `gateway` is given; returns how long it
/// took until the sink confirmed the count.
fn transfer(sink: SocketAddr, gateway: Option<SocketAddr>) -> Duration {
    let started = Instant::now();
    let mut stream = match gateway {
        None => TcpStream::connect(sink).unwrap(),
        Some(gateway) => {
            let mut stream = TcpStream::connect(gateway).unwrap();
            write!(
                stream,
                "CONNECT origin.test:{} HTTP/1.1\r\n\r\n",
                sink.port()
            )
            .unwrap();
            let mut reply = [0u8; 39];
            stream.read_exact(&mut reply).unwrap();
            assert!(reply.starts_with(b"HTTP/1.1 200"));
            stream
        }
    };
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0;
    while sent < BYTES {
        let n = chunk.len().min(usize::try_from(BYTES - sent).unwrap());
        stream.write_all(&chunk[..n]).unwrap();
        sent += n as u64;
    }
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut count = [0u8; 8];
    stream.read_exact(&mut count).unwrap();
    assert_eq!(u64::from_be_bytes(count), BYTES);
    started.elapsed()
}

/// Reads everything, then answers with the byte count.
fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { return };
            thread::spawn(move || {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => total += n as u64,
                    }
                }
                let _ = stream.write_all(&total.to_be_bytes());
            });
        }
    });
    addr
}

type Start = fn(ServerConfig) -> std::io::Result<Box<dyn Server>>;

fn start(
    start: Start,
    port: u16,
) -> (
    Box<dyn Server>,
    std::sync::mpsc::Receiver<egret_core::Event>,
) {
    let list = Allowlist::compile([Entry::parse("origin.test").unwrap().0]);
    let settings = PolicySettings {
        ports: vec![port],
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
        max_connections: 16,
        tcp_keepalive: None,
        stats: Arc::new(RuntimeStats::default()),
    };
    (start(config).unwrap(), rx)
}
