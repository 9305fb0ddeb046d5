//! Start-up and shutdown of each runtime: invalid settings are reported naming the setting, and
//! fly-fallback drains in-flight streams on SIGTERM / SIGINT before exiting.

use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

use super::{chat_at, chat_body, Ctx};
use crate::expect;
use crate::harness::{self, Processes};

fn settings(ctx: &Ctx, config: &str) -> Vec<(&'static str, String)> {
    vec![
        ("UPSTREAM_BASE_URL", format!("{}/v1", ctx.mock)),
        ("UPSTREAM_API_KEY", harness::UPSTREAM_KEY.to_string()),
        ("GATEWAY_API_KEYS", harness::CLIENT_KEY.to_string()),
        ("GATEWAY_CONFIG", config.to_string()),
    ]
}

/// Starts a fly-fallback of this case's own and waits until it answers `/health`.
async fn start_fly(
    procs: &mut Processes,
    ctx: &Ctx,
    name: &str,
    env: &[(&str, &str)],
) -> (harness::Started, u16, String) {
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let bin = harness::find_binary("fly-fallback").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = harness::fly_command(&bin, port, &settings(ctx, "{}"));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let started = procs
        .spawn(name, cmd, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    harness::wait_healthy(&ctx.http, &started, &base, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    (started, port, base)
}

fn terminate(started: &harness::Started) {
    let pid = started.child.lock().map(|c| c.id()).unwrap_or(0);
    // SAFETY: plain syscall on our own child.
    unsafe {
        libc::kill(pid as libc::pid_t, libc::SIGTERM);
    }
}

fn wait_exit(started: &harness::Started, within: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + within;
    loop {
        if let Ok(mut child) = started.child.lock() {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// fly-fallback with an unknown field in GATEWAY_CONFIG exits with status 2 and a message that
/// names the setting, instead of serving or panicking.
pub async fn fly_invalid_configuration_exits_2_naming_the_setting(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let bin = harness::find_binary("fly-fallback").unwrap_or_else(|e| panic!("{e}"));
    let cmd = harness::fly_command(&bin, port, &settings(&ctx, r#"{"max_body_byte": 1}"#));
    let started = procs
        .spawn("fly-bad-config", cmd, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = wait_exit(&started, Duration::from_secs(10)).expect("fly-fallback kept running");
    assert_eq!(status.code(), Some(2), "exit status {status:?}");
    let log = std::fs::read_to_string(&started.log).unwrap_or_default();
    assert!(
        log.contains("GATEWAY_CONFIG") && log.contains("max_body_byte"),
        "the message should name the setting and the field: {log}"
    );
    assert!(!log.contains("panicked"), "{log}");
}

/// The Worker with an invalid GATEWAY_CONFIG answers every request with a 500 in the OpenAI
/// shape naming the setting (never the platform's bare error page).
pub async fn worker_invalid_configuration_answers_500_naming_the_setting(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let inspector = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let cmd = harness::extra_worker_command(
        &ctx.repo,
        "worker-bad-config",
        port,
        inspector,
        &settings(&ctx, r#"{"max_body_byte": 1}"#),
    );
    let started = procs
        .spawn("worker-bad-config", cmd, true)
        .unwrap_or_else(|e| panic!("{e}"));
    let base = format!("http://127.0.0.1:{port}");
    // /health answers 500 too, so wait for the port rather than for a 200.
    let deadline = Instant::now() + Duration::from_secs(120);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "wrangler dev did not listen");
        assert!(
            wait_exit(&started, Duration::ZERO).is_none(),
            "wrangler dev exited"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut last = None;
    for _ in 0..100 {
        let r = chat_at(&ctx, &base, &ctx.key)
            .json(&chat_body("mock-model", "hi"))
            .send()
            .await;
        if r.status == 500 {
            last = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let r = last.expect("no 500 from the misconfigured Worker");
    let err = expect::error(&r, 500, "gateway_misconfigured");
    let message = err["message"].as_str().unwrap_or("").to_string();
    assert!(message.contains("GATEWAY_CONFIG"), "{message}");
    // Whoever calls is told which setting, not what is in it; the operator's log has the rest.
    assert!(
        !message.contains("max_body_byte"),
        "details in the answer: {message}"
    );
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&started.log).unwrap_or_default();
        if log.contains("error_detail") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        log.lines()
            .any(|l| l.contains("\"error_detail\"") && l.contains("max_body_byte")),
        "the details are not in the Worker's log: {log}"
    );
}

/// A start-up error quotes the bad value so the operator can fix it, but never a password in it.
pub async fn fly_invalid_upstream_url_is_reported_without_its_password(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let bin = harness::find_binary("fly-fallback").unwrap_or_else(|e| panic!("{e}"));
    let mut env = settings(&ctx, "{}");
    env[0].1 = "ftp://gateway:s3cret-pw@upstream.example/v1".into();
    let cmd = harness::fly_command(&bin, port, &env);
    let started = procs
        .spawn("fly-bad-url", cmd, false)
        .unwrap_or_else(|e| panic!("{e}"));
    let status = wait_exit(&started, Duration::from_secs(10)).expect("fly-fallback kept running");
    assert_eq!(status.code(), Some(2), "exit status {status:?}");
    let log = std::fs::read_to_string(&started.log).unwrap_or_default();
    assert!(log.contains("UPSTREAM_BASE_URL"), "{log}");
    assert!(log.contains("ftp://***@upstream.example"), "{log}");
    assert!(
        !log.contains("s3cret-pw"),
        "the password was printed: {log}"
    );
}

/// On SIGTERM fly-fallback stops accepting connections but lets an in-flight stream finish with
/// `[DONE]`, then exits 0 within the grace period (what fly.toml's kill_timeout expects).
pub async fn fly_sigterm_drains_in_flight_streams_and_stops_accepting(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let (started, port, base) = start_fly(
        &mut procs,
        &ctx,
        "fly-shutdown",
        &[("SHUTDOWN_GRACE_SECS", "10")],
    )
    .await;

    let model = ctx.model("mock-stream-5x200ms", "shutdown_drain");
    let mut body = chat_body(&model, "finish me");
    body["stream"] = json!(true);
    let stream = chat_at(&ctx, &base, &ctx.key).json(&body).stream();
    let in_flight = tokio::spawn(stream);
    // Let the stream start (its first event is sent at once, the rest 200 ms apart).
    tokio::time::sleep(Duration::from_millis(300)).await;
    terminate(&started);

    // New connections are refused once the listener is closed.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(("127.0.0.1", port)).is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting 5 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let s = in_flight.await.expect("stream task");
    s.expect_status(200);
    assert!(s.body_error.is_none(), "{}: {:?}", s.label, s.body_error);
    assert_eq!(
        s.events.last().map(|e| e.data.as_str()),
        Some("[DONE]"),
        "{}: the in-flight stream must complete: {}",
        s.label,
        s.raw
    );
    let status = wait_exit(&started, Duration::from_secs(10)).expect("did not exit after draining");
    assert!(status.success(), "exit status {status:?}");
}

/// Every request writes one JSON log line with the documented fields, and no secret (the client's
/// key, the upstream key) ever appears in the log.
pub async fn fly_writes_one_json_log_line_per_request_without_secrets(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let (started, _, base) = start_fly(
        &mut procs,
        &ctx,
        "fly-logs",
        &[("FLY_REGION", "log-region")],
    )
    .await;
    let at = |key: &str| chat_at(&ctx, &base, key);
    let model = ctx.model("mock-model", "log_lines");
    at(&ctx.key)
        .header("x-request-id", "log-line-ok")
        .json(&chat_body(&model, "log me"))
        .send()
        .await
        .expect_status(200);
    at("not-a-key")
        .header("x-request-id", "log-line-denied")
        .json(&chat_body(&model, "log me"))
        .send()
        .await
        .expect_status(401);

    // Stop it so every line is flushed, then read what it wrote.
    terminate(&started);
    wait_exit(&started, Duration::from_secs(10)).expect("fly-fallback did not exit");
    let log = std::fs::read_to_string(&started.log).unwrap_or_default();
    assert_no_secrets(&log);
    let line_of = |id: &str| log_line(&log, id);
    let ok = line_of("log-line-ok");
    for field in [
        "time",
        "region",
        "method",
        "path",
        "model",
        "status",
        "upstream_ms",
        "total_ms",
        "bytes_in",
        "bytes_out",
    ] {
        assert!(ok.get(field).is_some(), "field {field} missing: {ok}");
    }
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["region"], "log-region");
    assert_eq!(ok["model"], model.as_str());
    let denied = line_of("log-line-denied");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["error_code"], "invalid_api_key");
}

/// The Worker writes one JSON line per request (to its console, which `wrangler dev` prints),
/// with the same fields as fly-fallback's and no secret; a stream's line is written at its end.
pub async fn worker_writes_one_json_log_line_per_request_without_secrets(ctx: Arc<Ctx>) {
    let model = ctx.model("mock-model", "worker_log_lines");
    let stream_model = ctx.model("mock-stream-3x10ms", "worker_log_lines");
    ctx.post("/v1/chat/completions")
        .header("x-request-id", "worker-log-line-ok")
        .json(&chat_body(&model, "log me"))
        .send()
        .await
        .expect_status(200);
    ctx.post("/v1/chat/completions")
        .key("not-a-key")
        .header("x-request-id", "worker-log-line-denied")
        .json(&chat_body(&model, "log me"))
        .send()
        .await
        .expect_status(401);
    let mut streamed = chat_body(&stream_model, "log my stream");
    streamed["stream"] = serde_json::json!(true);
    streamed["stream_options"] = serde_json::json!({"include_usage": true});
    ctx.post("/v1/chat/completions")
        .header("x-request-id", "worker-log-line-stream")
        .json(&streamed)
        .stream()
        .await
        .expect_status(200);

    // wrangler prints the Worker's console as it comes; give it a moment to reach the file.
    let path = harness::log_dir().join("worker.log");
    let ids = [
        "worker-log-line-ok",
        "worker-log-line-denied",
        "worker-log-line-stream",
    ];
    let mut log = String::new();
    for _ in 0..50 {
        log = std::fs::read_to_string(&path).unwrap_or_default();
        if ids
            .iter()
            .all(|id| log.contains(&format!("\"request_id\":\"{id}\"")))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_no_secrets(&log);
    let line_of = |id: &str| log_line(&log, id);
    let ok = line_of("worker-log-line-ok");
    for field in [
        "time",
        "runtime",
        "region",
        "method",
        "path",
        "key_id",
        "model",
        "status",
        "upstream_ms",
        "total_ms",
        "bytes_in",
        "bytes_out",
        "cache",
    ] {
        assert!(ok.get(field).is_some(), "field {field} missing: {ok}");
    }
    assert_eq!(ok["runtime"], "worker");
    assert_eq!(ok["status"], 200);
    assert_eq!(ok["region"], harness::REGION);
    assert_eq!(ok["model"], model.as_str());
    let denied = line_of("worker-log-line-denied");
    assert_eq!(denied["status"], 401);
    assert_eq!(denied["error_code"], "invalid_api_key");
    let stream = line_of("worker-log-line-stream");
    assert_eq!(stream["stream"], true);
    assert_eq!(stream["stream_complete"], true);
    assert!(stream["completion_tokens"].as_u64().is_some(), "{stream}");
    assert!(stream["bytes_out"].as_u64().unwrap_or(0) > 0, "{stream}");
}

/// No key, the gateway's or a client's (a rejected one included), appears in a log.
fn assert_no_secrets(log: &str) {
    for secret in [harness::UPSTREAM_KEY, harness::CLIENT_KEY, "not-a-key"] {
        assert!(!log.contains(secret), "the log contains a secret: {log}");
    }
}

/// The one JSON log line of the request with this id (after any prefix the platform adds).
fn log_line(log: &str, id: &str) -> serde_json::Value {
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(&format!("\"request_id\":\"{id}\"")))
        .collect();
    assert_eq!(lines.len(), 1, "one line for {id}: {log}");
    let line = lines[0].trim();
    let json = line.get(line.find('{').unwrap_or(0)..).unwrap_or(line);
    serde_json::from_str(json).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
}

/// Kills a child when dropped (a case that spawns outside [`Processes`]).
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A log shipper that stops reading must not stop the gateway: with stdout a pipe nobody reads
/// (and a 16-line queue), 1,500 requests are all answered; once output is read again, one line
/// says how many log lines were dropped.
pub async fn fly_keeps_answering_when_nobody_reads_its_log(ctx: Arc<Ctx>) {
    use std::io::BufRead;
    use std::process::Stdio;

    let port = harness::free_port().unwrap_or_else(|e| panic!("{e}"));
    let bin = harness::find_binary("fly-fallback").unwrap_or_else(|e| panic!("{e}"));
    let mut cmd = harness::fly_command(&bin, port, &settings(&ctx, "{}"));
    cmd.env("LOG_QUEUE_LINES", "16")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = KillOnDrop(cmd.spawn().unwrap_or_else(|e| panic!("spawn: {e}")));
    let stdout = child.0.stdout.take().expect("piped stdout");
    let health = format!("http://127.0.0.1:{port}/health");
    let deadline = Instant::now() + Duration::from_secs(30);
    while crate::client::get_status(&ctx.http, &health, Duration::from_secs(1))
        .await
        .is_err()
    {
        assert!(Instant::now() < deadline, "fly-fallback did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for i in 0..1_500 {
        let status = crate::client::get_status(&ctx.http, &health, Duration::from_secs(5))
            .await
            .unwrap_or_else(|e| panic!("request {i} with stdout stalled: {e}"));
        assert_eq!(status, 200, "request {i}");
    }
    let found = tokio::task::spawn_blocking(move || {
        std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
            .find(|l| l.contains("\"log_lines_dropped\""))
    });
    let line = tokio::time::timeout(Duration::from_secs(20), found)
        .await
        .expect("no report of dropped lines once stdout was read")
        .expect("reader task")
        .expect("stdout ended without a report of dropped lines");
    let v: serde_json::Value =
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
    assert!(v["count"].as_u64().unwrap_or(0) > 0, "{line}");
    drop(child);
}

/// Sends `request` on a new connection and returns what arrives within `within` (empty when the
/// connection was closed, `None` when nothing came).
async fn raw_exchange(
    addr: &str,
    request: &[u8],
    within: Duration,
) -> (tokio::net::TcpStream, Option<Vec<u8>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(request)
        .await
        .unwrap_or_else(|e| panic!("write: {e}"));
    let mut buf = vec![0u8; 4096];
    let got = match tokio::time::timeout(within, s.read(&mut buf)).await {
        Ok(Ok(n)) => Some(buf[..n].to_vec()),
        Ok(Err(_)) => Some(Vec::new()),
        Err(_) => None,
    };
    (s, got)
}

/// Slow clients (slowloris): 500 connections that send part of a request head and stall are
/// closed once the header-read timeout passes (here 1 s), while ordinary requests keep being
/// answered.
pub async fn fly_closes_connections_that_stall_in_their_request_head(ctx: Arc<Ctx>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut procs = Processes::default();
    let (_started, port, base) = start_fly(
        &mut procs,
        &ctx,
        "fly-slowloris",
        &[("HEADER_READ_TIMEOUT_SECS", "1")],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let mut stalled = Vec::new();
    for _ in 0..500 {
        let mut s = tokio::net::TcpStream::connect(&addr)
            .await
            .unwrap_or_else(|e| panic!("connect: {e}"));
        s.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Ty")
            .await
            .unwrap_or_else(|e| panic!("write: {e}"));
        stalled.push(s);
    }
    for i in 0..20 {
        let status =
            crate::client::get_status(&ctx.http, &format!("{base}/health"), Duration::from_secs(2))
                .await
                .unwrap_or_else(|e| panic!("request {i} beside 500 stalled connections: {e}"));
        assert_eq!(status, 200);
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    // Closed: end of stream or a reset (hyper may first send a 408). Open: nothing comes.
    let still_open = futures_util::future::join_all(stalled.iter_mut().map(|s| async move {
        let mut buf = [0u8; 512];
        loop {
            match tokio::time::timeout(Duration::from_millis(1_500), s.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return false,
                Ok(Ok(_)) => continue,
                Err(_) => return true,
            }
        }
    }))
    .await;
    let open = still_open.iter().filter(|o| **o).count();
    assert_eq!(
        open, 0,
        "{open} of 500 stalled connections are still open after 3 s"
    );
}

/// Idle is not slow: a keep-alive connection may wait `IDLE_TIMEOUT_SECS` (here 3 s) for its next
/// request, longer than the header-read timeout (here 1 s), and is closed once that passes; a
/// new connection that sends nothing is closed after the header-read timeout.
pub async fn fly_keeps_idle_keepalive_connections_for_the_idle_timeout_not_the_header_timeout(
    ctx: Arc<Ctx>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut procs = Processes::default();
    let (_started, port, _base) = start_fly(
        &mut procs,
        &ctx,
        "fly-idle",
        &[
            ("HEADER_READ_TIMEOUT_SECS", "1"),
            ("IDLE_TIMEOUT_SECS", "3"),
        ],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let (mut conn, got) = raw_exchange(&addr, request, Duration::from_secs(3)).await;
    assert!(
        got.as_ref().is_some_and(|b| b.starts_with(b"HTTP/1.1 200")),
        "first request: {got:?}"
    );
    // Idle for twice the header-read timeout: still open, and it serves the next request.
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    conn.write_all(request)
        .await
        .unwrap_or_else(|e| panic!("the idle connection was closed after 2 s: {e}"));
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), conn.read(&mut buf))
        .await
        .expect("no answer on the idle connection")
        .unwrap_or(0);
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "after 2 s idle: {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // Now idle past the idle timeout: closed (end of stream or reset), within a second of it.
    let t0 = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the idle connection was still open after 6 s"
    );
    let waited = t0.elapsed();
    assert!(
        waited >= Duration::from_millis(2_500),
        "closed after {waited:?} idle, before the idle timeout (3 s)"
    );
    // A connection that never sends anything is not idle but slow: the header-read timeout.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("connect: {e}"));
    let t0 = std::time::Instant::now();
    let closed = tokio::time::timeout(Duration::from_secs(6), async {
        loop {
            match silent.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "a silent new connection was still open after 6 s"
    );
    assert!(
        t0.elapsed() < Duration::from_millis(2_900),
        "a silent new connection was kept {:?}, as if idle",
        t0.elapsed()
    );
}

/// At `MAX_CONNECTIONS` the gateway stops accepting: a further connection waits (in the listen
/// queue) and is served as soon as another closes.
pub async fn fly_serves_at_most_max_connections_at_once(ctx: Arc<Ctx>) {
    let mut procs = Processes::default();
    let (_started, port, _base) = start_fly(
        &mut procs,
        &ctx,
        "fly-max-conns",
        &[("MAX_CONNECTIONS", "2")],
    )
    .await;
    let addr = format!("127.0.0.1:{port}");
    let request = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";
    let answered =
        |got: &Option<Vec<u8>>| got.as_ref().is_some_and(|b| b.starts_with(b"HTTP/1.1 200"));
    let (first, got) = raw_exchange(&addr, request, Duration::from_secs(3)).await;
    assert!(answered(&got), "first connection was not answered");
    let (_second, got) = raw_exchange(&addr, request, Duration::from_secs(3)).await;
    assert!(answered(&got), "second connection was not answered");
    let (mut third, got) = raw_exchange(&addr, request, Duration::from_millis(700)).await;
    assert!(
        got.is_none(),
        "a third connection was served beyond the bound of 2: {:?}",
        got.map(|b| String::from_utf8_lossy(&b).into_owned())
    );
    drop(first);
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(3), third.read(&mut buf))
        .await
        .expect("the waiting connection was not served once another closed")
        .unwrap_or(0);
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
}
