//! The limiter's arithmetic: reservations, settlements and time steered by the input; granted
//! requests, tokens and spend never exceed the key's limits, a refusal changes nothing, and no
//! store reply makes a decision panic.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    limiter_never_overspends(&mut Choices::new(data));
});
