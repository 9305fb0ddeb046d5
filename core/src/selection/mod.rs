//! Model auto-selection: `"model": "auto"`, tier aliases (`tier:NAME`), the request's hints,
//! and token estimates.
//!
//! # Requests
//! - `tier:NAME` asks for a tier of `tiers`: its first model, the rest as the fallback chain.
//! - `auto` asks the rules of `selection`, in order; the first whose every condition holds for
//!   the request's [`Hints`] names the model (reason `rule:NAME`), else `default_model` does
//!   (reason `default`). Its chain is the rest of the first tier, in name order (`tiers` is a
//!   map, so the order it was written in is not kept), that lists the chosen model; a model in
//!   no tier has no chain.
//!
//! # Cost budget
//! `x-gateway-cost-budget-usd` excludes every candidate whose estimated cost for this request,
//! prompt plus maximum output ([`crate::pricing::Price::estimate`]), is above the budget. A
//! model without a price is never excluded: nothing proves it exceeds the budget.
//! - `tier:NAME`: the first fitting model of the tier, the fitting ones after it as the chain.
//! - `auto`: the candidates are, in order, the rule's pick and its tier chain, then (only when
//!   none of those fits) every other model the rules, `default_model` and the tiers name, in
//!   that order. The first fitting model is chosen, the fitting ones after it in the same group
//!   are the chain, so a budget never widens the chain of a pick that fits.
//! - No candidate fits: the cheapest is chosen, `over_budget` is set, and the chain is the other
//!   candidates cheapest first (every one is over budget; availability decides then).
//!
//! # Reasons ([`Choice::reason`])
//! `tier:NAME`; `rule:NAME` for a rule (the default rules are `rule:quality`, `rule:task`,
//! `rule:latency`, `rule:cost`; a configured rule is named by its `name`, else by the kind of
//! its only condition, else by its 1-based position: see [`RuleConfig`]); `default`; and
//! `requested` when [`Selector::select`] is handed a concrete model.
//!
//! # Configuration
//! ```json
//! "tiers": {
//!   "high-quality": ["gpt-4.1", "claude-sonnet-4-5"],
//!   "balanced": ["gemini-2.5-flash", "claude-sonnet-4-5"],
//!   "cost-effective": ["deepseek-v3.2", "gemini-2.5-flash"],
//!   "ultra-cheap": ["deepseek-v3.2"]
//! },
//! "selection": {
//!   "rules": [
//!     {"when": {"quality_at_least": 0.9}, "model": "gpt-4.1"},
//!     {"when": {"task_contains": ["reasoning", "analysis"]}, "model": "claude-sonnet-4-5"},
//!     {"when": {"latency_budget_below_ms": 500}, "model": "gemini-2.5-flash"},
//!     {"when": {"cost_budget_below_usd": "0.01"}, "model": "deepseek-v3.2"}
//!   ],
//!   "default_model": "gemini-2.5-flash",
//!   "default_max_output_tokens": 1024
//! }
//! ```
//! These are the defaults. `tiers`, when given, replaces the default tiers whole; so does
//! `rules` the default rules.

mod config;
mod estimate;
mod hints;
mod rules;
#[cfg(test)]
mod tests;

use bytes::Bytes;
use http::HeaderMap;

use crate::error::GatewayError;
use crate::pricing::{Money, PriceTable};

pub use config::{
    RuleConfig, SelectionConfig, TiersConfig, WhenConfig, DEFAULT_MAX_OUTPUT_TOKENS, DEFAULT_MODEL,
};
pub use hints::{
    COST_BUDGET_HEADER, LATENCY_BUDGET_HEADER, QUALITY_HEADER, TASK_HEADER, TASK_MAX_CHARS,
};

use rules::Rule;

/// The model name that asks for the rules.
pub const AUTO: &str = "auto";
/// The prefix of a model name that asks for a tier.
pub const TIER_PREFIX: &str = "tier:";

/// The request's hints (`x-gateway-quality`, `x-gateway-task`, `x-gateway-latency-budget-ms`,
/// `x-gateway-cost-budget-usd`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Hints {
    /// From 0 to 1.
    pub quality: Option<f64>,
    /// Trimmed, ASCII letters lowercased, at most [`TASK_MAX_CHARS`] characters, never empty.
    pub task: Option<String>,
    /// Above 0.
    pub latency_budget_ms: Option<u64>,
    pub cost_budget: Option<Money>,
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
    /// Why: `tier:NAME`, `rule:NAME` (`rule:quality`, `rule:task`, `rule:latency`,
    /// `rule:cost` by default), `default`, or `requested` for a concrete model.
    pub reason: String,
    /// No candidate fits the cost budget: the cheapest was chosen.
    pub over_budget: bool,
}

/// `tiers` and `selection`, validated: built once at start-up, asked per request.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    tiers: TiersConfig,
    rules: Vec<Rule>,
    default_model: String,
    default_max_output_tokens: u64,
    /// Every model the rules, the default and the tiers name, in that order, once each: where
    /// `auto` looks last for a model that fits a cost budget.
    named_models: Vec<String>,
}

impl Selector {
    /// Whether `model` asks for a selection (`auto`, `tier:*`) rather than naming a model.
    pub fn is_selection(&self, model: &str) -> bool {
        model == AUTO || model.starts_with(TIER_PREFIX)
    }

    /// The default maximum output when a request sets none.
    pub fn default_max_output_tokens(&self) -> u64 {
        self.default_max_output_tokens
    }

    /// The tiers: name (without `tier:`) -> models in order.
    pub fn tiers(&self) -> &TiersConfig {
        &self.tiers
    }
}

/// Estimates a request body's tokens, without a tokenizer (never fails, whatever the JSON).
///
/// The prompt is ceil(UTF-8 bytes / 4) of: `messages[].content` (a string, or the `text` of
/// its parts; images and audio are not counted) with each message's `name`, `tool_calls` and
/// `function_call`; `prompt` and `input` (strings, arrays of strings, token ids counted one
/// each, Responses API items read as messages); `instructions`; and the `tools` / `functions`
/// JSON. Each message adds 4 tokens and a conversation 3 for the reply's priming.
///
/// The output is `max_completion_tokens`, else `max_tokens`, else `max_output_tokens`, else
/// `default_max_output`, times `n` when it asks for several answers.
pub fn estimate_tokens(
    body: &serde_json::Map<String, serde_json::Value>,
    default_max_output: u64,
) -> TokenEstimate {
    estimate::estimate_tokens(body, default_max_output)
}

/// `POST /v1/gateway/estimate`: the JSON answer, without calling any upstream (the caller
/// has authenticated the request).
///
/// The body is a request body (`model` with `messages`, `prompt` or `input`, and optionally
/// `max_tokens` and the like) or `{"model", "prompt_tokens", "max_output_tokens"}`
/// (`prompt_tokens` wins when both are given); the hints are in `headers`. `model` is a model,
/// `auto` or `tier:NAME`. The answer:
/// ```json
/// {"model": "gpt-4.1", "requested": "auto", "selection": "rule:quality",
///  "chain": ["claude-sonnet-4-5"], "over_budget": false, "prompt_tokens": 1000,
///  "max_output_tokens": 500, "priced": true, "cost_usd": {"min": "0.008", "max": "0.024"}}
/// ```
/// `requested`, `selection` (the [`Choice::reason`]), `chain` and `over_budget` only for a
/// selection. `cost_usd.min` is the prompt alone, `max` the prompt with the whole output; both
/// are decimal strings of dollars so that no float rounds them. An unpriced model has
/// `"priced": false` and `"cost_usd": null`.
///
/// With `allow` (the calling key's `models`), the answer is the one its request would get:
/// a model or alias it may not use is a 404 `model_not_found`, and `auto` and tiers choose
/// among its models only.
///
/// Errors (400): a body that is not a JSON object, no `model`, none of `messages`, `prompt`,
/// `input` and `prompt_tokens` (`param` `messages`), a token count that is not a whole number
/// from 0 up, a bad hint header, an unknown tier.
pub fn estimate_answer(
    selector: &Selector,
    prices: &PriceTable,
    body: &[u8],
    headers: &HeaderMap,
    allow: Option<&crate::limits::ModelAllow>,
) -> Result<Bytes, GatewayError> {
    estimate::estimate_answer(selector, prices, body, headers, allow)
}
