//! What the same traffic would have cost elsewhere: all on one model, or split across models
//! by percent shares, each model's tokens priced at its own rates.
//!
//! The traffic is the logged requests' own token counts (prompt, cached, completion,
//! reasoning), priced request by request (a long-context tier applies per request), or, with
//! `--what-if-tokens N`, N tokens. With `--one-price` every token is priced at the model's
//! input price, the design's own arithmetic. Cache hits cost nothing on any model and requests
//! without a price have no as-routed figure to compare with, so both are left out of it.

use std::collections::BTreeMap;

use gateway_core::pricing::{Money, Price, PriceTable, Rates};
use gateway_core::sse::Usage;

use super::num::{fraction, per_million, BASIS};

/// The models of the design's price table, always shown.
pub const DESIGN_MODELS: [&str; 4] = [
    "gpt-4.1",
    "claude-sonnet-4-5",
    "gemini-2.5-flash",
    "deepseek-v3.2",
];

/// The baseline of `--what-if-tokens` when none is given: the design's.
pub const DESIGN_BASELINE: &str = "gpt-4.1";

/// A `--what-if` argument.
#[derive(Debug, Clone, PartialEq)]
pub enum WhatIfSpec {
    /// `model=NAME`: all the traffic on NAME.
    Model(String),
    /// `mix=M:PCT,...`.
    Mix(Mix),
}

/// A tier mix: models and their shares of the traffic in basis points (summing to 10,000).
#[derive(Debug, Clone, PartialEq)]
pub struct Mix {
    /// As given (without `mix=`).
    pub spec: String,
    pub shares: Vec<(String, u32)>,
}

pub fn parse_spec(s: &str) -> Result<WhatIfSpec, String> {
    let bad = || format!("--what-if '{s}': expected model=NAME or mix=MODEL:PCT,MODEL:PCT,...");
    let (kind, value) = s.split_once('=').ok_or_else(bad)?;
    match kind.trim() {
        "model" if !value.trim().is_empty() => Ok(WhatIfSpec::Model(value.trim().to_string())),
        "model" => Err(bad()),
        "mix" => parse_mix(value).map(WhatIfSpec::Mix),
        _ => Err(bad()),
    }
}

/// A percentage with at most two decimals, in basis points: `5` → 500, `12.5` → 1250.
fn parse_percent(s: &str) -> Option<u32> {
    let (whole, frac) = s.split_once('.').unwrap_or((s, ""));
    let digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || whole.len() > 3 || frac.len() > 2 || !digits(whole) || !digits(frac) {
        return None;
    }
    let w: u32 = whole.parse().ok()?;
    let f: u32 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    let bp = w * 100 + if frac.len() == 1 { f * 10 } else { f };
    (bp <= BASIS).then_some(bp)
}

/// Basis points as a percentage: 5500 → `55`, 9990 → `99.9`, 1234 → `12.34`.
pub fn percent(bp: u32) -> String {
    let s = format!("{}.{:02}", bp / 100, bp % 100);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// `gpt-4.1:5,claude-sonnet-4-5:10,...`: percent shares summing to 100.
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let mut shares: Vec<(String, u32)> = Vec::new();
    for part in s.split(',') {
        let part = part.trim();
        // The share is after the last colon: a model name may hold one (`llama3:8b`).
        let (model, pct) = part
            .rsplit_once(':')
            .map(|(m, p)| (m.trim(), p.trim()))
            .filter(|(m, _)| !m.is_empty())
            .ok_or_else(|| format!("mix '{s}': '{part}' is not MODEL:PERCENT"))?;
        let bp = parse_percent(pct).ok_or_else(|| {
            format!("mix '{s}': '{pct}' is not a percentage (0 to 100, at most 2 decimals)")
        })?;
        if shares.iter().any(|(m, _)| m == model) {
            return Err(format!("mix '{s}': {model} is given twice"));
        }
        shares.push((model.to_string(), bp));
    }
    let sum: u32 = shares.iter().map(|(_, bp)| bp).sum();
    if sum != BASIS {
        return Err(format!(
            "mix '{s}': the shares add up to {}%, not 100%",
            percent(sum)
        ));
    }
    Ok(Mix {
        spec: s.trim().to_string(),
        shares,
    })
}

/// What the scenarios are compared with.
#[derive(Debug, Clone, PartialEq)]
pub enum Baseline {
    /// The logged cost of the traffic.
    Routed,
    /// All of the traffic on this model.
    Model(String),
}

/// The traffic the scenarios price.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Traffic {
    /// `Some(N)`: N tokens of `--what-if-tokens`, not logs.
    pub synthetic_tokens: Option<u64>,
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    /// Left out: answered from the gateway's cache (free on any model).
    pub left_out_cache_hits: u64,
    /// Left out: no logged price to compare with (`unpriced`, or tokens without `cost_usd`).
    pub left_out_unpriced: u64,
}

/// One model's part of a mix: its share and what that share costs.
#[derive(Debug, Clone, PartialEq)]
pub struct MixPart {
    pub model: String,
    pub share_bp: u32,
    pub input_per_m: Money,
    pub output_per_m: Money,
    /// `share × (the traffic all on the model)`, rounded to the picodollar.
    pub cost: Money,
}

/// A mix, priced, with its arithmetic spelled out.
#[derive(Debug, Clone, PartialEq)]
pub struct MixResult {
    pub spec: String,
    pub parts: Vec<MixPart>,
    /// The blended rates: Σ share × rate.
    pub input_per_m: Money,
    pub output_per_m: Money,
    pub cost: Money,
    /// `0.05×8 + 0.10×15 + ... = $2.985 per M input tokens`.
    pub input_arithmetic: String,
    /// `None` with `--one-price` (every token at the input price).
    pub output_arithmetic: Option<String>,
    /// `0.05×$8 + ... = $2.985`: the traffic's cost.
    pub cost_arithmetic: String,
}

/// The scenarios, accumulated request by request.
#[derive(Debug, Clone)]
pub struct WhatIf {
    pub one_price: bool,
    pub baseline: Baseline,
    /// Every model priced all-on: the design's, `model=`, the mixes' and the baseline's.
    models: Vec<(String, Price)>,
    costs: Vec<Money>,
    pub mixes: Vec<Mix>,
    pub traffic: Traffic,
    /// The logged cost of the traffic, and by model.
    pub routed: Money,
    pub routed_by_model: BTreeMap<String, Money>,
}

/// `Σ bp × picos / 10000`, rounded half up once at the end.
fn blend(terms: impl Iterator<Item = (u32, u128)>) -> Money {
    let sum: u128 = terms.map(|(bp, p)| u128::from(bp).saturating_mul(p)).sum();
    let basis = u128::from(BASIS);
    Money::from_picos(sum / basis + u128::from(sum % basis >= basis - sum % basis))
}

impl WhatIf {
    /// Fails, naming it, when a model has no price.
    pub fn new(
        table: &PriceTable,
        specs: &[WhatIfSpec],
        baseline: Baseline,
        one_price: bool,
    ) -> Result<WhatIf, String> {
        let mut names: Vec<String> = DESIGN_MODELS.iter().map(|m| m.to_string()).collect();
        let mut mixes = Vec::new();
        for s in specs {
            match s {
                WhatIfSpec::Model(m) => names.push(m.clone()),
                WhatIfSpec::Mix(mix) => {
                    names.extend(mix.shares.iter().map(|(m, _)| m.clone()));
                    mixes.push(mix.clone());
                }
            }
        }
        if let Baseline::Model(m) = &baseline {
            names.push(m.clone());
        }
        let mut models: Vec<(String, Price)> = Vec::new();
        for name in names {
            if models.iter().any(|(m, _)| *m == name) {
                continue;
            }
            let price = table.get(&name).ok_or_else(|| {
                format!("no price for model '{name}' (add it to `prices` in --config)")
            })?;
            models.push((name, price.clone()));
        }
        Ok(WhatIf {
            one_price,
            baseline,
            costs: vec![Money::ZERO; models.len()],
            models,
            mixes,
            traffic: Traffic::default(),
            routed: Money::ZERO,
            routed_by_model: BTreeMap::new(),
        })
    }

    /// What `usage` costs on `price`: at its rates, or every token at the input rate.
    fn price(&self, price: &Price, usage: &Usage) -> Money {
        if self.one_price {
            let tokens = u128::from(usage.prompt_tokens) + u128::from(usage.completion_tokens);
            let rate = price.rates(usage.prompt_tokens).input;
            Money::from_picos(tokens * u128::from(rate))
        } else {
            price.cost(usage)
        }
    }

    /// Adds one logged request: `routed` is its logged cost and model, `None` when it has none
    /// to compare with.
    pub fn add_request(&mut self, usage: &Usage, cache_hit: bool, routed: Option<(&str, Money)>) {
        if cache_hit {
            self.traffic.left_out_cache_hits += 1;
            return;
        }
        let Some((model, cost)) = routed else {
            self.traffic.left_out_unpriced += 1;
            return;
        };
        let t = &mut self.traffic;
        t.requests += 1;
        t.prompt_tokens = t.prompt_tokens.saturating_add(usage.prompt_tokens);
        t.cached_tokens = t.cached_tokens.saturating_add(usage.cached_tokens);
        t.completion_tokens = t.completion_tokens.saturating_add(usage.completion_tokens);
        t.reasoning_tokens = t.reasoning_tokens.saturating_add(usage.reasoning_tokens);
        self.routed += cost;
        *self
            .routed_by_model
            .entry(model.to_string())
            .or_insert(Money::ZERO) += cost;
        for i in 0..self.models.len() {
            let c = self
                .models
                .get(i)
                .map_or(Money::ZERO, |(_, p)| self.price(p, usage));
            if let Some(sum) = self.costs.get_mut(i) {
                *sum += c;
            }
        }
    }

    /// Prices `n` tokens (the design's "1M tokens"): prompt tokens, so at the input price.
    pub fn add_tokens(&mut self, n: u64) {
        let usage = Usage {
            prompt_tokens: n,
            total_tokens: n,
            ..Usage::default()
        };
        self.traffic.synthetic_tokens =
            Some(self.traffic.synthetic_tokens.unwrap_or(0).saturating_add(n));
        self.traffic.prompt_tokens = self.traffic.prompt_tokens.saturating_add(n);
        let costs: Vec<Money> = self
            .models
            .iter()
            .map(|(_, p)| self.price(p, &usage))
            .collect();
        for (sum, c) in self.costs.iter_mut().zip(costs) {
            *sum += c;
        }
    }

    /// Each model, with the traffic's cost all on it, in the order given.
    pub fn all_on(&self) -> impl Iterator<Item = (&str, &Rates, Money)> {
        self.models
            .iter()
            .zip(&self.costs)
            .map(|((m, p), c)| (m.as_str(), &p.base, *c))
    }

    pub fn cost_on(&self, model: &str) -> Option<Money> {
        self.all_on()
            .find(|(m, _, _)| *m == model)
            .map(|(_, _, c)| c)
    }

    /// The figure the scenarios are compared with, and its label.
    pub fn baseline_cost(&self) -> (String, Money) {
        match &self.baseline {
            Baseline::Routed => ("as routed".into(), self.routed),
            Baseline::Model(m) => (
                format!("all on {m}"),
                self.cost_on(m).unwrap_or(Money::ZERO),
            ),
        }
    }

    /// Prices a mix: each share of the traffic at its model's rates.
    pub fn mix(&self, mix: &Mix) -> MixResult {
        let mut parts = Vec::with_capacity(mix.shares.len());
        for (model, bp) in &mix.shares {
            let (rates, all) = self
                .all_on()
                .find(|(m, _, _)| m == model)
                .map_or((None, Money::ZERO), |(_, r, c)| (Some(*r), c));
            let (input, output) = rates.map_or((0, 0), |r| (r.input, r.output));
            parts.push(MixPart {
                model: model.clone(),
                share_bp: *bp,
                input_per_m: per_million(input),
                output_per_m: per_million(output),
                cost: blend(std::iter::once((*bp, all.picos()))),
            });
        }
        let rate =
            |f: fn(&MixPart) -> Money| blend(parts.iter().map(|p| (p.share_bp, f(p).picos())));
        let input_per_m = rate(|p| p.input_per_m);
        let output_per_m = rate(|p| p.output_per_m);
        let cost = blend(
            mix.shares
                .iter()
                .map(|(m, bp)| (*bp, self.cost_on(m).unwrap_or(Money::ZERO).picos())),
        );
        let terms = |f: fn(&MixPart) -> String| {
            parts
                .iter()
                .map(|p| format!("{}×{}", fraction(p.share_bp), f(p)))
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let input_arithmetic = format!(
            "{} = ${input_per_m} per M {}",
            terms(|p| p.input_per_m.to_string()),
            if self.one_price {
                "tokens (one price: each model's input price)"
            } else {
                "input tokens"
            }
        );
        let output_arithmetic = (!self.one_price).then(|| {
            format!(
                "{} = ${output_per_m} per M output tokens",
                terms(|p| p.output_per_m.to_string())
            )
        });
        let cost_arithmetic = format!(
            "{} = ${cost}",
            parts
                .iter()
                .map(|p| {
                    let all = self.cost_on(&p.model).unwrap_or(Money::ZERO);
                    format!("{}×${all}", fraction(p.share_bp))
                })
                .collect::<Vec<_>>()
                .join(" + ")
        );
        MixResult {
            spec: mix.spec.clone(),
            parts,
            input_per_m,
            output_per_m,
            cost,
            input_arithmetic,
            output_arithmetic,
            cost_arithmetic,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DESIGN_MIX: &str = "gpt-4.1:5,claude-sonnet-4-5:10,gemini-2.5-flash:35,deepseek-v3.2:50";

    fn mix(s: &str) -> Mix {
        parse_mix(s).unwrap()
    }

    fn usage(prompt: u64, cached: u64, completion: u64, reasoning: u64) -> Usage {
        Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt + completion,
            cached_tokens: cached,
            cache_write_tokens: 0,
            reasoning_tokens: reasoning,
        }
    }

    #[test]
    fn mixes_parse_into_basis_points() {
        let m = mix(DESIGN_MIX);
        assert_eq!(
            m.shares,
            [
                ("gpt-4.1".to_string(), 500),
                ("claude-sonnet-4-5".to_string(), 1000),
                ("gemini-2.5-flash".to_string(), 3500),
                ("deepseek-v3.2".to_string(), 5000),
            ]
        );
        assert_eq!(
            mix(" a:12.5 , b:87.5").shares,
            [("a".into(), 1250), ("b".into(), 8750)]
        );
        assert_eq!(mix("llama3:8b:100").shares, [("llama3:8b".into(), 10_000)]);
        assert_eq!(mix("a:33.34,b:33.33,c:33.33").shares.len(), 3);
    }

    #[test]
    fn bad_mixes_are_refused() {
        for (s, why) in [
            ("gpt-4.1:5,deepseek-v3.2:50", "55%, not 100%"),
            ("a:50,b:60", "110%, not 100%"),
            ("a:33.3,b:33.3,c:33.3", "99.9%, not 100%"),
            ("a:100,a:0", "twice"),
            ("a", "MODEL:PERCENT"),
            (":100", "MODEL:PERCENT"),
            ("a:", "percentage"),
            ("a:-5,b:105", "percentage"),
            ("a:101", "percentage"),
            ("a:12.345,b:87.655", "percentage"),
            ("a:1e2", "percentage"),
            ("", "MODEL:PERCENT"),
        ] {
            let err = parse_mix(s).unwrap_err();
            assert!(err.contains(why), "{s}: {err}");
        }
    }

    #[test]
    fn specs_are_a_model_or_a_mix() {
        assert_eq!(
            parse_spec("model=gpt-4o"),
            Ok(WhatIfSpec::Model("gpt-4o".into()))
        );
        assert!(matches!(parse_spec("mix=a:100"), Ok(WhatIfSpec::Mix(_))));
        for bad in ["model=", "gpt-4o", "tier=a:100"] {
            assert!(parse_spec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_designs_million_tokens_cost_8_dollars_on_gpt_4_1_and_2_985_in_its_mix() {
        let table = PriceTable::builtin();
        let specs = [WhatIfSpec::Mix(mix(DESIGN_MIX))];
        let baseline = Baseline::Model(DESIGN_BASELINE.into());
        let mut w = WhatIf::new(&table, &specs, baseline, true).unwrap();
        w.add_tokens(1_000_000);
        // 1M × $8/M; the design printed $8,000.
        assert_eq!(w.baseline_cost().1.to_string(), "8");
        let on = |m: &str| w.cost_on(m).unwrap().to_string();
        assert_eq!(on("claude-sonnet-4-5"), "15");
        assert_eq!(on("gemini-2.5-flash"), "2.5");
        assert_eq!(on("deepseek-v3.2"), "0.42");
        let r = w.mix(&w.mixes[0]);
        // 0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = 0.4 + 1.5 + 0.875 + 0.21.
        assert_eq!(r.cost.to_string(), "2.985");
        assert_eq!(r.input_per_m.to_string(), "2.985");
        assert_eq!(
            r.input_arithmetic,
            "0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = $2.985 per M tokens \
             (one price: each model's input price)"
        );
        assert_eq!(r.output_arithmetic, None);
        let parts: Vec<String> = r.parts.iter().map(|p| p.cost.to_string()).collect();
        assert_eq!(parts, ["0.4", "1.5", "0.875", "0.21"]);
        assert_eq!(
            crate::cost_report::num::saving_pct(w.baseline_cost().1, r.cost, 2).as_deref(),
            Some("62.69")
        );
    }

    #[test]
    fn traffic_is_priced_request_by_request_at_each_models_own_rates() {
        let table = PriceTable::builtin();
        let specs = [WhatIfSpec::Mix(mix("gpt-4.1:50,deepseek-v3.2:50"))];
        let mut w = WhatIf::new(&table, &specs, Baseline::Routed, false).unwrap();
        let paid = Money::parse_usd("0.01").unwrap();
        w.add_request(&usage(1000, 200, 500, 100), false, Some(("gpt-4o", paid)));
        w.add_request(&usage(2000, 0, 0, 0), false, Some(("gpt-4o", paid)));
        w.add_request(&usage(9999, 0, 9999, 0), true, None); // a cache hit: left out
        w.add_request(&usage(9999, 0, 9999, 0), false, None); // unpriced: left out
        assert_eq!(
            (
                w.traffic.requests,
                w.traffic.left_out_cache_hits,
                w.traffic.left_out_unpriced
            ),
            (2, 1, 1)
        );
        assert_eq!(w.routed.to_string(), "0.02");
        // gpt-4.1 ($8 in, $32 out; no cached discount): 3,000 in + 500 out
        // = 0.024 + 0.016 = 0.04.
        assert_eq!(w.cost_on("gpt-4.1").unwrap().to_string(), "0.04");
        // deepseek-v3.2 ($0.42 / $1.68): 3,000 × 0.42 + 500 × 1.68 per M
        // = 0.00126 + 0.00084 = 0.0021.
        assert_eq!(w.cost_on("deepseek-v3.2").unwrap().to_string(), "0.0021");
        let r = w.mix(&w.mixes[0]);
        // 0.5 × 0.04 + 0.5 × 0.0021 = 0.02105.
        assert_eq!(r.cost.to_string(), "0.02105");
        assert_eq!(r.cost_arithmetic, "0.50×$0.04 + 0.50×$0.0021 = $0.02105");
        // Blended rates: 0.5 × 8 + 0.5 × 0.42 = 4.21 in, 0.5 × 32 + 0.5 × 1.68 = 16.84 out.
        assert_eq!(
            r.input_arithmetic,
            "0.50×8 + 0.50×0.42 = $4.21 per M input tokens"
        );
        assert_eq!(
            r.output_arithmetic.as_deref(),
            Some("0.50×32 + 0.50×1.68 = $16.84 per M output tokens")
        );
    }

    #[test]
    fn one_price_puts_every_token_at_the_input_price() {
        let table = PriceTable::builtin();
        let mut w = WhatIf::new(&table, &[], Baseline::Routed, true).unwrap();
        w.add_request(&usage(1000, 0, 500, 0), false, Some(("x", Money::ZERO)));
        // 1,500 tokens × $8/M = 0.012 (not 0.024 with output at $32).
        assert_eq!(w.cost_on("gpt-4.1").unwrap().to_string(), "0.012");
    }

    #[test]
    fn a_model_without_a_price_is_refused() {
        let table = PriceTable::builtin();
        let err = WhatIf::new(
            &table,
            &[WhatIfSpec::Model("my-own-model".into())],
            Baseline::Routed,
            false,
        )
        .unwrap_err();
        assert!(err.contains("my-own-model"), "{err}");
        let err = WhatIf::new(&table, &[], Baseline::Model("nope".into()), false).unwrap_err();
        assert!(err.contains("nope"), "{err}");
    }

    #[test]
    fn mixes_round_once_to_the_picodollar() {
        // A third each of 1 picodollar: 3333 + 3333 + 3334 basis points of 1 pico = 1 pico.
        let sum = blend([(3333, 1), (3333, 1), (3334, 1)].into_iter());
        assert_eq!(sum.picos(), 1);
        assert_eq!(blend([(5000, 1)].into_iter()).picos(), 1); // 0.5 rounds up
        assert_eq!(blend([(4999, 1)].into_iter()).picos(), 0);
    }
}
