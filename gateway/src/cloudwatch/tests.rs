use egret_core::policy::DenyReason;
use egret_core::{Access, Reason};

use super::*;

#[test]
fn the_feed_counts_every_record_but_queues_only_up_to_its_bound() {
    let (feed, mut queue) = feed(3);
    for i in 0..5 {
        feed.record(&closed(i), &format!("line {i}\n"));
    }
    assert_eq!(
        feed.stats.counters(),
        Counters {
            queued: 3,
            dropped: 2,
            ..Counters::default()
        }
    );
    let first = queue.try_recv().unwrap();
    assert_eq!(first.message, "line 0");
    assert_eq!(first.at, UnixMillis(1_732_540_800_000));
    let [explicit, _, _] = feed.counts.take();
    assert_eq!(explicit.requests, 5, "the metric counts dropped lines too");
    assert_eq!(explicit.denied, 5);
}

#[test]
fn a_line_for_an_ended_shipper_is_dropped() {
    let (feed, queue) = feed(10);
    drop(queue);
    feed.record(&closed(1), "line");
    assert_eq!(
        feed.stats.counters(),
        Counters {
            dropped: 1,
            ..Counters::default()
        }
    );
}

#[test]
fn settling_moves_queued_events_to_sent_and_failed() {
    let stats = Stats::default();
    for _ in 0..5 {
        assert!(stats.admit(10));
    }
    stats.settle(3, 1);
    assert_eq!(
        stats.counters(),
        Counters {
            sent: 3,
            failed: 1,
            queued: 1,
            dropped: 0,
        }
    );
    stats.note_error("throttled".to_owned());
    assert_eq!(stats.take_error().as_deref(), Some("throttled"));
    assert_eq!(stats.take_error(), None);
}

#[test]
fn the_summary_speaks_only_when_lines_are_lost_or_calls_fail() {
    let every = Duration::from_secs(10);
    let earlier = Counters {
        sent: 10,
        failed: 1,
        queued: 0,
        dropped: 5,
    };
    let quiet = Counters {
        sent: 20,
        ..earlier
    };
    assert_eq!(summary(&quiet.since(&earlier), every, None), None);
    let lossy = Counters {
        sent: 20,
        failed: 1,
        queued: 7,
        dropped: 9,
    };
    let text = summary(&lossy.since(&earlier), every, Some("connection refused")).unwrap();
    assert_eq!(
        text,
        "CloudWatch Logs in the last 10s: 10 line(s) sent, 0 failed, 4 dropped (queue full); \
         7 queued; last error: connection refused"
    );
    let failing = summary(&quiet.since(&earlier), every, Some("throttled")).unwrap();
    assert!(failing.ends_with("last error: throttled"), "{failing}");
}

#[tokio::test]
async fn metric_events_are_queued_every_interval_while_the_feed_lives() {
    let (feed, mut queue) = feed(100);
    feed.record(&closed(1), "line");
    let _ = queue.recv().await;
    let metrics = Metrics {
        counts: feed.counts.clone(),
        namespace: "Test".to_owned(),
        modes: vec![ListenerKind::Explicit],
    };
    let task = tokio::spawn(tick_metrics(
        metrics,
        Duration::from_millis(20),
        feed.downgrade(),
    ));
    let first = queue.recv().await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&first.message).unwrap();
    assert_eq!(value["_aws"]["CloudWatchMetrics"][0]["Namespace"], "Test");
    assert_eq!(value["Mode"], "explicit");
    assert_eq!(value["Requests"], 1);
    assert_eq!(value["Denied"], 1);
    let second = queue.recv().await.unwrap();
    let value: serde_json::Value = serde_json::from_str(&second.message).unwrap();
    assert_eq!(value["Requests"], 0, "the next interval starts from zero");
    drop(feed);
    let ended = tokio::time::timeout(Duration::from_secs(5), task).await;
    assert!(ended.is_ok(), "the metric task outlived the feed");
}

fn feed(bound: usize) -> (Feed, mpsc::UnboundedReceiver<LogEvent>) {
    let (feed, receiver, _stats) = Feed::channel(bound);
    (feed, receiver)
}

fn closed(session: u64) -> Closed {
    let denied = Some(Access::Denied(DenyReason::NotAllowlisted));
    let mut record = metric::tests::record(ListenerKind::Explicit, 403, denied);
    record.session = session;
    record.at = UnixMillis(1_732_540_800_000 + session);
    record.reason = Reason::Denied;
    record
}
