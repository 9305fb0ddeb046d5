//! The pure pieces of choosing an upstream: how long an upstream asked to be left alone
//! ([`retry_hint`]), how fast it has been ([`ewma`]), whether it keeps failing ([`breaker`]),
//! whether it is sitting out a rate limit ([`eject`]), how long to wait before trying again
//! ([`backoff`]) and how far it is from the client ([`geo`]).
//!
//! Each is a small value or function with no knowledge of the others or of the router that
//! combines them: time and randomness come in as arguments, every piece of state is
//! fixed-size, so each can be tested exhaustively on its own and kept per upstream without
//! memory growing with traffic.

pub mod backoff;
pub mod breaker;
pub mod eject;
pub mod ewma;
pub mod geo;
pub mod retry_hint;

pub use backoff::backoff;
pub use breaker::{Breaker, BreakerSettings, BreakerState};
pub use eject::{Ejection, MIN_EJECTION};
pub use ewma::{Ewma, EWMA_WEIGHT};
pub use geo::{continent_centre, distance_km, fly_region};
pub use retry_hint::{is_insufficient_quota, parse_openai_duration, retry_hint, MAX_HINT};
