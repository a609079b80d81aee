//! Faults, on every runtime: running out of file descriptors (refused cleanly, logged, counted,
//! no busy loop, recovery once load drops), upstream faults (a black-holed address, a refused
//! port, a name that does not resolve, a reset mid-tunnel and before a response: each gets
//! its documented reply and log line), and policy reloads every 100 ms under steady load (no
//! allowed request fails, no denied one passes).
//!
//! The system resolver's failure is tested with the gateway in a network namespace of its
//! own whose resolver is absent. Log sink faults are in `reliability_sink.rs`; a CloudWatch outage in `cloudwatch.rs`.
//! Short sizes by default, the with `EGRET_RELIABILITY=full` (RELIABILITY.md).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::{SocketAddr, TcpStream as StdStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use egret_conformance::netns::{GatewayProcess, in_namespace};
use support::reliability::{
    ALLOWED, DENIED, Gateway, Origin, RUNTIMES, Setup, check, client_runtime, count_lines,
    cpu_ticks, echo, eventually, exclusive, fd_count, figure, first_failure, get, get_status,
    limit_nofile, read_until_closed, scale, serve, status_of, tunnel,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinSet;

mod support;

/// Clock ticks per second in `/proc/PID/stat` (USER_HZ, 100 on Linux).
const TICKS_PER_SECOND: f64 = 100.0;

/// The most CPU the gateway may use, as a share of one core, while it is out of descriptors
/// and idle otherwise: a busy accept loop would use a whole core.
const MAX_PLATEAU_CPU: f64 = 0.25;

#[test]
fn running_out_of_descriptors_is_refused_cleanly_logged_and_recovered_from() {
    let _machine = exclusive();
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(descriptor_exhaustion(runtime));
    }
}

#[test]
fn upstream_faults_get_their_documented_replies_and_log_lines() {
    let _machine = exclusive();
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(upstream_faults(runtime));
    }
}

#[test]
fn a_failing_system_resolver_gets_503_dns_fail_and_its_log_line() {
    let _machine = exclusive();
    // The gateway runs in a network namespace whose resolv.conf (`ip netns exec` mounts
    // /etc/netns/NAME/resolv.conf) names a resolver on its own loopback where nothing listens:
    // the system resolver fails for real, and no query leaves the namespace.
    let namespace = ResolverNamespace::create();
    for runtime in RUNTIMES {
        failing_resolver(runtime, &namespace.name);
    }
}

#[test]
fn policy_reloads_every_100ms_under_load_fail_no_allowed_request_and_pass_no_denied_one() {
    let _machine = exclusive();
    let seconds = scale(4, 30);
    let clients = client_runtime();
    for runtime in RUNTIMES {
        clients.block_on(reloads(runtime, Duration::from_secs(seconds)));
    }
}

async fn descriptor_exhaustion(runtime: &'static str) {
    let (echo_port, _) = serve(Origin::Echo).await;
    let (http_port, _) = serve(Origin::Http).await;
    let mut gateway = Gateway::start_with(
        runtime,
        &Setup {
            ports: &[echo_port, http_port],
            // The silent clients that exhaust the descriptors must stay for the plateau.
            limits: "header_timeout = \"60s\"",
            ..Setup::default()
        },
    );
    let (addr, pid) = (gateway.addr(), gateway.pid());
    // Serve once, so pools and lazily opened descriptors exist before the limit is set.
    let warm = get_status(addr, ALLOWED, http_port, "/warm", 200).await;
    check(&gateway, "before the limit", warm);
    let base = fd_count(pid);
    let limit = base as u64 + 48;
    limit_nofile(pid, limit);

    // Silent clients: each takes a descriptor in the gateway once accepted; more of them than
    // the limit leaves room for.
    let silent_count = 96;
    let mut silent = Vec::new();
    for _ in 0..silent_count {
        silent.push(StdStream::connect(addr).expect("the backlog takes the connection"));
    }
    // The admin endpoint cannot accept either while descriptors are out, so the failures
    // are watched on stderr; /metrics is read after the recovery.
    let exhausted = eventually(Duration::from_secs(10), || {
        gateway.live.stderr_text().contains("accept failed")
    });
    check(
        &gateway,
        "exhaustion",
        if exhausted {
            Ok(())
        } else {
            Err(format!(
                "no failed accept with {} descriptors open of {limit}",
                fd_count(pid)
            ))
        },
    );
    // A client that arrives during the exhaustion waits in the backlog; it must be served
    // once descriptors are free again.
    let waiting = tokio::spawn(async move {
        let mut stream = tunnel(addr, ALLOWED, echo_port).await?;
        echo(&mut stream, b"served after the plateau").await
    });

    // The plateau: out of descriptors, accepts failing. No busy loop, no crash.
    let plateau = Duration::from_secs(3);
    let ticks_before = cpu_ticks(pid);
    tokio::time::sleep(plateau).await;
    let ticks = cpu_ticks(pid) - ticks_before;
    let share = ticks as f64 / TICKS_PER_SECOND / plateau.as_secs_f64();
    let fds_at_plateau = fd_count(pid);
    assert!(
        gateway
            .live
            .wait_exit(Duration::ZERO)
            .is_ok_and(|s| s.is_none()),
        "{runtime}: egret exited when out of descriptors"
    );
    let stderr = gateway.live.stderr_text();
    let warnings = count_lines(&stderr, &["accept failed", "Too many open files"]);

    // Load drops: the silent clients leave.
    drop(silent);
    let waited = tokio::time::timeout(Duration::from_secs(30), waiting).await;
    let waited = match waited {
        Ok(joined) => joined.unwrap(),
        Err(_) => {
            Err("the client that waited through the plateau got no tunnel in 30 s".to_owned())
        }
    };
    check(&gateway, "the client that waited", waited);
    let mut after = Vec::new();
    for n in 0..20 {
        after.push(get_status(addr, ALLOWED, http_port, &format!("/after/{n}"), 200).await);
    }
    check(
        &gateway,
        "requests after the plateau",
        first_failure(&after),
    );
    let errors = gateway.metric("egret_accept_errors_total");

    figure(
        "fd exhaustion",
        runtime,
        &format!(
            "limit {limit} (base {base}); {fds_at_plateau} fds at the plateau; {errors} failed \
             accepts counted, {warnings} warning line(s); CPU {:.1} % of a core over {} s; \
             recovered: the waiting client and 20 new requests served",
            share * 100.0,
            plateau.as_secs()
        ),
    );
    assert!(
        errors > 0.0,
        "{runtime}: no failed accept counted on /metrics"
    );
    assert!(
        share < MAX_PLATEAU_CPU,
        "{runtime}: {:.0} % of a core while out of descriptors (a busy loop?)",
        share * 100.0
    );
    assert!(
        (1..=30).contains(&warnings),
        "{runtime}: {warnings} 'accept failed' warnings (rate-limited to one a second):\n{stderr}"
    );
}

async fn upstream_faults(runtime: &'static str) {
    let (echo_port, _) = serve(Origin::Echo).await;
    let (http_port, _) = serve(Origin::Http).await;
    let (reset_tunnel, _) = serve(Origin::ResetAfterEcho).await;
    let (reset_http, _) = serve(Origin::ResetBeforeResponse).await;
    let refused = support::free_port();
    let (_blackhole, blackhole) = blackhole();
    let gateway = Gateway::start_with(
        runtime,
        &Setup {
            ports: &[
                echo_port,
                http_port,
                reset_tunnel,
                reset_http,
                refused,
                blackhole,
            ],
            limits: "connect_timeout = \"1s\"",
            nxdomain: &["nowhere.test"],
            allowlist: "",
            domains: Some(&[ALLOWED, "nowhere.test"]),
            log_path: None,
        },
    );
    let addr = gateway.addr();
    let reply = |response: &[u8]| {
        let text = String::from_utf8_lossy(response).into_owned();
        let error = text
            .lines()
            .find_map(|l| l.strip_prefix("X-Squid-Error: "))
            .unwrap_or("")
            .to_owned();
        (status_of(response), error, text)
    };

    // A black-holed address: the connect times out.
    let response = get(addr, ALLOWED, blackhole, "/blackhole").await.unwrap();
    let (status, error, text) = reply(&response);
    assert_eq!(
        (status, error.as_str()),
        (Some(504), "ERR_CONNECT_FAIL 110"),
        "{runtime}: {text}"
    );
    expect_line(
        &gateway,
        &[
            "/blackhole",
            "\"status\":504",
            "\"reason\":\"connect_timeout\"",
        ],
    );
    let response = connect_reply(addr, ALLOWED, blackhole).await;
    let (status, error, text) = reply(&response);
    assert_eq!(
        (status, error.as_str()),
        (Some(504), "ERR_CONNECT_FAIL 110"),
        "{runtime}: {text}"
    );

    // A refused port.
    let response = get(addr, ALLOWED, refused, "/refused").await.unwrap();
    let (status, error, text) = reply(&response);
    assert_eq!(
        (status, error.as_str()),
        (Some(503), "ERR_CONNECT_FAIL 111"),
        "{runtime}: {text}"
    );
    expect_line(
        &gateway,
        &[
            "/refused",
            "\"status\":503",
            "\"reason\":\"connect_failed\"",
        ],
    );

    // A name that does not resolve.
    let response = get(addr, "nowhere.test", http_port, "/nxdomain")
        .await
        .unwrap();
    let (status, error, text) = reply(&response);
    assert_eq!(
        (status, error.as_str()),
        (Some(503), "ERR_DNS_FAIL 0"),
        "{runtime}: {text}"
    );
    expect_line(
        &gateway,
        &["/nxdomain", "\"status\":503", "\"reason\":\"dns_failed\""],
    );

    // A reset in the middle of a tunnel: the client's side is closed too, and the tunnel is
    // logged with the bytes it carried.
    let mut stream = tunnel(addr, ALLOWED, reset_tunnel).await.unwrap();
    echo(&mut stream, b"before the reset").await.unwrap();
    let (rest, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        closed && rest.is_empty(),
        "{runtime}: after the upstream reset: {rest:?}, closed {closed}"
    );
    expect_line(
        &gateway,
        &[
            &format!("\"url\":\"{ALLOWED}:{reset_tunnel}\""),
            "TCP_TUNNEL",
            "\"reason\":\"upstream_closed\"",
            "\"detail\":\"upstream_reset\"",
        ],
    );

    // A reset before any byte of a response.
    let response = get(addr, ALLOWED, reset_http, "/reset").await.unwrap();
    let (status, error, text) = reply(&response);
    assert_eq!(
        (status, error.as_str()),
        (Some(502), "ERR_ZERO_SIZE_OBJECT 0"),
        "{runtime}: {text}"
    );
    expect_line(
        &gateway,
        &["/reset", "\"status\":502", "\"reason\":\"empty_response\""],
    );

    // And the gateway still serves.
    check(
        &gateway,
        "after the faults",
        get_status(addr, ALLOWED, http_port, "/fine", 200).await,
    );
    let mut stream = tunnel(addr, ALLOWED, echo_port).await.unwrap();
    echo(&mut stream, b"fine").await.unwrap();
    figure(
        "upstream faults",
        runtime,
        "black hole 504 ERR_CONNECT_FAIL 110 / connect_timeout; refused 503 ERR_CONNECT_FAIL 111 / \
         connect_failed; NXDOMAIN 503 ERR_DNS_FAIL / dns_failed; reset mid-tunnel: client closed, \
         TCP_TUNNEL/200 upstream_closed; reset before the response 502 ERR_ZERO_SIZE_OBJECT / \
         empty_response",
    );
}

async fn reloads(runtime: &'static str, duration: Duration) {
    let (echo_port, _) = serve(Origin::Echo).await;
    let (http_port, _) = serve(Origin::Http).await;
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("allow.list");
    std::fs::write(&list, allowlist_generation(0)).unwrap();
    let allowlist = format!(
        "files = [{:?}]\nreload_interval = \"50ms\"",
        list.to_string_lossy()
    );
    let gateway = Gateway::start_with(
        runtime,
        &Setup {
            ports: &[echo_port, http_port],
            allowlist: &allowlist,
            domains: Some(&[]),
            ..Setup::default()
        },
    );
    let addr = gateway.addr();
    let reloads_before = gateway.metric("egret_policy_reloads_ok_total");

    // The writer: the whole file replaced every 100 ms, each time with other entries, in turn
    // atomically (written beside it, then renamed over it, as configuration management does)
    // and in place (truncated, then written, as `echo … > list` does). A reload that reads
    // the file between the truncation and the write finds it empty and keeps the last good
    // list (see RELIABILITY.md); before that rule it published the empty list.
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        let list = list.clone();
        std::thread::spawn(move || {
            let mut generation = 0u64;
            while !stop.load(Ordering::Relaxed) {
                generation += 1;
                if generation % 2 == 0 {
                    let next = list.with_extension("next");
                    std::fs::write(&next, allowlist_generation(generation)).unwrap();
                    std::fs::rename(&next, &list).unwrap();
                } else {
                    std::fs::write(&list, allowlist_generation(generation)).unwrap();
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            generation
        })
    };
    let mut set = JoinSet::new();
    for worker in 0..8u32 {
        set.spawn(async move {
            let until = Instant::now() + duration;
            let mut results = Vec::new();
            let mut flips = (0u32, 0u32);
            let mut n = worker;
            while Instant::now() < until {
                n += 1;
                let result = match n % 4 {
                    0 => get_status(addr, ALLOWED, http_port, "/reload", 200).await,
                    1 => get_status(addr, DENIED, http_port, "/reload", 403).await,
                    2 => match tunnel(addr, ALLOWED, echo_port).await {
                        Ok(mut stream) => echo(&mut stream, b"reload").await,
                        Err(e) => Err(e),
                    },
                    _ => {
                        // flip.test is on every other generation: either verdict is right.
                        match get(addr, "flip.test", http_port, "/flip")
                            .await
                            .map(|r| status_of(&r))
                        {
                            Ok(Some(200)) => flips.0 += 1,
                            Ok(Some(403)) => flips.1 += 1,
                            other => results.push(Err(format!("flip.test: {other:?}"))),
                        }
                        continue;
                    }
                };
                results.push(result);
            }
            (results, flips)
        });
    }
    let mut results = Vec::new();
    let mut flips = (0, 0);
    while let Some(outcome) = set.join_next().await {
        let (r, f) = outcome.unwrap();
        results.extend(r);
        flips.0 += f.0;
        flips.1 += f.1;
    }
    stop.store(true, Ordering::Relaxed);
    let generations = writer.join().unwrap();
    let reloads = gateway.metric("egret_policy_reloads_ok_total") - reloads_before;
    let failed_reloads = gateway.metric("egret_policy_reloads_failed_total");
    figure(
        "reloads",
        runtime,
        &format!(
            "{generations} rewrites in {} s, {reloads} reloads ({failed_reloads} failed); {} \
             requests to allowed and denied names, 0 wrong; flip.test allowed {} / denied {} times",
            duration.as_secs(),
            results.len(),
            flips.0,
            flips.1
        ),
    );
    check(&gateway, "requests during reloads", first_failure(&results));
    assert!(
        results.len() >= 100,
        "{runtime}: only {} requests",
        results.len()
    );
    // The reloads happened and took effect: flip.test was seen both ways.
    assert!(
        reloads >= generations as f64 / 2.0,
        "{runtime}: {reloads} reloads for {generations} rewrites"
    );
    assert!(flips.0 > 0 && flips.1 > 0, "{runtime}: flip.test {flips:?}");
}

fn failing_resolver(runtime: &str, namespace: &str) {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let config = dir.path().join("egret.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nexplicit = [\"127.0.0.1:0\"]\n\n[allowlist]\ndomains = [\"unresolvable.test\"]\n\n\
             [policy]\nports = [80, 443]\n\n[log]\nformat = \"json\"\npath = {:?}\n",
            log.to_string_lossy()
        ),
    )
    .unwrap();
    let mut command = std::process::Command::new("ip");
    command
        .args([
            "netns",
            "exec",
            namespace,
            env!("CARGO_BIN_EXE_egret"),
            "run",
            "--config",
        ])
        .arg(&config)
        .args(["--runtime", runtime, "--threads", "2"]);
    let gateway = GatewayProcess::spawn(command, &["listening explicit"])
        .unwrap_or_else(|e| panic!("{runtime}: {e:?}"));
    let addr: SocketAddr = gateway
        .stderr()
        .lines()
        .find_map(|l| {
            l.split("listening explicit ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        })
        .expect("the explicit listener's address");
    let exchange = |request: String| {
        in_namespace(namespace, move || {
            use std::io::{Read, Write};
            let mut stream = StdStream::connect(addr).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            stream.write_all(request.as_bytes()).unwrap();
            let mut response = Vec::new();
            let _ = stream.read_to_end(&mut response);
            String::from_utf8_lossy(&response).into_owned()
        })
        .unwrap()
    };
    let response = exchange(
        "GET http://unresolvable.test/resolver HTTP/1.1\r\nHost: unresolvable.test\r\n\r\n"
            .to_owned(),
    );
    assert!(
        response.starts_with("HTTP/1.1 503 ") && response.contains("X-Squid-Error: ERR_DNS_FAIL 0"),
        "{runtime}: {response}\n{}",
        gateway.stderr()
    );
    let response = exchange("CONNECT unresolvable.test:443 HTTP/1.1\r\n\r\n".to_owned());
    assert!(
        response.starts_with("HTTP/1.1 503 ") && response.contains("ERR_DNS_FAIL"),
        "{runtime}: {response}"
    );
    let logged = eventually(Duration::from_secs(5), || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        count_lines(
            &text,
            &["/resolver", "\"status\":503", "\"reason\":\"dns_failed\""],
        ) == 1
            && count_lines(
                &text,
                &["unresolvable.test:443", "\"reason\":\"dns_failed\""],
            ) == 1
    });
    assert!(
        logged,
        "{runtime}: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    figure(
        "resolver failure",
        runtime,
        "system resolver failing (nothing on its port): GET and CONNECT 503 ERR_DNS_FAIL, logged \
         dns_failed",
    );
}

/// A network namespace with loopback up and a resolv.conf naming a resolver that is not
/// there; deleted, with its resolv.conf, when dropped.
struct ResolverNamespace {
    name: String,
    etc: std::path::PathBuf,
}

impl ResolverNamespace {
    fn create() -> ResolverNamespace {
        let name = format!("egret-rel-dns-{}", std::process::id());
        let etc = std::path::Path::new("/etc/netns").join(&name);
        let namespace = ResolverNamespace { name, etc };
        run_ip(&["netns", "add", &namespace.name]);
        run_ip(&["-n", &namespace.name, "link", "set", "lo", "up"]);
        std::fs::create_dir_all(&namespace.etc).unwrap();
        std::fs::write(
            namespace.etc.join("resolv.conf"),
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )
        .unwrap();
        namespace
    }
}

impl Drop for ResolverNamespace {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

fn run_ip(args: &[&str]) {
    let status = std::process::Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2) is needed");
    assert!(status.success(), "ip {args:?}: {status}");
}

/// Returns the allowlist file of one generation: `allowed.test`, 300 names of that generation,
/// and `flip.test` on odd generations.
fn allowlist_generation(generation: u64) -> String {
    let mut text = format!("# generation {generation}\n{ALLOWED}\n");
    for n in 0..300 {
        text.push_str(&format!("host-{n}.generation-{generation}.example.org\n"));
    }
    if generation % 2 == 1 {
        text.push_str("flip.test\n");
    }
    text
}

/// Sends a CONNECT and returns the whole reply (the gateway closes after a failure).
async fn connect_reply(addr: SocketAddr, host: &str, port: u16) -> Vec<u8> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_until_closed(&mut stream, Duration::from_secs(10))
        .await
        .0
}

/// Waits for an access-log line with every one of `parts`.
fn expect_line(gateway: &Gateway, parts: &[&str]) {
    let found = eventually(Duration::from_secs(5), || {
        count_lines(&gateway.log_text(), parts) > 0
    });
    assert!(
        found,
        "{}: no access-log line with {parts:?} in:\n{}",
        gateway.runtime,
        gateway.log_text()
    );
}

/// Returns a listener whose accept queue is full (SYNs to it go unanswered), and its port.
fn blackhole() -> ((tokio::net::TcpListener, Vec<StdStream>), u16) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap();
    let socket = socket.listen(0).unwrap();
    let addr = socket.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(stream) = StdStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(stream);
        }
    }
    ((socket, fillers), addr.port())
}
