//! A key's limits shared by instances: two fly-fallback machines on one redis-server
//! (`REDIS_URL`), and two `wrangler dev` Workers whose `LIMITER` Durable Object binding is the
//! class one of them serves (through wrangler's local dev registry), each enforce one `rpm`,
//! whichever instance a request reaches.

use std::net::TcpStream;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;

use super::Ctx;
use crate::expect;
use crate::harness::{self, Processes};

/// The client key of the case's `keys` entry (its `key_sha256` is computed with the core's
/// function, as `fly-fallback hash-key` prints it).
const KEY: &str = "limits-shared-client-key";
const RPM: u64 = 5;
const REMAINING_REQUESTS: &str = "x-ratelimit-remaining-requests";
const LIMIT_REQUESTS: &str = "x-ratelimit-limit-requests";

/// A redis-server on a free loopback port, stopped with `procs`.
fn start_redis(procs: &mut Processes, name: &str) -> Result<u16, String> {
    let port = harness::free_port()?;
    let mut cmd = Command::new("redis-server");
    cmd.args(["--port", &port.to_string()])
        .args(["--bind", "127.0.0.1"])
        .args(["--save", ""])
        .args(["--appendonly", "no"]);
    procs.spawn(name, cmd, false).map_err(|e| {
        format!("{e}: the Redis cases need redis-server (Debian: apt-get install -y redis-server)")
    })?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            return Err(format!("redis-server did not listen on {port} within 10s"));
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(port)
}

/// A fly-fallback on the suite's mock whose only client key is [`KEY`] with `rpm: 5`, its
/// limits counted in the Redis at `redis_url`; returns its base URL.
async fn start_fly(
    procs: &mut Processes,
    ctx: &Ctx,
    name: &str,
    redis_url: &str,
) -> Result<String, String> {
    let config = json!({
        "keys": [{
            "id": "limits-shared",
            "key_sha256": gateway_core::auth::sha256_hex(KEY),
            "rpm": RPM,
        }],
    });
    let settings: Vec<(&str, String)> = vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        ("GATEWAY_CONFIG", config.to_string()),
        ("REDIS_URL", redis_url.to_string()),
    ];
    let port = harness::free_port()?;
    let bin = harness::find_binary("fly-fallback")?;
    let started = procs.spawn(name, harness::fly_command(&bin, port, &settings), false)?;
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(30)).await?;
    Ok(base)
}

/// Waits for the next UTC minute when less than `needed` is left of this one (a window is a
/// fixed minute: every request of the case must fall in one).
async fn fresh_window(needed: Duration) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    let into = Duration::from_millis((now.as_millis() % 60_000) as u64);
    let left = Duration::from_secs(60) - into;
    if left < needed {
        tokio::time::sleep(left + Duration::from_millis(300)).await;
    }
}

/// The case's key with `rpm: 5`.
fn limited_config() -> String {
    json!({
        "keys": [{
            "id": "limits-shared",
            "key_sha256": gateway_core::auth::sha256_hex(KEY),
            "rpm": RPM,
        }],
    })
    .to_string()
}

/// Nine requests alternating between `a` and `b`: the first 5 succeed with
/// `x-ratelimit-remaining-requests` counting down 4..0 across both, every later one is 429.
async fn alternate(ctx: &Ctx, a: &str, b: &str, model: &str) {
    for i in 0..9u64 {
        let machine = if i % 2 == 0 { a } else { b };
        let r = super::chat_at(ctx, machine, KEY)
            .json(&super::chat_body(model, &format!("request {i}")))
            .send()
            .await;
        let remaining = r
            .header(REMAINING_REQUESTS)
            .unwrap_or_else(|| panic!("{}: no {REMAINING_REQUESTS}", r.label));
        assert_eq!(
            r.header(LIMIT_REQUESTS),
            Some(RPM.to_string().as_str()),
            "{}: {LIMIT_REQUESTS}",
            r.label
        );
        if i < RPM {
            r.expect_status(200);
            assert_eq!(
                remaining,
                (RPM - 1 - i).to_string(),
                "{}: request {} of the shared window (instance {})",
                r.label,
                i + 1,
                if i % 2 == 0 { "A" } else { "B" }
            );
        } else {
            let e = expect::error(&r, 429, "rate_limit_exceeded");
            assert_eq!(e["type"], "requests", "{}: {}", r.label, r.text());
            assert_eq!(remaining, "0", "{}: {REMAINING_REQUESTS}", r.label);
            let retry: u64 = r
                .header("retry-after")
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or_else(|| panic!("{}: no numeric retry-after", r.label));
            assert!(
                (1..=60).contains(&retry),
                "{}: retry-after {retry}",
                r.label
            );
        }
    }
}

/// A `wrangler dev` of the Worker bundle with `config` (a toml under tests/conformance/), the
/// case's key, and the dev registry at `registry`; returns its base URL once healthy.
async fn start_worker(
    procs: &mut Processes,
    ctx: &Ctx,
    name: &str,
    config: &str,
    registry: &std::path::Path,
) -> Result<String, String> {
    let settings: Vec<(&str, String)> = vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        ("GATEWAY_CONFIG", limited_config()),
    ];
    let port = harness::free_port()?;
    let inspector = harness::free_port()?;
    let mut cmd = harness::worker_command(&ctx.repo, port, inspector, &settings);
    cmd.arg("--config")
        .arg(ctx.repo.join("tests/conformance").join(config))
        .arg("--persist-to")
        .arg(harness::log_dir().join(format!("{name}-state")))
        .env("WRANGLER_REGISTRY_PATH", registry);
    let started = procs.spawn(name, cmd, true)?;
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(120)).await?;
    Ok(base)
}

/// Two `wrangler dev` Workers, B's `LIMITER` binding naming the class A serves (one dev
/// registry of their own): `rpm: 5` holds across both, as on the edge where every isolate and
/// location reaches the key's one Durable Object.
pub async fn limits_shared_rpm_holds_across_workers_through_one_durable_object(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let registry = harness::log_dir().join("limits-shared-registry");
    let _ = std::fs::remove_dir_all(&registry);
    std::fs::create_dir_all(&registry).unwrap_or_else(|e| panic!("{e}"));
    let a = start_worker(
        &mut procs,
        &ctx,
        "limits-shared-worker-a",
        "wrangler-limits-a.toml",
        &registry,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    let b = start_worker(
        &mut procs,
        &ctx,
        "limits-shared-worker-b",
        "wrangler-limits-b.toml",
        &registry,
    )
    .await
    .unwrap_or_else(|e| panic!("{e}"));
    // B reaches A's objects once the registry has connected them: until then its key endpoint
    // answers 503 (the limiter cannot be reached).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r = crate::client::Call::new(
            ctx.http.clone(),
            &b,
            &ctx.target,
            hyper::Method::GET,
            "/v1/gateway/key",
            KEY,
        )
        .send()
        .await;
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "worker B never reached worker A's Durable Object"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let model = ctx.model("mock-model", "limits_shared_do");
    fresh_window(Duration::from_secs(20)).await;
    alternate(&ctx, &a, &b, &model).await;
    ctx.expect_upstream_calls(&model, RPM, "one rpm for both Workers")
        .await;
    drop(procs);
}

/// `rpm: 5` on two machines sharing one Redis, requests alternating between them: the first 5
/// succeed with `x-ratelimit-remaining-requests` counting down 4..0 across the machines, every
/// later one is 429 `rate_limit_exceeded` of type `requests` with a `retry-after` and
/// `x-ratelimit-remaining-requests: 0`, and the upstream saw exactly 5 calls.
pub async fn limits_shared_rpm_holds_across_fly_machines_through_redis(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let port = start_redis(&mut procs, "limits-shared-redis").unwrap_or_else(|e| panic!("{e}"));
    let url = format!("redis://127.0.0.1:{port}/");
    let a = start_fly(&mut procs, &ctx, "limits-shared-fly-a", &url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let b = start_fly(&mut procs, &ctx, "limits-shared-fly-b", &url)
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let model = ctx.model("mock-model", "limits_shared");

    fresh_window(Duration::from_secs(15)).await;
    alternate(&ctx, &a, &b, &model).await;
    ctx.expect_upstream_calls(&model, RPM, "one rpm for both machines")
        .await;
    drop(procs);
}
