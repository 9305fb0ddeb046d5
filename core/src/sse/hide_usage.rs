//! Removes the usage event the gateway asked for on the client's behalf.
//!
//! To price a stream the gateway asks the upstream for usage (`stream_options.include_usage`);
//! a client that did not ask must get the stream it would have got without the gateway, so the
//! final `{"choices":[],"usage":{...}}` event is cut out. Nothing else is held back: an event
//! goes out as its bytes arrive as soon as it is known not to be that one (its `choices` array
//! has an element), and only an event still undecided when a chunk ends (rare: the keys come
//! first) waits for more of itself. A chunk of whole events without the usage event goes out as
//! the same bytes (no copy).

use bytes::{Bytes, BytesMut};

/// An undecided event longer than this is let through: a usage event is a few hundred bytes.
const MAX_HELD: usize = 16 * 1024;

/// Cuts usage-only events out of an event stream.
#[derive(Debug, Default)]
pub struct HideUsage {
    /// The start of the current event, while it may still be the usage event.
    held: BytesMut,
    /// The current event is not the usage event: its bytes go out as they come.
    passing: bool,
    /// The last two bytes of the current event so far (its end may span chunks).
    last: [u8; 2],
}

/// Where the event ends in `data` (just after its blank line), given the last two bytes of the
/// event before `data`: a line feed preceded by a line feed, or by a line feed and a carriage
/// return.
fn event_end(last: [u8; 2], data: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(off) = data.get(from..)?.iter().position(|&c| c == b'\n') {
        let i = from + off;
        let before = |back: usize| -> u8 {
            match i.checked_sub(back) {
                Some(j) => data.get(j).copied().unwrap_or(0),
                // Bytes before `data`: last[1] is the one just before it.
                None => last
                    .get(2usize.saturating_sub(back - i))
                    .copied()
                    .unwrap_or(0),
            }
        };
        if before(1) == b'\n' || (before(1) == b'\r' && before(2) == b'\n') {
            return Some(i + 1);
        }
        from = i + 1;
    }
    None
}

/// The last two bytes of `prev` followed by `data`.
fn last_two(prev: [u8; 2], data: &[u8]) -> [u8; 2] {
    match data {
        [] => prev,
        [b] => [prev[1], *b],
        [.., a, b] => [*a, *b],
    }
}

/// The start of an event that is certainly not usage-only: its `choices` array has an element.
fn has_choices(event: &[u8]) -> bool {
    let Some(at) = super::memfind(event, b"\"choices\"") else {
        return false;
    };
    let rest = event.get(at + 9..).unwrap_or_default();
    let mut bytes = rest.iter().copied().skip_while(u8::is_ascii_whitespace);
    if bytes.next() != Some(b':') {
        return false;
    }
    let mut bytes = bytes.skip_while(u8::is_ascii_whitespace);
    if bytes.next() != Some(b'[') {
        return false;
    }
    matches!(bytes.find(|b| !b.is_ascii_whitespace()), Some(b) if b != b']')
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

/// What goes out of one chunk: runs of the chunk's own bytes (kept as slices, so a chunk sent
/// whole is the same bytes) and bytes held from earlier chunks.
#[derive(Default)]
struct Out {
    done: Vec<Bytes>,
    /// A run of the chunk not yet closed.
    run: Option<(usize, usize)>,
    /// Pieces in `done` stand for runs of the chunk (start, end) or held bytes (None).
    runs: Vec<Option<(usize, usize)>>,
}

impl Out {
    fn keep(&mut self, from: usize, to: usize) {
        self.run = match self.run {
            Some((a, b)) if b == from => Some((a, to)),
            Some(r) => {
                self.runs.push(Some(r));
                Some((from, to))
            }
            None => Some((from, to)),
        };
    }

    /// Bytes were cut here: the run so far ends.
    fn drop_here(&mut self) {
        if let Some(r) = self.run.take() {
            self.runs.push(Some(r));
        }
    }

    fn push(&mut self, held: Bytes) {
        self.drop_here();
        self.runs.push(None);
        self.done.push(held);
    }

    fn finish(mut self, chunk: &Bytes) -> Bytes {
        self.drop_here();
        let mut held = self.done.into_iter();
        let pieces: Vec<Bytes> = self
            .runs
            .into_iter()
            .map(|r| match r {
                Some((a, b)) => chunk.slice(a..b),
                None => held.next().unwrap_or_default(),
            })
            .collect();
        match pieces.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            _ => {
                let mut all = BytesMut::with_capacity(pieces.iter().map(Bytes::len).sum());
                for p in &pieces {
                    all.extend_from_slice(p);
                }
                all.freeze()
            }
        }
    }
}

impl HideUsage {
    pub fn new() -> HideUsage {
        HideUsage::default()
    }

    /// What to send of `chunk` now.
    pub fn filter(&mut self, chunk: Bytes) -> Bytes {
        let mut out = Out::default();
        let mut pos = 0;
        while pos < chunk.len() {
            let rest = chunk.get(pos..).unwrap_or_default();
            let end = event_end(self.last, rest);
            if self.passing {
                let upto = end.unwrap_or(rest.len());
                out.keep(pos, pos + upto);
                self.advance(end, rest, upto);
                pos += upto;
                continue;
            }
            match end {
                Some(e) => {
                    if self.held.is_empty() {
                        let event = rest.get(..e).unwrap_or_default();
                        if is_usage_only(event) {
                            out.drop_here();
                        } else {
                            out.keep(pos, pos + e);
                        }
                    } else {
                        self.held
                            .extend_from_slice(rest.get(..e).unwrap_or_default());
                        let event = self.held.split().freeze();
                        if is_usage_only(&event) {
                            out.drop_here();
                        } else {
                            out.push(event);
                        }
                    }
                    self.last = [0, 0];
                    pos += e;
                }
                None => {
                    self.held.extend_from_slice(rest);
                    self.last = last_two(self.last, rest);
                    if has_choices(&self.held) || self.held.len() > MAX_HELD {
                        out.push(self.held.split().freeze());
                        self.passing = true;
                    }
                    pos = chunk.len();
                }
            }
        }
        out.finish(&chunk)
    }

    /// After `upto` bytes of a passing event: its end, or more of it.
    fn advance(&mut self, end: Option<usize>, rest: &[u8], upto: usize) {
        if end.is_some() {
            self.passing = false;
            self.last = [0, 0];
        } else {
            self.last = last_two(self.last, rest.get(..upto).unwrap_or_default());
        }
    }

    /// The stream ended: what was held of an unfinished event goes out as it was.
    pub fn finish(&mut self) -> Bytes {
        std::mem::take(&mut self.held).freeze()
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
        let (stream, want) = (stream.replace('\n', "\r\n"), want.replace('\n', "\r\n"));
        for size in 1..=stream.len() {
            assert_eq!(run(&stream, size), want, "CRLF, chunk size {size}");
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
    fn a_content_event_goes_out_before_its_end_arrives() {
        let mut f = HideUsage::new();
        let (head, tail) = CONTENT.split_at(30);
        let out = f.filter(Bytes::from(head));
        assert_eq!(
            &out[..],
            head.as_bytes(),
            "its choices have an element: not held"
        );
        let out = f.filter(Bytes::from(tail));
        assert_eq!(&out[..], tail.as_bytes());
        // The usage event waits for its end, then is cut.
        let (head, tail) = USAGE.split_at(40);
        assert!(f.filter(Bytes::from(head)).is_empty());
        assert!(f.filter(Bytes::from(tail)).is_empty());
        assert_eq!(&f.filter(Bytes::from(DONE))[..], DONE.as_bytes());
    }

    #[test]
    fn an_event_ending_across_chunks_is_found() {
        // "\n" | "\n", and "\n\r" | "\n".
        let mut f = HideUsage::new();
        let mut out = Vec::new();
        for part in [&USAGE[..USAGE.len() - 1], "\n", DONE] {
            out.extend_from_slice(&f.filter(Bytes::from(part)));
        }
        assert_eq!(String::from_utf8(out).unwrap(), DONE);
        let usage_crlf = USAGE.replace('\n', "\r\n");
        let mut out = Vec::new();
        for part in [&usage_crlf[..usage_crlf.len() - 1], "\n", DONE] {
            out.extend_from_slice(&f.filter(Bytes::from(part.to_string())));
        }
        assert_eq!(String::from_utf8(out).unwrap(), DONE);
    }

    #[test]
    fn an_unfinished_event_at_the_end_is_sent_as_it_was() {
        let stream = format!("{CONTENT}data: {{\"cut");
        assert_eq!(run(&stream, 5), stream);
    }
}
