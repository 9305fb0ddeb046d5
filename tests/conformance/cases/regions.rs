//! Multi-region routing (`upstreams` + `routing` in `GATEWAY_CONFIG`): the order of attempts,
//! failover and what does not fail over, ejections and their lengths, the breaker, probes,
//! streams held until their first content (keepalives meanwhile), the status endpoint and the
//! log line.
//!
//! Every case but the start-up ones runs against the target's multi-region fixture
//! ([`harness::spawn_regions`]): a gateway in front of three mocks, `seoul`, `frankfurt` and
//! `dallas` (each with its own key and place; fallbacks seoul → frankfurt, dallas; frankfurt →
//! dallas, seoul; dallas → seoul, frankfurt) and a fourth upstream, `closed`, on a port nothing
//! listens on (fallback: seoul). Probes are off in it; the probe cases start a gateway of their
//! own. The cases hold the fixture's lock: one at a time per target, each starting from
//! [`Fx::settle`] (mocks reset, every upstream back in rotation, breakers closed by a success).
//!
//! Failover cases pin the first upstream with `x-gateway-region`, so the order is known: the
//! pinned one, then its fallbacks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};
use tokio::sync::OwnedMutexGuard;

use super::{chat_at, Ctx};
use crate::client::{self, Call, Resp, SseEvent, Streamed};
use crate::expect;
use crate::harness::{self, region_routing as rr, Processes, Regions, CLOSED_UPSTREAM};

const SEOUL: &str = "seoul";
const FRANKFURT: &str = "frankfurt";
const DALLAS: &str = "dallas";
const ALL: [&str; 3] = [SEOUL, FRANKFURT, DALLAS];

/// Makes every request body unique: no cache hit or coalescing between two requests.
static SEQ: AtomicU64 = AtomicU64::new(0);

/// The target's multi-region fixture, held by one case at a time.
pub struct Fx {
    ctx: Arc<Ctx>,
    r: Arc<Regions>,
    _guard: OwnedMutexGuard<()>,
}

/// Waits for the fixture's lock, then settles it.
async fn fixture(ctx: &Arc<Ctx>) -> Fx {
    let fx = lock(ctx).await;
    fx.settle().await;
    fx
}

async fn lock(ctx: &Arc<Ctx>) -> Fx {
    let r = match ctx.regions.get() {
        Some(Ok(r)) => r.clone(),
        Some(Err(e)) => panic!("the multi-region fixture did not start: {e}"),
        None => panic!("the multi-region fixture was not started"),
    };
    let guard = r.lock.clone().lock_owned().await;
    Fx {
        ctx: ctx.clone(),
        r,
        _guard: guard,
    }
}

/// A request ready to send, and the text of its user message.
struct Req {
    call: Call,
    text: String,
}

impl Fx {
    fn target(&self) -> &str {
        &self.r.target
    }

    fn mock_base(&self, name: &str) -> &str {
        &self.r.mock(name).base
    }

    /// A chat completion to the fixture's gateway (pinned to `pin` when given), unique.
    fn request(&self, pin: Option<&str>, stream: bool) -> Req {
        self.request_at(&self.r.gateway, pin, stream)
    }

    fn request_at(&self, base: &str, pin: Option<&str>, stream: bool) -> Req {
        let n = SEQ.fetch_add(1, Ordering::Relaxed);
        let text = format!("regions {} {n}", self.target());
        let body = if stream {
            json!({"model": "mock-stream-3x20ms@regions", "stream": true,
                   "messages": [{"role": "user", "content": text}]})
        } else {
            json!({"model": "mock-model@regions", "messages": [{"role": "user", "content": text}]})
        };
        let mut call = chat_at(&self.ctx, base, &self.ctx.key).json(&body);
        if let Some(p) = pin {
            call = call.header("x-gateway-region", p);
        }
        Req { call, text }
    }

    /// The same request sent straight to a mock (with its key): what a clean answer looks like.
    async fn direct_stream(&self, mock: &str, text: &str) -> Streamed {
        Call::new(
            self.ctx.http.clone(),
            self.mock_base(mock),
            "mock",
            Method::POST,
            "/v1/chat/completions",
            &harness::region_key(mock),
        )
        .json(
            &json!({"model": "mock-stream-3x20ms@regions", "stream": true,
                      "messages": [{"role": "user", "content": text}]}),
        )
        .stream()
        .await
    }

    async fn fault(&self, mock: &str, fault: Value) {
        let url = format!("{}/__fault", self.mock_base(mock));
        client::control(&self.ctx.http, Method::POST, &url, Some(&fault)).await;
    }

    async fn clear(&self, mock: &str) {
        let url = format!("{}/__fault", self.mock_base(mock));
        client::control(&self.ctx.http, Method::DELETE, &url, None).await;
    }

    async fn reset_all(&self) {
        for m in ALL {
            let url = format!("{}/__reset", self.mock_base(m));
            client::control(&self.ctx.http, Method::POST, &url, None).await;
        }
    }

    /// Model requests (`__total`) and probes (`__models`) the mock received since its reset.
    async fn mock_calls(&self, mock: &str) -> (u64, u64) {
        let url = format!("{}/__calls", self.mock_base(mock));
        let v = client::get_json(&self.ctx.http, &url).await;
        (
            v["__total"].as_u64().unwrap_or(0),
            v["__models"].as_u64().unwrap_or(0),
        )
    }

    /// Model requests per mock, in the order seoul, frankfurt, dallas.
    async fn counts(&self) -> [u64; 3] {
        let mut out = [0; 3];
        for (i, m) in ALL.iter().enumerate() {
            out[i] = self.mock_calls(m).await.0;
        }
        out
    }

    async fn expect_counts(&self, expected: [u64; 3], why: &str) {
        let got = self.counts().await;
        assert_eq!(
            got,
            expected,
            "[{}] model requests per upstream (seoul, frankfurt, dallas): expected {expected:?} ({why}), got {got:?}",
            self.target()
        );
    }

    async fn status(&self) -> Value {
        self.status_at(&self.r.gateway).await
    }

    async fn status_at(&self, base: &str) -> Value {
        let r = Call::new(
            self.ctx.http.clone(),
            base,
            self.target(),
            Method::GET,
            "/v1/gateway/status",
            &self.ctx.key,
        )
        .send()
        .await;
        r.expect_status(200);
        r.json()
    }

    /// Every case starts here: mocks without faults or counts, every upstream of the three in
    /// rotation (no ejection, no open breaker), and each one's breaker closed by a success (so
    /// that failures left by an earlier case do not add up).
    async fn settle(&self) {
        self.reset_all().await;
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            let st = self.status().await;
            let states: Vec<String> = ALL.iter().map(|n| state(&st, n)).collect();
            if states.iter().all(|s| s == "healthy" || s == "half_open") {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] settle: the upstreams did not come back into rotation within 15 s: {st}",
                self.target()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        for name in ALL {
            let r = self.request(Some(name), false).call.send().await;
            assert!(
                r.status == 200 && r.header("x-gateway-upstream") == Some(name),
                "[{}] settle: a request pinned to {name} got {} from {:?}: {}",
                self.target(),
                r.status,
                r.header("x-gateway-upstream"),
                r.text()
            );
        }
        self.reset_all().await;
    }

    /// Waits until `name`'s state in the fixture's status is one of `states`.
    async fn wait_state(&self, base: &str, name: &str, states: &[&str], within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let st = self.status_at(base).await;
            if states.contains(&state(&st, name).as_str()) {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "[{}] {name} did not become {states:?} within {within:?}: {st}",
                self.target()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The entry of upstream `name` in a status document.
fn upstream<'a>(st: &'a Value, name: &str) -> &'a Value {
    st["upstreams"]
        .as_array()
        .and_then(|a| a.iter().find(|u| u["name"] == name))
        .unwrap_or_else(|| panic!("no upstream {name} in the status: {st}"))
}

fn state(st: &Value, name: &str) -> String {
    upstream(st, name)["state"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no state: {st}"))
        .to_string()
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Milliseconds since the epoch of an RFC 3339 UTC time (`2026-11-22T10:00:00.123Z`).
fn unix_ms(s: &str) -> i64 {
    let bad = || -> ! { panic!("not an RFC 3339 UTC time: {s:?}") };
    let num = |r: std::ops::Range<usize>| -> i64 {
        match s.get(r).and_then(|t| t.parse().ok()) {
            Some(n) => n,
            None => bad(),
        }
    };
    if s.len() < 20 || !s.ends_with('Z') || s.get(10..11) != Some("T") {
        bad();
    }
    let days = days_from_civil(num(0..4), num(5..7), num(8..10));
    let secs = days * 86_400 + num(11..13) * 3600 + num(14..16) * 60 + num(17..19);
    let ms = match s[19..s.len() - 1].strip_prefix('.') {
        None if s.len() == 20 => 0,
        Some(f) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => {
            format!("{f:0<3}")[..3].parse::<i64>().unwrap_or(0)
        }
        _ => bad(),
    };
    secs * 1000 + ms
}

/// How long from the failure that tripped upstream `name` (its `last_error.at`) until `field`,
/// in seconds: the length the gateway gave the ejection or the breaker, whatever time the test
/// took to ask for the status (slow on a loaded machine).
fn seconds_from_failure(target: &str, st: &Value, name: &str, field: &str) -> f64 {
    let u = upstream(st, name);
    let (Some(until), Some(at)) = (u[field].as_str(), u["last_error"]["at"].as_str()) else {
        panic!("[{target}] {name} has no {field} or last_error.at: {st}");
    };
    (unix_ms(until) - unix_ms(at)) as f64 / 1000.0
}

fn expect_ejected_for(target: &str, st: &Value, name: &str, min: f64, max: f64, why: &str) {
    assert_eq!(
        state(st, name),
        "ejected",
        "[{target}] {name} should be ejected ({why}): {st}"
    );
    let secs = seconds_from_failure(target, st, name, "ejected_until");
    assert!(
        (min..=max).contains(&secs),
        "[{target}] {name} is ejected for {secs:.2} s from its failure, expected {min}..{max} s ({why}): {st}"
    );
}

/// A whole answer from `upstream` after `attempts` attempts: the header naming it, the mock's own
/// header, the attempt count.
fn served(r: &Resp, upstream: &str, attempts: u32) {
    r.expect_status(200);
    assert_eq!(
        r.header("x-gateway-upstream"),
        Some(upstream),
        "{}: x-gateway-upstream (x-gateway-attempts {:?}); body {}",
        r.label,
        r.header("x-gateway-attempts"),
        r.text()
    );
    assert_eq!(
        r.header("x-mock-upstream"),
        Some(upstream),
        "{}: the answer is not that mock's (x-gateway-upstream {:?})",
        r.label,
        r.header("x-gateway-upstream")
    );
    expect_attempts(&r.label, r.header("x-gateway-attempts"), attempts);
    assert!(
        r.json()["choices"][0]["message"]["content"].is_string(),
        "{}: {}",
        r.label,
        r.text()
    );
}

fn expect_attempts(label: &str, header: Option<&str>, attempts: u32) {
    assert_eq!(
        header,
        Some(attempts.to_string().as_str()),
        "{label}: x-gateway-attempts"
    );
}

fn is_error_event(e: &SseEvent) -> bool {
    e.json().is_some_and(|v| v.get("error").is_some())
}

/// A stream that the client got whole from `upstream`: the same events as that mock sends for
/// the same request straight, ending with `[DONE]`, no error event, no keepalive in between.
fn clean_stream(s: &Streamed, direct: &Streamed) {
    s.expect_status(200).expect_event_stream();
    assert!(
        s.body_error.is_none(),
        "{}: body ended with an error: {:?}; so far: {}",
        s.label,
        s.body_error,
        s.raw
    );
    assert!(
        !s.events.iter().any(is_error_event),
        "{}: an error event reached the client: {}",
        s.label,
        s.raw
    );
    assert_eq!(
        s.events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "{}: does not end with [DONE]: {}",
        s.label,
        s.raw
    );
    let got: Vec<&str> = s.events.iter().map(|e| e.data.as_str()).collect();
    let want: Vec<&str> = direct.events.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(
        got, want,
        "{}: not the events the upstream sends for this request (left: the gateway's, right: the mock's straight)",
        s.label
    );
}

fn stream_served(s: &Streamed, direct: &Streamed, upstream: &str, attempts: u32) {
    clean_stream(s, direct);
    assert_eq!(
        s.header("x-gateway-upstream"),
        Some(upstream),
        "{}: x-gateway-upstream (x-gateway-attempts {:?})",
        s.label,
        s.header("x-gateway-attempts")
    );
    assert_eq!(s.header("x-mock-upstream"), Some(upstream), "{}", s.label);
    expect_attempts(&s.label, s.header("x-gateway-attempts"), attempts);
    assert!(
        s.comments.is_empty(),
        "{}: keepalives although content came at once: {:?}",
        s.label,
        s.comments
    );
}

// ----------------------------------------------------------------------------------------------
// Failover and what does not fail over
// ----------------------------------------------------------------------------------------------

/// `closed`'s port refuses connections: its fallback answers, on the same request.
pub async fn failover_on_refused_connection_reaches_the_fallback(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    // Only this case calls `closed`; make sure no earlier run of it left it out of rotation.
    fx.wait_state(
        &fx.r.gateway,
        CLOSED_UPSTREAM,
        &["healthy", "half_open"],
        Duration::from_secs(5),
    )
    .await;
    let r = fx.request(Some(CLOSED_UPSTREAM), false).call.send().await;
    served(&r, SEOUL, 2);
    fx.expect_counts([1, 0, 0], "closed refused, its fallback seoul answered")
        .await;
    let st = fx.status().await;
    let closed = upstream(&st, CLOSED_UPSTREAM);
    assert!(
        closed["errors"].as_u64().unwrap_or(0) >= 1 && closed["last_error"]["kind"].is_string(),
        "[{}] the refused attempt is not in closed's status: {closed}",
        fx.target()
    );
}

async fn failover_on_status(ctx: Arc<Ctx>, status: u16) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": status})).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.expect_counts([1, 1, 0], "seoul failed, its first fallback answered")
        .await;
}

pub async fn failover_on_500_reaches_the_next_upstream(ctx: Arc<Ctx>) {
    failover_on_status(ctx, 500).await;
}

/// A 503 fails over; without a retry hint the upstream stays in rotation (the breaker counts
/// it), with one (`error.retry_after` in the body) it is ejected for that long.
pub async fn failover_on_503_reaches_the_next_upstream_and_its_body_retry_after_ejects_it(
    ctx: Arc<Ctx>,
) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": 503})).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.expect_counts([1, 1, 0], "seoul failed, its first fallback answered")
        .await;
    let st = fx.status().await;
    assert_ne!(
        state(&st, SEOUL),
        "ejected",
        "[{}] a 503 without a retry hint ejected seoul: {st}",
        fx.target()
    );

    fx.fault(SEOUL, json!({"status": 503, "body_retry_after": 2}))
        .await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.clear(SEOUL).await;
    let st = fx.status().await;
    expect_ejected_for(
        fx.target(),
        &st,
        SEOUL,
        1.6,
        3.2,
        "503 with error.retry_after 2",
    );
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    fx.expect_counts([2, 3, 0], "the ejected seoul is skipped")
        .await;
}

/// 408, 502 and 504 fail over too (each on a different upstream, so no breaker opens).
pub async fn failover_on_408_502_504_reaches_the_next_upstream(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for (status, failing, next) in [
        (408, SEOUL, FRANKFURT),
        (502, FRANKFURT, DALLAS),
        (504, DALLAS, SEOUL),
    ] {
        fx.fault(failing, json!({"status": status})).await;
        let r = fx.request(Some(failing), false).call.send().await;
        fx.clear(failing).await;
        served(&r, next, 2);
    }
    fx.expect_counts([2, 2, 2], "each failed once and answered once")
        .await;
}

/// A 429 with `Retry-After: 2` fails over and ejects the upstream for 2 s (not the 1 s
/// default): requests meanwhile do not reach it, and once it ends it is used again.
pub async fn failover_on_429_skips_the_upstream_for_its_retry_after_then_uses_it_again(
    ctx: Arc<Ctx>,
) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": 429, "retry_after": "2"}))
        .await;
    let t0 = Instant::now();
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    // The mock would answer now: only the ejection keeps requests away from it.
    fx.clear(SEOUL).await;
    let st = fx.status().await;
    expect_ejected_for(fx.target(), &st, SEOUL, 1.6, 3.2, "retry-after: 2");
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    // Past the 1 s default ejection: still out.
    tokio::time::sleep(Duration::from_millis(1400).saturating_sub(t0.elapsed())).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    fx.expect_counts([1, 3, 0], "seoul skipped while ejected")
        .await;
    tokio::time::sleep(Duration::from_millis(1900).saturating_sub(t0.elapsed())).await;
    let back = loop {
        let r = fx.request(Some(SEOUL), false).call.send().await;
        if r.header("x-gateway-upstream") == Some(SEOUL) {
            served(&r, SEOUL, 1);
            break t0.elapsed();
        }
        served(&r, FRANKFURT, 1);
        assert!(
            t0.elapsed() < Duration::from_millis(4500),
            "[{}] seoul still skipped {:?} after a 429 with retry-after 2 (eject_max is {} s)",
            fx.target(),
            t0.elapsed(),
            rr::EJECT_MAX_SECS
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
    };
    assert!(
        back >= Duration::from_millis(1900),
        "[{}] seoul was used again {back:?} after its 429 with retry-after 2",
        fx.target()
    );
}

/// The ejection's length comes from `retry-after-ms` and `x-ratelimit-reset-requests` too.
pub async fn ejection_follows_retry_after_ms_and_ratelimit_reset_headers(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": 429, "retry_after_ms": 1500}))
        .await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.clear(SEOUL).await;
    fx.fault(DALLAS, json!({"status": 429, "reset_requests": "2s"}))
        .await;
    // dallas's fallbacks: seoul (ejected, skipped), then frankfurt.
    let r = fx.request(Some(DALLAS), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.clear(DALLAS).await;
    let st = fx.status().await;
    expect_ejected_for(fx.target(), &st, SEOUL, 1.1, 3.2, "retry-after-ms: 1500");
    expect_ejected_for(
        fx.target(),
        &st,
        DALLAS,
        1.6,
        3.2,
        "x-ratelimit-reset-requests: 2s",
    );
    fx.expect_counts([1, 2, 1], "each failing upstream called once")
        .await;
}

/// A spent quota (429 `insufficient_quota`) fails over and ejects the upstream for
/// `eject_max_secs`.
pub async fn insufficient_quota_fails_over_and_ejects_the_upstream_for_the_maximum(ctx: Arc<Ctx>) {
    ejected_for_the_maximum(ctx, json!({"insufficient_quota": true})).await;
}

/// A 401 from an upstream (its key refused) fails over and ejects it for `eject_max_secs`.
pub async fn upstream_401_fails_over_and_ejects_the_upstream_for_the_maximum(ctx: Arc<Ctx>) {
    ejected_for_the_maximum(ctx, json!({"status": 401})).await;
}

async fn ejected_for_the_maximum(ctx: Arc<Ctx>, fault: Value) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, fault.clone()).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    fx.clear(SEOUL).await;
    let st = fx.status().await;
    let max = rr::EJECT_MAX_SECS as f64;
    expect_ejected_for(
        fx.target(),
        &st,
        SEOUL,
        max - 0.4,
        max + 0.2,
        &fault.to_string(),
    );
    assert!(
        upstream(&st, SEOUL)["last_error"]["kind"].is_string(),
        "[{}] no last_error for seoul: {st}",
        fx.target()
    );
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    fx.expect_counts([1, 2, 0], "seoul skipped while ejected")
        .await;
}

/// Every upstream refusing the gateway's key (401 or 403): 502 `upstream_auth_failed`, never the
/// upstream's 401 (which the client would take for its own key).
pub async fn all_upstreams_401_or_403_is_502_upstream_auth_failed(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": 401})).await;
    fx.fault(FRANKFURT, json!({"status": 403})).await;
    fx.fault(DALLAS, json!({"status": 401})).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    let e = expect::error(&r, 502, "upstream_auth_failed");
    assert_eq!(e["type"], "api_error", "{}: {}", r.label, r.text());
    expect_attempts(&r.label, r.header("x-gateway-attempts"), 3);
    fx.expect_counts([1, 1, 1], "each tried once").await;
}

/// A 4xx that is the request's own fault (400, 404, 413, 422) reaches the client as the upstream
/// sent it, after one attempt.
pub async fn no_retry_on_400_404_413_422(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for (status, code) in [
        (400, "invalid_request"),
        (404, "model_not_found"),
        (413, "request_too_large"),
        (422, "unprocessable_entity"),
    ] {
        fx.fault(SEOUL, json!({"status": status})).await;
        let r = fx.request(Some(SEOUL), false).call.send().await;
        r.expect_status(status);
        let v = r.json();
        let e = expect::openai_error_shape(&r.label, &v);
        assert_eq!(e["code"], code, "{}: not the upstream's body: {v}", r.label);
        assert_eq!(r.header("x-gateway-upstream"), Some(SEOUL), "{}", r.label);
        assert_eq!(r.header("x-mock-upstream"), Some(SEOUL), "{}", r.label);
        expect_attempts(&r.label, r.header("x-gateway-attempts"), 1);
    }
    fx.clear(SEOUL).await;
    let r = Call::new(
        fx.ctx.http.clone(),
        &fx.r.gateway,
        fx.target(),
        Method::POST,
        "/v1/chat/completions",
        &fx.ctx.key,
    )
    .header("x-gateway-region", SEOUL)
    .json(&json!({"model": "mock-error-400@regions",
                  "messages": [{"role": "user", "content": "bad"}]}));
    let r = r.send().await;
    r.expect_status(400);
    assert_eq!(r.json()["error"]["code"], "mock_400", "{}", r.label);
    expect_attempts(&r.label, r.header("x-gateway-attempts"), 1);
    fx.expect_counts([5, 0, 0], "no 4xx is retried").await;
}

/// Every upstream failing: `max_attempts` (3) attempts, then the last answer as it was (a 503,
/// the mock's body); with 429s, a `retry-after` too.
pub async fn all_upstreams_failing_is_the_last_answer_after_max_attempts(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for m in ALL {
        fx.fault(m, json!({"status": 503})).await;
    }
    let r = fx.request(Some(SEOUL), false).call.send().await;
    r.expect_status(503);
    let v = r.json();
    let e = expect::openai_error_shape(&r.label, &v);
    assert_eq!(e["code"], "service_unavailable", "{}: {v}", r.label);
    assert_eq!(r.header("x-gateway-upstream"), Some(DALLAS), "{}", r.label);
    assert_eq!(r.header("x-mock-upstream"), Some(DALLAS), "{}", r.label);
    expect_attempts(&r.label, r.header("x-gateway-attempts"), rr::MAX_ATTEMPTS);
    fx.expect_counts([1, 1, 1], "one attempt each, max_attempts 3")
        .await;

    for m in ALL {
        fx.fault(m, json!({"status": 429})).await;
    }
    let r = fx.request(Some(SEOUL), false).call.send().await;
    r.expect_status(429);
    assert_eq!(
        r.json()["error"]["code"],
        "rate_limit_exceeded",
        "{}",
        r.label
    );
    assert_eq!(r.header("x-gateway-upstream"), Some(DALLAS), "{}", r.label);
    expect_attempts(&r.label, r.header("x-gateway-attempts"), rr::MAX_ATTEMPTS);
    let retry_after = r.header("retry-after");
    assert!(
        retry_after
            .and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|s| (1..=rr::EJECT_MAX_SECS).contains(&s)),
        "{}: retry-after should be the soonest end of an ejection in seconds (1..{}), got {retry_after:?}",
        r.label,
        rr::EJECT_MAX_SECS
    );
    fx.expect_counts([2, 2, 2], "one attempt each").await;
}

/// An upstream that sends no response head within `first_byte_timeout_ms` (1.2 s) is left for the
/// next one.
pub async fn first_byte_timeout_fails_over_to_the_next_upstream(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"first_byte_delay_ms": 4000})).await;
    let r = fx.request(Some(SEOUL), false).call.send().await;
    fx.clear(SEOUL).await;
    served(&r, FRANKFURT, 2);
    let timeout = Duration::from_millis(rr::FIRST_BYTE_TIMEOUT_MS);
    assert!(
        r.elapsed >= timeout - Duration::from_millis(50)
            && r.elapsed < timeout + Duration::from_millis(1300),
        "{}: answered after {:?}; the first-byte timeout is {timeout:?}",
        r.label,
        r.elapsed
    );
    fx.expect_counts([1, 1, 0], "seoul timed out, frankfurt answered")
        .await;
}

// ----------------------------------------------------------------------------------------------
// Choosing the first upstream
// ----------------------------------------------------------------------------------------------

/// `x-gateway-region` with an upstream's name or region reaches that upstream.
pub async fn pinned_request_reaches_the_named_upstream_or_region(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for name in ALL {
        let r = fx.request(Some(name), false).call.send().await;
        served(&r, name, 1);
    }
    for (region, name) in [("eu-central", FRANKFURT), ("ap-northeast", SEOUL)] {
        let r = fx.request(Some(region), false).call.send().await;
        served(&r, name, 1);
    }
    fx.expect_counts([2, 2, 1], "each pinned request reached its upstream")
        .await;
}

/// Without a pin, the upstream nearest the client: the Worker's `request.cf` under `wrangler dev`
/// is Austin, Texas; the fly machine's `FLY_REGION` is `dfw`: both are nearest `dallas`.
pub async fn unpinned_request_goes_to_the_upstream_nearest_the_client(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for _ in 0..4 {
        let r = fx.request(None, false).call.send().await;
        served(&r, DALLAS, 1);
    }
    fx.expect_counts([0, 0, 4], "every request went to dallas")
        .await;
}

/// On Fly the client's edge region comes in `Fly-Region`: `nrt` (Tokyo) is nearest seoul, `fra`
/// frankfurt, `dfw` dallas; it wins over the machine's own region.
pub async fn fly_region_header_picks_the_nearest_upstream(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for (fly_region, name) in [("nrt", SEOUL), ("fra", FRANKFURT), ("dfw", DALLAS)] {
        let r = fx
            .request(None, false)
            .call
            .header("fly-region", fly_region)
            .send()
            .await;
        served(&r, name, 1);
    }
    fx.expect_counts([1, 1, 1], "one each").await;
}

// ----------------------------------------------------------------------------------------------
// Streams
// ----------------------------------------------------------------------------------------------

async fn stream_replaced(ctx: Arc<Ctx>, fault: Value) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, fault).await;
    let req = fx.request(Some(SEOUL), true);
    let s = req.call.stream().await;
    fx.expect_counts(
        [1, 1, 0],
        "seoul's stream failed before content, frankfurt's served",
    )
    .await;
    fx.clear(SEOUL).await;
    let direct = fx.direct_stream(FRANKFURT, &req.text).await;
    stream_served(&s, &direct, FRANKFURT, 2);
}

/// An upstream whose stream is an error event before any content (here after a role-only
/// chunk) is replaced by the next upstream, unseen: a clean stream from frankfurt.
pub async fn stream_error_event_before_content_is_replaced_by_the_next_upstream(ctx: Arc<Ctx>) {
    stream_replaced(ctx, json!({"error_event_before_content": true})).await;
}

/// An upstream whose stream is cut after its head, before any content, is replaced the same way.
pub async fn stream_cut_before_content_is_replaced_by_the_next_upstream(ctx: Arc<Ctx>) {
    stream_replaced(ctx, json!({"cut_after_events": 0})).await;
}

/// After content the client has part of an answer: a cut ends the stream with one error event
/// (no `[DONE]`, no second upstream); an upstream's own error event after content likewise ends
/// it with one error event.
pub async fn stream_failing_after_content_ends_with_one_error_event_and_no_done(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    for fault in [
        json!({"cut_after_events": 1}),
        json!({"error_event_after_content": true}),
    ] {
        fx.fault(SEOUL, fault.clone()).await;
        let s = fx.request(Some(SEOUL), true).call.stream().await;
        s.expect_status(200).expect_event_stream();
        assert_eq!(s.header("x-gateway-upstream"), Some(SEOUL), "{}", s.label);
        expect_attempts(&s.label, s.header("x-gateway-attempts"), 1);
        assert!(
            !s.events.iter().any(SseEvent::is_done),
            "{}: [DONE] after {fault}: {}",
            s.label,
            s.raw
        );
        let errors = s.events.iter().filter(|e| is_error_event(e)).count();
        assert_eq!(
            errors, 1,
            "{}: expected exactly one error event after {fault}: {}",
            s.label, s.raw
        );
        let last = s
            .events
            .last()
            .unwrap_or_else(|| panic!("{}: no events: {}", s.label, s.raw));
        assert!(is_error_event(last), "{}: {}", s.label, s.raw);
        expect::openai_error_shape(&s.label, &last.json().unwrap_or_default());
        let content = s.content();
        assert!(
            !content.is_empty(),
            "{}: the content before the failure is missing: {}",
            s.label,
            s.raw
        );
        assert!(
            s.unterminated.trim().is_empty(),
            "{}: partial event at the end: {:?}",
            s.label,
            s.unterminated
        );
    }
    fx.expect_counts([2, 0, 0], "no failover after content")
        .await;
}

/// A first byte slower than `keepalive_after_ms` (400 ms): the head (200, event stream) comes at
/// about 400 ms with a `: keepalive` comment, more follow every 300 ms, then the upstream's
/// events, whole.
pub async fn stream_slow_first_byte_gets_keepalive_comments_before_the_data(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"first_byte_delay_ms": 850})).await;
    let req = fx.request(Some(SEOUL), true);
    let s = req.call.stream().await;
    fx.clear(SEOUL).await;
    fx.expect_counts([1, 0, 0], "seoul answered, slowly").await;
    let direct = fx.direct_stream(SEOUL, &req.text).await;
    clean_stream(&s, &direct);
    expect_keepalives_first(&s, 2);
    let first_data = s.events[0].at;
    assert!(
        first_data >= Duration::from_millis(800),
        "{}: data at {first_data:?} though the upstream's first byte came after 850 ms",
        s.label
    );
}

/// Keepalives go on while the gateway fails over behind them: seoul never answers within the
/// first-byte timeout (1.2 s), frankfurt then serves the whole stream.
pub async fn stream_keepalives_continue_while_failing_over_and_the_next_upstream_serves(
    ctx: Arc<Ctx>,
) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"first_byte_delay_ms": 5000})).await;
    let req = fx.request(Some(SEOUL), true);
    let s = req.call.stream().await;
    fx.clear(SEOUL).await;
    fx.expect_counts([1, 1, 0], "seoul timed out, frankfurt served")
        .await;
    let direct = fx.direct_stream(FRANKFURT, &req.text).await;
    clean_stream(&s, &direct);
    expect_keepalives_first(&s, 3);
    assert!(
        s.events[0].at >= Duration::from_millis(rr::FIRST_BYTE_TIMEOUT_MS - 50),
        "{}: data at {:?}, before seoul's first-byte timeout",
        s.label,
        s.events[0].at
    );
}

/// After keepalives (the head is out), every upstream failing ends the stream with one error
/// event, no `[DONE]`.
pub async fn stream_after_keepalives_every_upstream_failing_ends_with_one_error_event(
    ctx: Arc<Ctx>,
) {
    let fx = fixture(&ctx).await;
    for m in ALL {
        fx.fault(m, json!({"status": 503, "first_byte_delay_ms": 500}))
            .await;
    }
    let s = fx.request(Some(SEOUL), true).call.stream().await;
    for m in ALL {
        fx.clear(m).await;
    }
    s.expect_status(200).expect_event_stream();
    assert!(
        s.raw.starts_with(": keepalive\n\n"),
        "{}: does not start with a keepalive: {:?}",
        s.label,
        s.raw
    );
    assert_eq!(
        s.events.len(),
        1,
        "{}: expected only one error event: {}",
        s.label,
        s.raw
    );
    assert!(is_error_event(&s.events[0]), "{}: {}", s.label, s.raw);
    expect::openai_error_shape(&s.label, &s.events[0].json().unwrap_or_default());
    assert!(
        s.unterminated.trim().is_empty(),
        "{}: partial event at the end: {:?}",
        s.label,
        s.unterminated
    );
    fx.expect_counts([1, 1, 1], "max_attempts 3, one each")
        .await;
}

/// The head came at about `keepalive_after_ms`, the body starts with `: keepalive`, at least
/// `min` keepalives came, all before the first event, and keepalives are comments only.
fn expect_keepalives_first(s: &Streamed, min: usize) {
    let after = Duration::from_millis(rr::KEEPALIVE_AFTER_MS);
    assert!(
        s.head_at >= after - Duration::from_millis(50)
            && s.head_at < after + Duration::from_millis(350),
        "{}: the head came at {:?}; keepalive_after_ms is {after:?}",
        s.label,
        s.head_at
    );
    assert!(
        s.raw.starts_with(": keepalive\n\n"),
        "{}: does not start with a keepalive comment: {:?}",
        s.label,
        s.raw
    );
    let first_data = s
        .events
        .first()
        .map(|e| e.at)
        .unwrap_or_else(|| panic!("{}: no events: {}", s.label, s.raw));
    let before: Vec<Duration> = s
        .comments
        .iter()
        .filter(|c| c.text == "keepalive")
        .map(|c| c.at)
        .filter(|&at| at <= first_data)
        .collect();
    assert!(
        before.len() >= min,
        "{}: {} keepalives before the first event at {first_data:?} (expected at least {min}, every {} ms): {:?}",
        s.label,
        before.len(),
        rr::KEEPALIVE_INTERVAL_MS,
        s.comments
    );
    let data_at = s.raw.find("data:").unwrap_or(s.raw.len());
    assert!(
        !s.raw[data_at..].contains(": keepalive"),
        "{}: a keepalive after the data started: {:?}",
        s.label,
        s.raw
    );
}

// ----------------------------------------------------------------------------------------------
// The breaker
// ----------------------------------------------------------------------------------------------

/// Opens seoul's breaker with 3 consecutive 500s; returns when the last one was answered.
async fn open_breaker(fx: &Fx) -> Instant {
    fx.fault(SEOUL, json!({"status": 500})).await;
    for _ in 0..rr::BREAKER_FAILURES {
        let r = fx.request(Some(SEOUL), false).call.send().await;
        served(&r, FRANKFURT, 2);
    }
    let opened = Instant::now();
    let st = fx.status().await;
    assert_eq!(
        state(&st, SEOUL),
        "open",
        "[{}] seoul after {} consecutive failures: {st}",
        fx.target(),
        rr::BREAKER_FAILURES
    );
    let secs = seconds_from_failure(fx.target(), &st, SEOUL, "breaker_open_until");
    let cooldown = rr::BREAKER_COOLDOWN_SECS as f64;
    assert!(
        (cooldown - 0.5..=cooldown + 0.2).contains(&secs),
        "[{}] the breaker is open for {secs:.2} s from the failure that opened it, cooldown_secs is {cooldown}: {st}",
        fx.target()
    );
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    let n = rr::BREAKER_FAILURES as u64;
    fx.expect_counts([n, n + 1, 0], "the open breaker keeps requests from seoul")
        .await;
    opened
}

/// 3 consecutive failures open the breaker (seoul gets no more calls, status `open`); after the
/// 2 s cooldown it is `half_open` and one request goes through; its success closes it.
pub async fn breaker_opens_after_3_failures_and_a_successful_trial_after_the_cooldown_closes_it(
    ctx: Arc<Ctx>,
) {
    let fx = fixture(&ctx).await;
    let opened = open_breaker(&fx).await;
    fx.clear(SEOUL).await;
    let cooldown = Duration::from_secs(rr::BREAKER_COOLDOWN_SECS);
    tokio::time::sleep((cooldown + Duration::from_millis(200)).saturating_sub(opened.elapsed()))
        .await;
    let st = fx.status().await;
    assert_eq!(
        state(&st, SEOUL),
        "half_open",
        "[{}] seoul after the cooldown: {st}",
        fx.target()
    );
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, SEOUL, 1);
    let st = fx.status().await;
    assert_eq!(state(&st, SEOUL), "healthy", "[{}] {st}", fx.target());
    assert!(
        upstream(&st, SEOUL)["breaker_open_until"].is_null(),
        "[{}] {st}",
        fx.target()
    );
}

/// A half-open breaker's trial that fails re-opens it for twice the cooldown.
pub async fn breaker_trial_that_fails_reopens_it_for_twice_the_cooldown(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    let opened = open_breaker(&fx).await;
    let cooldown = Duration::from_secs(rr::BREAKER_COOLDOWN_SECS);
    tokio::time::sleep((cooldown + Duration::from_millis(200)).saturating_sub(opened.elapsed()))
        .await;
    let st = fx.status().await;
    assert_eq!(state(&st, SEOUL), "half_open", "[{}] {st}", fx.target());
    let r = fx.request(Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 2);
    let st = fx.status().await;
    fx.clear(SEOUL).await;
    assert_eq!(
        state(&st, SEOUL),
        "open",
        "[{}] seoul after a failed trial: {st}",
        fx.target()
    );
    let secs = seconds_from_failure(fx.target(), &st, SEOUL, "breaker_open_until");
    let doubled = 2.0 * rr::BREAKER_COOLDOWN_SECS as f64;
    assert!(
        (doubled - 0.5..=doubled + 0.2).contains(&secs),
        "[{}] re-opened for {secs:.2} s from the failed trial, expected twice the cooldown ({doubled} s): {st}",
        fx.target()
    );
    let n = rr::BREAKER_FAILURES as u64;
    fx.expect_counts([n + 1, n + 2, 0], "one trial reached seoul")
        .await;
}

// ----------------------------------------------------------------------------------------------
// Probes
// ----------------------------------------------------------------------------------------------

/// Asserts every upstream's last probe is there and `ok`.
fn probes_ok(st: &Value) -> bool {
    ALL.iter()
        .all(|n| upstream(st, n)["last_probe"]["ok"] == true)
}

/// fly-fallback probes every upstream every second (`GET /models` with its key): two failed
/// probes mark one `down` (skipped: a request pinned to it goes to its fallback), one good probe
/// brings it back.
pub async fn fly_probes_mark_a_failing_upstream_down_and_bring_it_back(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    let mut procs = Processes::default();
    let settings = harness::region_settings(harness::region_config(&fx.r.mocks, None, true));
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let (cmd, group) = harness::region_gateway_command("fly", "fly-probes", port, &settings, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let started = procs
        .spawn("fly-probes", cmd, group)
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, harness::start_timeout("fly"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    probes_down_and_up(&fx, &base, || async {}).await;
}

/// The Worker's probes run in its Cron Trigger (fired here through `wrangler dev
/// --test-scheduled`'s `/__scheduled`), which shares the results through KV: two failed runs mark
/// an upstream `down`, one good run brings it back.
pub async fn worker_cron_probes_mark_a_failing_upstream_down_and_bring_it_back(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    let mut procs = Processes::default();
    let settings = harness::region_settings(harness::region_config(&fx.r.mocks, None, true));
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let (cmd, group) =
        harness::region_gateway_command("worker", "worker-probes", port, &settings, true)
            .unwrap_or_else(|e| panic!("{e}"));
    let started = procs
        .spawn("worker-probes", cmd, group)
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, harness::start_timeout("worker"))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let http = ctx.http.clone();
    let cron = || {
        let (http, base) = (http.clone(), base.clone());
        async move {
            let url = format!("{base}/__scheduled?cron=*+*+*+*+*");
            let status = client::get_status(&http, &url, Duration::from_secs(15))
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"));
            assert_eq!(status, 200, "GET {url}");
        }
    };
    probes_down_and_up(&fx, &base, cron).await;
}

/// The probe cases' steps against a gateway at `base` with probes on; `tick` makes a round of
/// probes happen (the Worker's cron; nothing on fly, whose probes run every second anyway).
async fn probes_down_and_up<F, Fut>(fx: &Fx, base: &str, tick: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let target = fx.target().to_string();
    let wait_for = |what: &'static str, check: fn(&Value) -> bool| {
        let target = target.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(8);
            loop {
                let st = fx.status_at(base).await;
                if check(&st) {
                    return st;
                }
                assert!(
                    Instant::now() < deadline,
                    "[{target}] {what} not seen within 8 s: {st}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };

    tick().await;
    let st = wait_for("a good probe of every upstream", probes_ok).await;
    for m in ALL {
        assert_eq!(state(&st, m), "healthy", "[{target}] {st}");
        let (_, probes) = fx.mock_calls(m).await;
        assert!(probes >= 1, "[{target}] no probe reached {m}");
    }

    fx.fault(SEOUL, json!({"status": 503})).await;
    let (_, before) = fx.mock_calls(SEOUL).await;
    tick().await;
    tick().await;
    let st = wait_for("seoul down", |st| state(st, SEOUL) == "down").await;
    let probe = &upstream(&st, SEOUL)["last_probe"];
    assert_eq!(probe["ok"], false, "[{target}] {st}");
    assert!(
        probe["detail"].is_string() && probe["at"].is_string(),
        "[{target}] {st}"
    );
    let (_, after) = fx.mock_calls(SEOUL).await;
    assert!(
        after >= before + 2,
        "[{target}] seoul got {} probes while failing, expected at least 2",
        after - before
    );
    for m in [FRANKFURT, DALLAS] {
        assert_eq!(state(&st, m), "healthy", "[{target}] {st}");
    }
    // Down is skipped: a request pinned to seoul goes to its fallback.
    let r = fx.request_at(base, Some(SEOUL), false).call.send().await;
    served(&r, FRANKFURT, 1);
    assert_eq!(
        fx.mock_calls(SEOUL).await.0,
        0,
        "[{target}] a request reached seoul while it was down"
    );

    fx.clear(SEOUL).await;
    tick().await;
    let st = wait_for("seoul back up", |st| {
        state(st, SEOUL) == "healthy" && upstream(st, SEOUL)["last_probe"]["ok"] == true
    })
    .await;
    assert!(probes_ok(&st), "[{target}] {st}");
    let r = fx.request_at(base, Some(SEOUL), false).call.send().await;
    served(&r, SEOUL, 1);
}

// ----------------------------------------------------------------------------------------------
// The status endpoint and the log line
// ----------------------------------------------------------------------------------------------

/// `GET /v1/gateway/status` needs a client key, lists every upstream with its state and
/// counters (an ejection shows at once), and never contains a key.
pub async fn status_requires_a_key_and_shows_every_upstream_without_keys(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    let get = || {
        Call::new(
            ctx.http.clone(),
            &fx.r.gateway,
            fx.target(),
            Method::GET,
            "/v1/gateway/status",
            &ctx.key,
        )
    };
    expect::error(&get().no_auth().send().await, 401, "missing_api_key");
    expect::error(&get().key("not-a-key").send().await, 401, "invalid_api_key");

    let r = get().send().await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let text = r.text();
    for secret in ["mock-upstream-key", "Bearer", harness::CLIENT_KEY] {
        assert!(
            !text.contains(secret),
            "{}: contains {secret}: {text}",
            r.label
        );
    }
    let before = r.json();
    assert_eq!(before["object"], "gateway.status", "{}: {before}", r.label);
    let runtime = if fx.target() == "fly" {
        "fly-fallback"
    } else {
        "worker"
    };
    assert_eq!(before["runtime"], runtime, "{}: {before}", r.label);
    if fx.target() == "fly" {
        assert_eq!(before["region"], harness::REGIONS_FLY_REGION, "{}", r.label);
    } else {
        assert!(
            before["region"].is_string() || before["region"].is_null(),
            "{}: {before}",
            r.label
        );
    }
    unix_ms(before["time"].as_str().unwrap_or_default());
    let names: Vec<&str> = before["upstreams"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no upstreams: {before}", r.label))
        .iter()
        .map(|u| u["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(
        names,
        [SEOUL, FRANKFURT, DALLAS, CLOSED_UPSTREAM],
        "{}",
        r.label
    );
    for u in before["upstreams"].as_array().into_iter().flatten() {
        for field in [
            "name",
            "region",
            "host",
            "state",
            "ejected_until",
            "breaker_open_until",
            "latency_ms",
            "in_flight",
            "requests",
            "errors",
            "last_error",
            "last_probe",
        ] {
            assert!(u.get(field).is_some(), "{}: {field} missing: {u}", r.label);
        }
        // Probes are off in this fixture.
        assert!(u["last_probe"].is_null(), "{}: {u}", r.label);
    }
    for m in &fx.r.mocks {
        let u = upstream(&before, m.name);
        assert_eq!(u["region"], m.region, "{}: {u}", r.label);
        assert_eq!(
            u["host"],
            m.base.trim_start_matches("http://"),
            "{}: {u}",
            r.label
        );
        assert_eq!(u["state"], "healthy", "{}: {u}", r.label);
        assert!(
            u["ejected_until"].is_null() && u["breaker_open_until"].is_null(),
            "{}: {u}",
            r.label
        );
        assert_eq!(u["in_flight"], 0, "{}: {u}", r.label);
        // settle() made a successful request to each.
        assert!(u["latency_ms"].is_number(), "{}: {u}", r.label);
    }
    assert_eq!(
        upstream(&before, CLOSED_UPSTREAM)["host"],
        format!("127.0.0.1:{}", fx.r.closed_port),
        "{}",
        r.label
    );

    fx.fault(SEOUL, json!({"status": 429, "retry_after": "2"}))
        .await;
    let chat = fx.request(Some(SEOUL), false).call.send().await;
    served(&chat, FRANKFURT, 2);
    fx.clear(SEOUL).await;
    let after = fx.status().await;
    let n = |st: &Value, name: &str, field: &str| upstream(st, name)[field].as_u64().unwrap_or(0);
    let seoul = upstream(&after, SEOUL);
    assert_eq!(seoul["state"], "ejected", "{}: {after}", r.label);
    assert!(seoul["ejected_until"].is_string(), "{}: {seoul}", r.label);
    assert_eq!(
        n(&after, SEOUL, "requests"),
        n(&before, SEOUL, "requests") + 1,
        "{}: {after}",
        r.label
    );
    assert_eq!(
        n(&after, SEOUL, "errors"),
        n(&before, SEOUL, "errors") + 1,
        "{}: {after}",
        r.label
    );
    assert!(
        seoul["last_error"]["kind"]
            .as_str()
            .is_some_and(|k| !k.is_empty()),
        "{}: {seoul}",
        r.label
    );
    unix_ms(seoul["last_error"]["at"].as_str().unwrap_or_default());
    assert_eq!(
        n(&after, FRANKFURT, "requests"),
        n(&before, FRANKFURT, "requests") + 1,
        "{}: {after}",
        r.label
    );
    assert_eq!(
        n(&after, FRANKFURT, "errors"),
        n(&before, FRANKFURT, "errors"),
        "{}",
        r.label
    );
    assert_eq!(
        upstream(&after, FRANKFURT)["state"],
        "healthy",
        "{}",
        r.label
    );
}

/// The request's log line names the upstream that answered and every attempt with its outcome
/// and duration; no key in it.
pub async fn log_line_names_the_upstream_and_every_attempt(ctx: Arc<Ctx>) {
    let fx = fixture(&ctx).await;
    fx.fault(SEOUL, json!({"status": 503})).await;
    let id = format!("regions-log-{}", fx.target());
    let r = fx
        .request(Some(SEOUL), false)
        .call
        .header("x-request-id", &id)
        .send()
        .await;
    served(&r, FRANKFURT, 2);
    let needle = format!("\"request_id\":\"{id}\"");
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&fx.r.log).unwrap_or_default();
        if log.contains(&needle) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
    assert_eq!(
        lines.len(),
        1,
        "[{}] one log line for {id} in {}",
        fx.target(),
        fx.r.log.display()
    );
    let line = lines[0].trim();
    assert!(
        !line.contains("mock-upstream-key") && !line.contains(harness::CLIENT_KEY),
        "[{}] a key in the log line: {line}",
        fx.target()
    );
    let json_part = line.get(line.find('{').unwrap_or(0)..).unwrap_or(line);
    let v: Value =
        serde_json::from_str(json_part).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert_eq!(v["upstream"], FRANKFURT, "[{}] {v}", fx.target());
    let attempts = v["attempts"]
        .as_array()
        .unwrap_or_else(|| panic!("[{}] no attempts array: {v}", fx.target()));
    assert_eq!(attempts.len(), 2, "[{}] {v}", fx.target());
    assert_eq!(attempts[0]["upstream"], SEOUL, "[{}] {v}", fx.target());
    assert_eq!(attempts[0]["outcome"], "http_503", "[{}] {v}", fx.target());
    assert_eq!(attempts[1]["upstream"], FRANKFURT, "[{}] {v}", fx.target());
    assert_eq!(attempts[1]["outcome"], "ok", "[{}] {v}", fx.target());
    for a in attempts {
        assert!(
            a["ms"].is_number(),
            "[{}] attempt without ms: {v}",
            fx.target()
        );
    }
}

// ----------------------------------------------------------------------------------------------
// Start-up: settings that cannot go together
// ----------------------------------------------------------------------------------------------

/// The settings of a gateway with `upstreams` (the keys set) plus `extra`.
fn conflicting_settings(
    config: Value,
    extra: &[(&'static str, &str)],
) -> Vec<(&'static str, String)> {
    let mut s = harness::region_settings(config.to_string());
    for (k, v) in extra {
        s.push((k, v.to_string()));
    }
    s
}

fn one_upstream_config(routing: Value, top: &[(&str, Value)]) -> Value {
    let mut c = json!({
        "upstreams": [{"name": "seoul", "base_url": "http://127.0.0.1:9/v1",
                       "api_key_secret": "UPSTREAM_KEY_SEOUL"}],
        "routing": routing,
    });
    for (k, v) in top {
        c[*k] = v.clone();
    }
    c
}

/// `upstreams` with `UPSTREAM_BASE_URL` / `UPSTREAM_API_KEY`, or a legacy timeout with its
/// `routing` twin, is refused at start: exit status 2, a message naming GATEWAY_CONFIG. The
/// same `upstreams` alone starts.
pub async fn fly_regions_config_with_legacy_settings_exits_2_naming_gateway_config(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let bin = harness::find_binary("fly-fallback").unwrap_or_else(|e| panic!("{e}"));
    let plain = one_upstream_config(json!({}), &[]);
    let cases: Vec<(&str, Vec<(&'static str, String)>)> = vec![
        (
            "upstreams with UPSTREAM_BASE_URL and UPSTREAM_API_KEY",
            conflicting_settings(
                plain.clone(),
                &[
                    ("UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1"),
                    ("UPSTREAM_API_KEY", "mock-upstream-key"),
                ],
            ),
        ),
        (
            "upstream_timeout_ms with routing.first_byte_timeout_ms",
            conflicting_settings(
                one_upstream_config(
                    json!({"first_byte_timeout_ms": 1000}),
                    &[("upstream_timeout_ms", json!(1000))],
                ),
                &[],
            ),
        ),
        (
            "stream_idle_timeout_ms with routing.stream_idle_timeout_ms",
            conflicting_settings(
                one_upstream_config(
                    json!({"stream_idle_timeout_ms": 1000}),
                    &[("stream_idle_timeout_ms", json!(1000))],
                ),
                &[],
            ),
        ),
    ];
    for (i, (what, settings)) in cases.into_iter().enumerate() {
        let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
        let mut cmd = harness::fly_command(&bin, port, &settings);
        if !settings.iter().any(|(k, _)| *k == "UPSTREAM_BASE_URL") {
            cmd.env_remove("UPSTREAM_BASE_URL")
                .env_remove("UPSTREAM_API_KEY");
        }
        let started = procs
            .spawn(&format!("fly-regions-conflict-{i}"), cmd, false)
            .unwrap_or_else(|e| panic!("{e}"));
        let deadline = Instant::now() + Duration::from_secs(10);
        let status = loop {
            if let Some(s) = started
                .child
                .lock()
                .ok()
                .and_then(|mut c| c.try_wait().ok().flatten())
            {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: fly-fallback kept running"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let log = std::fs::read_to_string(&started.log).unwrap_or_default();
        assert_eq!(
            status.code(),
            Some(2),
            "{what}: exit status {status:?}; {log}"
        );
        assert!(log.contains("GATEWAY_CONFIG"), "{what}: {log}");
        assert!(
            !log.contains("mock-upstream-key"),
            "{what}: a key in the log: {log}"
        );
        assert!(!log.contains("panicked"), "{what}: {log}");
    }
    // The same upstreams alone are a valid configuration.
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = harness::fly_command(&bin, port, &conflicting_settings(plain, &[]));
    cmd.env_remove("UPSTREAM_BASE_URL")
        .env_remove("UPSTREAM_API_KEY");
    let started = procs
        .spawn("fly-regions-conflict-control", cmd, false)
        .unwrap_or_else(|e| panic!("{e}"));
    harness::wait_healthy(
        &ctx.http,
        &started,
        &format!("http://127.0.0.1:{port}"),
        Duration::from_secs(10),
    )
    .await
    .unwrap_or_else(|e| panic!("the same upstreams without UPSTREAM_BASE_URL: {e}"));
}

// ----------------------------------------------------------------------------------------------
// Parity
// ----------------------------------------------------------------------------------------------

/// The same failover on both runtimes: the same fault, the same request → the same status,
/// headers (`x-gateway-upstream`, `x-gateway-attempts` among them) and body.
pub async fn parity_failover_answers_alike(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    // Always fly's fixture first, then the Worker's: no two trials wait for each other's.
    let f = fixture(&fly).await;
    let w = fixture(&worker).await;
    let same = |what: &'static str, body: Value| {
        let (f, w) = (&f, &w);
        async move {
            let send = |fx: &Fx| {
                chat_at(&fx.ctx, &fx.r.gateway, &fx.ctx.key)
                    .header("x-request-id", "parity-regions")
                    .header("x-gateway-region", SEOUL)
                    .json(&body)
                    .send()
            };
            let a = send(f).await;
            let b = send(w).await;
            super::parity::assert_same(what, &a, &b);
            (a, b)
        }
    };
    let plain = |text: &str| json!({"model": "mock-model@parity_regions", "messages": [{"role": "user", "content": text}]});

    for fx in [&f, &w] {
        fx.fault(SEOUL, json!({"status": 503})).await;
    }
    let (a, _) = same("seoul 503, frankfurt answers", plain("parity failover")).await;
    served(&a, FRANKFURT, 2);

    for fx in [&f, &w] {
        for m in ALL {
            fx.fault(m, json!({"status": 503})).await;
        }
    }
    let (a, _) = same("every upstream 503", plain("parity all failing")).await;
    a.expect_status(503);
    expect_attempts(&a.label, a.header("x-gateway-attempts"), rr::MAX_ATTEMPTS);

    for fx in [&f, &w] {
        for m in ALL {
            fx.clear(m).await;
        }
        fx.fault(SEOUL, json!({"error_event_before_content": true}))
            .await;
    }
    let stream = json!({"model": "mock-stream-3x20ms@parity_regions", "stream": true,
                        "messages": [{"role": "user", "content": "parity stream failover"}]});
    let (a, _) = same("stream: seoul's error event before content", stream).await;
    assert_eq!(
        a.header("x-gateway-upstream"),
        Some(FRANKFURT),
        "{}",
        a.label
    );
    assert!(
        a.text().ends_with("data: [DONE]\n\n"),
        "{}: {}",
        a.label,
        a.text()
    );
    for fx in [&f, &w] {
        fx.clear(SEOUL).await;
    }
}
