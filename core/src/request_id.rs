//! Request ids: the client's own when it sent a sensible one, otherwise a UUID v4 made from
//! random bytes the runtime supplies.

/// Picks the id for a request. `random` must be 16 bytes from the runtime's RNG.
pub fn choose(client_supplied: Option<&str>, random: [u8; 16]) -> String {
    match client_supplied.map(str::trim) {
        Some(id) if is_acceptable(id) => id.to_string(),
        _ => uuid::Builder::from_random_bytes(random)
            .into_uuid()
            .hyphenated()
            .to_string(),
    }
}

// Echoed in a header and in logs: bounded length, visible ASCII only, so it can neither break
// header framing nor forge log lines.
fn is_acceptable(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_a_sensible_client_id() {
        assert_eq!(choose(Some("abc-123"), [0; 16]), "abc-123");
    }

    #[test]
    fn replaces_missing_oversized_or_unsafe_ids_with_a_uuid() {
        for bad in [None, Some(""), Some("a b"), Some("x\"y")] {
            let id = choose(bad, [7; 16]);
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4");
        }
        let long = "a".repeat(129);
        assert_eq!(choose(Some(&long), [1; 16]).len(), 36);
    }

    #[test]
    fn different_randomness_gives_different_ids() {
        assert_ne!(choose(None, [1; 16]), choose(None, [2; 16]));
    }
}
