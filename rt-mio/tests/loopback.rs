//! The mio runtime on real loopback sockets: tunnels spliced end to end, denials, the drain,
//! and many tunnels at once across workers.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::{connect, echo_server, open_tunnel, read_until, start, wait_closed};
use egret_core::Event;

#[test]
fn a_connect_tunnel_carries_bytes_both_ways_and_is_logged() {
    let echo = echo_server();
    let (server, events) = start(&["origin.test"], echo.port(), 2);
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
    let (server, events) = start(&["origin.test"], 443, 2);
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
    let (server, events) = start(&["origin.test"], echo.port(), 2);
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
    assert!(
        TcpStream::connect(addr).is_err(),
        "the listeners are closed"
    );
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

#[test]
fn many_concurrent_tunnels_carry_their_own_bytes_across_workers() {
    const TUNNELS: usize = 200;
    const CLIENT_THREADS: usize = 8;
    let echo = echo_server();
    let (server, events) = start(&["origin.test"], echo.port(), 4);
    // Every tunnel is open before any carries data.
    let tunnels: Vec<TcpStream> = (0..TUNNELS)
        .map(|_| open_tunnel(server.as_ref(), echo.port()))
        .collect();
    let mut groups: Vec<Vec<(usize, TcpStream)>> =
        (0..CLIENT_THREADS).map(|_| Vec::new()).collect();
    for (index, tunnel) in tunnels.into_iter().enumerate() {
        groups[index % CLIENT_THREADS].push((index, tunnel));
    }
    let threads: Vec<_> = groups
        .into_iter()
        .map(|group| {
            thread::spawn(move || {
                for (index, mut tunnel) in group {
                    // Distinct bytes per tunnel, small enough to sit in socket buffers, and
                    // not starting like a TLS record (core would inspect a ClientHello).
                    let mut payload: Vec<u8> = (0..20_000usize)
                        .map(|i| ((i * 7 + index * 13) % 251) as u8)
                        .collect();
                    payload[0] = b'#';
                    tunnel.write_all(&payload).unwrap();
                    tunnel.shutdown(std::net::Shutdown::Write).unwrap();
                    let mut echoed = Vec::new();
                    tunnel.read_to_end(&mut echoed).unwrap();
                    assert!(echoed == payload, "tunnel {index} mixed up its bytes");
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    let mut workers = BTreeSet::new();
    let mut closed = 0;
    while closed < TUNNELS {
        match events.recv_timeout(Duration::from_secs(10)).unwrap() {
            Event::Closed(record) => {
                assert_eq!(record.status, 200);
                assert_eq!(record.bytes_to_client, 39 + 20_000);
                workers.insert(record.session >> 48);
                closed += 1;
            }
            Event::Decided(_) => {}
        }
    }
    assert!(workers.len() >= 2, "all tunnels landed on {workers:?}");
    server.shutdown(Duration::from_secs(1));
    server.wait();
}

#[test]
fn at_the_connection_limit_new_clients_wait_in_the_backlog_until_a_place_frees() {
    let echo = echo_server();
    let (server, _events) = common::start_with_limit(&["origin.test"], echo.port(), 2, 1);
    let first = open_tunnel(server.as_ref(), echo.port());
    // The second client connects (the kernel completes the handshake) but is not served.
    let mut second = connect(server.as_ref());
    write!(
        second,
        "CONNECT origin.test:{} HTTP/1.1\r\n\r\n",
        echo.port()
    )
    .unwrap();
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut byte = [0u8; 1];
    let waited = second.read(&mut byte);
    assert!(waited.is_err(), "served beyond the limit: {waited:?}");
    // Ending the first session lets the waiting one in, with no new connection to prompt it.
    drop(first);
    second
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let head = read_until(&mut second, b"\r\n\r\n");
    assert_eq!(head, b"HTTP/1.1 200 Connection established\r\n\r\n");
    server.shutdown(Duration::from_millis(100));
    server.wait();
}

#[test]
fn a_port_another_gateway_listens_on_is_refused_not_shared() {
    let (first, _events) = start(&["origin.test"], 443, 2);
    let taken = first.local_addrs()[0].addr;
    let (config, _rx) = common::config(&["origin.test"], 443, 2, 10, taken);
    let Err(error) = egret_rt_mio::start(config) else {
        panic!("a second gateway joined {taken} through SO_REUSEPORT");
    };
    assert_eq!(error.kind(), std::io::ErrorKind::AddrInUse);
    first.shutdown(Duration::from_millis(100));
    first.wait();
}
