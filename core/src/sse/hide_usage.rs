//! Removes the usage event the gateway asked for on the client's behalf.
//!
//! To price a stream the gateway asks the upstream for usage (`stream_options.include_usage`);
//! a client that did not ask must get the stream it would have got without the gateway, so the
//! final `{"choices":[],"usage":{...}}` event is cut out. Events are passed on whole: an event
//! split across chunks goes out when its blank line arrives, which is when an SSE client could
//! first use it anyway. A chunk of whole events without the usage event goes out as the same
//! bytes (no copy).

use bytes::{Bytes, BytesMut};

/// Cuts usage-only events out of an event stream.
#[derive(Debug, Default)]
pub struct HideUsage {
    /// The start of an event whose blank line has not come yet.
    partial: BytesMut,
}

/// Where the blank line ending the event that starts at `from` ends, if it is in `b`.
fn event_end(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    while let Some(off) = b.get(i..)?.iter().position(|&c| c == b'\n') {
        let nl = i + off;
        // "\n\n" or "\n\r\n"
        match (b.get(nl + 1), b.get(nl + 2)) {
            (Some(b'\n'), _) => return Some(nl + 2),
            (Some(b'\r'), Some(b'\n')) => return Some(nl + 3),
            _ => i = nl + 1,
        }
    }
    None
}

/// An event whose data is a chunk with no choices and a usage object: the one the gateway asked
/// for. Only events mentioning usage are parsed.
pub fn is_usage_only(event: &[u8]) -> bool {
    if super::memfind(event, b"\"usage\"").is_none() {
        return false;
    }
    let mut data = Vec::new();
    for line in event.split(|&c| c == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if let Some(d) = line.strip_prefix(b"data:") {
            if !data.is_empty() {
                data.push(b'\n');
            }
            data.extend_from_slice(d.strip_prefix(b" ").unwrap_or(d));
        }
    }
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(&data) else {
        return false;
    };
    let no_choices = v
        .get("choices")
        .is_some_and(|c| c.as_array().is_some_and(Vec::is_empty));
    no_choices && v.get("usage").is_some_and(serde_json::Value::is_object)
}

impl HideUsage {
    pub fn new() -> HideUsage {
        HideUsage::default()
    }

    /// What to send of `chunk` (possibly nothing yet, possibly with the end of an earlier one).
    pub fn filter(&mut self, chunk: Bytes) -> Bytes {
        let data = if self.partial.is_empty() {
            chunk
        } else {
            self.partial.extend_from_slice(&chunk);
            std::mem::take(&mut self.partial).freeze()
        };
        let mut kept: Option<BytesMut> = None;
        let mut start = 0;
        let mut whole_end = 0;
        while let Some(end) = event_end(&data, start) {
            let event = data.get(start..end).unwrap_or_default();
            if is_usage_only(event) {
                let out = kept.get_or_insert_with(|| BytesMut::with_capacity(data.len()));
                out.extend_from_slice(data.get(whole_end..start).unwrap_or_default());
                whole_end = end;
            }
            start = end;
        }
        // Bytes after the last blank line: an event still coming.
        if let Some(rest) = data.get(start..).filter(|r| !r.is_empty()) {
            self.partial.extend_from_slice(rest);
        }
        match kept {
            None => data.slice(..start),
            Some(mut out) => {
                out.extend_from_slice(data.get(whole_end..start).unwrap_or_default());
                out.freeze()
            }
        }
    }

    /// The stream ended: what was held of an unfinished event goes out as it was.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.partial).freeze()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "data: {\"id\":\"1\",\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n";
    const FINISH: &str =
        "data: {\"id\":\"1\",\"choices\":[{\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":null}\n\n";
    const USAGE: &str = "data: {\"id\":\"1\",\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":2,\"total_tokens\":5}}\n\n";
    const DONE: &str = "data: [DONE]\n\n";

    fn run(stream: &str, size: usize) -> String {
        let mut f = HideUsage::new();
        let mut out = Vec::new();
        for c in stream.as_bytes().chunks(size) {
            out.extend_from_slice(&f.filter(Bytes::copy_from_slice(c)));
        }
        out.extend_from_slice(&f.finish());
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_usage_event_is_cut_and_everything_else_kept_byte_for_byte_whatever_the_chunking() {
        let stream = format!("{CONTENT}{CONTENT}{FINISH}{USAGE}{DONE}");
        let want = format!("{CONTENT}{CONTENT}{FINISH}{DONE}");
        for size in 1..=stream.len() {
            assert_eq!(run(&stream, size), want, "chunk size {size}");
        }
    }

    #[test]
    fn a_chunk_of_whole_events_goes_out_as_the_same_bytes() {
        let mut f = HideUsage::new();
        let chunk = Bytes::from(format!("{CONTENT}{FINISH}"));
        let out = f.filter(chunk.clone());
        assert_eq!(out, chunk);
        assert_eq!(out.as_ptr(), chunk.as_ptr(), "a slice, not a copy");
    }

    #[test]
    fn crlf_events_and_usage_null_chunks_are_kept() {
        let usage_crlf = USAGE.replace('\n', "\r\n");
        let content_crlf = CONTENT.replace('\n', "\r\n");
        let stream = format!("{content_crlf}{usage_crlf}{DONE}");
        assert_eq!(run(&stream, 7), format!("{content_crlf}{DONE}"));
        // A content chunk carrying `"usage":null` is the client's.
        assert!(!is_usage_only(FINISH.as_bytes()));
        // A chunk with choices and usage (some upstreams put usage on the last content chunk)
        // carries content: kept.
        let both = "data: {\"choices\":[{\"delta\":{\"content\":\"x\"}}],\"usage\":{\"prompt_tokens\":1}}\n\n";
        assert!(!is_usage_only(both.as_bytes()));
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_sent_as_it_was() {
        let stream = format!("{CONTENT}data: {{\"cut");
        assert_eq!(run(&stream, 5), stream);
    }
}
