//! The official OpenAI Node SDK against the gateway (`tests/sdk/openai_sdk.mjs`).

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Ctx;

const SDK_TIMEOUT: Duration = Duration::from_secs(90);

/// Node 22 from `node_modules` when installed there, else `node` on PATH.
fn node(ctx: &Ctx) -> PathBuf {
    let local = ctx.repo.join("node_modules/node/bin/node");
    if local.is_file() {
        local
    } else {
        PathBuf::from("node")
    }
}

pub async fn openai_sdk_plain_streamed_and_auth_error(ctx: Arc<Ctx>) {
    let label = format!("[{}] OpenAI SDK", ctx.target);
    let package = ctx.repo.join("node_modules/openai/package.json");
    assert!(
        package.is_file(),
        "{label}: {} is missing; run the setup script (scripts/test installs the npm packages; or `npm install` in {})",
        package.display(),
        ctx.repo.display()
    );
    let script = ctx.repo.join("tests/sdk/openai_sdk.mjs");
    let model = ctx.model("mock-model", "openai_sdk");
    let node = node(&ctx);
    let mut cmd = tokio::process::Command::new(&node);
    cmd.arg(&script)
        .arg(format!("{}/v1", ctx.base))
        .arg(&ctx.key)
        .arg(&model)
        .current_dir(&ctx.repo)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(SDK_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{label}: {} did not finish within {SDK_TIMEOUT:?}",
                script.display()
            )
        })
        .unwrap_or_else(|e| panic!("{label}: cannot run {}: {e}", node.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "{label}: no JSON output ({}); stdout: {stdout}; stderr: {stderr}",
                output.status
            )
        });
    let out: Value = serde_json::from_str(line)
        .unwrap_or_else(|e| panic!("{label}: output is not JSON ({e}): {line}; stderr: {stderr}"));
    assert!(
        output.status.success(),
        "{label}: exit {}: {out}; stderr: {stderr}",
        output.status
    );

    let plain = &out["plain"];
    assert_eq!(plain["object"], "chat.completion", "{label}: {out}");
    let content = plain["content"].as_str().unwrap_or_default();
    assert!(!content.is_empty(), "{label}: empty plain content: {out}");
    assert!(
        plain["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{label}: {out}"
    );
    assert!(
        plain["requestId"].as_str().is_some_and(|s| !s.is_empty()),
        "{label}: {out}"
    );

    let stream = &out["stream"];
    assert!(
        stream["chunks"].as_u64().is_some_and(|n| n >= 3),
        "{label}: {out}"
    );
    assert_eq!(
        stream["objects"],
        serde_json::json!(["chat.completion.chunk"]),
        "{label}: {out}"
    );
    assert_eq!(
        stream["content"], content,
        "{label}: streamed and plain answers differ: {out}"
    );
    assert!(
        stream["usage"]["total_tokens"]
            .as_u64()
            .is_some_and(|n| n > 0),
        "{label}: no usage chunk: {out}"
    );

    let wrong = &out["wrongKey"];
    assert_eq!(wrong["isAuthenticationError"], true, "{label}: {out}");
    assert_eq!(wrong["status"], 401, "{label}: {out}");
    assert_eq!(wrong["code"], "invalid_api_key", "{label}: {out}");

    ctx.expect_upstream_calls(&model, 2, "the plain and the streamed call")
        .await;
}
