//! CloudWatch Logs shipping: the access log's lines, and the denied-requests metric, sent to a
//! log stream from a thread of its own.
//!
//! The access-log thread hands each formatted line to a [`Feed`], which counts the record for
//! the metric and queues the line; a queue over `queue_events` drops the line and counts it,
//! so proxying never slows or blocks. The shipper thread runs a small current-thread tokio
//! runtime, whatever runtime proxies, with three tasks:
//!
//! - `ship::ship` batches queued lines within the `PutLogEvents` limits ([`batch`]), sends
//!   them at least every two seconds, retries with back-off, halves refused batches;
//! - the metric task queues an EMF event per listener mode every minute ([`metric`]), and the
//!   shipper writes a last one once the access log has closed its feed;
//! - the report task logs, at most every ten seconds, what was dropped or failed.
//!
//! [`Stats`] holds the counters (sent, failed, queued, dropped) for the gateway to read.
//! Shutdown: once the access log has ended (dropping the feed), [`CloudWatch::finish`] waits a
//! bounded time for the queue to drain.

mod aws;
pub mod batch;
pub mod metric;
mod ship;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use egret_core::{Closed, ListenerKind, UnixMillis};
use tokio::sync::mpsc::{self, UnboundedSender, WeakUnboundedSender};
use tokio::time::MissedTickBehavior;

use self::batch::LogEvent;
use self::metric::Counts;
use self::ship::{Backoff, Shipper};
use crate::config::CloudWatchConfig;

/// How often the metric events are written.
pub const METRIC_EVERY: Duration = Duration::from_secs(60);

/// How often dropped lines and failures are summarised in the gateway's log, at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The first and the longest delay between tries while CloudWatch Logs fails.
const BACKOFF: (Duration, Duration) = (Duration::from_millis(200), Duration::from_secs(5));

/// The running shipper thread.
#[derive(Debug)]
pub struct CloudWatch {
    thread: JoinHandle<()>,
    stats: Arc<Stats>,
    group: String,
    stream: String,
}

/// The access-log thread's side: counts records for the metric and queues their lines.
#[derive(Debug)]
pub struct Feed {
    queue: UnboundedSender<LogEvent>,
    bound: usize,
    stats: Arc<Stats>,
    counts: Arc<Counts>,
}

/// What happened to the lines handed to the shipper; read at any time from any thread.
#[derive(Debug, Default)]
pub struct Stats {
    sent: AtomicU64,
    failed: AtomicU64,
    queued: AtomicU64,
    dropped: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A reading of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Events the service accepted.
    pub sent: u64,
    /// Events refused or given up on.
    pub failed: u64,
    /// Events waiting to be sent.
    pub queued: u64,
    /// Events dropped because the queue was full.
    pub dropped: u64,
}

impl CloudWatch {
    /// Resolves the AWS configuration (region, credentials chain) and the stream name, then
    /// starts the shipper thread; metric events are written every `metric_every`. Fails when
    /// no region is configured; an unreachable service is no failure (lines wait in the
    /// queue).
    pub fn start(
        config: &CloudWatchConfig,
        modes: Vec<ListenerKind>,
        metric_every: Duration,
    ) -> Result<(CloudWatch, Feed), String> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the CloudWatch Logs runtime: {e}"))?;
        let logs = runtime.block_on(aws::Logs::connect(config))?;
        let stats = Arc::new(Stats::default());
        let counts = Arc::new(Counts::default());
        let (queue, mut receiver) = mpsc::unbounded_channel();
        let feed = Feed {
            queue,
            bound: config.queue_events,
            stats: stats.clone(),
            counts: counts.clone(),
        };
        let metrics = Metrics {
            counts,
            namespace: config.metric_namespace.clone(),
            modes,
        };
        let group = config.group.clone();
        let stream = logs.stream().to_owned();
        let weak_feed = feed.downgrade();
        let flush_at = (config.queue_events / 2).max(1);
        let backoff = Backoff::new(BACKOFF.0, BACKOFF.1);
        let mut shipper = Shipper::new(logs, stats.clone(), backoff);
        let thread_stats = stats.clone();
        let thread = std::thread::Builder::new()
            .name("egret-cloudwatch".to_owned())
            .spawn(move || {
                runtime.block_on(async move {
                    let report = tokio::spawn(report(thread_stats, REPORT_EVERY));
                    let metric_task =
                        tokio::spawn(tick_metrics(metrics.clone(), metric_every, weak_feed));
                    ship::ship(&mut shipper, &mut receiver, flush_at, || {
                        metrics.events(now())
                    })
                    .await;
                    report.abort();
                    metric_task.abort();
                });
            })
            .map_err(|e| format!("cannot start the CloudWatch Logs thread: {e}"))?;
        let cloudwatch = CloudWatch {
            thread,
            stats,
            group,
            stream,
        };
        Ok((cloudwatch, feed))
    }

    /// Returns the counters, shared with the shipper.
    #[must_use]
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Returns the log group.
    #[must_use]
    pub fn group(&self) -> &str {
        &self.group
    }

    /// Returns the log stream's name, its template filled in.
    #[must_use]
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Waits up to `within` for the shipper to send what is queued and end (the feed must be
    /// dropped first); returns the final counters, or `None` if it did not end in time.
    pub fn finish(self, within: Duration) -> Option<Counters> {
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.thread.join();
        Some(self.stats.counters())
    }
}

impl Feed {
    /// Returns a feed holding up to `bound` lines, with the receiving end of its queue and
    /// its counters, for tests.
    #[cfg(test)]
    pub(crate) fn channel(bound: usize) -> (Feed, mpsc::UnboundedReceiver<LogEvent>, Arc<Stats>) {
        let (queue, receiver) = mpsc::unbounded_channel();
        let stats = Arc::new(Stats::default());
        let feed = Feed {
            queue,
            bound,
            stats: stats.clone(),
            counts: Arc::new(Counts::default()),
        };
        (feed, receiver, stats)
    }

    /// Returns a handle that queues lines without keeping the queue open.
    fn downgrade(&self) -> WeakFeed {
        WeakFeed {
            queue: self.queue.downgrade(),
            bound: self.bound,
            stats: self.stats.clone(),
        }
    }

    /// Counts `record` for the metric and queues its formatted `line`, or drops the line and
    /// counts it when the queue is full. Never blocks.
    pub fn record(&self, record: &Closed, line: &str) {
        self.counts.record(record);
        push(
            &self.queue,
            self.bound,
            &self.stats,
            LogEvent::new(record.at, line),
        );
    }
}

impl Stats {
    /// Returns the current counters.
    #[must_use]
    pub fn counters(&self) -> Counters {
        Counters {
            sent: self.sent.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            queued: self.queued.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }

    /// Returns the last failure noted since the last call, if any.
    pub fn take_error(&self) -> Option<String> {
        self.last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Counts one more queued event if fewer than `bound` are queued; otherwise counts it as
    /// dropped and returns false.
    fn admit(&self, bound: usize) -> bool {
        let bound = u64::try_from(bound).unwrap_or(u64::MAX);
        let admitted = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                (queued < bound).then_some(queued + 1)
            })
            .is_ok();
        if !admitted {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
        admitted
    }

    /// Moves queued events to sent and failed.
    fn settle(&self, sent: usize, failed: usize) {
        let (sent, failed) = (sent as u64, failed as u64);
        self.sent.fetch_add(sent, Ordering::Relaxed);
        self.failed.fetch_add(failed, Ordering::Relaxed);
        let _ = self
            .queued
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |queued| {
                Some(queued.saturating_sub(sent + failed))
            });
    }

    /// Keeps a failure for the next summary.
    fn note_error(&self, why: String) {
        tracing::debug!("CloudWatch Logs: {why}");
        *self
            .last_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(why);
    }
}

impl Counters {
    /// Returns what changed since `earlier`, and what is queued now.
    #[must_use]
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            sent: self.sent.saturating_sub(earlier.sent),
            failed: self.failed.saturating_sub(earlier.failed),
            queued: self.queued,
            dropped: self.dropped.saturating_sub(earlier.dropped),
        }
    }
}

/// Returns the summary to log for what changed between two readings, if anything went wrong.
#[must_use]
pub fn summary(change: &Counters, every: Duration, error: Option<&str>) -> Option<String> {
    if change.dropped == 0 && change.failed == 0 && error.is_none() {
        return None;
    }
    let mut text = format!(
        "CloudWatch Logs in the last {}s: {} line(s) sent, {} failed, {} dropped (queue full); \
         {} queued",
        every.as_secs(),
        change.sent,
        change.failed,
        change.dropped,
        change.queued
    );
    if let Some(error) = error {
        text.push_str("; last error: ");
        text.push_str(error);
    }
    Some(text)
}

/// A [`Feed`] that lets the queue close when the access log's feed is dropped.
#[derive(Debug)]
struct WeakFeed {
    queue: WeakUnboundedSender<LogEvent>,
    bound: usize,
    stats: Arc<Stats>,
}

/// The metric's counts and how to write them.
#[derive(Clone, Debug)]
struct Metrics {
    counts: Arc<Counts>,
    namespace: String,
    modes: Vec<ListenerKind>,
}

impl Metrics {
    /// Returns the EMF events for the counts since the last call, stamped `at`.
    fn events(&self, at: UnixMillis) -> Vec<LogEvent> {
        let tallies = self.counts.take();
        metric::events(&self.namespace, &self.modes, tallies, at)
            .iter()
            .map(|line| LogEvent::new(at, line))
            .collect()
    }
}

/// Queues an event within the bound, or counts it as dropped.
fn push(queue: &UnboundedSender<LogEvent>, bound: usize, stats: &Stats, event: LogEvent) {
    if stats.admit(bound) && queue.send(event).is_err() {
        // The shipper has ended: nothing will send the event.
        stats.queued.fetch_sub(1, Ordering::Relaxed);
        stats.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Queues the metric events every `every` for as long as the feed lives.
async fn tick_metrics(metrics: Metrics, every: Duration, feed: WeakFeed) {
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(queue) = feed.queue.upgrade() else {
            return;
        };
        for event in metrics.events(now()) {
            push(&queue, feed.bound, &feed.stats, event);
        }
    }
}

/// Logs a summary every `every` when lines were dropped or failed.
async fn report(stats: Arc<Stats>, every: Duration) {
    let mut last = stats.counters();
    let mut interval = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let counters = stats.counters();
        let error = stats.take_error();
        if let Some(text) = summary(&counters.since(&last), every, error.as_deref()) {
            tracing::warn!("{text}");
        }
        last = counters;
    }
}

/// Returns the current wall-clock time.
fn now() -> UnixMillis {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    UnixMillis(u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests;
