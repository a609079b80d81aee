//! What the reliability tests share: the scale (short by default, the sizes with
//! `EGRET_RELIABILITY=full`), a gateway with an admin endpoint and a JSON access log, tokio
//! clients and origins on loopback, and the process figures read from `/proc`.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use egret_conformance::live::LiveGateway;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Every runtime, in the order the scenarios run them.
pub(crate) const RUNTIMES: [&str; 3] = ["tokio", "mio", "glommio"];

/// The name every gateway here allows; it resolves to 127.0.0.1.
pub(crate) const ALLOWED: &str = "allowed.test";
/// A name every gateway here denies; it resolves to 127.0.0.1 too, so only policy refuses it.
pub(crate) const DENIED: &str = "denied.test";
/// A name that resolves to 127.0.0.1 and that scenarios allow or deny as they go.
pub(crate) const FLIP: &str = "flip.test";

/// Returns whether the full sizes were asked for (`EGRET_RELIABILITY=full`).
pub(crate) fn full() -> bool {
    std::env::var("EGRET_RELIABILITY").is_ok_and(|v| v == "full")
}

/// Returns `short` or, with `EGRET_RELIABILITY=full`, `full_size`.
pub(crate) fn scale<T>(short: T, full_size: T) -> T {
    if full() { full_size } else { short }
}

/// Holds the machine for one heavy scenario at a time: the tests of a file run on parallel
/// threads, and two load scenarios on two cores would only measure each other.
pub(crate) fn exclusive() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Prints one figure for RELIABILITY.md (`cargo test -- --nocapture | grep figure:`).
pub(crate) fn figure(scenario: &str, runtime: &str, text: &str) {
    #[allow(clippy::print_stderr)]
    {
        eprintln!("figure: {scenario} [{runtime}] {text}");
    }
}

/// Raises this process's open-file limit (soft, and hard where the process may) towards
/// `wanted`; children inherit it. Returns the soft limit reached: without
/// `CAP_SYS_RESOURCE` the hard limit is the ceiling.
pub(crate) fn raise_nofile(wanted: u64) -> u64 {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    let current = getrlimit(Resource::Nofile);
    let soft = current.current.unwrap_or(u64::MAX);
    if soft >= wanted {
        return soft;
    }
    let raised = Rlimit {
        current: Some(wanted),
        maximum: Some(current.maximum.map_or(wanted, |m| m.max(wanted))),
    };
    if setrlimit(Resource::Nofile, raised).is_ok() {
        return wanted;
    }
    let hard = current.maximum.unwrap_or(wanted).min(wanted);
    let capped = Rlimit {
        current: Some(hard),
        maximum: current.maximum,
    };
    setrlimit(Resource::Nofile, capped).expect("raising RLIMIT_NOFILE to the hard limit");
    hard
}

/// Sets the open-file limit of process `pid` (soft and hard).
pub(crate) fn limit_nofile(pid: u32, limit: u64) {
    use rustix::process::{Pid, Resource, Rlimit, prlimit};
    let pid = Pid::from_raw(pid as i32).expect("a pid");
    prlimit(
        Some(pid),
        Resource::Nofile,
        Rlimit {
            current: Some(limit),
            maximum: Some(limit),
        },
    )
    .expect("prlimit");
}

/// Returns the number of open descriptors of `pid`.
pub(crate) fn fd_count(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(Iterator::count)
        .unwrap_or(0)
}

/// Returns the open sockets and pipes of `pid`. Pipes are pooled by the splicing runtimes (up
/// to 64 per worker, two descriptors each), so only sockets must return to a baseline.
pub(crate) fn sockets_and_pipes(pid: u32) -> (usize, usize) {
    let Ok(entries) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return (0, 0);
    };
    let mut counts = (0, 0);
    for entry in entries.flatten() {
        let target = std::fs::read_link(entry.path()).unwrap_or_default();
        let target = target.to_string_lossy();
        if target.starts_with("socket:") {
            counts.0 += 1;
        } else if target.starts_with("pipe:") {
            counts.1 += 1;
        }
    }
    counts
}

/// Returns the resident set of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Returns the user plus system CPU time of `pid` in clock ticks (1/100 s on Linux).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The command name may hold spaces; the fields after its closing parenthesis do not.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of stat(5); `rest` starts at field 3.
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

/// Waits until `check` holds or `within` passes; returns whether it held.
pub(crate) fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A gateway for one scenario: `allowed.test` allowed, `denied.test` denied, both resolving to
/// 127.0.0.1, every port allowed, an admin endpoint and a JSON access log.
#[derive(Debug)]
pub(crate) struct Gateway {
    pub(crate) live: LiveGateway,
    pub(crate) runtime: &'static str,
    pub(crate) log_path: PathBuf,
    pub(crate) config_path: PathBuf,
    dir: tempfile::TempDir,
}

/// What a scenario changes in the gateway's configuration.
#[derive(Debug, Default)]
pub(crate) struct Setup<'a> {
    /// The ports allowed (the origins').
    pub(crate) ports: &'a [u16],
    /// Lines for `[limits]`.
    pub(crate) limits: &'a str,
    /// `[allowlist] domains`; `[ALLOWED]` when `None`.
    pub(crate) domains: Option<&'a [&'a str]>,
    /// Lines for `[allowlist]` (after `domains`).
    pub(crate) allowlist: &'a str,
    /// Names for `[resolver] hosts` with no answer (NXDOMAIN).
    pub(crate) nxdomain: &'a [&'a str],
    /// Where the access log goes; a file in the scenario's directory when `None`.
    pub(crate) log_path: Option<&'a Path>,
}

impl Gateway {
    /// Starts a gateway allowing `ports`, otherwise with the default setup.
    pub(crate) fn start(runtime: &'static str, ports: &[u16]) -> Gateway {
        Gateway::start_with(
            runtime,
            &Setup {
                ports,
                ..Setup::default()
            },
        )
    }

    /// Starts a gateway on `runtime` with `setup`.
    pub(crate) fn start_with(runtime: &'static str, setup: &Setup<'_>) -> Gateway {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let log_path = setup
            .log_path
            .map_or_else(|| dir.path().join("access.log"), Path::to_path_buf);
        let config_path = dir.path().join("egret.toml");
        let mut hosts = vec![
            format!("{ALLOWED:?} = [\"127.0.0.1\"]"),
            format!("{DENIED:?} = [\"127.0.0.1\"]"),
            format!("{FLIP:?} = [\"127.0.0.1\"]"),
        ];
        let domains: Vec<String> = setup
            .domains
            .unwrap_or(&[ALLOWED])
            .iter()
            .map(|d| format!("{d:?}"))
            .collect();
        hosts.extend(setup.nxdomain.iter().map(|name| format!("{name:?} = []")));
        let ports: Vec<String> = setup.ports.iter().map(u16::to_string).collect();
        let config = format!(
            "[listen]\nexplicit = [\"127.0.0.1:0\"]\nadmin = \"127.0.0.1:0\"\n\n\
             [allowlist]\ndomains = [{domains}]\n{allowlist}\n\n\
             [policy]\nports = [{ports}]\nprivate_exceptions = [\"127.0.0.0/8\"]\n\n\
             [resolver]\nhosts = {{ {hosts} }}\n\n\
             [limits]\nmax_connections = 40000\n{limits}\n\n\
             [log]\nformat = \"json\"\npath = {log:?}\n",
            domains = domains.join(", "),
            allowlist = setup.allowlist,
            ports = ports.join(","),
            hosts = hosts.join(", "),
            limits = setup.limits,
            log = log_path.to_string_lossy(),
        );
        std::fs::write(&config_path, config).expect("writing the config");
        let live = LiveGateway::start(
            Path::new(env!("CARGO_BIN_EXE_egret")),
            runtime,
            &config_path,
            log_path.clone(),
        )
        .unwrap_or_else(|e| panic!("{runtime}: {e}"));
        Gateway {
            live,
            runtime,
            log_path,
            config_path,
            dir,
        }
    }

    /// Returns the explicit listener's address.
    pub(crate) fn addr(&self) -> SocketAddr {
        self.live.addr
    }

    /// Returns the process id.
    pub(crate) fn pid(&self) -> u32 {
        self.live.pid()
    }

    /// Returns the scenario's directory.
    pub(crate) fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Returns the value of the metric `name` (with its labels, without `_total`'s absence
    /// mattering: `name` is matched as written) from `/metrics`.
    pub(crate) fn metric(&self, name: &str) -> f64 {
        let admin = self
            .live
            .listening("admin")
            .expect("the admin endpoint's address");
        let text = http_get_blocking(admin, "/metrics");
        text.lines()
            .find_map(|line| {
                let (key, value) = line.rsplit_once(' ')?;
                (key == name).then(|| value.parse().ok())?
            })
            .unwrap_or_else(|| panic!("no metric {name} in:\n{text}"))
    }

    /// Returns the access log written so far.
    pub(crate) fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}

/// Fetches `path` from an HTTP server with a blocking client; returns the body.
pub(crate) fn http_get_blocking(addr: SocketAddr, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connecting to the admin endpoint");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("a timeout");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )
    .expect("sending");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("reading");
    text.split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or(text)
}

/// Returns a multi-threaded tokio runtime for the test's clients and origins.
pub(crate) fn client_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A loopback origin on the caller's tokio runtime.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Origin {
    /// Sends back every byte.
    Echo,
    /// Answers each connection's first request head with `200 ok` and closes.
    Http,
    /// Answers 200 to the first tunnelled byte, then resets the connection (`SO_LINGER 0`).
    ResetAfterEcho,
    /// Reads the request head, then resets the connection without a byte of response.
    ResetBeforeResponse,
}

/// Starts `origin` on a loopback port; returns the port and the number of connections it has
/// taken so far.
pub(crate) async fn serve(origin: Origin) -> (u16, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("an origin port");
    let port = listener.local_addr().expect("an address").port();
    let accepted = Arc::new(AtomicU64::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            };
            count.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(serve_one(origin, stream));
        }
    });
    (port, accepted)
}

async fn serve_one(origin: Origin, mut stream: TcpStream) {
    let mut buf = vec![0u8; 16 * 1024];
    match origin {
        Origin::Echo => {
            let (mut reader, mut writer) = stream.split();
            let _ = tokio::io::copy(&mut reader, &mut writer).await;
        }
        Origin::Http => {
            if read_head(&mut stream, &mut buf).await.is_some() {
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n",
                    )
                    .await;
            }
        }
        Origin::ResetAfterEcho => {
            if let Ok(n @ 1..) = stream.read(&mut buf).await {
                let _ = stream.write_all(&buf[..n]).await;
                // Give the echo time to reach the client before the reset overtakes it.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
        }
        Origin::ResetBeforeResponse => {
            let _ = read_head(&mut stream, &mut buf).await;
            let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
        }
    }
}

/// Reads until the end of a request or response head; returns the bytes read.
pub(crate) async fn read_head(stream: &mut TcpStream, buf: &mut [u8]) -> Option<Vec<u8>> {
    let mut head = Vec::new();
    loop {
        let n = stream.read(buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(&buf[..n]);
        if head.windows(4).any(|w| w == b"\r\n\r\n") {
            return Some(head);
        }
        if head.len() > 64 * 1024 {
            return None;
        }
    }
}

/// Returns the status code of a response that starts `bytes`.
pub(crate) fn status_of(bytes: &[u8]) -> Option<u16> {
    let text = std::str::from_utf8(bytes.get(..12)?).ok()?;
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Opens a tunnel to `host:port` through the proxy at `proxy`; returns the stream once the
/// 200 arrived, or what went wrong.
pub(crate) async fn tunnel(proxy: SocketAddr, host: &str, port: u16) -> Result<TcpStream, String> {
    let mut stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!("CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut buf = vec![0u8; 1024];
    let head = read_head(&mut stream, &mut buf)
        .await
        .ok_or("no reply to CONNECT")?;
    match status_of(&head) {
        Some(200) => Ok(stream),
        _ => Err(format!("CONNECT: {}", String::from_utf8_lossy(&head))),
    }
}

/// Sends `bytes` through an open tunnel to an echo origin and checks they come back.
pub(crate) async fn echo(stream: &mut TcpStream, bytes: &[u8]) -> Result<(), String> {
    stream
        .write_all(bytes)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut back = vec![0u8; bytes.len()];
    stream
        .read_exact(&mut back)
        .await
        .map_err(|e| format!("echo: {e}"))?;
    if back != bytes {
        return Err(format!("echo: {:?}", String::from_utf8_lossy(&back)));
    }
    Ok(())
}

/// Sends one absolute-form `GET` through the proxy on a new connection (`Connection: close`);
/// returns the whole response.
pub(crate) async fn get(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
) -> Result<Vec<u8>, String> {
    let mut stream = TcpStream::connect(proxy)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let request = format!(
        "GET http://{host}:{port}{path} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("send: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .await
        .map_err(|e| format!("read: {e} after {:?}", String::from_utf8_lossy(&response)))?;
    Ok(response)
}

/// Like [`get`], also requiring `want` as the status; returns a description when it differs.
pub(crate) async fn get_status(
    proxy: SocketAddr,
    host: &str,
    port: u16,
    path: &str,
    want: u16,
) -> Result<(), String> {
    let response = tokio::time::timeout(Duration::from_secs(30), get(proxy, host, port, path))
        .await
        .map_err(|_| format!("GET {host}{path}: no response within 30 s"))??;
    match status_of(&response) {
        Some(status) if status == want => Ok(()),
        _ => Err(format!(
            "GET {host}{path}: wanted {want}, got {:?}",
            String::from_utf8_lossy(&response[..response.len().min(200)])
        )),
    }
}

/// Closes a stream with a reset rather than a FIN, so no TIME_WAIT is left on this side.
pub(crate) fn reset(stream: TcpStream) {
    let _ = rustix::net::sockopt::set_socket_linger(&stream, Some(Duration::ZERO));
    drop(stream);
}

/// Returns an error for the first failure among `results`, with how many failed.
pub(crate) fn first_failure(results: &[Result<(), String>]) -> Result<(), String> {
    let failed: Vec<&String> = results.iter().filter_map(|r| r.as_ref().err()).collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(format!(
            "{} of {} failed; the first: {first}",
            failed.len(),
            results.len()
        )),
    }
}

/// Panics with the gateway's stderr when `result` is an error.
pub(crate) fn check(gateway: &Gateway, what: &str, result: Result<(), String>) {
    if let Err(message) = result {
        let stderr = gateway.live.stderr_text();
        let tail: String = stderr
            .lines()
            .rev()
            .take(30)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{} / {what}: {message}\n--- egret stderr (tail) ---\n{tail}",
            gateway.runtime
        );
    }
}

/// Reads what arrives until EOF, a reset or `within`; returns the bytes and whether the
/// connection ended.
pub(crate) async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> (Vec<u8>, bool) {
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 4096];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return (bytes, false),
            Ok(Ok(0) | Err(_)) => return (bytes, true),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
        }
    }
}

/// Counts lines of `text` that contain every one of `parts`.
pub(crate) fn count_lines(text: &str, parts: &[&str]) -> usize {
    text.lines()
        .filter(|line| parts.iter().all(|p| line.contains(p)))
        .count()
}

/// Returns `io::Result` errors as strings, for `?` in scenario code.
pub(crate) fn text<T>(result: io::Result<T>) -> Result<T, String> {
    result.map_err(|e| e.to_string())
}
