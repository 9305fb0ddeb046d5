//! Writes the dashboard's Content-Security-Policy, with the sha256 of the page's one inline
//! script and one inline style, to `$OUT_DIR/dashboard_csp.txt`.
//!
//! Hashing here rather than at run time keeps the code out of the Worker's size-budgeted wasm
//! (about 1 KiB gzipped), and hashing at all (rather than pasting hashes into the source) means
//! an edit of the page cannot ship with a stale hash. `dashboard::tests` checks the result
//! against its own hashing of the page.

// A build script talks to cargo through stdout and learns its output directory from the
// environment; neither is the core's run-time code, which the core's lints are about.
#![allow(clippy::print_stdout, clippy::disallowed_methods)]

use std::error::Error;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

const PAGE: &str = "src/dashboard/page.html";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo::rerun-if-changed={PAGE}");
    let page = std::fs::read_to_string(PAGE)?;
    let script = hash_source(block(&page, "script"));
    let style = hash_source(block(&page, "style"));
    // Nothing but this origin's JSON, the page's own script and style, and `data:` images
    // (the empty favicon that stops the browser asking for one).
    let policy = format!(
        "default-src 'none'; connect-src 'self'; script-src {script}; style-src {style}; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let out = PathBuf::from(std::env::var("OUT_DIR")?).join("dashboard_csp.txt");
    std::fs::write(out, policy)?;
    Ok(())
}

/// `'sha256-…'` for a block, or `'none'` when the page has no such block.
fn hash_source(block: Option<&str>) -> String {
    match block {
        Some(text) => format!("'sha256-{}'", base64(&Sha256::digest(text.as_bytes()))),
        None => "'none'".to_string(),
    }
}

/// The text between the first `<tag>` and the following `</tag>`: what the browser hashes.
fn block<'a>(page: &'a str, tag: &str) -> Option<&'a str> {
    let open = format!("<{tag}>");
    let start = page.find(&open)? + open.len();
    let rest = page.get(start..)?;
    rest.get(..rest.find(&format!("</{tag}>"))?)
}

/// Standard base64 with padding (RFC 4648 §4), as CSP hash sources are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |v: u32| {
        ALPHABET
            .get((v & 63) as usize)
            .map_or('=', |&c| char::from(c))
    };
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = |i: usize| chunk.get(i).copied().map_or(0, u32::from);
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}
