//! Reading the gateway's log lines: request records, other events, and lines that are neither.

use std::io::BufRead;

use gateway_core::pricing::Money;
use gateway_core::sse::Usage;
use serde::Deserialize;

/// The fields of a request line that the report uses; every other field is ignored.
#[derive(Deserialize)]
struct RawRecord {
    time: Option<String>,
    status: Option<u16>,
    key_id: Option<String>,
    model: Option<String>,
    requested_model: Option<String>,
    upstream: Option<String>,
    cache: Option<String>,
    prompt_tokens: Option<u64>,
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    reasoning_tokens: Option<u64>,
    cost_usd: Option<String>,
    cost_estimated: Option<bool>,
    unpriced: Option<bool>,
    saved_usd: Option<String>,
}

/// One request, as the report needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    /// `YYYY-MM-DD`: the first ten characters of `time`.
    pub day: String,
    pub status: Option<u16>,
    pub key_id: Option<String>,
    /// The model billed (resolved).
    pub model: Option<String>,
    pub requested_model: Option<String>,
    pub upstream: Option<String>,
    pub cache: Option<String>,
    pub usage: Usage,
    pub cost: Option<Money>,
    pub estimated: bool,
    pub unpriced: bool,
    pub saved: Option<Money>,
}

impl Record {
    pub fn tokens(&self) -> u64 {
        self.usage
            .prompt_tokens
            .saturating_add(self.usage.completion_tokens)
    }

    pub fn is_cache_hit(&self) -> bool {
        self.cache.as_deref() == Some("hit")
    }
}

/// What one line is.
#[derive(Debug, PartialEq)]
pub enum Line {
    Request(Box<Record>),
    /// Another JSON event of the gateway (it has an `event` field): skipped silently.
    Event,
    /// Empty or whitespace: ignored.
    Blank,
    NotJson,
    /// JSON, but not a request record: the reason.
    NotRequest(String),
}

fn is_day(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

fn money(field: &str, v: Option<String>) -> Result<Option<Money>, String> {
    match v {
        None => Ok(None),
        Some(s) => Money::parse_usd(&s)
            .map(Some)
            .ok_or_else(|| format!("{field} '{s}' is not a decimal amount of dollars")),
    }
}

/// Classifies one line. Lines written by a log shipper with a prefix before the JSON object
/// (`2026-11-27T10:00:00Z app[..] [info]{...}`) are read from their first `{`.
pub fn parse_line(bytes: &[u8]) -> Line {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return Line::NotJson;
    };
    let text = text.trim();
    if text.is_empty() {
        return Line::Blank;
    }
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => match text
            .find('{')
            .filter(|at| *at > 0)
            .and_then(|at| text.get(at..))
            .and_then(|json| serde_json::from_str(json).ok())
        {
            Some(v) => v,
            None => return Line::NotJson,
        },
    };
    match value.as_object() {
        None => return Line::NotRequest("not a JSON object".into()),
        // Other events may carry any fields: they are not read.
        Some(o) if o.contains_key("event") => return Line::Event,
        Some(_) => {}
    }
    let raw = match RawRecord::deserialize(value) {
        Ok(r) => r,
        Err(e) => return Line::NotRequest(format!("unexpected field value: {e}")),
    };
    let day = match raw.time.as_deref().map(|t| t.get(..10)) {
        Some(Some(d)) if is_day(d) => d.to_string(),
        Some(_) => return Line::NotRequest("time is not RFC 3339".into()),
        None => return Line::NotRequest("no time".into()),
    };
    let (cost, saved) = match (
        money("cost_usd", raw.cost_usd),
        money("saved_usd", raw.saved_usd),
    ) {
        (Ok(c), Ok(s)) => (c, s),
        (Err(e), _) | (_, Err(e)) => return Line::NotRequest(e),
    };
    let prompt = raw.prompt_tokens.unwrap_or(0);
    let completion = raw.completion_tokens.unwrap_or(0);
    // Parts never exceed their whole, as the gateway reads them.
    let cached = raw.cached_tokens.unwrap_or(0).min(prompt);
    let usage = Usage {
        prompt_tokens: prompt,
        completion_tokens: completion,
        total_tokens: prompt.saturating_add(completion),
        cached_tokens: cached,
        cache_write_tokens: raw.cache_write_tokens.unwrap_or(0).min(prompt - cached),
        reasoning_tokens: raw.reasoning_tokens.unwrap_or(0).min(completion),
    };
    Line::Request(Box::new(Record {
        day,
        status: raw.status,
        key_id: raw.key_id,
        model: raw.model,
        requested_model: raw.requested_model,
        upstream: raw.upstream,
        cache: raw.cache,
        usage,
        cost,
        estimated: raw.cost_estimated.unwrap_or(false),
        unpriced: raw.unpriced.unwrap_or(false),
        saved,
    }))
}

/// What was read, apart from the records themselves.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct InputStats {
    pub sources: Vec<String>,
    pub lines: u64,
    pub requests: u64,
    pub events: u64,
    pub not_json: u64,
    pub not_request: u64,
    /// The first few skipped lines, as `source:line: reason`.
    pub examples: Vec<String>,
}

const EXAMPLES: usize = 5;

impl InputStats {
    pub fn skipped(&self) -> u64 {
        self.not_json + self.not_request
    }

    fn skip(&mut self, source: &str, line: u64, reason: &str) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(format!("{source}:{line}: {reason}"));
        }
    }
}

/// Reads every line of `reader`, handing each request record to `each`.
pub fn read_lines(
    source: &str,
    mut reader: impl BufRead,
    stats: &mut InputStats,
    mut each: impl FnMut(&Record),
) -> std::io::Result<()> {
    stats.sources.push(source.to_string());
    let mut buf = Vec::new();
    let mut n = 0u64;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        n += 1;
        match parse_line(&buf) {
            Line::Blank => continue,
            Line::Request(r) => {
                stats.requests += 1;
                each(&r);
            }
            Line::Event => stats.events += 1,
            Line::NotJson => {
                stats.not_json += 1;
                stats.skip(source, n, "not JSON");
            }
            Line::NotRequest(why) => {
                stats.not_request += 1;
                stats.skip(source, n, &format!("not a request record ({why})"));
            }
        }
        stats.lines += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(line: &str) -> Record {
        match parse_line(line.as_bytes()) {
            Line::Request(r) => *r,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn a_request_line_gives_every_field() {
        let r = record(
            r#"{"time":"2026-11-27T10:00:00.123Z","request_id":"r1","status":200,
                "key_id":"key_1a2b3c4d5e6f","model":"gpt-4.1","requested_model":"auto",
                "upstream":"us","cache":"miss","prompt_tokens":1000,"cached_tokens":200,
                "completion_tokens":500,"reasoning_tokens":100,"cost_usd":"0.024",
                "cost_estimated":true,"unpriced":false}"#,
        );
        assert_eq!(r.day, "2026-11-27");
        assert_eq!(r.status, Some(200));
        assert_eq!(r.key_id.as_deref(), Some("key_1a2b3c4d5e6f"));
        assert_eq!(r.model.as_deref(), Some("gpt-4.1"));
        assert_eq!(r.requested_model.as_deref(), Some("auto"));
        assert_eq!(r.upstream.as_deref(), Some("us"));
        assert_eq!(
            (
                r.usage.prompt_tokens,
                r.usage.cached_tokens,
                r.usage.completion_tokens,
                r.usage.reasoning_tokens,
                r.usage.total_tokens
            ),
            (1000, 200, 500, 100, 1500)
        );
        assert_eq!(r.cost, Money::parse_usd("0.024"));
        assert!(r.estimated && !r.unpriced && !r.is_cache_hit());
        assert_eq!(r.tokens(), 1500);
    }

    #[test]
    fn only_time_is_needed_and_nulls_are_absent_fields() {
        let r = record(r#"{"time":"2026-11-28T00:00:00Z","model":null,"cost_usd":null}"#);
        assert_eq!(
            (r.day.as_str(), r.model.as_deref(), r.cost),
            ("2026-11-28", None, None)
        );
        assert_eq!(r.tokens(), 0);
    }

    #[test]
    fn parts_never_exceed_their_whole() {
        let r = record(
            r#"{"time":"2026-11-27T10:00:00Z","prompt_tokens":10,"cached_tokens":99,
                "cache_write_tokens":5,"completion_tokens":5,"reasoning_tokens":99}"#,
        );
        assert_eq!((r.usage.cached_tokens, r.usage.reasoning_tokens), (10, 5));
        assert_eq!(r.usage.cache_write_tokens, 0);
        let r = record(
            r#"{"time":"2026-11-27T10:00:00Z","prompt_tokens":10,"cached_tokens":4,
                "cache_write_tokens":9}"#,
        );
        assert_eq!(r.usage.cache_write_tokens, 6);
    }

    #[test]
    fn a_prefix_before_the_json_is_tolerated() {
        let r = record(r#"2026-11-27T10:00:00Z app[1] iad [info]{"time":"2026-11-27T10:00:00Z"}"#);
        assert_eq!(r.day, "2026-11-27");
    }

    #[test]
    fn events_blanks_garbage_and_other_json_are_told_apart() {
        let ev = r#"{"time":"2026-11-27T10:00:00Z","event":"upstream_down","upstream":"eu"}"#;
        assert_eq!(parse_line(ev.as_bytes()), Line::Event);
        assert_eq!(parse_line(b"  \n"), Line::Blank);
        assert_eq!(parse_line(b"this is not json"), Line::NotJson);
        assert_eq!(parse_line(b"{\"time\": "), Line::NotJson);
        assert_eq!(parse_line(b"\xff\xfe{}"), Line::NotJson);
        for (line, why) in [
            ("[1,2]", "object"),
            ("42", "object"),
            (r#"{"status":200}"#, "no time"),
            (r#"{"time":"yesterday"}"#, "RFC 3339"),
            (r#"{"time":"2026"}"#, "RFC 3339"),
            (r#"{"time":"2026-11-2é"}"#, "RFC 3339"),
            (
                r#"{"time":"2026-11-27T10:00:00Z","prompt_tokens":-1}"#,
                "unexpected",
            ),
            (
                r#"{"time":"2026-11-27T10:00:00Z","cost_usd":0.1}"#,
                "unexpected",
            ),
            (
                r#"{"time":"2026-11-27T10:00:00Z","cost_usd":"-0.1"}"#,
                "cost_usd",
            ),
            (
                r#"{"time":"2026-11-27T10:00:00Z","saved_usd":"1e-3"}"#,
                "saved_usd",
            ),
        ] {
            match parse_line(line.as_bytes()) {
                Line::NotRequest(m) => assert!(m.contains(why), "{line}: {m}"),
                other => panic!("{line}: {other:?}"),
            }
        }
    }

    #[test]
    fn reading_counts_every_kind_of_line() {
        let text = "{\"time\":\"2026-11-27T10:00:00Z\",\"cost_usd\":\"0.5\"}\n\
                    \n\
                    garbage\n\
                    {\"time\":\"2026-11-27T10:00:00Z\",\"event\":\"upstream_up\"}\n\
                    {\"no\":\"time\"}\n\
                    {\"time\":\"2026-11-28T10:00:00Z\",\"cost_usd\":\"0.25\"}";
        let mut stats = InputStats::default();
        let mut total = Money::ZERO;
        read_lines("t.log", text.as_bytes(), &mut stats, |r| {
            total += r.cost.unwrap_or(Money::ZERO)
        })
        .unwrap();
        assert_eq!(total.to_string(), "0.75");
        assert_eq!(
            (
                stats.lines,
                stats.requests,
                stats.events,
                stats.not_json,
                stats.not_request
            ),
            (5, 2, 1, 1, 1)
        );
        assert_eq!(stats.skipped(), 2);
        assert_eq!(stats.examples[0], "t.log:3: not JSON");
        assert!(stats.examples[1].starts_with("t.log:5: not a request record"));
    }
}
