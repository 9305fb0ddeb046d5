//! Live fan-out on virtual time: streamed requests that wait on an identical miss follow the
//! leader's stream as it is relayed (the head at once, every chunk so far, then each new one when
//! the leader relays it), instead of waiting for its whole stream; and call the upstream
//! themselves when it has nothing to share.

use bytes::Bytes;
use http::HeaderMap;

use super::tests::{Sim, CONFIG, SSE};
use super::*;

/// A deterministic streamed request that asks for the usage chunk itself (so the stream is
/// relayed untouched: the gateway cuts nothing).
const STREAM_USAGE: &[u8] = br#"{"model":"m","temperature":0,"stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;

/// A request driven by hand beside the others, as a runtime would drive it.
struct Client {
    ex: Exchange,
    /// When (ms) the response head went out, and the response.
    head: Option<(u64, Response)>,
    /// What a driven body emitted (ms, bytes).
    got: Vec<(u64, Bytes)>,
    ended: bool,
    /// It called the upstream itself.
    sent: Option<Attempt>,
}

impl Client {
    /// A streamed request with its own request id; its body read, its lookup a miss.
    fn miss(sim: &mut Sim, id: &str) -> Client {
        Client::miss_with(sim, id, STREAM_USAGE)
    }

    fn miss_with(sim: &mut Sim, id: &str, body: &'static [u8]) -> Client {
        let mut ex = sim.start(
            "POST",
            "/v1/chat/completions",
            &[
                ("authorization", "Bearer client-1"),
                ("content-type", "application/json"),
                ("x-request-id", id),
            ],
        );
        assert!(matches!(sim.poll(&mut ex), Action::ReadBody { .. }));
        ex.on_body(Bytes::from_static(body), sim.now());
        assert!(matches!(sim.poll(&mut ex), Action::Lookup { .. }));
        ex.on_lookup(None, sim.now());
        Client {
            ex,
            head: None,
            got: Vec::new(),
            ended: false,
            sent: None,
        }
    }

    /// Runs its loop until it waits (or ends, or calls the upstream).
    fn pump(&mut self, sim: &mut Sim) {
        while !self.ended && self.sent.is_none() {
            match sim.poll(&mut self.ex) {
                Action::Respond(r) => {
                    assert!(self.head.is_none(), "one head");
                    let driven = matches!(r.body, ResponseBody::Driven);
                    self.head = Some((sim.ms(), r));
                    if !driven {
                        return;
                    }
                }
                Action::Emit(b) => self.got.push((sim.ms(), b)),
                Action::End { abort } => {
                    assert!(!abort);
                    self.ended = true;
                }
                Action::AwaitFlight => return,
                Action::Send(a) => self.sent = Some(a),
                other => panic!("unexpected {other:?}"),
            }
        }
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head
            .as_ref()
            .and_then(|(_, r)| r.headers.get(name))
            .and_then(|v| v.to_str().ok())
    }

    fn body(&self) -> Vec<u8> {
        self.got.iter().flat_map(|(_, b)| b.to_vec()).collect()
    }

    /// When (ms since `t0`) each emitted piece went out.
    fn times(&self, t0: u64) -> Vec<u64> {
        self.got.iter().map(|(t, _)| t - t0).collect()
    }
}

/// Wakes the parked followers if the router says so (as the runtimes do after a router call).
fn wake(sim: &mut Sim, followers: &mut [&mut Client]) {
    if sim.router.take_wakeup() {
        for f in followers.iter_mut() {
            f.ex.on_wakeup(sim.now());
            f.pump(sim);
        }
    }
}

/// The leader: its miss, its upstream call, the event-stream head 10 ms later, and its response.
fn lead(sim: &mut Sim) -> (Exchange, Attempt) {
    let mut c = Client::miss(sim, "leader");
    let Action::Send(a) = sim.poll(&mut c.ex) else {
        panic!("the first miss calls the upstream")
    };
    sim.advance(10);
    let mut head = HeaderMap::new();
    head.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    c.ex.on_response_head(a.id, 200, head, sim.now(), &mut sim.router);
    // One attempt allowed: the head goes out at once, the stream relayed.
    let Action::Respond(r) = sim.poll(&mut c.ex) else {
        panic!("the leader responds")
    };
    assert!(matches!(r.body, ResponseBody::Relay(RelayMode::Observe)));
    assert!(r.store_on_end);
    (c.ex, a)
}

/// The leader relays a chunk as the runtimes do: to its client, then observed, then published
/// if someone follows.
fn relay(sim: &mut Sim, leader: &mut Exchange, chunk: &'static [u8]) {
    leader.on_chunk(&Bytes::from_static(chunk), sim.now());
    if leader.publish_due() {
        leader.publish(&mut sim.router);
    }
}

#[test]
fn a_streaming_waiter_follows_the_leaders_stream_live_with_one_upstream_call() {
    let mut sim = Sim::new(CONFIG);
    let t0 = sim.ms();
    let (mut leader, _) = lead(&mut sim);
    assert!(sim.router.take_wakeup(), "the stream goes live");
    relay(&mut sim, &mut leader, SSE[0]);
    assert!(!leader.publish_due());

    sim.advance(40);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    let (head_at, head) = follower.head.as_ref().expect("the head at once");
    assert_eq!(head_at - t0, 50);
    assert_eq!(head.status, 200);
    assert!(follower.sent.is_none(), "no upstream call of its own");
    assert_eq!(follower.header("x-gateway-cache"), Some("HIT"));
    assert_eq!(follower.header("x-request-id"), Some("follower"));
    assert_eq!(follower.header("content-type"), Some("text/event-stream"));
    assert_eq!(follower.header("age"), Some("0"));
    assert_eq!(
        follower.times(t0),
        [50],
        "the chunk already relayed, at once"
    );

    sim.advance(100);
    leader.on_chunk(&Bytes::from_static(SSE[1]), sim.now());
    assert!(leader.publish_due(), "someone follows: the chunk is news");
    wake(&mut sim, &mut [&mut follower]);
    assert_eq!(
        follower.times(t0),
        [50],
        "parked until the runtime publishes"
    );
    leader.publish(&mut sim.router);
    assert!(!leader.publish_due());
    wake(&mut sim, &mut [&mut follower]);
    assert_eq!(
        follower.times(t0),
        [50, 150],
        "the next chunk as the leader relays it"
    );

    sim.advance(100);
    relay(&mut sim, &mut leader, SSE[2]);
    wake(&mut sim, &mut [&mut follower]);
    assert_eq!(follower.times(t0), [50, 150, 250]);
    assert!(!follower.ended, "not before the leader's stream ended");
    let end = leader.on_end(BodyEnd::Complete, sim.now(), &mut sim.router);
    assert!(end.tail.is_none());
    assert!(end.store.is_some(), "the leader still stores the recording");
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended, "ends complete with the leader's stream");
    assert_eq!(follower.body(), SSE.concat());

    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(log.cache, Some("hit"));
    assert_eq!(log.stream_complete, Some(true));
    assert_eq!(log.status, 200);
    assert_eq!(
        log.ttft_ms,
        Some(0.0),
        "its first chunk went out with its head"
    );
    assert_eq!(log.bytes_out, SSE.concat().len() as u64);
    assert_eq!(log.error_code, None);
    let leader_log = leader.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(leader_log.cache, Some("miss"));
}

#[test]
fn late_and_early_waiters_alike_get_every_event_and_waiters_that_arrive_before_the_head_follow_at_the_head(
) {
    let mut sim = Sim::new(CONFIG);
    let t0 = sim.ms();
    // Both miss before the leader's upstream has answered.
    let mut c = Client::miss(&mut sim, "leader");
    let Action::Send(a) = sim.poll(&mut c.ex) else {
        panic!()
    };
    let mut early = Client::miss(&mut sim, "early");
    early.pump(&mut sim);
    assert!(early.head.is_none(), "nothing to follow yet: it waits");
    sim.advance(10);
    let mut head = HeaderMap::new();
    head.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    c.ex.on_response_head(a.id, 200, head, sim.now(), &mut sim.router);
    let Action::Respond(_) = sim.poll(&mut c.ex) else {
        panic!()
    };
    wake(&mut sim, &mut [&mut early]);
    assert_eq!(early.head.as_ref().map(|(t, _)| t - t0), Some(10));
    let mut leader = c.ex;
    for chunk in SSE {
        sim.advance(100);
        relay(&mut sim, &mut leader, chunk);
        wake(&mut sim, &mut [&mut early]);
    }
    let late_t = sim.ms();
    let mut late = Client::miss(&mut sim, "late");
    late.pump(&mut sim);
    assert_eq!(late.times(t0), [310, 310, 310], "everything so far at once");
    leader.on_end(BodyEnd::Complete, sim.now(), &mut sim.router);
    wake(&mut sim, &mut [&mut early, &mut late]);
    assert_eq!(early.times(t0), [110, 210, 310]);
    for f in [&early, &late] {
        assert!(f.ended);
        assert_eq!(f.body(), SSE.concat());
    }
    assert_eq!(late_t - t0, 310);
}

#[test]
fn a_broken_leader_stream_ends_its_followers_with_the_same_error_event() {
    let mut sim = Sim::new(CONFIG);
    let (mut leader, _) = lead(&mut sim);
    relay(&mut sim, &mut leader, SSE[0]);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    sim.advance(50);
    let end = leader.on_end(BodyEnd::Failed, sim.now(), &mut sim.router);
    let tail = end.tail.expect("the leader's client gets an error event");
    assert!(end.store.is_none());
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended);
    assert_eq!(follower.body(), [SSE[0], &tail[..]].concat());
    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    let leader_log = leader.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(log.stream_complete, Some(false));
    assert_eq!(log.stream_complete, leader_log.stream_complete);
    assert_eq!(
        log.error_code, leader_log.error_code,
        "logged as the leader's"
    );
}

#[test]
fn a_stalled_leader_stream_ends_its_followers_with_the_stall_event() {
    let mut sim = Sim::new(CONFIG);
    let t0 = sim.ms();
    let (mut leader, _) = lead(&mut sim);
    relay(&mut sim, &mut leader, SSE[0]);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    // The leader's idle timeout (2 s) comes before the follower's own (2 s + 1 s).
    let at = leader.poll_timeout().unwrap();
    assert!(follower.ex.poll_timeout().unwrap() > at);
    sim.advance((at.as_micros() / 1000) - sim.ms());
    let end = leader
        .handle_relay_timeout(sim.now(), &mut sim.router)
        .expect("stalled");
    let tail = end.tail.unwrap();
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended);
    assert_eq!(follower.times(t0), [10, 2010]);
    assert_eq!(follower.body(), [SSE[0], &tail[..]].concat());
    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(log.error_code.as_deref(), Some("upstream_stream_timeout"));
}

#[test]
fn a_follower_ends_on_its_own_when_the_leader_vanishes_without_an_end() {
    let mut sim = Sim::new(CONFIG);
    let (mut leader, _) = lead(&mut sim);
    relay(&mut sim, &mut leader, SSE[0]);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    // The leader is never heard of again (a runtime that lost it): 2 s idle + 1 s of slack.
    let at = follower
        .ex
        .poll_timeout()
        .expect("a follower never waits forever");
    assert_eq!(at.as_micros() / 1000 - sim.ms(), 3_000);
    sim.advance(3_000);
    follower.ex.handle_timeout(sim.now(), &mut sim.router);
    follower.pump(&mut sim);
    assert!(follower.ended);
    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(log.error_code.as_deref(), Some("upstream_stream_timeout"));
    drop(leader);
}

#[test]
fn a_leader_whose_client_leaves_ends_its_followers_with_the_interrupted_event_and_says_why() {
    let mut sim = Sim::new(CONFIG);
    let (mut leader, _) = lead(&mut sim);
    relay(&mut sim, &mut leader, SSE[0]);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    sim.advance(30);
    // The leader's client goes away: the runtime drops the upstream body and finishes.
    leader.finish(sim.now(), &mut sim.router).unwrap();
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended);
    let interrupted = GatewayError::UpstreamStreamInterrupted.sse_event();
    assert_eq!(follower.body(), [SSE[0], &interrupted[..]].concat());
    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    assert_eq!(log.stream_complete, Some(false));
    assert_eq!(
        log.error_code.as_deref(),
        Some("upstream_stream_interrupted")
    );
    assert!(
        log.error_detail
            .as_deref()
            .unwrap_or_default()
            .contains("went away"),
        "{:?}",
        log.error_detail
    );
    // A later identical request finds no flight to follow: it calls the upstream.
    let mut next = Client::miss(&mut sim, "next");
    next.pump(&mut sim);
    assert!(next.sent.is_some());
}

#[test]
fn waiters_call_the_upstream_themselves_when_the_leader_answers_an_error() {
    let mut sim = Sim::new(CONFIG);
    let mut c = Client::miss(&mut sim, "leader");
    let Action::Send(a) = sim.poll(&mut c.ex) else {
        panic!()
    };
    let mut waiter = Client::miss(&mut sim, "waiter");
    waiter.pump(&mut sim);
    assert!(waiter.head.is_none() && waiter.sent.is_none());
    sim.advance(10);
    let mut head = HeaderMap::new();
    head.insert("content-type", HeaderValue::from_static("application/json"));
    c.ex.on_response_head(a.id, 500, head, sim.now(), &mut sim.router);
    assert!(matches!(
        sim.poll(&mut c.ex),
        Action::ReadUpstreamBody { .. }
    ));
    c.ex.on_upstream_body(
        Bytes::from_static(br#"{"error":{"message":"boom"}}"#),
        sim.now(),
        &mut sim.router,
    );
    let Action::Respond(r) = sim.poll(&mut c.ex) else {
        panic!()
    };
    assert_eq!(r.status, 500);
    wake(&mut sim, &mut [&mut waiter]);
    assert!(waiter.head.is_none(), "nothing was followed");
    assert!(waiter.sent.is_some(), "it calls the upstream itself");
}

#[test]
fn a_recording_dropped_past_the_entry_limit_cuts_its_followers_and_sends_new_waiters_upstream() {
    // Entries of at most 100 bytes: the first event fits, the second does not.
    let config = CONFIG.replace(
        r#""routing":"#,
        r#""cache":{"max_entry_bytes":100},"routing":"#,
    );
    assert!(SSE[0].len() < 100 && SSE[0].len() + SSE[1].len() > 100);
    let mut sim = Sim::new(&config);
    let (mut leader, _) = lead(&mut sim);
    relay(&mut sim, &mut leader, SSE[0]);
    let mut follower = Client::miss(&mut sim, "follower");
    follower.pump(&mut sim);
    assert_eq!(follower.got.len(), 1);
    sim.advance(100);
    leader.on_chunk(&Bytes::from_static(SSE[1]), sim.now());
    assert!(leader.publish_due(), "the followers must hear of the cut");
    leader.publish(&mut sim.router);
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended);
    let interrupted = GatewayError::UpstreamStreamInterrupted.sse_event();
    assert_eq!(follower.body(), [SSE[0], &interrupted[..]].concat());
    let log = follower.ex.finish(sim.now(), &mut sim.router).unwrap();
    assert!(log
        .error_detail
        .as_deref()
        .unwrap_or_default()
        .contains("entry limit"));
    // The leader's own client goes on undisturbed; a new waiter cannot follow any more.
    let mut late = Client::miss(&mut sim, "late");
    late.pump(&mut sim);
    assert!(late.head.is_none());
    assert!(late.sent.is_some(), "it calls the upstream itself");
    relay(&mut sim, &mut leader, SSE[2]);
    assert!(!leader.publish_due());
    let end = leader.on_end(BodyEnd::Complete, sim.now(), &mut sim.router);
    assert!(end.store.is_none(), "too large to store");
    assert!(end.tail.is_none());
}

#[test]
fn a_leader_that_held_its_first_events_shares_them_and_a_committed_leader_goes_live_at_its_content()
{
    // Two attempts allowed and keepalives after 20 ms: the leader's head goes out early (a
    // driven response), its stream follows the first content.
    let config = CONFIG.replace(
        r#""routing":{"max_attempts":1,"keepalive_after_ms":0}"#,
        r#""routing":{"max_attempts":2,"keepalive_after_ms":20}"#,
    );
    let mut sim = Sim::new(&config);
    let t0 = sim.ms();
    let mut leader = Client::miss(&mut sim, "leader");
    let Action::Send(a) = sim.poll(&mut leader.ex) else {
        panic!()
    };
    let mut waiter = Client::miss(&mut sim, "waiter");
    waiter.pump(&mut sim);
    // Keepalives are due at 20 ms: the leader's head and first keepalive go out.
    sim.advance(20);
    leader.ex.handle_timeout(sim.now(), &mut sim.router);
    let Action::Respond(r) = sim.poll(&mut leader.ex) else {
        panic!()
    };
    assert!(matches!(r.body, ResponseBody::Driven));
    assert!(matches!(sim.poll(&mut leader.ex), Action::Emit(_)));
    let mut head = HeaderMap::new();
    head.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    sim.advance(10);
    leader
        .ex
        .on_response_head(a.id, 200, head, sim.now(), &mut sim.router);
    assert!(matches!(
        sim.poll(&mut leader.ex),
        Action::ReadUpstreamChunk
    ));
    wake(&mut sim, &mut [&mut waiter]);
    assert!(
        waiter.head.is_none(),
        "no content yet: another upstream may still answer"
    );
    // A role-only event (no content) is held back, then the content comes.
    let role: &'static [u8] = b"data: {\"choices\":[{\"delta\":{\"role\":\"assistant\"}}]}\n\n";
    leader
        .ex
        .on_upstream_chunk(a.id, Bytes::from_static(role), sim.now(), &mut sim.router);
    wake(&mut sim, &mut [&mut waiter]);
    assert!(waiter.head.is_none());
    sim.advance(10);
    leader
        .ex
        .on_upstream_chunk(a.id, Bytes::from_static(SSE[0]), sim.now(), &mut sim.router);
    wake(&mut sim, &mut [&mut waiter]);
    assert_eq!(waiter.head.as_ref().map(|(t, _)| t - t0), Some(40));
    assert_eq!(waiter.body(), [role, SSE[0]].concat());
    assert!(matches!(sim.poll(&mut leader.ex), Action::Emit(_)));
    for chunk in [SSE[1], SSE[2]] {
        sim.advance(100);
        leader
            .ex
            .on_upstream_chunk(a.id, Bytes::from_static(chunk), sim.now(), &mut sim.router);
        assert!(matches!(sim.poll(&mut leader.ex), Action::Emit(_)));
        wake(&mut sim, &mut [&mut waiter]);
    }
    assert_eq!(waiter.times(t0), [40, 40, 140, 240]);
    leader
        .ex
        .on_upstream_end(a.id, BodyEnd::Complete, sim.now(), &mut sim.router);
    wake(&mut sim, &mut [&mut waiter]);
    assert!(waiter.ended);
    assert_eq!(waiter.body(), [role, SSE[0], SSE[1], SSE[2]].concat());
}

#[test]
fn followers_get_the_stream_as_the_leaders_client_got_it_the_usage_chunk_it_did_not_ask_for_cut() {
    let mut sim = Sim::new(CONFIG);
    // Neither asks for the usage chunk: the gateway asks for it upstream and cuts it.
    let mut c = Client::miss_with(&mut sim, "leader", super::tests::STREAM0);
    let Action::Send(a) = sim.poll(&mut c.ex) else {
        panic!()
    };
    let mut follower = Client::miss_with(&mut sim, "follower", super::tests::STREAM0);
    follower.pump(&mut sim);
    let mut head = HeaderMap::new();
    head.insert(
        "content-type",
        HeaderValue::from_static("text/event-stream"),
    );
    c.ex.on_response_head(a.id, 200, head, sim.now(), &mut sim.router);
    let Action::Respond(r) = sim.poll(&mut c.ex) else {
        panic!()
    };
    assert!(matches!(r.body, ResponseBody::Relay(RelayMode::Filter)));
    let mut leader = c.ex;
    let mut sent = Vec::new();
    for chunk in SSE {
        sim.advance(100);
        let out = leader.on_chunk_filtered(Bytes::from_static(chunk), sim.now());
        sent.extend_from_slice(&out);
        if leader.publish_due() {
            leader.publish(&mut sim.router);
        }
        wake(&mut sim, &mut [&mut follower]);
    }
    let end = leader.on_end(BodyEnd::Complete, sim.now(), &mut sim.router);
    sent.extend_from_slice(&end.tail.unwrap_or_default());
    wake(&mut sim, &mut [&mut follower]);
    assert!(follower.ended);
    assert_eq!(follower.body(), sent);
    assert!(!String::from_utf8_lossy(&sent).contains("usage"));
}
