//! Label values, bounded: every value comes from the configuration or a fixed set, never from
//! what a client typed, so a client cannot grow the number of series.

use crate::config::Settings;
use crate::route::Route;

/// The value of a label whose real value is not one the gateway knows.
pub const OTHER: &str = "other";

/// The route's name in metrics (`chat_completions`, ...); `other` for paths that are no route.
pub fn route_name(method: &str, path: &str) -> &'static str {
    match crate::route::resolve(method, path) {
        Ok(route) => match route {
            Route::Health => "health",
            Route::Models => "models",
            Route::ChatCompletions => "chat_completions",
            Route::Completions => "completions",
            Route::Embeddings => "embeddings",
            Route::Status => "status",
            Route::Estimate => "estimate",
            Route::Key => "key",
            Route::Summary => "summary",
            Route::Dashboard => "dashboard",
        },
        Err(_) => OTHER,
    }
}

/// `gen_ai.operation.name` for an inference route.
pub fn operation_name(route: &str) -> Option<&'static str> {
    match route {
        "chat_completions" => Some("chat"),
        "completions" => Some("text_completion"),
        "embeddings" => Some("embeddings"),
        _ => None,
    }
}

/// `gen_ai.provider.name` from an upstream's host: the conventions' well-known values, else
/// `_OTHER` (an OpenAI-compatible server of the operator's own).
pub fn provider_name(host: &str) -> &'static str {
    let host = host.split(':').next().unwrap_or(host);
    let is = |domain: &str| {
        host == domain
            || host
                .strip_suffix(domain)
                .is_some_and(|rest| rest.ends_with('.'))
    };
    if is("api.openai.com") {
        "openai"
    } else if is("openai.azure.com") || is("services.ai.azure.com") {
        "azure.ai.openai"
    } else if is("api.anthropic.com") {
        "anthropic"
    } else if is("generativelanguage.googleapis.com") {
        "gcp.gemini"
    } else if is("aiplatform.googleapis.com") {
        "gcp.vertex_ai"
    } else if is("amazonaws.com") {
        "aws.bedrock"
    } else if is("api.mistral.ai") {
        "mistral_ai"
    } else if is("api.groq.com") {
        "groq"
    } else if is("api.deepseek.com") {
        "deepseek"
    } else if is("api.x.ai") {
        "x_ai"
    } else if is("api.perplexity.ai") {
        "perplexity"
    } else if is("api.cohere.com") || is("api.cohere.ai") {
        "cohere"
    } else {
        "_OTHER"
    }
}

/// A model as a label: a name the configuration or the price table knows (the models list, an
/// upstream's models, a tier or alias, a priced model), else [`OTHER`].
pub fn model_label(settings: &Settings, model: &str) -> String {
    let known = settings.models.iter().any(|m| m.id == model)
        || settings
            .upstreams
            .iter()
            .any(|u| u.models.as_ref().is_some_and(|m| m.contains(model)))
        || model == crate::selection::AUTO
        || model
            .strip_prefix(crate::selection::TIER_PREFIX)
            .is_some_and(|t| t == "*" || settings.selector.tiers().contains_key(t))
        || settings.prices.get(model).is_some();
    if known && model.len() <= 128 {
        model.to_string()
    } else {
        OTHER.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn providers_are_named_from_the_host_and_lookalikes_are_not_fooled() {
        assert_eq!(provider_name("api.openai.com"), "openai");
        assert_eq!(provider_name("api.openai.com:443"), "openai");
        assert_eq!(provider_name("me.openai.azure.com"), "azure.ai.openai");
        assert_eq!(provider_name("evilapi.openai.com.example"), "_OTHER");
        assert_eq!(provider_name("xapi.openai.com"), "_OTHER");
        assert_eq!(provider_name("127.0.0.1"), "_OTHER");
    }

    #[test]
    fn routes_are_named_and_unknown_paths_are_other() {
        assert_eq!(
            route_name("POST", "/v1/chat/completions"),
            "chat_completions"
        );
        assert_eq!(route_name("GET", "/v1/gateway/summary"), "summary");
        assert_eq!(route_name("GET", "/v1/whatever-a-client-sends"), OTHER);
        assert_eq!(operation_name("embeddings"), Some("embeddings"));
        assert_eq!(operation_name("models"), None);
    }
}
