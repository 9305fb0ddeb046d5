//! Malformed traffic must not take the gateway down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Ctx;
use crate::raw::{self, NoResponse};

const RAW_TIMEOUT: Duration = Duration::from_secs(15);

/// Sends `bytes` on a fresh connection; if the gateway answers, the answer must be a 4xx (it is
/// the client's fault); closing the connection is also fine. It must not hang.
async fn send_junk(ctx: &Ctx, what: &str, pieces: Vec<Bytes>) {
    match raw::exchange(ctx.addr, pieces, true, RAW_TIMEOUT).await {
        Ok(r) => assert!(
            (400..500).contains(&r.status),
            "[{}] {what}: answered {} (expected a 4xx): {}",
            ctx.target,
            r.status,
            r.text()
        ),
        Err(NoResponse::Closed { .. }) => {}
        Err(e) => panic!("[{}] {what}: {e}", ctx.target),
    }
    let r = ctx.get("/health").no_auth().send().await;
    assert_eq!(
        r.status,
        200,
        "[{}] /health after {what}: {}",
        ctx.target,
        r.text()
    );
}

pub async fn garbage_request_line_does_not_kill_gateway(ctx: Arc<Ctx>) {
    send_junk(
        &ctx,
        "a garbage request line",
        vec![Bytes::from_static(b"THIS IS NOT HTTP AT ALL\r\n\r\n")],
    )
    .await;
    send_junk(
        &ctx,
        "a TLS client hello",
        vec![Bytes::from_static(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x01\x02\x03\r\n\r\n",
        )],
    )
    .await;
}

pub async fn huge_header_does_not_kill_gateway(ctx: Arc<Ctx>) {
    let huge = format!("x-huge: {}", "a".repeat(1024 * 1024));
    let head = raw::head("GET", "/health", &ctx.addr, &[huge]);
    send_junk(&ctx, "a 1 MiB header", vec![Bytes::from(head)]).await;
    let many: Vec<String> = (0..2000).map(|i| format!("x-many-{i}: {i}")).collect();
    let head = raw::head("GET", "/health", &ctx.addr, &many);
    send_junk(&ctx, "2000 headers", vec![Bytes::from(head)]).await;
}
