//! The proxies under test, each started by the harness with a configuration it writes to a
//! temporary directory, and killed (then reaped) when its [`Proxy`] is dropped — also when a
//! workload fails or panics.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::io::{BufRead as _, BufReader};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::thread;
use std::time::{Duration, Instant};

use super::client::HOST;
use super::origin::Endpoints;

/// How long a proxy may take to start listening.
const START_DEADLINE: Duration = Duration::from_secs(30);
/// Lines of a proxy's stderr kept for messages.
const KEPT_LINES: usize = 40;

/// A running proxy process.
#[derive(Debug)]
pub(super) struct Proxy {
    /// Its process id (the one `/proc` is read for, with its descendants).
    pub(super) pid: u32,
    /// Where clients connect: the explicit listener, or the first frontend.
    pub(super) addr: SocketAddr,
    child: Child,
    stderr: Arc<Mutex<VecDeque<String>>>,
    /// The file its own diagnostics go to, when not stderr.
    log: Option<PathBuf>,
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proxy {
    /// Returns the last lines the process wrote to stderr (and to its log file), for messages.
    #[must_use]
    pub(super) fn diagnostics(&self) -> String {
        let mut text = self
            .stderr
            .lock()
            .map(|l| l.iter().cloned().collect::<Vec<_>>().join("\n"))
            .unwrap_or_default();
        if let Some(log) = &self.log {
            let file = std::fs::read_to_string(log).unwrap_or_default();
            let lines: Vec<&str> = file.lines().collect();
            let tail = lines[lines.len().saturating_sub(KEPT_LINES)..].join("\n");
            let _ = write!(text, "\n{}:\n{tail}", log.display());
        }
        text
    }

    /// Returns the warnings and errors the process wrote to stderr (Egret's log levels).
    pub(super) fn warnings(&self) -> Vec<String> {
        self.stderr
            .lock()
            .map(|lines| warnings(lines.iter().map(String::as_str)))
            .unwrap_or_default()
    }

    /// Returns whether the process is still running.
    pub(super) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

/// Starts `egret run --config DIR/egret-RUNTIME.toml --runtime RUNTIME --threads N` on
/// loopback, admitting `allowed.test` (pinned to 127.0.0.1) on the origins' ports.
pub(super) fn egret(
    bin: &Path,
    runtime: &str,
    threads: usize,
    origins: &Endpoints,
    dir: &Path,
) -> Result<Proxy, String> {
    let log = dir.join(format!("egret-{runtime}-access.log"));
    let ports: Vec<String> = [origins.http, origins.reply, origins.bulk, origins.idle]
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    let config = format!(
        "[listen]\nexplicit = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n\
         [allowlist]\ndomains = [\"{HOST}\"]\n\n\
         [policy]\nports = [{ports}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\n\
         [resolver]\nhosts = {{ \"{HOST}\" = [\"127.0.0.1\"] }}\n\n\
         [limits]\nidle_timeout = \"300s\"\n\n\
         [log]\npath = {log:?}\n",
        ports = ports.join(", "),
        log = log.to_string_lossy(),
    );
    let path = dir.join(format!("egret-{runtime}.toml"));
    std::fs::write(&path, config).map_err(|e| format!("write {}: {e}", path.display()))?;
    let mut command = Command::new(bin);
    command.args(["run", "--config"]).arg(&path).args([
        "--runtime",
        runtime,
        "--threads",
        &threads.to_string(),
    ]);
    let (child, stderr, rx) = spawn(command, Some("listening explicit "))?;
    let mut proxy = Proxy {
        pid: child.id(),
        addr: SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
        stderr,
        log: None,
    };
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if let Ok(addr) = rx.recv_timeout(Duration::from_millis(50)) {
            proxy.addr = addr;
            return Ok(proxy);
        }
        if !proxy.alive() || Instant::now() >= deadline {
            thread::sleep(Duration::from_millis(100));
            return Err(format!(
                "egret --runtime {runtime} did not report its explicit listener; stderr:\n{}",
                proxy.diagnostics()
            ));
        }
    }
}

/// Starts `squid -N -f DIR/squid/squid.conf`: an explicit proxy on a free loopback port, a
/// dstdomain allowlist of `allowed.test` (pinned to 127.0.0.1 by a hosts file), CONNECT
/// allowed to the tunnel origins' ports, caching off, the access log written unbuffered to a
/// file.
pub(super) fn squid(bin: &Path, origins: &Endpoints, dir: &Path) -> Result<Proxy, String> {
    let dir = dir.join("squid");
    std::fs::create_dir_all(&dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    // Squid drops to its unprivileged user (proxy) when started as root: it must reach and
    // write its directory.
    open_up(&dir)?;
    let port = free_port()?;
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, format!("127.0.0.1 {HOST}\n")).map_err(|e| e.to_string())?;
    let tunnel_ports: Vec<String> = [origins.reply, origins.bulk, origins.idle]
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    let d = dir.to_string_lossy();
    let config = format!(
        "http_port 127.0.0.1:{port}\n\
         acl SSL_ports port {tunnel}\n\
         acl CONNECT method CONNECT\n\
         acl allowed dstdomain {HOST}\n\
         http_access deny CONNECT !SSL_ports\n\
         http_access allow allowed\n\
         http_access deny all\n\
         cache deny all\n\
         hosts_file {d}/hosts\n\
         access_log stdio:{d}/access.log\n\
         buffered_logs off\n\
         cache_log {d}/cache.log\n\
         pid_filename {d}/squid.pid\n\
         coredump_dir {d}\n\
         netdb_filename none\n\
         pinger_enable off\n\
         max_filedescriptors 16384\n\
         shutdown_lifetime 0 seconds\n\
         logfile_rotate 0\n",
        tunnel = tunnel_ports.join(" "),
    );
    let conf = dir.join("squid.conf");
    std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
    let mut command = Command::new(bin);
    command.arg("-N").arg("-f").arg(&conf);
    let (child, stderr, _) = spawn(command, None)?;
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let proxy = Proxy {
        pid: child.id(),
        addr,
        child,
        stderr,
        log: Some(dir.join("cache.log")),
    };
    wait_until(proxy, "squid", || TcpStream::connect(addr).is_ok())
}

/// One HAProxy frontend: where it listens and the one server of its backend.
#[derive(Clone, Copy, Debug)]
pub(super) struct Frontend {
    /// `bind`.
    pub(super) bind: SocketAddr,
    /// The backend's server.
    pub(super) server: SocketAddr,
}

/// Starts `haproxy -db -f DIR/haproxy-NAME.cfg` with `threads` threads, in TCP mode: each
/// frontend waits for a ClientHello and passes it to its backend when the SNI is
/// `allowed.test` (closing otherwise). With `namespace`, runs it there with `ip netns exec`
/// and `ready` checks its listener.
pub(super) fn haproxy(
    bin: &Path,
    name: &str,
    threads: usize,
    frontends: &[Frontend],
    dir: &Path,
    namespace: Option<&str>,
    ready: impl Fn() -> bool,
) -> Result<Proxy, String> {
    // HAProxy refuses to start when 2 × maxconn descriptors exceed what it may open.
    let maxconn = (super::procfs::raise_open_files().saturating_sub(200) / 2).clamp(1000, 40_000);
    let mut config = format!(
        "global\n    maxconn {maxconn}\n    nbthread {threads}\n\n\
         defaults\n    mode tcp\n    timeout connect 5s\n    timeout client 300s\n    \
         timeout server 300s\n\n"
    );
    for (i, f) in frontends.iter().enumerate() {
        let _ = write!(
            config,
            "frontend fe{i}\n    bind {bind}\n    tcp-request inspect-delay 5s\n    \
             tcp-request content accept if {{ req.ssl_hello_type 1 }}\n    \
             use_backend be{i} if {{ req.ssl_sni -i {HOST} }}\n\n\
             backend be{i}\n    server origin {server}\n\n",
            bind = f.bind,
            server = f.server,
        );
    }
    let conf = dir.join(format!("haproxy-{name}.cfg"));
    std::fs::write(&conf, config).map_err(|e| format!("write {}: {e}", conf.display()))?;
    let mut command = match namespace {
        Some(ns) => {
            // `ip netns exec` execs the program in place: the child is HAProxy itself.
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    command.arg("-db").arg("-f").arg(&conf);
    let (child, stderr, _) = spawn(command, None)?;
    let proxy = Proxy {
        pid: child.id(),
        addr: frontends
            .first()
            .map_or(SocketAddr::from(([127, 0, 0, 1], 0)), |f| f.bind),
        child,
        stderr,
        log: None,
    };
    wait_until(proxy, "haproxy", ready)
}

/// Returns the lines of `lines` logged at WARN or ERROR level, without colour codes.
pub(super) fn warnings<'a>(lines: impl Iterator<Item = &'a str>) -> Vec<String> {
    lines
        .map(strip_ansi)
        .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
        .collect()
}

fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            // CSI: ESC [ parameters final-byte.
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Returns a loopback port that was free a moment ago.
pub(super) fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Makes `dir` and its parent reachable and `dir` writable by every user.
fn open_up(dir: &Path) -> Result<(), String> {
    let set = |path: &Path, mode: u32| {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .map_err(|e| format!("chmod {}: {e}", path.display()))
    };
    if let Some(parent) = dir.parent() {
        set(parent, 0o755)?;
    }
    set(dir, 0o777)
}

type Spawned = (
    Child,
    Arc<Mutex<VecDeque<String>>>,
    mpsc::Receiver<SocketAddr>,
);

/// Starts `command` with stderr read by a thread that keeps the last lines and, when
/// `announce` is given, sends the address that follows it on the first line containing it.
fn spawn(mut command: Command, announce: Option<&'static str>) -> Result<Spawned, String> {
    let program = format!("{command:?}");
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let lines = Arc::new(Mutex::new(VecDeque::new()));
    let (tx, rx) = mpsc::channel();
    if let Some(pipe) = child.stderr.take() {
        let lines = lines.clone();
        thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let (false, Some(prefix)) = (sent, announce) {
                    let addr = line
                        .split(prefix)
                        .nth(1)
                        .and_then(|rest| rest.split_whitespace().next())
                        .and_then(|a| a.parse::<SocketAddr>().ok());
                    if let Some(addr) = addr {
                        sent = tx.send(addr).is_ok();
                    }
                }
                if let Ok(mut lines) = lines.lock() {
                    if lines.len() == KEPT_LINES {
                        lines.pop_front();
                    }
                    lines.push_back(line);
                }
            }
        });
    }
    Ok((child, lines, rx))
}

/// Waits until `ready` holds, the process exits, or the start deadline passes.
fn wait_until(mut proxy: Proxy, name: &str, ready: impl Fn() -> bool) -> Result<Proxy, String> {
    let deadline = Instant::now() + START_DEADLINE;
    loop {
        if ready() {
            return Ok(proxy);
        }
        if !proxy.alive() || Instant::now() >= deadline {
            thread::sleep(Duration::from_millis(100));
            return Err(format!(
                "{name} did not start listening on {}; its messages:\n{}",
                proxy.addr,
                proxy.diagnostics()
            ));
        }
        thread::sleep(Duration::from_millis(50));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_found_with_or_without_colour() {
        let lines = [
            "2026-11-25T18:00:00Z  INFO egret: listening explicit 127.0.0.1:3128",
            "\u{1b}[2m2026-11-25T18:00:01Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m egret: accept failed",
            "2026-11-25T18:00:02Z ERROR egret: cannot write",
        ];
        assert_eq!(
            warnings(lines.into_iter()),
            [
                "2026-11-25T18:00:01Z  WARN egret: accept failed",
                "2026-11-25T18:00:02Z ERROR egret: cannot write"
            ]
        );
    }
}
