//! Log events and batches of them within the limits of one `PutLogEvents` call: at most
//! 10,000 events and 1,048,576 bytes (each event's UTF-8 message plus 26 bytes), spanning at
//! most 24 hours, in chronological order, each event at most 256 KB.
//!
//! Pure values: no IO, no clock. The shipper fills a [`Batch`] until [`Batch::push`] hands an
//! event back, sends what [`Batch::take`] returns, and halves a batch the service refused
//! with [`split`].

use egret_core::UnixMillis;

/// The most events in one batch.
pub const MAX_EVENTS: usize = 10_000;
/// The most bytes in one batch, counting [`EVENT_OVERHEAD`] per event.
pub const MAX_BATCH_BYTES: usize = 1_048_576;
/// The bytes the service counts for each event on top of its message.
pub const EVENT_OVERHEAD: usize = 26;
/// The longest time between the earliest and the latest event of a batch.
pub const MAX_SPAN_MS: u64 = 24 * 60 * 60 * 1000;
/// The largest event, overhead included.
pub const MAX_EVENT_BYTES: usize = 256 * 1024;
/// What ends a message cut to fit [`MAX_EVENT_BYTES`].
pub const TRUNCATED: &str = " [truncated by egret]";

/// One log event: a line without its newline, and when it happened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogEvent {
    /// When the line's record ended.
    pub at: UnixMillis,
    /// The line, at most [`MAX_EVENT_BYTES`] with the overhead.
    pub message: String,
}

/// Events that fit one `PutLogEvents` call.
#[derive(Debug, Default)]
pub struct Batch {
    events: Vec<LogEvent>,
    bytes: usize,
    earliest: u64,
    latest: u64,
}

impl LogEvent {
    /// Returns an event for `message` (its trailing newline removed), cut at a character
    /// boundary and marked with [`TRUNCATED`] when it is larger than an event may be.
    #[must_use]
    pub fn new(at: UnixMillis, message: &str) -> LogEvent {
        let message = message.strip_suffix('\n').unwrap_or(message);
        let room = MAX_EVENT_BYTES - EVENT_OVERHEAD;
        if message.len() <= room {
            let message = if message.is_empty() { " " } else { message };
            return LogEvent {
                at,
                message: message.to_owned(),
            };
        }
        let mut end = room - TRUNCATED.len();
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let mut cut = String::with_capacity(end + TRUNCATED.len());
        cut.push_str(&message[..end]);
        cut.push_str(TRUNCATED);
        LogEvent { at, message: cut }
    }

    /// Returns the bytes the service counts for the event.
    #[must_use]
    pub fn size(&self) -> usize {
        self.message.len() + EVENT_OVERHEAD
    }
}

impl Batch {
    /// Adds an event, or hands it back when the batch would break a limit with it; an empty
    /// batch takes any event.
    pub fn push(&mut self, event: LogEvent) -> Result<(), LogEvent> {
        let at = event.at.0;
        if !self.events.is_empty() {
            let earliest = self.earliest.min(at);
            let latest = self.latest.max(at);
            if self.events.len() >= MAX_EVENTS
                || self.bytes + event.size() > MAX_BATCH_BYTES
                || latest - earliest > MAX_SPAN_MS
            {
                return Err(event);
            }
            self.earliest = earliest;
            self.latest = latest;
        } else {
            self.earliest = at;
            self.latest = at;
        }
        self.bytes += event.size();
        self.events.push(event);
        Ok(())
    }

    /// Returns the events in chronological order (those with equal times in the order they
    /// came), leaving the batch empty.
    pub fn take(&mut self) -> Vec<LogEvent> {
        self.bytes = 0;
        let mut events = std::mem::take(&mut self.events);
        events.sort_by_key(|e| e.at);
        events
    }

    /// Returns how many events the batch holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Returns whether the batch holds no event.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Returns the bytes the service counts for the batch.
    #[must_use]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// Returns the two halves of a batch, the earlier events first.
#[must_use]
pub fn split(mut events: Vec<LogEvent>) -> (Vec<LogEvent>, Vec<LogEvent>) {
    let later = events.split_off(events.len() / 2);
    (events, later)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_holds_at_most_ten_thousand_events() {
        let mut batch = Batch::default();
        for i in 0..MAX_EVENTS {
            assert_eq!(batch.push(event(1000, "x")), Ok(()), "event {i}");
        }
        assert_eq!(batch.push(event(1000, "y")), Err(event(1000, "y")));
        assert_eq!(batch.len(), MAX_EVENTS);
        assert_eq!(batch.take().len(), MAX_EVENTS);
        assert!(batch.is_empty());
        assert_eq!(batch.push(event(1000, "y")), Ok(()));
    }

    #[test]
    fn bytes_count_the_message_and_26_more_per_event() {
        // 1,048,576 = 4 * 262,144: four events of 262,118 message bytes fill a batch exactly.
        let big = "b".repeat(MAX_EVENT_BYTES - EVENT_OVERHEAD);
        let mut batch = Batch::default();
        for _ in 0..4 {
            batch.push(event(1, &big)).unwrap();
        }
        assert_eq!(batch.bytes(), MAX_BATCH_BYTES);
        assert!(batch.push(event(1, "c")).is_err(), "one byte over");

        let mut batch = Batch::default();
        let medium = "m".repeat(200_000);
        for _ in 0..5 {
            batch.push(event(1, &medium)).unwrap();
        }
        assert_eq!(batch.bytes(), 5 * 200_026);
        let rest = MAX_BATCH_BYTES - batch.bytes() - EVENT_OVERHEAD;
        let last = "d".repeat(rest);
        assert!(batch.push(event(1, &format!("{last}e"))).is_err());
        batch.push(event(1, &last)).unwrap();
        assert_eq!(batch.bytes(), MAX_BATCH_BYTES);
    }

    #[test]
    fn a_batch_spans_at_most_24_hours_either_way() {
        let start = 1_732_540_800_000;
        let mut batch = Batch::default();
        batch.push(event(start, "first")).unwrap();
        batch
            .push(event(start + MAX_SPAN_MS, "a day later"))
            .unwrap();
        assert!(batch.push(event(start + MAX_SPAN_MS + 1, "late")).is_err());
        assert!(batch.push(event(start - 1, "early")).is_err());
        batch.push(event(start + 5, "between")).unwrap();
        assert_eq!(batch.len(), 3);
    }

    #[test]
    fn events_leave_in_chronological_order_ties_as_they_came() {
        let mut batch = Batch::default();
        for (at, text) in [(30, "c"), (10, "a1"), (20, "b"), (10, "a2"), (30, "d")] {
            batch.push(event(at, text)).unwrap();
        }
        let events = batch.take();
        let order: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
        assert_eq!(order, ["a1", "a2", "b", "c", "d"]);
    }

    #[test]
    fn large_events_are_cut_with_a_marker_at_a_character_boundary() {
        let short = LogEvent::new(UnixMillis(1), "line\n");
        assert_eq!(short.message, "line");
        let room = MAX_EVENT_BYTES - EVENT_OVERHEAD;
        let exact = LogEvent::new(UnixMillis(1), &"e".repeat(room));
        assert_eq!(exact.size(), MAX_EVENT_BYTES);
        assert!(!exact.message.ends_with(TRUNCATED));

        // Three-byte characters: the cut falls inside one and moves back to its start.
        let long = "€".repeat(room);
        let cut = LogEvent::new(UnixMillis(1), &long);
        assert!(cut.size() <= MAX_EVENT_BYTES, "{}", cut.size());
        assert!(cut.size() > MAX_EVENT_BYTES - 3);
        assert!(cut.message.ends_with(TRUNCATED));
        assert!(
            cut.message
                .trim_end_matches(TRUNCATED)
                .chars()
                .all(|c| c == '€')
        );
        assert_eq!(LogEvent::new(UnixMillis(1), "").message, " ");
    }

    #[test]
    fn a_split_keeps_every_event_in_order() {
        let events: Vec<LogEvent> = (0..5).map(|i| event(i, &i.to_string())).collect();
        let (earlier, later) = split(events.clone());
        assert_eq!(earlier.len(), 2);
        assert_eq!(later.len(), 3);
        assert_eq!([earlier, later].concat(), events);
        let (none, one) = split(vec![event(1, "only")]);
        assert!(none.is_empty());
        assert_eq!(one.len(), 1);
    }

    fn event(at: u64, message: &str) -> LogEvent {
        LogEvent::new(UnixMillis(at), message)
    }
}
