//! Time as the core sees it: always passed in by the runtime, never read here.
//!
//! Two kinds that must not be mixed, so they are two types:
//! - [`Instant`]: a monotonic reading for deadlines and durations (microseconds since an origin
//!   the runtime chose: process start natively, the Unix epoch on the Worker, whose only clock is
//!   `Date.now()`);
//! - [`UnixMillis`]: wall-clock time for what leaves the process (log timestamps, cache entry
//!   ages and expiries, which other machines read).

use std::time::Duration;

/// A monotonic instant, in microseconds since the runtime's origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Instant(u64);

impl Instant {
    pub const fn from_micros(us: u64) -> Instant {
        Instant(us)
    }

    /// From a millisecond reading with a fractional part (`Date.now()`, `performance.now()`).
    pub fn from_millis_f64(ms: f64) -> Instant {
        if ms.is_finite() && ms > 0.0 {
            Instant((ms * 1000.0) as u64)
        } else {
            Instant(0)
        }
    }

    pub const fn as_micros(self) -> u64 {
        self.0
    }

    /// Time from `earlier` to `self`; zero if `earlier` is later (a clock that stepped back).
    pub fn since(self, earlier: Instant) -> Duration {
        Duration::from_micros(self.0.saturating_sub(earlier.0))
    }

    pub fn plus(self, d: Duration) -> Instant {
        Instant(
            self.0
                .saturating_add(u64::try_from(d.as_micros()).unwrap_or(u64::MAX)),
        )
    }

    /// Time left until `self` at `now`; zero once it has passed.
    pub fn remaining(self, now: Instant) -> Duration {
        self.since(now)
    }
}

/// Wall-clock time: milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct UnixMillis(pub u64);

impl UnixMillis {
    pub fn from_f64(ms: f64) -> UnixMillis {
        if ms.is_finite() && ms > 0.0 {
            UnixMillis(ms as u64)
        } else {
            UnixMillis(0)
        }
    }

    pub const fn as_millis(self) -> u64 {
        self.0
    }
}

/// One reading of both clocks, taken by the runtime when something happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Now {
    pub instant: Instant,
    pub unix: UnixMillis,
}

/// A duration in milliseconds as logs show it: fractional, rounded to the microsecond.
pub fn millis_f64(d: Duration) -> f64 {
    (d.as_micros() as f64) / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_never_go_negative() {
        let a = Instant::from_micros(5_000);
        let b = Instant::from_micros(2_000);
        assert_eq!(a.since(b), Duration::from_millis(3));
        assert_eq!(b.since(a), Duration::ZERO);
        assert_eq!(
            a.plus(Duration::from_millis(1)),
            Instant::from_micros(6_000)
        );
        assert_eq!(
            Instant::from_micros(u64::MAX)
                .plus(Duration::MAX)
                .as_micros(),
            u64::MAX
        );
    }

    #[test]
    fn odd_clock_readings_become_zero_not_garbage() {
        assert_eq!(Instant::from_millis_f64(f64::NAN), Instant::from_micros(0));
        assert_eq!(Instant::from_millis_f64(-3.0), Instant::from_micros(0));
        assert_eq!(Instant::from_millis_f64(1.5).as_micros(), 1_500);
        assert_eq!(UnixMillis::from_f64(f64::INFINITY), UnixMillis(0));
        assert_eq!(millis_f64(Duration::from_micros(1_234)), 1.234);
    }
}
