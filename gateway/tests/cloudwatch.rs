//! CloudWatch Logs shipping against a local emulator: the real `egret` binary proxies real
//! requests to a loopback origin and ships its access log to `moto_server`, read back with the
//! SDK.
//!
//! Each test starts its own moto on a free loopback port (from the virtual environment
//! `test.sh` makes, `target/moto-venv`, or `EGRET_MOTO_VENV`); it ends with the test, and by
//! itself after two minutes or when the test process goes away. Without moto the tests fail
//! and say how to install it.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::config::{BehaviorVersion, Credentials, Region};
use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use egret_conformance::live::serve_http;
use rustix::process::{Pid, Signal, kill_process};

mod support;

use support::free_port;
use support::moto::MotoServer;

#[test]
fn access_lines_arrive_in_order_and_complete_and_the_group_keeps_its_retention() {
    let moto = Moto::start(None);
    let origin = serve_http().unwrap();
    let mut gateway = Gateway::start(origin, &moto, "/egret/order", "{hostname}", 10_000, &[]);
    let mut paths = Vec::new();
    for i in 0..40 {
        let path = format!("/ordered-{i}");
        assert_eq!(gateway.get("allowed.test", origin, &path), 200);
        paths.push(path);
        if i % 8 == 0 {
            assert_eq!(gateway.get("denied.test", origin, &format!("/no-{i}")), 403);
        }
    }
    let (status, stderr) = gateway.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("CloudWatch Logs: 46 line(s) sent"),
        "{stderr}"
    );

    let local: Vec<String> = gateway.access_log().lines().map(str::to_owned).collect();
    assert_eq!(local.len(), 45);
    let events = moto.events("/egret/order", &hostname());
    let shipped: Vec<&String> = events.iter().filter(|m| !is_emf(m)).collect();
    assert_eq!(
        shipped,
        local.iter().collect::<Vec<_>>(),
        "every line, in order"
    );
    assert!(shipped.iter().any(|line| line.contains("TCP_DENIED/403")));
    assert_eq!(events.len(), 46, "and one metric event");
    assert!(is_emf(&events[45]), "the metric comes last: {}", events[45]);

    let retention = moto.runtime.block_on(async {
        let groups = moto
            .client
            .describe_log_groups()
            .log_group_name_prefix("/egret/order")
            .send()
            .await
            .unwrap();
        groups.log_groups()[0].retention_in_days()
    });
    assert_eq!(retention, Some(3));
}

#[test]
fn the_metric_event_counts_requests_denials_and_errors_by_mode() {
    let moto = Moto::start(None);
    let origin = serve_http().unwrap();
    let env = [("EGRET_INSTANCE_ID", "i-0123456789abcdef0")];
    let mut gateway = Gateway::start(
        origin,
        &moto,
        "/egret/metric",
        "gw-{instance_id}",
        100,
        &env,
    );
    for i in 0..6 {
        assert_eq!(
            gateway.get("allowed.test", origin, &format!("/ok-{i}")),
            200
        );
    }
    for i in 0..4 {
        assert_eq!(gateway.get("denied.test", origin, &format!("/no-{i}")), 403);
    }
    assert_eq!(gateway.get("nx.test", origin, "/unresolvable"), 503);
    let (status, stderr) = gateway.stop();
    assert!(status.success(), "{stderr}");

    let events = moto.events("/egret/metric", "gw-i-0123456789abcdef0");
    let metrics: Vec<serde_json::Value> = events
        .iter()
        .filter(|m| is_emf(m))
        .map(|m| serde_json::from_str(m).unwrap())
        .collect();
    assert_eq!(metrics.len(), 1, "one event at shutdown: {events:?}");
    let metric = &metrics[0];
    let directive = &metric["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(directive["Namespace"], "EgretTest");
    assert_eq!(directive["Dimensions"], serde_json::json!([["Mode"]]));
    assert!(metric["_aws"]["Timestamp"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(metric["Mode"], "explicit");
    assert_eq!(metric["Requests"], 11);
    assert_eq!(metric["Denied"], 4);
    assert_eq!(metric["Errors"], 1);
}

#[test]
fn an_outage_never_slows_proxying_and_the_queued_lines_arrive_after_it() {
    let mut moto = Moto::start(None);
    let origin = serve_http().unwrap();
    let mut gateway = Gateway::start(origin, &moto, "/egret/outage", "{hostname}", 10_000, &[]);
    let before = gateway.timed_gets(origin, "before", 100);
    moto.wait_for_events("/egret/outage", &hostname(), 100);

    moto.stop();
    let during = gateway.timed_gets(origin, "outage", 100);
    eprintln!("100 requests with CloudWatch up: {before:?}; with it down: {during:?}");
    // Let the shipper's first flush fail against the closed port, and a retry or two.
    thread::sleep(Duration::from_millis(2500));
    let moto = Moto::start(Some(moto.server.port));
    let events = moto.wait_for_events("/egret/outage", &hostname(), 100);
    let outage: Vec<&String> = events.iter().filter(|m| m.contains("/outage-")).collect();
    assert_eq!(outage.len(), 100, "every line queued in the outage arrived");
    for (i, line) in outage.iter().enumerate() {
        assert!(line.contains(&format!("/outage-{i} ")), "{i}: {line}");
    }
    let (status, stderr) = gateway.stop();
    eprintln!("{stderr}");
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains(" 0 dropped (queue full) over the run"),
        "{stderr}"
    );
}

#[test]
fn a_full_queue_drops_lines_counts_them_and_says_so() {
    // Nothing listens at the endpoint: the shipper cannot even create the group, so the first
    // five lines wait in the queue and the rest are dropped.
    let unreachable = free_port();
    let origin = serve_http().unwrap();
    let mut gateway = Gateway::start_at(
        origin,
        &format!("http://127.0.0.1:{unreachable}"),
        "/egret/drops",
        "{hostname}",
        5,
        &[],
    );
    gateway.timed_gets(origin, "dropped", 30);
    let summary = gateway.wait_for_stderr("dropped (queue full)", Duration::from_secs(15));
    assert!(summary.contains(" 25 dropped (queue full)"), "{summary}");
    assert!(summary.contains("5 queued"), "{summary}");
    assert!(summary.contains("last error"), "{summary}");
    let started = Instant::now();
    let (status, stderr) = gateway.stop();
    assert!(status.success(), "{stderr}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the flush wait is bounded"
    );
    assert!(
        stderr.contains(
            "CloudWatch Logs: 5 line(s) not delivered within 10s; 0 line(s) sent, 0 failed, \
             25 dropped"
        ),
        "{stderr}"
    );
}

/// A `moto_server` process on a loopback port, and an SDK client for it.
struct Moto {
    server: MotoServer,
    runtime: tokio::runtime::Runtime,
    client: Client,
}

impl Moto {
    /// Starts moto on `port` (a free one when `None`) with a CloudWatch Logs client for it.
    fn start(port: Option<u16>) -> Moto {
        let server = MotoServer::start(port);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let http = aws_smithy_http_client::Builder::new()
            .tls_provider(tls::Provider::Rustls(CryptoMode::Ring))
            .build_https();
        let config = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("testing", "testing", None, None, "test"))
            .endpoint_url(server.endpoint())
            .http_client(http)
            .build();
        Moto {
            server,
            runtime,
            client: Client::from_conf(config),
        }
    }

    fn endpoint(&self) -> String {
        self.server.endpoint()
    }

    /// Kills moto and waits until it has exited.
    fn stop(&mut self) {
        self.server.stop();
    }

    /// Returns every event's message in the stream, oldest first (none if it does not exist).
    fn events(&self, group: &str, stream: &str) -> Vec<String> {
        self.runtime.block_on(async {
            let mut messages = Vec::new();
            let mut token: Option<String> = None;
            loop {
                let page = self
                    .client
                    .get_log_events()
                    .log_group_name(group)
                    .log_stream_name(stream)
                    .start_from_head(true)
                    .set_next_token(token.clone())
                    .send()
                    .await;
                let Ok(page) = page else {
                    return messages;
                };
                let before = messages.len();
                messages.extend(
                    page.events()
                        .iter()
                        .filter_map(|e| e.message().map(str::to_owned)),
                );
                let next = page.next_forward_token().map(str::to_owned);
                if messages.len() == before || next.is_none() || next == token {
                    return messages;
                }
                token = next;
            }
        })
    }

    /// Waits up to 20 s for at least `count` events in the stream; returns them.
    fn wait_for_events(&self, group: &str, stream: &str, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let events = self.events(group, stream);
            if events.len() >= count {
                return events;
            }
            assert!(
                Instant::now() < deadline,
                "{} of {count} events arrived in {group} {stream}",
                events.len()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

/// A running `egret run` whose access log and stderr go to files.
struct Gateway {
    child: Child,
    addr: SocketAddr,
    dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts the gateway shipping to `moto`.
    fn start(
        origin: u16,
        moto: &Moto,
        group: &str,
        stream: &str,
        queue_events: usize,
        env: &[(&str, &str)],
    ) -> Gateway {
        Gateway::start_at(origin, &moto.endpoint(), group, stream, queue_events, env)
    }

    /// Starts the gateway shipping to `endpoint`: `allowed.test` and `denied.test` resolve to
    /// the origin, `nx.test` to nothing.
    fn start_at(
        origin: u16,
        endpoint: &str,
        group: &str,
        stream: &str,
        queue_events: usize,
        env: &[(&str, &str)],
    ) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let config = format!(
            "[listen]\nexplicit = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n\
             [allowlist]\ndomains = [\"allowed.test\", \"nx.test\"]\n\n\
             [policy]\nports = [{origin}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\n\
             [resolver]\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"], \
             \"denied.test\" = [\"127.0.0.1\"], \"nx.test\" = [] }}\n\n\
             [limits]\ndrain_timeout = \"2s\"\n\n\
             [log]\nformat = \"squid\"\npath = \"access.log\"\n\n\
             [log.cloudwatch]\ngroup = \"{group}\"\nstream = \"{stream}\"\nretention_days = 3\n\
             endpoint = \"{endpoint}\"\nmetric_namespace = \"EgretTest\"\n\
             queue_events = {queue_events}\n"
        );
        let config_path = dir.path().join("egret.toml");
        std::fs::write(&config_path, config).unwrap();
        // Empty AWS files: no profile of the machine's leaks in.
        let (aws_config, aws_credentials) = (
            dir.path().join("aws-config"),
            dir.path().join("aws-credentials"),
        );
        std::fs::write(&aws_config, "").unwrap();
        std::fs::write(&aws_credentials, "").unwrap();
        let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_egret"));
        command
            .args(["run", "--config"])
            .arg(&config_path)
            .args(["--threads", "2"])
            .env("EGRET_LOG", "info")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("AWS_CONFIG_FILE", aws_config)
            .env("AWS_SHARED_CREDENTIALS_FILE", aws_credentials)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env_remove("EGRET_INSTANCE_ID");
        for proxy in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
        ] {
            command.env_remove(proxy);
        }
        command.envs(env.iter().copied());
        let child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let mut gateway = Gateway {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            dir,
        };
        let line = gateway.wait_for_stderr("listening explicit ", Duration::from_secs(30));
        let addr = line.split("listening explicit ").nth(1).unwrap().trim();
        gateway.addr = addr.parse().unwrap();
        gateway
    }

    /// Sends `GET http://host:port/path` through the gateway; returns the status.
    fn get(&self, host: &str, port: u16, path: &str) -> u16 {
        let mut stream = TcpStream::connect(self.addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        let request = format!(
            "GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\n\
             Connection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut response = Vec::new();
        stream.read_to_end(&mut response).unwrap();
        let head = String::from_utf8_lossy(&response);
        let status = head.split(' ').nth(1).unwrap_or_default();
        status
            .parse()
            .unwrap_or_else(|_| panic!("no response to {path}: {head:?}"))
    }

    /// Sends `count` allowed requests for `/{name}-{i}`, each answered 200; returns the time.
    fn timed_gets(&self, origin: u16, name: &str, count: usize) -> Duration {
        let started = Instant::now();
        for i in 0..count {
            let status = self.get("allowed.test", origin, &format!("/{name}-{i}"));
            assert_eq!(status, 200, "request {i} of {name}");
        }
        started.elapsed()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("stderr.log")).unwrap_or_default()
    }

    fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("access.log")).unwrap_or_default()
    }

    /// Waits for a line of the gateway's own log containing `text`; returns it.
    fn wait_for_stderr(&mut self, text: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let stderr = self.stderr();
            if let Some(line) = stderr.lines().find(|l| l.contains(text)) {
                return line.to_owned();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("egret exited ({status}) before logging {text:?}:\n{stderr}");
            }
            assert!(Instant::now() < deadline, "no {text:?} in:\n{stderr}");
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Sends SIGTERM and waits up to 30 s for the exit; returns the status and the stderr.
    fn stop(&mut self) -> (ExitStatus, String) {
        let pid = i32::try_from(self.child.id())
            .ok()
            .and_then(Pid::from_raw)
            .unwrap();
        kill_process(pid, Signal::TERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.stderr());
            }
            assert!(
                Instant::now() < deadline,
                "egret did not exit:\n{}",
                self.stderr()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Returns whether a message is an EMF event (a JSON object with `_aws` metadata).
fn is_emf(message: &str) -> bool {
    message.starts_with('{') && message.contains("\"_aws\":{")
}

/// Returns the machine's host name as the gateway reads it.
fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}
