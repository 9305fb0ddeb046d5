//! The store of the client keys' limits on the Worker: a Durable Object per key (per shard of
//! a key), bound as `LIMITER`, so that one limit holds across every isolate and location. The
//! object applies the core's operations ([`gateway_core::limits::Op`]) to counters it keeps in
//! memory and in its storage; every decision is the core's.
//!
//! Without a `LIMITER` binding (a configuration that leaves it out), the counters of this
//! isolate are used instead, and a line says so once.

use std::cell::{Cell, RefCell};

use futures_channel::oneshot;
use gateway_core::limits::{LimitCall, MemoryCounters, Op, Reply};
use worker::{
    durable_object, Context, Date, DurableObject, Env, Method, Request, RequestInit, Response,
    State,
};

/// The binding's name in `wrangler.toml`.
const BINDING: &str = "LIMITER";
/// The storage key of an object's counters.
const STORAGE_KEY: &str = "counters";

thread_local! {
    static LOCAL: RefCell<MemoryCounters> = RefCell::new(MemoryCounters::new());
    static WARNED: Cell<bool> = const { Cell::new(false) };
}

fn now_ms() -> u64 {
    Date::now().as_millis()
}

/// Applies `call` atomically in its key's object; `Err(())` when the object cannot be reached
/// or answers something else than a reply.
pub async fn apply(env: &Env, call: &LimitCall) -> Result<Reply, ()> {
    let Ok(namespace) = env.durable_object(BINDING) else {
        if !WARNED.with(|w| w.replace(true)) {
            worker::console_log!(
                "{{\"event\":\"limiter_per_isolate\",\"message\":\"no LIMITER Durable Object binding: limits are counted per isolate\"}}"
            );
        }
        return Ok(LOCAL.with(|c| c.borrow_mut().apply(&call.op, now_ms())));
    };
    let stub = namespace
        .id_from_name(&call.object)
        .and_then(|id| id.get_stub())
        .map_err(|_| ())?;
    let body = serde_json::to_string(&call.op).map_err(|_| ())?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post).with_body(Some(body.into()));
    let req = Request::new_with_init("https://limiter/op", &init).map_err(|_| ())?;
    let mut resp = stub.fetch_with_request(req).await.map_err(|_| ())?;
    // A binding whose class is not running (a dev registry without it) answers with text.
    if resp.status_code() != 200 {
        return Err(());
    }
    let bytes = resp.bytes().await.map_err(|_| ())?;
    serde_json::from_slice(&bytes).map_err(|_| ())
}

/// Settles in the background, after the response.
pub fn settle_later(ctx: &Context, env: &Env, call: LimitCall) {
    let env = env.clone();
    ctx.wait_until(async move {
        let _ = apply(&env, &call).await;
    });
}

/// For a response whose exchange finishes later (a relayed stream): the settlement sent here
/// is made under `wait_until`; dropping the sender makes none.
pub fn settle_when_sent(ctx: &Context, env: &Env) -> oneshot::Sender<LimitCall> {
    let (tx, rx) = oneshot::channel::<LimitCall>();
    let env = env.clone();
    ctx.wait_until(async move {
        if let Ok(call) = rx.await {
            let _ = apply(&env, &call).await;
        }
    });
    tx
}

/// The Durable Object: one per key (or shard of a key). Its events run one at a time, so an
/// operation applied between two awaits is atomic.
#[durable_object(fetch)]
pub struct Limiter {
    state: State,
    counters: std::rc::Rc<RefCell<MemoryCounters>>,
}

impl DurableObject for Limiter {
    fn new(state: State, _env: Env) -> Self {
        let counters = std::rc::Rc::new(RefCell::new(MemoryCounters::new()));
        // The stored counters are loaded before the first request is delivered: the platform
        // call is made here, and it holds every event until the load ends (the future it gives
        // back only reports that end, so it is not awaited).
        let storage = state.storage();
        let into = counters.clone();
        drop(state.block_concurrency_while(async move {
            if let Ok(Some(json)) = storage.get::<String>(STORAGE_KEY).await {
                if let Ok(stored) = serde_json::from_str::<MemoryCounters>(&json) {
                    *into.borrow_mut() = stored;
                }
            }
            Ok(())
        }));
        Limiter { state, counters }
    }

    async fn fetch(&self, mut req: Request) -> worker::Result<Response> {
        let Ok(op) = req.json::<Op>().await else {
            return Response::error("not an operation", 400);
        };
        let (reply, snapshot) = {
            let mut counters = self.counters.borrow_mut();
            let reply = counters.apply(&op, now_ms());
            let changed =
                reply.granted && (!op.adjust.is_empty() || op.checks.iter().any(|c| c.add != 0));
            let json = changed
                .then(|| serde_json::to_string(&*counters).ok())
                .flatten();
            (reply, json)
        };
        if let Some(json) = snapshot {
            // Started, not awaited: the platform's output gate holds this reply until the write
            // is durable (and restarts the object if it fails), without a round trip here.
            let _ = self
                .state
                .storage()
                .as_raw()
                .put(STORAGE_KEY, wasm_bindgen::JsValue::from_str(&json));
        }
        Response::from_json(&reply)
    }
}
