//! Operating the live gateway: the admin endpoint over HTTP (`/healthz`, `/readyz`,
//! `/metrics`), the endpoint kept out of the proxy's reach, the graceful drain on SIGTERM with a
//! tunnel open across it, and PROXY protocol headers as an AWS Network Load Balancer sends
//! them. The drain and PROXY protocol tests run on every runtime.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::thread;
use std::time::{Duration, Instant};

use egret_conformance::live::{LiveGateway, serve_echo, serve_http};
use rustix::process::{Pid, Signal, kill_process};
use support::free_port;

mod support;

const RUNTIMES: [&str; 3] = ["tokio", "mio", "glommio"];

#[test]
fn the_admin_endpoint_reports_health_readiness_and_the_requests_it_saw() {
    let origin = serve_http().unwrap();
    let world = World::start("tokio", origin, "");
    let admin = world.admin();

    assert_eq!(http_get(admin, "/healthz"), (200, "ok\n".to_owned()));
    assert_eq!(http_get(admin, "/readyz"), (200, "ready\n".to_owned()));
    assert_eq!(http_get(admin, "/nothing-here").0, 404);

    assert_eq!(world.get("allowed.test", origin, "/one").0, 200);
    assert_eq!(world.get("allowed.test", origin, "/two").0, 200);
    assert_eq!(world.get("denied.test", origin, "/three").0, 403);
    world
        .gateway
        .wait_for_line(&[r#""code":"TCP_DENIED""#, "/three"])
        .unwrap();

    let (status, metrics) = http_get(admin, "/metrics");
    assert_eq!(status, 200);
    let value = |name: &str| metric(&metrics, name).unwrap_or_else(|| panic!("{name}:\n{metrics}"));
    assert_eq!(
        value(r#"egret_requests_total{mode="explicit",decision="allowed"}"#),
        2.0
    );
    assert_eq!(
        value(r#"egret_requests_total{mode="explicit",decision="denied"}"#),
        1.0
    );
    assert_eq!(value("egret_allowlist_entries"), 2.0);
    assert_eq!(value("egret_accepted_total"), 3.0);
    assert_eq!(value("egret_events_dropped_total"), 0.0);
    assert_eq!(value("egret_policy_reloads_failed_total"), 0.0);
    assert!(value(r#"egret_bytes_total{direction="to_client"}"#) > 0.0);
    assert!(value(r#"egret_bytes_total{direction="from_client"}"#) > 0.0);
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");
}

#[test]
fn the_admin_endpoint_cannot_be_reached_through_the_proxy() {
    let origin = serve_http().unwrap();
    let admin_port = free_port();
    // admin.test is on the allowlist and its port is allowed: only the own-port rule refuses it.
    let world = World::start_with(
        "tokio",
        origin,
        &format!("admin = \"127.0.0.1:{admin_port}\"\n"),
        &[admin_port],
        "",
    );
    assert_eq!(world.admin().port(), admin_port);

    let (status, _) = world.get("admin.test", admin_port, "/metrics");
    assert_eq!(status, 403);
    let mut tunnel = world.connect_to_proxy();
    write!(tunnel, "CONNECT admin.test:{admin_port} HTTP/1.1\r\n\r\n").unwrap();
    assert_eq!(read_status(&mut BufReader::new(&tunnel)), 403);
    let line = world
        .gateway
        .wait_for_line(&[r#""code":"TCP_DENIED""#, r#""url":"admin.test:"#])
        .unwrap();
    assert!(line.contains("own_listener"), "{line}");
    // The same name on the origin's port goes through: it is the port, not the name.
    assert_eq!(world.get("admin.test", origin, "/fine").0, 200);
}

#[test]
fn sigterm_turns_readyz_503_keeps_accepting_for_the_grace_then_drains_open_tunnels() {
    for runtime in RUNTIMES {
        let origin = serve_http().unwrap();
        let echo = serve_echo().unwrap();
        let mut world = World::start_with(
            runtime,
            origin,
            "",
            &[echo],
            "[limits]\ndrain_grace = \"1500ms\"\ndrain_timeout = \"20s\"\n",
        );
        let admin = world.admin();
        let mut tunnel = world.tunnel(echo);
        tunnel.exchange(b"before");

        world.signal(Signal::TERM);
        // Not ready at once, so the load balancer stops sending new connections …
        wait_until(&format!("{runtime}: /readyz 503"), || {
            http_get(admin, "/readyz") == (503, "draining\n".to_owned())
        });
        assert_eq!(http_get(admin, "/healthz").0, 200, "{runtime}");
        // … while the listener still takes the ones already on their way.
        assert_eq!(
            world.get("allowed.test", origin, "/in-grace").0,
            200,
            "{runtime}"
        );
        // After the grace the listener closes; the open tunnel keeps working.
        wait_until(&format!("{runtime}: the listener closes"), || {
            TcpStream::connect(world.gateway.addr).is_err()
        });
        tunnel.exchange(b"during the drain");
        assert_eq!(
            world.gateway.wait_exit(Duration::from_millis(300)).unwrap(),
            None,
            "{runtime}: exited with a tunnel open"
        );
        drop(tunnel);
        let status = world.gateway.wait_exit(Duration::from_secs(10)).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "{runtime}: {status:?}\n{}",
            world.gateway.stderr_text()
        );
        let line = world
            .gateway
            .wait_for_line(&[
                r#""code":"TCP_TUNNEL""#,
                &format!(r#""url":"allowed.test:{}""#, echo),
            ])
            .unwrap();
        // Both exchanges' bytes are counted: the tunnel was logged when it ended, not cut.
        let from_client = format!(r#""bytes_from_client":{}"#, tunnel_bytes(echo));
        assert!(line.contains(&from_client), "{runtime}: {line}");
    }
}

#[test]
fn a_second_sigterm_exits_at_once() {
    for runtime in RUNTIMES {
        let origin = serve_http().unwrap();
        let echo = serve_echo().unwrap();
        let mut world = World::start_with(
            runtime,
            origin,
            "",
            &[echo],
            "[limits]\ndrain_timeout = \"60s\"\n",
        );
        let mut tunnel = world.tunnel(echo);
        tunnel.exchange(b"hello");
        world.signal(Signal::TERM);
        wait_until(&format!("{runtime}: the drain begins"), || {
            world.gateway.stderr_text().contains("draining connections")
        });
        world.signal(Signal::TERM);
        let status = world.gateway.wait_exit(Duration::from_secs(5)).unwrap();
        assert!(
            status.is_some_and(|s| s.success()),
            "{runtime}: {status:?}\n{}",
            world.gateway.stderr_text()
        );
    }
}

#[test]
fn with_proxy_protocol_required_the_log_shows_the_client_the_header_names() {
    for runtime in RUNTIMES {
        let origin = serve_http().unwrap();
        let world = World::start_with(runtime, origin, "proxy_protocol = \"required\"\n", &[], "");

        // v1, as an NLB sends it for a TCP listener with PROXY protocol on.
        let v1 = format!(
            "PROXY TCP4 10.9.8.7 10.0.0.1 51234 3128\r\nGET http://allowed.test:{origin}/v1 HTTP/1.1\r\nHost: allowed.test\r\nConnection: close\r\n\r\n"
        );
        let (status, _) = world.exchange(v1.as_bytes());
        assert_eq!(status, Some(200), "{runtime}");
        let line = world.gateway.wait_for_line(&["/v1"]).unwrap();
        assert!(
            line.contains(r#""client":"10.9.8.7:51234""#),
            "{runtime}: {line}"
        );

        // v2 through a PrivateLink endpoint: the AWS TLV names the VPC endpoint.
        let mut v2 = proxy_v2([10, 1, 2, 3], 40000, Some("vpce-0a1b2c3d4e5f60718"));
        v2.extend_from_slice(
            format!("GET http://denied.test:{origin}/v2 HTTP/1.1\r\nHost: denied.test\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        );
        let (status, _) = world.exchange(&v2);
        assert_eq!(status, Some(403), "{runtime}");
        let line = world.gateway.wait_for_line(&["/v2"]).unwrap();
        assert!(
            line.contains(r#""client":"10.1.2.3:40000""#),
            "{runtime}: {line}"
        );
        assert!(
            line.contains(r#""vpc_endpoint_id":"vpce-0a1b2c3d4e5f60718""#),
            "{runtime}: {line}"
        );

        // An NLB health check: a v2 LOCAL header, then nothing. Closed cleanly, never logged
        // as a request.
        let mut local = proxy_v2([0, 0, 0, 0], 0, None);
        local[12] = 0x20;
        let (status, rest) = world.exchange(&local);
        assert_eq!((status, rest.as_str()), (None, ""), "{runtime}");

        // Without a header the connection is closed, unanswered.
        let plain = format!(
            "GET http://allowed.test:{origin}/plain HTTP/1.1\r\nHost: allowed.test\r\n\r\n"
        );
        let (status, rest) = world.exchange(plain.as_bytes());
        assert_eq!((status, rest.as_str()), (None, ""), "{runtime}");
        world
            .gateway
            .wait_for_line(&[r#""detail":"proxy_header_missing""#])
            .unwrap();
        let log = world.gateway.log_text();
        let origin = format!(":{origin}/plain");
        assert!(!log.contains(&origin), "{runtime}: {log}");
    }
}

/// A gateway on one runtime with an explicit listener, an admin endpoint and a small allowlist
/// (`allowed.test`, `admin.test`; `denied.test` resolves but is not listed).
struct World {
    gateway: LiveGateway,
    _dir: tempfile::TempDir,
}

impl World {
    fn start(runtime: &str, origin: u16, extra: &str) -> World {
        World::start_with(runtime, origin, "", &[], extra)
    }

    /// Starts with `listen` appended to `[listen]`, `ports` allowed besides the origin's, and
    /// `extra` sections (not `[log]`: the log is JSON, to a file) at the end.
    fn start_with(runtime: &str, origin: u16, listen: &str, ports: &[u16], extra: &str) -> World {
        let dir = tempfile::tempdir().unwrap();
        let log_path = dir.path().join("access.log");
        let admin = if listen.contains("admin") {
            String::new()
        } else {
            "admin = \"127.0.0.1:0\"\n".to_owned()
        };
        let ports: Vec<String> = std::iter::once(origin)
            .chain(ports.iter().copied())
            .map(|p| p.to_string())
            .collect();
        let config = format!(
            "[listen]\nexplicit = [\"127.0.0.1:0\"]\n{admin}{listen}\n\
             [allowlist]\ndomains = [\"allowed.test\", \"admin.test\"]\n\
             [policy]\nports = [{ports}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\
             [resolver]\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"], \"admin.test\" = [\"127.0.0.1\"], \"denied.test\" = [\"127.0.0.1\"] }}\n\
             {extra}\n[log]\nformat = \"json\"\npath = {log:?}\n",
            ports = ports.join(", "),
            log = log_path.to_string_lossy(),
        );
        let config_path = dir.path().join("egret.toml");
        std::fs::write(&config_path, config).unwrap();
        let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
        let gateway = LiveGateway::start(bin, runtime, &config_path, log_path).unwrap();
        World { gateway, _dir: dir }
    }

    fn admin(&self) -> SocketAddr {
        self.gateway
            .listening("admin")
            .unwrap_or_else(|| panic!("no admin address:\n{}", self.gateway.stderr_text()))
    }

    fn connect_to_proxy(&self) -> TcpStream {
        let stream = TcpStream::connect(self.gateway.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    /// Sends `GET http://host:port/path` and returns the status and body.
    fn get(&self, host: &str, port: u16, path: &str) -> (u16, String) {
        let request = format!(
            "GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
        );
        let (status, body) = self.exchange(request.as_bytes());
        (status.unwrap_or(0), body)
    }

    /// Writes `bytes` on a new connection and reads to the end: the status line's code, if
    /// any, and everything after it.
    fn exchange(&self, bytes: &[u8]) -> (Option<u16>, String) {
        let mut stream = self.connect_to_proxy();
        stream.write_all(bytes).unwrap();
        let mut text = String::new();
        let _ = stream.read_to_string(&mut text);
        let status = text
            .strip_prefix("HTTP/1.1 ")
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse().ok());
        (status, text)
    }

    /// Opens a CONNECT tunnel to `allowed.test:port`.
    fn tunnel(&self, port: u16) -> Tunnel {
        let mut stream = self.connect_to_proxy();
        write!(
            stream,
            "CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n"
        )
        .unwrap();
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        assert_eq!(read_status(&mut reader), 200);
        Tunnel { stream, reader }
    }

    fn signal(&self, signal: Signal) {
        let pid = Pid::from_raw(i32::try_from(self.gateway.pid()).unwrap()).unwrap();
        kill_process(pid, signal).unwrap();
    }
}

/// An open CONNECT tunnel to the echo origin.
struct Tunnel {
    stream: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Tunnel {
    /// Sends a line and reads it back.
    fn exchange(&mut self, text: &[u8]) {
        self.stream.write_all(text).unwrap();
        self.stream.write_all(b"\n").unwrap();
        let mut line = Vec::new();
        self.reader.read_until(b'\n', &mut line).unwrap();
        assert_eq!(line, [text, b"\n"].concat());
    }
}

/// The bytes a client sends in `sigterm_…`: the CONNECT head, then two echoed lines.
fn tunnel_bytes(port: u16) -> usize {
    let head = format!("CONNECT allowed.test:{port} HTTP/1.1\r\nHost: allowed.test:{port}\r\n\r\n");
    head.len() + "before\n".len() + "during the drain\n".len()
}

/// Reads a response head; returns its status code.
fn read_status(reader: &mut impl BufRead) -> u16 {
    let mut status = String::new();
    reader.read_line(&mut status).unwrap();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
            break;
        }
    }
    status
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not a status line: {status:?}"))
}

/// `GET path` on the admin endpoint; returns the status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reader = BufReader::new(stream);
    let status = read_status(&mut reader);
    let mut body = String::new();
    reader.read_to_string(&mut body).unwrap();
    (status, body)
}

/// Returns the value of the sample `name` (with its labels, exactly) in a Prometheus text page.
fn metric(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A v2 PROXY header (TCP over IPv4) from `source`, with the AWS TLV naming `vpce` if given.
fn proxy_v2(source: [u8; 4], port: u16, vpce: Option<&str>) -> Vec<u8> {
    let mut body = Vec::new();
    body.extend_from_slice(&source);
    body.extend_from_slice(&[10, 0, 0, 1]);
    body.extend_from_slice(&port.to_be_bytes());
    body.extend_from_slice(&3128u16.to_be_bytes());
    if let Some(vpce) = vpce {
        // PP2_TYPE_AWS, then the subtype PP2_SUBTYPE_AWS_VPCE_ID and the id.
        body.push(0xEA);
        body.extend_from_slice(&u16::try_from(vpce.len() + 1).unwrap().to_be_bytes());
        body.push(0x01);
        body.extend_from_slice(vpce.as_bytes());
    }
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.push(0x21); // version 2, PROXY
    header.push(0x11); // TCP over IPv4
    header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
    header.extend_from_slice(&body);
    header
}

/// Polls `done` for up to ten seconds.
fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}
