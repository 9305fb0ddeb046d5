//! The deterministic-response cache: the decisions, the key, the entry format and the stream
//! recorder. Storage is the runtimes' (KV on the Worker; an in-process cache and optionally
//! Redis on fly-fallback); the core decides and the runtimes do the IO.
//!
//! # What is cached
//! `POST /v1/chat/completions` and `/v1/completions` with `temperature` 0 and `n` absent or 1,
//! and `POST /v1/embeddings`, when the upstream answers with a complete 2xx not marked
//! `no-store`. Never errors (429 included), cut-off or failed streams, or non-deterministic
//! requests, unless the operator opts a model in (`cache_nondeterministic`). Requests with
//! `store: true` go to the upstream, which is asked to keep the completion.
//!
//! # The key
//! See [`key`]: SHA-256 over the canonical request (sorted keys, normalised numbers, all fields
//! but `stream`, `stream_options`, `user`, `metadata`; the model after alias resolution), the
//! upstream URL, answer-changing forwarded headers, the response form and the namespace (the
//! client key's id, or the operator's `shared_namespace`).
//!
//! # Streamed and non-streamed forms are separate entries
//! A streamed request and the same request non-streamed have different keys (the form is part of
//! the key, and for streams so is `stream_options`, since `include_usage` changes the events).
//! An entry is always replayed exactly as the upstream sent it, byte for byte: converting between
//! forms would mean inventing chunk boundaries, ids and `usage: null` fields, i.e. writing
//! inside OpenAI objects. A streamed hit replays every recorded event, the usage chunk and
//! `[DONE]` included; a non-streamed hit returns the stored JSON document.
//!
//! # Controls
//! `cache-control: no-cache` (or `pragma: no-cache`) skips the lookup and stores the fresh
//! answer (`MISS`); `cache-control: no-store` bypasses the cache (`BYPASS`); `x-gateway-cache-ttl:
//! SECONDS` sets the entry's TTL, bounded by `max_ttl_secs` (0: do not store). Responses carry
//! `x-gateway-cache: HIT | MISS | BYPASS`, and `age` on hits.
//!
//! # How a runtime uses it
//! 1. After [`crate::Gateway::plan`] returned a `Forward`, call
//!    [`crate::Gateway::cache_plan`] with the same body and the request headers.
//! 2. [`CachePlan::Bypass`]: forward as usual, answer with `x-gateway-cache: BYPASS`.
//! 3. [`CachePlan::Use`] with `lookup.read`: fetch `lookup.key.storage_name()`; turn the stored
//!    bytes into an entry with [`CacheLookup::accept`] (checks format, key and freshness); on
//!    `Some(entry)` answer with [`CacheLookup::hit_reply`] and no upstream call. Storage errors
//!    count as a miss.
//! 4. On a miss, forward; then for a buffered 2xx call [`CacheLookup::buffered_entry`], for a
//!    streamed 2xx create [`CacheLookup::stream_recorder`], feed it every chunk sent, and call
//!    [`StreamRecorder::finish`] when the upstream body ended without error. Store
//!    [`CacheEntry::encode`] with [`CacheLookup::storage_ttl_secs`] after the response is sent;
//!    a failed write is ignored. Answer with `x-gateway-cache: MISS`.

pub mod entry;
pub mod key;
pub mod policy;
pub mod recorder;
pub mod tape;

use bytes::Bytes;
use serde_json::{Map, Value};

pub use entry::{CacheEntry, EntryForm};
pub use key::CacheKey;
pub use policy::{BypassReason, CacheSettings, RequestControls, TTL_HEADER};
pub use recorder::StreamRecorder;
pub use tape::Tape;

use crate::route::Route;

/// Longer content types are not stored: with it, an entry of `max_entry_bytes` still fits in a
/// KV value ([`policy::KV_VALUE_LIMIT`]).
const MAX_CONTENT_TYPE: usize = 1024;

/// The response header naming the cache's part in an answer.
pub const STATUS_HEADER: &str = "x-gateway-cache";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheStatus {
    Hit,
    Miss,
    Bypass,
}

impl CacheStatus {
    /// The `x-gateway-cache` header value.
    pub fn header_value(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Bypass => "BYPASS",
        }
    }

    /// The log line's `cache` field.
    pub fn log_value(self) -> &'static str {
        match self {
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Bypass => "bypass",
        }
    }
}

/// What the cache does for one forwarded request.
#[derive(Debug, Clone)]
pub enum CachePlan {
    Bypass(BypassReason),
    Use(CacheLookup),
}

impl CachePlan {
    pub fn lookup(&self) -> Option<&CacheLookup> {
        match self {
            CachePlan::Use(l) => Some(l),
            CachePlan::Bypass(_) => None,
        }
    }
}

/// A cacheable request: its key and what the client's controls allow.
#[derive(Debug, Clone)]
pub struct CacheLookup {
    pub key: CacheKey,
    /// Look the key up (false for `cache-control: no-cache`: refresh the entry instead).
    pub read: bool,
    /// Store the answer (false when the TTL is 0).
    pub write: bool,
    pub ttl_secs: u64,
    /// Answers larger than this are not stored.
    pub max_entry_bytes: u64,
    /// Whether the client asked for a stream (the entry's form follows from the key).
    pub stream: bool,
}

/// A cached answer ready to send.
#[derive(Debug, Clone)]
pub struct CachedReply {
    pub status: u16,
    pub content_type: String,
    pub body: Bytes,
    pub age_secs: u64,
    pub stream: bool,
}

impl CachedReply {
    /// The headers a hit adds, besides `content-type`.
    pub fn cache_headers(&self) -> [(&'static str, String); 2] {
        [
            (STATUS_HEADER, CacheStatus::Hit.header_value().to_string()),
            ("age", self.age_secs.to_string()),
        ]
    }
}

impl CacheLookup {
    /// Reads stored bytes: `Some` only for a well-formed, fresh entry of this key.
    pub fn accept(&self, stored: &Bytes, now_ms: u64) -> Option<CacheEntry> {
        let e = CacheEntry::decode(stored, &self.key)?;
        self.accept_entry(&e, now_ms).then_some(e)
    }

    /// For a runtime that keeps decoded entries (an in-process cache).
    pub fn accept_entry(&self, entry: &CacheEntry, now_ms: u64) -> bool {
        entry.key == self.key && entry.is_fresh(now_ms) && (200..300).contains(&entry.status)
    }

    /// The answer to send for an accepted entry: exactly what was stored.
    pub fn hit_reply(&self, entry: &CacheEntry, now_ms: u64) -> CachedReply {
        CachedReply {
            status: entry.status,
            content_type: entry.content_type.clone(),
            body: entry.body.clone(),
            age_secs: entry.age_secs(now_ms),
            stream: entry.is_stream(),
        }
    }

    /// The entry for a non-streamed upstream answer, if it may be stored.
    pub fn buffered_entry(
        &self,
        status: u16,
        content_type: Option<&str>,
        cache_control: Option<&str>,
        body: &Bytes,
        usage: Option<crate::sse::Usage>,
        now_ms: u64,
    ) -> Option<CacheEntry> {
        if !self.write
            || !policy::response_storable(status, cache_control)
            || body.len() as u64 > self.max_entry_bytes
            || content_type.is_some_and(|c| c.len() > MAX_CONTENT_TYPE)
        {
            return None;
        }
        Some(CacheEntry {
            key: self.key,
            status,
            form: EntryForm::Json,
            content_type: content_type.unwrap_or("application/json").to_string(),
            stored_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.ttl_secs.saturating_mul(1000)),
            usage,
            body: body.clone(),
        })
    }

    /// A recorder for a streamed upstream answer, if it may be stored.
    pub fn stream_recorder(
        &self,
        status: u16,
        content_type: Option<&str>,
        cache_control: Option<&str>,
    ) -> Option<StreamRecorder> {
        if !self.write
            || !policy::response_storable(status, cache_control)
            || content_type.is_some_and(|c| c.len() > MAX_CONTENT_TYPE)
        {
            return None;
        }
        Some(StreamRecorder::new(
            self.key,
            status,
            content_type.unwrap_or("text/event-stream"),
            self.ttl_secs,
            usize::try_from(self.max_entry_bytes).unwrap_or(usize::MAX),
        ))
    }

    /// The TTL to give a store that expires entries itself. Cloudflare KV refuses an
    /// `expiration_ttl` below 60 s; the entry's own expiry still applies on read.
    pub fn storage_ttl_secs(&self, min_ttl_secs: u64) -> u64 {
        self.ttl_secs.max(min_ttl_secs).max(1)
    }
}

/// The cache decision for a forwarded request (see [`crate::Gateway::cache_plan`]).
#[allow(clippy::too_many_arguments)]
pub fn plan<'h, I>(
    settings: &CacheSettings,
    route: Route,
    client: Option<&str>,
    upstream_url: &str,
    model: &str,
    stream: bool,
    body: Option<&Map<String, Value>>,
    headers: I,
) -> CachePlan
where
    I: IntoIterator<Item = (&'h str, &'h [u8])> + Clone,
{
    if !settings.enabled {
        return CachePlan::Bypass(BypassReason::Disabled);
    }
    if !route.has_body() {
        return CachePlan::Bypass(BypassReason::Route);
    }
    let controls = RequestControls::from_headers(headers.clone());
    if controls.no_store {
        return CachePlan::Bypass(BypassReason::NoStore);
    }
    let Some(body) = body else {
        return CachePlan::Bypass(BypassReason::Unparsable);
    };
    let model_policy = settings.model(model);
    if let Err(reason) = policy::check_request(route, body, model_policy) {
        return CachePlan::Bypass(reason);
    }
    let ttl_secs = policy::ttl_secs(settings, model_policy, &controls);
    let namespace = settings.namespace(client);
    let key = key::compute(
        &key::KeyInput {
            upstream_url,
            namespace: &namespace,
            model,
            body,
            stream,
        },
        headers,
    );
    CachePlan::Use(CacheLookup {
        key,
        read: !controls.no_cache,
        write: ttl_secs > 0,
        ttl_secs,
        max_entry_bytes: settings.max_entry_bytes,
        stream,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> CacheSettings {
        CacheSettings::from_config(&serde_json::from_str(json).unwrap()).unwrap()
    }

    fn plan_for(
        s: &CacheSettings,
        client: &str,
        body: &str,
        headers: &[(&str, &str)],
    ) -> CachePlan {
        let v: Value = serde_json::from_str(body).unwrap();
        let model = v["model"].as_str().unwrap_or_default().to_string();
        let stream = v["stream"].as_bool().unwrap_or(false);
        plan(
            s,
            Route::ChatCompletions,
            Some(client),
            "http://up/v1/chat/completions",
            &model,
            stream,
            v.as_object(),
            headers.iter().map(|(n, v)| (*n, v.as_bytes())),
        )
    }

    const BODY: &str =
        r#"{"model":"m","temperature":0,"messages":[{"role":"user","content":"x"}]}"#;

    fn key_of(p: &CachePlan) -> CacheKey {
        p.lookup().expect("cacheable").key
    }

    #[test]
    fn controls_shape_the_plan() {
        let s = settings("{}");
        let p = plan_for(&s, "a", BODY, &[]);
        let l = p.lookup().unwrap();
        assert!(l.read && l.write);
        assert_eq!(l.ttl_secs, 3600);
        let l = plan_for(&s, "a", BODY, &[("cache-control", "no-cache")])
            .lookup()
            .cloned()
            .unwrap();
        assert!(!l.read && l.write);
        assert!(matches!(
            plan_for(&s, "a", BODY, &[("Cache-Control", "no-store")]),
            CachePlan::Bypass(BypassReason::NoStore)
        ));
        let l = plan_for(&s, "a", BODY, &[("x-gateway-cache-ttl", "0")])
            .lookup()
            .cloned()
            .unwrap();
        assert!(l.read && !l.write);
        // Controls are not part of the key.
        assert_eq!(
            key_of(&p),
            key_of(&plan_for(
                &s,
                "a",
                BODY,
                &[("cache-control", "no-cache"), ("x-gateway-cache-ttl", "9")]
            ))
        );
    }

    #[test]
    fn disabled_cache_and_nondeterministic_requests_bypass() {
        assert!(matches!(
            plan_for(&settings(r#"{"enabled":false}"#), "a", BODY, &[]),
            CachePlan::Bypass(BypassReason::Disabled)
        ));
        let hot = BODY.replace("\"temperature\":0", "\"temperature\":0.9");
        assert!(matches!(
            plan_for(&settings("{}"), "a", &hot, &[]),
            CachePlan::Bypass(BypassReason::Nondeterministic)
        ));
        let opted = settings(r#"{"models":{"m":{"cache_nondeterministic":true,"ttl_secs":60}}}"#);
        assert_eq!(
            plan_for(&opted, "a", &hot, &[]).lookup().unwrap().ttl_secs,
            60
        );
        let off = settings(r#"{"models":{"m":{"ttl_secs":0}}}"#);
        assert!(matches!(
            plan_for(&off, "a", BODY, &[]),
            CachePlan::Bypass(BypassReason::ModelDisabled)
        ));
    }

    #[test]
    fn tenants_are_separate_unless_the_namespace_is_shared() {
        let s = settings("{}");
        assert_ne!(
            key_of(&plan_for(&s, "a", BODY, &[])),
            key_of(&plan_for(&s, "b", BODY, &[]))
        );
        let shared = settings(r#"{"shared_namespace":"team"}"#);
        assert_eq!(
            key_of(&plan_for(&shared, "a", BODY, &[])),
            key_of(&plan_for(&shared, "b", BODY, &[]))
        );
    }

    #[test]
    fn buffered_answers_become_entries_only_when_storable() {
        let s = settings(r#"{"max_entry_bytes":10}"#);
        let l = plan_for(&s, "a", BODY, &[]).lookup().cloned().unwrap();
        let small = Bytes::from_static(b"{}");
        let e = l
            .buffered_entry(200, Some("application/json"), None, &small, None, 1_000)
            .unwrap();
        assert_eq!(e.expires_at_ms, 1_000 + 3_600_000);
        assert!(l.buffered_entry(429, None, None, &small, None, 0).is_none());
        assert!(l
            .buffered_entry(200, None, Some("no-store"), &small, None, 0)
            .is_none());
        assert!(l
            .buffered_entry(
                200,
                None,
                None,
                &Bytes::from_static(b"{\"a\":\"long\"}"),
                None,
                0
            )
            .is_none());
        assert!(l.stream_recorder(500, None, None).is_none());
        let long_type = "application/json; x=".to_string() + &"a".repeat(2000);
        assert!(l
            .buffered_entry(200, Some(&long_type), None, &small, None, 0)
            .is_none());
        assert!(l
            .stream_recorder(200, Some("text/event-stream"), None)
            .is_some());
    }

    #[test]
    fn a_stored_entry_is_served_byte_for_byte_in_the_form_it_was_stored() {
        let s = settings("{}");
        let streamed_body = BODY.replace("\"temperature\"", "\"stream\":true,\"temperature\"");
        let l = plan_for(&s, "a", &streamed_body, &[])
            .lookup()
            .cloned()
            .unwrap();
        assert!(l.stream);
        let mut r = l
            .stream_recorder(200, Some("text/event-stream"), None)
            .unwrap();
        let sse = b"data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}]}\n\ndata: [DONE]\n\n";
        r.record(&Bytes::from_static(sse));
        let entry = r.finish(10_000, None).unwrap();
        let stored = Bytes::from(entry.encode());

        let hit = l.accept(&stored, 12_500).unwrap();
        let reply = l.hit_reply(&hit, 12_500);
        assert_eq!(&reply.body[..], sse);
        assert!(reply.stream);
        assert_eq!(reply.content_type, "text/event-stream");
        assert_eq!(reply.cache_headers()[1], ("age", "2".to_string()));

        // The non-streamed request has its own key, so it can never get the stream.
        let plain = plan_for(&s, "a", BODY, &[]).lookup().cloned().unwrap();
        assert!(plain.accept(&stored, 12_500).is_none());
        // Expired entries are not served.
        assert!(l.accept(&stored, 10_000 + 3_600_000).is_none());
    }

    #[test]
    fn the_largest_storable_entry_fits_in_a_kv_value() {
        let largest = policy::DEFAULT_MAX_ENTRY_BYTES as usize + 106 + MAX_CONTENT_TYPE;
        let e = CacheEntry {
            key: CacheKey([0; 32]),
            status: 200,
            form: EntryForm::Json,
            content_type: "x".repeat(MAX_CONTENT_TYPE),
            stored_at_ms: 0,
            expires_at_ms: 1,
            usage: None,
            body: Bytes::from(vec![b' '; policy::DEFAULT_MAX_ENTRY_BYTES as usize]),
        };
        assert!(e.encoded_len() <= largest);
        assert!(e.encoded_len() as u64 <= policy::KV_VALUE_LIMIT);
    }

    #[test]
    fn kv_needs_at_least_sixty_seconds() {
        let s = settings(r#"{"default_ttl_secs":5}"#);
        let l = plan_for(&s, "a", BODY, &[]).lookup().cloned().unwrap();
        assert_eq!(l.storage_ttl_secs(60), 60);
        assert_eq!(l.ttl_secs, 5);
    }
}
