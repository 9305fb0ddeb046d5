//! `GET /dashboard`: the page over plain HTTP (public, its CSP, nothing from another host), then
//! in headless Chromium (`tests/browser/dashboard.mjs`): real figures that change with traffic,
//! no request for another host, screenshots in `<repo>/target/dashboard/`.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use super::Ctx;

/// Under the case's own timeout, with room for a slow Chromium start on a busy machine.
const BROWSER_TIMEOUT: Duration = Duration::from_secs(110);

/// Node 22 from `node_modules` when installed there, else `node` on PATH.
fn node(ctx: &Ctx) -> PathBuf {
    let local = ctx.repo.join("node_modules/node/bin/node");
    if local.is_file() {
        local
    } else {
        PathBuf::from("node")
    }
}

pub async fn dashboard_page_is_public_html_with_a_hash_based_csp_and_no_other_host(ctx: Arc<Ctx>) {
    let r = ctx.get("/dashboard").no_auth().send().await;
    r.expect_status(200);
    let label = &r.label;
    let ct = r.header("content-type").unwrap_or_default();
    assert!(ct.starts_with("text/html"), "{label}: content-type {ct}");
    let csp = r.header("content-security-policy").unwrap_or_default();
    for d in [
        "default-src 'none'",
        "connect-src 'self'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "frame-ancestors 'none'",
    ] {
        assert!(csp.contains(d), "{label}: the CSP lacks {d}: {csp}");
    }
    assert!(!csp.contains("unsafe"), "{label}: {csp}");
    assert_eq!(
        r.header("x-content-type-options"),
        Some("nosniff"),
        "{label}"
    );

    let body = String::from_utf8_lossy(&r.body).to_ascii_lowercase();
    assert!(
        body.starts_with("<!doctype html>"),
        "{label}: not an HTML page"
    );
    // No absolute URL at all: every request the page can make is to its own origin.
    for scheme in ["http://", "https://", "//cdn", "src=", "@import", "url("] {
        assert!(
            !body.contains(scheme),
            "{label}: the page contains {scheme:?}"
        );
    }

    // A wrong key changes nothing: the page is public, the data behind it is not.
    let r = ctx.get("/dashboard").key("wrong-key").send().await;
    r.expect_status(200);
    ctx.get("/v1/gateway/summary")
        .no_auth()
        .send()
        .await
        .expect_status(401);
}

pub async fn dashboard_renders_changing_figures_in_headless_chromium(ctx: Arc<Ctx>) {
    let label = format!("[{}] dashboard in Chromium", ctx.target);
    let package = ctx.repo.join("node_modules/playwright-core/package.json");
    assert!(
        package.is_file(),
        "{label}: {} is missing; run the setup script (scripts/test installs the npm packages; or `npm install` in {})",
        package.display(),
        ctx.repo.display()
    );
    // Next to the repo's other build output whatever CARGO_TARGET_DIR says, so it is easy to find.
    let dir = ctx.repo.join("target/dashboard");
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("{label}: cannot create {}: {e}", dir.display()));
    let desktop = dir.join(format!("{}-desktop.png", ctx.target));
    let phone = dir.join(format!("{}-phone.png", ctx.target));
    let script = ctx.repo.join("tests/browser/dashboard.mjs");
    let node = node(&ctx);
    let mut cmd = tokio::process::Command::new(&node);
    cmd.arg(&script)
        .arg(&ctx.base)
        .arg(&desktop)
        .arg(&phone)
        // The key by env: it stays out of the process list.
        .env("DASHBOARD_KEY", &ctx.key)
        .env("DASHBOARD_MODEL", ctx.model("mock-model", "dashboard"))
        .current_dir(&ctx.repo)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(BROWSER_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{label}: {} did not finish within {BROWSER_TIMEOUT:?}",
                script.display()
            )
        })
        .unwrap_or_else(|e| panic!("{label}: cannot run {}: {e}", node.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let out: Value = stdout
        .lines()
        .rev()
        .find_map(|l| serde_json::from_str(l).ok())
        .unwrap_or_else(|| {
            panic!(
                "{label}: no JSON report ({}); stdout: {stdout}; stderr: {stderr}",
                output.status
            )
        });
    assert!(
        output.status.success() && out["ok"] == true,
        "{label}: {}; report: {out}; stderr: {stderr}",
        out["error"].as_str().unwrap_or("failed")
    );
    assert_eq!(
        out["external"],
        serde_json::json!([]),
        "{label}: requests to other hosts: {out}"
    );
    for png in [&desktop, &phone] {
        let size = std::fs::metadata(png).map(|m| m.len()).unwrap_or(0);
        assert!(
            size > 10_000,
            "{label}: {} is missing or empty",
            png.display()
        );
    }
    eprintln!(
        "{label}: {}; screenshots {} and {}",
        out["steps"],
        desktop.display(),
        phone.display()
    );
}
