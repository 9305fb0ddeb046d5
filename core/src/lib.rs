//! gateway-core: every decision of ai-edge-gateway, an OpenAI-compatible AI gateway.
//!
//! Pure and target-agnostic: no IO, no clock, no randomness (the runtimes pass time and random
//! bytes in), no runtime crate in the dependency tree. It builds for wasm32 (the Cloudflare
//! Worker, the root crate of this workspace) and natively (`fly-fallback`).
//!
//! A runtime uses three things:
//! - [`Gateway`]: the settings and everything derived from them, built once at start-up;
//! - [`Exchange`]: one per request, a state machine that says what IO to do next and is told
//!   what happened (see [`exchange`] for the loop a runtime runs);
//! - [`Router`]: the state shared across requests, held by the runtime and lent to the
//!   exchange's calls.
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod analytics;
pub mod auth;
pub mod cache;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod exchange;
pub mod gateway;
pub mod geo;
pub mod headers;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod pricing;
pub mod request_id;
pub mod rewrite;
pub mod route;
pub mod router;
pub mod routing;
pub mod selection;
pub mod sse;
pub mod target;
pub mod time;
pub mod validate;

pub use config::Settings;
pub use error::{ConfigError, GatewayError, TransportError};
pub use exchange::{
    Action, Attempt, AttemptId, BodyEnd, BodyError, EndOfRelay, Exchange, Found, RelayMode,
    RequestParts, Response, ResponseBody, Store, UNREAD_BODY_DRAIN_BYTES, UNREAD_BODY_LINGER,
};
pub use gateway::{Gateway, VERSION};
pub use router::{Router, StoreChange};
pub use time::{Instant, Now, UnixMillis};
