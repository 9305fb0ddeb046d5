//! `/v1/models`, unknown paths and wrong methods.

use std::sync::Arc;

use hyper::Method;

use super::Ctx;
use crate::expect;

pub async fn models_lists_the_configured_models_without_calling_upstream(ctx: Arc<Ctx>) {
    let r = ctx.get("/v1/models").send().await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["object"], "list", "{}: {v}", r.label);
    let data = v["data"]
        .as_array()
        .unwrap_or_else(|| panic!("{}: no data: {v}", r.label));
    let ids: Vec<&str> = data.iter().filter_map(|m| m["id"].as_str()).collect();
    assert_eq!(ids, ["mock-model", "mock-embedding"], "{}: {v}", r.label);
    for m in data {
        assert_eq!(m["object"], "model", "{}: {m}", r.label);
        assert_eq!(m["owned_by"], "mock", "{}: {m}", r.label);
        // The configured entries have no `created`; the mock's own list says 1700000000.
        assert_eq!(m["created"], 0, "{}: not the configured list: {m}", r.label);
    }
    // Every target is configured with models, so none of them ever asks the upstream.
    ctx.expect_upstream_calls("__models", 0, "models come from GATEWAY_CONFIG")
        .await;
}

pub async fn models_requires_an_api_key(ctx: Arc<Ctx>) {
    let r = ctx.get("/v1/models").no_auth().send().await;
    expect::error(&r, 401, "missing_api_key");
    let r = ctx.get("/v1/models").key("not-a-key").send().await;
    expect::error(&r, 401, "invalid_api_key");
}

pub async fn unknown_path_is_404_in_openai_shape(ctx: Arc<Ctx>) {
    for method in [Method::GET, Method::POST] {
        let r = ctx.call(method, "/v1/nope").send().await;
        let e = expect::error(&r, 404, "not_found");
        assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);
    }
}

pub async fn wrong_method_is_405_with_allow_header(ctx: Arc<Ctx>) {
    let r = ctx.get("/v1/chat/completions").send().await;
    let e = expect::error(&r, 405, "method_not_allowed");
    assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);
    assert_eq!(r.header("allow"), Some("POST"), "{}: allow header", r.label);
}
