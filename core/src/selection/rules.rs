//! Choosing the model: the rules of `auto`, the tiers, and the cost budget over both.

use super::{Choice, Hints, Selector, TokenEstimate, AUTO, TIER_PREFIX};
use crate::error::GatewayError;
use crate::pricing::{Money, PriceTable};

/// How much of an unknown tier name an error message quotes back.
const QUOTE_MAX_CHARS: usize = 100;

/// One rule of `auto`, validated.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Rule {
    /// `rule:NAME`.
    pub reason: String,
    pub when: Condition,
    pub model: String,
}

/// Every condition set must hold; task words are lowercased.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Condition {
    pub quality_at_least: Option<f64>,
    pub task_contains: Vec<String>,
    pub latency_budget_below_ms: Option<u64>,
    pub cost_budget_below: Option<Money>,
}

impl Condition {
    fn holds(&self, hints: &Hints) -> bool {
        // A condition on a hint the request did not send cannot be said to hold.
        fn check<C, H>(condition: Option<C>, hint: Option<H>, ok: impl Fn(C, H) -> bool) -> bool {
            condition.is_none_or(|c| hint.is_some_and(|h| ok(c, h)))
        }
        check(self.quality_at_least, hints.quality, |c, q| q >= c)
            && (self.task_contains.is_empty()
                || hints
                    .task
                    .as_deref()
                    .is_some_and(|t| self.task_contains.iter().any(|w| t.contains(w.as_str()))))
            && check(
                self.latency_budget_below_ms,
                hints.latency_budget_ms,
                |c, ms| ms < c,
            )
            && check(self.cost_budget_below, hints.cost_budget, |c, b| b < c)
    }
}

impl Selector {
    /// Resolves `requested` (`auto` or `tier:NAME`). An unknown tier is a 400 naming `model`.
    ///
    /// A concrete model is answered as itself (reason `requested`, no chain), with
    /// `over_budget` set when its estimate is above the cost budget.
    ///
    /// Only models `allowed` accepts are candidates (a key's `models`); none left is a 404
    /// `model_not_found`, as for a model the key may not use.
    pub fn select(
        &self,
        prices: &PriceTable,
        requested: &str,
        hints: &Hints,
        estimate: &TokenEstimate,
        allowed: &dyn Fn(&str) -> bool,
    ) -> Result<Choice, GatewayError> {
        let cost = |model: &str| {
            prices.get(model).map(|p| {
                p.estimate(estimate.prompt_tokens, estimate.max_output_tokens)
                    .1
            })
        };
        let (groups, reason) = if requested == AUTO {
            let (pick, reason) = self.rule_pick(hints);
            let mut first = vec![pick];
            first.extend(self.tier_chain(pick));
            let others: Vec<&str> = self
                .named_models
                .iter()
                .map(String::as_str)
                .filter(|m| !first.contains(m))
                .collect();
            (vec![first, others], reason.to_string())
        } else if let Some(name) = requested.strip_prefix(TIER_PREFIX) {
            let Some(models) = self.tiers.get(name) else {
                return Err(self.unknown_tier(requested));
            };
            (
                vec![models.iter().map(String::as_str).collect()],
                requested.to_string(),
            )
        } else {
            (vec![vec![requested]], "requested".to_string())
        };
        let groups: Vec<Vec<&str>> = groups
            .into_iter()
            .map(|g| g.into_iter().filter(|m| allowed(m)).collect::<Vec<_>>())
            .filter(|g| !g.is_empty())
            .collect();
        if groups.is_empty() {
            return Err(GatewayError::ModelNotAllowed {
                model: requested.chars().take(QUOTE_MAX_CHARS).collect(),
            });
        }
        let (model, chain, over_budget) =
            choose(&groups, hints.cost_budget, cost).ok_or_else(|| GatewayError::Internal {
                message: format!("the selection {requested:?} has no candidate model"),
            })?;
        Ok(Choice {
            model: model.to_string(),
            chain: chain.into_iter().map(str::to_string).collect(),
            reason,
            over_budget,
        })
    }

    /// The model of the first rule that holds, else the default, and the reason.
    fn rule_pick(&self, hints: &Hints) -> (&str, &str) {
        self.rules
            .iter()
            .find(|r| r.when.holds(hints))
            .map_or((self.default_model.as_str(), "default"), |r| {
                (r.model.as_str(), r.reason.as_str())
            })
    }

    /// The rest of the first tier (in name order) that lists `model`, in that tier's order.
    fn tier_chain<'s>(&'s self, model: &str) -> Vec<&'s str> {
        self.tiers
            .values()
            .find(|models| models.iter().any(|m| m == model))
            .map(|models| {
                models
                    .iter()
                    .map(String::as_str)
                    .filter(|m| *m != model)
                    .collect()
            })
            .unwrap_or_default()
    }

    fn unknown_tier(&self, requested: &str) -> GatewayError {
        let shown: String = requested.chars().take(QUOTE_MAX_CHARS).collect();
        let known = if self.tiers.is_empty() {
            "No tier is configured.".to_string()
        } else {
            let names: Vec<String> = self
                .tiers
                .keys()
                .map(|t| format!("{TIER_PREFIX}{t}"))
                .collect();
            format!("The configured tiers are: {}.", names.join(", "))
        };
        GatewayError::InvalidField {
            param: "model".into(),
            message: format!("Unknown tier '{shown}'. {known}"),
        }
    }
}

/// The model, its chain and whether it is over budget, from candidate groups in order of
/// preference. Without a budget the first group decides alone. With one, the first group that
/// has a fitting model gives the model and the chain (its fitting models, in order); when none
/// fits, every candidate is ranked by cost, cheapest first (a stable sort: ties keep their
/// order). `None` only when there is no candidate at all.
fn choose<'m>(
    groups: &[Vec<&'m str>],
    budget: Option<Money>,
    cost: impl Fn(&str) -> Option<Money>,
) -> Option<(&'m str, Vec<&'m str>, bool)> {
    let Some(budget) = budget else {
        let (model, chain) = groups.first()?.split_first()?;
        return Some((model, chain.to_vec(), false));
    };
    // Unpriced models fit: nothing proves they exceed the budget.
    let fits = |m: &str| cost(m).is_none_or(|c| c <= budget);
    for group in groups {
        let fitting: Vec<&str> = group.iter().copied().filter(|m| fits(m)).collect();
        if let Some((model, chain)) = fitting.split_first() {
            return Some((model, chain.to_vec(), false));
        }
    }
    // An ordered insert rather than a sort: a handful of models, and no sort code in the
    // Worker's bundle for it. Inserting after equal costs keeps ties in their order.
    let mut ranked: Vec<(Money, &str)> = Vec::new();
    for m in groups.iter().flatten() {
        if let Some(c) = cost(m) {
            let at = ranked.partition_point(|(k, _)| *k <= c);
            ranked.insert(at, (c, *m));
        }
    }
    let ((_, model), rest) = ranked.split_first()?;
    Some((model, rest.iter().map(|(_, m)| *m).collect(), true))
}
