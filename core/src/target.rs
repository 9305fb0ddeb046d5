//! The request target (path and query) of a URL as a platform serializes it (the Worker's
//! `request.url`), read without parsing the whole URL: in a serialized URL with a scheme and a
//! host, the first `/` after `://` begins the path, and `?` and `#` inside the path and the
//! query are percent-encoded.

/// `(path, query)`: the path without its query, never empty (`/` when the URL has none), and the
/// query without its `?` and without a fragment.
pub fn of_url(url: &str) -> (&str, Option<&str>) {
    let target = match url.find("://") {
        // The host ends where the path, the query or the fragment begins.
        Some(i) => {
            let rest = &url[i + 3..];
            rest.find(['/', '?', '#']).map_or("", |j| &rest[j..])
        }
        None => url,
    };
    let target = target.split_once('#').map_or(target, |(t, _)| t);
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    (if path.is_empty() { "/" } else { path }, query)
}

#[cfg(test)]
mod tests {
    use super::of_url;

    #[test]
    fn path_and_query_of_serialized_urls() {
        let cases = [
            (
                "https://gw.example/v1/chat/completions",
                "/v1/chat/completions",
                None,
            ),
            (
                "http://127.0.0.1:8787/v1/models?limit=2",
                "/v1/models",
                Some("limit=2"),
            ),
            (
                "https://gw.example/v1/models?a=1#frag",
                "/v1/models",
                Some("a=1"),
            ),
            (
                "https://gw.example/v1/models#frag?not-a-query",
                "/v1/models",
                None,
            ),
            ("https://gw.example", "/", None),
            ("https://gw.example?x=1", "/", Some("x=1")),
            ("https://gw.example/", "/", None),
            ("https://gw.example/?", "/", Some("")),
            ("https://gw.example/a%3Fb?c=%23", "/a%3Fb", Some("c=%23")),
            ("/relative/path?q", "/relative/path", Some("q")),
            ("", "/", None),
        ];
        for (url, path, query) in cases {
            assert_eq!(of_url(url), (path, query), "{url}");
        }
    }
}
