//! Cache storage for the native runtime: a bounded in-process cache (moka, weighed in bytes) in
//! front of an optional Redis shared by all machines (`REDIS_URL`), and coalescing of identical
//! concurrent misses. Every decision (what is cacheable, the key, freshness, the entry format)
//! is the core's ([`ai_edge_gateway::cache`]); this module only stores and fetches.
//!
//! Failures never fail a request: a Redis error or timeout is a miss (reads) or a skipped write,
//! reported once on stderr until Redis answers again.
//!
//! Coalescing: the first miss for a key becomes the *leader* and calls the upstream; requests
//! for the same key arriving meanwhile wait for it. When the leader's answer is complete and
//! cacheable, every waiter is answered with it (`HIT`); when it is not (an error, a cut-off
//! stream, a client gone), the waiters call the upstream themselves. A waiter gives up waiting
//! after the upstream timeout and calls the upstream itself.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ai_edge_gateway::cache::{
    CacheEntry, CacheKey, CacheLookup, CachePlan, CacheSettings, StreamRecorder,
};
use bytes::Bytes;
use moka::future::Cache as Memory;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::watch;

pub const REDIS_URL: &str = "REDIS_URL";
/// Longest a Redis read may add to a request.
const REDIS_READ_TIMEOUT: Duration = Duration::from_millis(250);
const REDIS_WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// After a failure Redis is left alone this long, so a dead Redis costs requests nothing.
const REDIS_BACKOFF_MS: u64 = 2_000;

pub fn now_unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Checks `REDIS_URL` at start-up, so a typo is a configuration error, not a silent miss.
pub fn check_redis_url(url: &str) -> Result<(), String> {
    redis::Client::open(url)
        .map(|_| ())
        .map_err(|e| format!("is not a valid Redis URL: {e}"))
}

/// The state of one in-flight miss, as seen by its waiters.
#[derive(Clone)]
enum Flight {
    Pending,
    Done(Option<Arc<CacheEntry>>),
}

pub struct Cache {
    memory: Memory<CacheKey, Arc<CacheEntry>>,
    redis: Option<Redis>,
    inflight: Mutex<HashMap<CacheKey, watch::Sender<Flight>>>,
}

/// What a request does after a first lookup missed.
enum Join {
    /// Call the upstream; complete or drop the leader when the answer is known.
    Lead(Leader),
    /// Another request is calling the upstream for this key; wait for it.
    Wait(watch::Receiver<Flight>),
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
            value.expires_at_ms.saturating_sub(now_unix_ms()),
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
    pub fn from_env(settings: &CacheSettings) -> Option<Arc<Cache>> {
        if !settings.enabled {
            return None;
        }
        let url = std::env::var(REDIS_URL)
            .ok()
            .filter(|u| !u.trim().is_empty());
        Some(Arc::new(Cache::new(settings, url.as_deref())))
    }

    pub fn new(settings: &CacheSettings, redis_url: Option<&str>) -> Cache {
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
            inflight: Mutex::new(HashMap::new()),
        }
    }

    /// The in-process cache only.
    async fn get_memory(&self, lookup: &CacheLookup, now_ms: u64) -> Option<Arc<CacheEntry>> {
        let e = self.memory.get(&lookup.key).await?;
        lookup.accept_entry(&e, now_ms).then_some(e)
    }

    /// Looks the key up in memory, then in Redis (copying a Redis hit into memory).
    pub async fn get(&self, lookup: &CacheLookup) -> Option<Arc<CacheEntry>> {
        if let Some(e) = self.get_memory(lookup, now_unix_ms()).await {
            return Some(e);
        }
        let redis = self.redis.as_ref()?;
        let bytes = redis.get(&lookup.key.storage_name()).await?;
        let entry = Arc::new(lookup.accept(&bytes, now_unix_ms())?);
        self.memory.insert(lookup.key, entry.clone()).await;
        Some(entry)
    }

    /// Becomes the leader for `key`, or a waiter on the current leader.
    fn join(self: &Arc<Self>, key: CacheKey) -> Join {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(tx) = map.get(&key) {
            return Join::Wait(tx.subscribe());
        }
        let (tx, _rx) = watch::channel(Flight::Pending);
        map.insert(key, tx.clone());
        Join::Lead(Leader {
            cache: self.clone(),
            key,
            tx: Some(tx),
        })
    }

    /// Stores an entry: in memory now, in Redis in the background.
    async fn store(self: &Arc<Self>, entry: Arc<CacheEntry>, storage_ttl_secs: u64) {
        self.memory.insert(entry.key, entry.clone()).await;
        if let Some(redis) = &self.redis {
            let redis = redis.clone();
            tokio::spawn(async move {
                redis
                    .set(&entry.key.storage_name(), entry.encode(), storage_ttl_secs)
                    .await;
            });
        }
    }

    fn release(&self, key: &CacheKey, tx: &watch::Sender<Flight>) {
        let mut map = self.inflight.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(key).is_some_and(|t| t.same_channel(tx)) {
            map.remove(key);
        }
    }
}

/// A miss on its way to the upstream.
pub struct Miss {
    pub cache: Arc<Cache>,
    pub lookup: CacheLookup,
    /// Present when this request leads a flight that others wait on.
    pub leader: Option<Leader>,
}

pub enum Step {
    /// No cache for this request.
    Bypass,
    /// Answer with this entry; no upstream call.
    Hit(Arc<CacheEntry>),
    Miss(Miss),
}

/// The cache's part before the upstream call: a lookup (unless `no-cache`), then coalescing.
pub async fn begin(cache: Option<&Arc<Cache>>, plan: CachePlan, wait_timeout: Duration) -> Step {
    let (Some(cache), CachePlan::Use(lookup)) = (cache, plan) else {
        return Step::Bypass;
    };
    if lookup.read {
        if let Some(e) = cache.get(&lookup).await {
            return Step::Hit(e);
        }
    }
    match cache.join(lookup.key) {
        Join::Lead(leader) => {
            // A leader that finished between the lookup and now has left its entry in memory.
            if lookup.read {
                if let Some(e) = cache.get_memory(&lookup, now_unix_ms()).await {
                    leader.complete(Some(e.clone()), false, 0).await;
                    return Step::Hit(e);
                }
            }
            Step::Miss(Miss {
                cache: cache.clone(),
                lookup,
                leader: Some(leader),
            })
        }
        Join::Wait(rx) => match wait(rx, wait_timeout).await {
            Some(e) => Step::Hit(e),
            None => Step::Miss(Miss {
                cache: cache.clone(),
                lookup,
                leader: None,
            }),
        },
    }
}

/// Waits for a leader's answer; `None` when it had none to share or took too long.
async fn wait(mut rx: watch::Receiver<Flight>, timeout: Duration) -> Option<Arc<CacheEntry>> {
    let done = tokio::time::timeout(timeout, rx.wait_for(|f| matches!(f, Flight::Done(_))))
        .await
        .ok()?
        .ok()?;
    match &*done {
        Flight::Done(e) => e.clone(),
        Flight::Pending => None,
    }
}

/// The request calling the upstream for a key. Dropping it without [`Leader::complete`] tells
/// the waiters there is nothing to share.
pub struct Leader {
    cache: Arc<Cache>,
    key: CacheKey,
    tx: Option<watch::Sender<Flight>>,
}

impl Leader {
    /// Stores the answer (when `store`), then hands it to the waiters and ends the flight. The
    /// entry is in memory before any later request can miss, so no second leader starts.
    pub async fn complete(
        mut self,
        entry: Option<Arc<CacheEntry>>,
        store: bool,
        storage_ttl_secs: u64,
    ) {
        if let (Some(e), true) = (&entry, store) {
            self.cache.store(e.clone(), storage_ttl_secs).await;
        }
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Flight::Done(entry));
            self.cache.release(&self.key, &tx);
        }
    }
}

impl Drop for Leader {
    fn drop(&mut self) {
        if let Some(tx) = self.tx.take() {
            tx.send_replace(Flight::Done(None));
            self.cache.release(&self.key, &tx);
        }
    }
}

/// A cacheable stream on its way to the client: records it, and stores it once it completed.
pub struct Recording {
    recorder: StreamRecorder,
    leader: Option<Leader>,
    cache: Arc<Cache>,
    store: bool,
    storage_ttl_secs: u64,
}

impl Recording {
    pub fn new(
        cache: Arc<Cache>,
        lookup: &CacheLookup,
        recorder: StreamRecorder,
        leader: Option<Leader>,
    ) -> Recording {
        Recording {
            recorder,
            leader,
            cache,
            store: lookup.write,
            storage_ttl_secs: lookup.storage_ttl_secs(1),
        }
    }

    pub fn record(&mut self, chunk: &[u8]) {
        self.recorder.record(chunk);
    }

    /// The upstream's stream ended without a transport error: store it if it is complete.
    /// Runs in the background so the end of the response is not delayed.
    pub fn finish(self) {
        let entry = self.recorder.finish(now_unix_ms());
        let cache = self.cache;
        let leader = self.leader;
        let (store, ttl) = (self.store, self.storage_ttl_secs);
        tokio::spawn(async move {
            match leader {
                Some(l) => l.complete(entry.map(Arc::new), store, ttl).await,
                None => {
                    if let (Some(e), true) = (entry, store) {
                        cache.store(Arc::new(e), ttl).await;
                    }
                }
            }
        });
    }
}

impl Miss {
    /// After a buffered upstream answer: stores it if the core says it may be stored, and
    /// shares it with the waiters (or releases them).
    pub async fn complete_buffered(
        self,
        status: u16,
        content_type: Option<&str>,
        cache_control: Option<&str>,
        body: &Bytes,
    ) {
        let entry =
            self.lookup
                .buffered_entry(status, content_type, cache_control, body, now_unix_ms());
        let ttl = self.lookup.storage_ttl_secs(1);
        match self.leader {
            Some(l) => {
                l.complete(entry.map(Arc::new), self.lookup.write, ttl)
                    .await
            }
            None => {
                if let (Some(e), true) = (entry, self.lookup.write) {
                    self.cache.store(Arc::new(e), ttl).await;
                }
            }
        }
    }

    /// For a streamed upstream answer: a recording when it may be stored (otherwise the
    /// waiters are released now).
    pub fn recording(
        self,
        status: u16,
        content_type: Option<&str>,
        cache_control: Option<&str>,
    ) -> Option<Box<Recording>> {
        let recorder = self
            .lookup
            .stream_recorder(status, content_type, cache_control)?;
        Some(Box::new(Recording::new(
            self.cache,
            &self.lookup,
            recorder,
            self.leader,
        )))
    }
}

#[derive(Clone)]
struct Redis {
    conn: ConnectionManager,
    failing: Arc<AtomicBool>,
    /// Unix ms before which Redis is not tried (after a failure).
    resting_until: Arc<AtomicU64>,
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
        Ok(Redis {
            conn,
            failing: Arc::new(AtomicBool::new(false)),
            resting_until: Arc::new(AtomicU64::new(0)),
        })
    }

    fn resting(&self) -> bool {
        now_unix_ms() < self.resting_until.load(Ordering::Relaxed)
    }

    fn failed(&self, what: &str) {
        self.resting_until
            .store(now_unix_ms() + REDIS_BACKOFF_MS, Ordering::Relaxed);
        if !self.failing.swap(true, Ordering::Relaxed) {
            eprintln!("fly-fallback: cache: Redis unavailable ({what}); serving without it");
        }
    }

    fn succeeded(&self) {
        if self.failing.swap(false, Ordering::Relaxed) {
            eprintln!("fly-fallback: cache: Redis is back");
        }
    }

    async fn get(&self, name: &str) -> Option<Bytes> {
        if self.resting() {
            return None;
        }
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("GET").arg(name).to_owned();
        let res = tokio::time::timeout(
            REDIS_READ_TIMEOUT,
            cmd.query_async::<Option<Vec<u8>>>(&mut conn),
        )
        .await;
        match res {
            Err(_) => {
                self.failed("read timed out");
                None
            }
            Ok(Err(e)) => {
                self.failed(&e.to_string());
                None
            }
            Ok(Ok(v)) => {
                self.succeeded();
                v.map(Bytes::from)
            }
        }
    }

    async fn set(&self, name: &str, value: Vec<u8>, ttl_secs: u64) {
        if self.resting() {
            return;
        }
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("SET")
            .arg(name)
            .arg(value)
            .arg("EX")
            .arg(ttl_secs.max(1))
            .to_owned();
        match tokio::time::timeout(REDIS_WRITE_TIMEOUT, cmd.query_async::<()>(&mut conn)).await {
            Err(_) => self.failed("write timed out"),
            Ok(Err(e)) => self.failed(&e.to_string()),
            Ok(Ok(())) => self.succeeded(),
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
    use ai_edge_gateway::cache::EntryForm;

    fn lookup(key: u8) -> CacheLookup {
        CacheLookup {
            key: CacheKey([key; 32]),
            read: true,
            write: true,
            ttl_secs: 60,
            max_entry_bytes: 1 << 20,
            stream: false,
        }
    }

    fn entry(l: &CacheLookup) -> CacheEntry {
        let now = now_unix_ms();
        CacheEntry {
            key: l.key,
            status: 200,
            form: EntryForm::Json,
            content_type: "application/json".into(),
            stored_at_ms: now,
            expires_at_ms: now + 60_000,
            body: Bytes::from_static(b"{}"),
        }
    }

    #[tokio::test]
    async fn waiters_get_the_leaders_answer_and_a_later_request_hits_memory() {
        let cache = Arc::new(Cache::new(&CacheSettings::default(), None));
        let l = lookup(1);
        let Join::Lead(leader) = cache.join(l.key) else {
            panic!("first is the leader")
        };
        let waiters: Vec<_> = (0..5)
            .map(|_| match cache.join(l.key) {
                Join::Wait(rx) => tokio::spawn(wait(rx, Duration::from_secs(5))),
                Join::Lead(_) => panic!("second leader"),
            })
            .collect();
        leader.complete(Some(Arc::new(entry(&l))), true, 60).await;
        for w in waiters {
            assert_eq!(&w.await.unwrap().unwrap().body[..], b"{}");
        }
        assert!(cache.get(&l).await.is_some());
        assert!(matches!(cache.join(l.key), Join::Lead(_)));
    }

    #[tokio::test]
    async fn a_dropped_leader_releases_its_waiters_empty_handed() {
        let cache = Arc::new(Cache::new(&CacheSettings::default(), None));
        let l = lookup(2);
        let Join::Lead(leader) = cache.join(l.key) else {
            panic!()
        };
        let Join::Wait(rx) = cache.join(l.key) else {
            panic!()
        };
        drop(leader);
        assert!(wait(rx, Duration::from_secs(5)).await.is_none());
        assert!(cache.get(&l).await.is_none());
    }

    #[tokio::test]
    async fn an_unreachable_redis_is_a_miss() {
        // Port 1 on loopback: nothing listens there.
        let cache = Arc::new(Cache::new(
            &CacheSettings::default(),
            Some("redis://127.0.0.1:1/"),
        ));
        let l = lookup(3);
        let t = Instant::now();
        assert!(cache.get(&l).await.is_none());
        assert!(t.elapsed() < Duration::from_secs(2));
        cache.store(Arc::new(entry(&l)), 60).await;
        assert!(cache.get(&l).await.is_some(), "memory still works");
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
