//! ai-edge-gateway: an OpenAI-compatible AI gateway.
//!
//! This crate is the **core**: pure, target-agnostic decisions (routing, validation, auth,
//! errors, header rules, stream observation, logging records). It performs no IO, reads no clock
//! and draws no random numbers; the runtimes pass time and randomness in. It builds for wasm32
//! (the Cloudflare Worker, whose adapter lives in [`edge`] behind `cfg(target_arch = "wasm32")`)
//! and for native targets (the `fly-fallback` binary).

pub mod auth;
pub mod cache;
pub mod config;
pub mod error;
pub mod gateway;
pub mod geo;
pub mod headers;
pub mod log;
pub mod request_id;
pub mod route;
pub mod sse;
pub mod validate;

#[cfg(target_arch = "wasm32")]
mod edge;

pub use config::Settings;
pub use error::GatewayError;
pub use gateway::{Admitted, Forward, Gateway, Plan, Reply, RequestHead, ResponseMode};
