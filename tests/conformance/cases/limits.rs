//! Content types, body size and body time limits.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use super::{chat_body, Ctx};
use crate::expect;
use crate::harness::{CLIENT_KEY, MAX_BODY_BYTES};
use crate::raw::{self, NoResponse, RawResponse};

async fn post_with_content_type(
    ctx: &Ctx,
    model: &str,
    content_type: Option<&str>,
) -> crate::client::Resp {
    let mut call = ctx.post("/v1/chat/completions");
    if let Some(ct) = content_type {
        call = call.header("content-type", ct);
    }
    let body = serde_json::to_vec(&chat_body(model, "typed")).expect("serialisable");
    call.body(body).send().await
}

pub async fn content_type_text_plain_is_415(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "ct_text_plain");
    let r = post_with_content_type(&ctx, &model, Some("text/plain")).await;
    expect::error(&r, 415, "unsupported_media_type");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn content_type_multipart_is_415(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "ct_multipart");
    let r = post_with_content_type(&ctx, &model, Some("multipart/form-data; boundary=xyz")).await;
    expect::error(&r, 415, "unsupported_media_type");
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn content_type_missing_is_read_as_json(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "ct_missing");
    let r = post_with_content_type(&ctx, &model, None).await;
    r.expect_status(200);
    ctx.expect_upstream_calls(&model, 1, "forwarded").await;
}

/// What `curl -d` sends.
pub async fn content_type_form_urlencoded_is_read_as_json(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "ct_form");
    let r = post_with_content_type(&ctx, &model, Some("application/x-www-form-urlencoded")).await;
    r.expect_status(200);
    ctx.expect_upstream_calls(&model, 1, "forwarded").await;
}

/// A valid chat request of more than `MAX_BODY_BYTES`.
fn oversized_body(model: &str) -> Vec<u8> {
    let filler = "a".repeat(MAX_BODY_BYTES + 1024);
    serde_json::to_vec(&json!({"model": model, "messages": [{"role": "user", "content": filler}]}))
        .expect("serialisable")
}

const RAW_TIMEOUT: Duration = Duration::from_secs(15);

fn expect_raw_error(
    ctx: &Ctx,
    what: &str,
    result: Result<RawResponse, NoResponse>,
    status: u16,
    code: &str,
) -> RawResponse {
    let r = result.unwrap_or_else(|e| panic!("[{}] {what}: {e}", ctx.target));
    let label = format!("[{}] {what}", ctx.target);
    assert_eq!(
        r.status,
        status,
        "{label}: expected {status}, got {}: {}",
        r.status,
        r.text()
    );
    expect::json_content_type(&label, r.header("content-type"));
    let v = r.json();
    let e = expect::openai_error_shape(&label, &v);
    assert_eq!(e["code"], code, "{label}: {v}");
    r
}

pub async fn body_over_limit_with_content_length_is_413(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "too_large_length");
    let body = oversized_body(&model);
    let head = raw::head(
        "POST",
        "/v1/chat/completions",
        &ctx.addr,
        &[
            format!("authorization: Bearer {CLIENT_KEY}"),
            "content-type: application/json".into(),
            format!("content-length: {}", body.len()),
        ],
    );
    let pieces = vec![Bytes::from(head), Bytes::from(body)];
    let result = raw::exchange(ctx.addr, pieces, false, RAW_TIMEOUT).await;
    expect_raw_error(
        &ctx,
        "POST with content-length over the limit",
        result,
        413,
        "request_too_large",
    );
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

pub async fn body_over_limit_chunked_is_413(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "too_large_chunked");
    let body = oversized_body(&model);
    let head = raw::head(
        "POST",
        "/v1/chat/completions",
        &ctx.addr,
        &[
            format!("authorization: Bearer {CLIENT_KEY}"),
            "content-type: application/json".into(),
            "transfer-encoding: chunked".into(),
        ],
    );
    let mut pieces = vec![Bytes::from(head)];
    pieces.extend(raw::chunked(&body, 16 * 1024, true));
    let result = raw::exchange(ctx.addr, pieces, false, RAW_TIMEOUT).await;
    expect_raw_error(
        &ctx,
        "chunked POST over the limit",
        result,
        413,
        "request_too_large",
    );
    ctx.expect_upstream_calls(&model, 0, "rejected before forwarding")
        .await;
}

/// Declares 100 bytes, sends 10, then waits: the gateway's body timeout is 2 s (1 s proved too
/// tight for a 256 KiB chunked body on a loaded 2-core machine).
pub async fn body_sent_too_slowly_is_408(ctx: Arc<Ctx>) {
    let head = raw::head(
        "POST",
        "/v1/chat/completions",
        &ctx.addr,
        &[
            format!("authorization: Bearer {CLIENT_KEY}"),
            "content-type: application/json".into(),
            "content-length: 100".into(),
        ],
    );
    let mut first = head.into_bytes();
    first.extend_from_slice(br#"{"model":""#); // 10 of the 100 bytes
    let pieces = vec![Bytes::from(first)];
    let result = raw::exchange(ctx.addr, pieces, false, Duration::from_secs(5)).await;
    let r = expect_raw_error(
        &ctx,
        "POST with a body that never completes",
        result,
        408,
        "request_timeout",
    );
    assert!(
        r.elapsed <= Duration::from_millis(4500),
        "[{}] 408 came after {:?}; the body timeout is 2 s",
        ctx.target,
        r.elapsed
    );
}

/// A client that writes its whole body before reading (Python's `http.client`, and so the
/// OpenAI Python SDK) still reads the 413: the gateway answers from `content-length`, then reads
/// and discards the body instead of closing on it (which would break the client's write).
pub async fn body_over_limit_is_answered_even_to_a_client_that_writes_it_all_first(ctx: Arc<Ctx>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SIZE: usize = 20 * 1024 * 1024;
    let head = raw::head(
        "POST",
        "/v1/chat/completions",
        &ctx.addr,
        &[
            format!("authorization: Bearer {CLIENT_KEY}"),
            "content-type: application/json".into(),
            format!("content-length: {SIZE}"),
        ],
    );
    let mut s = tokio::net::TcpStream::connect(ctx.addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let write = async {
        s.write_all(head.as_bytes()).await?;
        let chunk = vec![b' '; 64 * 1024];
        for _ in 0..SIZE / chunk.len() {
            s.write_all(&chunk).await?;
        }
        s.flush().await
    };
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .unwrap_or_else(|_| panic!("[{}] writing 20 MiB took over 30 s", ctx.target))
        .unwrap_or_else(|e| {
            panic!(
                "[{}] the gateway broke the connection while the client wrote: {e}",
                ctx.target
            )
        });
    let mut got = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while !String::from_utf8_lossy(&got).contains("request_too_large") {
        match tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => got.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(
        text.starts_with("HTTP/1.1 413") && text.contains("request_too_large"),
        "[{}] no 413 after the whole body: {text:?}",
        ctx.target
    );
}
