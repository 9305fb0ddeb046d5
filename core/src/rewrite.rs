//! The request body as sent upstream: the client's bytes, unless the gateway chose the model
//! (`auto`, a tier) or asks for usage on the client's behalf. Then the same fields in the same
//! order, each value byte for byte, with only `model` and `stream_options` changed.

use bytes::Bytes;
use serde::de::{Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

/// The top-level fields of a JSON object, in order, values untouched.
struct Fields<'a>(Vec<(String, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8));
                while let Some((k, v)) = map.next_entry::<String, &'de RawValue>()? {
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

/// Whether the client asked for the usage chunk of a stream.
pub fn asks_for_usage(request: &serde_json::Map<String, serde_json::Value>) -> bool {
    request
        .get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// `body` with `model` set to `model` (when given) and `stream_options.include_usage` set
/// (when `include_usage`). `None` when the body is not a JSON object (validation already
/// refused such bodies; the caller then sends the client's bytes).
pub fn rewrite(body: &[u8], model: Option<&str>, include_usage: bool) -> Option<Bytes> {
    let fields: Fields<'_> = serde_json::from_slice(body).ok()?;
    let mut out = Vec::with_capacity(body.len() + 48);
    out.push(b'{');
    let mut saw_options = false;
    let mut first = true;
    let mut push_field = |out: &mut Vec<u8>, key: &str, value: &[u8]| {
        if !std::mem::take(&mut first) {
            out.push(b',');
        }
        // A key serializes infallibly (a string).
        out.extend_from_slice(serde_json::to_string(key).unwrap_or_default().as_bytes());
        out.push(b':');
        out.extend_from_slice(value);
    };
    for (key, value) in &fields.0 {
        match key.as_str() {
            "model" if model.is_some() => {
                let m = serde_json::to_string(model.unwrap_or_default()).ok()?;
                push_field(&mut out, key, m.as_bytes());
            }
            "stream_options" if include_usage => {
                saw_options = true;
                let mut opts: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_slice(value.get().as_bytes()).unwrap_or_default();
                opts.insert("include_usage".into(), serde_json::Value::Bool(true));
                let v = serde_json::to_vec(&opts).ok()?;
                push_field(&mut out, key, &v);
            }
            _ => push_field(&mut out, key, value.get().as_bytes()),
        }
    }
    if include_usage && !saw_options {
        push_field(&mut out, "stream_options", br#"{"include_usage":true}"#);
    }
    out.push(b'}');
    Some(Bytes::from(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_model_changes_and_everything_else_keeps_its_bytes_and_order() {
        let body = br#"{"model":"auto", "messages":[{"role":"user","content":"h\u00e9"}],"temperature":0.70}"#;
        let out = rewrite(body, Some("gpt-4.1"), false).unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"gpt-4.1","messages":[{"role":"user","content":"h\u00e9"}],"temperature":0.70}"#
        );
    }

    #[test]
    fn usage_is_asked_for_by_adding_or_completing_stream_options() {
        let out = rewrite(br#"{"model":"m","stream":true}"#, None, true).unwrap();
        assert_eq!(
            &out[..],
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#
        );
        let out = rewrite(
            br#"{"stream_options":{"include_usage":false,"x":1},"model":"m"}"#,
            None,
            true,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["stream_options"]["include_usage"], true);
        assert_eq!(v["stream_options"]["x"], 1);
        assert!(out.starts_with(br#"{"stream_options""#), "order kept");
    }

    #[test]
    fn odd_bodies_are_left_to_the_caller() {
        assert_eq!(rewrite(b"[1]", Some("m"), true), None);
        assert_eq!(rewrite(b"{", Some("m"), true), None);
        let out = rewrite(br#"{"a\"b":1}"#, Some("m"), false).unwrap();
        assert_eq!(&out[..], br#"{"a\"b":1}"#);
    }

    #[test]
    fn asks_for_usage_reads_stream_options() {
        let m = |s: &str| serde_json::from_str::<serde_json::Map<_, _>>(s).unwrap();
        assert!(asks_for_usage(&m(
            r#"{"stream_options":{"include_usage":true}}"#
        )));
        assert!(!asks_for_usage(&m(
            r#"{"stream_options":{"include_usage":false}}"#
        )));
        assert!(!asks_for_usage(&m(r#"{}"#)));
    }
}
