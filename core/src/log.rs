//! The one JSON line written per request.

use serde::Serialize;

use crate::geo::ClientLocation;
use crate::pricing::Money;
use crate::sse::Usage;

#[derive(Debug, Clone, Default, Serialize)]
pub struct RequestLog {
    /// RFC 3339 with milliseconds, UTC.
    pub time: String,
    pub request_id: String,
    pub runtime: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(skip_serializing_if = "ClientLocation::is_empty")]
    pub client_location: ClientLocation,
    pub method: String,
    pub path: String,
    /// The client key's id (`key_` + a digest prefix; never the key).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_id: Option<String>,
    /// The model the client asked for (`auto`, `tier:NAME` or a model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub requested_model: Option<String>,
    /// The model sent upstream, priced and cached under.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// Why that model: `tier:NAME`, `rule:...`, `default`, `tier_fallback` (see
    /// [`crate::selection`]); with `over_budget` when nothing fitted the cost budget.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub selection: Option<String>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub over_budget: bool,
    pub stream: bool,
    pub status: u16,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    /// What the client was not told: the full configuration error (credentials masked).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_detail: Option<String>,
    /// How an upstream call failed before answering: refused, reset, timed_out, tls, dns, other.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_error: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream_ms: Option<f64>,
    /// The upstream whose answer the client got.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub upstream: Option<String>,
    /// Every upstream attempt, in order.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attempts: Vec<AttemptLog>,
    pub total_ms: f64,
    pub bytes_in: u64,
    pub bytes_out: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prompt_tokens: Option<u64>,
    /// A part of `prompt_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cached_tokens: Option<u64>,
    /// A part of `prompt_tokens` (providers that bill cache writes apart).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_write_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub completion_tokens: Option<u64>,
    /// A part of `completion_tokens`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// Exact, as a decimal string (`"0.000184"`): usage times the model's price.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<Money>,
    /// The token counts behind `cost_usd` were estimated (no usage came), not reported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cost_estimated: Option<bool>,
    /// Usage came but the model has no price: counted, never as free.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unpriced: bool,
    /// A cache hit: what the stored answer cost when it was made.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub saved_usd: Option<Money>,
    /// Until the first content reached the client (streams: the first event with content).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttft_ms: Option<f64>,
    /// The gateway's own time: `total_ms` less the time spent waiting on upstreams.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overhead_ms: Option<f64>,
    /// For streams: whether it ended with `[DONE]`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_complete: Option<bool>,
    /// Which of the key's limits refused the request: `requests`, `tokens`, `budget`, or
    /// `store` (the limiter's store was unreachable and `limits.on_store_error` is `deny`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limited: Option<&'static str>,
    /// The limiter's store failed for this request (`limits.on_store_error` decided).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub limiter_error: bool,
    /// The cache's part: `hit`, `miss` or `bypass` (inference routes only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<&'static str>,
}

/// One upstream attempt in the log line.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct AttemptLog {
    pub upstream: String,
    /// The model tried (when the gateway chose it: a tier may move to its next model).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// `ok` (content came), `http_<status>`, `insufficient_quota`, or the failure's kind
    /// (`refused`, `reset`, `timed_out`, `stream_error`, `stream_cut`, ...).
    pub outcome: String,
    pub ms: f64,
}

impl RequestLog {
    pub fn set_usage(&mut self, usage: Option<Usage>) {
        if let Some(u) = usage {
            self.prompt_tokens = Some(u.prompt_tokens);
            self.completion_tokens = Some(u.completion_tokens);
            self.cached_tokens = Some(u.cached_tokens);
            self.reasoning_tokens = Some(u.reasoning_tokens);
            self.cache_write_tokens = (u.cache_write_tokens > 0).then_some(u.cache_write_tokens);
        }
    }

    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Formats a Unix time in milliseconds as RFC 3339, without reading any clock.
pub fn format_time(unix_ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(unix_ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_is_rfc3339_with_millis() {
        assert_eq!(format_time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn log_line_is_one_line_of_json_with_the_required_fields() {
        let mut l = RequestLog {
            request_id: "r\n1".into(),
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            status: 200,
            ..Default::default()
        };
        l.set_usage(Some(Usage {
            prompt_tokens: 1,
            completion_tokens: 2,
            total_tokens: 3,
            ..Default::default()
        }));
        let line = l.to_line();
        assert!(!line.contains('\n'));
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        for k in [
            "time",
            "request_id",
            "method",
            "path",
            "status",
            "total_ms",
            "bytes_in",
            "bytes_out",
        ] {
            assert!(v.get(k).is_some(), "{k}");
        }
        assert_eq!(v["completion_tokens"], 2);
    }
}
