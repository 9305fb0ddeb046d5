//! Cost, usage, model choice and timing, through the exchange on virtual time.

use bytes::Bytes;

use super::tests::{
    json_answer, sse_answer, ClientBody, Sim, Up, UpBody, CHAT, CHAT0, SSE, STREAM0,
};
use super::BodyEnd;

/// `m` priced: $2 input, $1 cached input, $8 output, $4 reasoning per million tokens.
const PRICED: &str = r#"{"max_body_bytes":1000,"body_timeout_ms":1000,"upstream_timeout_ms":1500,
  "stream_idle_timeout_ms":2000,"max_upstream_response_bytes":800,
  "routing":{"max_attempts":1,"keepalive_after_ms":0},
  "prices":{"m":{"input":2,"cached_input":1,"output":8,"reasoning":4},
            "m2":{"input":1,"output":1}},
  "tiers":{"t":["m","m2"]}}"#;

const DETAILED: &[u8] = br#"{"id":"c1","model":"m","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":300,"total_tokens":1300,"prompt_tokens_details":{"cached_tokens":400},"completion_tokens_details":{"reasoning_tokens":100}}}"#;

fn sent_json(sim: &Sim, i: usize) -> serde_json::Value {
    serde_json::from_slice(&sim.sends[i].body).unwrap()
}

#[test]
fn a_json_answer_costs_its_usage_times_the_price_in_the_header_and_the_log() {
    let mut sim = Sim::new(PRICED);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT),
        &json_answer(20, DETAILED),
    );
    assert_eq!(out.status, 200);
    // 600 fresh x $2 + 400 cached x $1 + 200 visible x $8 + 100 reasoning x $4, per million:
    // 0.0012 + 0.0004 + 0.0016 + 0.0004.
    assert_eq!(out.header("x-gateway-cost-usd"), Some("0.0036"));
    assert_eq!(out.header("x-gateway-model"), Some("m"));
    let l = &out.log;
    assert_eq!(l.cost_usd.map(|c| c.to_string()).as_deref(), Some("0.0036"));
    assert_eq!(l.cost_estimated, Some(false));
    assert_eq!(
        (
            l.prompt_tokens,
            l.cached_tokens,
            l.completion_tokens,
            l.reasoning_tokens
        ),
        (Some(1000), Some(400), Some(300), Some(100))
    );
    assert_eq!(l.requested_model.as_deref(), Some("m"));
    assert_eq!(
        sim.sends[0].body,
        Bytes::from_static(CHAT),
        "sent as it came"
    );
}

#[test]
fn server_timing_splits_the_gateways_time_from_the_upstreams() {
    let mut sim = Sim::new(PRICED);
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT),
        &json_answer(20, DETAILED),
    );
    assert_eq!(
        out.header("server-timing"),
        Some("gateway;dur=0.000, upstream;dur=20.000"),
        "virtual time: all 20 ms were the upstream's"
    );
    assert_eq!(out.log.overhead_ms, Some(0.0));
    assert_eq!(out.log.ttft_ms, Some(20.0));
}

#[test]
fn a_model_without_a_price_is_logged_unpriced_and_has_no_cost_header() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"other","messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(
        sim.chat(),
        ClientBody::After(0, body),
        &json_answer(5, DETAILED),
    );
    assert_eq!(out.status, 200);
    assert_eq!(out.header("x-gateway-cost-usd"), None);
    assert!(out.log.unpriced);
    assert_eq!(out.log.cost_usd, None);
    assert_eq!(out.log.prompt_tokens, Some(1000), "still counted");
}

#[test]
fn a_stream_whose_client_did_not_ask_for_usage_is_priced_from_a_usage_chunk_it_never_sees() {
    let mut sim = Sim::new(PRICED);
    let up = sse_answer(
        vec![(5, SSE[0]), (5, SSE[1]), (5, SSE[2])],
        BodyEnd::Complete,
    );
    let out = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &up);
    assert_eq!(out.status, 200);
    assert_eq!(
        out.body,
        [SSE[0], SSE[2]].concat(),
        "the usage chunk is cut"
    );
    let sent = sent_json(&sim, 0);
    assert_eq!(sent["stream_options"]["include_usage"], true);
    assert_eq!(sent["temperature"], 0, "the rest as it came");
    // 3 x $2 + 1 x $8 per million.
    assert_eq!(
        out.log.cost_usd.map(|c| c.to_string()).as_deref(),
        Some("0.000014")
    );
    assert_eq!(out.log.cost_estimated, Some(false));
    assert_eq!(
        out.header("x-gateway-cost-usd"),
        None,
        "a stream's head goes first"
    );
}

#[test]
fn a_stream_whose_client_asked_for_usage_gets_it_untouched() {
    let mut sim = Sim::new(PRICED);
    let asks: &[u8] = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let up = sse_answer(
        vec![(5, SSE[0]), (5, SSE[1]), (5, SSE[2])],
        BodyEnd::Complete,
    );
    let out = sim.drive(sim.chat(), ClientBody::After(0, asks), &up);
    assert_eq!(out.body, [SSE[0], SSE[1], SSE[2]].concat());
    assert_eq!(
        sim.sends[0].body,
        Bytes::from_static(asks),
        "sent as it came"
    );
    assert_eq!(
        out.log.cost_usd.map(|c| c.to_string()).as_deref(),
        Some("0.000014")
    );
}

#[test]
fn a_stream_cut_before_its_usage_is_priced_on_an_estimate_and_says_so() {
    let mut sim = Sim::new(PRICED);
    let up = sse_answer(vec![(5, SSE[0])], BodyEnd::Failed);
    let out = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &up);
    assert_eq!(out.log.cost_estimated, Some(true));
    // "Hi" is 2 bytes: 1 token; the prompt ("hi", one message): ceil(2/4) + 4 + 3 = 8 tokens.
    assert_eq!(out.log.completion_tokens, Some(1));
    assert_eq!(out.log.prompt_tokens, Some(8));
    assert_eq!(
        out.log.cost_usd.map(|c| c.to_string()).as_deref(),
        Some("0.000024")
    );
}

#[test]
fn a_cache_hit_costs_nothing_and_logs_what_it_saved() {
    let mut sim = Sim::new(PRICED);
    let first = sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(5, DETAILED),
    );
    assert_eq!(first.header("x-gateway-cost-usd"), Some("0.0036"));
    let hit = sim.drive(sim.chat(), ClientBody::After(0, CHAT0), &Up::Silent);
    assert_eq!(hit.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(hit.header("x-gateway-cost-usd"), Some("0"));
    assert_eq!(
        hit.log.cost_usd.map(|c| c.to_string()).as_deref(),
        Some("0")
    );
    assert_eq!(
        hit.log.saved_usd.map(|c| c.to_string()).as_deref(),
        Some("0.0036")
    );
    assert_eq!(sim.sends.len(), 1);
}

#[test]
fn a_replayed_stream_has_no_usage_chunk_either() {
    let mut sim = Sim::new(PRICED);
    let up = sse_answer(
        vec![(5, SSE[0]), (5, SSE[1]), (5, SSE[2])],
        BodyEnd::Complete,
    );
    let first = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &up);
    let hit = sim.drive(sim.chat(), ClientBody::After(0, STREAM0), &Up::Silent);
    assert_eq!(hit.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(hit.body, first.body);
    assert_eq!(hit.body, [SSE[0], SSE[2]].concat());
    assert_eq!(
        hit.log.saved_usd.map(|c| c.to_string()).as_deref(),
        Some("0.000014"),
        "the stored entry knows what the stream cost"
    );
}

#[test]
fn auto_follows_the_hints_and_names_the_model_it_sent() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let ex = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
            ("x-gateway-quality", "0.95"),
        ],
    );
    let out = sim.drive(ex, ClientBody::After(0, body), &json_answer(5, DETAILED));
    assert_eq!(out.header("x-gateway-model"), Some("gpt-4.1"));
    assert_eq!(sent_json(&sim, 0)["model"], "gpt-4.1");
    assert_eq!(out.log.requested_model.as_deref(), Some("auto"));
    assert_eq!(out.log.model.as_deref(), Some("gpt-4.1"));
    assert_eq!(out.log.selection.as_deref(), Some("rule:quality"));
    // Priced as gpt-4.1 ($8 / $32, no cached discount): 1000 x 8 + 300 x 32 per million.
    assert_eq!(out.header("x-gateway-cost-usd"), Some("0.0176"));
}

#[test]
fn a_bad_hint_is_a_400_naming_the_header_and_calls_no_upstream() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"auto","messages":[{"role":"user","content":"hi"}]}"#;
    let ex = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
            ("x-gateway-quality", "very"),
        ],
    );
    let out = sim.drive(ex, ClientBody::After(0, body), &Up::Silent);
    assert_eq!(out.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["error"]["param"], "x-gateway-quality");
    assert!(sim.sends.is_empty());
}

#[test]
fn a_cost_budget_no_model_fits_picks_the_cheapest_and_says_over_budget() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] =
        br#"{"model":"tier:t","max_tokens":1000,"messages":[{"role":"user","content":"hi"}]}"#;
    let ex = sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
            ("x-gateway-cost-budget-usd", "0.0000001"),
        ],
    );
    let out = sim.drive(ex, ClientBody::After(0, body), &json_answer(5, DETAILED));
    assert_eq!(out.header("x-gateway-model"), Some("m2"), "m2 is cheaper");
    assert_eq!(out.header("x-gateway-selection"), Some("over-budget"));
    assert!(out.log.over_budget);
}

#[test]
fn a_tier_falls_back_to_its_next_model_when_the_first_ones_upstreams_fail() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"tier:t","messages":[{"role":"user","content":"hi"}]}"#;
    let failing = Up::Head {
        after_ms: 5,
        status: 503,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Whole(0, br#"{"error":{"message":"down"}}"#),
    };
    let out = sim.drive_seq(
        sim.chat(),
        ClientBody::After(0, body),
        &[failing, json_answer(5, DETAILED)],
    );
    assert_eq!(out.status, 200);
    assert_eq!(
        sim.sends.len(),
        2,
        "max_attempts 1, but the next model gets its own"
    );
    assert_eq!(sent_json(&sim, 0)["model"], "m");
    assert_eq!(sent_json(&sim, 1)["model"], "m2");
    assert_eq!(out.header("x-gateway-model"), Some("m2"));
    let models: Vec<_> = out.log.attempts.iter().map(|a| a.model.clone()).collect();
    assert_eq!(models, [Some("m".to_string()), Some("m2".to_string())]);
    // Priced as m2 ($1 / $1): 1000 + 300 tokens.
    assert_eq!(out.header("x-gateway-cost-usd"), Some("0.0013"));
}

#[test]
fn when_every_model_of_a_tier_fails_the_client_gets_the_last_answer() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"tier:t","messages":[{"role":"user","content":"hi"}]}"#;
    let failing = Up::Head {
        after_ms: 5,
        status: 503,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Whole(0, br#"{"error":{"message":"down"}}"#),
    };
    let out = sim.drive_seq(
        sim.chat(),
        ClientBody::After(0, body),
        &[failing.clone(), failing],
    );
    assert_eq!(out.status, 503);
    assert_eq!(sim.sends.len(), 2);
}

#[test]
fn an_unknown_tier_is_a_400_on_model() {
    let mut sim = Sim::new(PRICED);
    let body: &[u8] = br#"{"model":"tier:nope","messages":[{"role":"user","content":"hi"}]}"#;
    let out = sim.drive(sim.chat(), ClientBody::After(0, body), &Up::Silent);
    assert_eq!(out.status, 400);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["error"]["param"], "model");
}

#[test]
fn the_estimate_endpoint_answers_without_an_upstream() {
    let mut sim = Sim::new(PRICED);
    let ex = sim.start(
        "POST",
        "/v1/gateway/estimate",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
        ],
    );
    let body: &[u8] = br#"{"model":"gpt-4.1","prompt_tokens":1000,"max_output_tokens":500}"#;
    let out = sim.drive(ex, ClientBody::After(0, body), &Up::Silent);
    assert_eq!(out.status, 200, "{}", String::from_utf8_lossy(&out.body));
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["model"], "gpt-4.1");
    assert_eq!(v["cost_usd"]["min"], "0.008");
    assert_eq!(v["cost_usd"]["max"], "0.024");
    assert!(sim.sends.is_empty());
    let ex = sim.start(
        "POST",
        "/v1/gateway/estimate",
        &[("content-type", "application/json")],
    );
    let out = sim.drive(ex, ClientBody::After(0, body), &Up::Silent);
    assert_eq!(out.status, 401);
}
