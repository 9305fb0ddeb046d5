//! The core's [`Router`] (state shared by every request), behind a mutex, and the wake-up of
//! requests parked on another request's flight.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use gateway_core::{Router, StoreChange};
use tokio::sync::Notify;

#[derive(Default)]
pub struct Shared {
    router: Mutex<Router>,
    wake: Notify,
    /// Bumped before every wake-up, so a request that checked its flight just before a wake-up
    /// sees it happened and does not sleep through it.
    generation: AtomicU64,
    /// The store of the keys' limits.
    pub limiter: crate::limiter::Limiter,
}

impl Shared {
    /// Shared state whose keys' limits are counted in `limiter`.
    pub fn with_limiter(limiter: crate::limiter::Limiter) -> Shared {
        Shared {
            limiter,
            ..Shared::default()
        }
    }

    /// Runs `f` with the router (briefly: no IO inside), then wakes parked requests if the
    /// router says so.
    pub fn with<R>(&self, f: impl FnOnce(&mut Router) -> R) -> R {
        let (out, wake) = {
            let mut router = self.router.lock().unwrap_or_else(|p| p.into_inner());
            let out = f(&mut router);
            (out, router.take_wakeup())
        };
        if wake {
            self.generation.fetch_add(1, Ordering::Release);
            self.wake.notify_waiters();
        }
        out
    }

    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Returns once a wake-up happened after `seen` (a [`Shared::generation`] read earlier).
    pub async fn woken_since(&self, seen: u64) {
        let notified = self.wake.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        if self.generation() != seen {
            return;
        }
        notified.await;
    }

    /// Reports the shared store's outcome; logs when it goes down or comes back.
    pub fn store_result(&self, ok: bool, what: &str) {
        let now = crate::clock::now().instant;
        match self.with(|r| r.store_result(ok, now)) {
            Some(StoreChange::Down) => {
                eprintln!("fly-fallback: cache: Redis unavailable ({what}); serving without it")
            }
            Some(StoreChange::Up) => eprintln!("fly-fallback: cache: Redis is back"),
            None => {}
        }
    }
}
