//! The body sent upstream: `rewrite` changes only `model` and `stream_options` and keeps every
//! other field, in order, byte for byte. Choices: whether a model is given (and which, as
//! lossy UTF-8) and whether usage is asked for; payload: the body.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (choices, body) = split_input(data);
    let mut c = Choices::new(choices);
    let flags = c.byte();
    let model = String::from_utf8_lossy(c.rest()).into_owned();
    let model = (flags & 1 == 1).then_some(model.as_str());
    rewrite_changes_only_model_and_stream_options(body, model, flags & 2 == 2);
});
