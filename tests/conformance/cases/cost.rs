//! Cost accounting and model selection: what a request cost (usage times the model's price, in
//! the `x-gateway-cost-usd` header and the log line), streams whose usage the gateway asks for
//! and hides again, cache hits that cost nothing and log what they saved, `auto` and `tier:NAME`
//! resolved from the request's hints, tier fallback, `server-timing`, and
//! `POST /v1/gateway/estimate`.
//!
//! The suite's `GATEWAY_CONFIG` ([`harness::GATEWAY_CONFIG`]) prices `priced-chat` (input 2,
//! cached input 1, output 8, reasoning 4 USD per million tokens) and `priced-plain` (input 3,
//! output 6: its cached and reasoning rates default to those), and lists the default tiers plus
//! one `fallback-<target>` tier per target whose first model always fails. The cases name their
//! models `<case>_<target>/priced-chat`: the gateway prices a name without its provider prefix,
//! and the mock counts calls (`/__calls`) and keeps the last body (`/__last?model=`) per full
//! name, so concurrent cases do not see each other's requests.
//!
//! The mock's `x-mock-cached-tokens` / `x-mock-reasoning-tokens` request headers (which the
//! gateway forwards like any other) put cached and reasoning tokens in its usage. The mock is
//! deterministic, so what it sends when called directly with the client's own request is what the
//! client must see through the gateway, byte for byte.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::client::{self, Call, Resp, Streamed};
use crate::expect;
use crate::harness;

const COST: &str = "x-gateway-cost-usd";
const MODEL: &str = "x-gateway-model";
const SELECTION: &str = "x-gateway-selection";
const CACHED_HEADER: &str = "x-mock-cached-tokens";
const REASONING_HEADER: &str = "x-mock-reasoning-tokens";

/// Picodollars per token (= USD per million tokens x 1,000,000).
#[derive(Clone, Copy)]
struct Rates {
    input: u128,
    cached_input: u128,
    output: u128,
    reasoning: u128,
}

/// `priced-chat` in the suite's configuration.
const PRICED_CHAT: Rates = Rates {
    input: 2_000_000,
    cached_input: 1_000_000,
    output: 8_000_000,
    reasoning: 4_000_000,
};
/// `priced-plain`: input 3, output 6; cached input defaults to input, reasoning to output.
const PRICED_PLAIN: Rates = Rates {
    input: 3_000_000,
    cached_input: 3_000_000,
    output: 6_000_000,
    reasoning: 6_000_000,
};
/// `gpt-4.1` in the built-in catalogue: input 8, output 32.
const GPT_4_1: Rates = Rates {
    input: 8_000_000,
    cached_input: 8_000_000,
    output: 32_000_000,
    reasoning: 32_000_000,
};

/// A model of this case and target priced as `priced-chat` (or `kind`).
fn priced(ctx: &Ctx, kind: &str, case: &str) -> String {
    format!("{case}_{}/{kind}", ctx.target)
}

/// The token counts of a `usage` object (details absent: 0).
#[derive(Debug, Clone, Copy, PartialEq)]
struct Tokens {
    prompt: u64,
    cached: u64,
    completion: u64,
    reasoning: u64,
}

fn tokens_of(label: &str, usage: &Value) -> Tokens {
    let n = |p: &str| {
        usage
            .pointer(p)
            .and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("{label}: usage{p} is not a count: {usage}"))
    };
    let opt = |p: &str| usage.pointer(p).and_then(Value::as_u64).unwrap_or(0);
    Tokens {
        prompt: n("/prompt_tokens"),
        cached: opt("/prompt_tokens_details/cached_tokens"),
        completion: n("/completion_tokens"),
        reasoning: opt("/completion_tokens_details/reasoning_tokens"),
    }
}

/// (prompt - cached) x input + cached x cached_input + (completion - reasoning) x output +
/// reasoning x reasoning, in picodollars.
fn cost_picos(t: Tokens, r: Rates) -> u128 {
    let cached = t.cached.min(t.prompt);
    let reasoning = t.reasoning.min(t.completion);
    u128::from(t.prompt - cached) * r.input
        + u128::from(cached) * r.cached_input
        + u128::from(t.completion - reasoning) * r.output
        + u128::from(reasoning) * r.reasoning
}

/// Picodollars as the gateway writes dollars: a plain decimal without trailing zeros.
fn usd(picos: u128) -> String {
    const PER_USD: u128 = 1_000_000_000_000;
    let (whole, frac) = (picos / PER_USD, picos % PER_USD);
    if frac == 0 {
        return whole.to_string();
    }
    let digits = format!("{frac:012}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

fn expect_header(label: &str, got: Option<&str>, name: &str, expected: &str) {
    assert_eq!(got, Some(expected), "{label}: header {name}");
}

/// `server-timing` names `gateway;dur=MS` and `upstream;dur=MS`.
fn expect_server_timing(label: &str, value: Option<&str>) {
    let value = value.unwrap_or_else(|| panic!("{label}: no server-timing header"));
    for metric in ["gateway", "upstream"] {
        let entry = value
            .split(',')
            .map(str::trim)
            .find(|e| e.split(';').next().map(str::trim) == Some(metric))
            .unwrap_or_else(|| panic!("{label}: server-timing '{value}' has no '{metric}'"));
        let dur = entry
            .split(';')
            .skip(1)
            .find_map(|p| p.trim().strip_prefix("dur="))
            .unwrap_or_else(|| panic!("{label}: server-timing '{value}': {metric} has no dur"));
        assert!(
            dur.parse::<f64>().is_ok_and(|d| d >= 0.0),
            "{label}: server-timing '{value}': {metric};dur={dur} is not a duration in ms"
        );
    }
}

/// The request's one JSON log line in the target's output (fly: stdout; Worker: wrangler's
/// console, after any prefix it adds), waiting for it (a stream's is written at its end).
async fn log_line(ctx: &Ctx, id: &str) -> Value {
    let path = harness::log_dir().join(format!("{}.log", ctx.target));
    let needle = format!("\"request_id\":\"{id}\"");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
        if let [line] = lines[..] {
            let line = line.trim();
            let json = line.get(line.find('{').unwrap_or(0)..).unwrap_or(line);
            return serde_json::from_str(json)
                .unwrap_or_else(|e| panic!("[{}] log line not JSON ({e}): {line}", ctx.target));
        }
        assert!(
            lines.len() < 2,
            "[{}] {} log lines for {id}: {lines:?}",
            ctx.target,
            lines.len()
        );
        assert!(
            Instant::now() < deadline,
            "[{}] no log line for {id} in {} within 10 s",
            ctx.target,
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Asserts the log line's token counts and cost.
fn expect_logged_cost(ctx: &Ctx, line: &Value, t: Tokens, cost: &str) {
    let label = format!("[{}] log line", ctx.target);
    for (field, n) in [
        ("prompt_tokens", t.prompt),
        ("cached_tokens", t.cached),
        ("completion_tokens", t.completion),
        ("reasoning_tokens", t.reasoning),
    ] {
        assert_eq!(line[field], n, "{label}: {field}: {line}");
    }
    assert!(
        line["cost_usd"].is_string(),
        "{label}: cost_usd must be a decimal string: {line}"
    );
    assert_eq!(line["cost_usd"], cost, "{label}: cost_usd: {line}");
    assert_eq!(
        line["cost_estimated"], false,
        "{label}: cost_estimated: {line}"
    );
    assert!(
        line.get("unpriced").is_none_or(|u| u == false),
        "{label}: a priced model logged as unpriced: {line}"
    );
}

/// The log line's timings: ttft, total and the gateway's own overhead, in ms.
fn expect_logged_timings(ctx: &Ctx, line: &Value) {
    let ms = |f: &str| {
        line[f]
            .as_f64()
            .unwrap_or_else(|| panic!("[{}] log line: {f} is not a number: {line}", ctx.target))
    };
    let (ttft, total, overhead) = (ms("ttft_ms"), ms("total_ms"), ms("overhead_ms"));
    assert!(
        ttft >= 0.0 && overhead >= 0.0 && ttft <= total && overhead <= total,
        "[{}] log line timings out of order: {line}",
        ctx.target
    );
}

/// The request sent straight to the mock (with the upstream key): what the upstream would have
/// sent the client without the gateway.
fn direct(ctx: &Ctx) -> Call {
    Call::new(
        ctx.http.clone(),
        &ctx.mock,
        "mock",
        Method::POST,
        "/v1/chat/completions",
        harness::UPSTREAM_KEY,
    )
}

/// The body of the last request the mock received for `model` (`{}` if none).
async fn last_body(ctx: &Ctx, model: &str) -> Value {
    let url = format!("{}/__last?model={}", ctx.mock, model.replace('@', "%40"));
    client::get_json(&ctx.http, &url).await
}

/// Entries are written after the response; the Worker writes KV in `waitUntil`.
async fn settle(ctx: &Ctx) {
    // Both runtimes store a recorded stream after its last byte went out (fly-fallback in a
    // task of its own, the Worker under `wait_until`): give the write time to land.
    let wait = if ctx.target == "worker" { 300 } else { 100 };
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

fn chat(model: &str, text: &str, temperature: f64) -> Value {
    json!({"model": model, "temperature": temperature,
           "messages": [{"role": "user", "content": text}]})
}

fn stream_body(model: &str, text: &str, temperature: f64, include_usage: bool) -> Value {
    let mut b = chat(model, text, temperature);
    b["stream"] = json!(true);
    if include_usage {
        b["stream_options"] = json!({"include_usage": true});
    }
    b
}

/// A chat request with the mock's usage headers (3 cached prompt tokens, 5 reasoning tokens).
fn with_details(call: Call) -> Call {
    call.header(CACHED_HEADER, "3")
        .header(REASONING_HEADER, "5")
}

fn usage_events(s: &Streamed) -> Vec<Value> {
    s.events
        .iter()
        .filter_map(|e| e.json())
        .filter(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// JSON answers
// ---------------------------------------------------------------------------------------------

/// A JSON answer costs usage x price, cached and reasoning tokens at their own rates: the same
/// decimal in `x-gateway-cost-usd` and in the log line (with every new field); a model without
/// its own cached or reasoning rate prices those tokens at its input and output rates.
pub async fn cost_of_a_json_answer_is_usage_times_price_in_header_and_log(ctx: Arc<Ctx>) {
    for (kind, rates) in [("priced-chat", PRICED_CHAT), ("priced-plain", PRICED_PLAIN)] {
        let model = priced(&ctx, kind, "cost_json");
        let id = format!("cost-json-{kind}-{}", ctx.target);
        let r = with_details(ctx.post("/v1/chat/completions"))
            .header("x-request-id", &id)
            .json(&chat(&model, "what does this cost me today", 0.7))
            .send()
            .await;
        r.expect_status(200);
        let v = r.json();
        let t = tokens_of(&r.label, &v["usage"]);
        assert_eq!(
            (t.cached, t.reasoning),
            (3, 5),
            "{}: the mock's usage details: {v}",
            r.label
        );
        let cost = usd(cost_picos(t, rates));
        expect_header(&r.label, r.header(COST), COST, &cost);
        expect_header(&r.label, r.header(MODEL), MODEL, &model);
        expect_server_timing(&r.label, r.header("server-timing"));

        let line = log_line(&ctx, &id).await;
        expect_logged_cost(&ctx, &line, t, &cost);
        expect_logged_timings(&ctx, &line);
        assert_eq!(line["requested_model"], model.as_str(), "{line}");
        assert_eq!(line["model"], model.as_str(), "{line}");
        assert_eq!(line["cache"], "bypass", "{line}");
        assert!(
            line["upstream"].as_str().is_some_and(|u| !u.is_empty()),
            "[{}] log line without upstream: {line}",
            ctx.target
        );
        let key_id = line["key_id"]
            .as_str()
            .unwrap_or_else(|| panic!("[{}] log line without key_id: {line}", ctx.target));
        assert!(
            !key_id.is_empty() && !key_id.contains(&ctx.key),
            "[{}] key_id must name the key without being it: {line}",
            ctx.target
        );
        assert!(
            line.get("client").is_none(),
            "[{}] `client` is now `key_id`: {line}",
            ctx.target
        );
    }
}

/// A model without a price answers without a cost header (never "0"), still names the model,
/// and logs `unpriced: true` with its tokens and no cost.
pub async fn unpriced_model_has_no_cost_header_and_logs_unpriced(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cost_unpriced");
    let id = format!("cost-unpriced-{}", ctx.target);
    let r = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", &id)
        .json(&chat(&model, "no price for me", 0.7))
        .send()
        .await;
    r.expect_status(200);
    assert_eq!(
        r.header(COST),
        None,
        "{}: {COST} on an unpriced model",
        r.label
    );
    expect_header(&r.label, r.header(MODEL), MODEL, &model);
    let t = tokens_of(&r.label, &r.json()["usage"]);
    let line = log_line(&ctx, &id).await;
    assert_eq!(line["unpriced"], true, "{line}");
    assert!(line.get("cost_usd").is_none_or(Value::is_null), "{line}");
    assert_eq!(line["prompt_tokens"], t.prompt, "{line}");
    assert_eq!(line["completion_tokens"], t.completion, "{line}");
}

/// A cache hit costs nothing: `x-gateway-cost-usd: 0`, and its log line says what it saved (what
/// the stored answer cost when the upstream made it).
pub async fn cache_hit_answers_cost_0_and_logs_saved_usd(ctx: Arc<Ctx>) {
    let model = priced(&ctx, "priced-chat", "cost_cache_hit");
    let body = chat(&model, "a deterministic question", 0.0);
    let ids = [
        format!("cost-miss-{}", ctx.target),
        format!("cost-hit-{}", ctx.target),
    ];
    let miss = with_details(ctx.post("/v1/chat/completions"))
        .header("x-request-id", &ids[0])
        .json(&body)
        .send()
        .await;
    miss.expect_status(200);
    expect_header(&miss.label, miss.header("x-gateway-cache"), "cache", "MISS");
    let t = tokens_of(&miss.label, &miss.json()["usage"]);
    let cost = usd(cost_picos(t, PRICED_CHAT));
    expect_header(&miss.label, miss.header(COST), COST, &cost);
    settle(&ctx).await;

    let hit = with_details(ctx.post("/v1/chat/completions"))
        .header("x-request-id", &ids[1])
        .json(&body)
        .send()
        .await;
    hit.expect_status(200);
    expect_header(&hit.label, hit.header("x-gateway-cache"), "cache", "HIT");
    expect_header(&hit.label, hit.header(COST), COST, "0");
    expect_header(&hit.label, hit.header(MODEL), MODEL, &model);
    expect_server_timing(&hit.label, hit.header("server-timing"));
    ctx.expect_upstream_calls(&model, 1, "the second request is a hit")
        .await;

    let line = log_line(&ctx, &ids[1]).await;
    assert_eq!(line["cache"], "hit", "{line}");
    assert_eq!(line["saved_usd"], cost.as_str(), "{line}");
    assert!(
        line.get("cost_usd").is_none_or(|c| c == "0"),
        "[{}] a hit cost nothing: {line}",
        ctx.target
    );
    let miss_line = log_line(&ctx, &ids[0]).await;
    assert_eq!(miss_line["cost_usd"], cost.as_str(), "{miss_line}");
    assert!(miss_line.get("saved_usd").is_none(), "{miss_line}");
}

/// Every response carries `server-timing` with the gateway's and the upstream's durations:
/// proxied answers, streams, and the gateway's own answers.
pub async fn server_timing_names_gateway_and_upstream_durations_on_every_response(ctx: Arc<Ctx>) {
    let model = priced(&ctx, "priced-chat", "cost_timing");
    let r = ctx
        .post("/v1/chat/completions")
        .json(&chat(&model, "timing", 0.7))
        .send()
        .await;
    r.expect_status(200);
    expect_server_timing(&r.label, r.header("server-timing"));
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "timing", 0.7, false))
        .stream()
        .await;
    s.expect_status(200);
    expect_server_timing(&s.label, s.header("server-timing"));
    expect_header(&s.label, s.header(MODEL), MODEL, &model);
    let denied = ctx
        .post("/v1/chat/completions")
        .no_auth()
        .json(&chat(&model, "timing", 0.7))
        .send()
        .await;
    denied.expect_status(401);
    expect_server_timing(&denied.label, denied.header("server-timing"));
    let health = ctx.get("/health").no_auth().send().await;
    health.expect_status(200);
    expect_server_timing(&health.label, health.header("server-timing"));
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// A client that did not ask for usage: the gateway asks the upstream for it (the body it sent
/// is the client's plus `stream_options.include_usage`), logs the cost from the usage chunk, and
/// removes that chunk: the client gets byte for byte what the upstream sends for the client's
/// own request.
pub async fn stream_without_usage_requested_hides_the_usage_chunk_and_logs_its_cost(ctx: Arc<Ctx>) {
    let model = priced(&ctx, "priced-chat", "cost_stream_hidden");
    let id = format!("cost-stream-hidden-{}", ctx.target);
    let body = stream_body(&model, "stream me a cost", 0.7, false);
    let s = with_details(ctx.post("/v1/chat/completions"))
        .header("x-request-id", &id)
        .json(&body)
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    expect_header(&s.label, s.header(MODEL), MODEL, &model);

    // What the gateway sent: the client's body, plus include_usage.
    let sent = last_body(&ctx, &model).await;
    assert_eq!(
        sent.pointer("/stream_options/include_usage"),
        Some(&json!(true)),
        "[{}] the gateway must ask the upstream for usage: {sent}",
        ctx.target
    );
    let mut without = sent.clone();
    without.as_object_mut().map(|o| o.remove("stream_options"));
    assert_eq!(
        without, body,
        "[{}] the gateway changed more than stream_options",
        ctx.target
    );

    assert!(
        usage_events(&s).is_empty(),
        "{}: a usage chunk the client did not ask for: {}",
        s.label,
        s.raw
    );
    let d = with_details(direct(&ctx)).json(&body).stream().await;
    assert_eq!(
        s.raw, d.raw,
        "{}: the client must get the upstream's own stream for its request, byte for byte",
        s.label
    );

    // The cost is the usage chunk's, which the upstream sends when asked.
    let mut asked = body.clone();
    asked["stream_options"] = json!({"include_usage": true});
    let with_usage = with_details(direct(&ctx)).json(&asked).stream().await;
    let usage = usage_events(&with_usage)
        .pop()
        .unwrap_or_else(|| panic!("the mock sent no usage chunk: {}", with_usage.raw));
    let t = tokens_of("mock usage chunk", &usage["usage"]);
    let line = log_line(&ctx, &id).await;
    expect_logged_cost(&ctx, &line, t, &usd(cost_picos(t, PRICED_CHAT)));
    expect_logged_timings(&ctx, &line);
    assert_eq!(line["stream_complete"], true, "{line}");
}

/// A client that asked for usage gets the usage chunk as the upstream sent it (the same bytes as
/// calling the upstream directly), and the logged cost is that chunk's usage x price.
pub async fn stream_with_usage_requested_keeps_the_usage_chunk_and_logs_its_cost(ctx: Arc<Ctx>) {
    let model = priced(&ctx, "priced-chat", "cost_stream_usage");
    let id = format!("cost-stream-usage-{}", ctx.target);
    let body = stream_body(&model, "stream me a cost with usage", 0.7, true);
    let s = with_details(ctx.post("/v1/chat/completions"))
        .header("x-request-id", &id)
        .json(&body)
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    let usage = usage_events(&s);
    assert_eq!(usage.len(), 1, "{}: one usage chunk: {}", s.label, s.raw);
    let t = tokens_of(&s.label, &usage[0]["usage"]);
    assert_eq!((t.cached, t.reasoning), (3, 5), "{}: {}", s.label, s.raw);
    let d = with_details(direct(&ctx)).json(&body).stream().await;
    assert_eq!(s.raw, d.raw, "{}: byte for byte", s.label);
    let line = log_line(&ctx, &id).await;
    expect_logged_cost(&ctx, &line, t, &usd(cost_picos(t, PRICED_CHAT)));
}

/// A cacheable stream whose client did not ask for usage: the miss and the replayed hit are both
/// the upstream's own stream for the client's request, without the usage chunk the gateway asked
/// for; the hit logs what it saved.
pub async fn stream_cache_hit_replays_the_stream_without_the_usage_chunk(ctx: Arc<Ctx>) {
    let model = priced(&ctx, "priced-chat", "cost_stream_cached");
    let ids = [
        format!("cost-stream-miss-{}", ctx.target),
        format!("cost-stream-hit-{}", ctx.target),
    ];
    let body = stream_body(&model, "cache this stream", 0.0, false);
    let miss = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", &ids[0])
        .json(&body)
        .stream()
        .await;
    miss.expect_status(200);
    expect_header(&miss.label, miss.header("x-gateway-cache"), "cache", "MISS");
    settle(&ctx).await;
    let hit = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", &ids[1])
        .json(&body)
        .stream()
        .await;
    hit.expect_status(200);
    expect_header(&hit.label, hit.header("x-gateway-cache"), "cache", "HIT");
    ctx.expect_upstream_calls(&model, 1, "the second stream is a hit")
        .await;

    let d = direct(&ctx).json(&body).stream().await;
    for s in [&miss, &hit] {
        assert!(
            usage_events(s).is_empty(),
            "{}: a usage chunk the client did not ask for: {}",
            s.label,
            s.raw
        );
        assert_eq!(s.raw, d.raw, "{}: byte for byte", s.label);
    }
    let miss_line = log_line(&ctx, &ids[0]).await;
    let cost = miss_line["cost_usd"]
        .as_str()
        .unwrap_or_else(|| panic!("[{}] the miss logged no cost: {miss_line}", ctx.target))
        .to_string();
    assert_ne!(cost, "0", "{miss_line}");
    let hit_line = log_line(&ctx, &ids[1]).await;
    assert_eq!(hit_line["cache"], "hit", "{hit_line}");
    assert_eq!(hit_line["saved_usd"], cost.as_str(), "{hit_line}");
}

// ---------------------------------------------------------------------------------------------
// auto and tiers
// ---------------------------------------------------------------------------------------------

/// Sends `model` with the hints; asserts 200 and that `expected` was resolved (the header) and
/// sent upstream (the mock answers with the model it received). Returns the answer.
async fn expect_resolved(ctx: &Ctx, model: &str, hints: &[(&str, &str)], expected: &str) -> Resp {
    let text = format!("select {model} {hints:?} {}", ctx.target);
    let mut call = ctx.post("/v1/chat/completions");
    for (k, v) in hints {
        call = call.header(k, v);
    }
    let r = call
        .json(&json!({"model": model, "max_tokens": 16,
                      "messages": [{"role": "user", "content": text}]}))
        .send()
        .await;
    r.expect_status(200);
    let what = format!("{}: {model} with {hints:?}", r.label);
    expect_header(&what, r.header(MODEL), MODEL, expected);
    assert_eq!(
        r.json()["model"],
        expected,
        "{what}: the upstream must receive the resolved model"
    );
    r
}

/// `auto` follows the rules in order: quality >= 0.9 (over a task), a task about reasoning or
/// analysis, a latency budget under 500 ms (over a cost budget), a cost budget under $0.01,
/// else the default; the answer is priced at the resolved model's price.
pub async fn auto_resolves_by_hints_in_rule_order(ctx: Arc<Ctx>) {
    let cases: [(&[(&str, &str)], &str); 6] = [
        (
            &[
                ("x-gateway-quality", "0.95"),
                ("x-gateway-task", "deep reasoning"),
            ],
            "gpt-4.1",
        ),
        (
            &[
                ("x-gateway-quality", "0.5"),
                ("x-gateway-task", "log-analysis"),
            ],
            "claude-sonnet-4-5",
        ),
        (
            &[
                ("x-gateway-latency-budget-ms", "300"),
                ("x-gateway-cost-budget-usd", "0.005"),
            ],
            "gemini-2.5-flash",
        ),
        (&[("x-gateway-cost-budget-usd", "0.005")], "deepseek-v3.2"),
        (
            &[("x-gateway-latency-budget-ms", "800")],
            "gemini-2.5-flash",
        ),
        (&[], "gemini-2.5-flash"),
    ];
    for (hints, expected) in cases {
        let r = expect_resolved(&ctx, "auto", hints, expected).await;
        assert_ne!(
            r.header(SELECTION),
            Some("over-budget"),
            "{}: {hints:?}",
            r.label
        );
        if expected == "gpt-4.1" {
            let t = tokens_of(&r.label, &r.json()["usage"]);
            expect_header(&r.label, r.header(COST), COST, &usd(cost_picos(t, GPT_4_1)));
        }
    }
    // The log line keeps what was asked for and what was used.
    let id = format!("cost-auto-{}", ctx.target);
    let r = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", &id)
        .header("x-gateway-quality", "0.9")
        .json(&json!({"model": "auto", "messages": [{"role": "user", "content": id}]}))
        .send()
        .await;
    r.expect_status(200);
    let line = log_line(&ctx, &id).await;
    assert_eq!(line["requested_model"], "auto", "{line}");
    assert_eq!(line["model"], "gpt-4.1", "{line}");
}

/// `tier:NAME` resolves to the tier's first model.
pub async fn tier_aliases_resolve_to_their_first_model(ctx: Arc<Ctx>) {
    for (tier, expected) in [
        ("tier:high-quality", "gpt-4.1"),
        ("tier:balanced", "gemini-2.5-flash"),
        ("tier:cost-effective", "deepseek-v3.2"),
        ("tier:ultra-cheap", "deepseek-v3.2"),
    ] {
        let r = expect_resolved(&ctx, tier, &[], expected).await;
        assert_ne!(r.header(SELECTION), Some("over-budget"), "{}", r.label);
    }
}

/// When no candidate fits the cost budget the cheapest is chosen and the answer says
/// `x-gateway-selection: over-budget`; a budget that fits changes nothing.
pub async fn cost_budget_nothing_fits_picks_the_cheapest_and_says_over_budget(ctx: Arc<Ctx>) {
    let tiny = [("x-gateway-cost-budget-usd", "0.0000001")];
    for (model, expected) in [("auto", "deepseek-v3.2"), ("tier:high-quality", "gpt-4.1")] {
        let r = expect_resolved(&ctx, model, &tiny, expected).await;
        expect_header(&r.label, r.header(SELECTION), SELECTION, "over-budget");
    }
    let ample = [("x-gateway-cost-budget-usd", "1")];
    let r = expect_resolved(&ctx, "tier:high-quality", &ample, "gpt-4.1").await;
    assert_ne!(r.header(SELECTION), Some("over-budget"), "{}", r.label);
}

/// A hint header with a bad value is a 400 naming the header; an unknown tier a 400 naming
/// `model`.
pub async fn bad_hints_and_unknown_tier_are_400_naming_the_param(ctx: Arc<Ctx>) {
    let body = json!({"model": "auto", "messages": [{"role": "user", "content": "bad hint"}]});
    for (header, value) in [
        ("x-gateway-quality", "1.5"),
        ("x-gateway-quality", "high"),
        ("x-gateway-latency-budget-ms", "soon"),
        ("x-gateway-latency-budget-ms", "-5"),
        ("x-gateway-cost-budget-usd", "cheap"),
        ("x-gateway-cost-budget-usd", "-1"),
    ] {
        let r = ctx
            .post("/v1/chat/completions")
            .header(header, value)
            .json(&body)
            .send()
            .await;
        expect_400_naming(&r, header, &format!("{header}: {value}"));
    }
    let r = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": "tier:no-such-tier",
                      "messages": [{"role": "user", "content": "which tier?"}]}))
        .send()
        .await;
    expect_400_naming(&r, "model", "tier:no-such-tier");
}

fn expect_400_naming(r: &Resp, param: &str, what: &str) {
    r.expect_status(400);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    let e = expect::openai_error_shape(&r.label, &v);
    assert_eq!(e["param"], param, "{}: {what}: {v}", r.label);
}

/// When every upstream fails for the tier's first model, its next model is tried: the client
/// gets that one's answer (and its cost), and the mock saw both.
pub async fn tier_fallback_tries_the_next_model_when_the_first_fails(ctx: Arc<Ctx>) {
    let (failing, next) = harness::fallback_tier_models(&ctx.target);
    let tier = format!("tier:{}", harness::fallback_tier(&ctx.target));
    let id = format!("cost-tier-fallback-{}", ctx.target);
    let r = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", &id)
        .json(&json!({"model": tier, "messages": [{"role": "user", "content": "fall back"}]}))
        .send()
        .await;
    r.expect_status(200);
    expect_header(&r.label, r.header(MODEL), MODEL, &next);
    let v = r.json();
    assert_eq!(v["model"], next.as_str(), "{}: {v}", r.label);
    let t = tokens_of(&r.label, &v["usage"]);
    expect_header(
        &r.label,
        r.header(COST),
        COST,
        &usd(cost_picos(t, PRICED_CHAT)),
    );
    ctx.expect_upstream_calls(&failing, 1, "the tier's first model was tried")
        .await;
    ctx.expect_upstream_calls(&next, 1, "then the next one")
        .await;
    let line = log_line(&ctx, &id).await;
    assert_eq!(line["requested_model"], tier.as_str(), "{line}");
    assert_eq!(line["model"], next.as_str(), "{line}");
}

// ---------------------------------------------------------------------------------------------
// The estimate endpoint
// ---------------------------------------------------------------------------------------------

fn expect_estimate(r: &Resp, model: &str, prompt: Option<u64>, max_output: u64, rates: Rates) {
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["model"], model, "{}: {v}", r.label);
    let p = v["prompt_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("{}: prompt_tokens: {v}", r.label));
    if let Some(prompt) = prompt {
        assert_eq!(p, prompt, "{}: {v}", r.label);
    } else {
        assert!(p > 0, "{}: a prompt of a few words: {v}", r.label);
    }
    assert_eq!(v["max_output_tokens"], max_output, "{}: {v}", r.label);
    let min = u128::from(p) * rates.input;
    let max = min + u128::from(max_output) * rates.output;
    assert_eq!(
        v["cost_usd"],
        json!({"min": usd(min), "max": usd(max)}),
        "{}: {v}",
        r.label
    );
}

/// `POST /v1/gateway/estimate` needs a client key, and answers the resolved model and the cost
/// range (prompt alone .. prompt + maximum output) for token counts or for a request body,
/// without calling any upstream.
pub async fn estimate_answers_the_cost_range_without_calling_upstream(ctx: Arc<Ctx>) {
    let path = "/v1/gateway/estimate";
    let counts = json!({"model": "gpt-4.1", "prompt_tokens": 1000, "max_output_tokens": 500});
    let r = ctx.post(path).no_auth().json(&counts).send().await;
    expect::error(&r, 401, "missing_api_key");

    let r = ctx.post(path).json(&counts).send().await;
    expect_estimate(&r, "gpt-4.1", Some(1000), 500, GPT_4_1);
    assert_eq!(
        r.json()["cost_usd"],
        json!({"min": "0.008", "max": "0.024"}),
        "{}",
        r.label
    );

    // A selection is resolved first, hints included.
    let r = ctx
        .post(path)
        .header("x-gateway-quality", "0.95")
        .json(&json!({"model": "auto", "prompt_tokens": 1000, "max_output_tokens": 500}))
        .send()
        .await;
    expect_estimate(&r, "gpt-4.1", Some(1000), 500, GPT_4_1);
    let r = ctx
        .post(path)
        .json(
            &json!({"model": "tier:ultra-cheap", "prompt_tokens": 2000, "max_output_tokens": 1000}),
        )
        .send()
        .await;
    let deepseek = Rates {
        input: 420_000,
        cached_input: 420_000,
        output: 1_680_000,
        reasoning: 1_680_000,
    };
    expect_estimate(&r, "deepseek-v3.2", Some(2000), 1000, deepseek);
    assert_eq!(
        r.json()["cost_usd"],
        json!({"min": "0.00084", "max": "0.00252"}),
        "{}",
        r.label
    );

    // A request body: its prompt is estimated, its max_tokens is the maximum output.
    let model = priced(&ctx, "priced-chat", "cost_estimate");
    let r = ctx
        .post(path)
        .json(&json!({"model": model, "max_tokens": 100,
                      "messages": [{"role": "user", "content": "how much would this one cost me"}]}))
        .send()
        .await;
    expect_estimate(&r, &model, None, 100, PRICED_CHAT);
    let r = ctx
        .post(path)
        .json(&json!({"model": model, "max_tokens": 50, "prompt": "once upon a time"}))
        .send()
        .await;
    expect_estimate(&r, &model, None, 50, PRICED_CHAT);

    ctx.expect_upstream_calls(&model, 0, "an estimate never calls an upstream")
        .await;
    assert_eq!(
        last_body(&ctx, &model).await,
        json!({}),
        "[{}] the mock received a request for the estimated model",
        ctx.target
    );
}
