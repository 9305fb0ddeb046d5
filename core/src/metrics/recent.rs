//! The last few minutes in fixed steps, so rates need no second reading.

use crate::time::UnixMillis;

pub const RECENT_STEP_SECS: u64 = 10;
/// Five minutes.
pub const RECENT_BUCKETS: usize = 30;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecentBucket {
    /// The step's number since the epoch (`unix seconds / RECENT_STEP_SECS`).
    pub step: u64,
    pub requests: u64,
    pub errors: u64,
    pub failovers: u64,
    pub cache_hits: u64,
}

/// A ring of [`RECENT_BUCKETS`] steps; a step's slot is reused when its time comes round again.
#[derive(Debug, Clone, Default)]
pub struct Recent {
    ring: [RecentBucket; RECENT_BUCKETS],
}

fn step_of(now: UnixMillis) -> u64 {
    now.as_millis() / 1000 / RECENT_STEP_SECS
}

impl Recent {
    pub fn add(&mut self, now: UnixMillis, error: bool, failover: bool, cache_hit: bool) {
        let step = step_of(now);
        let Some(b) = self.ring.get_mut((step % RECENT_BUCKETS as u64) as usize) else {
            return;
        };
        if b.step != step {
            *b = RecentBucket {
                step,
                ..RecentBucket::default()
            };
        }
        b.requests += 1;
        b.errors += u64::from(error);
        b.failovers += u64::from(failover);
        b.cache_hits += u64::from(cache_hit);
    }

    /// The last [`RECENT_BUCKETS`] steps up to `now`'s, oldest first (empty steps as zeros).
    pub fn points(&self, now: UnixMillis) -> impl Iterator<Item = RecentBucket> + '_ {
        let current = step_of(now);
        let first = current.saturating_sub(RECENT_BUCKETS as u64 - 1);
        (first..=current).map(move |step| {
            let slot = self.ring.get((step % RECENT_BUCKETS as u64) as usize);
            match slot {
                Some(b) if b.step == step => *b,
                _ => RecentBucket {
                    step,
                    ..RecentBucket::default()
                },
            }
        })
    }
}
