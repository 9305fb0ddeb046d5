//! Plain (non-streamed) inference requests and request ids.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{chat_body, Ctx};
use crate::client::Resp;
use crate::expect;
use crate::harness::MOCK_NAME;

fn chat_content(r: &Resp) -> String {
    let v = r.json();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{}: no choices[0].message.content: {v}", r.label))
        .to_string()
}

fn expect_usage(label: &str, v: &Value) {
    let u = &v["usage"];
    let n = |k: &str| {
        u[k].as_u64()
            .unwrap_or_else(|| panic!("{label}: usage.{k} is not a count: {v}"))
    };
    assert!(n("prompt_tokens") > 0, "{label}: {v}");
    assert_eq!(
        n("total_tokens"),
        n("prompt_tokens") + n("completion_tokens"),
        "{label}: {v}"
    );
}

pub async fn chat_completion_returns_choices_usage_and_upstream_headers(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "chat_plain");
    let r = ctx
        .post("/v1/chat/completions")
        .json(&chat_body(&model, "Hello there"))
        .send()
        .await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["object"], "chat.completion", "{}: {v}", r.label);
    assert_eq!(v["model"], model.as_str(), "{}: {v}", r.label);
    assert_eq!(
        v["choices"][0]["message"]["role"], "assistant",
        "{}: {v}",
        r.label
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{}: {v}", r.label);
    assert!(!chat_content(&r).is_empty(), "{}: empty content", r.label);
    expect_usage(&r.label, &v);
    // Upstream headers pass through; the upstream's own request id is renamed.
    assert_eq!(
        r.header("x-mock-upstream"),
        Some(MOCK_NAME),
        "{}: x-mock-upstream",
        r.label
    );
    assert_eq!(
        r.header("x-upstream-request-id"),
        Some("mock-req-1"),
        "{}: the upstream's x-request-id should come back as x-upstream-request-id",
        r.label
    );
    assert_ne!(
        r.header("x-request-id"),
        Some("mock-req-1"),
        "{}: the upstream's request id replaced the gateway's",
        r.label
    );
    ctx.expect_upstream_calls(&model, 1, "one request, one upstream call")
        .await;
}

pub async fn chat_completion_same_request_gives_same_content(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "chat_deterministic");
    let body = chat_body(&model, "Tell me the same thing twice");
    let first = ctx.post("/v1/chat/completions").json(&body).send().await;
    let second = ctx.post("/v1/chat/completions").json(&body).send().await;
    first.expect_status(200);
    second.expect_status(200);
    assert_eq!(
        chat_content(&first),
        chat_content(&second),
        "{}: the mock is deterministic",
        first.label
    );
    let other = ctx
        .post("/v1/chat/completions")
        .json(&chat_body(&model, "Something else"))
        .send()
        .await;
    other.expect_status(200);
    assert_ne!(
        chat_content(&first),
        chat_content(&other),
        "{}: a different input must give a different answer",
        first.label
    );
}

pub async fn request_id_is_a_fresh_uuid_when_client_sends_none(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "request_id_uuid");
    let mut ids = Vec::new();
    for _ in 0..2 {
        let r = ctx
            .post("/v1/chat/completions")
            .json(&chat_body(&model, "id please"))
            .send()
            .await;
        r.expect_status(200);
        let id = r.header("x-request-id").unwrap_or_default().to_string();
        assert!(
            expect::is_uuid_v4(&id),
            "{}: x-request-id '{id}' is not a UUID v4",
            r.label
        );
        ids.push(id);
    }
    assert_ne!(ids[0], ids[1], "request ids must differ between requests");
    // Local answers carry one too.
    let r = ctx.get("/health").no_auth().send().await;
    let id = r.header("x-request-id").unwrap_or_default();
    assert!(
        expect::is_uuid_v4(id),
        "{}: x-request-id '{id}' is not a UUID v4",
        r.label
    );
}

pub async fn request_id_echoes_the_clients_own(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "request_id_echo");
    let r = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", "conformance-abc-123")
        .json(&chat_body(&model, "echo my id"))
        .send()
        .await;
    r.expect_status(200);
    assert_eq!(
        r.header("x-request-id"),
        Some("conformance-abc-123"),
        "{}",
        r.label
    );
    // Also on errors the gateway produces itself.
    let r = ctx
        .post("/v1/chat/completions")
        .no_auth()
        .header("x-request-id", "conformance-abc-123")
        .json(&chat_body(&model, "echo my id"))
        .send()
        .await;
    r.expect_status(401);
    assert_eq!(
        r.header("x-request-id"),
        Some("conformance-abc-123"),
        "{}",
        r.label
    );
}

pub async fn embeddings_are_forwarded(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-embedding", "embeddings");
    let r = ctx
        .post("/v1/embeddings")
        .json(&json!({"model": model, "input": ["first text", "second text"]}))
        .send()
        .await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["object"], "list", "{}: {v}", r.label);
    let data = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no data: {v}", r.label));
    assert_eq!(data.len(), 2, "{}: one embedding per input: {v}", r.label);
    for (i, d) in data.iter().enumerate() {
        assert_eq!(d["object"], "embedding", "{}: {d}", r.label);
        assert_eq!(d["index"], i, "{}: {d}", r.label);
        let vector = d["embedding"]
            .as_array()
            .unwrap_or_else(|| panic!("{}: {d}", r.label));
        assert!(
            !vector.is_empty() && vector.iter().all(Value::is_number),
            "{}: {d}",
            r.label
        );
    }
    assert!(
        v["usage"]["prompt_tokens"].as_u64().is_some_and(|n| n > 0),
        "{}: {v}",
        r.label
    );
    ctx.expect_upstream_calls(&model, 1, "one request, one upstream call")
        .await;
}

pub async fn completions_are_forwarded(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "completions");
    let r = ctx
        .post("/v1/completions")
        .json(&json!({"model": model, "prompt": "Once upon a time"}))
        .send()
        .await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["object"], "text_completion", "{}: {v}", r.label);
    assert!(
        v["choices"][0]["text"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{}: no choices[0].text: {v}",
        r.label
    );
    expect_usage(&r.label, &v);
    ctx.expect_upstream_calls(&model, 1, "one request, one upstream call")
        .await;
}
