//! What the client sees when the upstream fails: its errors pass through; the gateway's own
//! 502 and 504 when it cannot get a valid answer.

use std::sync::Arc;
use std::time::Duration;

use super::{chat_body, Ctx};
use crate::client::Resp;
use crate::expect;

async fn chat(ctx: &Ctx, model: &str) -> Resp {
    ctx.post("/v1/chat/completions")
        .json(&chat_body(model, "upstream trouble"))
        .send()
        .await
}

/// The mock's error body for `status`, as the client must see it.
fn expect_mock_error(r: &Resp, status: u16, kind: &str) {
    r.expect_status(status);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    let e = expect::openai_error_shape(&r.label, &v);
    assert_eq!(
        e["message"],
        format!("Mock upstream error {status}"),
        "{}: not the upstream's body: {v}",
        r.label
    );
    assert_eq!(e["code"], format!("mock_{status}"), "{}: {v}", r.label);
    assert_eq!(e["type"], kind, "{}: {v}", r.label);
    assert_eq!(
        r.header("x-mock-upstream"),
        Some("mock-a"),
        "{}: upstream headers dropped",
        r.label
    );
}

pub async fn upstream_429_passes_through_with_retry_after(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-error-429", "upstream_429");
    let r = chat(&ctx, &model).await;
    expect_mock_error(&r, 429, "requests");
    assert_eq!(
        r.header("retry-after"),
        Some("7"),
        "{}: retry-after",
        r.label
    );
    assert_eq!(
        r.header("x-ratelimit-remaining-requests"),
        Some("0"),
        "{}: rate-limit headers",
        r.label
    );
    ctx.expect_upstream_calls(&model, 1, "errors are not retried")
        .await;
}

pub async fn upstream_500_passes_through(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-error-500", "upstream_500");
    let r = chat(&ctx, &model).await;
    expect_mock_error(&r, 500, "server_error");
    ctx.expect_upstream_calls(&model, 1, "errors are not retried")
        .await;
}

pub async fn upstream_503_passes_through(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-error-503", "upstream_503");
    let r = chat(&ctx, &model).await;
    expect_mock_error(&r, 503, "server_error");
    ctx.expect_upstream_calls(&model, 1, "errors are not retried")
        .await;
}

pub async fn upstream_truncated_json_is_502_invalid_response(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-garbage", "upstream_garbage");
    let r = chat(&ctx, &model).await;
    let e = expect::error(&r, 502, "upstream_invalid_response");
    assert_eq!(e["type"], "api_error", "{}: {e:?}", r.label);
    ctx.expect_upstream_calls(&model, 1, "one upstream call")
        .await;
}

pub async fn upstream_hangup_is_502_unreachable(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-hangup", "upstream_hangup");
    let r = chat(&ctx, &model).await;
    let e = expect::error(&r, 502, "upstream_unreachable");
    assert_eq!(e["type"], "api_error", "{}: {e:?}", r.label);
    ctx.expect_upstream_calls(&model, 1, "a request that was sent is not retried")
        .await;
}

/// The mock waits 3 s before answering; the gateway's upstream timeout is 1.5 s.
pub async fn upstream_too_slow_is_504_timeout(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-slow-3000ms", "upstream_slow_timeout");
    let r = chat(&ctx, &model).await;
    let e = expect::error(&r, 504, "upstream_timeout");
    assert_eq!(e["type"], "api_error", "{}: {e:?}", r.label);
    assert!(
        r.elapsed < Duration::from_millis(2900),
        "{}: the 504 came after {:?}, not at the configured 1.5 s",
        r.label,
        r.elapsed
    );
}

pub async fn upstream_slow_within_timeout_succeeds(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-slow-200ms", "upstream_slow_ok");
    let r = chat(&ctx, &model).await;
    r.expect_status(200);
    assert!(
        r.json()["choices"][0]["message"]["content"].is_string(),
        "{}: {}",
        r.label,
        r.text()
    );
}

/// Statuses the platforms refuse or that cannot carry a body: 204, 205 and 304 reach the client
/// without one; a status outside 200-599 is the gateway's 502 (the Worker's `Response` would
/// throw on it).
pub async fn upstream_bodiless_and_out_of_range_statuses_are_answered_cleanly(ctx: Arc<Ctx>) {
    for status in [204u16, 205, 304] {
        let model = ctx.model(&format!("mock-status-{status}"), "upstream_status");
        let r = chat(&ctx, &model).await;
        assert_eq!(r.status, status, "{}: {}", r.label, r.text());
        assert!(
            r.body.is_empty(),
            "{}: a body with {status}: {}",
            r.label,
            r.text()
        );
        assert!(r.header("x-request-id").is_some(), "{}", r.label);
    }
    for status in [600u16, 999] {
        let model = ctx.model(&format!("mock-status-{status}"), "upstream_status");
        let r = chat(&ctx, &model).await;
        expect::error(&r, 502, "upstream_invalid_response");
    }
}
