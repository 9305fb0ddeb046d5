//! An upstream event stream on its way to the client: each chunk is handed on as it arrives and
//! shown to the core's [`Exchange::on_chunk`] in the same poll (synchronously, without a copy);
//! at the end the core says what to append (an error event for a cut-off stream) and what to
//! store. The log line is written when the stream ends or is dropped (client gone), so its
//! figures cover the whole stream. When identical requests follow the stream live, the core says
//! so after a chunk ([`Exchange::publish_due`]) and the isolate's router wakes them.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Wake, Waker};

use futures_channel::oneshot;
use futures_util::Stream;
use gateway_core::limits::LimitCall;
use gateway_core::{BodyEnd, EndOfRelay, Exchange, Store};
use worker::{ByteStream, Delay};

use super::{clock, shared, write_log};

pub struct Relay {
    /// The events the core read before answering: sent first.
    prefix: Option<Vec<u8>>,
    inner: ByteStream,
    exchange: Exchange,
    tail: Option<Vec<u8>>,
    ended: bool,
    store: Option<oneshot::Sender<Store>>,
    /// Where the settlement of the key's reservation goes when the exchange finishes.
    settle: Option<oneshot::Sender<LimitCall>>,
    /// The core's idle deadline: armed when the upstream is first silent, re-armed only when it
    /// fires (a timer per silence, not per chunk).
    idle: Option<Delay>,
    waker: Arc<LatestWaker>,
    /// Chunks go through [`Exchange::on_chunk_filtered`] before the client sees them.
    filter: bool,
}

/// Wakes whichever task polled last.
#[derive(Default)]
struct LatestWaker(Mutex<Option<Waker>>);

impl LatestWaker {
    fn set(&self, w: &Waker) {
        let mut slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if !slot.as_ref().is_some_and(|old| old.will_wake(w)) {
            *slot = Some(w.clone());
        }
    }
}

impl Wake for LatestWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        let slot = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(w) = slot.as_ref() {
            w.wake_by_ref();
        }
    }
}

impl Relay {
    /// `filter`: the core cuts part of the stream ([`gateway_core::RelayMode::Filter`]).
    pub fn new(
        inner: ByteStream,
        prefix: bytes::Bytes,
        filter: bool,
        exchange: Exchange,
        store: Option<oneshot::Sender<Store>>,
        settle: Option<oneshot::Sender<LimitCall>>,
    ) -> Relay {
        Relay {
            prefix: (!prefix.is_empty()).then(|| Vec::from(prefix)),
            inner,
            exchange,
            tail: None,
            ended: false,
            store,
            settle,
            idle: None,
            waker: Arc::default(),
            filter,
        }
    }

    fn end(&mut self, how: BodyEnd) -> Option<worker::Error> {
        let ex = &mut self.exchange;
        let end = shared::with(|r| ex.on_end(how, clock::now(), r));
        self.apply(end)
    }

    /// Whether the upstream has been silent too long, as the core decides when its deadline
    /// passes: `Ready` once the relay is over, `Pending` with the timer armed.
    fn poll_idle(&mut self, cx: &mut Context<'_>) -> Poll<Option<worker::Error>> {
        loop {
            let Some(deadline) = self.exchange.poll_timeout() else {
                return Poll::Pending;
            };
            let timer = self
                .idle
                .get_or_insert_with(|| Delay::from(deadline.remaining(clock::now().instant)));
            // The platform polls each pull of the stream as a task of its own, and a Delay keeps
            // the waker of the poll that armed it: it is polled with a waker that forwards to
            // whichever pull is waiting now.
            self.waker.set(cx.waker());
            let forward = Waker::from(self.waker.clone());
            if Pin::new(timer)
                .poll(&mut Context::from_waker(&forward))
                .is_pending()
            {
                return Poll::Pending;
            }
            self.idle = None;
            let ex = &mut self.exchange;
            if let Some(end) = shared::with(|r| ex.handle_relay_timeout(clock::now(), r)) {
                return Poll::Ready(self.apply(end));
            }
        }
    }

    fn apply(&mut self, end: EndOfRelay) -> Option<worker::Error> {
        self.ended = true;
        if let (Some(store), Some(tx)) = (end.store, self.store.take()) {
            let _ = tx.send(store);
        }
        self.tail = end.tail.map(Vec::from);
        end.abort
            .then(|| worker::Error::RustError("the upstream's response was cut off".into()))
    }
}

/// Wakes the requests following this stream, when the core says it has some (a stream nobody
/// follows never touches the router here).
fn publish(ex: &mut Exchange) {
    if ex.publish_due() {
        shared::with(|r| ex.publish(r));
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let ex = &mut self.exchange;
        if let Some(log) = shared::with(|r| ex.finish(clock::now(), r)) {
            write_log(&log);
        }
        if let (Some(call), Some(tx)) = (ex.take_settlement(), self.settle.take()) {
            let _ = tx.send(call);
        }
    }
}

impl Stream for Relay {
    type Item = worker::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(prefix)));
        }
        if let Some(tail) = this.tail.take() {
            return Poll::Ready(Some(Ok(tail)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let how = loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Pending => {
                    return match this.poll_idle(cx) {
                        Poll::Pending => Poll::Pending,
                        Poll::Ready(Some(e)) => Poll::Ready(Some(Err(e))),
                        Poll::Ready(None) => Poll::Ready(this.tail.take().map(Ok)),
                    };
                }
                Poll::Ready(Some(Ok(chunk))) if this.filter => {
                    let out = this
                        .exchange
                        .on_chunk_filtered(bytes::Bytes::from(chunk), clock::now());
                    publish(&mut this.exchange);
                    // Nothing to send yet (a usage event cut, or an event still coming).
                    if !out.is_empty() {
                        return Poll::Ready(Some(Ok(Vec::from(out))));
                    }
                }
                Poll::Ready(Some(Ok(chunk))) => {
                    let chunk = bytes::Bytes::from(chunk);
                    this.exchange.on_chunk(&chunk, clock::now());
                    publish(&mut this.exchange);
                    // No copy unless the recording keeps the chunk too (then this is the copy
                    // the recording used to make).
                    return Poll::Ready(Some(Ok(Vec::from(chunk))));
                }
                Poll::Ready(Some(Err(_))) => break BodyEnd::Failed,
                Poll::Ready(None) => break BodyEnd::Complete,
            }
        };
        if let Some(e) = this.end(how) {
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(this.tail.take().map(Ok))
    }
}
