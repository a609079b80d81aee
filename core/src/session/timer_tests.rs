//! Unit tests of the timer table (a file of its own: tests read the real clock).

use super::*;
use std::time::Duration;

#[test]
fn expired_timers_pop_earliest_first() {
    let t0 = Instant::now();
    let mut timers = Timers::default();
    timers.set(Timer::Idle, t0 + Duration::from_secs(5));
    timers.set(Timer::Header, t0 + Duration::from_secs(2));
    timers.set(Timer::Drain, t0 + Duration::from_secs(9));
    assert_eq!(timers.next(), Some(t0 + Duration::from_secs(2)));
    assert_eq!(timers.pop_expired(t0 + Duration::from_secs(1)), None);
    let later = t0 + Duration::from_secs(6);
    assert_eq!(timers.pop_expired(later), Some(Timer::Header));
    assert_eq!(timers.pop_expired(later), Some(Timer::Idle));
    assert_eq!(timers.pop_expired(later), None);
    assert!(timers.is_set(Timer::Drain));
}
