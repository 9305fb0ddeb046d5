//! `/health`: unauthenticated, names the version and the region.

use std::sync::Arc;

use hyper::Method;

use super::Ctx;
use crate::expect;
use crate::harness::REGION;

pub async fn health_reports_status_version_and_region(ctx: Arc<Ctx>) {
    let r = ctx.get("/health").no_auth().send().await;
    r.expect_status(200);
    expect::json_content_type(&r.label, r.header("content-type"));
    let v = r.json();
    assert_eq!(v["status"], "ok", "{}: {v}", r.label);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{}: {v}", r.label);
    assert_eq!(v["region"], REGION, "{}: {v}", r.label);
    assert!(
        v["runtime"].as_str().is_some_and(|s| !s.is_empty()),
        "{}: runtime missing: {v}",
        r.label
    );
}

pub async fn health_head_request_is_answered_without_body(ctx: Arc<Ctx>) {
    let r = ctx.call(Method::HEAD, "/health").no_auth().send().await;
    r.expect_status(200);
    assert!(r.body.is_empty(), "{}: HEAD answered with a body", r.label);
    // The gateway is still there.
    ctx.get("/health").no_auth().send().await.expect_status(200);
}
