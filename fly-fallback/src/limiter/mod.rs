//! The store of the client keys' limits: counters in this process, or in Redis when
//! `REDIS_URL` is set so that every machine enforces one limit. The core decides every amount,
//! window and answer ([`gateway_core::limits`]); this module applies its operations atomically.

mod redis_store;
#[cfg(test)]
mod tests;

use std::sync::Mutex;
use std::time::Duration;

use gateway_core::limits::{LimitCall, LimitSettings, MemoryCounters, Reply};

pub use redis_store::RedisCounters;

pub enum Limiter {
    Memory(Mutex<MemoryCounters>),
    Redis(RedisCounters),
}

impl Default for Limiter {
    fn default() -> Limiter {
        Limiter::Memory(Mutex::new(MemoryCounters::new()))
    }
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

impl Limiter {
    /// The store for these settings: Redis when `REDIS_URL` is set (the same Redis as the
    /// cache), else this process's memory. Must be called inside the tokio runtime.
    pub fn from_env(settings: &LimitSettings) -> Limiter {
        let url = std::env::var(crate::cache::REDIS_URL)
            .ok()
            .filter(|u| !u.trim().is_empty());
        let Some(url) = url else {
            return Limiter::default();
        };
        match RedisCounters::connect(&url, call_timeout(settings)) {
            Ok(r) => {
                eprintln!("fly-fallback: limits: counters in the shared Redis (REDIS_URL)");
                Limiter::Redis(r)
            }
            Err(e) => {
                let e = gateway_core::error::mask_credentials(&e);
                eprintln!("fly-fallback: limits: Redis not used ({e}); counting in this process");
                Limiter::default()
            }
        }
    }

    /// Applies `call` atomically; `Err(())` when the store failed.
    pub async fn apply(&self, call: &LimitCall) -> Result<Reply, ()> {
        match self {
            Limiter::Memory(m) => {
                let mut counters = m.lock().unwrap_or_else(|p| p.into_inner());
                Ok(counters.apply(&call.op, unix_ms()))
            }
            Limiter::Redis(r) => r.apply(&call.op).await,
        }
    }
}

/// The bound of one Redis call: the core's own deadline for the store (a call it has given up
/// on must not linger), and for the settlements, which nobody waits for.
fn call_timeout(settings: &LimitSettings) -> Duration {
    Duration::from_millis(settings.store_timeout_ms.max(100))
}
