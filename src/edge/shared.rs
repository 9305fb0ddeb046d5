//! The core's [`Router`] for this isolate (requests in one isolate share it; isolates do not),
//! and the wake-up of requests parked on another request's flight.

use std::cell::{Cell, RefCell};
use std::time::Duration;

use gateway_core::{Router, StoreChange};
use worker::Delay;

/// How often a parked request looks whether it was woken.
///
/// A parked request cannot be woken by a waker called from another request: workerd would
/// resume it inside that other request's I/O context, and its own streams and `fetch` would
/// then fail ("Cannot perform I/O on behalf of a different request"). Its own timer resumes it
/// in its own context.
const PARKED_POLL: Duration = Duration::from_millis(5);

#[derive(Default)]
struct Shared {
    router: RefCell<Router>,
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
        }
        out
    })
}

pub fn generation() -> u64 {
    SHARED.with(|s| s.generation.get())
}

/// Returns once a wake-up happened after `seen` (a [`generation`] read earlier).
pub async fn woken_since(seen: u64) {
    while generation() == seen {
        Delay::from(PARKED_POLL).await;
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
