//! The access log: a dedicated thread that turns `Event::Closed` records into Squid or JSON
//! lines and writes them to stdout or a file.
//!
//! Runtimes send events through the non-blocking [`EventSink`], which drops and counts what
//! does not fit in the channel, so a slow disk never stalls the proxy. The writer batches lines
//! in a buffer and flushes it whenever the channel is momentarily empty: lines appear promptly
//! when traffic is light and are written in large chunks under load. Write errors (a full disk,
//! a failing device) are counted with the lines they lose ([`LossCounters`], on `/metrics`) and
//! reported at most once per [`REPORT_EVERY`]; they never stop the writer, and a buffer that
//! failed is discarded, so writing resumes with fresh lines as soon as the file takes them.
//! With `[log.cloudwatch]`, each record is also counted for the denied metric and its line
//! handed to the CloudWatch [`Feed`], which queues it without ever blocking.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Receiver;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use egret_core::{Event, format};
use egret_rt_common::EventSink;

use crate::admin::RecordMetrics;
use crate::cloudwatch::Feed;
use crate::config::{LogFormat, LogTarget};
use crate::periodic::Periodic;
pub use reopen::Reopen;
use reopen::ReopenableFile;

mod reopen;

/// How many events the channel between the runtime and the writer holds.
pub const CHANNEL_CAPACITY: usize = 65_536;

/// How often dropped events and write errors are reported, at most.
pub const REPORT_EVERY: Duration = Duration::from_secs(10);

/// The size of the write buffer.
const BUFFER_BYTES: usize = 64 * 1024;

/// How long the writer rests after a flush before it takes events again. While it rests the
/// proxying threads queue events without waking it (a wake-up is a futex call on the proxying
/// path); 2 ms at 100,000 events/s is 200 events, far below the channel's capacity.
const COALESCE: Duration = Duration::from_millis(2);

/// The access-log writer thread.
#[derive(Debug)]
pub struct AccessLog {
    thread: JoinHandle<WriteStats>,
    loss: Arc<LossCounters>,
}

/// Write failures and the lines they lost, live, for the admin endpoint.
#[derive(Debug, Default)]
pub struct LossCounters {
    errors: AtomicU64,
    lost: AtomicU64,
}

/// What the writer did over its life.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Lines formatted.
    pub lines: u64,
    /// Writes or flushes that failed.
    pub errors: u64,
    /// Lines formatted but not written whole, because a write failed.
    pub lost: u64,
}

/// Counts events dropped since the last look.
#[derive(Clone, Copy, Debug, Default)]
pub struct DropCounter {
    seen: u64,
}

/// Opens where lines go: stdout, or a file created if needed and appended to, opened again
/// at its path after `reopen` is requested (log rotation).
pub fn open(target: &LogTarget, reopen: &Reopen) -> io::Result<Box<dyn Write + Send>> {
    match target {
        LogTarget::Stdout => Ok(Box::new(io::stdout())),
        LogTarget::File(path) => Ok(Box::new(ReopenableFile::open(path, reopen.clone())?)),
    }
}

/// Starts a thread that logs a warning every `every` when `sink` dropped events since the last
/// look. Stop it before waiting for the writer: it holds a sender of the channel.
pub fn watch_drops(sink: EventSink, every: Duration) -> io::Result<Periodic> {
    let mut counter = DropCounter::default();
    Periodic::spawn("egret-drops", every, move |_| {
        if let Some(dropped) = counter.observe(sink.dropped()) {
            tracing::warn!(
                "{dropped} access events dropped in the last {}s: the access log cannot keep up",
                every.as_secs()
            );
        }
        every
    })
}

impl AccessLog {
    /// Starts the writer: it formats every `Event::Closed` from `events` into `out` and ends
    /// once every sender is gone, after a last flush.
    pub fn spawn(
        events: Receiver<Event>,
        format: LogFormat,
        out: Box<dyn Write + Send>,
    ) -> io::Result<AccessLog> {
        AccessLog::spawn_with(events, format, out, None)
    }

    /// Starts the writer like [`AccessLog::spawn`]; with a `cloudwatch` feed, every record is
    /// also counted for the metric and its line queued for CloudWatch Logs. The feed is
    /// dropped when the writer ends, which tells the shipper to send its last batch.
    pub fn spawn_with(
        events: Receiver<Event>,
        format: LogFormat,
        out: Box<dyn Write + Send>,
        cloudwatch: Option<Feed>,
    ) -> io::Result<AccessLog> {
        AccessLog::spawn_counting(events, format, out, cloudwatch, None)
    }

    /// Starts the writer like [`AccessLog::spawn_with`], also counting every record in
    /// `metrics` for the admin endpoint.
    pub fn spawn_counting(
        events: Receiver<Event>,
        format: LogFormat,
        out: Box<dyn Write + Send>,
        cloudwatch: Option<Feed>,
        metrics: Option<Arc<RecordMetrics>>,
    ) -> io::Result<AccessLog> {
        let mut writer = Writer::new(format, out, cloudwatch);
        writer.metrics = metrics;
        let loss = writer.loss.clone();
        let thread = std::thread::Builder::new()
            .name("egret-access-log".to_owned())
            .spawn(move || write_events(&events, writer))?;
        Ok(AccessLog { thread, loss })
    }

    /// Returns the live count of failed writes and lost lines.
    #[must_use]
    pub fn loss(&self) -> Arc<LossCounters> {
        self.loss.clone()
    }

    /// Waits for the writer to end: every sender must be dropped first.
    pub fn join(self) -> WriteStats {
        self.thread.join().unwrap_or_default()
    }

    /// Waits up to `within` for the writer to end; returns `None` if a sender still lives.
    pub fn finish(self, within: Duration) -> Option<WriteStats> {
        let deadline = Instant::now() + within;
        while !self.thread.is_finished() {
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Some(self.join())
    }
}

impl LossCounters {
    /// Returns how many writes or flushes failed so far.
    #[must_use]
    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    /// Returns how many lines were lost to failed writes so far.
    #[must_use]
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl DropCounter {
    /// Returns how many more events were dropped than at the last look, if any.
    pub fn observe(&mut self, total: u64) -> Option<u64> {
        let new = total.saturating_sub(self.seen);
        self.seen = total;
        (new > 0).then_some(new)
    }
}

/// The writer's state: the buffer of whole lines, the line being formatted, and error
/// accounting.
struct Writer {
    out: Box<dyn Write + Send>,
    buffer: Vec<u8>,
    format: LogFormat,
    cloudwatch: Option<Feed>,
    metrics: Option<Arc<RecordMetrics>>,
    line: String,
    stats: WriteStats,
    loss: Arc<LossCounters>,
    unreported: u64,
    unreported_lost: u64,
    last_report: Option<Instant>,
}

fn write_events(events: &Receiver<Event>, mut writer: Writer) -> WriteStats {
    while let Ok(event) = events.recv() {
        writer.write(&event);
        // Write what else is queued, then flush once the channel is momentarily empty (or
        // closed: the outer `recv` then ends the loop).
        while let Ok(event) = events.try_recv() {
            writer.write(&event);
        }
        writer.flush();
        std::thread::sleep(COALESCE);
    }
    writer.finish()
}

impl Writer {
    fn new(format: LogFormat, out: Box<dyn Write + Send>, cloudwatch: Option<Feed>) -> Writer {
        Writer {
            out,
            buffer: Vec::with_capacity(BUFFER_BYTES),
            format,
            cloudwatch,
            metrics: None,
            line: String::with_capacity(512),
            stats: WriteStats::default(),
            loss: Arc::new(LossCounters::default()),
            unreported: 0,
            unreported_lost: 0,
            last_report: None,
        }
    }

    fn write(&mut self, event: &Event) {
        let record = match event {
            Event::Closed(record) => record,
            Event::Decided(_) => return,
        };
        self.line.clear();
        match self.format {
            LogFormat::Squid => format::squid(record, &mut self.line),
            LogFormat::Json => format::json(record, &mut self.line),
        }
        self.stats.lines += 1;
        if let Some(feed) = &self.cloudwatch {
            feed.record(record, &self.line);
        }
        if let Some(metrics) = &self.metrics {
            metrics.record(record);
        }
        if self.buffer.len() + self.line.len() > BUFFER_BYTES {
            self.flush();
        }
        self.buffer.extend_from_slice(self.line.as_bytes());
    }

    /// Writes the buffer out. On a failure the lines not written whole are counted as lost and
    /// the buffer is discarded: retrying it would only grow it while the disk stays full.
    fn flush(&mut self) {
        let mut written = 0;
        let result = loop {
            if written == self.buffer.len() {
                break self.out.flush();
            }
            match self.out.write(&self.buffer[written..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => written += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        let lost = self.buffer[written..]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count() as u64;
        self.buffer.clear();
        let Err(error) = result else {
            return;
        };
        self.stats.errors += 1;
        self.stats.lost += lost;
        self.loss.errors.fetch_add(1, Ordering::Relaxed);
        self.loss.lost.fetch_add(lost, Ordering::Relaxed);
        self.unreported += 1;
        self.unreported_lost += lost;
        let now = Instant::now();
        if self
            .last_report
            .is_none_or(|at| now.duration_since(at) >= REPORT_EVERY)
        {
            tracing::warn!(
                "access log write failed: {error} ({} failure(s) and {} line(s) lost since the \
                 last report)",
                self.unreported,
                self.unreported_lost
            );
            self.unreported = 0;
            self.unreported_lost = 0;
            self.last_report = Some(now);
        }
    }

    fn finish(mut self) -> WriteStats {
        self.flush();
        if self.unreported > 0 {
            tracing::warn!(
                "access log write failed {} more time(s) before the end; {} more line(s) lost",
                self.unreported,
                self.unreported_lost
            );
        }
        self.stats
    }
}

#[cfg(test)]
mod tests;
