//! A stored answer and its binary encoding.
//!
//! ```text
//! magic    4 bytes  "AGC2" ("AGC1": the same without `usage`, still read)
//! key     32 bytes  the entry's cache key (an entry read under another key is refused)
//! status   u16 BE
//! form     u8       0 = JSON body, 1 = event stream
//! stored   u64 BE   Unix ms when stored (for `age`)
//! expires  u64 BE   Unix ms after which the entry is not served
//! usage    u8 (0 = none, 1 = present) then 5 x u64 BE: prompt, completion, cached,
//!          cache write, reasoning tokens (what the answer cost, so a hit can log what it saved)
//! ctype    u16 BE length + bytes   the upstream's content-type
//! body     u64 BE length + bytes   the body exactly as the upstream sent it
//! ```
//!
//! Decoding checks every length: a truncated or padded value is refused, never served.

use bytes::Bytes;

use super::key::CacheKey;
use crate::sse::Usage;

const MAGIC: &[u8; 4] = b"AGC2";
const MAGIC_V1: &[u8; 4] = b"AGC1";
const USAGE_LEN: usize = 1 + 5 * 8;
const FIXED: usize = 4 + 32 + 2 + 1 + 8 + 8 + USAGE_LEN + 2 + 8;

/// How the stored body is delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryForm {
    /// One JSON document.
    Json,
    /// A complete event stream, every event up to and including `data: [DONE]`.
    Sse,
}

#[derive(Clone, PartialEq, Eq)]
pub struct CacheEntry {
    pub key: CacheKey,
    pub status: u16,
    pub form: EntryForm,
    pub content_type: String,
    pub stored_at_ms: u64,
    pub expires_at_ms: u64,
    /// The upstream's usage for this answer, when it reported one.
    pub usage: Option<Usage>,
    pub body: Bytes,
}

impl std::fmt::Debug for CacheEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CacheEntry")
            .field("key", &self.key)
            .field("status", &self.status)
            .field("form", &self.form)
            .field("content_type", &self.content_type)
            .field("stored_at_ms", &self.stored_at_ms)
            .field("expires_at_ms", &self.expires_at_ms)
            .field("usage", &self.usage)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl CacheEntry {
    pub fn encoded_len(&self) -> usize {
        FIXED + self.content_type.len() + self.body.len()
    }

    pub fn encode(&self) -> Vec<u8> {
        let ct = self.content_type.as_bytes();
        let ct = ct.get(..usize::from(u16::MAX)).unwrap_or(ct);
        let mut out = Vec::with_capacity(FIXED + ct.len() + self.body.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.key.0);
        out.extend_from_slice(&self.status.to_be_bytes());
        out.push(match self.form {
            EntryForm::Json => 0,
            EntryForm::Sse => 1,
        });
        out.extend_from_slice(&self.stored_at_ms.to_be_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        let u = self.usage.unwrap_or_default();
        out.push(u8::from(self.usage.is_some()));
        for n in [
            u.prompt_tokens,
            u.completion_tokens,
            u.cached_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        ] {
            out.extend_from_slice(&n.to_be_bytes());
        }
        out.extend_from_slice(&(ct.len() as u16).to_be_bytes());
        out.extend_from_slice(ct);
        out.extend_from_slice(&(self.body.len() as u64).to_be_bytes());
        out.extend_from_slice(&self.body);
        out
    }

    /// Reads an entry stored under `key`; `None` for anything malformed or stored under
    /// another key. The body is a slice of `bytes`, not a copy.
    pub fn decode(bytes: &Bytes, key: &CacheKey) -> Option<CacheEntry> {
        let mut r = Reader { b: bytes, at: 0 };
        let magic = r.take(4)?;
        let v1 = magic == MAGIC_V1;
        if !v1 && magic != MAGIC {
            return None;
        }
        if r.take(32)? != key.0 {
            return None;
        }
        let status = u16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let form = match r.take(1)?.first()? {
            0 => EntryForm::Json,
            1 => EntryForm::Sse,
            _ => return None,
        };
        let stored_at_ms = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let expires_at_ms = u64::from_be_bytes(r.take(8)?.try_into().ok()?);
        let usage = if v1 { None } else { r.usage()? };
        let ct_len = u16::from_be_bytes(r.take(2)?.try_into().ok()?) as usize;
        let content_type = std::str::from_utf8(r.take(ct_len)?).ok()?.to_string();
        let body_len = usize::try_from(u64::from_be_bytes(r.take(8)?.try_into().ok()?)).ok()?;
        let start = r.at;
        r.take(body_len)?;
        if r.at != bytes.len() {
            return None;
        }
        Some(CacheEntry {
            key: *key,
            status,
            form,
            content_type,
            stored_at_ms,
            expires_at_ms,
            usage,
            body: bytes.slice(start..start + body_len),
        })
    }

    pub fn is_fresh(&self, now_ms: u64) -> bool {
        now_ms < self.expires_at_ms
    }

    /// Whole seconds since the entry was stored, for the `age` header.
    pub fn age_secs(&self, now_ms: u64) -> u64 {
        now_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    /// Seconds of life left, rounded up (for a second-tier store that needs a TTL).
    pub fn remaining_ttl_secs(&self, now_ms: u64) -> u64 {
        self.expires_at_ms.saturating_sub(now_ms).div_ceil(1000)
    }

    /// The TTL it was stored with.
    pub fn ttl_secs(&self) -> u64 {
        self.expires_at_ms.saturating_sub(self.stored_at_ms) / 1000
    }

    pub fn is_stream(&self) -> bool {
        self.form == EntryForm::Sse
    }
}

struct Reader<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n)?;
        let s = self.b.get(self.at..end)?;
        self.at = end;
        Some(s)
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }

    /// `Some(None)`: no usage was stored; `None`: malformed.
    fn usage(&mut self) -> Option<Option<Usage>> {
        let present = *self.take(1)?.first()?;
        let [prompt, completion, cached, write, reasoning] = [
            self.u64()?,
            self.u64()?,
            self.u64()?,
            self.u64()?,
            self.u64()?,
        ];
        match present {
            0 => Some(None),
            1 => Some(Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: completion,
                total_tokens: prompt.saturating_add(completion),
                cached_tokens: cached,
                cache_write_tokens: write,
                reasoning_tokens: reasoning,
            })),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(form: EntryForm, body: &'static [u8]) -> CacheEntry {
        CacheEntry {
            key: CacheKey([7; 32]),
            status: 200,
            form,
            content_type: "application/json".into(),
            stored_at_ms: 1_000,
            expires_at_ms: 61_000,
            usage: None,
            body: Bytes::from_static(body),
        }
    }

    #[test]
    fn round_trips_byte_for_byte() {
        let e = entry(EntryForm::Json, b"{\"id\":\"x\",\"choices\":[]}");
        let bytes = Bytes::from(e.encode());
        assert_eq!(bytes.len(), e.encoded_len());
        let d = CacheEntry::decode(&bytes, &e.key).unwrap();
        assert_eq!(d, e);
        assert_eq!(&d.body[..], b"{\"id\":\"x\",\"choices\":[]}");
    }

    #[test]
    fn usage_round_trips_so_a_hit_knows_what_it_saved() {
        let mut e = entry(EntryForm::Json, b"{}");
        e.usage = Some(Usage {
            prompt_tokens: 2000,
            completion_tokens: 300,
            total_tokens: 2300,
            cached_tokens: 1500,
            cache_write_tokens: 7,
            reasoning_tokens: 120,
        });
        let d = CacheEntry::decode(&Bytes::from(e.encode()), &e.key).unwrap();
        assert_eq!(d.usage, e.usage);
    }

    #[test]
    fn entries_of_the_previous_format_are_still_served() {
        let e = entry(EntryForm::Json, b"{\"a\":1}");
        let v2 = e.encode();
        // AGC1 is AGC2 without the usage block.
        let at = 4 + 32 + 2 + 1 + 8 + 8;
        let mut v1 = b"AGC1".to_vec();
        v1.extend_from_slice(&v2[4..at]);
        v1.extend_from_slice(&v2[at + USAGE_LEN..]);
        let d = CacheEntry::decode(&Bytes::from(v1), &e.key).unwrap();
        assert_eq!(d, e);
    }

    #[test]
    fn malformed_or_foreign_values_are_refused() {
        let e = entry(EntryForm::Sse, b"data: [DONE]\n\n");
        let enc = e.encode();
        assert!(CacheEntry::decode(&Bytes::from(enc.clone()), &CacheKey([8; 32])).is_none());
        for cut in [0, 3, 10, FIXED, enc.len() - 1] {
            assert!(
                CacheEntry::decode(&Bytes::copy_from_slice(&enc[..cut]), &e.key).is_none(),
                "{cut}"
            );
        }
        let mut padded = enc.clone();
        padded.push(0);
        assert!(CacheEntry::decode(&Bytes::from(padded), &e.key).is_none());
        let mut bad_magic = enc;
        bad_magic[0] = b'X';
        assert!(CacheEntry::decode(&Bytes::from(bad_magic), &e.key).is_none());
        assert!(CacheEntry::decode(&Bytes::from_static(b"garbage"), &e.key).is_none());
    }

    #[test]
    fn freshness_age_and_ttl() {
        let e = entry(EntryForm::Json, b"{}");
        assert!(e.is_fresh(60_999));
        assert!(!e.is_fresh(61_000));
        assert_eq!(e.age_secs(3_500), 2);
        assert_eq!(e.age_secs(0), 0);
        assert_eq!(e.remaining_ttl_secs(59_500), 2);
        assert_eq!(e.ttl_secs(), 60);
    }
}
