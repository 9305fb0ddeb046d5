//! Request bodies: validation for every inference route, and a whole exchange (admission,
//! validation, model selection from hint headers, the cache plan, the rewrite) up to its first
//! decision. Choices: the route (chat, completions, embeddings, estimate) and up to three client
//! headers; payload: the body.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (choices, body) = split_input(data);
    let mut c = Choices::new(choices);
    let selector = c.byte();
    let headers = client_headers(&mut c);
    for route in INFERENCE_ROUTES {
        validation_is_total_and_consistent(route, body);
    }
    exchange_decides(selector, &headers, body);
});
