//! High availability on one machine: two `egret` processes behind HAProxy in TCP mode, which
//! health-checks `GET /readyz` on their admin ports as the AWS Network Load Balancer does,
//! under a steady, bounded load of new CONNECT tunnels.
//!
//! 1. SIGTERM one gateway: it turns unready, the balancer takes it out during `drain_grace`,
//!    and not one tunnel fails.
//! 2. SIGKILL the other while the first restarts: only what the dead one had in flight, and
//!    what reaches it before the balancer notices, fails; service returns within the health
//!    checks' detection time, and then nothing fails.
//!
//! HAProxy does no retries or redispatch here, like an NLB. Needs `haproxy` (test.sh installs
//! it); without it the test fails and says so.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use egret_conformance::live::{LiveGateway, serve_echo};
use egret_conformance::netns::find_program;
use rustix::process::{Pid, Signal, kill_process};
use support::free_port;

mod support;

/// Health checks every 200 ms; two failures mark a server down, two passes up.
const CHECK_INTERVAL: Duration = Duration::from_millis(200);
/// Load threads, each opening one tunnel after another.
const CLIENTS: usize = 4;
/// The most tunnels the load may open, and the longest it may run: it stops by itself.
const MAX_TUNNELS: usize = 200_000;
const MAX_LOAD_TIME: Duration = Duration::from_secs(90);

#[test]
fn a_drained_gateway_loses_nothing_and_a_killed_one_only_what_it_held() {
    let haproxy = find_program("haproxy")
        .expect("haproxy is not installed: the test command installs it (apt-get install haproxy)");
    let echo = serve_echo().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut a = Node::new("a", dir.path(), echo);
    let mut b = Node::new("b", dir.path(), echo);
    a.start();
    b.start();
    let balancer = Balancer::start(&haproxy, dir.path(), &[&a, &b]);
    balancer.wait_until_serving(echo);

    let load = Load::start(balancer.addr, echo);
    thread::sleep(Duration::from_secs(2));

    // 1. A graceful drain of a.
    let drain_started = Instant::now();
    a.signal(Signal::TERM);
    let status = a.wait_exit(Duration::from_secs(30));
    assert!(status, "a did not exit 0 after SIGTERM:\n{}", a.stderr());
    thread::sleep(Duration::from_secs(1));
    let drained = load.snapshot();
    let drain_failures = drained.failures_since(drain_started);

    // 2. b dies while a comes back.
    let kill = Instant::now();
    b.signal(Signal::KILL);
    a.start();
    thread::sleep(Duration::from_secs(5));
    let recovered_by = kill + Duration::from_secs(3);
    let after = load.stop();
    let kill_failures = after.failures_since(kill);
    let late_failures = after.failures_since(recovered_by);
    let late_ok = after.ok_since(recovered_by);

    let outage = kill_failures
        .last()
        .map_or(Duration::ZERO, |(at, _)| at.duration_since(kill));
    eprintln!(
        "HA: {} tunnels before the drain, {} in all; drain of a: {} failed; kill of b: {} \
         failed (first error: {:?}) over {outage:?} after the kill, then {} failed and {} \
         succeeded from 3 s after it",
        drained.ok_before(drain_started),
        after.ok.len(),
        drain_failures.len(),
        kill_failures.len(),
        after.first_error(),
        late_failures.len(),
        late_ok
    );
    assert!(
        after.ok.len() > 100,
        "too little load to judge: {}",
        after.ok.len()
    );
    assert_eq!(
        drain_failures.len(),
        0,
        "tunnels failed during a graceful drain: {:?}",
        after.first_error()
    );
    assert!(
        late_ok > 50,
        "service did not come back: {late_ok} tunnels after the kill"
    );
    assert_eq!(
        late_failures.len(),
        0,
        "tunnels still failed 3 s after the kill (checks every {CHECK_INTERVAL:?}): {:?}",
        after.first_error()
    );
}

/// One gateway, on fixed ports so that a restart takes its place behind the balancer.
struct Node {
    name: &'static str,
    proxy: SocketAddr,
    admin: SocketAddr,
    config: PathBuf,
    log: PathBuf,
    gateway: Option<LiveGateway>,
}

impl Node {
    fn new(name: &'static str, dir: &Path, echo: u16) -> Node {
        let proxy = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let admin = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let log = dir.join(format!("{name}-access.log"));
        let config = dir.join(format!("{name}.toml"));
        let text = format!(
            "[listen]\nexplicit = [\"{proxy}\"]\nadmin = \"{admin}\"\n\
             [allowlist]\ndomains = [\"allowed.test\"]\n\
             [policy]\nports = [{echo}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\
             [resolver]\nhosts = {{ \"allowed.test\" = [\"127.0.0.1\"] }}\n\
             [limits]\ndrain_grace = \"{grace}ms\"\ndrain_timeout = \"10s\"\n\
             [log]\npath = {log:?}\n",
            // Long enough for two failed checks and a margin.
            grace = CHECK_INTERVAL.as_millis() * 5,
            log = log.to_string_lossy(),
        );
        std::fs::write(&config, text).unwrap();
        Node {
            name,
            proxy,
            admin,
            config,
            log,
            gateway: None,
        }
    }

    fn start(&mut self) {
        let bin = Path::new(env!("CARGO_BIN_EXE_egret"));
        let gateway = LiveGateway::start(bin, "tokio", &self.config, self.log.clone())
            .unwrap_or_else(|e| panic!("{} did not start: {e}", self.name));
        assert_eq!(gateway.addr, self.proxy);
        self.gateway = Some(gateway);
    }

    fn gateway(&mut self) -> &mut LiveGateway {
        self.gateway.as_mut().expect("started")
    }

    fn signal(&mut self, signal: Signal) {
        let pid = i32::try_from(self.gateway().pid()).unwrap();
        kill_process(Pid::from_raw(pid).unwrap(), signal).unwrap();
    }

    /// Waits for the process to exit; returns whether it exited 0.
    fn wait_exit(&mut self, within: Duration) -> bool {
        let status = self.gateway().wait_exit(within).unwrap();
        status.is_some_and(|s| s.success())
    }

    fn stderr(&mut self) -> String {
        self.gateway().stderr_text()
    }
}

/// HAProxy in TCP mode in front of the nodes, checking `/readyz`.
struct Balancer {
    child: Child,
    addr: SocketAddr,
}

impl Balancer {
    fn start(bin: &Path, dir: &Path, nodes: &[&Node]) -> Balancer {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
        let inter = CHECK_INTERVAL.as_millis();
        let servers: String = nodes
            .iter()
            .map(|n| {
                format!(
                    "    server {} {} check port {} inter {inter}ms fall 2 rise 2\n",
                    n.name,
                    n.proxy,
                    n.admin.port()
                )
            })
            .collect();
        let config = format!(
            "global\n    maxconn 4096\n\
             defaults\n    mode tcp\n    timeout connect 2s\n    timeout client 30s\n    \
             timeout server 30s\n    retries 0\n\
             frontend proxy\n    bind {addr}\n    default_backend gateways\n\
             backend gateways\n    balance roundrobin\n    option httpchk GET /readyz\n    \
             http-check expect status 200\n{servers}"
        );
        let path = dir.join("haproxy.cfg");
        std::fs::write(&path, config).unwrap();
        let child = Command::new(bin)
            .arg("-db")
            .arg("-f")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("haproxy starts");
        Balancer { child, addr }
    }

    /// Waits until twenty tunnels in a row succeed through the balancer.
    fn wait_until_serving(&self, echo: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut streak = 0;
        while streak < 20 {
            assert!(Instant::now() < deadline, "HAProxy did not start serving");
            if tunnel(self.addr, echo).is_ok() {
                streak += 1;
            } else {
                streak = 0;
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The outcomes so far: when each tunnel finished, and the failures with their errors.
#[derive(Clone, Default)]
struct Outcomes {
    ok: Vec<Instant>,
    failed: Vec<(Instant, String)>,
}

impl Outcomes {
    fn failures_since(&self, since: Instant) -> Vec<&(Instant, String)> {
        self.failed.iter().filter(|(at, _)| *at >= since).collect()
    }

    fn ok_since(&self, since: Instant) -> usize {
        self.ok.iter().filter(|at| **at >= since).count()
    }

    fn ok_before(&self, before: Instant) -> usize {
        self.ok.iter().filter(|at| **at < before).count()
    }

    fn first_error(&self) -> Option<&str> {
        self.failed.first().map(|(_, e)| e.as_str())
    }
}

/// Threads opening tunnels one after another until stopped (or the caps are reached).
struct Load {
    stop: Arc<AtomicBool>,
    outcomes: Arc<Mutex<Outcomes>>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Load {
    fn start(addr: SocketAddr, echo: u16) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let outcomes = Arc::new(Mutex::new(Outcomes::default()));
        let started = Instant::now();
        let threads = (0..CLIENTS)
            .map(|_| {
                let (stop, outcomes) = (stop.clone(), outcomes.clone());
                thread::spawn(move || {
                    for _ in 0..MAX_TUNNELS / CLIENTS {
                        if stop.load(Ordering::Relaxed) || started.elapsed() > MAX_LOAD_TIME {
                            return;
                        }
                        let result = tunnel(addr, echo);
                        let mut outcomes = outcomes.lock().unwrap();
                        match result {
                            Ok(()) => outcomes.ok.push(Instant::now()),
                            Err(e) => outcomes.failed.push((Instant::now(), e)),
                        }
                    }
                })
            })
            .collect();
        Load {
            stop,
            outcomes,
            threads,
        }
    }

    fn snapshot(&self) -> Outcomes {
        self.outcomes.lock().unwrap().clone()
    }

    fn stop(self) -> Outcomes {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().unwrap();
        }
        let outcomes = self.outcomes.lock().unwrap();
        outcomes.clone()
    }
}

/// One tunnel: CONNECT, 200, a line echoed through it, close.
fn tunnel(proxy: SocketAddr, echo: u16) -> Result<(), String> {
    let stream =
        TcpStream::connect_timeout(&proxy, Duration::from_secs(2)).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut writer = stream.try_clone().map_err(|e| e.to_string())?;
    let mut reader = BufReader::new(stream);
    write!(writer, "CONNECT allowed.test:{echo} HTTP/1.1\r\n\r\n").map_err(|e| e.to_string())?;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if !line.starts_with("HTTP/1.1 200 ") {
        return Err(format!("status line {line:?}"));
    }
    loop {
        line.clear();
        reader.read_line(&mut line).map_err(|e| e.to_string())?;
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    writer.write_all(b"ping\n").map_err(|e| e.to_string())?;
    line.clear();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    if line == "ping\n" {
        Ok(())
    } else {
        Err(format!("echo {line:?}"))
    }
}
