//! The shared cache store's health: a small circuit breaker. One failure opens it for the
//! back-off period (a dead store must not add its timeout to every request); the first call after
//! that period is a probe, and its success closes it.

use std::time::Duration;

use crate::time::Instant;

/// A change in the store's health, worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreChange {
    /// The store failed; it is left alone for the back-off period.
    Down,
    /// The store answered again after failing.
    Up,
}

#[derive(Debug, Default)]
pub struct StoreHealth {
    resting_until: Option<Instant>,
    down: bool,
}

impl StoreHealth {
    pub fn usable(&self, now: Instant) -> bool {
        self.resting_until.is_none_or(|t| now >= t)
    }

    pub fn result(&mut self, ok: bool, now: Instant, backoff: Duration) -> Option<StoreChange> {
        if ok {
            self.resting_until = None;
            return std::mem::take(&mut self.down).then_some(StoreChange::Up);
        }
        self.resting_until = Some(now.plus(backoff));
        (!std::mem::replace(&mut self.down, true)).then_some(StoreChange::Down)
    }
}
