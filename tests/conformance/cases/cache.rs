//! The deterministic-response cache (issue 4): hits without upstream calls, the key, what is
//! never cached, streamed hits, request controls, coalescing, and (fly-fallback) Redis shared by
//! machines and a failing Redis.
//!
//! The mock upstream's per-model call counter is the witness: every case uses its own model
//! name, so counts are not disturbed by other cases.

use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::Method;
use serde_json::{json, Value};

use super::Ctx;
use crate::client::{Call, Resp, Streamed};
use crate::harness::{self, Processes};

const STATUS: &str = "x-gateway-cache";

fn chat0(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0, "messages": [{"role": "user", "content": text}]})
}

fn stream0(model: &str, text: &str) -> Value {
    json!({"model": model, "temperature": 0, "stream": true,
           "stream_options": {"include_usage": true},
           "messages": [{"role": "user", "content": text}]})
}

async fn chat(ctx: &Ctx, body: &Value) -> Resp {
    ctx.post("/v1/chat/completions").json(body).send().await
}

fn status_of(r: &Resp) -> &str {
    r.header(STATUS).unwrap_or("<none>")
}

fn expect_cache(r: &Resp, expected: &str) {
    assert_eq!(
        status_of(r),
        expected,
        "{}: x-gateway-cache (status {}, body {})",
        r.label,
        r.status,
        r.text()
    );
    if expected == "HIT" {
        let age = r.header("age").unwrap_or("");
        assert!(
            age.parse::<u64>().is_ok(),
            "{}: a hit needs a numeric age header, got '{age}'",
            r.label
        );
    }
}

fn expect_stream_cache(s: &Streamed, expected: &str) {
    assert_eq!(
        s.header(STATUS).unwrap_or("<none>"),
        expected,
        "{}: x-gateway-cache (status {}, body {})",
        s.label,
        s.status,
        s.raw
    );
}

/// A complete, valid chat stream: JSON chunks, a usage chunk, and `[DONE]` last.
fn expect_complete_stream(s: &Streamed) {
    s.expect_status(200).expect_event_stream();
    assert!(s.body_error.is_none(), "{}: {:?}", s.label, s.body_error);
    let (last, chunks) = s
        .events
        .split_last()
        .unwrap_or_else(|| panic!("{}: no events", s.label));
    assert!(
        last.is_done(),
        "{}: last event is not [DONE]: {}",
        s.label,
        s.raw
    );
    assert!(
        s.raw.ends_with("data: [DONE]\n\n"),
        "{}: does not end with [DONE]",
        s.label
    );
    assert!(!chunks.is_empty(), "{}: no chunks", s.label);
    for c in chunks {
        let v = c
            .json()
            .unwrap_or_else(|| panic!("{}: event is not JSON: {}", s.label, c.data));
        assert_eq!(v["object"], "chat.completion.chunk", "{}: {v}", s.label);
    }
    assert!(
        chunks
            .iter()
            .filter_map(|c| c.json())
            .any(|v| v["usage"]["total_tokens"].is_u64()),
        "{}: no usage chunk: {}",
        s.label,
        s.raw
    );
}

pub async fn cache_second_identical_request_is_a_hit_without_upstream_call(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_hit");
    let body = chat0(&model, "cache me");
    let first = chat(&ctx, &body).await;
    first.expect_status(200);
    expect_cache(&first, "MISS");
    settle(&ctx).await;
    let second = chat(&ctx, &body).await;
    second.expect_status(200);
    expect_cache(&second, "HIT");
    assert_eq!(
        second.body, first.body,
        "{}: a hit must return the stored body byte for byte",
        second.label
    );
    assert!(
        second
            .header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}: content-type of a hit",
        second.label
    );
    assert!(
        second.header("x-request-id").is_some(),
        "{}: hits carry a request id too",
        second.label
    );
    ctx.expect_upstream_calls(&model, 1, "the second request is a hit")
        .await;
}

pub async fn cache_reordered_keys_and_whitespace_hit(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_reorder");
    let a = format!(
        r#"{{"model":"{model}","temperature":0,"top_p":1,"max_tokens":16,"messages":[{{"role":"user","content":"order"}}],"response_format":{{"type":"text"}}}}"#
    );
    let b = format!(
        r#"{{ "response_format": {{ "type": "text" }}, "messages": [ {{ "content": "order", "role": "user" }} ],
             "max_tokens": 16, "top_p": 1.0, "temperature": 0.0, "model": "{model}" }}"#
    );
    let first = ctx
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(a)
        .send()
        .await;
    first.expect_status(200);
    expect_cache(&first, "MISS");
    settle(&ctx).await;
    let second = ctx
        .post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(b)
        .send()
        .await;
    second.expect_status(200);
    expect_cache(&second, "HIT");
    ctx.expect_upstream_calls(
        &model,
        1,
        "reordered keys, 0 vs 0.0 and 1 vs 1.0 are the same request",
    )
    .await;
}

pub async fn cache_each_answer_changing_field_misses(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_fields");
    let base = chat0(&model, "fields");
    let first = chat(&ctx, &base).await;
    expect_cache(&first, "MISS");
    let variants: Vec<(&str, Value)> = vec![
        ("messages", json!([{"role": "user", "content": "fields!"}])),
        ("max_tokens", json!(7)),
        ("stop", json!(["\n"])),
        ("top_p", json!(0.5)),
        ("seed", json!(42)),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
        ),
        ("tool_choice", json!("none")),
        ("response_format", json!({"type": "json_object"})),
        ("logit_bias", json!({"50256": -100})),
        ("presence_penalty", json!(0.5)),
        ("frequency_penalty", json!(0.5)),
        ("an_unknown_provider_field", json!({"x": 1})),
    ];
    for (field, value) in &variants {
        let mut body = base.clone();
        body[*field] = value.clone();
        let r = chat(&ctx, &body).await;
        r.expect_status(200);
        assert_eq!(
            status_of(&r),
            "MISS",
            "{}: changing '{field}' must miss",
            r.label
        );
    }
    ctx.expect_upstream_calls(
        &model,
        1 + variants.len() as u64,
        "every answer-changing field is part of the key",
    )
    .await;
    // Another model is another answer.
    let other = ctx.model("mock-model", "cache_fields_other");
    let mut body = base.clone();
    body["model"] = json!(other);
    expect_cache(&chat(&ctx, &body).await, "MISS");
    ctx.expect_upstream_calls(&other, 1, "the model is part of the key")
        .await;
    // The original is still cached.
    expect_cache(&chat(&ctx, &base).await, "HIT");
}

pub async fn cache_delivery_only_fields_do_not_change_the_key(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_excluded");
    let base = chat0(&model, "excluded");
    expect_cache(&chat(&ctx, &base).await, "MISS");
    let mut body = base.clone();
    body["user"] = json!("someone");
    body["metadata"] = json!({"trace": "abc"});
    body["stream"] = json!(false);
    settle(&ctx).await;
    expect_cache(&chat(&ctx, &body).await, "HIT");
    ctx.expect_upstream_calls(
        &model,
        1,
        "user, metadata, stream:false do not change the answer",
    )
    .await;
}

pub async fn cache_is_separate_per_client_key(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_tenant");
    let body = chat0(&model, "mine");
    expect_cache(&chat(&ctx, &body).await, "MISS");
    let other = ctx
        .post("/v1/chat/completions")
        .key(&ctx.second_key)
        .json(&body)
        .send()
        .await;
    other.expect_status(200);
    expect_cache(&other, "MISS");
    ctx.expect_upstream_calls(&model, 2, "one client's entry is not served to another")
        .await;
    settle(&ctx).await;
    let again = ctx
        .post("/v1/chat/completions")
        .key(&ctx.second_key)
        .json(&body)
        .send()
        .await;
    expect_cache(&again, "HIT");
    ctx.expect_upstream_calls(&model, 2, "each client hits its own entry")
        .await;
}

pub async fn cache_never_stores_upstream_errors(ctx: Arc<Ctx>) {
    for status in [429, 500] {
        let model = ctx.model(&format!("mock-error-{status}"), "cache_errors");
        let body = chat0(&model, "errors");
        for _ in 0..2 {
            let r = chat(&ctx, &body).await;
            r.expect_status(status);
            assert_ne!(
                status_of(&r),
                "HIT",
                "{}: an error was served from cache",
                r.label
            );
        }
        ctx.expect_upstream_calls(&model, 2, "errors are never cached")
            .await;
    }
    let model = ctx.model("mock-garbage", "cache_errors");
    for _ in 0..2 {
        chat(&ctx, &chat0(&model, "garbage"))
            .await
            .expect_status(502);
    }
    ctx.expect_upstream_calls(&model, 2, "invalid answers are never cached")
        .await;
}

pub async fn cache_never_stores_nondeterministic_requests(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_hot");
    let mut hot = chat0(&model, "creative");
    hot["temperature"] = json!(0.7);
    let unset = json!({"model": model, "messages": [{"role": "user", "content": "creative"}]});
    let mut two = chat0(&model, "creative");
    two["n"] = json!(2);
    for body in [&hot, &hot, &unset, &unset, &two, &two] {
        let r = chat(&ctx, body).await;
        r.expect_status(200);
        expect_cache(&r, "BYPASS");
    }
    ctx.expect_upstream_calls(
        &model,
        6,
        "temperature above 0 (or unset) and n > 1 are not cached",
    )
    .await;
}

pub async fn cache_never_stores_cut_off_or_failed_streams(ctx: Arc<Ctx>) {
    for behaviour in ["mock-cutoff-2", "mock-stream-error"] {
        let model = ctx.model(behaviour, "cache_cutoff");
        for _ in 0..2 {
            let s = ctx
                .post("/v1/chat/completions")
                .json(&stream0(&model, "cut"))
                .stream()
                .await;
            s.expect_status(200);
            expect_stream_cache(&s, "MISS");
            assert!(
                !s.events.iter().any(|e| e.is_done()),
                "{}: a broken stream must not end with [DONE]",
                s.label
            );
        }
        ctx.expect_upstream_calls(&model, 2, "a stream without [DONE] is never cached")
            .await;
    }
}

pub async fn cache_streamed_hit_replays_valid_sse_with_usage_and_done(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-stream-4x20ms", "cache_stream");
    let body = stream0(&model, "stream me");
    let first = ctx.post("/v1/chat/completions").json(&body).stream().await;
    expect_complete_stream(&first);
    expect_stream_cache(&first, "MISS");
    // The entry is written once the stream is complete; give a background write a moment.
    settle(&ctx).await;
    let second = ctx.post("/v1/chat/completions").json(&body).stream().await;
    expect_stream_cache(&second, "HIT");
    expect_complete_stream(&second);
    assert!(
        second
            .header("age")
            .is_some_and(|a| a.parse::<u64>().is_ok()),
        "{}: age on a streamed hit",
        second.label
    );
    assert_eq!(
        second.raw, first.raw,
        "{}: a streamed hit replays the recorded events byte for byte",
        second.label
    );
    ctx.expect_upstream_calls(&model, 1, "streamed hits make no upstream call")
        .await;
}

pub async fn cache_streamed_and_plain_requests_get_their_own_form(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_forms");
    let plain = chat0(&model, "forms");
    let streamed = stream0(&model, "forms");
    expect_cache(&chat(&ctx, &plain).await, "MISS");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&streamed)
        .stream()
        .await;
    expect_complete_stream(&s);
    expect_stream_cache(&s, "MISS");
    ctx.expect_upstream_calls(&model, 2, "the streamed form is a separate entry")
        .await;
    settle(&ctx).await;
    let p = chat(&ctx, &plain).await;
    expect_cache(&p, "HIT");
    assert_eq!(p.json()["object"], "chat.completion", "{}", p.label);
    let hit = ctx
        .post("/v1/chat/completions")
        .json(&streamed)
        .stream()
        .await;
    expect_stream_cache(&hit, "HIT");
    expect_complete_stream(&hit);
    // Without include_usage the events differ: another entry again.
    let mut no_usage = streamed.clone();
    no_usage.as_object_mut().map(|o| o.remove("stream_options"));
    let s = ctx
        .post("/v1/chat/completions")
        .json(&no_usage)
        .stream()
        .await;
    expect_stream_cache(&s, "MISS");
    assert!(
        !s.events
            .iter()
            .filter_map(|e| e.json())
            .any(|v| v["usage"].is_object()),
        "{}: a usage chunk the client did not ask for",
        s.label
    );
    ctx.expect_upstream_calls(&model, 3, "each form is stored once")
        .await;
}

pub async fn cache_control_headers_refresh_bypass_and_set_ttl(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "cache_controls");
    let body = chat0(&model, "controls");
    expect_cache(&chat(&ctx, &body).await, "MISS");
    let r = ctx
        .post("/v1/chat/completions")
        .header("cache-control", "no-store")
        .json(&body)
        .send()
        .await;
    r.expect_status(200);
    expect_cache(&r, "BYPASS");
    ctx.expect_upstream_calls(&model, 2, "no-store bypasses the cache")
        .await;
    let r = ctx
        .post("/v1/chat/completions")
        .header("cache-control", "no-cache")
        .json(&body)
        .send()
        .await;
    r.expect_status(200);
    expect_cache(&r, "MISS");
    ctx.expect_upstream_calls(&model, 3, "no-cache skips the lookup")
        .await;
    settle(&ctx).await;
    let r = chat(&ctx, &body).await;
    expect_cache(&r, "HIT");
    ctx.expect_upstream_calls(&model, 3, "the refreshed entry is served")
        .await;

    // A 1-second TTL: a hit at once, a miss once it has expired.
    let model = ctx.model("mock-model", "cache_ttl");
    let body = chat0(&model, "short-lived");
    let with_ttl = |c: Call| c.header("x-gateway-cache-ttl", "1");
    let r = with_ttl(ctx.post("/v1/chat/completions"))
        .json(&body)
        .send()
        .await;
    expect_cache(&r, "MISS");
    settle(&ctx).await;
    let r = chat(&ctx, &body).await;
    expect_cache(&r, "HIT");
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let r = chat(&ctx, &body).await;
    expect_cache(&r, "MISS");
    ctx.expect_upstream_calls(&model, 2, "the entry expired after its TTL")
        .await;
}

pub async fn cache_embeddings_and_completions_are_cached(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-embedding", "cache_embed");
    let body = json!({"model": model, "input": ["a", "b"]});
    for expected in ["MISS", "HIT"] {
        let r = ctx.post("/v1/embeddings").json(&body).send().await;
        r.expect_status(200);
        expect_cache(&r, expected);
        settle(&ctx).await;
    }
    ctx.expect_upstream_calls(&model, 1, "embeddings are deterministic")
        .await;
    let model = ctx.model("mock-model", "cache_text");
    let body = json!({"model": model, "prompt": "once upon", "temperature": 0});
    for expected in ["MISS", "HIT"] {
        let r = ctx.post("/v1/completions").json(&body).send().await;
        r.expect_status(200);
        expect_cache(&r, expected);
        settle(&ctx).await;
    }
    ctx.expect_upstream_calls(&model, 1, "completions at temperature 0 are cached")
        .await;
    // Other routes carry no cache status.
    let r = ctx.call(Method::GET, "/v1/models").send().await;
    assert!(
        r.header(STATUS).is_none(),
        "{}: {STATUS} on /v1/models",
        r.label
    );
}

/// Identical concurrent misses make one upstream call, and every waiter gets the answer (the
/// core's router coalesces them: per process natively, per isolate on the Worker).
pub async fn cache_concurrent_identical_misses_make_one_upstream_call(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-slow-300ms", "cache_coalesce");
    let body = chat0(&model, "all at once");
    let calls: Vec<_> = (0..20)
        .map(|_| {
            let call = ctx.post("/v1/chat/completions").json(&body);
            tokio::spawn(call.send())
        })
        .collect();
    let mut bodies = Vec::new();
    for c in calls {
        let r = c.await.expect("request task");
        r.expect_status(200);
        assert_ne!(status_of(&r), "BYPASS", "{}", r.label);
        bodies.push(r.body);
    }
    assert!(
        bodies.windows(2).all(|w| w[0] == w[1]),
        "every waiter gets the same answer"
    );
    ctx.expect_upstream_calls(&model, 1, "20 identical concurrent misses coalesce")
        .await;

    // Streams too: the waiters follow the leader's stream (see the case below).
    let model = ctx.model("mock-stream-3x100ms", "cache_coalesce_stream");
    let body = stream0(&model, "together");
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let call = ctx.post("/v1/chat/completions").json(&body);
            tokio::spawn(call.stream())
        })
        .collect();
    for c in calls {
        expect_complete_stream(&c.await.expect("stream task"));
    }
    ctx.expect_upstream_calls(&model, 1, "5 identical concurrent streams coalesce")
        .await;
}

/// Identical concurrent streams make one upstream call, and the waiters follow the leader's
/// stream live (live fan-out): each follower's first event comes long before the leader's stream
/// ends (the upstream spaces 5 events 200 ms apart), not all at once after it; every client gets
/// the same events, ending with `[DONE]`.
pub async fn cache_concurrent_identical_streams_follow_the_leader_live(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-stream-5x200ms", "cache_fanout");
    let body = stream0(&model, "live, together");
    let t0 = Instant::now();
    let calls: Vec<_> = (0..5)
        .map(|_| {
            let call = ctx.post("/v1/chat/completions").json(&body);
            tokio::spawn(async move {
                let sent = t0.elapsed();
                (sent, call.stream().await)
            })
        })
        .collect();
    let mut streams = Vec::new();
    for c in calls {
        streams.push(c.await.expect("stream task"));
    }
    ctx.expect_upstream_calls(&model, 1, "5 identical concurrent streams coalesce")
        .await;
    let datas = |s: &Streamed| s.events.iter().map(|e| e.data.clone()).collect::<Vec<_>>();
    // Arrival times (ms) since the first request, for the messages.
    let arrivals = |(sent, s): &(Duration, Streamed)| {
        s.events
            .iter()
            .map(|e| (*sent + e.at).as_millis())
            .collect::<Vec<_>>()
    };
    let mut statuses: Vec<&str> = streams
        .iter()
        .map(|(_, s)| s.header(STATUS).unwrap_or("<none>"))
        .collect();
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        ["HIT", "HIT", "HIT", "HIT", "MISS"],
        "one leader, four followers; arrivals (ms): {:?}",
        streams.iter().map(arrivals).collect::<Vec<_>>()
    );
    let Some(leader) = streams
        .iter()
        .find(|(_, s)| s.header(STATUS) == Some("MISS"))
    else {
        return;
    };
    let leader_events = datas(&leader.1);
    let leader_end = arrivals(leader).last().copied().unwrap_or_default();
    for stream in &streams {
        let s = &stream.1;
        expect_complete_stream(s);
        assert_eq!(
            datas(s),
            leader_events,
            "{}: every client gets the same events",
            s.label
        );
        // Generous margins (the machine is loaded): the stream takes ~1 s; a waiter given the
        // recording after the leader's stream ended would get its first event after it.
        let first = arrivals(stream).first().copied().unwrap_or_default();
        assert!(
            first + 300 <= leader_end,
            "{}: first event at {first} ms, the leader's stream ended at {leader_end} ms \
             (x-gateway-cache {}); arrivals (ms) {:?}",
            s.label,
            s.header(STATUS).unwrap_or("<none>"),
            arrivals(stream)
        );
    }
}

/// Entries are written after the response is sent. fly-fallback has them in memory before a
/// later request can miss (it coalesces); the Worker writes KV in `waitUntil`, so give it a moment.
async fn settle(ctx: &Ctx) {
    if ctx.target == "worker" {
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

// --- fly-fallback with Redis ------------------------------------------------------------------

/// A redis-server on a free loopback port, stopped with `procs`.
fn start_redis(procs: &mut Processes, name: &str) -> Result<(harness::Started, u16), String> {
    let port = harness::free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"]);
    let started = procs.spawn(name, cmd, false).map_err(|e| {
        format!("{e}: the Redis cases need redis-server (Debian: apt-get install -y redis-server)")
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("redis-server did not listen on {port} within 10s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok((started, port))
}

/// Waits until the Redis on `port` holds at least `n` keys (the writes are in the background).
async fn wait_for_redis_keys(port: u16, n: u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let size = tokio::task::spawn_blocking(move || redis_dbsize(port))
            .await
            .ok()
            .flatten();
        if size.is_some_and(|s| s >= n) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "Redis on {port} did not get {n} entries within 10s (has {size:?})"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DBSIZE` over a plain socket (RESP: `:N\r\n`).
fn redis_dbsize(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    s.write_all(b"*1\r\n$6\r\nDBSIZE\r\n").ok()?;
    let mut buf = [0u8; 64];
    let n = s.read(&mut buf).ok()?;
    let text = std::str::from_utf8(&buf[..n]).ok()?;
    text.strip_prefix(':')?.trim().parse().ok()
}

/// Another fly-fallback on the same mock, with `REDIS_URL`; returns its base URL.
async fn start_fly(
    procs: &mut Processes,
    ctx: &Ctx,
    name: &str,
    redis_url: &str,
) -> Result<String, String> {
    let settings: Vec<(&str, String)> = vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        (
            "GATEWAY_API_KEYS",
            format!("{},{}", harness::CLIENT_KEY, harness::SECOND_CLIENT_KEY),
        ),
        ("GATEWAY_CONFIG", harness::GATEWAY_CONFIG.to_string()),
        ("REDIS_URL", redis_url.to_string()),
    ];
    let port = harness::free_port()?;
    let bin = harness::find_binary("fly-fallback")?;
    let started = procs.spawn(name, harness::fly_command(&bin, port, &settings), false)?;
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(30)).await?;
    Ok(base)
}

fn at(ctx: &Ctx, base: &str) -> Call {
    super::chat_at(ctx, base, &ctx.key)
}

/// Two fly-fallback machines sharing one Redis: what one stored, the other serves.
pub async fn cache_redis_is_shared_between_fly_machines(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let (_redis, port) =
        start_redis(&mut procs, "cache-redis-shared").unwrap_or_else(|e| panic!("{e}"));
    let url = format!("redis://127.0.0.1:{port}/");
    let a = start_fly(&mut procs, &ctx, "cache-fly-redis-a", &url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = start_fly(&mut procs, &ctx, "cache-fly-redis-b", &url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let model = ctx.model("mock-model", "cache_redis_shared");
    let body = chat0(&model, "shared");
    let first = at(&ctx, &a).json(&body).send().await;
    first.expect_status(200);
    expect_cache(&first, "MISS");
    // The Redis write happens after the response; allow it a moment.
    wait_for_redis_keys(port, 1).await;
    let hit = at(&ctx, &b).json(&body).send().await;
    hit.expect_status(200);
    expect_cache(&hit, "HIT");
    assert_eq!(hit.body, first.body, "{}: byte for byte", hit.label);
    ctx.expect_upstream_calls(&model, 1, "machine B served machine A's entry from Redis")
        .await;

    // Streams travel through Redis too.
    let model = ctx.model("mock-model", "cache_redis_stream");
    let body = stream0(&model, "shared stream");
    let first = at(&ctx, &a).json(&body).stream().await;
    expect_complete_stream(&first);
    wait_for_redis_keys(port, 2).await;
    let replayed = at(&ctx, &b).json(&body).stream().await;
    expect_stream_cache(&replayed, "HIT");
    expect_complete_stream(&replayed);
    assert_eq!(replayed.raw, first.raw, "{}: byte for byte", replayed.label);
    ctx.expect_upstream_calls(
        &model,
        1,
        "machine B replayed machine A's stream from Redis",
    )
    .await;
    drop(procs);
}

/// A Redis that is down (never started, or stopped while running) costs misses, not failures.
pub async fn cache_failing_redis_still_answers_as_miss(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    // Nothing listens on a port that was just free.
    let closed = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let dead = start_fly(
        &mut procs,
        &ctx,
        "cache-fly-redis-dead",
        &format!("redis://127.0.0.1:{closed}/"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let model = ctx.model("mock-model", "cache_redis_dead");
    let r = at(&ctx, &dead)
        .json(&chat0(&model, "no redis"))
        .send()
        .await;
    r.expect_status(200);
    expect_cache(&r, "MISS");
    let s = at(&ctx, &dead)
        .json(&stream0(&model, "no redis"))
        .stream()
        .await;
    expect_complete_stream(&s);
    expect_stream_cache(&s, "MISS");

    // Redis stops while the gateway runs.
    let (redis, port) =
        start_redis(&mut procs, "cache-redis-stopping").unwrap_or_else(|e| panic!("{e}"));
    let live = start_fly(
        &mut procs,
        &ctx,
        "cache-fly-redis-stopping",
        &format!("redis://127.0.0.1:{port}/"),
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let model = ctx.model("mock-model", "cache_redis_stopping");
    expect_cache(
        &at(&ctx, &live).json(&chat0(&model, "before")).send().await,
        "MISS",
    );
    {
        let mut child = redis.child.lock().unwrap_or_else(|p| p.into_inner());
        let _ = child.kill();
        let _ = child.wait();
    }
    for text in ["after 1", "after 2"] {
        let t0 = Instant::now();
        let r = at(&ctx, &live).json(&chat0(&model, text)).send().await;
        r.expect_status(200);
        expect_cache(&r, "MISS");
        assert!(
            t0.elapsed() < Duration::from_secs(3),
            "{}: a dead Redis must not stall requests ({:?})",
            r.label,
            t0.elapsed()
        );
    }
    // The in-process cache still serves.
    expect_cache(
        &at(&ctx, &live).json(&chat0(&model, "after 1")).send().await,
        "HIT",
    );
    drop(procs);
}

// --- the Worker without its KV namespace ------------------------------------------------------

/// The Worker whose KV binding is unavailable (a second `wrangler dev` serving the same bundle
/// with a config that declares no namespace): every cacheable request still succeeds, as a MISS
/// that reaches the upstream, plain and streamed.
pub async fn cache_unavailable_kv_still_answers_as_miss(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let inspector = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let settings: Vec<(&str, String)> = vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        ("GATEWAY_API_KEYS", harness::CLIENT_KEY.to_string()),
        ("GATEWAY_CONFIG", harness::GATEWAY_CONFIG.to_string()),
    ];
    let cmd = harness::extra_worker_command(
        &ctx.repo,
        "cache-worker-without-kv",
        port,
        inspector,
        &settings,
    );
    let started = procs
        .spawn("cache-worker-without-kv", cmd, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(120))
        .await
        .unwrap_or_else(|e| panic!("{e}"));

    let model = ctx.model("mock-model", "cache_without_kv");
    let body = chat0(&model, "no kv here");
    let mut contents = Vec::new();
    for _ in 0..2 {
        let r = at(&ctx, &base).json(&body).send().await;
        r.expect_status(200);
        assert_eq!(r.header(STATUS), Some("MISS"), "{}", r.label);
        contents.push(r.json()["choices"][0]["message"]["content"].clone());
    }
    assert_eq!(contents[0], contents[1]);
    ctx.expect_upstream_calls(&model, 2, "without KV nothing is cached")
        .await;

    let stream_model = ctx.model("mock-stream-3x10ms", "cache_without_kv_stream");
    let mut stream_body = chat0(&stream_model, "no kv here");
    stream_body["stream"] = json!(true);
    let r = at(&ctx, &base).json(&stream_body).send().await;
    r.expect_status(200);
    assert_eq!(r.header(STATUS), Some("MISS"), "{}", r.label);
    assert!(r.text().trim_end().ends_with("data: [DONE]"), "{}", r.label);
    drop(procs);
}
