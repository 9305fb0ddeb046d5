//! ai-edge-gateway's Cloudflare Worker: the wasm32 crate that `worker-build` compiles.
//!
//! A thin driver around [`gateway_core`]: it converts requests and responses, calls upstreams
//! with `fetch`, reads and writes Workers KV, and streams bodies. Every decision is the core's.
//! Off wasm32 this crate is empty (the `worker` crate's JS-backed calls panic natively), so
//! native `cargo test` builds the conformance suite without it.

#[cfg(target_arch = "wasm32")]
mod edge;
