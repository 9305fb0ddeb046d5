//! The settings-bound pieces of the gateway's decisions, built once at start-up: admission
//! (route, authentication, content type), the plan (answer locally or call the upstream), the
//! cache plan, and how an upstream answer travels back. [`crate::Exchange`] strings them
//! together for each request; the runtimes never call them directly.

use bytes::Bytes;
use http::HeaderValue;
use serde::Serialize;

use crate::auth::ClientId;
use crate::config::{ModelEntry, Settings};
use crate::error::GatewayError;
use crate::route::{self, Route};
use crate::sse::{usage_of_json, Usage};
use crate::validate::{self, check_content_type};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

#[derive(Debug, Clone, Copy, Default)]
pub struct RequestHead<'a> {
    pub method: &'a str,
    /// The path without the query string.
    pub path: &'a str,
    pub authorization: Option<&'a str>,
    pub content_type: Option<&'a str>,
}

#[derive(Debug, Clone)]
pub struct Admitted {
    pub route: Route,
    pub client: Option<ClientId>,
    /// The key's models and limits, when it is one of `keys`.
    pub policy: Option<std::sync::Arc<crate::limits::KeyPolicy>>,
}

impl Admitted {
    pub fn reads_body(&self) -> bool {
        self.route.reads_body()
    }
}

/// The path below an upstream's base URL for `route`, with the client's query string.
fn upstream_path(route: Route, query: Option<&str>) -> String {
    let suffix = route.upstream_suffix();
    match query.filter(|q| !q.is_empty()) {
        Some(q) => format!("{suffix}?{q}"),
        None => suffix.to_string(),
    }
}

/// An answer the gateway gives without calling the upstream.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Bytes,
}

/// A call to make to the upstream. The body sent is the client's, byte for byte.
#[derive(Debug, Clone)]
pub struct Forward {
    pub method: &'static str,
    /// Below each upstream's base URL, with the client's query string.
    pub path: String,
    pub model: Option<String>,
    pub stream: bool,
    /// The parsed request body (inference routes), kept so later decisions (the cache key) do
    /// not parse the body again.
    pub request: Option<serde_json::Map<String, serde_json::Value>>,
}

#[derive(Debug, Clone)]
pub enum Plan {
    Reply(Reply),
    Forward(Forward),
    /// The status of the upstreams (built from the router's state).
    Status,
    /// The estimate endpoint (needs the request's hint headers).
    Estimate,
    /// `GET /v1/gateway/key`: the key's limits and what is left of them (needs the limiter).
    Key,
    /// `GET /v1/gateway/summary` (built from the router's tally).
    Summary,
    /// `GET /dashboard`: the page, with its own security headers.
    Dashboard,
}

/// How an upstream response body travels back to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// A successful event stream: chunks go to the client as they arrive, through an
    /// [`crate::sse::SseObserver`].
    Stream,
    /// A successful non-streamed answer: read whole (bounded), checked to be JSON, then sent with
    /// its length. A client cannot use half a JSON document, and the usage inside is accounted.
    Buffered,
    /// An upstream error: status, body and headers pass through as they are.
    PassThrough,
}

pub struct Gateway {
    settings: Settings,
    runtime: &'static str,
    health_body: Bytes,
    models_body: Option<Bytes>,
}

#[derive(Serialize)]
struct Health<'a> {
    status: &'static str,
    version: &'static str,
    runtime: &'a str,
    region: Option<&'a str>,
}

#[derive(Serialize)]
struct ModelList<'a> {
    object: &'static str,
    data: Vec<ModelObject<'a>>,
}

#[derive(Serialize)]
struct ModelObject<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    owned_by: &'a str,
}

fn models_json(models: &[ModelEntry]) -> Bytes {
    let list = ModelList {
        object: "list",
        data: models
            .iter()
            .map(|m| ModelObject {
                id: &m.id,
                object: "model",
                created: m.created,
                owned_by: &m.owned_by,
            })
            .collect(),
    };
    Bytes::from(serde_json::to_vec(&list).unwrap_or_default())
}

impl Gateway {
    /// Builds everything that does not depend on a request once, at start-up.
    pub fn new(settings: Settings, runtime: &'static str) -> Gateway {
        let health = Health {
            status: "ok",
            version: VERSION,
            runtime,
            region: settings.region.as_deref(),
        };
        let health_body = Bytes::from(serde_json::to_vec(&health).unwrap_or_default());
        let models_body = (!settings.models.is_empty()).then(|| models_json(&settings.models));
        Gateway {
            settings,
            runtime,
            health_body,
            models_body,
        }
    }

    /// A gateway for a runtime whose settings are invalid: it serves nothing (every request is
    /// refused with the configuration error) but lets the request be logged like any other.
    pub fn unconfigured(runtime: &'static str) -> Gateway {
        Gateway::new(Settings::unconfigured(), runtime)
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    pub fn runtime(&self) -> &'static str {
        self.runtime
    }

    pub fn admit(&self, head: &RequestHead<'_>) -> Result<Admitted, GatewayError> {
        let route = route::resolve(head.method, head.path)?;
        let (client, policy) = if route.requires_auth() {
            let c = self.settings.keys.authenticate(head.authorization)?;
            (Some(c.id.clone()), c.policy.clone())
        } else {
            (None, None)
        };
        if route.reads_body() {
            check_content_type(head.content_type)?;
        }
        Ok(Admitted {
            route,
            client,
            policy,
        })
    }

    /// Rejects a body whose declared length is over the limit before any of it is read.
    pub fn check_declared_length(&self, declared: Option<u64>) -> Result<(), GatewayError> {
        let limit = self.settings.max_body_bytes;
        match declared {
            Some(n) if n > limit => Err(GatewayError::PayloadTooLarge { limit }),
            _ => Ok(()),
        }
    }

    pub fn plan(
        &self,
        admitted: &Admitted,
        query: Option<&str>,
        body: &[u8],
    ) -> Result<Plan, GatewayError> {
        match admitted.route {
            Route::Health => Ok(Plan::Reply(Reply {
                status: 200,
                content_type: "application/json",
                body: self.health_body.clone(),
            })),
            Route::Models => match &self.models_body {
                Some(body) => Ok(Plan::Reply(Reply {
                    status: 200,
                    content_type: "application/json",
                    // A key limited to some models sees those only.
                    body: match admitted
                        .policy
                        .as_ref()
                        .filter(|p| p.models.is_restricted())
                    {
                        Some(p) => {
                            let mine: Vec<ModelEntry> = self
                                .settings
                                .models
                                .iter()
                                .filter(|m| p.models.allows_model(&m.id))
                                .cloned()
                                .collect();
                            models_json(&mine)
                        }
                        None => body.clone(),
                    },
                })),
                None => Ok(Plan::Forward(Forward {
                    method: "GET",
                    path: upstream_path(Route::Models, query),
                    model: None,
                    stream: false,
                    request: None,
                })),
            },
            Route::Status => Ok(Plan::Status),
            Route::Key => Ok(Plan::Key),
            Route::Summary => Ok(Plan::Summary),
            Route::Dashboard => Ok(Plan::Dashboard),
            Route::Estimate => Ok(Plan::Estimate),
            route => {
                let req = validate::validate(route, body)?;
                Ok(Plan::Forward(Forward {
                    method: "POST",
                    path: upstream_path(route, query),
                    model: Some(req.model),
                    stream: req.stream,
                    request: Some(req.body),
                }))
            }
        }
    }

    /// What a cached answer depends on besides the request: the logical route (the path and
    /// the upstreams that may serve the model), so a hit does not depend on which region
    /// answered, and a failover does not empty the cache; with `routing.cache_per_region`, the
    /// region of the first choice too.
    pub fn cache_route(&self, forward: &Forward, first_choice: Option<usize>) -> String {
        let model = forward.model.as_deref().unwrap_or("");
        // Sorted by an ordered insert: a handful of names, and no sort code in the Worker.
        let mut names: Vec<&str> = Vec::new();
        for u in self.settings.upstreams.iter().filter(|u| u.serves(model)) {
            let at = names.partition_point(|n| *n < u.name.as_str());
            names.insert(at, u.name.as_str());
        }
        let mut route = format!("{}|{}", names.join(","), forward.path);
        if self.settings.routing.cache_per_region {
            if let Some(u) = first_choice.and_then(|i| self.settings.upstreams.get(i)) {
                route.push('@');
                route.push_str(&u.region);
            }
        }
        route
    }

    /// The probe of upstream `i`: `GET {base_url}/models` with its key (costs no tokens).
    pub fn probe(&self, i: usize) -> Option<crate::exchange::Attempt> {
        let u = self.settings.upstreams.get(i)?;
        let mut headers = u.headers.clone();
        if let Some(auth) = &u.authorization {
            headers.insert(http::header::AUTHORIZATION, auth.clone());
        }
        headers.insert(
            http::header::ACCEPT_ENCODING,
            HeaderValue::from_static("identity"),
        );
        Some(crate::exchange::Attempt {
            id: crate::exchange::AttemptId(0),
            upstream: i,
            upstream_name: u.name.clone(),
            method: "GET",
            url: format!("{}/models", u.base_url),
            headers,
            body: Bytes::new(),
        })
    }

    /// A probe's outcome: `status` of the answer, or the transport error. Returns whether the
    /// upstream is healthy and a detail for the status endpoint.
    pub fn probe_verdict(
        &self,
        answer: Result<u16, crate::error::TransportError>,
    ) -> (bool, String) {
        match answer {
            Ok(status) => ((200..300).contains(&status), format!("http_{status}")),
            Err(e) => (false, e.as_str().to_string()),
        }
    }

    /// The cache decision for a [`Forward`] from [`Gateway::plan`]; `headers` are the client's
    /// request headers. See [`crate::cache`] for the steps that follow.
    pub fn cache_plan<'h, I>(
        &self,
        admitted: &Admitted,
        forward: &Forward,
        route_key: &str,
        headers: I,
    ) -> crate::cache::CachePlan
    where
        I: IntoIterator<Item = (&'h str, &'h [u8])> + Clone,
    {
        crate::cache::plan(
            &self.settings.cache,
            admitted.route,
            admitted.client.as_ref().map(|c| c.0.as_str()),
            route_key,
            forward.model.as_deref().unwrap_or(""),
            forward.stream,
            forward.request.as_ref(),
            headers,
        )
    }

    /// How an upstream answer travels back. `stream_requested`: the client asked for a stream,
    /// so whatever the upstream sends goes out as it arrives (an upstream that answers a stream
    /// request with one JSON document is relayed, not held back to be checked).
    pub fn response_mode(
        &self,
        status: u16,
        content_type: Option<&str>,
        stream_requested: bool,
    ) -> ResponseMode {
        if !(200..300).contains(&status) {
            return ResponseMode::PassThrough;
        }
        let is_sse = content_type
            .map(|c| {
                c.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("text/event-stream")
            })
            .unwrap_or(false);
        if is_sse {
            ResponseMode::Stream
        } else if stream_requested {
            ResponseMode::PassThrough
        } else {
            ResponseMode::Buffered
        }
    }

    /// Checks a buffered upstream answer; returns the usage it reports.
    pub fn check_buffered(&self, body: &[u8]) -> Result<Option<Usage>, GatewayError> {
        // One pass in the usual case: reading the usage parses (and so checks) the whole
        // document. Only a body that is not an object with a well-typed usage takes a second
        // pass to tell valid JSON from garbage.
        if let Some(usage) = usage_of_json(body) {
            return Ok(Some(usage));
        }
        match serde_json::from_slice::<serde::de::IgnoredAny>(body) {
            Ok(_) => Ok(None),
            Err(_) => Err(GatewayError::UpstreamInvalidResponse),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gateway(config: &str) -> Gateway {
        let settings = Settings::from_lookup(|k| match k {
            "UPSTREAM_BASE_URL" => Some("http://up.example/v1".into()),
            "UPSTREAM_API_KEY" => Some("sk-up".into()),
            "GATEWAY_API_KEYS" => Some("client-1".into()),
            "GATEWAY_CONFIG" => Some(config.into()),
            "FLY_REGION" => Some("ams".into()),
            _ => None,
        })
        .unwrap();
        Gateway::new(settings, "test")
    }

    fn head<'a>(method: &'a str, path: &'a str, auth: Option<&'a str>) -> RequestHead<'a> {
        RequestHead {
            method,
            path,
            authorization: auth,
            content_type: Some("application/json"),
        }
    }

    #[test]
    fn the_cache_route_names_the_upstreams_serving_the_model_in_order() {
        let settings = Settings::from_lookup(|k| match k {
            "GATEWAY_API_KEYS" => Some("client-1".into()),
            "GATEWAY_CONFIG" => Some(
                r#"{"upstreams": [
                    {"name": "us", "base_url": "http://us.example/v1"},
                    {"name": "eu", "base_url": "http://eu.example/v1"},
                    {"name": "ap", "base_url": "http://ap.example/v1", "models": ["other"]},
                    {"name": "asia", "base_url": "http://asia.example/v1"}
                ]}"#
                .into(),
            ),
            _ => None,
        })
        .unwrap();
        let gw = Gateway::new(settings, "test");
        let forward = Forward {
            method: "POST",
            path: "/chat/completions".into(),
            model: Some("m".into()),
            stream: false,
            request: None,
        };
        assert_eq!(
            gw.cache_route(&forward, Some(0)),
            "asia,eu,us|/chat/completions"
        );
    }

    #[test]
    fn health_needs_no_key_and_names_version_and_region() {
        let gw = gateway("{}");
        let a = gw.admit(&head("GET", "/health", None)).unwrap();
        let Plan::Reply(r) = gw.plan(&a, None, b"").unwrap() else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["region"], "ams");
        assert_eq!(v["version"], VERSION);
    }

    #[test]
    fn inference_routes_need_a_valid_key_before_anything_else() {
        let gw = gateway("{}");
        assert_eq!(
            gw.admit(&head("POST", "/v1/chat/completions", None))
                .unwrap_err()
                .status(),
            401
        );
        assert_eq!(
            gw.admit(&head("POST", "/v1/chat/completions", Some("Bearer nope")))
                .unwrap_err()
                .status(),
            401
        );
        assert!(gw
            .admit(&head(
                "POST",
                "/v1/chat/completions",
                Some("Bearer client-1")
            ))
            .is_ok());
    }

    #[test]
    fn chat_request_is_forwarded_to_the_matching_upstream_path_with_query() {
        let gw = gateway("{}");
        let a = gw
            .admit(&head(
                "POST",
                "/v1/chat/completions",
                Some("Bearer client-1"),
            ))
            .unwrap();
        let Plan::Forward(f) = gw
            .plan(
                &a,
                Some("api-version=1"),
                br#"{"model":"m","messages":[{"role":"user","content":"x"}],"stream":true}"#,
            )
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(f.path, "/chat/completions?api-version=1");
        assert!(f.stream);
        assert_eq!(f.model.as_deref(), Some("m"));
        assert_eq!(
            gw.settings().upstreams[0]
                .authorization
                .as_ref()
                .and_then(|v| v.to_str().ok()),
            Some("Bearer sk-up")
        );
    }

    #[test]
    fn models_come_from_config_or_from_the_upstream() {
        let gw = gateway(r#"{"models":[{"id":"gpt-x","owned_by":"me","created":5}]}"#);
        let a = gw
            .admit(&head("GET", "/v1/models", Some("Bearer client-1")))
            .unwrap();
        let Plan::Reply(r) = gw.plan(&a, None, b"").unwrap() else {
            panic!()
        };
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(v["object"], "list");
        assert_eq!(v["data"][0]["id"], "gpt-x");
        assert_eq!(v["data"][0]["object"], "model");
        assert_eq!(v["data"][0]["owned_by"], "me");

        let gw = gateway("{}");
        let a = gw
            .admit(&head("GET", "/v1/models", Some("Bearer client-1")))
            .unwrap();
        let Plan::Forward(f) = gw.plan(&a, None, b"").unwrap() else {
            panic!()
        };
        assert_eq!(f.path, "/models");
        assert_eq!(f.method, "GET");
    }

    #[test]
    fn response_mode_streams_sse_buffers_json_and_passes_errors_through() {
        let gw = gateway("{}");
        assert_eq!(
            gw.response_mode(200, Some("text/event-stream; charset=utf-8"), true),
            ResponseMode::Stream
        );
        assert_eq!(
            gw.response_mode(200, Some("application/json"), false),
            ResponseMode::Buffered
        );
        assert_eq!(
            gw.response_mode(200, Some("application/json"), true),
            ResponseMode::PassThrough,
            "a stream was asked for: relayed, not buffered"
        );
        assert_eq!(
            gw.response_mode(429, Some("application/json"), false),
            ResponseMode::PassThrough
        );
        assert_eq!(
            gw.response_mode(500, Some("text/event-stream"), true),
            ResponseMode::PassThrough
        );
    }

    #[test]
    fn garbage_upstream_answers_are_502() {
        let gw = gateway("{}");
        assert_eq!(
            gw.check_buffered(b"{\"id\": \"tru").unwrap_err().status(),
            502
        );
        assert_eq!(
            gw.check_buffered(
                br#"{"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#
            )
            .unwrap()
            .unwrap()
            .total_tokens,
            2
        );
    }
}
