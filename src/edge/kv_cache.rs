//! The response cache's storage at the edge: Workers KV. The core decides what to look up and
//! store ([`crate::cache`]); this module only reads and writes. Every KV failure is a miss, and
//! writes run under `wait_until` after the response has been handed to the client.

use bytes::Bytes;
use futures_channel::oneshot;
use worker::{Context, Env};

use crate::cache::{CacheEntry, CacheLookup};

pub const BINDING: &str = "CACHE";
/// KV refuses an `expiration_ttl` under 60 s; the entry's own expiry still applies on read.
const KV_MIN_TTL_SECS: u64 = 60;

pub async fn get(env: &Env, lookup: &CacheLookup, now_ms: u64) -> Option<CacheEntry> {
    if !lookup.read {
        return None;
    }
    let kv = env.kv(BINDING).ok()?;
    let stored = kv.get(&lookup.key.storage_name()).bytes().await.ok()??;
    lookup.accept(&Bytes::from(stored), now_ms)
}

async fn put(env: Env, name: String, bytes: Vec<u8>, ttl_secs: u64) {
    let Ok(kv) = env.kv(BINDING) else {
        return;
    };
    if let Ok(put) = kv.put_bytes(&name, &bytes) {
        if let Err(e) = put.expiration_ttl(ttl_secs).execute().await {
            worker::console_warn!("cache write failed (ignored): {e}");
        }
    }
}

/// Stores an entry once the response is on its way. The entry is encoded now, so the caller's
/// body buffer is free again when this returns.
pub fn store_later(ctx: &Context, env: &Env, lookup: &CacheLookup, entry: CacheEntry) {
    let ttl = lookup.storage_ttl_secs(KV_MIN_TTL_SECS);
    let bytes = entry.encode();
    drop(entry);
    ctx.wait_until(put(env.clone(), lookup.key.storage_name(), bytes, ttl));
}

/// For streams: the entry exists only once the stream completed, so the write waits for it
/// under `wait_until`; a stream that fails or is abandoned drops the sender and nothing is stored.
pub fn store_when_complete(
    ctx: &Context,
    env: &Env,
    lookup: &CacheLookup,
) -> oneshot::Sender<CacheEntry> {
    let (tx, rx) = oneshot::channel::<CacheEntry>();
    let ttl = lookup.storage_ttl_secs(KV_MIN_TTL_SECS);
    let name = lookup.key.storage_name();
    let env = env.clone();
    ctx.wait_until(async move {
        if let Ok(entry) = rx.await {
            put(env, name, entry.encode(), ttl).await;
        }
    });
    tx
}
