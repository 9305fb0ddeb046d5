//! The core's [`Router`] for this isolate (requests in one isolate share it; isolates do not),
//! and the wake-up of requests parked on another request's flight.

use std::cell::{Cell, RefCell};

use futures_channel::oneshot;
use gateway_core::{Router, StoreChange};

#[derive(Default)]
struct Shared {
    router: RefCell<Router>,
    parked: RefCell<Vec<oneshot::Sender<()>>>,
    generation: Cell<u64>,
}

thread_local! {
    static SHARED: Shared = Shared::default();
}

/// Runs `f` with the router (no await inside, so no other request can interleave), then wakes
/// parked requests if the router says so.
pub fn with<R>(f: impl FnOnce(&mut Router) -> R) -> R {
    SHARED.with(|s| {
        let (out, wake) = {
            let mut router = s.router.borrow_mut();
            let out = f(&mut router);
            (out, router.take_wakeup())
        };
        if wake {
            s.generation.set(s.generation.get().wrapping_add(1));
            for tx in s.parked.borrow_mut().drain(..) {
                let _ = tx.send(());
            }
        }
        out
    })
}

pub fn generation() -> u64 {
    SHARED.with(|s| s.generation.get())
}

/// Returns once a wake-up happened after `seen` (a [`generation`] read earlier).
pub async fn woken_since(seen: u64) {
    let rx = SHARED.with(|s| {
        if s.generation.get() != seen {
            return None;
        }
        let (tx, rx) = oneshot::channel();
        s.parked.borrow_mut().push(tx);
        Some(rx)
    });
    if let Some(rx) = rx {
        let _ = rx.await;
    }
}

/// Reports a KV call's outcome; logs when KV goes down or comes back.
pub fn store_result(ok: bool, what: &str) {
    let now = super::clock::now().instant;
    match with(|r| r.store_result(ok, now)) {
        Some(StoreChange::Down) => {
            worker::console_warn!("cache: KV unavailable ({what}); serving without it")
        }
        Some(StoreChange::Up) => worker::console_log!("cache: KV is back"),
        None => {}
    }
}
