//! The response body the native runtime sends: bytes the core decided on, or the upstream's body
//! relayed frame by frame (no collection, no copies: `Bytes` are reference-counted). Each frame
//! is shown to the core's [`Exchange::on_chunk`] in the poll that hands it on (synchronously,
//! without a copy or a wait), so observing never holds a chunk back. The end of the relay and the
//! log line are the core's too: the line is written when the body is finished or dropped (client
//! gone), so it covers the whole response. When identical requests follow the stream live, the
//! core says so after a chunk ([`Exchange::publish_due`]) and the router wakes them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use gateway_core::{BodyEnd, Exchange};
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::sync::mpsc;
use tokio::time::Sleep;

use crate::cache::Cache;
use crate::clock;
use crate::shared::Shared;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

enum Source {
    Full(Option<Bytes>),
    /// A driven response: the loop behind it sends its bytes (see the driver).
    Channel(mpsc::Receiver<Result<Bytes, BoxError>>),
    Relay {
        /// The events the core read before answering (sent first).
        prefix: Option<Bytes>,
        body: Incoming,
        /// Bytes the core asked to send after the upstream's body (an error event).
        tail: Option<Bytes>,
        ended: bool,
        /// The core's idle deadline. Armed when the upstream is first silent and re-armed only
        /// when it fires, so chunks cost no timer work.
        idle: Option<Pin<Box<Sleep>>>,
        /// Chunks go through [`Exchange::on_chunk_filtered`] before the client sees them.
        filter: bool,
    },
}

pub struct GatewayBody {
    source: Source,
    exchange: Option<Box<Exchange>>,
    shared: Arc<Shared>,
    cache: Option<Arc<Cache>>,
    /// The connection counts this response as in flight until the body is dropped.
    busy: Option<crate::watch::Busy>,
}

impl GatewayBody {
    /// Keeps `busy` until the body is over (sent or abandoned).
    pub fn hold(&mut self, busy: crate::watch::Busy) {
        self.busy = Some(busy);
    }

    pub fn full(
        bytes: Bytes,
        exchange: Box<Exchange>,
        shared: Arc<Shared>,
        cache: Option<Arc<Cache>>,
    ) -> GatewayBody {
        GatewayBody {
            source: Source::Full(Some(bytes)),
            exchange: Some(exchange),
            shared,
            cache,
            busy: None,
        }
    }

    /// No body (and no exchange).
    pub fn empty(shared: Arc<Shared>) -> GatewayBody {
        GatewayBody {
            source: Source::Full(None),
            exchange: None,
            shared,
            cache: None,
            busy: None,
        }
    }

    /// A driven response's body; its exchange (and log line) live with the loop behind it.
    pub fn channel(
        rx: mpsc::Receiver<Result<Bytes, BoxError>>,
        shared: Arc<Shared>,
    ) -> GatewayBody {
        GatewayBody {
            source: Source::Channel(rx),
            exchange: None,
            shared,
            cache: None,
            busy: None,
        }
    }

    /// `filter`: the core cuts part of the stream ([`gateway_core::RelayMode::Filter`]).
    pub fn relay(
        body: Incoming,
        prefix: Bytes,
        filter: bool,
        exchange: Box<Exchange>,
        shared: Arc<Shared>,
        cache: Option<Arc<Cache>>,
    ) -> GatewayBody {
        GatewayBody {
            source: Source::Relay {
                prefix: (!prefix.is_empty()).then_some(prefix),
                body,
                tail: None,
                ended: false,
                idle: None,
                filter,
            },
            exchange: Some(exchange),
            shared,
            cache,
            busy: None,
        }
    }

    /// The upstream's body ended; returns the error to end the client's response with, if the
    /// core says so.
    fn end(&mut self, how: BodyEnd) -> Option<BoxError> {
        let ex = self.exchange.as_mut()?;
        let now = clock::now();
        let end = self.shared.with(|r| ex.on_end(how, now, r));
        self.apply(end)
    }

    /// Whether the upstream has been silent too long, as the core decides when its deadline
    /// passes: `Ready` with what to do then, `Pending` with the timer armed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<BoxError>> {
        loop {
            let Some(deadline) = self.exchange.as_deref().and_then(Exchange::poll_timeout) else {
                return Poll::Pending;
            };
            let Source::Relay { idle, .. } = &mut self.source else {
                return Poll::Pending;
            };
            let sleep = idle.get_or_insert_with(|| {
                Box::pin(tokio::time::sleep_until(clock::to_tokio(deadline)))
            });
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(ex) = self.exchange.as_mut() else {
                return Poll::Pending;
            };
            let now = clock::now();
            match self.shared.with(|r| ex.handle_relay_timeout(now, r)) {
                Some(end) => {
                    if let Source::Relay { ended, idle, .. } = &mut self.source {
                        *ended = true;
                        *idle = None;
                    }
                    return Poll::Ready(self.apply(end));
                }
                // Chunks came meanwhile: wait until the new deadline.
                None => {
                    if let (
                        Source::Relay {
                            idle: Some(sleep), ..
                        },
                        Some(next),
                    ) = (&mut self.source, ex.poll_timeout())
                    {
                        sleep.as_mut().reset(clock::to_tokio(next));
                    }
                }
            }
        }
    }

    fn apply(&mut self, end: gateway_core::EndOfRelay) -> Option<BoxError> {
        if let (Some(store), Some(cache)) = (end.store, &self.cache) {
            let cache = cache.clone();
            // The end of the response is not delayed by the write.
            tokio::spawn(async move { cache.store(store).await });
        }
        if let Source::Relay { tail, .. } = &mut self.source {
            *tail = end.tail;
        }
        end.abort
            .then(|| BoxError::from("the upstream's response was cut off"))
    }
}

/// Wakes the requests following this stream, when the core says it has some (a stream nobody
/// follows never takes the router's lock here).
fn publish(ex: &mut Exchange, shared: &Shared) {
    if ex.publish_due() {
        shared.with(|r| ex.publish(r));
    }
}

impl Drop for GatewayBody {
    fn drop(&mut self) {
        if let Some(mut ex) = self.exchange.take() {
            crate::driver::finish(&mut ex, &self.shared);
        }
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
                    return Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b))))
                }
                Source::Channel(rx) => {
                    return rx
                        .poll_recv(cx)
                        .map(|item| item.map(|r| r.map(Frame::data)));
                }
                Source::Relay {
                    prefix,
                    body,
                    tail,
                    ended,
                    filter,
                    ..
                } => {
                    if let Some(p) = prefix.take() {
                        return Poll::Ready(Some(Ok(Frame::data(p))));
                    }
                    if let Some(t) = tail.take() {
                        return Poll::Ready(Some(Ok(Frame::data(t))));
                    }
                    if *ended {
                        return Poll::Ready(None);
                    }
                    let polled = Pin::new(body).poll_frame(cx);
                    let Poll::Ready(polled) = polled else {
                        match this.poll_idle(cx) {
                            Poll::Pending => return Poll::Pending,
                            Poll::Ready(Some(e)) => return Poll::Ready(Some(Err(e))),
                            // Ended by the core: send its tail, then end.
                            Poll::Ready(None) => continue,
                        }
                    };
                    match polled {
                        Some(Ok(frame)) => {
                            let Ok(data) = frame.into_data() else {
                                continue; // upstream trailers are not forwarded
                            };
                            let data = match &mut this.exchange {
                                Some(ex) if *filter => {
                                    let out = ex.on_chunk_filtered(data, clock::now());
                                    publish(ex, &this.shared);
                                    if out.is_empty() {
                                        continue;
                                    }
                                    out
                                }
                                Some(ex) => {
                                    ex.on_chunk(&data, clock::now());
                                    publish(ex, &this.shared);
                                    data
                                }
                                None => data,
                            };
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Some(Err(_)) => {
                            *ended = true;
                            if let Some(e) = this.end(BodyEnd::Failed) {
                                return Poll::Ready(Some(Err(e)));
                            }
                        }
                        None => {
                            *ended = true;
                            if let Some(e) = this.end(BodyEnd::Complete) {
                                return Poll::Ready(Some(Err(e)));
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
            Source::Channel(_) => false,
            Source::Relay {
                prefix,
                tail,
                ended,
                ..
            } => *ended && tail.is_none() && prefix.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.source {
            Source::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Source::Full(None) => SizeHint::with_exact(0),
            Source::Channel(_) => SizeHint::default(),
            // An event stream may gain a tail; other bodies pass through as they are.
            Source::Relay {
                body, prefix: None, ..
            } if self.exchange.as_ref().is_some_and(|e| !e.may_add_tail()) => body.size_hint(),
            Source::Relay { .. } => SizeHint::default(),
        }
    }
}
