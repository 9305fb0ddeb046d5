//! The relay of an upstream body (observation, the idle deadline, its end) and the end of the
//! exchange (the log record).

use std::sync::Arc;

use bytes::Bytes;

use super::{BodyEnd, EndOfRelay, Exchange, Step, Store};
use crate::cache::tape::{Cut, Ending};
use crate::cache::CacheStatus;
use crate::error::GatewayError;
use crate::log::RequestLog;
use crate::router::Router;
use crate::time::{millis_f64, Now};

/// The relay of an upstream body, and the end of the exchange.
impl Exchange {
    /// A chunk of the relayed body, already handed to the client (observation never holds a
    /// chunk back). Then see [`Exchange::publish_due`].
    pub fn on_chunk(&mut self, chunk: &Bytes, now: Now) {
        let Some(relay) = &mut self.relay else {
            return;
        };
        if relay.ended {
            return;
        }
        relay.last_activity = now.instant;
        if relay.sse.is_none() && self.log.bytes_out > 0 && self.relay_counted == 0 {
            // A declared length was logged at the head; count what is really sent instead.
            self.log.bytes_out = 0;
        }
        self.relay_counted += chunk.len() as u64;
        self.log.bytes_out += chunk.len() as u64;
        let mut first = false;
        if let Some(o) = &mut relay.sse {
            let had_content = o.saw_content();
            o.observe(chunk);
            first = !had_content && o.saw_content();
        }
        if let Some(r) = &mut relay.recorder {
            self.publish_due |= r.record(chunk);
        }
        if first {
            self.first_token(now);
        }
    }

    /// A chunk of a [`RelayMode::Filter`](super::RelayMode::Filter) body, before it goes to the
    /// client: returns what to send (the same bytes unless the chunk held the usage event the
    /// client did not ask for, or the start of an event still coming). Then see
    /// [`Exchange::publish_due`].
    pub fn on_chunk_filtered(&mut self, chunk: Bytes, now: Now) -> Bytes {
        let Some(relay) = &mut self.relay else {
            return chunk;
        };
        if relay.ended {
            return Bytes::new();
        }
        relay.last_activity = now.instant;
        let mut first = false;
        if let Some(o) = &mut relay.sse {
            let had_content = o.saw_content();
            o.observe(&chunk);
            first = !had_content && o.saw_content();
        }
        let out = match &mut relay.hide {
            Some(h) => h.filter(chunk),
            None => chunk,
        };
        if let Some(r) = &mut relay.recorder {
            self.publish_due |= r.record(&out);
        }
        self.relay_counted += out.len() as u64;
        self.log.bytes_out += out.len() as u64;
        if first {
            self.first_token(now);
        }
        out
    }

    /// Whether requests follow the relayed stream and have news (a chunk, or the end of the
    /// recording): then call [`Exchange::publish`] with the router, then check
    /// [`Router::take_wakeup`]. Never true for a stream nobody follows.
    pub fn publish_due(&self) -> bool {
        self.publish_due
    }

    /// Tells the router the followers have news (see [`Exchange::publish_due`]).
    pub fn publish(&mut self, router: &mut Router) {
        if std::mem::take(&mut self.publish_due) {
            router.publish();
        }
    }

    /// Whether the relayed body may get bytes after the upstream's (an error event), so its
    /// length is not the upstream's.
    pub fn may_add_tail(&self) -> bool {
        self.relay.as_ref().is_some_and(|r| r.sse.is_some())
    }

    /// The relayed body ended: what to send after it, what to store, whether to abort.
    pub fn on_end(&mut self, end: BodyEnd, now: Now, router: &mut Router) -> EndOfRelay {
        let Some(relay) = &mut self.relay else {
            return EndOfRelay::default();
        };
        if relay.ended {
            return EndOfRelay::default();
        }
        relay.ended = true;
        let Some(sse) = &relay.sse else {
            // Not an event stream: a failure can only be shown by cutting the response.
            return EndOfRelay {
                abort: end == BodyEnd::Failed,
                ..EndOfRelay::default()
            };
        };
        let error = sse.finish(&mut self.log);
        let usage = sse.usage();
        // An event the filter was still holding goes out as it was, before any error event.
        let held = relay.hide.as_mut().map(|h| h.finish()).unwrap_or_default();
        let tail = match (held.is_empty(), error) {
            (true, None) => None,
            (false, None) => Some(held),
            (true, Some(e)) => Some(Bytes::from(e)),
            (false, Some(e)) => Some(Bytes::from([&held[..], &e[..]].concat())),
        };
        if let Some(t) = &tail {
            self.log.bytes_out += t.len() as u64;
        }
        let recorder = relay.recorder.take();
        let tape = recorder.as_ref().map(|r| r.tape().clone());
        let entry = match (end, recorder) {
            (BodyEnd::Complete, Some(r)) => r.finish(now.unix.as_millis(), usage).map(Arc::new),
            _ => None,
        };
        let sse = self.relay.as_mut().and_then(|r| r.sse.take());
        self.account_stream(sse.as_ref());
        if let Some(r) = &mut self.relay {
            r.sse = sse;
        }
        if let Some(tape) = tape {
            // Followers end as this client's stream ends: the same tail, the same error.
            let ending = Ending {
                tail: tail.clone().unwrap_or_default(),
                complete: end == BodyEnd::Complete && self.log.stream_complete == Some(true),
                error: self.log.error_code.clone(),
                usage,
            };
            if tape.end(ending) {
                router.publish();
            }
        }
        self.land(entry.clone(), now, router);
        let store = match (entry, &self.lookup) {
            (Some(entry), Some(l)) if l.write => Some(Store {
                key: l.key,
                entry,
                shared: router.store_usable(now.instant),
                ttl_secs: l.ttl_secs,
            }),
            _ => None,
        };
        EndOfRelay {
            tail,
            store,
            abort: false,
        }
    }

    /// The relay's timer (armed at [`Exchange::poll_timeout`]) fired. `Some` when the upstream
    /// has been silent for `stream_idle_timeout_ms`: the relay is over, do as at
    /// [`Exchange::on_end`] (an event stream gets an error event; another body is aborted).
    /// `None` when it has not (chunks came meanwhile): re-arm at [`Exchange::poll_timeout`].
    pub fn handle_relay_timeout(&mut self, now: Now, router: &mut Router) -> Option<EndOfRelay> {
        let deadline = self.poll_timeout()?;
        if !matches!(self.step, Step::Relaying) || now.instant < deadline {
            return None;
        }
        self.handle_relay_timeout_inner(now, router)
    }

    pub(super) fn handle_relay_timeout_inner(
        &mut self,
        now: Now,
        router: &mut Router,
    ) -> Option<EndOfRelay> {
        let err = GatewayError::UpstreamStreamStalled {
            idle_ms: self.idle_timeout().as_millis() as u64,
        };
        self.log.error_code = err.code().map(str::to_string);
        let tape = self.relay.as_mut().and_then(|relay| {
            relay.ended = true;
            relay.recorder.take().map(|r| r.tape().clone())
        });
        if let Some(tape) = tape {
            let ending = Ending {
                tail: Bytes::from(err.sse_event()),
                complete: false,
                error: self.log.error_code.clone(),
                usage: None,
            };
            if tape.end(ending) {
                router.publish();
            }
        }
        self.land(None, now, router);
        let relay = self.relay.as_mut()?;
        if relay.sse.is_none() {
            return Some(EndOfRelay {
                abort: true,
                ..EndOfRelay::default()
            });
        }
        self.log.stream_complete = Some(false);
        let sse = relay.sse.take();
        self.account_stream(sse.as_ref());
        if let Some(r) = &mut self.relay {
            r.sse = sse;
        }
        let tail = Bytes::from(err.sse_event());
        self.log.bytes_out += tail.len() as u64;
        Some(EndOfRelay {
            tail: Some(tail),
            store: None,
            abort: false,
        })
    }

    /// The response is over (sent, or the client is gone): the log record, once. Releases
    /// anything this request still holds in the router.
    pub fn finish(&mut self, now: Now, router: &mut Router) -> Option<RequestLog> {
        if std::mem::replace(&mut self.finished, true) {
            return None;
        }
        self.stop_following();
        let recording = self
            .relay
            .as_mut()
            .filter(|r| !r.ended)
            .and_then(|r| r.recorder.take());
        if let Some(r) = recording {
            // The client went away mid-stream, and the upstream call goes with it: followers
            // end as a cut stream (see `follow`).
            if r.tape().cut(Cut::LeaderGone) {
                router.publish();
            }
        }
        self.land(None, now, router);
        self.release_current(router);
        if self.log.status == 0 {
            // Ended before any response began: the client went away.
            self.log.status = 499;
            self.log.error_code = Some("client_closed_request".into());
        }
        let gone = self
            .relay
            .as_ref()
            .is_some_and(|r| r.sse.is_some() && !r.ended);
        if gone {
            // The client went away before the stream ended: what was relayed is still owed.
            self.log.stream_complete = Some(false);
            let sse = self.relay.as_mut().and_then(|r| r.sse.take());
            self.account_stream(sse.as_ref());
        }
        self.settle_limits(now);
        self.log_overhead(now);
        self.log.total_ms = millis_f64(now.instant.since(self.started));
        self.log.cache = self.cache_status.map(CacheStatus::log_value);
        router.count(&self.log, self.gw.settings(), now.unix);
        Some(std::mem::take(&mut self.log))
    }

    /// The log record so far (for tests and for runtimes that add their own fields).
    pub fn log(&self) -> &RequestLog {
        &self.log
    }
}
