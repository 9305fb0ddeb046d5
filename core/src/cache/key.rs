//! The cache key: SHA-256 over a canonical form of everything that can change the answer.
//!
//! The canonical form of the body is the request's JSON with object keys sorted, numbers
//! normalised (`1`, `1.0` and `1e0` are the same number) and no insignificant whitespace, with the
//! fields that only shape the delivery (`stream`, `stream_options`, `user`, `metadata`) removed and
//! `model` replaced by the model after alias resolution. Every other field, known or not, is part
//! of it: a field the gateway does not know may well change the answer.
//!
//! Besides the body the key covers, each as its own length-prefixed part:
//! - the upstream URL the request is sent to (base URL, path and query: the upstream that serves
//!   it, the endpoint, and query parameters such as `api-version`);
//! - the namespace: the client key's id, or the operator's shared namespace;
//! - the response form: `json`, or `sse` with the canonical `stream_options` (streamed and
//!   non-streamed answers are kept as separate entries, see [`crate::cache`]);
//! - request headers that reach the upstream and may change its answer (`openai-beta`, provider
//!   extras...), i.e. every forwarded header except a short list of transport and tracing ones.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::headers;

/// Bumped whenever the canonical form changes, so old entries are never read with new meaning.
const KEY_VERSION: &[u8] = b"ai-edge-gateway/cache-key/v1";

/// Top-level request fields that cannot change the answer, only how it is delivered or labelled.
pub const EXCLUDED_FIELDS: &[&str] = &["stream", "stream_options", "user", "metadata"];

/// A cache key: the SHA-256 digest of the canonical request.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CacheKey(pub [u8; 32]);

impl CacheKey {
    pub fn hex(&self) -> String {
        crate::auth::hex(&self.0)
    }

    /// The name under which an entry is stored (KV key, Redis key, in-process key).
    pub fn storage_name(&self) -> String {
        format!("aegw:cache:v1:{}", self.hex())
    }
}

impl std::fmt::Debug for CacheKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "CacheKey({})", self.hex())
    }
}

/// Everything the key is computed from.
#[derive(Debug, Clone, Copy)]
pub struct KeyInput<'a> {
    /// The upstream URL the request goes to, query included.
    pub upstream_url: &'a str,
    /// `tenant:<client id>` or `shared:<name>`.
    pub namespace: &'a str,
    /// The model after alias resolution; replaces the body's `model`.
    pub model: &'a str,
    /// The parsed request body (a JSON object).
    pub body: &'a Map<String, Value>,
    /// Whether the client asked for a stream.
    pub stream: bool,
}

/// Computes the key. `request_headers` are the client's request headers (any case).
pub fn compute<'h, I>(input: &KeyInput<'_>, request_headers: I) -> CacheKey
where
    I: IntoIterator<Item = (&'h str, &'h [u8])>,
{
    let mut h = Sha256::new();
    h.update(KEY_VERSION);
    part(&mut h, b"upstream", input.upstream_url.as_bytes());
    part(&mut h, b"namespace", input.namespace.as_bytes());

    let mut form = Vec::new();
    if input.stream {
        form.extend_from_slice(b"sse:");
        match input.body.get("stream_options") {
            Some(v) => canonical(v, &mut form),
            None => form.extend_from_slice(b"null"),
        }
    } else {
        form.extend_from_slice(b"json");
    }
    part(&mut h, b"form", &form);

    let mut hs: Vec<(String, &[u8])> = request_headers
        .into_iter()
        .filter(|(n, _)| header_affects_answer(n))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v))
        .collect();
    // Stable: the values of a repeated header keep their order.
    hs.sort_by(|a, b| a.0.cmp(&b.0));
    let mut hbuf = Vec::new();
    for (n, v) in &hs {
        hbuf.extend_from_slice(&(n.len() as u64).to_be_bytes());
        hbuf.extend_from_slice(n.as_bytes());
        let v = trim_ascii(v);
        hbuf.extend_from_slice(&(v.len() as u64).to_be_bytes());
        hbuf.extend_from_slice(v);
    }
    part(&mut h, b"headers", &hbuf);

    part(&mut h, b"body", &canonical_body(input.body, input.model));
    CacheKey(h.finalize().into())
}

/// The canonical form of a request body, as hashed: excluded fields removed, `model` replaced.
pub fn canonical_body(body: &Map<String, Value>, model: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let mut keys: Vec<&str> = body
        .keys()
        .map(String::as_str)
        .filter(|k| !EXCLUDED_FIELDS.contains(k) && *k != "model")
        .collect();
    // serde_json's `Map` is a `BTreeMap` (its `preserve_order` feature is off): the keys come
    // sorted, and only `model` needs its place (no sort code in the Worker's bundle).
    let at = keys.partition_point(|k| *k < "model");
    keys.insert(at, "model");
    out.push(b'{');
    for (i, k) in keys.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        string(k, &mut out);
        out.push(b':');
        if *k == "model" {
            string(model, &mut out);
        } else if let Some(v) = body.get(*k) {
            canonical(v, &mut out);
        }
    }
    out.push(b'}');
    out
}

/// Writes the canonical JSON of a value: sorted keys, normalised numbers, no whitespace.
pub fn canonical(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Number(n) => number(n, out),
        Value::String(s) => string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(x, out);
            }
            out.push(b']');
        }
        Value::Object(m) => {
            // In key order: serde_json's `Map` keeps its keys sorted (see `canonical_body`).
            out.push(b'{');
            for (i, (k, x)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                canonical(x, out);
            }
            out.push(b'}');
        }
    }
}

/// Integers print as integers whatever their spelling (`1`, `1.0`, `1e0`, `-0.0` → `0`); other
/// numbers print in the shortest form that reads back as the same double.
fn number(n: &serde_json::Number, out: &mut Vec<u8>) {
    if let Some(i) = n.as_i64() {
        out.extend_from_slice(i.to_string().as_bytes());
    } else if let Some(u) = n.as_u64() {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(f) = n.as_f64() {
        // 2^63 and 2^64: inside this range an integral double converts to an integer exactly.
        const I64_MIN: f64 = -9_223_372_036_854_775_808.0;
        const U64_END: f64 = 18_446_744_073_709_551_616.0;
        if f.is_finite() && f.fract() == 0.0 && (I64_MIN..U64_END).contains(&f) {
            if f < 0.0 {
                out.extend_from_slice((f as i64).to_string().as_bytes());
            } else {
                out.extend_from_slice((f as u64).to_string().as_bytes());
            }
        } else {
            // serde_json prints doubles in their shortest round-trip form.
            out.extend_from_slice(n.to_string().as_bytes());
        }
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // serde_json's escaping is deterministic: the same string always gives the same bytes.
    match serde_json::to_vec(s) {
        Ok(v) => out.extend_from_slice(&v),
        Err(_) => out.extend_from_slice(b"\"\""),
    }
}

fn part(h: &mut Sha256, label: &[u8], bytes: &[u8]) {
    h.update((label.len() as u64).to_be_bytes());
    h.update(label);
    h.update((bytes.len() as u64).to_be_bytes());
    h.update(bytes);
}

fn trim_ascii(v: &[u8]) -> &[u8] {
    v.trim_ascii()
}

/// Request headers sent upstream that cannot change the answer: transport, content negotiation
/// of the request itself, caching controls and tracing/telemetry.
const NEUTRAL_HEADERS: &[&str] = &[
    "accept",
    "accept-language",
    "content-type",
    "user-agent",
    "cache-control",
    "pragma",
    "expect",
    "origin",
    "referer",
    "dnt",
    "priority",
    "traceparent",
    "tracestate",
    "baggage",
    "sentry-trace",
    "b3",
    "x-amzn-trace-id",
    "x-cloud-trace-context",
    "idempotency-key",
    "x-client-request-id",
];
const NEUTRAL_PREFIXES: &[&str] = &["x-stainless-", "x-b3-", "x-datadog-", "sec-", "x-gateway-"];

/// Does a request header take part in the key? Only headers forwarded upstream can change the
/// answer; of those, all but the neutral ones do.
pub fn header_affects_answer(name: &str) -> bool {
    let name = name.trim();
    if !headers::forward_to_upstream(name) {
        return false;
    }
    let lower = name.to_ascii_lowercase();
    !(NEUTRAL_HEADERS.contains(&lower.as_str())
        || NEUTRAL_PREFIXES.iter().any(|p| lower.starts_with(p)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obj(json: &str) -> Map<String, Value> {
        match serde_json::from_str(json).unwrap() {
            Value::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn key_with(json: &str, url: &str, ns: &str, headers: &[(&str, &str)]) -> CacheKey {
        let body = obj(json);
        let model = body
            .get("model")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string();
        let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
        let input = KeyInput {
            upstream_url: url,
            namespace: ns,
            model: &model,
            body: &body,
            stream,
        };
        compute(&input, headers.iter().map(|(n, v)| (*n, v.as_bytes())))
    }

    fn key(json: &str) -> CacheKey {
        key_with(json, "http://up/v1/chat/completions", "tenant:key_a", &[])
    }

    const BASE: &str =
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0}"#;

    #[test]
    fn reordered_keys_and_whitespace_give_the_same_key() {
        let a = key(
            r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"temperature":0,"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"a":1,"b":2}}}}"#,
        );
        let b = key(
            r#"{ "temperature": 0, "response_format": {"json_schema": {"schema": {"b": 2, "a": 1}, "name": "x"}, "type": "json_schema"},
                 "messages": [ {"content": "hi", "role": "user"} ], "model": "m" }"#,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn numbers_are_normalised() {
        assert_eq!(
            key(BASE),
            key(&BASE.replace("\"temperature\":0", "\"temperature\":0.0"))
        );
        assert_eq!(
            key(BASE),
            key(&BASE.replace("\"temperature\":0", "\"temperature\":-0.0"))
        );
        let with = |v: &str| key(&BASE.replace("}]", &format!("}}],\"max_tokens\":{v}")));
        assert_eq!(with("1"), with("1.0"));
        assert_eq!(with("100"), with("1e2"));
        assert_eq!(with("20000000000000000"), with("2e16"));
        assert_eq!(with("0.5"), with("5e-1"));
        assert_ne!(with("1"), with("2"));
        assert_ne!(with("0.5"), with("0.50001"));
        assert_ne!(with("1"), with("\"1\""));
    }

    #[test]
    fn json_maps_keep_their_keys_sorted() {
        // The canonical form relies on it: serde_json's `preserve_order` feature must stay off.
        let m = obj(r#"{"b":1,"a":2,"model":3,"c":{"z":0,"y":1}}"#);
        assert!(m.keys().is_sorted());
        assert!(m["c"].as_object().unwrap().keys().is_sorted());
    }

    #[test]
    fn canonical_form_is_sorted_and_compact() {
        let body = obj(
            r#"{"z":[1.0,{"b":true,"a":null}],"model":"alias","stream":true,"user":"u","a":"\u00e9\n"}"#,
        );
        let c = String::from_utf8(canonical_body(&body, "resolved")).unwrap();
        assert_eq!(
            c,
            r#"{"a":"é\n","model":"resolved","z":[1,{"a":null,"b":true}]}"#
        );
    }

    #[test]
    fn every_answer_changing_field_changes_the_key() {
        let base = key(BASE);
        let variants = [
            ("model", r#""m2""#),
            ("messages", r#"[{"role":"user","content":"hi!"}]"#),
            ("messages", r#"[{"role":"system","content":"hi"}]"#),
            (
                "messages",
                r#"[{"role":"user","content":"hi"},{"role":"user","content":"hi"}]"#,
            ),
            ("temperature", "0.1"),
            ("tools", r#"[{"type":"function","function":{"name":"f"}}]"#),
            ("tool_choice", r#""none""#),
            ("response_format", r#"{"type":"json_object"}"#),
            ("max_tokens", "5"),
            ("max_completion_tokens", "5"),
            ("stop", r#"["x"]"#),
            ("top_p", "0.5"),
            ("seed", "7"),
            ("logit_bias", r#"{"50256":-100}"#),
            ("presence_penalty", "0.1"),
            ("frequency_penalty", "0.1"),
            ("logprobs", "true"),
            ("reasoning_effort", r#""high""#),
            ("some_provider_extra", r#"{"x":1}"#),
            ("n", "1"),
            ("store", "false"),
        ];
        for (field, value) in variants {
            let mut m = obj(BASE);
            m.insert(field.to_string(), serde_json::from_str(value).unwrap());
            assert_ne!(base, key(&Value::Object(m).to_string()), "{field}: {value}");
        }
    }

    #[test]
    fn delivery_only_fields_are_ignored() {
        let base = key(BASE);
        for v in [
            r#""user":"alice""#,
            r#""metadata":{"trace":"1"}"#,
            r#""stream":false"#,
        ] {
            assert_eq!(base, key(&BASE.replace("}]", &format!("}}],{v}"))), "{v}");
        }
    }

    #[test]
    fn streamed_and_non_streamed_forms_are_separate_entries() {
        let plain = key(BASE);
        let streamed = key(&BASE.replace("}]", "}],\"stream\":true"));
        let with_usage = key(&BASE.replace(
            "}]",
            "}],\"stream\":true,\"stream_options\":{\"include_usage\":true}",
        ));
        assert_ne!(plain, streamed);
        assert_ne!(streamed, with_usage);
        // stream_options of a non-streamed request is ignored.
        assert_eq!(
            plain,
            key(&BASE.replace("}]", "}],\"stream_options\":{\"include_usage\":true}"))
        );
    }

    #[test]
    fn tenants_upstreams_and_endpoints_are_separate() {
        let a = key_with(BASE, "http://up/v1/chat/completions", "tenant:key_a", &[]);
        assert_ne!(
            a,
            key_with(BASE, "http://up/v1/chat/completions", "tenant:key_b", &[])
        );
        assert_ne!(
            a,
            key_with(
                BASE,
                "http://other/v1/chat/completions",
                "tenant:key_a",
                &[]
            )
        );
        assert_ne!(
            a,
            key_with(
                BASE,
                "http://up/v1/chat/completions?api-version=2",
                "tenant:key_a",
                &[]
            )
        );
        assert_ne!(
            a,
            key_with(BASE, "http://up/v1/completions", "tenant:key_a", &[])
        );
        assert_ne!(
            a,
            key_with(BASE, "http://up/v1/chat/completions", "shared:team", &[])
        );
    }

    #[test]
    fn only_answer_changing_headers_take_part() {
        let k =
            |h: &[(&str, &str)]| key_with(BASE, "http://up/v1/chat/completions", "tenant:key_a", h);
        let base = k(&[]);
        assert_eq!(
            base,
            k(&[
                ("User-Agent", "x"),
                ("Authorization", "Bearer a"),
                ("x-stainless-retry-count", "1"),
                ("traceparent", "00-1"),
                ("content-type", "application/json"),
                ("cache-control", "no-cache"),
                ("x-gateway-cache-ttl", "5"),
                ("x-request-id", "r")
            ])
        );
        assert_ne!(base, k(&[("openai-beta", "assistants=v2")]));
        assert_ne!(base, k(&[("anthropic-version", "2023-06-01")]));
        assert_eq!(k(&[("OpenAI-Beta", " a ")]), k(&[("openai-beta", "a")]));
        assert_eq!(
            k(&[("a-x", "1"), ("b-y", "2")]),
            k(&[("b-y", "2"), ("a-x", "1")])
        );
    }

    #[test]
    fn storage_name_is_stable_and_short() {
        let k = key(BASE);
        assert_eq!(k, key(BASE));
        let name = k.storage_name();
        assert!(name.starts_with("aegw:cache:v1:"));
        assert_eq!(name.len(), "aegw:cache:v1:".len() + 64);
    }
}
