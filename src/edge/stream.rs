//! An upstream event stream on its way to the client: each chunk is handed on as it arrives and
//! shown to the core's [`Exchange::on_chunk`] in the same poll (synchronously, without a copy);
//! at the end the core says what to append (an error event for a cut-off stream) and what to
//! store. The log line is written when the stream ends or is dropped (client gone), so its
//! figures cover the whole stream.

use std::pin::Pin;
use std::task::{Context, Poll};

use futures_channel::oneshot;
use futures_util::Stream;
use gateway_core::{BodyEnd, Exchange, Store};
use worker::ByteStream;

use super::{clock, shared, write_log};

pub struct Relay {
    inner: ByteStream,
    exchange: Exchange,
    tail: Option<Vec<u8>>,
    ended: bool,
    store: Option<oneshot::Sender<Store>>,
}

impl Relay {
    pub fn new(
        inner: ByteStream,
        exchange: Exchange,
        store: Option<oneshot::Sender<Store>>,
    ) -> Relay {
        Relay {
            inner,
            exchange,
            tail: None,
            ended: false,
            store,
        }
    }

    fn end(&mut self, how: BodyEnd) -> Option<worker::Error> {
        self.ended = true;
        let ex = &mut self.exchange;
        let end = shared::with(|r| ex.on_end(how, clock::now(), r));
        if let (Some(store), Some(tx)) = (end.store, self.store.take()) {
            let _ = tx.send(store);
        }
        self.tail = end.tail.map(Vec::from);
        end.abort
            .then(|| worker::Error::RustError("the upstream's response was cut off".into()))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let ex = &mut self.exchange;
        if let Some(log) = shared::with(|r| ex.finish(clock::now(), r)) {
            write_log(&log);
        }
    }
}

impl Stream for Relay {
    type Item = worker::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Some(tail) = this.tail.take() {
            return Poll::Ready(Some(Ok(tail)));
        }
        if this.ended {
            return Poll::Ready(None);
        }
        let how = match Pin::new(&mut this.inner).poll_next(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Some(Ok(chunk))) => {
                this.exchange.on_chunk(&chunk, clock::now());
                return Poll::Ready(Some(Ok(chunk)));
            }
            Poll::Ready(Some(Err(_))) => BodyEnd::Failed,
            Poll::Ready(None) => BodyEnd::Complete,
        };
        if let Some(e) = this.end(how) {
            return Poll::Ready(Some(Err(e)));
        }
        Poll::Ready(this.tail.take().map(Ok))
    }
}
