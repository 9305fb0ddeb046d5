//! Hostile input, as properties: the checks in `props/` (shared with the fuzz targets in
//! `fuzz/`) on inputs proptest generates, a few hundred cases each so the file stays fast. The
//! fuzz targets run the same checks for as long as one likes: see `scripts/fuzz`.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod props;

use gateway_core::route::Route;
use props::*;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{json, Map, Value};

fn any_string() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_]{0,6}",
        prop::collection::vec(any::<char>(), 0..6).prop_map(String::from_iter),
    ]
}

/// Any JSON value, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        (-1000i64..1000).prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        any_string().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any_string(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const FIELDS: [&str; 15] = [
    "model",
    "messages",
    "prompt",
    "input",
    "stream",
    "stream_options",
    "temperature",
    "top_p",
    "n",
    "max_tokens",
    "seed",
    "user",
    "tools",
    "metadata",
    "logit_bias",
];

fn field_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => select(vec![
            json!(null),
            json!(true),
            json!(false),
            json!(0),
            json!(1),
            json!(1.0),
            json!(-1),
            json!(0.5),
            json!(""),
            json!("x"),
            json!("auto"),
            json!("tier:balanced"),
            json!("tier:nope"),
            json!([]),
            json!([{"role": "user", "content": "hi"}]),
            json!([{"content": "hi"}]),
            json!([1]),
            json!({}),
            json!({"include_usage": true}),
            json!({"include_usage": false, "x": 1}),
        ]),
        1 => json_value(),
    ]
}

/// A request valid for every inference route, then up to four fields set to something else.
fn plausible_request() -> impl Strategy<Value = Map<String, Value>> {
    let model = prop_oneof![
        select(vec![
            "m",
            "gpt-4.1",
            "auto",
            "tier:balanced",
            "tier:nope",
            "",
            " "
        ])
        .prop_map(String::from),
        any_string(),
    ];
    (
        model,
        prop::collection::vec((select(FIELDS.to_vec()), field_value()), 0..4),
    )
        .prop_map(|(model, changes)| {
            let mut m = Map::new();
            m.insert("model".into(), json!(model));
            m.insert(
                "messages".into(),
                json!([{"role": "user", "content": "hi"}]),
            );
            m.insert("prompt".into(), json!("p"));
            m.insert("input".into(), json!(["a", "b"]));
            for (k, v) in changes {
                m.insert(k.to_string(), v);
            }
            m
        })
}

/// Request body bytes: garbage, any JSON, or a plausible request (compact or pretty).
fn request_body() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        1 => prop::collection::vec(any::<u8>(), 0..48),
        1 => json_value().prop_map(|v| v.to_string().into_bytes()),
        4 => (plausible_request(), any::<bool>()).prop_map(|(m, pretty)| if pretty {
            serde_json::to_vec_pretty(&m).unwrap()
        } else {
            serde_json::to_vec(&m).unwrap()
        }),
    ]
}

fn choice_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..64)
}

/// Client headers: a name the gateway reads, a plausible or arbitrary value.
fn client_header() -> impl Strategy<Value = (&'static str, Vec<u8>)> {
    let value = prop_oneof![
        3 => select(vec![
            "0.95", "0.2", "2", "-1", "reasoning", "chat", "100", "99999999999999999999", "0.001",
            "1e-3", "NaN", "no-cache", "no-store", "5", "0", "eu", "", "abc", "application/json",
            "text/plain",
        ])
        .prop_map(|s| s.as_bytes().to_vec()),
        1 => prop::collection::vec(any::<u8>(), 0..12),
    ];
    (select(CLIENT_HEADERS.to_vec()), value)
}

const EVENTS: [&str; 14] = [
    "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}",
    "data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}",
    "data: {\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}",
    "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}",
    "data: {\"choices\":[ ],\"usage\":{\"prompt_tokens\":1,\"prompt_tokens_details\":{\"cached_tokens\":9}}}",
    "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1}}",
    "data: {\"choices\":[],\ndata: \"usage\":{\"prompt_tokens\":4}}",
    "data: {\"choices\":[{\"text\":\"a\\\"b\"}]}",
    "data: [DONE]",
    "data:[DONE]",
    "event: error\ndata: {\"error\":{\"message\":\"x\"}}",
    "data: {\"error\":{\"message\":\"overloaded\"}}",
    ": keepalive",
    "id: 7\nretry: 10",
];

/// An event stream: known events and arbitrary text, with LF, CRLF or odd separators.
fn sse_stream() -> impl Strategy<Value = Vec<u8>> {
    let event = prop_oneof![
        6 => select(EVENTS.to_vec()).prop_map(String::from),
        1 => prop::collection::vec(any::<char>(), 0..12).prop_map(String::from_iter),
    ];
    let sep = select(vec![
        "\n\n", "\n\n", "\r\n\r\n", "\n", "\r\n", "\n\n\n", "\r\r", "",
    ]);
    (prop::collection::vec((event, sep), 0..8), any::<bool>()).prop_map(|(events, crlf)| {
        let mut out = String::new();
        for (e, s) in events {
            if crlf {
                out.push_str(&e.replace('\n', "\r\n"));
            } else {
                out.push_str(&e);
            }
            out.push_str(s);
        }
        out.into_bytes()
    })
}

/// Cut points: a few anywhere, or after every byte.
fn cuts() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        4 => prop::collection::vec(any::<usize>(), 0..8),
        1 => Just((0..4096).collect::<Vec<usize>>()),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn validation_accepts_exactly_the_bodies_whose_fields_it_reports_and_refuses_others_with_a_400(
        route in select(INFERENCE_ROUTES.to_vec()),
        body in request_body(),
    ) {
        validation_is_total_and_consistent(route, &body);
    }

    #[test]
    fn cache_key_is_the_same_for_reordered_respaced_and_respelt_json(
        body in prop_oneof![
            plausible_request().prop_map(Value::Object),
            json_value(),
        ],
        choices in choice_bytes(),
    ) {
        let bytes = serde_json::to_vec(&body).unwrap();
        cache_key_is_canonical(&bytes, &mut Choices::new(&choices));
    }

    #[test]
    fn the_limiter_never_grants_more_than_its_limits_and_budget(choices in prop::collection::vec(any::<u8>(), 0..400)) {
        limiter_never_overspends(&mut Choices::new(&choices));
    }

    #[test]
    fn cache_key_never_panics_on_any_bytes(body in request_body(), choices in choice_bytes()) {
        cache_key_is_canonical(&body, &mut Choices::new(&choices));
    }

    #[test]
    fn sse_observer_sees_the_same_stream_however_it_is_chunked(
        stream in sse_stream(),
        cuts in cuts(),
    ) {
        observer_ignores_chunking(&stream, &cuts);
    }

    #[test]
    fn hide_usage_cuts_exactly_the_usage_only_events_however_the_stream_is_chunked(
        stream in sse_stream(),
        cuts in cuts(),
    ) {
        hide_usage_ignores_chunking(&stream, &cuts);
    }

    #[test]
    fn rewrite_changes_only_model_and_stream_options_and_keeps_every_other_field_byte_for_byte(
        body in request_body(),
        model in prop::option::of(any_string()),
        include_usage in any::<bool>(),
    ) {
        rewrite_changes_only_model_and_stream_options(&body, model.as_deref(), include_usage);
    }
}

proptest! {
    // A whole exchange per case: fewer cases.
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn exchange_answers_any_body_and_hints_in_the_openai_shape_or_forwards_a_valid_request(
        selector in any::<u8>(),
        headers in prop::collection::vec(client_header(), 0..3),
        body in request_body(),
    ) {
        exchange_decides(selector, &headers, &body);
    }
}

/// The examples the properties were written from: each check on inputs known to matter.
#[test]
fn the_checks_hold_on_known_inputs() {
    let chat = br#"{"model":"m","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    for route in INFERENCE_ROUTES {
        validation_is_total_and_consistent(route, chat);
        validation_is_total_and_consistent(route, b"{");
    }
    exchange_decides(0, &[], chat);
    exchange_decides(0, &[("x-gateway-quality", b"0.95".to_vec())], &chat[..]);
    let auto = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    exchange_decides(0, &[("x-gateway-quality", b"2".to_vec())], auto);
    exchange_decides(3, &[], auto);
    cache_key_is_canonical(
        br#"{"b":[1,1.5,{"y":"\u00e9","x":-0.0}],"a":1e2,"model":"m"}"#,
        &mut Choices::new(&[1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]),
    );
    let stream = EVENTS.join("\n\n").into_bytes();
    observer_ignores_chunking(&stream, &[3, 70, 71, 200]);
    hide_usage_ignores_chunking(&stream, &[3, 70, 71, 200]);
    let nested = b"data: {\"a\":{\"choices\":[1]},\"choices\":[],\"usage\":{}}\n\n";
    assert!(leaks_when_split(nested));
    hide_usage_ignores_chunking(nested, &[30]);
    rewrite_changes_only_model_and_stream_options(chat, Some("gpt-4.1"), true);
    rewrite_changes_only_model_and_stream_options(
        br#"{"stream_options":{"x":1},"model":"m","stream_options":5}"#,
        None,
        true,
    );
    assert_eq!(Route::ChatCompletions, body_route(0).0);
}

/// Finding (fuzzing, issue 14): the key reads numbers with serde_json's default float parser,
/// which does not round decimals correctly (the crate's `float_roundtrip` feature does), so
/// two spellings of one number can give two keys: a needless cache miss, never a wrong hit.
/// `9007199254740991.0` reads as 9007199254740990; and the canonical form of a double does not
/// always read back as that double (`4.533344246663996e-215` is written
/// `4.5333442466639955e-215`, which reads back as `4.533344246663995e-215`). The same misreading
/// lets `rewrite` change a double inside the client's `stream_options` (re-encoded when the
/// gateway asks for usage) by one unit in the last place.
#[test]
#[ignore = "finding: serde_json's default float parsing is not correctly rounded (cache key)"]
fn equal_numbers_spelt_as_decimals_get_one_key() {
    let key = |body: &str| key_of(&serde_json::from_str(body).unwrap(), &[]);
    assert_eq!(
        key(r#"{"model":"m","seed":9007199254740991}"#),
        key(r#"{"model":"m","seed":9007199254740991.0}"#)
    );
    let once: Value = serde_json::from_str("4.533344246663996e-215").unwrap();
    let mut form = Vec::new();
    gateway_core::cache::key::canonical(&once, &mut form);
    let twice: Value = serde_json::from_slice(&form).unwrap();
    assert_eq!(once, twice, "{}", String::from_utf8_lossy(&form));
    let body = br#"{"model":"m","stream_options":{"x":4.533344246663996e-215}}"#;
    let sent = gateway_core::rewrite::rewrite(body, None, true).unwrap();
    let sent = String::from_utf8(sent.to_vec()).unwrap();
    let x = sent
        .split("\"x\":")
        .nth(1)
        .unwrap()
        .split([',', '}'])
        .next()
        .unwrap();
    // Read correctly rounded (std), the upstream gets another double than the client sent.
    assert_eq!(
        x.parse::<f64>().unwrap(),
        "4.533344246663996e-215".parse::<f64>().unwrap(),
        "{sent}"
    );
}

/// Finding (fuzzing, issue 14): `HideUsage` decides that an event is not the usage event as soon
/// as the event's first `"choices"` has an element, even when that is not the event's own
/// (a nested object's, or a duplicate key's). A usage-only event shaped so is cut when it comes
/// in one chunk but let through when a chunk ends after that element: the client then sees a
/// usage chunk it did not ask for. Real upstreams do not send such events.
#[test]
#[ignore = "finding: HideUsage lets a usage-only event with a nested \"choices\":[x] through when split"]
fn hide_usage_cuts_a_usage_event_whatever_comes_before_its_own_choices() {
    for stream in [
        "data: {\"a\":{\"choices\":[1]},\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
        "data: {\"choices\":[1],\"choices\":[],\"usage\":{\"prompt_tokens\":1}}\n\n",
    ] {
        hide_usage_check(stream.as_bytes(), &[30], true);
    }
}
