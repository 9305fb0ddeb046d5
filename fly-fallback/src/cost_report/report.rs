//! The report: request records tallied (exactly, in [`Money`]) into totals, groups, cache
//! savings and the what-if scenarios. Serialized as is for `--json`.

use std::collections::BTreeMap;

use gateway_core::pricing::Money;
use serde::Serialize;

use super::num::{per_million, saving_pct, share_pct};
use super::read::{InputStats, Record};
use super::what_if::{percent, Traffic, WhatIf};

/// Requests with one value of a dimension (a model, a key, an upstream, a day).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Group {
    pub name: String,
    pub requests: u64,
    /// Prompt + completion tokens.
    pub tokens: u64,
    pub spend_usd: Money,
    /// Of the total spend, two decimals; `None` when nothing was spent.
    pub share_pct: Option<String>,
    pub estimated: u64,
    pub unpriced: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    pub reasoning_tokens: u64,
    pub total_tokens: u64,
    pub spend_usd: Money,
    /// Requests whose cost was computed from estimated token counts.
    pub estimated_requests: u64,
    /// Requests whose model had no price (counted, never as free).
    pub unpriced_requests: u64,
    pub first_day: Option<String>,
    pub last_day: Option<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CacheSummary {
    pub hits: u64,
    pub misses: u64,
    pub bypass: u64,
    /// What the hits' answers cost when they were made.
    pub saved_usd: Money,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct InputSummary {
    pub sources: Vec<String>,
    /// Non-blank lines read.
    pub lines: u64,
    pub requests: u64,
    /// Other gateway events (`upstream_down`, ...), skipped silently.
    pub events: u64,
    pub skipped: u64,
    pub not_json: u64,
    pub not_a_request: u64,
    pub skipped_examples: Vec<String>,
}

/// What was read from the logs (absent with `--what-if-tokens`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LogReport {
    pub input: InputSummary,
    pub totals: Totals,
    pub by_model: Vec<Group>,
    pub by_key: Vec<Group>,
    pub by_upstream: Vec<Group>,
    pub by_day: Vec<Group>,
    pub cache: CacheSummary,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Baseline {
    pub label: String,
    pub cost_usd: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelCost {
    pub model: String,
    pub cost_usd: Money,
}

/// All of the traffic on one model.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AllOn {
    pub model: String,
    pub input_per_m_usd: Money,
    pub output_per_m_usd: Money,
    pub cost_usd: Money,
    /// Against the baseline, two decimals; negative: dearer. `None` when the baseline is 0.
    pub saving_pct: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixShare {
    pub model: String,
    pub share_pct: String,
    pub input_per_m_usd: Money,
    pub output_per_m_usd: Money,
    pub cost_usd: Money,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixArithmetic {
    pub input: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
    pub cost: String,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixReport {
    pub spec: String,
    pub shares: Vec<MixShare>,
    pub input_per_m_usd: Money,
    pub output_per_m_usd: Money,
    pub cost_usd: Money,
    pub saving_pct: Option<String>,
    pub arithmetic: MixArithmetic,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct WhatIfReport {
    /// `logs` or `tokens` (`--what-if-tokens`).
    pub basis: &'static str,
    pub one_price: bool,
    pub traffic: Traffic,
    pub baseline: Baseline,
    /// The traffic's logged cost by model, those that cost something (with logs only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub as_routed: Option<Vec<ModelCost>>,
    pub all_on: Vec<AllOn>,
    pub mixes: Vec<MixReport>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    #[serde(flatten)]
    pub logs: Option<LogReport>,
    pub what_if: WhatIfReport,
}

impl Serialize for Traffic {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("Traffic", 8)?;
        if let Some(n) = self.synthetic_tokens {
            st.serialize_field("tokens", &n)?;
        } else {
            st.serialize_field("requests", &self.requests)?;
            st.serialize_field("prompt_tokens", &self.prompt_tokens)?;
            st.serialize_field("cached_tokens", &self.cached_tokens)?;
            st.serialize_field("completion_tokens", &self.completion_tokens)?;
            st.serialize_field("reasoning_tokens", &self.reasoning_tokens)?;
            st.serialize_field("left_out_cache_hits", &self.left_out_cache_hits)?;
            st.serialize_field("left_out_unpriced", &self.left_out_unpriced)?;
        }
        st.end()
    }
}

const NONE: &str = "(none)";

/// Adds up records as they are read.
pub struct Tally {
    totals: Totals,
    by_model: BTreeMap<String, Group>,
    by_key: BTreeMap<String, Group>,
    by_upstream: BTreeMap<String, Group>,
    by_day: BTreeMap<String, Group>,
    cache: CacheSummary,
    what_if: WhatIf,
}

fn add_to(groups: &mut BTreeMap<String, Group>, name: &str, r: &Record) {
    let g = groups.entry(name.to_string()).or_insert_with(|| Group {
        name: name.to_string(),
        ..Group::default()
    });
    g.requests += 1;
    g.tokens = g.tokens.saturating_add(r.tokens());
    g.spend_usd += r.cost.unwrap_or(Money::ZERO);
    g.estimated += u64::from(r.estimated);
    g.unpriced += u64::from(r.unpriced);
}

/// Sorted by spend, then requests (both descending), then name; with shares of `total`.
fn sorted(groups: BTreeMap<String, Group>, total: Money) -> Vec<Group> {
    let mut v: Vec<Group> = groups.into_values().collect();
    v.sort_by(|a, b| {
        b.spend_usd
            .cmp(&a.spend_usd)
            .then(b.requests.cmp(&a.requests))
            .then_with(|| a.name.cmp(&b.name))
    });
    for g in &mut v {
        g.share_pct = share_pct(g.spend_usd.picos(), total.picos(), 2);
    }
    v
}

impl Tally {
    pub fn new(what_if: WhatIf) -> Tally {
        Tally {
            totals: Totals::default(),
            by_model: BTreeMap::new(),
            by_key: BTreeMap::new(),
            by_upstream: BTreeMap::new(),
            by_day: BTreeMap::new(),
            cache: CacheSummary::default(),
            what_if,
        }
    }

    pub fn add(&mut self, r: &Record) {
        let t = &mut self.totals;
        let u = &r.usage;
        t.requests += 1;
        t.prompt_tokens = t.prompt_tokens.saturating_add(u.prompt_tokens);
        t.cached_tokens = t.cached_tokens.saturating_add(u.cached_tokens);
        t.completion_tokens = t.completion_tokens.saturating_add(u.completion_tokens);
        t.reasoning_tokens = t.reasoning_tokens.saturating_add(u.reasoning_tokens);
        t.total_tokens = t.total_tokens.saturating_add(r.tokens());
        t.spend_usd += r.cost.unwrap_or(Money::ZERO);
        t.estimated_requests += u64::from(r.estimated);
        t.unpriced_requests += u64::from(r.unpriced);
        if t.first_day.as_ref().is_none_or(|d| r.day < *d) {
            t.first_day = Some(r.day.clone());
        }
        if t.last_day.as_ref().is_none_or(|d| r.day > *d) {
            t.last_day = Some(r.day.clone());
        }

        let model = r.model.as_deref().unwrap_or(NONE);
        add_to(&mut self.by_model, model, r);
        add_to(&mut self.by_key, r.key_id.as_deref().unwrap_or(NONE), r);
        let upstream = match (&r.upstream, r.is_cache_hit()) {
            (Some(u), _) => u.as_str(),
            (None, true) => "(cache)",
            (None, false) => NONE,
        };
        add_to(&mut self.by_upstream, upstream, r);
        add_to(&mut self.by_day, &r.day, r);

        match r.cache.as_deref() {
            Some("hit") => {
                self.cache.hits += 1;
                self.cache.saved_usd += r.saved.unwrap_or(Money::ZERO);
            }
            Some("miss") => self.cache.misses += 1,
            Some("bypass") => self.cache.bypass += 1,
            _ => {}
        }

        // No logged figure to compare with: unpriced, or tokens without a cost.
        let comparable = !r.unpriced && (r.cost.is_some() || r.tokens() == 0);
        let routed = comparable.then(|| (model, r.cost.unwrap_or(Money::ZERO)));
        self.what_if.add_request(u, r.is_cache_hit(), routed);
    }

    pub fn finish(self, stats: &InputStats) -> Report {
        let total = self.totals.spend_usd;
        let logs = LogReport {
            input: InputSummary {
                sources: stats.sources.clone(),
                lines: stats.lines,
                requests: stats.requests,
                events: stats.events,
                skipped: stats.skipped(),
                not_json: stats.not_json,
                not_a_request: stats.not_request,
                skipped_examples: stats.examples.clone(),
            },
            by_model: sorted(self.by_model, total),
            by_key: sorted(self.by_key, total),
            by_upstream: sorted(self.by_upstream, total),
            by_day: sorted(self.by_day, total),
            cache: self.cache,
            totals: self.totals,
        };
        Report {
            logs: Some(logs),
            what_if: what_if_report(&self.what_if),
        }
    }
}

/// The report of `--what-if-tokens`: scenarios only.
pub fn tokens_report(what_if: &WhatIf) -> Report {
    Report {
        logs: None,
        what_if: what_if_report(what_if),
    }
}

fn what_if_report(w: &WhatIf) -> WhatIfReport {
    let (label, base) = w.baseline_cost();
    let all_on = w
        .all_on()
        .map(|(model, rates, cost)| AllOn {
            model: model.to_string(),
            input_per_m_usd: per_million(rates.input),
            output_per_m_usd: per_million(rates.output),
            cost_usd: cost,
            saving_pct: saving_pct(base, cost, 2),
        })
        .collect();
    let mixes = w
        .mixes
        .iter()
        .map(|m| {
            let r = w.mix(m);
            MixReport {
                spec: r.spec,
                shares: r
                    .parts
                    .into_iter()
                    .map(|p| MixShare {
                        model: p.model,
                        share_pct: percent(p.share_bp),
                        input_per_m_usd: p.input_per_m,
                        output_per_m_usd: p.output_per_m,
                        cost_usd: p.cost,
                    })
                    .collect(),
                input_per_m_usd: r.input_per_m,
                output_per_m_usd: r.output_per_m,
                cost_usd: r.cost,
                saving_pct: saving_pct(base, r.cost, 2),
                arithmetic: MixArithmetic {
                    input: r.input_arithmetic,
                    output: r.output_arithmetic,
                    cost: r.cost_arithmetic,
                },
            }
        })
        .collect();
    let synthetic = w.traffic.synthetic_tokens.is_some();
    let as_routed = (!synthetic).then(|| {
        let mut v: Vec<ModelCost> = w
            .routed_by_model
            .iter()
            .filter(|(_, c)| **c > Money::ZERO)
            .map(|(m, c)| ModelCost {
                model: m.clone(),
                cost_usd: *c,
            })
            .collect();
        v.sort_by(|a, b| {
            b.cost_usd
                .cmp(&a.cost_usd)
                .then_with(|| a.model.cmp(&b.model))
        });
        v
    });
    WhatIfReport {
        basis: if synthetic { "tokens" } else { "logs" },
        one_price: w.one_price,
        traffic: w.traffic.clone(),
        baseline: Baseline {
            label,
            cost_usd: base,
        },
        as_routed,
        all_on,
        mixes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cost_report::read::{parse_line, Line};
    use crate::cost_report::what_if::{parse_mix, Baseline as B, WhatIfSpec};
    use gateway_core::pricing::PriceTable;

    fn tally(lines: &[&str]) -> Report {
        let w = WhatIf::new(
            &PriceTable::builtin(),
            &[WhatIfSpec::Mix(
                parse_mix("gpt-4.1:50,deepseek-v3.2:50").unwrap(),
            )],
            B::Routed,
            false,
        )
        .unwrap();
        let mut t = Tally::new(w);
        let mut stats = InputStats::default();
        for l in lines {
            if let Line::Request(r) = parse_line(l.as_bytes()) {
                stats.requests += 1;
                t.add(&r);
            }
        }
        t.finish(&stats)
    }

    #[test]
    fn groups_add_up_exactly_and_sort_by_spend() {
        let r = tally(&[
            r#"{"time":"2026-11-27T01:00:00Z","model":"a","key_id":"k1","upstream":"us","prompt_tokens":10,"completion_tokens":5,"cost_usd":"0.1"}"#,
            r#"{"time":"2026-11-27T02:00:00Z","model":"b","key_id":"k1","upstream":"eu","prompt_tokens":1,"completion_tokens":1,"cost_usd":"0.2"}"#,
            r#"{"time":"2026-11-28T02:00:00Z","model":"a","key_id":"k2","upstream":"us","prompt_tokens":3,"cost_usd":"0.2","cost_estimated":true}"#,
            r#"{"time":"2026-11-28T03:00:00Z","model":"c","key_id":"k2","prompt_tokens":7,"unpriced":true}"#,
            r#"{"time":"2026-11-28T04:00:00Z","model":"a","cache":"hit","saved_usd":"0.05","cost_usd":"0"}"#,
        ]);
        let logs = r.logs.unwrap();
        // 0.1 + 0.2 + 0.2: floats would give 0.5000000000000001.
        assert_eq!(logs.totals.spend_usd.to_string(), "0.5");
        assert_eq!(
            (
                logs.totals.requests,
                logs.totals.total_tokens,
                logs.totals.estimated_requests,
                logs.totals.unpriced_requests
            ),
            (5, 27, 1, 1)
        );
        let names = |g: &[Group]| g.iter().map(|g| g.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&logs.by_model), ["a", "b", "c"]);
        assert_eq!(logs.by_model[0].spend_usd.to_string(), "0.3");
        assert_eq!(logs.by_model[0].share_pct.as_deref(), Some("60.00"));
        assert_eq!(logs.by_model[0].requests, 3);
        assert_eq!(logs.by_model[2].unpriced, 1);
        assert_eq!(names(&logs.by_key), ["k1", "k2", "(none)"]);
        assert_eq!(names(&logs.by_upstream), ["us", "eu", "(cache)", "(none)"]);
        assert_eq!(names(&logs.by_day), ["2026-11-27", "2026-11-28"]);
        assert_eq!(logs.by_day[0].spend_usd.to_string(), "0.3");
        assert_eq!(logs.cache.hits, 1);
        assert_eq!(logs.cache.saved_usd.to_string(), "0.05");
        assert_eq!(logs.totals.first_day.as_deref(), Some("2026-11-27"));
        assert_eq!(logs.totals.last_day.as_deref(), Some("2026-11-28"));
        // The what-if traffic leaves out the hit and the unpriced request.
        let t = &r.what_if.traffic;
        assert_eq!(
            (t.requests, t.left_out_cache_hits, t.left_out_unpriced),
            (3, 1, 1)
        );
        assert_eq!(r.what_if.baseline.cost_usd.to_string(), "0.5");
    }
}
