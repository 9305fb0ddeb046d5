//! The Worker's clock, read here and passed to the core. Workers have one usable clock,
//! `Date.now()` (it advances only across IO, which is all the core needs); it serves as both the
//! monotonic and the wall-clock reading.

use gateway_core::time::{Instant, Now, UnixMillis};

pub fn now() -> Now {
    let ms = js_sys::Date::now();
    Now {
        instant: Instant::from_millis_f64(ms),
        unix: UnixMillis::from_f64(ms),
    }
}
