//! The shipper: collects queued events into batches, sends them through a [`Destination`]
//! and decides what a failure means.
//!
//! ```text
//!   queue ──recv──▶ Batch ──(full, flush_at events, FLUSH_EVERY after its first, closed)──▶ deliver
//!
//!   deliver: prepare the group and stream once, then put ──▶ accepted: sent (+ rejected: failed)
//!            Retry   (throttled, 5xx, transport)  → back off with jitter, put the same batch again
//!            Missing (group or stream gone)       → back off, prepare again, put again
//!            Split   (too large, invalid)         → put each half; a single event: failed
//!            Fatal   (denied, unknown 4xx)        → failed
//! ```
//!
//! While a batch is being retried nothing is taken from the queue, so an outage fills the
//! bounded queue and the feed drops (and counts) what no longer fits; proxying never waits.
//! Failures are kept in [`Stats`] for the periodic summary rather than logged one by one.

use std::collections::VecDeque;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc::UnboundedReceiver;
use tokio::time::{Instant, sleep, timeout_at};

use super::Stats;
use super::batch::{Batch, LogEvent, split};

/// The longest an event waits in a batch before the batch is sent.
pub(super) const FLUSH_EVERY: Duration = Duration::from_secs(2);

/// Where batches go: a log stream.
pub(super) trait Destination {
    /// Creates the log group (and sets its retention) and the log stream where missing.
    async fn prepare(&mut self) -> Result<(), Failure>;

    /// Sends events, in chronological order, within the batch limits.
    async fn put(&mut self, events: &[LogEvent]) -> Result<Rejected, Failure>;
}

/// Why a call failed, and so what to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Failure {
    /// Throttled, a server error or a transport error: back off and try again.
    Retry(String),
    /// The group or the stream does not exist: create them and try again.
    Missing(String),
    /// The batch was refused as too large or invalid: send it in halves.
    Split(String),
    /// Refused for good (denied, unrecognized client): the events are lost.
    Fatal(String),
}

/// The events of an accepted batch that the service refused, by index (`RejectedLogEventsInfo`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Rejected {
    /// Events from this index on are too far in the future.
    pub(super) too_new_start: Option<usize>,
    /// Events up to this index are too old.
    pub(super) too_old_end: Option<usize>,
    /// Events up to this index are older than the group's retention.
    pub(super) expired_end: Option<usize>,
}

/// Exponential back-off with jitter: each delay is half the current step plus a random part
/// of the other half; the step doubles up to a cap and starts over after a success.
#[derive(Clone, Debug)]
pub(super) struct Backoff {
    first: Duration,
    cap: Duration,
    step: Duration,
}

/// Sends batches to a destination, accounting for every event in [`Stats`].
#[derive(Debug)]
pub(super) struct Shipper<D> {
    destination: D,
    stats: Arc<Stats>,
    backoff: Backoff,
    prepared: bool,
}

impl Rejected {
    /// Returns how many of `len` events were refused.
    #[must_use]
    pub(super) fn count(&self, len: usize) -> usize {
        let old = self
            .too_old_end
            .max(self.expired_end)
            .map_or(0, |end| end.saturating_add(1).min(len));
        let new = self
            .too_new_start
            .map_or(0, |start| len.saturating_sub(start.max(old)));
        old + new
    }

    /// Describes what was refused, for the gateway's log.
    #[must_use]
    pub(super) fn describe(&self, len: usize) -> String {
        let mut parts = Vec::new();
        if self.too_old_end.is_some() {
            parts.push("older than 14 days");
        }
        if self.expired_end.is_some() {
            parts.push("older than the group's retention");
        }
        if self.too_new_start.is_some() {
            parts.push("more than 2 hours in the future");
        }
        format!(
            "{} of {len} event(s) rejected: {}",
            self.count(len),
            parts.join(", ")
        )
    }
}

impl Backoff {
    /// Returns a back-off starting at `first` and growing to `cap`.
    #[must_use]
    pub(super) fn new(first: Duration, cap: Duration) -> Backoff {
        Backoff {
            first,
            cap,
            step: first,
        }
    }

    /// Returns the delay before the next try, and grows the step.
    pub(super) fn next_delay(&mut self) -> Duration {
        let half = self.step / 2;
        let spread = u64::try_from(half.as_micros()).unwrap_or(u64::MAX).max(1);
        let jitter = Duration::from_micros(RandomState::new().hash_one(spread) % spread);
        self.step = (self.step * 2).min(self.cap);
        half + jitter
    }

    /// Starts over from the first step.
    pub(super) fn reset(&mut self) {
        self.step = self.first;
    }
}

impl<D: Destination> Shipper<D> {
    /// Returns a shipper that has not prepared its destination yet.
    pub(super) fn new(destination: D, stats: Arc<Stats>, backoff: Backoff) -> Shipper<D> {
        Shipper {
            destination,
            stats,
            backoff,
            prepared: false,
        }
    }

    /// Returns the destination.
    #[cfg(test)]
    pub(super) fn destination(&self) -> &D {
        &self.destination
    }

    /// Sends events (chronological, within the limits) until each one is sent or counted as
    /// failed; retries as long as the destination asks for it.
    pub(super) async fn deliver(&mut self, events: Vec<LogEvent>) {
        let mut work = VecDeque::from([events]);
        while let Some(events) = work.pop_front() {
            if events.is_empty() {
                continue;
            }
            self.prepare().await;
            let len = events.len();
            match self.destination.put(&events).await {
                Ok(rejected) => {
                    self.backoff.reset();
                    let refused = rejected.count(len);
                    self.stats.settle(len - refused, refused);
                    if refused > 0 {
                        self.stats.note_error(rejected.describe(len));
                    }
                }
                Err(Failure::Retry(why)) => {
                    self.stats.note_error(why);
                    sleep(self.backoff.next_delay()).await;
                    work.push_front(events);
                }
                Err(Failure::Missing(why)) => {
                    // Backed off too: a stream just created may not be visible at once.
                    self.stats.note_error(why);
                    self.prepared = false;
                    sleep(self.backoff.next_delay()).await;
                    work.push_front(events);
                }
                Err(Failure::Split(why)) if len > 1 => {
                    tracing::debug!("CloudWatch Logs refused {len} events ({why}); halving");
                    let (earlier, later) = split(events);
                    work.push_front(later);
                    work.push_front(earlier);
                }
                Err(Failure::Split(why) | Failure::Fatal(why)) => {
                    self.stats.settle(0, len);
                    self.stats
                        .note_error(format!("{len} event(s) refused for good: {why}"));
                }
            }
        }
    }

    /// Prepares the destination, retrying until it works.
    async fn prepare(&mut self) {
        while !self.prepared {
            match self.destination.prepare().await {
                Ok(()) => {
                    self.prepared = true;
                    self.backoff.reset();
                }
                Err(
                    Failure::Retry(why)
                    | Failure::Missing(why)
                    | Failure::Split(why)
                    | Failure::Fatal(why),
                ) => {
                    self.stats.note_error(why);
                    sleep(self.backoff.next_delay()).await;
                }
            }
        }
    }
}

/// Ships events from `queue` until it is closed and drained: each batch leaves when it is
/// full, when it holds `flush_at` events, or [`FLUSH_EVERY`] after its first event. `last`
/// returns the events to send once the queue has closed (the last metric); they are counted
/// as queued like the others.
pub(super) async fn ship<D: Destination>(
    shipper: &mut Shipper<D>,
    queue: &mut UnboundedReceiver<LogEvent>,
    flush_at: usize,
    last: impl FnOnce() -> Vec<LogEvent>,
) {
    let mut batch = Batch::default();
    let mut carried: Option<LogEvent> = None;
    'batches: loop {
        let first = match carried.take() {
            Some(event) => event,
            None => match queue.recv().await {
                Some(event) => event,
                None => break 'batches,
            },
        };
        let _ = batch.push(first);
        let deadline = Instant::now() + FLUSH_EVERY;
        while batch.len() < flush_at {
            match timeout_at(deadline, queue.recv()).await {
                Ok(Some(event)) => {
                    if let Err(event) = batch.push(event) {
                        carried = Some(event);
                        break;
                    }
                }
                // Closed: the last events join this batch.
                Ok(None) => break 'batches,
                Err(_elapsed) => break,
            }
        }
        shipper.deliver(batch.take()).await;
    }
    for event in last() {
        if !shipper.stats.admit(usize::MAX) {
            continue;
        }
        if let Err(event) = batch.push(event) {
            shipper.deliver(batch.take()).await;
            let _ = batch.push(event);
        }
    }
    shipper.deliver(batch.take()).await;
}

#[cfg(test)]
mod tests;
