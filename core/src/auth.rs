//! Client authentication against `GATEWAY_API_KEYS` and the `keys` of `GATEWAY_CONFIG`.
//!
//! Keys are kept only as SHA-256 digests (`keys` are configured that way): a lookup hashes the
//! presented key and looks its digest up. Only digests are ever compared, so the time a lookup
//! takes can at most tell how many leading bytes of SHA-256(guess) match a stored digest, which
//! says nothing usable about any key (finding a key from its digest is a preimage attack); and
//! the keys themselves never sit in memory structures that could be logged.

use std::collections::BTreeMap;
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::error::GatewayError;
use crate::limits::KeyPolicy;

/// A client's identity: a short, stable, non-secret id derived from its key (for logs, limits
/// and cache namespaces).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(pub String);

/// An authenticated client: its id, and its policy when it is one of `keys`.
#[derive(Debug, Clone, PartialEq)]
pub struct Client {
    pub id: ClientId,
    pub policy: Option<Arc<KeyPolicy>>,
}

#[derive(Clone)]
pub struct KeyRing {
    by_digest: BTreeMap<[u8; 32], Client>,
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
            by_digest.insert(d, Client { id, policy: None });
        }
        if by_digest.is_empty() {
            return Err("must list at least one key".into());
        }
        Ok(KeyRing { by_digest })
    }

    /// Adds the validated `keys` of `GATEWAY_CONFIG`. A key also listed in `GATEWAY_API_KEYS`
    /// takes its configured id and limits.
    pub fn with_configured(mut self, keys: Vec<crate::limits::ConfiguredKey>) -> KeyRing {
        for (digest, policy) in keys {
            let id = ClientId(policy.id.clone());
            self.by_digest.insert(
                digest,
                Client {
                    id,
                    policy: Some(policy),
                },
            );
        }
        self
    }

    /// The configured name of the key with this id, if it has one.
    pub fn name_of(&self, id: &str) -> Option<&str> {
        self.by_digest
            .values()
            .filter_map(|c| c.policy.as_deref())
            .find(|p| p.id == id)
            .and_then(|p| p.name.as_deref())
    }

    /// A ring that accepts no key.
    pub fn empty() -> KeyRing {
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
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<&Client, GatewayError> {
        let value = authorization.ok_or(GatewayError::MissingApiKey)?.trim();
        let (scheme, key) = value.split_once(' ').ok_or(GatewayError::InvalidApiKey)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(GatewayError::InvalidApiKey);
        }
        let key = key.trim();
        if key.is_empty() {
            return Err(GatewayError::MissingApiKey);
        }
        let client = self
            .by_digest
            .get(&digest(key))
            .ok_or(GatewayError::InvalidApiKey)?;
        if client.policy.as_ref().is_some_and(|p| p.disabled) {
            return Err(GatewayError::DisabledApiKey);
        }
        Ok(client)
    }
}

/// A key's SHA-256 as 64 hex digits: what `keys[].key_sha256` holds.
pub fn sha256_hex(key: &str) -> String {
    hex(&digest(key))
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
        let a = ring.authenticate(Some("Bearer alpha")).unwrap().id.clone();
        let b = ring.authenticate(Some("Bearer beta")).unwrap().id.clone();
        assert_ne!(a, b);
        assert_eq!(
            a,
            KeyRing::parse("alpha")
                .unwrap()
                .authenticate(Some("Bearer alpha"))
                .unwrap()
                .id
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
