//! Settings from the Worker's env (`[vars]` and secrets), read once per isolate.

use std::cell::RefCell;
use std::sync::Arc;

use gateway_core::config::Platform;
use gateway_core::{ConfigError, Gateway, Settings};
use worker::Env;

thread_local! {
    // An isolate's env does not change while it lives (new vars or secrets mean a new
    // deployment), so the parsed settings and precomputed responses are built once.
    static GATEWAY: RefCell<Option<Arc<Gateway>>> = const { RefCell::new(None) };
}

/// Reads a binding as a string: plain vars and secrets are strings; a `[vars]` table (which
/// wrangler passes as an object) is turned back into JSON.
fn lookup(env: &Env, name: &str) -> Option<String> {
    if let Ok(v) = env.var(name) {
        return Some(v.to_string());
    }
    if let Ok(v) = env.secret(name) {
        return Some(v.to_string());
    }
    table(env, name)
}

/// A `[vars]` table as JSON text, the same text `env.object_var::<serde_json::Value>` gave
/// (keys sorted by `Value`), without the JavaScript-value deserializer that it adds to the
/// bundle: JavaScript writes the JSON, `Value` puts it in order.
fn table(env: &Env, name: &str) -> Option<String> {
    let v = js_sys::Reflect::get(env, &name.into()).ok()?;
    // What `object_var` accepts: a plain object (not an array, a number or nothing).
    if !v.is_object() || js_sys::Object::from(v.clone()).constructor().name() != "Object" {
        return None;
    }
    let text = js_sys::JSON::stringify(&v).ok()?.as_string()?;
    gateway_core::config::sorted_json(&text)
}

pub fn gateway(env: &Env) -> Result<Arc<Gateway>, ConfigError> {
    if let Some(gw) = GATEWAY.with(|g| g.borrow().clone()) {
        return Ok(gw);
    }
    // Invalid settings are not cached: the next request reports them again, naming the setting.
    let settings = Settings::from_lookup_on(Platform::Edge, |name| lookup(env, name))?;
    let gw = Arc::new(Gateway::new(settings, "worker"));
    GATEWAY.with(|g| *g.borrow_mut() = Some(gw.clone()));
    Ok(gw)
}
