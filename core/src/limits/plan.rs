//! The limiter's decisions: what a request reserves, what the store's totals mean, the
//! `x-ratelimit-*` values, and the settlement to the actual usage.
//!
//! Windows are fixed minutes of UTC time (OpenAI's headers keep their meaning: `remaining` is
//! what is left after this request, `reset` the time until the window is full again). A budget
//! has a spent counter per UTC day or month, and reservations in per-minute slots that live
//! [`RESERVATION_MINUTES`] minutes: a reservation whose settlement never comes (the machine died
//! mid-request) stops counting then, so a budget cannot leak away.

use super::config::{Budget, KeyPolicy, Period};
use super::store::{Adjust, Check, Op, Reply, MAX_COUNT};
use crate::error::{GatewayError, RateLimitKind};
use crate::pricing::Money;

const MINUTE_MS: u64 = 60_000;
const DAY_MS: u64 = 86_400_000;
/// How long a budget reservation counts without its settlement.
pub const RESERVATION_MINUTES: u64 = 15;
/// Picodollars per nanodollar: budgets are counted in nanodollars (see [`super::store`]).
const PICOS_PER_NANO: u128 = 1000;

/// A call to a limiter store: the object (a Durable Object's name; a prefix of every counter
/// in `op`) and the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LimitCall {
    pub object: String,
    pub op: Op,
}

/// What a request asks of its key's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Demand {
    /// Tokens to reserve (the prompt estimated, plus the maximum output); 0 for a cache hit.
    pub tokens: u64,
    /// The worst-case cost to reserve; zero for a cache hit.
    pub cost: Money,
    /// A cache hit: counts against requests only.
    pub hit: bool,
}

/// Which check of a reservation is which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dim {
    Requests,
    Tokens,
    Budget,
}

/// A reservation asked for and not yet answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    object: String,
    dims: Vec<Dim>,
    adds: Vec<i64>,
    limits: Vec<i64>,
    window_end_ms: u64,
    period_end_ms: u64,
    tokens_key: Option<String>,
    slot_key: Option<String>,
    shards: u32,
}

/// A granted reservation, to settle when the request is over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reservation {
    object: String,
    tokens_key: Option<String>,
    tokens: i64,
    slot_key: Option<String>,
    nanos: i64,
    budget: Option<Budget>,
    shards: u32,
}

/// The `x-ratelimit-*` values of one dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateValues {
    pub limit: u64,
    pub remaining: u64,
    pub reset_ms: u64,
}

/// What the limiter says of a request.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub requests: Option<RateValues>,
    pub tokens: Option<RateValues>,
    /// Granted: what to settle later. Refused: the error (and `retry_after_ms`).
    pub outcome: Result<Reservation, GatewayError>,
}

fn nanos(m: Money) -> i64 {
    let n = m.picos().div_ceil(PICOS_PER_NANO);
    i64::try_from(n).unwrap_or(MAX_COUNT).min(MAX_COUNT)
}

fn to_count(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(MAX_COUNT).min(MAX_COUNT)
}

/// The share of `limit` one of `shards` objects holds (at least 1).
fn share(limit: u64, shards: u32) -> u64 {
    (limit / u64::from(shards.max(1))).max(1)
}

/// The object of shard `shard` of a key.
pub fn object_name(policy: &KeyPolicy, shard: u32) -> String {
    if policy.shards <= 1 {
        policy.id.clone()
    } else {
        format!("{}#{}", policy.id, shard % policy.shards)
    }
}

fn counter(object: &str, what: &str, n: u64) -> String {
    // A namespace of their own in a Redis shared with other data; the braces keep every
    // counter of one object in one Redis Cluster slot.
    format!("agw:rl:{{{object}}}:{what}:{n}")
}

/// The days since 1970-01-01 of a civil date (proleptic Gregorian), and back.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m as u32)
}

/// A budget period: its id (in counter names) and its start and end, in Unix ms.
pub fn period_bounds(period: Period, now_ms: u64) -> (u64, u64, u64) {
    let day = now_ms / DAY_MS;
    match period {
        Period::Day => (day, day * DAY_MS, (day + 1) * DAY_MS),
        Period::Month => {
            let (y, m) = civil_from_days(day as i64);
            let start = days_from_civil(y, m, 1);
            let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
            let end = days_from_civil(ny, nm, 1);
            let id = (y * 12 + i64::from(m) - 1).max(0) as u64;
            (id, start.max(0) as u64 * DAY_MS, end.max(0) as u64 * DAY_MS)
        }
    }
}

/// The budget's counters at `now`: spent in the period, and the reservation slots still
/// counted (the current one first).
fn budget_keys(object: &str, budget: &Budget, now_ms: u64) -> (String, Vec<String>, u64) {
    let (pid, _, end) = period_bounds(budget.period, now_ms);
    let what = match budget.period {
        Period::Day => "bd",
        Period::Month => "bm",
    };
    let minute = now_ms / MINUTE_MS;
    let slots = (0..=RESERVATION_MINUTES)
        .map(|back| counter(object, "br", minute.saturating_sub(back)))
        .collect();
    (counter(object, what, pid), slots, end)
}

fn budget_limit(policy: &KeyPolicy, budget: &Budget) -> i64 {
    let total = budget.amount.picos() / PICOS_PER_NANO;
    let share = total / u128::from(policy.shards.max(1));
    i64::try_from(share).unwrap_or(MAX_COUNT).min(MAX_COUNT)
}

/// The reservation for a request: one check per limited dimension. None when the key has no
/// limit that applies (no store call is needed).
pub fn reserve(
    policy: &KeyPolicy,
    shard: u32,
    demand: &Demand,
    now_ms: u64,
) -> Option<(LimitCall, Pending)> {
    let object = object_name(policy, shard);
    let minute = now_ms / MINUTE_MS;
    let window_end_ms = (minute + 1) * MINUTE_MS;
    let window_ttl = window_end_ms - now_ms + 1000;
    let mut op = Op::default();
    let mut pending = Pending {
        object: object.clone(),
        dims: Vec::new(),
        adds: Vec::new(),
        limits: Vec::new(),
        window_end_ms,
        period_end_ms: 0,
        tokens_key: None,
        slot_key: None,
        shards: policy.shards,
    };
    let mut push = |p: &mut Pending, dim: Dim, sum: Vec<String>, limit: i64, add: i64, ttl| {
        p.dims.push(dim);
        p.adds.push(add);
        p.limits.push(limit);
        op.checks.push(Check {
            sum,
            limit,
            add,
            ttl_ms: ttl,
        });
    };
    if let Some(rpm) = policy.rpm {
        let limit = to_count(share(rpm, policy.shards));
        let key = counter(&object, "r", minute);
        push(&mut pending, Dim::Requests, vec![key], limit, 1, window_ttl);
    }
    if let Some(tpm) = policy.tpm {
        let limit = to_count(share(tpm, policy.shards));
        let key = counter(&object, "t", minute);
        let add = if demand.hit {
            // A hit reserves no tokens; the check only reads what is left, for the headers.
            0
        } else {
            pending.tokens_key = Some(key.clone());
            // More than the whole limit can never pass: asking for limit + 1 refuses it
            // cleanly.
            to_count(demand.tokens).min(limit.saturating_add(1)).max(1)
        };
        push(&mut pending, Dim::Tokens, vec![key], limit, add, window_ttl);
    }
    if let (Some(budget), false) = (policy.budget, demand.hit) {
        let limit = budget_limit(policy, &budget);
        let add = nanos(demand.cost).min(limit.saturating_add(1));
        let (spent, slots, end) = budget_keys(&object, &budget, now_ms);
        pending.period_end_ms = end;
        let mut sum = slots;
        if let Some(first) = sum.first() {
            pending.slot_key = Some(first.clone());
        }
        sum.insert(1, spent);
        let ttl = (RESERVATION_MINUTES + 1) * MINUTE_MS;
        push(&mut pending, Dim::Budget, sum, limit, add, ttl);
    }
    if op.checks.is_empty() {
        return None;
    }
    Some((LimitCall { object, op }, pending))
}

fn values(p: &Pending, dim: Dim, total: i64, now_ms: u64) -> Option<RateValues> {
    let i = p.dims.iter().position(|d| *d == dim)?;
    let limit = *p.limits.get(i)?;
    let shards = i64::from(p.shards.max(1));
    let left = (limit - total).max(0).saturating_mul(shards);
    let full = limit.saturating_mul(shards);
    Some(RateValues {
        limit: u64::try_from(full).unwrap_or(0),
        remaining: u64::try_from(left.min(full)).unwrap_or(0),
        reset_ms: p.window_end_ms.saturating_sub(now_ms),
    })
}

/// What the store's reply means for the request.
pub fn decide(policy: &KeyPolicy, pending: Pending, reply: &Reply, now_ms: u64) -> Verdict {
    let total = |dim: Dim| {
        pending
            .dims
            .iter()
            .position(|d| *d == dim)
            .and_then(|i| reply.totals.get(i).copied())
            .unwrap_or(0)
    };
    let requests = values(&pending, Dim::Requests, total(Dim::Requests), now_ms);
    let tokens = values(&pending, Dim::Tokens, total(Dim::Tokens), now_ms);
    if reply.granted && reply.totals.len() == pending.dims.len() {
        let add = |dim: Dim| {
            pending
                .dims
                .iter()
                .position(|d| *d == dim)
                .and_then(|i| pending.adds.get(i).copied())
                .unwrap_or(0)
        };
        return Verdict {
            requests,
            tokens,
            outcome: Ok(Reservation {
                object: pending.object.clone(),
                tokens: add(Dim::Tokens),
                tokens_key: pending.tokens_key.clone(),
                nanos: add(Dim::Budget),
                slot_key: pending.slot_key.clone(),
                budget: policy.budget,
                shards: pending.shards,
            }),
        };
    }
    // The first check that does not fit is the one the client hears about.
    let failed = pending
        .dims
        .iter()
        .enumerate()
        .find(|&(i, _)| {
            let add = pending.adds.get(i).copied().unwrap_or(0);
            let limit = pending.limits.get(i).copied().unwrap_or(0);
            let t = reply.totals.get(i).copied().unwrap_or(0);
            add != 0 && t.saturating_add(add) > limit
        })
        .map(|(i, d)| (i, *d));
    let retry = pending.window_end_ms.saturating_sub(now_ms);
    let err = match failed {
        Some((i, dim @ (Dim::Requests | Dim::Tokens))) => {
            let kind = if dim == Dim::Requests {
                RateLimitKind::Requests
            } else {
                RateLimitKind::Tokens
            };
            let shards = i64::from(pending.shards.max(1));
            GatewayError::RateLimited {
                kind,
                key_id: policy.id.clone(),
                limit: u64::try_from(pending.limits.get(i).copied().unwrap_or(0) * shards)
                    .unwrap_or(0),
                used: u64::try_from(reply.totals.get(i).copied().unwrap_or(0) * shards)
                    .unwrap_or(0),
                requested: u64::try_from(pending.adds.get(i).copied().unwrap_or(0)).unwrap_or(0),
                retry_after_ms: retry,
            }
        }
        Some((_, Dim::Budget)) => GatewayError::BudgetExceeded {
            key_id: policy.id.clone(),
            period: policy.budget.map_or("day", |b| b.period.as_str()),
            retry_after_ms: pending.period_end_ms.saturating_sub(now_ms),
        },
        // Refused although everything fits: the store refused a malformed op.
        None => GatewayError::LimiterUnavailable {
            retry_after_ms: 1000,
        },
    };
    Verdict {
        requests,
        tokens,
        outcome: Err(err),
    }
}

/// The settlement of a granted reservation to what the request actually used: tokens
/// corrected in their window, the budget's reservation released and the actual cost spent.
/// None when there is nothing to correct.
pub fn settle(
    r: &Reservation,
    actual_tokens: u64,
    actual_cost: Money,
    now_ms: u64,
) -> Option<LimitCall> {
    let mut op = Op::default();
    if let Some(key) = &r.tokens_key {
        let delta = to_count(actual_tokens) - r.tokens;
        if delta != 0 {
            op.adjust.push(Adjust {
                key: key.clone(),
                delta,
                ttl_ms: MINUTE_MS,
                only_existing: true,
            });
        }
    }
    if let Some(budget) = &r.budget {
        if let Some(slot) = &r.slot_key {
            if r.nanos != 0 {
                op.adjust.push(Adjust {
                    key: slot.clone(),
                    delta: -r.nanos,
                    ttl_ms: MINUTE_MS,
                    only_existing: true,
                });
            }
        }
        let spent = nanos(actual_cost);
        if spent != 0 {
            let (pid, _, end) = period_bounds(budget.period, now_ms);
            let what = match budget.period {
                Period::Day => "bd",
                Period::Month => "bm",
            };
            op.adjust.push(Adjust {
                key: counter(&r.object, what, pid),
                delta: spent,
                // Kept a day past the period, for `GET /v1/gateway/key` near its end.
                ttl_ms: end.saturating_sub(now_ms) + DAY_MS,
                only_existing: false,
            });
        }
    }
    (!op.adjust.is_empty()).then(|| LimitCall {
        object: r.object.clone(),
        op,
    })
}

/// What a key's limits stand at, for `GET /v1/gateway/key`: a call that changes nothing.
pub fn peek(policy: &KeyPolicy, shard: u32, now_ms: u64) -> Option<LimitCall> {
    let object = object_name(policy, shard);
    let minute = now_ms / MINUTE_MS;
    let mut op = Op::default();
    let mut check = |sum: Vec<String>| {
        op.checks.push(Check {
            sum,
            limit: MAX_COUNT,
            add: 0,
            ttl_ms: 1,
        })
    };
    if policy.rpm.is_some() {
        check(vec![counter(&object, "r", minute)]);
    }
    if policy.tpm.is_some() {
        check(vec![counter(&object, "t", minute)]);
    }
    if let Some(b) = &policy.budget {
        let (spent, slots, _) = budget_keys(&object, b, now_ms);
        check(vec![spent]);
        check(slots);
    }
    (!op.checks.is_empty()).then_some(LimitCall { object, op })
}

/// A key's standing from a [`peek`] reply (None: the store could not be read).
#[derive(Debug, Clone, PartialEq)]
pub struct Standing {
    pub requests: Option<RateValues>,
    pub tokens: Option<RateValues>,
    pub budget: Option<BudgetStanding>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct BudgetStanding {
    pub amount: Money,
    pub period: Period,
    pub spent: Money,
    pub reserved: Money,
    pub resets_at_ms: u64,
}

fn money_of(nanos: i64) -> Money {
    Money::from_picos(u128::try_from(nanos.max(0)).unwrap_or(0) * PICOS_PER_NANO)
}

/// Reads a [`peek`] reply (`reply` None: nothing is known of the counts, all is reported left).
pub fn standing(policy: &KeyPolicy, reply: Option<&Reply>, now_ms: u64) -> Standing {
    let mut totals = reply
        .map(|r| r.totals.iter().copied())
        .into_iter()
        .flatten();
    let shards = policy.shards.max(1);
    let window_end = (now_ms / MINUTE_MS + 1) * MINUTE_MS;
    let mut dim = |limit: Option<u64>| {
        limit.map(|l| {
            let used = u64::try_from(totals.next().unwrap_or(0).max(0)).unwrap_or(0);
            let share = share(l, shards);
            RateValues {
                limit: l,
                remaining: share
                    .saturating_sub(used)
                    .saturating_mul(u64::from(shards))
                    .min(l),
                reset_ms: window_end.saturating_sub(now_ms),
            }
        })
    };
    let requests = dim(policy.rpm);
    let tokens = dim(policy.tpm);
    let budget = policy.budget.map(|b| {
        let spent = money_of(totals.next().unwrap_or(0)).scaled(u128::from(shards), 1);
        let reserved = money_of(totals.next().unwrap_or(0)).scaled(u128::from(shards), 1);
        let (_, _, end) = period_bounds(b.period, now_ms);
        BudgetStanding {
            amount: b.amount,
            period: b.period,
            spent,
            reserved,
            resets_at_ms: end,
        }
    });
    Standing {
        requests,
        tokens,
        budget,
    }
}

/// A duration as OpenAI's `x-ratelimit-reset-*` headers write it: `20ms`, `1s`, `8.64s`,
/// `6m0s`, `1h2m3s`.
pub fn openai_duration(ms: u64) -> String {
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let secs = ms / 1000;
    let frac = ms % 1000;
    let s = secs % 60;
    let m = (secs / 60) % 60;
    let h = secs / 3600;
    let mut sec = if frac == 0 {
        format!("{s}s")
    } else {
        let f = format!("{frac:03}");
        format!("{s}.{}s", f.trim_end_matches('0'))
    };
    if h > 0 {
        sec = format!("{h}h{m}m{sec}");
    } else if m > 0 {
        sec = format!("{m}m{sec}");
    }
    sec
}
