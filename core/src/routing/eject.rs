//! Taking an upstream out of rotation for as long as it asked (a 429 or 503 with a retry
//! hint), longer each time it has to be taken out again soon after coming back: an upstream
//! whose limit refills slower than it says should not be hammered at every reset.
//!
//! The state is fixed-size: the end of the last ejection and the length of the current run.

use std::time::Duration;

use crate::time::Instant;

/// The shortest ejection. A zero hint says "retry now", but the upstream did just refuse a
/// request: sending it the very next one would likely be refused too, so it sits out about a
/// round trip, and a run of such refusals still grows (×2, ×3, ...) from there.
pub const MIN_EJECTION: Duration = Duration::from_millis(100);

/// One upstream's ejection record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ejection {
    /// The end of the latest ejection, kept after it passes to tell whether the next one
    /// comes soon after.
    end: Option<Instant>,
    /// Ejections in the current run, each started within `max` of the previous one's end.
    recent: u32,
    /// Ejections ever started (an extension of a running one is not a new one).
    count: u64,
}

impl Ejection {
    /// An upstream never ejected.
    pub fn new() -> Ejection {
        Ejection::default()
    }

    /// Ejects the upstream at `now` and returns when it comes back.
    ///
    /// The length is `min(max(hint or default, MIN_EJECTION) × n, max)`, where `n` counts
    /// this ejection and the run before it, each one starting within `max` of the previous
    /// one's end; a longer gap starts a new run. While still ejected, the end only moves
    /// later (never earlier) and the run does not grow: the concurrent requests refused
    /// together are one refusal, not several. A `max` of zero disables ejection.
    pub fn eject(
        &mut self,
        now: Instant,
        hint: Option<Duration>,
        default: Duration,
        max: Duration,
    ) -> Instant {
        let ongoing = self.until(now).is_some();
        if !ongoing {
            let chained = self.end.is_some_and(|end| now.since(end) <= max);
            self.recent = if chained {
                self.recent.saturating_add(1)
            } else {
                1
            };
            self.count = self.count.saturating_add(1);
        }
        let length = hint
            .unwrap_or(default)
            .max(MIN_EJECTION)
            .saturating_mul(self.recent.max(1))
            .min(max);
        let end = now.plus(length);
        let end = match self.end {
            Some(previous) if ongoing => previous.max(end),
            _ => end,
        };
        self.end = Some(end);
        end
    }

    /// Whether the upstream is out of rotation at `now`.
    pub fn is_ejected(&self, now: Instant) -> bool {
        self.until(now).is_some()
    }

    /// When the running ejection ends; `None` if none is running at `now`.
    pub fn until(&self, now: Instant) -> Option<Instant> {
        self.end.filter(|&end| end > now)
    }

    /// How many ejections were ever started (extensions excluded): for status and metrics.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// How many ejections the current run holds: the multiplier of the latest one.
    pub fn recent(&self) -> u32 {
        self.recent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFAULT: Duration = Duration::from_secs(5);
    const MAX: Duration = Duration::from_secs(60);

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    fn secs(s: u64) -> Option<Duration> {
        Some(Duration::from_secs(s))
    }

    #[test]
    fn a_fresh_upstream_is_not_ejected() {
        let e = Ejection::new();
        assert!(!e.is_ejected(at(0)));
        assert_eq!(e.until(at(0)), None);
        assert_eq!(e.count(), 0);
        assert_eq!(e.recent(), 0);
    }

    #[test]
    fn the_first_ejection_lasts_the_hint() {
        let mut e = Ejection::new();
        assert_eq!(e.eject(at(100), secs(7), DEFAULT, MAX), at(107));
        assert!(e.is_ejected(at(106)));
        assert_eq!(e.until(at(106)), Some(at(107)));
        assert_eq!(e.count(), 1);
    }

    #[test]
    fn without_a_hint_it_lasts_the_default() {
        let mut e = Ejection::new();
        assert_eq!(e.eject(at(100), None, DEFAULT, MAX), at(105));
    }

    #[test]
    fn it_ends_exactly_at_its_end() {
        let mut e = Ejection::new();
        e.eject(at(100), secs(7), DEFAULT, MAX);
        assert!(!e.is_ejected(at(107)));
        assert_eq!(e.until(at(107)), None);
        assert_eq!(e.until(at(200)), None);
    }

    #[test]
    fn ejected_again_soon_after_is_ejected_longer() {
        let mut e = Ejection::new();
        assert_eq!(e.eject(at(0), secs(5), DEFAULT, MAX), at(5));
        assert_eq!(e.eject(at(10), secs(5), DEFAULT, MAX), at(20));
        assert_eq!(e.eject(at(30), secs(5), DEFAULT, MAX), at(45));
        assert_eq!(e.recent(), 3);
        assert_eq!(e.count(), 3);
    }

    #[test]
    fn the_length_is_capped_at_the_maximum() {
        let mut e = Ejection::new();
        assert_eq!(e.eject(at(0), secs(3600), DEFAULT, MAX), at(60));
        let mut now = at(60);
        for _ in 0..50 {
            let end = e.eject(now, secs(20), DEFAULT, MAX);
            assert!(end.since(now) <= MAX);
            now = end;
        }
        assert_eq!(e.eject(now, secs(20), DEFAULT, MAX), now.plus(MAX));
    }

    #[test]
    fn a_gap_longer_than_the_maximum_resets_the_run() {
        let mut e = Ejection::new();
        e.eject(at(0), secs(5), DEFAULT, MAX);
        e.eject(at(10), secs(5), DEFAULT, MAX);
        assert_eq!(e.recent(), 2);
        // Ended at 20; 61 s later is past the 60 s window.
        assert_eq!(e.eject(at(81), secs(5), DEFAULT, MAX), at(86));
        assert_eq!(e.recent(), 1);
        assert_eq!(e.count(), 3);
    }

    #[test]
    fn a_gap_of_exactly_the_maximum_still_chains() {
        let mut e = Ejection::new();
        e.eject(at(0), secs(5), DEFAULT, MAX);
        assert_eq!(e.eject(at(65), secs(5), DEFAULT, MAX), at(75));
    }

    #[test]
    fn ejecting_while_ejected_extends_to_the_later_end() {
        let mut e = Ejection::new();
        e.eject(at(0), secs(10), DEFAULT, MAX);
        assert_eq!(e.eject(at(5), secs(20), DEFAULT, MAX), at(25));
        assert_eq!(e.until(at(24)), Some(at(25)));
    }

    #[test]
    fn ejecting_while_ejected_never_shortens() {
        let mut e = Ejection::new();
        e.eject(at(0), secs(30), DEFAULT, MAX);
        assert_eq!(e.eject(at(5), secs(1), DEFAULT, MAX), at(30));
        assert_eq!(e.eject(at(5), Some(Duration::ZERO), DEFAULT, MAX), at(30));
        assert!(e.is_ejected(at(29)));
    }

    #[test]
    fn concurrent_refusals_count_as_one_ejection() {
        let mut e = Ejection::new();
        for _ in 0..10 {
            e.eject(at(0), secs(5), DEFAULT, MAX);
        }
        assert_eq!(e.count(), 1);
        assert_eq!(e.recent(), 1);
        assert_eq!(e.until(at(0)), Some(at(5)));
    }

    #[test]
    fn a_zero_hint_still_ejects_for_the_minimum() {
        let mut e = Ejection::new();
        let end = e.eject(at(0), Some(Duration::ZERO), DEFAULT, MAX);
        assert_eq!(end, at(0).plus(MIN_EJECTION));
        assert!(e.is_ejected(at(0)));
        assert!(!e.is_ejected(end));
        assert_eq!(e.count(), 1);
    }

    #[test]
    fn repeated_zero_hints_grow_from_the_minimum() {
        let mut e = Ejection::new();
        let end = e.eject(at(0), Some(Duration::ZERO), DEFAULT, MAX);
        let end = e.eject(end, Some(Duration::ZERO), DEFAULT, MAX);
        assert_eq!(end, at(0).plus(MIN_EJECTION * 3));
    }

    #[test]
    fn a_short_hint_is_raised_to_the_minimum() {
        let mut e = Ejection::new();
        let end = e.eject(at(0), Some(Duration::from_millis(20)), DEFAULT, MAX);
        assert_eq!(end, at(0).plus(MIN_EJECTION));
    }

    #[test]
    fn a_zero_maximum_disables_ejection() {
        let mut e = Ejection::new();
        assert_eq!(e.eject(at(3), secs(30), DEFAULT, Duration::ZERO), at(3));
        assert!(!e.is_ejected(at(3)));
    }

    #[test]
    fn huge_hints_and_instants_saturate() {
        let mut e = Ejection::new();
        let end = e.eject(at(0), Some(Duration::MAX), Duration::MAX, Duration::MAX);
        assert_eq!(end, Instant::from_micros(u64::MAX));
        let end = e.eject(end, Some(Duration::MAX), Duration::MAX, Duration::MAX);
        assert_eq!(end, Instant::from_micros(u64::MAX));
    }
}
