//! `tiers` and `selection` in `GATEWAY_CONFIG`, checked once at start-up so that a request
//! never meets a rule or a tier it cannot use.

use std::collections::BTreeMap;

use serde::Deserialize;

use super::hints::TASK_MAX_CHARS;
use super::rules::{Condition, Rule};
use super::{Selector, AUTO, TIER_PREFIX};
use crate::error::ConfigError;
use crate::pricing::{Money, PICOS_PER_USD};

/// `tiers` in `GATEWAY_CONFIG`: tier name -> its models, in order (the fallback chain).
pub type TiersConfig = BTreeMap<String, Vec<String>>;

/// The model `auto` picks when no rule holds, unless `selection.default_model` says otherwise.
pub const DEFAULT_MODEL: &str = "gemini-2.5-flash";
/// The maximum output assumed when a request sets none, unless
/// `selection.default_max_output_tokens` says otherwise.
pub const DEFAULT_MAX_OUTPUT_TOKENS: u64 = 1024;
/// No model writes this much in one answer: a larger default is a typo.
const MAX_DEFAULT_MAX_OUTPUT_TOKENS: u64 = 1_000_000;
/// Rule and tier names end up in `Choice::reason`, hence in logs and headers.
const MAX_NAME_CHARS: usize = 64;

/// `selection` in `GATEWAY_CONFIG`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SelectionConfig {
    /// The rules of `auto`, in order: the first that holds picks the model. When given, they
    /// replace the default rules (an empty list leaves only `default_model`).
    #[serde(default)]
    pub rules: Option<Vec<RuleConfig>>,
    /// The model of `auto` when no rule holds (default [`DEFAULT_MODEL`]).
    #[serde(default)]
    pub default_model: Option<String>,
    /// The output assumed for a request that sets no maximum (default
    /// [`DEFAULT_MAX_OUTPUT_TOKENS`]; from 1 to 1000000).
    #[serde(default)]
    pub default_max_output_tokens: Option<u64>,
}

/// One rule of `auto`: `{"name": "deep", "when": {...}, "model": "claude-sonnet-4-5"}`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    /// The rule's name in `Choice::reason` (`rule:NAME`): up to 64 characters, no whitespace,
    /// unique. Without one, a rule with a single condition is named by its kind (`quality`,
    /// `task`, `latency`, `cost`) and any other by its 1-based position (`rule:3`); two rules
    /// that would get the same name are a configuration error, so a reason always names one
    /// rule.
    #[serde(default)]
    pub name: Option<String>,
    /// Every condition given must hold (at least one is required).
    pub when: WhenConfig,
    pub model: String,
}

/// The conditions of a rule, on the request's hints. A condition on a hint the request does
/// not send does not hold.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WhenConfig {
    /// `x-gateway-quality` is at least this (0 to 1).
    #[serde(default)]
    pub quality_at_least: Option<f64>,
    /// `x-gateway-task` contains one of these (compared with ASCII letters lowercased).
    #[serde(default)]
    pub task_contains: Option<Vec<String>>,
    /// `x-gateway-latency-budget-ms` is below this.
    #[serde(default)]
    pub latency_budget_below_ms: Option<u64>,
    /// `x-gateway-cost-budget-usd` is below this: a decimal string such as `"0.01"`, so the
    /// amount is exact (no float money).
    #[serde(default)]
    pub cost_budget_below_usd: Option<String>,
}

fn error(at: &str, message: impl std::fmt::Display) -> ConfigError {
    ConfigError::new("GATEWAY_CONFIG", format!("{at}: {message}"))
}

/// The design's tiers.
pub(super) fn default_tiers() -> TiersConfig {
    // Inserted one by one: `BTreeMap::from` sorts and bulk-builds, code the Worker needs for
    // nothing else (inserts are what parsing `tiers` does anyway).
    let mut tiers = BTreeMap::new();
    for (name, models) in [
        ("high-quality", &["gpt-4.1", "claude-sonnet-4-5"][..]),
        ("balanced", &["gemini-2.5-flash", "claude-sonnet-4-5"]),
        ("cost-effective", &["deepseek-v3.2", "gemini-2.5-flash"]),
        ("ultra-cheap", &["deepseek-v3.2"]),
    ] {
        tiers.insert(
            name.to_string(),
            models.iter().map(|m| m.to_string()).collect(),
        );
    }
    tiers
}

/// The design's rules, built directly so that [`Selector::default`] cannot fail; a test checks
/// that the same rules written as configuration give the same selector.
pub(super) fn default_rules() -> Vec<Rule> {
    let rule = |name: &str, when: Condition, model: &str| Rule {
        reason: format!("rule:{name}"),
        when,
        model: model.to_string(),
    };
    vec![
        rule(
            "quality",
            Condition {
                quality_at_least: Some(0.9),
                ..Condition::default()
            },
            "gpt-4.1",
        ),
        rule(
            "task",
            Condition {
                task_contains: vec!["reasoning".into(), "analysis".into()],
                ..Condition::default()
            },
            "claude-sonnet-4-5",
        ),
        rule(
            "latency",
            Condition {
                latency_budget_below_ms: Some(500),
                ..Condition::default()
            },
            "gemini-2.5-flash",
        ),
        rule(
            "cost",
            Condition {
                cost_budget_below: Some(Money::from_picos(PICOS_PER_USD / 100)),
                ..Condition::default()
            },
            "deepseek-v3.2",
        ),
    ]
}

impl Default for Selector {
    /// The design's tiers and rules.
    fn default() -> Selector {
        Selector::build(
            default_tiers(),
            default_rules(),
            DEFAULT_MODEL.to_string(),
            DEFAULT_MAX_OUTPUT_TOKENS,
        )
    }
}

impl Selector {
    /// Validates `tiers` (replacing the default tiers when given) and `selection`; an error
    /// names the offending entry (`tiers.balanced: ...`, `selection.rules[2].when: ...`).
    pub fn from_config(
        tiers: Option<&TiersConfig>,
        selection: &SelectionConfig,
    ) -> Result<Selector, ConfigError> {
        let tiers = match tiers {
            Some(t) => {
                check_tiers(t)?;
                t.clone()
            }
            None => default_tiers(),
        };
        let rules = match &selection.rules {
            Some(r) => check_rules(r)?,
            None => default_rules(),
        };
        let default_model = match &selection.default_model {
            Some(m) => {
                check_model("selection.default_model", m)?;
                m.clone()
            }
            None => DEFAULT_MODEL.to_string(),
        };
        let max_output = selection
            .default_max_output_tokens
            .unwrap_or(DEFAULT_MAX_OUTPUT_TOKENS);
        if !(1..=MAX_DEFAULT_MAX_OUTPUT_TOKENS).contains(&max_output) {
            return Err(error(
                "selection.default_max_output_tokens",
                format!("must be from 1 to {MAX_DEFAULT_MAX_OUTPUT_TOKENS}, not {max_output}"),
            ));
        }
        Ok(Selector::build(tiers, rules, default_model, max_output))
    }

    fn build(
        tiers: TiersConfig,
        rules: Vec<Rule>,
        default_model: String,
        default_max_output_tokens: u64,
    ) -> Selector {
        let mut named_models: Vec<String> = Vec::new();
        let named = rules
            .iter()
            .map(|r| &r.model)
            .chain(std::iter::once(&default_model))
            .chain(tiers.values().flatten());
        for m in named {
            if !named_models.contains(m) {
                named_models.push(m.clone());
            }
        }
        Selector {
            tiers,
            rules,
            default_model,
            default_max_output_tokens,
            named_models,
        }
    }
}

/// A model name as the rules and tiers may use it: a real model, never a selection (which
/// would select again, or be forwarded upstream as `auto`).
fn check_model(at: &str, model: &str) -> Result<(), ConfigError> {
    if model.trim().is_empty() {
        return Err(error(at, "a model name is empty"));
    }
    if model.trim() != model {
        return Err(error(
            at,
            format!("the model name {model:?} has spaces around it"),
        ));
    }
    if model == AUTO || model.starts_with(TIER_PREFIX) {
        return Err(error(
            at,
            format!("{model:?} is a selection (auto or tier:NAME), not a model"),
        ));
    }
    Ok(())
}

/// A name that follows `rule:` or `tier:`: it must survive in a header value and a log line.
fn check_name(at: &str, what: &str, name: &str) -> Result<(), ConfigError> {
    if name.is_empty() {
        return Err(error(at, format!("a {what} name is empty")));
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(error(
            at,
            format!("the {what} name {name:?} has whitespace or control characters"),
        ));
    }
    if name.chars().count() > MAX_NAME_CHARS {
        return Err(error(
            at,
            format!("the {what} name {name:?} is longer than {MAX_NAME_CHARS} characters"),
        ));
    }
    Ok(())
}

fn check_tiers(tiers: &TiersConfig) -> Result<(), ConfigError> {
    for (name, models) in tiers {
        check_name("tiers", "tier", name)?;
        let at = format!("tiers.{name}");
        if models.is_empty() {
            return Err(error(&at, "lists no model"));
        }
        for (i, m) in models.iter().enumerate() {
            check_model(&format!("{at}[{i}]"), m)?;
            if models.iter().take(i).any(|earlier| earlier == m) {
                return Err(error(&at, format!("lists {m:?} twice")));
            }
        }
    }
    Ok(())
}

fn check_rules(rules: &[RuleConfig]) -> Result<Vec<Rule>, ConfigError> {
    let mut checked: Vec<Rule> = Vec::with_capacity(rules.len());
    for (i, r) in rules.iter().enumerate() {
        let at = format!("selection.rules[{i}]");
        check_model(&format!("{at}.model"), &r.model)?;
        let (when, kind) = check_when(&format!("{at}.when"), &r.when)?;
        let name = match &r.name {
            Some(n) => {
                check_name(&format!("{at}.name"), "rule", n)?;
                n.clone()
            }
            None => kind.map_or_else(|| (i + 1).to_string(), str::to_string),
        };
        let reason = format!("rule:{name}");
        if let Some(j) = checked.iter().position(|c| c.reason == reason) {
            return Err(error(
                &at,
                format!(
                    "its reason would be {reason}, like selection.rules[{j}]'s; give one of \
                     them a \"name\""
                ),
            ));
        }
        checked.push(Rule {
            reason,
            when,
            model: r.model.clone(),
        });
    }
    Ok(checked)
}

/// The condition, and the kind that names a rule with only this condition.
fn check_when(at: &str, w: &WhenConfig) -> Result<(Condition, Option<&'static str>), ConfigError> {
    let mut kinds: Vec<&'static str> = Vec::new();
    let mut c = Condition::default();
    if let Some(q) = w.quality_at_least {
        if !q.is_finite() || !(0.0..=1.0).contains(&q) {
            return Err(error(
                &format!("{at}.quality_at_least"),
                format!("must be a number from 0 to 1, not {q}"),
            ));
        }
        c.quality_at_least = Some(q);
        kinds.push("quality");
    }
    if let Some(tasks) = &w.task_contains {
        let at = format!("{at}.task_contains");
        if tasks.is_empty() {
            return Err(error(&at, "lists no word"));
        }
        for t in tasks {
            let t = t.trim().to_ascii_lowercase();
            if t.is_empty() {
                return Err(error(&at, "a word is empty"));
            }
            // The hint is cut to this length, so a longer word could never be found in it.
            if t.chars().count() > TASK_MAX_CHARS {
                return Err(error(
                    &at,
                    format!(
                        "{t:?} is longer than the {TASK_MAX_CHARS} characters a task hint keeps"
                    ),
                ));
            }
            c.task_contains.push(t);
        }
        kinds.push("task");
    }
    if let Some(ms) = w.latency_budget_below_ms {
        if ms == 0 {
            return Err(error(
                &format!("{at}.latency_budget_below_ms"),
                "must be above 0 (no budget is below 0)",
            ));
        }
        c.latency_budget_below_ms = Some(ms);
        kinds.push("latency");
    }
    if let Some(usd) = &w.cost_budget_below_usd {
        let at = format!("{at}.cost_budget_below_usd");
        let amount = Money::parse_usd(usd).ok_or_else(|| {
            error(
                &at,
                format!("{usd:?} is not a plain decimal number of US dollars such as \"0.01\""),
            )
        })?;
        if amount == Money::ZERO {
            return Err(error(&at, "must be above 0 (no budget is below 0)"));
        }
        c.cost_budget_below = Some(amount);
        kinds.push("cost");
    }
    match kinds.as_slice() {
        [] => Err(error(
            at,
            "names no condition (the model when no rule holds is selection.default_model)",
        )),
        [kind] => Ok((c, Some(kind))),
        _ => Ok((c, None)),
    }
}
