//! `keys` and `limits` in `GATEWAY_CONFIG`, and their validation into [`KeyPolicy`].

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Deserialize;

use super::allow::ModelAllow;
use crate::error::ConfigError;
use crate::pricing::Money;

/// The largest budget a key may have: counters hold nanodollars below 2^53 (see
/// [`super::store`]), which leaves room for reservations on top.
pub const MAX_BUDGET_USD: u128 = 1_000_000;
/// The largest `rpm` and `tpm` accepted.
pub const MAX_RPM: u64 = 100_000_000;
pub const MAX_TPM: u64 = 1_000_000_000_000;
/// The default of `limits.default_max_tokens`.
pub const DEFAULT_MAX_TOKENS: u64 = 4096;
/// The default of `limits.store_timeout_ms`.
pub const DEFAULT_STORE_TIMEOUT_MS: u64 = 1000;
/// The default of `limits.shard_rpm`: the requests per minute one limiter object is given
/// before a key's limits are spread over several (one Durable Object serialises its calls).
pub const DEFAULT_SHARD_RPM: u64 = 30_000;
/// At most this many objects per key.
pub const MAX_SHARDS: u32 = 64;

/// One entry of `keys`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KeyConfig {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    /// SHA-256 of the key, 64 hex digits (`fly-fallback hash-key` prints it).
    pub key_sha256: String,
    /// Models the key may use: names, `prefix*`, `*`, `auto`, `tier:NAME`, `tier:*`. Absent:
    /// every model.
    #[serde(default)]
    pub models: Option<Vec<String>>,
    #[serde(default)]
    pub rpm: Option<u64>,
    #[serde(default)]
    pub tpm: Option<u64>,
    #[serde(default)]
    pub budget_usd: Option<BudgetConfig>,
    #[serde(default)]
    pub disabled: bool,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct BudgetConfig {
    /// USD, a number or a decimal string.
    pub amount: serde_json::Value,
    pub period: Period,
}

/// A budget's period: a UTC day or month.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    Day,
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Month => "month",
        }
    }
}

/// What to do when the limiter's store cannot be reached.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum OnStoreError {
    /// Let the request through (logged).
    #[default]
    Allow,
    /// Refuse it: 503 `rate_limiter_unavailable`.
    Deny,
}

/// `limits` in `GATEWAY_CONFIG`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    #[serde(default)]
    pub on_store_error: OnStoreError,
    /// Output tokens reserved for a request that sets no maximum (4096).
    #[serde(default)]
    pub default_max_tokens: Option<u64>,
    /// How long the gateway waits for the limiter's store (1000 ms).
    #[serde(default)]
    pub store_timeout_ms: Option<u64>,
    /// Requests per minute one limiter object carries; a key whose `rpm` is larger is spread
    /// over `ceil(rpm / shard_rpm)` objects, each holding that share of every limit (30000).
    #[serde(default)]
    pub shard_rpm: Option<u64>,
}

/// A budget, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    pub amount: Money,
    pub period: Period,
}

/// A configured key's id, name, models and limits, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyPolicy {
    pub id: String,
    pub name: Option<String>,
    pub models: ModelAllow,
    pub rpm: Option<u64>,
    pub tpm: Option<u64>,
    pub budget: Option<Budget>,
    pub disabled: bool,
    /// Limiter objects the key's limits are spread over (1 unless `rpm` is above
    /// `limits.shard_rpm`).
    pub shards: u32,
}

impl KeyPolicy {
    /// Whether a request of this key goes through the limiter at all.
    pub fn is_limited(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.budget.is_some()
    }
}

/// `limits`, validated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitSettings {
    pub on_store_error: OnStoreError,
    pub default_max_tokens: u64,
    pub store_timeout_ms: u64,
    pub shard_rpm: u64,
}

impl Default for LimitSettings {
    fn default() -> LimitSettings {
        LimitSettings {
            on_store_error: OnStoreError::Allow,
            default_max_tokens: DEFAULT_MAX_TOKENS,
            store_timeout_ms: DEFAULT_STORE_TIMEOUT_MS,
            shard_rpm: DEFAULT_SHARD_RPM,
        }
    }
}

fn err(message: String) -> ConfigError {
    ConfigError::new("GATEWAY_CONFIG", message)
}

impl LimitSettings {
    pub fn from_config(c: &LimitsConfig) -> Result<LimitSettings, ConfigError> {
        let range = |name: &str, v: Option<u64>, max: u64, default: u64| match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(&n) => Ok(n),
            Some(_) => Err(err(format!("limits.{name} must be between 1 and {max}"))),
        };
        Ok(LimitSettings {
            on_store_error: c.on_store_error,
            default_max_tokens: range(
                "default_max_tokens",
                c.default_max_tokens,
                10_000_000,
                DEFAULT_MAX_TOKENS,
            )?,
            store_timeout_ms: range(
                "store_timeout_ms",
                c.store_timeout_ms,
                60_000,
                DEFAULT_STORE_TIMEOUT_MS,
            )?,
            shard_rpm: range("shard_rpm", c.shard_rpm, MAX_RPM, DEFAULT_SHARD_RPM)?,
        })
    }
}

/// A key's SHA-256 digest from its 64 hex digits.
pub fn parse_digest(hex: &str) -> Option<[u8; 32]> {
    let hex = hex.trim();
    if hex.len() != 64 || !hex.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        let pair = hex.get(i * 2..i * 2 + 2)?;
        *byte = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

fn id_ok(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The budget amount as money: a positive decimal of at most [`MAX_BUDGET_USD`].
fn budget_amount(v: &serde_json::Value) -> Option<Money> {
    let text = match v {
        serde_json::Value::Number(n) => n.to_string(),
        serde_json::Value::String(s) => s.clone(),
        _ => return None,
    };
    let m = Money::parse_usd(&text)?;
    let max = Money::from_picos(MAX_BUDGET_USD * crate::pricing::PICOS_PER_USD);
    (m > Money::ZERO && m <= max).then_some(m)
}

/// A configured key: its SHA-256 digest and its policy.
pub type ConfiguredKey = ([u8; 32], Arc<KeyPolicy>);

/// Validates `keys`: each entry's id, digest, models and limits; ids and digests unique. Every
/// message names the entry (by index and id) and the field, never the digest.
pub fn validate_keys(
    keys: &[KeyConfig],
    limits: &LimitSettings,
) -> Result<Vec<ConfiguredKey>, ConfigError> {
    let mut ids = BTreeSet::new();
    let mut digests = BTreeSet::new();
    let mut out = Vec::with_capacity(keys.len());
    for (i, k) in keys.iter().enumerate() {
        let at = if id_ok(&k.id) {
            format!("keys[{i}] ('{}')", k.id)
        } else {
            format!("keys[{i}]")
        };
        if !id_ok(&k.id) {
            return Err(err(format!(
                "{at}.id must be 1 to 64 letters, digits, '-', '_' or '.'"
            )));
        }
        if !ids.insert(k.id.as_str()) {
            return Err(err(format!("{at}: the id is used by another key")));
        }
        let digest = parse_digest(&k.key_sha256).ok_or_else(|| {
            err(format!(
                "{at}.key_sha256 must be the key's SHA-256 as 64 hex digits (fly-fallback hash-key prints it)"
            ))
        })?;
        if !digests.insert(digest) {
            return Err(err(format!(
                "{at}.key_sha256: the same key is listed twice"
            )));
        }
        if let Some(name) = &k.name {
            if name.chars().count() > 200 || name.chars().any(char::is_control) {
                return Err(err(format!(
                    "{at}.name must be at most 200 characters, without control characters"
                )));
            }
        }
        let models = match &k.models {
            None => ModelAllow::all(),
            Some(list) => ModelAllow::parse(list).map_err(|m| err(format!("{at}.models: {m}")))?,
        };
        let limit = |name: &str, v: Option<u64>, max: u64| match v {
            Some(n) if !(1..=max).contains(&n) => Err(err(format!(
                "{at}.{name} must be a whole number between 1 and {max} (leave it out for no limit)"
            ))),
            _ => Ok(v),
        };
        let rpm = limit("rpm", k.rpm, MAX_RPM)?;
        let tpm = limit("tpm", k.tpm, MAX_TPM)?;
        let budget = match &k.budget_usd {
            None => None,
            Some(b) => Some(Budget {
                amount: budget_amount(&b.amount).ok_or_else(|| {
                    err(format!(
                        "{at}.budget_usd.amount must be a positive amount of USD of at most {MAX_BUDGET_USD}, with at most 12 decimals"
                    ))
                })?,
                period: b.period,
            }),
        };
        let shards = rpm
            .map_or(1, |r| r.div_ceil(limits.shard_rpm))
            .clamp(1, u64::from(MAX_SHARDS)) as u32;
        out.push((
            digest,
            Arc::new(KeyPolicy {
                id: k.id.clone(),
                name: k.name.clone(),
                models,
                rpm,
                tpm,
                budget,
                disabled: k.disabled,
                shards,
            }),
        ));
    }
    Ok(out)
}
