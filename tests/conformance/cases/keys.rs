//! Configured client keys (`keys` in `GATEWAY_CONFIG`): disabled keys, the models a key may
//! use, requests and tokens per minute with OpenAI's `x-ratelimit-*` headers, spend budgets
//! reserved at the worst case and settled to the actual cost, cache hits that count against
//! requests only, and `GET /v1/gateway/key`.
//!
//! Every case has a key of its own ([`harness::keys`]), so that parallel cases never share
//! counters; the two targets are separate gateways, each with its own counters. Windows are
//! fixed UTC minutes: a case that needs its requests in one window first waits for a fresh one
//! when the current one is about to end ([`fresh_window`]). Only
//! [`keys_rpm_counts_down_refuses_the_excess_and_resets_with_the_window`] waits for a window to
//! pass on purpose.
//!
//! Token reservations are the prompt's estimate (its text's bytes / 4, rounded up, + 4 per
//! message + 3) plus the request's `max_tokens` (else `limits.default_max_tokens`, 4096), and
//! are corrected to the actual usage when the request is over; a budget reserves the worst-case
//! cost (the estimate at the model's input price + `max_tokens` at its output price). The
//! settlements are made in the background, so the cases poll `GET /v1/gateway/key` for them.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Ctx;
use crate::client::{Resp, Streamed};
use crate::expect;
use crate::harness::keys;

const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";
const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
const RESET_REQUESTS: &str = "x-ratelimit-reset-requests";
const LIMIT_TOKENS: &str = "x-ratelimit-limit-tokens";
const REMAINING_TOKENS: &str = "x-ratelimit-remaining-tokens";
const RESET_TOKENS: &str = "x-ratelimit-reset-tokens";
const RATE_HEADERS: [&str; 6] = [
    LIMIT_REQUESTS,
    REMAINING_REQUESTS,
    RESET_REQUESTS,
    LIMIT_TOKENS,
    REMAINING_TOKENS,
    RESET_TOKENS,
];
const COST: &str = "x-gateway-cost-usd";
const CACHE: &str = "x-gateway-cache";
const MODEL: &str = "x-gateway-model";
const KEY_PATH: &str = "/v1/gateway/key";

/// `priced-chat` of the suite's `GATEWAY_CONFIG`, in nanodollars per token (input 2, output 8
/// USD per million tokens).
const PRICED_CHAT_INPUT_NANOS: u128 = 2_000;
const PRICED_CHAT_OUTPUT_NANOS: u128 = 8_000;
const PICOS_PER_NANO: u128 = 1_000;
const PICOS_PER_USD: u128 = 1_000_000_000_000;

/// How long a settlement (made in the background after the response) may take to show.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);

/// Per target (fly, worker): the budget burst holds it exclusively, the other cases of this
/// file shared. Fifty concurrent requests (each a limiter call; on the Worker a Durable Object
/// call) on a small machine can delay the other cases' requests past the suite's 1.5 s
/// upstream timeout, so the burst runs alone among them.
static BURST: [tokio::sync::RwLock<()>; 2] = [
    tokio::sync::RwLock::const_new(()),
    tokio::sync::RwLock::const_new(()),
];

fn burst_lock(ctx: &Ctx) -> &'static tokio::sync::RwLock<()> {
    &BURST[usize::from(ctx.target == "worker")]
}

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

fn chat(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0.7,
           "messages": [{"role": "user", "content": text}]})
}

fn chat_max(model: &str, text: &str, max_tokens: u64) -> Value {
    let mut b = chat(model, text);
    b["max_tokens"] = json!(max_tokens);
    b
}

/// The gateway's prompt estimate of a one-message chat request whose content is `text`.
fn prompt_estimate(text: &str) -> u64 {
    (text.len() as u64).div_ceil(4) + 4 + 3
}

/// A priced model of this case and target (`<case>_<target>/priced-chat`, `behaviour@` first
/// when given: the mock ignores what follows `@`, the gateway prices the name after `/`).
fn priced(ctx: &Ctx, behaviour: Option<&str>, case: &str) -> String {
    match behaviour {
        Some(b) => format!("{b}@{case}_{}/priced-chat", ctx.target),
        None => format!("{case}_{}/priced-chat", ctx.target),
    }
}

/// USD as a decimal string (`"0.00197"`, `"5"`) in picodollars.
fn picos(label: &str, usd: &str) -> u128 {
    let bad = || -> ! { panic!("{label}: '{usd}' is not a decimal amount of USD") };
    let (whole, frac) = usd.split_once('.').unwrap_or((usd, ""));
    if whole.is_empty()
        || frac.len() > 12
        || !whole.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        bad();
    }
    let whole: u128 = whole.parse().unwrap_or_else(|_| bad());
    let frac: u128 = if frac.is_empty() {
        0
    } else {
        format!("{frac:0<12}").parse().unwrap_or_else(|_| bad())
    };
    whole * PICOS_PER_USD + frac
}

/// A money field of `GET /v1/gateway/key`: a decimal string, in picodollars.
fn money(label: &str, v: &Value, field: &str) -> u128 {
    let s = v[field]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: {field} must be a decimal string: {v}"));
    picos(label, s)
}

/// An OpenAI `x-ratelimit-reset-*` duration (`20ms`, `1s`, `8.64s`, `6m0s`, `1h2m3s`).
fn openai_duration(label: &str, s: &str) -> Duration {
    let bad = || -> ! { panic!("{label}: '{s}' is not an OpenAI reset duration") };
    if let Some(ms) = s.strip_suffix("ms") {
        return Duration::from_millis(ms.parse().unwrap_or_else(|_| bad()));
    }
    let mut total = 0f64;
    let mut number = String::new();
    let mut units = 0;
    for c in s.chars() {
        match c {
            '0'..='9' | '.' => number.push(c),
            'h' | 'm' | 's' => {
                let n: f64 = number.parse().unwrap_or_else(|_| bad());
                total += n * match c {
                    'h' => 3600.0,
                    'm' => 60.0,
                    _ => 1.0,
                };
                number.clear();
                units += 1;
            }
            _ => bad(),
        }
    }
    if units == 0 || !number.is_empty() || !s.ends_with('s') {
        bad();
    }
    Duration::from_secs_f64(total)
}

fn header_u64(label: &str, value: Option<&str>, name: &str) -> u64 {
    let v = value.unwrap_or_else(|| panic!("{label}: no {name} header"));
    v.parse()
        .unwrap_or_else(|_| panic!("{label}: {name} '{v}' is not a whole number"))
}

/// A response's `x-ratelimit-*-<dim>` values: (limit, remaining, reset), the reset checked to
/// be in (0, 60 s].
fn rate(label: &str, get: impl Fn(&str) -> Option<String>, dim: &str) -> (u64, u64, Duration) {
    let name = |what: &str| format!("x-ratelimit-{what}-{dim}");
    let limit = header_u64(label, get(&name("limit")).as_deref(), &name("limit"));
    let remaining = header_u64(
        label,
        get(&name("remaining")).as_deref(),
        &name("remaining"),
    );
    let reset_raw = get(&name("reset")).unwrap_or_else(|| panic!("{label}: no {}", name("reset")));
    let reset = openai_duration(label, &reset_raw);
    assert!(
        reset > Duration::ZERO && reset <= Duration::from_secs(60),
        "{label}: {} '{reset_raw}' must be within the current minute",
        name("reset")
    );
    (limit, remaining, reset)
}

fn resp_rate(r: &Resp, dim: &str) -> (u64, u64, Duration) {
    rate(&r.label, |n| r.header(n).map(str::to_string), dim)
}

fn stream_rate(s: &Streamed, dim: &str) -> (u64, u64, Duration) {
    rate(&s.label, |n| s.header(n).map(str::to_string), dim)
}

/// Asserts the response carries none of the `x-ratelimit-*` headers of `dims`.
fn expect_no_rate_headers(label: &str, get: impl Fn(&str) -> Option<String>, dims: &[&str]) {
    for name in RATE_HEADERS {
        if dims.iter().any(|d| name.ends_with(d)) {
            assert!(
                get(name).is_none(),
                "{label}: a key without that limit got {name}: {:?}",
                get(name)
            );
        }
    }
}

fn resp_no_rate_headers(r: &Resp, dims: &[&str]) {
    expect_no_rate_headers(&r.label, |n| r.header(n).map(str::to_string), dims);
}

/// A 429 of the limiter: the OpenAI error shape with `type` and `code`, `param` null, and a
/// `retry-after` of at least one second. Returns the retry-after.
fn expect_429(r: &Resp, kind: &str, code: &str) -> u64 {
    let e = expect::error(r, 429, code);
    assert_eq!(e["type"], kind, "{}: {}", r.label, r.text());
    assert!(e["param"].is_null(), "{}: {}", r.label, r.text());
    let retry = header_u64(&r.label, r.header("retry-after"), "retry-after");
    assert!(retry >= 1, "{}: retry-after {retry}", r.label);
    retry
}

/// `GET /v1/gateway/key` with `key`: 200 JSON.
async fn key_info(ctx: &Ctx, key: &str) -> Value {
    let r = ctx.get(KEY_PATH).key(key).send().await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert!(v.is_object(), "{}: {v}", r.label);
    v
}

/// Polls `GET /v1/gateway/key` until `done` holds (the background settlements are in);
/// returns the last answer, failing after [`SETTLE_TIMEOUT`] with `what`.
async fn key_info_until(ctx: &Ctx, key: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let v = key_info(ctx, key).await;
        if done(&v) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "[{}] GET {KEY_PATH}: {what} not seen within {SETTLE_TIMEOUT:?}; last: {v}",
            ctx.target
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The `limits.<dim>` of a key's info: (limit, remaining, reset_secs), the reset checked to be
/// in (0, 60].
fn window(ctx: &Ctx, v: &Value, dim: &str) -> (u64, u64, f64) {
    let w = &v["limits"][dim];
    let label = format!("[{}] GET {KEY_PATH} limits.{dim}", ctx.target);
    let n = |f: &str| {
        w[f].as_u64()
            .unwrap_or_else(|| panic!("{label}.{f} is not a count: {v}"))
    };
    let reset = w["reset_secs"]
        .as_f64()
        .unwrap_or_else(|| panic!("{label}.reset_secs is not a number: {v}"));
    assert!(
        reset > 0.0 && reset <= 60.0,
        "{label}.reset_secs {reset} must be in (0, 60]: {v}"
    );
    (n("limit"), n("remaining"), reset)
}

/// Waits for a new minute window when the current one ends within `needed` (the case's
/// requests must all fall in one window). The key's info says when it ends.
async fn fresh_window(ctx: &Ctx, key: &str, dim: &str, needed: Duration) {
    let v = key_info(ctx, key).await;
    let (_, _, reset) = window(ctx, &v, dim);
    if reset < needed.as_secs_f64() {
        tokio::time::sleep(Duration::from_secs_f64(reset) + Duration::from_millis(300)).await;
    }
}

/// `true` when `v` reports every reservation of its budget settled.
fn nothing_reserved(v: &Value) -> bool {
    v["budget"]["reserved_usd"] == "0"
}

/// Days since 1970-01-01 → (year, month, day), proleptic Gregorian.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Today's UTC date, as days since 1970-01-01.
fn today() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    (secs / 86_400) as i64
}

/// `resets_at` is RFC 3339 UTC at midnight: of tomorrow (`day`) or of the first of next month
/// (`month`).
fn expect_resets_at(label: &str, v: &Value, period: &str) {
    let at = v["budget"]["resets_at"]
        .as_str()
        .unwrap_or_else(|| panic!("{label}: budget.resets_at must be a string: {v}"));
    let (y, m, d) = civil_from_days(today());
    let next = match period {
        "day" => {
            let (y, m, d) = civil_from_days(today() + 1);
            format!("{y:04}-{m:02}-{d:02}")
        }
        _ if m == 12 => format!("{:04}-01-01", y + 1),
        _ => format!("{y:04}-{:02}-01", m + 1),
    };
    // e.g. 2026-11-28T00:00:00Z or with fractional seconds.
    let ok = at.len() >= 20
        && at.starts_with(&format!("{next}T00:00:00"))
        && at.ends_with('Z')
        && at["2026-11-28T00:00:00".len()..at.len() - 1]
            .strip_prefix('.')
            .is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b == b'0'));
    assert!(
        ok,
        "{label}: budget.resets_at '{at}' must be the next {period}'s start, {next}T00:00:00Z (today is {y:04}-{m:02}-{d:02} UTC): {v}"
    );
}

/// The sum of the responses' `x-gateway-cost-usd`, each rounded up to whole nanodollars (the
/// budget's unit), in picodollars.
fn spent_by(rs: &[&Resp]) -> u128 {
    rs.iter()
        .map(|r| {
            let c = r
                .header(COST)
                .unwrap_or_else(|| panic!("{}: no {COST} header", r.label));
            picos(&r.label, c).div_ceil(PICOS_PER_NANO) * PICOS_PER_NANO
        })
        .sum()
}

fn total_tokens(label: &str, usage: &Value) -> u64 {
    usage["total_tokens"]
        .as_u64()
        .unwrap_or_else(|| panic!("{label}: usage.total_tokens: {usage}"))
}

// ---------------------------------------------------------------------------------------------
// Authentication
// ---------------------------------------------------------------------------------------------

/// A missing, an unknown and a disabled key are 401 in OpenAI's shape (the disabled key is a
/// configured one with `disabled: true`), and nothing reaches the upstream.
pub async fn keys_missing_wrong_and_disabled_keys_are_401_without_upstream_calls(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let model = ctx.model("mock-model", "keys_auth");
    let body = chat(&model, "may I?");
    let r = ctx
        .post("/v1/chat/completions")
        .no_auth()
        .json(&body)
        .send()
        .await;
    let e = expect::error(&r, 401, "missing_api_key");
    assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);

    for (key, what) in [
        ("keys-unknown-client-key", "an unknown key"),
        (keys::DISABLED, "a disabled key"),
    ] {
        let r = ctx
            .post("/v1/chat/completions")
            .key(key)
            .json(&body)
            .send()
            .await;
        let e = expect::error(&r, 401, "invalid_api_key");
        assert_eq!(
            e["type"], "invalid_request_error",
            "{} {what}: {e:?}",
            r.label
        );
        assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", r.label);
        resp_no_rate_headers(&r, &["requests", "tokens"]);
        if key == keys::DISABLED {
            let message = e["message"].as_str().unwrap_or_default();
            assert!(
                message.to_ascii_lowercase().contains("disabled"),
                "{}: the message should say the key is disabled: {message}",
                r.label
            );
        }
        // Nor may it read its limits.
        let r = ctx.get(KEY_PATH).key(key).send().await;
        expect::error(&r, 401, "invalid_api_key");
    }
    let r = ctx.get(KEY_PATH).no_auth().send().await;
    expect::error(&r, 401, "missing_api_key");
    ctx.expect_upstream_calls(&model, 0, "every request was refused before forwarding")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Models
// ---------------------------------------------------------------------------------------------

/// A key's `models`: its model answers; another model, `auto` and a tier it does not list are
/// 404 `model_not_found` naming `model` (as OpenAI answers a model one has no access to),
/// without an upstream call; a listed tier resolves among the tier's models the key may use.
/// A key without rpm/tpm gets no `x-ratelimit-*` headers.
pub async fn keys_models_limit_what_a_key_may_ask_for_with_404_model_not_found(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let allowed = ctx.model("mock-model", "keys_models");
    let other = ctx.model("mock-model", "keys_models_other");
    let call = |body: Value| {
        ctx.post("/v1/chat/completions")
            .key(keys::MODELS)
            .json(&body)
    };

    let r = call(chat(&allowed, "a model I may use")).send().await;
    r.expect_status(200);
    assert_eq!(r.json()["model"], allowed.as_str(), "{}", r.label);
    resp_no_rate_headers(&r, &["requests", "tokens"]);
    ctx.expect_upstream_calls(&allowed, 1, "the allowed model is forwarded")
        .await;

    for requested in [other.as_str(), "auto", "tier:high-quality"] {
        let r = call(chat(requested, "a model I may not use")).send().await;
        expect::error_with_param(&r, 404, "model_not_found", "model");
        let e = r.json();
        assert_eq!(
            e["error"]["type"], "invalid_request_error",
            "{}: {requested}: {e}",
            r.label
        );
        assert!(
            e["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains(requested)),
            "{}: the message names the model '{requested}': {e}",
            r.label
        );
        resp_no_rate_headers(&r, &["requests", "tokens"]);
    }
    ctx.expect_upstream_calls(&other, 0, "a model the key may not use is refused first")
        .await;

    // A listed tier: its model is one the key lists too.
    let before = ctx.upstream_calls("deepseek-v3.2").await;
    let r = call(chat(
        "tier:ultra-cheap",
        format!("{} tier", ctx.target).as_str(),
    ))
    .send()
    .await;
    r.expect_status(200);
    assert_eq!(r.header(MODEL), Some("deepseek-v3.2"), "{}", r.label);
    assert_eq!(r.json()["model"], "deepseek-v3.2", "{}", r.label);
    assert!(
        ctx.upstream_calls("deepseek-v3.2").await > before,
        "[{}] the tier's model was not called",
        ctx.target
    );
    // A listed tier resolves among the tier's models the key may use (`balanced` starts with
    // gemini-2.5-flash, which the key does not list).
    let r = call(chat(
        "tier:balanced",
        format!("{} balanced", ctx.target).as_str(),
    ))
    .send()
    .await;
    r.expect_status(200);
    assert_eq!(r.header(MODEL), Some("claude-sonnet-4-5"), "{}", r.label);
    assert_eq!(r.json()["model"], "claude-sonnet-4-5", "{}", r.label);

    // Its info: id and models, nothing else (no limits, no budget).
    let v = key_info(&ctx, keys::MODELS).await;
    let label = format!("[{}] GET {KEY_PATH}", ctx.target);
    assert_eq!(v["id"], "keys-models", "{label}: {v}");
    let mut models: Vec<&str> = v["models"]
        .as_array()
        .unwrap_or_else(|| panic!("{label}: models must be a list: {v}"))
        .iter()
        .filter_map(Value::as_str)
        .collect();
    models.sort_unstable();
    assert_eq!(
        models,
        [
            "claude-sonnet-4-5",
            "deepseek-v3.2",
            "mock-model@keys_models_fly",
            "mock-model@keys_models_worker",
            "tier:balanced",
            "tier:ultra-cheap",
        ],
        "{label}: the key's models as configured: {v}"
    );
    assert_eq!(
        v.as_object().map(|o| o.len()),
        Some(2),
        "{label}: only id and models (no limits, no budget): {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// Requests per minute
// ---------------------------------------------------------------------------------------------

/// `rpm: 3`: three 200s whose `x-ratelimit-remaining-requests` count down 2, 1, 0 (limit 3,
/// reset within the minute); the fourth is 429 `rate_limit_exceeded` of type `requests` with a
/// `retry-after`, and never reaches the upstream; once the announced reset has passed, a
/// request succeeds again. (Waits up to a minute: the one case that waits for a window.)
pub async fn keys_rpm_counts_down_refuses_the_excess_and_resets_with_the_window(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let model = ctx.model("mock-model", "keys_rpm");
    fresh_window(&ctx, keys::RPM, "requests", Duration::from_secs(5)).await;
    let send = |i: u32| {
        ctx.post("/v1/chat/completions")
            .key(keys::RPM)
            .json(&chat(&model, &format!("request {i}")))
            .send()
    };
    for i in 0..3u32 {
        let r = send(i).await;
        r.expect_status(200);
        let (limit, remaining, _) = resp_rate(&r, "requests");
        assert_eq!(limit, keys::RPM_LIMIT, "{}: {LIMIT_REQUESTS}", r.label);
        assert_eq!(
            remaining,
            keys::RPM_LIMIT - 1 - u64::from(i),
            "{}: {REMAINING_REQUESTS} of request {}",
            r.label,
            i + 1
        );
        resp_no_rate_headers(&r, &["tokens"]);
    }
    let r = send(3).await;
    let retry = expect_429(&r, "requests", "rate_limit_exceeded");
    let (limit, remaining, reset) = resp_rate(&r, "requests");
    assert_eq!(
        (limit, remaining),
        (keys::RPM_LIMIT, 0),
        "{}: the refusal's headers",
        r.label
    );
    assert!(
        retry.abs_diff(reset.as_secs_f64().ceil() as u64) <= 1,
        "{}: retry-after {retry} and {RESET_REQUESTS} {reset:?} must agree",
        r.label
    );
    ctx.expect_upstream_calls(&model, 3, "the fourth request was refused")
        .await;

    tokio::time::sleep(reset + Duration::from_millis(300)).await;
    let r = send(4).await;
    r.expect_status(200);
    let (limit, remaining, _) = resp_rate(&r, "requests");
    assert_eq!(
        (limit, remaining),
        (keys::RPM_LIMIT, keys::RPM_LIMIT - 1),
        "{}: a new window",
        r.label
    );
    ctx.expect_upstream_calls(&model, 4, "the new window's request was forwarded")
        .await;
}

// ---------------------------------------------------------------------------------------------
// Tokens per minute
// ---------------------------------------------------------------------------------------------

/// `tpm: 1000`: a request reserves its prompt estimate + `max_tokens`: one with
/// `max_tokens: 600` passes, leaving less than 400; a second one of 600 is 429
/// `rate_limit_exceeded` of type `tokens`; a request asking for more than the whole limit
/// (`max_tokens: 1001`, or none: the default 4096) is refused the same way; none of the refused
/// reach the upstream; and the first one's reservation is corrected to its actual usage.
///
/// The first request's prompt is 500 one-letter words: the gateway estimates 257 tokens, the
/// mock counts 500 (a word a token), so its actual usage (more than 500) leaves too little for
/// the second one (611) whether or not its settlement came first.
pub async fn keys_tpm_reserves_prompt_and_max_tokens_and_refuses_the_excess(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let tpm = keys::TPM_LIMIT;
    let model = ctx.model("mock-model", "keys_tpm");
    let refused = ctx.model("mock-model", "keys_tpm_refused");
    fresh_window(&ctx, keys::TPM, "tokens", Duration::from_secs(10)).await;
    let send = |body: Value| {
        ctx.post("/v1/chat/completions")
            .key(keys::TPM)
            .json(&body)
            .send()
    };

    let words = vec!["w"; 500].join(" ");
    let first = send(chat_max(&model, &words, 600)).await;
    first.expect_status(200);
    let (limit, remaining, _) = resp_rate(&first, "tokens");
    assert_eq!(limit, tpm, "{}: {LIMIT_TOKENS}", first.label);
    assert!(
        remaining <= tpm - 600 && remaining > 0,
        "{}: {REMAINING_TOKENS} {remaining}: what is left after its prompt + 600",
        first.label
    );
    resp_no_rate_headers(&first, &["requests"]);
    let used = total_tokens(&first.label, &first.json()["usage"]);
    assert!(
        used + prompt_estimate("tokens second") + 600 > tpm && used < tpm - remaining,
        "{}: the test's arithmetic: the mock's usage {used} must leave no room for the second request and be below the reservation",
        first.label
    );

    let second = send(chat_max(&refused, "tokens second", 600)).await;
    expect_429(&second, "tokens", "rate_limit_exceeded");
    let (limit, remaining, _) = resp_rate(&second, "tokens");
    assert_eq!(limit, tpm, "{}: {LIMIT_TOKENS}", second.label);
    assert!(
        remaining < 600,
        "{}: {REMAINING_TOKENS} {remaining}",
        second.label
    );
    resp_no_rate_headers(&second, &["requests"]);

    for (body, what) in [
        (
            chat_max(&refused, "tokens big", tpm + 1),
            "max_tokens above tpm",
        ),
        (chat(&refused, "tokens default"), "no max_tokens: 4096"),
    ] {
        let r = send(body).await;
        expect_429(&r, "tokens", "rate_limit_exceeded");
        let (limit, _, _) = resp_rate(&r, "tokens");
        assert_eq!(limit, tpm, "{}: {what}", r.label);
    }
    ctx.expect_upstream_calls(&refused, 0, "every request over the limit was refused")
        .await;
    ctx.expect_upstream_calls(&model, 1, "the first request was forwarded")
        .await;

    // The first request's reservation is corrected to its usage.
    let v = key_info_until(&ctx, keys::TPM, "the settlement to the actual usage", |v| {
        v["limits"]["tokens"]["remaining"].as_u64() == Some(tpm - used)
    })
    .await;
    let (limit, _, _) = window(&ctx, &v, "tokens");
    assert_eq!(limit, tpm, "{v}");
}

// ---------------------------------------------------------------------------------------------
// Budgets
// ---------------------------------------------------------------------------------------------

/// A daily budget that affords exactly five worst-case requests: of 50 concurrent ones (on a
/// slow upstream, so that the reservations are made before the settlements) five reach the
/// upstream and the rest are 429 `insufficient_quota`; once the five are settled, the key's
/// info shows what they actually cost spent, nothing reserved, and no more than the budget.
///
/// The count does not depend on the timing: each request's actual cost is close to its worst
/// case, so even the five settled leave less than a sixth worst case (checked below). (The
/// upstream is only 300 ms slow: under `wrangler dev` 50 concurrent requests arrive over about
/// half a second, and a slower one gets near the suite's 1.5 s upstream timeout.)
pub async fn keys_budget_burst_lets_only_what_the_budget_affords_reach_the_upstream(ctx: Arc<Ctx>) {
    const REQUESTS: usize = 50;
    const AFFORDED: u128 = 5;
    const MAX_TOKENS: u64 = 40;
    let model = priced(&ctx, Some("mock-slow-300ms"), "keys_budget");
    let text = |i: usize| format!("burst {i:02}{}", " w".repeat(36));

    // The test's own arithmetic: the worst case of one request, and the budget.
    let estimate = prompt_estimate(&text(0));
    let worst = (u128::from(estimate) * PRICED_CHAT_INPUT_NANOS
        + u128::from(MAX_TOKENS) * PRICED_CHAT_OUTPUT_NANOS)
        * PICOS_PER_NANO;
    let budget = picos("keys::BUDGET_USD", keys::BUDGET_USD);
    assert!(
        AFFORDED * worst <= budget && budget < (AFFORDED + 1) * worst,
        "the test's arithmetic: a budget of {budget} picodollars must afford exactly {AFFORDED} requests of {worst}"
    );
    // The gateway's estimate of the request agrees (asked with a plain key).
    let r = ctx
        .post("/v1/gateway/estimate")
        .json(&chat_max(&model, &text(0), MAX_TOKENS))
        .send()
        .await;
    r.expect_status(200);
    let e = r.json();
    assert_eq!(
        e["prompt_tokens"], estimate,
        "{}: the prompt estimate: {e}",
        r.label
    );
    assert_eq!(
        picos(&r.label, e["cost_usd"]["max"].as_str().unwrap_or("?")),
        worst,
        "{}: the worst case: {e}",
        r.label
    );

    // Alone among this file's cases (see [`BURST`]); the key is untouched so far.
    let _alone = burst_lock(&ctx).write().await;
    let label = format!("[{}] GET {KEY_PATH}", ctx.target);
    let v = key_info(&ctx, keys::BUDGET).await;
    assert_eq!(
        (&v["budget"]["spent_usd"], &v["budget"]["reserved_usd"]),
        (&json!("0"), &json!("0")),
        "{label}: before the burst: {v}"
    );
    assert_eq!(
        money(&label, &v["budget"], "remaining_usd"),
        budget,
        "{label}: before the burst: {v}"
    );

    let calls: Vec<_> = (0..REQUESTS)
        .map(|i| {
            let call = ctx
                .post("/v1/chat/completions")
                .key(keys::BUDGET)
                .json(&chat_max(&model, &text(i), MAX_TOKENS));
            tokio::spawn(call.send())
        })
        .collect();
    let mut answered = Vec::new();
    let mut refused = 0;
    for c in calls {
        let r = c.await.expect("request task");
        resp_no_rate_headers(&r, &["requests", "tokens"]);
        if r.status == 200 {
            answered.push(r);
        } else {
            expect_429(&r, "insufficient_quota", "insufficient_quota");
            refused += 1;
        }
    }
    assert_eq!(
        answered.len() as u128,
        AFFORDED,
        "[{}] the budget affords {AFFORDED} of {REQUESTS} concurrent requests ({refused} refused)",
        ctx.target
    );
    ctx.expect_upstream_calls(
        &model,
        AFFORDED as u64,
        "only the requests the budget affords reach the upstream",
    )
    .await;

    let spent = spent_by(&answered.iter().collect::<Vec<_>>());
    let v = key_info_until(&ctx, keys::BUDGET, "every reservation settled", |v| {
        nothing_reserved(v)
    })
    .await;
    let b = &v["budget"];
    assert_eq!(b["amount_usd"], keys::BUDGET_USD, "{label}: {v}");
    assert_eq!(b["period"], "day", "{label}: {v}");
    assert_eq!(
        money(&label, b, "spent_usd"),
        spent,
        "{label}: spent_usd is what the five requests cost: {v}"
    );
    assert!(spent <= budget, "{label}: more than the budget spent: {v}");
    assert!(
        budget - spent < worst,
        "the test's arithmetic: the five settled must leave less than a sixth worst case ({budget} - {spent} < {worst})"
    );
    assert_eq!(
        money(&label, b, "remaining_usd"),
        budget - spent,
        "{label}: {v}"
    );
    expect_resets_at(&label, &v, "day");
    for absent in ["limits", "models", "name"] {
        assert!(v.get(absent).is_none(), "{label}: {absent}: {v}");
    }
    assert_eq!(v["id"], "keys-budget", "{label}: {v}");
}

/// A cache hit counts against requests only: a key with `rpm` and a budget that affords one
/// request gets the same deterministic request answered twice (the second a HIT, its
/// `x-ratelimit-remaining-requests` one lower), while a new request is refused by the budget.
pub async fn keys_cache_hit_counts_against_requests_only(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    const MAX_TOKENS: u64 = 20;
    let model = priced(&ctx, None, "keys_cache");
    let body = |text: &str| {
        json!({"model": model, "temperature": 0, "max_tokens": MAX_TOKENS,
               "messages": [{"role": "user", "content": text}]})
    };
    let (first, other) = ("cache me once", "cache me again");
    let worst = (u128::from(prompt_estimate(first)) * PRICED_CHAT_INPUT_NANOS
        + u128::from(MAX_TOKENS) * PRICED_CHAT_OUTPUT_NANOS)
        * PICOS_PER_NANO;
    let budget = picos("keys::CACHE_BUDGET_USD", keys::CACHE_BUDGET_USD);
    assert!(
        worst <= budget && budget < 2 * worst && prompt_estimate(other) == prompt_estimate(first),
        "the test's arithmetic: a budget of {budget} picodollars affords one request of {worst}"
    );
    fresh_window(&ctx, keys::CACHE, "requests", Duration::from_secs(5)).await;
    let send = |text: &str| {
        ctx.post("/v1/chat/completions")
            .key(keys::CACHE)
            .json(&body(text))
            .send()
    };

    let miss = send(first).await;
    miss.expect_status(200);
    assert_eq!(miss.header(CACHE), Some("MISS"), "{}", miss.label);
    let (limit, remaining, _) = resp_rate(&miss, "requests");
    assert_eq!(
        (limit, remaining),
        (keys::CACHE_RPM, keys::CACHE_RPM - 1),
        "{}",
        miss.label
    );
    let cost = spent_by(&[&miss]);
    assert!(
        budget - cost < worst,
        "[{}] the test's arithmetic: after the first request's {cost} picodollars, another must not fit",
        ctx.target
    );
    // The Worker writes the entry in the background.
    if ctx.target == "worker" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    key_info_until(
        &ctx,
        keys::CACHE,
        "the first request settled",
        nothing_reserved,
    )
    .await;

    let hit = send(first).await;
    hit.expect_status(200);
    assert_eq!(hit.header(CACHE), Some("HIT"), "{}", hit.label);
    assert_eq!(
        hit.body, miss.body,
        "{}: the hit replays the answer",
        hit.label
    );
    let (limit, remaining, _) = resp_rate(&hit, "requests");
    assert_eq!(
        (limit, remaining),
        (keys::CACHE_RPM, keys::CACHE_RPM - 2),
        "{}: a hit counts against requests",
        hit.label
    );
    resp_no_rate_headers(&hit, &["tokens"]);

    // Not against the budget: a request the cache cannot answer does not fit in what is left.
    let r = send(other).await;
    expect_429(&r, "insufficient_quota", "insufficient_quota");
    ctx.expect_upstream_calls(&model, 1, "the hit and the refused request made no call")
        .await;
    let label = format!("[{}] GET {KEY_PATH}", ctx.target);
    let v = key_info(&ctx, keys::CACHE).await;
    assert_eq!(
        money(&label, &v["budget"], "spent_usd"),
        cost,
        "{label}: only the miss is spent: {v}"
    );
}

// ---------------------------------------------------------------------------------------------
// GET /v1/gateway/key
// ---------------------------------------------------------------------------------------------

/// `GET /v1/gateway/key` of a key with a name, models, rpm, tpm and a budget: every field, each
/// consistent with the traffic so far (requests left, tokens left after the settlements, the
/// budget spent and nothing reserved, `reset_secs` within the minute, `resets_at` the next
/// month's start in RFC 3339), and asking counts against nothing. A plain `GATEWAY_API_KEYS` key
/// gets only its `id`.
pub async fn keys_info_reports_the_keys_limits_and_what_is_left(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let model = priced(&ctx, None, "keys_info");
    let label = format!("[{}] GET {KEY_PATH}", ctx.target);
    fresh_window(&ctx, keys::INFO, "requests", Duration::from_secs(15)).await;

    let mut answers = Vec::new();
    for text in ["what is left?", "and now?"] {
        let r = ctx
            .post("/v1/chat/completions")
            .key(keys::INFO)
            .json(&chat_max(&model, text, 50))
            .send()
            .await;
        r.expect_status(200);
        answers.push(r);
    }
    let (_, remaining, _) = resp_rate(&answers[1], "requests");
    assert_eq!(remaining, keys::INFO_RPM - 2, "{}", answers[1].label);
    let used: u64 = answers
        .iter()
        .map(|r| total_tokens(&r.label, &r.json()["usage"]))
        .sum();
    let spent = spent_by(&answers.iter().collect::<Vec<_>>());

    let v = key_info_until(&ctx, keys::INFO, "both requests settled", |v| {
        nothing_reserved(v)
            && v["limits"]["tokens"]["remaining"].as_u64() == Some(keys::INFO_TPM - used)
    })
    .await;
    assert_eq!(v["id"], "keys-info", "{label}: {v}");
    assert_eq!(v["name"], keys::INFO_NAME, "{label}: {v}");
    assert_eq!(v["models"], json!(["keys_info_*"]), "{label}: {v}");
    let (limit, remaining, _) = window(&ctx, &v, "requests");
    assert_eq!(
        (limit, remaining),
        (keys::INFO_RPM, keys::INFO_RPM - 2),
        "{label}: requests: {v}"
    );
    let (limit, remaining, _) = window(&ctx, &v, "tokens");
    assert_eq!(
        (limit, remaining),
        (keys::INFO_TPM, keys::INFO_TPM - used),
        "{label}: tokens: {v}"
    );
    let b = &v["budget"];
    assert_eq!(b["amount_usd"], "5", "{label}: {v}");
    assert_eq!(b["period"], "month", "{label}: {v}");
    assert_eq!(money(&label, b, "spent_usd"), spent, "{label}: {v}");
    assert_eq!(money(&label, b, "reserved_usd"), 0, "{label}: {v}");
    assert_eq!(
        money(&label, b, "remaining_usd"),
        5 * PICOS_PER_USD - spent,
        "{label}: {v}"
    );
    expect_resets_at(&label, &v, "month");
    let fields: Vec<&String> = v
        .as_object()
        .map(|o| o.keys().collect())
        .unwrap_or_default();
    assert_eq!(
        fields.len(),
        5,
        "{label}: id, name, models, limits, budget: {v}"
    );

    // Asking again changed nothing.
    let again = key_info(&ctx, keys::INFO).await;
    let (_, remaining, _) = window(&ctx, &again, "requests");
    assert_eq!(
        remaining,
        keys::INFO_RPM - 2,
        "{label}: asking must not count: {again}"
    );
    // Nor does the key's next request see it as one.
    let r = ctx
        .post("/v1/chat/completions")
        .key(keys::INFO)
        .json(&chat_max(&model, "one more", 50))
        .send()
        .await;
    r.expect_status(200);
    let (_, remaining, _) = resp_rate(&r, "requests");
    assert_eq!(remaining, keys::INFO_RPM - 3, "{}", r.label);

    // A plain key of GATEWAY_API_KEYS: its id only.
    let v = key_info(&ctx, &ctx.key).await;
    let obj = v.as_object().cloned().unwrap_or_default();
    assert_eq!(obj.len(), 1, "{label} (plain key): only the id: {v}");
    let id = v["id"].as_str().unwrap_or_default();
    assert!(
        !id.is_empty() && !id.contains(&ctx.key),
        "{label} (plain key): the id names the key without being it: {v}"
    );
    let r = ctx.get(KEY_PATH).send().await;
    resp_no_rate_headers(&r, &["requests", "tokens"]);
}

/// A plain key (no rpm/tpm) gets no `x-ratelimit-*` headers on its answers.
pub async fn keys_without_rpm_or_tpm_get_no_ratelimit_headers(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    let model = ctx.model("mock-model", "keys_no_headers");
    let r = ctx
        .post("/v1/chat/completions")
        .json(&chat(&model, "no limits here"))
        .send()
        .await;
    r.expect_status(200);
    resp_no_rate_headers(&r, &["requests", "tokens"]);
    let s = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": model, "stream": true,
                      "messages": [{"role": "user", "content": "no limits streamed"}]}))
        .stream()
        .await;
    s.expect_status(200);
    expect_no_rate_headers(
        &s.label,
        |n| s.header(n).map(str::to_string),
        &["requests", "tokens"],
    );
}

// ---------------------------------------------------------------------------------------------
// Streams
// ---------------------------------------------------------------------------------------------

/// A streamed request of a `tpm` key reserves its prompt + `max_tokens`, and is settled to the
/// usage of the stream: the one the client asked for, or the one the gateway asked for itself.
pub async fn keys_stream_tokens_are_settled_from_the_streams_usage(ctx: Arc<Ctx>) {
    let _shared = burst_lock(&ctx).read().await;
    const MAX_TOKENS: u64 = 500;
    let tpm = keys::STREAM_TPM;
    let model = ctx.model("mock-model", "keys_stream");
    let text = "stream my tokens";
    let body = |include_usage: bool| {
        let mut b = chat_max(&model, text, MAX_TOKENS);
        b["stream"] = json!(true);
        if include_usage {
            b["stream_options"] = json!({"include_usage": true});
        }
        b
    };
    fresh_window(&ctx, keys::STREAM, "tokens", Duration::from_secs(15)).await;

    let s = ctx
        .post("/v1/chat/completions")
        .key(keys::STREAM)
        .json(&body(true))
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    assert!(
        s.events.last().is_some_and(|e| e.is_done()),
        "{}: {}",
        s.label,
        s.raw
    );
    let (limit, remaining, _) = stream_rate(&s, "tokens");
    assert_eq!(limit, tpm, "{}", s.label);
    assert!(
        remaining <= tpm - MAX_TOKENS && remaining > 0,
        "{}: {REMAINING_TOKENS} {remaining}: the prompt + {MAX_TOKENS} are reserved",
        s.label
    );
    expect_no_rate_headers(&s.label, |n| s.header(n).map(str::to_string), &["requests"]);
    let usage = s
        .events
        .iter()
        .filter_map(|e| e.json())
        .find(|v| v.get("usage").is_some_and(|u| !u.is_null()))
        .unwrap_or_else(|| panic!("{}: no usage chunk: {}", s.label, s.raw))["usage"]
        .clone();
    let used = total_tokens(&s.label, &usage);
    assert!(
        used < prompt_estimate(text) + MAX_TOKENS,
        "{}: the test needs a usage below the reservation: {usage}",
        s.label
    );
    key_info_until(&ctx, keys::STREAM, "the stream settled to its usage", |v| {
        v["limits"]["tokens"]["remaining"].as_u64() == Some(tpm - used)
    })
    .await;

    // The same stream without usage asked for: the gateway reads the usage it asked for.
    let s = ctx
        .post("/v1/chat/completions")
        .key(keys::STREAM)
        .json(&body(false))
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    let (_, remaining, _) = stream_rate(&s, "tokens");
    assert!(
        remaining <= tpm - used - MAX_TOKENS,
        "{}: {REMAINING_TOKENS} {remaining}",
        s.label
    );
    key_info_until(
        &ctx,
        keys::STREAM,
        "the second stream settled to its usage",
        |v| v["limits"]["tokens"]["remaining"].as_u64() == Some(tpm - 2 * used),
    )
    .await;
    ctx.expect_upstream_calls(&model, 2, "two streams").await;
}
