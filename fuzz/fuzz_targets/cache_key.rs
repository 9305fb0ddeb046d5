//! The cache key: never panics on any body; the same key for the same JSON reordered, respaced
//! and respelt; a canonical form that is canonical again when read back. Choices: key orders,
//! whitespace, spellings, headers; payload: the body.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (choices, body) = split_input(data);
    cache_key_is_canonical(body, &mut Choices::new(choices));
});
