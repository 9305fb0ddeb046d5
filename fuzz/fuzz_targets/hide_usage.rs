//! The usage filter: never panics, removes exactly the usage-only events, and gives the same
//! bytes whatever the chunking. Choices: chunk sizes (none: one byte at a time); payload: the
//! stream.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (choices, stream) = split_input(data);
    hide_usage_ignores_chunking(stream, &chunk_cuts(choices, stream.len()));
});
