//! Settings: the same names on both runtimes (environment variables natively, `[vars]` and
//! secrets on the Worker), parsed and validated once at start-up.
//!
//! `GATEWAY_CONFIG` is a JSON document whose schema lives here and nowhere else; unknown fields
//! are rejected so that a typo is an error rather than a silently ignored setting.

mod upstreams;

use serde::Deserialize;

pub use upstreams::{
    defaults as routing_defaults, LatLon, RoutingConfig, RoutingSettings, UpstreamConfig,
    UpstreamSettings, DEFAULT_UPSTREAM,
};

use crate::auth::KeyRing;
use crate::cache::CacheSettings;
use crate::error::ConfigError;
use crate::limits::{validate_keys, KeyConfig, LimitSettings, LimitsConfig};
use crate::pricing::{PriceConfig, PriceTable};
use crate::selection::{SelectionConfig, Selector, TiersConfig};

pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 * 1024 * 1024;
pub const DEFAULT_BODY_TIMEOUT_MS: u64 = 30_000;
pub const DEFAULT_UPSTREAM_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_STREAM_IDLE_TIMEOUT_MS: u64 = 300_000;
pub const DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES: u64 = 64 * 1024 * 1024;

/// Where the gateway runs: the defaults that bound what a request may hold in memory differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    /// A native process (`fly-fallback`): memory is the machine's.
    Native,
    /// A Cloudflare Worker: one isolate has 128 MB for all of its concurrent requests, and a
    /// buffered answer is copied there two or three times (JavaScript, wasm, the response).
    Edge,
}

impl Platform {
    /// Default `max_upstream_response_bytes`: the largest non-streamed answer read whole to be
    /// checked and accounted (larger declared ones are relayed unread instead).
    pub fn default_max_upstream_response_bytes(self) -> u64 {
        match self {
            Platform::Native => DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES,
            Platform::Edge => 8 * 1024 * 1024,
        }
    }

    /// Default `cache.max_entry_bytes`: the largest answer stored, and so the most a recorded
    /// stream holds in memory while it is relayed.
    pub fn default_max_entry_bytes(self) -> u64 {
        match self {
            Platform::Native => crate::cache::policy::DEFAULT_MAX_ENTRY_BYTES,
            Platform::Edge => 4 * 1024 * 1024,
        }
    }
}

/// The names of every setting, so messages and docs cannot drift from the code.
pub mod names {
    pub const UPSTREAM_BASE_URL: &str = "UPSTREAM_BASE_URL";
    pub const UPSTREAM_API_KEY: &str = "UPSTREAM_API_KEY";
    pub const GATEWAY_API_KEYS: &str = "GATEWAY_API_KEYS";
    pub const GATEWAY_CONFIG: &str = "GATEWAY_CONFIG";
    pub const REGION: &str = "FLY_REGION";
}

/// The document in `GATEWAY_CONFIG`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    /// Models served by `GET /v1/models`; when empty the upstream's own list is returned.
    #[serde(default)]
    pub models: Vec<ModelEntry>,
    /// Largest accepted request body, enforced while reading.
    #[serde(default)]
    pub max_body_bytes: Option<u64>,
    /// Time a client has to send its whole body before getting a 408.
    #[serde(default)]
    pub body_timeout_ms: Option<u64>,
    /// Time the upstream has to send its response headers before the client gets a 504.
    #[serde(default)]
    pub upstream_timeout_ms: Option<u64>,
    /// Longest silence between two chunks of a relayed upstream body before the gateway ends it
    /// (an event stream with an error event).
    #[serde(default)]
    pub stream_idle_timeout_ms: Option<u64>,
    /// Largest non-streamed upstream body the gateway reads to check and account for.
    #[serde(default)]
    pub max_upstream_response_bytes: Option<u64>,
    /// The deterministic-response cache (see [`crate::cache`]).
    #[serde(default)]
    pub cache: CacheConfig,
    /// The upstreams (regions) to route across; instead of `UPSTREAM_BASE_URL`.
    #[serde(default)]
    pub upstreams: Option<Vec<UpstreamConfig>>,
    /// Attempts, failover, ejection, breaker and probes.
    #[serde(default)]
    pub routing: RoutingConfig,
    /// Prices in USD per million tokens, over the built-in catalogue (see [`crate::pricing`]).
    #[serde(default)]
    pub prices: std::collections::BTreeMap<String, PriceConfig>,
    /// Tiers for `tier:NAME` and `auto`: name -> models in order (see [`crate::selection`]).
    #[serde(default)]
    pub tiers: Option<TiersConfig>,
    /// The rules of `auto` (see [`crate::selection`]).
    #[serde(default)]
    pub selection: SelectionConfig,
    /// Client keys with ids, allowed models and limits (see [`crate::limits`]).
    #[serde(default)]
    pub keys: Vec<KeyConfig>,
    /// How limits are enforced.
    #[serde(default)]
    pub limits: LimitsConfig,
}

/// `"cache"` in `GATEWAY_CONFIG`. Every field is optional.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Default true: identical deterministic requests are answered from the cache.
    #[serde(default)]
    pub enabled: Option<bool>,
    /// How long an entry lives when neither the model nor the request says otherwise (3600).
    #[serde(default)]
    pub default_ttl_secs: Option<u64>,
    /// Upper bound for every TTL, the per-request header's included (86400).
    #[serde(default)]
    pub max_ttl_secs: Option<u64>,
    /// When set, all clients share this namespace (and each other's entries); by default each
    /// client key has its own.
    #[serde(default)]
    pub shared_namespace: Option<String>,
    /// Answers larger than this are not stored (default and maximum: what fits in a KV value).
    #[serde(default)]
    pub max_entry_bytes: Option<u64>,
    /// fly-fallback only: the size of the in-process cache in bytes (64 MiB).
    #[serde(default)]
    pub memory_bytes: Option<u64>,
    /// Per-model settings, by the model name after alias resolution.
    #[serde(default)]
    pub models: std::collections::BTreeMap<String, ModelCacheConfig>,
}

#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelCacheConfig {
    /// This model's default TTL; 0 turns caching off for it.
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// Also cache answers that are not deterministic (temperature above 0 or absent, n > 1):
    /// `"never"` (default, also `false`), `"with_seed"` (when the request sets `seed`) or
    /// `"always"` (also `true`).
    #[serde(default)]
    pub cache_nondeterministic: Nondeterministic,
}

/// When a model's non-deterministic answers may be cached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Nondeterministic {
    #[default]
    Never,
    WithSeed,
    Always,
}

impl<'de> Deserialize<'de> for Nondeterministic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Bool(bool),
            Name(String),
        }
        match Raw::deserialize(d)? {
            Raw::Bool(false) => Ok(Nondeterministic::Never),
            Raw::Bool(true) => Ok(Nondeterministic::Always),
            Raw::Name(n) => match n.as_str() {
                "never" => Ok(Nondeterministic::Never),
                "with_seed" => Ok(Nondeterministic::WithSeed),
                "always" => Ok(Nondeterministic::Always),
                other => Err(serde::de::Error::custom(format!(
                    "cache_nondeterministic: '{other}' is not one of \"never\", \"with_seed\", \"always\""
                ))),
            },
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub id: String,
    #[serde(default = "default_owner")]
    pub owned_by: String,
    #[serde(default)]
    pub created: u64,
    /// This model's `routing.first_byte_timeout_ms`.
    #[serde(default)]
    pub first_byte_timeout_ms: Option<u64>,
    /// This model's `routing.stream_idle_timeout_ms`.
    #[serde(default)]
    pub stream_idle_timeout_ms: Option<u64>,
}

fn default_owner() -> String {
    "ai-edge-gateway".into()
}

/// Everything the gateway needs, validated.
#[derive(Debug, Clone)]
pub struct Settings {
    pub platform: Platform,
    /// At least one; the first is `default` when built from `UPSTREAM_BASE_URL`.
    pub upstreams: Vec<UpstreamSettings>,
    pub routing: RoutingSettings,
    pub keys: KeyRing,
    pub region: Option<String>,
    pub models: Vec<ModelEntry>,
    pub max_body_bytes: u64,
    pub body_timeout_ms: u64,
    pub max_upstream_response_bytes: u64,
    pub cache: CacheSettings,
    pub prices: PriceTable,
    pub selector: Selector,
    pub limits: LimitSettings,
}

fn config_error(setting: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::new(setting, message)
}

impl Settings {
    /// Placeholder settings that allow nothing (no client key is valid, no upstream is set).
    pub(crate) fn unconfigured() -> Settings {
        Settings {
            platform: Platform::Native,
            upstreams: Vec::new(),
            routing: RoutingSettings::build(
                &RoutingConfig::default(),
                DEFAULT_UPSTREAM_TIMEOUT_MS,
                DEFAULT_STREAM_IDLE_TIMEOUT_MS,
            ),
            keys: KeyRing::empty(),
            region: None,
            models: Vec::new(),
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            body_timeout_ms: DEFAULT_BODY_TIMEOUT_MS,
            max_upstream_response_bytes: DEFAULT_MAX_UPSTREAM_RESPONSE_BYTES,
            cache: CacheSettings::default(),
            prices: PriceTable::default(),
            selector: Selector::default(),
            limits: LimitSettings::default(),
        }
    }

    /// Reads settings through `lookup`, which returns a variable's value if it is set, with the
    /// native defaults.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Settings, ConfigError> {
        Settings::from_lookup_on(Platform::Native, lookup)
    }

    /// Reads settings with the defaults of `platform`.
    pub fn from_lookup_on(
        platform: Platform,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        Settings::read(platform, &lookup)
    }

    /// [`Settings::from_lookup_on`], compiled once in this crate: generic, its body would be
    /// compiled again in the Worker's crate with second copies of what it uses.
    fn read(
        platform: Platform,
        lookup: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let config = match get(names::GATEWAY_CONFIG) {
            Some(raw) => GatewayConfig::parse(&raw)?,
            None => GatewayConfig::default(),
        };
        config.validate()?;
        let limits = LimitSettings::from_config(&config.limits)?;
        let configured = validate_keys(&config.keys, &limits)?;
        let keys = match get(names::GATEWAY_API_KEYS) {
            Some(raw) => {
                KeyRing::parse(&raw).map_err(|m| config_error(names::GATEWAY_API_KEYS, m))?
            }
            None if configured.is_empty() => {
                return Err(config_error(
                    names::GATEWAY_API_KEYS,
                    "is required unless GATEWAY_CONFIG lists keys: a comma-separated list of the client keys allowed to call the gateway",
                ))
            }
            None => KeyRing::empty(),
        }
        .with_configured(configured);
        let upstreams = match &config.upstreams {
            Some(list) => {
                if get(names::UPSTREAM_BASE_URL).is_some() {
                    return Err(config_error(
                        names::GATEWAY_CONFIG,
                        format!(
                            "upstreams and {} are both set: use one or the other",
                            names::UPSTREAM_BASE_URL
                        ),
                    ));
                }
                upstreams::resolve(list, lookup)?
            }
            None => vec![single_upstream(&get)?],
        };
        let first_byte_ms = config
            .upstream_timeout_ms
            .unwrap_or(DEFAULT_UPSTREAM_TIMEOUT_MS);
        let idle_ms = config
            .stream_idle_timeout_ms
            .unwrap_or(DEFAULT_STREAM_IDLE_TIMEOUT_MS);
        let mut routing = RoutingSettings::resolve(&config.routing, first_byte_ms, idle_ms)?;
        if config.upstreams.is_none() {
            // One upstream from UPSTREAM_BASE_URL: it behaves as it always did unless told
            // otherwise. Probing it changes no choice (it is tried whatever they say), and
            // retrying the only upstream is the client's call.
            if config.routing.health.interval_secs.is_none() {
                routing.health_interval = None;
            }
            if config.routing.max_attempts.is_none() {
                routing.max_attempts = 1;
            }
        }
        let mut cache = CacheSettings::from_config(&config.cache)
            .map_err(|m| config_error(names::GATEWAY_CONFIG, format!("cache: {m}")))?;
        if config.cache.max_entry_bytes.is_none() {
            cache.max_entry_bytes = platform.default_max_entry_bytes();
        }

        Ok(Settings {
            platform,
            upstreams,
            routing,
            keys,
            region: get(names::REGION),
            models: config.models,
            max_body_bytes: config.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES),
            body_timeout_ms: config.body_timeout_ms.unwrap_or(DEFAULT_BODY_TIMEOUT_MS),
            max_upstream_response_bytes: config
                .max_upstream_response_bytes
                .unwrap_or(platform.default_max_upstream_response_bytes()),
            cache,
            prices: PriceTable::with_overrides(&config.prices)?,
            selector: Selector::from_config(config.tiers.as_ref(), &config.selection)?,
            limits,
        })
    }
}

/// The one upstream of `UPSTREAM_BASE_URL` and `UPSTREAM_API_KEY`.
fn single_upstream(get: &dyn Fn(&str) -> Option<String>) -> Result<UpstreamSettings, ConfigError> {
    let base_url = get(names::UPSTREAM_BASE_URL).ok_or_else(|| {
        config_error(
            names::UPSTREAM_BASE_URL,
            "is required (e.g. https://api.openai.com/v1), unless GATEWAY_CONFIG lists upstreams",
        )
    })?;
    let base_url =
        validate_base_url(&base_url).map_err(|m| config_error(names::UPSTREAM_BASE_URL, m))?;
    let api_key = get(names::UPSTREAM_API_KEY).map(|k| k.trim().to_string());
    if let Some(k) = &api_key {
        if !is_header_safe(k) {
            return Err(config_error(
                names::UPSTREAM_API_KEY,
                "contains characters that cannot be sent in an HTTP header",
            ));
        }
    }
    Ok(upstreams::single(base_url, api_key.as_deref()))
}

impl Settings {
    /// The first-byte timeout for `model` (its own, else `routing`'s).
    pub fn first_byte_timeout(&self, model: Option<&str>) -> std::time::Duration {
        self.model_entry(model)
            .and_then(|m| m.first_byte_timeout_ms)
            .map_or(
                self.routing.first_byte_timeout,
                std::time::Duration::from_millis,
            )
    }

    /// The stream idle timeout for `model` (its own, else `routing`'s).
    pub fn stream_idle_timeout(&self, model: Option<&str>) -> std::time::Duration {
        self.model_entry(model)
            .and_then(|m| m.stream_idle_timeout_ms)
            .map_or(
                self.routing.stream_idle_timeout,
                std::time::Duration::from_millis,
            )
    }

    fn model_entry(&self, model: Option<&str>) -> Option<&ModelEntry> {
        let model = model?;
        self.models.iter().find(|m| m.id == model)
    }
}

/// JSON text with every object's keys in order (`None` when it is not JSON): how the Worker
/// turns a `[vars]` table, which JavaScript writes back as JSON, into `GATEWAY_CONFIG`. Here
/// rather than in the Worker so that the Worker's bundle holds one copy of serde_json's code.
pub fn sorted_json(text: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_slice(text.as_bytes()).ok()?;
    serde_json::to_string(&value).ok()
}

impl GatewayConfig {
    pub fn parse(raw: &str) -> Result<GatewayConfig, ConfigError> {
        // From bytes like every other JSON the gateway reads: one copy of the parser in the
        // Worker's bundle rather than a second one for `&str` (same results on a `&str`).
        serde_json::from_slice(raw.as_bytes())
            .map_err(|e| config_error(names::GATEWAY_CONFIG, e.to_string()))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let positive = |name: &str, v: Option<u64>| match v {
            Some(0) => Err(config_error(
                names::GATEWAY_CONFIG,
                format!("{name} must be greater than 0"),
            )),
            _ => Ok(()),
        };
        positive("max_body_bytes", self.max_body_bytes)?;
        positive("body_timeout_ms", self.body_timeout_ms)?;
        positive("upstream_timeout_ms", self.upstream_timeout_ms)?;
        positive("stream_idle_timeout_ms", self.stream_idle_timeout_ms)?;
        if self.upstream_timeout_ms.is_some() && self.routing.first_byte_timeout_ms.is_some() {
            return Err(config_error(
                names::GATEWAY_CONFIG,
                "upstream_timeout_ms and routing.first_byte_timeout_ms are both set: keep routing.first_byte_timeout_ms",
            ));
        }
        if self.stream_idle_timeout_ms.is_some() && self.routing.stream_idle_timeout_ms.is_some() {
            return Err(config_error(
                names::GATEWAY_CONFIG,
                "stream_idle_timeout_ms and routing.stream_idle_timeout_ms are both set: keep routing.stream_idle_timeout_ms",
            ));
        }
        positive(
            "max_upstream_response_bytes",
            self.max_upstream_response_bytes,
        )?;
        let mut seen = std::collections::BTreeSet::new();
        for m in &self.models {
            if m.id.trim().is_empty() {
                return Err(config_error(
                    names::GATEWAY_CONFIG,
                    "models[].id must not be empty",
                ));
            }
            positive("models[].first_byte_timeout_ms", m.first_byte_timeout_ms)?;
            positive("models[].stream_idle_timeout_ms", m.stream_idle_timeout_ms)?;
            if !seen.insert(m.id.as_str()) {
                return Err(config_error(
                    names::GATEWAY_CONFIG,
                    format!("models: '{}' is listed twice", m.id),
                ));
            }
        }
        Ok(())
    }
}

fn validate_base_url(raw: &str) -> Result<String, String> {
    let url = raw.trim().trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))
        .ok_or_else(|| format!("'{url}' must start with http:// or https://"))?;
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    if host.is_empty() {
        return Err(format!("'{url}' has no host"));
    }
    if rest.contains(['?', '#']) {
        return Err(format!("'{url}' must not contain a query or fragment"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("'{url}' contains spaces or non-ASCII characters"));
    }
    Ok(url.to_string())
}

fn is_header_safe(v: &str) -> bool {
    v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| map.get(k).cloned()
    }

    fn setting_of(err: ConfigError) -> String {
        err.setting
    }

    #[test]
    fn sorted_json_orders_keys_at_every_level() {
        assert_eq!(
            sorted_json(
                r#"{"routing": {"max_attempts": 2, "breaker": {}}, "cache": {"enabled": false}}"#
            )
            .as_deref(),
            Some(r#"{"cache":{"enabled":false},"routing":{"breaker":{},"max_attempts":2}}"#)
        );
        assert_eq!(sorted_json("{"), None);
    }

    #[test]
    fn minimal_settings_use_documented_defaults() {
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "https://api.openai.com/v1/"),
            ("GATEWAY_API_KEYS", "k1, k2"),
        ]))
        .unwrap();
        assert_eq!(s.upstreams[0].base_url, "https://api.openai.com/v1");
        assert_eq!(s.upstreams[0].name, "default");
        assert_eq!(
            s.routing.max_attempts, 1,
            "one upstream: one attempt unless configured"
        );
        assert_eq!(s.routing.health_interval, None, "and no probes");
        assert_eq!(s.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(s.keys.len(), 2);
        assert!(s.models.is_empty());
    }

    #[test]
    fn missing_upstream_names_the_setting() {
        let err = Settings::from_lookup(lookup(&[("GATEWAY_API_KEYS", "k")])).unwrap_err();
        assert_eq!(setting_of(err), "UPSTREAM_BASE_URL");
    }

    #[test]
    fn missing_client_keys_names_the_setting() {
        let err = Settings::from_lookup(lookup(&[("UPSTREAM_BASE_URL", "http://x")])).unwrap_err();
        assert_eq!(setting_of(err), "GATEWAY_API_KEYS");
    }

    #[test]
    fn non_http_upstream_is_rejected() {
        let err = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "ftp://x"),
            ("GATEWAY_API_KEYS", "k"),
        ]))
        .unwrap_err();
        assert_eq!(setting_of(err), "UPSTREAM_BASE_URL");
    }

    #[test]
    fn unknown_config_fields_are_rejected_with_the_setting_named() {
        let err = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "http://x"),
            ("GATEWAY_API_KEYS", "k"),
            ("GATEWAY_CONFIG", r#"{"max_body_byte": 5}"#),
        ]))
        .unwrap_err();
        let msg = err.to_string();
        assert_eq!(setting_of(err), "GATEWAY_CONFIG");
        assert!(msg.contains("max_body_byte"), "{msg}");
    }

    #[test]
    fn config_document_overrides_limits_and_lists_models() {
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "http://127.0.0.1:9/v1"),
            ("GATEWAY_API_KEYS", "k"),
            (
                "GATEWAY_CONFIG",
                r#"{"max_body_bytes": 100, "upstream_timeout_ms": 5, "models":[{"id":"a"}]}"#,
            ),
        ]))
        .unwrap();
        assert_eq!(s.max_body_bytes, 100);
        assert_eq!(s.routing.first_byte_timeout.as_millis(), 5);
        assert_eq!(s.models[0].owned_by, "ai-edge-gateway");
    }

    #[test]
    fn zero_limits_and_duplicate_models_are_rejected() {
        for doc in [
            r#"{"max_body_bytes":0}"#,
            r#"{"models":[{"id":"a"},{"id":"a"}]}"#,
        ] {
            let err = Settings::from_lookup(lookup(&[
                ("UPSTREAM_BASE_URL", "http://x"),
                ("GATEWAY_API_KEYS", "k"),
                ("GATEWAY_CONFIG", doc),
            ]))
            .unwrap_err();
            assert_eq!(setting_of(err), "GATEWAY_CONFIG");
        }
    }

    #[test]
    fn the_readme_sample_gateway_config_is_valid() {
        let readme = include_str!("../../../README.md");
        let start = readme
            .find("`GATEWAY_CONFIG` (schema")
            .and_then(|i| readme[i..].find("```json").map(|j| i + j + "```json".len()))
            .expect("the README documents GATEWAY_CONFIG with a json block");
        let end = start + readme[start..].find("```").expect("closed block");
        let doc = &readme[start..end];
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "http://x/v1"),
            ("GATEWAY_API_KEYS", "k"),
            ("GATEWAY_CONFIG", doc),
        ]))
        .unwrap_or_else(|e| panic!("README sample rejected: {e}"));
        assert_eq!(s.models[0].id, "gpt-4o-mini");
    }

    #[test]
    fn the_edge_holds_less_per_request_unless_told_otherwise() {
        let base = [("UPSTREAM_BASE_URL", "http://x"), ("GATEWAY_API_KEYS", "k")];
        let native = Settings::from_lookup(lookup(&base)).unwrap();
        let edge = Settings::from_lookup_on(Platform::Edge, lookup(&base)).unwrap();
        assert_eq!(native.max_upstream_response_bytes, 64 * 1024 * 1024);
        assert_eq!(edge.max_upstream_response_bytes, 8 * 1024 * 1024);
        assert_eq!(edge.cache.max_entry_bytes, 4 * 1024 * 1024);
        assert!(native.cache.max_entry_bytes > 20 * 1024 * 1024);
        // Worst case for one request in a 128 MB isolate: the client's body twice (wasm and
        // the upstream fetch), a buffered answer three times, a recorded stream once.
        let worst = 2 * edge.max_body_bytes
            + 3 * edge.max_upstream_response_bytes
            + edge.cache.max_entry_bytes;
        assert!(worst <= 48 * 1024 * 1024, "{worst}");
        let mut set = base.to_vec();
        set.push((
            "GATEWAY_CONFIG",
            r#"{"max_upstream_response_bytes": 100, "cache": {"max_entry_bytes": 50}}"#,
        ));
        let edge = Settings::from_lookup_on(Platform::Edge, lookup(&set)).unwrap();
        assert_eq!(edge.max_upstream_response_bytes, 100);
        assert_eq!(edge.cache.max_entry_bytes, 50);
    }

    fn with_upstreams(doc: &str) -> Result<Settings, ConfigError> {
        Settings::from_lookup(lookup(&[
            ("GATEWAY_API_KEYS", "k"),
            ("KEY_A", "sk-a"),
            ("GATEWAY_CONFIG", doc),
        ]))
    }

    #[test]
    fn upstreams_resolve_keys_fallbacks_and_defaults() {
        let s = with_upstreams(
            r#"{"upstreams":[
              {"name":"a","base_url":"https://a.test/v1/","api_key_secret":"KEY_A","fallbacks":["b"],
               "headers":{"openai-organization":"org-1"}},
              {"name":"b","base_url":"http://b.test:8080/v1","region":"eu","location":{"lat":50.1,"lon":8.7},"weight":3,"models":["m"]}]}"#,
        )
        .unwrap();
        let (a, b) = (&s.upstreams[0], &s.upstreams[1]);
        assert_eq!(a.base_url, "https://a.test/v1");
        assert_eq!(a.authorization.as_ref().unwrap(), "Bearer sk-a");
        assert_eq!(
            (a.region.as_str(), a.weight, a.fallbacks.clone()),
            ("a", 1, vec![1])
        );
        assert_eq!(a.headers["openai-organization"], "org-1");
        assert!(a.serves("anything") && b.serves("m") && !b.serves("other"));
        assert_eq!(
            (b.host.as_str(), b.location),
            ("b.test:8080", Some((50.1, 8.7)))
        );
        assert!(b.authorization.is_none());
        assert!(
            s.routing.health_interval.is_some(),
            "probes on with several upstreams"
        );
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-a") && !dbg.contains("org-1"), "{dbg}");
    }

    #[test]
    fn bad_upstreams_are_refused_naming_the_upstream_and_the_problem() {
        for (doc, needle) in [
            (r#"{"upstreams":[]}"#, "at least one"),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1"},{"name":"a","base_url":"http://b/v1"}]}"#,
                "used twice",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1","fallbacks":["zz"]}]}"#,
                "fallback 'zz' is not an upstream",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"ftp://a"}]}"#,
                "http://",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1","api_key_secret":"NOPE"}]}"#,
                "NOPE",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1","weight":0}]}"#,
                "weight",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1","location":{"lat":95,"lon":0}}]}"#,
                "lat",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1","headers":{"host":"x"}}]}"#,
                "set by the gateway",
            ),
            (
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1"}],"routing":{"max_attempts":0}}"#,
                "max_attempts",
            ),
            (
                r#"{"upstream_timeout_ms":5,"routing":{"first_byte_timeout_ms":5},"upstreams":[{"name":"a","base_url":"http://a/v1"}]}"#,
                "both set",
            ),
        ] {
            let err = with_upstreams(doc).unwrap_err();
            assert_eq!(err.setting, "GATEWAY_CONFIG");
            assert!(err.to_string().contains(needle), "{doc}: {err}");
        }
    }

    #[test]
    fn upstreams_and_upstream_base_url_together_are_refused_naming_both() {
        let err = Settings::from_lookup(lookup(&[
            ("GATEWAY_API_KEYS", "k"),
            ("UPSTREAM_BASE_URL", "http://x/v1"),
            (
                "GATEWAY_CONFIG",
                r#"{"upstreams":[{"name":"a","base_url":"http://a/v1"}]}"#,
            ),
        ]))
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("upstreams") && msg.contains("UPSTREAM_BASE_URL"),
            "{msg}"
        );
    }

    #[test]
    fn debug_output_never_shows_the_upstream_key() {
        let s = Settings::from_lookup(lookup(&[
            ("UPSTREAM_BASE_URL", "http://x"),
            ("UPSTREAM_API_KEY", "sk-very-secret"),
            ("GATEWAY_API_KEYS", "client-secret"),
        ]))
        .unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("sk-very-secret"));
        assert!(!dbg.contains("client-secret"));
    }
}
