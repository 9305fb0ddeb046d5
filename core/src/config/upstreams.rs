//! `upstreams` and `routing` in `GATEWAY_CONFIG`: the regions the gateway may call and how it
//! moves between them. Parsed and checked once; keys are read from the secrets the config names
//! (never from the config itself).

use std::collections::BTreeSet;
use std::time::Duration;

use http::HeaderValue;
use serde::Deserialize;

use super::{config_error, is_header_safe, names, validate_base_url};
use crate::error::ConfigError;

/// One entry of `upstreams`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    pub name: String,
    pub base_url: String,
    /// The environment variable (Fly) or secret (Worker) that holds this upstream's key.
    #[serde(default)]
    pub api_key_secret: Option<String>,
    /// Defaults to the name.
    #[serde(default)]
    pub region: Option<String>,
    #[serde(default)]
    pub location: Option<LatLon>,
    /// Share of the load among equally near upstreams (default 1).
    #[serde(default)]
    pub weight: Option<u32>,
    /// The models this upstream serves; absent means every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Other upstreams to try next, in order, when this one is the first choice.
    #[serde(default)]
    pub fallbacks: Vec<String>,
    /// Headers the operator sends with every call to this upstream (e.g. `openai-organization`,
    /// a provider's version header); they replace the client's of the same name.
    #[serde(default)]
    pub headers: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LatLon {
    pub lat: f64,
    pub lon: f64,
}

/// `routing` in `GATEWAY_CONFIG`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    #[serde(default)]
    pub max_attempts: Option<u32>,
    #[serde(default)]
    pub deadline_ms: Option<u64>,
    #[serde(default)]
    pub connect_timeout_ms: Option<u64>,
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    #[serde(default)]
    pub stream_idle_timeout_ms: Option<u64>,
    #[serde(default)]
    pub keepalive_after_ms: Option<u64>,
    #[serde(default)]
    pub keepalive_interval_ms: Option<u64>,
    #[serde(default)]
    pub eject_default_secs: Option<u64>,
    #[serde(default)]
    pub eject_max_secs: Option<u64>,
    #[serde(default)]
    pub retry_backoff_ms: Option<u64>,
    #[serde(default)]
    pub breaker: BreakerConfig,
    #[serde(default)]
    pub health: HealthConfig,
    /// Keep each region's cached answers apart (default false: one entry per logical route).
    #[serde(default)]
    pub cache_per_region: Option<bool>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BreakerConfig {
    #[serde(default)]
    pub failures: Option<u32>,
    #[serde(default)]
    pub cooldown_secs: Option<u64>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HealthConfig {
    /// 0 turns probing off.
    #[serde(default)]
    pub interval_secs: Option<u64>,
    #[serde(default)]
    pub unhealthy_after: Option<u32>,
    #[serde(default)]
    pub healthy_after: Option<u32>,
}

/// An upstream, resolved: its key read, its fallbacks turned into indices.
#[derive(Clone)]
pub struct UpstreamSettings {
    pub name: String,
    /// Without a trailing slash, e.g. `https://api.openai.com/v1`.
    pub base_url: String,
    /// `host[:port]` of the base URL: what the status endpoint shows.
    pub host: String,
    pub region: String,
    pub location: Option<(f64, f64)>,
    pub weight: u32,
    /// `None`: every model.
    pub models: Option<BTreeSet<String>>,
    /// Indices into [`super::Settings::upstreams`].
    pub fallbacks: Vec<usize>,
    /// `Bearer <key>`, marked sensitive, when the upstream needs a key.
    pub authorization: Option<HeaderValue>,
    /// The operator's headers for this upstream (values marked sensitive: never printed).
    pub headers: http::HeaderMap,
}

impl std::fmt::Debug for UpstreamSettings {
    // The key is a secret: never printed, even in debug output.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamSettings")
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("region", &self.region)
            .field("location", &self.location)
            .field("weight", &self.weight)
            .field("models", &self.models)
            .field("fallbacks", &self.fallbacks)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl UpstreamSettings {
    pub fn serves(&self, model: &str) -> bool {
        self.models.as_ref().is_none_or(|m| m.contains(model))
    }
}

/// Defaults of `routing`.
pub mod defaults {
    pub const MAX_ATTEMPTS: u32 = 3;
    pub const DEADLINE_MS: u64 = 300_000;
    pub const CONNECT_TIMEOUT_MS: u64 = 5_000;
    pub const KEEPALIVE_AFTER_MS: u64 = 5_000;
    pub const KEEPALIVE_INTERVAL_MS: u64 = 10_000;
    pub const EJECT_DEFAULT_SECS: u64 = 3;
    pub const EJECT_MAX_SECS: u64 = 300;
    pub const RETRY_BACKOFF_MS: u64 = 100;
    pub const BREAKER_FAILURES: u32 = 5;
    pub const BREAKER_COOLDOWN_SECS: u64 = 30;
    /// A re-opened breaker's cooldown doubles up to this many times the base.
    pub const BREAKER_MAX_COOLDOWN_FACTOR: u32 = 10;
    pub const HEALTH_INTERVAL_SECS: u64 = 30;
    pub const UNHEALTHY_AFTER: u32 = 2;
    pub const HEALTHY_AFTER: u32 = 1;
}

/// `routing`, resolved.
#[derive(Debug, Clone, PartialEq)]
pub struct RoutingSettings {
    pub max_attempts: u32,
    pub deadline: Duration,
    pub connect_timeout: Duration,
    pub first_byte_timeout: Duration,
    pub stream_idle_timeout: Duration,
    pub keepalive_after: Duration,
    pub keepalive_interval: Duration,
    pub eject_default: Duration,
    pub eject_max: Duration,
    /// Base of the exponential backoff between two attempts on the same upstream.
    pub retry_backoff: Duration,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
    pub breaker_max_cooldown: Duration,
    /// `None`: no probes.
    pub health_interval: Option<Duration>,
    pub unhealthy_after: u32,
    pub healthy_after: u32,
    pub cache_per_region: bool,
}

impl RoutingSettings {
    /// `first_byte` and `idle` are the legacy top-level `upstream_timeout_ms` and
    /// `stream_idle_timeout_ms`, already resolved.
    pub(super) fn resolve(
        c: &RoutingConfig,
        first_byte_ms: u64,
        idle_ms: u64,
    ) -> Result<RoutingSettings, ConfigError> {
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(config_error(
                names::GATEWAY_CONFIG,
                format!("routing.{name} must be greater than 0"),
            )),
            _ => Ok(()),
        };
        positive("deadline_ms", c.deadline_ms)?;
        positive("connect_timeout_ms", c.connect_timeout_ms)?;
        positive("first_byte_timeout_ms", c.first_byte_timeout_ms)?;
        positive("stream_idle_timeout_ms", c.stream_idle_timeout_ms)?;
        positive("keepalive_interval_ms", c.keepalive_interval_ms)?;
        positive("eject_max_secs", c.eject_max_secs)?;
        positive("breaker.cooldown_secs", c.breaker.cooldown_secs)?;
        if c.max_attempts == Some(0) {
            return Err(config_error(
                names::GATEWAY_CONFIG,
                "routing.max_attempts must be at least 1",
            ));
        }
        if c.breaker.failures == Some(0) {
            return Err(config_error(
                names::GATEWAY_CONFIG,
                "routing.breaker.failures must be at least 1",
            ));
        }
        let built = RoutingSettings::build(c, first_byte_ms, idle_ms);
        if built.eject_default > built.eject_max {
            return Err(config_error(
                names::GATEWAY_CONFIG,
                "routing.eject_default_secs must not exceed routing.eject_max_secs",
            ));
        }
        Ok(built)
    }

    /// The settings of a checked (or default) `routing`.
    pub(super) fn build(c: &RoutingConfig, first_byte_ms: u64, idle_ms: u64) -> RoutingSettings {
        let ms = Duration::from_millis;
        let secs = Duration::from_secs;
        let eject_max = secs(c.eject_max_secs.unwrap_or(defaults::EJECT_MAX_SECS));
        let eject_default = secs(c.eject_default_secs.unwrap_or(defaults::EJECT_DEFAULT_SECS));
        let cooldown = secs(
            c.breaker
                .cooldown_secs
                .unwrap_or(defaults::BREAKER_COOLDOWN_SECS),
        );
        RoutingSettings {
            max_attempts: c.max_attempts.unwrap_or(defaults::MAX_ATTEMPTS).min(100),
            deadline: ms(c.deadline_ms.unwrap_or(defaults::DEADLINE_MS)),
            connect_timeout: ms(c.connect_timeout_ms.unwrap_or(defaults::CONNECT_TIMEOUT_MS)),
            first_byte_timeout: ms(c.first_byte_timeout_ms.unwrap_or(first_byte_ms)),
            stream_idle_timeout: ms(c.stream_idle_timeout_ms.unwrap_or(idle_ms)),
            keepalive_after: ms(c.keepalive_after_ms.unwrap_or(defaults::KEEPALIVE_AFTER_MS)),
            keepalive_interval: ms(c
                .keepalive_interval_ms
                .unwrap_or(defaults::KEEPALIVE_INTERVAL_MS)),
            eject_default,
            eject_max,
            retry_backoff: ms(c.retry_backoff_ms.unwrap_or(defaults::RETRY_BACKOFF_MS)),
            breaker_failures: c.breaker.failures.unwrap_or(defaults::BREAKER_FAILURES),
            breaker_cooldown: cooldown,
            breaker_max_cooldown: cooldown.saturating_mul(defaults::BREAKER_MAX_COOLDOWN_FACTOR),
            health_interval: match c
                .health
                .interval_secs
                .unwrap_or(defaults::HEALTH_INTERVAL_SECS)
            {
                0 => None,
                n => Some(secs(n)),
            },
            unhealthy_after: c
                .health
                .unhealthy_after
                .unwrap_or(defaults::UNHEALTHY_AFTER)
                .max(1),
            healthy_after: c
                .health
                .healthy_after
                .unwrap_or(defaults::HEALTHY_AFTER)
                .max(1),
            cache_per_region: c.cache_per_region.unwrap_or(false),
        }
    }
}

/// The name of the one upstream built from `UPSTREAM_BASE_URL` + `UPSTREAM_API_KEY`.
pub const DEFAULT_UPSTREAM: &str = "default";

fn authorization(key: &str) -> Option<HeaderValue> {
    let mut v = HeaderValue::from_str(&format!("Bearer {key}")).ok()?;
    v.set_sensitive(true);
    Some(v)
}

/// The single upstream of `UPSTREAM_BASE_URL` (already checked) and `UPSTREAM_API_KEY`.
pub(super) fn single(base_url: String, api_key: Option<&str>) -> UpstreamSettings {
    UpstreamSettings {
        host: host_of(&base_url),
        name: DEFAULT_UPSTREAM.to_string(),
        base_url,
        region: DEFAULT_UPSTREAM.to_string(),
        location: None,
        weight: 1,
        models: None,
        fallbacks: Vec::new(),
        authorization: api_key.and_then(authorization),
        headers: http::HeaderMap::new(),
    }
}

fn host_of(base_url: &str) -> String {
    let rest = base_url
        .split_once("://")
        .map_or(base_url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or(rest);
    // Never show credentials written into the URL.
    authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host)
        .to_string()
}

/// Resolves `upstreams`: names unique, fallbacks known, URLs valid, every named secret present.
pub(super) fn resolve(
    list: &[UpstreamConfig],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<Vec<UpstreamSettings>, ConfigError> {
    let err = |i: usize, name: &str, m: String| {
        let who = if name.is_empty() {
            format!("upstreams[{i}]")
        } else {
            format!("upstreams[{i}] ('{name}')")
        };
        config_error(names::GATEWAY_CONFIG, format!("{who}: {m}"))
    };
    if list.is_empty() {
        return Err(config_error(
            names::GATEWAY_CONFIG,
            "upstreams must list at least one upstream",
        ));
    }
    let mut seen = BTreeSet::new();
    for (i, u) in list.iter().enumerate() {
        let name = u.name.trim();
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(err(
                i,
                "",
                "name must be non-empty visible ASCII (no spaces)".into(),
            ));
        }
        if !seen.insert(name) {
            return Err(err(i, name, "the name is used twice".into()));
        }
    }
    let mut out = Vec::with_capacity(list.len());
    for (i, u) in list.iter().enumerate() {
        let name = u.name.trim();
        let base_url = validate_base_url(&u.base_url).map_err(|m| err(i, name, m))?;
        let authorization = match u.api_key_secret.as_deref().map(str::trim) {
            None => None,
            Some("") => return Err(err(i, name, "api_key_secret must not be empty".into())),
            Some(secret) => {
                let key = lookup(secret)
                    .map(|k| k.trim().to_string())
                    .filter(|k| !k.is_empty())
                    .ok_or_else(|| {
                        err(
                            i,
                            name,
                            format!("the secret {secret} named by api_key_secret is not set"),
                        )
                    })?;
                if !is_header_safe(&key) {
                    return Err(err(
                        i,
                        name,
                        format!(
                            "the secret {secret} contains characters that cannot be sent in an HTTP header"
                        ),
                    ));
                }
                authorization(&key)
            }
        };
        let location = match u.location {
            None => None,
            Some(l)
                if l.lat.is_finite()
                    && l.lon.is_finite()
                    && l.lat.abs() <= 90.0
                    && l.lon.abs() <= 180.0 =>
            {
                Some((l.lat, l.lon))
            }
            Some(_) => {
                return Err(err(
                    i,
                    name,
                    "location needs lat in -90..90 and lon in -180..180".into(),
                ))
            }
        };
        if u.weight == Some(0) {
            return Err(err(i, name, "weight must be at least 1".into()));
        }
        let mut fallbacks = Vec::with_capacity(u.fallbacks.len());
        for f in &u.fallbacks {
            let f = f.trim();
            let idx = list
                .iter()
                .position(|o| o.name.trim() == f)
                .ok_or_else(|| err(i, name, format!("fallback '{f}' is not an upstream")))?;
            if idx == i {
                return Err(err(
                    i,
                    name,
                    "an upstream cannot be its own fallback".into(),
                ));
            }
            if !fallbacks.contains(&idx) {
                fallbacks.push(idx);
            }
        }
        let models = match &u.models {
            None => None,
            Some(m) if m.is_empty() => {
                return Err(err(
                    i,
                    name,
                    "models is empty (leave it out to serve every model)".into(),
                ))
            }
            // Inserted one by one: collecting into a set would add sort code to the Worker.
            Some(m) => {
                let mut set = BTreeSet::new();
                for s in m {
                    set.insert(s.trim().to_string());
                }
                Some(set)
            }
        };
        let mut headers = http::HeaderMap::with_capacity(u.headers.len());
        for (name, value) in &u.headers {
            let n = http::HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|_| err(i, name, format!("headers: '{name}' is not a header name")))?;
            if n == http::header::AUTHORIZATION
                || n == http::header::HOST
                || n == http::header::CONTENT_LENGTH
                || crate::headers::is_hop_by_hop(n.as_str())
            {
                return Err(err(
                    i,
                    name,
                    format!("headers: '{n}' is set by the gateway itself"),
                ));
            }
            let mut v = HeaderValue::from_str(value.trim()).map_err(|_| {
                err(
                    i,
                    name,
                    format!("headers: the value of '{n}' cannot be sent in a header"),
                )
            })?;
            v.set_sensitive(true);
            headers.insert(n, v);
        }
        out.push(UpstreamSettings {
            headers,
            host: host_of(&base_url),
            name: name.to_string(),
            base_url,
            region: u
                .region
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .unwrap_or(name)
                .to_string(),
            location,
            weight: u.weight.unwrap_or(1),
            models,
            fallbacks,
            authorization,
        });
    }
    Ok(out)
}
