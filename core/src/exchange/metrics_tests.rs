//! The tally on virtual time: each kind of request moves the series it should, by one, and the
//! summary reads them back.

use super::failover_tests::{pinned_chat, regions, status, ERR_503, REGIONS};
use super::tests::*;
use super::*;
use crate::metrics::Viewer;

fn requests(sim: &Sim) -> u64 {
    sim.router.tally().statuses.values().sum()
}

fn summary_json(sim: &Sim, viewer: Viewer<'_>) -> serde_json::Value {
    let s = sim
        .router
        .summary(sim.gw.settings(), "sim", viewer, sim.now().unix);
    serde_json::to_value(&s).unwrap()
}

#[test]
fn a_request_a_cache_hit_and_an_error_each_move_their_series_by_one() {
    let mut sim = Sim::new(CONFIG);
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    let t = sim.router.tally();
    assert_eq!(t.statuses.get(&200), Some(&1));
    assert_eq!(t.cache_misses, 1);
    assert_eq!(t.upstreams["default"].ok, 1);
    assert_eq!(t.latency.count(), 1);
    #[cfg(feature = "series")]
    {
        let key = crate::metrics::RequestKey {
            route: "chat_completions",
            status: 200,
            model: "other".into(),
            upstream: "default".into(),
            cache: "miss",
        };
        assert_eq!(t.series.requests.get(&key), Some(&1));
        let ok = ("default".to_string(), "ok".to_string());
        assert_eq!(t.series.attempts.get(&ok), Some(&1));
    }

    let hit = sim.drive(sim.chat(), ClientBody::After(0, CHAT0), &Up::Silent);
    assert_eq!(hit.log.cache, Some("hit"));
    let t = sim.router.tally();
    assert_eq!(t.cache_hits, 1);
    assert_eq!(t.cache_bytes_served, ANSWER.len() as u64);
    assert_eq!(requests(&sim), 2);

    let bad = sim.drive(sim.chat(), ClientBody::After(0, b"{not json"), &Up::Silent);
    assert_eq!(bad.status, 400);
    let t = sim.router.tally();
    assert_eq!(requests(&sim), 3);
    assert_eq!(t.errors.values().sum::<u64>(), 1);
    assert_eq!(
        t.errors.keys().next().map(|(s, _)| *s),
        Some(400),
        "{:?}",
        t.errors
    );

    let v = summary_json(&sim, Viewer::Operator);
    assert_eq!(v["object"], "gateway.summary");
    assert_eq!(v["requests"]["total"], 3);
    assert_eq!(v["requests"]["errors"], 1);
    assert_eq!(v["requests"]["client_errors"], 1);
    assert_eq!(v["requests"]["last_minute"], 3);
    assert_eq!(v["cache"]["hits"], 1);
    assert_eq!(v["cache"]["misses"], 1);
    assert_eq!(v["cache"]["hit_rate"], 0.5);
    assert_eq!(v["series"]["points"].as_array().unwrap().len(), 30);
    assert_eq!(v["top_errors"][0]["status"], 400);
    assert_eq!(v["top_errors"][0]["count"], 1);
    assert!(v["since"].is_string());
}

#[test]
fn a_failover_counts_one_failover_from_the_upstream_that_failed_with_its_outcome() {
    let mut sim = regions(REGIONS);
    let out = sim.drive_seq(
        pinned_chat(&sim),
        ClientBody::After(0, CHAT),
        &[status(503, vec![], ERR_503), json_answer(20, ANSWER)],
    );
    assert_eq!(out.status, 200);
    let t = sim.router.tally();
    assert_eq!(t.failed_over, 1);
    assert_eq!(
        (t.upstreams["a"].failed, t.upstreams["a"].failovers),
        (1, 1)
    );
    assert_eq!(t.upstreams["b"].ok, 1);
    #[cfg(feature = "series")]
    {
        let s = &t.series;
        let a503 = ("a".to_string(), "http_503".to_string());
        assert_eq!(s.failovers.get(&a503), Some(&1), "{:?}", s.failovers);
        assert_eq!(s.failovers.values().sum::<u64>(), 1);
        assert_eq!(s.attempts.get(&a503), Some(&1));
    }
    let v = summary_json(&sim, Viewer::Operator);
    assert_eq!(v["failovers"], 1);
    let a = &v["attempts"][0];
    assert_eq!(
        (a["upstream"].as_str(), a["failed"].as_u64()),
        (Some("a"), Some(1))
    );
    assert_eq!(a["failovers"], 1);
    assert_eq!(v["attempts"][1]["ok"], 1);
    let points = v["series"]["points"].as_array().unwrap();
    assert_eq!(points.last().unwrap()["failovers"], 1);
}

#[test]
fn a_model_the_configuration_does_not_know_is_counted_as_other_not_as_typed() {
    let mut sim = Sim::new(CONFIG);
    const ODD: &[u8] =
        br#"{"model":"made-up-by-a-client-8d1f","messages":[{"role":"user","content":"hi"}]}"#;
    sim.drive(
        sim.chat(),
        ClientBody::After(0, ODD),
        &json_answer(5, ANSWER),
    );
    const KNOWN: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    sim.drive(
        sim.chat(),
        ClientBody::After(0, KNOWN),
        &json_answer(5, ANSWER),
    );
    let t = sim.router.tally();
    let models: Vec<&str> = t.models.keys().map(String::as_str).collect();
    assert!(models.contains(&"other"), "{models:?}");
    assert!(
        models.contains(&"gpt-4o-mini"),
        "a priced model keeps its name"
    );
    assert!(!models.iter().any(|m| m.contains("made-up")));
    // A priced model's usage is costed and counted in the GenAI token histogram.
    assert!(t.models["gpt-4o-mini"].cost > crate::pricing::Money::ZERO);
}

#[cfg(feature = "series")]
#[test]
fn genai_histograms_count_tokens_and_durations_by_the_conventions_attributes() {
    let mut sim = Sim::new(CONFIG);
    const KNOWN: &[u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    sim.drive(
        sim.chat(),
        ClientBody::After(0, KNOWN),
        &json_answer(5, ANSWER),
    );
    let t = &sim.router.tally().series;
    let input = t
        .token_usage
        .iter()
        .find(|((k, kind), _)| k.response_model == "gpt-4o-mini" && *kind == "input")
        .map(|(_, h)| (h.count(), h.sum()));
    assert_eq!(input, Some((1, 3.0)));
    let (k, _) = t.request_duration.iter().next().unwrap();
    assert_eq!((k.0.operation, k.0.provider), ("chat", "_OTHER"));
}

#[test]
fn a_stream_records_its_time_to_first_token_and_time_per_output_token() {
    let mut sim = Sim::new(CONFIG);
    const STREAM: &[u8] =
        br#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hi"}]}"#;
    let up = sse_answer(
        vec![
            (40, b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n"),
            (30, b"data: {\"choices\":[{\"delta\":{\"content\":\" there\"}}]}\n\n"),
            (30, b"data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":3,\"total_tokens\":6}}\n\n"),
            (0, b"data: [DONE]\n\n"),
        ],
        BodyEnd::Complete,
    );
    let out = sim.drive(sim.chat(), ClientBody::After(0, STREAM), &up);
    assert_eq!(out.status, 200);
    let t = sim.router.tally();
    assert_eq!(t.ttft.count(), 1);
    #[cfg(feature = "series")]
    {
        let t = &t.series;
        let ttft: Vec<_> = t.time_to_first_token.values().map(|h| h.count()).collect();
        assert_eq!(ttft, [1]);
        let tpot: Vec<_> = t.time_per_output_token.values().map(|h| h.sum()).collect();
        assert_eq!(tpot.len(), 1);
        // (total - ttft) over the two tokens after the first.
        let expected = (out.log.total_ms - out.log.ttft_ms.unwrap()) / 1000.0 / 2.0;
        assert!((tpot[0] - expected).abs() < 1e-9, "{tpot:?} vs {expected}");
    }
}

#[test]
fn a_tenant_key_sees_only_its_own_spend_an_operator_sees_every_key() {
    let mut sim = Sim::new(CONFIG);
    sim.drive(
        sim.chat(),
        ClientBody::After(0, CHAT0),
        &json_answer(5, ANSWER),
    );
    let v = summary_json(&sim, Viewer::Operator);
    let ids: Vec<_> = v["spend"]["by_key"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["key_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "{v}");
    let v = summary_json(&sim, Viewer::Key("key_someone_else"));
    assert_eq!(v["spend"]["by_key"].as_array().unwrap().len(), 0);
    let v = summary_json(&sim, Viewer::Key(&ids[0]));
    assert_eq!(v["spend"]["by_key"].as_array().unwrap().len(), 1);
}
