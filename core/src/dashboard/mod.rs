//! `GET /dashboard`: one self-contained page that reads the status and summary endpoints.
//!
//! The page holds no data and no secret: it asks for a client key, keeps it in the tab's
//! session storage and sends it as a header to `/v1/gateway/status` and `/v1/gateway/summary`.
//! Its one inline script and one inline style are allowed by their hashes (computed by the
//! crate's build script), not by `'unsafe-inline'`, so that markup injected into the page (if an
//! escaping bug ever let any in) could run nothing.

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue};

const PAGE: &str = include_str!("page.html");

/// Checked at compile time (`from_static` is evaluated in a static's initializer).
static POLICY: HeaderValue =
    HeaderValue::from_static(include_str!(concat!(env!("OUT_DIR"), "/dashboard_csp.txt")));

/// The page's body (static: no copy per request).
pub fn body() -> Bytes {
    Bytes::from_static(PAGE.as_bytes())
}

/// The page's headers: HTML that may reach nothing but this origin.
pub fn headers() -> HeaderMap {
    let mut h = HeaderMap::with_capacity(6);
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(http::header::CONTENT_SECURITY_POLICY, POLICY.clone());
    h.insert(
        http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        http::header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header_policy() -> String {
        headers()
            .get(http::header::CONTENT_SECURITY_POLICY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    }

    /// The text between the only `<tag>` and its `</tag>`, found independently of `csp`.
    fn only_block(tag: &str) -> String {
        let open = format!("<{tag}>");
        let parts: Vec<&str> = PAGE.split(&open).collect();
        assert_eq!(parts.len(), 2, "exactly one <{tag}> block in the page");
        parts[1]
            .split(&format!("</{tag}>"))
            .next()
            .unwrap()
            .to_string()
    }

    /// A second base64 encoder, independent of the build script's.
    fn base64(bytes: &[u8]) -> String {
        let abc = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let bits: String = bytes.iter().map(|b| format!("{b:08b}")).collect();
        let mut out: String = bits
            .as_bytes()
            .chunks(6)
            .map(|c| {
                let s = format!("{:0<6}", std::str::from_utf8(c).unwrap());
                abc[usize::from_str_radix(&s, 2).unwrap()] as char
            })
            .collect();
        while !out.len().is_multiple_of(4) {
            out.push('=');
        }
        out
    }

    fn sha256_b64(text: &str) -> String {
        use sha2::Digest;
        base64(&sha2::Sha256::digest(text.as_bytes()))
    }

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
        // The example CSP documents give: the sha256 of nothing.
        assert_eq!(
            sha256_b64(""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn dashboard_csp_hashes_match_the_pages_script_and_style() {
        let policy = header_policy();
        let script = format!("script-src 'sha256-{}'", sha256_b64(&only_block("script")));
        let style = format!("style-src 'sha256-{}'", sha256_b64(&only_block("style")));
        assert!(policy.contains(&script), "{policy} lacks {script}");
        assert!(policy.contains(&style), "{policy} lacks {style}");
        assert!(!policy.contains("unsafe"), "{policy}");
        for d in [
            "default-src 'none'",
            "connect-src 'self'",
            "img-src data:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(policy.contains(d), "{policy} lacks {d}");
        }
    }

    #[test]
    fn dashboard_page_has_no_other_inline_code_or_external_reference() {
        // A second script, an event-handler attribute or a style attribute would be blocked
        // by the policy; any URL would be a request to another host.
        let lower = PAGE.to_ascii_lowercase();
        assert_eq!(lower.matches("<script").count(), 1);
        assert_eq!(lower.matches("<style").count(), 1);
        for bad in [
            "http:",
            "https:",
            " style=",
            " onclick",
            " onload",
            " onsubmit",
            "url(",
            "@import",
            "src=",
            ".innerhtml",
            "outerhtml",
            "insertadjacenthtml",
            "document.write",
            "eval(",
        ] {
            assert!(!lower.contains(bad), "the page contains {bad:?}");
        }
        assert!(PAGE.len() <= 20 * 1024, "the page is {} bytes", PAGE.len());
    }

    #[test]
    fn dashboard_headers_are_html_without_sniffing_or_referrer() {
        let h = headers();
        assert_eq!(h[CONTENT_TYPE], "text/html; charset=utf-8");
        assert_eq!(h[http::header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        assert_eq!(h[http::header::REFERRER_POLICY], "no-referrer");
        assert_eq!(body(), PAGE.as_bytes());
    }
}
