use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::*;
use crate::cache::EntryForm;

fn t(ms: u64) -> Instant {
    Instant::from_micros(ms * 1000)
}

fn key(n: u8) -> CacheKey {
    CacheKey([n; 32])
}

fn entry(n: u8) -> Arc<CacheEntry> {
    Arc::new(CacheEntry {
        key: key(n),
        status: 200,
        form: EntryForm::Json,
        content_type: "application/json".into(),
        stored_at_ms: 0,
        expires_at_ms: 60_000,
        usage: None,
        body: Bytes::from_static(b"{}"),
    })
}

const WAIT: Duration = Duration::from_secs(5);

#[test]
fn the_first_miss_leads_and_identical_ones_wait_until_it_lands() {
    let mut r = Router::new();
    let Join::Lead(lead) = r.join(key(1), t(0), WAIT) else {
        panic!("the first miss leads")
    };
    let Join::Wait { id, until } = r.join(key(1), t(10), WAIT) else {
        panic!("the second waits")
    };
    assert_eq!(
        until,
        t(5_000),
        "a waiter waits no longer than the leader may take"
    );
    assert!(
        matches!(r.join(key(2), t(10), WAIT), Join::Lead(_)),
        "other keys lead their own"
    );
    assert!(matches!(
        r.flight(&key(1), id, t(20)),
        FlightState::Pending { .. }
    ));
    assert!(!r.take_wakeup());

    r.land(key(1), lead, Some(entry(1)), t(30));
    assert!(r.take_wakeup(), "landing wakes the waiters");
    assert!(!r.take_wakeup(), "once");
    match r.flight(&key(1), id, t(40)) {
        FlightState::Landed(Some(e)) => assert_eq!(e.key, key(1)),
        other => panic!("the waiter sees the answer, got {other:?}"),
    }
    // A request arriving after the landing looks in the store instead: it leads a new flight.
    assert!(matches!(r.join(key(1), t(50), WAIT), Join::Lead(_)));
}

#[test]
fn a_flight_landing_empty_handed_releases_its_waiters() {
    let mut r = Router::new();
    let Join::Lead(lead) = r.join(key(1), t(0), WAIT) else {
        panic!()
    };
    let Join::Wait { id, .. } = r.join(key(1), t(1), WAIT) else {
        panic!()
    };
    r.land(key(1), lead, None, t(2));
    assert!(r.take_wakeup());
    assert!(matches!(
        r.flight(&key(1), id, t(3)),
        FlightState::Landed(None)
    ));
}

#[test]
fn a_leader_that_never_lands_is_replaced_after_its_time() {
    let mut r = Router::new();
    let Join::Lead(old) = r.join(key(1), t(0), WAIT) else {
        panic!()
    };
    let Join::Lead(new) = r.join(key(1), t(5_001), WAIT) else {
        panic!("a stale flight does not make anyone wait")
    };
    // The old leader's late landing must not end the new flight.
    r.land(key(1), old, None, t(5_002));
    assert!(!r.take_wakeup());
    let Join::Wait { id, .. } = r.join(key(1), t(5_003), WAIT) else {
        panic!("the new flight is still pending")
    };
    r.land(key(1), new, None, t(5_004));
    assert!(matches!(
        r.flight(&key(1), id, t(5_005)),
        FlightState::Landed(None)
    ));
}

#[test]
fn landed_flights_are_forgotten_after_their_linger() {
    let mut r = Router::new();
    for n in 0..10 {
        let Join::Lead(id) = r.join(key(n), t(0), WAIT) else {
            panic!()
        };
        r.land(key(n), id, None, t(1));
    }
    assert_eq!(r.flights_len(), 10);
    let _ = r.join(
        key(99),
        t(1).plus(FLIGHT_LINGER).plus(Duration::from_secs(1)),
        WAIT,
    );
    assert_eq!(r.flights_len(), 1, "only the new flight is left");
}

#[test]
fn a_failing_store_rests_for_the_backoff_and_is_reported_once() {
    let mut r = Router::new();
    assert!(r.store_usable(t(0)));
    assert_eq!(r.store_result(true, t(0)), None);
    assert_eq!(r.store_result(false, t(10)), Some(StoreChange::Down));
    assert!(!r.store_usable(t(11)));
    assert_eq!(r.store_result(false, t(12)), None, "down is reported once");
    let rested = t(12).plus(STORE_BACKOFF);
    assert!(!r.store_usable(t(11).plus(STORE_BACKOFF)));
    assert!(r.store_usable(rested), "tried again after the back-off");
    assert_eq!(r.store_result(true, rested), Some(StoreChange::Up));
    assert_eq!(r.store_result(true, rested), None);
}

#[test]
fn a_probe_change_is_one_compact_json_line() {
    let change = ProbeChange {
        upstream: "eu".into(),
        down: true,
        detail: "status 503 \"busy\"".into(),
    };
    assert_eq!(
        change.to_line(UnixMillis(1_764_237_600_000)),
        r#"{"detail":"status 503 \"busy\"","event":"upstream_down","time":"2025-11-27T10:00:00.000Z","upstream":"eu"}"#
    );
}

#[test]
fn a_probe_snapshot_round_trips_through_its_json() {
    let snapshot = ProbeSnapshot {
        upstreams: vec![ProbeEntry {
            name: "eu".into(),
            down: true,
            failures: 3,
            successes: 0,
            ok: Some(false),
            detail: Some("status 503".into()),
            at_ms: Some(1_764_237_600_000),
        }],
    };
    let json = snapshot.to_json().unwrap();
    assert_eq!(ProbeSnapshot::from_json(&json), Some(snapshot));
    assert_eq!(ProbeSnapshot::from_json(b"not json"), None);
    // Counts written before they existed read as zero.
    let old = br#"{"upstreams":[{"name":"eu","down":false,"ok":true,"detail":null,"at_ms":1}]}"#;
    assert_eq!(
        ProbeSnapshot::from_json(old).unwrap().upstreams[0].failures,
        0
    );
}
