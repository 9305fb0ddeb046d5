//! Request bodies the gateway rejects itself with a 400 naming the parameter.

use std::sync::Arc;

use serde_json::{json, Value};

use super::Ctx;
use crate::client::Resp;
use crate::expect;

async fn post_chat(ctx: &Ctx, body: Vec<u8>) -> Resp {
    ctx.post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
}

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).expect("serialisable")
}

pub async fn bad_request_malformed_json_is_400_invalid_json(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "bad_json");
    let body = format!(r#"{{"model": "{model}", "messages": [{{"role": "user", "content": "x"}}"#);
    let r = post_chat(&ctx, body.into_bytes()).await;
    let e = expect::error(&r, 400, "invalid_json");
    assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
    ctx.expect_upstream_calls(
        "__invalid_json",
        0,
        "the gateway never forwards invalid JSON",
    )
    .await;
}

pub async fn bad_request_missing_model_names_param_model(ctx: Arc<Ctx>) {
    let r = post_chat(
        &ctx,
        bytes(&json!({"messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    expect::error_with_param(&r, 400, "missing_required_parameter", "model");
    // The mock counts requests without a string model under "".
    ctx.expect_upstream_calls("", 0, "rejected before forwarding")
        .await;
}

pub async fn bad_request_model_not_a_string_names_param_model(ctx: Arc<Ctx>) {
    let r = post_chat(
        &ctx,
        bytes(&json!({"model": 5, "messages": [{"role": "user", "content": "x"}]})),
    )
    .await;
    expect::error_with_param(&r, 400, "invalid_value", "model");
    ctx.expect_upstream_calls("", 0, "rejected before forwarding")
        .await;
}

pub async fn bad_request_missing_messages_names_param_messages(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "bad_missing_messages");
    let r = post_chat(&ctx, bytes(&json!({"model": model}))).await;
    expect::error_with_param(&r, 400, "missing_required_parameter", "messages");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn bad_request_empty_messages_names_param_messages(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "bad_empty_messages");
    let r = post_chat(&ctx, bytes(&json!({"model": model, "messages": []}))).await;
    expect::error_with_param(&r, 400, "invalid_value", "messages");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn bad_request_messages_not_an_array_names_param_messages(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "bad_messages_type");
    let r = post_chat(&ctx, bytes(&json!({"model": model, "messages": "hello"}))).await;
    expect::error_with_param(&r, 400, "invalid_value", "messages");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn bad_request_stream_not_a_boolean_names_param_stream(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "bad_stream_type");
    let r = post_chat(
        &ctx,
        bytes(&json!({"model": model, "messages": [{"role": "user", "content": "x"}], "stream": "yes"})),
    )
    .await;
    expect::error_with_param(&r, 400, "invalid_value", "stream");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}
