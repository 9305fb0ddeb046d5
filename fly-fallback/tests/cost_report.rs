//! `fly-fallback cost-report`, run as a user would, against tests/fixtures/cost-report.log.
//!
//! The fixture (prices: the built-in table; per million tokens input / output):
//! gpt-4.1 $8 / $32, claude-sonnet-4-5 $15 / $75, gemini-2.5-flash $2.50 / $10,
//! deepseek-v3.2 $0.42 / $1.68, none with a cached discount.
//!
//! | line | day   | key  | model             | upstream | cache  | prompt (cached) | compl. (reas.) | cost_usd        |
//! |------|-------|------|-------------------|----------|--------|-----------------|----------------|-----------------|
//! | 1    | 11-27 | A    | gpt-4.1           | us-east  | miss   | 1,000           | 500            | 0.024           |
//! | 2    | 11-27 | A    | claude-sonnet-4-5 | us-east  | miss   | 2,000           | 400            | 0.06            |
//! | 3    | 11-27 | B    | deepseek-v3.2     | eu-west  | miss   | 10,000 (4,000)  | 2,000 (500)    | 0.00756         |
//! | 4    | 11-27 | B    | gpt-4.1           | -        | hit    | 1,000           | 500            | 0 (saved 0.024) |
//! | 5    | an `upstream_down` event: skipped silently                                                             |
//! | 6    | garbage: not JSON                                                                                      |
//! | 7    | 11-28 | A    | my-own-model      | us-east  | miss   | 300             | 100            | unpriced        |
//! | 8    | 11-28 | A    | gpt-4.1           | us-east  | miss   | 2,000           | 1,000          | 0.048 estimated |
//! | 9    | 11-28 | B    | deepseek-v3.2     | eu-west  | bypass | 50,000          | 10,000         | 0.0378          |
//! | 10   | 11-28 | B    | claude-sonnet-4-5 | -        | hit    | 2,000           | 400            | 0 (saved 0.06)  |
//! | 11   | 11-28 | A    | gemini-2.5-flash  | eu-west  | miss   | 4,000           | 1,000          | 0.02            |
//! | 12   | 11-28 | -    | - (a 401)         | -        | -      | 0               | 0              | -               |
//! | 13   | JSON without `time`: not a request record                                                              |
//!
//! Each logged cost is tokens × rates: line 1 is 1,000 × 8 + 500 × 32 = $0.024 per million...
//! i.e. 0.008 + 0.016; line 3 is 10,000 × 0.42 + 2,000 × 1.68 (per M) = 0.0042 + 0.00336.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/cost-report.log")
}

const DESIGN_MIX: &str = "mix=gpt-4.1:5,claude-sonnet-4-5:10,gemini-2.5-flash:35,deepseek-v3.2:50";

fn command(args: &[&str]) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fly-fallback"));
    c.arg("cost-report")
        .args(args)
        .env_remove("GATEWAY_CONFIG")
        .env_remove("COST_REPORT_FONT")
        .stdin(Stdio::null());
    c
}

fn run(args: &[&str]) -> Output {
    command(args).output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn ok(args: &[&str]) -> Output {
    let o = run(args);
    assert_eq!(o.status.code(), Some(0), "{args:?}\n{}", stderr(&o));
    o
}

fn json(args: &[&str]) -> Value {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = ok(&all);
    serde_json::from_slice(&o.stdout).expect("one JSON document")
}

fn fixture_json(extra: &[&str]) -> Value {
    let f = fixture();
    let mut args = vec![f.to_str().expect("utf-8 path")];
    args.extend_from_slice(extra);
    json(&args)
}

/// `[name, requests, tokens, spend, share]` of each group.
fn groups(v: &Value) -> Vec<(String, u64, u64, String, String)> {
    v.as_array()
        .expect("an array")
        .iter()
        .map(|g| {
            (
                g["name"].as_str().unwrap_or("?").to_string(),
                g["requests"].as_u64().unwrap_or(u64::MAX),
                g["tokens"].as_u64().unwrap_or(u64::MAX),
                g["spend_usd"].as_str().unwrap_or("?").to_string(),
                g["share_pct"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}

fn g(
    name: &str,
    requests: u64,
    tokens: u64,
    spend: &str,
    share: &str,
) -> (String, u64, u64, String, String) {
    (name.into(), requests, tokens, spend.into(), share.into())
}

#[test]
fn json_totals_groups_and_cache_match_hand_computed_figures() {
    let v = fixture_json(&[]);
    let input = &v["input"];
    // 13 lines: 10 request records, 1 event (silent), 1 not JSON, 1 not a request record.
    assert_eq!(input["lines"], 13);
    assert_eq!(input["requests"], 10);
    assert_eq!(input["events"], 1);
    assert_eq!(input["skipped"], 2);
    assert_eq!(input["not_json"], 1);
    assert_eq!(input["not_a_request"], 1);
    let examples = input["skipped_examples"].to_string();
    assert!(
        examples.contains("cost-report.log:6: not JSON"),
        "{examples}"
    );
    assert!(
        examples.contains("cost-report.log:13: not a request record"),
        "{examples}"
    );

    let t = &v["totals"];
    assert_eq!(t["requests"], 10);
    // 1,000 + 2,000 + 10,000 + 1,000 + 300 + 2,000 + 50,000 + 2,000 + 4,000 + 0.
    assert_eq!(t["prompt_tokens"], 72_300);
    assert_eq!(t["cached_tokens"], 4_000);
    // 500 + 400 + 2,000 + 500 + 100 + 1,000 + 10,000 + 400 + 1,000.
    assert_eq!(t["completion_tokens"], 15_900);
    assert_eq!(t["reasoning_tokens"], 500);
    assert_eq!(t["total_tokens"], 88_200);
    // 0.024 + 0.06 + 0.00756 + 0 + 0.048 + 0.0378 + 0 + 0.02, exactly (in floats:
    // 0.19736000000000004).
    assert_eq!(t["spend_usd"], "0.19736");
    assert_eq!(t["estimated_requests"], 1);
    assert_eq!(t["unpriced_requests"], 1);
    assert_eq!(t["first_day"], "2026-11-27");
    assert_eq!(t["last_day"], "2026-11-28");

    // Shares of 0.19736, two decimals: 0.072 / 0.19736 = 36.4816%, 0.06 → 30.4013%,
    // 0.04536 → 22.9834%, 0.02 → 10.1338%.
    assert_eq!(
        groups(&v["by_model"]),
        [
            g("gpt-4.1", 3, 6_000, "0.072", "36.48"), // 1,500 + 1,500 + 3,000 tokens
            g("claude-sonnet-4-5", 2, 4_800, "0.06", "30.40"),
            g("deepseek-v3.2", 2, 72_000, "0.04536", "22.98"), // 0.00756 + 0.0378
            g("gemini-2.5-flash", 1, 5_000, "0.02", "10.13"),
            // No spend: more requests first, then by name ('(' sorts before 'm').
            g("(none)", 1, 0, "0", "0.00"),
            g("my-own-model", 1, 400, "0", "0.00"),
        ]
    );
    assert_eq!(v["by_model"][5]["unpriced"], 1);
    assert_eq!(v["by_model"][0]["estimated"], 1);
    // Key A: lines 1, 2, 7, 8, 11 = 0.024 + 0.06 + 0 + 0.048 + 0.02 = 0.152 (77.0166%);
    // key B: lines 3, 4, 9, 10 = 0.00756 + 0.0378 = 0.04536.
    assert_eq!(
        groups(&v["by_key"]),
        [
            g("key_aaaa11112222", 5, 12_300, "0.152", "77.02"),
            g("key_bbbb33334444", 4, 75_900, "0.04536", "22.98"),
            g("(none)", 1, 0, "0", "0.00"),
        ]
    );
    // us-east: 0.024 + 0.06 + 0.048 = 0.132 (66.8829%); eu-west: 0.00756 + 0.0378 + 0.02
    // = 0.06536 (33.1171%); the two cache hits have no upstream.
    assert_eq!(
        groups(&v["by_upstream"]),
        [
            g("us-east", 4, 7_300, "0.132", "66.88"),
            g("eu-west", 3, 77_000, "0.06536", "33.12"),
            g("(cache)", 2, 3_900, "0", "0.00"),
            g("(none)", 1, 0, "0", "0.00"),
        ]
    );
    // 11-28: 0.048 + 0.0378 + 0.02 = 0.1058 (53.6076%); 11-27: 0.024 + 0.06 + 0.00756
    // = 0.09156 (46.3924%).
    assert_eq!(
        groups(&v["by_day"]),
        [
            g("2026-11-28", 6, 70_800, "0.1058", "53.61"),
            g("2026-11-27", 4, 17_400, "0.09156", "46.39"),
        ]
    );
    // Hits: lines 4 and 10, saving 0.024 + 0.06.
    let c = &v["cache"];
    assert_eq!(
        (&c["hits"], &c["misses"], &c["bypass"], &c["saved_usd"]),
        (
            &Value::from(2),
            &Value::from(6),
            &Value::from(1),
            &Value::from("0.084")
        )
    );
}

#[test]
fn what_if_prices_the_same_traffic_on_each_model_and_in_a_mix() {
    let v = fixture_json(&["--what-if", "model=gpt-4o-mini", "--what-if", DESIGN_MIX]);
    let w = &v["what_if"];
    assert_eq!(w["basis"], "logs");
    // The traffic: lines 1, 2, 3, 8, 9, 11, 12 (the hits 4 and 10 and the unpriced 7 left out).
    let t = &w["traffic"];
    assert_eq!(t["requests"], 7);
    assert_eq!(t["prompt_tokens"], 69_000); // 1,000 + 2,000 + 10,000 + 2,000 + 50,000 + 4,000
    assert_eq!(t["cached_tokens"], 4_000);
    assert_eq!(t["completion_tokens"], 14_900); // 500 + 400 + 2,000 + 1,000 + 10,000 + 1,000
    assert_eq!(t["reasoning_tokens"], 500);
    assert_eq!(t["left_out_cache_hits"], 2);
    assert_eq!(t["left_out_unpriced"], 1);
    assert_eq!(w["baseline"]["label"], "as routed");
    assert_eq!(w["baseline"]["cost_usd"], "0.19736");
    let routed: Vec<(String, String)> = w["as_routed"]
        .as_array()
        .expect("as routed")
        .iter()
        .map(|m| (m["model"].to_string(), m["cost_usd"].to_string()))
        .collect();
    assert_eq!(routed.len(), 4, "{routed:?}");
    assert_eq!(routed[0], ("\"gpt-4.1\"".into(), "\"0.072\"".into()));

    let all_on: Vec<(String, String, String)> = w["all_on"]
        .as_array()
        .expect("all_on")
        .iter()
        .map(|a| {
            (
                a["model"].as_str().unwrap_or("?").into(),
                a["cost_usd"].as_str().unwrap_or("?").into(),
                a["saving_pct"].as_str().unwrap_or("-").into(),
            )
        })
        .collect();
    let row = |m: &str, c: &str, s: &str| (m.to_string(), c.to_string(), s.to_string());
    assert_eq!(
        all_on,
        [
            // 69,000 × $8 + 14,900 × $32 per M = 0.552 + 0.4768; (0.19736 - 1.0288) / 0.19736.
            row("gpt-4.1", "1.0288", "-421.28"),
            // 69,000 × 15 + 14,900 × 75 = 1.035 + 1.1175.
            row("claude-sonnet-4-5", "2.1525", "-990.65"),
            // 69,000 × 2.5 + 14,900 × 10 = 0.1725 + 0.149.
            row("gemini-2.5-flash", "0.3215", "-62.90"),
            // 69,000 × 0.42 + 14,900 × 1.68 = 0.02898 + 0.025032: 72.6328% cheaper.
            row("deepseek-v3.2", "0.054012", "72.63"),
            // gpt-4o-mini has a cached rate: 65,000 × 0.15 + 4,000 × 0.075 + 14,900 × 0.6
            // = 0.00975 + 0.0003 + 0.00894.
            row("gpt-4o-mini", "0.01899", "90.38"),
        ]
    );
    let mix = &w["mixes"][0];
    // 0.05 × 1.0288 + 0.10 × 2.1525 + 0.35 × 0.3215 + 0.50 × 0.054012
    // = 0.05144 + 0.21525 + 0.112525 + 0.027006.
    assert_eq!(mix["cost_usd"], "0.406221");
    assert_eq!(mix["saving_pct"], "-105.83");
    let parts: Vec<&str> = mix["shares"]
        .as_array()
        .expect("shares")
        .iter()
        .map(|s| s["cost_usd"].as_str().unwrap_or("?"))
        .collect();
    assert_eq!(parts, ["0.05144", "0.21525", "0.112525", "0.027006"]);
    // Blended: 0.4 + 1.5 + 0.875 + 0.21 = 2.985 in; 1.6 + 7.5 + 3.5 + 0.84 = 13.44 out.
    assert_eq!(mix["input_per_m_usd"], "2.985");
    assert_eq!(mix["output_per_m_usd"], "13.44");
    assert_eq!(
        mix["arithmetic"]["input"],
        "0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = $2.985 per M input tokens"
    );
    assert_eq!(
        mix["arithmetic"]["output"],
        "0.05×32 + 0.10×75 + 0.35×10 + 0.50×1.68 = $13.44 per M output tokens"
    );
    assert_eq!(
        mix["arithmetic"]["cost"],
        "0.05×$1.0288 + 0.10×$2.1525 + 0.35×$0.3215 + 0.50×$0.054012 = $0.406221"
    );
}

#[test]
fn the_table_shows_the_key_figures() {
    let f = fixture();
    let o = ok(&[f.to_str().expect("utf-8"), "--what-if", DESIGN_MIX]);
    let out = stdout(&o);
    for needle in [
        "COST REPORT: 10 requests from",
        "2026-11-27 to 2026-11-28",
        "1 other event (ignored), 2 skipped (1 not JSON, 1 not a request record)",
        "TOTALS",
        "SPEND BY MODEL",
        "SPEND BY KEY",
        "SPEND BY UPSTREAM",
        "SPEND BY DAY",
        "WHAT-IF",
        "saving: against as routed ($0.19736)",
        "0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = $2.985 per M input tokens",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in\n{out}");
    }
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert_eq!(line("spend "), "spend $0.19736");
    assert_eq!(line("total tokens"), "total tokens 88,200");
    assert_eq!(
        line("prompt tokens"),
        "prompt tokens 72,300 of which cached 4,000"
    );
    assert_eq!(
        line("unpriced"),
        "unpriced 1 requests whose model has no price (not in the spend)"
    );
    // model, requests, tokens, spend, share (one decimal), notes.
    assert_eq!(line("gpt-4.1 "), "gpt-4.1 3 6,000 $0.072 36.5% 1 estimated");
    assert_eq!(
        line("my-own-model"),
        "my-own-model 1 400 $0 0.0% 1 unpriced"
    );
    assert_eq!(
        line("key_aaaa11112222"),
        "key_aaaa11112222 5 12,300 $0.152 77.0% 1 unpriced, 1 estimated"
    );
    assert_eq!(line("eu-west"), "eu-west 3 77,000 $0.06536 33.1%");
    assert_eq!(
        line("2026-11-28"),
        "2026-11-28 6 70,800 $0.1058 53.6% 1 unpriced, 1 estimated"
    );
    assert_eq!(line("2 hits"), "2 hits (misses 6, bypass 1): saved $0.084");
    assert_eq!(line("as routed"), "as routed $0.19736 (baseline)");
    assert_eq!(
        line("all on deepseek-v3.2"),
        "all on deepseek-v3.2 0.42 1.68 $0.054012 72.6%"
    );
    assert_eq!(
        line("all on gpt-4.1"),
        "all on gpt-4.1 8 32 $1.0288 -421.3%"
    );
    // The skipped lines are reported on standard error too.
    let err = stderr(&o);
    assert!(
        err.contains("skipped 2 line(s): 1 not JSON, 1 not a request record"),
        "{err}"
    );
}

#[test]
fn the_designs_million_tokens_cost_8_dollars_on_gpt_4_1_and_2_985_in_its_mix_not_87_percent_less() {
    let args = [
        "--what-if-tokens",
        "1000000",
        "--one-price",
        "--what-if",
        DESIGN_MIX,
    ];
    let out = stdout(&ok(&args));
    let line = |start: &str| {
        out.lines()
            .find(|l| l.trim_start().starts_with(start))
            .unwrap_or_else(|| panic!("no line starting {start:?} in\n{out}"))
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
    };
    assert!(
        out.contains("WHAT-IF: 1,000,000 tokens, one price per model"),
        "{out}"
    );
    // 1M × $8 per M = $8 (the design printed $8,000).
    assert_eq!(line("all on gpt-4.1"), "all on gpt-4.1 8 32 $8 (baseline)");
    assert_eq!(
        line("all on claude-sonnet-4-5"),
        "all on claude-sonnet-4-5 15 75 $15 -87.5%"
    );
    assert_eq!(
        line("all on gemini-2.5-flash"),
        "all on gemini-2.5-flash 2.5 10 $2.5 68.8%"
    );
    assert_eq!(
        line("all on deepseek-v3.2"),
        "all on deepseek-v3.2 0.42 1.68 $0.42 94.8%"
    );
    // 0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = 0.4 + 1.5 + 0.875 + 0.21 = 2.985;
    // (8 - 2.985) / 8 = 62.6875% → 62.7%.
    assert_eq!(
        line("mix 5/10/35/50%"),
        "mix 5/10/35/50% 2.985 13.44 $2.985 62.7%"
    );
    assert!(out.contains(
        "mix 5/10/35/50% = gpt-4.1:5,claude-sonnet-4-5:10,gemini-2.5-flash:35,deepseek-v3.2:50"
    ));
    assert!(out.contains(
        "0.05×8 + 0.10×15 + 0.35×2.5 + 0.50×0.42 = $2.985 per M tokens (one price: each model's input price)"
    ));
    assert!(out.contains("saving: ($8 - $2.985) / $8 = 62.69%"), "{out}");

    let mut all = vec!["--json"];
    all.extend_from_slice(&args);
    let v: Value = serde_json::from_slice(&ok(&all).stdout).expect("JSON");
    let w = &v["what_if"];
    assert_eq!(w["basis"], "tokens");
    assert_eq!(w["traffic"]["tokens"], 1_000_000);
    assert_eq!(w["baseline"]["label"], "all on gpt-4.1");
    assert_eq!(w["baseline"]["cost_usd"], "8");
    assert_eq!(w["all_on"][0]["model"], "gpt-4.1");
    assert_eq!(w["all_on"][0]["cost_usd"], "8");
    assert_eq!(w["mixes"][0]["cost_usd"], "2.985");
    assert_eq!(w["mixes"][0]["saving_pct"], "62.69");
    assert!(v.get("totals").is_none(), "no logs were read");
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "too short for a PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

#[test]
fn the_chart_is_a_png_of_the_expected_size() {
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cost-report-test.png");
    let _ = std::fs::remove_file(&path);
    let f = fixture();
    let o = ok(&[
        f.to_str().expect("utf-8"),
        "--what-if",
        DESIGN_MIX,
        "--chart",
        path.to_str().expect("utf-8"),
    ]);
    let bytes = std::fs::read(&path).expect("the chart was written");
    // 6 bars (as routed, all on each of the 4 models, the mix); 4 models in the legend, 3 a
    // line: 90 (title) + 6 × 48 + 50 (axis) + 2 × 28 (legend) + 16 = 500.
    assert_eq!(png_size(&bytes), (1200, 500));
    assert!(
        bytes.len() > 10_000,
        "a chart with content: {} bytes",
        bytes.len()
    );
    assert!(stderr(&o).contains("chart written to"), "{}", stderr(&o));

    // The design's scenario: 5 bars (no as routed), 4 models.
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cost-report-design.png");
    ok(&[
        "--what-if-tokens",
        "1000000",
        "--one-price",
        "--what-if",
        DESIGN_MIX,
        "--chart",
        path.to_str().expect("utf-8"),
    ]);
    let bytes = std::fs::read(&path).expect("the chart was written");
    assert_eq!(png_size(&bytes), (1200, 90 + 5 * 48 + 50 + 2 * 28 + 16));
}

#[test]
fn standard_input_is_read_without_a_file_or_with_a_dash() {
    let text = std::fs::read(fixture()).expect("fixture");
    for args in [&["--json"][..], &["--json", "-"][..]] {
        let mut child = command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            stdin.write_all(&text).expect("write");
        }
        let o = child.wait_with_output().expect("wait");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
        assert_eq!(v["totals"]["spend_usd"], "0.19736");
        assert_eq!(v["input"]["sources"][0], "stdin");
    }
}

#[test]
fn bad_input_lines_are_counted_never_a_panic() {
    let garbage: &[u8] = b"\xff\xfe\x00binary\n{\n[]\nnull\n\"str\"\n{\"time\":5}\n{\"time\":\"2026\"}\n\
        {\"time\":\"2026-11-27T00:00:00Z\",\"prompt_tokens\":\"many\"}\n\
        {\"time\":\"2026-11-27T00:00:00Z\",\"cost_usd\":\"1e9\"}\n\
        {\"time\":\"2026-11-27T00:00:00Z\",\"prompt_tokens\":18446744073709551615,\"completion_tokens\":18446744073709551615,\"cost_usd\":\"99999999999999999999.999999999999\"}\n\
        {\"time\":\"2026-11-27T00:00:00Z\",\"event\":{\"nested\":[1,2]}}\n";
    let mut child = command(&["--json", "--what-if", "model=gpt-4o"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(garbage).expect("write");
    }
    let o = child.wait_with_output().expect("wait");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    // Not JSON: the binary line and "{". Not a request: [], null, "str", time 5, time "2026",
    // tokens "many", cost "1e9". The huge one is a request; the last an event.
    assert_eq!(v["input"]["not_json"], 2);
    assert_eq!(v["input"]["not_a_request"], 7);
    assert_eq!(v["input"]["requests"], 1);
    assert_eq!(v["input"]["events"], 1);
    assert_eq!(
        v["totals"]["spend_usd"],
        "99999999999999999999.999999999999"
    );
}

#[test]
fn bad_arguments_exit_2_and_unreadable_files_exit_1() {
    for args in [
        &["--nope"][..],
        &["--chart"][..],
        &["--what-if", "mix=gpt-4.1:5,deepseek-v3.2:50"][..],
        &["--what-if", "model=no-such-model"][..],
        &["--what-if-tokens", "1000000"][..],
        &["--what-if-tokens", "lots", "--one-price"][..],
        &["--baseline", "no-such-model"][..],
    ] {
        let o = run(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("fly-fallback cost-report: "),
            "{}",
            stderr(&o)
        );
        assert!(o.stdout.is_empty(), "{args:?}");
    }
    let o = run(&["--what-if", "mix=gpt-4.1:5,deepseek-v3.2:50"]);
    assert!(stderr(&o).contains("55%, not 100%"), "{}", stderr(&o));

    let o = run(&["/no/such/file.log"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("cannot read /no/such/file.log"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--config", "/no/such/config.json"]);
    assert_eq!(o.status.code(), Some(1));
}

#[test]
fn help_prints_the_usage() {
    for flag in ["--help", "-h"] {
        let o = ok(&[flag]);
        let out = stdout(&o);
        assert!(out.starts_with("usage: fly-fallback cost-report"), "{out}");
        for needle in [
            "--json",
            "--chart",
            "--what-if",
            "--what-if-tokens",
            "--one-price",
        ] {
            assert!(out.contains(needle), "{needle}");
        }
    }
}

#[test]
fn configured_prices_are_the_ones_used() {
    // deepseek-v3.2 at $1 in / $2 out: 69,000 × 1 + 14,900 × 2 per M = 0.069 + 0.0298.
    let doc = r#"{"prices":{"deepseek-v3.2":{"input":1,"output":2}},"cache":{"enabled":true}}"#;
    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("cost-report-config.json");
    std::fs::write(&path, doc).expect("write config");
    let deepseek = |v: &Value| {
        v["what_if"]["all_on"]
            .as_array()
            .expect("all_on")
            .iter()
            .find(|a| a["model"] == "deepseek-v3.2")
            .map(|a| a["cost_usd"].clone())
    };
    let v = fixture_json(&["--config", path.to_str().expect("utf-8")]);
    assert_eq!(deepseek(&v), Some(Value::from("0.0988")));

    let f = fixture();
    let o = command(&["--json", f.to_str().expect("utf-8")])
        .env("GATEWAY_CONFIG", doc)
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("JSON");
    assert_eq!(deepseek(&v), Some(Value::from("0.0988")));

    let o = command(&[f.to_str().expect("utf-8")])
        .env(
            "GATEWAY_CONFIG",
            r#"{"prices":{"m":{"input":-1,"output":1}}}"#,
        )
        .output()
        .expect("runs");
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
}
