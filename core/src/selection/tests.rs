//! Every rule, tier and budget decision, against figures computed by hand.
//!
//! The built-in prices used (USD per million tokens, input / output): gpt-4.1 8 / 32,
//! claude-sonnet-4-5 15 / 75, gemini-2.5-flash 2.5 / 10, deepseek-v3.2 0.42 / 1.68. For 1000
//! prompt tokens and 500 of output the estimates (prompt plus whole output) are:
//! gpt-4.1 0.008 + 0.016 = $0.024; claude-sonnet-4-5 0.015 + 0.0375 = $0.0525;
//! gemini-2.5-flash 0.0025 + 0.005 = $0.0075; deepseek-v3.2 0.00042 + 0.00084 = $0.00126.

use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{json, Value};

use super::*;
use crate::error::ConfigError;

const TOKENS_1000_500: TokenEstimate = TokenEstimate {
    prompt_tokens: 1000,
    max_output_tokens: 500,
};

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(
            HeaderName::from_bytes(k.as_bytes()).unwrap(),
            HeaderValue::from_str(v).unwrap(),
        );
    }
    h
}

fn hints(pairs: &[(&str, &str)]) -> Hints {
    Hints::from_headers(&headers(pairs)).unwrap()
}

fn select_with(selector: &Selector, requested: &str, pairs: &[(&str, &str)]) -> Choice {
    selector
        .select(
            &PriceTable::builtin(),
            requested,
            &hints(pairs),
            &TOKENS_1000_500,
            &|_| true,
        )
        .unwrap()
}

fn select(requested: &str, pairs: &[(&str, &str)]) -> Choice {
    select_with(&Selector::default(), requested, pairs)
}

fn choice(model: &str, chain: &[&str], reason: &str, over_budget: bool) -> Choice {
    Choice {
        model: model.into(),
        chain: chain.iter().map(|m| m.to_string()).collect(),
        reason: reason.into(),
        over_budget,
    }
}

fn configured(tiers: Option<Value>, selection: Value) -> Result<Selector, ConfigError> {
    let tiers: Option<TiersConfig> = tiers.map(|t| serde_json::from_value(t).unwrap());
    let selection: SelectionConfig = serde_json::from_value(selection).unwrap();
    Selector::from_config(tiers.as_ref(), &selection)
}

fn config_error(tiers: Option<Value>, selection: Value) -> String {
    let e = configured(tiers, selection).unwrap_err();
    assert_eq!(e.setting, "GATEWAY_CONFIG");
    e.message
}

fn invalid_param(e: GatewayError) -> (String, String) {
    match e {
        GatewayError::InvalidField { param, message } => (param, message),
        other => panic!("expected InvalidField, got {other:?}"),
    }
}

// ---- default rules of `auto`, in order ----

#[test]
fn auto_picks_gpt_4_1_for_quality_at_least_0_9() {
    let expected = choice("gpt-4.1", &["claude-sonnet-4-5"], "rule:quality", false);
    assert_eq!(select("auto", &[("x-gateway-quality", "0.95")]), expected);
    assert_eq!(select("auto", &[("x-gateway-quality", "0.9")]), expected);
    assert_eq!(select("auto", &[("x-gateway-quality", "1")]), expected);
}

#[test]
fn auto_quality_below_0_9_falls_to_the_default() {
    let c = select("auto", &[("x-gateway-quality", "0.89")]);
    assert_eq!(c.model, "gemini-2.5-flash");
    assert_eq!(c.reason, "default");
}

#[test]
fn auto_quality_rule_wins_over_a_reasoning_task() {
    let c = select(
        "auto",
        &[
            ("x-gateway-quality", "0.95"),
            ("x-gateway-task", "reasoning"),
        ],
    );
    assert_eq!(c.model, "gpt-4.1");
    assert_eq!(c.reason, "rule:quality");
}

#[test]
fn auto_picks_claude_for_a_task_containing_reasoning_or_analysis() {
    // The chain is balanced's rest: balanced is the first tier by name that lists claude.
    let expected = choice(
        "claude-sonnet-4-5",
        &["gemini-2.5-flash"],
        "rule:task",
        false,
    );
    assert_eq!(select("auto", &[("x-gateway-task", "reasoning")]), expected);
    assert_eq!(
        select("auto", &[("x-gateway-task", "  Data ANALYSIS ")]),
        expected
    );
    assert_eq!(
        select("auto", &[("x-gateway-task", "multi-step-reasoning")]),
        expected
    );
    assert_eq!(
        select("auto", &[("x-gateway-task", "chat")]).reason,
        "default"
    );
}

#[test]
fn auto_task_rule_wins_over_a_tight_latency_budget() {
    let c = select(
        "auto",
        &[
            ("x-gateway-task", "analysis"),
            ("x-gateway-latency-budget-ms", "100"),
        ],
    );
    assert_eq!(c.reason, "rule:task");
}

#[test]
fn auto_picks_gemini_flash_for_a_latency_budget_under_500_ms() {
    let expected = choice(
        "gemini-2.5-flash",
        &["claude-sonnet-4-5"],
        "rule:latency",
        false,
    );
    assert_eq!(
        select("auto", &[("x-gateway-latency-budget-ms", "499")]),
        expected
    );
    assert_eq!(
        select("auto", &[("x-gateway-latency-budget-ms", "500")]).reason,
        "default"
    );
}

#[test]
fn auto_latency_rule_wins_over_a_small_cost_budget() {
    let c = select(
        "auto",
        &[
            ("x-gateway-latency-budget-ms", "200"),
            ("x-gateway-cost-budget-usd", "0.009"),
        ],
    );
    // gemini's $0.0075 fits the budget.
    assert_eq!(c.model, "gemini-2.5-flash");
    assert_eq!(c.reason, "rule:latency");
    assert!(!c.over_budget);
}

#[test]
fn auto_picks_deepseek_for_a_cost_budget_under_a_cent() {
    // deepseek $0.00126 and gemini $0.0075 both fit $0.009.
    assert_eq!(
        select("auto", &[("x-gateway-cost-budget-usd", "0.009")]),
        choice("deepseek-v3.2", &["gemini-2.5-flash"], "rule:cost", false)
    );
    assert_eq!(
        select("auto", &[("x-gateway-cost-budget-usd", "0.01")]).reason,
        "default"
    );
}

#[test]
fn auto_without_hints_picks_the_default_gemini_flash() {
    assert_eq!(
        select("auto", &[]),
        choice("gemini-2.5-flash", &["claude-sonnet-4-5"], "default", false)
    );
}

// ---- tiers ----

#[test]
fn each_default_tier_resolves_to_its_first_model_and_chains_the_rest() {
    assert_eq!(
        select("tier:high-quality", &[]),
        choice(
            "gpt-4.1",
            &["claude-sonnet-4-5"],
            "tier:high-quality",
            false
        )
    );
    assert_eq!(
        select("tier:balanced", &[]),
        choice(
            "gemini-2.5-flash",
            &["claude-sonnet-4-5"],
            "tier:balanced",
            false
        )
    );
    assert_eq!(
        select("tier:cost-effective", &[]),
        choice(
            "deepseek-v3.2",
            &["gemini-2.5-flash"],
            "tier:cost-effective",
            false
        )
    );
    assert_eq!(
        select("tier:ultra-cheap", &[]),
        choice("deepseek-v3.2", &[], "tier:ultra-cheap", false)
    );
}

#[test]
fn a_tier_ignores_the_rules_of_auto() {
    let c = select("tier:ultra-cheap", &[("x-gateway-quality", "1")]);
    assert_eq!(c.model, "deepseek-v3.2");
}

#[test]
fn an_unknown_tier_is_a_400_on_model_listing_the_configured_tiers() {
    let e = Selector::default()
        .select(
            &PriceTable::builtin(),
            "tier:nope",
            &Hints::default(),
            &TOKENS_1000_500,
            &|_| true,
        )
        .unwrap_err();
    assert_eq!(e.status(), 400);
    let (param, message) = invalid_param(e);
    assert_eq!(param, "model");
    assert!(message.contains("'tier:nope'"), "{message}");
    assert!(
        message.contains("tier:balanced, tier:cost-effective, tier:high-quality, tier:ultra-cheap"),
        "{message}"
    );
}

#[test]
fn an_empty_tier_name_is_an_unknown_tier() {
    let e = Selector::default()
        .select(
            &PriceTable::builtin(),
            "tier:",
            &Hints::default(),
            &TOKENS_1000_500,
            &|_| true,
        )
        .unwrap_err();
    assert_eq!(invalid_param(e).0, "model");
}

#[test]
fn is_selection_covers_auto_and_every_tier_prefix_only() {
    let s = Selector::default();
    assert!(s.is_selection("auto"));
    assert!(s.is_selection("tier:balanced"));
    assert!(s.is_selection("tier:nope"));
    assert!(!s.is_selection("gpt-4.1"));
    assert!(!s.is_selection("Auto"));
    assert!(!s.is_selection("autopilot"));
}

#[test]
fn a_concrete_model_is_answered_as_itself() {
    assert_eq!(
        select("gpt-4.1", &[("x-gateway-cost-budget-usd", "0.03")]),
        choice("gpt-4.1", &[], "requested", false)
    );
    assert!(select("gpt-4.1", &[("x-gateway-cost-budget-usd", "0.02")]).over_budget);
}

// ---- hints ----

#[test]
fn hints_are_read_from_their_headers() {
    let h = hints(&[
        ("x-gateway-quality", " 0.5 "),
        ("x-gateway-task", "  Code Review "),
        ("x-gateway-latency-budget-ms", "250"),
        ("x-gateway-cost-budget-usd", "0.0125"),
    ]);
    assert_eq!(
        h,
        Hints {
            quality: Some(0.5),
            task: Some("code review".into()),
            latency_budget_ms: Some(250),
            cost_budget: Some(Money::from_picos(12_500_000_000)),
        }
    );
}

#[test]
fn absent_hint_headers_are_none() {
    assert_eq!(hints(&[("x-other", "1")]), Hints::default());
}

#[test]
fn a_blank_task_is_no_hint_and_a_long_one_is_cut() {
    assert_eq!(hints(&[("x-gateway-task", "   ")]).task, None);
    let long = "a".repeat(200);
    let task = hints(&[("x-gateway-task", &long)]).task.unwrap();
    assert_eq!(task.chars().count(), TASK_MAX_CHARS);
}

#[test]
fn bad_hint_values_are_400s_naming_their_header() {
    let cases: &[(&str, &str)] = &[
        ("x-gateway-quality", "1.5"),
        ("x-gateway-quality", "-0.1"),
        ("x-gateway-quality", "high"),
        ("x-gateway-quality", "NaN"),
        ("x-gateway-quality", "inf"),
        ("x-gateway-quality", ""),
        ("x-gateway-latency-budget-ms", "0"),
        ("x-gateway-latency-budget-ms", "-5"),
        ("x-gateway-latency-budget-ms", "+5"),
        ("x-gateway-latency-budget-ms", "2.5"),
        ("x-gateway-latency-budget-ms", "fast"),
        ("x-gateway-latency-budget-ms", "99999999999999999999999"),
        ("x-gateway-cost-budget-usd", "$0.01"),
        ("x-gateway-cost-budget-usd", "-0.01"),
        ("x-gateway-cost-budget-usd", "1e-3"),
        ("x-gateway-cost-budget-usd", "0.0000000000001"),
        ("x-gateway-cost-budget-usd", "cheap"),
    ];
    for (name, value) in cases {
        let e = Hints::from_headers(&headers(&[(name, value)])).unwrap_err();
        assert_eq!(e.status(), 400);
        assert_eq!(e.code(), Some("invalid_value"));
        let (param, message) = invalid_param(e);
        assert_eq!(&param, name, "{name}: {value}");
        assert!(message.contains(name), "{message}");
    }
}

#[test]
fn a_hint_sent_twice_is_a_400() {
    let e = Hints::from_headers(&headers(&[
        ("x-gateway-quality", "0.2"),
        ("x-gateway-quality", "0.95"),
    ]))
    .unwrap_err();
    assert_eq!(invalid_param(e).0, "x-gateway-quality");
}

#[test]
fn a_non_ascii_numeric_hint_is_a_400_and_a_non_ascii_task_is_kept() {
    let mut h = HeaderMap::new();
    h.insert(
        "x-gateway-cost-budget-usd",
        HeaderValue::from_bytes(b"0.01\xff").unwrap(),
    );
    let e = Hints::from_headers(&h).unwrap_err();
    assert_eq!(invalid_param(e).0, "x-gateway-cost-budget-usd");

    let mut h = HeaderMap::new();
    h.insert(
        "x-gateway-task",
        HeaderValue::from_bytes("Analyse \u{e9}".as_bytes()).unwrap(),
    );
    assert_eq!(
        Hints::from_headers(&h).unwrap().task.as_deref(),
        Some("analyse \u{e9}")
    );
}

// ---- cost budget ----

#[test]
fn the_estimates_behind_the_budget_figures_are_the_hand_computed_ones() {
    let p = PriceTable::builtin();
    let max = |m: &str| p.get(m).unwrap().estimate(1000, 500).1.to_string();
    assert_eq!(max("gpt-4.1"), "0.024");
    assert_eq!(max("claude-sonnet-4-5"), "0.0525");
    assert_eq!(max("gemini-2.5-flash"), "0.0075");
    assert_eq!(max("deepseek-v3.2"), "0.00126");
}

#[test]
fn a_budget_excludes_the_tier_models_that_cost_more() {
    // gpt-4.1 $0.024 fits $0.03; claude $0.0525 does not, so it leaves the chain.
    assert_eq!(
        select(
            "tier:high-quality",
            &[("x-gateway-cost-budget-usd", "0.03")]
        ),
        choice("gpt-4.1", &[], "tier:high-quality", false)
    );
    // deepseek $0.00126 and gemini $0.0075 both fit $0.008.
    assert_eq!(
        select(
            "tier:cost-effective",
            &[("x-gateway-cost-budget-usd", "0.008")]
        ),
        choice(
            "deepseek-v3.2",
            &["gemini-2.5-flash"],
            "tier:cost-effective",
            false
        )
    );
}

#[test]
fn a_budget_skips_a_first_tier_model_that_does_not_fit() {
    let s = configured(
        Some(json!({"mixed": ["claude-sonnet-4-5", "gpt-4.1", "deepseek-v3.2"]})),
        json!({}),
    )
    .unwrap();
    // claude $0.0525 out; gpt-4.1 $0.024 and deepseek $0.00126 fit $0.03.
    assert_eq!(
        select_with(&s, "tier:mixed", &[("x-gateway-cost-budget-usd", "0.03")]),
        choice("gpt-4.1", &["deepseek-v3.2"], "tier:mixed", false)
    );
}

#[test]
fn a_budget_equal_to_the_estimate_fits() {
    assert_eq!(
        select(
            "tier:ultra-cheap",
            &[("x-gateway-cost-budget-usd", "0.00126")]
        ),
        choice("deepseek-v3.2", &[], "tier:ultra-cheap", false)
    );
    assert!(
        select(
            "tier:ultra-cheap",
            &[("x-gateway-cost-budget-usd", "0.001259999999")]
        )
        .over_budget
    );
}

#[test]
fn when_no_tier_model_fits_the_cheapest_is_chosen_over_budget() {
    // gpt-4.1 $0.024 and claude $0.0525 are both above $0.02.
    assert_eq!(
        select(
            "tier:high-quality",
            &[("x-gateway-cost-budget-usd", "0.02")]
        ),
        choice("gpt-4.1", &["claude-sonnet-4-5"], "tier:high-quality", true)
    );
    // Nothing fits $0.001: gemini ($0.0075) is chosen before claude ($0.0525), listed first.
    let s = configured(
        Some(json!({"t": ["claude-sonnet-4-5", "gemini-2.5-flash"]})),
        json!({}),
    )
    .unwrap();
    assert_eq!(
        select_with(&s, "tier:t", &[("x-gateway-cost-budget-usd", "0.001")]),
        choice("gemini-2.5-flash", &["claude-sonnet-4-5"], "tier:t", true)
    );
}

#[test]
fn auto_keeps_the_rule_pick_when_it_fits_and_drops_unfitting_chain_models() {
    // gpt-4.1 $0.024 fits $0.03, claude $0.0525 does not.
    assert_eq!(
        select(
            "auto",
            &[
                ("x-gateway-quality", "0.95"),
                ("x-gateway-cost-budget-usd", "0.03")
            ]
        ),
        choice("gpt-4.1", &[], "rule:quality", false)
    );
}

#[test]
fn auto_falls_back_to_the_pick_chain_then_to_every_named_model() {
    // Tier chain first: claude is out, gemini ($0.0075) is in its chain and fits $0.01.
    let s = configured(
        None,
        json!({"rules": [{"when": {"task_contains": ["x"]}, "model": "claude-sonnet-4-5"}]}),
    )
    .unwrap();
    assert_eq!(
        select_with(
            &s,
            "auto",
            &[
                ("x-gateway-task", "x"),
                ("x-gateway-cost-budget-usd", "0.01")
            ]
        ),
        choice("gemini-2.5-flash", &[], "rule:task", false)
    );
    // Neither gpt-4.1 ($0.024) nor its chain's claude fits $0.02: the other named models, in
    // order (rules' models, then the default, then the tiers), give gemini then deepseek.
    assert_eq!(
        select(
            "auto",
            &[
                ("x-gateway-quality", "0.95"),
                ("x-gateway-cost-budget-usd", "0.02")
            ]
        ),
        choice(
            "gemini-2.5-flash",
            &["deepseek-v3.2"],
            "rule:quality",
            false
        )
    );
}

#[test]
fn auto_over_budget_picks_the_cheapest_named_model_and_chains_the_rest_by_cost() {
    // Even deepseek ($0.00126) is above $0.001.
    assert_eq!(
        select(
            "auto",
            &[
                ("x-gateway-quality", "0.95"),
                ("x-gateway-cost-budget-usd", "0.001")
            ]
        ),
        choice(
            "deepseek-v3.2",
            &["gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4-5"],
            "rule:quality",
            true
        )
    );
}

#[test]
fn an_unpriced_model_is_never_excluded_by_a_budget() {
    let s = configured(
        Some(json!({"custom": ["gpt-4.1", "house-model", "deepseek-v3.2"]})),
        json!({}),
    )
    .unwrap();
    assert_eq!(
        select_with(
            &s,
            "tier:custom",
            &[("x-gateway-cost-budget-usd", "0.000001")]
        ),
        choice("house-model", &[], "tier:custom", false)
    );
}

#[test]
fn the_budget_compares_prompt_plus_maximum_output() {
    // gpt-4.1 for 1000 prompt tokens alone is $0.008, within $0.01; with 500 output tokens it
    // is $0.024, beyond it.
    let s = Selector::default();
    let h = hints(&[("x-gateway-cost-budget-usd", "0.01")]);
    let prompt_only = TokenEstimate {
        prompt_tokens: 1000,
        max_output_tokens: 0,
    };
    let p = PriceTable::builtin();
    assert!(
        !s.select(&p, "gpt-4.1", &h, &prompt_only, &|_| true)
            .unwrap()
            .over_budget
    );
    assert!(
        s.select(&p, "gpt-4.1", &h, &TOKENS_1000_500, &|_| true)
            .unwrap()
            .over_budget
    );
}

// ---- configuration ----

#[test]
fn the_designs_rules_written_as_configuration_are_the_defaults() {
    let s = configured(
        Some(json!({
            "high-quality": ["gpt-4.1", "claude-sonnet-4-5"],
            "balanced": ["gemini-2.5-flash", "claude-sonnet-4-5"],
            "cost-effective": ["deepseek-v3.2", "gemini-2.5-flash"],
            "ultra-cheap": ["deepseek-v3.2"]
        })),
        json!({
            "rules": [
                {"when": {"quality_at_least": 0.9}, "model": "gpt-4.1"},
                {"when": {"task_contains": ["reasoning", "analysis"]}, "model": "claude-sonnet-4-5"},
                {"when": {"latency_budget_below_ms": 500}, "model": "gemini-2.5-flash"},
                {"when": {"cost_budget_below_usd": "0.01"}, "model": "deepseek-v3.2"}
            ],
            "default_model": "gemini-2.5-flash",
            "default_max_output_tokens": 1024
        }),
    )
    .unwrap();
    assert_eq!(s, Selector::default());
    assert_eq!(configured(None, json!({})).unwrap(), Selector::default());
    assert_eq!(Selector::default().default_max_output_tokens(), 1024);
}

#[test]
fn configured_rules_replace_the_default_rules() {
    let s = configured(
        None,
        json!({
            "rules": [
                {"when": {"task_contains": ["Code"]}, "model": "gpt-5"},
                {"name": "cheap-and-fast", "when": {"latency_budget_below_ms": 1000,
                  "cost_budget_below_usd": "0.05"}, "model": "deepseek-v3.2"},
                {"when": {"quality_at_least": 0.5, "task_contains": ["chat"]}, "model": "gpt-5-mini"}
            ],
            "default_model": "claude-sonnet-4-5",
            "default_max_output_tokens": 256
        }),
    )
    .unwrap();
    assert_eq!(s.default_max_output_tokens(), 256);
    // The default quality rule is gone.
    let c = select_with(&s, "auto", &[("x-gateway-quality", "0.95")]);
    assert_eq!(
        (c.model.as_str(), c.reason.as_str()),
        ("claude-sonnet-4-5", "default")
    );
    // Task words are compared lowercased; a single-condition rule is named by its kind.
    let c = select_with(&s, "auto", &[("x-gateway-task", "code")]);
    assert_eq!(
        (c.model.as_str(), c.reason.as_str()),
        ("gpt-5", "rule:task")
    );
    // Every condition of a rule must hold.
    let c = select_with(&s, "auto", &[("x-gateway-latency-budget-ms", "800")]);
    assert_eq!(c.reason, "default");
    let c = select_with(
        &s,
        "auto",
        &[
            ("x-gateway-latency-budget-ms", "800"),
            ("x-gateway-cost-budget-usd", "0.04"),
        ],
    );
    assert_eq!(c.reason, "rule:cheap-and-fast");
    // A multi-condition rule without a name is named by its 1-based position.
    let c = select_with(
        &s,
        "auto",
        &[("x-gateway-quality", "0.6"), ("x-gateway-task", "chat")],
    );
    assert_eq!(
        (c.model.as_str(), c.reason.as_str()),
        ("gpt-5-mini", "rule:3")
    );
}

#[test]
fn an_empty_rule_list_leaves_only_the_default_model() {
    let s = configured(None, json!({"rules": []})).unwrap();
    let c = select_with(&s, "auto", &[("x-gateway-quality", "1")]);
    assert_eq!(
        (c.model.as_str(), c.reason.as_str()),
        ("gemini-2.5-flash", "default")
    );
}

#[test]
fn configured_tiers_replace_the_default_tiers() {
    let s = configured(
        Some(json!({"fast": ["gemini-2.5-flash", "gpt-5-mini"], "smart": ["gpt-5"]})),
        json!({}),
    )
    .unwrap();
    assert_eq!(
        select_with(&s, "tier:fast", &[]),
        choice("gemini-2.5-flash", &["gpt-5-mini"], "tier:fast", false)
    );
    let e = s
        .select(
            &PriceTable::builtin(),
            "tier:balanced",
            &Hints::default(),
            &TOKENS_1000_500,
            &|_| true,
        )
        .unwrap_err();
    let (_, message) = invalid_param(e);
    assert!(message.contains("tier:fast, tier:smart"), "{message}");
    // auto's chain comes from the configured tiers; gpt-4.1 is in none of them.
    assert_eq!(
        select_with(&s, "auto", &[]),
        choice("gemini-2.5-flash", &["gpt-5-mini"], "default", false)
    );
    assert_eq!(
        select_with(&s, "auto", &[("x-gateway-quality", "1")]),
        choice("gpt-4.1", &[], "rule:quality", false)
    );
}

#[test]
fn auto_chains_from_the_first_tier_by_name_that_lists_the_pick() {
    let s = configured(
        Some(json!({"b": ["x", "gemini-2.5-flash", "y"], "a": ["gemini-2.5-flash", "z"]})),
        json!({}),
    )
    .unwrap();
    assert_eq!(select_with(&s, "auto", &[]).chain, vec!["z"]);
}

#[test]
fn no_tiers_at_all_is_allowed_and_every_tier_is_unknown() {
    let s = configured(Some(json!({})), json!({})).unwrap();
    assert_eq!(select_with(&s, "auto", &[]).chain, Vec::<String>::new());
    let e = s
        .select(
            &PriceTable::builtin(),
            "tier:balanced",
            &Hints::default(),
            &TOKENS_1000_500,
            &|_| true,
        )
        .unwrap_err();
    assert!(invalid_param(e).1.contains("No tier is configured"));
}

#[test]
fn bad_tiers_are_config_errors_naming_the_tier() {
    let bad = |tiers: Value| config_error(Some(tiers), json!({}));
    assert_eq!(
        bad(json!({"balanced": []})),
        "tiers.balanced: lists no model"
    );
    assert_eq!(
        bad(json!({"balanced": ["a", ""]})),
        "tiers.balanced[1]: a model name is empty"
    );
    assert_eq!(
        bad(json!({"balanced": ["a", " b"]})),
        "tiers.balanced[1]: the model name \" b\" has spaces around it"
    );
    assert_eq!(
        bad(json!({"balanced": ["a", "b", "a"]})),
        "tiers.balanced: lists \"a\" twice"
    );
    assert!(bad(json!({"balanced": ["auto"]}))
        .starts_with("tiers.balanced[0]: \"auto\" is a selection"));
    assert!(bad(json!({"balanced": ["tier:x"]})).contains("is a selection"));
    assert_eq!(bad(json!({"": ["a"]})), "tiers: a tier name is empty");
    assert!(
        bad(json!({"high quality": ["a"]})).starts_with("tiers: the tier name \"high quality\"")
    );
    assert!(bad(json!({ "t".repeat(65): ["a"] })).contains("longer than 64"));
}

#[test]
fn bad_rules_are_config_errors_naming_the_rule() {
    let bad = |rules: Value| config_error(None, json!({ "rules": rules }));
    assert!(bad(json!([{"when": {}, "model": "a"}]))
        .starts_with("selection.rules[0].when: names no condition"));
    assert!(
        bad(json!([{"when": {"quality_at_least": 1.5}, "model": "a"}]))
            .starts_with("selection.rules[0].when.quality_at_least: must be a number from 0 to 1")
    );
    assert!(
        bad(json!([{"when": {"quality_at_least": -0.1}, "model": "a"}]))
            .starts_with("selection.rules[0].when.quality_at_least")
    );
    assert_eq!(
        bad(json!([{"when": {"task_contains": []}, "model": "a"}])),
        "selection.rules[0].when.task_contains: lists no word"
    );
    assert_eq!(
        bad(json!([{"when": {"task_contains": ["ok", " "]}, "model": "a"}])),
        "selection.rules[0].when.task_contains: a word is empty"
    );
    assert!(
        bad(json!([{"when": {"task_contains": ["w".repeat(65)]}, "model": "a"}]))
            .contains("longer than the 64 characters")
    );
    assert!(
        bad(json!([{"when": {"latency_budget_below_ms": 0}, "model": "a"}]))
            .starts_with("selection.rules[0].when.latency_budget_below_ms: must be above 0")
    );
    assert!(
        bad(json!([{"when": {"cost_budget_below_usd": "$1"}, "model": "a"}])).starts_with(
            "selection.rules[0].when.cost_budget_below_usd: \"$1\" is not a plain decimal"
        )
    );
    assert!(
        bad(json!([{"when": {"cost_budget_below_usd": "0"}, "model": "a"}]))
            .contains("must be above 0")
    );
    assert_eq!(
        bad(json!([{"when": {"quality_at_least": 0.5}, "model": ""}])),
        "selection.rules[0].model: a model name is empty"
    );
    assert!(
        bad(json!([{"when": {"quality_at_least": 0.5}, "model": "auto"}]))
            .contains("is a selection")
    );
    assert!(
        bad(json!([{"name": "has space", "when": {"quality_at_least": 0.5}, "model": "a"}]))
            .starts_with("selection.rules[0].name: the rule name \"has space\"")
    );
}

#[test]
fn two_rules_with_the_same_reason_are_a_config_error() {
    let m = config_error(
        None,
        json!({"rules": [
            {"when": {"task_contains": ["code"]}, "model": "a"},
            {"when": {"task_contains": ["chat"]}, "model": "b"}
        ]}),
    );
    assert_eq!(
        m,
        "selection.rules[1]: its reason would be rule:task, like selection.rules[0]'s; give one \
         of them a \"name\""
    );
    // Naming one resolves it.
    configured(
        None,
        json!({"rules": [
            {"when": {"task_contains": ["code"]}, "model": "a"},
            {"name": "chat", "when": {"task_contains": ["chat"]}, "model": "b"}
        ]}),
    )
    .unwrap();
    // An explicit name may not take a derived one.
    let m = config_error(
        None,
        json!({"rules": [
            {"name": "quality", "when": {"task_contains": ["code"]}, "model": "a"},
            {"when": {"quality_at_least": 0.5}, "model": "b"}
        ]}),
    );
    assert!(m.contains("rule:quality"), "{m}");
}

#[test]
fn bad_defaults_are_config_errors() {
    assert_eq!(
        config_error(None, json!({"default_model": ""})),
        "selection.default_model: a model name is empty"
    );
    assert!(
        config_error(None, json!({"default_model": "tier:balanced"})).contains("is a selection")
    );
    assert_eq!(
        config_error(None, json!({"default_max_output_tokens": 0})),
        "selection.default_max_output_tokens: must be from 1 to 1000000, not 0"
    );
    assert!(
        config_error(None, json!({"default_max_output_tokens": 2_000_000})).contains("not 2000000")
    );
}

#[test]
fn unknown_selection_fields_are_refused() {
    for doc in [
        json!({"rule": []}),
        json!({"rules": [{"when": {"quality_above": 0.5}, "model": "a"}]}),
        json!({"rules": [{"when": {"quality_at_least": 0.5}, "model": "a", "tier": "b"}]}),
        json!({"rules": [{"when": {"cost_budget_below_usd": 0.01}, "model": "a"}]}),
    ] {
        assert!(
            serde_json::from_value::<SelectionConfig>(doc.clone()).is_err(),
            "{doc}"
        );
    }
}

// ---- token estimates ----

#[test]
fn a_chat_body_is_estimated_from_its_text_and_message_overheads() {
    let body = json!({
        "model": "auto",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Hello, world"},
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}
            ]}
        ],
        "max_tokens": 100
    });
    // 14 + 12 = 26 bytes -> 7 tokens; 2 messages x 4; 3 for the reply's priming.
    assert_eq!(
        estimate_tokens(body.as_object().unwrap(), 1024),
        TokenEstimate {
            prompt_tokens: 7 + 8 + 3,
            max_output_tokens: 100
        }
    );
}

#[test]
fn tools_and_tool_calls_count_as_their_json() {
    let tools = json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]);
    let calls =
        json!([{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}]);
    let body = json!({
        "messages": [{"role": "assistant", "content": null, "tool_calls": calls}],
        "tools": tools
    });
    let bytes = (tools.to_string().len() + calls.to_string().len()) as u64;
    assert_eq!(
        estimate_tokens(body.as_object().unwrap(), 1024).prompt_tokens,
        bytes.div_ceil(4) + 4 + 3
    );
}

#[test]
fn prompts_and_inputs_have_no_message_overhead() {
    let est = |body: Value| estimate_tokens(body.as_object().unwrap(), 1024).prompt_tokens;
    assert_eq!(est(json!({"prompt": "abcdefghi"})), 3);
    assert_eq!(est(json!({"prompt": ["abcd", "efgh"]})), 2);
    // Token ids count one each.
    assert_eq!(est(json!({"prompt": [1, 2, 3]})), 3);
    assert_eq!(est(json!({"input": [[1, 2], [3, 4, 5]]})), 5);
    assert_eq!(est(json!({"input": "abcd", "instructions": "efgh"})), 2);
    // Responses API items are messages.
    assert_eq!(
        est(json!({"input": [{"role": "user", "content": "abcd"}]})),
        1 + 4 + 3
    );
}

#[test]
fn the_output_bound_prefers_max_completion_tokens_then_max_tokens_then_max_output_tokens() {
    let out = |body: Value| estimate_tokens(body.as_object().unwrap(), 1024).max_output_tokens;
    assert_eq!(
        out(json!({"max_completion_tokens": 10, "max_tokens": 20, "max_output_tokens": 30})),
        10
    );
    assert_eq!(out(json!({"max_tokens": 20, "max_output_tokens": 30})), 20);
    assert_eq!(out(json!({"max_output_tokens": 30})), 30);
    assert_eq!(out(json!({})), 1024);
    assert_eq!(out(json!({"max_tokens": -1})), 1024);
    // Each of n answers may use the whole bound.
    assert_eq!(out(json!({"max_tokens": 20, "n": 3})), 60);
}

#[test]
fn odd_json_never_panics_and_counts_what_it_can() {
    let est = |body: Value| estimate_tokens(body.as_object().unwrap(), 7);
    for body in [
        json!({}),
        json!({"messages": "hello"}),
        json!({"messages": [1, null, "x", {"content": 5}, {"content": [null, 3, {"text": 4}]}]}),
        json!({"prompt": {"a": 1}, "input": true, "tools": null, "n": "x"}),
        json!({"max_tokens": u64::MAX, "n": u64::MAX}),
    ] {
        est(body);
    }
    // Five messages with no readable text: overheads only.
    assert_eq!(
        est(json!({"messages": [1, null, "x", {"content": 5}, {}]})).prompt_tokens,
        5 * 4 + 3
    );
    assert_eq!(
        est(json!({"max_tokens": u64::MAX, "n": 2})).max_output_tokens,
        u64::MAX
    );
}

// ---- POST /v1/gateway/estimate ----

fn answer(body: Value, pairs: &[(&str, &str)]) -> Value {
    let bytes = estimate_answer(
        &Selector::default(),
        &PriceTable::builtin(),
        body.to_string().as_bytes(),
        &headers(pairs),
        None,
    )
    .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn answer_error(body: &[u8], pairs: &[(&str, &str)]) -> GatewayError {
    estimate_answer(
        &Selector::default(),
        &PriceTable::builtin(),
        body,
        &headers(pairs),
        None,
    )
    .unwrap_err()
}

#[test]
fn estimate_from_token_counts_on_a_concrete_model() {
    assert_eq!(
        answer(
            json!({"model": "gpt-4.1", "prompt_tokens": 1000, "max_output_tokens": 500}),
            &[]
        ),
        json!({
            "model": "gpt-4.1",
            "prompt_tokens": 1000,
            "max_output_tokens": 500,
            "priced": true,
            "cost_usd": {"min": "0.008", "max": "0.024"}
        })
    );
}

#[test]
fn estimate_from_token_counts_through_auto_with_hints() {
    assert_eq!(
        answer(
            json!({"model": "auto", "prompt_tokens": 1000, "max_output_tokens": 500}),
            &[
                ("x-gateway-quality", "0.95"),
                ("x-gateway-cost-budget-usd", "0.001")
            ]
        ),
        json!({
            "model": "deepseek-v3.2",
            "requested": "auto",
            "selection": "rule:quality",
            "chain": ["gemini-2.5-flash", "gpt-4.1", "claude-sonnet-4-5"],
            "over_budget": true,
            "prompt_tokens": 1000,
            "max_output_tokens": 500,
            "priced": true,
            "cost_usd": {"min": "0.00042", "max": "0.00126"}
        })
    );
}

#[test]
fn estimate_from_a_chat_body_through_a_tier() {
    // "abcdefgh" is 2 tokens, plus 4 for the message and 3 for the priming: 9 prompt tokens.
    // deepseek: 9 x 0.42e-6 = 0.00000378; + 100 x 1.68e-6 = 0.000168 -> 0.00017178.
    assert_eq!(
        answer(
            json!({
                "model": "tier:ultra-cheap",
                "messages": [{"role": "user", "content": "abcdefgh"}],
                "max_tokens": 100
            }),
            &[]
        ),
        json!({
            "model": "deepseek-v3.2",
            "requested": "tier:ultra-cheap",
            "selection": "tier:ultra-cheap",
            "chain": [],
            "over_budget": false,
            "prompt_tokens": 9,
            "max_output_tokens": 100,
            "priced": true,
            "cost_usd": {"min": "0.00000378", "max": "0.00017178"}
        })
    );
}

#[test]
fn estimate_uses_the_default_output_when_the_body_sets_none() {
    let a = answer(json!({"model": "gpt-4.1", "prompt": "abcd"}), &[]);
    assert_eq!(a["prompt_tokens"], 1);
    assert_eq!(a["max_output_tokens"], 1024);
}

#[test]
fn estimate_of_an_unpriced_model_says_so() {
    assert_eq!(
        answer(json!({"model": "house-model", "prompt_tokens": 10}), &[]),
        json!({
            "model": "house-model",
            "prompt_tokens": 10,
            "max_output_tokens": 1024,
            "priced": false,
            "cost_usd": null
        })
    );
}

#[test]
fn estimate_errors_are_400s_naming_the_field() {
    assert!(matches!(
        answer_error(b"{not json", &[]),
        GatewayError::MalformedJson { .. }
    ));
    assert!(matches!(
        answer_error(b"[1, 2]", &[]),
        GatewayError::MalformedJson { .. }
    ));
    assert_eq!(
        answer_error(br#"{"prompt_tokens": 3}"#, &[]),
        GatewayError::MissingField { param: "model" }
    );
    assert_eq!(
        answer_error(br#"{"model": "gpt-4.1"}"#, &[]),
        GatewayError::MissingField { param: "messages" }
    );
    let param = |body: &[u8], pairs: &[(&str, &str)]| invalid_param(answer_error(body, pairs)).0;
    assert_eq!(param(br#"{"model": 5, "prompt_tokens": 3}"#, &[]), "model");
    assert_eq!(
        param(br#"{"model": " ", "prompt_tokens": 3}"#, &[]),
        "model"
    );
    assert_eq!(
        param(br#"{"model": "gpt-4.1", "prompt_tokens": -3}"#, &[]),
        "prompt_tokens"
    );
    assert_eq!(
        param(br#"{"model": "gpt-4.1", "prompt_tokens": 2.5}"#, &[]),
        "prompt_tokens"
    );
    assert_eq!(
        param(
            br#"{"model": "gpt-4.1", "prompt_tokens": 3, "max_output_tokens": -1}"#,
            &[]
        ),
        "max_output_tokens"
    );
    assert_eq!(
        param(
            br#"{"model": "gpt-4.1", "prompt": "x", "max_tokens": "10"}"#,
            &[]
        ),
        "max_tokens"
    );
    assert_eq!(
        param(br#"{"model": "gpt-4.1", "prompt": "x", "n": 0}"#, &[]),
        "n"
    );
    assert_eq!(
        param(br#"{"model": "gpt-4.1", "messages": "hi"}"#, &[]),
        "messages"
    );
    assert_eq!(param(br#"{"model": "gpt-4.1", "input": 5}"#, &[]), "input");
    assert_eq!(
        param(br#"{"model": "tier:nope", "prompt_tokens": 3}"#, &[]),
        "model"
    );
    assert_eq!(
        param(
            br#"{"model": "auto", "prompt_tokens": 3}"#,
            &[("x-gateway-quality", "2")]
        ),
        "x-gateway-quality"
    );
}
