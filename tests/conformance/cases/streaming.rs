//! Streamed chat completions: shape, usage, timing, and streams that end badly.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};

use super::Ctx;
use crate::client::{SseEvent, Streamed};
use crate::expect;
use crate::harness;

fn stream_body(model: &str, text: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": true})
}

/// Every event but the last is a JSON `chat.completion.chunk`; the last is `[DONE]`.
fn expect_chunks_then_done(s: &Streamed) -> Vec<Value> {
    s.expect_status(200).expect_event_stream();
    assert!(
        s.body_error.is_none(),
        "{}: body ended with an error: {:?}",
        s.label,
        s.body_error
    );
    let (last, chunks) = s
        .events
        .split_last()
        .unwrap_or_else(|| panic!("{}: no events: {}", s.label, s.raw));
    assert!(
        last.is_done(),
        "{}: the last event is not [DONE]: {}",
        s.label,
        s.raw
    );
    assert!(!chunks.is_empty(), "{}: no chunks before [DONE]", s.label);
    assert!(
        s.unterminated.trim().is_empty(),
        "{}: bytes after [DONE]: {:?}",
        s.label,
        s.unterminated
    );
    assert!(
        s.raw.ends_with("data: [DONE]\n\n"),
        "{}: body does not end with data: [DONE]: {:?}",
        s.label,
        s.raw
    );
    chunks
        .iter()
        .map(|e| {
            let v = e
                .json()
                .unwrap_or_else(|| panic!("{}: event is not JSON: {}", s.label, e.data));
            assert_eq!(v["object"], "chat.completion.chunk", "{}: {v}", s.label);
            assert!(
                v["choices"].is_array(),
                "{}: no choices array: {v}",
                s.label
            );
            v
        })
        .collect()
}

pub async fn chat_stream_is_json_chunks_ending_with_done(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "stream_shape");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "Stream to me"))
        .stream()
        .await;
    let chunks = expect_chunks_then_done(&s);
    assert!(chunks.len() >= 2, "{}: {} chunks", s.label, chunks.len());
    assert!(
        chunks
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{}: usage chunk without stream_options.include_usage",
        s.label
    );
    assert!(
        s.header("x-request-id").is_some_and(|id| !id.is_empty()),
        "{}: no x-request-id",
        s.label
    );
    // The chunks are the upstream's, unaltered: together they are the non-streamed answer.
    let plain = ctx
        .post("/v1/chat/completions")
        .json(&json!({"model": model, "messages": [{"role": "user", "content": "Stream to me"}]}))
        .send()
        .await;
    plain.expect_status(200);
    let v = plain.json();
    assert_eq!(
        s.content(),
        v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or_default(),
        "{}: streamed content differs from the plain answer",
        s.label
    );
}

pub async fn chat_stream_include_usage_sends_usage_chunk_before_done(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "stream_usage");
    let mut body = stream_body(&model, "Count my tokens");
    body["stream_options"] = json!({"include_usage": true});
    let s = ctx.post("/v1/chat/completions").json(&body).stream().await;
    let chunks = expect_chunks_then_done(&s);
    let (usage_chunk, before) = chunks.split_last().expect("chunks");
    let usage = &usage_chunk["usage"];
    assert!(
        usage["total_tokens"].as_u64().is_some_and(|n| n > 0),
        "{}: the chunk before [DONE] has no usage: {usage_chunk}",
        s.label
    );
    assert_eq!(
        usage_chunk["choices"],
        json!([]),
        "{}: {usage_chunk}",
        s.label
    );
    assert!(
        before
            .iter()
            .all(|c| c.get("usage").is_none_or(Value::is_null)),
        "{}: usage before the last chunk",
        s.label
    );
}

/// The proof that the gateway does not buffer: the mock sends 5 content events 200 ms apart,
/// and they must reach the client spread out the same way.
pub async fn chat_stream_events_arrive_unbuffered(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-stream-5x200ms", "stream_timing");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "Take your time"))
        .stream()
        .await;
    expect_chunks_then_done(&s);
    let content: Vec<&SseEvent> = s
        .events
        .iter()
        .filter(|e| {
            e.json().is_some_and(|v| {
                v["choices"][0]["delta"]["content"]
                    .as_str()
                    .is_some_and(|c| !c.is_empty())
            })
        })
        .collect();
    let times: Vec<u128> = content.iter().map(|e| e.at.as_millis()).collect();
    assert_eq!(
        content.len(),
        5,
        "{}: expected 5 content events, arrivals (ms) {times:?}",
        s.label
    );
    let spread = content[4].at - content[0].at;
    assert!(
        spread >= Duration::from_millis(600),
        "{}: first and last content events arrived {spread:?} apart (the upstream sent them 800 ms apart): the stream is buffered; arrivals (ms) {times:?}",
        s.label
    );
    let separate = content
        .windows(2)
        .filter(|w| w[1].at - w[0].at >= Duration::from_millis(100))
        .count();
    assert!(
        separate >= 3,
        "{}: events arrived in bursts ({separate} of 4 gaps >= 100 ms); arrivals (ms) {times:?}",
        s.label
    );
    assert!(
        s.head_at + Duration::from_millis(600) <= content[4].at,
        "{}: response head came at {:?}, only just before the last event at {:?}",
        s.label,
        s.head_at,
        content[4].at
    );
}

pub async fn stream_cut_off_upstream_ends_with_error_event_and_no_done(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-cutoff-2", "stream_cutoff");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "I will be cut off"))
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    assert!(
        !s.events.iter().any(SseEvent::is_done),
        "{}: [DONE] after a cut-off: {}",
        s.label,
        s.raw
    );
    assert_eq!(
        s.events.len(),
        3,
        "{}: expected 2 chunks and an error event: {}",
        s.label,
        s.raw
    );
    for e in &s.events[..2] {
        let v = e
            .json()
            .unwrap_or_else(|| panic!("{}: not JSON: {}", s.label, e.data));
        assert_eq!(v["object"], "chat.completion.chunk", "{}: {v}", s.label);
    }
    let err = s.events[2]
        .json()
        .unwrap_or_else(|| panic!("{}: last event not JSON: {}", s.label, s.events[2].data));
    let e = expect::openai_error_shape(&s.label, &err);
    assert_eq!(
        e["code"], "upstream_stream_interrupted",
        "{}: {err}",
        s.label
    );
    assert!(
        s.unterminated.trim().is_empty(),
        "{}: partial event at the end: {:?}",
        s.label,
        s.unterminated
    );
}

pub async fn stream_error_event_from_upstream_passes_through(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-stream-error", "stream_error");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "Fail halfway"))
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    assert_eq!(
        s.events.len(),
        3,
        "{}: expected 2 chunks and the upstream's error event: {}",
        s.label,
        s.raw
    );
    let err = s.events[2]
        .json()
        .unwrap_or_else(|| panic!("{}: last event not JSON: {}", s.label, s.events[2].data));
    let e = expect::openai_error_shape(&s.label, &err);
    assert_eq!(
        e["code"], "mock_stream_error",
        "{}: the upstream's error event: {err}",
        s.label
    );
    assert_eq!(
        e["message"], "Mock error inside the stream",
        "{}: {err}",
        s.label
    );
    assert!(
        !s.raw.contains("upstream_stream_interrupted"),
        "{}: the gateway added its own error after the upstream's: {}",
        s.label,
        s.raw
    );
}

/// An upstream stream that goes silent for longer than `stream_idle_timeout_ms` is ended by the
/// gateway with an OpenAI error event, about that long after the last event, instead of holding
/// the client until the upstream speaks again.
pub async fn stream_silent_upstream_is_ended_with_a_timeout_event_after_the_idle_time(
    ctx: Arc<Ctx>,
) {
    // Two events 4 s apart: the second never comes within the 1 s idle time.
    let model = ctx.model("mock-stream-2x4000ms", "stream_idle");
    let s = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "then silence"))
        .stream()
        .await;
    s.expect_status(200).expect_event_stream();
    assert_eq!(
        s.events.len(),
        2,
        "{}: one chunk, then the error: {}",
        s.label,
        s.raw
    );
    assert!(s.events[0]
        .json()
        .is_some_and(|v| v["object"] == "chat.completion.chunk"));
    let err = s.events[1]
        .json()
        .unwrap_or_else(|| panic!("{}: last event not JSON: {}", s.label, s.events[1].data));
    let e = expect::openai_error_shape(&s.label, &err);
    assert_eq!(e["code"], "upstream_stream_timeout", "{}: {err}", s.label);
    let silence = s.events[1].at.saturating_sub(s.events[0].at);
    let idle = Duration::from_millis(harness::STREAM_IDLE_TIMEOUT_MS);
    assert!(
        silence >= idle - Duration::from_millis(50) && silence < Duration::from_millis(3_500),
        "{}: the error came {silence:?} after the last event (idle time {idle:?}, upstream's gap 4 s)",
        s.label
    );
    assert!(
        !s.events.iter().any(SseEvent::is_done),
        "{}: [DONE] after a stall",
        s.label
    );
}

/// A stream request whose upstream answers with one JSON document (some providers ignore
/// `stream`) gets that answer as the upstream sends it: relayed, not held back to be buffered
/// and judged (a truncated one reaches the client as it is, not as the gateway's 502).
pub async fn stream_request_answered_with_json_is_relayed_as_it_comes(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-json-always", "stream_json");
    let r = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "json please"))
        .send()
        .await;
    r.expect_status(200);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}: {:?}",
        r.label,
        r.header("content-type")
    );
    assert_eq!(r.json()["object"], "chat.completion", "{}", r.label);

    let model = ctx.model("mock-garbage", "stream_json_garbage");
    let r = ctx
        .post("/v1/chat/completions")
        .json(&stream_body(&model, "garbage please"))
        .send()
        .await;
    assert_eq!(r.status, 200, "{}: {}", r.label, r.text());
    assert_eq!(
        r.text(),
        "{\"id\":\"chatcmpl-garbage\",\"choices\":[{\"mess",
        "{}",
        r.label
    );
}
