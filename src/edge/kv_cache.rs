//! The response cache's storage at the edge: Workers KV. The core decides what to look up and
//! store, and when to leave a failing KV alone; this module only reads and writes, and reports
//! the outcome. Writes run under `wait_until` after the response has been handed to the client.

use bytes::Bytes;
use futures_channel::oneshot;
use gateway_core::cache::CacheKey;
use gateway_core::{Found, Store};
use worker::{Context, Env};

use super::shared;

pub const BINDING: &str = "CACHE";
/// KV refuses an `expiration_ttl` under 60 s; the entry's own expiry still applies on read.
const KV_MIN_TTL_SECS: u64 = 60;

/// The stored bytes under `key`. A Worker without the binding has no cache (a miss); a failing
/// KV is a miss reported to the router.
pub async fn get(env: &Env, key: &CacheKey, shared_store: bool) -> Option<Found> {
    if !shared_store {
        return None;
    }
    let kv = env.kv(BINDING).ok()?;
    match kv.get(&key.storage_name()).bytes().await {
        Ok(v) => {
            shared::store_result(true, "");
            v.map(|b| Found::Encoded(Bytes::from(b)))
        }
        Err(_) => {
            shared::store_result(false, "read failed");
            None
        }
    }
}

pub async fn put(env: Env, store: Store) {
    let Ok(kv) = env.kv(BINDING) else {
        return;
    };
    let name = store.key.storage_name();
    let ttl = store.storage_ttl_secs(KV_MIN_TTL_SECS);
    let bytes = store.entry.encode();
    drop(store);
    let ok = match kv.put_bytes(&name, &bytes) {
        Ok(put) => put.expiration_ttl(ttl).execute().await.is_ok(),
        Err(_) => false,
    };
    shared::store_result(ok, "write failed");
}

/// Writes an entry once the response is on its way.
pub fn store_later(ctx: &Context, env: &Env, store: Store) {
    if store.shared {
        ctx.wait_until(put(env.clone(), store));
    }
}

/// For a recorded stream: the entry exists only once the stream completed, so the write waits
/// for it under `wait_until`; a stream that fails or is abandoned drops the sender.
pub fn store_when_complete(ctx: &Context, env: &Env) -> oneshot::Sender<Store> {
    let (tx, rx) = oneshot::channel::<Store>();
    let env = env.clone();
    ctx.wait_until(async move {
        if let Ok(store) = rx.await {
            if store.shared {
                put(env, store).await;
            }
        }
    });
    tx
}
