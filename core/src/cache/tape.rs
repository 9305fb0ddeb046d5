//! A stream being recorded, shared between the request relaying it (the leader of a flight, the
//! only writer) and the identical requests following it live (readers, each at its own
//! position). The chunks are the leader's own `Bytes` (reference-counted, never copied): the
//! recorder's buffer and the followers' feed are the same memory, bounded by the cache's entry
//! limit.
//!
//! A mutex rather than the router's lock: the leader appends without taking the router, so a
//! stream nobody follows costs one uncontended lock per chunk. The router is only needed to wake
//! parked followers (see [`Tape::push`]).

use std::sync::{Mutex, MutexGuard};

use bytes::{Bytes, BytesMut};

/// Why a tape was cut short for its followers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// The recording grew past the cache's entry limit and was dropped.
    TooLarge,
    /// The leader's client went away, and the upstream call with it.
    LeaderGone,
}

impl Cut {
    /// For the followers' log lines.
    pub fn detail(self) -> &'static str {
        match self {
            Cut::TooLarge => "the shared stream grew past the cache's entry limit",
            Cut::LeaderGone => "the client of the request sharing its stream went away",
        }
    }
}

/// How the stream ended for the leader's client, which is how it ends for the followers.
#[derive(Debug, Clone, Default)]
pub struct Ending {
    /// The bytes the leader's client got after the chunks (an error event for a broken stream).
    pub tail: Bytes,
    pub complete: bool,
    /// The leader's error code, if it ended in one.
    pub error: Option<String>,
    /// What the answer cost the leader (what a follower saved).
    pub usage: Option<crate::sse::Usage>,
}

/// What a follower at some position reads next.
#[derive(Debug, Clone)]
pub enum Read {
    Chunk(Bytes),
    /// Nothing new yet: wait for the leader's next publication.
    Pending,
    Ended(Ending),
    Cut(Cut),
}

#[derive(Debug, Default)]
struct State {
    chunks: Vec<Bytes>,
    ending: Option<Ending>,
    cut: Option<Cut>,
    followers: usize,
}

#[derive(Debug, Default)]
pub struct Tape(Mutex<State>);

impl Tape {
    fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock only means a panic elsewhere; the data is still consistent.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a chunk; returns whether someone follows (then the leader must wake them).
    pub fn push(&self, chunk: Bytes) -> bool {
        let mut s = self.state();
        if s.cut.is_none() && s.ending.is_none() {
            s.chunks.push(chunk);
        }
        s.followers > 0
    }

    /// Ends the tape for its followers (once; a later end or cut is ignored). Returns whether
    /// someone follows.
    pub fn end(&self, ending: Ending) -> bool {
        let mut s = self.state();
        if s.cut.is_none() && s.ending.is_none() {
            s.ending = Some(ending);
        }
        s.followers > 0
    }

    /// Cuts the tape and drops its chunks (followers end with an error event; nobody new may
    /// follow). Returns whether someone follows.
    pub fn cut(&self, why: Cut) -> bool {
        let mut s = self.state();
        if s.ending.is_none() && s.cut.is_none() {
            s.cut = Some(why);
            s.chunks = Vec::new();
        }
        s.followers > 0
    }

    /// A new follower, from the first chunk; false when it is too late (the tape was cut).
    pub fn follow(&self) -> bool {
        let mut s = self.state();
        if s.cut.is_some() {
            return false;
        }
        s.followers += 1;
        true
    }

    pub fn unfollow(&self) {
        let mut s = self.state();
        s.followers = s.followers.saturating_sub(1);
    }

    /// What the follower at `at` (chunks already read) gets next.
    pub fn read(&self, at: usize) -> Read {
        let s = self.state();
        if let Some(c) = s.cut {
            return Read::Cut(c);
        }
        if let Some(chunk) = s.chunks.get(at) {
            return Read::Chunk(chunk.clone());
        }
        match &s.ending {
            Some(e) => Read::Ended(e.clone()),
            None => Read::Pending,
        }
    }

    /// Whether it was cut (too late to follow).
    pub fn is_cut(&self) -> bool {
        self.state().cut.is_some()
    }

    /// Every chunk as one buffer (the stored entry's body).
    pub fn concat(&self) -> Bytes {
        let s = self.state();
        match s.chunks.as_slice() {
            [] => Bytes::new(),
            [one] => one.clone(),
            many => {
                let mut all = BytesMut::with_capacity(many.iter().map(Bytes::len).sum());
                for c in many {
                    all.extend_from_slice(c);
                }
                all.freeze()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn followers_read_every_chunk_then_the_ending() {
        let t = Tape::default();
        assert!(!t.push(Bytes::from_static(b"a")), "nobody follows yet");
        assert!(t.follow());
        assert!(t.push(Bytes::from_static(b"b")));
        assert!(matches!(t.read(0), Read::Chunk(c) if &c[..] == b"a"));
        assert!(matches!(t.read(1), Read::Chunk(c) if &c[..] == b"b"));
        assert!(matches!(t.read(2), Read::Pending));
        t.end(Ending {
            complete: true,
            ..Ending::default()
        });
        assert!(matches!(t.read(2), Read::Ended(e) if e.complete));
        assert_eq!(&t.concat()[..], b"ab");
    }

    #[test]
    fn a_cut_tape_drops_its_chunks_and_takes_no_new_follower() {
        let t = Tape::default();
        assert!(t.follow());
        t.push(Bytes::from_static(b"a"));
        assert!(t.cut(Cut::TooLarge));
        assert!(matches!(t.read(0), Read::Cut(Cut::TooLarge)));
        assert!(t.concat().is_empty());
        assert!(!t.follow());
        t.end(Ending::default());
        assert!(matches!(t.read(0), Read::Cut(_)), "a cut is final");
    }
}
