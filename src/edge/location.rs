//! Reads `request.cf` without the workers-rs accessors that unwrap internally (`Cf::coordinates`
//! parses with `unwrap`), so missing or odd data can never panic the isolate.

use js_sys::Reflect;
use wasm_bindgen::JsValue;
use worker::Request;

use gateway_core::geo::ClientLocation;

fn field(cf: &JsValue, name: &str) -> Option<String> {
    let v = Reflect::get(cf, &JsValue::from_str(name)).ok()?;
    if let Some(s) = v.as_string() {
        return Some(s);
    }
    v.as_f64().map(|n| n.to_string())
}

pub fn of(req: &Request) -> ClientLocation {
    let cf = match Reflect::get(req.inner(), &JsValue::from_str("cf")) {
        Ok(v) if v.is_object() => v,
        _ => return ClientLocation::default(),
    };
    ClientLocation::from_parts(
        field(&cf, "colo"),
        field(&cf, "country"),
        field(&cf, "continent"),
        field(&cf, "latitude").as_deref(),
        field(&cf, "longitude").as_deref(),
    )
}
