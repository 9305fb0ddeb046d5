//! The order of attempts, on the design's five regions.

use std::time::Duration;

use super::*;
use crate::config::Settings;

/// The design's regions, weights and fallbacks (DESIGN-FACTS.md).
pub(crate) const FIVE_REGIONS: &str = r#"{"upstreams":[
  {"name":"ap-northeast","base_url":"http://seoul.test/v1","location":{"lat":37.57,"lon":126.98},"weight":10,"fallbacks":["ap-southeast","us-west"]},
  {"name":"ap-southeast","base_url":"http://singapore.test/v1","location":{"lat":1.35,"lon":103.82},"weight":8,"fallbacks":["ap-northeast","us-west"]},
  {"name":"us-west","base_url":"http://sf.test/v1","location":{"lat":37.77,"lon":-122.42},"weight":5,"fallbacks":["us-east","eu-central"]},
  {"name":"us-east","base_url":"http://ashburn.test/v1","location":{"lat":39.04,"lon":-77.49},"weight":6,"fallbacks":["us-west","eu-central"]},
  {"name":"eu-central","base_url":"http://frankfurt.test/v1","location":{"lat":50.11,"lon":8.68},"weight":7,"fallbacks":["us-east","ap-southeast"]}
],"routing":{"eject_default_secs":3,"eject_max_secs":300,"breaker":{"failures":2,"cooldown_secs":10}}}"#;

fn settings(config: &str) -> Settings {
    Settings::from_lookup(|k| match k {
        "GATEWAY_API_KEYS" => Some("k".into()),
        "GATEWAY_CONFIG" => Some(config.into()),
        _ => None,
    })
    .unwrap()
}

fn names(s: &Settings, order: &[usize]) -> Vec<String> {
    order.iter().map(|&i| s.upstreams[i].name.clone()).collect()
}

fn order_for(
    s: &Settings,
    r: &Router,
    client: Option<(f64, f64)>,
    pin: Option<&str>,
    now: Instant,
) -> Vec<String> {
    let req = OrderRequest {
        model: "gpt-4.1",
        client,
        pin,
        now,
        random: 42,
    };
    names(s, &r.order(s, &req))
}

const T0: Instant = Instant::from_micros(1_000_000);
const TOKYO: (f64, f64) = (35.68, 139.69);
const SYDNEY: (f64, f64) = (-33.87, 151.21);
const LONDON: (f64, f64) = (51.51, -0.13);
const NEW_DELHI: (f64, f64) = (28.61, 77.21);

#[test]
fn the_nearest_region_comes_first_then_its_fallbacks_then_the_rest_by_score() {
    let s = settings(FIVE_REGIONS);
    let r = Router::new();
    // The rest, with no latency known yet, by weight: Frankfurt (7) before Virginia (6).
    assert_eq!(
        order_for(&s, &r, Some(TOKYO), None, T0),
        [
            "ap-northeast",
            "ap-southeast",
            "us-west",
            "eu-central",
            "us-east"
        ]
    );
    assert_eq!(
        order_for(&s, &r, Some(LONDON), None, T0)[..3],
        ["eu-central", "us-east", "ap-southeast"]
    );
    // Where the design's longitude bands were wrong: Sydney is nearest Singapore (the bands sent
    // it to Virginia) and New Delhi is nearer Singapore than Seoul.
    assert_eq!(order_for(&s, &r, Some(SYDNEY), None, T0)[0], "ap-southeast");
    assert_eq!(
        order_for(&s, &r, Some(NEW_DELHI), None, T0)[0],
        "ap-southeast"
    );
}

#[test]
fn a_pinned_region_comes_first_while_it_is_a_candidate() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    assert_eq!(
        order_for(&s, &r, Some(TOKYO), Some("US-EAST"), T0)[..3],
        ["us-east", "us-west", "eu-central"]
    );
    // Ejected: skipped, but its fallbacks still come first, as if the client stood there.
    let east = 3;
    r.verdict(
        &s,
        east,
        Verdict::Eject(None),
        "http_429",
        None,
        T0,
        UnixMillis(0),
    );
    assert_eq!(
        order_for(&s, &r, Some(TOKYO), Some("us-east"), T0)[..2],
        ["us-west", "eu-central"]
    );
}

#[test]
fn an_ejected_upstream_is_skipped_until_its_ejection_ends() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    let seoul = 0;
    let until = r
        .verdict(
            &s,
            seoul,
            Verdict::Eject(Some(Duration::from_secs(7))),
            "http_429",
            None,
            T0,
            UnixMillis(0),
        )
        .unwrap();
    assert_eq!(
        until,
        T0.plus(Duration::from_secs(7)),
        "the upstream's own hint"
    );
    let during = order_for(&s, &r, Some(TOKYO), None, T0.plus(Duration::from_secs(6)));
    assert!(!during.contains(&"ap-northeast".to_string()), "{during:?}");
    // The nearest's fallbacks still lead.
    assert_eq!(during[0], "ap-southeast");
    let after = order_for(&s, &r, Some(TOKYO), None, T0.plus(Duration::from_secs(7)));
    assert_eq!(after[0], "ap-northeast");
}

#[test]
fn with_no_candidate_left_the_soonest_available_is_tried_and_probed_down_ones_last() {
    let s = settings(
        r#"{"upstreams":[
      {"name":"a","base_url":"http://a.test/v1"},
      {"name":"b","base_url":"http://b.test/v1"},
      {"name":"c","base_url":"http://c.test/v1"}],
      "routing":{"health":{"unhealthy_after":1}}}"#,
    );
    let mut r = Router::new();
    let secs = |n| Some(Duration::from_secs(n));
    r.verdict(
        &s,
        0,
        Verdict::Eject(secs(30)),
        "http_429",
        None,
        T0,
        UnixMillis(0),
    );
    r.verdict(
        &s,
        1,
        Verdict::Eject(secs(5)),
        "http_429",
        None,
        T0,
        UnixMillis(0),
    );
    let now = crate::time::Now {
        instant: T0,
        unix: UnixMillis(0),
    };
    r.probe_result(&s, 2, false, "http_503".into(), now);
    assert_eq!(order_for(&s, &r, None, None, T0), ["b", "a", "c"]);
    assert_eq!(
        r.soonest_available(&[0, 1, 2], T0),
        Some(T0.plus(Duration::from_secs(5)))
    );
}

#[test]
fn an_upstream_ejected_again_soon_after_is_ejected_longer() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    let eject = |r: &mut Router, at: Instant| {
        r.verdict(
            &s,
            0,
            Verdict::Eject(None),
            "http_429",
            None,
            at,
            UnixMillis(0),
        )
        .unwrap()
    };
    let first = eject(&mut r, T0);
    assert_eq!(first, T0.plus(Duration::from_secs(3)));
    let second = eject(&mut r, first);
    assert_eq!(
        second,
        first.plus(Duration::from_secs(6)),
        "x (1 recent + 1)"
    );
    let third = eject(&mut r, second);
    assert_eq!(third, second.plus(Duration::from_secs(9)));
    // A refused key: the maximum at once.
    let max = r
        .verdict(
            &s,
            1,
            Verdict::EjectMax,
            "http_401",
            None,
            T0,
            UnixMillis(0),
        )
        .unwrap();
    assert_eq!(max, T0.plus(Duration::from_secs(300)));
}

#[test]
fn the_breaker_opens_after_consecutive_failures_and_lets_one_trial_through() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    let fail = |r: &mut Router, at| {
        r.begin(0, at);
        r.verdict(&s, 0, Verdict::Failed, "http_500", None, at, UnixMillis(0));
        r.release(0);
    };
    fail(&mut r, T0);
    assert!(r.available(0, T0), "one failure of two");
    fail(&mut r, T0);
    assert!(!r.available(0, T0), "open");
    let status = r.status(&s, "test", T0, UnixMillis(0));
    assert_eq!(status.upstreams[0].state, "open");
    let later = T0.plus(Duration::from_secs(10));
    assert!(r.available(0, later), "half-open after the cooldown");
    assert_eq!(
        r.status(&s, "test", later, UnixMillis(0)).upstreams[0].state,
        "half_open"
    );
    r.begin(0, later);
    assert!(!r.available(0, later), "one trial at a time");
    r.verdict(
        &s,
        0,
        Verdict::Healthy,
        "ok",
        Some(Duration::from_millis(80)),
        later,
        UnixMillis(0),
    );
    r.release(0);
    assert!(r.available(0, later), "closed by the trial's success");
    assert_eq!(
        r.status(&s, "test", later, UnixMillis(0)).upstreams[0].state,
        "healthy"
    );
}

#[test]
fn among_equally_near_upstreams_the_lighter_loaded_faster_one_is_chosen() {
    // Two upstreams in one region, no fallbacks: the power of two choices over latency x
    // (in flight + 1) / weight.
    let s = settings(
        r#"{"upstreams":[
      {"name":"a","base_url":"http://a.test/v1","region":"eu","location":{"lat":50.1,"lon":8.7}},
      {"name":"b","base_url":"http://b.test/v1","region":"eu","location":{"lat":50.1,"lon":8.7}}]}"#,
    );
    let mut r = Router::new();
    let ms = |n| Some(Duration::from_millis(n));
    r.begin(0, T0);
    r.verdict(&s, 0, Verdict::Healthy, "ok", ms(100), T0, UnixMillis(0));
    r.begin(1, T0);
    r.verdict(&s, 1, Verdict::Healthy, "ok", ms(300), T0, UnixMillis(0));
    r.release(1);
    // a: 100 ms x 2 in flight = 200 < b: 300 ms x 1.
    for random in [0u64, 1, 7, 1 << 40, u64::MAX] {
        let req = OrderRequest {
            model: "m",
            client: Some(LONDON),
            pin: None,
            now: T0,
            random,
        };
        assert_eq!(names(&s, &r.order(&s, &req)), ["a", "b"], "random {random}");
    }
    // More load on a: b wins.
    r.begin(0, T0);
    r.begin(0, T0);
    let req = OrderRequest {
        model: "m",
        client: Some(LONDON),
        pin: None,
        now: T0,
        random: 3,
    };
    assert_eq!(names(&s, &r.order(&s, &req)), ["b", "a"]);
}

#[test]
fn the_latency_average_weighs_the_newest_sample_at_three_tenths() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    for ms in [100, 200] {
        r.verdict(
            &s,
            0,
            Verdict::Healthy,
            "ok",
            Some(Duration::from_millis(ms)),
            T0,
            UnixMillis(0),
        );
    }
    let status = r.status(&s, "test", T0, UnixMillis(0));
    assert_eq!(status.upstreams[0].latency_ms, Some(130.0));
}

#[test]
fn upstreams_not_serving_the_model_are_never_candidates() {
    let s = settings(
        r#"{"upstreams":[
      {"name":"a","base_url":"http://a.test/v1","models":["gpt-4.1"]},
      {"name":"b","base_url":"http://b.test/v1","models":["deepseek-v3.2"]}]}"#,
    );
    let r = Router::new();
    assert_eq!(order_for(&s, &r, None, None, T0), ["a"]);
    let req = OrderRequest {
        model: "other",
        client: None,
        pin: None,
        now: T0,
        random: 1,
    };
    assert!(r.order(&s, &req).is_empty());
}

#[test]
fn the_status_never_shows_a_key_and_names_each_upstreams_host() {
    let s = Settings::from_lookup(|k| match k {
        "GATEWAY_API_KEYS" => Some("k".into()),
        "KEY_A" => Some("sk-secret-a".into()),
        "GATEWAY_CONFIG" => Some(
            r#"{"upstreams":[{"name":"a","base_url":"https://user:pw@a.test:8443/v1","api_key_secret":"KEY_A"}]}"#
                .into(),
        ),
        _ => None,
    })
    .unwrap();
    let r = Router::new();
    let json = serde_json::to_string(&r.status(&s, "test", T0, UnixMillis(0))).unwrap();
    assert!(
        !json.contains("sk-secret-a") && !json.contains("pw"),
        "{json}"
    );
    assert!(json.contains(r#""host":"a.test:8443""#), "{json}");
}

#[test]
fn failures_of_attempts_sent_before_probes_brought_an_upstream_back_do_not_reopen_it() {
    let s = settings(FIVE_REGIONS);
    let mut r = Router::new();
    let at = |ms: u64| crate::time::Now {
        instant: T0.plus(Duration::from_millis(ms)),
        unix: UnixMillis(ms),
    };
    // Down by probes (unhealthy_after 2), then back.
    r.probe_result(&s, 0, false, "timed_out".into(), at(0));
    r.probe_result(&s, 0, false, "timed_out".into(), at(100));
    assert!(!r.available(0, at(100).instant));
    r.probe_result(&s, 0, true, "http_200".into(), at(200));
    assert!(r.available(0, at(200).instant));
    // Two attempts sent at 50 ms (while it was down) time out after it came back: not counted.
    for _ in 0..2 {
        let report = Report {
            verdict: Verdict::Failed,
            kind: "timed_out",
            latency: None,
            started: Some(at(50).instant),
        };
        r.report(&s, 0, report, at(300).instant, UnixMillis(300));
    }
    assert!(
        r.available(0, at(300).instant),
        "breaker (2 failures) still closed"
    );
    // Two sent after it came back: counted.
    for _ in 0..2 {
        let report = Report {
            verdict: Verdict::Failed,
            kind: "timed_out",
            latency: None,
            started: Some(at(250).instant),
        };
        r.report(&s, 0, report, at(400).instant, UnixMillis(400));
    }
    assert!(!r.available(0, at(400).instant), "open");
}
