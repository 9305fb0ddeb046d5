//! The dashboard's Content-Security-Policy, with the hashes of the page's inline blocks.
//!
//! Hashing at run time (once) instead of pasting hashes into the source means an edit of the
//! page can never ship with a stale hash; the base64 encoder is a dozen lines rather than a
//! dependency in the Worker's size-budgeted wasm.

use sha2::{Digest, Sha256};

/// The policy for `page`: nothing but this origin's JSON, the page's own script and style (by
/// hash) and `data:` images (the empty favicon that stops the browser asking for one).
pub(crate) fn policy(page: &str) -> String {
    let script = hash_source(block(page, "script"));
    let style = hash_source(block(page, "style"));
    format!(
        "default-src 'none'; connect-src 'self'; script-src {script}; style-src {style}; \
         img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
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
    let close = format!("</{tag}>");
    let start = page.find(&open)? + open.len();
    let rest = page.get(start..)?;
    rest.get(..rest.find(&close)?)
}

/// Standard base64 with padding (RFC 4648 §4), as CSP hash sources are written.
pub(crate) fn base64(bytes: &[u8]) -> String {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dashboard_base64_matches_rfc_4648_vectors() {
        for (input, want) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(input.as_bytes()), want, "{input:?}");
        }
        // The hash CSP documents use as their example: sha256 of the empty string.
        assert_eq!(
            base64(&Sha256::digest(b"")),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn dashboard_policy_without_a_block_allows_none() {
        let p = policy("<p>no code</p>");
        assert!(p.contains("script-src 'none'"), "{p}");
        assert!(p.contains("style-src 'none'"), "{p}");
        assert_eq!(block("a<style>x</style>b", "style"), Some("x"));
        assert_eq!(block("<style>x", "style"), None);
    }
}
