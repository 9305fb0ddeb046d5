//! Parity: the same requests to both runtimes must get the same answers, headers included. These
//! trials run only when both `fly` and `worker` are targets (`parity::<case>`); each sends one
//! request to each runtime and compares status, body and every header the gateway decides on.
//!
//! Left out of the comparison, because the platform (not the gateway) owns them: `date`,
//! `server`, `connection`, `keep-alive`, `transfer-encoding` and `content-length` (framing: the
//! runtimes' HTTP stacks choose between a length and chunking for the same bytes), `cf-*`,
//! `report-to` and `nel` (workerd's own), and `x-request-id` when the client sent none (a fresh
//! UUID each time; its presence is compared, and `request_id_is_a_fresh_uuid...` checks its form).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Ctx;
use crate::client::{Call, Resp};

pub type ParityFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

pub struct ParityCase {
    pub name: &'static str,
    pub run: fn(Arc<Ctx>, Arc<Ctx>) -> ParityFuture,
    /// It uses both targets' multi-region fixtures.
    pub regions: bool,
    /// The group in its trial's name (`parity::<group>::<case>`), as for [`super::Case::group`].
    pub group: &'static str,
}

const PLATFORM_HEADERS: &[&str] = &[
    "date",
    "server",
    "connection",
    "keep-alive",
    "transfer-encoding",
    "content-length",
    "report-to",
    "nel",
];

/// The headers the gateway is answerable for, sorted, as `name: value` lines.
fn gateway_headers(r: &Resp, fresh_request_id: bool) -> Vec<String> {
    let mut out: Vec<String> = r
        .headers
        .iter()
        .filter(|(n, _)| {
            let n = n.as_str();
            !PLATFORM_HEADERS.contains(&n) && !n.starts_with("cf-")
        })
        .map(|(n, v)| {
            let value = if fresh_request_id && n.as_str() == "x-request-id" {
                "<fresh>".to_string()
            } else if n.as_str() == "age" {
                // Seconds since the entry was stored: the same form, not the same instant.
                "<seconds>".to_string()
            } else if n.as_str() == "server-timing" {
                // The same metrics, not the same durations.
                without_durations(&String::from_utf8_lossy(v.as_bytes()))
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            format!("{}: {value}", n.as_str())
        })
        .collect();
    out.sort();
    out
}

/// A `server-timing` value with every `dur=N` written `dur=<ms>`.
fn without_durations(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut rest = value;
    while let Some(i) = rest.find("dur=") {
        out.push_str(&rest[..i + 4]);
        out.push_str("<ms>");
        rest = rest[i + 4..].trim_start_matches(|c: char| c.is_ascii_digit() || c == '.');
    }
    out.push_str(rest);
    out
}

/// Sends the request built by `make` to each runtime and asserts the answers are the same.
async fn same(fly: &Ctx, worker: &Ctx, what: &str, make: impl Fn(&Ctx) -> Call) -> (Resp, Resp) {
    let a = make(fly).send().await;
    let b = make(worker).send().await;
    assert_same(what, &a, &b);
    (a, b)
}

pub(super) fn assert_same(what: &str, fly: &Resp, worker: &Resp) {
    assert_eq!(
        fly.status,
        worker.status,
        "{what}: status differs (fly {}, worker {}); bodies: {} | {}",
        fly.status,
        worker.status,
        fly.text(),
        worker.text()
    );
    let fresh = fly.header("x-request-id") != worker.header("x-request-id");
    assert_eq!(
        gateway_headers(fly, fresh),
        gateway_headers(worker, fresh),
        "{what}: headers differ (left fly, right worker)"
    );
    assert_eq!(
        fly.text(),
        worker.text(),
        "{what}: bodies differ (left fly, right worker)"
    );
}

fn chat(ctx: &Ctx, body: &Value) -> Call {
    ctx.post("/v1/chat/completions")
        .header("x-request-id", "parity-request")
        .json(body)
}

/// The model both runtimes are asked for: one name, so the mock answers both alike (their
/// caches are separate, so each sees its own first request as a miss).
fn model(behaviour: &str, case: &str) -> String {
    format!("{behaviour}@parity_{case}")
}

pub async fn parity_local_answers_and_request_errors(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    let (f, w) = (&*fly, &*worker);
    // /health names the runtime that answered; everything else in it must agree.
    let (a, b) = (
        f.get("/health").no_auth().send().await,
        w.get("/health").no_auth().send().await,
    );
    let without_runtime = |r: &Resp| {
        let mut v = r.json();
        assert!(
            v["runtime"].is_string(),
            "{}: no runtime in /health",
            r.label
        );
        v["runtime"] = Value::Null;
        v
    };
    assert_eq!(
        without_runtime(&a),
        without_runtime(&b),
        "health: bodies differ"
    );
    assert_eq!(a.status, b.status);
    assert_eq!(
        gateway_headers(&a, true),
        gateway_headers(&b, true),
        "health: headers differ"
    );
    same(f, w, "models", |c| c.get("/v1/models")).await;
    same(f, w, "no key", |c| {
        c.post("/v1/chat/completions")
            .no_auth()
            .json(&json!({"model": "m", "messages": []}))
    })
    .await;
    same(f, w, "wrong key", |c| {
        c.post("/v1/chat/completions")
            .key("not-a-key")
            .json(&json!({"model": "m", "messages": []}))
    })
    .await;
    same(f, w, "unknown path", |c| c.get("/v1/nothing-here")).await;
    same(f, w, "wrong method", |c| c.get("/v1/chat/completions")).await;
    same(f, w, "malformed json", |c| {
        c.post("/v1/chat/completions").body("{\"model\": ")
    })
    .await;
    same(f, w, "missing model", |c| {
        chat(c, &json!({"messages": [{"role": "user", "content": "x"}]}))
    })
    .await;
    same(f, w, "text/plain", |c| {
        c.post("/v1/chat/completions")
            .header("content-type", "text/plain")
            .body("hello")
    })
    .await;
    same(f, w, "declared length over the limit", |c| {
        let big = "x".repeat(crate::harness::MAX_BODY_BYTES + 1);
        c.post("/v1/chat/completions").body(big)
    })
    .await;
}

/// The JSON's shape: its keys and the types of its values, recursively (arrays by their first
/// element): the figures differ between runtimes, the document must not.
fn shape(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(m.iter().map(|(k, v)| (k.clone(), shape(v))).collect()),
        Value::Array(a) => Value::Array(a.first().map(shape).into_iter().collect()),
        Value::String(_) => json!("string"),
        Value::Number(_) => json!("number"),
        Value::Bool(_) => json!("bool"),
        Value::Null => json!("null"),
    }
}

/// `GET /dashboard` is the same page with the same headers, and `GET /v1/gateway/summary` the
/// same document (after the same traffic), on both runtimes.
pub async fn parity_summary_and_dashboard_have_the_same_shape(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    let (f, w) = (&*fly, &*worker);
    same(f, w, "dashboard", |c| c.get("/dashboard").no_auth()).await;
    same(f, w, "summary without a key", |c| {
        c.get("/v1/gateway/summary").no_auth()
    })
    .await;
    // The same traffic on both (a priced model, so spend rows exist), then the summaries.
    for c in [f, w] {
        let model = c.model("gpt-4o-mini", "parity_summary");
        let r = chat(
            c,
            &json!({"model": model, "messages": [{"role": "user", "content": "x"}]}),
        )
        .send()
        .await;
        assert_eq!(r.status, 200, "{}: {}", r.label, r.text());
    }
    let (a, b) = (
        f.get("/v1/gateway/summary").send().await,
        w.get("/v1/gateway/summary").send().await,
    );
    assert_eq!((a.status, b.status), (200, 200));
    let (mut sa, mut sb) = (shape(&a.json()), shape(&b.json()));
    // Fields that may be null on one instance and set on the other (what it has seen so far).
    for s in [&mut sa, &mut sb] {
        for path in [
            "/cache/hit_rate",
            "/latency_ms/p50",
            "/latency_ms/p90",
            "/latency_ms/ttft_p50",
            "/latency_ms/overhead_p50",
            "/region",
        ] {
            if let Some(v) = s.pointer_mut(path) {
                *v = json!("number-or-null");
            }
        }
        for list in [
            "/top_errors",
            "/spend/by_key",
            "/spend/by_model",
            "/attempts",
        ] {
            if let Some(v) = s.pointer_mut(list) {
                *v = json!("list");
            }
        }
    }
    assert_eq!(sa, sb, "summary: documents differ in shape");
    assert_eq!(a.json()["runtime"], "fly-fallback");
    assert_eq!(b.json()["scope"], "isolate");
    assert_eq!(
        gateway_headers(&a, true),
        gateway_headers(&b, true),
        "summary: headers differ"
    );
}

pub async fn parity_upstream_answers_plain_and_streamed(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    let (f, w) = (&*fly, &*worker);
    let plain = json!({"model": model("mock-model", "plain"), "temperature": 0.7,
                       "messages": [{"role": "user", "content": "same answer"}]});
    same(f, w, "plain chat (bypass)", |c| chat(c, &plain)).await;
    let cached = json!({"model": model("mock-model", "cached"), "temperature": 0,
                        "messages": [{"role": "user", "content": "same answer"}]});
    same(f, w, "cacheable chat (miss)", |c| chat(c, &cached)).await;
    // Entries are written after the response; give the Worker's KV write a moment.
    tokio::time::sleep(Duration::from_millis(300)).await;
    same(f, w, "cacheable chat (hit)", |c| chat(c, &cached)).await;
    let streamed = json!({"model": model("mock-stream-3x10ms", "stream"), "stream": true,
                          "stream_options": {"include_usage": true},
                          "messages": [{"role": "user", "content": "same events"}]});
    same(f, w, "stream", |c| chat(c, &streamed)).await;
    let cut = json!({"model": model("mock-cutoff-2", "cutoff"), "stream": true,
                     "messages": [{"role": "user", "content": "cut"}]});
    same(f, w, "cut-off stream", |c| chat(c, &cut)).await;
    let embed = json!({"model": model("mock-embedding", "embed"), "input": "x"});
    same(f, w, "embeddings", |c| {
        c.post("/v1/embeddings")
            .header("x-request-id", "parity-request")
            .json(&embed)
    })
    .await;
}

/// Cost accounting and model selection answer alike: the cost and model headers of a priced
/// answer (cached and reasoning tokens included), a stream whose usage chunk the gateway asked
/// for and removed, `auto` with hints, a cost budget nothing fits, a bad hint, and an estimate.
pub async fn parity_cost_selection_and_estimate_answer_alike(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    let (f, w) = (&*fly, &*worker);
    let priced = "parity_cost/priced-chat";
    let details = |c: Call| {
        c.header("x-mock-cached-tokens", "3")
            .header("x-mock-reasoning-tokens", "5")
    };
    let plain = json!({"model": priced, "temperature": 0.7,
                       "messages": [{"role": "user", "content": "what does it cost"}]});
    same(f, w, "priced chat", |c| details(chat(c, &plain))).await;
    let streamed = json!({"model": priced, "temperature": 0.7, "stream": true,
                          "messages": [{"role": "user", "content": "a stream without usage"}]});
    same(f, w, "priced stream without usage", |c| {
        details(chat(c, &streamed))
    })
    .await;
    let auto = json!({"model": "auto", "max_tokens": 16,
                      "messages": [{"role": "user", "content": "choose for me"}]});
    same(f, w, "auto with a task", |c| {
        chat(c, &auto).header("x-gateway-task", "analysis")
    })
    .await;
    same(f, w, "auto over budget", |c| {
        chat(c, &auto).header("x-gateway-cost-budget-usd", "0.0000001")
    })
    .await;
    same(f, w, "bad hint", |c| {
        chat(c, &auto).header("x-gateway-quality", "2")
    })
    .await;
    same(f, w, "unknown tier", |c| {
        chat(
            c,
            &json!({"model": "tier:nope", "messages": [{"role": "user", "content": "x"}]}),
        )
    })
    .await;
    same(f, w, "estimate", |c| {
        c.post("/v1/gateway/estimate")
            .header("x-request-id", "parity-request")
            .json(&json!({"model": "tier:balanced", "max_tokens": 64,
                          "messages": [{"role": "user", "content": "estimate me"}]}))
    })
    .await;
}

pub async fn parity_upstream_failures_map_to_the_same_errors(fly: Arc<Ctx>, worker: Arc<Ctx>) {
    let (f, w) = (&*fly, &*worker);
    for (behaviour, temperature) in [
        ("mock-error-429", 0.0),
        ("mock-error-503", 0.7),
        ("mock-garbage", 0.0),
        ("mock-hangup", 0.0),
        ("mock-slow-2500ms", 0.0),
        ("mock-slow-2500ms", 0.7),
        ("mock-status-204", 0.0),
        ("mock-status-600", 0.7),
    ] {
        let body = json!({"model": model(behaviour, &format!("fail_{temperature}")),
                          "temperature": temperature,
                          "messages": [{"role": "user", "content": "fail"}]});
        same(
            f,
            w,
            &format!("{behaviour} at temperature {temperature}"),
            |c| chat(c, &body),
        )
        .await;
    }
}

/// Every parity case.
pub fn all() -> Vec<ParityCase> {
    macro_rules! parity {
        ($regions:expr; $($func:path),* $(,)?) => {
            parity![$regions, if $regions { "regions" } else { "" }; $($func),*]
        };
        ($regions:expr, $group:expr; $($func:path),* $(,)?) => {
            vec![$(ParityCase {
                name: {
                    let path = stringify!($func);
                    match path.rfind(':') {
                        Some(i) => path.split_at(i + 1).1.trim(),
                        None => path,
                    }
                },
                run: |a, b| Box::pin($func(a, b)),
                regions: $regions,
                group: $group,
            }),*]
        };
    }
    let mut all = parity![false;
        parity_local_answers_and_request_errors,
        parity_summary_and_dashboard_have_the_same_shape,
        parity_upstream_answers_plain_and_streamed,
        parity_upstream_failures_map_to_the_same_errors,
    ];
    all.extend(parity![false, "cost"; parity_cost_selection_and_estimate_answer_alike]);
    all.extend(parity![true; super::regions::parity_failover_answers_alike]);
    all
}
