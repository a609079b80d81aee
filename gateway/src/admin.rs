//! The admin endpoint: `GET /healthz`, `GET /readyz` and `GET /metrics` (Prometheus text,
//! OpenMetrics flavour) on its own small thread and runtime, whatever runtime proxies.
//!
//! `/healthz` answers while the process is alive. `/readyz` answers 200 once the listeners are
//! bound and a policy is loaded and 503 as soon as a drain begins, so a load balancer stops
//! sending new connections before the listeners close. The proxy can never reach this endpoint:
//! core refuses destinations on a gateway's own listener ports at non-public addresses.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use egret_core::{Access, Closed, ListenerKind, Reason};
use egret_rt_common::{DropCount, RuntimeStats};
use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Registry;

use crate::cloudwatch;
use crate::sink::LossCounters;

/// How long a scrape may take to send its request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// What the endpoint reports: readiness, and every metric.
#[derive(Debug)]
pub struct AdminState {
    ready: AtomicBool,
    draining: AtomicBool,
    registry: Registry,
}

/// Counters fed from access records by the access-log thread, off the proxying path.
#[derive(Debug, Default)]
pub struct RecordMetrics {
    requests: Family<RequestLabels, Counter>,
    bytes: Family<DirectionLabels, Counter>,
    failures: Family<FailureLabels, Counter>,
}

/// Policy reload outcomes and the current list size, kept by the reloader.
#[derive(Debug, Default)]
pub struct ReloadStats {
    /// Reloads that published a new policy or found nothing changed.
    pub ok: AtomicU64,
    /// Reloads that failed (the last good policy was kept).
    pub failed: AtomicU64,
    /// Entries in the current allowlist.
    pub entries: AtomicU64,
}

/// The live counters other parts of the gateway keep, read at each scrape.
#[derive(Debug)]
pub struct Sources {
    /// The runtime's sessions and accepts.
    pub runtime: Arc<RuntimeStats>,
    /// Access events dropped because their channel was full. (A count, not a sink: a sink
    /// here would keep the channel open and the access log from ever seeing its end.)
    pub events_dropped: DropCount,
    /// Policy reloads.
    pub reloads: Arc<ReloadStats>,
    /// CloudWatch shipping, when it is on.
    pub cloudwatch: Option<Arc<cloudwatch::Stats>>,
    /// Access-log writes that failed and the lines they lost.
    pub access_log: Arc<LossCounters>,
}

/// The running endpoint.
#[derive(Debug)]
pub struct Admin {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    mode: &'static str,
    decision: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FailureLabels {
    kind: &'static str,
}

impl AdminState {
    /// Returns the endpoint's state, with the record metrics and live sources registered.
    #[must_use]
    pub fn new(records: Arc<RecordMetrics>, sources: Sources) -> Arc<AdminState> {
        let mut registry = Registry::with_prefix("egret");
        registry.register(
            "requests",
            "Requests and tunnels by listener mode and decision",
            records.requests.clone(),
        );
        registry.register("bytes", "Bytes moved, by direction", records.bytes.clone());
        registry.register(
            "upstream_failures",
            "Requests that failed upstream, by kind",
            records.failures.clone(),
        );
        registry.register_collector(Box::new(sources));
        Arc::new(AdminState {
            ready: AtomicBool::new(false),
            draining: AtomicBool::new(false),
            registry,
        })
    }

    /// Marks the gateway ready: listeners bound, policy loaded.
    pub fn set_ready(&self) {
        self.ready.store(true, Ordering::SeqCst);
    }

    /// Marks the gateway draining: `/readyz` answers 503 from now on.
    pub fn set_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    fn readiness(&self) -> (StatusCode, &'static str) {
        match (
            self.ready.load(Ordering::SeqCst),
            self.draining.load(Ordering::SeqCst),
        ) {
            (_, true) => (StatusCode::SERVICE_UNAVAILABLE, "draining\n"),
            (false, false) => (StatusCode::SERVICE_UNAVAILABLE, "starting\n"),
            (true, false) => (StatusCode::OK, "ready\n"),
        }
    }

    fn metrics_text(&self) -> String {
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

impl RecordMetrics {
    /// Counts one access record.
    pub fn record(&self, record: &Closed) {
        let decision = match record.access {
            Some(Access::Allowed) => "allowed",
            Some(Access::Denied(_)) => "denied",
            Some(Access::Audited(_)) => "audited",
            None => "invalid",
        };
        let labels = RequestLabels {
            mode: mode(record.listener),
            decision,
        };
        self.requests.get_or_create(&labels).inc();
        let to_client = DirectionLabels {
            direction: "to_client",
        };
        let from_client = DirectionLabels {
            direction: "from_client",
        };
        self.bytes
            .get_or_create(&to_client)
            .inc_by(record.bytes_to_client);
        self.bytes
            .get_or_create(&from_client)
            .inc_by(record.bytes_from_client);
        let failure = match record.reason {
            Reason::DnsFailed => Some("dns"),
            Reason::ConnectFailed => Some("connect"),
            Reason::ConnectTimeout => Some("connect_timeout"),
            Reason::ReadTimeout => Some("read_timeout"),
            Reason::InvalidResponse | Reason::EmptyResponse => Some("bad_response"),
            Reason::Completed
            | Reason::Denied
            | Reason::InvalidRequest
            | Reason::HeaderTooLarge
            | Reason::HeaderTimeout
            | Reason::ClientClosed
            | Reason::UpstreamClosed
            | Reason::IdleTimeout
            | Reason::Shutdown => None,
        };
        if let Some(kind) = failure {
            self.failures.get_or_create(&FailureLabels { kind }).inc();
        }
    }
}

impl Collector for Sources {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let active = self.runtime.active_sessions.load(Ordering::Relaxed) as u64;
        gauge(
            &mut encoder,
            "active_sessions",
            "Client connections open now",
            active,
        )?;
        counter(
            &mut encoder,
            "accepted",
            "Client connections accepted",
            load(&self.runtime.accepted),
        )?;
        counter(
            &mut encoder,
            "accept_errors",
            "Failed accepts",
            load(&self.runtime.accept_errors),
        )?;
        counter(
            &mut encoder,
            "events_dropped",
            "Access events dropped (queue full)",
            self.events_dropped.get(),
        )?;
        counter(
            &mut encoder,
            "access_log_write_errors",
            "Access-log writes that failed (full disk, failing device)",
            self.access_log.errors(),
        )?;
        counter(
            &mut encoder,
            "access_log_lines_lost",
            "Access-log lines lost to failed writes",
            self.access_log.lost(),
        )?;
        counter(
            &mut encoder,
            "policy_reloads_ok",
            "Successful allowlist reloads",
            load(&self.reloads.ok),
        )?;
        counter(
            &mut encoder,
            "policy_reloads_failed",
            "Failed allowlist reloads (last good kept)",
            load(&self.reloads.failed),
        )?;
        gauge(
            &mut encoder,
            "allowlist_entries",
            "Entries in the current allowlist",
            load(&self.reloads.entries),
        )?;
        if let Some(stats) = &self.cloudwatch {
            let c = stats.counters();
            counter(
                &mut encoder,
                "cloudwatch_sent",
                "Log events CloudWatch accepted",
                c.sent,
            )?;
            counter(
                &mut encoder,
                "cloudwatch_failed",
                "Log events CloudWatch rejected",
                c.failed,
            )?;
            gauge(
                &mut encoder,
                "cloudwatch_queued",
                "Log events waiting to be shipped",
                c.queued,
            )?;
            counter(
                &mut encoder,
                "cloudwatch_dropped",
                "Log events dropped (queue full)",
                c.dropped,
            )?;
        }
        Ok(())
    }
}

impl Admin {
    /// Starts the endpoint on `addr`; returns once it is listening.
    pub fn spawn(addr: SocketAddr, state: Arc<AdminState>) -> std::io::Result<Admin> {
        let listener = std::net::TcpListener::bind(addr)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let thread = std::thread::Builder::new()
            .name("egret-admin".to_owned())
            .spawn(move || runtime.block_on(serve(listener, state, stopped)))?;
        Ok(Admin {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// Returns where the endpoint listens.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops the endpoint.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for Admin {
    fn drop(&mut self) {
        self.shutdown();
    }
}

async fn serve(
    listener: std::net::TcpListener,
    state: Arc<AdminState>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
        return;
    };
    loop {
        let (stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut stopped => return,
        };
        let state = state.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(&state, &request)) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(false)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Answers one admin request.
fn answer(state: &AdminState, request: &Request<Incoming>) -> Response<Full<Bytes>> {
    if request.method() != Method::GET && request.method() != Method::HEAD {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET only\n".into(),
        );
    }
    match request.uri().path() {
        "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
        "/readyz" => {
            let (status, text) = state.readiness();
            reply(status, "text/plain", text.into())
        }
        "/metrics" => reply(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            state.metrics_text(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(value) = hyper::header::HeaderValue::from_str(content_type) {
        response
            .headers_mut()
            .insert(hyper::header::CONTENT_TYPE, value);
    }
    response
}

fn mode(kind: ListenerKind) -> &'static str {
    kind.as_str()
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstCounter::new(value);
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), std::fmt::Error> {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}
