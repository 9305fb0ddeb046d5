//! The response body the native runtime sends: either bytes the gateway already has, or the
//! upstream's body passed through frame by frame (no collection, no copies: `Bytes` are
//! reference-counted). The request's log line is written when the body is finished or dropped,
//! so its time and byte count cover the whole response, streams included.

use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::Instant;

use ai_edge_gateway::log::RequestLog;
use ai_edge_gateway::sse::SseObserver;
use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::cache::Recording;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Writes the request's log line exactly once, when dropped.
pub struct LogGuard {
    pub log: RequestLog,
    pub start: Instant,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        self.log.total_ms = self.start.elapsed().as_secs_f64() * 1000.0;
        self.log.total_ms = (self.log.total_ms * 1000.0).round() / 1000.0;
        let mut line = self.log.to_line();
        line.push('\n');
        crate::log_sink::write(line);
    }
}

enum Source {
    Full(Option<Bytes>),
    Upstream {
        body: Incoming,
        /// Present for successful event streams.
        sse: Option<SseObserver>,
        /// An error event still to send after the upstream's stream ended badly.
        tail: Option<Bytes>,
        ended: bool,
        /// A cacheable stream being recorded for the cache.
        recording: Option<Box<Recording>>,
    },
}

pub struct GatewayBody {
    source: Source,
    log: Option<LogGuard>,
}

impl GatewayBody {
    pub fn full(bytes: Bytes, log: LogGuard) -> GatewayBody {
        GatewayBody {
            source: Source::Full(Some(bytes)),
            log: Some(log),
        }
    }

    pub fn upstream(body: Incoming, observe_sse: bool, log: LogGuard) -> GatewayBody {
        GatewayBody {
            source: Source::Upstream {
                body,
                sse: observe_sse.then(SseObserver::new),
                tail: None,
                ended: false,
                recording: None,
            },
            log: Some(log),
        }
    }

    /// Records the passing stream for the cache; it is stored only if it completes.
    pub fn with_recording(mut self, rec: Option<Box<Recording>>) -> GatewayBody {
        if let Source::Upstream { recording, .. } = &mut self.source {
            *recording = rec;
        }
        self
    }

    fn count(&mut self, n: usize) {
        if let Some(g) = &mut self.log {
            g.log.bytes_out += n as u64;
        }
    }

    fn finish_stream(&mut self) -> Option<Bytes> {
        let Source::Upstream { sse, .. } = &self.source else {
            return None;
        };
        let sse = sse.as_ref()?;
        let mut scratch = ai_edge_gateway::log::RequestLog::default();
        let log = match &mut self.log {
            Some(g) => &mut g.log,
            None => &mut scratch,
        };
        sse.finish(log).map(Bytes::from)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        loop {
            match &mut this.source {
                Source::Full(bytes) => {
                    let Some(b) = bytes.take() else {
                        return Poll::Ready(None);
                    };
                    this.count(b.len());
                    return Poll::Ready(Some(Ok(Frame::data(b))));
                }
                Source::Upstream {
                    body,
                    sse,
                    tail,
                    ended,
                    recording,
                } => {
                    if let Some(t) = tail.take() {
                        let n = t.len();
                        this.count(n);
                        return Poll::Ready(Some(Ok(Frame::data(t))));
                    }
                    if *ended {
                        return Poll::Ready(None);
                    }
                    match ready!(Pin::new(body).poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue; // upstream trailers are not forwarded
                            };
                            if let Some(o) = sse {
                                o.observe(&data);
                            }
                            if let Some(r) = recording {
                                r.record(&data);
                            }
                            this.count(data.len());
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Some(Err(e)) => {
                            *ended = true;
                            // A failed stream is never stored; waiters are released.
                            *recording = None;
                            let is_sse = sse.is_some();
                            let t = this.finish_stream();
                            if !is_sse {
                                // Not an event stream: abort, so the client sees the truncation.
                                return Poll::Ready(Some(Err(Box::new(e))));
                            }
                            if let Source::Upstream { tail, .. } = &mut this.source {
                                *tail = t;
                            }
                        }
                        None => {
                            *ended = true;
                            if let Some(r) = recording.take() {
                                r.finish();
                            }
                            let t = this.finish_stream();
                            if let Source::Upstream { tail, .. } = &mut this.source {
                                *tail = t;
                            }
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.source {
            Source::Full(b) => b.is_none(),
            Source::Upstream { tail, ended, .. } => *ended && tail.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            Source::Upstream {
                body, sse: None, ..
            } => body.size_hint(),
            Source::Upstream { .. } => SizeHint::default(),
        }
    }
}
