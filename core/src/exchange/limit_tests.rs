//! Keys, limits and budgets through the exchange, on virtual time, with the in-memory store.

use super::tests::{
    json_answer, sse_answer, ClientBody, Sim, Up, ANSWER, CHAT, CHAT0, SSE, STREAM0,
};
use super::BodyEnd;
use crate::auth::sha256_hex;

const TEAM: &str = "Bearer team-key";
const OTHER: &str = "Bearer other-key";

/// `team-key` with the limits in `extra`; `other-key` disabled.
fn config(extra: &str) -> String {
    format!(
        r#"{{"max_body_bytes":1000,"body_timeout_ms":1000,"upstream_timeout_ms":1500,
        "routing":{{"max_attempts":1,"keepalive_after_ms":0}},
        "prices":{{"m":{{"input":2,"output":8}},"m2":{{"input":1,"output":1}}}},
        "tiers":{{"t":["m","m2"]}},
        "keys":[{{"id":"team-a","name":"Team A","key_sha256":"{}"{extra}}},
                {{"id":"gone","key_sha256":"{}","disabled":true}}]}}"#,
        sha256_hex("team-key"),
        sha256_hex("other-key")
    )
}

fn chat_as(sim: &Sim, auth: &'static str) -> super::Exchange {
    sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", auth),
            ("content-type", "application/json"),
        ],
    )
}

fn json(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap()
}

#[test]
fn a_disabled_key_is_401_without_an_upstream_call() {
    let mut sim = Sim::new(&config(""));
    let out = sim.drive(
        chat_as(&sim, OTHER),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 401);
    assert_eq!(out.code(), "invalid_api_key");
    assert!(sim.sends.is_empty());
    assert!(sim.limit_calls.is_empty());
}

#[test]
fn a_model_outside_the_keys_list_is_404_model_not_found_without_an_upstream_call() {
    let mut sim = Sim::new(&config(r#","models":["m2"]"#));
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 404);
    assert_eq!(out.code(), "model_not_found");
    assert_eq!(json(&out.body)["error"]["param"], "model");
    assert!(sim.sends.is_empty());
}

#[test]
fn a_tier_chooses_only_among_the_models_the_key_may_use() {
    let mut sim = Sim::new(&config(r#","models":["m2","tier:t"]"#));
    let body: &[u8] = br#"{"model":"tier:t","messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, body),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.header("x-gateway-model"), Some("m2"));
    // `auto` is not listed.
    let body: &[u8] = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, body),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 404);
}

#[test]
fn every_answer_carries_the_rate_headers_and_the_fourth_request_is_429_without_a_call() {
    let mut sim = Sim::new(&config(r#","rpm":3,"tpm":100000"#));
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let out = sim.drive(
            chat_as(&sim, TEAM),
            ClientBody::After(0, CHAT),
            &json_answer(5, ANSWER),
        );
        assert_eq!(out.status, 200);
        assert_eq!(out.header("x-ratelimit-limit-requests"), Some("3"));
        assert_eq!(out.header("x-ratelimit-limit-tokens"), Some("100000"));
        assert!(out.header("x-ratelimit-reset-tokens").is_some());
        remaining.push(
            out.header("x-ratelimit-remaining-requests")
                .unwrap()
                .to_string(),
        );
    }
    assert_eq!(remaining, ["2", "1", "0"]);
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 429);
    assert_eq!(out.code(), "rate_limit_exceeded");
    assert_eq!(json(&out.body)["error"]["type"], "requests");
    assert!(out.header("retry-after").is_some());
    assert_eq!(out.header("x-ratelimit-remaining-requests"), Some("0"));
    assert_eq!(sim.sends.len(), 3);
    assert_eq!(out.log.error_code.as_deref(), Some("rate_limit_exceeded"));
}

#[test]
fn a_key_without_per_minute_limits_gets_no_rate_headers() {
    let mut sim = Sim::new(&config(r#","budget_usd":{"amount":5,"period":"day"}"#));
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert!(out
        .headers
        .keys()
        .all(|k| !k.as_str().starts_with("x-ratelimit")));
}

#[test]
fn the_settlement_corrects_tokens_to_the_usage_of_the_answer() {
    let mut sim = Sim::new(&config(r#","tpm":10000"#));
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    // Reserved: the prompt estimate plus the 4096 default maximum.
    let left: u64 = out
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert!(left < 10000 - 4096, "{left}");
    let settle = sim.limit_calls.last().unwrap();
    assert_eq!(settle.op.checks.len(), 0);
    // ANSWER used 5 tokens: the next request sees 10000 - 5 - its own reservation.
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    let after: u64 = out
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(after, left - 5);
}

#[test]
fn a_stream_settles_on_its_usage_chunk() {
    let mut sim = Sim::new(&config(r#","tpm":10000"#));
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, STREAM0),
        &sse_answer(
            vec![(1, SSE[0]), (1, SSE[1]), (1, SSE[2])],
            BodyEnd::Complete,
        ),
    );
    assert_eq!(out.status, 200);
    let settle = sim.limit_calls.last().unwrap();
    let reserved = sim.limit_calls[0].op.checks[0].add;
    // SSE's usage: 4 tokens.
    assert_eq!(settle.op.adjust[0].delta, 4 - reserved);
}

#[test]
fn a_budget_refuses_what_its_worst_case_cannot_cover_with_insufficient_quota() {
    // m: $8 per million output; 4096 default output tokens is about $0.033 a request.
    let mut sim = Sim::new(&config(r#","budget_usd":{"amount":"0.05","period":"day"}"#));
    let first = chat_as(&sim, TEAM);
    let out = sim.drive(first, ClientBody::After(0, CHAT), &json_answer(5, ANSWER));
    assert_eq!(out.status, 200);
    // Settled at its actual (tiny) cost, so a second fits; a huge max_tokens does not.
    let big: &[u8] =
        br#"{"model":"m","max_tokens":100000,"messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, big),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 429);
    assert_eq!(out.code(), "insufficient_quota");
    assert_eq!(json(&out.body)["error"]["type"], "insufficient_quota");
    assert!(out.header("retry-after").is_some());
    assert_eq!(sim.sends.len(), 1);
}

#[test]
fn a_budgeted_key_cannot_use_a_model_without_a_price() {
    let mut sim = Sim::new(&config(r#","budget_usd":{"amount":1,"period":"day"}"#));
    let body: &[u8] = br#"{"model":"free?","messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, body),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 400);
    assert!(sim.sends.is_empty());
}

#[test]
fn a_cache_hit_counts_against_requests_but_not_tokens() {
    let mut sim = Sim::new(&config(r#","rpm":10,"tpm":10000"#));
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.header("x-gateway-cache"), Some("MISS"));
    let tokens_after_miss: u64 = out
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(out.header("x-ratelimit-remaining-requests"), Some("8"));
    // The miss settled at its 5 tokens; the hit reserved none.
    let tokens_after_hit: u64 = out
        .header("x-ratelimit-remaining-tokens")
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(tokens_after_hit, 10000 - 5);
    assert!(tokens_after_hit > tokens_after_miss);
    assert_eq!(sim.sends.len(), 1);
}

#[test]
fn a_failing_store_lets_requests_through_by_default_and_logs_it() {
    let mut sim = Sim::new(&config(r#","rpm":1"#));
    sim.limiter_down = Some(0);
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert!(out.log.limiter_error);
    assert!(out.header("x-ratelimit-limit-requests").is_none());
}

#[test]
fn a_failing_store_with_deny_is_503_rate_limiter_unavailable_after_the_store_timeout() {
    let cfg = config(r#","rpm":1"#).replacen(
        r#""routing""#,
        r#""limits":{"on_store_error":"deny","store_timeout_ms":300},"routing""#,
        1,
    );
    let mut sim = Sim::new(&cfg);
    sim.limiter_down = Some(10_000); // hangs: the gateway's own timeout decides
    let t0 = sim.ms();
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 503);
    assert_eq!(out.code(), "rate_limiter_unavailable");
    assert_eq!(out.header("retry-after"), Some("1"));
    assert_eq!(sim.ms() - t0, 300);
    assert!(sim.sends.is_empty());
}

#[test]
fn the_key_endpoint_reports_limits_budget_and_what_is_left_without_counting() {
    let mut sim = Sim::new(&config(
        r#","models":["m","tier:t"],"rpm":10,"tpm":10000,"budget_usd":{"amount":2,"period":"month"}"#,
    ));
    sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    let get = |sim: &mut Sim| {
        let ex = sim.start("GET", "/v1/gateway/key", &[("authorization", TEAM)]);
        let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
        assert_eq!(out.status, 200);
        json(&out.body)
    };
    let v = get(&mut sim);
    assert_eq!(v["id"], "team-a");
    assert_eq!(v["name"], "Team A");
    assert_eq!(v["models"], serde_json::json!(["m", "tier:t"]));
    assert_eq!(v["limits"]["requests"]["limit"], 10);
    assert_eq!(v["limits"]["requests"]["remaining"], 9);
    assert_eq!(v["limits"]["tokens"]["remaining"], 10000 - 5);
    let reset = v["limits"]["requests"]["reset_secs"].as_f64().unwrap();
    assert!(reset > 0.0 && reset <= 60.0);
    // ANSWER: 3 prompt tokens x $2 + 2 output x $8 per million = $0.000022.
    assert_eq!(v["budget"]["spent_usd"], "0.000022");
    assert_eq!(v["budget"]["reserved_usd"], "0");
    assert_eq!(v["budget"]["remaining_usd"], "1.999978");
    assert_eq!(v["budget"]["period"], "month");
    assert!(v["budget"]["resets_at"]
        .as_str()
        .unwrap()
        .ends_with("T00:00:00.000Z"));
    let again = get(&mut sim);
    assert_eq!(
        again["limits"]["requests"]["remaining"], 9,
        "asking counts against nothing"
    );
    assert!(sim.sends.len() == 1);
}

#[test]
fn the_key_endpoint_of_a_plain_key_has_its_id_only() {
    let mut sim = Sim::new(&config(""));
    let ex = sim.start(
        "GET",
        "/v1/gateway/key",
        &[("authorization", "Bearer client-1")],
    );
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    let v = json(&out.body);
    assert!(v["id"].as_str().unwrap().starts_with("key_"));
    assert_eq!(v.as_object().unwrap().len(), 1);
}

#[test]
fn after_a_store_failure_the_store_rests_and_requests_do_not_wait_for_it() {
    let cfg = config(r#","rpm":100"#).replacen(
        r#""routing""#,
        r#""limits":{"store_timeout_ms":300},"routing""#,
        1,
    );
    let mut sim = Sim::new(&cfg);
    sim.limiter_down = Some(10_000);
    let t0 = sim.ms();
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200, "allowed by default");
    assert_eq!(
        sim.ms() - t0,
        305,
        "the first one waited for the store's timeout"
    );
    let calls = sim.limit_calls.len();
    let t1 = sim.ms();
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.status, 200);
    assert!(out.log.limiter_error);
    assert_eq!(sim.ms() - t1, 5, "no wait while the store rests");
    assert_eq!(sim.limit_calls.len(), calls, "and no call");
    // After the rest, the store is tried again.
    sim.advance(2_000);
    sim.limiter_down = None;
    let out = sim.drive(
        chat_as(&sim, TEAM),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!(out.header("x-ratelimit-limit-requests"), Some("100"));
}

#[test]
fn the_model_list_and_the_estimate_show_a_key_only_what_it_may_use() {
    let cfg = config(r#","models":["m2","tier:t"]"#).replacen(
        r#""routing""#,
        r#""models":[{"id":"m"},{"id":"m2"}],"routing""#,
        1,
    );
    let mut sim = Sim::new(&cfg);
    let ex = sim.start("GET", "/v1/models", &[("authorization", TEAM)]);
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    let ids: Vec<String> = json(&out.body)["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, ["m2"]);
    // A plain key sees every configured model.
    let ex = sim.start("GET", "/v1/models", &[("authorization", "Bearer client-1")]);
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(json(&out.body)["data"].as_array().unwrap().len(), 2);

    let estimate = |sim: &mut Sim, body: &'static [u8]| {
        let ex = sim.start(
            "POST",
            "/v1/gateway/estimate",
            &[
                ("authorization", TEAM),
                ("content-type", "application/json"),
            ],
        );
        sim.drive(ex, ClientBody::After(0, body), &Up::Silent)
    };
    let out = estimate(&mut sim, br#"{"model":"tier:t","prompt_tokens":10}"#);
    assert_eq!(out.status, 200);
    assert_eq!(
        json(&out.body)["model"],
        "m2",
        "the tier's model the key may use"
    );
    let out = estimate(&mut sim, br#"{"model":"m","prompt_tokens":10}"#);
    assert_eq!(out.status, 404);
    assert_eq!(out.code(), "model_not_found");
    let out = estimate(&mut sim, br#"{"model":"auto","prompt_tokens":10}"#);
    assert_eq!(out.status, 404);
    assert!(sim.sends.is_empty());
}
