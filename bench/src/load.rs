//! The load generator: keep-alive HTTP/1.1 connections (one per worker, hyper's client
//! connection API, TCP_NODELAY) and HDR histograms.
//!
//! - [`sequential`]: one request at a time, every latency kept.
//! - [`closed_loop`]: C workers, each sending its next request when the last one answered.
//! - [`open_loop`]: requests *scheduled* at a fixed rate by a pacing thread; each latency is
//!   measured from the request's scheduled time, not from when a worker got round to sending it,
//!   so a stalled server is charged for the queue it causes (no coordinated omission).
//! - [`streams`]: streamed requests, with the arrival time of every server-sent event.
//! - [`hold_streams`]: many streams opened and held open, for memory measurements.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HeaderValue, CONTENT_TYPE, HOST};
use http::{HeaderMap, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

/// Highest latency a histogram records, in microseconds (larger values are clamped).
const MAX_LATENCY_US: u64 = 600_000_000;

pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    let us = (d.as_nanos() / 1000).clamp(1, MAX_LATENCY_US as u128) as u64;
    let _ = h.record(us);
}

/// One kind of request, ready to be sent any number of times.
#[derive(Clone, Debug)]
pub struct RequestSpec {
    pub addr: SocketAddr,
    pub method: Method,
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RequestSpec {
    pub fn post_json(
        addr: SocketAddr,
        path: &str,
        headers: &HeaderMap,
        body: Bytes,
    ) -> RequestSpec {
        let mut h = headers.clone();
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(&addr.to_string()) {
            h.insert(HOST, v);
        }
        RequestSpec {
            addr,
            method: Method::POST,
            path: path.to_string(),
            headers: h,
            body,
        }
    }

    fn build(&self) -> Request<Full<Bytes>> {
        let mut r = Request::new(Full::new(self.body.clone()));
        *r.method_mut() = self.method.clone();
        *r.uri_mut() = self.path.parse().unwrap_or_default();
        *r.headers_mut() = self.headers.clone();
        r
    }
}

/// A header the caller wants to see on a response (e.g. `x-gateway-cache`).
#[derive(Debug, Default, Clone)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A worker's single keep-alive connection, reopened after an error.
pub struct Conn {
    addr: SocketAddr,
    sender: Option<SendRequest<Full<Bytes>>>,
    pub reconnects: u64,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Conn {
        Conn {
            addr,
            sender: None,
            reconnects: 0,
        }
    }

    async fn sender(&mut self) -> Result<&mut SendRequest<Full<Bytes>>, String> {
        let usable = matches!(&self.sender, Some(s) if !s.is_closed());
        if !usable {
            if self.sender.is_some() {
                self.reconnects += 1;
            }
            self.sender = None;
            let tcp = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("connect {}: {e}", self.addr))?;
            let _ = tcp.set_nodelay(true);
            let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
                .await
                .map_err(|e| format!("handshake: {e}"))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.sender = Some(sender);
        }
        let s = self.sender.as_mut().ok_or("no connection")?;
        if s.ready().await.is_err() {
            self.sender = None;
            return Err("connection closed".into());
        }
        self.sender.as_mut().ok_or_else(|| "no connection".into())
    }

    /// Sends the request and reads the whole response.
    pub async fn send(&mut self, spec: &RequestSpec) -> Result<Answer, String> {
        let req = spec.build();
        let sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("request: {e}"));
            }
        };
        let (parts, body) = resp.into_parts();
        match body.collect().await {
            Ok(c) => Ok(Answer {
                status: parts.status.as_u16(),
                headers: parts.headers,
                body: c.to_bytes(),
            }),
            Err(e) => {
                self.sender = None;
                Err(format!("body: {e}"))
            }
        }
    }

    /// Sends a streamed request; returns the status, the time of the response head, and the
    /// arrival time of every complete server-sent event, all relative to `t0`.
    pub async fn send_stream(
        &mut self,
        spec: &RequestSpec,
        t0: Instant,
        first_event: &mut Option<FirstEvent>,
    ) -> Result<StreamTrace, String> {
        let req = spec.build();
        let sender = self.sender().await?;
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                self.sender = None;
                return Err(format!("request: {e}"));
            }
        };
        let head = t0.elapsed();
        let status = resp.status().as_u16();
        let mut body = resp.into_body();
        let mut trace = StreamTrace {
            status,
            head,
            first_byte: None,
            events: Vec::with_capacity(64),
            transit_us: Vec::with_capacity(64),
            done: false,
            bytes: 0,
        };
        let mut tail: Vec<u8> = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame = match frame {
                Ok(f) => f,
                Err(e) => {
                    self.sender = None;
                    return Err(format!("stream: {e}"));
                }
            };
            let Ok(data) = frame.into_data() else {
                continue;
            };
            let now = t0.elapsed();
            let wall = unix_us();
            trace.first_byte.get_or_insert(now);
            trace.bytes += data.len() as u64;
            tail.extend_from_slice(&data);
            // Events end with a blank line; count the complete ones in this chunk.
            while let Some(end) = find_event_end(&tail) {
                let event: Vec<u8> = tail.drain(..end).collect();
                if event.windows(6).any(|w| w == b"[DONE]") {
                    trace.done = true;
                } else if event.iter().any(|b| !b.is_ascii_whitespace()) {
                    trace.events.push(now);
                    if let Some(sent) = sent_stamp(&event) {
                        trace.transit_us.push(wall - sent as f64);
                    }
                }
                if ok_status(status) {
                    if let Some(tx) = first_event.take() {
                        let _ = tx.send(Ok(()));
                    }
                }
            }
        }
        Ok(trace)
    }
}

/// Told `Ok` when a stream's first event arrives, or why it never did.
pub type FirstEvent = tokio::sync::mpsc::UnboundedSender<Result<(), String>>;

/// The wall clock in Unix microseconds, as the mock stamps it.
fn unix_us() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64() * 1e6)
        .unwrap_or(0.0)
}

/// The mock's send time in an event, if it stamped one (`"mock_sent_unix_us":N`).
fn sent_stamp(event: &[u8]) -> Option<u64> {
    const KEY: &[u8] = b"\"mock_sent_unix_us\":";
    let at = event.windows(KEY.len()).position(|w| w == KEY)? + KEY.len();
    let digits = &event[at..];
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&digits[..n]).ok()?.parse().ok()
}

fn find_event_end(buf: &[u8]) -> Option<usize> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|p| p + 2);
    let crlf = buf.windows(4).position(|w| w == b"\r\n\r\n").map(|p| p + 4);
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The timing of one streamed response.
#[derive(Debug, Clone, Default)]
pub struct StreamTrace {
    pub status: u16,
    /// Time of the response head.
    pub head: Duration,
    /// Time of the first body byte.
    pub first_byte: Option<Duration>,
    /// Arrival of each complete data event (not counting `[DONE]`).
    pub events: Vec<Duration>,
    /// For each event the mock stamped with its send time (`-stamped` models): the time from
    /// then to its arrival here, in µs (the same machine's wall clock at both ends).
    pub transit_us: Vec<f64>,
    pub done: bool,
    pub bytes: u64,
}

fn ok_status(s: u16) -> bool {
    (200..300).contains(&s)
}

/// Figures of one load run.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct LoadStats {
    /// Requests that got a 2xx answer inside the measured window.
    pub ok: u64,
    /// Non-2xx answers, transport errors, time-outs, and scheduled requests never sent.
    pub errors: u64,
    pub seconds: f64,
    pub rps: f64,
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    pub mean_us: f64,
    /// Open loop only: p50 and p99 of the time from actually sending a request to its answer,
    /// and p99 of how late requests were sent (the generator's or the queue's delay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_p50_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_p99_us: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub send_lag_p99_us: Option<f64>,
    /// Cores' worth of CPU other processes on the machine used during the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub foreign_cores: Option<f64>,
    /// The first error seen, to tell what went wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl LoadStats {
    pub fn error_rate(&self) -> f64 {
        let n = self.ok + self.errors;
        if n == 0 {
            1.0
        } else {
            self.errors as f64 / n as f64
        }
    }

    fn from(
        h: &Histogram<u64>,
        ok: u64,
        errors: u64,
        seconds: f64,
        first_error: Option<String>,
    ) -> LoadStats {
        let q = |p: f64| {
            if h.is_empty() {
                0.0
            } else {
                h.value_at_quantile(p) as f64
            }
        };
        LoadStats {
            ok,
            errors,
            seconds,
            rps: if seconds > 0.0 {
                ok as f64 / seconds
            } else {
                0.0
            },
            p50_us: q(0.5),
            p90_us: q(0.9),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if h.is_empty() { 0.0 } else { h.max() as f64 },
            mean_us: if h.is_empty() { 0.0 } else { h.mean() },
            service_p50_us: None,
            service_p99_us: None,
            send_lag_p99_us: None,
            foreign_cores: None,
            first_error,
        }
    }
}

#[derive(Default)]
struct Shared {
    hist: Option<Histogram<u64>>,
    /// Open loop: latency from the moment the request was actually sent.
    service: Option<Histogram<u64>>,
    /// Open loop: how late requests were sent after their scheduled time.
    lag: Option<Histogram<u64>>,
    ok: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Shared {
    fn new() -> Mutex<Shared> {
        Mutex::new(Shared {
            hist: Some(histogram()),
            service: Some(histogram()),
            lag: Some(histogram()),
            ..Default::default()
        })
    }
}

fn note(shared: &Mutex<Shared>, outcome: Result<Duration, String>) {
    if let Ok(mut s) = shared.lock() {
        match outcome {
            Ok(d) => {
                s.ok += 1;
                if let Some(h) = s.hist.as_mut() {
                    record(h, d);
                }
            }
            Err(e) => {
                s.errors += 1;
                s.first_error.get_or_insert(e);
            }
        }
    }
}

async fn one(conn: &mut Conn, spec: &RequestSpec, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, conn.send(spec)).await {
        Err(_) => {
            // The connection may still carry the late answer: start afresh.
            conn.sender = None;
            Err(format!("timed out after {timeout:?}"))
        }
        Ok(Err(e)) => Err(e),
        Ok(Ok(a)) if ok_status(a.status) => Ok(()),
        Ok(Ok(a)) => Err(format!(
            "status {}: {}",
            a.status,
            String::from_utf8_lossy(&a.body[..a.body.len().min(200)])
        )),
    }
}

/// `n` requests one after the other on one connection; every latency, in order (errors are
/// returned as `None`).
pub async fn sequential(
    conn: &mut Conn,
    spec: &RequestSpec,
    n: usize,
    timeout: Duration,
) -> Vec<Option<Duration>> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        out.push(one(conn, spec, timeout).await.ok().map(|_| t.elapsed()));
    }
    out
}

/// `concurrency` workers sending back-to-back for `warmup + duration`; only the last `duration`
/// is measured.
pub async fn closed_loop(
    spec: Arc<RequestSpec>,
    concurrency: usize,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
) -> LoadStats {
    let shared = Arc::new(Shared::new());
    let start = Instant::now();
    let measure_from = start + warmup;
    let end = measure_from + duration;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let spec = spec.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(spec.addr);
            loop {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                let left = end
                    .saturating_duration_since(t)
                    .max(Duration::from_millis(1));
                let r = one(&mut conn, &spec, timeout.min(left + Duration::from_secs(1))).await;
                if t >= measure_from {
                    note(&shared, r.map(|_| t.elapsed()));
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let s = shared
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let measured = end.saturating_duration_since(measure_from).as_secs_f64();
    LoadStats::from(
        &s.hist.unwrap_or_else(histogram),
        s.ok,
        s.errors,
        measured,
        s.first_error,
    )
}

/// Requests scheduled at `rate` per second for `warmup + duration` over up to `connections`
/// connections. Latency runs from each request's scheduled time. Requests still unanswered
/// `grace` after the end count as errors.
pub async fn open_loop(
    spec: Arc<RequestSpec>,
    rate: f64,
    connections: usize,
    warmup: Duration,
    duration: Duration,
    timeout: Duration,
    grace: Duration,
) -> LoadStats {
    let shared = Arc::new(Shared::new());
    let total = ((warmup + duration).as_secs_f64() * rate).round() as u64;
    let warm = (warmup.as_secs_f64() * rate).round() as u64;
    let interval = Duration::from_secs_f64(1.0 / rate);
    let permits = Arc::new(Semaphore::new(0));
    let claimed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now() + Duration::from_millis(20);
    let at = move |i: u64| t0 + interval.mul_f64(i as f64);

    // The pacer: a plain thread sleeping with the OS's fine-grained timer (tokio's is 1 ms),
    // releasing every request whose time has come, plus one stop ticket per worker at the end.
    let pacer = {
        let permits = permits.clone();
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut released = 0u64;
            while released < total && !stop.load(Ordering::Relaxed) {
                let now = Instant::now();
                let due = at(released);
                if due > now {
                    std::thread::sleep(due - now);
                    continue;
                }
                let mut n = 0;
                while released < total && at(released) <= now {
                    released += 1;
                    n += 1;
                }
                permits.add_permits(n as usize);
            }
            permits.add_permits(connections);
        })
    };

    let end = at(total);
    let hard_stop = end + grace;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let spec = spec.clone();
        let shared = shared.clone();
        let permits = permits.clone();
        let claimed = claimed.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(spec.addr);
            loop {
                let Ok(p) = permits.acquire().await else {
                    break;
                };
                p.forget();
                let i = claimed.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                let scheduled = at(i);
                let sent = Instant::now();
                let left = hard_stop.saturating_duration_since(sent);
                let r = if left.is_zero() {
                    Err("not sent before the end of the run".to_string())
                } else {
                    one(&mut conn, &spec, timeout.min(left)).await
                };
                if i >= warm {
                    if r.is_ok() {
                        if let Ok(mut s) = shared.lock() {
                            let service = sent.elapsed();
                            if let Some(h) = s.service.as_mut() {
                                record(h, service);
                            }
                            if let Some(h) = s.lag.as_mut() {
                                record(h, sent.saturating_duration_since(scheduled));
                            }
                        }
                    }
                    note(&shared, r.map(|_| scheduled.elapsed()));
                }
            }
        });
    }
    let all_done = async { while tasks.join_next().await.is_some() {} };
    let finished = tokio::time::timeout_at(hard_stop.into(), all_done)
        .await
        .is_ok();
    if !finished {
        tasks.abort_all();
        stop.store(true, Ordering::Relaxed);
    }
    let _ = tokio::task::spawn_blocking(move || pacer.join()).await;
    let s = shared
        .lock()
        .map(|mut s| std::mem::take(&mut *s))
        .unwrap_or_default();
    let measured_n = total - warm;
    let answered = s.ok + s.errors;
    let missing = measured_n.saturating_sub(answered);
    let mut first_error = s.first_error;
    if missing > 0 && first_error.is_none() {
        first_error = Some(format!("{missing} requests not answered in time"));
    }
    let mut stats = LoadStats::from(
        &s.hist.unwrap_or_else(histogram),
        s.ok,
        s.errors + missing,
        duration.as_secs_f64(),
        first_error,
    );
    let q = |h: &Option<Histogram<u64>>, p: f64| {
        h.as_ref()
            .filter(|h| !h.is_empty())
            .map(|h| h.value_at_quantile(p) as f64)
    };
    stats.service_p50_us = q(&s.service, 0.5);
    stats.service_p99_us = q(&s.service, 0.99);
    stats.send_lag_p99_us = q(&s.lag, 0.99);
    stats
}

/// `count` streamed requests, `concurrency` at a time, the loops' starts spread over `spread`.
pub async fn streams(
    spec: Arc<RequestSpec>,
    count: usize,
    concurrency: usize,
    spread: Duration,
    timeout: Duration,
) -> Vec<Result<StreamTrace, String>> {
    let next = Arc::new(AtomicU64::new(0));
    let out = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = tokio::task::JoinSet::new();
    let workers = concurrency.min(count).max(1);
    for i in 0..workers {
        let (spec, next, out) = (spec.clone(), next.clone(), out.clone());
        let start = stagger(spread, i, workers);
        tasks.spawn(async move {
            tokio::time::sleep(start).await;
            let mut conn = Conn::new(spec.addr);
            while (next.fetch_add(1, Ordering::Relaxed) as usize) < count {
                let t0 = Instant::now();
                let r = match tokio::time::timeout(timeout, conn.send_stream(&spec, t0, &mut None))
                    .await
                {
                    Err(_) => {
                        conn.sender = None;
                        Err("stream timed out".to_string())
                    }
                    Ok(r) => r,
                };
                if let Ok(mut o) = out.lock() {
                    o.push(r);
                }
            }
        });
    }
    while tasks.join_next().await.is_some() {}
    let v = out
        .lock()
        .map(|mut o| std::mem::take(&mut *o))
        .unwrap_or_default();
    v
}

/// When the `i`th of `workers` stream loops starts: evenly over `spread`. Streams of one length
/// started together stay in step, so every stream's request would arrive in a burst with the
/// others'; a first-event figure would then time the burst's queue, not the gateway.
fn stagger(spread: Duration, i: usize, workers: usize) -> Duration {
    spread.mul_f64(i as f64 / workers.max(1) as f64)
}

/// Streams held open: they stay open (being read) until the value is dropped.
pub struct HeldStreams {
    pub open: usize,
    pub failed: usize,
    pub first_error: Option<String>,
    tasks: tokio::task::JoinSet<()>,
}

impl HeldStreams {
    pub async fn close(mut self) {
        self.tasks.abort_all();
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Opens `count` streams, each on its own connection, and waits (up to `within`) until every
/// one has delivered its first event.
pub async fn hold_streams(spec: Arc<RequestSpec>, count: usize, within: Duration) -> HeldStreams {
    let mut tasks = tokio::task::JoinSet::new();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<(), String>>();
    // Connect in waves so that a listen backlog is not overrun.
    for i in 0..count {
        let spec = spec.clone();
        let tx = tx.clone();
        tasks.spawn(async move {
            let mut conn = Conn::new(spec.addr);
            let mut first = Some(tx);
            let why = match conn.send_stream(&spec, Instant::now(), &mut first).await {
                Ok(t) => format!("status {} with {} events", t.status, t.events.len()),
                Err(e) => e,
            };
            if let Some(tx) = first {
                let _ = tx.send(Err(why));
            }
            // Keep the (finished or failed) connection until the holder is dropped.
            std::future::pending::<()>().await;
        });
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    drop(tx);
    let deadline = tokio::time::Instant::now() + within;
    let (mut open, mut failed, mut first_error) = (0, 0, None);
    while open + failed < count {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(Ok(()))) => open += 1,
            Ok(Some(Err(e))) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
            Ok(None) | Err(_) => break,
        }
    }
    HeldStreams {
        open,
        failed,
        first_error,
        tasks,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_mocks_send_time_is_read_from_a_stamped_event_only() {
        let e = br#"data: {"choices":[],"mock_sent_unix_us":1764316800123456,"model":"m"}"#;
        assert_eq!(sent_stamp(e), Some(1_764_316_800_123_456));
        assert_eq!(sent_stamp(br#"data: {"choices":[]}"#), None);
        assert_eq!(sent_stamp(br#"data: {"mock_sent_unix_us":}"#), None);
    }

    #[test]
    fn stream_loops_start_evenly_over_the_spread_so_requests_do_not_arrive_in_one_burst() {
        let spread = Duration::from_millis(1000);
        let starts: Vec<_> = (0..4).map(|i| stagger(spread, i, 4)).collect();
        assert_eq!(
            starts,
            [0, 250, 500, 750].map(Duration::from_millis).to_vec()
        );
        assert_eq!(stagger(Duration::ZERO, 3, 4), Duration::ZERO);
        assert_eq!(stagger(spread, 0, 0), Duration::ZERO);
    }

    #[test]
    fn events_end_at_a_blank_line() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some(9));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some(11));
        assert_eq!(find_event_end(b"data: a\n"), None);
    }

    #[test]
    fn latencies_are_recorded_in_microseconds() {
        let mut h = histogram();
        record(&mut h, Duration::from_micros(250));
        record(&mut h, Duration::from_nanos(10));
        assert_eq!(h.len(), 2);
        assert_eq!(h.max(), h.highest_equivalent(250));
        let s = LoadStats::from(&h, 2, 0, 1.0, None);
        assert_eq!(s.rps, 2.0);
        assert_eq!(s.error_rate(), 0.0);
    }
}
