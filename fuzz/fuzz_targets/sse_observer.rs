//! The stream observer: never panics, and sees the same events, `[DONE]`, errors, usage and
//! text whatever the chunking. Choices: chunk sizes (none: one byte at a time); payload: the
//! stream.
#![no_main]

use gateway_fuzz::*;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (choices, stream) = split_input(data);
    observer_ignores_chunking(stream, &chunk_cuts(choices, stream.len()));
});
