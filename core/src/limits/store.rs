//! What a limiter store does: atomic checks and additions on named counters that expire.
//!
//! Every store (fly-fallback's memory, Redis, the Worker's Durable Object) implements the same
//! two-step operation, so that the store holds counts and nothing else: the windows, the amounts,
//! the limits and the meaning of the totals are decided by the core ([`super::plan`]).
//!
//! An [`Op`] is applied atomically:
//! 1. for each check, `total` = the sum of the unexpired counters named in `sum`;
//! 2. if every check has `add == 0` or `total + add <= limit`, each check's `add` is added to the
//!    counter `sum[0]` (created with expiry `now + ttl_ms` when absent and `add != 0`), then every
//!    [`Adjust`] is applied (skipped when `only_existing` and the counter is absent or expired);
//!    the reply is `granted` with the totals after the additions;
//! 3. otherwise nothing changes and the reply is not granted, with the totals as they were.
//!
//! Counter values are integers within ±2^53, so that Redis's Lua numbers (doubles) and JSON
//! carry them exactly.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The largest magnitude a counter, a limit or an amount may have (2^53 - 1).
pub const MAX_COUNT: i64 = (1 << 53) - 1;

/// A check and reservation: see the module's documentation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    /// The counters summed; the first receives `add`. Never empty.
    pub sum: Vec<String>,
    pub limit: i64,
    pub add: i64,
    /// The life of the counter `sum[0]` when this creates it.
    pub ttl_ms: u64,
}

/// An unconditional change (a settlement).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjust {
    pub key: String,
    pub delta: i64,
    pub ttl_ms: u64,
    /// Change the counter only if it exists (a reservation that expired is not brought back).
    #[serde(default)]
    pub only_existing: bool,
}

/// One atomic operation on a store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op {
    #[serde(default)]
    pub checks: Vec<Check>,
    #[serde(default)]
    pub adjust: Vec<Adjust>,
}

impl Op {
    /// Every counter the op names, once each, in order of first mention (Redis needs them
    /// declared as the script's keys).
    pub fn keys(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        let named = self
            .checks
            .iter()
            .flat_map(|c| c.sum.iter())
            .chain(self.adjust.iter().map(|a| &a.key));
        for k in named {
            if !out.contains(&k.as_str()) {
                out.push(k);
            }
        }
        out
    }

    /// Whether a store may accept this op: bounded amounts and names (a store refuses the rest
    /// rather than overflow).
    pub fn is_well_formed(&self) -> bool {
        let bounded = |v: i64| (-MAX_COUNT..=MAX_COUNT).contains(&v);
        let name_ok = |k: &String| !k.is_empty() && k.len() <= 256;
        self.checks.len() <= 8
            && self.adjust.len() <= 8
            && self.checks.iter().all(|c| {
                !c.sum.is_empty()
                    && c.sum.len() <= 32
                    && c.sum.iter().all(name_ok)
                    && bounded(c.limit)
                    && bounded(c.add)
            })
            && self
                .adjust
                .iter()
                .all(|a| name_ok(&a.key) && bounded(a.delta))
    }
}

/// A store's answer to an [`Op`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub granted: bool,
    /// One per check: after the additions when granted, as they were when not.
    pub totals: Vec<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Counter {
    value: i64,
    expires_at_ms: u64,
}

/// Counters in memory: fly-fallback's store without Redis, and the state of the Worker's
/// Durable Object. Time is given, never read.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryCounters {
    counters: BTreeMap<String, Counter>,
    /// When expired counters were last swept.
    #[serde(default)]
    swept_at_ms: u64,
}

/// How often expired counters are swept (they are ignored as soon as they expire).
const SWEEP_EVERY_MS: u64 = 10_000;

fn clamp(v: i128) -> i64 {
    v.clamp(i128::from(-MAX_COUNT), i128::from(MAX_COUNT)) as i64
}

impl MemoryCounters {
    pub fn new() -> MemoryCounters {
        MemoryCounters::default()
    }

    /// The number of counters held (expired ones not yet swept included).
    pub fn len(&self) -> usize {
        self.counters.len()
    }

    pub fn is_empty(&self) -> bool {
        self.counters.is_empty()
    }

    /// A counter's value now (0 when absent or expired).
    pub fn value(&self, key: &str, now_ms: u64) -> i64 {
        self.counters
            .get(key)
            .filter(|c| c.expires_at_ms > now_ms)
            .map_or(0, |c| c.value)
    }

    /// Applies `op` atomically at `now_ms` (see the module's documentation). An op that is not
    /// [`Op::is_well_formed`] is refused without change.
    pub fn apply(&mut self, op: &Op, now_ms: u64) -> Reply {
        self.sweep(now_ms);
        if !op.is_well_formed() {
            return Reply {
                granted: false,
                totals: vec![0; op.checks.len()],
            };
        }
        let totals: Vec<i64> = op
            .checks
            .iter()
            .map(|c| {
                clamp(
                    c.sum
                        .iter()
                        .map(|k| i128::from(self.value(k, now_ms)))
                        .sum(),
                )
            })
            .collect();
        let fits =
            op.checks.iter().zip(&totals).all(|(c, &t)| {
                c.add == 0 || i128::from(t) + i128::from(c.add) <= i128::from(c.limit)
            });
        if !fits {
            return Reply {
                granted: false,
                totals,
            };
        }
        let mut after = Vec::with_capacity(totals.len());
        for (c, &t) in op.checks.iter().zip(&totals) {
            if let Some(first) = c.sum.first() {
                if c.add != 0 {
                    self.add(first, c.add, c.ttl_ms, false, now_ms);
                }
            }
            after.push(clamp(i128::from(t) + i128::from(c.add)));
        }
        for a in &op.adjust {
            self.add(&a.key, a.delta, a.ttl_ms, a.only_existing, now_ms);
        }
        Reply {
            granted: true,
            totals: after,
        }
    }

    fn add(&mut self, key: &str, delta: i64, ttl_ms: u64, only_existing: bool, now_ms: u64) {
        let live = self
            .counters
            .get(key)
            .is_some_and(|c| c.expires_at_ms > now_ms);
        if live {
            if let Some(c) = self.counters.get_mut(key) {
                c.value = clamp(i128::from(c.value) + i128::from(delta));
            }
        } else if !only_existing && delta != 0 {
            self.counters.insert(
                key.to_string(),
                Counter {
                    value: clamp(i128::from(delta)),
                    expires_at_ms: now_ms.saturating_add(ttl_ms.max(1)),
                },
            );
        }
    }

    fn sweep(&mut self, now_ms: u64) {
        if now_ms.saturating_sub(self.swept_at_ms) < SWEEP_EVERY_MS {
            return;
        }
        self.swept_at_ms = now_ms;
        self.counters.retain(|_, c| c.expires_at_ms > now_ms);
    }

    /// The earliest expiry among the counters (a Durable Object sets its alarm there to drop
    /// its state when everything has expired).
    pub fn next_expiry_ms(&self) -> Option<u64> {
        self.counters.values().map(|c| c.expires_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(keys: &[&str], limit: i64, add: i64) -> Check {
        Check {
            sum: keys.iter().map(|k| k.to_string()).collect(),
            limit,
            add,
            ttl_ms: 60_000,
        }
    }

    #[test]
    fn grants_up_to_the_limit_then_refuses_without_change() {
        let mut m = MemoryCounters::new();
        let op = Op {
            checks: vec![check(&["r"], 3, 1)],
            adjust: vec![],
        };
        let totals: Vec<i64> = (0..3).map(|_| m.apply(&op, 0).totals[0]).collect();
        assert_eq!(totals, [1, 2, 3]);
        let refused = m.apply(&op, 0);
        assert!(!refused.granted);
        assert_eq!(refused.totals, [3]);
        assert_eq!(m.value("r", 0), 3);
    }

    #[test]
    fn one_failing_check_applies_nothing_of_the_others() {
        let mut m = MemoryCounters::new();
        let op = Op {
            checks: vec![check(&["r"], 10, 1), check(&["t"], 100, 101)],
            adjust: vec![],
        };
        assert!(!m.apply(&op, 0).granted);
        assert_eq!(m.value("r", 0), 0);
        assert!(m.is_empty());
    }

    #[test]
    fn a_check_sums_every_named_counter() {
        let mut m = MemoryCounters::new();
        m.apply(
            &Op {
                checks: vec![check(&["a"], 100, 40)],
                adjust: vec![],
            },
            0,
        );
        m.apply(
            &Op {
                checks: vec![check(&["b"], 100, 50)],
                adjust: vec![],
            },
            0,
        );
        let r = m.apply(
            &Op {
                checks: vec![check(&["c", "a", "b"], 100, 11)],
                adjust: vec![],
            },
            0,
        );
        assert!(!r.granted);
        assert_eq!(r.totals, [90]);
        let r = m.apply(
            &Op {
                checks: vec![check(&["c", "a", "b"], 100, 10)],
                adjust: vec![],
            },
            0,
        );
        assert_eq!(r.totals, [100]);
        assert_eq!(m.value("c", 0), 10);
    }

    #[test]
    fn counters_expire_at_their_ttl_from_creation() {
        let mut m = MemoryCounters::new();
        let op = Op {
            checks: vec![check(&["r"], 1, 1)],
            adjust: vec![],
        };
        assert!(m.apply(&op, 1_000).granted);
        assert!(!m.apply(&op, 60_999).granted);
        assert!(m.apply(&op, 61_000).granted, "a new counter after expiry");
    }

    #[test]
    fn an_adjustment_of_an_expired_reservation_is_dropped() {
        let mut m = MemoryCounters::new();
        m.apply(
            &Op {
                checks: vec![check(&["res"], 100, 30)],
                adjust: vec![],
            },
            0,
        );
        let settle = Op {
            checks: vec![],
            adjust: vec![Adjust {
                key: "res".into(),
                delta: -30,
                ttl_ms: 1,
                only_existing: true,
            }],
        };
        m.apply(&settle, 70_000);
        assert_eq!(m.value("res", 70_000), 0);
        assert!(m
            .counters
            .get("res")
            .is_none_or(|c| c.expires_at_ms <= 70_000));
    }

    #[test]
    fn a_zero_add_check_is_a_peek_that_creates_nothing() {
        let mut m = MemoryCounters::new();
        let r = m.apply(
            &Op {
                checks: vec![check(&["x"], 0, 0)],
                adjust: vec![],
            },
            0,
        );
        assert!(r.granted);
        assert!(m.is_empty());
    }

    #[test]
    fn amounts_beyond_2_pow_53_are_refused() {
        let mut m = MemoryCounters::new();
        let r = m.apply(
            &Op {
                checks: vec![check(&["x"], i64::MAX, 1)],
                adjust: vec![],
            },
            0,
        );
        assert!(!r.granted);
        assert!(m.is_empty());
    }

    #[test]
    fn the_op_travels_as_json_unchanged() {
        let op = Op {
            checks: vec![check(&["a", "b"], 5, 2)],
            adjust: vec![Adjust {
                key: "c".into(),
                delta: -1,
                ttl_ms: 9,
                only_existing: true,
            }],
        };
        let json = serde_json::to_string(&op).unwrap_or_default();
        assert_eq!(serde_json::from_str::<Op>(&json).ok(), Some(op));
    }
}
