//! The one error type of the gateway and its rendering to the OpenAI error shape.
//!
//! Both runtimes turn every failure they produce into a [`GatewayError`] and render it with
//! [`GatewayError::body`], so a client sees the same status and JSON whichever runtime served it.

use serde::Serialize;

/// Where an error comes from, as OpenAI's `type` field names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    InvalidRequest,
    Authentication,
    Api,
    /// A requests-per-minute limit (OpenAI's `type` for it).
    Requests,
    /// A tokens-per-minute limit.
    Tokens,
    /// A spend budget.
    InsufficientQuota,
}

impl ErrorKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::Api => "api_error",
            ErrorKind::Requests => "requests",
            ErrorKind::Tokens => "tokens",
            ErrorKind::InsufficientQuota => "insufficient_quota",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    /// The body is not JSON at all.
    MalformedJson {
        detail: String,
    },
    /// A required field is absent.
    MissingField {
        param: &'static str,
    },
    /// A field is present with the wrong type or an invalid value.
    InvalidField {
        param: String,
        message: String,
    },
    /// No `Authorization: Bearer` header.
    MissingApiKey,
    /// A bearer key that is not one of `GATEWAY_API_KEYS` or `keys`.
    InvalidApiKey,
    /// A configured key marked `disabled`.
    DisabledApiKey,
    /// A model (or alias) the key may not use: answered as OpenAI answers a model one has no
    /// access to.
    ModelNotAllowed {
        model: String,
    },
    /// A key's requests or tokens per minute are used up.
    RateLimited {
        kind: RateLimitKind,
        key_id: String,
        limit: u64,
        used: u64,
        requested: u64,
        retry_after_ms: u64,
    },
    /// The request's worst-case cost does not fit in what is left of the key's budget.
    BudgetExceeded {
        key_id: String,
        period: &'static str,
        retry_after_ms: u64,
    },
    /// The limiter's store could not be reached and `limits.on_store_error` is `deny`.
    LimiterUnavailable {
        retry_after_ms: u64,
    },
    NotFound {
        method: String,
        path: String,
    },
    MethodNotAllowed {
        method: String,
        path: String,
        allowed: &'static str,
    },
    /// The client did not finish sending its body in time.
    RequestTimeout,
    PayloadTooLarge {
        limit: u64,
    },
    /// The request's headers are more or larger than the gateway accepts.
    HeadersTooLarge {
        fields: usize,
        bytes: usize,
    },
    UnsupportedMediaType {
        content_type: String,
    },
    /// The upstream could not be reached (connect, TLS or reset before a response); the kind is
    /// kept for logs and for the decision to try elsewhere.
    UpstreamUnreachable {
        cause: TransportError,
    },
    /// The upstream answered something that is not a valid response.
    UpstreamInvalidResponse,
    /// The upstream did not answer within the configured time.
    UpstreamTimeout,
    /// Every upstream refused the operator's key (401/403): an operator problem, not the
    /// client's.
    UpstreamAuthFailed,
    /// No configured upstream serves the requested model.
    ModelNotServed {
        model: String,
    },
    /// A stream that had started ended without `[DONE]` (sent as an SSE error event).
    UpstreamStreamInterrupted,
    /// A relayed stream sent nothing for `stream_idle_timeout_ms` (sent as an SSE error event).
    UpstreamStreamStalled {
        idle_ms: u64,
    },
    /// A failure inside the gateway that no client input explains.
    Internal {
        message: String,
    },
    /// The gateway cannot serve because a setting is missing or invalid (the Worker reads its
    /// settings per isolate, so it answers this instead of failing to start).
    Misconfigured(ConfigError),
}

/// Which per-minute limit a request crossed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RateLimitKind {
    Requests,
    Tokens,
}

/// A setting that is missing or invalid, found at start-up. Apart from [`GatewayError`]: it is
/// about the operator's settings, not about a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The setting's name (`UPSTREAM_BASE_URL`, `GATEWAY_CONFIG`, ...).
    pub setting: String,
    pub message: String,
}

impl ConfigError {
    /// The message may quote the setting's value (a URL, a JSON document): any password in a URL
    /// in it is masked here, so no log or terminal ever shows one.
    pub fn new(setting: &str, message: impl Into<String>) -> ConfigError {
        ConfigError {
            setting: setting.to_string(),
            message: mask_credentials(&message.into()),
        }
    }
}

/// Masks the user information of every URL in `text`: `https://user:pass@host` becomes
/// `https://***@host`.
pub fn mask_credentials(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("://") {
        let (head, tail) = rest.split_at(at + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '\'' | '"' | '`') || c.is_whitespace())
            .unwrap_or(tail.len());
        let (authority, after) = tail.split_at(end);
        match authority.rfind('@') {
            Some(i) => {
                out.push_str("***");
                out.push_str(authority.get(i..).unwrap_or_default());
            }
            None => out.push_str(authority),
        }
        rest = after;
    }
    out.push_str(rest);
    out
}

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.setting, self.message)
    }
}

impl std::error::Error for ConfigError {}

impl From<ConfigError> for GatewayError {
    fn from(e: ConfigError) -> GatewayError {
        GatewayError::Misconfigured(e)
    }
}

/// Why an upstream call failed before a response head arrived, as the runtime observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportError {
    /// The connection was refused (nothing listening).
    Refused,
    /// The connection was reset or closed before a complete response head.
    Reset,
    /// The platform's own connect or read timer fired (the gateway's deadlines are separate).
    TimedOut,
    /// TLS handshake or certificate failure.
    Tls,
    /// The upstream's host name did not resolve.
    Dns,
    /// The request could not be built or sent for another reason.
    Other,
}

impl TransportError {
    /// The log line's `upstream_error` value.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportError::Refused => "refused",
            TransportError::Reset => "reset",
            TransportError::TimedOut => "timed_out",
            TransportError::Tls => "tls",
            TransportError::Dns => "dns",
            TransportError::Other => "other",
        }
    }
}

impl GatewayError {
    pub fn status(&self) -> u16 {
        match self {
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingField { .. }
            | GatewayError::InvalidField { .. } => 400,
            GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey => 401,
            GatewayError::NotFound { .. } | GatewayError::ModelNotAllowed { .. } => 404,
            GatewayError::RateLimited { .. } | GatewayError::BudgetExceeded { .. } => 429,
            GatewayError::LimiterUnavailable { .. } => 503,
            GatewayError::MethodNotAllowed { .. } => 405,
            GatewayError::RequestTimeout => 408,
            GatewayError::PayloadTooLarge { .. } => 413,
            GatewayError::HeadersTooLarge { .. } => 431,
            GatewayError::UnsupportedMediaType { .. } => 415,
            GatewayError::ModelNotServed { .. } => 404,
            GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamAuthFailed
            | GatewayError::UpstreamStreamInterrupted => 502,
            GatewayError::UpstreamTimeout | GatewayError::UpstreamStreamStalled { .. } => 504,
            GatewayError::Misconfigured(_) | GatewayError::Internal { .. } => 500,
        }
    }

    pub fn kind(&self) -> ErrorKind {
        // No wildcard: a new error must be placed here on purpose.
        match self {
            // OpenAI itself answers a bad key with `invalid_request_error`; clients match on it.
            GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey
            | GatewayError::ModelNotAllowed { .. } => ErrorKind::InvalidRequest,
            GatewayError::RateLimited { kind, .. } => match kind {
                RateLimitKind::Requests => ErrorKind::Requests,
                RateLimitKind::Tokens => ErrorKind::Tokens,
            },
            GatewayError::BudgetExceeded { .. } => ErrorKind::InsufficientQuota,
            GatewayError::LimiterUnavailable { .. } => ErrorKind::Api,
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingField { .. }
            | GatewayError::InvalidField { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RequestTimeout
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::ModelNotServed { .. } => ErrorKind::InvalidRequest,
            GatewayError::UpstreamAuthFailed
            | GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamStreamInterrupted
            | GatewayError::UpstreamStreamStalled { .. }
            | GatewayError::Internal { .. }
            | GatewayError::Misconfigured(_) => ErrorKind::Api,
        }
    }

    /// Whether another attempt (the same upstream later, or another one) may succeed where this
    /// failed. Client errors never are; upstream failures before any content reached the client
    /// are.
    pub fn is_retryable(&self) -> bool {
        match self {
            GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamTimeout => true,
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingField { .. }
            | GatewayError::InvalidField { .. }
            | GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::LimiterUnavailable { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RequestTimeout
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamAuthFailed
            | GatewayError::ModelNotServed { .. }
            | GatewayError::UpstreamStreamInterrupted
            | GatewayError::UpstreamStreamStalled { .. }
            | GatewayError::Internal { .. }
            | GatewayError::Misconfigured(_) => false,
        }
    }

    /// Which limit of the key this error is a refusal by, for the log and the metrics.
    pub fn limit_refusal(&self) -> Option<&'static str> {
        match self {
            GatewayError::RateLimited { kind, .. } => Some(match kind {
                RateLimitKind::Requests => "requests",
                RateLimitKind::Tokens => "tokens",
            }),
            GatewayError::BudgetExceeded { .. } => Some("budget"),
            GatewayError::LimiterUnavailable { .. } => Some("store"),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&'static str> {
        Some(match self {
            GatewayError::MalformedJson { .. } => "invalid_json",
            GatewayError::MissingField { .. } => "missing_required_parameter",
            GatewayError::InvalidField { .. } => "invalid_value",
            GatewayError::MissingApiKey => "missing_api_key",
            GatewayError::InvalidApiKey | GatewayError::DisabledApiKey => "invalid_api_key",
            GatewayError::ModelNotAllowed { .. } => "model_not_found",
            GatewayError::RateLimited { .. } => "rate_limit_exceeded",
            GatewayError::BudgetExceeded { .. } => "insufficient_quota",
            GatewayError::LimiterUnavailable { .. } => "rate_limiter_unavailable",
            GatewayError::NotFound { .. } => "not_found",
            GatewayError::MethodNotAllowed { .. } => "method_not_allowed",
            GatewayError::RequestTimeout => "request_timeout",
            GatewayError::PayloadTooLarge { .. } => "request_too_large",
            GatewayError::HeadersTooLarge { .. } => "request_headers_too_large",
            GatewayError::UnsupportedMediaType { .. } => "unsupported_media_type",
            GatewayError::UpstreamUnreachable { .. } => "upstream_unreachable",
            GatewayError::UpstreamInvalidResponse => "upstream_invalid_response",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::UpstreamAuthFailed => "upstream_auth_failed",
            GatewayError::ModelNotServed { .. } => "model_not_found",
            GatewayError::UpstreamStreamInterrupted => "upstream_stream_interrupted",
            GatewayError::UpstreamStreamStalled { .. } => "upstream_stream_timeout",
            GatewayError::Misconfigured(_) => "gateway_misconfigured",
            GatewayError::Internal { .. } => "internal_error",
        })
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            GatewayError::MissingField { param } => Some(param),
            GatewayError::InvalidField { param, .. } => Some(param),
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::LimiterUnavailable { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RequestTimeout
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamAuthFailed
            | GatewayError::UpstreamStreamInterrupted
            | GatewayError::UpstreamStreamStalled { .. }
            | GatewayError::Internal { .. }
            | GatewayError::Misconfigured(_) => None,
            GatewayError::ModelNotServed { .. } | GatewayError::ModelNotAllowed { .. } => {
                Some("model")
            }
        }
    }

    pub fn message(&self) -> String {
        match self {
            GatewayError::MalformedJson { detail } => {
                format!("We could not parse the JSON body of your request: {detail}")
            }
            GatewayError::MissingField { param } => {
                format!("Missing required parameter: '{param}'.")
            }
            GatewayError::InvalidField { message, .. } => message.clone(),
            GatewayError::MissingApiKey => "You didn't provide an API key. Send it in the Authorization header as 'Bearer YOUR_KEY'.".into(),
            GatewayError::InvalidApiKey => "Incorrect API key provided.".into(),
            GatewayError::DisabledApiKey => "This API key has been disabled.".into(),
            GatewayError::ModelNotAllowed { model } => format!(
                "The model `{}` does not exist or you do not have access to it.",
                model.chars().take(256).collect::<String>()
            ),
            GatewayError::RateLimited {
                kind,
                key_id,
                limit,
                used,
                requested,
                retry_after_ms,
            } => {
                let what = match kind {
                    RateLimitKind::Requests => "requests per min (RPM)",
                    RateLimitKind::Tokens => "tokens per min (TPM)",
                };
                format!(
                    "Rate limit reached for key '{key_id}' on {what}: Limit {limit}, Used {used}, Requested {requested}. Please try again in {}.",
                    crate::limits::openai_duration(*retry_after_ms)
                )
            }
            GatewayError::BudgetExceeded { key_id, period, .. } => format!(
                "You exceeded your current quota: the spend budget of key '{key_id}' for this {period} does not cover this request's maximum cost. Lower max_tokens, or wait for the budget to reset."
            ),
            GatewayError::LimiterUnavailable { .. } => {
                "The gateway's rate limiter is unavailable; please try again shortly.".into()
            }
            GatewayError::NotFound { method, path } => format!("Invalid URL ({method} {path})"),
            GatewayError::MethodNotAllowed { method, path, allowed } => {
                format!("Method {method} is not allowed on {path}; use {allowed}.")
            }
            GatewayError::RequestTimeout => "The request body was not received in time.".into(),
            GatewayError::PayloadTooLarge { limit } => {
                format!("The request body exceeds the limit of {limit} bytes.")
            }
            GatewayError::HeadersTooLarge { fields, bytes } => format!(
                "The request headers are too large: {fields} fields, {bytes} bytes (the limit is {} fields and {} bytes).",
                crate::headers::MAX_REQUEST_HEADER_FIELDS,
                crate::headers::MAX_REQUEST_HEADER_BYTES
            ),
            GatewayError::UnsupportedMediaType { content_type } => format!(
                "Unsupported content type '{content_type}'; send the request body as application/json."
            ),
            GatewayError::UpstreamUnreachable { .. } => {
                "The upstream provider could not be reached.".into()
            }
            GatewayError::UpstreamInvalidResponse => {
                "The upstream provider returned an invalid response.".into()
            }
            GatewayError::UpstreamTimeout => {
                "The upstream provider did not respond in time.".into()
            }
            GatewayError::UpstreamAuthFailed => {
                "The gateway's credentials were refused by every upstream provider it tried; this is the gateway operator's problem, not your request's.".into()
            }
            GatewayError::ModelNotServed { model } => {
                format!("The model '{model}' is not served by any upstream of this gateway.")
            }
            GatewayError::UpstreamStreamInterrupted => {
                "The upstream provider's stream ended before it was complete.".into()
            }
            GatewayError::UpstreamStreamStalled { idle_ms } => format!(
                "The upstream provider's stream sent nothing for {idle_ms} ms; the gateway ended it."
            ),
            GatewayError::Internal { message } => format!("Internal gateway error: {message}"),
            // The setting's name only: the details may quote its value, and whoever sees this
            // answer need not be the operator. The details are in the gateway's log.
            GatewayError::Misconfigured(e) => format!(
                "The gateway is misconfigured: the setting {} is missing or invalid (details in the gateway's log).",
                e.setting
            ),
        }
    }

    /// Headers that belong with this error besides `content-type`.
    pub fn extra_headers(&self) -> &'static [(&'static str, &'static str)] {
        match self {
            GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey => &[("www-authenticate", "Bearer")],
            GatewayError::MethodNotAllowed { allowed, .. } => match *allowed {
                "GET" => &[("allow", "GET")],
                _ => &[("allow", "POST")],
            },
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingField { .. }
            | GatewayError::InvalidField { .. }
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::RateLimited { .. }
            | GatewayError::BudgetExceeded { .. }
            | GatewayError::LimiterUnavailable { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::RequestTimeout
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamAuthFailed
            | GatewayError::ModelNotServed { .. }
            | GatewayError::UpstreamStreamInterrupted
            | GatewayError::UpstreamStreamStalled { .. }
            | GatewayError::Internal { .. }
            | GatewayError::Misconfigured(_) => &[],
        }
    }

    /// The `retry-after` of this error, in whole seconds (rounded up, at least 1).
    pub fn retry_after_secs(&self) -> Option<u64> {
        let ms = match self {
            GatewayError::RateLimited { retry_after_ms, .. }
            | GatewayError::BudgetExceeded { retry_after_ms, .. }
            | GatewayError::LimiterUnavailable { retry_after_ms } => *retry_after_ms,
            GatewayError::MalformedJson { .. }
            | GatewayError::MissingField { .. }
            | GatewayError::InvalidField { .. }
            | GatewayError::MissingApiKey
            | GatewayError::InvalidApiKey
            | GatewayError::DisabledApiKey
            | GatewayError::ModelNotAllowed { .. }
            | GatewayError::NotFound { .. }
            | GatewayError::MethodNotAllowed { .. }
            | GatewayError::RequestTimeout
            | GatewayError::PayloadTooLarge { .. }
            | GatewayError::HeadersTooLarge { .. }
            | GatewayError::UnsupportedMediaType { .. }
            | GatewayError::UpstreamUnreachable { .. }
            | GatewayError::UpstreamInvalidResponse
            | GatewayError::UpstreamTimeout
            | GatewayError::UpstreamAuthFailed
            | GatewayError::ModelNotServed { .. }
            | GatewayError::UpstreamStreamInterrupted
            | GatewayError::UpstreamStreamStalled { .. }
            | GatewayError::Internal { .. }
            | GatewayError::Misconfigured(_) => return None,
        };
        Some(ms.div_ceil(1000).max(1))
    }

    /// The OpenAI error body: `{"error":{"message","type","param","code"}}`.
    pub fn body(&self) -> Vec<u8> {
        render_error(
            &self.message(),
            self.kind().as_str(),
            self.param(),
            self.code(),
        )
    }

    /// The same error as one server-sent event, for failures after a stream has started.
    pub fn sse_event(&self) -> Vec<u8> {
        let mut out = b"data: ".to_vec();
        out.extend_from_slice(&self.body());
        out.extend_from_slice(b"\n\n");
        out
    }
}

impl std::fmt::Display for GatewayError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for GatewayError {}

#[derive(Serialize)]
struct ErrorEnvelope<'a> {
    error: ErrorBody<'a>,
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<&'a str>,
    code: Option<&'a str>,
}

/// Renders any error in the OpenAI shape; also used for errors of kinds the enum does not hold.
pub fn render_error(message: &str, kind: &str, param: Option<&str>, code: Option<&str>) -> Vec<u8> {
    let envelope = ErrorEnvelope {
        error: ErrorBody {
            message,
            kind,
            param,
            code,
        },
    };
    // Serialising plain strings into a Vec cannot fail.
    serde_json::to_vec(&envelope).unwrap_or_else(|_| b"{\"error\":{}}".to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_errors() -> Vec<GatewayError> {
        vec![
            GatewayError::MalformedJson { detail: "x".into() },
            GatewayError::MissingField { param: "model" },
            GatewayError::InvalidField {
                param: "stream".into(),
                message: "bad".into(),
            },
            GatewayError::MissingApiKey,
            GatewayError::InvalidApiKey,
            GatewayError::NotFound {
                method: "GET".into(),
                path: "/x".into(),
            },
            GatewayError::MethodNotAllowed {
                method: "GET".into(),
                path: "/v1/chat/completions".into(),
                allowed: "POST",
            },
            GatewayError::RequestTimeout,
            GatewayError::PayloadTooLarge { limit: 10 },
            GatewayError::HeadersTooLarge {
                fields: 300,
                bytes: 1,
            },
            GatewayError::UnsupportedMediaType {
                content_type: "text/plain".into(),
            },
            GatewayError::UpstreamUnreachable {
                cause: TransportError::Refused,
            },
            GatewayError::UpstreamInvalidResponse,
            GatewayError::UpstreamTimeout,
            GatewayError::UpstreamStreamInterrupted,
            GatewayError::UpstreamStreamStalled { idle_ms: 5 },
            GatewayError::Internal {
                message: "x".into(),
            },
            GatewayError::Misconfigured(ConfigError::new("UPSTREAM_BASE_URL", "missing")),
        ]
    }

    #[test]
    fn every_error_renders_the_openai_shape_with_all_four_fields() {
        for err in all_errors() {
            let v: serde_json::Value = serde_json::from_slice(&err.body()).unwrap();
            let e = v.get("error").and_then(|e| e.as_object()).unwrap();
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
            assert!(e["type"].is_string());
            assert!(e.contains_key("param"));
            assert!(e.contains_key("code"));
            assert!((400..600).contains(&err.status()));
        }
    }

    #[test]
    fn only_upstream_failures_before_a_response_are_retryable() {
        for err in all_errors() {
            let upstream_before_response = matches!(
                err,
                GatewayError::UpstreamUnreachable { .. } | GatewayError::UpstreamTimeout
            );
            assert_eq!(err.is_retryable(), upstream_before_response, "{err:?}");
        }
    }

    #[test]
    fn a_configuration_error_names_the_setting_but_never_its_value() {
        let e = ConfigError::new(
            "UPSTREAM_BASE_URL",
            "'ftp://user:s3cret@example.com/v1' must start with http://",
        );
        assert_eq!(
            e.message,
            "'ftp://***@example.com/v1' must start with http://"
        );
        let body = String::from_utf8(GatewayError::Misconfigured(e).body()).unwrap();
        assert!(body.contains("UPSTREAM_BASE_URL"), "{body}");
        assert!(
            !body.contains("example.com") && !body.contains("s3cret"),
            "{body}"
        );
    }

    #[test]
    fn credentials_in_urls_are_masked_wherever_they_stand() {
        for (raw, masked) in [
            ("redis://:pw@host:6379/0", "redis://***@host:6379/0"),
            (
                "a https://u:p@h/x and http://h2/y",
                "a https://***@h/x and http://h2/y",
            ),
            ("'http://u:p@h'", "'http://***@h'"),
            ("no url here", "no url here"),
            ("tricky ://@ end", "tricky ://***@ end"),
        ] {
            assert_eq!(mask_credentials(raw), masked);
        }
    }

    #[test]
    fn statuses_match_their_meaning() {
        assert_eq!(GatewayError::InvalidApiKey.status(), 401);
        assert_eq!(GatewayError::RequestTimeout.status(), 408);
        assert_eq!(GatewayError::PayloadTooLarge { limit: 1 }.status(), 413);
        assert_eq!(GatewayError::UpstreamTimeout.status(), 504);
        for cause in [
            TransportError::Refused,
            TransportError::Reset,
            TransportError::Tls,
            TransportError::Dns,
            TransportError::Other,
        ] {
            assert_eq!(GatewayError::UpstreamUnreachable { cause }.status(), 502);
        }
    }

    #[test]
    fn sse_error_event_is_one_data_line_terminated_by_a_blank_line() {
        let ev = GatewayError::UpstreamStreamInterrupted.sse_event();
        assert!(ev.starts_with(b"data: {\"error\""));
        assert!(ev.ends_with(b"\n\n"));
    }
}
