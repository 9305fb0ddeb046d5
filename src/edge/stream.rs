//! An upstream event stream on its way to the client: each chunk is handed on as it arrives,
//! observed by the core's [`SseObserver`]; when the stream ends without `[DONE]`, the core's
//! error event is appended. The request's log line is written when the stream ends or is dropped
//! (client gone), so its figures cover the whole stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::oneshot;
use futures_util::Stream;
use worker::ByteStream;

use crate::cache::{CacheEntry, StreamRecorder};
use crate::log::{elapsed_ms, RequestLog};
use crate::sse::SseObserver;

/// Writes one log line, once, when dropped.
pub struct EdgeLog {
    pub log: RequestLog,
    start: f64,
}

impl EdgeLog {
    pub fn new(log: RequestLog, start: f64) -> EdgeLog {
        EdgeLog { log, start }
    }
}

impl Drop for EdgeLog {
    fn drop(&mut self) {
        self.log.total_ms = elapsed_ms(self.start, js_sys::Date::now());
        worker::console_log!("{}", self.log.to_line());
    }
}

/// Records a cacheable stream and hands the entry to the cache writer once it completed.
pub struct StreamStore {
    pub recorder: StreamRecorder,
    pub sender: oneshot::Sender<CacheEntry>,
}

pub struct TappedStream {
    inner: ByteStream,
    observer: SseObserver,
    tail: Option<Vec<u8>>,
    ended: bool,
    log: EdgeLog,
    store: Option<StreamStore>,
}

impl TappedStream {
    pub fn new(inner: ByteStream, log: EdgeLog, store: Option<StreamStore>) -> TappedStream {
        TappedStream {
            inner,
            observer: SseObserver::new(),
            tail: None,
            ended: false,
            log,
            store,
        }
    }

    fn finish(&mut self, clean_end: bool) {
        self.ended = true;
        if let Some(store) = self.store.take() {
            if clean_end {
                if let Some(entry) = store.recorder.finish(js_sys::Date::now().max(0.0) as u64) {
                    let _ = store.sender.send(entry);
                }
            }
        }
        self.tail = self.observer.finish(&mut self.log.log);
    }
}

impl Stream for TappedStream {
    type Item = worker::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(tail) = this.tail.take() {
            this.log.log.bytes_out += tail.len() as u64;
            return Poll::Ready(Some(Ok(tail)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.observer.observe(&chunk);
                if let Some(store) = &mut this.store {
                    store.recorder.record(&chunk);
                }
                this.log.log.bytes_out += chunk.len() as u64;
                Poll::Ready(Some(Ok(chunk)))
            }
            Poll::Ready(end) => {
                this.finish(end.is_none());
                match this.tail.take() {
                    Some(tail) => {
                        this.log.log.bytes_out += tail.len() as u64;
                        Poll::Ready(Some(Ok(tail)))
                    }
                    None => Poll::Ready(None),
                }
            }
        }
    }
}
