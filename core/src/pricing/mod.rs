//! What a request costs: the price table (built in, overridable in `GATEWAY_CONFIG` `prices`)
//! and the arithmetic from the upstream's usage, in exact [`Money`].
//!
//! OpenAI counts cached prompt tokens inside `prompt_tokens` and reasoning tokens inside
//! `completion_tokens`: each token is priced once, at its own rate when the model has one
//! (`cached_input`, `cache_write`, `reasoning`), else at the input or output rate.

mod money;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use money::{Money, PICOS_PER_USD};

use crate::error::ConfigError;
use crate::sse::Usage;

const CATALOGUE: &str = include_str!("catalogue.json");

/// One model's prices as written in configuration: USD per million tokens.
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PriceConfig {
    pub input: f64,
    pub output: f64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
    /// Long-context tiers: above `above_prompt_tokens` prompt tokens the whole request is priced
    /// at the tier's rates (a rate the tier does not name is the base one).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tiers: Vec<TierConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TierConfig {
    pub above_prompt_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached_input: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning: Option<f64>,
}

#[derive(Deserialize)]
struct Catalogue {
    models: BTreeMap<String, PriceConfig>,
}

/// Rates in picodollars per token (= micro-dollars per million tokens).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rates {
    pub input: u64,
    pub output: u64,
    pub cached_input: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

/// One model's price, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Price {
    pub base: Rates,
    /// Ascending by threshold.
    pub tiers: Vec<(u64, Rates)>,
}

/// What a request cost, and how sure the figure is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cost {
    pub amount: Money,
    /// Token counts were estimated (a stream cut off before its usage), not reported.
    pub estimated: bool,
}

impl Price {
    /// The rates that apply to a request with this many prompt tokens.
    pub fn rates(&self, prompt_tokens: u64) -> &Rates {
        self.tiers
            .iter()
            .rev()
            .find(|(above, _)| prompt_tokens > *above)
            .map(|(_, r)| r)
            .unwrap_or(&self.base)
    }

    /// The exact cost of `usage`.
    pub fn cost(&self, usage: &Usage) -> Money {
        let r = self.rates(usage.prompt_tokens);
        let cached = usage.cached_tokens.min(usage.prompt_tokens);
        let write = usage
            .cache_write_tokens
            .min(usage.prompt_tokens.saturating_sub(cached));
        let fresh = usage.prompt_tokens - cached - write;
        let reasoning = usage.reasoning_tokens.min(usage.completion_tokens);
        let visible = usage.completion_tokens - reasoning;
        let t = |tokens: u64, rate: u64| u128::from(tokens) * u128::from(rate);
        Money::from_picos(
            t(fresh, r.input)
                + t(cached, r.cached_input)
                + t(write, r.cache_write)
                + t(visible, r.output)
                + t(reasoning, r.reasoning),
        )
    }

    /// The range an estimate gives: the prompt alone, and the prompt with `max_output` tokens
    /// of output.
    pub fn estimate(&self, prompt_tokens: u64, max_output: u64) -> (Money, Money) {
        let r = self.rates(prompt_tokens);
        let min = u128::from(prompt_tokens) * u128::from(r.input);
        let max = min + u128::from(max_output) * u128::from(r.output);
        (Money::from_picos(min), Money::from_picos(max))
    }
}

fn rate(setting: &str, what: &str, usd_per_million: f64) -> Result<u64, ConfigError> {
    Money::per_token_from_usd_per_million(usd_per_million).ok_or_else(|| {
        ConfigError::new(
            "GATEWAY_CONFIG",
            format!(
                "{setting}: {what} must be a price in USD per million tokens between 0 and 1000000"
            ),
        )
    })
}

fn price_of(model: &str, c: &PriceConfig) -> Result<Price, ConfigError> {
    let at = format!("prices.{model}");
    let input = rate(&at, "input", c.input)?;
    let output = rate(&at, "output", c.output)?;
    let opt = |what: &str, v: Option<f64>, or: u64| v.map_or(Ok(or), |v| rate(&at, what, v));
    let base = Rates {
        input,
        output,
        cached_input: opt("cached_input", c.cached_input, input)?,
        cache_write: opt("cache_write", c.cache_write, input)?,
        reasoning: opt("reasoning", c.reasoning, output)?,
    };
    let mut tiers = Vec::with_capacity(c.tiers.len());
    for t in &c.tiers {
        let at = format!("{at}.tiers[above_prompt_tokens={}]", t.above_prompt_tokens);
        let opt = |what: &str, v: Option<f64>, or: u64| v.map_or(Ok(or), |v| rate(&at, what, v));
        let input = opt("input", t.input, base.input)?;
        let output = opt("output", t.output, base.output)?;
        // A tier that raises input without naming its cached rate keeps the base discount's
        // rate: providers that price tiers name every rate, and the table says what it means.
        // Kept ordered by threshold as they are added (no sort code in the Worker's bundle).
        let at = tiers.partition_point(|(above, _)| *above <= t.above_prompt_tokens);
        tiers.insert(
            at,
            (
                t.above_prompt_tokens,
                Rates {
                    input,
                    output,
                    cached_input: opt("cached_input", t.cached_input, base.cached_input)?,
                    cache_write: opt("cache_write", t.cache_write, base.cache_write)?,
                    reasoning: opt("reasoning", t.reasoning, output)?,
                },
            ),
        );
    }
    if tiers.windows(2).any(|w| matches!(w, [a, b] if a.0 == b.0)) {
        return Err(ConfigError::new(
            "GATEWAY_CONFIG",
            format!("{at}: two tiers have the same above_prompt_tokens"),
        ));
    }
    Ok(Price { base, tiers })
}

/// Every model's price: the built-in catalogue with the configuration's entries over it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PriceTable {
    models: BTreeMap<String, Price>,
}

impl Default for PriceTable {
    fn default() -> PriceTable {
        PriceTable::builtin()
    }
}

impl PriceTable {
    /// The built-in catalogue (`core/src/pricing/catalogue.json`).
    pub fn builtin() -> PriceTable {
        // The catalogue is checked by a unit test; a broken one would price nothing rather
        // than take the gateway down.
        // From bytes, as the gateway reads all JSON (one parser in the Worker's bundle).
        let parsed: Catalogue = match serde_json::from_slice(CATALOGUE.as_bytes()) {
            Ok(c) => c,
            Err(_) => Catalogue {
                models: BTreeMap::new(),
            },
        };
        // Inserted one by one: collecting into a map would sort its entries first, and add
        // sort code to the Worker for entries that come sorted anyway.
        let mut models = BTreeMap::new();
        for (m, c) in &parsed.models {
            if let Ok(p) = price_of(m, c) {
                models.insert(m.clone(), p);
            }
        }
        PriceTable { models }
    }

    /// The catalogue with `overrides` (the configuration's `prices`) replacing or adding entries.
    pub fn with_overrides(
        overrides: &BTreeMap<String, PriceConfig>,
    ) -> Result<PriceTable, ConfigError> {
        let mut table = PriceTable::builtin();
        for (model, c) in overrides {
            if model.trim().is_empty() {
                return Err(ConfigError::new(
                    "GATEWAY_CONFIG",
                    "prices: a model name is empty",
                ));
            }
            table.models.insert(model.clone(), price_of(model, c)?);
        }
        Ok(table)
    }

    /// The price of `model`: its own entry, else the entry of the name without a provider
    /// prefix (`openai/gpt-4o`) or a snapshot date (`gpt-4o-2024-08-06`, `claude-x-20250929`).
    pub fn get(&self, model: &str) -> Option<&Price> {
        if let Some(p) = self.models.get(model) {
            return Some(p);
        }
        let bare = model.rsplit_once('/').map_or(model, |(_, m)| m);
        if let Some(p) = self.models.get(bare) {
            return Some(p);
        }
        self.models.get(strip_snapshot(bare)?)
    }

    /// The cost of `usage` on `model`; `None` when the model has no price (unpriced, never free).
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<Money> {
        self.get(model).map(|p| p.cost(usage))
    }

    pub fn models(&self) -> impl Iterator<Item = (&str, &Price)> {
        self.models.iter().map(|(m, p)| (m.as_str(), p))
    }
}

/// `name-YYYY-MM-DD` or `name-YYYYMMDD` without its date.
fn strip_snapshot(model: &str) -> Option<&str> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, date)) = model.rsplit_once('-') {
        if date.len() == 8 && digits(date) {
            return Some(head);
        }
    }
    // -YYYY-MM-DD
    let mut parts = model.rsplitn(4, '-');
    let (d, m, y, head) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (y.len() == 4 && m.len() == 2 && d.len() == 2 && digits(y) && digits(m) && digits(d))
        .then_some(head)
}
