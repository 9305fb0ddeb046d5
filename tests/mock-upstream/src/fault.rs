//! Whole-upstream faults: `POST /__fault` makes this mock misbehave for every request until
//! `DELETE /__fault` or `POST /__reset`. The model-name behaviours stay as they are; a fault
//! only changes what the whole upstream does.

use serde_json::{json, Map, Value};

/// The fields `POST /__fault` accepts; anything else is rejected.
pub const FIELDS: &[&str] = &[
    "status",
    "retry_after",
    "retry_after_ms",
    "reset_requests",
    "reset_tokens",
    "body_retry_after",
    "insufficient_quota",
    "first_byte_delay_ms",
    "delay_ms",
    "hang",
    "cut_after_events",
    "error_event_before_content",
    "error_event_after_content",
];

/// At most this many content events for `cut_after_events` (as for `mock-stream-{N}x…`).
const MAX_EVENTS: u64 = 100_000;

#[derive(Debug, Default, Clone, PartialEq)]
pub struct Fault {
    /// Every request answers this status (400-599) with an OpenAI error body.
    pub status: Option<u16>,
    /// `retry-after`, verbatim (seconds or an HTTP date).
    pub retry_after: Option<String>,
    /// `retry-after-ms`.
    pub retry_after_ms: Option<u64>,
    /// `x-ratelimit-reset-requests`, verbatim.
    pub reset_requests: Option<String>,
    /// `x-ratelimit-reset-tokens`, verbatim.
    pub reset_tokens: Option<String>,
    /// `"retry_after": N` inside the JSON `error` object.
    pub body_retry_after: Option<u64>,
    /// 429 with type and code `insufficient_quota`.
    pub insufficient_quota: bool,
    /// Wait this long before the response headers.
    pub first_byte_delay_ms: u64,
    /// Wait this long before handling (simulated network latency); adds to the above.
    pub delay_ms: u64,
    /// Accept the request and never answer.
    pub hang: bool,
    /// Streamed requests: the head and N content events, then the connection is dropped.
    pub cut_after_events: Option<u32>,
    /// Streamed requests: the head, a role-only chunk, an error event, end (no `[DONE]`).
    pub error_event_before_content: bool,
    /// Streamed requests: one content event, an error event, end (no `[DONE]`).
    pub error_event_after_content: bool,
}

/// What a fault does to a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum StreamFault {
    /// A role-only first chunk, then the error event, then the end of the stream.
    ErrorBeforeContent,
    /// `events` content events, then the error event, then the end of the stream.
    ErrorAfterContent { events: u32 },
    /// `events` content events, then the connection is dropped.
    Cut { events: u32 },
}

/// One header a faulted error answer carries.
pub type Header = (&'static str, String);

fn header_text(key: &str, v: &Value) -> Result<String, String> {
    let s = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        _ => {
            return Err(format!(
                "fault field '{key}' must be a string (or a number)"
            ))
        }
    };
    if http::HeaderValue::from_str(&s).is_err() {
        return Err(format!(
            "fault field '{key}' is not a valid header value: {s:?}"
        ));
    }
    Ok(s)
}

fn uint(key: &str, v: &Value) -> Result<u64, String> {
    v.as_u64()
        .ok_or_else(|| format!("fault field '{key}' must be a non-negative integer"))
}

fn boolean(key: &str, v: &Value) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("fault field '{key}' must be true or false"))
}

impl Fault {
    /// Parses a `POST /__fault` body.
    pub fn parse(body: &[u8]) -> Result<Fault, String> {
        let v: Value =
            serde_json::from_slice(body).map_err(|e| format!("fault body is not JSON: {e}"))?;
        Fault::from_json(&v)
    }

    /// Reads a fault from a JSON object; unknown fields and wrong types are errors.
    pub fn from_json(v: &Value) -> Result<Fault, String> {
        let Some(obj) = v.as_object() else {
            return Err("fault body must be a JSON object".into());
        };
        let mut f = Fault::default();
        for (key, value) in obj {
            if value.is_null() && FIELDS.contains(&key.as_str()) {
                continue;
            }
            match key.as_str() {
                "status" => {
                    let n = uint(key, value)?;
                    if !(400..600).contains(&n) {
                        return Err(format!("fault field 'status' must be 400-599, got {n}"));
                    }
                    f.status = Some(n as u16);
                }
                "retry_after" => f.retry_after = Some(header_text(key, value)?),
                "retry_after_ms" => f.retry_after_ms = Some(uint(key, value)?),
                "reset_requests" => f.reset_requests = Some(header_text(key, value)?),
                "reset_tokens" => f.reset_tokens = Some(header_text(key, value)?),
                "body_retry_after" => f.body_retry_after = Some(uint(key, value)?),
                "insufficient_quota" => f.insufficient_quota = boolean(key, value)?,
                "first_byte_delay_ms" => f.first_byte_delay_ms = uint(key, value)?,
                "delay_ms" => f.delay_ms = uint(key, value)?,
                "hang" => f.hang = boolean(key, value)?,
                "cut_after_events" => {
                    let n = uint(key, value)?;
                    if n > MAX_EVENTS {
                        return Err(format!(
                            "fault field 'cut_after_events' must be at most {MAX_EVENTS}"
                        ));
                    }
                    f.cut_after_events = Some(n as u32);
                }
                "error_event_before_content" => f.error_event_before_content = boolean(key, value)?,
                "error_event_after_content" => f.error_event_after_content = boolean(key, value)?,
                other => {
                    return Err(format!(
                        "unknown fault field '{other}' (known: {})",
                        FIELDS.join(", ")
                    ))
                }
            }
        }
        let retry_fields = f.retry_after.is_some()
            || f.retry_after_ms.is_some()
            || f.reset_requests.is_some()
            || f.reset_tokens.is_some()
            || f.body_retry_after.is_some();
        if retry_fields && f.status.is_none() {
            return Err(
                "retry_after, retry_after_ms, reset_requests, reset_tokens and \
                        body_retry_after only apply together with 'status'"
                    .into(),
            );
        }
        if f.insufficient_quota && f.status.is_some_and(|s| s != 429) {
            return Err("'insufficient_quota' answers 429; 'status' must be absent or 429".into());
        }
        Ok(f)
    }

    /// The fault as JSON: only the fields that are set (`{}` for no fault).
    pub fn to_json(&self) -> Value {
        let mut m = Map::new();
        let mut put = |k: &str, v: Value| {
            m.insert(k.to_string(), v);
        };
        if let Some(s) = self.status {
            put("status", json!(s));
        }
        if let Some(s) = &self.retry_after {
            put("retry_after", json!(s));
        }
        if let Some(n) = self.retry_after_ms {
            put("retry_after_ms", json!(n));
        }
        if let Some(s) = &self.reset_requests {
            put("reset_requests", json!(s));
        }
        if let Some(s) = &self.reset_tokens {
            put("reset_tokens", json!(s));
        }
        if let Some(n) = self.body_retry_after {
            put("body_retry_after", json!(n));
        }
        if self.insufficient_quota {
            put("insufficient_quota", json!(true));
        }
        if self.first_byte_delay_ms > 0 {
            put("first_byte_delay_ms", json!(self.first_byte_delay_ms));
        }
        if self.delay_ms > 0 {
            put("delay_ms", json!(self.delay_ms));
        }
        if self.hang {
            put("hang", json!(true));
        }
        if let Some(n) = self.cut_after_events {
            put("cut_after_events", json!(n));
        }
        if self.error_event_before_content {
            put("error_event_before_content", json!(true));
        }
        if self.error_event_after_content {
            put("error_event_after_content", json!(true));
        }
        Value::Object(m)
    }

    /// Both delays, in ms: they add.
    pub fn delay_total_ms(&self) -> u64 {
        self.delay_ms.saturating_add(self.first_byte_delay_ms)
    }

    /// The status every request answers, if any.
    pub fn error_status(&self) -> Option<u16> {
        self.status.or(self.insufficient_quota.then_some(429))
    }

    /// The error answer (status, body, extra headers) for a faulted request; `None` when the
    /// fault sets no status. `model` is the request's model, when there is one.
    pub fn error_answer(&self, model: Option<&str>) -> Option<(u16, Value, Vec<Header>)> {
        let status = self.error_status()?;
        let (message, kind, code) = if self.insufficient_quota {
            (
                "You exceeded your current quota, please check your plan and billing details."
                    .to_string(),
                "insufficient_quota",
                "insufficient_quota",
            )
        } else {
            status_error(status, model)
        };
        let mut error = json!({"message": message, "type": kind, "param": null, "code": code});
        if let Some(n) = self.body_retry_after {
            error["retry_after"] = json!(n);
        }
        let mut headers = Vec::new();
        if let Some(s) = &self.retry_after {
            headers.push(("retry-after", s.clone()));
        }
        if let Some(n) = self.retry_after_ms {
            headers.push(("retry-after-ms", n.to_string()));
        }
        if let Some(s) = &self.reset_requests {
            headers.push(("x-ratelimit-reset-requests", s.clone()));
        }
        if let Some(s) = &self.reset_tokens {
            headers.push(("x-ratelimit-reset-tokens", s.clone()));
        }
        Some((status, json!({ "error": error }), headers))
    }

    /// What the fault does to a streamed answer, if anything. With several stream fields set,
    /// `error_event_before_content` wins, then `error_event_after_content` (after
    /// `cut_after_events` content events when that is set too, else 1), then the cut.
    pub fn stream_fault(&self) -> Option<StreamFault> {
        if self.error_event_before_content {
            Some(StreamFault::ErrorBeforeContent)
        } else if self.error_event_after_content {
            Some(StreamFault::ErrorAfterContent {
                events: self.cut_after_events.unwrap_or(1),
            })
        } else {
            self.cut_after_events
                .map(|events| StreamFault::Cut { events })
        }
    }
}

/// The error event a faulted stream ends with.
pub fn stream_error_event() -> Value {
    json!({"error": {"message": "upstream overloaded", "type": "server_error", "param": null, "code": "overloaded"}})
}

/// OpenAI-like message, type and code for an error status.
pub fn status_error(status: u16, model: Option<&str>) -> (String, &'static str, &'static str) {
    let invalid = "invalid_request_error";
    let server = "server_error";
    match status {
        400 => ("Bad request.".into(), invalid, "invalid_request"),
        401 => (
            "Incorrect API key provided.".into(),
            invalid,
            "invalid_api_key",
        ),
        403 => (
            "You are not allowed to make this request.".into(),
            invalid,
            "permission_denied",
        ),
        404 => (
            match model {
                Some(m) => {
                    format!("The model `{m}` does not exist or you do not have access to it.")
                }
                None => "Not found.".into(),
            },
            invalid,
            "model_not_found",
        ),
        408 => ("Request timed out.".into(), server, "timeout"),
        409 => ("Conflict.".into(), invalid, "conflict"),
        413 => ("Request too large.".into(), invalid, "request_too_large"),
        422 => (
            "Unprocessable entity.".into(),
            invalid,
            "unprocessable_entity",
        ),
        429 => (
            match model {
                Some(m) => format!("Rate limit exceeded for model {m}"),
                None => "Rate limit exceeded".into(),
            },
            "rate_limit_error",
            "rate_limit_exceeded",
        ),
        500 => (
            "The server had an error while processing your request.".into(),
            server,
            "internal_error",
        ),
        502 => ("Bad gateway.".into(), server, "bad_gateway"),
        503 => (
            "The server is overloaded or not ready yet.".into(),
            server,
            "service_unavailable",
        ),
        504 => ("Gateway timeout.".into(), server, "gateway_timeout"),
        s if s >= 500 => (format!("Upstream error {s}."), server, "server_error"),
        s => (
            format!("Request failed with status {s}."),
            invalid,
            "invalid_request",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: Value) -> Result<Fault, String> {
        Fault::parse(&serde_json::to_vec(&v).unwrap())
    }

    #[test]
    fn empty_object_is_no_fault() {
        let f = parse(json!({})).unwrap();
        assert_eq!(f, Fault::default());
        assert_eq!(f.to_json(), json!({}));
        assert_eq!(f.error_status(), None);
        assert_eq!(f.stream_fault(), None);
    }

    #[test]
    fn all_fields_parse_and_round_trip() {
        let body = json!({
            "status": 429, "retry_after": "Wed, 21 Oct 2015 07:28:00 GMT", "retry_after_ms": 1500,
            "reset_requests": "1s", "reset_tokens": "6m0s", "body_retry_after": 5,
            "first_byte_delay_ms": 10, "delay_ms": 20, "hang": true, "cut_after_events": 0,
            "error_event_before_content": true, "error_event_after_content": true
        });
        let f = parse(body.clone()).unwrap();
        assert_eq!(f.status, Some(429));
        assert_eq!(
            f.retry_after.as_deref(),
            Some("Wed, 21 Oct 2015 07:28:00 GMT")
        );
        assert_eq!(f.retry_after_ms, Some(1500));
        assert_eq!(f.cut_after_events, Some(0));
        assert_eq!(f.delay_total_ms(), 30);
        assert!(f.hang);
        assert_eq!(f.to_json(), body);
        assert_eq!(parse(f.to_json()).unwrap(), f);
    }

    #[test]
    fn unknown_fields_and_wrong_types_are_rejected() {
        let e = parse(json!({"status": 503, "stauts": 1})).unwrap_err();
        assert!(e.contains("unknown fault field 'stauts'"), "{e}");
        assert!(parse(json!({"status": "503"})).is_err());
        assert!(parse(json!({"status": 200})).is_err());
        assert!(parse(json!({"status": 503, "retry_after_ms": -1})).is_err());
        assert!(parse(json!({"hang": 1})).is_err());
        assert!(parse(json!({"status": 429, "retry_after": "a\nb"})).is_err());
        assert!(parse(json!([1, 2])).is_err());
        assert!(Fault::parse(b"{not json").is_err());
    }

    #[test]
    fn retry_fields_need_a_status() {
        let e = parse(json!({"retry_after": "3"})).unwrap_err();
        assert!(e.contains("only apply together with 'status'"), "{e}");
        assert!(parse(json!({"insufficient_quota": true, "status": 503})).is_err());
        assert!(parse(json!({"insufficient_quota": true, "status": 429})).is_ok());
        // A number is accepted for the verbatim header fields.
        let f = parse(json!({"status": 429, "retry_after": 7})).unwrap();
        assert_eq!(f.retry_after.as_deref(), Some("7"));
        // null means "not set".
        assert_eq!(parse(json!({"status": null})).unwrap(), Fault::default());
    }

    #[test]
    fn rate_limit_answer_carries_headers_and_body_retry_after() {
        let f = parse(json!({"status": 429, "retry_after": "3", "retry_after_ms": 3000,
                             "reset_requests": "1s", "reset_tokens": "6m0s", "body_retry_after": 5}))
        .unwrap();
        let (status, body, headers) = f.error_answer(Some("gpt-4.1")).unwrap();
        assert_eq!(status, 429);
        assert_eq!(
            body,
            json!({"error": {"message": "Rate limit exceeded for model gpt-4.1",
                             "type": "rate_limit_error", "param": null,
                             "code": "rate_limit_exceeded", "retry_after": 5}})
        );
        assert_eq!(
            headers,
            vec![
                ("retry-after", "3".to_string()),
                ("retry-after-ms", "3000".to_string()),
                ("x-ratelimit-reset-requests", "1s".to_string()),
                ("x-ratelimit-reset-tokens", "6m0s".to_string()),
            ]
        );
    }

    #[test]
    fn insufficient_quota_is_a_429_without_retry_headers() {
        let f = parse(json!({"insufficient_quota": true})).unwrap();
        let (status, body, headers) = f.error_answer(None).unwrap();
        assert_eq!(status, 429);
        assert_eq!(body["error"]["type"], "insufficient_quota");
        assert_eq!(body["error"]["code"], "insufficient_quota");
        assert!(headers.is_empty());
    }

    #[test]
    fn statuses_get_sensible_types_and_codes() {
        let tc = |s| {
            let (_, t, c) = status_error(s, None);
            (t, c)
        };
        assert_eq!(tc(401), ("invalid_request_error", "invalid_api_key"));
        assert_eq!(tc(429), ("rate_limit_error", "rate_limit_exceeded"));
        assert_eq!(tc(500), ("server_error", "internal_error"));
        assert_eq!(tc(503), ("server_error", "service_unavailable"));
        assert_eq!(tc(599).0, "server_error");
    }

    #[test]
    fn stream_fault_precedence() {
        let sf = |v| parse(v).unwrap().stream_fault();
        assert_eq!(
            sf(json!({"cut_after_events": 0})),
            Some(StreamFault::Cut { events: 0 })
        );
        assert_eq!(
            sf(json!({"error_event_after_content": true})),
            Some(StreamFault::ErrorAfterContent { events: 1 })
        );
        assert_eq!(
            sf(json!({"error_event_after_content": true, "cut_after_events": 3})),
            Some(StreamFault::ErrorAfterContent { events: 3 })
        );
        assert_eq!(
            sf(json!({"error_event_before_content": true, "cut_after_events": 3})),
            Some(StreamFault::ErrorBeforeContent)
        );
    }
}
