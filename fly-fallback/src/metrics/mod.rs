//! `/metrics` on its own port (`METRICS_PORT`, default 9091): the core's tally in the
//! Prometheus text format, for Fly's scraper (declared in `fly.toml`'s `[metrics]`). It is never
//! served on the API port: what it shows (spend per key, upstream health) is for the operator.

mod encode;
mod serve;

pub use serve::serve;

use std::sync::Arc;

use gateway_core::Gateway;
use prometheus_client::registry::Registry;

use crate::shared::Shared;

/// The registry: one collector that reads the tally at each scrape (built once at start-up).
pub fn registry(gateway: Arc<Gateway>, shared: Arc<Shared>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(encode::TallyCollector { gateway, shared }));
    registry
}

/// The text of one scrape.
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}
