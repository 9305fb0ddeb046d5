//! State shared across requests, held by the runtime (behind a mutex natively, one per isolate on
//! the Worker) and consulted by each [`crate::Exchange`] with the time passed in.
//!
//! Today it holds the response cache's shared state:
//! - **flights**: identical concurrent misses make one upstream call. The first miss for a key
//!   leads; later ones wait for its answer. A finished flight lingers briefly so a request that
//!   arrives just after it (before the store has the entry) is answered from it instead of
//!   starting a second call.
//! - **store health**: after a failure of the shared store (Redis, Workers KV), the store is left
//!   alone for a back-off period, so a dead store costs requests nothing.
//!
//! Next it will hold the upstreams' health, latency averages and breakers.
//!
//! # What the runtime does
//! - Calls the exchange's methods that take `&mut Router` while holding it (briefly: no IO).
//! - After any such call, checks [`Router::take_wakeup`]: when true, wakes every request parked
//!   on [`crate::Action::AwaitFlight`] (they re-check their flight; spurious wakes are harmless).
//! - Reports the outcome of shared-store calls with [`Router::store_result`].

mod flights;
mod store;

use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheEntry, CacheKey};
use crate::time::Instant;

pub use flights::{FlightId, FlightState, Join};
pub use store::StoreChange;

use flights::Flights;
use store::StoreHealth;

/// How long a finished flight stays visible to late arrivals and slow waiters.
pub const FLIGHT_LINGER: Duration = Duration::from_secs(2);
/// How long the shared store is left alone after a failure.
pub const STORE_BACKOFF: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
pub struct Router {
    flights: Flights,
    store: StoreHealth,
    wakeup: bool,
}

impl Router {
    pub fn new() -> Router {
        Router::default()
    }

    /// A request's identical miss: lead a flight, wait for the current one, or take its answer.
    /// `max_wait` bounds how long a leader may keep others waiting.
    pub fn join(&mut self, key: CacheKey, now: Instant, max_wait: Duration) -> Join {
        self.flights.join(key, now, max_wait)
    }

    /// The state of the flight a waiter waits on.
    pub fn flight(&self, key: &CacheKey, id: FlightId, now: Instant) -> FlightState {
        self.flights.state(key, id, now)
    }

    /// A leader's flight is over: `entry` is its answer to share (`None`: nothing to share, the
    /// waiters call the upstream themselves).
    pub fn land(
        &mut self,
        key: CacheKey,
        id: FlightId,
        entry: Option<Arc<CacheEntry>>,
        now: Instant,
    ) {
        if self.flights.land(key, id, entry, now.plus(FLIGHT_LINGER)) {
            self.wakeup = true;
        }
    }

    /// Whether parked waiters must be woken (and clears the flag).
    pub fn take_wakeup(&mut self) -> bool {
        std::mem::take(&mut self.wakeup)
    }

    /// Number of flights tracked (in progress or lingering).
    pub fn flights_len(&self) -> usize {
        self.flights.len()
    }

    /// Whether the shared store may be used now.
    pub fn store_usable(&self, now: Instant) -> bool {
        self.store.usable(now)
    }

    /// The outcome of a shared-store call. Returns a change worth one log line (down, back up).
    pub fn store_result(&mut self, ok: bool, now: Instant) -> Option<StoreChange> {
        self.store.result(ok, now, STORE_BACKOFF)
    }
}

#[cfg(test)]
mod tests;
