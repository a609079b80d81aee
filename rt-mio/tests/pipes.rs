//! Tunnels hold pipes only while bytes are in flight. Alone in its test binary, so that the
//! pipes this process has open are the gateway's.
#![cfg(target_os = "linux")]
#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use common::{echo_server, open_tunnel, start};

#[test]
fn an_idle_tunnel_holds_no_pipe() {
    const TUNNELS: usize = 20;
    const WORKERS: usize = 2;
    let echo = echo_server();
    let (server, _events) = start(&["origin.test"], echo.port(), WORKERS);
    let before = pipe_fds();
    let mut idle = Vec::new();
    for index in 0..TUNNELS {
        let mut tunnel = open_tunnel(server.as_ref(), echo.port());
        let payload = vec![index as u8; 100_000];
        let writer = {
            let mut tunnel = tunnel.try_clone().unwrap();
            let payload = payload.clone();
            thread::spawn(move || tunnel.write_all(&payload).unwrap())
        };
        let mut echoed = vec![0u8; payload.len()];
        tunnel.read_exact(&mut echoed).unwrap();
        writer.join().unwrap();
        assert!(echoed == payload);
        // Open, but nothing in flight.
        idle.push(tunnel);
    }
    let after = pipe_fds();
    // Tunnels ran one after another: each worker's pool holds at most the two pipes (one per
    // direction) of the tunnel it was serving, two descriptors each.
    assert!(after > before, "no pipe was ever used: splice did not run");
    assert!(
        after - before <= 2 * 2 * WORKERS,
        "{TUNNELS} idle tunnels hold {} pipe descriptors",
        after - before
    );
    drop(idle);
    server.shutdown(Duration::from_secs(1));
    server.wait();
}

/// Returns how many of this process's descriptors are pipe ends.
fn pipe_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(Result::ok)
        .filter_map(|entry| std::fs::read_link(entry.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with("pipe:"))
        .count()
}
