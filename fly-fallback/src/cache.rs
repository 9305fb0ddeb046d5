//! Cache storage for the native runtime: a bounded in-process cache (moka, weighed in bytes) in
//! front of an optional Redis shared by all machines (`REDIS_URL`). Every decision (what is
//! cacheable, the key, freshness, the entry format, coalescing of identical misses, when to leave
//! a failing Redis alone) is the core's; this module only stores and fetches.
//!
//! Failures never fail a request: a Redis error or timeout is a miss (reads) or a skipped write,
//! reported to the core's router, which rests Redis for a while.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use gateway_core::cache::{CacheEntry, CacheKey, CacheSettings};
use gateway_core::{Found, Store};
use moka::future::Cache as Memory;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};

use crate::shared::Shared;

pub const REDIS_URL: &str = "REDIS_URL";
/// Longest a Redis read may add to a request.
const REDIS_READ_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Checks `REDIS_URL` at start-up, so a typo is a configuration error, not a silent miss.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("is not a valid Redis URL: {e}"))
}

pub struct Cache {
    memory: Memory<CacheKey, Arc<CacheEntry>>,
    redis: Option<Redis>,
    shared: Arc<Shared>,
}

struct Expiry;

impl moka::Expiry<CacheKey, Arc<CacheEntry>> for Expiry {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<CacheEntry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(Duration::from_millis(
            value
                .expires_at_ms
                .saturating_sub(crate::clock::now().unix.as_millis()),
        ))
    }

    fn expire_after_update(
        &self,
        key: &CacheKey,
        value: &Arc<CacheEntry>,
        updated_at: Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, value, updated_at)
    }
}

impl Cache {
    /// The cache for these settings, with Redis when `REDIS_URL` is set. Must be called inside
    /// the tokio runtime.
    pub fn from_env(settings: &CacheSettings, shared: Arc<Shared>) -> Option<Arc<Cache>> {
        if !settings.enabled {
            return None;
        }
        let url = std::env::var(REDIS_URL)
            .ok()
            .filter(|u| !u.trim().is_empty());
        Some(Arc::new(Cache::new(settings, url.as_deref(), shared)))
    }

    pub fn new(settings: &CacheSettings, redis_url: Option<&str>, shared: Arc<Shared>) -> Cache {
        let memory = Memory::builder()
            .max_capacity(settings.memory_bytes)
            .weigher(|_k: &CacheKey, v: &Arc<CacheEntry>| {
                u32::try_from(v.encoded_len() + 64).unwrap_or(u32::MAX)
            })
            .expire_after(Expiry)
            .build();
        let redis = redis_url.and_then(|url| match Redis::connect(url) {
            Ok(r) => {
                eprintln!("fly-fallback: cache: shared Redis at {}", redact(url));
                Some(r)
            }
            Err(e) => {
                eprintln!("fly-fallback: cache: Redis not used: {e}");
                None
            }
        });
        Cache {
            memory,
            redis,
            shared,
        }
    }

    /// Looks the key up in memory, then (when `shared`) in Redis, copying a Redis hit into
    /// memory. The core checks what is found.
    pub async fn get(&self, key: &CacheKey, shared: bool) -> Option<Found> {
        if let Some(e) = self.memory.get(key).await {
            return Some(Found::Entry(e));
        }
        let redis = self.redis.as_ref().filter(|_| shared)?;
        let (result, what) = redis.get(&key.storage_name()).await;
        self.shared.store_result(result.is_ok(), what);
        let bytes = result.ok()??;
        let entry = CacheEntry::decode(&bytes, key)?;
        let entry = Arc::new(entry);
        self.memory.insert(*key, entry.clone()).await;
        Some(Found::Entry(entry))
    }

    /// Stores an entry: in memory now (so the next request finds it), in Redis in the background.
    pub async fn store(self: &Arc<Self>, store: Store) {
        self.memory.insert(store.key, store.entry.clone()).await;
        if let (Some(redis), true) = (&self.redis, store.shared) {
            let redis = redis.clone();
            let this = self.clone();
            tokio::spawn(async move {
                let ttl = store.storage_ttl_secs(1);
                let (ok, what) = redis
                    .set(&store.key.storage_name(), store.entry.encode(), ttl)
                    .await;
                this.shared.store_result(ok, what);
            });
        }
    }
}

#[derive(Clone)]
struct Redis {
    conn: ConnectionManager,
}

impl Redis {
    fn connect(url: &str) -> Result<Redis, String> {
        let client = redis::Client::open(url).map_err(|e| e.to_string())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn =
            ConnectionManager::new_lazy_with_config(client, config).map_err(|e| e.to_string())?;
        Ok(Redis { conn })
    }

    /// `Err` for a failed call, with what failed.
    async fn get(&self, name: &str) -> (Result<Option<Bytes>, ()>, &'static str) {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(name).to_owned();
        let res = tokio::time::timeout(
            REDIS_READ_TIMEOUT,
            cmd.query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        match res {
            Err(_) => (Err(()), "read timed out"),
            Ok(Err(_)) => (Err(()), "read failed"),
            Ok(Ok(v)) => (Ok(v.map(Bytes::from)), ""),
        }
    }

    async fn set(&self, name: &str, value: Vec<u8>, ttl_secs: u64) -> (bool, &'static str) {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(name)
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .to_owned();
        match tokio::time::timeout(REDIS_WRITE_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Err(_) => (false, "write timed out"),
            Ok(Err(_)) => (false, "write failed"),
            Ok(Ok(())) => (true, ""),
        }
    }
}

/// A Redis URL without its password, for the start-up message.
fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => format!("{}://***@{}", &url[..s], &url[at + 1..]),
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gateway_core::cache::EntryForm;

    fn entry(key: u8) -> Arc<CacheEntry> {
        let now = crate::clock::now().unix.as_millis();
        Arc::new(CacheEntry {
            key: CacheKey([key; 32]),
            status: 200,
            form: EntryForm::Json,
            content_type: "application/json".into(),
            stored_at_ms: now,
            expires_at_ms: now + 60_000,
            usage: None,
            body: Bytes::from_static(b"{}"),
        })
    }

    fn store_of(e: &Arc<CacheEntry>) -> Store {
        Store::new(e.key, e.clone(), true, 60)
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_miss_and_is_rested_by_the_router() {
        // Port 1 on loopback: nothing listens there.
        let shared = Arc::new(Shared::default());
        let cache = Arc::new(Cache::new(
            &CacheSettings::default(),
            Some("redis://127.0.0.1:1/"),
            shared.clone(),
        ));
        let e = entry(3);
        let t = Instant::now();
        assert!(cache.get(&e.key, true).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        let now = crate::clock::now().instant;
        assert!(
            !shared.with(|r| r.store_usable(now)),
            "Redis rests after a failure"
        );
        cache.store(store_of(&e)).await;
        assert!(
            matches!(cache.get(&e.key, false).await, Some(Found::Entry(_))),
            "memory still works"
        );
    }

    #[test]
    fn passwords_are_not_printed() {
        assert_eq!(
            redact("redis://user:secret@host:6379/0"),
            "redis://***@host:6379/0"
        );
        assert_eq!(redact("redis://host:6379"), "redis://host:6379");
    }
}
