//! Which route a method and path select.

use crate::error::GatewayError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Models,
    ChatCompletions,
    Completions,
    Embeddings,
    /// `GET /v1/gateway/status`: the upstreams' state.
    Status,
    /// `POST /v1/gateway/estimate`: the model and cost a request would get, without an upstream.
    Estimate,
    /// `GET /v1/gateway/key`: the calling key's id, models, limits and what is left of them.
    Key,
    /// `GET /v1/gateway/summary`: what this instance has served (requests, errors, failovers,
    /// cache, spend), for the dashboard.
    Summary,
    /// `GET /dashboard`: the dashboard's page (public: it holds no data; it asks for a key).
    Dashboard,
}

impl Route {
    /// The path below the upstream's base URL (which already ends in `/v1`).
    pub fn upstream_suffix(self) -> &'static str {
        match self {
            Route::Health => "",
            Route::Models => "/models",
            Route::ChatCompletions => "/chat/completions",
            Route::Completions => "/completions",
            Route::Embeddings => "/embeddings",
            Route::Status | Route::Estimate | Route::Key | Route::Summary | Route::Dashboard => "",
        }
    }

    /// Routes whose body is an inference request forwarded upstream.
    pub fn has_body(self) -> bool {
        matches!(
            self,
            Route::ChatCompletions | Route::Completions | Route::Embeddings
        )
    }

    /// Routes that read a JSON body: the inference routes and the estimate.
    pub fn reads_body(self) -> bool {
        self.has_body() || self == Route::Estimate
    }

    pub fn requires_auth(self) -> bool {
        !matches!(self, Route::Health | Route::Dashboard)
    }

    fn method(self) -> &'static str {
        if self.reads_body() {
            "POST"
        } else {
            "GET"
        }
    }
}

/// Resolves a route; the path must not include the query string.
pub fn resolve(method: &str, path: &str) -> Result<Route, GatewayError> {
    let trimmed = if path.len() > 1 {
        path.trim_end_matches('/')
    } else {
        path
    };
    let route = match trimmed {
        "/health" => Route::Health,
        "/v1/models" => Route::Models,
        "/v1/chat/completions" => Route::ChatCompletions,
        "/v1/completions" => Route::Completions,
        "/v1/embeddings" => Route::Embeddings,
        "/v1/gateway/status" => Route::Status,
        "/v1/gateway/estimate" => Route::Estimate,
        "/v1/gateway/key" => Route::Key,
        "/v1/gateway/summary" => Route::Summary,
        "/dashboard" => Route::Dashboard,
        _ => {
            return Err(GatewayError::NotFound {
                method: method.to_string(),
                path: truncate(path),
            })
        }
    };
    let allowed = route.method();
    let ok = method == allowed || (allowed == "GET" && method == "HEAD");
    if !ok {
        return Err(GatewayError::MethodNotAllowed {
            method: truncate(method),
            path: trimmed.to_string(),
            allowed,
        });
    }
    Ok(route)
}

// Paths are echoed in error messages; keep them short.
fn truncate(s: &str) -> String {
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &s[..i]),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_routes_resolve_with_their_methods() {
        assert_eq!(
            resolve("POST", "/v1/chat/completions"),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(
            resolve("POST", "/v1/chat/completions/"),
            Ok(Route::ChatCompletions)
        );
        assert_eq!(resolve("POST", "/v1/embeddings"), Ok(Route::Embeddings));
        assert_eq!(resolve("POST", "/v1/completions"), Ok(Route::Completions));
        assert_eq!(resolve("GET", "/v1/models"), Ok(Route::Models));
        assert_eq!(resolve("GET", "/health"), Ok(Route::Health));
        assert_eq!(resolve("HEAD", "/health"), Ok(Route::Health));
        assert_eq!(resolve("POST", "/v1/gateway/estimate"), Ok(Route::Estimate));
        assert_eq!(
            resolve("GET", "/v1/gateway/estimate").unwrap_err().status(),
            405
        );
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(resolve("GET", "/v2/x").unwrap_err().status(), 404);
        assert_eq!(resolve("GET", "/").unwrap_err().status(), 404);
        assert_eq!(
            resolve("GET", "/v1/chat/completions").unwrap_err().status(),
            405
        );
        assert_eq!(resolve("DELETE", "/v1/models").unwrap_err().status(), 405);
    }

    #[test]
    fn long_paths_are_truncated_in_messages() {
        let long = format!("/{}", "é".repeat(5000));
        let msg = resolve("GET", &long).unwrap_err().message();
        assert!(msg.len() < 600);
    }
}
