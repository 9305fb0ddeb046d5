//! The Worker's Workers Analytics Engine data points (issue 11): one per request, carrying the
//! same facts as the request's log line, per the core's schema
//! ([`gateway_core::analytics::SCHEMA`]).
//!
//! `wrangler dev` runs a real `[[analytics_engine_datasets]]` binding as a local no-op, so the
//! case binds `ANALYTICS` to a stand-in instead: a second `wrangler dev`
//! (`analytics-mock/`) whose `Dataset` entrypoint has a `writeDataPoint` method and whose
//! `fetch` answers every point written, reached through a service binding
//! (`wrangler-analytics.toml`) over a dev registry of the case's own.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway_core::analytics::{Column, OMITTED, SCHEMA};
use serde_json::{json, Value};

use super::Ctx;
use crate::client;
use crate::harness::{self, Processes};

/// A wait for something the Worker writes after its response (a stream's log line and point
/// come at its end).
const SETTLE: Duration = Duration::from_secs(15);

/// A `wrangler dev` of `config` (under tests/conformance/) named `name`, on the case's dev
/// registry; returns its base URL once `/health` answers.
async fn start(
    procs: &mut Processes,
    ctx: &Ctx,
    name: &str,
    config: &str,
    settings: &[(&str, String)],
    registry: &Path,
) -> Result<String, String> {
    let port = harness::free_port()?;
    let inspector = harness::free_port()?;
    let state = harness::log_dir().join(format!("{name}-state"));
    let _ = std::fs::remove_dir_all(&state);
    let mut cmd = harness::worker_command(&ctx.repo, port, inspector, settings);
    cmd.arg("--config")
        .arg(ctx.repo.join("tests/conformance").join(config))
        .arg("--persist-to")
        .arg(state)
        .env("WRANGLER_REGISTRY_PATH", registry);
    let started = procs.spawn(name, cmd, true)?;
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(120)).await?;
    Ok(base)
}

/// Every point the stand-in holds.
async fn points(ctx: &Ctx, mock: &str) -> Vec<Value> {
    client::get_json(&ctx.http, &format!("{mock}/"))
        .await
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The points whose `blob1` (the request id) is `id`.
fn points_of<'a>(all: &'a [Value], id: &str) -> Vec<&'a Value> {
    all.iter().filter(|p| p["blobs"][0] == id).collect()
}

/// The one JSON log line of request `id` in `log` (after any prefix wrangler adds), if written.
fn log_line(log: &str, id: &str) -> Option<Value> {
    let needle = format!("\"request_id\":\"{id}\"");
    let lines: Vec<&str> = log.lines().filter(|l| l.contains(&needle)).collect();
    assert!(lines.len() < 2, "{} log lines for {id}", lines.len());
    let line = lines.first()?.trim();
    let json = line.get(line.find('{').unwrap_or(0)..).unwrap_or(line);
    Some(serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
}

/// Waits until `log` has a line for each of `ids` and the stand-in a point for each; returns
/// the lines and the points.
async fn lines_and_points(
    ctx: &Ctx,
    log: &Path,
    mock: &str,
    ids: &[String],
) -> (Vec<Value>, Vec<Value>) {
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        let lines: Vec<Option<Value>> = ids.iter().map(|id| log_line(&text, id)).collect();
        let all = points(ctx, mock).await;
        let missing: Vec<&String> = ids
            .iter()
            .zip(&lines)
            .filter(|(id, line)| line.is_none() || points_of(&all, id).is_empty())
            .map(|(id, _)| id)
            .collect();
        if missing.is_empty() {
            return (lines.into_iter().flatten().collect(), all);
        }
        assert!(
            Instant::now() < deadline,
            "no log line or no data point within {SETTLE:?} for {missing:?} (log: {}); points: {all:?}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A log field's value (`a.b` for a nested one).
fn field<'a>(line: &'a Value, name: &str) -> Option<&'a Value> {
    match name.split_once('.') {
        Some((outer, inner)) => line.get(outer)?.get(inner),
        None => line.get(name),
    }
    .filter(|v| !v.is_null())
}

/// What a text column holds for a log value: the text, a flag as `true`/`false`, `""` if none.
fn as_text(v: Option<&Value>) -> String {
    match v {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => b.to_string(),
        Some(other) => panic!("a text column for the non-text log value {other}"),
    }
}

/// What a double holds for a log value: the number (a decimal string parsed), `0` if none.
fn as_number(line: &Value, name: &str) -> f64 {
    let attempts = line["attempts"].as_array().cloned().unwrap_or_default();
    match name {
        "attempt_count" => attempts.len() as f64,
        "failover_count" => attempts
            .windows(2)
            .filter(|w| w[0]["upstream"] != w[1]["upstream"])
            .count() as f64,
        _ => match field(line, name) {
            None => 0.0,
            Some(Value::Number(n)) => n.as_f64().unwrap_or(f64::NAN),
            Some(Value::String(s)) => s.parse().unwrap_or(f64::NAN),
            Some(other) => panic!("a double for the non-numeric log value {other}"),
        },
    }
}

/// Every fact of `line` equals its column in `point`; every log field has a column or is
/// omitted on purpose.
fn expect_same_facts(line: &Value, point: &Value) {
    let id = line["request_id"].as_str().unwrap_or("?");
    let omitted = |name: &str| OMITTED.iter().any(|(n, _)| *n == name);
    for (key, value) in line.as_object().into_iter().flatten() {
        let names: Vec<String> = match value.as_object() {
            Some(inner) => inner.keys().map(|i| format!("{key}.{i}")).collect(),
            None => vec![key.clone()],
        };
        for name in names {
            assert!(
                omitted(&name) || SCHEMA.iter().any(|f| f.name == name),
                "{id}: the log field `{name}` has no column and is not omitted on purpose: {line}"
            );
        }
    }
    let blobs = point["blobs"].as_array().map_or(0, Vec::len);
    let doubles = point["doubles"].as_array().map_or(0, Vec::len);
    assert!(blobs <= 20 && doubles <= 20, "{id}: {point}");
    assert_eq!(point["indexes"].as_array().map(Vec::len), Some(1), "{id}");
    for f in SCHEMA {
        let column = f.column.name();
        // Exact: f64 text round-trips, and a decimal cost parses to what the Worker computed.
        let same = match f.column {
            Column::Index(_) => point["indexes"][0] == as_text(field(line, f.name)),
            Column::Blob(n, _) => {
                point["blobs"][usize::from(n) - 1] == as_text(field(line, f.name))
            }
            Column::Double(n, _) => {
                point["doubles"][usize::from(n) - 1].as_f64() == Some(as_number(line, f.name))
            }
        };
        assert!(
            same,
            "{id}: {column} (`{}`) differs from the log line\nline: {line}\npoint: {point}",
            f.name
        );
    }
}

/// Six kinds of request through a Worker whose `ANALYTICS` is the stand-in: a streamed chat,
/// a plain chat, the same chat again (a cache hit), an unknown key (401), an upstream error
/// (503) and one that a key's `tpm` refuses (429). Each has exactly one data point, and every fact of its log line is in the point's
/// column for it; the point the stand-in refuses costs its request nothing and is logged.
pub async fn analytics_worker_writes_one_data_point_per_request_with_the_log_lines_facts(
    ctx: Arc<Ctx>,
) {
    let mut procs = Processes::default();
    let registry = harness::log_dir().join("analytics-registry");
    let _ = std::fs::remove_dir_all(&registry);
    std::fs::create_dir_all(&registry).unwrap_or_else(|e| panic!("{e}"));
    let mock = start(
        &mut procs,
        &ctx,
        "analytics-mock",
        "analytics-mock/wrangler.toml",
        &[],
        &registry,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let settings: Vec<(&str, String)> = vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        ("GATEWAY_API_KEYS", ctx.key.clone()),
        ("GATEWAY_CONFIG", harness::GATEWAY_CONFIG.to_string()),
        ("FLY_REGION", harness::REGION.to_string()),
    ];
    let name = "analytics-worker";
    let gateway = start(
        &mut procs,
        &ctx,
        name,
        "wrangler-analytics.toml",
        &settings,
        &registry,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let log = harness::log_dir().join(format!("{name}.log"));
    let call = |method, path: &str, id: &str| {
        client::Call::new(
            ctx.http.clone(),
            &gateway,
            &ctx.target,
            method,
            path,
            &ctx.key,
        )
        .header("x-request-id", id)
    };

    // The binding reaches the stand-in once the registry has connected the two: until then a
    // point can be lost (and the Worker says so), never a request.
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0.. {
        let id = format!("analytics-ready-{i}");
        call(hyper::Method::GET, "/health", &id)
            .send()
            .await
            .expect_status(200);
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !points_of(&points(&ctx, &mock).await, &id).is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the Worker's ANALYTICS binding never reached the stand-in (logs: {})",
            log.display()
        );
    }

    let model = format!("analytics_{}/priced-chat", ctx.target);
    let chat = json!({"model": model, "temperature": 0,
                      "messages": [{"role": "user", "content": "count me"}]});
    let stream = json!({"model": model, "temperature": 0.7, "stream": true,
                            "stream_options": {"include_usage": true},
                            "messages": [{"role": "user", "content": "stream me"}]});
    let ids: Vec<String> = ["stream", "miss", "hit", "denied", "upstream-503", "limited"]
        .iter()
        .map(|k| format!("analytics-{k}"))
        .collect();
    let post = |id: &str| call(hyper::Method::POST, "/v1/chat/completions", id);
    post(&ids[0])
        .header("x-mock-reasoning-tokens", "5")
        .json(&stream)
        .stream()
        .await
        .expect_status(200);
    post(&ids[1])
        .header("x-mock-cached-tokens", "3")
        .json(&chat)
        .send()
        .await
        .expect_status(200);
    // The Worker stores the answer after responding.
    tokio::time::sleep(Duration::from_millis(500)).await;
    // The same request (its headers are part of the cache key).
    let hit = post(&ids[2])
        .header("x-mock-cached-tokens", "3")
        .json(&chat)
        .send()
        .await;
    hit.expect_status(200);
    assert_eq!(hit.header("x-gateway-cache"), Some("HIT"), "{}", hit.label);
    post(&ids[3])
        .key("not-a-key")
        .json(&chat)
        .send()
        .await
        .expect_status(401);
    let failing = json!({"model": format!("mock-error-503@analytics_{}", ctx.target),
                         "messages": [{"role": "user", "content": "fail"}]});
    post(&ids[4]).json(&failing).send().await.expect_status(503);
    // More tokens than the key's `tpm` allows in a minute: refused by its limit.
    let mut greedy = chat.clone();
    greedy["max_tokens"] = json!(harness::keys::TPM_LIMIT * 5);
    post(&ids[5])
        .key(harness::keys::TPM)
        .json(&greedy)
        .send()
        .await
        .expect_status(429);

    let (lines, all) = lines_and_points(&ctx, &log, &mock, &ids).await;
    for (id, line) in ids.iter().zip(&lines) {
        let mine = points_of(&all, id);
        assert_eq!(mine.len(), 1, "{id}: one data point per request: {mine:?}");
        expect_same_facts(line, mine[0]);
    }
    // The facts the requests were chosen for, seen in their points.
    let blob = |id: &str, name: &str| {
        let Some(Column::Blob(n, _)) = SCHEMA.iter().find(|f| f.name == name).map(|f| f.column)
        else {
            panic!("{name} is not a blob")
        };
        points_of(&all, id)[0]["blobs"][usize::from(n) - 1].clone()
    };
    assert_eq!(blob(&ids[0], "stream_complete"), "true");
    assert_eq!(blob(&ids[1], "cache"), "miss");
    assert_eq!(blob(&ids[2], "cache"), "hit");
    assert_eq!(blob(&ids[3], "error_code"), "invalid_api_key");
    assert_eq!(blob(&ids[5], "limited"), "tokens");
    assert_eq!(points_of(&all, &ids[3])[0]["indexes"][0], "");
    assert_ne!(points_of(&all, &ids[1])[0]["indexes"][0], "");

    // A point the dataset refuses: the request is answered, the failure logged.
    let refused = "analytics-refused";
    post(refused).json(&chat).send().await.expect_status(200);
    let deadline = Instant::now() + SETTLE;
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if log_line(&text, refused).is_some()
            && text.contains("\"analytics_write_failures\":")
            && text.contains("analytics-mock refuses this data point")
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no log line and failure for {refused} in {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(points_of(&points(&ctx, &mock).await, refused).is_empty());
    drop(procs);
}

/// Without an `ANALYTICS` binding (the suite's Worker has none) requests are answered and
/// logged as before, and nothing is said about data points.
pub async fn analytics_without_the_binding_nothing_changes(ctx: Arc<Ctx>) {
    let id = "analytics-unbound";
    let model = ctx.model("mock-model", "analytics_unbound");
    ctx.post("/v1/chat/completions")
        .header("x-request-id", id)
        .json(&super::chat_body(&model, "no dataset"))
        .send()
        .await
        .expect_status(200);
    let path = harness::log_dir().join(format!("{}.log", ctx.target));
    let deadline = Instant::now() + SETTLE;
    let text = loop {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        if log_line(&text, id).is_some() {
            break text;
        }
        assert!(Instant::now() < deadline, "no log line for {id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        !text.contains("analytics_write_failures"),
        "a Worker without the binding reports failed data points"
    );
}
