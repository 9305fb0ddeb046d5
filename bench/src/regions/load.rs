//! The simulated clients: one open-loop pacer per client location, each request sent at its
//! scheduled time on a pooled keep-alive connection (hyper's client; a new connection whenever
//! none is idle, so a request that hangs holds up no other), its latency counted from the
//! scheduled time. Every request is kept as a [`Record`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::task::JoinHandle;

use super::analysis::{Record, StatusSample, UpstreamSnap};
use super::CLIENT_KEY;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A request that has no answer after this long is an error (the gateway's deadline is 30 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(40);

pub fn http_client() -> HttpClient {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(Duration::from_secs(5)));
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(20))
        .build(c)
}

#[derive(Debug, Clone)]
pub struct ClientLoc {
    pub code: String,
    pub city: String,
    pub point: (f64, f64),
}

pub struct Gateway {
    pub addr: SocketAddr,
    pub client: HttpClient,
}

fn rel(t0: Instant, t: Instant) -> f64 {
    if t >= t0 {
        (t - t0).as_secs_f64()
    } else {
        -(t0 - t).as_secs_f64()
    }
}

/// One chat completion from `loc` (request number `k`), scheduled at `sched` (= `at_s`).
pub async fn one(gw: &Gateway, loc: &ClientLoc, k: u64, sched: Instant, at_s: f64) -> Record {
    let body = serde_json::json!({
        "model": "region-sim",
        "messages": [{"role": "user", "content": format!("hello from {} #{k}", loc.code)}],
        "temperature": 0.7,
    })
    .to_string();
    let mut rec = Record {
        client: loc.code.clone(),
        at_s,
        latency_ms: None,
        status: 0,
        upstream: None,
        attempts: 0,
        error: None,
    };
    let req = match Request::builder()
        .method(Method::POST)
        .uri(format!("http://{}/v1/chat/completions", gw.addr))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "application/json")
        .header("cache-control", "no-store")
        .header("fly-region", &loc.code)
        .body(Full::new(Bytes::from(body)))
    {
        Ok(r) => r,
        Err(e) => {
            rec.error = Some(e.to_string());
            return rec;
        }
    };
    let exchange = async {
        let resp = gw.client.request(req).await.map_err(|e| format!("{e:?}"))?;
        let (parts, body) = resp.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| format!("body: {e}"))?
            .to_bytes();
        Ok::<_, String>((parts, body))
    };
    match tokio::time::timeout(CLIENT_TIMEOUT, exchange).await {
        Ok(Ok((parts, body))) => {
            rec.latency_ms = Some(sched.elapsed().as_secs_f64() * 1000.0);
            rec.status = parts.status.as_u16();
            let h = |n: &str| {
                parts
                    .headers
                    .get(n)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string)
            };
            rec.upstream = h("x-gateway-upstream");
            rec.attempts = h("x-gateway-attempts")
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            if rec.status != 200 {
                let code = serde_json::from_slice::<serde_json::Value>(&body)
                    .ok()
                    .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
                    .unwrap_or_default();
                rec.error = Some(format!("{} {code}", rec.status).trim().to_string());
            }
        }
        Ok(Err(e)) => rec.error = Some(e),
        Err(_) => rec.error = Some(format!("no answer within {CLIENT_TIMEOUT:?}")),
    }
    rec
}

pub struct Run {
    pacers: Vec<JoinHandle<Vec<JoinHandle<Record>>>>,
}

/// Starts every location's pacer: requests at `rate` per second each, scheduled from
/// `t_start` to `t_end` seconds after `t0` (locations staggered within a period).
pub fn start(
    gw: Arc<Gateway>,
    clients: &[ClientLoc],
    rate: f64,
    t0: Instant,
    t_start: f64,
    t_end: f64,
) -> Run {
    let n = clients.len().max(1) as f64;
    let pacers = clients
        .iter()
        .enumerate()
        .map(|(ci, loc)| {
            let gw = gw.clone();
            let loc = loc.clone();
            tokio::spawn(async move {
                let mut handles = Vec::new();
                let offset = ci as f64 / (rate * n);
                for k in 0u64.. {
                    let at_s = t_start + offset + k as f64 / rate;
                    if at_s >= t_end {
                        break;
                    }
                    let sched = if at_s >= 0.0 {
                        t0 + Duration::from_secs_f64(at_s)
                    } else {
                        t0 - Duration::from_secs_f64(-at_s)
                    };
                    tokio::time::sleep_until(sched.into()).await;
                    let gw = gw.clone();
                    let loc = loc.clone();
                    handles.push(tokio::spawn(
                        async move { one(&gw, &loc, k, sched, at_s).await },
                    ));
                }
                handles
            })
        })
        .collect();
    Run { pacers }
}

impl Run {
    /// Waits for the pacers, then for every request (each bounded by the client's timeout).
    pub async fn finish(self) -> Vec<Record> {
        let mut out = Vec::new();
        for p in self.pacers {
            if let Ok(handles) = p.await {
                for h in handles {
                    if let Ok(r) = h.await {
                        out.push(r);
                    }
                }
            }
        }
        out
    }
}

/// `GET /v1/gateway/status`, reduced to what the report shows.
pub async fn status(gw: &Gateway) -> Vec<UpstreamSnap> {
    let Ok(req) = Request::builder()
        .method(Method::GET)
        .uri(format!("http://{}/v1/gateway/status", gw.addr))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(Full::new(Bytes::new()))
    else {
        return vec![];
    };
    let fetch = async {
        let resp = gw.client.request(req).await.ok()?;
        let body = resp.into_body().collect().await.ok()?.to_bytes();
        serde_json::from_slice::<serde_json::Value>(&body).ok()
    };
    let Ok(Some(v)) = tokio::time::timeout(Duration::from_secs(2), fetch).await else {
        return vec![];
    };
    v["upstreams"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|u| UpstreamSnap {
                    name: u["name"].as_str().unwrap_or("?").to_string(),
                    state: u["state"].as_str().unwrap_or("?").to_string(),
                    requests: u["requests"].as_u64().unwrap_or(0),
                    errors: u["errors"].as_u64().unwrap_or(0),
                    in_flight: u["in_flight"].as_u64().unwrap_or(0),
                    latency_ms: u["latency_ms"].as_f64(),
                    last_error: u["last_error"]["kind"].as_str().map(str::to_string),
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Samples the status every `every` seconds from `t_start` to `t_end` (relative to `t0`).
pub fn poll_status(
    gw: Arc<Gateway>,
    t0: Instant,
    t_start: f64,
    t_end: f64,
    every: f64,
) -> JoinHandle<Vec<StatusSample>> {
    tokio::spawn(async move {
        let mut out = Vec::new();
        let mut t = t_start;
        while t <= t_end + 1e-9 {
            let at = if t >= 0.0 {
                t0 + Duration::from_secs_f64(t)
            } else {
                t0 - Duration::from_secs_f64(-t)
            };
            tokio::time::sleep_until(at.into()).await;
            let upstreams = status(&gw).await;
            out.push(StatusSample {
                at_s: rel(t0, Instant::now()),
                upstreams,
            });
            t += every;
        }
        out
    })
}
