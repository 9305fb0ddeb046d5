//! Every pricing rule, against figures computed by hand.

use super::*;

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

fn cost(table: &PriceTable, model: &str, u: Usage) -> String {
    table.cost(model, &u).expect("priced").to_string()
}

fn table(json: &str) -> PriceTable {
    let overrides: BTreeMap<String, PriceConfig> = serde_json::from_str(json).unwrap();
    PriceTable::with_overrides(&overrides).unwrap()
}

#[test]
fn the_catalogue_parses_whole_and_has_the_designs_prices() {
    let parsed: Catalogue = serde_json::from_str(CATALOGUE).unwrap();
    let t = PriceTable::builtin();
    assert_eq!(t.models().count(), parsed.models.len(), "every entry valid");
    let io = |m: &str| {
        let p = t.get(m).unwrap();
        (p.base.input, p.base.output, p.base.cached_input)
    };
    // Picodollars per token = micro-dollars per million: $8 / $32 per million.
    assert_eq!(io("gpt-4.1"), (8_000_000, 32_000_000, 8_000_000));
    assert_eq!(
        io("claude-sonnet-4-5"),
        (15_000_000, 75_000_000, 15_000_000)
    );
    assert_eq!(io("gemini-2.5-flash"), (2_500_000, 10_000_000, 2_500_000));
    assert_eq!(io("deepseek-v3.2"), (420_000, 1_680_000, 420_000));
}

#[test]
fn input_and_output_are_priced_per_million_tokens() {
    let t = PriceTable::builtin();
    // 1,000 x $8/M + 500 x $32/M = $0.008 + $0.016.
    assert_eq!(cost(&t, "gpt-4.1", usage(1000, 0, 500, 0)), "0.024");
    // 1M input tokens of gpt-4.1 cost $8 (the design printed $8,000).
    assert_eq!(cost(&t, "gpt-4.1", usage(1_000_000, 0, 0, 0)), "8");
    // 7 x $0.42/M + 3 x $1.68/M = 0.00000294 + 0.00000504.
    assert_eq!(cost(&t, "deepseek-v3.2", usage(7, 0, 3, 0)), "0.00000798");
}

#[test]
fn cached_prompt_tokens_are_a_part_of_the_prompt_at_their_own_rate() {
    let t = PriceTable::builtin();
    // gpt-4o: 500 fresh x $2.50/M + 1,500 cached x $1.25/M + 300 x $10/M
    //       = 0.00125 + 0.001875 + 0.003.
    assert_eq!(cost(&t, "gpt-4o", usage(2000, 1500, 300, 0)), "0.006125");
    // Counted once: not 2,000 + 1,500 prompt tokens.
    assert_ne!(cost(&t, "gpt-4o", usage(2000, 1500, 300, 0)), "0.009875");
}

#[test]
fn without_a_cached_rate_cached_tokens_cost_the_input_rate() {
    let t = PriceTable::builtin();
    // The design's models have no cached discount: 1,000 x $8/M whatever was cached.
    assert_eq!(cost(&t, "gpt-4.1", usage(1000, 600, 0, 0)), "0.008");
}

#[test]
fn reasoning_tokens_are_a_part_of_the_completion() {
    let t = PriceTable::builtin();
    // o3: 100 x $2/M + 1,000 x $8/M; the 800 reasoning tokens are inside the 1,000.
    assert_eq!(cost(&t, "o3", usage(100, 0, 1000, 800)), "0.0082");
    // A provider that prices reasoning apart: 10 x $1/M + 40 x $4/M + 60 x $2/M.
    let t = table(r#"{"thinker":{"input":1,"output":4,"reasoning":2}}"#);
    assert_eq!(cost(&t, "thinker", usage(10, 0, 100, 60)), "0.00029");
}

#[test]
fn cache_writes_are_priced_apart_where_the_model_says_so() {
    let t = PriceTable::builtin();
    // claude-opus-4-1: 4,000 fresh x $15 + 4,000 cached x $1.50 + 2,000 written x $18.75
    // + 100 out x $75 (per million) = 0.06 + 0.006 + 0.0375 + 0.0075.
    let u = Usage {
        cache_write_tokens: 2000,
        ..usage(10_000, 4000, 100, 0)
    };
    assert_eq!(cost(&t, "claude-opus-4-1", u), "0.111");
}

#[test]
fn above_a_long_context_threshold_the_whole_request_takes_the_tiers_rates() {
    let t = PriceTable::builtin();
    // gemini-2.5-pro: at 200,000 prompt tokens still the base: 200,000 x $1.25 + 1,000 x $10.
    assert_eq!(
        cost(&t, "gemini-2.5-pro", usage(200_000, 0, 1000, 0)),
        "0.26"
    );
    // One more: every token at the tier's rates, 200,001 x $2.50 + 1,000 x $15.
    assert_eq!(
        cost(&t, "gemini-2.5-pro", usage(200_001, 0, 1000, 0)),
        "0.5150025"
    );
    // Tiers given in any order; the highest crossed applies; unnamed rates are the base's.
    let t = table(
        r#"{"m":{"input":1,"output":2,"tiers":[
            {"above_prompt_tokens":100,"input":3},
            {"above_prompt_tokens":10,"input":2,"output":5}]}}"#,
    );
    assert_eq!(cost(&t, "m", usage(10, 0, 1, 0)), "0.000012"); // 10x1 + 1x2
    assert_eq!(cost(&t, "m", usage(11, 0, 1, 0)), "0.000027"); // 11x2 + 1x5
    assert_eq!(cost(&t, "m", usage(101, 0, 1, 0)), "0.000305"); // 101x3 + 1x2
}

#[test]
fn a_model_without_a_price_is_unpriced_not_free() {
    let t = PriceTable::builtin();
    assert_eq!(t.cost("my-own-model", &usage(10, 0, 10, 0)), None);
}

#[test]
fn snapshots_and_provider_prefixes_take_their_models_price() {
    let t = PriceTable::builtin();
    assert_eq!(t.get("gpt-4o-2024-08-06"), t.get("gpt-4o"));
    assert_eq!(t.get("openai/gpt-4o-mini"), t.get("gpt-4o-mini"));
    assert_eq!(
        t.get("claude-haiku-4-5-20251001"),
        t.get("claude-haiku-4-5")
    );
    assert!(t.get("gpt-4o-mini").is_some());
    assert_eq!(t.get("gpt-4o-2024"), None);
}

#[test]
fn configured_prices_replace_and_add_entries() {
    let t = table(r#"{"gpt-4.1":{"input":2,"output":8},"house":{"input":0.5,"output":0.5}}"#);
    assert_eq!(cost(&t, "gpt-4.1", usage(1000, 0, 1000, 0)), "0.01");
    assert_eq!(cost(&t, "house", usage(2, 0, 2, 0)), "0.000002");
    assert!(t.get("gpt-4o").is_some(), "the rest of the catalogue stays");
}

#[test]
fn bad_prices_are_refused_naming_the_entry() {
    for bad in [
        r#"{"m":{"input":-1,"output":1}}"#,
        r#"{"m":{"input":1,"output":1,"tiers":[{"above_prompt_tokens":5},{"above_prompt_tokens":5}]}}"#,
        r#"{"":{"input":1,"output":1}}"#,
    ] {
        let overrides: BTreeMap<String, PriceConfig> = serde_json::from_str(bad).unwrap();
        let err = PriceTable::with_overrides(&overrides)
            .unwrap_err()
            .to_string();
        assert!(err.contains("prices"), "{err}");
    }
    assert!(serde_json::from_str::<BTreeMap<String, PriceConfig>>(
        r#"{"m":{"input":1,"output":1,"cahced_input":1}}"#
    )
    .is_err());
}

#[test]
fn an_estimate_runs_from_the_prompt_alone_to_the_prompt_and_the_maximum_output() {
    let t = PriceTable::builtin();
    let (min, max) = t.get("gpt-4.1").unwrap().estimate(1000, 500);
    assert_eq!(
        (min.to_string(), max.to_string()),
        ("0.008".into(), "0.024".into())
    );
}

#[test]
fn the_designs_smart_routing_mix_costs_2_985_per_million_tokens() {
    // 5% gpt-4.1, 10% claude-sonnet-4-5, 35% gemini-2.5-flash, 50% deepseek-v3.2 of 1M tokens
    // at one (input) price per model: $2.985, a 62.7% saving on $8 (the design says 87%).
    let t = PriceTable::builtin();
    let mix = [
        ("gpt-4.1", 50_000),
        ("claude-sonnet-4-5", 100_000),
        ("gemini-2.5-flash", 350_000),
        ("deepseek-v3.2", 500_000),
    ];
    let total: Money = mix
        .iter()
        .map(|(m, n)| t.cost(m, &usage(*n, 0, 0, 0)).unwrap())
        .sum();
    assert_eq!(total.to_string(), "2.985");
    let all = t.cost("gpt-4.1", &usage(1_000_000, 0, 0, 0)).unwrap();
    let saving_permille = (all.picos() - total.picos()) * 1000 / all.picos();
    assert_eq!(saving_permille, 626); // 62.69%
}

#[test]
fn usage_is_read_with_its_details_and_parts_never_exceed_their_whole() {
    let u: Usage = serde_json::from_str(
        r#"{"prompt_tokens":2000,"completion_tokens":300,"total_tokens":2300,
            "prompt_tokens_details":{"cached_tokens":1500,"audio_tokens":0},
            "completion_tokens_details":{"reasoning_tokens":120}}"#,
    )
    .unwrap();
    assert_eq!(
        (
            u.prompt_tokens,
            u.cached_tokens,
            u.completion_tokens,
            u.reasoning_tokens
        ),
        (2000, 1500, 300, 120)
    );
    let u: Usage = serde_json::from_str(
        r#"{"prompt_tokens":10,"completion_tokens":5,
            "prompt_tokens_details":{"cached_tokens":99},
            "completion_tokens_details":{"reasoning_tokens":99}}"#,
    )
    .unwrap();
    assert_eq!(
        (u.cached_tokens, u.reasoning_tokens, u.total_tokens),
        (10, 5, 15)
    );
    let u: Usage =
        serde_json::from_str(r#"{"prompt_tokens":4,"prompt_tokens_details":null}"#).unwrap();
    assert_eq!((u.prompt_tokens, u.cached_tokens), (4, 0));
}
