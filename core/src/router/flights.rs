//! Coalescing of identical concurrent cache misses.
//!
//! A leader relaying a recorded event stream makes its flight *live*: the head its client got
//! and the [`Tape`] of chunks relayed so far, which waiting streams follow as it grows instead
//! of waiting for the whole answer. A live flight stays joinable until it lands (its leader
//! always lands it, when its stream ends or its client goes away), however long the stream.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::cache::{CacheEntry, CacheKey, Tape};
use crate::time::Instant;

/// A leader's stream as followers see it.
#[derive(Debug)]
pub struct Live {
    pub status: u16,
    pub content_type: http::HeaderValue,
    pub tape: Arc<Tape>,
}

/// Identifies one flight, so a late report about an old flight never ends a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightId(u64);

/// What a request does after its lookup missed.
#[derive(Debug, Clone)]
pub enum Join {
    /// Call the upstream; land the flight when the answer is known.
    Lead(FlightId),
    /// Another request is calling the upstream for this key; wait until at most `until`.
    Wait { id: FlightId, until: Instant },
}

/// A waiter's view of its flight.
#[derive(Debug, Clone)]
pub enum FlightState {
    /// Still in the air until at most this instant.
    Pending { until: Instant },
    /// Its leader relays a stream that can be followed.
    Live(Arc<Live>),
    /// Landed with this answer (`None`: nothing to share).
    Landed(Option<Arc<CacheEntry>>),
    /// Gone (landed long ago, or replaced): nothing to share.
    Gone,
}

#[derive(Debug)]
enum Flight {
    Pending {
        id: FlightId,
        until: Instant,
        live: Option<Arc<Live>>,
    },
    Landed {
        id: FlightId,
        entry: Option<Arc<CacheEntry>>,
        until: Instant,
    },
}

#[derive(Debug, Default)]
pub struct Flights {
    map: BTreeMap<CacheKey, Flight>,
    next_id: u64,
    next_sweep: Instant,
}

impl Flights {
    fn new_id(&mut self) -> FlightId {
        self.next_id = self.next_id.wrapping_add(1);
        FlightId(self.next_id)
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Drops flights past their time, at most once a second (the map stays small: only
    /// flights in progress and those that landed in the last seconds).
    fn sweep(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        self.next_sweep = now.plus(Duration::from_secs(1));
        self.map.retain(|_, f| match f {
            Flight::Pending { live: Some(_), .. } => true,
            Flight::Pending { until, .. } | Flight::Landed { until, .. } => *until > now,
        });
    }

    pub fn join(&mut self, key: CacheKey, now: Instant, max_wait: Duration) -> Join {
        self.sweep(now);
        match self.map.get(&key) {
            Some(Flight::Pending {
                id, live: Some(_), ..
            }) => {
                return Join::Wait {
                    id: *id,
                    until: now.plus(max_wait),
                }
            }
            Some(Flight::Pending { id, until, .. }) if *until > now => {
                return Join::Wait {
                    id: *id,
                    until: *until,
                }
            }
            // Landed (its answer is for the requests that waited; later ones look in the
            // store), or stale: this request leads a new flight.
            _ => {}
        }
        let id = self.new_id();
        self.map.insert(
            key,
            Flight::Pending {
                id,
                until: now.plus(max_wait),
                live: None,
            },
        );
        Join::Lead(id)
    }

    pub fn state(&self, key: &CacheKey, id: FlightId, now: Instant) -> FlightState {
        match self.map.get(key) {
            Some(Flight::Pending {
                id: f,
                live: Some(live),
                ..
            }) if *f == id => FlightState::Live(live.clone()),
            Some(Flight::Pending { id: f, until, .. }) if *f == id && *until > now => {
                FlightState::Pending { until: *until }
            }
            Some(Flight::Landed { id: f, entry, .. }) if *f == id => {
                FlightState::Landed(entry.clone())
            }
            _ => FlightState::Gone,
        }
    }

    /// The leader's stream can be followed. Returns whether the flight is still this leader's
    /// (and its waiters must be woken).
    pub fn go_live(&mut self, key: &CacheKey, id: FlightId, stream: Arc<Live>) -> bool {
        match self.map.get_mut(key) {
            Some(Flight::Pending { id: f, live, .. }) if *f == id => {
                *live = Some(stream);
                true
            }
            _ => false,
        }
    }

    /// Returns whether a flight was landed (and its waiters must be woken).
    pub fn land(
        &mut self,
        key: CacheKey,
        id: FlightId,
        entry: Option<Arc<CacheEntry>>,
        linger_until: Instant,
    ) -> bool {
        let Some(f) = self.map.get_mut(&key) else {
            return false;
        };
        if !matches!(f, Flight::Pending { id: current, .. } if *current == id) {
            return false;
        }
        *f = Flight::Landed {
            id,
            entry,
            until: linger_until,
        };
        true
    }
}
