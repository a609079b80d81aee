//! `egret run`: loads the configuration, starts the access log, the reloader and the runtime,
//! and turns signals into reloads and a drain.
//!
//! SIGHUP reloads the allowlist at once and reopens the access-log file (after logrotate). The
//! first SIGTERM or SIGINT stops accepting and gives open sessions `drain_timeout` to finish,
//! then the reloader stops, the access log flushes and ends, and the CloudWatch Logs shipper
//! (when configured) sends what it still holds, for up to ten seconds; a second one exits at
//! once (130 for SIGINT, 0 for SIGTERM).

use std::io::{self, IsTerminal};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::mpsc::{self, Sender};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egret_core::policy::PolicyStore;
use egret_core::{GatewayConfig, UnixMillis, WallClock};
use egret_rt_common::{EventSink, Resolver, RuntimeStats, Server, ServerConfig};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use tracing_subscriber::EnvFilter;

use crate::admin::{self, Admin, AdminState, RecordMetrics};
use crate::allowlist::{self, Reloader};
use crate::cloudwatch::{self, CloudWatch};
use crate::config::{Config, ConfigSource, LogTarget, Runtime};
use crate::periodic::Poke;
use crate::sink::{self, AccessLog};

/// The environment variable holding the log filter (`info` when unset).
pub const LOG_ENV: &str = "EGRET_LOG";

/// How long the access log may take to flush after the runtime has stopped.
const LOG_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// How long the CloudWatch Logs shipper may take to send what it holds at shutdown.
const CLOUDWATCH_FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs the gateway until SIGTERM or SIGINT; returns 0, or 1 after a start-up error.
#[must_use]
pub fn run(source: &ConfigSource) -> ExitCode {
    init_logging();
    match serve(source) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            tracing::error!("{message}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the gateway's own messages to stderr, filtered by `EGRET_LOG` (default `info`).
pub fn init_logging() {
    let spec = std::env::var(LOG_ENV).ok();
    let parsed = spec.as_deref().map(EnvFilter::try_new);
    let (filter, invalid) = match parsed {
        Some(Ok(filter)) => (filter, None),
        Some(Err(error)) => (EnvFilter::new("info"), Some(error)),
        None => (EnvFilter::new("info"), None),
    };
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(io::stderr)
        .with_ansi(io::stderr().is_terminal())
        .with_target(false)
        .try_init();
    if let Some(error) = invalid {
        tracing::warn!("{LOG_ENV} is not a valid filter ({error}); logging at info");
    }
}

/// Returns the runtime's configuration for a loaded configuration.
#[must_use]
pub fn server_config(
    config: &Config,
    store: PolicyStore,
    events: EventSink,
    clock: WallClock,
) -> ServerConfig {
    ServerConfig {
        listeners: config.listeners(),
        threads: config.threads,
        gateway: GatewayConfig {
            limits: config.limits(),
            clock,
            proxy_protocol: config.proxy_protocol(),
        },
        store,
        resolver: Arc::new(Resolver::new(config.resolver_hosts())),
        events,
        max_connections: config.limits.max_connections,
        tcp_keepalive: config.tcp_keepalive(),
        stats: Arc::new(RuntimeStats::default()),
    }
}

/// Returns the mapping from the monotonic clock to wall time, read now.
#[must_use]
pub fn wall_clock() -> WallClock {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    WallClock {
        instant: Instant::now(),
        unix: UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)),
    }
}

/// Starts the chosen runtime.
pub fn start(runtime: Runtime, config: ServerConfig) -> io::Result<Box<dyn Server>> {
    match runtime {
        Runtime::Tokio => egret_rt_tokio::start(config),
        Runtime::Mio => egret_rt_mio::start(config),
        Runtime::Glommio => {
            egret_rt_glommio::preflight().map_err(io::Error::other)?;
            egret_rt_glommio::start(config)
        }
    }
}

fn serve(source: &ConfigSource) -> Result<(), String> {
    let mut remote = allowlist::Remote::default();
    let (config, loaded) = match allowlist::load_with(source, &mut remote) {
        Ok(loaded) => loaded,
        Err(problems) => {
            for problem in &problems {
                tracing::error!("{problem}");
            }
            return Err(format!(
                "{} has {} problem(s); not starting",
                source.name(),
                problems.len()
            ));
        }
    };
    for warning in &loaded.warnings {
        tracing::warn!("{warning}");
    }
    let entries = loaded.policy.allowlist().len();
    if entries == 0 {
        tracing::warn!("the allowlist is empty: every destination will be denied");
    }
    tracing::info!(
        "egret {} starting: {} runtime, {} worker threads, {entries} allowlist entries",
        env!("CARGO_PKG_VERSION"),
        config.runtime.as_str(),
        egret_rt_common::worker_threads(config.threads),
    );
    let store = PolicyStore::new(loaded.policy);

    let target = config.log_target();
    let reopen = sink::Reopen::default();
    let out = sink::open(&target, &reopen).map_err(|e| match &target {
        LogTarget::File(path) => format!("cannot open the access log {}: {e}", path.display()),
        LogTarget::Stdout => format!("cannot open stdout for the access log: {e}"),
    })?;
    let (cloudwatch, feed) = match &config.log.cloudwatch {
        Some(settings) => {
            let mut modes: Vec<_> = config.listeners().iter().map(|s| s.kind).collect();
            modes.dedup();
            let (cloudwatch, feed) = CloudWatch::start(settings, modes, cloudwatch::METRIC_EVERY)?;
            (Some(cloudwatch), Some(feed))
        }
        None => (None, None),
    };
    let (events, receiver) = EventSink::channel(sink::CHANNEL_CAPACITY);
    let records = Arc::new(RecordMetrics::default());
    let access_log = AccessLog::spawn_counting(
        receiver,
        config.log.format,
        out,
        feed,
        Some(records.clone()),
    )
    .map_err(|e| format!("cannot start the access log thread: {e}"))?;
    let drops = sink::watch_drops(events.clone(), sink::REPORT_EVERY)
        .map_err(|e| format!("cannot start the drop watch thread: {e}"))?;
    let signals = Signals::new([SIGHUP, SIGTERM, SIGINT])
        .map_err(|e| format!("cannot install signal handlers: {e}"))?;
    let reloader = Reloader::new(source.clone(), config.clone(), store.clone(), remote);
    let reload_stats = reloader.stats();
    let reloader = reloader
        .spawn()
        .map_err(|e| format!("cannot start the reloader thread: {e}"))?;

    let listeners = config.listeners();
    // The runtime holds the last sink: the access log sees the channel's end when it stops.
    let events_dropped = events.drop_count();
    let server_config = server_config(&config, store, events, wall_clock());
    let sources = admin::Sources {
        runtime: server_config.stats.clone(),
        events_dropped,
        reloads: reload_stats,
        cloudwatch: cloudwatch.as_ref().map(CloudWatch::stats),
        access_log: access_log.loss(),
    };
    let admin_state = AdminState::new(records, sources);
    let admin = match config.listen.admin {
        Some(addr) => {
            let admin = Admin::spawn(addr, admin_state.clone())
                .map_err(|e| format!("cannot start the admin endpoint on {addr}: {e}"))?;
            tracing::info!("listening admin {}", admin.addr());
            Some(admin)
        }
        None => None,
    };
    let server = start(config.runtime, server_config).map_err(|e| {
        let specs: Vec<String> = listeners
            .iter()
            .map(|s| format!("{} {}", s.kind.as_str(), s.addr))
            .collect();
        format!("cannot start on {}: {e}", specs.join(", "))
    })?;
    for spec in server.local_addrs() {
        tracing::info!("listening {} {}", spec.kind.as_str(), spec.addr);
    }
    admin_state.set_ready();

    let (shutdown_tx, shutdown_rx) = mpsc::channel();
    let handle = signals.handle();
    let poke = reloader.poker();
    let signal_thread = std::thread::Builder::new()
        .name("egret-signals".to_owned())
        .spawn(move || handle_signals(signals, &poke, &reopen, &shutdown_tx))
        .map_err(|e| format!("cannot start the signal thread: {e}"))?;

    let signal = shutdown_rx.recv().unwrap_or(SIGTERM);
    admin_state.set_draining();
    let (grace, drain) = (config.limits.drain_grace, config.limits.drain_timeout);
    if !grace.is_zero() {
        // /readyz answers 503 now; keep accepting until the load balancer has noticed.
        tracing::info!(
            "{} received: not ready; accepting for {}s more before draining (send it again to \
             exit at once)",
            signal_name(signal),
            grace.as_secs_f64()
        );
        std::thread::sleep(grace);
    }
    tracing::info!(
        "draining connections for up to {}s (send {} again to exit at once)",
        drain.as_secs_f64(),
        signal_name(signal)
    );
    server.shutdown(drain);
    server.wait();
    if let Some(admin) = admin {
        admin.stop();
    }
    reloader.stop();
    drops.stop();
    handle.close();
    let _ = signal_thread.join();
    let written = access_log.finish(LOG_FLUSH_TIMEOUT);
    if let Some(cloudwatch) = cloudwatch {
        finish_cloudwatch(cloudwatch);
    }
    match written {
        Some(stats) if stats.errors > 0 => tracing::warn!(
            "stopped; {} access-log write(s) failed over the run, losing {} line(s)",
            stats.errors,
            stats.lost
        ),
        Some(_) => tracing::info!("stopped"),
        None => tracing::warn!("stopped; the access log did not finish flushing in time"),
    }
    Ok(())
}

/// Gives the CloudWatch Logs shipper a bounded time to send what it holds, and logs what
/// happened to the lines over the run.
fn finish_cloudwatch(cloudwatch: CloudWatch) {
    let stats = cloudwatch.stats();
    let finished = cloudwatch.finish(CLOUDWATCH_FLUSH_TIMEOUT);
    let counters = finished.unwrap_or_else(|| stats.counters());
    let totals = format!(
        "{} line(s) sent, {} failed, {} dropped (queue full) over the run",
        counters.sent, counters.failed, counters.dropped
    );
    let error = stats
        .take_error()
        .map(|e| format!("; last error: {e}"))
        .unwrap_or_default();
    if finished.is_none() {
        tracing::warn!(
            "CloudWatch Logs: {} line(s) not delivered within {}s; {totals}{error}",
            counters.queued,
            CLOUDWATCH_FLUSH_TIMEOUT.as_secs()
        );
    } else if counters.failed > 0 || counters.dropped > 0 {
        tracing::warn!("CloudWatch Logs: {totals}{error}");
    } else {
        tracing::info!("CloudWatch Logs: {totals}");
    }
}

/// Pokes the reloader and asks the access log to be reopened (after logrotate) on SIGHUP, and
/// asks for a drain on the first SIGTERM or SIGINT; a second one exits the process at once.
fn handle_signals(
    mut signals: Signals,
    reload: &Poke,
    reopen: &sink::Reopen,
    shutdown: &Sender<i32>,
) {
    let mut draining = false;
    for signal in signals.forever() {
        if signal == SIGHUP {
            tracing::info!("SIGHUP received: reloading the allowlist");
            reload.poke();
            reopen.request();
        } else if draining {
            tracing::warn!("{} received again: exiting now", signal_name(signal));
            std::process::exit(if signal == SIGINT { 130 } else { 0 });
        } else {
            draining = true;
            let _ = shutdown.send(signal);
        }
    }
}

fn signal_name(signal: i32) -> &'static str {
    match signal {
        SIGHUP => "SIGHUP",
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "a signal",
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use egret_core::ListenerKind;
    use egret_core::policy::{Allowlist, Policy, PolicySettings};

    use super::*;

    #[test]
    fn the_server_config_carries_every_setting() {
        let text = "threads = 3\n[listen]\nexplicit = [\"127.0.0.1:0\", \"[::1]:0\"]\n\
                    [resolver]\nhosts = { \"origin.test\" = [\"127.0.0.1\"] }\n\
                    [limits]\nmax_connections = 7\nmax_header_bytes = 2048\n\
                    header_timeout = \"1s\"\nconnect_timeout = \"2s\"\nidle_timeout = \"3s\"\n\
                    tcp_keepalive = \"4s\"\n";
        let config = Config::parse(text, Path::new("egret.toml")).unwrap();
        let store = PolicyStore::new(Policy::new(Allowlist::default(), PolicySettings::default()));
        let (events, _rx) = EventSink::channel(1);
        let clock = wall_clock();
        let server = server_config(&config, store, events, clock);
        assert_eq!(server.listeners.len(), 2);
        assert_eq!(server.listeners[0].addr, "127.0.0.1:0".parse().unwrap());
        assert_eq!(server.listeners[1].kind, ListenerKind::Explicit);
        assert_eq!(server.threads, 3);
        assert_eq!(server.max_connections, 7);
        assert_eq!(server.tcp_keepalive, Some(Duration::from_secs(4)));
        assert_eq!(server.gateway.clock, clock);
        let limits = server.gateway.limits;
        assert_eq!(limits.max_header_bytes, 2048);
        assert_eq!(limits.header_timeout, Duration::from_secs(1));
        assert_eq!(limits.connect_timeout, Duration::from_secs(2));
        assert_eq!(limits.idle_timeout, Duration::from_secs(3));
        assert!(server.resolver.lookup_static("origin.test").is_some());
        assert!(server.resolver.lookup_static("other.test").is_none());
    }

    #[test]
    fn the_wall_clock_is_read_now() {
        let clock = wall_clock();
        // 2023-11-14 and 2100-01-01, in milliseconds since the epoch.
        assert!(clock.unix.0 > 1_700_000_000_000);
        assert!(clock.unix.0 < 4_102_444_800_000);
        assert!(clock.instant.elapsed() < Duration::from_secs(60));
    }

    #[test]
    fn run_arguments_become_overrides() {
        use clap::Parser;

        use crate::cli::{Cli, Command};

        let cli = Cli::try_parse_from([
            "egret",
            "run",
            "--allow",
            "a.example,b.example",
            "--listen",
            "127.0.0.1:0",
            "--listen",
            "[::1]:0",
            "--runtime",
            "tokio",
            "--threads",
            "2",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("not run: {cli:?}");
        };
        let source = args.source();
        assert_eq!(source.path, None);
        assert_eq!(source.overrides.allow, ["a.example,b.example"]);
        assert_eq!(source.overrides.listen.len(), 2);
        assert_eq!(source.overrides.runtime, Some(Runtime::Tokio));
        assert_eq!(source.overrides.threads, Some(2));
        let (config, loaded) = allowlist::load(&source).unwrap();
        assert_eq!(config.threads, 2);
        assert_eq!(config.listeners().len(), 2);
        assert_eq!(loaded.policy.allowlist().len(), 2);
        assert!(Cli::try_parse_from(["egret", "run", "--runtime", "mio"]).is_ok());
        assert!(Cli::try_parse_from(["egret", "run", "--runtime", "libuv"]).is_err());
    }
}
