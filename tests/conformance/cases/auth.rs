//! Client authentication, and the client's key never reaching the upstream.

use std::sync::Arc;

use serde_json::Value;

use super::{chat_body, Ctx};
use crate::expect;
use crate::harness::{CLIENT_KEY, UPSTREAM_KEY};

pub async fn auth_missing_key_is_401_and_never_reaches_upstream(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "auth_missing_key");
    let r = ctx
        .post("/v1/chat/completions")
        .no_auth()
        .json(&chat_body(&model, "let me in"))
        .send()
        .await;
    let e = expect::error(&r, 401, "missing_api_key");
    assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{}", r.label);
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn auth_wrong_key_is_401_and_never_reaches_upstream(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "auth_wrong_key");
    for authorization in [
        "Bearer wrong-key".to_string(),
        format!("Basic {CLIENT_KEY}"),
        // The upstream's key is not a client key.
        format!("Bearer {UPSTREAM_KEY}"),
    ] {
        let r = ctx
            .post("/v1/chat/completions")
            .authorization(&authorization)
            .json(&chat_body(&model, "let me in"))
            .send()
            .await;
        let e = expect::error(&r, 401, "invalid_api_key");
        assert_eq!(e["type"], "invalid_request_error", "{}: {e:?}", r.label);
    }
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn auth_second_configured_key_is_accepted(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "auth_second_key");
    let r = ctx
        .post("/v1/chat/completions")
        .key(&ctx.second_key)
        .json(&chat_body(&model, "second key"))
        .send()
        .await;
    r.expect_status(200);
    ctx.expect_upstream_calls(&model, 1, "an accepted request is forwarded")
        .await;
}

/// `mock-echo-headers` answers with the headers it received.
pub async fn auth_client_key_is_replaced_by_upstream_key(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-echo-headers", "auth_key_replaced");
    let r = ctx
        .post("/v1/chat/completions")
        .header("x-request-id", "conformance-echo-1")
        .header("openai-beta", "assistants=v2")
        .header("cookie", "session=test-client-key")
        .json(&chat_body(&model, "what did you get?"))
        .send()
        .await;
    r.expect_status(200);
    let v = r.json();
    let content = v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default();
    let seen: Value = serde_json::from_str(content)
        .unwrap_or_else(|e| panic!("{}: echoed headers are not JSON ({e}): {content}", r.label));
    let seen = seen
        .as_object()
        .unwrap_or_else(|| panic!("{}: {content}", r.label));
    assert_eq!(
        seen.get("authorization").and_then(Value::as_str),
        Some("<the upstream key>"),
        "{}: the upstream did not get its own key: {content}",
        r.label
    );
    for (name, value) in seen {
        let value = value.as_str().unwrap_or_default();
        assert!(
            !value.contains(CLIENT_KEY),
            "{}: the client key reached the upstream in '{name}': {content}",
            r.label
        );
    }
    assert!(
        seen.get("cookie").is_none(),
        "{}: cookie forwarded: {content}",
        r.label
    );
    assert_eq!(
        seen.get("x-request-id").and_then(Value::as_str),
        Some("conformance-echo-1"),
        "{}: the request id is not forwarded: {content}",
        r.label
    );
    assert_eq!(
        seen.get("openai-beta").and_then(Value::as_str),
        Some("assistants=v2"),
        "{}: a provider header is not forwarded: {content}",
        r.label
    );
    for (name, value) in &r.headers {
        let value = String::from_utf8_lossy(value.as_bytes());
        assert!(
            !value.contains(UPSTREAM_KEY),
            "{}: header {name} leaks the upstream key",
            r.label
        );
    }
    assert!(
        !r.text().contains(UPSTREAM_KEY),
        "{}: body leaks the upstream key",
        r.label
    );
    ctx.expect_upstream_calls(&model, 1, "one request, one upstream call")
        .await;
}

/// Requests go out under the operator's key, so a client cannot pick which organisation or
/// project is billed, nor slip in other credentials: the upstream never sees those headers.
pub async fn auth_client_cannot_choose_the_billed_account(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-echo-headers", "auth_billing_headers");
    let r = ctx
        .post("/v1/chat/completions")
        .header("openai-organization", "org-client-chosen")
        .header("OpenAI-Project", "proj_client_chosen")
        .header("api-key", "client-azure-key")
        .header("x-api-key", "client-anthropic-key")
        .header("openai-beta", "assistants=v2")
        .json(&chat_body(&model, "who pays?"))
        .send()
        .await;
    r.expect_status(200);
    let content = r.json()["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for name in [
        "openai-organization",
        "openai-project",
        "api-key",
        "x-api-key",
    ] {
        assert!(
            !content.contains(&format!("\"{name}\"")),
            "{}: the upstream got '{name}': {content}",
            r.label
        );
    }
    assert!(
        content.contains("assistants=v2"),
        "{}: other provider headers still pass: {content}",
        r.label
    );
}
