use std::collections::VecDeque;

use egret_core::UnixMillis;
use tokio::sync::mpsc;

use super::*;
use crate::cloudwatch::Counters;
use crate::cloudwatch::batch::MAX_EVENTS;

#[tokio::test]
async fn a_refused_batch_is_halved_until_it_fits_and_nothing_is_lost() {
    let events = numbered(10);
    let logs = FakeLogs {
        accept_at_most: 3,
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 10);
    shipper.deliver(events.clone()).await;
    let logs = shipper.destination();
    assert!(
        logs.puts.iter().all(|batch| batch.len() <= 3),
        "{:?}",
        logs.puts
    );
    assert_eq!(logs.puts.concat(), events, "every event, in order");
    assert_eq!(logs.refused, 3, "10 → 5 + 5 → 2 + 3 + 2 + 3");
    assert_eq!(
        stats.counters(),
        Counters {
            sent: 10,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn a_single_event_refused_as_invalid_is_counted_as_failed() {
    let logs = FakeLogs {
        accept_at_most: 0,
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 4);
    shipper.deliver(numbered(4)).await;
    assert!(shipper.destination().puts.is_empty());
    assert_eq!(
        stats.counters(),
        Counters {
            failed: 4,
            ..Counters::default()
        }
    );
    let error = stats.take_error().unwrap();
    assert!(error.contains("refused for good"), "{error}");
}

#[tokio::test]
async fn throttling_and_outages_are_retried_with_the_same_batch() {
    let logs = FakeLogs {
        failures: VecDeque::from([
            Failure::Retry("ThrottlingException".to_owned()),
            Failure::Retry("connection refused".to_owned()),
            Failure::Retry("503".to_owned()),
        ]),
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 5);
    shipper.deliver(numbered(5)).await;
    let logs = shipper.destination();
    assert_eq!(logs.puts, [numbered(5)]);
    assert_eq!(logs.prepares, 1);
    assert_eq!(stats.counters().sent, 5);
    assert_eq!(stats.counters().queued, 0);
}

#[tokio::test]
async fn a_missing_stream_is_created_again_before_the_retry() {
    let logs = FakeLogs {
        failures: VecDeque::from([Failure::Missing("ResourceNotFoundException".to_owned())]),
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 2);
    shipper.deliver(numbered(2)).await;
    assert_eq!(shipper.destination().prepares, 2);
    assert_eq!(shipper.destination().puts, [numbered(2)]);
    assert_eq!(stats.counters().sent, 2);
}

#[tokio::test]
async fn final_refusals_lose_the_batch_and_say_why() {
    let logs = FakeLogs {
        failures: VecDeque::from([Failure::Fatal("AccessDeniedException".to_owned())]),
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 3);
    shipper.deliver(numbered(3)).await;
    assert_eq!(stats.counters().failed, 3);
    assert!(
        stats
            .take_error()
            .unwrap()
            .contains("AccessDeniedException")
    );
    shipper.deliver(numbered(1)).await;
    assert_eq!(stats.counters().sent, 1, "the next batch goes through");
}

#[tokio::test]
async fn events_the_service_explains_away_are_counted_and_described() {
    let logs = FakeLogs {
        rejected: Rejected {
            too_old_end: Some(1),
            too_new_start: Some(4),
            expired_end: None,
        },
        ..FakeLogs::default()
    };
    let (mut shipper, stats) = shipper(logs, 5);
    shipper.deliver(numbered(5)).await;
    assert_eq!(
        stats.counters(),
        Counters {
            sent: 2,
            failed: 3,
            ..Counters::default()
        }
    );
    let error = stats.take_error().unwrap();
    assert!(error.contains("3 of 5"), "{error}");
    assert!(error.contains("older than 14 days"), "{error}");
    assert!(error.contains("in the future"), "{error}");
}

#[test]
fn rejected_ranges_are_counted_once() {
    let none = Rejected::default();
    assert_eq!(none.count(10), 0);
    let old = Rejected {
        too_old_end: Some(2),
        expired_end: Some(4),
        ..Rejected::default()
    };
    assert_eq!(old.count(10), 5);
    let new = Rejected {
        too_new_start: Some(8),
        ..Rejected::default()
    };
    assert_eq!(new.count(10), 2);
    let all = Rejected {
        too_old_end: Some(20),
        too_new_start: Some(0),
        ..Rejected::default()
    };
    assert_eq!(all.count(10), 10);
}

#[test]
fn backoff_doubles_with_jitter_up_to_its_cap_and_starts_over() {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_millis(800));
    for step in [100, 200, 400, 800, 800, 800] {
        let delay = backoff.next_delay();
        let step = Duration::from_millis(step);
        assert!(delay >= step / 2 && delay < step, "{delay:?} for {step:?}");
    }
    backoff.reset();
    assert!(backoff.next_delay() < Duration::from_millis(100));
}

#[tokio::test]
async fn queued_events_leave_in_full_batches_in_order_then_the_last_ones() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let total = 2 * MAX_EVENTS + 5;
    let (mut shipper, stats) = shipper(FakeLogs::default(), total);
    for event in numbered(total) {
        tx.send(event).unwrap();
    }
    drop(tx);
    let last = || vec![LogEvent::new(UnixMillis(total as u64), "the metric")];
    ship(&mut shipper, &mut rx, usize::MAX, last).await;
    let puts = &shipper.destination().puts;
    let sizes: Vec<usize> = puts.iter().map(Vec::len).collect();
    assert_eq!(sizes, [MAX_EVENTS, MAX_EVENTS, 6]);
    let all = puts.concat();
    assert_eq!(all[..total], numbered(total)[..]);
    assert_eq!(all[total].message, "the metric");
    assert_eq!(
        stats.counters(),
        Counters {
            sent: total as u64 + 1,
            ..Counters::default()
        }
    );
}

#[tokio::test]
async fn a_batch_leaves_once_flush_at_events_wait() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut shipper, _stats) = shipper(FakeLogs::default(), 7);
    for event in numbered(7) {
        tx.send(event).unwrap();
    }
    drop(tx);
    ship(&mut shipper, &mut rx, 3, Vec::new).await;
    let sizes: Vec<usize> = shipper.destination().puts.iter().map(Vec::len).collect();
    assert_eq!(sizes, [3, 3, 1]);
}

#[tokio::test]
async fn a_lone_event_leaves_within_the_flush_interval() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (mut shipper, stats) = shipper(FakeLogs::default(), 1);
    tx.send(LogEvent::new(UnixMillis(1), "alone")).unwrap();
    let started = Instant::now();
    let shipping = ship(&mut shipper, &mut rx, usize::MAX, Vec::new);
    let waited = tokio::time::timeout(FLUSH_EVERY * 3, async {
        tokio::pin!(shipping);
        loop {
            tokio::select! {
                () = &mut shipping => unreachable!("the queue is still open"),
                () = sleep(Duration::from_millis(20)) => {
                    if stats.counters().sent == 1 {
                        return started.elapsed();
                    }
                }
            }
        }
    })
    .await
    .expect("the event was not sent");
    assert!(waited >= FLUSH_EVERY, "{waited:?}");
    drop(tx);
}

/// Returns a shipper with a quick back-off whose stats count `queued` events waiting.
fn shipper(logs: FakeLogs, queued: usize) -> (Shipper<FakeLogs>, Arc<Stats>) {
    let stats = Arc::new(Stats::default());
    for _ in 0..queued {
        assert!(stats.admit(usize::MAX));
    }
    let backoff = Backoff::new(Duration::from_millis(1), Duration::from_millis(4));
    (Shipper::new(logs, stats.clone(), backoff), stats)
}

fn numbered(count: usize) -> Vec<LogEvent> {
    (0..count)
        .map(|i| LogEvent::new(UnixMillis(i as u64), &format!("line {i}")))
        .collect()
}

/// A destination that records what it accepted, fails as told, and refuses batches larger
/// than `accept_at_most` as too large.
#[derive(Debug)]
struct FakeLogs {
    accept_at_most: usize,
    failures: VecDeque<Failure>,
    rejected: Rejected,
    puts: Vec<Vec<LogEvent>>,
    prepares: usize,
    refused: usize,
}

impl Default for FakeLogs {
    fn default() -> Self {
        FakeLogs {
            accept_at_most: usize::MAX,
            failures: VecDeque::new(),
            rejected: Rejected::default(),
            puts: Vec::new(),
            prepares: 0,
            refused: 0,
        }
    }
}

impl Destination for FakeLogs {
    async fn prepare(&mut self) -> Result<(), Failure> {
        self.prepares += 1;
        Ok(())
    }

    async fn put(&mut self, events: &[LogEvent]) -> Result<Rejected, Failure> {
        if let Some(failure) = self.failures.pop_front() {
            return Err(failure);
        }
        if events.len() > self.accept_at_most {
            self.refused += 1;
            return Err(Failure::Split(
                "InvalidParameterException: too large".to_owned(),
            ));
        }
        assert!(events.is_sorted_by_key(|e| e.at), "out of order");
        self.puts.push(events.to_vec());
        Ok(self.rejected)
    }
}
