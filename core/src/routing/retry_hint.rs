//! How long an upstream asks us to stay away, read from its response.
//!
//! Providers say it in different places (a header in milliseconds, `Retry-After` in seconds or
//! as a date, OpenAI's rate-limit reset durations, a field of the error body), so every source
//! is tried in a fixed order and a value that does not parse is skipped rather than trusted:
//! one malformed header must not hide a good one further down.

use std::time::Duration;

use http::HeaderMap;
use serde_json::Value;

use crate::time::UnixMillis;

/// The longest stay-away a hint can ask for: anything longer is read as this, so that a
/// garbage value can neither overflow a deadline nor bench an upstream for weeks.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// The first valid hint among, in order: `retry-after-ms`, `retry-after` (seconds or an
/// HTTP-date relative to `now`), `x-ratelimit-reset-requests`, `x-ratelimit-reset-tokens`,
/// then `error.retry_after` (seconds) in a JSON `body`. Capped at [`MAX_HINT`].
pub fn retry_hint(headers: &HeaderMap, body: Option<&[u8]>, now: UnixMillis) -> Option<Duration> {
    first_header(headers, "retry-after-ms", |v| {
        parse_number(v).and_then(|ms| seconds(ms / 1000.0))
    })
    .or_else(|| first_header(headers, "retry-after", |v| parse_retry_after(v, now)))
    .or_else(|| first_header(headers, "x-ratelimit-reset-requests", parse_openai_duration))
    .or_else(|| first_header(headers, "x-ratelimit-reset-tokens", parse_openai_duration))
    .or_else(|| body.and_then(body_retry_after))
}

/// Parses a duration as OpenAI's rate-limit headers write it (Go's notation): one or more
/// `<number><unit>` parts with units `h`, `m`, `s`, `ms`, `us`/`µs`, `ns`, e.g. `6m0s`,
/// `1h2m3.5s`, `20ms`, `0.5s`; a bare `0` too. Capped at [`MAX_HINT`].
pub fn parse_openai_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    if s == "0" {
        return Some(Duration::ZERO);
    }
    if s.is_empty() {
        return None;
    }
    let mut rest = s;
    let mut total = 0.0_f64;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_len);
        if !number.bytes().any(|b| b.is_ascii_digit()) {
            return None;
        }
        let value: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let scale = match unit {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "µs" | "μs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += value * scale;
        rest = after;
    }
    seconds(total)
}

/// Whether an error body says the account is out of credit (`error.code` or `error.type` is
/// `insufficient_quota`): unlike a rate limit, waiting a few seconds will not help.
pub fn is_insufficient_quota(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(error) = json.get("error") else {
        return false;
    };
    ["code", "type"]
        .iter()
        .any(|field| error.get(field).and_then(Value::as_str) == Some("insufficient_quota"))
}

/// The first value of header `name` that `parse` accepts: a repeated header with one bad copy
/// still counts.
fn first_header(
    headers: &HeaderMap,
    name: &str,
    parse: impl Fn(&str) -> Option<Duration>,
) -> Option<Duration> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(parse)
}

fn parse_retry_after(value: &str, now: UnixMillis) -> Option<Duration> {
    if let Some(secs) = parse_number(value) {
        return seconds(secs);
    }
    let date = httpdate::parse_http_date(value.trim()).ok()?;
    let date_ms = date.duration_since(std::time::UNIX_EPOCH).ok()?.as_millis();
    let date_ms = u64::try_from(date_ms).unwrap_or(u64::MAX);
    // A date already past means "now", not "invalid": the upstream did ask for a pause.
    Some(Duration::from_millis(date_ms.saturating_sub(now.as_millis())).min(MAX_HINT))
}

fn body_retry_after(body: &[u8]) -> Option<Duration> {
    let json: Value = serde_json::from_slice(body).ok()?;
    let value = json.get("error")?.get("retry_after")?;
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => parse_number(s)?,
        _ => return None,
    };
    seconds(secs)
}

/// A plain decimal number. Rust's float parser also takes `inf`, `NaN` and exponents; those
/// are not what any upstream means, so only digits and one optional point get through.
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let plain = s.bytes().any(|b| b.is_ascii_digit())
        && s.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && s.bytes().filter(|&b| b == b'.').count() <= 1;
    if !plain {
        return None;
    }
    s.parse().ok()
}

/// Seconds to a hint: negative or non-finite is invalid, absurdly large is capped.
fn seconds(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs.min(MAX_HINT.as_secs_f64()))
        .ok()
        .map(|d| d.min(MAX_HINT))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    // 2015-10-21T07:28:00Z, the date in RFC 9110's Retry-After example.
    const NOW: UnixMillis = UnixMillis(1_445_412_480_000);

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(
                http::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        map
    }

    fn hint(pairs: &[(&str, &str)]) -> Option<Duration> {
        retry_hint(&headers(pairs), None, NOW)
    }

    #[test]
    fn retry_after_ms_is_milliseconds_and_may_be_fractional() {
        assert_eq!(
            hint(&[("retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "20.5")]),
            Some(Duration::from_micros(20_500))
        );
    }

    #[test]
    fn retry_after_ms_wins_over_every_other_source() {
        let h = headers(&[
            ("retry-after", "30"),
            ("x-ratelimit-reset-requests", "1m"),
            ("retry-after-ms", "250"),
        ]);
        let body = br#"{"error":{"retry_after":9}}"#;
        assert_eq!(
            retry_hint(&h, Some(body), NOW),
            Some(Duration::from_millis(250))
        );
    }

    #[test]
    fn retry_after_takes_seconds_whole_or_fractional() {
        assert_eq!(
            hint(&[("retry-after", "120")]),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            hint(&[("retry-after", " 1.25 ")]),
            Some(Duration::from_millis(1250))
        );
        assert_eq!(hint(&[("retry-after", "0")]), Some(Duration::ZERO));
    }

    #[test]
    fn retry_after_takes_an_http_date_relative_to_now() {
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:28:30 GMT")]),
            Some(Duration::from_secs(30))
        );
        // The obsolete forms HTTP still requires recipients to accept.
        assert_eq!(
            hint(&[("retry-after", "Wednesday, 21-Oct-15 07:29:00 GMT")]),
            Some(Duration::from_secs(60))
        );
        assert_eq!(
            hint(&[("retry-after", "Wed Oct 21 07:28:05 2015")]),
            Some(Duration::from_secs(5))
        );
    }

    #[test]
    fn a_retry_after_date_in_the_past_means_zero() {
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:00:00 GMT")]),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_far_future_date_is_capped_at_a_day() {
        assert_eq!(
            hint(&[("retry-after", "Fri, 31 Dec 9999 23:59:59 GMT")]),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn invalid_values_fall_through_to_the_next_source() {
        assert_eq!(
            hint(&[
                ("retry-after-ms", "soon"),
                ("retry-after", "next tuesday"),
                ("x-ratelimit-reset-requests", "6m0s"),
            ]),
            Some(Duration::from_secs(360))
        );
        assert_eq!(
            hint(&[
                ("retry-after", "-5"),
                ("x-ratelimit-reset-requests", "bogus"),
                ("x-ratelimit-reset-tokens", "1.5s"),
            ]),
            Some(Duration::from_millis(1500))
        );
    }

    #[test]
    fn negative_nan_and_infinite_values_are_ignored() {
        for bad in [
            "-1", "NaN", "nan", "inf", "-inf", "infinity", "1e3", "", "1.2.3", ".",
        ] {
            assert_eq!(hint(&[("retry-after", bad)]), None, "retry-after {bad:?}");
            assert_eq!(
                hint(&[("retry-after-ms", bad)]),
                None,
                "retry-after-ms {bad:?}"
            );
        }
    }

    #[test]
    fn absurd_values_are_capped_at_a_day_without_overflow() {
        assert_eq!(
            hint(&[("retry-after", "99999999999999999999999999999999999")]),
            Some(MAX_HINT)
        );
        assert_eq!(
            hint(&[("retry-after-ms", "18446744073709551616000")]),
            Some(MAX_HINT)
        );
        assert_eq!(
            hint(&[("x-ratelimit-reset-tokens", "9999999999999999999h")]),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn a_repeated_header_with_one_bad_copy_still_counts() {
        assert_eq!(
            hint(&[("retry-after", "later"), ("retry-after", "7")]),
            Some(Duration::from_secs(7))
        );
    }

    #[test]
    fn reset_requests_comes_before_reset_tokens() {
        assert_eq!(
            hint(&[
                ("x-ratelimit-reset-tokens", "30s"),
                ("x-ratelimit-reset-requests", "20ms"),
            ]),
            Some(Duration::from_millis(20))
        );
    }

    #[test]
    fn body_retry_after_is_the_last_resort_in_seconds() {
        let none = HeaderMap::new();
        let at = |body: &[u8]| retry_hint(&none, Some(body), NOW);
        assert_eq!(
            at(br#"{"error":{"message":"slow down","retry_after":3}}"#),
            Some(Duration::from_secs(3))
        );
        assert_eq!(
            at(br#"{"error":{"retry_after":0.5}}"#),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            at(br#"{"error":{"retry_after":"12"}}"#),
            Some(Duration::from_secs(12))
        );
        assert_eq!(at(br#"{"error":{"retry_after":-3}}"#), None);
        assert_eq!(at(br#"{"error":{"retry_after":"soon"}}"#), None);
        assert_eq!(at(br#"{"error":{"retry_after":null}}"#), None);
        assert_eq!(at(br#"{"retry_after":3}"#), None);
        assert_eq!(at(br#"{"error":"rate limited"}"#), None);
        assert_eq!(at(b"<html>502</html>"), None);
        assert_eq!(at(b""), None);
        assert_eq!(
            retry_hint(
                &headers(&[("retry-after", "4")]),
                Some(br#"{"error":{"retry_after":9}}"#),
                NOW
            ),
            Some(Duration::from_secs(4))
        );
    }

    #[test]
    fn no_source_means_no_hint() {
        assert_eq!(retry_hint(&HeaderMap::new(), None, NOW), None);
        assert_eq!(hint(&[("content-type", "application/json")]), None);
    }

    #[test]
    fn openai_durations_in_all_their_forms() {
        let ms = Duration::from_millis;
        assert_eq!(parse_openai_duration("1s"), Some(ms(1000)));
        assert_eq!(parse_openai_duration("6m0s"), Some(ms(360_000)));
        assert_eq!(parse_openai_duration("20ms"), Some(ms(20)));
        assert_eq!(parse_openai_duration("1h2m3.5s"), Some(ms(3_723_500)));
        assert_eq!(parse_openai_duration("0.5s"), Some(ms(500)));
        assert_eq!(parse_openai_duration("2m"), Some(ms(120_000)));
        assert_eq!(parse_openai_duration("1m30.25s"), Some(ms(90_250)));
        assert_eq!(
            parse_openai_duration("150us"),
            Some(Duration::from_micros(150))
        );
        assert_eq!(
            parse_openai_duration("150µs"),
            Some(Duration::from_micros(150))
        );
        assert_eq!(
            parse_openai_duration("800ns"),
            Some(Duration::from_nanos(800))
        );
        assert_eq!(parse_openai_duration(".5s"), Some(ms(500)));
        assert_eq!(parse_openai_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_openai_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_openai_duration(" 3s "), Some(ms(3000)));
    }

    #[test]
    fn malformed_openai_durations_are_rejected() {
        for bad in [
            "", "s", "5", "1.5", "-1s", "+1s", "1x", "1 s", "1s ms", "1.2.3s", "ms20", "1sec",
            "NaNs", "infs", "1e3s", "..s",
        ] {
            assert_eq!(parse_openai_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn insufficient_quota_is_recognised_by_code_or_type() {
        assert!(is_insufficient_quota(
            br#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#
        ));
        assert!(is_insufficient_quota(
            br#"{"error":{"type":"requests","code":"insufficient_quota"}}"#
        ));
        assert!(is_insufficient_quota(
            br#"{"error":{"type":"insufficient_quota","code":null}}"#
        ));
    }

    #[test]
    fn a_plain_rate_limit_is_not_insufficient_quota() {
        assert!(!is_insufficient_quota(
            br#"{"error":{"type":"requests","code":"rate_limit_exceeded"}}"#
        ));
        assert!(!is_insufficient_quota(
            br#"{"error":{"message":"insufficient_quota"}}"#
        ));
        assert!(!is_insufficient_quota(br#"{"code":"insufficient_quota"}"#));
        assert!(!is_insufficient_quota(br#"{"error":"insufficient_quota"}"#));
        assert!(!is_insufficient_quota(b"insufficient_quota"));
        assert!(!is_insufficient_quota(b""));
    }
}
