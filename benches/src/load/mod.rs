//! The load harness: Egret's runtimes, Squid, HAProxy and a direct no-proxy baseline under the
//! same workloads, in one sitting, on loopback (and, for transparent TLS, in the
//! network-namespace world of `egret_conformance::netns`).
//!
//! The workloads (see [`Workload`]):
//! 1. HTTP/1.1 keep-alive GETs of a 1 KiB body through the explicit proxy, 64 connections;
//! 2. a new connection per iteration: `CONNECT`, 200, the captured 517-byte curl ClientHello
//!    (SNI `allowed.test`), a 1 KiB reply from the origin, close;
//! 3. the same through the transparent-TLS listener behind the shipped nftables REDIRECT
//!    rules (root only);
//! 4. a bulk download (2 GiB) through one tunnel and through eight;
//! 5. 5,000 idle tunnels held open, for the proxy's memory per tunnel.
//!
//! Every proxy is a process the harness starts with a configuration it writes to a temporary
//! directory and kills when the row is done (also on failure). Each (workload, target) pair
//! gets a fresh proxy process, so peak RSS is that workload's. The proxy's CPU is its
//! utime + stime (with its descendants') from `/proc/PID/stat` over the measured phase, its
//! peak RSS the VmHWM of `/proc/PID/status`. Every loop is bounded by an iteration cap, a time
//! budget and an error limit; all traffic stays on loopback or inside the namespaces.

mod client;
mod origin;
pub mod procfs;
mod proxy;
mod report;
mod transparent;

use std::path::{Path, PathBuf};
use std::time::Duration;

pub use client::OP_TIMEOUT;
pub use report::{Measured, Report, Row, Status, Target, Workload};

use client::{Outcome, Route};
use origin::Origins;
use proxy::Proxy;

/// The runtimes `egret run --runtime` accepts.
pub const RUNTIMES: [&str; 3] = ["tokio", "mio", "glommio"];

/// The sizes and bounds of a run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sizes {
    /// Workload 1: keep-alive connections.
    pub keep_alive_connections: usize,
    /// Workload 1: the most requests.
    pub keep_alive_requests: u64,
    /// Workloads 2 and 3: tunnels in flight at once.
    pub tunnel_concurrency: usize,
    /// Workloads 2 and 3: the most tunnels.
    pub tunnel_iterations: u64,
    /// Workload 4: bytes downloaded in all (split evenly over the tunnels).
    pub bulk_bytes: u64,
    /// Workload 5: idle tunnels held open.
    pub idle_tunnels: usize,
    /// Workload 5: tunnels being opened at once.
    pub idle_concurrency: usize,
    /// The time budget of each measured phase (each workload against each target).
    pub budget: Duration,
}

impl Sizes {
    /// Returns the sizes with a time budget of `budget` per workload and target.
    #[must_use]
    pub fn full(budget: Duration) -> Sizes {
        Sizes {
            keep_alive_connections: 64,
            keep_alive_requests: 5_000_000,
            tunnel_concurrency: 32,
            tunnel_iterations: 1_000_000,
            bulk_bytes: 2 * 1024 * 1024 * 1024,
            idle_tunnels: 5_000,
            idle_concurrency: 64,
            budget,
        }
    }

    /// Returns the smoke sizes: a few seconds in all.
    #[must_use]
    pub fn smoke() -> Sizes {
        Sizes {
            keep_alive_connections: 8,
            keep_alive_requests: 200,
            tunnel_concurrency: 8,
            tunnel_iterations: 200,
            bulk_bytes: 8 * 1024 * 1024,
            idle_tunnels: 50,
            idle_concurrency: 8,
            budget: Duration::from_secs(10),
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct Options {
    /// The `egret` binary (`target/release/egret` after `cargo build --release -p egret`).
    pub egret: PathBuf,
    /// The Egret runtimes to measure.
    pub runtimes: Vec<String>,
    /// `--threads` for Egret and `nbthread` for HAProxy.
    pub threads: usize,
    /// Worker threads of the load client and, separately, of the origins.
    pub client_threads: usize,
    /// Sizes and bounds.
    pub sizes: Sizes,
    /// Whether to run Squid and HAProxy (when installed).
    pub peers: bool,
    /// Whether to run the transparent-TLS workload (it needs root).
    pub transparent: bool,
    /// Called with a line of progress before each row.
    pub progress: fn(&str),
}

impl Options {
    /// Returns the full run's options for `egret`: every runtime, the peers, one proxy
    /// thread per core.
    #[must_use]
    pub fn new(egret: &Path, budget: Duration) -> Options {
        let cores = std::thread::available_parallelism().map_or(1, usize::from);
        Options {
            egret: egret.to_owned(),
            runtimes: RUNTIMES.iter().map(|r| (*r).to_owned()).collect(),
            threads: cores,
            client_threads: cores.div_ceil(2),
            sizes: Sizes::full(budget),
            peers: true,
            transparent: true,
            progress: |_| {},
        }
    }

    /// Returns the smoke options for `egret`: tiny sizes, every runtime, no peers.
    #[must_use]
    pub fn smoke(egret: &Path) -> Options {
        Options {
            sizes: Sizes::smoke(),
            peers: false,
            threads: 2,
            client_threads: 1,
            ..Options::new(egret, Duration::from_secs(10))
        }
    }
}

/// Runs the smoke mode against `egret`: every workload on every runtime, tiny sizes, no peers.
pub fn run_smoke(egret: &Path) -> Result<Report, String> {
    run(&Options::smoke(egret))
}

/// Runs every workload against every target; rows that cannot run say why.
pub fn run(options: &Options) -> Result<Report, String> {
    if !options.egret.is_file() {
        return Err(format!(
            "no egret binary at {} (build it with `cargo build --release -p egret`, or pass \
             --egret PATH)",
            options.egret.display()
        ));
    }
    let open_files = procfs::raise_open_files();
    let dir = tempfile::Builder::new()
        .prefix("egret-load-")
        .tempdir()
        .map_err(|e| format!("cannot create a temporary directory: {e}"))?;
    let origins = Origins::start(options.client_threads)
        .map_err(|e| format!("cannot start the origins: {e}"))?;
    let peers = Peers::find(options);
    let mut report = Report {
        machine: procfs::machine(),
        settings: settings(options, &peers, open_files),
        rows: Vec::new(),
        notes: Vec::new(),
    };
    for workload in Workload::ALL {
        if workload == Workload::TransparentTls {
            let rows = transparent::rows(options, &origins, &peers, dir.path(), &mut report.notes);
            report.rows.extend(rows);
            continue;
        }
        for target in targets(options, workload) {
            let name = format!("{} / {}", workload.label(), target.label());
            (options.progress)(&name);
            let (status, warnings) =
                loopback_row(options, &origins, &peers, dir.path(), workload, &target);
            report
                .notes
                .extend(warnings.into_iter().map(|w| format!("{name}: {w}")));
            report.rows.push(Row {
                workload,
                target,
                status,
            });
        }
    }
    Ok(report)
}

/// The peers' binaries, where installed.
#[derive(Clone, Debug)]
pub(crate) struct Peers {
    squid: Result<PathBuf, String>,
    haproxy: Result<PathBuf, String>,
}

impl Peers {
    fn find(options: &Options) -> Peers {
        let find = |name: &str| {
            if !options.peers {
                return Err("peers not requested".to_owned());
            }
            find_program(name).ok_or_else(|| {
                format!("{name} is not installed (Debian: apt-get install -y {name})")
            })
        };
        Peers {
            squid: find("squid"),
            haproxy: find("haproxy"),
        }
    }
}

/// Returns the targets of a loopback workload, in table order.
fn targets(options: &Options, workload: Workload) -> Vec<Target> {
    let mut targets = vec![Target::Direct];
    targets.extend(options.runtimes.iter().map(|r| Target::Egret(r.clone())));
    if options.peers {
        targets.push(Target::Squid);
        // HAProxy has no CONNECT and no HTTP proxying: it takes part where the tunnel is what
        // counts, reached by SNI.
        if matches!(
            workload,
            Workload::BulkOne | Workload::BulkEight | Workload::IdleTunnels
        ) {
            targets.push(Target::Haproxy);
        }
    }
    targets
}

/// Runs one loopback workload against one target, with a fresh proxy process.
fn loopback_row(
    options: &Options,
    origins: &Origins,
    peers: &Peers,
    dir: &Path,
    workload: Workload,
    target: &Target,
) -> (Status, Vec<String>) {
    let endpoints = origins.endpoints;
    let through = |proxy: Proxy| {
        let route = Route::Proxy {
            proxy: proxy.addr,
            origins: endpoints,
        };
        Some((proxy, route))
    };
    let started = match target {
        Target::Direct => Ok(None),
        Target::Egret(runtime) => {
            proxy::egret(&options.egret, runtime, options.threads, &endpoints, dir).map(through)
        }
        Target::Squid => match &peers.squid {
            Ok(bin) => proxy::squid(bin, &endpoints, dir).map(through),
            Err(why) => return (Status::Skipped(why.clone()), Vec::new()),
        },
        Target::Haproxy => match &peers.haproxy {
            Ok(bin) => haproxy_loopback(bin, options.threads, &endpoints, dir)
                .map(|(proxy, frontends)| Some((proxy, Route::Plain(frontends)))),
            Err(why) => return (Status::Skipped(why.clone()), Vec::new()),
        },
    };
    let (mut proxy, route) = match started {
        Ok(Some((proxy, route))) => (Some(proxy), route),
        Ok(None) => (None, Route::Plain(endpoints)),
        Err(e) => return (Status::Failed(e), Vec::new()),
    };
    let pid = proxy.as_ref().map(|p| p.pid);
    let probe = move || pid.and_then(procfs::sample);
    let outcome = client::on_new_runtime(options.client_threads, || {
        drive(workload, route, &options.sizes, &probe)
    });
    let status = match outcome {
        Ok(outcome) => status(workload, outcome),
        Err(e) => Status::Failed(format!("cannot start the client runtime: {e}")),
    };
    let warnings = proxy.as_ref().map(Proxy::warnings).unwrap_or_default();
    (died(status, proxy.as_mut()), warnings)
}

/// Runs a workload's client loop.
async fn drive(
    workload: Workload,
    route: Route,
    sizes: &Sizes,
    probe: client::Probe<'_>,
) -> Outcome {
    let budget = sizes.budget;
    match workload {
        Workload::KeepAlive => {
            client::keep_alive(
                route,
                sizes.keep_alive_connections,
                sizes.keep_alive_requests,
                budget,
                probe,
            )
            .await
        }
        Workload::ConnectTunnel | Workload::TransparentTls => {
            client::tunnels(
                route,
                sizes.tunnel_concurrency,
                sizes.tunnel_iterations,
                budget,
                probe,
            )
            .await
        }
        Workload::BulkOne => client::bulk(route, 1, sizes.bulk_bytes, budget, probe).await,
        Workload::BulkEight => client::bulk(route, 8, sizes.bulk_bytes, budget, probe).await,
        Workload::IdleTunnels => {
            client::idle(
                route,
                sizes.idle_tunnels,
                sizes.idle_concurrency,
                budget,
                probe,
            )
            .await
        }
    }
}

/// Turns a client outcome into a row's status.
fn status(workload: Workload, outcome: Outcome) -> Status {
    if outcome.ops == 0 && outcome.bytes == 0 {
        return Status::Failed(
            outcome
                .first_error
                .unwrap_or_else(|| "no operation completed".to_owned()),
        );
    }
    let quantile = |q: f64| {
        (!outcome.latency.is_empty())
            .then(|| Duration::from_micros(outcome.latency.value_at_quantile(q)))
    };
    let cpu = outcome
        .before
        .zip(outcome.after)
        .map(|(before, after)| after.cpu_since(&before));
    let cpu_system = outcome
        .before
        .zip(outcome.after)
        .map(|(before, after)| after.system_since(&before));
    let kib_per_tunnel = match (workload, outcome.before, outcome.after) {
        (Workload::IdleTunnels, Some(before), Some(after)) if outcome.ops > 0 => {
            Some((after.rss_kib as f64 - before.rss_kib as f64) / outcome.ops as f64)
        }
        _ => None,
    };
    Status::Ran(Measured {
        ops: outcome.ops,
        bytes: outcome.bytes,
        errors: outcome.errors,
        first_error: outcome.first_error,
        elapsed: outcome.elapsed,
        p50: quantile(0.5),
        p99: quantile(0.99),
        cpu,
        cpu_system,
        peak_rss_kib: outcome.after.map(|a| a.hwm_kib),
        kib_per_tunnel,
    })
}

/// Marks a row failed when its proxy died during it.
fn died(status: Status, proxy: Option<&mut Proxy>) -> Status {
    let Some(proxy) = proxy else {
        return status;
    };
    if proxy.alive() {
        status
    } else {
        Status::Failed(format!(
            "the proxy exited during the workload: {}",
            proxy.diagnostics()
        ))
    }
}

/// Starts HAProxy on loopback with one SNI frontend for the bulk origin and one for the idle
/// origin; returns it and the origins' endpoints with those two replaced by the frontends.
fn haproxy_loopback(
    bin: &Path,
    threads: usize,
    endpoints: &origin::Endpoints,
    dir: &Path,
) -> Result<(Proxy, origin::Endpoints), String> {
    let bind = std::net::SocketAddr::from(([127, 0, 0, 1], proxy::free_port()?));
    let bind_idle = std::net::SocketAddr::from(([127, 0, 0, 1], proxy::free_port()?));
    let frontends = [
        proxy::Frontend {
            bind,
            server: endpoints.bulk,
        },
        proxy::Frontend {
            bind: bind_idle,
            server: endpoints.idle,
        },
    ];
    let proxy = proxy::haproxy(bin, "loopback", threads, &frontends, dir, None, || {
        std::net::TcpStream::connect(bind).is_ok()
            && std::net::TcpStream::connect(bind_idle).is_ok()
    })?;
    let routed = origin::Endpoints {
        bulk: bind,
        idle: bind_idle,
        ..*endpoints
    };
    Ok((proxy, routed))
}

fn settings(options: &Options, peers: &Peers, open_files: u64) -> Vec<(String, String)> {
    let s = &options.sizes;
    let version = |bin: &Result<PathBuf, String>| match bin {
        Ok(path) => procfs::version(path).unwrap_or_else(|| path.display().to_string()),
        Err(why) => format!("not run ({why})"),
    };
    vec![
        (
            "egret".to_owned(),
            format!(
                "{}, --threads {} (the transparent world starts it with --threads 2)",
                options.egret.display(),
                options.threads
            ),
        ),
        ("squid".to_owned(), version(&peers.squid)),
        ("haproxy".to_owned(), version(&peers.haproxy)),
        (
            "load client".to_owned(),
            format!(
                "tokio, {} worker thread(s); origins: tokio, {} worker thread(s), same process",
                options.client_threads, options.client_threads
            ),
        ),
        (
            "sizes".to_owned(),
            format!(
                "keep-alive {} connections (cap {} requests); tunnels {} at once (cap {}); bulk \
                 {} MiB in all; {} idle tunnels",
                s.keep_alive_connections,
                s.keep_alive_requests,
                s.tunnel_concurrency,
                s.tunnel_iterations,
                s.bulk_bytes / (1024 * 1024),
                s.idle_tunnels
            ),
        ),
        (
            "time budget".to_owned(),
            format!(
                "{} s per workload and target; each network wait at most {} s",
                s.budget.as_secs_f64(),
                OP_TIMEOUT.as_secs()
            ),
        ),
        ("open-file limit".to_owned(), open_files.to_string()),
    ]
}

/// Looks for `program` on PATH and in the sbin directories.
fn find_program(program: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from))
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}
