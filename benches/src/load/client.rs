//! The load client: the workloads' loops, on a tokio runtime of their own.
//!
//! Every loop is bounded three ways: an iteration cap, a deadline (the workload's time budget)
//! and an error limit; every network wait is bounded by [`OP_TIMEOUT`]. Each loop first runs
//! a short unmeasured warm-up, then calls the probe (the proxy's CPU and memory), runs the
//! measured phase and calls the probe again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::origin::{Endpoints, IDLE_ACK, REPLY_BYTES};
use super::procfs::Sample;
use crate::HELLO_CLASSIC;

/// The longest any single connect, write or read may take.
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// A workload stops after this many failed operations.
const ERROR_LIMIT: u64 = 100;
/// The name every proxy is asked for; it resolves to 127.0.0.1 in their configurations.
pub(super) const HOST: &str = "allowed.test";
/// Bulk latency samples are the time to receive each MiB.
const MIB: u64 = 1024 * 1024;

/// Reads the proxy's counters; `None` for the direct baseline.
pub(super) type Probe<'a> = &'a (dyn Fn() -> Option<Sample> + Sync);

/// How the client reaches the origins.
#[derive(Clone, Copy, Debug)]
pub(super) enum Route {
    /// Connects straight to these addresses: the origins themselves, an SNI-routing frontend,
    /// or an address the kernel redirects to a transparent listener. The connection is the
    /// tunnel.
    Plain(Endpoints),
    /// Through an explicit proxy: `CONNECT allowed.test:PORT` for tunnels, absolute-form
    /// requests for HTTP, with the ports of `origins`.
    Proxy {
        /// The proxy's listener.
        proxy: SocketAddr,
        /// The origins the requests name.
        origins: Endpoints,
    },
}

/// What a measured phase did.
#[derive(Debug)]
pub(super) struct Outcome {
    /// Operations completed (requests, tunnels, bulk transfers, idle tunnels opened).
    pub(super) ops: u64,
    /// Payload bytes received.
    pub(super) bytes: u64,
    /// Operations that failed.
    pub(super) errors: u64,
    /// The first failure, in words.
    pub(super) first_error: Option<String>,
    /// From the first operation's start to the last one's end.
    pub(super) elapsed: Duration,
    /// Per-operation latency, µs.
    pub(super) latency: Histogram<u64>,
    /// The probe before the measured phase.
    pub(super) before: Option<Sample>,
    /// The probe after it.
    pub(super) after: Option<Sample>,
}

/// Runs `make()` to completion on a new runtime of `threads` workers, created on this thread
/// (so that its sockets belong to this thread's network namespace).
pub(super) fn on_new_runtime<F: Future>(
    threads: usize,
    make: impl FnOnce() -> F,
) -> io::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name("load-client")
        .enable_all()
        .build()?;
    Ok(runtime.block_on(make()))
}

/// Workload 1: `connections` keep-alive connections each sending GETs for a 1 KiB body, one at
/// a time, until `cap` requests in all or the deadline.
pub(super) async fn keep_alive(
    route: Route,
    connections: usize,
    cap: u64,
    budget: Duration,
    probe: Probe<'_>,
) -> Outcome {
    let (target, request) = http_request(route);
    let request: Arc<[u8]> = request.into();
    // Warm-up: every connection is opened and carries one request.
    let warm = Bounds::new(connections as u64, budget);
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let (warm, request) = (warm.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut conn = None;
            let _ = http_loop(target, &request, &mut conn, &warm, None).await;
            conn
        }));
    }
    let mut conns = Vec::new();
    for task in tasks {
        conns.push(task.await.ok().flatten());
    }
    let before = probe();
    let bounds = Bounds::new(cap, budget);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for mut conn in conns {
        let (bounds, request) = (bounds.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let ops = http_loop(target, &request, &mut conn, &bounds, Some(&mut histogram)).await;
            (ops, histogram)
        }));
    }
    finish(tasks, &bounds, start, before, probe, REPLY_BYTES as u64).await
}

/// Workloads 2 and 3: `concurrency` loops each opening a tunnel to the reply origin, sending
/// the hello, reading the 1 KiB reply and closing, until `cap` tunnels or the deadline.
pub(super) async fn tunnels(
    route: Route,
    concurrency: usize,
    cap: u64,
    budget: Duration,
    probe: Probe<'_>,
) -> Outcome {
    let warm = Bounds::new((concurrency as u64 * 2).min(cap), budget);
    let _ = tunnel_phase(route, concurrency, &warm, false).await;
    let before = probe();
    let bounds = Bounds::new(cap, budget);
    let start = Instant::now();
    let tasks = tunnel_phase(route, concurrency, &bounds, true).await;
    finish(tasks, &bounds, start, before, probe, REPLY_BYTES as u64).await
}

/// Workload 4: `total` bytes downloaded from the bulk origin through `count` tunnels at once
/// (`total / count` each). Latency samples are the time each MiB took to arrive.
pub(super) async fn bulk(
    route: Route,
    count: usize,
    total: u64,
    budget: Duration,
    probe: Probe<'_>,
) -> Outcome {
    let warm = Bounds::new(1, budget);
    let _ = bulk_one(route, MIB, &warm, None).await;
    let before = probe();
    let bounds = Bounds::new(count as u64, budget);
    let each = total / count.max(1) as u64;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..count {
        let bounds = bounds.clone();
        tasks.push(tokio::spawn(async move {
            if !bounds.claim() {
                return ((0, 0), new_histogram());
            }
            let mut histogram = new_histogram();
            let result = bulk_one(route, each, &bounds, Some(&mut histogram)).await;
            (result, histogram)
        }));
    }
    let mut outcome = Outcome::empty(before);
    for task in tasks {
        if let Ok(((done, bytes), histogram)) = task.await {
            outcome.ops += done;
            outcome.bytes += bytes;
            let _ = outcome.latency.add(&histogram);
        }
    }
    outcome.close(&bounds, start, probe);
    outcome
}

/// Workload 5: `count` tunnels to the idle origin opened (by `concurrency` openers) and held;
/// the probe's second sample is taken while all of them are open. Latency samples are the
/// time from connect to the origin's acknowledgement.
pub(super) async fn idle(
    route: Route,
    count: usize,
    concurrency: usize,
    budget: Duration,
    probe: Probe<'_>,
) -> Outcome {
    // Warm-up: a few tunnels opened and closed, so that what a runtime allocates once is in
    // the "before" figure.
    let warm = Bounds::new(8, budget);
    let _ = idle_phase(route, 8, &warm, None).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = probe();
    let bounds = Bounds::new(count as u64, budget);
    let start = Instant::now();
    let held = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let histogram = idle_phase(route, concurrency, &bounds, Some(&held)).await;
    let elapsed = start.elapsed();
    // Let the proxy settle (buffers allocated on the first reads are in by now).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = probe();
    let ops = held.lock().map_or(0, |h| h.len() as u64);
    let outcome = Outcome {
        ops,
        bytes: ops,
        errors: bounds.errors.load(Ordering::Relaxed),
        first_error: bounds.first_error(),
        elapsed,
        latency: histogram,
        before,
        after,
    };
    if let Ok(mut held) = held.lock() {
        held.clear();
    }
    outcome
}

impl Outcome {
    fn empty(before: Option<Sample>) -> Outcome {
        Outcome {
            ops: 0,
            bytes: 0,
            errors: 0,
            first_error: None,
            elapsed: Duration::ZERO,
            latency: new_histogram(),
            before,
            after: None,
        }
    }

    fn close(&mut self, bounds: &Bounds, start: Instant, probe: Probe<'_>) {
        self.elapsed = start.elapsed();
        self.after = probe();
        self.errors = bounds.errors.load(Ordering::Relaxed);
        self.first_error = bounds.first_error();
    }
}

/// The shared limits of one phase.
#[derive(Clone, Debug)]
struct Bounds(Arc<BoundsInner>);

#[derive(Debug)]
struct BoundsInner {
    cap: u64,
    deadline: Instant,
    claimed: AtomicU64,
    errors: AtomicU64,
    first_error: Mutex<Option<String>>,
}

impl std::ops::Deref for Bounds {
    type Target = BoundsInner;
    fn deref(&self) -> &BoundsInner {
        &self.0
    }
}

impl Bounds {
    fn new(cap: u64, budget: Duration) -> Bounds {
        Bounds(Arc::new(BoundsInner {
            cap,
            deadline: Instant::now() + budget,
            claimed: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            first_error: Mutex::new(None),
        }))
    }

    /// Returns whether one more operation may start.
    fn claim(&self) -> bool {
        Instant::now() < self.deadline
            && self.errors.load(Ordering::Relaxed) < ERROR_LIMIT
            && self.claimed.fetch_add(1, Ordering::Relaxed) < self.cap
    }

    fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn fail(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut first) = self.first_error.lock() {
            first.get_or_insert(message);
        }
    }

    fn first_error(&self) -> Option<String> {
        self.first_error.lock().ok().and_then(|f| f.clone())
    }
}

async fn finish(
    tasks: Vec<tokio::task::JoinHandle<(u64, Histogram<u64>)>>,
    bounds: &Bounds,
    start: Instant,
    before: Option<Sample>,
    probe: Probe<'_>,
    bytes_per_op: u64,
) -> Outcome {
    let mut outcome = Outcome::empty(before);
    for task in tasks {
        if let Ok((ops, histogram)) = task.await {
            outcome.ops += ops;
            let _ = outcome.latency.add(&histogram);
        }
    }
    outcome.bytes = outcome.ops * bytes_per_op;
    outcome.close(bounds, start, probe);
    outcome
}

fn new_histogram() -> Histogram<u64> {
    // 1 µs to 60 s at three significant figures.
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

fn record(histogram: &mut Histogram<u64>, since: Instant) {
    let us = u64::try_from(since.elapsed().as_micros()).unwrap_or(u64::MAX);
    histogram.saturating_record(us.max(1));
}

async fn bounded<T>(what: &str, f: impl Future<Output = io::Result<T>>) -> Result<T, String> {
    match tokio::time::timeout(OP_TIMEOUT, f).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no progress within {OP_TIMEOUT:?}")),
    }
}

async fn connect(addr: SocketAddr) -> Result<TcpStream, String> {
    let stream = bounded(&format!("connect {addr}"), TcpStream::connect(addr)).await?;
    let _ = stream.set_nodelay(true);
    Ok(stream)
}

/// Returns where HTTP requests go and the request's bytes.
fn http_request(route: Route) -> (SocketAddr, Vec<u8>) {
    let (target, origin, absolute) = match route {
        Route::Plain(e) => (e.http, e.http, false),
        Route::Proxy { proxy, origins } => (proxy, origins.http, true),
    };
    let authority = format!("{HOST}:{}", origin.port());
    let uri = if absolute {
        format!("http://{authority}/k1")
    } else {
        "/k1".to_owned()
    };
    let request = format!(
        "GET {uri} HTTP/1.1\r\nHost: {authority}\r\nUser-Agent: egret-load\r\nAccept: */*\r\n\r\n"
    );
    (target, request.into_bytes())
}

/// A keep-alive connection and what it has read past the last response.
struct HttpConnection {
    stream: TcpStream,
    buf: Vec<u8>,
}

/// Sends requests on `conn` (reconnecting when needed) while `bounds` allow; returns the
/// number answered.
async fn http_loop(
    target: SocketAddr,
    request: &[u8],
    conn: &mut Option<HttpConnection>,
    bounds: &Bounds,
    mut histogram: Option<&mut Histogram<u64>>,
) -> u64 {
    let mut ops = 0;
    while bounds.claim() {
        let started = Instant::now();
        match http_once(target, request, conn).await {
            Ok(()) => {
                ops += 1;
                if let Some(h) = histogram.as_deref_mut() {
                    record(h, started);
                }
            }
            Err(e) => {
                *conn = None;
                bounds.fail(e);
            }
        }
    }
    ops
}

async fn http_once(
    target: SocketAddr,
    request: &[u8],
    slot: &mut Option<HttpConnection>,
) -> Result<(), String> {
    let conn = match slot {
        Some(conn) => conn,
        None => slot.insert(HttpConnection {
            stream: connect(target).await?,
            buf: Vec::with_capacity(4096),
        }),
    };
    bounded("send request", conn.stream.write_all(request)).await?;
    let mut chunk = [0u8; 8192];
    loop {
        if let Some((used, keep)) = parse_response(&conn.buf)? {
            conn.buf.drain(..used);
            if !keep {
                *slot = None;
            }
            return Ok(());
        }
        let n = bounded("read response", conn.stream.read(&mut chunk)).await?;
        if n == 0 {
            return Err(format!(
                "the connection closed mid-response after {:?}",
                String::from_utf8_lossy(&conn.buf)
            ));
        }
        conn.buf.extend_from_slice(&chunk[..n]);
    }
}

/// Returns (bytes used, whether the connection stays open) once `buf` holds a whole 200
/// response with a 1 KiB body.
fn parse_response(buf: &[u8]) -> Result<Option<(usize, bool)>, String> {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut response = httparse::Response::new(&mut headers);
    let head = match response.parse(buf) {
        Ok(httparse::Status::Complete(head)) => head,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => {
            return Err(format!(
                "invalid response: {e}: {:?}",
                String::from_utf8_lossy(buf)
            ));
        }
    };
    if response.code != Some(200) {
        return Err(format!(
            "status {:?}: {:?}",
            response.code,
            String::from_utf8_lossy(&buf[..head])
        ));
    }
    let header = |name: &str| {
        response
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| String::from_utf8_lossy(h.value).trim().to_ascii_lowercase())
    };
    let length: usize = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| "a response without Content-Length".to_owned())?;
    if length != REPLY_BYTES {
        return Err(format!("a body of {length} bytes, not {REPLY_BYTES}"));
    }
    if buf.len() < head + length {
        return Ok(None);
    }
    let keep = response.version == Some(1) && header("connection").as_deref() != Some("close");
    Ok(Some((head + length, keep)))
}

/// Opens a tunnel to the origin `pick` selects: a plain connection, or a CONNECT answered
/// with 200.
async fn open_tunnel(
    route: Route,
    pick: fn(&Endpoints) -> SocketAddr,
) -> Result<TcpStream, String> {
    match route {
        Route::Plain(endpoints) => connect(pick(&endpoints)).await,
        Route::Proxy { proxy, origins } => {
            let mut stream = connect(proxy).await?;
            let port = pick(&origins).port();
            let request = format!("CONNECT {HOST}:{port} HTTP/1.1\r\nHost: {HOST}:{port}\r\n\r\n");
            bounded("send CONNECT", stream.write_all(request.as_bytes())).await?;
            let mut head = Vec::with_capacity(128);
            let mut chunk = [0u8; 512];
            while origin_find(&head).is_none() {
                if head.len() > 16 * 1024 {
                    return Err("the CONNECT reply head is over 16 KiB".to_owned());
                }
                let n = bounded("read CONNECT reply", stream.read(&mut chunk)).await?;
                if n == 0 {
                    return Err(format!(
                        "closed after CONNECT: {:?}",
                        String::from_utf8_lossy(&head)
                    ));
                }
                head.extend_from_slice(&chunk[..n]);
            }
            let end = origin_find(&head).map_or(0, |e| e + 4);
            let ok = head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200");
            if !ok || end != head.len() {
                return Err(format!(
                    "CONNECT answered {:?}",
                    String::from_utf8_lossy(&head)
                ));
            }
            Ok(stream)
        }
    }
}

fn origin_find(head: &[u8]) -> Option<usize> {
    super::origin::find(head, b"\r\n\r\n")
}

/// Reads exactly `n` bytes.
async fn read_n(stream: &mut TcpStream, n: usize, what: &str) -> Result<Vec<u8>, String> {
    let mut buf = vec![0u8; n];
    bounded(what, stream.read_exact(&mut buf)).await?;
    Ok(buf)
}

/// Spawns `concurrency` loops of tunnel iterations; returns their handles.
async fn tunnel_phase(
    route: Route,
    concurrency: usize,
    bounds: &Bounds,
    measure: bool,
) -> Vec<tokio::task::JoinHandle<(u64, Histogram<u64>)>> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let bounds = bounds.clone();
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            let mut ops = 0;
            while bounds.claim() {
                let started = Instant::now();
                match tunnel_once(route).await {
                    Ok(()) => {
                        ops += 1;
                        if measure {
                            record(&mut histogram, started);
                        }
                    }
                    Err(e) => bounds.fail(e),
                }
            }
            (ops, histogram)
        }));
    }
    if !measure {
        for task in tasks.drain(..) {
            let _ = task.await;
        }
    }
    tasks
}

/// One iteration of workloads 2 and 3.
async fn tunnel_once(route: Route) -> Result<(), String> {
    let mut stream = open_tunnel(route, |e| e.reply).await?;
    bounded("send hello", stream.write_all(HELLO_CLASSIC)).await?;
    let reply = read_n(&mut stream, REPLY_BYTES, "read the 1 KiB reply").await?;
    if reply.iter().any(|&b| b != b'r') {
        return Err("the reply was altered".to_owned());
    }
    Ok(())
}

/// Downloads `size` bytes through one tunnel; returns (1 if complete else 0, bytes received).
async fn bulk_one(
    route: Route,
    size: u64,
    bounds: &Bounds,
    mut histogram: Option<&mut Histogram<u64>>,
) -> (u64, u64) {
    let result = async {
        let nothing = |e| (e, 0);
        let mut stream = open_tunnel(route, |e| e.bulk).await.map_err(nothing)?;
        bounded("send hello", stream.write_all(HELLO_CLASSIC))
            .await
            .map_err(nothing)?;
        bounded("send count", stream.write_all(&size.to_be_bytes()))
            .await
            .map_err(nothing)?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut received = 0u64;
        let mut mark = Instant::now();
        let mut next = MIB;
        while received < size {
            if bounds.expired() {
                return Ok(received);
            }
            let n = bounded("read bulk", stream.read(&mut buf))
                .await
                .map_err(|e| (e, received))?;
            if n == 0 {
                return Err((format!("closed after {received} of {size} bytes"), received));
            }
            received += n as u64;
            while received >= next {
                if let Some(h) = histogram.as_deref_mut() {
                    record(h, mark);
                }
                mark = Instant::now();
                next += MIB;
            }
        }
        Ok::<_, (String, u64)>(received)
    };
    match result.await {
        Ok(received) => (u64::from(received >= size), received),
        Err((e, received)) => {
            bounds.fail(e);
            (0, received)
        }
    }
}

/// Opens tunnels to the idle origin until `bounds` stop; keeps them in `held` (or closes them
/// at once when `held` is `None`). Returns the open latencies.
async fn idle_phase(
    route: Route,
    concurrency: usize,
    bounds: &Bounds,
    held: Option<&Arc<Mutex<Vec<TcpStream>>>>,
) -> Histogram<u64> {
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let bounds = bounds.clone();
        let held = held.cloned();
        tasks.push(tokio::spawn(async move {
            let mut histogram = new_histogram();
            while bounds.claim() {
                let started = Instant::now();
                match idle_once(route).await {
                    Ok(stream) => {
                        record(&mut histogram, started);
                        if let Some(held) = &held {
                            if let Ok(mut held) = held.lock() {
                                held.push(stream);
                            }
                        }
                    }
                    Err(e) => bounds.fail(e),
                }
            }
            histogram
        }));
    }
    let mut histogram = new_histogram();
    for task in tasks {
        if let Ok(h) = task.await {
            let _ = histogram.add(&h);
        }
    }
    histogram
}

async fn idle_once(route: Route) -> Result<TcpStream, String> {
    let mut stream = open_tunnel(route, |e| e.idle).await?;
    bounded("send hello", stream.write_all(HELLO_CLASSIC)).await?;
    let ack = read_n(&mut stream, 1, "read the idle origin's byte").await?;
    if ack != [IDLE_ACK] {
        return Err(format!("the idle origin's byte arrived as {ack:?}"));
    }
    Ok(stream)
}
