//! Which models a key may use.

use crate::selection::{AUTO, TIER_PREFIX};

#[derive(Debug, Clone, PartialEq, Eq)]
enum Pattern {
    /// `*`: every model (not the aliases).
    Any,
    Exact(String),
    /// `gpt-4.1*`.
    Prefix(String),
}

/// A key's `models`: the models it may have sent upstream, and the aliases (`auto`,
/// `tier:NAME`, `tier:*`) it may ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelAllow {
    /// None: no `models` list, everything is allowed.
    patterns: Option<Vec<Pattern>>,
    auto: bool,
    all_tiers: bool,
    tiers: Vec<String>,
}

impl ModelAllow {
    pub fn all() -> ModelAllow {
        ModelAllow {
            patterns: None,
            auto: true,
            all_tiers: true,
            tiers: Vec::new(),
        }
    }

    pub fn parse(list: &[String]) -> Result<ModelAllow, String> {
        let mut allow = ModelAllow {
            patterns: Some(Vec::new()),
            auto: false,
            all_tiers: false,
            tiers: Vec::new(),
        };
        if list.len() > 1000 {
            return Err("at most 1000 entries".into());
        }
        for raw in list {
            let m = raw.trim();
            if m.is_empty() || m.len() > 256 || m.chars().any(char::is_control) {
                return Err(format!(
                    "'{}' is not a model name (1 to 256 characters, no control characters)",
                    m.chars().take(64).collect::<String>()
                ));
            }
            if m == AUTO {
                allow.auto = true;
            } else if let Some(tier) = m.strip_prefix(TIER_PREFIX) {
                if tier == "*" {
                    allow.all_tiers = true;
                } else if tier.is_empty() || tier.contains('*') {
                    return Err(format!("'{m}': name a tier, or tier:* for every tier"));
                } else {
                    allow.tiers.push(tier.to_string());
                }
            } else if m == "*" {
                if let Some(p) = allow.patterns.as_mut() {
                    p.push(Pattern::Any);
                }
            } else if let Some(prefix) = m.strip_suffix('*') {
                if prefix.contains('*') {
                    return Err(format!("'{m}': '*' may only end a name"));
                }
                if let Some(p) = allow.patterns.as_mut() {
                    p.push(Pattern::Prefix(prefix.to_string()));
                }
            } else if m.contains('*') {
                return Err(format!("'{m}': '*' may only end a name"));
            } else if let Some(p) = allow.patterns.as_mut() {
                p.push(Pattern::Exact(m.to_string()));
            }
        }
        Ok(allow)
    }

    /// Whether a request may name `requested` (a model or an alias).
    pub fn allows_request(&self, requested: &str) -> bool {
        if requested == AUTO {
            return self.auto;
        }
        if let Some(tier) = requested.strip_prefix(TIER_PREFIX) {
            return self.all_tiers || self.tiers.iter().any(|t| t == tier);
        }
        self.allows_model(requested)
    }

    /// Whether `model` may be sent upstream for this key.
    pub fn allows_model(&self, model: &str) -> bool {
        match &self.patterns {
            None => true,
            Some(patterns) => patterns.iter().any(|p| match p {
                Pattern::Any => true,
                Pattern::Exact(m) => m == model,
                Pattern::Prefix(prefix) => model.starts_with(prefix.as_str()),
            }),
        }
    }

    /// Whether a `models` list limits the key (without one, every model is allowed).
    pub fn is_restricted(&self) -> bool {
        self.patterns.is_some()
    }

    /// The list as configured, for `GET /v1/gateway/key` (None: every model).
    pub fn describe(&self) -> Option<Vec<String>> {
        let patterns = self.patterns.as_ref()?;
        let mut out: Vec<String> = patterns
            .iter()
            .map(|p| match p {
                Pattern::Any => "*".to_string(),
                Pattern::Exact(m) => m.clone(),
                Pattern::Prefix(prefix) => format!("{prefix}*"),
            })
            .collect();
        if self.auto {
            out.push(AUTO.to_string());
        }
        if self.all_tiers {
            out.push(format!("{TIER_PREFIX}*"));
        }
        out.extend(self.tiers.iter().map(|t| format!("{TIER_PREFIX}{t}")));
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(list: &[&str]) -> ModelAllow {
        ModelAllow::parse(&list.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap_or_else(|_| ModelAllow::all())
    }

    #[test]
    fn names_prefixes_and_star_allow_models() {
        let a = allow(&["gpt-4.1", "claude-*"]);
        assert!(a.allows_model("gpt-4.1"));
        assert!(!a.allows_model("gpt-4.1-mini"));
        assert!(a.allows_model("claude-sonnet-4-5"));
        assert!(!a.allows_model("deepseek-v3.2"));
        assert!(allow(&["*"]).allows_model("anything"));
    }

    #[test]
    fn aliases_must_be_listed_to_be_asked_for() {
        let a = allow(&["gpt-4.1", "tier:fast"]);
        assert!(!a.allows_request("auto"));
        assert!(a.allows_request("tier:fast"));
        assert!(!a.allows_request("tier:smart"));
        assert!(allow(&["tier:*"]).allows_request("tier:smart"));
        assert!(allow(&["auto"]).allows_request("auto"));
        assert!(
            !allow(&["*"]).allows_request("auto"),
            "* is models, not aliases"
        );
    }

    #[test]
    fn no_list_allows_everything() {
        let a = ModelAllow::all();
        assert!(a.allows_request("auto") && a.allows_request("tier:x") && a.allows_model("m"));
        assert_eq!(a.describe(), None);
    }

    #[test]
    fn misplaced_stars_and_empty_names_are_refused() {
        for bad in ["a*b", "*a", "", "tier:", "tier:a*"] {
            assert!(ModelAllow::parse(&[bad.to_string()]).is_err(), "{bad}");
        }
    }
}
