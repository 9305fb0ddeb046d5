//! Following another request's stream live: a streamed request whose identical miss waits on a
//! flight whose leader is relaying a recorded event stream answers at once with the head the
//! leader's client got, then every chunk the leader relayed so far, then each new one as the
//! leader relays it, and ends as the leader's client's stream ended (its tail, an error event
//! for a broken stream, included).
//!
//! The chunks come from the leader's [`Tape`] (the recording for the cache, so memory stays
//! within the cache's entry limit). When the tape is cut (the recording grew past that limit,
//! or the leader's client went away and took the upstream call with it), a follower ends with
//! the interrupted-stream error event the gateway sends for any cut stream, and its log line
//! says why; a waiter that has not started following calls the upstream itself instead.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::CONTENT_TYPE;
use http::{HeaderMap, HeaderValue};

use super::{Action, Exchange, Response, ResponseBody, Step, Timer};
use crate::cache::tape::{Read, Tape};
use crate::cache::{self, CacheStatus};
use crate::error::GatewayError;
use crate::headers;
use crate::pricing::Money;
use crate::router::Live;
use crate::time::{Instant, Now};

/// A follower's place on its leader's tape.
#[derive(Debug)]
pub(super) struct Follow {
    tape: Arc<Tape>,
    /// Chunks already emitted.
    next: usize,
    /// When the last one came.
    last: Instant,
}

/// How much longer than the leader's idle timeout a follower waits for news before ending on
/// its own: the leader's own timeout ends the tape first, unless the leader vanished unseen.
const FOLLOW_SLACK: Duration = Duration::from_secs(1);

impl Exchange {
    /// Starts following `live`; false when it is too late (the tape was cut).
    pub(super) fn start_following(&mut self, live: &Live, now: Now) -> bool {
        if !live.tape.follow() {
            return false;
        }
        self.following = Some(Follow {
            tape: live.tape.clone(),
            next: 0,
            last: now.instant,
        });
        // As a waiter given a landed answer: a hit, costing nothing (the headers are a streamed
        // hit's, `age: 0`: the answer is being made now).
        self.cache_status = Some(CacheStatus::Hit);
        let model = self.log.model.as_deref().unwrap_or_default();
        if self.gw.settings().prices.get(model).is_some() {
            self.log.cost_usd = Some(Money::ZERO);
            self.log.cost_estimated = Some(false);
        } else {
            self.log.unpriced = true;
        }
        let mut headers = HeaderMap::with_capacity(8);
        headers.insert(CONTENT_TYPE, live.content_type.clone());
        headers.insert(http::header::AGE, HeaderValue::from_static("0"));
        headers.insert(
            cache::STATUS_HEADER,
            HeaderValue::from_static(CacheStatus::Hit.header_value()),
        );
        headers.insert(headers::REQUEST_ID, self.request_id.clone());
        self.model_headers(&mut headers);
        self.step = Step::Respond(Response {
            status: live.status,
            headers,
            body: ResponseBody::Driven,
            prefix: Bytes::new(),
            store_on_end: false,
        });
        true
    }

    /// The follower's next action: a chunk to emit, a wait for the leader's next one, or its
    /// end. `None` when the step was set instead.
    pub(super) fn follow(&mut self, now: Now) -> Option<Action> {
        let Some(f) = &mut self.following else {
            self.step = Step::End { abort: false };
            return None;
        };
        match f.tape.read(f.next) {
            Read::Chunk(chunk) => {
                f.next += 1;
                f.last = now.instant;
                let first = f.next == 1;
                self.log.bytes_out += chunk.len() as u64;
                if first {
                    self.first_token(now);
                }
                self.step = Step::Follow;
                Some(Action::Emit(chunk))
            }
            Read::Pending => {
                let at = f.last.plus(self.idle_timeout() + FOLLOW_SLACK);
                self.deadline = Some((at, Timer::Follow));
                self.step = Step::Follow;
                Some(Action::AwaitFlight)
            }
            Read::Ended(end) => {
                self.log.stream_complete = Some(end.complete);
                if end.error.is_some() {
                    self.log.error_code = end.error;
                }
                let model = self.log.model.as_deref().unwrap_or_default();
                self.log.saved_usd = end
                    .usage
                    .and_then(|u| self.gw.settings().prices.cost(model, &u));
                self.end_following(end.tail)
            }
            Read::Cut(why) => {
                let err = GatewayError::UpstreamStreamInterrupted;
                self.log.stream_complete = Some(false);
                self.log.error_code = err.code().map(str::to_string);
                self.log.error_detail = Some(why.detail().to_string());
                self.end_following(Bytes::from(err.sse_event()))
            }
        }
    }

    fn end_following(&mut self, tail: Bytes) -> Option<Action> {
        self.stop_following();
        self.deadline = None;
        self.step = Step::End { abort: false };
        if tail.is_empty() {
            return None;
        }
        self.log.bytes_out += tail.len() as u64;
        Some(Action::Emit(tail))
    }

    /// No news from the leader for longer than its own idle timeout: it vanished without
    /// ending its tape; the follower ends as a stalled stream.
    pub(super) fn follow_stalled(&mut self) {
        let Some(f) = &self.following else {
            return;
        };
        if !matches!(f.tape.read(f.next), Read::Pending) {
            // News came meanwhile: the next poll reads it.
            return;
        }
        let err = GatewayError::UpstreamStreamStalled {
            idle_ms: self.idle_timeout().as_millis() as u64,
        };
        self.log.stream_complete = Some(false);
        self.log.error_code = err.code().map(str::to_string);
        self.stop_following();
        let tail = Bytes::from(err.sse_event());
        self.log.bytes_out += tail.len() as u64;
        self.outbox = Some(tail);
        self.step = Step::End { abort: false };
    }

    /// Leaves the tape (the response is over, or the client went away).
    pub(super) fn stop_following(&mut self) {
        if let Some(f) = self.following.take() {
            f.tape.unfollow();
            if self.log.stream_complete.is_none() {
                self.log.stream_complete = Some(false);
            }
        }
    }
}
