//! Token estimates without a tokenizer (a BPE table is too big for the Worker's bundle), and
//! the answer of `POST /v1/gateway/estimate`.

use bytes::Bytes;
use http::HeaderMap;
use serde::Serialize;
use serde_json::{Map, Value};

use super::{Hints, Selector, TokenEstimate};
use crate::error::GatewayError;
use crate::pricing::{Money, PriceTable};

// OpenAI's cookbook approximation ("How to count tokens with tiktoken"): English text runs
// about 4 bytes a token, each chat message carries about 4 tokens of framing (role and
// separators), and the reply is primed with 3 more.
const BYTES_PER_TOKEN: u64 = 4;
const TOKENS_PER_MESSAGE: u64 = 4;
const REPLY_PRIMING_TOKENS: u64 = 3;

/// The fields that bound the output, most specific first (chat's current name, its legacy
/// one, the Responses API's).
const MAX_OUTPUT_FIELDS: [&str; 3] = ["max_completion_tokens", "max_tokens", "max_output_tokens"];

#[derive(Default)]
struct Tally {
    bytes: u64,
    /// Tokens counted as such: token-id prompts and message framing.
    tokens: u64,
    messages: u64,
}

impl Tally {
    fn text(&mut self, s: &str) {
        self.bytes = self.bytes.saturating_add(s.len() as u64);
    }

    /// JSON the model reads as written (tool definitions, tool calls).
    fn json(&mut self, v: &Value) {
        self.bytes = self.bytes.saturating_add(json_len(v));
    }

    /// A `content`: a string, or parts whose `text` is read (images and audio are not
    /// estimated: their price depends on sizes the body does not always say).
    fn content(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(parts) => {
                for p in parts {
                    match p {
                        Value::String(s) => self.text(s),
                        Value::Object(o) => {
                            if let Some(Value::String(s)) = o.get("text") {
                                self.text(s);
                            }
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A chat message or a Responses API input item.
    fn message(&mut self, m: &Value) {
        self.messages = self.messages.saturating_add(1);
        let Value::Object(m) = m else { return };
        if let Some(c) = m.get("content") {
            self.content(c);
        }
        for field in ["name", "output", "arguments"] {
            if let Some(Value::String(s)) = m.get(field) {
                self.text(s);
            }
        }
        for field in ["tool_calls", "function_call"] {
            if let Some(v) = m.get(field) {
                self.json(v);
            }
        }
    }

    /// `prompt` or `input`: text, texts, token ids, lists of token ids, or (Responses API)
    /// message items.
    fn prompt(&mut self, v: &Value) {
        match v {
            Value::String(s) => self.text(s),
            Value::Array(items) => {
                for item in items {
                    match item {
                        Value::String(s) => self.text(s),
                        Value::Number(_) => self.tokens = self.tokens.saturating_add(1),
                        Value::Array(ids) => {
                            self.tokens = self.tokens.saturating_add(ids.len() as u64)
                        }
                        Value::Object(_) => self.message(item),
                        Value::Null | Value::Bool(_) => {}
                    }
                }
            }
            _ => {}
        }
    }

    fn prompt_tokens(&self) -> u64 {
        let priming = if self.messages > 0 {
            REPLY_PRIMING_TOKENS
        } else {
            0
        };
        self.bytes
            .div_ceil(BYTES_PER_TOKEN)
            .saturating_add(self.tokens)
            .saturating_add(self.messages.saturating_mul(TOKENS_PER_MESSAGE))
            .saturating_add(priming)
    }
}

/// The length of `v` serialized compactly, without building the string.
fn json_len(v: &Value) -> u64 {
    struct Count(u64);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len() as u64);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut count = Count(0);
    match serde_json::to_writer(&mut count, v) {
        Ok(()) => count.0,
        Err(_) => 0,
    }
}

pub(super) fn estimate_tokens(body: &Map<String, Value>, default_max_output: u64) -> TokenEstimate {
    let mut tally = Tally::default();
    if let Some(Value::Array(messages)) = body.get("messages") {
        for m in messages {
            tally.message(m);
        }
    }
    for field in ["prompt", "input"] {
        if let Some(v) = body.get(field) {
            tally.prompt(v);
        }
    }
    if let Some(Value::String(s)) = body.get("instructions") {
        tally.text(s);
    }
    for field in ["tools", "functions"] {
        if let Some(v) = body.get(field).filter(|v| !v.is_null()) {
            tally.json(v);
        }
    }
    TokenEstimate {
        prompt_tokens: tally.prompt_tokens(),
        max_output_tokens: max_output(body, default_max_output),
    }
}

/// The request's output bound; `n` answers each use up to it.
fn max_output(body: &Map<String, Value>, default: u64) -> u64 {
    let per_answer = MAX_OUTPUT_FIELDS
        .iter()
        .find_map(|f| body.get(*f).and_then(Value::as_u64))
        .unwrap_or(default);
    let n = body
        .get("n")
        .and_then(Value::as_u64)
        .filter(|n| *n > 1)
        .unwrap_or(1);
    per_answer.saturating_mul(n)
}

fn invalid(param: &str, message: String) -> GatewayError {
    GatewayError::InvalidField {
        param: param.to_string(),
        message,
    }
}

/// A count in the body: absent (or null) is `None`, anything but a whole number from 0 up is a
/// 400 naming it.
fn count(body: &Map<String, Value>, param: &str) -> Result<Option<u64>, GatewayError> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v.as_u64().map(Some).ok_or_else(|| {
            invalid(
                param,
                format!("Invalid value for '{param}': expected a whole number from 0 up."),
            )
        }),
    }
}

/// `{"min": "0.008", "max": "0.024"}`: dollars as decimal strings, exact.
#[derive(Serialize)]
struct CostRange {
    min: Money,
    max: Money,
}

#[derive(Serialize)]
struct Answer<'a> {
    model: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    requested: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    selection: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    chain: Option<&'a [String]>,
    #[serde(skip_serializing_if = "Option::is_none")]
    over_budget: Option<bool>,
    prompt_tokens: u64,
    max_output_tokens: u64,
    priced: bool,
    cost_usd: Option<CostRange>,
}

pub(super) fn estimate_answer(
    selector: &Selector,
    prices: &PriceTable,
    body: &[u8],
    headers: &HeaderMap,
    allow: Option<&crate::limits::ModelAllow>,
) -> Result<Bytes, GatewayError> {
    let value: Value = serde_json::from_slice(body).map_err(|e| GatewayError::MalformedJson {
        detail: e.to_string(),
    })?;
    let Value::Object(body) = value else {
        return Err(GatewayError::MalformedJson {
            detail: "expected a JSON object".into(),
        });
    };
    let requested = match body.get("model") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField { param: "model" }),
        Some(Value::String(s)) if !s.trim().is_empty() => s.as_str(),
        Some(_) => {
            return Err(invalid(
                "model",
                "Invalid value for 'model': expected a model name, 'auto' or 'tier:NAME'.".into(),
            ))
        }
    };
    // A key answered as the request itself would be: only what it may use.
    if allow.is_some_and(|a| !a.allows_request(requested)) {
        return Err(GatewayError::ModelNotAllowed {
            model: requested.chars().take(100).collect(),
        });
    }
    let hints = Hints::from_headers(headers)?;
    let estimate = tokens(&body, selector.default_max_output_tokens())?;
    let allowed = |m: &str| allow.is_none_or(|a| a.allows_model(m));

    let choice = if selector.is_selection(requested) {
        Some(selector.select(prices, requested, &hints, &estimate, &allowed)?)
    } else {
        None
    };
    let model = choice.as_ref().map_or(requested, |c| c.model.as_str());
    let cost_usd = prices.get(model).map(|p| {
        let (min, max) = p.estimate(estimate.prompt_tokens, estimate.max_output_tokens);
        CostRange { min, max }
    });
    let answer = Answer {
        model,
        requested: choice.as_ref().map(|_| requested),
        selection: choice.as_ref().map(|c| c.reason.as_str()),
        chain: choice.as_ref().map(|c| c.chain.as_slice()),
        over_budget: choice.as_ref().map(|c| c.over_budget),
        prompt_tokens: estimate.prompt_tokens,
        max_output_tokens: estimate.max_output_tokens,
        priced: cost_usd.is_some(),
        cost_usd,
    };
    serde_json::to_vec(&answer)
        .map(Bytes::from)
        .map_err(|e| GatewayError::Internal {
            message: format!("the estimate could not be serialized: {e}"),
        })
}

/// The body's tokens: `prompt_tokens` as given, else estimated from its text.
fn tokens(
    body: &Map<String, Value>,
    default_max_output: u64,
) -> Result<TokenEstimate, GatewayError> {
    // Checked even when another bound comes first: a bad value is a client bug worth telling.
    for field in MAX_OUTPUT_FIELDS {
        count(body, field)?;
    }
    if count(body, "n")? == Some(0) {
        return Err(invalid(
            "n",
            "Invalid value for 'n': expected a whole number from 1 up.".into(),
        ));
    }
    if let Some(prompt_tokens) = count(body, "prompt_tokens")? {
        return Ok(TokenEstimate {
            prompt_tokens,
            max_output_tokens: max_output(body, default_max_output),
        });
    }
    let has = |f: &str| body.get(f).is_some_and(|v| !v.is_null());
    if body
        .get("messages")
        .is_some_and(|v| !(v.is_null() || v.is_array()))
    {
        return Err(invalid(
            "messages",
            "Invalid value for 'messages': expected an array.".into(),
        ));
    }
    for field in ["prompt", "input"] {
        if body
            .get(field)
            .is_some_and(|v| !(v.is_null() || v.is_string() || v.is_array()))
        {
            return Err(invalid(
                field,
                format!("Invalid value for '{field}': expected a string or an array."),
            ));
        }
    }
    if !(has("messages") || has("prompt") || has("input")) {
        // `messages` is what most clients send; `prompt`, `input` and `prompt_tokens` are the
        // alternatives the endpoint's documentation lists.
        return Err(GatewayError::MissingField { param: "messages" });
    }
    Ok(estimate_tokens(body, default_max_output))
}
