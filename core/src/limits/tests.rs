//! The limiter's decisions on virtual time, with the in-memory store.

use std::sync::Arc;

use super::*;
use crate::error::{GatewayError, RateLimitKind};
use crate::pricing::Money;

const T0: u64 = 1_700_000_020_000; // 40 s into a UTC minute.

fn policy(json: &str) -> Arc<KeyPolicy> {
    let k: KeyConfig = serde_json::from_str(json).unwrap();
    let mut v = validate_keys(&[k], &LimitSettings::default()).unwrap();
    v.remove(0).1
}

const DIGEST: &str = "0000000000000000000000000000000000000000000000000000000000000001";

fn key(extra: &str) -> Arc<KeyPolicy> {
    policy(&format!(
        r#"{{"id":"team-a","key_sha256":"{DIGEST}"{extra}}}"#
    ))
}

fn usd(s: &str) -> Money {
    Money::parse_usd(s).unwrap()
}

fn request(tokens: u64, cost: &str) -> Demand {
    Demand {
        tokens,
        cost: usd(cost),
        hit: false,
    }
}

/// Reserves and decides in one go against `store`.
fn ask(store: &mut MemoryCounters, p: &KeyPolicy, d: Demand, now: u64) -> Verdict {
    let (call, pending) = reserve(p, 0, &d, now).unwrap();
    let reply = store.apply(&call.op, now);
    decide(p, pending, &reply, now)
}

#[test]
fn requests_count_down_then_429_requests_until_the_minute_ends() {
    let p = key(r#","rpm":3"#);
    let mut s = MemoryCounters::new();
    let remaining: Vec<u64> = (0..3)
        .map(|_| {
            let v = ask(&mut s, &p, request(10, "0"), T0);
            assert!(v.outcome.is_ok());
            v.requests.unwrap().remaining
        })
        .collect();
    assert_eq!(remaining, [2, 1, 0]);
    let v = ask(&mut s, &p, request(10, "0"), T0 + 5_000);
    let r = v.requests.unwrap();
    assert_eq!((r.limit, r.remaining, r.reset_ms), (3, 0, 15_000));
    match v.outcome {
        Err(
            e @ GatewayError::RateLimited {
                kind: RateLimitKind::Requests,
                ..
            },
        ) => {
            assert_eq!(e.status(), 429);
            assert_eq!(e.code(), Some("rate_limit_exceeded"));
            assert_eq!(e.kind().as_str(), "requests");
            assert_eq!(e.retry_after_secs(), Some(15));
        }
        other => panic!("{other:?}"),
    }
    // The next minute is a new window.
    assert!(ask(&mut s, &p, request(10, "0"), T0 + 20_000)
        .outcome
        .is_ok());
}

#[test]
fn tokens_are_reserved_then_corrected_to_the_actual_usage() {
    let p = key(r#","tpm":1000"#);
    let mut s = MemoryCounters::new();
    let v = ask(&mut s, &p, request(600, "0"), T0);
    assert_eq!(v.tokens.unwrap().remaining, 400);
    assert!(v.requests.is_none(), "no rpm: no request headers");
    let r = v.outcome.unwrap();
    // A second 600 does not fit while the first is reserved...
    let v2 = ask(&mut s, &p, request(600, "0"), T0);
    assert!(matches!(
        v2.outcome,
        Err(GatewayError::RateLimited {
            kind: RateLimitKind::Tokens,
            ..
        })
    ));
    // ...and fits once the first settles at its actual 150 tokens.
    let settle = settle(&r, 150, Money::ZERO, T0 + 1000).unwrap();
    s.apply(&settle.op, T0 + 1000);
    let v3 = ask(&mut s, &p, request(600, "0"), T0 + 1000);
    assert_eq!(v3.tokens.unwrap().remaining, 250);
}

#[test]
fn a_request_larger_than_the_whole_token_limit_is_refused_without_counting() {
    let p = key(r#","tpm":1000"#);
    let mut s = MemoryCounters::new();
    let v = ask(&mut s, &p, request(5_000_000_000, "0"), T0);
    assert!(v.outcome.is_err());
    assert_eq!(v.tokens.unwrap().remaining, 1000);
    assert!(s.is_empty());
}

#[test]
fn a_budget_admits_concurrent_reservations_only_up_to_its_amount() {
    // $1 budget, each request may cost up to $0.30: three fit, the fourth does not.
    let p = key(r#","budget_usd":{"amount":1,"period":"day"}"#);
    let mut s = MemoryCounters::new();
    let granted: Vec<Reservation> = (0..10)
        .filter_map(|_| ask(&mut s, &p, request(100, "0.30"), T0).outcome.ok())
        .collect();
    assert_eq!(granted.len(), 3);
    let refused = ask(&mut s, &p, request(100, "0.30"), T0)
        .outcome
        .unwrap_err();
    assert_eq!(refused.status(), 429);
    assert_eq!(refused.code(), Some("insufficient_quota"));
    assert_eq!(refused.kind().as_str(), "insufficient_quota");
    // Settled at $0.05 each: $0.15 spent, and $0.85 is free again.
    for r in &granted {
        let c = settle(r, 100, usd("0.05"), T0 + 1000).unwrap();
        s.apply(&c.op, T0 + 1000);
    }
    let st = standing(
        &p,
        Some(&s.apply(&peek(&p, 0, T0 + 1000).unwrap().op, T0 + 1000)),
        T0 + 1000,
    );
    let b = st.budget.unwrap();
    assert_eq!((b.spent, b.reserved), (usd("0.15"), Money::ZERO));
    let again: usize = (0..10)
        .filter(|_| {
            ask(&mut s, &p, request(100, "0.30"), T0 + 1000)
                .outcome
                .is_ok()
        })
        .count();
    assert_eq!(again, 2, "0.15 + 2 x 0.30 <= 1 < 0.15 + 3 x 0.30");
}

#[test]
fn an_unsettled_reservation_stops_counting_after_its_lifetime() {
    let p = key(r#","budget_usd":{"amount":1,"period":"month"}"#);
    let mut s = MemoryCounters::new();
    assert!(ask(&mut s, &p, request(1, "0.90"), T0).outcome.is_ok());
    assert!(ask(&mut s, &p, request(1, "0.90"), T0 + 60_000)
        .outcome
        .is_err());
    // The machine holding it died: no settlement ever comes.
    let later = T0 + (RESERVATION_MINUTES + 1) * 60_000;
    assert!(ask(&mut s, &p, request(1, "0.90"), later).outcome.is_ok());
}

#[test]
fn the_spend_of_a_day_resets_at_utc_midnight_and_a_month_on_the_first() {
    let p = key(r#","budget_usd":{"amount":"0.5","period":"day"}"#);
    let mut s = MemoryCounters::new();
    let r = ask(&mut s, &p, request(1, "0.5"), T0).outcome.unwrap();
    let c = settle(&r, 1, usd("0.5"), T0).unwrap();
    s.apply(&c.op, T0);
    assert!(ask(&mut s, &p, request(1, "0.01"), T0 + 1000)
        .outcome
        .is_err());
    let (_, start, end) = period_bounds(Period::Day, T0);
    assert_eq!((start % 86_400_000, end - start), (0, 86_400_000));
    let next_day = end + 16 * 60_000;
    assert!(ask(&mut s, &p, request(1, "0.01"), next_day)
        .outcome
        .is_ok());
    // 2024-02-10 -> February 2024 (leap year): Feb 1 to Mar 1.
    let (_, ms, me) = period_bounds(Period::Month, 1_707_566_400_000);
    assert_eq!((ms, me), (1_706_745_600_000, 1_709_251_200_000));
    let (_, ds, _) = period_bounds(Period::Month, 1_735_689_599_999); // 2024-12-31T23:59:59.999
    assert_eq!(ds, 1_733_011_200_000); // 2024-12-01
}

#[test]
fn a_cache_hit_counts_against_requests_only() {
    let p = key(r#","rpm":5,"tpm":100,"budget_usd":{"amount":1,"period":"day"}"#);
    let (call, _) = reserve(
        &p,
        0,
        &Demand {
            tokens: 0,
            cost: Money::ZERO,
            hit: true,
        },
        T0,
    )
    .unwrap();
    let adds: Vec<i64> = call.op.checks.iter().map(|c| c.add).collect();
    assert_eq!(
        adds,
        [1, 0],
        "a request, no tokens (read for the headers), no budget"
    );
}

#[test]
fn a_key_without_limits_makes_no_store_call() {
    let p = key("");
    assert!(reserve(&p, 0, &request(10, "1"), T0).is_none());
    assert!(peek(&p, 0, T0).is_none());
}

#[test]
fn a_key_above_the_shard_rate_is_spread_over_objects_holding_a_share_each() {
    let p = key(r#","rpm":90000"#);
    assert_eq!(p.shards, 3);
    assert_eq!(object_name(&p, 0), "team-a#0");
    assert_eq!(object_name(&p, 5), "team-a#2");
    let mut s = MemoryCounters::new();
    let v = ask(&mut s, &p, request(1, "0"), T0);
    let r = v.requests.unwrap();
    assert_eq!(r.limit, 90000);
    assert_eq!(r.remaining, (30000 - 1) * 3);
    let (call, _) = reserve(&p, 1, &request(1, "0"), T0).unwrap();
    assert_eq!(call.object, "team-a#1");
    assert!(call.op.checks[0].sum[0].starts_with("agw:rl:{team-a#1}:"));
}

#[test]
fn openai_durations_read_like_openais() {
    assert_eq!(openai_duration(20), "20ms");
    assert_eq!(openai_duration(1000), "1s");
    assert_eq!(openai_duration(8640), "8.64s");
    assert_eq!(openai_duration(360_000), "6m0s");
    assert_eq!(openai_duration(3_723_000), "1h2m3s");
}

#[test]
fn bad_key_settings_are_refused_naming_the_entry_and_field() {
    let limits = LimitSettings::default();
    let bad = [
        (
            r#"{"id":"a","key_sha256":"xyz"}"#,
            "keys[0] ('a').key_sha256",
        ),
        (r#"{"id":"a b","key_sha256":"DIG"}"#, "keys[0].id"),
        (r#"{"id":"a","key_sha256":"DIG","rpm":0}"#, ".rpm"),
        (r#"{"id":"a","key_sha256":"DIG","tpm":0}"#, ".tpm"),
        (
            r#"{"id":"a","key_sha256":"DIG","budget_usd":{"amount":-1,"period":"day"}}"#,
            "budget_usd.amount",
        ),
        (
            r#"{"id":"a","key_sha256":"DIG","budget_usd":{"amount":1e9,"period":"day"}}"#,
            "budget_usd.amount",
        ),
        (
            r#"{"id":"a","key_sha256":"DIG","budget_usd":{"amount":"0","period":"day"}}"#,
            "budget_usd.amount",
        ),
        (
            r#"{"id":"a","key_sha256":"DIG","models":["a*b"]}"#,
            ".models",
        ),
    ];
    for (json, expect) in bad {
        let json = json.replace("DIG", DIGEST);
        let k: KeyConfig = serde_json::from_str(&json).unwrap();
        let e = validate_keys(&[k], &limits).unwrap_err();
        assert!(e.message.contains(expect), "{json}: {}", e.message);
        assert!(!e.message.contains(DIGEST), "never the digest");
    }
    let k: KeyConfig =
        serde_json::from_str(&format!(r#"{{"id":"a","key_sha256":"{DIGEST}"}}"#)).unwrap();
    let mut k2 = k.clone();
    k2.id = "b".into();
    assert!(validate_keys(&[k.clone(), k2], &limits)
        .unwrap_err()
        .message
        .contains("listed twice"));
    let mut k3 = k.clone();
    k3.key_sha256 = DIGEST.replace('1', "2");
    assert!(validate_keys(&[k, k3], &limits)
        .unwrap_err()
        .message
        .contains("used by another key"));
    for bad in [r#"{"period":"week","amount":1}"#, r#"{"amount":1}"#] {
        assert!(serde_json::from_str::<BudgetConfig>(bad).is_err());
    }
}
