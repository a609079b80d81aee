//! Runs cases against a live `egret` process on loopback, with real origin servers.
//!
//! One gateway process runs per world, configured like the simulated world (static DNS
//! answers pointing at 127.0.0.1, `private_exceptions = ["127.0.0.0/8"]`) and logging JSON to
//! a file, so each case's access records are found by its client port.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read as _, Write as _};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use crate::case::{
    CONNECT_TIMEOUT, Case, HEADER_TIMEOUT, IDLE_TIMEOUT, LogExpect, MAX_HEADER_BYTES, Ports, Step,
    World,
};
use crate::client::{Read, check, read_response};
use crate::origin::Origin;
use crate::{CONNECT_ESTABLISHED, Failure, LogRecord, check_log};

/// How long a read may wait for what a step expects.
const READ_DEADLINE: Duration = Duration::from_secs(5);
/// How long to wait for a case's access records to appear.
const LOG_DEADLINE: Duration = Duration::from_secs(5);
/// Cases run at once.
const PARALLEL: usize = 8;

/// The results of a run: every case with its outcome.
#[derive(Debug)]
pub struct Report {
    /// The runtime the gateway ran on.
    pub runtime: String,
    /// (case name, failure) for every case that failed.
    pub failures: Vec<(&'static str, Failure)>,
    /// Cases run.
    pub ran: usize,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{} of {} cases failed on runtime {}:",
            self.failures.len(),
            self.ran,
            self.runtime
        )?;
        for (name, failure) in &self.failures {
            writeln!(f, "  {name}: {failure}")?;
        }
        Ok(())
    }
}

/// Runs every case against the `egret` binary at `bin` with `--runtime runtime`.
pub fn run_all(bin: &Path, runtime: &str, cases: &[Case]) -> io::Result<Report> {
    let origins = Origins::start()?;
    let dir = tempfile::tempdir()?;
    let mut worlds = BTreeMap::new();
    for case in cases {
        if let std::collections::btree_map::Entry::Vacant(slot) = worlds.entry(case.world) {
            slot.insert(LiveGateway::spawn(
                bin,
                runtime,
                case.world,
                &origins.ports,
                dir.path(),
            )?);
        }
    }
    let (tx, rx) = mpsc::channel();
    let (work_tx, work_rx) = mpsc::channel::<&Case>();
    let work_rx = std::sync::Mutex::new(work_rx);
    thread::scope(|scope| {
        for _ in 0..PARALLEL {
            let tx = tx.clone();
            let work_rx = &work_rx;
            let worlds = &worlds;
            let ports = origins.ports;
            scope.spawn(move || {
                loop {
                    let next = work_rx.lock().map(|rx| rx.recv());
                    let Ok(Ok(case)) = next else { return };
                    let Some(gateway) = worlds.get(&case.world) else {
                        return;
                    };
                    let _ = tx.send((case.name, run_case(gateway, &ports, case)));
                }
            });
        }
        for case in cases {
            let _ = work_tx.send(case);
        }
        drop(work_tx);
    });
    drop(tx);
    let mut failures: Vec<(&'static str, Failure)> = rx
        .iter()
        .filter_map(|(name, result)| result.err().map(|f| (name, f)))
        .collect();
    failures.sort_by_key(|(name, _)| *name);
    Ok(Report {
        runtime: runtime.to_owned(),
        failures,
        ran: cases.len(),
    })
}

/// Runs one case on a connection of its own.
pub fn run_case(gateway: &LiveGateway, ports: &Ports, case: &Case) -> Result<(), Failure> {
    let fail = |step, message| Failure { step, message };
    let mut client =
        Client::connect(gateway.addr).map_err(|e| fail(None, format!("connect: {e}")))?;
    let port = client.stream.local_addr().map(|a| a.port()).unwrap_or(0);
    for (index, step) in case.steps.iter().enumerate() {
        client
            .step(step, ports)
            .map_err(|message| fail(Some(index), message))?;
    }
    client.finish();
    wait_for_log(gateway, port, ports, &case.log).map_err(|message| fail(None, message))
}

/// A running `egret` process for one world.
#[derive(Debug)]
pub struct LiveGateway {
    child: Child,
    /// The explicit listener's address.
    pub addr: SocketAddr,
    log_path: PathBuf,
    /// Everything the process wrote to stderr so far.
    stderr: Arc<Mutex<String>>,
}

impl LiveGateway {
    /// Starts `egret run` for `world` and waits until it listens.
    pub fn spawn(
        bin: &Path,
        runtime: &str,
        world: World,
        ports: &Ports,
        dir: &Path,
    ) -> io::Result<LiveGateway> {
        let name = format!("{world:?}").to_ascii_lowercase();
        let log_path = dir.join(format!("{name}-access.log"));
        let config_path = dir.join(format!("{name}.toml"));
        std::fs::write(&config_path, config(world, ports, &log_path))?;
        LiveGateway::start(bin, runtime, &config_path, log_path)
    }

    /// Starts `egret run --config config_path` (whose access log goes to `log_path`) and
    /// waits until its explicit listener is bound.
    pub fn start(
        bin: &Path,
        runtime: &str,
        config_path: &Path,
        log_path: PathBuf,
    ) -> io::Result<LiveGateway> {
        LiveGateway::start_with_env(bin, runtime, config_path, log_path, &[])
    }

    /// Like [`LiveGateway::start`], with `env` added to the process's environment.
    pub fn start_with_env(
        bin: &Path,
        runtime: &str,
        config_path: &Path,
        log_path: PathBuf,
        env: &[(&str, &str)],
    ) -> io::Result<LiveGateway> {
        let mut child = Command::new(bin)
            .envs(env.iter().copied())
            .args(["run", "--config"])
            .arg(config_path)
            .args(["--runtime", runtime, "--threads", "2"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr"))?;
        let (tx, rx) = mpsc::channel();
        let text = Arc::new(Mutex::new(String::new()));
        let kept = text.clone();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                {
                    let mut kept = kept.lock().unwrap_or_else(PoisonError::into_inner);
                    kept.push_str(&line);
                    kept.push('\n');
                }
                if !sent {
                    if let Some(addr) = line.split("listening explicit ").nth(1) {
                        let addr = addr
                            .split_whitespace()
                            .next()
                            .unwrap_or("")
                            .parse::<SocketAddr>();
                        if let Ok(addr) = addr {
                            let _ = tx.send(Ok(addr));
                            sent = true;
                            continue;
                        }
                    }
                }
                if line.contains("ERROR") || line.contains("error") {
                    let _ = tx.send(Err(line.clone()));
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(Ok(addr)) => addr,
            Ok(Err(line)) => {
                let _ = child.kill();
                return Err(io::Error::other(format!("egret failed to start: {line}")));
            }
            Err(_) => {
                let _ = child.kill();
                return Err(io::Error::other(
                    "egret did not report a listener within 30 s",
                ));
            }
        };
        Ok(LiveGateway {
            child,
            addr,
            log_path,
            stderr: text,
        })
    }

    /// Returns what the process wrote to stderr so far (its own log).
    #[must_use]
    pub fn stderr_text(&self) -> String {
        self.stderr
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Returns the address of the listener the process reported as `listening {kind} ADDR`
    /// (`admin`, `explicit`, `transparent_tls`…), once it has.
    #[must_use]
    pub fn listening(&self, kind: &str) -> Option<SocketAddr> {
        let marker = format!("listening {kind} ");
        let text = self.stderr_text();
        text.lines()
            .filter_map(|line| line.split(&marker).nth(1))
            .find_map(|rest| rest.split_whitespace().next()?.parse().ok())
    }

    /// Returns the process id.
    #[must_use]
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits up to `timeout` for the process to exit; returns its status if it did.
    pub fn wait_exit(&mut self, timeout: Duration) -> io::Result<Option<ExitStatus>> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(Some(status));
            }
            if Instant::now() >= deadline {
                return Ok(None);
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns the access log written so far.
    #[must_use]
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// Waits up to five seconds for a log line containing every one of `parts`; returns it.
    pub fn wait_for_line(&self, parts: &[&str]) -> Result<String, String> {
        let deadline = Instant::now() + LOG_DEADLINE;
        loop {
            let text = self.log_text();
            if let Some(line) = text.lines().find(|l| parts.iter().all(|p| l.contains(p))) {
                return Ok(line.to_owned());
            }
            if Instant::now() >= deadline {
                return Err(format!("no log line with {parts:?} in:\n{text}"));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Returns the access records logged so far for the client port `port`.
    fn records(&self, port: u16) -> Vec<LogRecord> {
        let Ok(text) = std::fs::read_to_string(&self.log_path) else {
            return Vec::new();
        };
        let suffix = format!(":{port}");
        // Cheap text filter first: the log holds every case's records, and parsing all of
        // them on every poll makes the run quadratic in the number of cases.
        let quoted = format!(":{port}\"");
        text.lines()
            .filter(|line| line.contains(&quoted))
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .filter(|v| v["client"].as_str().is_some_and(|c| c.ends_with(&suffix)))
            .map(|v| LogRecord {
                code: format!(
                    "{}/{:03}",
                    v["code"].as_str().unwrap_or(""),
                    v["status"].as_u64().unwrap_or(0)
                ),
                method: v["method"].as_str().unwrap_or("").to_owned(),
                url: v["url"].as_str().unwrap_or("").to_owned(),
            })
            .collect()
    }
}

impl Drop for LiveGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(world: World, ports: &Ports, log_path: &Path) -> String {
    let quote = |s: &str| format!("{s:?}");
    let domains: Vec<String> = world
        .allow()
        .iter()
        .map(|e| quote(&ports.fill(e)))
        .collect();
    let port_list: Vec<String> = ports.allowed().iter().map(u16::to_string).collect();
    let hosts: Vec<String> = world
        .hosts()
        .iter()
        .map(|(name, addrs)| {
            let addrs: Vec<String> = addrs.iter().map(|a| quote(a)).collect();
            format!("{} = [{}]", quote(name), addrs.join(", "))
        })
        .collect();
    // Only the standard world listens on the known ports; the others take any free port.
    let (proxy, admin) = match world {
        World::Standard => (ports.proxy, ports.admin),
        World::Audit | World::IpLiterals => (0, 0),
    };
    format!(
        "[listen]\nexplicit = [\"127.0.0.1:{proxy}\"]\nadmin = \"127.0.0.1:{admin}\"\n\n\
         [allowlist]\ndomains = [{domains}]\n\n\
         [policy]\nmode = {mode}\nports = [{ports}]\nallow_ip_literals = {literals}\n\
         private_exceptions = [\"127.0.0.0/8\"]\n\n\
         [resolver]\nhosts = {{ {hosts} }}\n\n\
         [limits]\nmax_header_bytes = {max}\nheader_timeout = \"{header}ms\"\n\
         connect_timeout = \"{connect}ms\"\nidle_timeout = \"{idle}ms\"\n\n\
         [log]\nformat = \"json\"\npath = {log}\n",
        domains = domains.join(", "),
        mode = if world.audit() {
            "\"audit\""
        } else {
            "\"enforce\""
        },
        ports = port_list.join(", "),
        literals = world.allow_ip_literals(),
        hosts = hosts.join(", "),
        max = MAX_HEADER_BYTES,
        header = HEADER_TIMEOUT.as_millis(),
        connect = CONNECT_TIMEOUT.as_millis(),
        idle = IDLE_TIMEOUT.as_millis(),
        log = quote(&log_path.to_string_lossy()),
    )
}

fn wait_for_log(
    gateway: &LiveGateway,
    port: u16,
    ports: &Ports,
    expected: &[LogExpect],
) -> Result<(), String> {
    let deadline = Instant::now() + LOG_DEADLINE;
    loop {
        let records = gateway.records(port);
        match check_log(expected, ports, &records) {
            Ok(()) => return Ok(()),
            Err(message) if Instant::now() >= deadline => return Err(message),
            Err(_) => thread::sleep(Duration::from_millis(10)),
        }
    }
}

/// The client side of a live case.
struct Client {
    stream: TcpStream,
    rx: Vec<u8>,
    eof: bool,
}

impl Client {
    fn connect(addr: SocketAddr) -> io::Result<Client> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_millis(50)))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            rx: Vec::new(),
            eof: false,
        })
    }

    fn step(&mut self, step: &Step, ports: &Ports) -> Result<(), String> {
        match step {
            Step::Send(text) => self
                .stream
                .write_all(ports.fill(text).as_bytes())
                .map_err(|e| format!("send: {e}")),
            Step::Wait(duration) => {
                thread::sleep(*duration);
                Ok(())
            }
            Step::HalfClose => self
                .stream
                .shutdown(Shutdown::Write)
                .map_err(|e| format!("half-close: {e}")),
            Step::Response(want) => {
                let deadline = Instant::now() + READ_DEADLINE;
                loop {
                    match read_response(&self.rx, self.eof, want.to_head) {
                        Read::Complete(response, used) => {
                            self.rx.drain(..used);
                            return check(&response, &want.filled(ports));
                        }
                        Read::Invalid(e) => return Err(e),
                        Read::Incomplete if self.eof || Instant::now() >= deadline => {
                            return Err(format!(
                                "no complete response (eof: {}): {:?}",
                                self.eof,
                                String::from_utf8_lossy(&self.rx)
                            ));
                        }
                        Read::Incomplete => self.fill(),
                    }
                }
            }
            Step::Tunnel => self.receive(CONNECT_ESTABLISHED),
            Step::Echo(text) => {
                let bytes = ports.fill(text).into_bytes();
                self.stream
                    .write_all(&bytes)
                    .map_err(|e| format!("send: {e}"))?;
                self.receive(&bytes)
            }
            Step::Receive(text) => self.receive(ports.fill(text).as_bytes()),
            Step::SendBytes(bytes) => self
                .stream
                .write_all(bytes)
                .map_err(|e| format!("send: {e}")),
            Step::ReceiveBytes(bytes) => self.receive(bytes),
            Step::Closed => {
                let deadline = Instant::now() + READ_DEADLINE;
                while !self.eof && self.rx.is_empty() && Instant::now() < deadline {
                    self.fill();
                }
                if !self.rx.is_empty() {
                    return Err(format!(
                        "unread bytes before close: {:?}",
                        String::from_utf8_lossy(&self.rx)
                    ));
                }
                if !self.eof {
                    return Err("the connection is still open".to_owned());
                }
                Ok(())
            }
            Step::Truncated => {
                let deadline = Instant::now() + READ_DEADLINE;
                while !self.eof && Instant::now() < deadline {
                    self.fill();
                }
                match read_response(&self.rx, true, false) {
                    Read::Incomplete if self.eof && !self.rx.is_empty() => {
                        self.rx.clear();
                        Ok(())
                    }
                    other @ (Read::Complete(..) | Read::Incomplete | Read::Invalid(_)) => {
                        Err(format!(
                            "a truncated response expected, got {other:?} (eof: {})",
                            self.eof
                        ))
                    }
                }
            }
        }
    }

    fn receive(&mut self, want: &[u8]) -> Result<(), String> {
        let deadline = Instant::now() + READ_DEADLINE;
        while self.rx.len() < want.len() && !self.eof && Instant::now() < deadline {
            self.fill();
        }
        if !self.rx.starts_with(want) {
            return Err(format!(
                "expected {:?}, received {:?}",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&self.rx)
            ));
        }
        self.rx.drain(..want.len());
        Ok(())
    }

    /// Reads what is available within one short timeout.
    fn fill(&mut self) {
        let mut buf = [0u8; 16 * 1024];
        match self.stream.read(&mut buf) {
            Ok(0) => self.eof = true,
            Ok(n) => self.rx.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => self.eof = true,
        }
    }

    /// Closes the client side and waits (briefly) for the gateway to close too.
    fn finish(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Write);
        let deadline = Instant::now() + Duration::from_secs(3);
        while !self.eof && Instant::now() < deadline {
            self.rx.clear();
            self.fill();
        }
    }
}

/// The origin servers on loopback.
struct Origins {
    ports: Ports,
    /// Held so that the blackhole's accept queue stays full.
    _blackhole: (socket2::Socket, Vec<TcpStream>),
}

impl Origins {
    fn start() -> io::Result<Origins> {
        let http = serve(Origin::http)?;
        let echo = serve(|| Origin::Echo)?;
        // A port that was free a moment ago: connections to it are refused.
        let refused = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let blackhole = blackhole()?;
        // The standard world's gateway listens here, so that cases can name its own ports.
        let proxy = unclaimed_port()?;
        let admin = unclaimed_port()?;
        let ports = Ports {
            http,
            echo,
            refused,
            blackhole: blackhole.1,
            proxy,
            admin,
        };
        Ok(Origins {
            ports,
            _blackhole: (blackhole.0, blackhole.2),
        })
    }
}

/// Returns a loopback port that is free now and was not handed out before in this process:
/// the runtimes' live runs start side by side, and two gateways given one port would fail
/// to start (or, with `SO_REUSEPORT`, share it). The port is below the kernel's ephemeral
/// range, so that no `connect` (the other runs' clients and upstream connections) takes it
/// as its source port between now and the gateway's bind, which then failed now and then.
pub fn unclaimed_port() -> io::Result<u16> {
    static CLAIMED: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let mut claimed = CLAIMED.lock().unwrap_or_else(PoisonError::into_inner);
    let below = ephemeral_low().clamp(12_000, 32_768);
    let span = below - 10_000;
    let start = 10_000 + u16::try_from(std::process::id() % u32::from(span)).unwrap_or(0);
    let candidates = (start..below).chain(10_000..start);
    for port in candidates {
        if !claimed.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            claimed.push(port);
            return Ok(port);
        }
    }
    Err(io::Error::new(
        io::ErrorKind::AddrInUse,
        format!("no free loopback port between 10000 and {below}"),
    ))
}

/// Returns the first port of the kernel's ephemeral range (32768 when it cannot be read).
fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768)
}

/// Serves the HTTP origin model on a loopback port; returns the port.
pub fn serve_http() -> io::Result<u16> {
    serve(Origin::http)
}

/// Serves an echo origin on a loopback port, one thread per connection: every byte comes back.
pub fn serve_echo() -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            thread::spawn(move || {
                if let Ok(mut reader) = stream.try_clone() {
                    let _ = io::copy(&mut reader, &mut stream);
                }
            });
        }
    });
    Ok(port)
}

/// Serves an origin model on a loopback port, one thread per connection.
fn serve(make: fn() -> Origin) -> io::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            thread::spawn(move || serve_connection(stream, make()));
        }
    });
    Ok(port)
}

fn serve_connection(mut stream: TcpStream, mut origin: Origin) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => {
                let _ = stream.shutdown(Shutdown::Write);
                return;
            }
            Ok(n) => n,
        };
        let output = origin.on_data(&buf[..n]);
        if stream.write_all(&output.write).is_err() {
            return;
        }
        if output.close {
            let _ = stream.shutdown(Shutdown::Both);
            return;
        }
    }
}

/// Returns a listener whose accept queue is full, so further SYNs go unanswered, its port,
/// and the connections that fill it.
fn blackhole() -> io::Result<(socket2::Socket, u16, Vec<TcpStream>)> {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
    socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
    socket.listen(0)?;
    let addr = socket
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("no address"))?;
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(stream) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(stream);
        }
    }
    Ok((socket, addr.port(), fillers))
}
