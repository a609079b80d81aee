//! Reliability under load, on every runtime: thousands of idle tunnels (all served, memory per
//! tunnel reported), connection churn (no descriptors or memory left behind), and slowloris
//! clients (closed at `header_timeout` while ordinary clients keep succeeding).
//!
//! Short sizes by default; the sizes with `EGRET_RELIABILITY=full` (see
//! RELIABILITY.md). Every loop is bounded in count and time; all traffic stays on loopback.
//! Speed is never asserted: only that everything is served, nothing fails, and what must
//! return to its baseline does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::reliability::{
    ALLOWED, DENIED, Gateway, Origin, RUNTIMES, Setup, check, client_runtime, echo, eventually,
    exclusive, fd_count, figure, first_failure, get_status, raise_nofile, read_until_closed,
    rss_kib, scale, serve, sockets_and_pipes, tunnel,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

mod support;

/// The most memory an idle tunnel may cost the gateway: far above what any runtime needs
/// (3–7 KiB in BENCHMARKS.md), far below a per-tunnel buffer leak.
const MAX_KIB_PER_TUNNEL: f64 = 32.0;

/// The most pipe descriptors the gateway may keep pooled: 64 pipes per worker, two workers.
const MAX_POOLED_PIPE_FDS: usize = 2 * 64 * 2;

/// How much the gateway's resident set may grow over the churn, after a warm-up.
const MAX_CHURN_GROWTH_KIB: u64 = 16 * 1024;

#[test]
fn idle_tunnels_are_all_served_and_each_costs_little_memory() {
    let _machine = exclusive();
    let wanted = scale(2_000, 10_000);
    // The gateway holds two descriptors per tunnel, this process two (client and origin).
    // Where the hard limit cannot be raised (no CAP_SYS_RESOURCE) it caps the count.
    let limit = raise_nofile(2 * wanted as u64 + 512);
    let count = wanted.min((limit as usize).saturating_sub(512) / 2);
    if count < wanted {
        figure(
            "idle tunnels",
            "all",
            &format!("RLIMIT_NOFILE is capped at {limit}: {count} tunnels instead of {wanted}"),
        );
    }
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(idle_tunnels(runtime, count));
    }
}

#[test]
fn connection_churn_leaves_no_descriptors_or_memory_behind() {
    let _machine = exclusive();
    let count = scale(20_000, 200_000);
    raise_nofile(16_384);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(churn(runtime, count));
    }
}

#[test]
fn slowloris_clients_are_closed_at_header_timeout_while_others_succeed() {
    let _machine = exclusive();
    let slow = scale(200, 1_000);
    raise_nofile(4 * slow as u64 + 8_192);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(slowloris(runtime, slow));
    }
}

async fn idle_tunnels(runtime: &'static str, count: usize) {
    let (echo_port, _) = serve(Origin::Echo).await;
    let gateway = Gateway::start(runtime, &[echo_port]);
    let (addr, pid) = (gateway.addr(), gateway.pid());
    // Warm-up: the first tunnels pay for pools and allocator arenas, not for themselves.
    let warm = open_tunnels(addr, echo_port, 200).await;
    check(&gateway, "warm-up tunnels", first_failure(&warm.1));
    drop(warm);
    settle(&gateway, 0);
    let rss_before = rss_kib(pid);
    let fds_before = fd_count(pid);
    let (sockets_before, _) = sockets_and_pipes(pid);

    let started = Instant::now();
    let (mut tunnels, results) = open_tunnels(addr, echo_port, count).await;
    let opened_in = started.elapsed();
    check(&gateway, "opening the tunnels", first_failure(&results));
    settle(&gateway, count);
    let rss_after = rss_kib(pid);
    let fds_after = fd_count(pid);
    let (sockets_after, _) = sockets_and_pipes(pid);
    let kib_per_tunnel = rss_after.saturating_sub(rss_before) as f64 / count as f64;

    // Every tunnel still carries bytes after all of them were opened.
    let results = echo_all(&mut tunnels, b"still here").await;
    check(
        &gateway,
        "echo through every tunnel",
        first_failure(&results),
    );

    figure(
        "idle tunnels",
        runtime,
        &format!(
            "{count} tunnels opened in {:.1} s, all served; RSS {rss_before} -> {rss_after} KiB \
             = {kib_per_tunnel:.2} KiB per tunnel; fds {fds_before} -> {fds_after}",
            opened_in.as_secs_f64()
        ),
    );
    assert!(
        kib_per_tunnel < MAX_KIB_PER_TUNNEL,
        "{runtime}: {kib_per_tunnel:.2} KiB per idle tunnel"
    );
    // Two sockets per tunnel (client and upstream), and no more (give or take an admin
    // endpoint connection closing as the figures are read).
    let expected = sockets_before + 2 * count;
    assert!(
        sockets_after + 4 >= expected && sockets_after <= expected + 4,
        "{runtime}: {sockets_before} -> {sockets_after} sockets for {count} tunnels"
    );
    drop(tunnels);
    settle(&gateway, 0);
    assert!(
        eventually(Duration::from_secs(30), || sockets_and_pipes(pid).0
            <= sockets_before),
        "{runtime}: {:?} sockets and pipes after every tunnel closed, {sockets_before} sockets \
         before",
        sockets_and_pipes(pid)
    );
}

async fn churn(runtime: &'static str, count: usize) {
    let (echo_port, _) = serve(Origin::Echo).await;
    let (http_port, _) = serve(Origin::Http).await;
    let gateway = Gateway::start(runtime, &[echo_port, http_port]);
    let (addr, pid) = (gateway.addr(), gateway.pid());
    let warm_up = count / 10;
    let results = run_churn(addr, echo_port, http_port, warm_up).await;
    check(&gateway, "warm-up", first_failure(&results));
    settle(&gateway, 0);
    let fds_before = fd_count(pid);
    let (sockets_before, pipes_before) = sockets_and_pipes(pid);
    let rss_before = rss_kib(pid);

    let started = Instant::now();
    let results = run_churn(addr, echo_port, http_port, count).await;
    let took = started.elapsed();
    check(&gateway, "churn", first_failure(&results));
    settle(&gateway, 0);
    let back = eventually(Duration::from_secs(30), || {
        sockets_and_pipes(pid).0 <= sockets_before
    });
    let fds_after = fd_count(pid);
    let (sockets_after, pipes_after) = sockets_and_pipes(pid);
    let rss_after = rss_kib(pid);
    let accepted = gateway.metric("egret_accepted_total");
    figure(
        "churn",
        runtime,
        &format!(
            "{count} connections after {warm_up} warm-up in {:.1} s, 0 failed; fds {fds_before} \
             -> {fds_after} (sockets {sockets_before} -> {sockets_after}, pooled pipe fds \
             {pipes_before} -> {pipes_after}); RSS {rss_before} -> {rss_after} KiB ({:+} KiB); accepted {accepted}",
            took.as_secs_f64(),
            rss_after as i64 - rss_before as i64
        ),
    );
    assert!(
        back,
        "{runtime}: {sockets_after} sockets after the churn, {sockets_before} before"
    );
    assert!(
        pipes_after <= MAX_POOLED_PIPE_FDS,
        "{runtime}: {pipes_after} pipe descriptors after the churn"
    );
    assert!(
        rss_after <= rss_before + MAX_CHURN_GROWTH_KIB,
        "{runtime}: RSS grew from {rss_before} to {rss_after} KiB over {count} connections"
    );
    // Every connection was accepted and counted.
    assert!(
        accepted >= (warm_up + count) as f64,
        "{runtime}: {accepted}"
    );
}

async fn slowloris(runtime: &'static str, slow: usize) {
    let header_timeout = Duration::from_secs(3);
    let (echo_port, _) = serve(Origin::Echo).await;
    let (http_port, _) = serve(Origin::Http).await;
    let limits = format!("header_timeout = \"{}ms\"", header_timeout.as_millis());
    let gateway = Gateway::start_with(
        runtime,
        &Setup {
            ports: &[echo_port, http_port],
            limits: &limits,
            ..Setup::default()
        },
    );
    let addr = gateway.addr();

    let mut slow_set = JoinSet::new();
    for n in 0..slow {
        slow_set.spawn(slow_client(addr, http_port, n, header_timeout * 4));
        if n % 100 == 99 {
            tokio::task::yield_now().await;
        }
    }
    // Ordinary clients, eight at a time, for as long as the slow ones are held.
    let ordinary_for = header_timeout + Duration::from_secs(1);
    let mut ordinary = JoinSet::new();
    for _ in 0..8 {
        ordinary.spawn(async move {
            let until = Instant::now() + ordinary_for;
            let mut results = Vec::new();
            let mut n = 0u32;
            while Instant::now() < until {
                n += 1;
                results.push(ordinary_client(addr, echo_port, http_port, n).await);
            }
            results
        });
    }
    let mut closes = Vec::new();
    while let Some(outcome) = slow_set.join_next().await {
        closes.push(outcome.unwrap());
    }
    let mut results = Vec::new();
    while let Some(outcome) = ordinary.join_next().await {
        results.extend(outcome.unwrap());
    }
    check(&gateway, "ordinary clients", first_failure(&results));

    let mut times: Vec<Duration> = Vec::new();
    let mut problems = Vec::new();
    for close in &closes {
        match close {
            Ok((elapsed, status)) => {
                if *status != Some(408) {
                    problems.push(format!("closed after {elapsed:?} with status {status:?}"));
                }
                times.push(*elapsed);
            }
            Err(e) => problems.push(e.clone()),
        }
    }
    times.sort();
    let earliest = times.first().copied().unwrap_or_default();
    let latest = times.last().copied().unwrap_or_default();
    let median = times.get(times.len() / 2).copied().unwrap_or_default();
    figure(
        "slowloris",
        runtime,
        &format!(
            "{slow} slow clients closed with 408 after {:.2}/{:.2}/{:.2} s (min/median/max, \
             header_timeout {} s); {} ordinary requests meanwhile, 0 failed",
            earliest.as_secs_f64(),
            median.as_secs_f64(),
            latest.as_secs_f64(),
            header_timeout.as_secs(),
            results.len()
        ),
    );
    check(
        &gateway,
        "slow clients",
        match problems.first() {
            None => Ok(()),
            Some(first) => Err(format!("{} of {slow}: {first}", problems.len())),
        },
    );
    // Not before the timeout; after it within a generous margin (a shared two-core machine).
    assert!(
        earliest >= header_timeout,
        "{runtime}: closed after {earliest:?}"
    );
    assert!(
        latest <= header_timeout + Duration::from_secs(5),
        "{runtime}: the last slow client was closed after {latest:?}"
    );
    assert!(!results.is_empty(), "{runtime}: no ordinary request ran");
    // The timeouts are logged as such.
    let log = gateway.log_text();
    let logged = support::reliability::count_lines(&log, &["\"reason\":\"header_timeout\""]);
    assert!(
        logged >= slow,
        "{runtime}: {logged} header_timeout lines for {slow}"
    );
}

/// Sends a partial request head and then a byte every 500 ms until the gateway closes the
/// connection or `give_up` passes; returns the time from connect to close and the status
/// the gateway sent.
async fn slow_client(
    addr: SocketAddr,
    port: u16,
    n: usize,
    give_up: Duration,
) -> Result<(Duration, Option<u16>), String> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("slow client {n}: connect: {e}"))?;
    let head =
        format!("GET http://{ALLOWED}:{port}/slow/{n} HTTP/1.1\r\nHost: {ALLOWED}\r\nX-Slow: ");
    stream
        .write_all(head.as_bytes())
        .await
        .map_err(|e| format!("slow client {n}: send: {e}"))?;
    let mut received = Vec::new();
    loop {
        let (bytes, closed) = read_until_closed(&mut stream, Duration::from_millis(500)).await;
        received.extend_from_slice(&bytes);
        if closed {
            return Ok((
                started.elapsed(),
                support::reliability::status_of(&received),
            ));
        }
        if started.elapsed() > give_up {
            return Err(format!("slow client {n}: still open after {give_up:?}"));
        }
        // A write to a connection the gateway just closed may fail; the read says so next.
        let _ = stream.write_all(b"a").await;
    }
}

/// One ordinary exchange: a tunnel with an echo, an allowed GET, or a denied GET.
async fn ordinary_client(
    addr: SocketAddr,
    echo_port: u16,
    http_port: u16,
    n: u32,
) -> Result<(), String> {
    match n % 3 {
        0 => {
            let mut stream = tunnel(addr, ALLOWED, echo_port).await?;
            echo(&mut stream, b"ordinary").await
        }
        1 => get_status(addr, ALLOWED, http_port, "/ordinary", 200).await,
        _ => get_status(addr, DENIED, http_port, "/ordinary", 403).await,
    }
}

/// Opens `count` tunnels to the echo origin, 128 at a time; returns the open ones and every
/// outcome.
async fn open_tunnels(
    addr: SocketAddr,
    port: u16,
    count: usize,
) -> (Vec<TcpStream>, Vec<Result<(), String>>) {
    let permits = Arc::new(Semaphore::new(128));
    let mut set = JoinSet::new();
    for _ in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            let opened = tokio::time::timeout(Duration::from_secs(60), tunnel(addr, ALLOWED, port))
                .await
                .unwrap_or_else(|_| Err("CONNECT: no reply within 60 s".to_owned()));
            drop(permit);
            opened
        });
    }
    let mut streams = Vec::with_capacity(count);
    let mut results = Vec::with_capacity(count);
    while let Some(outcome) = set.join_next().await {
        match outcome.unwrap() {
            Ok(stream) => {
                streams.push(stream);
                results.push(Ok(()));
            }
            Err(e) => results.push(Err(e)),
        }
    }
    (streams, results)
}

/// Echoes `bytes` through every tunnel, 256 at a time.
async fn echo_all(tunnels: &mut Vec<TcpStream>, bytes: &'static [u8]) -> Vec<Result<(), String>> {
    let mut results = Vec::with_capacity(tunnels.len());
    let mut kept = Vec::with_capacity(tunnels.len());
    while !tunnels.is_empty() {
        let batch: Vec<TcpStream> = tunnels.drain(..tunnels.len().min(256)).collect();
        let mut set = JoinSet::new();
        for mut stream in batch {
            set.spawn(async move {
                let result =
                    tokio::time::timeout(Duration::from_secs(30), echo(&mut stream, bytes))
                        .await
                        .unwrap_or_else(|_| Err("no echo within 30 s".to_owned()));
                (stream, result)
            });
        }
        while let Some(outcome) = set.join_next().await {
            let (stream, result) = outcome.unwrap();
            kept.push(stream);
            results.push(result);
        }
    }
    *tunnels = kept;
    results
}

/// Makes `count` connections, 64 at a time: tunnels with an echo, allowed GETs and (one in
/// ten) denied GETs; returns every outcome.
async fn run_churn(
    addr: SocketAddr,
    echo_port: u16,
    http_port: u16,
    count: usize,
) -> Vec<Result<(), String>> {
    let permits = Arc::new(Semaphore::new(64));
    let mut set = JoinSet::new();
    let mut results = Vec::with_capacity(count);
    for n in 0..count {
        let permit = permits.clone().acquire_owned().await.unwrap();
        set.spawn(async move {
            let result = match n % 10 {
                0 => get_status(addr, DENIED, http_port, "/churn", 403).await,
                1..5 => get_status(addr, ALLOWED, http_port, "/churn", 200).await,
                _ => match tunnel(addr, ALLOWED, echo_port).await {
                    Ok(mut stream) => echo(&mut stream, b"churn").await,
                    Err(e) => Err(e),
                },
            };
            drop(permit);
            result
        });
        while let Some(outcome) = set.try_join_next() {
            results.push(outcome.unwrap());
        }
    }
    while let Some(outcome) = set.join_next().await {
        results.push(outcome.unwrap());
    }
    results
}

/// Waits (up to 60 s) until the gateway reports `sessions` open client connections.
fn settle(gateway: &Gateway, sessions: usize) {
    let settled = eventually(Duration::from_secs(60), || {
        gateway.metric("egret_active_sessions") as usize == sessions
    });
    assert!(
        settled,
        "{}: {} sessions open, {sessions} expected",
        gateway.runtime,
        gateway.metric("egret_active_sessions")
    );
}
