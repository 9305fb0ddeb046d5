//! Per-connection timers hyper does not have: a keep-alive connection may wait `idle` (75 s) for
//! its next request, while a request head, once begun, must arrive within `header` (30 s), and a
//! new connection must begin its first request within `header` too.
//!
//! hyper's own header-read timer starts when it begins waiting for a head, so it covers idle time
//! too and cannot tell the two apart. It is set to `idle + header` as a backstop; this watch
//! closes a connection at the right moment. A connection with a request in flight is never
//! closed here: the core's deadlines govern requests.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::Notify;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    pub header: Duration,
    pub idle: Duration,
}

#[derive(Debug)]
struct State {
    in_flight: u32,
    /// No request in flight since then (the connection's start, or the last response's end).
    waiting_since: Instant,
    /// A request has been received on this connection.
    served: bool,
    /// The first byte of the next request head came then.
    head_started: Option<Instant>,
    /// An HTTP/2 connection: frames between requests (pings, settings) are not a head.
    h2: bool,
}

/// The watch of one connection, shared by its IO, its requests and its task.
#[derive(Debug)]
pub struct Watch {
    state: Mutex<State>,
    changed: Notify,
    timeouts: Timeouts,
}

impl Watch {
    pub fn new(timeouts: Timeouts) -> Arc<Watch> {
        Arc::new(Watch {
            state: Mutex::new(State {
                in_flight: 0,
                waiting_since: Instant::now(),
                served: false,
                head_started: None,
                h2: false,
            }),
            changed: Notify::new(),
            timeouts,
        })
    }

    fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut s)
    }

    /// When the connection is to be closed unless something happens first; `None` while a
    /// request is in flight.
    pub fn deadline(&self) -> Option<Instant> {
        let t = self.timeouts;
        self.with(|s| {
            if s.in_flight > 0 {
                None
            } else if let Some(at) = s.head_started {
                Some(at + t.header)
            } else if s.served {
                Some(s.waiting_since + t.idle)
            } else {
                Some(s.waiting_since + t.header)
            }
        })
    }

    /// Resolves when the state changed (the deadline may have moved).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    /// A request arrived: hold the returned guard until its response is over.
    pub fn request(self: &Arc<Self>) -> Busy {
        self.with(|s| {
            s.in_flight += 1;
            s.served = true;
            s.head_started = None;
        });
        self.changed.notify_one();
        Busy(self.clone())
    }

    fn bytes_read(&self, first: &[u8]) {
        let moved = self.with(|s| {
            if !s.served && first.starts_with(b"PRI * HTTP/2.0") {
                s.h2 = true;
            }
            if s.in_flight == 0 && s.head_started.is_none() && !s.h2 {
                s.head_started = Some(Instant::now());
                true
            } else {
                false
            }
        });
        if moved {
            self.changed.notify_one();
        }
    }
}

/// A request in flight on a watched connection (dropped with its response body).
#[derive(Debug)]
pub struct Busy(Arc<Watch>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.with(|s| {
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight == 0 {
                s.waiting_since = Instant::now();
            }
        });
        self.0.changed.notify_one();
    }
}

/// The connection's socket, telling its watch when bytes arrive (wrapped in `TokioIo` for hyper).
pub struct WatchedIo<T> {
    inner: T,
    watch: Arc<Watch>,
}

impl<T> WatchedIo<T> {
    pub fn new(inner: T, watch: Arc<Watch>) -> WatchedIo<T> {
        WatchedIo { inner, watch }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for WatchedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &polled {
            if let Some(new) = buf.filled().get(before..).filter(|b| !b.is_empty()) {
                this.watch.bytes_read(new);
            }
        }
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for WatchedIo<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
}
