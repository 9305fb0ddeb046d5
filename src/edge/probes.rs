//! Health probes on the Worker. A Cron Trigger (`[triggers] crons` in `wrangler.toml`) runs
//! them: `GET {base_url}/models` on each upstream with its key, and writes the results (with the
//! counts of consecutive failures and successes) to KV. Every isolate re-reads them at most
//! every [`gateway_core::router::PROBE_SNAPSHOT_EVERY`]. What a result means is the core's
//! decision; this module only makes the calls and moves the bytes.

use gateway_core::router::ProbeSnapshot;
use gateway_core::{Gateway, TransportError};
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use worker::{event, Context, Delay, Env, ScheduleContext, ScheduledEvent};

use super::{clock, kv_cache, settings, shared};

/// The KV key of the shared probe results (in the cache's namespace).
const KEY: &str = "gateway:probes:v1";

/// A probe that takes longer than this failed.
const PROBE_TIMEOUT_MS: u64 = 10_000;

/// Takes the probe results the cron shared, when due (in the background: never on the
/// request's path).
pub fn refresh(env: &Env, ctx: &Context) {
    let now = clock::now().instant;
    if !shared::with(|r| r.probe_snapshot_due(now)) {
        return;
    }
    let Ok(gw) = settings::gateway(env) else {
        return;
    };
    if gw.settings().routing.health_interval.is_none() {
        return;
    }
    let env = env.clone();
    ctx.wait_until(async move {
        if let Some(snapshot) = read(&env).await {
            shared::with(|r| r.apply_probe_snapshot(gw.settings(), &snapshot));
        }
    });
}

async fn read(env: &Env) -> Option<ProbeSnapshot> {
    let kv = env.kv(kv_cache::BINDING).ok()?;
    let bytes = kv.get(KEY).bytes().await.ok()??;
    ProbeSnapshot::from_json(&bytes)
}

async fn probe(gw: &Gateway, i: usize) -> Option<Result<u16, TransportError>> {
    let attempt = gw.probe(i)?;
    let mut call = match super::Call::start(attempt) {
        Ok(call) => call,
        Err((_, e)) => return Some(Err(e)),
    };
    // Only a probe that timed out is aborted.
    let controller = call.controller.take();
    let answered = JsFuture::from(call.promise.clone());
    let timer = Delay::from(std::time::Duration::from_millis(PROBE_TIMEOUT_MS));
    let answer = match futures_util::future::select(answered, timer).await {
        futures_util::future::Either::Left((Ok(resp), _)) => resp
            .dyn_into::<worker::web_sys::Response>()
            .map(|r| r.status())
            .map_err(|_| TransportError::Other),
        futures_util::future::Either::Left((Err(e), _)) => {
            Err(super::transport_error(&super::io::message(&e)))
        }
        futures_util::future::Either::Right(_) => {
            if let Some(c) = controller {
                c.abort();
            }
            Err(TransportError::TimedOut)
        }
    };
    Some(answer)
}

#[event(scheduled)]
async fn scheduled(_event: ScheduledEvent, env: Env, _ctx: ScheduleContext) {
    let Ok(gw) = settings::gateway(&env) else {
        return;
    };
    if gw.settings().routing.health_interval.is_none() {
        return;
    }
    // Runs may land on any isolate: start from what the last run shared.
    if let Some(previous) = read(&env).await {
        shared::with(|r| r.apply_probe_snapshot(gw.settings(), &previous));
    }
    let count = gw.settings().upstreams.len();
    let calls = (0..count).map(|i| {
        let gw = gw.clone();
        async move { (i, probe(&gw, i).await) }
    });
    for (i, answer) in futures_util::future::join_all(calls).await {
        let Some(answer) = answer else { continue };
        let (ok, detail) = gw.probe_verdict(answer);
        let now = clock::now();
        let unix = now.unix;
        if let Some(change) = shared::with(|r| r.probe_result(gw.settings(), i, ok, detail, now)) {
            worker::console_log!("{}", change.to_line(unix));
        }
    }
    let snapshot = shared::with(|r| r.probe_snapshot(gw.settings()));
    let Ok(kv) = env.kv(kv_cache::BINDING) else {
        return;
    };
    if let Some(bytes) = snapshot.to_json() {
        if let Ok(put) = kv.put_bytes(KEY, &bytes) {
            let _ = put.execute().await;
        }
    }
}
