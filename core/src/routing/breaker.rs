//! A per-upstream circuit breaker: after a run of failures, stop sending an upstream traffic
//! for a while, then risk one request to find out whether it has recovered.
//!
//! The state is a handful of fixed-size fields, whatever the traffic: it remembers a count
//! and a deadline, never a list of requests.

use std::time::Duration;

use crate::time::Instant;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerSettings {
    /// Consecutive failures that open a closed breaker (0 is read as 1).
    pub failures: u32,
    /// How long the breaker first stays open.
    pub cooldown: Duration,
    /// The longest it stays open after repeated failed probes (read as `cooldown` if lower).
    pub max_cooldown: Duration,
}

/// What a breaker lets through at a given instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    /// Traffic flows.
    Closed,
    /// No traffic until `until`.
    Open {
        /// When the cooldown ends and the breaker turns half-open.
        until: Instant,
    },
    /// The cooldown has passed: one probe request may go (or is already out).
    HalfOpen,
}

/// One upstream's circuit breaker.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Breaker {
    /// Failures in a row while closed.
    consecutive: u32,
    /// Set while tripped (open or half-open): the end of the current cooldown.
    open_until: Option<Instant>,
    /// The length of the current cooldown, the base to double on a failed probe.
    cooldown: Duration,
    /// A half-open probe is out and has not reported.
    probing: bool,
}

impl Breaker {
    /// A closed breaker.
    pub fn new() -> Breaker {
        Breaker::default()
    }

    /// The state at `now`: an open breaker whose cooldown has passed is half-open.
    pub fn state(&self, now: Instant) -> BreakerState {
        match self.open_until {
            None => BreakerState::Closed,
            Some(until) if now < until => BreakerState::Open { until },
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether [`try_acquire`](Self::try_acquire) would succeed at `now`, without taking the
    /// half-open probe slot: for ranking upstreams before choosing one.
    pub fn allows(&self, now: Instant) -> bool {
        match self.state(now) {
            BreakerState::Closed => true,
            BreakerState::Open { .. } => false,
            BreakerState::HalfOpen => !self.probing,
        }
    }

    /// Takes permission to send one request at `now`. Half-open, it is granted once, then
    /// refused until that probe reports (or is [`release`](Self::release)d): a recovering
    /// upstream gets one request, not the whole backlog.
    pub fn try_acquire(&mut self, now: Instant) -> bool {
        let allowed = self.allows(now);
        if allowed && self.state(now) == BreakerState::HalfOpen {
            self.probing = true;
        }
        allowed
    }

    /// A request succeeded: the breaker closes (whatever state it was in, since the upstream
    /// just proved it answers) and the next trip starts again from the base cooldown.
    pub fn on_success(&mut self) {
        *self = Breaker::default();
    }

    /// A request failed at `now`. Closed, it counts towards `settings.failures` in a row and
    /// opens the breaker for `settings.cooldown` on reaching it. Half-open, the upstream is
    /// still failing: open again for twice the previous cooldown, up to `max_cooldown`.
    /// Still open, the failure is from a request sent before the trip and says nothing new:
    /// a burst of in-flight failures must not double the cooldown several times over.
    pub fn on_failure(&mut self, now: Instant, settings: &BreakerSettings) {
        // Never below the base: `clamp` below needs ordered bounds, and a maximum shorter than
        // the first cooldown can only mean "do not double".
        let max = settings.max_cooldown.max(settings.cooldown);
        match self.state(now) {
            BreakerState::Closed => {
                self.consecutive = self.consecutive.saturating_add(1);
                if self.consecutive >= settings.failures.max(1) {
                    self.trip(now, settings.cooldown.min(max));
                }
            }
            BreakerState::Open { .. } => {}
            BreakerState::HalfOpen => {
                let doubled = self
                    .cooldown
                    .saturating_mul(2)
                    .clamp(settings.cooldown, max);
                self.trip(now, doubled);
            }
        }
    }

    /// The half-open probe ended without a verdict (the client went away, the request was
    /// cancelled): let another request probe instead. Does nothing otherwise.
    pub fn release(&mut self) {
        self.probing = false;
    }

    /// When an open breaker will let a request through (possibly already past: it is
    /// half-open then). `None` when closed (traffic flows now) or while a half-open probe is
    /// out (it depends on the probe's verdict, not on a clock).
    pub fn available_at(&self) -> Option<Instant> {
        if self.probing {
            None
        } else {
            self.open_until
        }
    }

    fn trip(&mut self, now: Instant, cooldown: Duration) {
        self.consecutive = 0;
        self.cooldown = cooldown;
        self.open_until = Some(now.plus(cooldown));
        self.probing = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: BreakerSettings = BreakerSettings {
        failures: 3,
        cooldown: Duration::from_secs(10),
        max_cooldown: Duration::from_secs(60),
    };

    fn at(secs: u64) -> Instant {
        Instant::from_micros(secs * 1_000_000)
    }

    /// A breaker opened at `t` seconds with `SETTINGS`.
    fn opened_at(t: u64) -> Breaker {
        let mut b = Breaker::new();
        for _ in 0..SETTINGS.failures {
            b.on_failure(at(t), &SETTINGS);
        }
        b
    }

    #[test]
    fn a_new_breaker_is_closed_and_lets_everything_through() {
        let mut b = Breaker::new();
        assert_eq!(b.state(at(0)), BreakerState::Closed);
        assert_eq!(b.available_at(), None);
        for _ in 0..10 {
            assert!(b.allows(at(0)));
            assert!(b.try_acquire(at(0)));
        }
    }

    #[test]
    fn fewer_consecutive_failures_than_the_threshold_keep_it_closed() {
        let mut b = Breaker::new();
        b.on_failure(at(0), &SETTINGS);
        b.on_failure(at(1), &SETTINGS);
        assert_eq!(b.state(at(1)), BreakerState::Closed);
        assert!(b.try_acquire(at(1)));
    }

    #[test]
    fn the_threshold_of_consecutive_failures_opens_it_for_the_cooldown() {
        let mut b = opened_at(5);
        assert_eq!(b.state(at(5)), BreakerState::Open { until: at(15) });
        assert_eq!(b.available_at(), Some(at(15)));
        assert!(!b.allows(at(14)));
        assert!(!b.try_acquire(at(14)));
    }

    #[test]
    fn a_success_while_closed_resets_the_consecutive_count() {
        let mut b = Breaker::new();
        b.on_failure(at(0), &SETTINGS);
        b.on_failure(at(0), &SETTINGS);
        b.on_success();
        b.on_failure(at(0), &SETTINGS);
        b.on_failure(at(0), &SETTINGS);
        assert_eq!(b.state(at(0)), BreakerState::Closed);
        b.on_failure(at(0), &SETTINGS);
        assert!(matches!(b.state(at(0)), BreakerState::Open { .. }));
    }

    #[test]
    fn after_the_cooldown_exactly_one_probe_goes_through() {
        let mut b = opened_at(0);
        assert_eq!(b.state(at(10)), BreakerState::HalfOpen);
        assert!(b.allows(at(10)));
        assert!(b.try_acquire(at(10)));
        assert!(!b.allows(at(10)));
        assert!(!b.try_acquire(at(10)));
        assert!(!b.try_acquire(at(500)));
        assert_eq!(b.state(at(11)), BreakerState::HalfOpen);
        assert_eq!(b.available_at(), None);
    }

    #[test]
    fn allows_does_not_take_the_probe() {
        let mut b = opened_at(0);
        assert!(b.allows(at(10)));
        assert!(b.allows(at(10)));
        assert!(b.try_acquire(at(10)));
    }

    #[test]
    fn a_successful_probe_closes_it() {
        let mut b = opened_at(0);
        assert!(b.try_acquire(at(10)));
        b.on_success();
        assert_eq!(b.state(at(10)), BreakerState::Closed);
        assert_eq!(b.available_at(), None);
        assert!(b.try_acquire(at(10)));
        assert!(b.try_acquire(at(10)));
    }

    #[test]
    fn a_failed_probe_reopens_it_with_a_doubled_cooldown() {
        let mut b = opened_at(0);
        assert!(b.try_acquire(at(10)));
        b.on_failure(at(11), &SETTINGS);
        assert_eq!(b.state(at(11)), BreakerState::Open { until: at(31) });
        assert!(b.try_acquire(at(31)));
        b.on_failure(at(31), &SETTINGS);
        assert_eq!(b.state(at(31)), BreakerState::Open { until: at(71) });
    }

    #[test]
    fn the_doubled_cooldown_is_bounded_by_the_maximum() {
        let mut b = opened_at(0);
        let mut now = at(10);
        for _ in 0..40 {
            assert!(b.try_acquire(now));
            b.on_failure(now, &SETTINGS);
            now = b.available_at().unwrap();
        }
        let before = now;
        assert!(b.try_acquire(now));
        b.on_failure(now, &SETTINGS);
        assert_eq!(b.available_at(), Some(before.plus(SETTINGS.max_cooldown)));
    }

    #[test]
    fn a_success_after_backing_off_resets_the_cooldown_to_the_base() {
        let mut b = opened_at(0);
        assert!(b.try_acquire(at(10)));
        b.on_failure(at(10), &SETTINGS);
        assert!(b.try_acquire(at(30)));
        b.on_success();
        for _ in 0..SETTINGS.failures {
            b.on_failure(at(100), &SETTINGS);
        }
        assert_eq!(b.state(at(100)), BreakerState::Open { until: at(110) });
    }

    #[test]
    fn failures_from_requests_sent_before_the_trip_do_not_extend_it() {
        let mut b = opened_at(0);
        for _ in 0..5 {
            b.on_failure(at(3), &SETTINGS);
        }
        assert_eq!(b.state(at(3)), BreakerState::Open { until: at(10) });
        assert!(b.try_acquire(at(10)));
        b.on_failure(at(10), &SETTINGS);
        assert_eq!(b.available_at(), Some(at(30)));
    }

    #[test]
    fn releasing_a_probe_lets_another_through() {
        let mut b = opened_at(0);
        assert!(b.try_acquire(at(10)));
        assert!(!b.try_acquire(at(10)));
        b.release();
        assert_eq!(b.available_at(), Some(at(10)));
        assert!(b.try_acquire(at(10)));
        assert!(!b.try_acquire(at(10)));
    }

    #[test]
    fn release_without_a_probe_out_changes_nothing() {
        let mut closed = Breaker::new();
        closed.release();
        assert_eq!(closed, Breaker::new());
        let mut open = opened_at(0);
        let before = open.clone();
        open.release();
        assert_eq!(open, before);
        assert!(!open.try_acquire(at(5)));
    }

    #[test]
    fn a_zero_threshold_is_read_as_one() {
        let settings = BreakerSettings {
            failures: 0,
            ..SETTINGS
        };
        let mut b = Breaker::new();
        assert!(b.try_acquire(at(0)));
        b.on_failure(at(0), &settings);
        assert_eq!(b.state(at(0)), BreakerState::Open { until: at(10) });
    }

    #[test]
    fn a_maximum_below_the_base_cooldown_disables_doubling() {
        let settings = BreakerSettings {
            failures: 1,
            cooldown: Duration::from_secs(10),
            max_cooldown: Duration::from_secs(1),
        };
        let mut b = Breaker::new();
        b.on_failure(at(0), &settings);
        assert_eq!(b.available_at(), Some(at(10)));
        assert!(b.try_acquire(at(10)));
        b.on_failure(at(10), &settings);
        assert_eq!(b.available_at(), Some(at(20)));
    }

    #[test]
    fn huge_cooldowns_saturate_instead_of_overflowing() {
        let settings = BreakerSettings {
            failures: 1,
            cooldown: Duration::MAX,
            max_cooldown: Duration::MAX,
        };
        let mut b = Breaker::new();
        b.on_failure(at(1), &settings);
        assert_eq!(b.available_at(), Some(Instant::from_micros(u64::MAX)));
        assert!(!b.allows(at(1_000_000)));
        let mut c = Breaker::new();
        c.on_failure(Instant::from_micros(u64::MAX), &settings);
        assert!(c.try_acquire(Instant::from_micros(u64::MAX)));
        c.on_failure(Instant::from_micros(u64::MAX), &settings);
        assert_eq!(
            c.state(Instant::from_micros(u64::MAX)),
            BreakerState::HalfOpen
        );
    }

    #[test]
    fn the_consecutive_count_saturates() {
        let settings = BreakerSettings {
            failures: u32::MAX,
            ..SETTINGS
        };
        let mut b = Breaker {
            consecutive: u32::MAX - 1,
            ..Breaker::new()
        };
        b.on_failure(at(0), &settings);
        assert!(matches!(b.state(at(0)), BreakerState::Open { .. }));
    }
}
