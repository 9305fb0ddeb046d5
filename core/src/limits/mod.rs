//! Client keys' limits: models allowed, requests and tokens per minute, spend budgets.
//!
//! The decisions are here, on time the caller gives: which counters a request reserves and
//! how much ([`plan::reserve`]), what the store's totals mean and the `x-ratelimit-*` values
//! ([`plan::decide`]), the correction to the actual usage ([`plan::settle`]). A store only adds
//! and sums counters atomically ([`store`]): fly-fallback's memory or Redis, the Worker's Durable
//! Object, so one limit holds across every instance that shares the store.

mod allow;
mod config;
mod plan;
mod store;
#[cfg(test)]
mod tests;

pub use allow::ModelAllow;
pub use config::{
    parse_digest, validate_keys, Budget, BudgetConfig, ConfiguredKey, KeyConfig, KeyPolicy,
    LimitSettings, LimitsConfig, OnStoreError, Period, DEFAULT_MAX_TOKENS, MAX_BUDGET_USD,
};
pub use plan::{
    decide, object_name, openai_duration, peek, period_bounds, reserve, settle, standing,
    BudgetStanding, Demand, LimitCall, Pending, RateValues, Reservation, Standing, Verdict,
    RESERVATION_MINUTES,
};
pub use store::{Adjust, Check, MemoryCounters, Op, Reply, MAX_COUNT};
