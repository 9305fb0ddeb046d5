//! `fly-fallback probe`, run as an operator would, against a local gateway (`fly-fallback`)
//! routing to two mock upstreams in different regions:
//!
//! | upstream | region | mock `--delay-ms` (before every answer) |
//! |----------|--------|-----------------------------------------|
//! | `eu-1`   | `eu`   | 30                                      |
//! | `us-1`   | `us`   | 90                                      |
//!
//! and two models the mock knows: `mock-slow-100ms` (100 ms more before the response head) and
//! `mock-stream-4x40ms` (streamed: 4 content events 40 ms apart; plain: an immediate answer).
//! The mock needs no model to be configured. Only lower bounds are asserted: the machine may be
//! loaded, so a call can take any time longer than the mocks' delays, never less.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const CLIENT_KEY: &str = "probe-test-key";
const EU_DELAY_MS: f64 = 30.0;
const US_DELAY_MS: f64 = 90.0;
const SLOW: &str = "mock-slow-100ms";
const STREAM: &str = "mock-stream-4x40ms";

/// The children of a test, killed when it ends (passed or not).
struct Procs(Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The workspace's binaries are built next to this one.
fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_fly-fallback"))
        .parent()
        .expect("the binary has a directory")
        .to_path_buf()
}

/// The mock upstream's binary; built here when `cargo test -p fly-fallback` did not build it
/// (it is another package of the workspace).
fn mock_binary() -> PathBuf {
    let path = bin_dir().join("mock-upstream");
    if !path.is_file() {
        let status = Command::new(env!("CARGO"))
            .args(["build", "-q", "-p", "mock-upstream", "--manifest-path"])
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml"))
            .status()
            .expect("cargo runs");
        assert!(status.success(), "cargo build -p mock-upstream failed");
    }
    assert!(path.is_file(), "{} was not built", path.display());
    path
}

/// A port nothing listened on a moment ago, below the kernel's range for outgoing
/// connections (as the conformance harness picks them): an ephemeral port could be taken by
/// some process's outgoing connection before the child binds it.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let ephemeral_low: u32 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(32_768);
    let (low, high) = (20_000u32, ephemeral_low.clamp(20_500, 32_768));
    let span = high - low;
    let seed = std::process::id().wrapping_mul(2_654_435_761) % span;
    for _ in 0..span {
        let port = (low + (seed + NEXT.fetch_add(1, Ordering::Relaxed)) % span) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port between {low} and {high}");
}

fn wait_listening(port: u16, child: &mut Child, what: &str) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let deadline = Instant::now() + Duration::from_secs(60);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited ({status}) before listening on {port}");
        }
        assert!(Instant::now() < deadline, "{what} did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn spawn(mut cmd: Command, port: u16, what: &str, procs: &mut Procs) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    wait_listening(port, &mut child, what);
    procs.0.push(child);
}

/// Two mocks and a gateway over them; returns the gateway's URL.
fn start() -> (Procs, String) {
    let mut procs = Procs(Vec::new());
    let mock = mock_binary();
    let mut upstreams = Vec::new();
    for (name, region, key, delay) in [
        ("eu-1", "eu", "k-eu", EU_DELAY_MS),
        ("us-1", "us", "k-us", US_DELAY_MS),
    ] {
        let port = free_port();
        let mut cmd = Command::new(&mock);
        cmd.args(["--port", &port.to_string(), "--api-key", key])
            .args(["--name", name, "--delay-ms", &format!("{delay}")]);
        spawn(cmd, port, name, &mut procs);
        upstreams.push(format!(
            r#"{{"name":"{name}","region":"{region}","base_url":"http://127.0.0.1:{port}/v1","api_key_secret":"KEY_{}"}}"#,
            region.to_uppercase()
        ));
    }
    // Probes off: the mocks' delays would only slow them, and they count no calls here.
    let config = format!(
        r#"{{"upstreams":[{}],"routing":{{"health":{{"interval_secs":0}}}}}}"#,
        upstreams.join(",")
    );
    let port = free_port();
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fly-fallback"));
    cmd.env_clear()
        .env("GATEWAY_CONFIG", config)
        .env("KEY_EU", "k-eu")
        .env("KEY_US", "k-us")
        .env("GATEWAY_API_KEYS", CLIENT_KEY)
        .env("PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("METRICS_PORT", "off")
        .env("FLY_REGION", "test")
        .env("SHUTDOWN_GRACE_SECS", "1");
    spawn(cmd, port, "fly-fallback", &mut procs);
    (procs, format!("http://127.0.0.1:{port}"))
}

fn probe(args: &[&str], key: Option<&str>) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fly-fallback"));
    c.arg("probe")
        .args(args)
        .env_remove("GATEWAY_KEY")
        .env_remove("COST_REPORT_FONT")
        .stdin(Stdio::null());
    if let Some(k) = key {
        c.env("GATEWAY_KEY", k);
    }
    c.output().expect("the binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn png_size(bytes: &[u8]) -> (u32, u32) {
    assert!(bytes.len() > 24, "too short for a PNG");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "PNG signature");
    assert_eq!(&bytes[12..16], b"IHDR", "first chunk");
    let be = |b: &[u8]| u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (be(&bytes[16..20]), be(&bytes[20..24]))
}

/// The lower bounds of a row's times: (ttft, total), from the mocks' delays.
fn bounds(model: &str, region: &str, mode: &str) -> (f64, f64) {
    let delay = if region == "eu" {
        EU_DELAY_MS
    } else {
        US_DELAY_MS
    };
    match (model, mode) {
        (SLOW, _) => (delay + 100.0, delay + 100.0),
        // The first event comes at once, the 3 others 40 ms apart.
        (STREAM, "stream") => (delay, delay + 120.0),
        _ => (delay, delay),
    }
}

const ROWS: [(&str, &str, &str); 8] = [
    (SLOW, "eu", "plain"),
    (SLOW, "eu", "stream"),
    (SLOW, "us", "plain"),
    (SLOW, "us", "stream"),
    (STREAM, "eu", "plain"),
    (STREAM, "eu", "stream"),
    (STREAM, "us", "plain"),
    (STREAM, "us", "stream"),
];

fn upstream_of(region: &str) -> &'static str {
    if region == "eu" {
        "eu-1"
    } else {
        "us-1"
    }
}

#[test]
fn probes_two_models_in_two_regions_plain_and_streamed() {
    let (_procs, url) = start();
    let models = format!("{SLOW},{STREAM}");

    // The table.
    let o = probe(
        &[
            "--url", &url, "--model", &models, "--region", "eu", "--region", "us", "-n", "3",
        ],
        Some(CLIENT_KEY),
    );
    let text = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{text}\n{}", stderr(&o));
    // Shown with `--nocapture`: what an operator sees.
    eprintln!("{text}");
    assert!(
        text.starts_with(&format!("LATENCY PROBE: {url} (fly-fallback")),
        "{text}"
    );
    assert!(
        text.contains("upstreams: eu-1 (region eu, healthy), us-1 (region us, healthy)"),
        "{text}"
    );
    assert!(text.contains("24 calls, 3 per row"), "{text}");
    assert!(!text.contains("ERRORS"), "{text}");
    for (model, region, mode) in ROWS {
        let cells: Vec<&str> = text
            .lines()
            .map(|l| l.split_whitespace().collect::<Vec<_>>())
            .find(|c| c.len() >= 14 && c[0] == model && c[1] == region && c[2] == mode)
            .unwrap_or_else(|| panic!("no row for {model} {region} {mode}:\n{text}"));
        assert_eq!((cells[3], cells[4]), ("3", "0"), "ok, errors:\n{text}");
        let n: Vec<f64> = cells[5..13]
            .iter()
            .map(|c| c.parse().expect("a figure"))
            .collect();
        let (ttft_min, total_min) = bounds(model, region, mode);
        // p50, p90, min, max of ttft, then of total.
        assert!(n[2] >= ttft_min, "{model} {region} {mode} ttft {n:?}");
        assert!(n[6] >= total_min, "{model} {region} {mode} total {n:?}");
        assert!(n[2] <= n[0] && n[0] <= n[1] && n[1] <= n[3], "{n:?}");
        assert!(n[6] <= n[4] && n[4] <= n[5] && n[5] <= n[7], "{n:?}");
        assert!(n[2] <= n[6], "ttft min after total min: {n:?}");
        assert_eq!(
            cells[13..].join(" "),
            format!("{} ({region})", upstream_of(region)),
            "served by:\n{text}"
        );
    }

    // The same as JSON, with the chart.
    let chart = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-test.png");
    let _ = std::fs::remove_file(&chart);
    let o = probe(
        &[
            "--url",
            &format!("{url}/v1/"),
            "--model",
            SLOW,
            "--model",
            STREAM,
            "--region=eu,us",
            "-n",
            "3",
            "--mode",
            "both",
            "--json",
            "--chart",
            chart.to_str().expect("utf-8"),
        ],
        Some(CLIENT_KEY),
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: Value = serde_json::from_slice(&o.stdout).expect("stdout is one JSON document");
    assert_eq!(v["gateway"]["url"], url.as_str());
    assert_eq!(v["gateway"]["runtime"], "fly-fallback");
    assert_eq!(v["gateway"]["region"], "test");
    assert_eq!(v["calls"], 24);
    assert_eq!(v["calls_planned"], 24);
    assert_eq!(v["interrupted"], false);
    assert_eq!(v["settings"]["calls_per_row"], 3);
    let rows = v["rows"].as_array().expect("rows");
    assert_eq!(rows.len(), 8);
    for ((model, region, mode), row) in ROWS.iter().zip(rows) {
        assert_eq!(
            (&row["model"], &row["region"], &row["mode"]),
            (
                &Value::from(*model),
                &Value::from(*region),
                &Value::from(*mode)
            )
        );
        assert_eq!(
            (&row["ok"], &row["errors"]),
            (&Value::from(3), &Value::from(0))
        );
        let (ttft_min, total_min) = bounds(model, region, mode);
        let f = |k: &str, s: &str| row[k][s].as_f64().expect("a figure");
        assert!(f("ttft_ms", "min") >= ttft_min, "{row}");
        assert!(f("total_ms", "min") >= total_min, "{row}");
        assert!(f("ttft_ms", "mean") <= f("ttft_ms", "max"), "{row}");
        assert_eq!(row["served_by"][0]["upstream"], upstream_of(region));
        assert_eq!(row["served_by"][0]["region"], *region);
        assert_eq!(row["served_by"][0]["calls"], 3);
        assert_eq!(row["off_pin"], 0);
        assert_eq!(row["cache_hits"], 0);
        let samples = row["samples"].as_array().expect("samples");
        assert_eq!(samples.len(), 3);
        for s in samples {
            assert_eq!(s["status"], 200);
            // The cache was bypassed, not read.
            assert_eq!(s["cache"], "BYPASS", "{s}");
            assert!(s["upstream_ms"].as_f64().is_some(), "server-timing: {s}");
        }
    }
    let bytes = std::fs::read(&chart).expect("the chart was written");
    // 8 rows: 84 (title) + 8 × 64 + 50 (axis) + 40 (legend) + 8.
    assert_eq!(png_size(&bytes), (1200, 84 + 8 * 64 + 50 + 40 + 8));
    assert!(
        bytes.len() > 10_000,
        "a chart with content: {} bytes",
        bytes.len()
    );
    assert!(stderr(&o).contains("chart written to"), "{}", stderr(&o));
}

#[test]
fn failures_are_counted_and_reported_by_kind() {
    let (_procs, url) = start();
    let key_file = Path::new(env!("CARGO_TARGET_TMPDIR")).join("probe-test-key");
    std::fs::write(&key_file, format!("{CLIENT_KEY}\n")).expect("write the key file");
    let o = probe(
        &[
            "--url",
            &url,
            "--model",
            "mock-error-400,gpt-4o",
            "--region",
            "nowhere",
            "-n",
            "2",
            "--mode",
            "stream",
            "--key-file",
            key_file.to_str().expect("utf-8"),
        ],
        None,
    );
    let text = stdout(&o);
    // Some calls failed: 3.
    assert_eq!(o.status.code(), Some(3), "{text}\n{}", stderr(&o));
    assert!(
        stderr(&o).contains("--region nowhere names no upstream"),
        "{}",
        stderr(&o)
    );
    let line = |model: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(model))
            .unwrap_or_else(|| panic!("no row for {model}:\n{text}"))
            .split_whitespace()
            .collect::<Vec<_>>()
    };
    let failed = line("mock-error-400");
    assert_eq!((failed[3], failed[4], failed[5]), ("0", "2", "-"), "{text}");
    let fine = line("gpt-4o");
    assert_eq!((fine[3], fine[4]), ("2", "0"), "{text}");
    // An unknown pin: the gateway's own choice, marked.
    assert_eq!(fine.last(), Some(&"!"), "{text}");
    assert!(
        text.contains("ERRORS\n  mock-error-400 @ nowhere (stream): 2 × http_400: mock_400: Mock upstream error 400"),
        "{text}"
    );
}

#[test]
fn a_wrong_key_is_refused_before_any_call() {
    let (_procs, url) = start();
    let o = probe(&["--url", &url, "--model", SLOW], Some("not-the-key"));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains("the gateway refused the client key (HTTP 401, invalid_api_key"),
        "{err}"
    );
    assert!(err.contains("GATEWAY_KEY"), "{err}");
    assert!(
        !err.contains("not-the-key"),
        "the key is never echoed: {err}"
    );
}

#[test]
fn an_unreachable_gateway_is_a_clear_error() {
    let url = format!("http://127.0.0.1:{}", free_port());
    let o = probe(&["--url", &url, "--model", "m", "--json"], Some(CLIENT_KEY));
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "{}", stdout(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!(
            "cannot reach the gateway at {url}/health: connection refused"
        )),
        "{err}"
    );
}

#[test]
fn usage_errors_exit_2_and_help_documents_the_key() {
    let o = probe(&["--help"], None);
    assert_eq!(o.status.code(), Some(0));
    let help = stdout(&o);
    for needle in [
        "GATEWAY_KEY",
        "--key-file",
        "--region",
        "--chart",
        "--json",
        "nearest-rank",
    ] {
        assert!(help.contains(needle), "{needle}: {help}");
    }
    for (args, key, needle) in [
        (
            &["--url", "http://127.0.0.1:1", "--model", "m"][..],
            None,
            "no client key",
        ),
        (&["--model", "m"][..], Some("k"), "--url is required"),
        (
            &["--url", "http://127.0.0.1:1"][..],
            Some("k"),
            "--model is required",
        ),
        (
            &["--url", "http://127.0.0.1:1", "--model", "m", "--mode", "x"][..],
            Some("k"),
            "plain, stream or both",
        ),
        (
            &[
                "--url",
                "http://127.0.0.1:1",
                "--model",
                "m",
                "--key",
                "sk-1",
            ][..],
            Some("k"),
            "never taken from the command line",
        ),
    ] {
        let o = probe(args, key);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.contains(needle), "{args:?}: {err}");
        assert!(err.contains("(see fly-fallback probe --help)"), "{err}");
        assert!(!err.contains("sk-1"), "{err}");
        assert!(o.stdout.is_empty());
    }
}
