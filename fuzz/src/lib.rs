//! What the fuzz targets share: the property checks of the core's proptests (one definition of
//! each property, in `core/tests/props/`), and the layout of a fuzz input.
//!
//! Every target reads its input as `[n][n choice bytes][payload]`: the payload is what is fuzzed
//! (a request body, an event stream, ...) and the choices steer the rest (a route, headers, key
//! order, where a stream is cut). A seed is then `\0` followed by a plain payload.

#[path = "../../core/tests/props/mod.rs"]
mod props;

pub use props::*;

/// Splits an input into its choice bytes and its payload.
pub fn split_input(data: &[u8]) -> (&[u8], &[u8]) {
    let Some((&n, rest)) = data.split_first() else {
        return (&[], &[]);
    };
    rest.split_at((n as usize).min(rest.len()))
}

/// Cut points for a payload of `len` bytes: chunks of `choice % 64 + 1` bytes, the choices
/// taken in turn; with no choices, a cut after every byte.
pub fn chunk_cuts(choices: &[u8], len: usize) -> Vec<usize> {
    if choices.is_empty() {
        return (1..len).collect();
    }
    let mut cuts = Vec::new();
    let mut at = 0;
    for b in choices.iter().cycle() {
        at += (*b as usize % 64) + 1;
        if at >= len {
            break;
        }
        cuts.push(at);
    }
    cuts
}
