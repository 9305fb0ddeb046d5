use std::collections::BTreeSet;

use serde_json::Value;

use super::*;
use crate::geo::ClientLocation;
use crate::log::AttemptLog;
use crate::pricing::Money;

fn attempt(upstream: &str, outcome: &str) -> AttemptLog {
    AttemptLog {
        upstream: upstream.into(),
        model: Some("m".into()),
        outcome: outcome.into(),
        ms: 1.5,
    }
}

/// Every field set. Written without `..Default::default()` on purpose: a field added to
/// [`RequestLog`] or [`ClientLocation`] stops this compiling until it is set here, and then
/// [`every_log_field_is_in_the_schema_or_omitted_on_purpose`] asks where it goes.
fn full() -> RequestLog {
    RequestLog {
        time: "2026-11-22T10:00:00.000Z".into(),
        request_id: "req-1".into(),
        runtime: "worker",
        region: Some("eu-central".into()),
        client_location: ClientLocation {
            colo: Some("AMS".into()),
            country: Some("NL".into()),
            continent: Some("EU".into()),
            latitude: Some(52.3),
            longitude: Some(4.9),
        },
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        key_id: Some("key_0123abcd".into()),
        requested_model: Some("auto".into()),
        model: Some("gpt-4.1".into()),
        selection: Some("rule:code".into()),
        over_budget: true,
        stream: true,
        status: 200,
        error_code: Some("upstream_error".into()),
        error_detail: Some("detail".into()),
        upstream_error: Some("refused"),
        upstream_ms: Some(120.25),
        upstream: Some("frankfurt".into()),
        attempts: vec![
            attempt("seoul", "refused"),
            attempt("seoul", "http_503"),
            attempt("frankfurt", "ok"),
        ],
        total_ms: 130.5,
        bytes_in: 321,
        bytes_out: 4567,
        prompt_tokens: Some(100),
        cached_tokens: Some(40),
        cache_write_tokens: Some(10),
        completion_tokens: Some(50),
        reasoning_tokens: Some(20),
        cost_usd: Money::parse_usd("0.000184"),
        cost_estimated: Some(false),
        unpriced: true,
        saved_usd: Money::parse_usd("0.5"),
        ttft_ms: Some(80.0),
        overhead_ms: Some(10.25),
        stream_complete: Some(true),
        limited: Some("budget"),
        limiter_error: true,
        cache: Some("miss"),
    }
}

/// The log line's field names, a nested object's as `outer.inner`.
fn log_fields(log: &RequestLog) -> BTreeSet<String> {
    let v: Value = serde_json::from_str(&log.to_line()).unwrap();
    let mut names = BTreeSet::new();
    for (k, v) in v.as_object().unwrap() {
        match v.as_object() {
            Some(inner) => names.extend(inner.keys().map(|i| format!("{k}.{i}"))),
            None => {
                names.insert(k.clone());
            }
        }
    }
    names
}

fn column_of(name: &str) -> Column {
    SCHEMA.iter().find(|f| f.name == name).unwrap().column
}

fn blob<'a>(p: &'a DataPoint, name: &str) -> &'a str {
    match column_of(name) {
        Column::Blob(n, _) => &p.blobs[usize::from(n) - 1],
        _ => panic!("{name} is not a blob"),
    }
}

fn double(p: &DataPoint, name: &str) -> f64 {
    match column_of(name) {
        Column::Double(n, _) => p.doubles[usize::from(n) - 1],
        _ => panic!("{name} is not a double"),
    }
}

#[test]
fn every_log_field_is_in_the_schema_or_omitted_on_purpose() {
    let fields = log_fields(&full());
    let mapped: BTreeSet<&str> = SCHEMA.iter().map(|f| f.name).collect();
    let omitted: BTreeSet<&str> = OMITTED.iter().map(|(n, _)| *n).collect();
    for f in &fields {
        assert!(
            mapped.contains(f.as_str()) || omitted.contains(f.as_str()),
            "the log field `{f}` has no column in analytics::SCHEMA and is not in OMITTED"
        );
        assert!(
            !(mapped.contains(f.as_str()) && omitted.contains(f.as_str())),
            "`{f}` is both mapped and omitted"
        );
    }
    // And nothing stale: every name is a log field, or derived from an omitted one.
    for name in mapped.iter().chain(&omitted) {
        let derived = ["attempt_count", "failover_count"].contains(name);
        assert!(
            fields.contains(*name) || derived,
            "`{name}` is not a log field"
        );
    }
}

#[test]
fn positions_are_unique_contiguous_and_within_the_limits() {
    let mut blobs = Vec::new();
    let mut doubles = Vec::new();
    let mut indexes = 0;
    for f in SCHEMA {
        match f.column {
            Column::Index(_) => indexes += 1,
            Column::Blob(n, _) => blobs.push(n),
            Column::Double(n, _) => doubles.push(n),
        }
    }
    assert_eq!(indexes, 1);
    for (kind, mut ns) in [("blob", blobs), ("double", doubles)] {
        ns.sort_unstable();
        let expected: Vec<u8> = (1..=ns.len() as u8).collect();
        assert_eq!(ns, expected, "{kind} positions");
        assert!(ns.len() <= 20, "at most 20 {kind}s");
    }
    let names: BTreeSet<&str> = SCHEMA.iter().map(|f| f.name).collect();
    assert_eq!(names.len(), SCHEMA.len(), "a field in two columns");
}

#[test]
fn a_full_record_maps_to_its_columns() {
    let p = data_point(&full());
    assert_eq!(p.indexes, ["key_0123abcd"]);
    assert_eq!(p.blobs.len(), WIDTHS.0);
    assert_eq!(p.doubles.len(), WIDTHS.1);
    for (name, v) in [
        ("request_id", "req-1"),
        ("path", "/v1/chat/completions"),
        ("method", "POST"),
        ("requested_model", "auto"),
        ("model", "gpt-4.1"),
        ("selection", "rule:code"),
        ("upstream", "frankfurt"),
        ("region", "eu-central"),
        ("cache", "miss"),
        ("error_code", "upstream_error"),
        ("upstream_error", "refused"),
        ("client_location.country", "NL"),
        ("client_location.colo", "AMS"),
        ("stream", "true"),
        ("stream_complete", "true"),
        ("over_budget", "true"),
        ("unpriced", "true"),
        ("cost_estimated", "false"),
        ("limiter_error", "true"),
        ("limited", "budget"),
    ] {
        assert_eq!(blob(&p, name), v, "{name}");
    }
    for (name, v) in [
        ("status", 200.0),
        ("total_ms", 130.5),
        ("upstream_ms", 120.25),
        ("ttft_ms", 80.0),
        ("overhead_ms", 10.25),
        ("bytes_in", 321.0),
        ("bytes_out", 4567.0),
        ("prompt_tokens", 100.0),
        ("cached_tokens", 40.0),
        ("cache_write_tokens", 10.0),
        ("completion_tokens", 50.0),
        ("reasoning_tokens", 20.0),
        ("cost_usd", 0.000184),
        ("saved_usd", 0.5),
        ("attempt_count", 3.0),
        // seoul -> seoul is a retry, seoul -> frankfurt a failover.
        ("failover_count", 1.0),
    ] {
        assert_eq!(double(&p, name), v, "{name}");
    }
}

#[test]
fn missing_values_are_empty_or_zero_and_unset_flags_empty() {
    let p = data_point(&RequestLog::default());
    assert_eq!(p.indexes, [""]);
    for f in SCHEMA {
        match f.column {
            Column::Blob(..) if f.name == "stream" => assert_eq!(blob(&p, f.name), "false"),
            Column::Blob(..) => assert_eq!(blob(&p, f.name), "", "{}", f.name),
            Column::Double(..) => assert_eq!(double(&p, f.name), 0.0, "{}", f.name),
            Column::Index(_) => {}
        }
    }
    let l = RequestLog {
        stream_complete: Some(false),
        cost_estimated: Some(true),
        ..Default::default()
    };
    let p = data_point(&l);
    assert_eq!(blob(&p, "stream_complete"), "false");
    assert_eq!(blob(&p, "cost_estimated"), "true");
}

#[test]
fn long_text_is_cut_on_a_char_boundary_within_the_limits() {
    let mut l = full();
    // 3-byte characters: 96 and 256 are not multiples of 3.
    l.key_id = Some("€".repeat(100));
    for f in [&mut l.request_id, &mut l.path, &mut l.method] {
        *f = "€".repeat(1000);
    }
    for f in [
        &mut l.requested_model,
        &mut l.model,
        &mut l.selection,
        &mut l.upstream,
        &mut l.region,
        &mut l.error_code,
        &mut l.client_location.country,
        &mut l.client_location.colo,
    ] {
        *f = Some("é".repeat(1000));
    }
    let p = data_point(&l);
    assert_eq!(p.indexes[0], "€".repeat(32));
    assert!(p.blobs.len() <= 20 && p.doubles.len() <= 20);
    assert_eq!(blob(&p, "path"), "€".repeat(85));
    assert_eq!(blob(&p, "model"), "é".repeat(128));
    let total: usize = p.blobs.iter().map(String::len).sum();
    assert!(total <= 5120, "{total} bytes of blobs");
}

#[test]
fn non_finite_doubles_are_zero() {
    let l = RequestLog {
        total_ms: f64::NAN,
        upstream_ms: Some(f64::INFINITY),
        ..Default::default()
    };
    let p = data_point(&l);
    assert_eq!(double(&p, "total_ms"), 0.0);
    assert_eq!(double(&p, "upstream_ms"), 0.0);
}

#[test]
fn a_cost_is_the_f64_nearest_its_decimal() {
    // The conformance suite compares the two with `==`: picodollars / 10^12 rounds once, as
    // parsing the log line's decimal does.
    for usd in ["0.000184", "0.00005", "12.345678901234", "0.000000000001"] {
        let l = RequestLog {
            cost_usd: Money::parse_usd(usd),
            ..Default::default()
        };
        assert_eq!(
            double(&data_point(&l), "cost_usd"),
            usd.parse::<f64>().unwrap()
        );
    }
}

/// The README's table of the schema (`cargo test -p gateway-core readme_table -- --nocapture`
/// prints it).
#[test]
// Printing is the point: the README's table is copied from it.
#[allow(clippy::print_stdout)]
fn readme_table() {
    let mut rows: Vec<(u8, u8, String, &str)> = SCHEMA
        .iter()
        .map(|f| {
            let order = match f.column {
                Column::Index(_) => (0, 1),
                Column::Blob(n, _) => (1, n),
                Column::Double(n, _) => (2, n),
            };
            (order.0, order.1, f.column.name(), f.name)
        })
        .collect();
    rows.sort();
    let mut table = String::from("| Column | Log field |\n|---|---|\n");
    for (_, _, column, name) in &rows {
        table.push_str(&format!("| `{column}` | `{name}` |\n"));
    }
    table.push_str("\n| Not in a column | Why |\n|---|---|\n");
    for (name, why) in OMITTED {
        table.push_str(&format!("| `{name}` | {why} |\n"));
    }
    println!("{table}");
    assert_eq!(table.matches("| `blob").count(), WIDTHS.0);
}
