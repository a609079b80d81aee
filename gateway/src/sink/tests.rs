use std::sync::{Arc, Mutex};

use egret_core::host::Host;
use egret_core::policy::DenyReason;
use egret_core::{Access, Closed, Decided, ListenerKind, Reason, UnixMillis};

use super::*;

#[test]
fn squid_lines_are_appended_to_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    std::fs::write(&path, "earlier line\n").unwrap();
    let (sink, rx) = EventSink::channel(16);
    let out = open(&LogTarget::File(path.clone()), &Reopen::default()).unwrap();
    let log = AccessLog::spawn(rx, LogFormat::Squid, out).unwrap();
    sink.send(Event::Closed(tunnel()));
    sink.send(Event::Decided(decided()));
    sink.send(Event::Closed(denied()));
    drop(sink);
    let stats = log.join();
    assert_eq!(
        stats,
        WriteStats {
            lines: 2,
            errors: 0,
            lost: 0
        }
    );
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        text,
        "earlier line\n\
         1732540800.123    245 10.0.1.17 TCP_TUNNEL/200 5120 CONNECT pypi.org:443 - \
         HIER_DIRECT/151.101.0.223 -\n\
         1732540801.002      0 10.0.1.17 TCP_DENIED/403 145 CONNECT evil.example:443 - \
         HIER_NONE/- text/html\n"
    );
}

#[test]
fn json_lines_are_one_object_each() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.json");
    let (sink, rx) = EventSink::channel(16);
    let out = open(&LogTarget::File(path.clone()), &Reopen::default()).unwrap();
    let log = AccessLog::spawn(rx, LogFormat::Json, out).unwrap();
    sink.send(Event::Closed(tunnel()));
    sink.send(Event::Closed(denied()));
    drop(sink);
    log.join();
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["code"], "TCP_TUNNEL");
    assert_eq!(lines[0]["rule"], "pypi.org");
    assert_eq!(lines[1]["code"], "TCP_DENIED");
    assert_eq!(lines[1]["deny_reason"], "not_allowlisted");
}

#[test]
fn cloudwatch_gets_the_same_lines_and_is_released_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("access.log");
    let (feed, mut queue, stats) = Feed::channel(16);
    let (sink, rx) = EventSink::channel(16);
    let out = open(&LogTarget::File(path.clone()), &Reopen::default()).unwrap();
    let log = AccessLog::spawn_with(rx, LogFormat::Squid, out, Some(feed)).unwrap();
    sink.send(Event::Closed(tunnel()));
    sink.send(Event::Decided(decided()));
    sink.send(Event::Closed(denied()));
    drop(sink);
    log.join();
    let text = std::fs::read_to_string(&path).unwrap();
    let mut shipped = Vec::new();
    while let Ok(event) = queue.try_recv() {
        shipped.push((event.at, event.message));
    }
    let local: Vec<&str> = text.lines().collect();
    assert_eq!(shipped.len(), 2);
    assert_eq!(shipped[0], (tunnel().at, local[0].to_owned()));
    assert_eq!(shipped[1], (denied().at, local[1].to_owned()));
    assert!(queue.is_closed(), "the writer dropped its feed");
    assert_eq!(stats.counters().queued, 2);
}

#[test]
fn lines_are_flushed_while_senders_live() {
    let shared = Shared::default();
    let (sink, rx) = EventSink::channel(16);
    let log = AccessLog::spawn(rx, LogFormat::Squid, Box::new(shared.clone())).unwrap();
    sink.send(Event::Closed(tunnel()));
    let deadline = Instant::now() + Duration::from_secs(10);
    while shared.text().is_empty() {
        assert!(Instant::now() < deadline, "the line was never flushed");
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(shared.text().contains("TCP_TUNNEL/200"));
    assert!(shared.flushes() >= 1);
    let clone = sink.clone();
    drop(sink);
    let ended = log.finish(Duration::from_millis(50));
    assert_eq!(ended, None, "the writer ended while a sender lived");
    drop(clone);
}

#[test]
fn write_errors_are_counted_and_never_stop_the_writer() {
    let (sink, rx) = EventSink::channel(16);
    let log = AccessLog::spawn(rx, LogFormat::Squid, Box::new(Full)).unwrap();
    for _ in 0..3 {
        sink.send(Event::Closed(tunnel()));
    }
    let loss = log.loss();
    drop(sink);
    let stats = log.join();
    assert_eq!(stats.lines, 3);
    assert!(stats.errors >= 1, "{stats:?}");
    assert_eq!(stats.lost, 3, "{stats:?}");
    assert_eq!((loss.errors(), loss.lost()), (stats.errors, 3));
}

#[test]
fn a_disk_that_fills_mid_line_loses_only_the_lines_not_written_whole() {
    // Room for the first line and part of the second, as a disk filling up leaves.
    let first = {
        let mut line = String::new();
        egret_core::format::squid(&tunnel(), &mut line);
        line.len()
    };
    let shared = Shared::default();
    let out = Filling {
        room: first + 10,
        inner: shared.clone(),
    };
    let (sink, rx) = EventSink::channel(16);
    // One batch: the writer flushes only once the three lines are queued.
    for _ in 0..3 {
        sink.send(Event::Closed(tunnel()));
    }
    let log = AccessLog::spawn(rx, LogFormat::Squid, Box::new(out)).unwrap();
    drop(sink);
    let stats = log.join();
    assert_eq!(
        stats,
        WriteStats {
            lines: 3,
            errors: 1,
            lost: 2
        }
    );
    assert_eq!(
        shared.text().lines().count(),
        2,
        "one whole line and a partial one"
    );
}

#[test]
fn dropped_events_are_counted_once() {
    let (sink, _rx) = EventSink::channel(1);
    let mut counter = DropCounter::default();
    assert_eq!(counter.observe(sink.dropped()), None);
    for _ in 0..4 {
        sink.send(Event::Closed(tunnel()));
    }
    assert_eq!(counter.observe(sink.dropped()), Some(3));
    assert_eq!(counter.observe(sink.dropped()), None);
    sink.send(Event::Closed(tunnel()));
    assert_eq!(counter.observe(sink.dropped()), Some(1));
}

#[test]
fn the_drop_watch_releases_its_sender_when_stopped() {
    let (sink, rx) = EventSink::channel(1);
    let watch = watch_drops(sink.clone(), Duration::from_millis(1)).unwrap();
    let log = AccessLog::spawn(rx, LogFormat::Squid, Box::new(io::sink())).unwrap();
    drop(sink);
    watch.stop();
    assert!(log.finish(Duration::from_secs(10)).is_some());
}

/// A writer whose every write fails as a full disk does.
struct Full;

impl Write for Full {
    fn write(&mut self, _: &[u8]) -> io::Result<usize> {
        Err(io::Error::from(io::ErrorKind::StorageFull))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A writer that takes `room` bytes, then fails as a full disk does.
struct Filling {
    room: usize,
    inner: Shared,
}

impl Write for Filling {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        if self.room == 0 {
            return Err(io::Error::from(io::ErrorKind::StorageFull));
        }
        let n = bytes.len().min(self.room);
        self.room -= n;
        self.inner.write(&bytes[..n])
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// An in-memory writer shared with the test, counting flushes.
#[derive(Clone, Default)]
struct Shared(Arc<Mutex<(Vec<u8>, usize)>>);

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().0.clone()).unwrap()
    }

    fn flushes(&self) -> usize {
        self.0.lock().unwrap().1
    }
}

impl Write for Shared {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().0.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.lock().unwrap().1 += 1;
        Ok(())
    }
}

fn tunnel() -> Closed {
    Closed {
        session: 1,
        seq: 1,
        at: UnixMillis(1_732_540_800_123),
        duration: Duration::from_millis(245),
        client: "10.0.1.17:40000".parse().unwrap(),
        listener: ListenerKind::Explicit,
        original_dst: None,
        method: "CONNECT".into(),
        url: "pypi.org:443".into(),
        host: Some(Host::Name("pypi.org".into())),
        port: 443,
        status: 200,
        access: Some(Access::Allowed),
        rule: Some("pypi.org".into()),
        reason: Reason::Completed,
        detail: None,
        bytes_to_client: 5120,
        bytes_from_client: 900,
        upstream: Some("151.101.0.223:443".parse().unwrap()),
        content_type: None,
        sni: None,
        ech: false,
        dst_mismatch: false,
        vpc_endpoint: None,
    }
}

fn denied() -> Closed {
    Closed {
        at: UnixMillis(1_732_540_801_002),
        duration: Duration::ZERO,
        url: "evil.example:443".into(),
        host: Some(Host::Name("evil.example".into())),
        status: 403,
        access: Some(Access::Denied(DenyReason::NotAllowlisted)),
        rule: None,
        reason: Reason::Denied,
        detail: Some("not_allowlisted"),
        bytes_to_client: 145,
        upstream: None,
        content_type: Some("text/html".into()),
        ..tunnel()
    }
}

fn decided() -> Decided {
    Decided {
        session: 1,
        seq: 1,
        at: UnixMillis(1_732_540_800_000),
        client: "10.0.1.17:40000".parse().unwrap(),
        listener: ListenerKind::Explicit,
        host: Host::Name("pypi.org".into()),
        port: 443,
        access: Access::Allowed,
        rule: Some("pypi.org".into()),
    }
}
