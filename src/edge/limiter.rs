//! The store of the client keys' limits on the Worker.
//!
//! For now the counters of this isolate (a limit per isolate, not per key across the edge);
//! the Durable Object store replaces it.

use std::cell::RefCell;

use gateway_core::limits::{LimitCall, MemoryCounters, Reply};

thread_local! {
    static COUNTERS: RefCell<MemoryCounters> = RefCell::new(MemoryCounters::new());
}

pub fn apply(call: &LimitCall) -> Result<Reply, ()> {
    let now_ms = js_sys::Date::now() as u64;
    COUNTERS.with(|c| Ok(c.borrow_mut().apply(&call.op, now_ms)))
}
