//! The run: the preflight (is the gateway there, does it take the key, which upstreams does it
//! have), then every call, interleaved, `--concurrency` at a time, under a progress bar.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::args::{Mode, Options};
use super::measure::{self, CallSpec, Sample};
use crate::driver::{transport_error, UpstreamClient};

/// One row of the result: a model, a pin (or none) and a mode.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    pub model: String,
    pub region: Option<String>,
    pub mode: Mode,
}

impl Target {
    pub fn label(&self) -> String {
        format!(
            "{} @ {} ({})",
            self.model,
            self.region.as_deref().unwrap_or("auto"),
            self.mode.as_str()
        )
    }
}

/// The rows, model by model, then pin, then mode (the order of the command line).
pub fn targets(o: &Options) -> Vec<Target> {
    let mut v = Vec::new();
    for model in &o.models {
        for region in &o.regions {
            for mode in &o.modes {
                v.push(Target {
                    model: model.clone(),
                    region: region.clone(),
                    mode: *mode,
                });
            }
        }
    }
    v
}

/// The order of the calls: round after round, each calling every row once, so that a change
/// in the network or an upstream during the run falls on every row alike.
pub fn schedule(rows: usize, calls: u32) -> Vec<usize> {
    (0..calls).flat_map(|_| 0..rows).collect()
}

/// One upstream as `GET /v1/gateway/status` lists it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Upstream {
    pub name: String,
    pub region: String,
    pub state: String,
}

/// What the preflight learned of the gateway.
#[derive(Debug, Clone, Default, Serialize)]
pub struct GatewayInfo {
    pub url: String,
    /// From `GET /health`, when it answers as the gateway does.
    pub runtime: Option<String>,
    pub version: Option<String>,
    pub region: Option<String>,
    /// From `GET /v1/gateway/status`; `None` when the endpoint is not there.
    pub upstreams: Option<Vec<Upstream>>,
}

impl GatewayInfo {
    /// The region of the upstream named `name`, when the status listed it.
    pub fn region_of(&self, name: &str) -> Option<&str> {
        self.upstreams
            .as_ref()?
            .iter()
            .find(|u| u.name == name)
            .map(|u| u.region.as_str())
    }

    /// Whether the upstream `name` is what pin `pin` selects (the router's rule: the name or
    /// the region, in any case). Unknown upstreams compare by name only.
    pub fn matches_pin(&self, name: &str, pin: &str) -> bool {
        name.eq_ignore_ascii_case(pin)
            || self
                .region_of(name)
                .is_some_and(|r| r.eq_ignore_ascii_case(pin))
    }
}

/// Headers of every call: the key (marked sensitive, so HTTP/2 never indexes it), the body's
/// type, the cache bypass, and who is calling.
pub fn common_headers(key: &str) -> Result<HeaderMap, String> {
    let mut auth = HeaderValue::from_str(&format!("Bearer {key}"))
        .map_err(|_| "the key has characters an HTTP header cannot carry".to_string())?;
    auth.set_sensitive(true);
    let mut h = HeaderMap::new();
    h.insert(AUTHORIZATION, auth);
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    // `no-store`: the gateway neither answers from its cache nor stores the answer (`no-cache`
    // would refresh the entry, writing probe answers into the cache).
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-store"),
    );
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("fly-fallback-probe/", env!("CARGO_PKG_VERSION"))),
    );
    Ok(h)
}

/// Why the gateway cannot be probed (exit 1).
pub type Fatal = String;

async fn get(
    client: &UpstreamClient,
    url: &str,
    headers: Option<&HeaderMap>,
    timeout: Duration,
) -> Result<(StatusCode, Bytes), Fatal> {
    let mut builder = Request::builder().method(Method::GET).uri(url);
    if let (Some(h), Some(extra)) = (builder.headers_mut(), headers) {
        h.extend(extra.clone());
    }
    let request = builder
        .body(Full::new(Bytes::new()))
        .map_err(|e| format!("cannot build a request for {url}: {e}"))?;
    let call = async {
        let response = client.request(request).await.map_err(|e| {
            let kind = transport_error(&e).as_str();
            let why = match kind {
                "refused" => "connection refused (is the gateway running? is --url right?)",
                "dns" => "the host name does not resolve",
                "tls" => "the TLS handshake failed",
                "timed_out" => "connecting timed out",
                _ => "the request failed",
            };
            format!(
                "cannot reach the gateway at {url}: {why} ({})",
                measure::innermost(&e)
            )
        })?;
        let status = response.status();
        let body = Limited::new(response.into_body(), 1 << 20)
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        Ok((status, body))
    };
    tokio::time::timeout(timeout, call)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "cannot reach the gateway at {url}: no answer within {} s (--timeout-secs)",
                timeout.as_secs()
            ))
        })
}

/// Checks that the gateway answers and takes the key, and learns its upstreams' regions.
pub async fn preflight(
    client: &UpstreamClient,
    base: &str,
    headers: &HeaderMap,
    timeout: Duration,
) -> Result<GatewayInfo, Fatal> {
    let mut info = GatewayInfo {
        url: base.to_string(),
        ..GatewayInfo::default()
    };
    // No key: it says which runtime and region answer, and whether anything is there at all.
    let (status, body) = get(client, &format!("{base}/health"), None, timeout).await?;
    if status.is_success() {
        if let Ok(v) = serde_json::from_slice::<Value>(&body) {
            let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
            info.runtime = s("runtime");
            info.version = s("version");
            info.region = s("region").filter(|r| !r.is_empty());
        }
    }
    let url = format!("{base}/v1/gateway/status");
    let (status, body) = get(client, &url, Some(headers), timeout).await?;
    match status.as_u16() {
        200..=299 => {
            info.upstreams = serde_json::from_slice::<Value>(&body)
                .ok()
                .and_then(|v| upstreams(&v));
        }
        401 | 403 => {
            let why = measure::error_message(&body).unwrap_or_else(|| status.to_string());
            return Err(format!(
                "the gateway refused the client key (HTTP {}, {why}): check GATEWAY_KEY or \
                 --key-file",
                status.as_u16()
            ));
        }
        // Not this gateway, or an older one: the calls will tell whether the key is taken.
        _ => {}
    }
    Ok(info)
}

fn upstreams(v: &Value) -> Option<Vec<Upstream>> {
    let list = v.get("upstreams")?.as_array()?;
    Some(
        list.iter()
            .filter_map(|u| {
                let s = |k: &str| u.get(k).and_then(Value::as_str).map(str::to_string);
                let name = s("name")?;
                Some(Upstream {
                    region: s("region").unwrap_or_else(|| name.clone()),
                    state: s("state").unwrap_or_default(),
                    name,
                })
            })
            .collect(),
    )
}

/// The pins that match no upstream of the status (the gateway ignores such a pin and routes
/// as if there were none).
pub fn unknown_pins<'a>(info: &GatewayInfo, pins: &'a [Option<String>]) -> Vec<&'a str> {
    let Some(list) = &info.upstreams else {
        return Vec::new();
    };
    pins.iter()
        .flatten()
        .filter(|p| {
            !list
                .iter()
                .any(|u| u.name.eq_ignore_ascii_case(p) || u.region.eq_ignore_ascii_case(p))
        })
        .map(String::as_str)
        .collect()
}

/// The progress bar: on standard error, drawn only when it is a terminal (indicatif hides
/// it otherwise, so logs and pipes get no control characters).
pub fn progress(calls: u64) -> ProgressBar {
    let bar = ProgressBar::new(calls);
    if let Ok(style) = ProgressStyle::with_template(
        "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} calls (eta {eta}) {wide_msg}",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// Everything the workers share.
pub struct Run {
    pub client: UpstreamClient,
    pub endpoint: String,
    pub headers: HeaderMap,
    pub targets: Vec<Target>,
    /// The pin of each target as a header value (checked once, before any call).
    pub pins: Vec<Option<HeaderValue>>,
    pub prompt: String,
    pub max_tokens: u32,
    pub timeout: Duration,
    pub run_id: String,
    pub jobs: Vec<usize>,
    pub next: AtomicUsize,
    /// The samples of each target, in the order they completed.
    pub results: Mutex<Vec<Vec<Sample>>>,
    pub progress: ProgressBar,
}

impl Run {
    /// How many calls have completed.
    pub fn done(&self) -> u64 {
        self.results
            .lock()
            .map(|r| r.iter().map(|v| v.len() as u64).sum())
            .unwrap_or(0)
    }

    pub fn samples(&self) -> Vec<Vec<Sample>> {
        self.results
            .lock()
            .map(|r| r.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

/// Runs every call with `concurrency` workers, each taking the next call of the schedule.
pub async fn run_all(run: Arc<Run>, concurrency: usize) {
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..concurrency.max(1) {
        let run = run.clone();
        workers.spawn(async move { worker(&run).await });
    }
    while workers.join_next().await.is_some() {}
}

async fn worker(run: &Run) {
    loop {
        let i = run.next.fetch_add(1, Ordering::Relaxed);
        let Some(&t) = run.jobs.get(i) else {
            return;
        };
        let (Some(target), Some(pin)) = (run.targets.get(t), run.pins.get(t)) else {
            return;
        };
        run.progress.set_message(target.label());
        let request_id = format!("{}-{}", run.run_id, i + 1);
        let spec = CallSpec {
            endpoint: &run.endpoint,
            headers: &run.headers,
            model: &target.model,
            region: pin.as_ref(),
            mode: target.mode,
            prompt: &run.prompt,
            max_tokens: run.max_tokens,
            timeout: run.timeout,
            request_id: &request_id,
        };
        let sample = measure::call(&run.client, &spec).await;
        if let Ok(mut r) = run.results.lock() {
            if let Some(v) = r.get_mut(t) {
                v.push(sample);
            }
        }
        run.progress.inc(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_call_every_row_once() {
        assert_eq!(schedule(3, 2), [0, 1, 2, 0, 1, 2]);
        assert!(schedule(0, 5).is_empty());
    }

    #[test]
    fn pins_match_names_or_regions_in_any_case() {
        let info = GatewayInfo {
            upstreams: Some(vec![
                Upstream {
                    name: "eu-1".into(),
                    region: "eu".into(),
                    state: "healthy".into(),
                },
                Upstream {
                    name: "us".into(),
                    region: "us".into(),
                    state: "healthy".into(),
                },
            ]),
            ..GatewayInfo::default()
        };
        assert!(info.matches_pin("eu-1", "EU"));
        assert!(info.matches_pin("eu-1", "eu-1"));
        assert!(!info.matches_pin("us", "eu"));
        let pins = [Some("EU".to_string()), None, Some("ap".to_string())];
        assert_eq!(unknown_pins(&info, &pins), ["ap"]);
        assert!(unknown_pins(&GatewayInfo::default(), &pins).is_empty());
    }

    #[test]
    fn the_status_lists_names_and_regions() {
        let v: Value = serde_json::from_str(
            r#"{"upstreams":[{"name":"a","region":"eu","state":"healthy"},{"name":"b"},{"region":"x"}]}"#,
        )
        .unwrap();
        assert_eq!(
            upstreams(&v).unwrap(),
            [
                Upstream {
                    name: "a".into(),
                    region: "eu".into(),
                    state: "healthy".into()
                },
                Upstream {
                    name: "b".into(),
                    region: "b".into(),
                    state: String::new()
                },
            ]
        );
        assert_eq!(upstreams(&serde_json::json!({"data": []})), None);
    }
}
