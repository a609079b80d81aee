//! The session's timer table: one deadline per protocol timer, the earliest is the wake-up.

use std::time::Instant;

/// A protocol timer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// The request head must be complete by then (408).
    Header,
    /// Something must move by then: the next request on a kept-alive connection, the
    /// response, or tunnel traffic.
    Idle,
    /// DNS must answer by then.
    Resolve,
    /// The current connect attempt must succeed by then.
    Connect,
    /// The lingering close after an error reply ends then.
    Linger,
    /// The shutdown drain deadline.
    Drain,
}

const ALL: [Timer; 6] = [
    Timer::Header,
    Timer::Idle,
    Timer::Resolve,
    Timer::Connect,
    Timer::Linger,
    Timer::Drain,
];

/// Deadlines indexed by [`Timer`].
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    at: [Option<Instant>; ALL.len()],
}

impl Timers {
    /// Sets `timer` to fire at `at`.
    pub(crate) fn set(&mut self, timer: Timer, at: Instant) {
        self.at[timer as usize] = Some(at);
    }

    /// Disarms `timer`.
    pub(crate) fn clear(&mut self, timer: Timer) {
        self.at[timer as usize] = None;
    }

    /// Disarms every timer.
    pub(crate) fn clear_all(&mut self) {
        self.at = Default::default();
    }

    /// Returns whether `timer` is armed.
    pub(crate) fn is_set(&self, timer: Timer) -> bool {
        self.at[timer as usize].is_some()
    }

    /// Returns the earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.at.iter().flatten().min().copied()
    }

    /// Disarms and returns the earliest timer due at `now`, if any.
    pub(crate) fn pop_expired(&mut self, now: Instant) -> Option<Timer> {
        let (index, _) = self
            .at
            .iter()
            .enumerate()
            .filter_map(|(i, at)| at.filter(|at| *at <= now).map(|at| (i, at)))
            .min_by_key(|(_, at)| *at)?;
        self.at[index] = None;
        Some(ALL[index])
    }
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
