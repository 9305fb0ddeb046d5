//! Validation of inference request bodies. The body is parsed once; the parsed form is kept for
//! the decisions that need it (model, stream flag) while the original bytes are what is forwarded.

use serde_json::{Map, Value};

use crate::error::GatewayError;
use crate::route::Route;

/// A request body that passed validation.
#[derive(Debug, Clone)]
pub struct InferenceRequest {
    pub model: String,
    pub stream: bool,
    pub body: Map<String, Value>,
}

/// Checks the content type a client declared. No content type, JSON, and the form type that
/// `curl -d` sends are read as JSON; anything that cannot be JSON is a 415.
pub fn check_content_type(content_type: Option<&str>) -> Result<(), GatewayError> {
    let Some(raw) = content_type else {
        return Ok(());
    };
    let essence = raw
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let ok = essence.is_empty()
        || essence == "application/json"
        || essence == "application/x-www-form-urlencoded"
        || (essence.starts_with("application/") && essence.ends_with("+json"));
    if ok {
        Ok(())
    } else {
        Err(GatewayError::UnsupportedMediaType {
            content_type: raw.chars().take(100).collect(),
        })
    }
}

fn invalid(param: &str, message: String) -> GatewayError {
    GatewayError::InvalidField {
        param: param.to_string(),
        message,
    }
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expect<'a>(
    body: &'a Map<String, Value>,
    param: &'static str,
    wanted: &str,
    check: fn(&Value) -> bool,
) -> Result<Option<&'a Value>, GatewayError> {
    match body.get(param) {
        None | Some(Value::Null) => Ok(None),
        Some(v) if check(v) => Ok(Some(v)),
        Some(v) => Err(invalid(
            param,
            format!(
                "Invalid type for '{param}': expected {wanted}, but got {}.",
                type_name(v)
            ),
        )),
    }
}

pub fn validate(route: Route, bytes: &[u8]) -> Result<InferenceRequest, GatewayError> {
    let value: Value = serde_json::from_slice(bytes).map_err(|e| GatewayError::MalformedJson {
        detail: e.to_string(),
    })?;
    let Value::Object(body) = value else {
        return Err(GatewayError::MalformedJson {
            detail: format!("expected a JSON object, got {}", type_name(&value)),
        });
    };

    let model = match body.get("model") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField { param: "model" }),
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(invalid("model", "'model' must not be empty.".into()))
        }
        Some(Value::String(s)) => s.clone(),
        Some(v) => {
            return Err(invalid(
                "model",
                format!(
                    "Invalid type for 'model': expected a string, but got {}.",
                    type_name(v)
                ),
            ))
        }
    };

    let stream = expect(&body, "stream", "a boolean", Value::is_boolean)?
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if route == Route::Embeddings && stream {
        return Err(invalid("stream", "Embeddings cannot be streamed.".into()));
    }
    expect(&body, "stream_options", "an object", Value::is_object)?;
    expect(&body, "temperature", "a number", Value::is_number)?;
    expect(&body, "top_p", "a number", Value::is_number)?;
    expect(&body, "n", "an integer", |v| v.as_u64().is_some())?;
    expect(&body, "max_tokens", "an integer", |v| v.as_u64().is_some())?;
    expect(&body, "max_completion_tokens", "an integer", |v| {
        v.as_u64().is_some()
    })?;
    expect(&body, "seed", "an integer", |v| v.is_i64() || v.is_u64())?;
    expect(&body, "user", "a string", Value::is_string)?;
    expect(&body, "tools", "an array", Value::is_array)?;

    match route {
        Route::ChatCompletions => validate_messages(&body)?,
        Route::Completions => {
            if body.get("prompt").is_none_or(Value::is_null) {
                return Err(GatewayError::MissingField { param: "prompt" });
            }
        }
        Route::Embeddings => match body.get("input") {
            None | Some(Value::Null) => return Err(GatewayError::MissingField { param: "input" }),
            Some(Value::String(_)) | Some(Value::Array(_)) => {}
            Some(v) => {
                return Err(invalid(
                    "input",
                    format!(
                        "Invalid type for 'input': expected a string or an array, but got {}.",
                        type_name(v)
                    ),
                ))
            }
        },
        Route::Health
        | Route::Models
        | Route::Status
        | Route::Estimate
        | Route::Key
        | Route::Summary
        | Route::Dashboard => {}
    }

    Ok(InferenceRequest {
        model,
        stream,
        body,
    })
}

fn validate_messages(body: &Map<String, Value>) -> Result<(), GatewayError> {
    let messages = match body.get("messages") {
        None | Some(Value::Null) => return Err(GatewayError::MissingField { param: "messages" }),
        Some(Value::Array(a)) => a,
        Some(v) => {
            return Err(invalid(
                "messages",
                format!(
                    "Invalid type for 'messages': expected an array, but got {}.",
                    type_name(v)
                ),
            ))
        }
    };
    if messages.is_empty() {
        return Err(invalid(
            "messages",
            "'messages' must contain at least one message.".into(),
        ));
    }
    for (i, m) in messages.iter().enumerate() {
        let Value::Object(m) = m else {
            return Err(invalid(
                &format!("messages[{i}]"),
                format!(
                    "Invalid type for 'messages[{i}]': expected an object, but got {}.",
                    type_name(m)
                ),
            ));
        };
        match m.get("role") {
            Some(Value::String(r)) if !r.is_empty() => {}
            Some(v) => {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    format!(
                        "Invalid type for 'messages[{i}].role': expected a string, but got {}.",
                        type_name(v)
                    ),
                ))
            }
            None => {
                return Err(invalid(
                    &format!("messages[{i}].role"),
                    format!("Missing required parameter: 'messages[{i}].role'."),
                ))
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(body: &str) -> Result<InferenceRequest, GatewayError> {
        validate(Route::ChatCompletions, body.as_bytes())
    }

    fn param_of(e: GatewayError) -> Option<String> {
        e.param().map(str::to_string)
    }

    #[test]
    fn valid_chat_request_yields_model_and_stream_flag() {
        let r = chat(r#"{"model":"m","messages":[{"role":"user","content":"hi"}],"stream":true}"#)
            .unwrap();
        assert_eq!(r.model, "m");
        assert!(r.stream);
    }

    #[test]
    fn malformed_json_and_non_objects_are_400_invalid_json() {
        for body in ["{", "", "[1]", "\"x\"", "{\"model\":\"m\",}"] {
            let e = chat(body).unwrap_err();
            assert_eq!(e.status(), 400, "{body}");
            assert_eq!(e.code(), Some("invalid_json"));
        }
    }

    #[test]
    fn missing_or_wrong_fields_name_the_param() {
        assert_eq!(
            param_of(chat(r#"{"messages":[{"role":"user"}]}"#).unwrap_err()).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(chat(r#"{"model":"m"}"#).unwrap_err()).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(chat(r#"{"model":"m","messages":[]}"#).unwrap_err()).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(chat(r#"{"model":5,"messages":[{"role":"user"}]}"#).unwrap_err()).as_deref(),
            Some("model")
        );
        assert_eq!(
            param_of(chat(r#"{"model":"m","messages":"hi"}"#).unwrap_err()).as_deref(),
            Some("messages")
        );
        assert_eq!(
            param_of(
                chat(r#"{"model":"m","messages":[{"role":"user"}],"stream":"yes"}"#).unwrap_err()
            )
            .as_deref(),
            Some("stream")
        );
        assert_eq!(
            param_of(
                chat(r#"{"model":"m","messages":[{"role":"user"}],"temperature":"hot"}"#)
                    .unwrap_err()
            )
            .as_deref(),
            Some("temperature")
        );
        assert_eq!(
            param_of(chat(r#"{"model":"m","messages":[1]}"#).unwrap_err()).as_deref(),
            Some("messages[0]")
        );
        assert_eq!(
            param_of(chat(r#"{"model":"m","messages":[{"content":"x"}]}"#).unwrap_err()).as_deref(),
            Some("messages[0].role")
        );
    }

    #[test]
    fn embeddings_need_input_and_cannot_stream() {
        assert_eq!(
            validate(Route::Embeddings, br#"{"model":"e"}"#)
                .unwrap_err()
                .param(),
            Some("input")
        );
        assert_eq!(
            validate(
                Route::Embeddings,
                br#"{"model":"e","input":"x","stream":true}"#
            )
            .unwrap_err()
            .param(),
            Some("stream")
        );
        assert!(validate(Route::Embeddings, br#"{"model":"e","input":["a","b"]}"#).is_ok());
    }

    #[test]
    fn completions_need_a_prompt() {
        assert_eq!(
            validate(Route::Completions, br#"{"model":"m"}"#)
                .unwrap_err()
                .param(),
            Some("prompt")
        );
        assert!(validate(Route::Completions, br#"{"model":"m","prompt":"x"}"#).is_ok());
    }

    #[test]
    fn content_types_that_can_be_json_are_accepted() {
        for ct in [
            None,
            Some("application/json"),
            Some("application/json; charset=utf-8"),
            Some("application/x-www-form-urlencoded"),
            Some(""),
        ] {
            assert!(check_content_type(ct).is_ok(), "{ct:?}");
        }
        for ct in [
            "text/plain",
            "multipart/form-data; boundary=x",
            "application/xml",
        ] {
            assert_eq!(check_content_type(Some(ct)).unwrap_err().status(), 415);
        }
    }

    #[test]
    fn deeply_nested_json_is_an_error_not_a_crash() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert_eq!(chat(&deep).unwrap_err().status(), 400);
    }
}
