//! Client authentication against `GATEWAY_API_KEYS`.
//!
//! Keys are kept only as SHA-256 digests: a lookup hashes the presented key and compares digests,
//! so the time taken does not depend on how much of a real key the caller guessed, and the keys
//! themselves never sit in memory structures that could be logged.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::error::GatewayError;

/// A client's identity: a short, stable, non-secret id derived from its key (for logs, limits
/// and cache namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub String);

#[derive(Clone)]
pub struct KeyRing {
    by_digest: BTreeMap<[u8; 32], ClientId>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "KeyRing({} keys)", self.by_digest.len())
    }
}

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl KeyRing {
    pub fn parse(raw: &str) -> Result<KeyRing, String> {
        let mut by_digest = BTreeMap::new();
        for key in raw.split(',').map(str::trim).filter(|k| !k.is_empty()) {
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err("keys must be printable ASCII without spaces".into());
            }
            let d = digest(key);
            let id = ClientId(format!("key_{}", hex(&d[..6])));
            by_digest.insert(d, id);
        }
        if by_digest.is_empty() {
            return Err("must list at least one key".into());
        }
        Ok(KeyRing { by_digest })
    }

    /// A ring that accepts no key.
    pub(crate) fn empty() -> KeyRing {
        KeyRing {
            by_digest: BTreeMap::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Checks an `Authorization` header value.
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&ClientId, GatewayError> {
        let value = authorization.ok_or(GatewayError::MissingApiKey)?.trim();
        let (scheme, key) = value.split_once(' ').ok_or(GatewayError::InvalidApiKey)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(GatewayError::InvalidApiKey);
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(GatewayError::MissingApiKey);
        }
        self.by_digest
            .get(&digest(key))
            .ok_or(GatewayError::InvalidApiKey)
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        for nibble in [b >> 4, b & 0xf] {
            s.push(char::from_digit(u32::from(nibble), 16).unwrap_or('0'));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_listed_keys_with_any_bearer_case() {
        let ring = KeyRing::parse("alpha, beta").unwrap();
        assert!(ring.authenticate(Some("Bearer alpha")).is_ok());
        assert!(ring.authenticate(Some("bearer beta")).is_ok());
    }

    #[test]
    fn distinct_keys_get_distinct_stable_ids() {
        let ring = KeyRing::parse("alpha,beta").unwrap();
        let a = ring.authenticate(Some("Bearer alpha")).unwrap().clone();
        let b = ring.authenticate(Some("Bearer beta")).unwrap().clone();
        assert_ne!(a, b);
        assert_eq!(
            a,
            KeyRing::parse("alpha")
                .unwrap()
                .authenticate(Some("Bearer alpha"))
                .unwrap()
                .clone()
        );
        assert!(!a.0.contains("alpha"));
    }

    #[test]
    fn rejects_missing_wrong_and_malformed_credentials() {
        let ring = KeyRing::parse("alpha").unwrap();
        assert_eq!(ring.authenticate(None), Err(GatewayError::MissingApiKey));
        assert_eq!(
            ring.authenticate(Some("Bearer ")),
            Err(GatewayError::InvalidApiKey)
        );
        assert_eq!(
            ring.authenticate(Some("Bearer alph")),
            Err(GatewayError::InvalidApiKey)
        );
        assert_eq!(
            ring.authenticate(Some("Basic alpha")),
            Err(GatewayError::InvalidApiKey)
        );
        assert_eq!(
            ring.authenticate(Some("alpha")),
            Err(GatewayError::InvalidApiKey)
        );
    }

    #[test]
    fn empty_key_list_is_an_error() {
        assert!(KeyRing::parse(" , ").is_err());
    }
}
