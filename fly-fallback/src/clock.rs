//! The native clocks, read here and passed to the core: a monotonic reading (microseconds since
//! the process started) and wall-clock time.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use gateway_core::time::{Instant, Now, UnixMillis};

fn origin() -> std::time::Instant {
    static ORIGIN: OnceLock<std::time::Instant> = OnceLock::new();
    *ORIGIN.get_or_init(std::time::Instant::now)
}

pub fn now() -> Now {
    let instant =
        Instant::from_micros(u64::try_from(origin().elapsed().as_micros()).unwrap_or(u64::MAX));
    let unix = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| UnixMillis(u64::try_from(d.as_millis()).unwrap_or(u64::MAX)))
        .unwrap_or_default();
    Now { instant, unix }
}

/// The core's instant as tokio's, for timers.
pub fn to_tokio(t: Instant) -> tokio::time::Instant {
    tokio::time::Instant::from_std(origin() + Duration::from_micros(t.as_micros()))
}

/// Runs `io` until the core's deadline: `None` when the deadline came first.
pub async fn until<F: std::future::Future>(deadline: Option<Instant>, io: F) -> Option<F::Output> {
    match deadline {
        Some(t) => tokio::time::timeout_at(to_tokio(t), io).await.ok(),
        None => Some(io.await),
    }
}
