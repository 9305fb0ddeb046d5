//! Malformed traffic must not take the gateway down.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::Ctx;
use crate::raw::{self, NoResponse};

const RAW_TIMEOUT: Duration = Duration::from_secs(15);

/// Which answers a piece of junk may get besides a closed connection.
#[derive(Clone, Copy)]
enum Allowed {
    /// Only a 4xx: the request is not HTTP at all.
    ClientError,
    /// A 4xx, or the request's own answer (a gateway may accept big heads): never a 5xx.
    ClientErrorOrOk,
}

/// Sends `pieces` on a fresh connection and half-closes it; the answer must be allowed (or the
/// connection closed) and come without hanging; then the gateway must still answer `/health`.
async fn send_junk(ctx: &Ctx, what: &str, pieces: Vec<Bytes>, allowed: Allowed) {
    match raw::exchange(ctx.addr, pieces, true, RAW_TIMEOUT).await {
        Ok(r) => {
            let ok = match allowed {
                Allowed::ClientError => (400..500).contains(&r.status),
                Allowed::ClientErrorOrOk => (400..500).contains(&r.status) || r.status == 200,
            };
            assert!(
                ok,
                "[{}] {what}: answered {}: {}",
                ctx.target,
                r.status,
                r.text()
            );
        }
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
        Allowed::ClientError,
    )
    .await;
    send_junk(
        &ctx,
        "a TLS client hello",
        vec![Bytes::from_static(
            b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\x00\x01\x02\x03\r\n\r\n",
        )],
        Allowed::ClientError,
    )
    .await;
}

pub async fn huge_header_does_not_kill_gateway(ctx: Arc<Ctx>) {
    let huge = format!("x-huge: {}", "a".repeat(1024 * 1024));
    let head = raw::head("GET", "/health", &ctx.addr, &[huge]);
    send_junk(
        &ctx,
        "a 1 MiB header",
        vec![Bytes::from(head)],
        Allowed::ClientErrorOrOk,
    )
    .await;
    let many: Vec<String> = (0..2000).map(|i| format!("x-many-{i}: {i}")).collect();
    let head = raw::head("GET", "/health", &ctx.addr, &many);
    send_junk(
        &ctx,
        "2000 headers",
        vec![Bytes::from(head)],
        Allowed::ClientErrorOrOk,
    )
    .await;
}

/// Headers past the gateway's limits (200 fields, 64 KiB) are refused by the core with a 431 in
/// the OpenAI shape, on both runtimes, not with a server's bare status.
pub async fn oversized_headers_are_refused_with_an_openai_shaped_431(ctx: Arc<Ctx>) {
    let auth = format!("authorization: Bearer {}", ctx.key);
    let mut many: Vec<String> = (0..230).map(|i| format!("x-many-{i}: {i}")).collect();
    many.push(auth.clone());
    let big = vec![auth, format!("x-big: {}", "a".repeat(70 * 1024))];
    for (what, lines) in [("230 header fields", many), ("a 70 KiB header", big)] {
        let head = raw::head("GET", "/v1/models", &ctx.addr, &lines);
        // Not half-closed: a server may take a closed read side for a client that left.
        let r = raw::exchange(ctx.addr, vec![Bytes::from(head)], false, RAW_TIMEOUT)
            .await
            .unwrap_or_else(|e| panic!("[{}] {what}: {e}", ctx.target));
        assert_eq!(r.status, 431, "[{}] {what}: {}", ctx.target, r.text());
        let v = r.json();
        assert_eq!(
            v["error"]["code"], "request_headers_too_large",
            "[{}] {what}: {v}",
            ctx.target
        );
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert!(v["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("200 fields and 65536 bytes")));
    }
}
