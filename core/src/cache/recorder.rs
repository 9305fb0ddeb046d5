//! Records an event stream as it passes to the client, and yields an entry only for a stream
//! that completed with `data: [DONE]` and carried no error event.
//!
//! The live stream is never held back: the runtime forwards each chunk first and hands a copy
//! to [`StreamRecorder::record`]. A stream larger than the entry limit stops being recorded (its
//! bytes are dropped at once) and is not stored.
//!
//! The chunks are kept on a [`Tape`] (the same `Bytes`, not a copy), which identical requests
//! may follow live while the stream is relayed.

use std::sync::Arc;

use bytes::Bytes;

use super::entry::{CacheEntry, EntryForm};
use super::key::CacheKey;
use super::tape::{Cut, Tape};
use crate::sse::SseObserver;

#[derive(Debug)]
pub struct StreamRecorder {
    key: CacheKey,
    status: u16,
    content_type: String,
    ttl_secs: u64,
    limit: usize,
    len: usize,
    tape: Arc<Tape>,
    observer: SseObserver,
    overflowed: bool,
}

impl StreamRecorder {
    pub fn new(
        key: CacheKey,
        status: u16,
        content_type: &str,
        ttl_secs: u64,
        limit: usize,
    ) -> StreamRecorder {
        StreamRecorder {
            key,
            status,
            content_type: content_type.to_string(),
            ttl_secs,
            limit,
            len: 0,
            tape: Arc::default(),
            observer: SseObserver::new(),
            overflowed: false,
        }
    }

    /// Records one chunk of the stream, exactly as it was sent to the client. Returns whether
    /// the tape has followers to wake (the chunk, or the end of the recording, is news to them).
    pub fn record(&mut self, chunk: &Bytes) -> bool {
        if self.overflowed || chunk.is_empty() {
            return false;
        }
        if self.len + chunk.len() > self.limit {
            self.overflowed = true;
            return self.tape.cut(Cut::TooLarge);
        }
        self.len += chunk.len();
        self.observer.observe(chunk);
        self.tape.push(chunk.clone())
    }

    /// The recording so far, as followers read it.
    pub fn tape(&self) -> &Arc<Tape> {
        &self.tape
    }

    /// Did the stream so far end with `[DONE]` and no error event?
    pub fn is_complete(&self) -> bool {
        !self.overflowed && self.observer.saw_done() && !self.observer.saw_error()
    }

    /// Call when the upstream body ended without a transport error. Yields the entry to store,
    /// or `None` for a stream that was cut off, carried an error, or was too large.
    /// `usage`: what the upstream reported (a usage chunk the client did not ask for is not in
    /// the recorded stream, but is what the answer cost).
    pub fn finish(self, now_ms: u64, usage: Option<crate::sse::Usage>) -> Option<CacheEntry> {
        if !self.is_complete() {
            return None;
        }
        let body = self.tape.concat();
        if !ends_with_event_boundary(&body) {
            return None;
        }
        Some(CacheEntry {
            key: self.key,
            status: self.status,
            form: EntryForm::Sse,
            content_type: self.content_type,
            stored_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(self.ttl_secs.saturating_mul(1000)),
            usage: usage.or(self.observer.usage()),
            body,
        })
    }
}

/// A complete stream's last event is terminated by a blank line; anything after it would be a
/// partial event.
fn ends_with_event_boundary(b: &[u8]) -> bool {
    b.ends_with(b"\n\n") || b.ends_with(b"\r\n\r\n") || b.ends_with(b"\r\r")
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &[u8] = b"data: {\"choices\":[{\"delta\":{\"content\":\"Hi\"}}]}\n\n\
data: {\"choices\":[],\"usage\":{\"prompt_tokens\":1,\"completion_tokens\":1,\"total_tokens\":2}}\n\n\
data: [DONE]\n\n";

    fn recorder(limit: usize) -> StreamRecorder {
        StreamRecorder::new(CacheKey([1; 32]), 200, "text/event-stream", 60, limit)
    }

    #[test]
    fn a_complete_stream_is_recorded_byte_for_byte_whatever_the_chunking() {
        for size in [1, 3, 7, STREAM.len()] {
            let mut r = recorder(1 << 20);
            for c in STREAM.chunks(size) {
                r.record(&Bytes::copy_from_slice(c));
            }
            let e = r.finish(5_000, None).unwrap();
            assert_eq!(&e.body[..], STREAM);
            assert_eq!(e.form, EntryForm::Sse);
            assert_eq!(e.stored_at_ms, 5_000);
            assert_eq!(e.expires_at_ms, 65_000);
        }
    }

    #[test]
    fn cut_off_streams_are_not_recorded() {
        let mut r = recorder(1 << 20);
        r.record(&Bytes::from_static(&STREAM[..STREAM.len() - 16]));
        assert!(r.finish(0, None).is_none());
    }

    #[test]
    fn error_events_prevent_recording() {
        let mut r = recorder(1 << 20);
        r.record(&Bytes::from_static(
            b"data: {\"choices\":[]}\n\ndata: {\"error\":{\"message\":\"x\"}}\n\ndata: [DONE]\n\n",
        ));
        assert!(r.finish(0, None).is_none());
        let mut r = recorder(1 << 20);
        r.record(&Bytes::from_static(
            b"event: error\ndata: {}\n\ndata: [DONE]\n\n",
        ));
        assert!(r.finish(0, None).is_none());
    }

    #[test]
    fn oversized_streams_are_dropped_not_kept() {
        let mut r = recorder(32);
        r.record(&Bytes::from_static(STREAM));
        assert!(r.tape().concat().is_empty());
        assert!(r.finish(0, None).is_none());
    }

    #[test]
    fn a_partial_event_after_done_is_refused() {
        let mut r = recorder(1 << 20);
        r.record(&Bytes::from_static(STREAM));
        r.record(&Bytes::from_static(b"data: {\"x\""));
        assert!(r.finish(0, None).is_none());
    }
}
