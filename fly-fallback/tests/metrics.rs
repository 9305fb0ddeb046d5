//! `/metrics` of a running fly-fallback, read with a Prometheus text parser: each kind of
//! request moves its series by exactly one, and the API port never serves it.
//!
//! Needs `target/debug/mock-upstream` (`cargo build --workspace`, as `scripts/test` does).

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

struct Killed(Vec<Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn bin(name: &str) -> PathBuf {
    let fly = PathBuf::from(env!("CARGO_BIN_EXE_fly-fallback"));
    let path = fly.with_file_name(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace` first",
        path.display()
    );
    path
}

/// One HTTP/1.1 request on a fresh connection: (status, body).
fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (n, v) in headers {
        req.push_str(&format!("{n}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).unwrap();
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|x| x.1)
        .unwrap_or("")
        .to_string();
    (status, body)
}

fn wait_up(port: u16, path: &str) {
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(20) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok()
            && http(port, "GET", path, &[], "").0 != 0
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("port {port} did not come up");
}

fn mock(port: u16, key: &str, name: &str) -> Child {
    Command::new(bin("mock-upstream"))
        .args([
            "--port",
            &port.to_string(),
            "--api-key",
            key,
            "--name",
            name,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("mock-upstream starts")
}

fn hash_key(key: &str) -> String {
    let mut c = Command::new(env!("CARGO_BIN_EXE_fly-fallback"))
        .arg("hash-key")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(key.as_bytes()).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Every sample of a scrape, parsed: `name{sorted labels}` → value.
fn scrape(port: u16) -> HashMap<String, f64> {
    let (status, body) = http(port, "GET", "/metrics", &[], "");
    assert_eq!(status, 200, "{body}");
    let lines = body.lines().map(|l| Ok(l.to_string()));
    let parsed = prometheus_parse::Scrape::parse(lines).expect("Prometheus text format");
    let mut out = HashMap::new();
    for s in parsed.samples {
        let mut labels: Vec<String> = s.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        labels.sort();
        let value = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            prometheus_parse::Value::Histogram(h) => h.iter().map(|b| b.count).fold(0.0, f64::max),
            prometheus_parse::Value::Summary(_) => continue,
        };
        out.insert(format!("{}{{{}}}", s.metric, labels.join(",")), value);
    }
    out
}

fn get(m: &HashMap<String, f64>, key: &str) -> f64 {
    m.get(key).copied().unwrap_or(0.0)
}

/// How much each series moved between two scrapes (series that did not move are left out).
fn moved(
    before: &HashMap<String, f64>,
    after: &HashMap<String, f64>,
    prefix: &str,
) -> Vec<(String, f64)> {
    let mut out: Vec<(String, f64)> = after
        .iter()
        .filter(|(k, _)| k.starts_with(prefix))
        .map(|(k, v)| (k.clone(), v - get(before, k)))
        .filter(|(_, d)| *d != 0.0)
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

const OPERATOR: &str = "operator-key";
const TENANT: &str = "tenant-key";

fn chat(port: u16, key: &str, body: &str, extra: &[(&str, &str)]) -> u16 {
    let auth = format!("Bearer {key}");
    let mut h = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    h.extend_from_slice(extra);
    http(port, "POST", "/v1/chat/completions", &h, body).0
}

#[test]
fn a_request_a_cache_hit_a_failover_and_a_429_each_move_their_series_by_one() {
    let (pa, pb, api, metrics) = (free_port(), free_port(), free_port(), free_port());
    let mut procs = Killed(vec![mock(pa, "sk-a", "a"), mock(pb, "sk-b", "b")]);
    let config = format!(
        r#"{{"upstreams":[
            {{"name":"a","base_url":"http://127.0.0.1:{pa}/v1","api_key_secret":"KEY_A","region":"fra","fallbacks":["b"]}},
            {{"name":"b","base_url":"http://127.0.0.1:{pb}/v1","api_key_secret":"KEY_B","region":"iad"}}],
          "routing":{{"max_attempts":2}},
          "keys":[{{"id":"tenant","name":"Tenant","key_sha256":"{}","rpm":2}}]}}"#,
        hash_key(TENANT)
    );
    procs.0.push(
        Command::new(env!("CARGO_BIN_EXE_fly-fallback"))
            .env_clear()
            .env("PORT", api.to_string())
            .env("METRICS_PORT", metrics.to_string())
            .env("BIND_ADDR", "127.0.0.1")
            .env("GATEWAY_API_KEYS", OPERATOR)
            .env("KEY_A", "sk-a")
            .env("KEY_B", "sk-b")
            .env("GATEWAY_CONFIG", config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("fly-fallback starts"),
    );
    wait_up(pa, "/__calls");
    wait_up(pb, "/__calls");
    wait_up(api, "/health");
    wait_up(metrics, "/metrics");

    // The API port has no /metrics.
    let (status, body) = http(api, "GET", "/metrics", &[], "");
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("\"error\""));

    let pinned_a = [("x-gateway-region", "a")];
    const PLAIN: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"one"}]}"#;
    const DET: &str = r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"cache me"}]}"#;

    // A request.
    let m0 = scrape(metrics);
    assert_eq!(chat(api, OPERATOR, PLAIN, &pinned_a), 200);
    let m1 = scrape(metrics);
    assert_eq!(
        moved(&m0, &m1, "gateway_requests_total"),
        [(
            "gateway_requests_total{cache=bypass,model=gpt-4o-mini,route=chat_completions,status=200,upstream=a}".to_string(),
            1.0
        )],
        "a plain request (temperature unset: not cacheable)"
    );
    assert_eq!(
        moved(&m0, &m1, "gateway_upstream_attempts_total"),
        [(
            "gateway_upstream_attempts_total{outcome=ok,upstream=a}".to_string(),
            1.0
        )]
    );
    assert!(
        get(
            &m1,
            "gateway_cost_usd_total{key=key_operator,model=gpt-4o-mini}"
        ) >= 0.0
    );
    assert!(
        moved(&m0, &m1, "gen_ai_client_token_usage")
            .iter()
            .any(|(k, _)| k.contains("gen_ai_token_type=input")),
        "the GenAI token usage histogram moved"
    );

    // A cache hit: the same deterministic request twice.
    assert_eq!(chat(api, OPERATOR, DET, &pinned_a), 200);
    let m2 = scrape(metrics);
    assert_eq!(chat(api, OPERATOR, DET, &pinned_a), 200);
    let m3 = scrape(metrics);
    assert_eq!(
        moved(&m2, &m3, "gateway_cache_requests_total"),
        [("gateway_cache_requests_total{result=hit}".to_string(), 1.0)]
    );
    let served = |m: &HashMap<String, f64>| get(m, "gateway_cache_served_bytes_total{}");
    assert!(served(&m3) > served(&m2), "{m3:?}");
    assert!(
        moved(&m2, &m3, "gateway_upstream_attempts_total").is_empty(),
        "a hit calls no upstream"
    );

    // A failover: a answers 503, b answers.
    let (s, _) = http(
        pa,
        "POST",
        "/__fault",
        &[("content-type", "application/json")],
        r#"{"status":503}"#,
    );
    assert_eq!(s, 200);
    assert_eq!(chat(api, OPERATOR, PLAIN, &pinned_a), 200);
    let m4 = scrape(metrics);
    assert_eq!(
        moved(&m3, &m4, "gateway_failovers_total"),
        [(
            "gateway_failovers_total{outcome=http_503,upstream=a}".to_string(),
            1.0
        )]
    );
    assert_eq!(
        moved(&m3, &m4, "gateway_upstream_attempts_total"),
        [
            (
                "gateway_upstream_attempts_total{outcome=http_503,upstream=a}".to_string(),
                1.0
            ),
            (
                "gateway_upstream_attempts_total{outcome=ok,upstream=b}".to_string(),
                1.0
            )
        ]
    );
    let _ = http(pa, "DELETE", "/__fault", &[], "");

    // A 429: the tenant's third request in a minute (rpm 2).
    assert_eq!(chat(api, TENANT, PLAIN, &[]), 200);
    assert_eq!(chat(api, TENANT, PLAIN, &[]), 200);
    let m5 = scrape(metrics);
    assert_eq!(chat(api, TENANT, PLAIN, &[]), 429);
    let m6 = scrape(metrics);
    assert_eq!(
        moved(&m5, &m6, "gateway_rate_limit_refusals_total"),
        [(
            "gateway_rate_limit_refusals_total{key=tenant,limit=requests}".to_string(),
            1.0
        )]
    );
    assert_eq!(
        moved(&m5, &m6, "gateway_requests_total"),
        [("gateway_requests_total{cache=bypass,model=gpt-4o-mini,route=chat_completions,status=429,upstream=}".to_string(), 1.0)]
    );
    assert!(
        moved(&m5, &m6, "gateway_upstream_attempts_total").is_empty(),
        "a refusal calls no upstream"
    );

    // Live state and build info are there.
    assert_eq!(
        get(
            &m6,
            "gateway_upstream_state{region=fra,state=healthy,upstream=a}"
        ) + get(
            &m6,
            "gateway_upstream_state{region=fra,state=open,upstream=a}"
        ) + get(
            &m6,
            "gateway_upstream_state{region=fra,state=ejected,upstream=a}"
        ) + get(
            &m6,
            "gateway_upstream_state{region=fra,state=half_open,upstream=a}"
        ) + get(
            &m6,
            "gateway_upstream_state{region=fra,state=down,upstream=a}"
        ),
        1.0,
        "exactly one state per upstream"
    );
    assert!(m6.keys().any(|k| k.starts_with("gateway_build_info{")));
    assert_eq!(get(&m6, "gateway_log_lines_dropped_total{}"), 0.0);
}
