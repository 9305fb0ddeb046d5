//! The store of the client keys' limits: counters in this process, or in Redis when
//! `REDIS_URL` is set so that every machine enforces one limit. The core decides every amount,
//! window and answer ([`gateway_core::limits`]); this module applies its operations atomically.

use std::sync::Mutex;

use gateway_core::limits::{LimitCall, MemoryCounters, Reply};

pub enum Limiter {
    Memory(Mutex<MemoryCounters>),
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
    /// Applies `call` atomically; `Err(())` when the store failed.
    pub async fn apply(&self, call: &LimitCall) -> Result<Reply, ()> {
        match self {
            Limiter::Memory(m) => {
                let mut counters = m.lock().unwrap_or_else(|p| p.into_inner());
                Ok(counters.apply(&call.op, unix_ms()))
            }
        }
    }
}
