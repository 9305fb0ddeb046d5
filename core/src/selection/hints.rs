//! The request's hints, read from its headers. A hint the client sent but the gateway cannot
//! read is an error rather than ignored: a silently dropped budget would spend money the
//! client meant to keep.

use http::{HeaderMap, HeaderValue};

use super::Hints;
use crate::error::GatewayError;
use crate::pricing::Money;

pub const QUALITY_HEADER: &str = "x-gateway-quality";
pub const TASK_HEADER: &str = "x-gateway-task";
pub const LATENCY_BUDGET_HEADER: &str = "x-gateway-latency-budget-ms";
pub const COST_BUDGET_HEADER: &str = "x-gateway-cost-budget-usd";

/// A task hint is a word or two (`reasoning`, `code review`); the cap keeps a long header
/// from making every rule scan it.
pub const TASK_MAX_CHARS: usize = 64;

/// How much of a bad value an error message quotes back.
const QUOTE_MAX_CHARS: usize = 40;

impl Hints {
    /// Reads the hint headers; an absent one is `None`. A malformed or out-of-range value, or a
    /// hint sent twice, is a 400 `invalid_value` whose `param` is the header's name.
    pub fn from_headers(headers: &HeaderMap) -> Result<Hints, GatewayError> {
        Ok(Hints {
            quality: once(headers, QUALITY_HEADER)?
                .map(|v| quality(ascii(QUALITY_HEADER, v)?))
                .transpose()?,
            task: once(headers, TASK_HEADER)?.and_then(task),
            latency_budget_ms: once(headers, LATENCY_BUDGET_HEADER)?
                .map(|v| latency(ascii(LATENCY_BUDGET_HEADER, v)?))
                .transpose()?,
            cost_budget: once(headers, COST_BUDGET_HEADER)?
                .map(|v| cost(ascii(COST_BUDGET_HEADER, v)?))
                .transpose()?,
        })
    }
}

fn invalid(header: &str, message: String) -> GatewayError {
    GatewayError::InvalidField {
        param: header.to_string(),
        message,
    }
}

fn quoted(value: &str) -> String {
    value.chars().take(QUOTE_MAX_CHARS).collect()
}

/// Two values of one hint disagree or repeat; neither can be taken as the client's intent.
fn once<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h HeaderValue>, GatewayError> {
    let mut values = headers.get_all(name).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(invalid(
            name,
            format!("The header '{name}' must be sent at most once."),
        ));
    }
    Ok(first)
}

fn ascii<'v>(name: &str, value: &'v HeaderValue) -> Result<&'v str, GatewayError> {
    value.to_str().map(str::trim).map_err(|_| {
        invalid(
            name,
            format!("Invalid value for header '{name}': it is not plain ASCII text."),
        )
    })
}

fn quality(s: &str) -> Result<f64, GatewayError> {
    match s.parse::<f64>() {
        Ok(q) if q.is_finite() && (0.0..=1.0).contains(&q) => Ok(q),
        _ => Err(invalid(
            QUALITY_HEADER,
            format!(
                "Invalid value for header '{QUALITY_HEADER}': expected a number from 0 to 1, \
                 got '{}'.",
                quoted(s)
            ),
        )),
    }
}

/// Free text: never an error, at worst no hint.
fn task(value: &HeaderValue) -> Option<String> {
    let text = String::from_utf8_lossy(value.as_bytes());
    let lowered: String = text
        .trim()
        .to_ascii_lowercase()
        .chars()
        .take(TASK_MAX_CHARS)
        .collect();
    let kept = lowered.trim_end();
    (!kept.is_empty()).then(|| kept.to_string())
}

fn latency(s: &str) -> Result<u64, GatewayError> {
    // Digits only: `parse` alone would take `+500`, and a float is not a count of ms.
    let parsed = if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse::<u64>().ok().filter(|ms| *ms > 0)
    } else {
        None
    };
    parsed.ok_or_else(|| {
        invalid(
            LATENCY_BUDGET_HEADER,
            format!(
                "Invalid value for header '{LATENCY_BUDGET_HEADER}': expected a positive whole \
                 number of milliseconds, got '{}'.",
                quoted(s)
            ),
        )
    })
}

fn cost(s: &str) -> Result<Money, GatewayError> {
    Money::parse_usd(s).ok_or_else(|| {
        invalid(
            COST_BUDGET_HEADER,
            format!(
                "Invalid value for header '{COST_BUDGET_HEADER}': expected a plain decimal \
                 number of US dollars such as 0.01, got '{}'.",
                quoted(s)
            ),
        )
    })
}
