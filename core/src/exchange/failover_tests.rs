//! The attempt loop on virtual time: failover, ejection, the final answer, streams held until
//! content, keepalives, backoff and the deadline.

use std::sync::Arc;

use bytes::Bytes;

use super::tests::*;
use super::*;
use crate::Settings;

/// Three upstreams without locations (so the order is by score, then by index) and short,
/// readable timers: first byte 1 s, keepalive after 500 ms then every 300 ms.
pub(super) const REGIONS: &str = r#"{"upstreams":[
  {"name":"a","base_url":"http://a.test/v1","api_key_secret":"KEY_A","fallbacks":["b","c"],
   "headers":{"openai-organization":"org-of-a"}},
  {"name":"b","base_url":"http://b.test/v1","api_key_secret":"KEY_B"},
  {"name":"c","base_url":"http://c.test/v1","api_key_secret":"KEY_C"}],
  "routing":{"max_attempts":3,"deadline_ms":10000,"first_byte_timeout_ms":1000,
             "keepalive_after_ms":500,"keepalive_interval_ms":300,"retry_backoff_ms":100,
             "eject_default_secs":3,"eject_max_secs":300,"breaker":{"failures":3,"cooldown_secs":30}}}"#;

pub(super) fn regions(config: &str) -> Sim {
    let settings = Settings::from_lookup(|k| match k {
        "GATEWAY_API_KEYS" => Some("client-1".into()),
        "KEY_A" => Some("sk-a".into()),
        "KEY_B" => Some("sk-b".into()),
        "KEY_C" => Some("sk-c".into()),
        "GATEWAY_CONFIG" => Some(config.into()),
        _ => None,
    })
    .unwrap();
    let mut sim = Sim::new(CONFIG);
    sim.gw = Arc::new(Gateway::new(settings, "sim"));
    sim
}

/// The first attempt goes to `a`: pinned, so the order is a, b, c.
pub(super) fn pinned_chat(sim: &Sim) -> Exchange {
    sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
            ("x-gateway-region", "a"),
        ],
    )
}

pub(super) fn status(
    status: u16,
    headers: Vec<(&'static str, &'static str)>,
    body: &'static [u8],
) -> Up {
    let mut h = vec![("content-type", "application/json")];
    h.extend(headers);
    Up::Head {
        after_ms: 10,
        status,
        headers: h,
        body: UpBody::Whole(0, body),
    }
}

pub(super) const ERR_503: &[u8] = br#"{"error":{"message":"overloaded","type":"server_error","param":null,"code":"service_unavailable"}}"#;
const ERR_429: &[u8] = br#"{"error":{"message":"Rate limit exceeded for model gpt-4.1","type":"rate_limit_error","code":"rate_limit_exceeded","retry_after":5}}"#;
const QUOTA: &[u8] = br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
const ERR_401: &[u8] = br#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;

fn sent_to(sim: &Sim) -> Vec<&str> {
    sim.sends.iter().map(|a| a.upstream_name.as_str()).collect()
}

#[test]
fn a_503_fails_over_to_the_next_upstream_with_its_own_key_and_names_who_answered() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[status(503, vec![], ERR_503), json_answer(20, ANSWER)],
    );
    assert_eq!(out.status, 200);
    assert_eq!(sent_to(&sim), ["a", "b"]);
    let auth = |i: usize| {
        sim.sends[i].headers["authorization"]
            .to_str()
            .unwrap()
            .to_string()
    };
    assert_eq!(
        (auth(0), auth(1)),
        ("Bearer sk-a".into(), "Bearer sk-b".into())
    );
    assert_eq!(sim.sends[1].url, "http://b.test/v1/chat/completions");
    assert_eq!(&sim.sends[1].body[..], CHAT, "the same bytes again");
    let org = |i: usize| sim.sends[i].headers.get("openai-organization").cloned();
    assert_eq!(org(0).unwrap(), "org-of-a", "the operator's header for a");
    assert_eq!(org(1), None, "not sent to b");
    assert_eq!(out.header("x-gateway-upstream"), Some("b"));
    assert_eq!(out.header("x-gateway-attempts"), Some("2"));
    assert_eq!(out.log.upstream.as_deref(), Some("b"));
    let outcomes: Vec<_> = out
        .log
        .attempts
        .iter()
        .map(|a| (a.upstream.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(outcomes, [("a", "http_503"), ("b", "ok")]);
    assert_eq!(out.log.attempts[0].ms, 10.0);
}

#[test]
fn client_errors_pass_through_untouched_and_are_never_retried() {
    for code in [400u16, 404, 413, 422] {
        let mut sim = regions(REGIONS);
        let up = Up::Head {
            after_ms: 10,
            status: code,
            headers: vec![("content-type", "application/json")],
            body: UpBody::Chunks(vec![(1, ERR_503)], BodyEnd::Complete),
        };
        let out = sim.drive_seq(pinned_chat(&sim), ClientBody::After(0, CHAT), &[up]);
        assert_eq!(out.status, code);
        assert_eq!(sent_to(&sim), ["a"], "{code}");
        assert_eq!(out.body, ERR_503);
        assert_eq!(out.header("x-gateway-attempts"), Some("1"));
    }
}

#[test]
fn a_429_ejects_for_the_upstreams_own_hint_and_later_requests_skip_it_until_then() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[
            status(429, vec![("retry-after", "20")], ERR_429),
            json_answer(20, ANSWER),
        ],
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["a", "b"]));
    let status_now = |sim: &Sim| {
        let now = sim.now();
        let s = sim
            .router
            .status(sim.gw.settings(), "sim", now.instant, now.unix);
        (
            s.upstreams[0].state,
            s.upstreams[0].last_error.as_ref().map(|e| e.kind),
        )
    };
    assert_eq!(status_now(&sim), ("ejected", Some("http_429")));
    // 19 s later, pinned to a: still skipped.
    sim.advance(19_000);
    sim.sends.clear();
    let out = sim.drive(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["b"]));
    // After 20 s: used again.
    sim.advance(1_000);
    sim.sends.clear();
    let out = sim.drive(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["a"]));
    assert_eq!(status_now(&sim).0, "healthy");
}

#[test]
fn a_spent_quota_ejects_for_the_maximum_and_is_not_retried_there() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[status(429, vec![], QUOTA), json_answer(20, ANSWER)],
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["a", "b"]));
    assert_eq!(out.log.attempts[0].outcome, "insufficient_quota");
    sim.advance(299_000);
    assert!(!sim.router.available(0, sim.now().instant), "still ejected");
    sim.advance(1_000);
    assert!(sim.router.available(0, sim.now().instant));
}

#[test]
fn refused_keys_everywhere_are_502_upstream_auth_failed_never_the_upstreams_401() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[status(401, vec![], ERR_401)],
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (502, "upstream_auth_failed")
    );
    assert_eq!(sent_to(&sim), ["a", "b", "c"]);
    assert_eq!(out.header("x-gateway-attempts"), Some("3"));
    assert!(!String::from_utf8_lossy(&out.body).contains("Incorrect API key"));
    for i in 0..3 {
        assert!(!sim.router.available(i, sim.now().instant), "{i} ejected");
    }
}

#[test]
fn when_every_attempt_fails_the_last_answer_that_was_not_a_401_is_given_as_it_was() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[
            status(503, vec![("x-upstream-detail", "a")], ERR_503),
            status(429, vec![("retry-after", "7")], ERR_429),
            status(401, vec![], ERR_401),
        ],
    );
    assert_eq!(out.status, 429);
    assert_eq!(out.body, ERR_429);
    assert_eq!(out.header("retry-after"), Some("7"));
    assert_eq!(out.header("x-gateway-upstream"), Some("b"));
    assert_eq!(out.header("x-gateway-attempts"), Some("3"));
}

#[test]
fn a_final_answer_without_retry_after_gets_the_soonest_ejection_end() {
    let mut sim = regions(
        r#"{"upstreams":[
      {"name":"a","base_url":"http://a.test/v1"},{"name":"b","base_url":"http://b.test/v1"}],
      "routing":{"max_attempts":2}}"#,
    );
    let out = sim.drive_seq(
        sim.chat(),
        ClientBody::After(0, CHAT),
        &[
            status(429, vec![("retry-after-ms", "4500")], ERR_429),
            status(
                429,
                vec![],
                br#"{"error":{"message":"slow down","type":"rate_limit_error","code":null}}"#,
            ),
        ],
    );
    assert_eq!(out.status, 429);
    // a: 4.5 s from its header; b: the default 3 s from its answer 10 ms later.
    assert_eq!(out.header("retry-after"), Some("3"));
}

#[test]
fn refused_connections_and_first_byte_timeouts_fail_over_then_504_or_502_when_all_do() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[
            Up::Fail(2, TransportError::Refused),
            Up::Silent,
            json_answer(5, ANSWER),
        ],
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["a", "b", "c"]));
    let outcomes: Vec<_> = out
        .log
        .attempts
        .iter()
        .map(|a| a.outcome.as_str())
        .collect();
    assert_eq!(outcomes, ["refused", "timed_out", "ok"]);
    assert_eq!(
        sim.send_times[2] - sim.send_times[1],
        1_000,
        "the first-byte timeout"
    );

    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(pinned_chat(&sim), ClientBody::After(0, CHAT), &[Up::Silent]);
    assert_eq!((out.status, out.code().as_str()), (504, "upstream_timeout"));
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[Up::Fail(1, TransportError::Reset)],
    );
    assert_eq!(
        (out.status, out.code().as_str()),
        (502, "upstream_unreachable")
    );
}

#[test]
fn attempts_stop_at_max_attempts_and_a_lone_upstream_is_retried_after_a_jittered_backoff() {
    let mut sim = regions(
        r#"{"upstreams":[{"name":"solo","base_url":"http://solo.test/v1"}],
      "routing":{"max_attempts":4,"retry_backoff_ms":100}}"#,
    );
    let out = sim.drive_seq(
        sim.chat(),
        ClientBody::After(0, CHAT),
        &[status(500, vec![], ERR_503)],
    );
    assert_eq!(out.status, 500);
    assert_eq!(sim.sends.len(), 4);
    // Full jitter: each wait within [0, 100 x 2^round] ms after the 10 ms answer.
    for (round, pair) in sim.send_times.windows(2).enumerate() {
        let waited = pair[1] - pair[0] - 10;
        assert!(waited <= 100 << round, "round {round}: {waited} ms");
    }
}

#[test]
fn the_deadline_bounds_all_attempts_a_fallback_never_restarts_it() {
    let mut sim = regions(
        r#"{"upstreams":[
      {"name":"a","base_url":"http://a.test/v1"},{"name":"b","base_url":"http://b.test/v1"},
      {"name":"c","base_url":"http://c.test/v1"}],
      "routing":{"max_attempts":3,"deadline_ms":1500,"first_byte_timeout_ms":1000}}"#,
    );
    let start = sim.ms();
    let out = sim.drive_seq(sim.chat(), ClientBody::After(0, CHAT), &[Up::Silent]);
    assert_eq!(out.status, 504);
    assert_eq!(sim.sends.len(), 2, "no third attempt after the deadline");
    assert_eq!(
        sim.ms() - start,
        1_500,
        "the second attempt is cut at the deadline"
    );
}

const ROLE: &[u8] =
    b"data: {\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\n";
const ERROR_EVENT: &[u8] = b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\",\"param\":null,\"code\":\"overloaded\"}}\n\n";

fn pinned_stream(sim: &Sim) -> Exchange {
    sim.start(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", "Bearer client-1"),
            ("content-type", "application/json"),
            ("x-gateway-region", "a"),
        ],
    )
}

/// Asks for usage, so the upstream's stream reaches the client whole.
const STREAM: &[u8] = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

#[test]
fn a_stream_with_an_error_event_or_cut_before_content_is_served_whole_by_the_next_upstream() {
    for first in [
        sse_answer(vec![(5, ROLE), (5, ERROR_EVENT)], BodyEnd::Complete),
        sse_answer(vec![(5, ROLE)], BodyEnd::Failed),
    ] {
        let mut sim = regions(REGIONS);
        let second = sse_answer(
            vec![(5, SSE[0]), (5, SSE[1]), (5, SSE[2])],
            BodyEnd::Complete,
        );
        let out = sim.drive_seq(
            pinned_stream(&sim),
            ClientBody::After(0, STREAM),
            &[first, second],
        );
        assert_eq!(out.status, 200);
        assert_eq!(out.header("x-gateway-upstream"), Some("b"));
        assert_eq!(
            out.body,
            [SSE[0], SSE[1], SSE[2]].concat(),
            "only b's stream"
        );
        assert_eq!(out.log.stream_complete, Some(true));
    }
}

#[test]
fn a_stream_cut_after_content_ends_with_an_error_event_never_a_clean_end() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_stream(&sim),
        ClientBody::After(0, STREAM),
        &[sse_answer(vec![(5, ROLE), (5, SSE[0])], BodyEnd::Failed)],
    );
    assert_eq!(
        sent_to(&sim),
        ["a"],
        "content reached the client: no failover"
    );
    let text = String::from_utf8_lossy(&out.body);
    assert!(
        text.starts_with(std::str::from_utf8(ROLE).unwrap()),
        "{text}"
    );
    assert!(text.contains("upstream_stream_interrupted") && !text.contains("[DONE]"));
    // The role-only event was held until the content: both left together.
    assert_eq!(out.chunk_times[0], 5 + 5 + 5);
}

#[test]
fn keepalives_hold_a_slow_stream_open_while_failover_goes_on_behind_them() {
    let mut sim = regions(REGIONS);
    let slow_error = Up::Head {
        after_ms: 700,
        status: 503,
        headers: vec![("content-type", "application/json")],
        body: UpBody::Whole(0, ERR_503),
    };
    let good = Up::Head {
        after_ms: 200,
        status: 200,
        headers: vec![("content-type", "text/event-stream")],
        body: UpBody::Chunks(vec![(5, SSE[0]), (5, SSE[2])], BodyEnd::Complete),
    };
    let ups = [slow_error, good];
    sim.driven_ups = ups.to_vec();
    let start = sim.ms();
    let out = sim.drive_seq(pinned_stream(&sim), ClientBody::After(0, STREAM), &ups);
    assert_eq!(out.status, 200);
    assert_eq!(out.header("content-type"), Some("text/event-stream"));
    assert_eq!(
        out.header("x-gateway-upstream"),
        None,
        "committed before anyone answered"
    );
    let text = String::from_utf8_lossy(&out.body);
    assert!(text.starts_with(": keepalive\n\n"), "{text}");
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    // Head and first keepalive at 500 ms, the next at 800 ms; a's 503 at 700, b's content at
    // 700 + 200 + 5.
    assert_eq!(out.chunk_times, [500, 800, 905, 910]);
    assert_eq!(sent_to(&sim), ["a", "b"]);
    assert_eq!(
        out.log.upstream.as_deref(),
        Some("b"),
        "the log line names who answered"
    );
    assert_eq!(out.log.stream_complete, Some(true));
    let _ = start;
}

#[test]
fn after_keepalives_a_total_failure_is_one_sse_error_event() {
    let mut sim = regions(REGIONS);
    let ups = [Up::Silent];
    sim.driven_ups = ups.to_vec();
    let out = sim.drive_seq(pinned_stream(&sim), ClientBody::After(0, STREAM), &ups);
    assert_eq!(out.status, 200);
    let text = String::from_utf8_lossy(&out.body);
    assert_eq!(text.matches("data: {\"error\"").count(), 1, "{text}");
    assert!(
        text.contains("upstream_timeout") && !text.contains("[DONE]"),
        "{text}"
    );
    assert_eq!(sim.sends.len(), 3);
}

#[test]
fn consecutive_failures_open_the_breaker_so_later_requests_skip_that_upstream() {
    let mut sim = regions(REGIONS);
    for _ in 0..3 {
        sim.sends.clear();
        let out = sim.drive_seq(
            pinned_chat(&sim),
            ClientBody::After(0, CHAT),
            &[status(500, vec![], ERR_503), json_answer(5, ANSWER)],
        );
        assert_eq!(out.status, 200);
    }
    sim.sends.clear();
    let out = sim.drive(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &json_answer(5, ANSWER),
    );
    assert_eq!((out.status, sent_to(&sim)), (200, vec!["b"]), "a is open");
    let now = sim.now();
    let st = sim
        .router
        .status(sim.gw.settings(), "sim", now.instant, now.unix);
    assert_eq!(st.upstreams[0].state, "open");
    assert_eq!(st.upstreams[0].errors, 3);
}

#[test]
fn the_status_endpoint_requires_a_key_and_reports_every_upstream() {
    let mut sim = regions(REGIONS);
    let ex = sim.start("GET", "/v1/gateway/status", &[]);
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 401);
    let ex = sim.start(
        "GET",
        "/v1/gateway/status",
        &[("authorization", "Bearer client-1")],
    );
    let out = sim.drive(ex, ClientBody::Never, &Up::Silent);
    assert_eq!(out.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
    let names: Vec<_> = v["upstreams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(v["upstreams"][0]["state"], "healthy");
    assert!(!String::from_utf8_lossy(&out.body).contains("sk-"));
    assert!(sim.sends.is_empty());
    let _ = Bytes::new();
}
