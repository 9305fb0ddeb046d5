//! Assertions shared by the cases.

use serde_json::{Map, Value};

use crate::client::Resp;

/// Checks `v` is an OpenAI error document: `{"error":{"message","type","param","code"}}` with all
/// four keys present, `message` and `type` non-empty strings, `param` and `code` strings or null.
/// Returns the inner object.
pub fn openai_error_shape<'a>(label: &str, v: &'a Value) -> &'a Map<String, Value> {
    let e = v
        .get("error")
        .and_then(Value::as_object)
        .unwrap_or_else(|| panic!("{label}: not an OpenAI error (no \"error\" object): {v}"));
    for key in ["message", "type", "param", "code"] {
        assert!(e.contains_key(key), "{label}: error lacks \"{key}\": {v}");
    }
    for key in ["message", "type"] {
        assert!(
            e[key].as_str().is_some_and(|s| !s.is_empty()),
            "{label}: error \"{key}\" must be a non-empty string: {v}"
        );
    }
    for key in ["param", "code"] {
        assert!(
            e[key].is_string() || e[key].is_null(),
            "{label}: error \"{key}\" must be a string or null: {v}"
        );
    }
    e
}

/// Asserts a gateway error response: status, JSON content type, the OpenAI shape, the `code`,
/// and an `x-request-id`. Returns the inner error object.
pub fn error(resp: &Resp, status: u16, code: &str) -> Map<String, Value> {
    resp.expect_status(status);
    json_content_type(&resp.label, resp.header("content-type"));
    let v = resp.json();
    let e = openai_error_shape(&resp.label, &v).clone();
    assert_eq!(
        e["code"], code,
        "{}: expected error code {code}: {v}",
        resp.label
    );
    assert!(
        resp.header("x-request-id").is_some_and(|id| !id.is_empty()),
        "{}: error response without x-request-id",
        resp.label
    );
    e
}

/// Like [`error`], also checking `param`.
pub fn error_with_param(resp: &Resp, status: u16, code: &str, param: &str) {
    let e = error(resp, status, code);
    assert_eq!(
        e["param"],
        param,
        "{}: expected param {param}: {}",
        resp.label,
        resp.text()
    );
}

pub fn json_content_type(label: &str, content_type: Option<&str>) {
    let ct = content_type.unwrap_or("");
    assert!(
        ct.to_ascii_lowercase().starts_with("application/json"),
        "{label}: content-type is '{ct}', expected application/json"
    );
}

/// A hyphenated, lower-case UUID of version 4 and the RFC 4122 variant.
pub fn is_uuid_v4(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, &c)| match i {
            8 | 13 | 18 | 23 => c == b'-',
            _ => c.is_ascii_digit() || (b'a'..=b'f').contains(&c),
        })
        && b[14] == b'4'
        && matches!(b[19], b'8' | b'9' | b'a' | b'b')
}
