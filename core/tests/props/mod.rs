//! The properties of hostile input, written once and checked twice: by the proptests of the
//! normal suite (`core/tests/properties.rs`) and by the fuzz targets (`fuzz/fuzz_targets/`, which
//! include this file by path). Each check asserts its property; a panic anywhere else (in the
//! core) is a finding too.
//!
//! Inputs are plain bytes plus [`Choices`]: bytes that pick key orders, whitespace, cut points
//! and header values, so a fuzzer and a proptest strategy can drive the same check.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use gateway_core::cache::key::{self, CacheKey, KeyInput};
use gateway_core::geo::ClientLocation;
use gateway_core::log::RequestLog;
use gateway_core::rewrite::{asks_for_usage, rewrite};
use gateway_core::route::Route;
use gateway_core::sse::{is_usage_only, HideUsage, SseObserver, Usage};
use gateway_core::validate::validate;
use gateway_core::{
    Action, BodyError, Exchange, Gateway, Instant, Now, RequestParts, ResponseBody, Router,
    Settings, UnixMillis,
};
use http::{HeaderMap, HeaderName, HeaderValue};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// Bytes read in turn to make choices; 0 once they are used up.
pub struct Choices<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Choices<'a> {
    pub fn new(bytes: &'a [u8]) -> Choices<'a> {
        Choices { bytes, at: 0 }
    }

    pub fn byte(&mut self) -> u8 {
        let b = self.bytes.get(self.at).copied().unwrap_or(0);
        self.at += 1;
        b
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        let v = u16::from_le_bytes([self.byte(), self.byte()]) as usize;
        v % n
    }

    /// Up to `max` of the next bytes.
    pub fn take(&mut self, max: usize) -> &'a [u8] {
        let n = self.below(max + 1);
        let start = self.at.min(self.bytes.len());
        let end = (start + n).min(self.bytes.len());
        self.at = end;
        &self.bytes[start..end]
    }

    /// What is left (the fuzz targets' payload after their choices).
    pub fn rest(&mut self) -> &'a [u8] {
        let start = self.at.min(self.bytes.len());
        self.at = self.bytes.len();
        &self.bytes[start..]
    }
}

/// `data` cut at `cuts` (any positions: taken modulo `data.len() + 1`, sorted, repeated ones
/// give empty chunks, which a runtime may also deliver).
pub fn pieces<'d>(data: &'d [u8], cuts: &[usize]) -> Vec<&'d [u8]> {
    let mut at: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    at.sort_unstable();
    let mut out = Vec::with_capacity(at.len() + 1);
    let mut from = 0;
    for c in at {
        out.push(&data[from..c]);
        from = c;
    }
    out.push(&data[from..]);
    out
}

// ---------------------------------------------------------------------------------------------
// (a) Request validation, alone and through a whole exchange.

pub const INFERENCE_ROUTES: [Route; 3] = [
    Route::ChatCompletions,
    Route::Completions,
    Route::Embeddings,
];

/// `validate` is total: any bytes give a request whose fields are the body's, or a 400 in the
/// OpenAI error shape.
pub fn validation_is_total_and_consistent(route: Route, body: &[u8]) {
    match validate(route, body) {
        Ok(req) => {
            let parsed: Map<String, Value> =
                serde_json::from_slice(body).expect("accepted bodies are JSON objects");
            assert_eq!(
                parsed.get("model").and_then(Value::as_str),
                Some(req.model.as_str())
            );
            assert!(!req.model.trim().is_empty(), "a blank model was accepted");
            let stream = parsed
                .get("stream")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            assert_eq!(req.stream, stream);
            assert!(
                !(route == Route::Embeddings && req.stream),
                "a streamed embedding was accepted"
            );
            assert_eq!(req.body, parsed, "the parsed body is the body");
        }
        Err(e) => {
            assert_eq!(e.status(), 400, "{e:?}");
            assert_error_shape(&e.body(), e.code(), e.param());
        }
    }
}

/// An OpenAI error body: `{"error":{"message","type","param","code"}}`.
fn assert_error_shape(body: &[u8], code: Option<&str>, param: Option<&str>) {
    let v: Value = serde_json::from_slice(body).expect("an error body is JSON");
    let err = v.get("error").expect("an error body has `error`");
    assert!(err.get("message").is_some_and(Value::is_string), "{v}");
    assert!(err.get("type").is_some_and(Value::is_string), "{v}");
    assert_eq!(err.get("code").and_then(Value::as_str), code, "{v}");
    assert_eq!(err.get("param").and_then(Value::as_str), param, "{v}");
}

pub const CLIENT_KEY: &str = "client-key-1";
pub const UPSTREAM_KEY: &str = "sk-upstream-1";
pub const MAX_BODY: u64 = 64 * 1024;

/// One gateway for every case: the default upstream serves every model, the cache is on, the
/// default tiers and `auto` rules apply.
pub fn gateway() -> Arc<Gateway> {
    static GW: OnceLock<Arc<Gateway>> = OnceLock::new();
    GW.get_or_init(|| {
        let settings = Settings::from_lookup(|k| match k {
            "UPSTREAM_BASE_URL" => Some("http://up.example/v1".into()),
            "UPSTREAM_API_KEY" => Some(UPSTREAM_KEY.into()),
            "GATEWAY_API_KEYS" => Some(CLIENT_KEY.into()),
            "GATEWAY_CONFIG" => Some(format!(r#"{{"max_body_bytes":{MAX_BODY}}}"#)),
            _ => None,
        })
        .expect("the fixed settings are valid");
        Arc::new(Gateway::new(settings, "props"))
    })
    .clone()
}

/// Request headers a client may add, chosen by the fuzzer or the strategy.
pub const CLIENT_HEADERS: [&str; 10] = [
    "x-gateway-quality",
    "x-gateway-task",
    "x-gateway-latency-budget-ms",
    "x-gateway-cost-budget-usd",
    "cache-control",
    "x-gateway-cache-ttl",
    "x-gateway-region",
    "x-request-id",
    "openai-beta",
    "content-type",
];

/// Up to three client headers from `c`: a name from [`CLIENT_HEADERS`], a value of up to 24
/// bytes (skipped when it is not a valid header value).
pub fn client_headers(c: &mut Choices<'_>) -> Vec<(&'static str, Vec<u8>)> {
    let n = c.below(4);
    (0..n)
        .map(|_| {
            let name = CLIENT_HEADERS[c.below(CLIENT_HEADERS.len())];
            (name, c.take(24).to_vec())
        })
        .collect()
}

/// The route a selector byte picks: the three inference routes and the estimate.
pub fn body_route(selector: u8) -> (Route, &'static str) {
    match selector % 4 {
        0 => (Route::ChatCompletions, "/v1/chat/completions"),
        1 => (Route::Completions, "/v1/completions"),
        2 => (Route::Embeddings, "/v1/embeddings"),
        _ => (Route::Estimate, "/v1/gateway/estimate"),
    }
}

/// A whole exchange, driven like a runtime up to its first decision: any body and hint headers
/// end in an answer in the OpenAI shape, or in an upstream call that carries a valid request,
/// the operator's key (never the client's) and the client's bytes unless the gateway had to
/// change the model or ask for usage.
pub fn exchange_decides(selector: u8, extra: &[(&'static str, Vec<u8>)], body: &[u8]) {
    let (route, path) = body_route(selector);
    let mut headers = HeaderMap::new();
    headers.insert(
        "authorization",
        HeaderValue::from_str(&format!("Bearer {CLIENT_KEY}")).unwrap(),
    );
    headers.insert("content-length", HeaderValue::from(body.len() as u64));
    for (name, value) in extra {
        if let Ok(v) = HeaderValue::from_bytes(value) {
            headers.append(HeaderName::from_static(name), v);
        }
    }
    let now = Now {
        instant: Instant::from_micros(1_000_000),
        unix: UnixMillis(1_700_000_000_000),
    };
    let mut router = Router::new();
    let parts = RequestParts {
        method: "POST",
        path,
        query: None,
        headers,
        location: ClientLocation::default(),
    };
    let mut ex = Exchange::new(gateway(), parts, now, [7; 16]);
    let validated = route.has_body().then(|| validate(route, body));
    for _ in 0..64 {
        match ex.poll_action(now, &mut router) {
            Action::ReadBody { limit } => {
                if body.len() as u64 > limit {
                    ex.on_body_error(BodyError::TooLarge, now);
                } else {
                    ex.on_body(Bytes::copy_from_slice(body), now);
                }
            }
            Action::Lookup { .. } => ex.on_lookup(None, now),
            Action::Store(_) => {}
            Action::Send(attempt) => {
                assert!(route.has_body(), "{route:?} called an upstream");
                let Some(Ok(req)) = validated else {
                    panic!("an invalid {route:?} body was sent upstream: {validated:?}");
                };
                let sent = validate(route, &attempt.body);
                assert!(
                    sent.is_ok(),
                    "the upstream got an invalid request: {sent:?}"
                );
                assert_eq!(
                    attempt
                        .headers
                        .get("authorization")
                        .and_then(|v| v.to_str().ok()),
                    Some(format!("Bearer {UPSTREAM_KEY}").as_str())
                );
                let chosen = req.model == "auto" || req.model.starts_with("tier:");
                let usage_asked =
                    req.stream && route != Route::Embeddings && !asks_for_usage(&req.body);
                if !chosen && !usage_asked {
                    assert_eq!(&attempt.body[..], body, "the client's bytes are forwarded");
                }
                return;
            }
            Action::Respond(resp) => {
                let status = resp.status();
                assert!((200..600).contains(&status), "status {status}");
                let content_type = extra.iter().any(|(n, _)| *n == "content-type");
                if let Some(Err(e)) = &validated {
                    if (body.len() as u64) <= MAX_BODY && !content_type {
                        assert_eq!(status, e.status(), "validation's answer");
                    }
                }
                if let ResponseBody::Full(b) = &resp.body {
                    if status >= 400 {
                        let v: Value = serde_json::from_slice(b).expect("an error body is JSON");
                        assert!(v["error"]["message"].is_string(), "{v}");
                    } else {
                        let _: Value = serde_json::from_slice(b).expect("an answer is JSON");
                    }
                }
                return;
            }
            // Anything else waits on IO that comes after the first decision.
            _ => return,
        }
    }
    panic!("the exchange made no decision in 64 steps");
}

// ---------------------------------------------------------------------------------------------
// (b) The cache key.

/// The key of a parsed body the way the exchange computes it.
pub fn key_of(body: &Map<String, Value>, headers: &[(String, Vec<u8>)]) -> CacheKey {
    let model = body.get("model").and_then(Value::as_str).unwrap_or("");
    let stream = body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    let input = KeyInput {
        upstream_url: "http://up.example/v1/chat/completions",
        namespace: "tenant:k1",
        model,
        body,
        stream,
    };
    key::compute(
        &input,
        headers.iter().map(|(n, v)| (n.as_str(), v.as_slice())),
    )
}

fn canonical(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    key::canonical(v, &mut out);
    out
}

/// For any JSON body: the key never panics; the same body spelt otherwise (keys reordered,
/// whitespace, `1` as `1.0` or `1e0`, strings as `\u` escapes) has the same key; the canonical
/// form is JSON and canonical again when read back; the delivery-only fields and the order and
/// case of distinct headers do not change the key.
pub fn cache_key_is_canonical(body: &[u8], c: &mut Choices<'_>) {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let form = canonical(&value);
    let back: Value = serde_json::from_slice(&form).expect("the canonical form is JSON");
    let exact = doubles_read_back(&value);
    if exact {
        assert_eq!(canonical(&back), form, "canonical twice is canonical once");
    }
    let Value::Object(map) = value else {
        return;
    };

    let headers = headers_for_key(c);
    let k = key_of(&map, &headers);
    let respelt = respell(&Value::Object(map.clone()), c);
    let again: Map<String, Value> = serde_json::from_str(&respelt).expect("respelt is JSON");
    if exact {
        assert_eq!(key_of(&again, &headers), k, "respelt: {respelt}");
    }

    // Delivery-only fields.
    let mut labelled = map.clone();
    labelled.insert("user".into(), Value::String("someone".into()));
    labelled.insert("metadata".into(), serde_json::json!({"trace": [1, 2]}));
    if !labelled.contains_key("stream") {
        labelled.insert("stream".into(), Value::Bool(false));
    }
    let mut plain = map.clone();
    plain.remove("user");
    plain.remove("metadata");
    assert_eq!(key_of(&labelled, &headers), key_of(&plain, &headers));

    // Distinct header names in any order and case, values padded.
    let shuffled: Vec<(String, Vec<u8>)> = headers
        .iter()
        .rev()
        .map(|(n, v)| {
            let mut padded = b" ".to_vec();
            padded.extend_from_slice(v);
            padded.push(b'\t');
            (n.to_ascii_uppercase(), padded)
        })
        .collect();
    assert_eq!(key_of(&map, &shuffled), k);
}

/// Up to four headers with distinct names, some of which take part in the key.
fn headers_for_key(c: &mut Choices<'_>) -> Vec<(String, Vec<u8>)> {
    const NAMES: [&str; 6] = [
        "openai-beta",
        "anthropic-version",
        "x-custom",
        "user-agent",
        "authorization",
        "x-stainless-os",
    ];
    let mut out: Vec<(String, Vec<u8>)> = Vec::new();
    for _ in 0..c.below(5) {
        let name = NAMES[c.below(NAMES.len())];
        if out.iter().any(|(n, _)| n == name) {
            continue;
        }
        let value: Vec<u8> = c
            .take(12)
            .iter()
            .map(|b| b'a' + b % 26)
            .collect::<Vec<u8>>();
        out.push((name.to_string(), value));
    }
    out
}

/// `v` as JSON text spelt differently: keys in another order, whitespace, other spellings of the
/// same numbers and strings.
pub fn respell(v: &Value, c: &mut Choices<'_>) -> String {
    let mut out = String::new();
    respell_into(v, c, &mut out);
    out
}

fn ws(c: &mut Choices<'_>) -> &'static str {
    match c.byte() % 8 {
        0..=3 => "",
        4 => " ",
        5 => "\n",
        6 => "\t ",
        _ => "\r\n  ",
    }
}

fn respell_into(v: &Value, c: &mut Choices<'_>, out: &mut String) {
    match v {
        Value::Null | Value::Bool(_) => out.push_str(&v.to_string()),
        Value::Number(n) => respell_number(n, c, out),
        Value::String(s) => respell_string(s, c, out),
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws(c));
                respell_into(x, c, out);
                out.push_str(ws(c));
            }
            out.push(']');
        }
        Value::Object(m) => {
            let mut entries: Vec<(&String, &Value)> = m.iter().collect();
            let turn = c.below(entries.len());
            entries.rotate_left(turn);
            if c.byte() % 2 == 1 {
                entries.reverse();
            }
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(ws(c));
                respell_string(k, c, out);
                out.push_str(ws(c));
                out.push(':');
                out.push_str(ws(c));
                respell_into(x, c, out);
                out.push_str(ws(c));
            }
            out.push('}');
        }
    }
}

fn respell_number(n: &serde_json::Number, c: &mut Choices<'_>, out: &mut String) {
    // Only spellings serde_json reads back exactly: without its `float_roundtrip` feature it
    // does not round decimals correctly (`9007199254740991.0` reads as 9007199254740990), which
    // is a finding of its own (see `equal_numbers_spelt_as_decimals_get_one_key` in
    // properties.rs), not what this property is about.
    const EXACT: u64 = 1 << 53;
    if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= EXACT) {
        let small = i.unsigned_abs() <= EXACT / 1000;
        let s = match c.byte() % 4 {
            0 => i.to_string(),
            1 => format!("{i}e0"),
            2 if small => format!("{i}.0"),
            3 if small => format!("{i}.000E+0"),
            _ => format!("{i}E+0"),
        };
        out.push_str(&s);
        return;
    }
    let s = n.to_string();
    let longer = format!("{s}0");
    let same = serde_json::from_str::<f64>(&longer).ok() == n.as_f64();
    if n.is_f64() && s.contains('.') && !s.contains(['e', 'E']) && same && c.byte() % 2 == 1 {
        out.push_str(&longer);
    } else {
        out.push_str(&s);
    }
}

/// Whether every double in `v` reads back from its own printing as itself (false for the
/// doubles serde_json misreads: see [`respell_number`]).
pub fn doubles_read_back(v: &Value) -> bool {
    match v {
        Value::Number(n) if n.is_f64() => {
            serde_json::from_str::<f64>(&n.to_string()).ok() == n.as_f64()
        }
        Value::Array(a) => a.iter().all(doubles_read_back),
        Value::Object(m) => m.values().all(doubles_read_back),
        _ => true,
    }
}

fn respell_string(s: &str, c: &mut Choices<'_>, out: &mut String) {
    if c.byte() & 1 == 0 {
        out.push_str(&serde_json::to_string(s).unwrap());
        return;
    }
    out.push('"');
    for unit in s.encode_utf16() {
        out.push_str(&format!("\\u{unit:04X}"));
    }
    out.push('"');
}

// ---------------------------------------------------------------------------------------------
// (c) Event streams.

/// Lines longer than this are dropped by the observer when they span chunks (a documented bound
/// on its memory), so chunking can only change what it sees past it.
pub const OBSERVER_MAX_LINE: usize = 64 * 1024;
/// An undecided event longer than this is let through by [`HideUsage`] (documented): chunking
/// can only change its output past it.
pub const HIDE_USAGE_MAX_HELD: usize = 16 * 1024;

#[derive(Debug, PartialEq)]
pub struct Observed {
    events: u64,
    done: bool,
    error: bool,
    content: bool,
    usage: Option<Usage>,
    content_bytes: u64,
    tail: Option<Vec<u8>>,
    stream_complete: Option<bool>,
}

pub fn observe(chunks: &[&[u8]]) -> Observed {
    let mut o = SseObserver::new();
    for c in chunks {
        o.observe(c);
    }
    let mut log = RequestLog::default();
    let tail = o.finish(&mut log);
    Observed {
        events: o.events(),
        done: o.saw_done(),
        error: o.saw_error(),
        content: o.saw_content(),
        usage: o.usage(),
        content_bytes: o.content_bytes(),
        tail,
        stream_complete: log.stream_complete,
    }
}

/// The observer sees the same stream whatever its chunking (lines within its bound).
pub fn observer_ignores_chunking(stream: &[u8], cuts: &[usize]) {
    let whole = observe(&[stream]);
    let split = observe(&pieces(stream, cuts));
    if stream.len() <= OBSERVER_MAX_LINE {
        assert_eq!(whole, split, "cuts {cuts:?}");
    }
}

/// What the client gets through [`HideUsage`] when the stream comes in these chunks.
pub fn hide_usage(chunks: &[&[u8]]) -> Vec<u8> {
    let mut f = HideUsage::new();
    let mut out = Vec::new();
    for c in chunks {
        out.extend_from_slice(&f.filter(Bytes::copy_from_slice(c)));
    }
    out.extend_from_slice(&f.finish());
    out
}

/// The events of a stream: each ends with a blank line (`\n\n` or `\n\r\n`); an unfinished
/// last one is kept as it is.
pub fn events(stream: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..stream.len() {
        let ends = stream[i] == b'\n'
            && ((i > start && stream[i - 1] == b'\n')
                || (i > start + 1 && stream[i - 1] == b'\r' && stream[i - 2] == b'\n'));
        if ends {
            out.push(&stream[start..=i]);
            start = i + 1;
        }
    }
    if start < stream.len() {
        out.push(&stream[start..]);
    }
    out
}

/// The stream with its usage-only events removed, event by event: what the filter promises.
pub fn without_usage_events(stream: &[u8]) -> Vec<u8> {
    events(stream)
        .into_iter()
        .filter(|e| !is_usage_only(e) || !ends_event(e))
        .flatten()
        .copied()
        .collect()
}

fn ends_event(e: &[u8]) -> bool {
    e.ends_with(b"\n\n") || e.ends_with(b"\n\r\n")
}

/// Finding (fuzzing, issue 14): a usage-only event whose first `"choices"` is not its own (a
/// nested object's, or a duplicate key's) with an element is let through when a chunk ends
/// after that array's first element: [`HideUsage`] decides "not usage" from the event's start.
/// See `hide_usage_cuts_a_usage_event_whatever_comes_before_its_own_choices` in properties.rs.
pub fn leaks_when_split(event: &[u8]) -> bool {
    if !is_usage_only(event) {
        return false;
    }
    let Some(at) = event.windows(9).position(|w| w == b"\"choices\"") else {
        return false;
    };
    let mut rest = event[at + 9..]
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_whitespace());
    rest.next() == Some(b':') && rest.next() == Some(b'[') && rest.next() != Some(b']')
}

/// [`HideUsage`] removes exactly the usage-only events, and gives the same bytes whatever the
/// chunking (events within its bound), but for the known divergence of [`leaks_when_split`].
pub fn hide_usage_ignores_chunking(stream: &[u8], cuts: &[usize]) {
    hide_usage_check(stream, cuts, false);
}

/// The check of [`hide_usage_ignores_chunking`]; `strict`: the known divergence fails it too.
pub fn hide_usage_check(stream: &[u8], cuts: &[usize], strict: bool) {
    let whole = hide_usage(&[stream]);
    assert_eq!(
        String::from_utf8_lossy(&whole),
        String::from_utf8_lossy(&without_usage_events(stream)),
        "the stream in one chunk"
    );
    if stream.len() > HIDE_USAGE_MAX_HELD {
        return;
    }
    let split = hide_usage(&pieces(stream, cuts));
    let known = |out: &[u8]| -> Vec<u8> {
        events(out)
            .into_iter()
            .filter(|e| strict || !leaks_when_split(e))
            .flatten()
            .copied()
            .collect()
    };
    assert_eq!(
        String::from_utf8_lossy(&known(&split)),
        String::from_utf8_lossy(&known(&whole)),
        "cuts {cuts:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// (d) The rewrite of the body sent upstream.

/// The top-level fields of a JSON object in order, values as their bytes.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::new();
                while let Some(e) = map.next_entry::<String, &'de RawValue>()? {
                    out.push(e);
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// `rewrite` gives `None` exactly for bodies that are not JSON objects; otherwise the same fields
/// in the same order, every value byte for byte, except `model` (the one given) and
/// `stream_options` (with `include_usage: true`, its other members kept), which is appended when
/// absent. A request that validated still validates.
pub fn rewrite_changes_only_model_and_stream_options(
    body: &[u8],
    model: Option<&str>,
    include_usage: bool,
) {
    let out = rewrite(body, model, include_usage);
    let Ok(before) = serde_json::from_slice::<Fields<'_>>(body) else {
        assert_eq!(out, None, "not an object, yet rewritten");
        return;
    };
    let out = out.expect("an object is rewritten");
    let after: Fields<'_> = serde_json::from_slice(&out).expect("the rewritten body is JSON");
    let mut want: Vec<(&str, Option<&[u8]>)> = Vec::new();
    let mut saw_options = false;
    for (k, v) in &before.0 {
        match k.as_str() {
            "model" if model.is_some() => want.push((k, None)),
            "stream_options" if include_usage => {
                saw_options = true;
                want.push((k, None));
            }
            _ => want.push((k, Some(v.get().as_bytes()))),
        }
    }
    if include_usage && !saw_options {
        want.push(("stream_options", None));
    }
    assert_eq!(
        after.0.len(),
        want.len(),
        "{}",
        String::from_utf8_lossy(&out)
    );
    for ((k, v), (wk, wv)) in after.0.iter().zip(&want) {
        assert_eq!(k, wk, "field order");
        match wv {
            Some(bytes) => assert_eq!(v.get().as_bytes(), *bytes, "field {k} kept byte for byte"),
            None if k == "model" => {
                let m: String = serde_json::from_str(v.get()).expect("model is a string");
                assert_eq!(Some(m.as_str()), model);
            }
            None => {
                let opts: Map<String, Value> =
                    serde_json::from_str(v.get()).expect("stream_options is an object");
                assert_eq!(opts.get("include_usage"), Some(&Value::Bool(true)));
            }
        }
    }
    // The client's other stream options are kept (the last `stream_options` wins, as in
    // validation). Only for bodies that parse whole: reading the fields does not check the
    // values' escapes (a lone surrogate), validation does and refuses such bodies first.
    let whole = serde_json::from_slice::<Map<String, Value>>(body);
    if let (true, Ok(b)) = (include_usage, whole) {
        let a: Map<String, Value> = serde_json::from_slice(&out).unwrap();
        if let Some(Value::Object(old)) = b.get("stream_options") {
            let new = a["stream_options"].as_object().unwrap();
            for (k, v) in old {
                // stream_options is re-encoded: a double serde_json misreads changes (the
                // finding of `equal_numbers_spelt_as_decimals_get_one_key`).
                if k != "include_usage" && doubles_read_back(v) {
                    assert_eq!(new.get(k), Some(v), "stream_options.{k}");
                }
            }
        }
    }
    if model.is_some_and(|m| !m.trim().is_empty()) {
        for route in INFERENCE_ROUTES {
            if validate(route, body).is_ok() {
                let again = validate(route, &out);
                assert!(again.is_ok(), "{route:?}: {again:?}");
                assert_eq!(again.unwrap().model, model.unwrap());
            }
        }
    }
}

// --- the limiter's arithmetic ----------------------------------------------------------------

use gateway_core::limits::{
    decide, peek, reserve, settle, standing, validate_keys, Demand, KeyConfig, LimitSettings,
    MemoryCounters, Reply, Reservation,
};
use gateway_core::pricing::Money;

/// A sequence of requests against one key's limits, each step steered by the choices: a
/// reservation (any tokens and worst-case cost, sometimes a cache hit), the settlement of an
/// earlier one (at any actual use up to what it reserved), or time passing (within the minute,
/// to the next minute, past a reservation's life). Checked at every step: granted requests in a
/// window never exceed `rpm`, granted tokens never exceed `tpm`, spent plus reserved never
/// exceeds the budget, the headers' `remaining` never exceeds the limit, and a refusal changes
/// nothing. Replies with arbitrary totals never make the decision panic.
pub fn limiter_never_overspends(c: &mut Choices<'_>) {
    let rpm = 1 + c.below(20) as u64;
    let tpm = 1 + c.below(5000) as u64;
    let budget_nanos = 1 + c.below(60_000) as u64;
    let key: KeyConfig = serde_json::from_value(serde_json::json!({
        "id": "fuzz",
        "key_sha256": "00".repeat(32),
        "rpm": rpm,
        "tpm": tpm,
        "budget_usd": {"amount": format!("0.{budget_nanos:09}"), "period": "day"},
    }))
    .unwrap();
    let policy = validate_keys(&[key], &LimitSettings::default())
        .unwrap()
        .remove(0)
        .1;
    let amount = policy.budget.unwrap().amount;
    let mut store = MemoryCounters::new();
    let mut now: u64 = 1_700_000_000_000 + c.below(60_000) as u64;
    let mut window = now / 60_000;
    let (mut requests, mut tokens) = (0u64, 0u64);
    let mut open: Vec<(Reservation, u64, Money)> = Vec::new();
    for _ in 0..(1 + c.below(60)) {
        match c.byte() % 8 {
            0..=3 => {
                let hit = c.byte().is_multiple_of(5);
                let t = c.below(3000) as u64;
                let cost = Money::from_picos(c.below(30_000) as u128 * 1000);
                let d = Demand {
                    tokens: if hit { 0 } else { t },
                    cost: if hit { Money::ZERO } else { cost },
                    hit,
                };
                let Some((call, pending)) = reserve(&policy, 0, &d, now) else {
                    panic!("a limited key makes a store call");
                };
                let keys: Vec<String> = call.op.keys().iter().map(|k| k.to_string()).collect();
                let before: Vec<i64> = keys.iter().map(|k| store.value(k, now)).collect();
                let reply = store.apply(&call.op, now);
                let v = decide(&policy, pending, &reply, now);
                for w in [v.requests, v.tokens].into_iter().flatten() {
                    assert!(w.remaining <= w.limit, "{w:?}");
                }
                match v.outcome {
                    Ok(r) => {
                        requests += 1;
                        if !hit {
                            tokens += t.max(1).min(tpm + 1);
                            open.push((r, t, cost));
                        }
                        assert!(requests <= rpm, "{requests} requests granted, rpm {rpm}");
                        assert!(tokens <= tpm, "{tokens} tokens granted, tpm {tpm}");
                    }
                    Err(e) => {
                        assert_eq!(e.status(), 429, "{e:?}");
                        let after: Vec<i64> = keys.iter().map(|k| store.value(k, now)).collect();
                        assert_eq!(after, before, "a refusal changes nothing");
                    }
                }
            }
            4 | 5 if !open.is_empty() => {
                let (r, t, cost) = open.remove(c.below(open.len()));
                let used = c.below(t as usize + 1) as u64;
                let actual = cost.scaled(c.below(101) as u128, 100);
                if let Some(call) = settle(&r, used, actual, now) {
                    store.apply(&call.op, now);
                }
                tokens = tokens.saturating_sub(t.max(1).min(tpm + 1) - used.min(t.max(1)));
            }
            6 => now += c.below(10_000) as u64,
            _ => now = (now / 60_000 + 1) * 60_000 + c.below(1000) as u64,
        }
        if now / 60_000 != window {
            window = now / 60_000;
            requests = 0;
            tokens = 0;
        }
        let call = peek(&policy, 0, now).unwrap();
        let reply = store.apply(&call.op, now);
        let s = standing(&policy, Some(&reply), now);
        let b = s.budget.unwrap();
        assert!(
            b.spent.picos() + b.reserved.picos() <= amount.picos(),
            "spent {} + reserved {} > budget {amount}",
            b.spent,
            b.reserved
        );
    }
    // Whatever a store answers, the decision stands.
    let d = Demand {
        tokens: 1,
        cost: Money::from_picos(1),
        hit: false,
    };
    let (_, pending) = reserve(&policy, 0, &d, now).unwrap();
    let totals = (0..c.below(5))
        .map(|_| i64::from(c.byte() as i8) * 1_000_000_007)
        .collect();
    let _ = decide(
        &policy,
        pending,
        &Reply {
            granted: c.byte().is_multiple_of(2),
            totals,
        },
        now,
    );
}
