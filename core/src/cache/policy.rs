//! What may be cached, for how long, and what the client's request headers ask for.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::config::{CacheConfig, Nondeterministic};
use crate::route::Route;

pub const DEFAULT_TTL_SECS: u64 = 3600;
pub const DEFAULT_MAX_TTL_SECS: u64 = 86_400;
/// Cloudflare KV's largest value.
pub const KV_VALUE_LIMIT: u64 = 25 * 1024 * 1024;
/// Room left in a KV value for the entry's own header (see [`crate::cache::entry`]).
pub const ENTRY_OVERHEAD: u64 = 4096;
pub const DEFAULT_MAX_ENTRY_BYTES: u64 = KV_VALUE_LIMIT - ENTRY_OVERHEAD;
pub const DEFAULT_MEMORY_BYTES: u64 = 64 * 1024 * 1024;

/// Per-model cache policy.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ModelPolicy {
    pub ttl_secs: Option<u64>,
    pub nondeterministic: Nondeterministic,
}

/// The validated `"cache"` settings.
#[derive(Debug, Clone, PartialEq)]
pub struct CacheSettings {
    pub enabled: bool,
    pub default_ttl_secs: u64,
    pub max_ttl_secs: u64,
    pub shared_namespace: Option<String>,
    pub max_entry_bytes: u64,
    pub memory_bytes: u64,
    pub models: BTreeMap<String, ModelPolicy>,
}

impl Default for CacheSettings {
    fn default() -> Self {
        CacheSettings::from_config(&CacheConfig::default()).unwrap_or(CacheSettings {
            enabled: false,
            default_ttl_secs: DEFAULT_TTL_SECS,
            max_ttl_secs: DEFAULT_MAX_TTL_SECS,
            shared_namespace: None,
            max_entry_bytes: DEFAULT_MAX_ENTRY_BYTES,
            memory_bytes: DEFAULT_MEMORY_BYTES,
            models: BTreeMap::new(),
        })
    }
}

impl CacheSettings {
    pub fn from_config(c: &CacheConfig) -> Result<CacheSettings, String> {
        let max_ttl_secs = c.max_ttl_secs.unwrap_or(DEFAULT_MAX_TTL_SECS);
        if max_ttl_secs == 0 {
            return Err("max_ttl_secs must be greater than 0".into());
        }
        let default_ttl_secs = c
            .default_ttl_secs
            .unwrap_or(DEFAULT_TTL_SECS.min(max_ttl_secs));
        if default_ttl_secs > max_ttl_secs {
            return Err(format!(
                "default_ttl_secs ({default_ttl_secs}) is above max_ttl_secs ({max_ttl_secs})"
            ));
        }
        let shared_namespace = match &c.shared_namespace {
            Some(n) if n.trim().is_empty() => {
                return Err("shared_namespace must not be empty".into())
            }
            Some(n) => Some(n.trim().to_string()),
            None => None,
        };
        let max_entry_bytes = c.max_entry_bytes.unwrap_or(DEFAULT_MAX_ENTRY_BYTES);
        if max_entry_bytes == 0 || max_entry_bytes > DEFAULT_MAX_ENTRY_BYTES {
            return Err(format!(
                "max_entry_bytes must be between 1 and {DEFAULT_MAX_ENTRY_BYTES}"
            ));
        }
        let memory_bytes = c.memory_bytes.unwrap_or(DEFAULT_MEMORY_BYTES);
        let mut models = BTreeMap::new();
        for (name, m) in &c.models {
            if let Some(t) = m.ttl_secs {
                if t > max_ttl_secs {
                    return Err(format!(
                        "models.{name}.ttl_secs ({t}) is above max_ttl_secs ({max_ttl_secs})"
                    ));
                }
            }
            models.insert(
                name.clone(),
                ModelPolicy {
                    ttl_secs: m.ttl_secs,
                    nondeterministic: m.cache_nondeterministic,
                },
            );
        }
        Ok(CacheSettings {
            enabled: c.enabled.unwrap_or(true),
            default_ttl_secs,
            max_ttl_secs,
            shared_namespace,
            max_entry_bytes,
            memory_bytes,
            models,
        })
    }

    pub fn model(&self, model: &str) -> ModelPolicy {
        self.models.get(model).copied().unwrap_or_default()
    }

    /// The namespace a client's entries live in.
    pub fn namespace(&self, client: Option<&str>) -> String {
        match (&self.shared_namespace, client) {
            (Some(shared), _) => format!("shared:{shared}"),
            (None, Some(c)) => format!("tenant:{c}"),
            (None, None) => "anonymous".to_string(),
        }
    }
}

/// Why a request does not use the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BypassReason {
    /// The operator turned the cache off (or the runtime has no storage).
    Disabled,
    /// Not an endpoint whose answers are cached.
    Route,
    /// Temperature above 0 (or not set), and the model is not opted in.
    Nondeterministic,
    /// `n` above 1, and the model is not opted in.
    MultipleChoices,
    /// The model's TTL is 0.
    ModelDisabled,
    /// `store: true` asks the provider to keep the completion, which a cached answer would skip.
    ProviderStore,
    /// The client sent `cache-control: no-store`.
    NoStore,
    /// The body could not be read as a JSON object (validation normally catches this first).
    Unparsable,
}

/// Is this request's answer deterministic enough to cache?
pub fn check_request(
    route: Route,
    body: &Map<String, Value>,
    policy: ModelPolicy,
) -> Result<(), BypassReason> {
    match route {
        Route::Embeddings => return Ok(()),
        Route::ChatCompletions | Route::Completions => {}
        Route::Health
        | Route::Models
        | Route::Status
        | Route::Estimate
        | Route::Key
        | Route::Summary
        | Route::Dashboard => return Err(BypassReason::Route),
    }
    if policy.ttl_secs == Some(0) {
        return Err(BypassReason::ModelDisabled);
    }
    if body.get("store").and_then(Value::as_bool) == Some(true) {
        return Err(BypassReason::ProviderStore);
    }
    let opted_in = match policy.nondeterministic {
        Nondeterministic::Never => false,
        Nondeterministic::WithSeed => body.get("seed").is_some_and(|s| !s.is_null()),
        Nondeterministic::Always => true,
    };
    if opted_in {
        return Ok(());
    }
    // The OpenAI default temperature is 1: only an explicit 0 is deterministic.
    let temperature_zero = body
        .get("temperature")
        .and_then(Value::as_f64)
        .is_some_and(|t| t == 0.0);
    if !temperature_zero {
        return Err(BypassReason::Nondeterministic);
    }
    match body.get("n") {
        None | Some(Value::Null) => Ok(()),
        Some(n) if n.as_f64() == Some(1.0) => Ok(()),
        Some(_) => Err(BypassReason::MultipleChoices),
    }
}

/// What the client's request headers ask of the cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RequestControls {
    /// `cache-control: no-cache`: do not look up, but store the fresh answer.
    pub no_cache: bool,
    /// `cache-control: no-store`: neither look up nor store.
    pub no_store: bool,
    /// The TTL header's value, if it is a valid number of seconds.
    pub ttl_secs: Option<u64>,
}

/// The per-request TTL header: seconds, bounded by `max_ttl_secs`; 0 means "do not store".
pub const TTL_HEADER: &str = "x-gateway-cache-ttl";

impl RequestControls {
    /// Reads the controls from the request headers (any case; repeated headers are merged).
    pub fn from_headers<'h, I>(headers: I) -> RequestControls
    where
        I: IntoIterator<Item = (&'h str, &'h [u8])>,
    {
        let mut c = RequestControls::default();
        for (name, value) in headers {
            let name = name.trim();
            let Ok(value) = std::str::from_utf8(value) else {
                continue;
            };
            if name.eq_ignore_ascii_case("cache-control") {
                for directive in value.split(',') {
                    let d = directive.trim();
                    let d = d.split('=').next().unwrap_or(d).trim();
                    if d.eq_ignore_ascii_case("no-cache") {
                        c.no_cache = true;
                    } else if d.eq_ignore_ascii_case("no-store") {
                        c.no_store = true;
                    }
                }
            } else if name.eq_ignore_ascii_case("pragma") {
                if value.trim().eq_ignore_ascii_case("no-cache") {
                    c.no_cache = true;
                }
            } else if name.eq_ignore_ascii_case(TTL_HEADER) {
                // An invalid value is ignored: the default TTL applies.
                c.ttl_secs = value.trim().parse().ok();
            }
        }
        c
    }
}

/// The TTL for an entry: the request's, else the model's, else the default; never above the
/// operator's maximum.
pub fn ttl_secs(settings: &CacheSettings, policy: ModelPolicy, controls: &RequestControls) -> u64 {
    controls
        .ttl_secs
        .or(policy.ttl_secs)
        .unwrap_or(settings.default_ttl_secs)
        .min(settings.max_ttl_secs)
}

/// May an upstream answer be stored? A complete 2xx not marked `no-store`. (`no-cache` is not a
/// refusal: event streams carry it as a matter of course, to keep proxies from buffering.)
pub fn response_storable(status: u16, cache_control: Option<&str>) -> bool {
    if !(200..300).contains(&status) {
        return false;
    }
    let Some(cc) = cache_control else {
        return true;
    };
    !cc.split(',').any(|d| {
        let d = d.trim();
        let d = d.split('=').next().unwrap_or(d).trim();
        d.eq_ignore_ascii_case("no-store")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => panic!(),
        }
    }

    fn check(route: Route, json: &str, nd: Nondeterministic) -> Result<(), BypassReason> {
        check_request(
            route,
            &obj(json),
            ModelPolicy {
                ttl_secs: None,
                nondeterministic: nd,
            },
        )
    }

    const NEVER: Nondeterministic = Nondeterministic::Never;

    #[test]
    fn only_temperature_zero_single_choice_completions_and_embeddings_are_cacheable() {
        let chat = Route::ChatCompletions;
        assert_eq!(check(chat, r#"{"temperature":0}"#, NEVER), Ok(()));
        assert_eq!(check(chat, r#"{"temperature":0.0,"n":1}"#, NEVER), Ok(()));
        assert_eq!(
            check(Route::Completions, r#"{"temperature":0}"#, NEVER),
            Ok(())
        );
        assert_eq!(
            check(chat, r#"{}"#, NEVER),
            Err(BypassReason::Nondeterministic)
        );
        assert_eq!(
            check(chat, r#"{"temperature":0.7}"#, NEVER),
            Err(BypassReason::Nondeterministic)
        );
        assert_eq!(
            check(chat, r#"{"temperature":null}"#, NEVER),
            Err(BypassReason::Nondeterministic)
        );
        assert_eq!(
            check(chat, r#"{"temperature":0,"n":2}"#, NEVER),
            Err(BypassReason::MultipleChoices)
        );
        assert_eq!(
            check(chat, r#"{"temperature":0,"store":true}"#, NEVER),
            Err(BypassReason::ProviderStore)
        );
        assert_eq!(check(Route::Embeddings, r#"{"input":"x"}"#, NEVER), Ok(()));
        assert_eq!(
            check(Route::Models, r#"{}"#, NEVER),
            Err(BypassReason::Route)
        );
    }

    #[test]
    fn operators_can_opt_models_into_nondeterministic_caching() {
        let chat = Route::ChatCompletions;
        let seeded = Nondeterministic::WithSeed;
        assert_eq!(
            check(chat, r#"{"temperature":0.7,"seed":1}"#, seeded),
            Ok(())
        );
        assert_eq!(
            check(chat, r#"{"temperature":0.7}"#, seeded),
            Err(BypassReason::Nondeterministic)
        );
        assert_eq!(
            check(
                chat,
                r#"{"temperature":0.7,"n":3}"#,
                Nondeterministic::Always
            ),
            Ok(())
        );
    }

    #[test]
    fn request_controls_are_read_from_any_case_and_repeated_headers() {
        let h = |pairs: &[(&'static str, &'static str)]| {
            RequestControls::from_headers(pairs.iter().map(|(n, v)| (*n, v.as_bytes())))
        };
        assert_eq!(h(&[]), RequestControls::default());
        assert!(h(&[("Cache-Control", "max-age=0, No-Cache")]).no_cache);
        assert!(h(&[("cache-control", "no-store")]).no_store);
        assert!(h(&[("pragma", "no-cache")]).no_cache);
        let c = h(&[("cache-control", "no-cache"), ("cache-control", "no-store")]);
        assert!(c.no_cache && c.no_store);
        assert_eq!(h(&[("X-Gateway-Cache-TTL", " 60 ")]).ttl_secs, Some(60));
        assert_eq!(h(&[("x-gateway-cache-ttl", "soon")]).ttl_secs, None);
        assert_eq!(h(&[("x-gateway-cache-ttl", "-1")]).ttl_secs, None);
    }

    #[test]
    fn ttl_comes_from_request_then_model_then_default_bounded_by_max() {
        let s = CacheSettings::from_config(&CacheConfig {
            max_ttl_secs: Some(600),
            default_ttl_secs: Some(300),
            ..Default::default()
        })
        .unwrap();
        let model = ModelPolicy {
            ttl_secs: Some(120),
            ..Default::default()
        };
        let req = |t| RequestControls {
            ttl_secs: t,
            ..Default::default()
        };
        assert_eq!(ttl_secs(&s, ModelPolicy::default(), &req(None)), 300);
        assert_eq!(ttl_secs(&s, model, &req(None)), 120);
        assert_eq!(ttl_secs(&s, model, &req(Some(30))), 30);
        assert_eq!(ttl_secs(&s, model, &req(Some(100_000))), 600);
    }

    #[test]
    fn defaults_and_invalid_settings() {
        let s = CacheSettings::from_config(&CacheConfig::default()).unwrap();
        assert!(s.enabled);
        assert_eq!(s.default_ttl_secs, 3600);
        assert_eq!(s.max_entry_bytes, DEFAULT_MAX_ENTRY_BYTES);
        assert_eq!(s.namespace(Some("key_1")), "tenant:key_1");
        let bad = [
            CacheConfig {
                max_ttl_secs: Some(0),
                ..Default::default()
            },
            CacheConfig {
                default_ttl_secs: Some(10),
                max_ttl_secs: Some(5),
                ..Default::default()
            },
            CacheConfig {
                shared_namespace: Some(" ".into()),
                ..Default::default()
            },
            CacheConfig {
                max_entry_bytes: Some(KV_VALUE_LIMIT),
                ..Default::default()
            },
        ];
        for c in bad {
            assert!(CacheSettings::from_config(&c).is_err(), "{c:?}");
        }
        let shared = CacheSettings::from_config(&CacheConfig {
            shared_namespace: Some("team".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            shared.namespace(Some("key_1")),
            shared.namespace(Some("key_2"))
        );
    }

    #[test]
    fn the_cache_section_of_gateway_config_is_strict() {
        use crate::config::GatewayConfig;
        let c = GatewayConfig::parse(
            r#"{"cache":{"default_ttl_secs":60,"models":{"a":{"ttl_secs":5,"cache_nondeterministic":"with_seed"},"b":{"cache_nondeterministic":true}}}}"#,
        )
        .unwrap();
        let s = CacheSettings::from_config(&c.cache).unwrap();
        assert_eq!(s.model("a").nondeterministic, Nondeterministic::WithSeed);
        assert_eq!(s.model("b").nondeterministic, Nondeterministic::Always);
        assert_eq!(s.model("zzz"), ModelPolicy::default());
        for bad in [
            r#"{"cache":{"ttl":5}}"#,
            r#"{"cache":{"models":{"a":{"ttl":5}}}}"#,
            r#"{"cache":{"models":{"a":{"cache_nondeterministic":"sometimes"}}}}"#,
        ] {
            assert!(GatewayConfig::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_complete_2xx_answers_not_marked_no_store_are_storable() {
        assert!(response_storable(200, None));
        assert!(response_storable(200, Some("max-age=60")));
        assert!(!response_storable(200, Some("No-Store")));
        assert!(!response_storable(200, Some("private, no-store")));
        assert!(response_storable(200, Some("no-cache")));
        assert!(!response_storable(429, None));
        assert!(!response_storable(500, None));
        assert!(!response_storable(304, None));
    }
}
