//! An incremental observer of server-sent event streams.
//!
//! The runtimes hand every chunk to [`SseObserver::observe`] as it passes through to the client;
//! the observer never holds more than one incomplete line, so a stream is never collected. It
//! notices `data: [DONE]`, error events and the usage chunk, which is what logs, accounting and
//! the decision about a stream that ended early need.

mod hide_usage;

use serde::Deserialize;

pub use hide_usage::{is_usage_only, HideUsage};

/// Token counts reported by the upstream, in OpenAI's terms: `cached_tokens` and
/// `cache_write_tokens` are parts of `prompt_tokens`, `reasoning_tokens` a part of
/// `completion_tokens` (never added to them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub total_tokens: u64,
    /// `prompt_tokens_details.cached_tokens`: prompt tokens read from the provider's cache.
    pub cached_tokens: u64,
    /// Prompt tokens written to the provider's cache (`prompt_tokens_details.cache_write_tokens`
    /// or Anthropic's `cache_creation_input_tokens`), where a provider bills them apart.
    pub cache_write_tokens: u64,
    /// `completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: u64,
}

#[derive(Deserialize)]
struct RawUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    /// The embeddings / responses API names.
    #[serde(default)]
    input_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
    #[serde(default)]
    output_tokens: Option<u64>,
    #[serde(default)]
    total_tokens: Option<u64>,
    #[serde(default)]
    prompt_tokens_details: Option<PromptDetails>,
    #[serde(default)]
    completion_tokens_details: Option<CompletionDetails>,
    #[serde(default)]
    cache_creation_input_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct PromptDetails {
    #[serde(default)]
    cached_tokens: Option<u64>,
    #[serde(default)]
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct CompletionDetails {
    #[serde(default)]
    reasoning_tokens: Option<u64>,
}

impl<'de> Deserialize<'de> for Usage {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = RawUsage::deserialize(d)?;
        let prompt = raw.prompt_tokens.or(raw.input_tokens).unwrap_or(0);
        let completion = raw.completion_tokens.or(raw.output_tokens).unwrap_or(0);
        let pd = raw.prompt_tokens_details.unwrap_or_default();
        let cd = raw.completion_tokens_details.unwrap_or_default();
        // Parts never exceed their whole, whatever an upstream reports: a token is billed once.
        let cached = pd.cached_tokens.unwrap_or(0).min(prompt);
        let cache_write = pd
            .cache_write_tokens
            .or(raw.cache_creation_input_tokens)
            .unwrap_or(0)
            .min(prompt - cached);
        Ok(Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: raw
                .total_tokens
                .unwrap_or(prompt.saturating_add(completion)),
            cached_tokens: cached,
            cache_write_tokens: cache_write,
            reasoning_tokens: cd.reasoning_tokens.unwrap_or(0).min(completion),
        })
    }
}

#[derive(Deserialize)]
struct UsageCarrier {
    usage: Option<Usage>,
}

/// Reads usage from a complete JSON response body, if it has one.
pub fn usage_of_json(body: &[u8]) -> Option<Usage> {
    serde_json::from_slice::<UsageCarrier>(body).ok()?.usage
}

// An incomplete line longer than this is not kept: nothing the observer looks for is that long
// except a usage chunk, and losing usage on a pathological stream is better than unbounded memory.
const MAX_PENDING_LINE: usize = 64 * 1024;

#[derive(Debug, Default)]
pub struct SseObserver {
    pending: Vec<u8>,
    overflowed: bool,
    events: u64,
    saw_done: bool,
    saw_error: bool,
    saw_content: bool,
    usage: Option<Usage>,
    /// Bytes of generated text seen (content, text, reasoning, tool arguments), escapes
    /// included: what a cost estimate goes on when no usage comes.
    content_bytes: u64,
}

/// Whether an event's JSON carries something a client would show or count: text, a tool call,
/// a refusal, reasoning, or usage. A role-only first delta does not.
fn carries_content(data: &[u8]) -> bool {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) else {
        return false;
    };
    let nonempty = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => !s.is_empty(),
        Some(serde_json::Value::Array(a)) => !a.is_empty(),
        Some(serde_json::Value::Object(o)) => !o.is_empty(),
        _ => false,
    };
    if v.get("usage").is_some_and(|u| u.is_object()) {
        return true;
    }
    let Some(choices) = v.get("choices").and_then(|c| c.as_array()) else {
        return false;
    };
    choices.iter().any(|c| {
        let delta = c.get("delta");
        let d = |k: &str| delta.and_then(|d| d.get(k));
        nonempty(c.get("text"))
            || nonempty(d("content"))
            || nonempty(d("tool_calls"))
            || nonempty(d("function_call"))
            || nonempty(d("refusal"))
            || nonempty(d("reasoning_content"))
            || nonempty(d("reasoning"))
            || c.get("finish_reason").is_some_and(|f| !f.is_null())
    })
}

impl SseObserver {
    pub fn new() -> SseObserver {
        SseObserver::default()
    }

    pub fn observe(&mut self, mut chunk: &[u8]) {
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n') {
            let Some((head, rest)) = chunk.split_at_checked(pos) else {
                break;
            };
            chunk = rest.get(1..).unwrap_or_default();
            if self.overflowed {
                // The tail of a line too long to keep.
                self.overflowed = false;
            } else if self.pending.is_empty() {
                self.line(head);
            } else {
                let mut line = std::mem::take(&mut self.pending);
                line.extend_from_slice(head);
                self.line(&line);
                line.clear();
                self.pending = line;
            }
        }
        if !chunk.is_empty() && !self.overflowed {
            if self.pending.len() + chunk.len() > MAX_PENDING_LINE {
                self.pending.clear();
                self.overflowed = true;
            } else {
                self.pending.extend_from_slice(chunk);
            }
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        let Some(data) = line.strip_prefix(b"data:") else {
            if line.starts_with(b"event: error") || line.starts_with(b"event:error") {
                self.saw_error = true;
            }
            return;
        };
        let data = data.strip_prefix(b" ").unwrap_or(data);
        self.events += 1;
        if data == b"[DONE]" {
            self.saw_done = true;
            return;
        }
        if data.starts_with(b"{\"error\"") {
            self.saw_error = true;
            return;
        }
        // Only looked for until found: later events are not parsed for it.
        if !self.saw_content && carries_content(data) {
            self.saw_content = true;
        }
        self.content_bytes += text_bytes(data);
        // Only the usage chunk is parsed; ordinary deltas are not.
        if memfind(data, b"\"usage\":{").is_some() || memfind(data, b"\"usage\": {").is_some() {
            if let Some(u) = usage_of_json(data) {
                self.usage = Some(u);
            }
        }
    }

    pub fn events(&self) -> u64 {
        self.events
    }

    pub fn saw_done(&self) -> bool {
        self.saw_done
    }

    pub fn saw_error(&self) -> bool {
        self.saw_error
    }

    /// Whether an event with content (text, a tool call, usage, a finish) has been seen: until
    /// then a failing stream can still be replaced by another upstream's.
    pub fn saw_content(&self) -> bool {
        self.saw_content
    }

    pub fn usage(&self) -> Option<Usage> {
        self.usage
    }

    pub fn content_bytes(&self) -> u64 {
        self.content_bytes
    }

    /// A stream that ended without `[DONE]` and without an error event of its own was cut off;
    /// the client is told so with an error event rather than a silent end.
    pub fn needs_termination_error(&self) -> bool {
        !self.saw_done && !self.saw_error
    }

    /// Ends the observation of a stream, however it ended: records completion and usage in the
    /// request's log, and returns the error event to append when the stream was cut off.
    pub fn finish(&self, log: &mut crate::log::RequestLog) -> Option<Vec<u8>> {
        log.stream_complete = Some(self.saw_done);
        log.set_usage(self.usage);
        self.needs_termination_error()
            .then(|| crate::error::GatewayError::UpstreamStreamInterrupted.sse_event())
    }
}

/// The length of the generated strings in one event's JSON, found by their keys without
/// parsing the event (this runs on every event of every stream).
fn text_bytes(data: &[u8]) -> u64 {
    const KEYS: [&[u8]; 4] = [
        b"\"content\":\"",
        b"\"text\":\"",
        b"\"reasoning_content\":\"",
        b"\"arguments\":\"",
    ];
    let mut total = 0;
    for key in KEYS {
        let mut rest = data;
        while let Some(at) = memfind(rest, key) {
            rest = rest.get(at + key.len()..).unwrap_or_default();
            let mut escaped = false;
            let mut len = rest.len();
            for (i, &b) in rest.iter().enumerate() {
                match b {
                    _ if escaped => escaped = false,
                    b'\\' => escaped = true,
                    b'"' => {
                        len = i;
                        break;
                    }
                    _ => {}
                }
            }
            total += len as u64;
            rest = rest.get(len..).unwrap_or_default();
        }
    }
    total
}

/// Where `needle` first occurs in `hay`. Events are a few hundred bytes: there, building
/// `memmem`'s searcher on every call cost more than the search (it showed in the Worker's
/// per-chunk profile), so short haystacks are searched by their needle's first byte.
pub(crate) fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let Some((&first, rest)) = needle.split_first() else {
        return Some(0);
    };
    if hay.len() > SHORT_HAY {
        return memchr::memmem::find(hay, needle);
    }
    let mut from = 0;
    while let Some(off) = hay.get(from..).and_then(|h| memchr::memchr(first, h)) {
        let at = from + off;
        if hay
            .get(at + 1..)
            .is_some_and(|after| after.starts_with(rest))
        {
            return Some(at);
        }
        from = at + 1;
    }
    None
}

/// Haystacks up to this long are searched byte by byte (see [`memfind`]).
const SHORT_HAY: usize = 2048;

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hel\"}}]}\n\n\
data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"lo\"}}]}\n\n\
data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n\
data: [DONE]\n\n";

    #[test]
    fn memfind_finds_the_first_occurrence_in_short_and_long_haystacks() {
        for pad in [0, 10, SHORT_HAY] {
            let mut hay = vec![b'"'; pad];
            hay.extend_from_slice(b"\"usag\"usage\":{\"usage\"");
            let at = pad + 5;
            assert_eq!(memfind(&hay, b"\"usage\""), Some(at), "pad {pad}");
            assert_eq!(memfind(&hay, b"\"usage\":{"), Some(at), "pad {pad}");
            assert_eq!(memfind(&hay, b"\"choices\""), None, "pad {pad}");
            assert_eq!(memfind(&hay, b""), Some(0));
        }
        assert_eq!(memfind(b"ab", b"abc"), None);
        assert_eq!(memfind(b"", b"a"), None);
    }

    #[test]
    fn sees_done_and_usage_whole() {
        let mut o = SseObserver::new();
        o.observe(STREAM.as_bytes());
        assert!(o.saw_done());
        assert_eq!(o.events(), 4);
        assert_eq!(o.usage().unwrap().total_tokens, 5);
        assert!(!o.needs_termination_error());
    }

    #[test]
    fn same_result_whatever_the_chunk_boundaries() {
        for size in 1..20 {
            let mut o = SseObserver::new();
            for c in STREAM.as_bytes().chunks(size) {
                o.observe(c);
            }
            assert!(o.saw_done(), "chunk size {size}");
            assert_eq!(o.events(), 4);
            assert_eq!(o.usage().unwrap().prompt_tokens, 3);
        }
    }

    #[test]
    fn role_only_first_delta_is_not_content_but_text_tool_calls_and_usage_are() {
        let seen = |events: &[&str]| {
            let mut o = SseObserver::new();
            for e in events {
                o.observe(format!("data: {e}\n\n").as_bytes());
            }
            o.saw_content()
        };
        let role = r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert!(!seen(&[role]));
        assert!(!seen(&[role, r#"{"error":{"message":"x"}}"#]));
        assert!(seen(&[role, r#"{"choices":[{"delta":{"content":"Hi"}}]}"#]));
        assert!(seen(&[
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#
        ]));
        assert!(seen(&[r#"{"choices":[{"text":"a"}]}"#]));
        assert!(seen(&[
            r#"{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":0,"total_tokens":1}}"#
        ]));
        assert!(seen(&[
            r#"{"choices":[{"delta":{},"finish_reason":"stop"}]}"#
        ]));
    }

    #[test]
    fn generated_text_is_measured_for_estimates() {
        let mut o = SseObserver::new();
        o.observe(STREAM.as_bytes());
        assert_eq!(o.content_bytes(), 5, "Hel + lo");
        assert_eq!(
            text_bytes(br#"{"choices":[{"delta":{"content":"a\"b"}}]}"#),
            4
        );
        assert_eq!(
            text_bytes(
                br#"{"choices":[{"delta":{"tool_calls":[{"function":{"arguments":"{}"}}]}}]}"#
            ),
            2
        );
    }

    #[test]
    fn crlf_lines_are_understood() {
        let mut o = SseObserver::new();
        o.observe(b"data: [DONE]\r\n\r\n");
        assert!(o.saw_done());
    }

    #[test]
    fn cut_off_stream_needs_an_error_event_but_upstream_error_does_not() {
        let mut o = SseObserver::new();
        o.observe(b"data: {\"choices\":[]}\n\ndata: {\"cho");
        assert!(o.needs_termination_error());
        let mut o = SseObserver::new();
        o.observe(b"data: {\"error\":{\"message\":\"x\"}}\n\n");
        assert!(o.saw_error());
        assert!(!o.needs_termination_error());
    }

    #[test]
    fn finish_logs_completion_and_usage_and_appends_an_error_only_when_cut_off() {
        let mut log = crate::log::RequestLog::default();
        let mut o = SseObserver::new();
        o.observe(STREAM.as_bytes());
        assert_eq!(o.finish(&mut log), None);
        assert_eq!(log.stream_complete, Some(true));
        assert_eq!(log.completion_tokens, Some(2));

        let mut log = crate::log::RequestLog::default();
        let mut o = SseObserver::new();
        o.observe(b"data: {\"choices\":[]}\n\n");
        let tail = o.finish(&mut log).expect("an error event");
        assert!(String::from_utf8_lossy(&tail).contains("upstream_stream_interrupted"));
        assert_eq!(log.stream_complete, Some(false));
    }

    #[test]
    fn an_endless_line_does_not_grow_memory() {
        let mut o = SseObserver::new();
        let chunk = vec![b'a'; 4096];
        for _ in 0..100 {
            o.observe(&chunk);
        }
        assert!(o.pending.len() <= MAX_PENDING_LINE);
        o.observe(b"\ndata: [DONE]\n");
        assert!(o.saw_done());
    }

    #[test]
    fn usage_of_json_reads_a_completion_body() {
        let u = usage_of_json(
            br#"{"id":"x","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        );
        assert_eq!(u.unwrap().completion_tokens, 2);
        assert_eq!(usage_of_json(b"{}"), None);
        assert_eq!(usage_of_json(b"garbage"), None);
    }
}
