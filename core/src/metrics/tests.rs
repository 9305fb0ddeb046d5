use super::*;
use crate::log::RequestLog;

fn settings() -> Settings {
    Settings::from_lookup(|k| match k {
        "UPSTREAM_BASE_URL" => Some("https://api.openai.com/v1".into()),
        "UPSTREAM_API_KEY" => Some("sk-up".into()),
        "GATEWAY_API_KEYS" => Some("client-1".into()),
        _ => None,
    })
    .unwrap()
}

fn chat(status: u16) -> RequestLog {
    RequestLog {
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        status,
        model: Some("gpt-4o-mini".into()),
        upstream: Some("default".into()),
        key_id: Some("key_a".into()),
        total_ms: 12.0,
        ..RequestLog::default()
    }
}

const T0: UnixMillis = UnixMillis(1_700_000_000_000);

#[test]
fn a_refusal_by_a_keys_limit_counts_once_under_the_key_and_the_limit() {
    let s = settings();
    let mut t = Tally::new();
    let mut log = chat(429);
    log.limited = Some("tokens");
    log.error_code = Some("rate_limit_exceeded".into());
    t.record(&log, &s, T0);
    #[cfg(feature = "series")]
    assert_eq!(t.series.refusals.get(&("key_a".into(), "tokens")), Some(&1));
    assert_eq!(t.refused, 1);
    assert_eq!(t.keys["key_a"].refused, 1);
    let summary = serde_json::to_value(t.summary(&s, Viewer::Operator, T0)).unwrap();
    assert_eq!(summary["requests"]["rate_limited"], 1);
    assert_eq!(summary["top_errors"][0]["code"], "rate_limit_exceeded");
}

#[cfg(feature = "series")]
#[test]
fn the_provider_label_comes_from_the_upstreams_host() {
    let s = settings();
    let mut t = Tally::new();
    t.record(&chat(200), &s, T0);
    let (k, _) = t.series.request_duration.iter().next().unwrap();
    assert_eq!(k.0.provider, "openai");
    assert_eq!(k.1, "", "no error type on a success");
    t.record(&chat(502), &s, T0);
    assert!(t.series.request_duration.keys().any(|k| k.1 == "502"));
}

#[test]
fn a_family_at_its_series_limit_folds_new_label_sets_into_other() {
    let s = settings();
    let mut t = Tally::new();
    for i in 0..(MAX_SERIES + 50) {
        let mut log = chat(200);
        log.key_id = Some(format!("key_{i}"));
        t.record(&log, &s, T0);
    }
    assert_eq!(t.keys.len(), MAX_SERIES + 1, "the limit, plus `other`");
    assert_eq!(t.keys["other"].requests, 50);
    let total: u64 = t.keys.values().map(|k| k.requests).sum();
    assert_eq!(total, MAX_SERIES as u64 + 50, "nothing is lost");
}

#[test]
fn unpriced_answers_are_counted_by_model_and_never_as_spend() {
    let s = settings();
    let mut t = Tally::new();
    let mut log = chat(200);
    log.unpriced = true;
    log.prompt_tokens = Some(10);
    t.record(&log, &s, T0);
    assert_eq!(t.unpriced, 1);
    assert_eq!(t.models["gpt-4o-mini"].cost, Money::ZERO);
    #[cfg(feature = "series")]
    {
        assert_eq!(t.series.unpriced.get("gpt-4o-mini"), Some(&1));
        assert!(t.series.cost.is_empty());
    }
}

#[test]
fn the_recent_series_forgets_steps_older_than_five_minutes() {
    let s = settings();
    let mut t = Tally::new();
    t.record(&chat(500), &s, T0);
    let later = UnixMillis(T0.as_millis() + 20_000);
    t.record(&chat(200), &s, later);
    let points: Vec<_> = t.recent.points(later).collect();
    assert_eq!(points.len(), RECENT_BUCKETS);
    let sum = |f: fn(&RecentBucket) -> u64| points.iter().map(f).sum::<u64>();
    assert_eq!((sum(|b| b.requests), sum(|b| b.errors)), (2, 1));
    let much_later = UnixMillis(T0.as_millis() + 10 * 60_000);
    assert!(t.recent.points(much_later).all(|b| b.requests == 0));
}
