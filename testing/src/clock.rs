//! The scenario's clock.

use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

/// A clock that moves only when told: the owner's deadlines are counted from it.
#[derive(Debug)]
pub struct VirtualClock(Mutex<DateTime<Utc>>);

impl VirtualClock {
    /// A clock at `at`.
    pub fn at(at: DateTime<Utc>) -> Self {
        VirtualClock(Mutex::new(at))
    }

    pub fn now(&self) -> DateTime<Utc> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves the clock forward by `by`; past the end of time it stays at the end.
    pub fn advance(&self, by: Duration) {
        let by = TimeDelta::from_std(by).unwrap_or(TimeDelta::MAX);
        let mut now = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        *now = now.checked_add_signed(by).unwrap_or(DateTime::<Utc>::MAX_UTC);
    }
}

impl Default for VirtualClock {
    /// Now, to the microsecond (what the database keeps).
    fn default() -> Self {
        let now = Utc::now();
        VirtualClock::at(DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_only_when_told() {
        let start = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let clock = VirtualClock::at(start);
        assert_eq!(clock.now(), start);
        assert_eq!(clock.now(), start);
        clock.advance(Duration::from_secs(30));
        clock.advance(Duration::from_millis(500));
        assert_eq!(clock.now(), start + TimeDelta::milliseconds(30_500));
    }

    #[test]
    fn stops_at_the_end_of_time() {
        let clock = VirtualClock::at(DateTime::<Utc>::MAX_UTC - TimeDelta::seconds(1));
        clock.advance(Duration::from_secs(3600));
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
        clock.advance(Duration::MAX);
        assert_eq!(clock.now(), DateTime::<Utc>::MAX_UTC);
    }

    #[test]
    fn starts_now_to_the_microsecond() {
        let before = Utc::now() - TimeDelta::microseconds(1);
        let now = VirtualClock::default().now();
        assert!(now >= before && now <= Utc::now(), "{now}");
        assert_eq!(now.timestamp_subsec_nanos() % 1_000, 0, "{now}");
    }
}
