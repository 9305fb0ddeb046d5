//! Model auto-selection: `"model": "auto"`, tier aliases (`tier:NAME`), the request's hints,
//! and token estimates. SKELETON: the interface the exchange uses; the helper writing this
//! module replaces every body below.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::HeaderMap;
use serde::Deserialize;

use crate::error::{ConfigError, GatewayError};
use crate::pricing::{Money, PriceTable};

/// `tiers` in `GATEWAY_CONFIG`: tier name -> its models, in order (the fallback chain).
pub type TiersConfig = BTreeMap<String, Vec<String>>;

/// `selection` in `GATEWAY_CONFIG`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {}

/// The request's hints (`x-gateway-quality`, `x-gateway-task`, `x-gateway-latency-budget-ms`,
/// `x-gateway-cost-budget-usd`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    pub quality: Option<f64>,
    pub task: Option<String>,
    pub latency_budget_ms: Option<u64>,
    pub cost_budget: Option<Money>,
}

impl Hints {
    /// Bad values are a 400 `invalid_value` naming the header.
    pub fn from_headers(_headers: &HeaderMap) -> Result<Hints, GatewayError> {
        Ok(Hints::default())
    }
}

/// Tokens a request is expected to use.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenEstimate {
    pub prompt_tokens: u64,
    pub max_output_tokens: u64,
}

/// The model chosen for a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub model: String,
    /// The models to try after it, in order, when all of its upstreams fail.
    pub chain: Vec<String>,
    /// Why: `tier:NAME`, `rule:quality`, `rule:task`, `rule:latency`, `rule:cost`, `default`.
    pub reason: String,
    /// No candidate fits the cost budget: the cheapest was chosen.
    pub over_budget: bool,
}

#[derive(Debug, Clone, Default)]
pub struct Selector {}

impl Selector {
    pub fn from_config(
        _tiers: Option<&TiersConfig>,
        _selection: &SelectionConfig,
    ) -> Result<Selector, ConfigError> {
        Ok(Selector {})
    }

    /// Whether `model` asks for a selection (`auto`, `tier:*`) rather than naming a model.
    pub fn is_selection(&self, model: &str) -> bool {
        model == "auto" || model.starts_with("tier:")
    }

    /// The default maximum output when a request sets none.
    pub fn default_max_output_tokens(&self) -> u64 {
        1024
    }

    /// Resolves `requested` (`auto` or `tier:NAME`). An unknown tier is a 400 naming `model`.
    pub fn select(
        &self,
        _prices: &PriceTable,
        requested: &str,
        _hints: &Hints,
        _estimate: &TokenEstimate,
    ) -> Result<Choice, GatewayError> {
        Ok(Choice {
            model: requested.to_string(),
            chain: Vec::new(),
            reason: "default".into(),
            over_budget: false,
        })
    }
}

/// Estimates a request body's tokens (`messages`, `prompt` or `input`; `max_tokens` /
/// `max_completion_tokens` / `max_output_tokens`, else `default_max_output`).
pub fn estimate_tokens(
    _body: &serde_json::Map<String, serde_json::Value>,
    default_max_output: u64,
) -> TokenEstimate {
    TokenEstimate {
        prompt_tokens: 0,
        max_output_tokens: default_max_output,
    }
}

/// `POST /v1/gateway/estimate`: the JSON answer, without calling any upstream.
pub fn estimate_answer(
    _selector: &Selector,
    _prices: &PriceTable,
    _body: &[u8],
    _headers: &HeaderMap,
) -> Result<Bytes, GatewayError> {
    Ok(Bytes::new())
}
